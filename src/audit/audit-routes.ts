import { Router } from 'express';
import { z } from 'zod';
import type { AuditService } from './audit-service.js';
import type { AuditCheckpoints } from './audit-checkpoints.js';
import type { AuditQueryDal } from './audit-query-dal.js';
import type { AuditVerifyService } from './audit-verify-service.js';
import { ReportsService, toCsv } from './reports-service.js';
import { requestMeta } from '../http/request-context.js';
import { defineRoutes } from '../http/routes.js';
import { decodeCursor, encodeCursor, limitSchema, parseWith } from '../http/validation.js';
import { actorOf } from '../identity/identity-types.js';

const isoDate = z.string().datetime({ offset: true });
const shortText = z.string().min(1).max(200);

const querySchema = z
  .object({
    actor: shortText.optional(),
    actorKind: z.enum(['operator', 'client', 'ci', 'system', 'anonymous', 'unknown']).optional(),
    action: z.string().regex(/^[a-z0-9._-]{1,63}\*?$/, 'action is dotted lower-case, optionally ending in *').optional(),
    resourceKind: z.string().regex(/^[a-z0-9-]{1,32}$/).optional(),
    resource: z.string().min(1).max(512).optional(),
    outcome: z.enum(['allow', 'deny', 'error']).optional(),
    since: isoDate.optional(),
    until: isoDate.optional(),
    order: z.enum(['asc', 'desc']).default('desc'),
    limit: limitSchema,
    cursor: z.string().max(64).optional(),
  })
  .strict();

export const auditVerifyRequestSchema = z.object({ fromSeq: z.number().int().min(1).optional(), toSeq: z.number().int().min(1).optional() }).strict();

const seqSchema = z.coerce.number().int().min(0).max(Number.MAX_SAFE_INTEGER);

export function auditRoutes(deps: {
  audit: AuditService;
  dal: AuditQueryDal;
  verifier: AuditVerifyService;
  checkpoints: AuditCheckpoints;
  reports: ReportsService;
}): Router {
  const router = Router();
  defineRoutes(router, [
    {
      method: 'get',
      path: '/v1/audit',
      access: ['auditor'],
      handler: async (req, res) => {
        const q = parseWith(querySchema, req.query, 'query');
        const items = await deps.dal.query({
          ...q,
          since: q.since ? Date.parse(q.since) : undefined,
          until: q.until ? Date.parse(q.until) : undefined,
          cursor: decodeCursor<number>(q.cursor, 'number'),
        });
        res.json({ items, nextCursor: items.length === q.limit ? encodeCursor(items[items.length - 1].seq) : null });
      },
    },
    {
      method: 'get',
      path: '/v1/audit/export',
      access: ['auditor'],
      handler: async (req, res) => {
        const q = parseWith(
          z.object({ since: seqSchema.optional(), until: seqSchema.optional(), checkpoints: z.enum(['true', 'false']).default('false') }).strict(),
          req.query,
          'query',
        );
        res.status(200).type('application/x-ndjson').set('Content-Disposition', 'attachment; filename="keywarden-audit.ndjson"');
        // export itself is an access to the log, recorded before any byte is sent
        await deps.audit.record({ actor: actorOf(req.principal), action: 'audit.export', resource: { kind: 'audit-log', name: 'events' }, outcome: 'allow', details: { since: q.since ?? null, until: q.until ?? null }, request: requestMeta(req) });
        let lastSeq = 0;
        for await (const event of deps.dal.range(Math.max(q.since ?? 1, 1), q.until)) {
          lastSeq = event.seq;
          if (!res.write(JSON.stringify(event) + '\n')) await new Promise((r) => res.once('drain', r));
        }
        if (q.checkpoints === 'true') {
          // only checkpoints the exported events reach: the offline verifier treats a signed
          // checkpoint beyond the last event as evidence that the file was truncated
          for (const cp of (await deps.checkpoints.list(1000)).reverse()) {
            if (cp.seq <= lastSeq) res.write(JSON.stringify({ type: 'checkpoint', ...cp }) + '\n');
          }
        }
        res.end();
      },
    },
    {
      method: 'post',
      path: '/v1/audit/verify',
      access: ['auditor'],
      handler: async (req, res) => {
        const body = parseWith(auditVerifyRequestSchema, req.body ?? {});
        const result = await deps.verifier.verify(body);
        await deps.audit.record({ actor: actorOf(req.principal), action: 'audit.verify', resource: { kind: 'audit-log', name: 'events' }, outcome: result.ok ? 'allow' : 'error', reason: result.reason ?? null, details: { checked: result.checked, firstBrokenSeq: result.firstBrokenSeq ?? null }, request: requestMeta(req) });
        res.json(result);
      },
    },
    {
      method: 'get',
      path: '/v1/audit/checkpoints',
      access: ['auditor'],
      handler: async (req, res) => {
        const q = parseWith(z.object({ limit: limitSchema }).strict(), req.query, 'query');
        res.json({ items: await deps.checkpoints.list(q.limit) });
      },
    },
    {
      method: 'post',
      path: '/v1/audit/checkpoints',
      access: ['admin'],
      handler: async (req, res) => {
        const checkpoint = await deps.checkpoints.create('on-demand');
        await deps.audit.record({ actor: actorOf(req.principal), action: 'audit.checkpoint', resource: { kind: 'audit-log', name: 'checkpoints' }, outcome: 'allow', details: { seq: checkpoint?.seq ?? 0 }, request: requestMeta(req) });
        res.status(201).json(checkpoint ?? null);
      },
    },
    {
      method: 'get',
      path: '/v1/reports/access',
      access: ['auditor'],
      handler: async (req, res) => {
        if (req.accepts(['application/json', 'text/csv']) === 'text/csv') {
          const rows = await deps.reports.accessRows();
          res.type('text/csv').send(
            toCsv(
              ['client', 'client_id', 'client_enabled', 'secret', 'group', 'last_read_at', 'last_read_version'],
              rows.map((r) => [r.client, r.clientId, r.clientEnabled, r.secret, r.group, r.lastReadAt, r.lastReadVersion]),
            ),
          );
          return;
        }
        res.json(await deps.reports.access());
      },
    },
    {
      method: 'get',
      path: '/v1/reports/expiring',
      access: ['auditor'],
      handler: async (req, res) => {
        const q = parseWith(z.object({ before: isoDate }).strict(), req.query, 'query');
        res.json({ before: q.before, items: await deps.reports.expiring(Date.parse(q.before)) });
      },
    },
    {
      method: 'get',
      path: '/v1/reports/stale-access',
      access: ['auditor'],
      handler: async (req, res) => {
        const q = parseWith(z.object({ days: z.coerce.number().int().min(1).max(3650).default(30) }).strict(), req.query, 'query');
        const items = await deps.reports.staleAccess(q.days);
        if (req.accepts(['application/json', 'text/csv']) === 'text/csv') {
          res.type('text/csv').send(toCsv(['client', 'secret', 'group', 'last_read_at'], items.map((r) => [r.client, r.secret, r.group, r.lastReadAt])));
          return;
        }
        res.json({ days: q.days, items });
      },
    },
  ]);
  return router;
}
