import type { AccessService } from '../access/access-service.js';
import type { ClientsService } from '../identity/clients-service.js';
import type { SecretsService } from '../secrets/secrets-service.js';
import { iso, type Clock } from '../core/clock.js';

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
  constructor(private readonly deps: { access: AccessService; clients: ClientsService; secrets: SecretsService; clock: Clock }) {}

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
  const cell = (v: string | number | boolean | null) => {
    let s = v === null ? '' : String(v);
    if (/^[=+\-@\t\r]/.test(s)) s = `'${s}`;
    return /[",\r\n]/.test(s) ? `"${s.replace(/"/g, '""')}"` : s;
  };
  return [header, ...rows].map((r) => r.map(cell).join(',')).join('\r\n') + '\r\n';
}
