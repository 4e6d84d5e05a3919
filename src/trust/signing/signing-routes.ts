import { Router } from 'express';
import { z } from 'zod';
import type { AuditService } from '../../audit/audit-service.js';
import { problems } from '../../http/problem.js';
import { requestMeta } from '../../http/request-context.js';
import { defineRoutes } from '../../http/routes.js';
import { nameSchema, parseName, parseWith } from '../../http/validation.js';
import { actorOf } from '../../identity/identity-types.js';
import { isValidRegistryHost } from '../registry/image-ref.js';
import { signRequestSchema, type SignaturesService } from './signatures-service.js';
import { createSigningKeySchema, type SigningKeysService } from './signing-keys-service.js';
import { trustedIssuerSchema, updateTrustedIssuerSchema, type TrustedIssuersService } from './trusted-issuers-service.js';
import type { Knex } from 'knex';

export function signingRoutes(deps: {
  db: Knex;
  audit: AuditService;
  signingKeys: SigningKeysService;
  issuers: TrustedIssuersService;
  signatures: SignaturesService;
}): Router {
  const router = Router();
  defineRoutes(router, [
    {
      method: 'post',
      path: '/v1/signing-keys',
      access: ['admin'],
      handler: async (req, res) => {
        const body = parseWith(createSigningKeySchema, req.body);
        res.status(201).location(`/v1/signing-keys/${body.name}`).json(await deps.signingKeys.create(req.principal!, requestMeta(req), body));
      },
    },
    {
      method: 'get',
      path: '/v1/signing-keys',
      access: ['signer', 'auditor', 'writer'],
      handler: async (_req, res) => {
        res.json({ items: await deps.signingKeys.list() });
      },
    },
    {
      method: 'get',
      path: '/v1/signing-keys/{name}',
      access: ['signer', 'auditor', 'writer'],
      handler: async (req, res) => {
        res.json(await deps.signingKeys.get(parseName(req.params.name)));
      },
    },
    {
      method: 'get',
      path: '/v1/signing-keys/{name}/public.pem',
      access: 'public',
      handler: async (req, res) => {
        const key = await deps.signingKeys.get(parseName(req.params.name));
        res.type('application/x-pem-file').send(key.publicKeyPem);
      },
    },
    {
      method: 'post',
      path: '/v1/signing-keys/{name}/rotate',
      access: ['admin'],
      handler: async (req, res) => {
        res.json(await deps.signingKeys.rotate(req.principal!, requestMeta(req), parseName(req.params.name)));
      },
    },
    {
      method: 'post',
      path: '/v1/signing-keys/{name}/disable',
      access: ['admin'],
      handler: async (req, res) => {
        res.json(await deps.signingKeys.setStatus(req.principal!, requestMeta(req), parseName(req.params.name), 'disabled'));
      },
    },
    {
      method: 'post',
      path: '/v1/signing-keys/{name}/enable',
      access: ['admin'],
      handler: async (req, res) => {
        res.json(await deps.signingKeys.setStatus(req.principal!, requestMeta(req), parseName(req.params.name), 'active'));
      },
    },
    {
      method: 'post',
      path: '/v1/trusted-issuers',
      access: ['admin'],
      handler: async (req, res) => {
        const body = parseWith(trustedIssuerSchema, req.body);
        res.status(201).json(await deps.issuers.create(req.principal!, requestMeta(req), body));
      },
    },
    {
      method: 'get',
      path: '/v1/trusted-issuers',
      access: ['auditor'],
      handler: async (_req, res) => {
        res.json({ items: await deps.issuers.list() });
      },
    },
    {
      method: 'get',
      path: '/v1/trusted-issuers/{name}',
      access: ['auditor'],
      handler: async (req, res) => {
        res.json(await deps.issuers.get(parseName(req.params.name)));
      },
    },
    {
      method: 'patch',
      path: '/v1/trusted-issuers/{name}',
      access: ['admin'],
      handler: async (req, res) => {
        const name = parseName(req.params.name);
        const body = parseWith(updateTrustedIssuerSchema, req.body);
        res.json(await deps.issuers.update(req.principal!, requestMeta(req), name, body));
      },
    },
    {
      method: 'delete',
      path: '/v1/trusted-issuers/{name}',
      access: ['admin'],
      handler: async (req, res) => {
        await deps.issuers.remove(req.principal!, requestMeta(req), parseName(req.params.name));
        res.status(204).end();
      },
    },
    {
      method: 'post',
      path: '/v1/signatures',
      // writers and auditors reach the service so that their refusal is audited (image.sign deny);
      // signingScopeProblem() lets only admins and scoped signers through
      access: ['signer', 'writer', 'auditor'],
      handler: async (req, res) => {
        const body = parseWith(signRequestSchema, req.body);
        res.status(201).json(await deps.signatures.sign(req.principal!, requestMeta(req), body));
      },
    },
    {
      method: 'get',
      path: '/v1/signatures',
      access: ['signer', 'auditor'],
      handler: async (req, res) => {
        const q = parseWith(z.object({ image: z.string().min(3).max(1024).optional() }).strict(), req.query, 'query');
        res.json({ items: await deps.signatures.list(q.image) });
      },
    },
    {
      method: 'put',
      path: '/v1/registry-credentials/{registry}',
      access: ['admin'],
      handler: async (req, res) => {
        const registry = String(req.params.registry);
        if (!isValidRegistryHost(registry)) throw problems.badRequest('registry must be a host or host:port');
        const { secret } = parseWith(z.object({ secret: nameSchema }).strict(), req.body);
        if (!(await deps.db('secrets').where({ name: secret }).whereNull('deleted_at').first())) throw problems.badRequest(`secret ${secret} does not exist`);
        await deps.audit.transact(async (trx, record) => {
          await trx('registry_credentials').insert({ registry, secret_name: secret, created_at: Date.now() }).onConflict('registry').merge({ secret_name: secret });
          await record({ actor: actorOf(req.principal), action: 'registry.credentials.set', resource: { kind: 'registry', name: registry }, outcome: 'allow', details: { secret }, request: requestMeta(req) });
        });
        res.json({ registry, secret });
      },
    },
    {
      method: 'get',
      path: '/v1/registry-credentials',
      access: ['auditor'],
      handler: async (_req, res) => {
        const rows = await deps.db('registry_credentials').orderBy('registry');
        res.json({ items: rows.map((r: any) => ({ registry: r.registry, secret: r.secret_name })) });
      },
    },
  ]);
  return router;
}
