import type { ErrorRequestHandler, RequestHandler } from 'express';
import type { Logger } from 'pino';
import { DEFAULT_RETRY_AFTER_SECONDS, problemOf } from './error-handler.js';
import { ProblemError } from './problem.js';

/**
 * Errors on the Vault-compatible routes leave in Vault's shape, `{"errors": [...]}` as
 * application/json, because Vault clients read `errors` (node-vault takes `errors[0]` as the
 * message, hvac picks its exception class by status). The classification is the problem+json
 * handler's (problemOf); only the status and the body differ.
 */
/**
 * The /v1 prefixes that belong to the Vault-compatible API (the KV mount comes from the config).
 * Defined here, not in vault/, because the server answers errors by path before any routing
 * (client-errors.ts) as well as the Vault router.
 */
export function vaultPrefixes(kvMount: string): string[] {
  // '/v1/auth/token/' with the slash: POST /v1/auth/token itself is the native token endpoint
  return ['/v1/sys/', '/v1/auth/approle/', '/v1/auth/cert/', '/v1/auth/token/', `/v1/${kvMount}/`];
}

/** Whether the Vault-compatible API answers `path` (a path without its query), so errors there take Vault's shape. */
export function isVaultPath(path: string, kvMount: string): boolean {
  return vaultPrefixes(kvMount).some((prefix) => path.startsWith(prefix));
}

export interface VaultErrorBody {
  errors: string[];
  warnings?: string[];
}

/**
 * Vault's status for a Keywarden status. Vault answers a missing, invalid, expired or revoked
 * token with 403 "permission denied" (never 401), and has no 409 or 415: a conflicting request
 * is a 400 there. 412 is kept (Vault uses it for a check-and-set mismatch).
 */
export function vaultStatusOf(status: number): number {
  if (status === 401) return 403;
  if (status === 409 || status === 415 || status === 422) return 400;
  return status;
}

/** The `errors` array for a problem: Vault's fixed wording first, where Vault has one. */
export function vaultErrorsOf(problem: ProblemError): string[] {
  if (problem.status === 401 || problem.status === 403) {
    // clients compare the first entry with Vault's text; ours says why, after it
    return problem.detail ? ['permission denied', problem.detail] : ['permission denied'];
  }
  if (problem.status >= 500 && problem.code === 'internal_error') return ['internal error'];
  // Vault's answer for a path with nothing at it (a KV read of a missing secret) is a bare 404; it
  // also keeps "not granted" and "does not exist" indistinguishable, as the native API does
  if (problem.status === 404 && problem.code !== 'route_not_found') return [];
  return [problem.detail ?? problem.title];
}

/** Sends a Vault error; a problem with `warnings` in its members sends them alongside. */
export function vaultErrorHandler(logger: Logger): ErrorRequestHandler {
  return (err, req, res, _next) => {
    const problem = problemOf(err, logger, req.requestId);
    const status = vaultStatusOf(problem.status);
    const headers: Record<string, string> = { ...problem.headers };
    // Vault clients do not answer a Bearer challenge; the header would only mislead
    delete headers['WWW-Authenticate'];
    if (status === 503 && !headers['Retry-After']) headers['Retry-After'] = String(DEFAULT_RETRY_AFTER_SECONDS);
    if (res.headersSent) {
      res.destroy();
      return;
    }
    const body: VaultErrorBody = { errors: vaultErrorsOf(problem) };
    const warnings = problem.extra.warnings;
    if (Array.isArray(warnings) && warnings.every((w) => typeof w === 'string')) body.warnings = warnings;
    // exactly "application/json", no charset parameter: hvac reads `errors` only when the header is that string
    // (Express's res.set and res.type would append "; charset=utf-8", so the raw setHeader)
    res.status(status).set(headers).set('Cache-Control', 'no-store');
    res.setHeader('Content-Type', 'application/json');
    res.send(Buffer.from(JSON.stringify(body)));
  };
}

/** A path under a Vault prefix that no Vault route answers: Vault's 404 "unsupported path". */
export const vaultNotFound: RequestHandler = (req, _res, next) => {
  next(new ProblemError(404, 'route_not_found', 'Not found', `unsupported path: ${req.method} ${req.path}`));
};
