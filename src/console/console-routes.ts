import express, { Router, type Request, type Response } from 'express';
import type { Logger } from 'pino';
import client from 'prom-client';
import { z } from 'zod';
import { auditFilterSchema, passKey } from '../audit/audit-routes.js';
import type { AuditHeavyPasses } from '../audit/audit-heavy-passes.js';
import { ACTIVITY_WINDOWS, AUDIT_EVENT_CSV_HEADER, auditEventCsvRow, csvLine, type ActivityWindow, type ReportsService } from '../audit/reports-service.js';
import type { AuditService } from '../audit/audit-service.js';
import type { AuditEvent } from '../audit/audit-types.js';
import { ForbiddenError, UnauthenticatedError } from '../core/errors.js';
import { parseWith } from '../core/validation.js';
import { actorOf } from '../core/principal.js';
import { requestMeta } from '../http/request-context.js';
import { defineRoutes } from '../http/routes.js';
import { streamLines } from '../http/streaming.js';
import type { ConsoleSession, ConsoleSessionService } from './console-session-service.js';

/** The session cookie. HttpOnly: the page never sees it; it reads the CSRF token from the session routes. */
export const CONSOLE_COOKIE = 'kw_console';
/** The header a cookie-authenticated request other than GET/HEAD carries the session's CSRF token in. */
export const CSRF_HEADER = 'x-csrf-token';

/** The session cookie's value, from a Cookie header (first occurrence; no dependency for one cookie). */
export function readConsoleCookie(header: string | undefined): string | undefined {
  if (!header) return undefined;
  for (const part of header.split(';')) {
    const eq = part.indexOf('=');
    if (eq < 0) continue;
    if (part.slice(0, eq).trim() !== CONSOLE_COOKIE) continue;
    const value = part.slice(eq + 1).trim();
    return value.length > 0 ? value : undefined;
  }
  return undefined;
}

/** The session a request was authenticated with by its cookie (set by http/authenticate.ts). */
export function consoleSessionOf(res: Response): ConsoleSession | undefined {
  return res.locals.consoleSession as ConsoleSession | undefined;
}

/** Whether the cookie gets `Secure`: the broker serves TLS, or the request came over it (through a trusted proxy). */
function secureCookie(req: Request, tls: boolean): boolean {
  return tls || req.secure;
}

/** Removes the session cookie in the browser (Max-Age=0). */
export function clearConsoleCookie(req: Request, res: Response, tls: boolean): void {
  res.cookie(CONSOLE_COOKIE, '', { httpOnly: true, sameSite: 'strict', path: '/', maxAge: 0, secure: secureCookie(req, tls) });
}

/**
 * Login CSRF: a browser names the page's origin in `Origin` on every POST; only the broker's own
 * may log in. Without `Origin`, only `Sec-Fetch-Site: same-origin` will do.
 */
function sameOrigin(req: Request): boolean {
  const host = req.host;
  if (!host) return false;
  const origin = req.get('origin');
  if (origin !== undefined) {
    if (origin === 'null') return false;
    try {
      return new URL(origin).host.toLowerCase() === host.toLowerCase();
    } catch {
      return false;
    }
  }
  return req.get('sec-fetch-site') === 'same-origin';
}

export const consoleLoginSchema = z
  .object({
    apiKey: z.string().min(1).max(8192).describe('An auditor or admin API key (kw_...). Exchanged for the session cookie; never stored.'),
  })
  .strict();

function sessionView(session: ConsoleSession) {
  return {
    role: session.principal.role,
    keyId: session.principal.id,
    keyName: session.principal.name,
    expiresAt: new Date(session.expiresAt).toISOString(),
    csrfToken: session.csrfToken,
  };
}

/** POST/GET/DELETE /v1/console/session: the API key for a session cookie, and back. */
export function consoleSessionRoutes(sessions: ConsoleSessionService, options: { tls: boolean }): Router {
  const router = Router();
  defineRoutes(router, [
    {
      method: 'post',
      path: '/v1/console/session',
      access: 'public',
      handler: async (req, res) => {
        if (!sameOrigin(req)) throw new ForbiddenError('log in from the console itself: the request must come from the broker\'s own origin', 'csrf_rejected');
        const body = parseWith(consoleLoginSchema, req.body);
        const session = await sessions.login(body.apiKey, requestMeta(req));
        res
          .cookie(CONSOLE_COOKIE, session.token, { httpOnly: true, sameSite: 'strict', path: '/', maxAge: sessions.ttlSeconds * 1000, secure: secureCookie(req, options.tls) })
          .set('Cache-Control', 'no-store')
          .json(sessionView(session));
      },
    },
    {
      method: 'get',
      path: '/v1/console/session',
      access: 'public',
      handler: (_req, res) => {
        const session = consoleSessionOf(res);
        if (!session) throw new UnauthenticatedError('no console session: log in with an API key', 'session_expired');
        res.set('Cache-Control', 'no-store').json(sessionView(session));
      },
    },
    {
      method: 'delete',
      path: '/v1/console/session',
      access: 'public',
      handler: async (req, res) => {
        const session = consoleSessionOf(res);
        if (!session) throw new UnauthenticatedError('no console session: log in with an API key', 'session_expired');
        await sessions.logout(session, requestMeta(req));
        clearConsoleCookie(req, res, options.tls);
        res.status(204).end();
      },
    },
  ]);
  return router;
}

