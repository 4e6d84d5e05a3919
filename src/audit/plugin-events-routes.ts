import { Router } from 'express';
import { z } from 'zod';
import { clientPrincipal, requestMeta } from '../http/request-context.js';
import { defineRoutes } from '../http/routes.js';
import { parseWith } from '../http/validation.js';
import type { PluginEventsService } from './plugin-events-service.js';

const MAX_DETAILS_BYTES = 4096;

const pluginEventSchema = z
  .object({
    action: z
      .string()
      .regex(/^docker\.[a-z0-9.-]{1,60}$/, 'action must match ^docker\\.[a-z0-9.-]{1,60}$')
      .describe('What the plugin did, e.g. docker.volume.path or docker.authz.allow; always under docker.'),
    outcome: z.enum(['allow', 'deny', 'error']),
    resource: z
      .object({ kind: z.string().regex(/^[a-z0-9-]{1,32}$/), name: z.string().min(1).max(512) })
      .strict()
      .optional(),
    reason: z.string().max(500).optional(),
    details: z
      .record(z.unknown())
      .refine((d) => Buffer.byteLength(JSON.stringify(d)) <= MAX_DETAILS_BYTES, `details must be at most ${MAX_DETAILS_BYTES} bytes of JSON`)
      .describe(`At most ${MAX_DETAILS_BYTES} bytes as JSON. reportedBy is set by the broker.`)
      .optional(),
  })
  .strict();

export const pluginEventsSchema = z.object({ events: z.array(pluginEventSchema).min(1).max(100) }).strict();

export function pluginEventsRoutes(events: PluginEventsService): Router {
  const router = Router();
  defineRoutes(router, [
    {
      method: 'post',
      path: '/v1/client/docker-plugin/events',
      access: 'client',
      handler: async (req, res) => {
        const principal = clientPrincipal(req);
        const body = parseWith(pluginEventsSchema, req.body);
        res.status(202).json({ recorded: await events.report(principal, requestMeta(req), body.events) });
      },
    },
  ]);
  return router;
}
