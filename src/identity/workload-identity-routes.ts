import { Router } from 'express';
import { clientPrincipal, requestMeta } from '../http/request-context.js';
import { defineRoutes } from '../http/routes.js';
import { parseName, parseWith } from '../http/validation.js';
import { bootstrapTokenRequestSchema, mintJwtSchema, revokeSchema, type WorkloadIdentityService } from './workload-identity-service.js';

export function workloadIdentityRoutes(workload: WorkloadIdentityService): Router {
  const router = Router();
  defineRoutes(router, [
    {
      method: 'post',
      path: '/v1/clients/{name}/bootstrap-tokens',
      access: ['writer'],
      handler: async (req, res) => {
        const name = parseName(req.params.name);
        const { ttl } = parseWith(bootstrapTokenRequestSchema, req.body ?? {});
        res.status(201).set('Cache-Control', 'no-store').json(await workload.createBootstrapToken(req.principal!, requestMeta(req), name, ttl));
      },
    },
    {
      method: 'get',
      path: '/v1/clients/{name}/bootstrap-tokens',
      access: ['writer', 'auditor'],
      handler: async (req, res) => {
        res.json({ items: await workload.listBootstrapTokens(parseName(req.params.name)) });
      },
    },
    {
      method: 'post',
      path: '/v1/client/credentials/jwt',
      access: 'client',
      handler: async (req, res) => {
        const body = parseWith(mintJwtSchema, req.body);
        const principal = clientPrincipal(req);
        res.status(201).set('Cache-Control', 'no-store').json(await workload.mintWorkloadJwt(principal, requestMeta(req), body.audience, body.ttl));
      },
    },
    {
      method: 'post',
      path: '/v1/tokens/revoke',
      access: ['admin'],
      handler: async (req, res) => {
        const body = parseWith(revokeSchema, req.body);
        res.json(await workload.revoke(req.principal!, requestMeta(req), body.jti, body.expiresAt ? Date.parse(body.expiresAt) : undefined));
      },
    },
  ]);
  return router;
}
