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

export const problems = {
  badRequest: (detail: string, extra?: Record<string, unknown>) =>
    new ProblemError(400, 'invalid_request', 'The request is invalid', detail, extra),
  unauthenticated: (detail = 'Authentication is required', code = 'unauthenticated') =>
    new ProblemError(401, code, 'Not authenticated', detail, {}, { 'WWW-Authenticate': 'Bearer realm="keywarden"' }),
  forbidden: (detail = 'The caller is not allowed to do this', code = 'forbidden') =>
    new ProblemError(403, code, 'Forbidden', detail),
  notFound: (what: string) => new ProblemError(404, 'not_found', 'Not found', `${what} was not found`),
  conflict: (detail: string, code = 'conflict') => new ProblemError(409, code, 'Conflict', detail),
  preconditionFailed: (detail: string) =>
    new ProblemError(412, 'precondition_failed', 'Precondition failed', detail),
  tooManyRequests: (retryAfterSeconds: number, detail: string) =>
    new ProblemError(429, 'rate_limited', 'Too many requests', detail, { retryAfter: retryAfterSeconds }, {
      'Retry-After': String(retryAfterSeconds),
    }),
  auditUnavailable: () =>
    new ProblemError(
      503,
      'audit_unavailable',
      'Audit log unavailable',
      'The audit event could not be recorded, so the operation was refused',
    ),
  unavailable: (detail: string, code = 'unavailable') => new ProblemError(503, code, 'Service unavailable', detail),
};
