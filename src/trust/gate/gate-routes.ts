import { Router } from 'express';
import { z } from 'zod';
import { InvalidInputError } from '../../core/errors.js';
import { contextDetails, dockerContextSchema } from '../../core/docker-context.js';
import { clientPrincipal, requestMeta } from '../../http/request-context.js';
import { defineRoutes } from '../../http/routes.js';
import { decodeCursor, encodeCursor, limitSchema, nameSchema, parseName, parseWith } from '../../core/validation.js';
import type { GateService } from './gate-service.js';
import type { PolicyService } from './policy-service.js';

const listPoliciesQuery = z.object({ limit: limitSchema, cursor: z.string().max(512).optional() }).strict();

export const releaseRequestSchema = z.object({ image: z.string().min(1).max(512) }).strict();

export const clientReleaseRequestSchema = releaseRequestSchema
  .extend({
    context: dockerContextSchema
      .extend({
        containerUser: z
          .string()
          .max(256)
          .describe('The user the container runs as (docker run --user). When given, nonRootUser judges it; "" means the image\'s configured user.')
          .optional(),
      })
      .strict()
      .optional(),
  })
  .strict();

const listReleasesQuery = z
  .object({
    image: z.string().min(1).max(1024).optional(),
    digest: z.string().regex(/^sha(256:[a-f0-9]{64}|512:[a-f0-9]{128})$/, 'digest is sha256:<64 hex>').optional(),
    decision: z.enum(['allow', 'deny', 'warn']).optional(),
    policy: nameSchema.optional(),
    limit: limitSchema,
    cursor: z.string().max(512).optional(),
  })
  .strict();

const DECISION_ID = /^rd_[A-Za-z0-9_-]{1,37}$/;

function parseIfMatch(header: string | undefined): number | undefined {
  if (header === undefined) return undefined;
  const m = /^\s*(?:W\/)?"(\d+)"\s*$/.exec(header);
  if (!m) throw new InvalidInputError('If-Match must be a version ETag such as "3"');
  return Number(m[1]);
}

export function policyRoutes(policies: PolicyService): Router {
  const router = Router();
  defineRoutes(router, [
    {
      method: 'post',
      path: '/v1/policies',
      access: ['admin'],
      handler: async (req, res) => {
        const doc = policies.parseDocument(req.body);
        const view = await policies.create(req.principal!, requestMeta(req), doc);
        res.status(201).location(`/v1/policies/${view.name}`).set('ETag', `"${view.version}"`).json(view);
      },
    },
    {
      method: 'get',
      path: '/v1/policies',
      access: ['auditor', 'signer'],
      handler: async (req, res) => {
        const q = parseWith(listPoliciesQuery, req.query, 'query');
        const items = await policies.list({ after: decodeCursor<string>(q.cursor, 'string'), limit: q.limit });
        const nextCursor = items.length === q.limit ? encodeCursor(items[items.length - 1]!.name) : null;
        res.json({ items, nextCursor });
      },
    },
    {
      method: 'get',
      path: '/v1/policies/{name}',
      access: ['auditor', 'signer'],
      handler: async (req, res) => {
        const view = await policies.get(parseName(req.params.name as string));
        res.set('ETag', `"${view.version}"`).json(view);
      },
    },
    {
      method: 'get',
      path: '/v1/policies/{name}/versions',
      access: ['auditor', 'signer'],
      handler: async (req, res) => {
        res.json({ items: await policies.versions(parseName(req.params.name as string)) });
      },
    },
    {
      method: 'put',
      path: '/v1/policies/{name}',
      access: ['admin'],
      handler: async (req, res) => {
        const name = parseName(req.params.name as string);
        const body = req.body && typeof req.body === 'object' && !Array.isArray(req.body) ? { name, ...req.body } : req.body;
        const doc = policies.parseDocument(body);
        if (doc.name !== name) throw new InvalidInputError(`name in the body (${doc.name}) differs from the path (${name})`);
        const view = await policies.replace(req.principal!, requestMeta(req), name, doc, parseIfMatch(req.get('if-match')));
        res.set('ETag', `"${view.version}"`).json(view);
      },
    },
    {
      method: 'delete',
      path: '/v1/policies/{name}',
      access: ['admin'],
      handler: async (req, res) => {
        await policies.remove(req.principal!, requestMeta(req), parseName(req.params.name as string));
        res.status(204).end();
      },
    },
  ]);
  return router;
}

export function releaseRoutes(gate: GateService): Router {
  const router = Router();
  defineRoutes(router, [
    {
      method: 'post',
      path: '/v1/releases',
      access: ['writer', 'signer'],
      handler: async (req, res) => {
        const body = parseWith(releaseRequestSchema, req.body);
        const decision = await gate.decide(req.principal!, requestMeta(req), body.image);
        res.location(`/v1/releases/${decision.id}`).set('Cache-Control', 'no-store').json(decision);
      },
    },
    {
      method: 'get',
      path: '/v1/releases',
      access: ['writer', 'signer', 'auditor'],
      handler: async (req, res) => {
        const q = parseWith(listReleasesQuery, req.query, 'query');
        let after: { at: number; id: string } | undefined;
        const raw = decodeCursor<string>(q.cursor, 'string');
        if (raw !== undefined) {
          const m = /^(\d{1,16})\|(rd_[A-Za-z0-9_-]{1,37})$/.exec(raw);
          if (!m) throw new InvalidInputError('cursor is malformed');
          after = { at: Number(m[1]), id: m[2]! };
        }
        const items = await gate.list({ image: q.image, digest: q.digest, decision: q.decision, policy: q.policy, after, limit: q.limit });
        const last = items[items.length - 1];
        const nextCursor = items.length === q.limit && last ? encodeCursor(`${Date.parse(last.decidedAt)}|${last.id}`) : null;
        res.json({ items, nextCursor });
      },
    },
    {
      method: 'get',
      path: '/v1/releases/{id}',
      access: ['writer', 'signer', 'auditor'],
      handler: async (req, res) => {
        const id = String(req.params.id);
        if (!DECISION_ID.test(id)) throw new InvalidInputError('id must look like rd_<id>');
        res.json(await gate.get(id));
      },
    },
  ]);
  return router;
}

/** The release gate for a client an admin gave releaseGate (the Docker plugin's authz). */
export function clientReleaseRoutes(gate: GateService): Router {
  const router = Router();
  defineRoutes(router, [
    {
      method: 'post',
      path: '/v1/client/releases',
      access: 'client',
      handler: async (req, res) => {
        const principal = clientPrincipal(req);
        const body = parseWith(clientReleaseRequestSchema, req.body);
        const { containerUser, ...context } = body.context ?? {};
        const decision = await gate.decideForClient(principal, requestMeta(req), body.image, { containerUser, context: contextDetails(context) });
        res.location(`/v1/releases/${decision.id}`).set('Cache-Control', 'no-store').json(decision);
      },
    },
  ]);
  return router;
}
