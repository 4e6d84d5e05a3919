import { Router, type Request } from 'express';
import { InvalidInputError } from '../core/errors.js';
import { clientPrincipal, requestMeta } from '../http/request-context.js';
import { defineRoutes } from '../http/routes.js';
import type { AccessService } from '../access/access-service.js';
import type { SecretsService } from '../secrets/secrets-service.js';
import { KvService, parseKvWrite, parseVersions } from './kv-service.js';
import { vaultResponse } from './vault-response.js';

export interface KvRoutesDeps {
  secrets: SecretsService;
  access: AccessService;
  /** KEYWARDEN_VAULT_KV_MOUNT: the one path segment the KV v2 engine is mounted at. */
  mount: string;
}

/** The KV path of a `{path+}` route: Express 5 gives the wildcard as its segments. */
function kvPath(req: Request): string {
  const raw = req.params.path as unknown;
  return Array.isArray(raw) ? raw.join('/') : String(raw ?? '');
}

/** `?version=N`: 0 or absent is the current version, as in Vault. */
function versionParam(req: Request): number | undefined {
  const raw = req.query.version;
  if (raw === undefined || raw === '' || raw === '0') return undefined;
  if (typeof raw !== 'string' || !/^\d{1,9}$/.test(raw)) throw new InvalidInputError('version must be a non-negative integer');
  return Number(raw);
}

/**
 * LIST arrives as GET ?list=true (the LIST rewrite in http/list-method.ts), or as a client sends
 * it without custom verbs (node-vault's noCustomHTTPVerbs: ?list=1): Vault takes Go's boolean strings.
 */
const isList = (req: Request) => typeof req.query.list === 'string' && ['1', 't', 'T', 'true', 'TRUE', 'True'].includes(req.query.list);

/**
 * Vault's KV version 2 API at /v1/<mount>/ (kv-service.ts has the mapping). Reads (data,
 * metadata, list) are for clients and show only what their groups are granted; writes, deletes
 * and undeletes are for writer (and admin) operators. Errors are thrown as domain errors; the
 * Vault router's error mapper answers them in Vault's shape.
 */
export function kvRoutes(deps: KvRoutesDeps): Router {
  const kv = new KvService(deps);
  const base = `/v1/${deps.mount}`;
  const router = Router();
  const write = async (req: Request) => {
    const { data, cas } = parseKvWrite(req.body);
    return vaultResponse(req.requestId, { data: await kv.write(req.principal!, requestMeta(req), kvPath(req), data, cas), mountType: 'kv' });
  };
  defineRoutes(router, [
    {
      method: 'get',
      path: `${base}/data/{path+}`,
      access: 'client',
      handler: async (req, res) => {
        const read = await kv.read(clientPrincipal(req), requestMeta(req), kvPath(req), versionParam(req));
        const warnings = read.metadata.custom_metadata ? ['not a KV secret: data.value is its content in base64'] : null;
        res.set('Cache-Control', 'no-store').json(vaultResponse(req.requestId, { data: read, warnings, mountType: 'kv' }));
      },
    },
    { method: 'post', path: `${base}/data/{path+}`, access: ['writer'], handler: async (req, res) => res.json(await write(req)) },
    { method: 'put', path: `${base}/data/{path+}`, access: ['writer'], handler: async (req, res) => res.json(await write(req)) },
    {
      method: 'delete',
      path: `${base}/data/{path+}`,
      access: ['writer'],
      handler: async (req, res) => {
        await kv.delete(req.principal!, requestMeta(req), kvPath(req));
        res.status(204).end();
      },
    },
    {
      method: 'post',
      path: `${base}/delete/{path+}`,
      access: ['writer'],
      handler: async (req, res) => {
        await kv.delete(req.principal!, requestMeta(req), kvPath(req), parseVersions(req.body));
        res.status(204).end();
      },
    },
    {
      method: 'post',
      path: `${base}/undelete/{path+}`,
      access: ['writer'],
      handler: async (req, res) => {
        await kv.undelete(req.principal!, requestMeta(req), kvPath(req), parseVersions(req.body));
        res.status(204).end();
      },
    },
    {
      method: 'post',
      path: `${base}/destroy/{path+}`,
      access: ['writer'],
      handler: (req) => kv.destroy(kvPath(req)),
    },
    {
      // the mount's top level: only a list makes sense there
      method: 'get',
      path: `${base}/metadata`,
      access: 'client',
      handler: async (req, res) => {
        if (!isList(req)) throw new InvalidInputError('missing path: read metadata/<path>, or list with LIST or ?list=true');
        res.json(vaultResponse(req.requestId, { data: { keys: await kv.list(clientPrincipal(req), '') }, mountType: 'kv' }));
      },
    },
    {
      method: 'get',
      path: `${base}/metadata/{path+}`,
      access: 'client',
      handler: async (req, res) => {
        const data = isList(req) ? { keys: await kv.list(clientPrincipal(req), kvPath(req)) } : await kv.metadata(clientPrincipal(req), requestMeta(req), kvPath(req));
        res.json(vaultResponse(req.requestId, { data, mountType: 'kv' }));
      },
    },
    {
      // Vault removes the path and every version for good; Keywarden deletes the secret (kept for the record)
      method: 'delete',
      path: `${base}/metadata/{path+}`,
      access: ['writer'],
      handler: async (req, res) => {
        await kv.delete(req.principal!, requestMeta(req), kvPath(req));
        res.status(204).end();
      },
    },
  ], { accepts: 'any' }); // Vault reads every body as JSON, whatever its content type (vault-routes.ts parses it so)
  return router;
}
