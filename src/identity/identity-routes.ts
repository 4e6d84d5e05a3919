import { Router, type Request } from 'express';
import { z } from 'zod';
import { InvalidInputError, OAuthError } from '../core/errors.js';
import { requestMeta } from '../http/request-context.js';
import { defineRoutes, FORM_BODY, JSON_BODY } from '../http/routes.js';
import { decodeCursor, encodeCursor, limitSchema, parseName, parseWith } from '../core/validation.js';
import type { ApiKeysService } from './api-keys-service.js';
import { createApiKeySchema } from './api-keys-service.js';
import type { AuthService } from './auth-service.js';
import { createClientSchema, membershipChangeSchema, updateClientSchema, type ClientsService } from './clients-service.js';
import { createGroupSchema, groupETag, updateGroupSchema, type GroupIfMatch, type GroupsService } from './groups-service.js';
import type { JwtKeyService } from './jwt-key-service.js';
import type { AuditService } from '../audit/audit-service.js';
import { actorOf } from './identity-types.js';

/** Accepts OAuth2 client authentication by HTTP Basic as well as in the body. */
function tokenParams(req: Request): Record<string, string> {
  const body = req.body && typeof req.body === 'object' && !Array.isArray(req.body) ? (req.body as Record<string, unknown>) : {};
  const params: Record<string, string> = {};
  for (const [k, v] of Object.entries(body)) {
    if (typeof v === 'string') params[k] = v;
    else if (v !== undefined) throw new OAuthError('invalid_input', 'invalid_request', 'invalid_request', `${k} must be a string`);
  }
  const auth = req.get('authorization');
  if (auth?.startsWith('Basic ')) {
    const decoded = Buffer.from(auth.slice(6), 'base64').toString('utf8');
    const colon = decoded.indexOf(':');
    if (colon < 0) throw new OAuthError('invalid_input', 'invalid_request', 'invalid_request', 'malformed Basic authorization');
    // RFC 6749 2.3.1 form-encodes Basic credentials; a bad escape is the caller's error
    const decode = (s: string) => {
      try {
        return decodeURIComponent(s.replace(/\+/g, ' '));
      } catch {
        throw new OAuthError('invalid_input', 'invalid_request', 'invalid_request', 'malformed Basic authorization encoding');
      }
    };
    params.client_id ??= decode(decoded.slice(0, colon));
    params.client_secret ??= decode(decoded.slice(colon + 1));
  }
  return params;
}

const pageQuery = z.object({ limit: limitSchema, cursor: z.string().max(512).optional() }).strict();

/** `If-Match` on a group: `*`, or one ETag as GET returns it (`"<digits>"`, `W/` tolerated as for secrets). */
function parseGroupIfMatch(header: string | undefined): GroupIfMatch {
  if (header === undefined) return undefined;
  if (header.trim() === '*') return '*';
  const m = /^\s*(?:W\/)?"(\d{1,16})"\s*$/.exec(header);
  if (!m) throw new InvalidInputError('If-Match must be * or an ETag from GET /v1/groups/{name}, such as "1767225600000"');
  return Number(m[1]);
}

export function groupRoutes(groups: GroupsService): Router {
  const router = Router();
  defineRoutes(router, [
    {
      method: 'post',
      path: '/v1/groups',
      access: ['writer'],
      handler: async (req, res) => {
        const body = parseWith(createGroupSchema, req.body);
        const group = await groups.create(req.principal!, requestMeta(req), body);
        res.status(201).location(`/v1/groups/${body.name}`).set('ETag', groupETag(group)).json(group);
      },
    },
    {
      method: 'get',
      path: '/v1/groups',
      access: ['writer', 'auditor'],
      handler: async (req, res) => {
        const q = parseWith(pageQuery, req.query, 'query');
        const items = await groups.list(decodeCursor<string>(q.cursor, 'string'), q.limit);
        res.json({ items, nextCursor: items.length === q.limit ? encodeCursor(items[items.length - 1].name) : null });
      },
    },
    {
      method: 'get',
      path: '/v1/groups/{name}',
      access: ['writer', 'auditor'],
      handler: async (req, res) => {
        const group = await groups.get(parseName(req.params.name));
        res.set('ETag', groupETag(group)).json(group);
      },
    },
    {
      method: 'patch',
      path: '/v1/groups/{name}',
      access: ['writer'],
      handler: async (req, res) => {
        const name = parseName(req.params.name);
        const ifMatch = parseGroupIfMatch(req.get('if-match'));
        const body = parseWith(updateGroupSchema, req.body);
        const group = await groups.update(req.principal!, requestMeta(req), name, body, ifMatch);
        res.set('ETag', groupETag(group)).json(group);
      },
    },
    {
      method: 'delete',
      path: '/v1/groups/{name}',
      access: ['writer'],
      handler: async (req, res) => {
        await groups.remove(req.principal!, requestMeta(req), parseName(req.params.name));
        res.status(204).end();
      },
    },
    {
      method: 'put',
      path: '/v1/groups/{name}/secrets',
      access: ['writer'],
      handler: async (req, res) => {
        const name = parseName(req.params.name);
        res.json(await groups.changeSecrets(req.principal!, requestMeta(req), name, parseWith(membershipChangeSchema, req.body)));
      },
    },
    {
      method: 'put',
      path: '/v1/groups/{name}/clients',
      access: ['writer'],
      handler: async (req, res) => {
        const name = parseName(req.params.name);
        res.json(await groups.changeClients(req.principal!, requestMeta(req), name, parseWith(membershipChangeSchema, req.body)));
      },
    },
  ]);
  return router;
}

