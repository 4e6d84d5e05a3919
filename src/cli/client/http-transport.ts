/**
 * HTTP transport for the client commands (exec, fetch, verify, sign, docker-plugin): node:http or
 * node:https with a keep-alive Agent (a custom CA from KEYWARDEN_CA, an mTLS client certificate).
 * Not the built-in fetch: it refuses the "bad ports" of the Fetch standard (1, 6000, 6665-6669,
 * ...), which are fine ports for a broker, and hides the cause of a failure behind "fetch failed".
 *
 * Failures are classified as retryable (TransientError) or fatal (CliError), each with a reason
 * an operator can act on: connection refused, host not found, a TLS mismatch, a certificate
 * that does not verify.
 */
import http from 'node:http';
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

/** OpenSSL verification failures: the broker's certificate is not trusted (exit 70, not retried). */
const CERT_REASONS: Array<[RegExp, string]> = [
  [/^CERT_HAS_EXPIRED$/, 'its certificate has expired'],
  [/^CERT_NOT_YET_VALID$/, 'its certificate is not valid yet'],
  [/^(ERR_TLS_CERT_ALTNAME_INVALID|HOSTNAME_MISMATCH)$/, 'its certificate does not name this host'],
  [/^DEPTH_ZERO_SELF_SIGNED_CERT$/, 'its certificate is self-signed and not trusted'],
  [/^(SELF_SIGNED_CERT_IN_CHAIN|UNABLE_TO_GET_ISSUER_CERT(_LOCALLY)?|UNABLE_TO_VERIFY_LEAF_SIGNATURE)$/, 'its certificate is issued by a CA this client does not trust'],
  [/^(CERT_|UNABLE_TO_)/, 'its certificate does not verify'],
];

/** What the server sent instead of a TLS handshake: it speaks plain HTTP (or something else). */
const NOT_TLS = /wrong version number|packet length too long|unknown protocol|http request|record layer failure/i;

const SOCKET_REASONS: Record<string, string> = {
  ECONNREFUSED: 'connection refused',
  ENOTFOUND: 'host not found',
  EAI_AGAIN: 'host not found (DNS lookup failed temporarily)',
  EHOSTUNREACH: 'no route to host',
  ENETUNREACH: 'network unreachable',
  ETIMEDOUT: 'connection timed out',
  ECONNRESET: 'connection closed by the broker before it answered',
  EPIPE: 'connection closed by the broker before it answered',
  UND_ERR_SOCKET: 'connection closed by the broker before it answered',
};

/** Turns a transport failure into TransientError (retried) or a fatal CliError, saying why. */
export function classifyNetworkError(err: unknown, addr: string): Error {
  if (err instanceof CliError || err instanceof TransientError) return err;
  const e = err as { name?: string; code?: string; message?: string; cause?: { code?: string; name?: string; message?: string } };
  if (e?.name === 'TimeoutError' || e?.name === 'AbortError') return new TransientError('no answer before the request timed out');
  const code = e?.cause?.code ?? e?.code ?? '';
  const message = `${e?.cause?.message ?? ''} ${e?.message ?? ''}`;
  const tls = addr.startsWith('https:');
  if (tls && (code === 'ERR_SSL_WRONG_VERSION_NUMBER' || (/^(EPROTO|ERR_SSL_)/.test(code) && NOT_TLS.test(message)))) {
    // not transient: retrying cannot change what the server speaks
    return new CliError(ExitCode.UNREACHABLE, `TLS handshake failed: the broker at ${addr} does not speak TLS (is KEYWARDEN_ADDR http://?)`);
  }
  const cert = CERT_REASONS.find(([pattern]) => pattern.test(code));
  if (cert) {
    return new CliError(ExitCode.INTERNAL, `TLS verification of the broker at ${addr} failed: ${cert[1]} (${code}); set KEYWARDEN_CA to the CA bundle that issued it`);
  }
  if (/^ERR_SSL_.*(BAD_CERTIFICATE|CERTIFICATE_REQUIRED|UNKNOWN_CA|CERTIFICATE_UNKNOWN|ACCESS_DENIED|CERTIFICATE_REVOKED|CERTIFICATE_EXPIRED)/.test(code)) {
    return new CliError(ExitCode.DENIED, `the broker rejected the client certificate (${code})`);
  }
  if (tls && /^(ERR_SSL_|EPROTO$)/.test(code)) {
    return new CliError(ExitCode.UNREACHABLE, `TLS handshake failed with the broker at ${addr} (${code || 'error'})`);
  }
  let reason = SOCKET_REASONS[code] ?? (/socket hang up|other side closed/i.test(message) ? SOCKET_REASONS.ECONNRESET : undefined);
  // a TLS broker closes a plain-HTTP connection without a word
  if (reason === SOCKET_REASONS.ECONNRESET && !tls) reason += ' (if it serves TLS, KEYWARDEN_ADDR must be https://)';
  return new TransientError(reason ?? (code || 'network error'));
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

export interface TlsOptions {
  /** PEM CA bundle to trust for the broker's certificate (KEYWARDEN_CA). */
  ca?: Buffer;
  /** mTLS client certificate and key. */
  cert?: Buffer;
  key?: Buffer;
}

/** A keep-alive agent for ADDR's scheme; destroy it when done. */
export function createAgent(addr: string, tls: TlsOptions = {}): http.Agent {
  return addr.startsWith('https:')
    ? new https.Agent({ keepAlive: true, ca: tls.ca, cert: tls.cert, key: tls.key, minVersion: 'TLSv1.2' })
    : new http.Agent({ keepAlive: true });
}

/** Requests to ADDR + path through `agent`; the whole exchange is bounded by req.timeoutMs. */
export function nodeTransport(addr: string, agent: http.Agent): Transport {
  const request = addr.startsWith('https:') ? https.request : http.request;
  return (req) =>
    new Promise<HttpResponse>((resolve, reject) => {
      const r = request(addr + req.path, { method: req.method, headers: req.headers, agent }, (res) => {
        const chunks: Buffer[] = [];
        res.on('data', (c: Buffer) => chunks.push(c));
        res.on('error', reject);
        res.on('end', () => {
          clearTimeout(timer);
          const retryAfter = res.headers['retry-after'];
          resolve({ status: res.statusCode ?? 0, contentType: String(res.headers['content-type'] ?? ''), retryAfter, body: Buffer.concat(chunks) });
        });
      });
      const timer = setTimeout(() => r.destroy(Object.assign(new Error('request timed out'), { name: 'TimeoutError' })), req.timeoutMs);
      r.on('error', (err) => {
        clearTimeout(timer);
        reject(err);
      });
      r.end(req.body);
    });
}
