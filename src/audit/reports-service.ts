import type { AccessService } from '../access/access-service.js';
import type { ClientsService } from '../identity/clients-service.js';
import type { SecretsService } from '../secrets/secrets-service.js';
import { iso, type Clock } from '../core/clock.js';
import type { AuditQuery, AuditQueryDal } from './audit-query-dal.js';
import type { AuditEvent } from './audit-types.js';
import type { AuditTreeDal } from './audit-tree-dal.js';
import type { AuditChainState } from './audit-watch.js';
import type { JsonlAuditSink } from './audit-sink.js';

/** The windows of the activity report: how many buckets of how long. */
export const ACTIVITY_WINDOWS = {
  hour: { buckets: 60, bucketSeconds: 60 },
  day: { buckets: 24, bucketSeconds: 3600 },
  '30d': { buckets: 30, bucketSeconds: 86_400 },
} as const;
export type ActivityWindow = keyof typeof ACTIVITY_WINDOWS;

/** The series of the activity report, in the order the report lists them. */
export const ACTIVITY_SERIES = ['secretReads', 'denials', 'tokenIssuances', 'signatures', 'releasesAllow', 'releasesWarn', 'releasesDeny'] as const;
export type ActivitySeries = (typeof ACTIVITY_SERIES)[number];

/** The audit filter of an export: everything /v1/audit filters by, without paging. */
export type AuditEventFilter = Omit<AuditQuery, 'cursor' | 'order' | 'limit'>;

/** The columns of the CSV export of audit events. */
export const AUDIT_EVENT_CSV_HEADER = ['seq', 'leaf_index', 'time', 'actor_kind', 'actor_id', 'actor_name', 'action', 'resource_kind', 'resource_name', 'outcome', 'reason', 'request_id', 'source_ip', 'user_agent', 'details'];

export interface AccessRow {
  client: string;
  clientId: string;
  clientEnabled: boolean;
  secret: string;
  group: string;
  lastReadAt: string | null;
  lastReadVersion: number | null;
}

/**
 * What the security team uses to remove unneeded access: who can read what and through which
 * group, when it was last read, what expires, and which grants go unused.
 */
export class ReportsService {
  constructor(
    private readonly deps: {
      access: AccessService;
      clients: ClientsService;
      secrets: SecretsService;
      events: AuditQueryDal;
      clock: Clock;
      /** For the log's status: the tree, this instance's chain verdict, and the file mirror (when configured). */
      tree?: AuditTreeDal;
      chain?: AuditChainState;
      sink?: JsonlAuditSink;
    },
  ) {}

  /**
   * The audit log's health at a glance: this instance's verification verdict, the newest signed
   * tree head and its age, events waiting for the sequencer, and whether the file mirror writes.
   */
  async status() {
    const now = this.deps.clock();
    const head = this.deps.tree ? await this.deps.tree.latestHead() : undefined;
    const queue = this.deps.tree ? await this.deps.tree.queueStats() : { queued: 0, oldestTs: null };
    const chain = this.deps.chain;
    const sink = this.deps.sink;
    let sinkStatus: 'off' | 'idle' | 'ok' | 'failing' = 'off';
    if (sink) sinkStatus = sink.health.lastError !== null ? 'failing' : sink.health.lastWriteAt === null ? 'idle' : 'ok';
    return {
      chain: {
        status: chain?.status ?? 'pending',
        reason: chain?.failure?.reason ?? null,
        firstBadLeaf: chain?.failure?.firstBadLeaf ?? null,
        detectedAt: iso(chain?.failure?.detectedAt ?? null),
      },
      checkpoint: head
        ? { treeSize: head.treeSize, rootHash: head.rootHash, time: new Date(head.createdAt).toISOString(), ageSeconds: Math.max(0, Math.floor((now - head.createdAt) / 1000)) }
        : null,
      queued: queue.queued,
      sink: { configured: sink !== undefined, status: sinkStatus, lastWriteAt: iso(sink?.health.lastWriteAt ?? null), lastError: sink?.health.lastError ?? null },
    };
  }

  /**
   * What happened over the last hour, day or 30 days, in buckets aligned to UTC (the newest is the
   * current, unfinished one): counted by the database, never by loading events.
   */
  async activity(window: ActivityWindow) {
    const { buckets, bucketSeconds } = ACTIVITY_WINDOWS[window];
    const bucketMs = bucketSeconds * 1000;
    const to = (Math.floor(this.deps.clock() / bucketMs) + 1) * bucketMs;
    const from = to - buckets * bucketMs;
    const series = Object.fromEntries(ACTIVITY_SERIES.map((name) => [name, new Array<number>(buckets).fill(0)])) as Record<ActivitySeries, number[]>;
    for (const row of await this.deps.events.activityCounts(from, bucketMs, buckets)) {
      if (row.bucket < 0 || row.bucket >= buckets) continue;
      series.secretReads[row.bucket] = row.secret_reads;
      series.denials[row.bucket] = row.denials;
      series.tokenIssuances[row.bucket] = row.token_issuances;
      series.signatures[row.bucket] = row.signatures;
      series.releasesAllow[row.bucket] = row.releases_allow;
      series.releasesWarn[row.bucket] = row.releases_warn;
      series.releasesDeny[row.bucket] = row.releases_deny;
    }
    const totals = Object.fromEntries(ACTIVITY_SERIES.map((name) => [name, series[name].reduce((a, b) => a + b, 0)])) as Record<ActivitySeries, number>;
    return {
      window,
      bucketSeconds,
      from: new Date(from).toISOString(),
      to: new Date(to).toISOString(),
      buckets: Array.from({ length: buckets }, (_, i) => new Date(from + i * bucketMs).toISOString()),
      series,
      totals,
    };
  }