export function clientRoutes(clients: ClientsService): Router {
  const router = Router();
  defineRoutes(router, [
    {
      method: 'post',
      path: '/v1/clients',
      access: ['writer'],
      handler: async (req, res) => {
        const body = parseWith(createClientSchema, req.body);
        res.status(201).location(`/v1/clients/${body.name}`).set('Cache-Control', 'no-store').json(await clients.create(req.principal!, requestMeta(req), body));
      },
    },
    {
      method: 'get',
      path: '/v1/clients',
      access: ['writer', 'auditor'],
      handler: async (req, res) => {
        const q = parseWith(pageQuery, req.query, 'query');
        const items = await clients.list(decodeCursor<string>(q.cursor, 'string'), q.limit);
        res.json({ items, nextCursor: items.length === q.limit ? encodeCursor(items[items.length - 1].name) : null });
      },
    },
    {
      method: 'get',
      path: '/v1/clients/{name}',
      access: ['writer', 'auditor'],
      handler: async (req, res) => {
        res.json(await clients.get(parseName(req.params.name)));
      },
    },
    {
      method: 'patch',
      path: '/v1/clients/{name}',
      access: ['writer'],
      handler: async (req, res) => {
        const name = parseName(req.params.name);
        res.json(await clients.update(req.principal!, requestMeta(req), name, parseWith(updateClientSchema, req.body)));
      },
    },
    {
      method: 'delete',
      path: '/v1/clients/{name}',
      access: ['writer'],
      handler: async (req, res) => {
        await clients.remove(req.principal!, requestMeta(req), parseName(req.params.name));
        res.status(204).end();
      },
    },
    {
      method: 'put',
      path: '/v1/clients/{name}/groups',
      access: ['writer'],
      handler: async (req, res) => {
        const name = parseName(req.params.name);
        res.json(await clients.changeGroups(req.principal!, requestMeta(req), name, parseWith(membershipChangeSchema, req.body)));
      },
    },
    {
      method: 'post',
      path: '/v1/clients/{name}/secret',
      access: ['writer'],
      handler: async (req, res) => {
        res.set('Cache-Control', 'no-store').json(await clients.rotateSecret(req.principal!, requestMeta(req), parseName(req.params.name)));
      },
    },
  ]);
  return router;
}

export function apiKeyRoutes(apiKeys: ApiKeysService): Router {
  const router = Router();
  defineRoutes(router, [
    {
      method: 'post',
      path: '/v1/api-keys',
      access: ['admin'],
      handler: async (req, res) => {
        const body = parseWith(createApiKeySchema, req.body);
        res.status(201).set('Cache-Control', 'no-store').json(await apiKeys.create(req.principal!, requestMeta(req), body));
      },
    },
    {
      method: 'get',
      path: '/v1/api-keys',
      access: ['admin'],
      handler: async (_req, res) => {
        res.json({ items: await apiKeys.list() });
      },
    },
    {
      method: 'delete',
      path: '/v1/api-keys/{id}',
      access: ['admin'],
      handler: async (req, res) => {
        const id = req.params.id;
        if (typeof id !== 'string' || !/^[A-Za-z0-9_-]{1,32}$/.test(id)) throw new InvalidInputError('id is malformed');
        await apiKeys.revoke(req.principal!, requestMeta(req), id);
        res.status(204).end();
      },
    },
  ]);
  return router;
}

export function authRoutes(auth: AuthService, jwtKeys: JwtKeyService, audit: AuditService, issuer: string): Router {
  const router = Router();
  defineRoutes(router, [
    {
      method: 'post',
      path: '/v1/auth/token',
      access: 'public',
      // RFC 6749 form parameters; JSON too, as openapi.yaml documents
      accepts: [...FORM_BODY, ...JSON_BODY],
      handler: async (req, res) => {
        const response = await auth.token(tokenParams(req), requestMeta(req));
        res.set('Cache-Control', 'no-store').set('Pragma', 'no-cache').json(response);
      },
    },
    {
      method: 'get',
      path: '/.well-known/jwks.json',
      access: 'public',
      handler: async (_req, res) => {
        res.set('Cache-Control', 'public, max-age=60').json(await jwtKeys.jwks());
      },
    },
    {
      method: 'get',
      path: '/.well-known/openid-configuration',
      access: 'public',
      handler: async (_req, res) => {
        res.json({
          issuer,
          jwks_uri: `${issuer}/.well-known/jwks.json`,
          token_endpoint: `${issuer}/v1/auth/token`,
          grant_types_supported: auth.grantTypes(),
          token_endpoint_auth_methods_supported: ['client_secret_basic', 'client_secret_post'],
          id_token_signing_alg_values_supported: ['ES256'],
          subject_types_supported: ['public'],
          response_types_supported: ['token'],
        });
      },
    },
    {
      method: 'post',
      path: '/v1/jwt-keys/rotate',
      access: ['admin'],
      handler: async (req, res) => {
        // the rotation and its event commit together, or neither does
        const result = await audit.transact(async (trx, record) => {
          const rotated = await jwtKeys.rotate(trx);
          await record({ actor: actorOf(req.principal), action: 'jwtkey.rotate', resource: { kind: 'jwt-key', name: rotated.kid }, outcome: 'allow', details: { retired: rotated.retired }, request: requestMeta(req) });
          return rotated;
        });
        res.json(result);
      },
    },
  ]);
  return router;
}
