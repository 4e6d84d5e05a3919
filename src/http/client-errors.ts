import http from 'node:http';
import type { Duplex } from 'node:stream';
import { ProblemError } from './problem.js';
import { isVaultPath, vaultErrorsOf, vaultStatusOf, type VaultErrorBody } from './vault-errors.js';

/**
 * Errors Node's HTTP parser raises before Express sees the request (an invalid character in a
 * header, headers or request line too large, an unknown method, broken framing, a body cut
 * short, a request timeout). Node's own answer is an empty 400/431/408 with no content type;
 * these are answered like the routes' errors instead: Vault's `{"errors": [...]}` when the
 * request line names a Vault path (vault-errors.ts), a problem document otherwise, including
 * when the request line is not known (not in the bytes the parser reports, or not a request line).
 */

type ClientError = Error & { code?: string; reason?: string; rawPacket?: unknown; bytesParsed?: unknown };

/** What decides the shape of an answer: the Vault KV mount, part of the Vault paths. */
export interface ClientErrorContext {
  vaultKvMount: string;
}

/**
 * Answers on the same terms as Node: only while the socket is writable and no response to an
 * in-flight request has started. The connection is closed afterwards either way, since the
 * parser cannot resynchronise on the stream.
 */
export function answerClientError(err: ClientError, socket: Duplex, context: ClientErrorContext): void {
  const inFlight = (socket as Duplex & { _httpMessage?: http.ServerResponse })._httpMessage;
  if (err.code === 'ECONNRESET' || !socket.writable || inFlight?.headersSent) {
    socket.destroy();
    return;
  }
  const problem = clientErrorProblem(err);
  const target = requestTargetOf(err);
  const vault = target !== undefined && isVaultPath(pathOf(target), context.vaultKvMount);
  const status = vault ? vaultStatusOf(problem.status) : problem.status;
  const vaultBody: VaultErrorBody = { errors: vaultErrorsOf(problem) };
  const body = JSON.stringify(vault ? vaultBody : problem.toJSON());
  socket.write(
    `HTTP/1.1 ${status} ${http.STATUS_CODES[status]}\r\n` +
      // exactly "application/json" on Vault paths, as vaultErrorHandler sends it (hvac reads `errors` only then)
      `Content-Type: ${vault ? 'application/json' : 'application/problem+json'}\r\n` +
      `Content-Length: ${Buffer.byteLength(body)}\r\n` +
      'Cache-Control: no-store\r\n' +
      'X-Content-Type-Options: nosniff\r\n' +
      'Connection: close\r\n' +
      '\r\n' +
      body,
  );
  // end() flushes the answer before closing; destroy() guarantees the socket goes away even when
  // the peer never reads, so no half-parsed connection lingers
  socket.end(() => socket.destroy());
  (socket as Duplex & { setTimeout?: (ms: number, cb: () => void) => unknown }).setTimeout?.(5000, () => socket.destroy());
}

export function clientErrorProblem(err: ClientError): ProblemError {
  if (err.code === 'HPE_HEADER_OVERFLOW') {
    return new ProblemError(431, 'headers_too_large', 'Request header fields too large', `the request line and headers exceed ${http.maxHeaderSize} bytes`);
  }
  if (err.code === 'ERR_HTTP_REQUEST_TIMEOUT') {
    return new ProblemError(408, 'request_timeout', 'Request timeout', 'the request was not received in time');
  }
  // llhttp's reason names the rule broken ("Invalid header value char"); it never echoes the input
  const reason = typeof err.reason === 'string' && err.reason ? err.reason : 'malformed request';
  return new ProblemError(400, 'malformed_request', 'Malformed HTTP request', `the request is not valid HTTP/1.1: ${reason}`);
}

/** `METHOD SP target SP HTTP/x.y`: a method is a token (RFC 9110 5.6.2), so no header line looks like this. */
const REQUEST_LINE = /^[!#$%&'*+.^_`|~0-9A-Za-z-]+ (\S+) HTTP\/\d\.\d\r?$/;

/**
 * The request target of the request the parser refused, when the bytes it reports (`rawPacket`,
 * the read it stopped in; `bytesParsed`, where) hold its request line: the last complete
 * request line that starts at or before the error. Undefined when there is none (the request
 * line came in an earlier read, the error is in the request line's syntax, or no packet).
 */
export function requestTargetOf(err: Pick<ClientError, 'rawPacket' | 'bytesParsed'>): string | undefined {
  if (!Buffer.isBuffer(err.rawPacket) || typeof err.bytesParsed !== 'number') return undefined;
  const text = err.rawPacket.toString('latin1');
  const errorAt = Math.min(Math.max(err.bytesParsed, 0), text.length);
  // up to the end of the line the error is in: an unknown method fails at its first bytes
  const lineEnd = text.indexOf('\n', errorAt);
  const lines = (lineEnd < 0 ? text : text.slice(0, lineEnd)).split('\n');
  // the line the error is in must be complete to count
  if (lineEnd < 0) lines.pop();
  for (let i = lines.length - 1; i >= 0; i--) {
    const match = REQUEST_LINE.exec(lines[i]);
    if (match) return match[1];
  }
  return undefined;
}

/** The path of a request target: origin-form `/p?q`, or absolute-form `http://host/p?q`. */
function pathOf(target: string): string {
  let path = target;
  const scheme = /^[A-Za-z][A-Za-z0-9+.-]*:\/\/[^/?#]*/.exec(path);
  if (scheme) path = path.slice(scheme[0].length) || '/';
  const end = path.search(/[?#]/);
  return end < 0 ? path : path.slice(0, end);
}
