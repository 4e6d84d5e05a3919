import type { ErrorRequestHandler, RequestHandler } from 'express';
import type { Logger } from 'pino';
import { KeyProviderError } from '../crypto/key-provider.js';
import { DomainError } from '../core/errors.js';
import { classifyDatabaseError, DatabaseUnavailableError } from '../db/db-errors.js';
import { ProblemError, problemFromDomainError } from './problem.js';

export const notFoundHandler: RequestHandler = (req, _res, next) => {
  next(new ProblemError(404, 'route_not_found', 'Not found', `no route for ${req.method} ${req.path}`));
};

/** Retry-After for 503s that do not set their own (key provider, audit log). */
export const DEFAULT_RETRY_AFTER_SECONDS = 5;

/**
 * What any error means over HTTP, as a problem (status, code, headers); logged here, so that the
 * problem+json handler and the Vault-compatible one (vault-errors.ts) classify alike.
 */
// eslint-disable-next-line @typescript-eslint/no-explicit-any -- whatever was thrown, as Express hands it over
export function problemOf(err: any, logger: Logger, requestId: string | undefined): ProblemError {
  let problem: ProblemError;
  let databaseFailure: DatabaseUnavailableError | undefined;
  if (err instanceof ProblemError) {
    problem = err;
  } else if (err instanceof DomainError) {
    // a database that cannot serve the request now is a 503 with a stable code and a Retry-After
    if (err instanceof DatabaseUnavailableError) databaseFailure = err;
    problem = problemFromDomainError(err);
  } else if (err instanceof KeyProviderError) {
    // e.g. Vault refused or unreachable while sealing a new version: the service is unavailable, not broken
    problem = new ProblemError(503, 'key_provider_unavailable', 'Service unavailable', 'the key provider could not wrap or unwrap a data key');
  } else if ((databaseFailure = classifyDatabaseError(err))) {
    problem = problemFromDomainError(databaseFailure);
  } else if (err?.type === 'entity.parse.failed') {
    problem = new ProblemError(400, 'malformed_json', 'Malformed JSON', 'the request body is not well-formed JSON');
  } else if (err?.type === 'entity.too.large') {
    problem = new ProblemError(413, 'body_too_large', 'Request body too large', `the request body exceeds ${err.limit} bytes`);
  } else if (err?.type === 'encoding.unsupported' || err?.type === 'charset.unsupported') {
    problem = new ProblemError(415, 'unsupported_encoding', 'Unsupported encoding', 'the request body encoding is not supported');
  } else if (typeof err?.status === 'number' && err.status >= 400 && err.status < 500) {
    problem = new ProblemError(err.status, 'bad_request', 'Bad request', 'the request could not be processed');
  } else {
    logger.error({ err: { name: err?.name, message: err?.message, code: err?.code, stack: err?.stack }, requestId }, 'unhandled error');
    problem = new ProblemError(500, 'internal_error', 'Internal error', 'an unexpected error occurred; see the broker log for this request id');
  }
  if (problem.status >= 500 && problem.code !== 'internal_error') {
    // the driver's code says which failure it was; its message may quote SQL, so it stays out
    logger.warn({ code: problem.code, driverCode: databaseFailure?.driverCode, requestId }, problem.title);
  }
  return problem;
}

/** Every failure leaves as application/problem+json; internals are logged, never echoed. */
export function errorHandler(logger: Logger): ErrorRequestHandler {
  return (err, req, res, _next) => {
    const problem = problemOf(err, logger, req.requestId);
    const headers = problem.status === 503 && !problem.headers['Retry-After'] ? { ...problem.headers, 'Retry-After': String(DEFAULT_RETRY_AFTER_SECONDS) } : problem.headers;
    if (res.headersSent) {
      res.destroy();
      return;
    }
    res.status(problem.status).set(headers).type('application/problem+json').send(JSON.stringify(problem.toJSON(req.requestId)));
  };
}
