import crypto from 'node:crypto';
import pino, { type Logger } from 'pino';
import { pinoHttp } from 'pino-http';
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

export function requestLogger(logger: Logger): RequestHandler {
  return pinoHttp({
    logger: logger as any,
    genReqId(req, res) {
      const incoming = req.headers['x-request-id'];
      const id = typeof incoming === 'string' && REQUEST_ID.test(incoming) ? incoming : crypto.randomUUID();
      res.setHeader('X-Request-Id', id);
      return id;
    },
    customLogLevel(_req, res, err): "error" | "info" {
      if (err || res.statusCode >= 500) return 'error';
      return 'info';
    },
    serializers: {
      req: (req) => ({ id: req.id, method: req.method, path: String(req.url).split('?')[0], remoteAddress: req.remoteAddress }),
      res: (res) => ({ statusCode: res.statusCode }),
      err: (err) => ({ type: err?.type ?? err?.name, message: err?.message }),
    },
    quietReqLogger: true,
  }) as unknown as RequestHandler;
}
