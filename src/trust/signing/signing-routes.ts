import { Router } from 'express';
import { z } from 'zod';
import { requestMeta } from '../../http/request-context.js';
import { defineRoutes } from '../../http/routes.js';
import { parseName, parseWith } from '../../http/validation.js';
import type { RegistryCredentialsService } from '../registry/registry-credentials-service.js';
import { signRequestSchema, type SignaturesService } from './signatures-service.js';
import { createSigningKeySchema, type SigningKeysService } from './signing-keys-service.js';
import { trustedIssuerSchema, updateTrustedIssuerSchema, type TrustedIssuersService } from './trusted-issuers-service.js';

export function signingRoutes(deps: {
  registryCredentials: RegistryCredentialsService;
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
        res.json(await deps.registryCredentials.set(req.principal, requestMeta(req), String(req.params.registry), req.body));
      },
    },
    {
      method: 'get',
      path: '/v1/registry-credentials',
      access: ['auditor'],
      handler: async (_req, res) => {
        res.json({ items: await deps.registryCredentials.list() });
      },
    },
  ]);
  return router;
}
