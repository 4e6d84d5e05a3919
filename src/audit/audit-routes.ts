import { Router } from 'express';
import { z } from 'zod';
import type { AuditService } from './audit-service.js';
import type { AuditExporter } from './audit-export.js';
import type { AuditProofs } from './audit-proofs.js';
import type { AuditSequencer } from './audit-sequencer.js';
import type { TreeHeadsService } from './tree-heads-service.js';
import type { AuditQueryDal } from './audit-query-dal.js';
import type { AuditVerifyService } from './audit-verify-service.js';
import type { AuditHeavyPasses } from './audit-heavy-passes.js';
import { ReportsService, toCsv } from './reports-service.js';
import { requestMeta } from '../http/request-context.js';
import { streamLines } from '../http/streaming.js';
import { defineRoutes } from '../http/routes.js';
import { decodeCursor, encodeCursor, limitSchema, parseWith } from '../http/validation.js';
import { actorOf, type Principal } from '../identity/identity-types.js';

/** Whose allowance a heavy pass counts against: the API key (a console session counts as its key). */
export function passKey(principal: Principal | undefined): string {
  const actor = actorOf(principal);
  return `${actor.kind}:${actor.id ?? 'anonymous'}`;
}

const isoDate = z.string().datetime({ offset: true });
const shortText = z.string().min(1).max(200);

/** The filters of GET /v1/audit (the console's filtered export takes the same, without paging). */
export const auditFilterSchema = z.object({
  actor: shortText.optional(),
  actorKind: z.enum(['operator', 'client', 'ci', 'system', 'anonymous', 'unknown']).optional(),
  action: z.string().regex(/^[a-z0-9._-]{1,63}\*?$/, 'action is dotted lower-case, optionally ending in *').optional(),
  resourceKind: z.string().regex(/^[a-z0-9-]{1,32}$/).optional(),
  resource: z.string().min(1).max(512).optional(),
  outcome: z.enum(['allow', 'deny', 'error']).optional(),
  sourceIp: z.string().regex(/^[0-9A-Za-z.:%_-]{1,63}\*?$/, 'sourceIp is an address, or a prefix ending in *').optional(),
  since: isoDate.optional(),
  until: isoDate.optional(),
});

const querySchema = auditFilterSchema
  .extend({
    order: z.enum(['asc', 'desc']).default('desc'),
    limit: limitSchema,
    cursor: z.string().max(64).optional(),
  })
  .strict();

export const auditVerifyRequestSchema = z
  .object({
    checkpoint: z
      .string()
      .min(1)
      .max(16_384)
      .describe('A signed tree head (C2SP signed note) kept from earlier: the log must still extend it')
      .optional(),
    fromLeaf: z
      .number()
      .int()
      .min(0)
      .max(Number.MAX_SAFE_INTEGER)
      .describe('Verify only the leaves [fromLeaf, toLeaf) of the newest signed tree (give both): the first leaf checked')
      .optional(),
    toLeaf: z
      .number()
      .int()
      .min(1)
      .max(Number.MAX_SAFE_INTEGER)
      .describe('The end of the range, exclusive: larger than fromLeaf and at most the newest signed tree size')
      .optional(),
  })
  .strict()
  .refine((b) => (b.fromLeaf === undefined) === (b.toLeaf === undefined), { message: 'give both fromLeaf and toLeaf for a range, or neither', path: ['toLeaf'] })
  .refine((b) => b.fromLeaf === undefined || b.checkpoint === undefined, { message: 'a range verification takes no checkpoint; verify the checkpoint in a separate request', path: ['checkpoint'] })
  .refine((b) => b.fromLeaf === undefined || b.toLeaf === undefined || b.fromLeaf < b.toLeaf, { message: 'fromLeaf must be smaller than toLeaf', path: ['fromLeaf'] });

/** Leaf indexes and tree sizes: non-negative safe integers, given as decimal query parameters. */
const leafIndexSchema = z.coerce.number().int().min(0).max(Number.MAX_SAFE_INTEGER);

