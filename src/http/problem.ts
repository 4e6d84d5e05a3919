import { DomainError, ForbiddenError, OAuthError, TooManyRequestsError, UnauthenticatedError, UnavailableError, type DomainErrorKind } from '../core/errors.js';

/**
 * RFC 9457 problem details. `code` is the stable, machine-readable identifier clients switch on;
 * `type` is derived from it.
 */
export class ProblemError extends Error {
  constructor(
    readonly status: number,
    readonly code: string,
    readonly title: string,
    readonly detail?: string,
    readonly extra: Record<string, unknown> = {},
    readonly headers: Record<string, string> = {},
  ) {
    super(detail ?? title);
    this.name = 'ProblemError';
  }

  toJSON(instance?: string) {
    return {
      type: `https://keywarden.dev/problems/${this.code}`,
      title: this.title,
      status: this.status,
      code: this.code,
      ...(this.detail ? { detail: this.detail } : {}),
      ...(instance ? { instance } : {}),
      ...this.extra,
    };
  }
}

/** The HTTP status that answers each kind of domain error. */
const STATUS_OF_KIND: Record<DomainErrorKind, number> = {
  invalid_input: 400,
  unauthenticated: 401,
  forbidden: 403,
  not_found: 404,
  conflict: 409,
  precondition_failed: 412,
  too_large: 413,
  rate_limited: 429,
  upstream_failure: 502,
  unavailable: 503,
};

/** The problem+json answer to a domain error: same code, title, detail and members. */
export function problemFromDomainError(err: DomainError): ProblemError {
  const extra: Record<string, unknown> = { ...err.members };
  const headers: Record<string, string> = {};
  if (err.kind === 'unauthenticated') {
    // the token endpoint authenticates clients by HTTP Basic (RFC 6749 2.3.1), everything else by bearer token
    headers['WWW-Authenticate'] = err instanceof OAuthError ? 'Basic realm="keywarden"' : 'Bearer realm="keywarden"';
  }
  if (err instanceof TooManyRequestsError) {
    extra.retryAfter = err.retryAfterSeconds;
    headers['Retry-After'] = String(err.retryAfterSeconds);
  }
  if (err instanceof UnavailableError && err.retryAfterSeconds !== undefined) headers['Retry-After'] = String(err.retryAfterSeconds);
  return new ProblemError(STATUS_OF_KIND[err.kind], err.code, err.title, err.detail, extra, headers);
}

/** Whether `err` means "not authenticated" (a 401), as a domain or an HTTP error. */
export function isUnauthenticated(err: unknown): err is ProblemError | DomainError {
  return (err instanceof ProblemError && err.status === 401) || (err instanceof DomainError && err.kind === 'unauthenticated');
}

/** Shorthands for the HTTP layer's own refusals (authentication and route access); domain code throws core errors. */
export const problems = {
  unauthenticated: (detail?: string, code?: string) => problemFromDomainError(new UnauthenticatedError(detail, code)),
  forbidden: (detail?: string, code?: string) => problemFromDomainError(new ForbiddenError(detail, code)),
};
