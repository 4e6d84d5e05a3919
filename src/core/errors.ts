/**
 * Transport-neutral domain errors. Services, repositories and the trust code throw these; only
 * src/http/ turns them into application/problem+json (status, headers and the problem document).
 *
 * - `kind` says what went wrong in words the domain understands; the transport picks a status
 *   from it (http/problem.ts `problemFromDomainError`).
 * - `code` is the stable, machine-readable identifier clients switch on (also in the problem's
 *   `type`), `title` a short fixed summary of the kind, `detail` this occurrence.
 * - `members` are extra members of the answer (e.g. `errors`: the fields that were wrong).
 */
export type DomainErrorKind =
  | 'invalid_input'
  | 'unauthenticated'
  | 'forbidden'
  | 'not_found'
  | 'conflict'
  | 'precondition_failed'
  | 'too_large'
  | 'rate_limited'
  | 'upstream_failure'
  | 'unavailable';

/** One field that was wrong, as a path into the input and what was wrong with it. */
export interface FieldProblem {
  path: string;
  message: string;
}

export abstract class DomainError extends Error {
  abstract readonly kind: DomainErrorKind;

  constructor(
    readonly code: string,
    readonly title: string,
    readonly detail: string,
    readonly members: Record<string, unknown> = {},
    options?: { cause?: unknown; message?: string },
  ) {
    super(options?.message ?? detail, options?.cause === undefined ? undefined : { cause: options.cause });
    this.name = new.target.name;
  }
}

/** The caller's input is wrong; sending it again unchanged fails again. */
export class InvalidInputError extends DomainError {
  readonly kind = 'invalid_input';
  constructor(detail: string, options: { code?: string; title?: string; errors?: FieldProblem[]; members?: Record<string, unknown> } = {}) {
    super(options.code ?? 'invalid_request', options.title ?? 'The request is invalid', detail, {
      ...(options.errors ? { errors: options.errors } : {}),
      ...options.members,
    });
  }
}

/** No valid credential: none was given, or the one given is unknown, expired or revoked. */
export class UnauthenticatedError extends DomainError {
  readonly kind = 'unauthenticated';
  constructor(detail = 'Authentication is required', code = 'unauthenticated') {
    super(code, 'Not authenticated', detail);
  }
}

/** The caller is known but may not do this. */
export class ForbiddenError extends DomainError {
  readonly kind = 'forbidden';
  constructor(detail = 'The caller is not allowed to do this', code = 'forbidden') {
    super(code, 'Forbidden', detail);
  }
}

/** What the caller named does not exist (`what` completes "... was not found"). */
export class NotFoundError extends DomainError {
  readonly kind = 'not_found';
  constructor(what: string, options: { code?: string; title?: string; detail?: string } = {}) {
    super(options.code ?? 'not_found', options.title ?? 'Not found', options.detail ?? `${what} was not found`);
  }
}

/** The request contradicts the current state (already exists, concurrent change, check-and-set). */
export class ConflictError extends DomainError {
  readonly kind = 'conflict';
  constructor(detail: string, code = 'conflict') {
    super(code, 'Conflict', detail);
  }
}

/** A condition the caller attached (e.g. the expected version) does not hold. */
export class PreconditionFailedError extends DomainError {
  readonly kind = 'precondition_failed';
  constructor(detail: string, code = 'precondition_failed') {
    super(code, 'Precondition failed', detail);
  }
}

/** The input is larger than the domain accepts. */
export class TooLargeError extends DomainError {
  readonly kind = 'too_large';
  constructor(detail: string, code = 'content_too_large', title = 'Content too large') {
    super(code, title, detail);
  }
}

/** Too many attempts; the caller may try again after `retryAfterSeconds`. */
export class TooManyRequestsError extends DomainError {
  readonly kind = 'rate_limited';
  constructor(
    readonly retryAfterSeconds: number,
    detail: string,
    code = 'rate_limited',
  ) {
    super(code, 'Too many requests', detail);
  }
}

/** A system the broker depends on (a registry, a Notary server) failed or refused it. */
export class UpstreamError extends DomainError {
  readonly kind = 'upstream_failure';
  constructor(code: string, title: string, detail: string) {
    super(code, title, detail);
  }
}

/**
 * The broker cannot serve this now; the same request may succeed later. `retryAfterSeconds`,
 * when known, says how long a retry should wait.
 */
export class UnavailableError extends DomainError {
  readonly kind = 'unavailable';
  readonly retryAfterSeconds?: number;

  constructor(
    detail: string,
    options: { code?: string; title?: string; retryAfterSeconds?: number; cause?: unknown; message?: string } = {},
  ) {
    super(options.code ?? 'unavailable', options.title ?? 'Service unavailable', detail, {}, { cause: options.cause, message: options.message });
    this.retryAfterSeconds = options.retryAfterSeconds;
  }
}

/** The audit event could not be recorded, so the operation it belongs to was refused. */
export class AuditUnavailableError extends UnavailableError {
  constructor() {
    super('The audit event could not be recorded, so the operation was refused', { code: 'audit_unavailable', title: 'Audit log unavailable' });
  }
}

/** Stored data failed its integrity check (a MAC or checksum): it is not served. */
export class IntegrityFailureError extends UnavailableError {
  constructor(detail: string, options: { code?: string; title?: string } = {}) {
    super(detail, { code: options.code ?? 'integrity_failure', title: options.title ?? 'Stored secret failed its integrity check' });
  }
}

/**
 * An OAuth 2.0 token endpoint failure (RFC 6749 5.2): besides the problem members it carries
 * the OAuth `error` code clients of the token endpoint look for.
 */
export class OAuthError extends DomainError {
  constructor(
    readonly kind: 'invalid_input' | 'unauthenticated' | 'forbidden',
    /** RFC 6749 `error`: invalid_request, invalid_client, invalid_grant, unsupported_grant_type, ... */
    readonly oauthError: string,
    code: string,
    detail: string,
  ) {
    super(code, kind === 'invalid_input' ? 'Invalid token request' : 'Authentication failed', detail, { error: oauthError });
  }
}
