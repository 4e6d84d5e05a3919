import { Router } from 'express';
import { z } from 'zod';
import { InvalidInputError } from '../core/errors.js';
import { contextDetails, dockerContextSchema } from '../core/docker-context.js';
import { clientPrincipal, requestMeta } from '../http/request-context.js';
import { defineRoutes } from '../http/routes.js';
import { decodeCursor, encodeCursor, limitSchema, nameSchema, parseName, parseWith } from '../core/validation.js';
import type { SecretsService } from './secrets-service.js';
import { decodeContent } from './secrets-service.js';
import { addVersionSchema, createSecretSchema, rollbackSchema, updateSecretSchema } from './secrets-types.js';

const listQuerySchema = z
  .object({
    label: z.string().regex(/^[A-Za-z0-9._/-]{1,63}(=.{0,256})?$/, 'label filter is key or key=value').optional(),
    group: nameSchema.optional(),
    expiringBefore: z.string().datetime({ offset: true }).optional(),
    limit: limitSchema,
    cursor: z.string().max(512).optional(),
  })
  .strict();

function parseIfMatch(header: string | undefined): number | undefined {
  if (header === undefined) return undefined;
  const m = /^\s*(?:W\/)?"(\d+)"\s*$/.exec(header);
  if (!m) throw new InvalidInputError('If-Match must be a version ETag such as "3"');
  return Number(m[1]);
}

export function secretsRoutes(secrets: SecretsService): Router {
  const router = Router();
  defineRoutes(router, [
    {
      method: 'post',
      path: '/v1/secrets',
      access: ['writer'],
      handler: async (req, res) => {
        const body = parseWith(createSecretSchema, req.body);
        const detail = await secrets.create(req.principal!, requestMeta(req), {
          ...body,
          content: decodeContent(body),
        });
        res.status(201).location(`/v1/secrets/${detail.name}`).set('ETag', `"${detail.version}"`).json(detail);
      },
    },
    {
      method: 'get',
      path: '/v1/secrets',
      access: ['writer', 'auditor'],
      handler: async (req, res) => {
        const q = parseWith(listQuerySchema, req.query, 'query');
        let label: { key: string; value?: string } | undefined;
        if (q.label) {
          const eq = q.label.indexOf('=');
          label = eq < 0 ? { key: q.label } : { key: q.label.slice(0, eq), value: q.label.slice(eq + 1) };
        }
        const items = await secrets.list({
          label,
          group: q.group,
          expiringBefore: q.expiringBefore ? Date.parse(q.expiringBefore) : undefined,
          after: decodeCursor<string>(q.cursor, 'string'),
          limit: q.limit,
        });
        const nextCursor = items.length === q.limit ? encodeCursor(items[items.length - 1].name) : null;
        res.json({ items, nextCursor });
      },
    },
    {
      method: 'get',
      path: '/v1/secrets/{name}',
      access: ['writer', 'auditor'],
      handler: async (req, res) => {
        const detail = await secrets.detail(await secrets.requireLive(parseName(req.params.name)));
        res.set('ETag', `"${detail.version}"`).json(detail);
      },
    },
    {
      method: 'patch',
      path: '/v1/secrets/{name}',
      access: ['writer'],
      handler: async (req, res) => {
        const name = parseName(req.params.name);
        const patch = parseWith(updateSecretSchema, req.body);
        res.json(await secrets.update(req.principal!, requestMeta(req), name, patch));
      },
    },
    {
      method: 'post',
      path: '/v1/secrets/{name}/versions',
      access: ['writer'],
      handler: async (req, res) => {
        const name = parseName(req.params.name);
        const body = parseWith(addVersionSchema, req.body);
        const detail = await secrets.addVersion(req.principal!, requestMeta(req), name, decodeContent(body), {
          cas: body.cas,
          ifMatch: parseIfMatch(req.get('if-match')),
        });
        res.status(201).set('ETag', `"${detail.version}"`).json(detail);
      },
    },
    {
      method: 'get',
      path: '/v1/secrets/{name}/versions',
      access: ['writer', 'auditor'],
      handler: async (req, res) => {
        res.json({ items: await secrets.listVersions(parseName(req.params.name)) });
      },
    },
    {
      method: 'post',
      path: '/v1/secrets/{name}/rollback',
      access: ['writer'],
      handler: async (req, res) => {
        const name = parseName(req.params.name);
        const { version } = parseWith(rollbackSchema, req.body);
        const detail = await secrets.rollback(req.principal!, requestMeta(req), name, version);
        res.set('ETag', `"${detail.version}"`).json(detail);
      },
    },
    {
      method: 'get',
      path: '/v1/secrets/{name}/content',
      access: ['writer'],
      handler: async (req, res) => {
        const name = parseName(req.params.name);
        const { version } = parseWith(
          z.object({ version: z.coerce.number().int().positive().optional() }).strict(),
          req.query,
          'query',
        );
        res.set('Cache-Control', 'no-store').json(await secrets.readContent(req.principal!, requestMeta(req), name, version));
      },
    },
    {
      method: 'delete',
      path: '/v1/secrets/{name}',
      access: ['writer'],
      handler: async (req, res) => {
        await secrets.remove(req.principal!, requestMeta(req), parseName(req.params.name));
        res.status(204).end();
      },
    },
  ]);
  return router;
}