export function auditRoutes(deps: {
  audit: AuditService;
  dal: AuditQueryDal;
  verifier: AuditVerifyService;
  proofs: AuditProofs;
  exporter: AuditExporter;
  treeHeads: TreeHeadsService;
  sequencer: AuditSequencer;
  reports: ReportsService;
  heavyPasses: AuditHeavyPasses;
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
        const q = parseWith(z.object({ from: leafIndexSchema.optional(), to: leafIndexSchema.optional() }).strict(), req.query, 'query');
        // the slot is held until the last line is written (streamLines drops a client that stops reading)
        await deps.heavyPasses.run(passKey(req.principal), async () => {
          const plan = await deps.exporter.plan(q);
          // export itself is an access to the log, recorded before any byte is sent
          await deps.audit.record({ actor: actorOf(req.principal), action: 'audit.export', resource: { kind: 'audit-log', name: 'events' }, outcome: 'allow', details: { fromLeaf: plan.fromLeaf, toLeaf: plan.toLeaf, treeSize: plan.head.treeSize }, request: requestMeta(req) });
          res.status(200).type('application/x-ndjson').set('Content-Disposition', 'attachment; filename="keywarden-audit.ndjson"');
          await streamLines(res, withNewlines(deps.exporter.lines(plan)));
        });
      },
    },
    {
      method: 'post',
      path: '/v1/audit/verify',
      access: ['auditor'],
      handler: async (req, res) => {
        const body = parseWith(auditVerifyRequestSchema, req.body ?? {});
        const { fromLeaf, toLeaf } = body;
        const result: Omit<Awaited<ReturnType<AuditVerifyService['verify']>>, 'state'> = await deps.heavyPasses.run(passKey(req.principal), async () => {
          if (fromLeaf !== undefined && toLeaf !== undefined) return deps.verifier.verifyRange(fromLeaf, toLeaf);
          const { state: _state, ...whole } = await deps.verifier.verify({ checkpoint: body.checkpoint });
          return whole;
        });
        await deps.audit.record({ actor: actorOf(req.principal), action: 'audit.verify', resource: { kind: 'audit-log', name: 'events' }, outcome: result.ok ? 'allow' : 'error', reason: result.reason ?? null, details: { treeSize: result.treeSize, leavesChecked: result.leavesChecked, firstBadLeaf: result.firstBadLeaf ?? null, checkpointSize: result.consistentWith?.treeSize ?? null, ...(result.range ? { fromLeaf: result.range.fromLeaf, toLeaf: result.range.toLeaf } : {}) }, request: requestMeta(req) });
        res.json(result);
      },
    },
    {
      method: 'get',
      path: '/v1/audit/checkpoint',
      access: ['auditor'],
      handler: async (req, res) => {
        const head = await deps.proofs.latest();
        // witnesses and note tooling read the signed note as it is (like a sumdb's /latest)
        if (req.accepts(['application/json', 'text/plain']) === 'text/plain') {
          res.type('text/plain; charset=utf-8').send(head.note);
          return;
        }
        res.json(await deps.treeHeads.describe(head));
      },
    },
    {
      method: 'get',
      path: '/v1/audit/checkpoints',
      access: ['auditor'],
      handler: async (req, res) => {
        const q = parseWith(z.object({ limit: limitSchema, cursor: z.string().max(64).optional() }).strict(), req.query, 'query');
        const heads = await deps.treeHeads.list(q.limit, decodeCursor<number>(q.cursor, 'number'));
        res.json({ items: heads, nextCursor: heads.length === q.limit ? encodeCursor(heads[heads.length - 1].id) : null });
      },
    },
    {
      method: 'post',
      path: '/v1/audit/checkpoints',
      access: ['admin'],
      handler: async (req, res) => {
        // sequences everything queued now and signs the head, instead of waiting for the timer
        await deps.sequencer.flush();
        const head = await deps.proofs.latest();
        await deps.audit.record({ actor: actorOf(req.principal), action: 'audit.checkpoint', resource: { kind: 'audit-log', name: 'checkpoints' }, outcome: 'allow', details: { treeSize: head.treeSize }, request: requestMeta(req) });
        res.status(201).json(await deps.treeHeads.describe(head));
      },
    },
    {
      method: 'get',
      path: '/v1/audit/proof/inclusion',
      access: ['auditor'],
      handler: async (req, res) => {
        const q = parseWith(
          z
            .object({ leaf: leafIndexSchema.optional(), seq: leafIndexSchema.optional(), treeSize: leafIndexSchema.optional() })
            .strict()
            .refine((v) => (v.leaf === undefined) !== (v.seq === undefined), { message: 'give exactly one of leaf (a leaf index) and seq (an event number)' }),
          req.query,
          'query',
        );
        res.json(await deps.proofs.inclusion({ leafIndex: q.leaf, seq: q.seq }, q.treeSize));
      },
    },
    {
      method: 'get',
      path: '/v1/audit/proof/consistency',
      access: ['auditor'],
      handler: async (req, res) => {
        const q = parseWith(z.object({ from: leafIndexSchema, to: leafIndexSchema.optional() }).strict(), req.query, 'query');
        res.json(await deps.proofs.consistency(q.from, q.to));
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

async function* withNewlines(lines: AsyncIterable<string>): AsyncGenerator<string> {
  for await (const line of lines) yield line + '\n';
}
