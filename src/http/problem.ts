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

/** The media type of a Content-Type header, without parameters ('' when there is none). */
function mediaTypeOf(contentType: string | undefined): string {
  return (contentType ?? '').split(';')[0].trim().toLowerCase();
}

/** Shorthands for the HTTP layer's own refusals (authentication, route access, method and body type); domain code throws core errors. */
export const problems = {
  unauthenticated: (detail?: string, code?: string) => problemFromDomainError(new UnauthenticatedError(detail, code)),
  forbidden: (detail?: string, code?: string) => problemFromDomainError(new ForbiddenError(detail, code)),
  /** 405: the path exists, the method does not; `Allow` lists what does (RFC 9110 15.5.6). */
  methodNotAllowed: (method: string, path: string, allowed: readonly string[]) =>
    new ProblemError(405, 'method_not_allowed', 'Method not allowed', `${method} is not supported on ${path}; it answers ${allowed.join(', ')}`, { allowed: [...allowed] }, { Allow: allowed.join(', ') }),
  /**
   * 415: the body is not of a type the route takes. The detail names the expected type; POST and
   * PATCH also say it in Accept-Post / Accept-Patch (RFC 5789 2.2).
   */
  unsupportedMediaType: (method: string, accepted: readonly string[], contentType: string | undefined) => {
    const sent = mediaTypeOf(contentType);
    const expected = accepted.filter((t) => !t.includes('*'));
    const list = (expected.length ? expected : accepted).join(' or ');
    const headers: Record<string, string> = {};
    if (method === 'post') headers['Accept-Post'] = accepted.join(', ');
    if (method === 'patch') headers['Accept-Patch'] = accepted.join(', ');
    return new ProblemError(
      415,
      'unsupported_media_type',
      'Unsupported media type',
      sent ? `the request body is ${sent}; this route takes ${list}` : `the request body has no Content-Type; this route takes ${list}`,
      { accepted: [...accepted] },
      headers,
    );
  },
};
