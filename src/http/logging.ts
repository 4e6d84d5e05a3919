import crypto from 'node:crypto';
import pino, { type Logger } from 'pino';
import type { RequestHandler } from 'express';

/**
 * Redaction is defensive: the request serializer below never includes headers or bodies, so no
 * secret value, client secret or token can reach a log line through it.
 */
export function createLogger(level: string): Logger {
  return pino({
    level,
    base: { service: 'keywarden' },
    redact: {
      paths: ['req.headers.authorization', 'headers.authorization', '*.client_secret', '*.clientSecret', '*.content', '*.value', '*.token', '*.key'],
      censor: '[redacted]',
    },
  });
}

const REQUEST_ID = /^[A-Za-z0-9._-]{1,64}$/;

/**
 * One access-log line per request, with the request id. It logs method, path (never the query
 * or headers), status and duration, and costs nothing beyond the id when the level is above
 * info: no per-request child logger is built.
 */
export function requestLogger(logger: Logger): RequestHandler {
  return (req, res, next) => {
    const incoming = req.headers['x-request-id'];
    const id = typeof incoming === 'string' && REQUEST_ID.test(incoming) ? incoming : crypto.randomUUID();
    (req as { id?: string }).id = id;
    res.setHeader('X-Request-Id', id);
    const started = process.hrtime.bigint();
    res.once('finish', () => {
      const level = res.statusCode >= 500 ? 'error' : 'info';
      if (!logger.isLevelEnabled(level)) return;
      logger[level](
        {
          reqId: id,
          req: { method: req.method, path: req.path, remoteAddress: req.socket.remoteAddress },
          res: { statusCode: res.statusCode },
          responseTime: Number(process.hrtime.bigint() - started) / 1e6,
        },
        'request completed',
      );
    });
    next();
  };
}