  /** The events matching a filter, newest first, at most `max`, read in pages (an export streams them). */
  async *auditEvents(filter: AuditEventFilter, max: number, pageSize = 500): AsyncGenerator<AuditEvent> {
    let cursor: number | undefined;
    let left = max;
    while (left > 0) {
      const limit = Math.min(pageSize, left);
      const page = await this.deps.events.query({ ...filter, order: 'desc', limit, cursor });
      for (const event of page) yield event;
      if (page.length < limit) return;
      left -= page.length;
      cursor = page[page.length - 1]!.seq;
    }
  }

  /** One row per (client, secret, granting group); the base of every access report. */
  async accessRows(): Promise<AccessRow[]> {
    const rows = await this.deps.access.accessRows();
    return rows.map((r) => ({
      client: r.client,
      clientId: r.client_id,
      clientEnabled: Boolean(r.enabled),
      secret: r.secret,
      group: r.grp,
      lastReadAt: iso(r.last_read_at),
      lastReadVersion: r.last_version ?? null,
    }));
  }

  async access() {
    const rows = await this.accessRows();
    const clients = new Map<string, { name: string; clientId: string; enabled: boolean; secrets: Map<string, { name: string; groups: string[]; lastReadAt: string | null; lastReadVersion: number | null }> }>();
    const secrets = new Map<string, Set<string>>();
    for (const row of rows) {
      let c = clients.get(row.client);
      if (!c) clients.set(row.client, (c = { name: row.client, clientId: row.clientId, enabled: row.clientEnabled, secrets: new Map() }));
      let s = c.secrets.get(row.secret);
      if (!s) c.secrets.set(row.secret, (s = { name: row.secret, groups: [], lastReadAt: row.lastReadAt, lastReadVersion: row.lastReadVersion }));
      s.groups.push(row.group);
      if (!secrets.has(row.secret)) secrets.set(row.secret, new Set());
      secrets.get(row.secret)!.add(row.client);
    }
    const allClients = await this.deps.clients.listAll();
    const allSecrets = await this.deps.secrets.liveNames();
    return {
      generatedAt: new Date(this.deps.clock()).toISOString(),
      clients: allClients.map((c) => {
        const entry = clients.get(c.name);
        return {
          name: c.name,
          clientId: c.client_id,
          enabled: Boolean(c.enabled),
          secrets: entry ? [...entry.secrets.values()] : [],
        };
      }),
      secrets: allSecrets.map((name) => ({ name, clients: [...(secrets.get(name) ?? [])].sort() })),
    };
  }

  async expiring(before: number) {
    const rows = await this.deps.secrets.expiringBefore(before);
    return rows.map((r) => ({ name: r.name, expiry: iso(r.expiry), expired: r.expiry !== null && r.expiry <= this.deps.clock(), version: r.current_version, updatedAt: iso(r.updated_at) }));
  }

  async staleAccess(days: number) {
    const cutoff = this.deps.clock() - days * 86_400_000;
    const rows = await this.accessRows();
    return rows
      .filter((r) => r.lastReadAt === null || Date.parse(r.lastReadAt) < cutoff)
      .map((r) => ({ ...r, neverRead: r.lastReadAt === null }));
  }
}

/** RFC 4180 CSV; cells that a spreadsheet would treat as formulas are neutralised. */
export function toCsv(header: string[], rows: Array<Array<string | number | boolean | null>>): string {
  return [header, ...rows].map(csvLine).join('');
}

/** One CSV record with its CRLF (formula cells neutralised, as in toCsv). */
export function csvLine(row: Array<string | number | boolean | null>): string {
  const cell = (v: string | number | boolean | null) => {
    let s = v === null ? '' : String(v);
    if (/^[=+\-@\t\r]/.test(s)) s = `'${s}`;
    return /[",\r\n]/.test(s) ? `"${s.replace(/"/g, '""')}"` : s;
  };
  return row.map(cell).join(',') + '\r\n';
}

/** One CSV row of an audit event (the details as JSON in one cell). */
export function auditEventCsvRow(e: AuditEvent): Array<string | number | null> {
  return [e.seq, e.leafIndex, new Date(e.ts).toISOString(), e.actorKind, e.actorId, e.actorName, e.action, e.resourceKind, e.resourceName, e.outcome, e.reason, e.requestId, e.sourceIp, e.userAgent, JSON.stringify(e.details)];
}