/** CSP reports: at most this many are logged per minute by one instance (all are counted). */
const CSP_LOG_PER_MINUTE = 20;
const CSP_REPORT_TYPES = ['application/csp-report', 'application/reports+json', 'application/json'];

function clip(v: unknown): string | undefined {
  return typeof v === 'string' ? v.slice(0, 200) : undefined;
}

/** The fields worth logging from a CSP report (report-uri's csp-report, or the Reporting API's list). */
function cspViolations(body: unknown): Array<Record<string, string | undefined>> {
  const one = (r: Record<string, unknown>) => ({
    document: clip(r['document-uri'] ?? r.documentURL),
    directive: clip(r['effective-directive'] ?? r['violated-directive'] ?? r.effectiveDirective),
    blocked: clip(r['blocked-uri'] ?? r.blockedURL),
    source: clip(r['source-file'] ?? r.sourceFile),
  });
  if (Array.isArray(body)) {
    return body.slice(0, 10).flatMap((r) => (r && typeof r === 'object' && (r as { body?: unknown }).body && typeof (r as { body: unknown }).body === 'object' ? [one((r as { body: Record<string, unknown> }).body)] : []));
  }
  if (body && typeof body === 'object') {
    const report = (body as Record<string, unknown>)['csp-report'];
    if (report && typeof report === 'object') return [one(report as Record<string, unknown>)];
  }
  return [];
}

/**
 * POST /v1/console/csp-report: where browsers report Content-Security-Policy violations of the
 * console. Public, a small body, always 204 for a report; logged at warn (rate-limited) and counted.
 */
export function cspReportRoutes(deps: { logger: Logger; registry: client.Registry; clock?: () => number }): Router {
  const router = Router();
  const counter = new client.Counter({ name: 'keywarden_console_csp_reports_total', help: 'Content-Security-Policy violation reports received from the console', registers: [deps.registry] });
  const clock = deps.clock ?? Date.now;
  let windowStart = 0;
  let logged = 0;
  router.use('/v1/console/csp-report', express.json({ limit: '8kb', strict: true, type: CSP_REPORT_TYPES }));
  defineRoutes(router, [
    {
      method: 'post',
      path: '/v1/console/csp-report',
      access: 'public',
      accepts: CSP_REPORT_TYPES,
      handler: (req, res) => {
        const violations = cspViolations(req.body);
        counter.inc(Math.max(1, violations.length));
        const now = clock();
        if (now - windowStart >= 60_000) {
          windowStart = now;
          logged = 0;
        }
        if (logged < CSP_LOG_PER_MINUTE) {
          logged++;
          deps.logger.warn({ requestId: req.requestId, violations }, 'console Content-Security-Policy violation reported');
        }
        res.status(204).end();
      },
    },
  ]);
  return router;
}

const activityQuery = z.object({ window: z.enum(Object.keys(ACTIVITY_WINDOWS) as [ActivityWindow, ...ActivityWindow[]]).default('day') }).strict();

const exportQuery = auditFilterSchema
  .extend({
    format: z.enum(['ndjson', 'csv']).default('ndjson'),
    max: z.coerce.number().int().min(1).max(100_000).default(10_000),
  })
  .strict();

async function* eventLines(events: AsyncIterable<AuditEvent>, format: 'ndjson' | 'csv'): AsyncGenerator<string> {
  for await (const event of events) yield format === 'csv' ? csvLine(auditEventCsvRow(event)) : JSON.stringify(event) + '\n';
}

/** What the console needs that the API lacked: activity over time, the log's status, export of a filter. */
export function consoleReportRoutes(deps: { reports: ReportsService; audit: AuditService; heavyPasses: AuditHeavyPasses }): Router {
  const router = Router();
  defineRoutes(router, [
    {
      method: 'get',
      path: '/v1/reports/activity',
      access: ['auditor'],
      handler: async (req, res) => {
        const q = parseWith(activityQuery, req.query, 'query');
        res.json(await deps.reports.activity(q.window));
      },
    },
    {
      method: 'get',
      path: '/v1/audit/status',
      access: ['auditor'],
      handler: async (_req, res) => {
        res.set('Cache-Control', 'no-store').json(await deps.reports.status());
      },
    },
    {
      method: 'get',
      path: '/v1/reports/audit-events',
      access: ['auditor'],
      handler: async (req, res) => {
        const { format, max, ...filter } = parseWith(exportQuery, req.query, 'query');
        const since = filter.since ? Date.parse(filter.since) : undefined;
        const until = filter.until ? Date.parse(filter.until) : undefined;
        // a heavy pass like GET /v1/audit/export: one at a time per instance, counted per key
        await deps.heavyPasses.run(passKey(req.principal), async () => {
          // an export is an access to the log, recorded before any byte is sent
          await deps.audit.record({
            actor: actorOf(req.principal),
            action: 'audit.export',
            resource: { kind: 'audit-log', name: 'events' },
            outcome: 'allow',
            details: { format, max, filter },
            request: requestMeta(req),
          });
          const events = deps.reports.auditEvents({ ...filter, since, until }, max);
          res.status(200).set('Cache-Control', 'no-store');
          if (format === 'csv') {
            res.type('text/csv; charset=utf-8').set('Content-Disposition', 'attachment; filename="keywarden-audit-events.csv"');
            res.write(csvLine(AUDIT_EVENT_CSV_HEADER));
          } else {
            res.type('application/x-ndjson').set('Content-Disposition', 'attachment; filename="keywarden-audit-events.ndjson"');
          }
          await streamLines(res, eventLines(events, format));
        });
      },
    },
  ]);
  return router;
}