export const batchSchema = z.object({ names: z.array(nameSchema).min(1).max(100) }).strict();

export const delegatedReadSchema = z
  .object({
    client: nameSchema.describe('The client the caller acts for: the secret must be granted to it.'),
    secret: nameSchema,
    context: dockerContextSchema.optional(),
  })
  .strict();

export const delegatedListSchema = z
  .object({
    client: nameSchema.describe('The client the caller acts for.'),
    includeContent: z.boolean().default(false).describe('Deliver every value too (each an audited read).'),
    context: dockerContextSchema.optional(),
  })
  .strict();

export function clientSecretsRoutes(secrets: SecretsService): Router {
  const router = Router();
  defineRoutes(router, [
    {
      method: 'get',
      path: '/v1/client/secrets',
      access: 'client',
      handler: async (req, res) => {
        const principal = clientPrincipal(req);
        res.json({ items: await secrets.listForClient(principal.id) });
      },
    },
    {
      method: 'get',
      path: '/v1/client/secrets/{name}',
      access: 'client',
      handler: async (req, res) => {
        const principal = clientPrincipal(req);
        const [secret] = await secrets.deliver(principal, requestMeta(req), [parseName(req.params.name)]);
        res.set('Cache-Control', 'no-store').json(secret);
      },
    },
    {
      method: 'post',
      path: '/v1/client/secrets/batch',
      access: 'client',
      handler: async (req, res) => {
        const principal = clientPrincipal(req);
        const { names } = parseWith(batchSchema, req.body);
        const items = await secrets.deliver(principal, requestMeta(req), [...new Set(names)]);
        res.set('Cache-Control', 'no-store').json({ items });
      },
    },
    {
      method: 'post',
      path: '/v1/client/delegated/secrets/read',
      access: 'client',
      handler: async (req, res) => {
        const principal = clientPrincipal(req);
        const body = parseWith(delegatedReadSchema, req.body);
        const secret = await secrets.deliverDelegated(principal, requestMeta(req), body.client, body.secret, contextDetails(body.context));
        res.set('Cache-Control', 'no-store').json(secret);
      },
    },
    {
      method: 'post',
      path: '/v1/client/delegated/secrets/list',
      access: 'client',
      handler: async (req, res) => {
        const principal = clientPrincipal(req);
        const body = parseWith(delegatedListSchema, req.body);
        const items = await secrets.listDelegated(principal, requestMeta(req), body.client, { includeContent: body.includeContent, context: contextDetails(body.context) });
        res.set('Cache-Control', 'no-store').json({ client: body.client, items });
      },
    },
  ]);
  return router;
}
