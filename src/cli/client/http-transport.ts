/**
 * HTTP transport for the client commands: the built-in fetch for plain HTTP (and HTTPS with the
 * system CAs and no client certificate), node:https.request with an Agent for a custom CA
 * (KEYWARDEN_CA) or an mTLS client certificate. Failures are classified as retryable
 * (TransientError) or fatal (CliError).
 */
import https from 'node:https';
import { CliError, ExitCode } from './exit-codes.js';

/** Worth retrying: connection refused/reset, timeout, DNS not ready, 5xx, 429. */
export class TransientError extends Error {
  constructor(
    readonly reason: string,
    readonly retryAfterMs?: number,
  ) {
    super(reason);
    this.name = 'TransientError';
  }
}

const TLS_VERIFY_CODES = /^(CERT_|UNABLE_TO_|DEPTH_ZERO_SELF_SIGNED_CERT|SELF_SIGNED_CERT_IN_CHAIN|ERR_TLS_CERT_ALTNAME_INVALID|HOSTNAME_MISMATCH)/;

/** Turns a transport failure into TransientError or a fatal CliError. */
export function classifyNetworkError(err: unknown, addr: string): Error {
  const e = err as { name?: string; code?: string; cause?: { code?: string; name?: string } };
  if (e?.name === 'TimeoutError' || e?.name === 'AbortError') return new TransientError('request timed out');
  const code = e?.cause?.code ?? e?.code ?? e?.cause?.name ?? 'network error';
  if (TLS_VERIFY_CODES.test(code)) {
    return new CliError(ExitCode.INTERNAL, `TLS verification of the broker at ${addr} failed (${code}); check KEYWARDEN_CA`);
  }
  if (/^ERR_SSL_.*(BAD_CERTIFICATE|CERTIFICATE_REQUIRED|UNKNOWN_CA|CERTIFICATE_UNKNOWN|ACCESS_DENIED|CERTIFICATE_REVOKED|CERTIFICATE_EXPIRED)/.test(code)) {
    return new CliError(ExitCode.DENIED, `the broker rejected the client certificate (${code})`);
  }
  return new TransientError(code);
}

export interface HttpResponse {
  status: number;
  contentType: string;
  retryAfter?: string;
  body: Buffer;
}

export interface HttpRequest {
  method: 'GET' | 'POST';
  path: string;
  headers: Record<string, string>;
  body?: string;
  timeoutMs: number;
}

export type Transport = (req: HttpRequest) => Promise<HttpResponse>;

export function fetchTransport(addr: string): Transport {
  return async (req) => {
    const res = await fetch(addr + req.path, {
      method: req.method,
      headers: req.headers,
      body: req.body,
      redirect: 'manual',
      signal: AbortSignal.timeout(req.timeoutMs),
    });
    const body = Buffer.from(await res.arrayBuffer());
    return { status: res.status, contentType: res.headers.get('content-type') ?? '', retryAfter: res.headers.get('retry-after') ?? undefined, body };
  };
}

export function httpsTransport(addr: string, agent: https.Agent): Transport {
  return (req) =>
    new Promise<HttpResponse>((resolve, reject) => {
      const r = https.request(addr + req.path, { method: req.method, headers: req.headers, agent }, (res) => {
        const chunks: Buffer[] = [];
        res.on('data', (c: Buffer) => chunks.push(c));
        res.on('error', reject);
        res.on('end', () => {
          const retryAfter = res.headers['retry-after'];
          resolve({ status: res.statusCode ?? 0, contentType: String(res.headers['content-type'] ?? ''), retryAfter, body: Buffer.concat(chunks) });
        });
      });
      r.setTimeout(req.timeoutMs, () => r.destroy(Object.assign(new Error('request timed out'), { name: 'TimeoutError' })));
      r.on('error', reject);
      r.end(req.body);
    });
}
