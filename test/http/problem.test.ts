import { describe, expect, it } from 'vitest';
import {
  AuditUnavailableError,
  ConflictError,
  ForbiddenError,
  IntegrityFailureError,
  InvalidInputError,
  NotFoundError,
  OAuthError,
  PreconditionFailedError,
  TooLargeError,
  TooManyRequestsError,
  UnauthenticatedError,
  UnavailableError,
  UpstreamError,
  type DomainError,
} from '../../src/core/errors.js';
import { DatabaseUnavailableError, type DatabaseFailureKind } from '../../src/db/db-errors.js';
import { problemFromDomainError } from '../../src/http/problem.js';

/**
 * Domain errors are transport-neutral; http/ alone answers them. Each case is the exact answer
 * the broker gave before services stopped throwing HTTP errors (status, headers, problem body),
 * so moving the vocabulary into core/ changed nothing on the wire.
 */
function answer(err: DomainError) {
  const p = problemFromDomainError(err);
  return { status: p.status, headers: p.headers, body: JSON.stringify(p.toJSON('req-1')) };
}

function body(status: number, code: string, title: string, detail: string, extra: Record<string, unknown> = {}) {
  return JSON.stringify({ type: `https://keywarden.dev/problems/${code}`, title, status, code, detail, instance: 'req-1', ...extra });
}

describe('domain errors leave as the same problem+json as before', () => {
  const cases: Array<[string, DomainError, number, Record<string, string>, string]> = [
    ['invalid input', new InvalidInputError('unknown groups: g'), 400, {}, body(400, 'invalid_request', 'The request is invalid', 'unknown groups: g')],
    [
      'invalid input with field problems',
      new InvalidInputError('invalid body: name: bad', { errors: [{ path: 'name', message: 'bad' }] }),
      400,
      {},
      body(400, 'invalid_request', 'The request is invalid', 'invalid body: name: bad', { errors: [{ path: 'name', message: 'bad' }] }),
    ],
    ['unauthenticated', new UnauthenticatedError('the access token has expired', 'token_expired'), 401, { 'WWW-Authenticate': 'Bearer realm="keywarden"' }, body(401, 'token_expired', 'Not authenticated', 'the access token has expired')],
    ['unauthenticated (defaults)', new UnauthenticatedError(), 401, { 'WWW-Authenticate': 'Bearer realm="keywarden"' }, body(401, 'unauthenticated', 'Not authenticated', 'Authentication is required')],
    ['forbidden', new ForbiddenError('signing key k is disabled', 'signing_key_disabled'), 403, {}, body(403, 'signing_key_disabled', 'Forbidden', 'signing key k is disabled')],
    ['not found', new NotFoundError('secret db'), 404, {}, body(404, 'not_found', 'Not found', 'secret db was not found')],
    ['conflict', new ConflictError('secret db already exists', 'already_exists'), 409, {}, body(409, 'already_exists', 'Conflict', 'secret db already exists')],
    ['precondition failed', new PreconditionFailedError('If-Match names version 1'), 412, {}, body(412, 'precondition_failed', 'Precondition failed', 'If-Match names version 1')],
    ['too large', new TooLargeError('secret content is 9 bytes; the limit is 8'), 413, {}, body(413, 'content_too_large', 'Content too large', 'secret content is 9 bytes; the limit is 8')],
    [
      'too many requests',
      new TooManyRequestsError(7, 'too many failed authentication attempts; try again later'),
      429,
      { 'Retry-After': '7' },
      body(429, 'rate_limited', 'Too many requests', 'too many failed authentication attempts; try again later', { retryAfter: 7 }),
    ],
    ['upstream failure', new UpstreamError('registry_unreachable', 'Registry unreachable', 'registry did not answer'), 502, {}, body(502, 'registry_unreachable', 'Registry unreachable', 'registry did not answer')],
    ['unavailable', new UnavailableError('the key provider could not unwrap the data key', { code: 'key_provider_unavailable' }), 503, {}, body(503, 'key_provider_unavailable', 'Service unavailable', 'the key provider could not unwrap the data key')],
    [
      'audit unavailable',
      new AuditUnavailableError(),
      503,
      {},
      body(503, 'audit_unavailable', 'Audit log unavailable', 'The audit event could not be recorded, so the operation was refused'),
    ],
    ['integrity failure', new IntegrityFailureError('the stored ciphertext did not authenticate'), 503, {}, body(503, 'integrity_failure', 'Stored secret failed its integrity check', 'the stored ciphertext did not authenticate')],
    [
      'OAuth 400',
      new OAuthError('invalid_input', 'unsupported_grant_type', 'unsupported_grant_type', 'grant_type x is not supported'),
      400,
      {},
      body(400, 'unsupported_grant_type', 'Invalid token request', 'grant_type x is not supported', { error: 'unsupported_grant_type' }),
    ],
    [
      'OAuth 401 challenges for HTTP Basic',
      new OAuthError('unauthenticated', 'invalid_client', 'invalid_client', 'the client credentials are not valid'),
      401,
      { 'WWW-Authenticate': 'Basic realm="keywarden"' },
      body(401, 'invalid_client', 'Authentication failed', 'the client credentials are not valid', { error: 'invalid_client' }),
    ],
    [
      'OAuth 403',
      new OAuthError('forbidden', 'access_denied', 'claims_mismatch', 'claim ref does not match'),
      403,
      {},
      body(403, 'claims_mismatch', 'Authentication failed', 'claim ref does not match', { error: 'access_denied' }),
    ],
  ];

  it.each(cases)('%s', (_name, err, status, headers, expected) => {
    expect(answer(err)).toEqual({ status, headers, body: expected });
  });

  it('database failures are 503s with their own code and Retry-After, never the driver message', () => {
    const expected: Record<DatabaseFailureKind, [string, string, string, string]> = {
      unavailable: ['database_unavailable', 'Database unavailable', 'the database cannot be reached', '5'],
      timeout: ['database_timeout', 'Database timeout', 'the database did not answer in time', '5'],
      storage_full: ['storage_full', 'Storage full', 'the database has no space left for writes', '60'],
      read_only: ['database_read_only', 'Database read-only', 'the database accepts no writes at the moment', '30'],
      busy: ['database_busy', 'Database busy', 'the database was too busy to complete the request', '1'],
    };
    for (const [failure, [code, title, detail, retryAfter]] of Object.entries(expected) as Array<[DatabaseFailureKind, [string, string, string, string]]>) {
      const err = new DatabaseUnavailableError(failure, '57P01', { cause: new Error('connect ECONNREFUSED 10.0.0.5:5432 SELECT secret FROM secrets') });
      expect(answer(err)).toEqual({ status: 503, headers: { 'Retry-After': retryAfter }, body: body(503, code, title, detail) });
      expect(err.message).toBe(`database ${failure.replace('_', ' ')}`);
    }
  });
});
