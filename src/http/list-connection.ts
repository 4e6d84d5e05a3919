import { createRequire } from 'node:module';
import http from 'node:http';
import https from 'node:https';
import type { Socket } from 'node:net';
import { Duplex } from 'node:stream';
import { TLSSocket } from 'node:tls';
import { ListRequestRewriter } from './list-method.js';

/**
 * Vault's `LIST` method at no cost to connections that never send it.
 *
 * Every connection starts on Node's native path: llhttp reads the socket's bytes without any
 * JavaScript in between. llhttp refuses `LIST` (HPE_INVALID_METHOD, raised at the "S": "LI" is
 * the start of LINK), and Node then emits 'clientError' with the bytes it was parsing. Only then
 * is that one connection taken over: its HTTP parser is detached the way Node's own upgrade path
 * detaches it, and the connection is handed back to the server as a new one, a `ListConnection`
 * whose readable side is the rest of the stream (from the `LIST` on) through the rewriter of
 * list-method.ts and whose writable side is the socket. Node attaches a fresh parser to it, so
 * keep-alive, pipelining, timeouts and error answers work as on any connection. Such a
 * connection pays the rewriter's cost for the rest of its life; every other one pays nothing.
 *
 * Over TLS the socket in 'clientError' is the TLSSocket, so the rewrite works on decrypted
 * bytes, and the wrapper goes to 'secureConnection' (the https server's HTTP listener), never to
 * 'connection' (which would start a second TLS handshake over it).
 *
 * When a LIST cannot be recognised with certainty it is refused as today (400 problem): when
 * the read that llhttp stopped in starts after the method's first byte ("L" | "IST ..." split
 * across two reads: the bytes before it are gone, and "PROPF" | "IST" fails at the same byte),
 * or when the method could be UNLINK's prefix ("UNLIS..."). Clients write a request line in one
 * write, so this only refuses requests split by the network inside their first three bytes.
 */

/**
 * Node's helper that detaches an HTTP parser from its socket (what its upgrade path calls). An
 * undocumented module: loaded once, and a Node release without it makes every takeover refuse
 * (400 and an error in the log) rather than the broker fail to start.
 */
const freeParser = loadFreeParser();

function loadFreeParser(): ((parser: unknown, req: unknown, socket: unknown) => void) | undefined {
  try {
    const found = (createRequire(import.meta.url)('_http_common') as { freeParser?: unknown }).freeParser;
    return typeof found === 'function' ? (found as (parser: unknown, req: unknown, socket: unknown) => void) : undefined;
  } catch {
    return undefined;
  }
}

/**
 * Node's per-connection listeners (node/lib/_http_server.js, connectionListenerInternal), found
 * by name: if a Node release renames them, takeover refuses (400, as before this existed, and an
 * error in the log) and the LIST tests fail, rather than two parsers sharing one socket.
 */
const NODE_LISTENERS = {
  data: 'bound socketOnData',
  end: 'bound socketOnEnd',
  close: 'bound socketOnClose',
  drain: 'bound socketOnDrain',
  timeout: 'socketOnTimeout',
  pause: 'onSocketPause',
  resume: 'onSocketResume',
} as const;
type NodeEvent = keyof typeof NODE_LISTENERS;

export type ParserError = Error & { code?: string; rawPacket?: unknown; bytesParsed?: unknown };
type HttpSocket = Socket & { parser?: unknown; _httpMessage?: http.ServerResponse | null; _paused?: boolean };

const L = 0x4c;
const I = 0x49;
const S = 0x53;
const U = 0x55;
const N = 0x4e;

/**
 * The bytes of the stream from the start of the refused request, when the refused method is
 * (a prefix of) LIST; undefined when that is not certain. llhttp stops at the "S".
 */
export function listRequestStart(rawPacket: Buffer, errorAt: number): Buffer | undefined {
  if (errorAt < 2 || errorAt >= rawPacket.length) return undefined;
  if (rawPacket[errorAt] !== S || rawPacket[errorAt - 2] !== L || rawPacket[errorAt - 1] !== I) return undefined;
  if (errorAt >= 4 && rawPacket[errorAt - 4] === U && rawPacket[errorAt - 3] === N) return undefined;
  return rawPacket.subarray(errorAt - 2);
}

/** What to do when taking a connection over failed part-way (the socket is the client's). */
export type TakeoverFailureHandler = (failure: unknown, err: ParserError, socket: Duplex) => void;

/** Takes over connections whose client sends LIST; counts them (the fast path's witness). */
export class ListMethodTakeover {
  private taken = 0;

  constructor(
    private readonly server: http.Server | https.Server,
    private readonly onFailure: TakeoverFailureHandler,
  ) {}

  /** Connections handed to the rewriter since the server started. */
  get connections(): number {
    return this.taken;
  }

  /**
   * Called from 'clientError': true when this connection was taken over, or when taking it over
   * failed and `onFailure` answered it (nothing left to answer); never throws.
   */
  takeOver(err: ParserError, socket: Duplex): boolean {
    if (err.code !== 'HPE_INVALID_METHOD' || socket instanceof ListConnection) return false;
    if (!Buffer.isBuffer(err.rawPacket) || typeof err.bytesParsed !== 'number') return false;
    const start = listRequestStart(err.rawPacket, err.bytesParsed);
    if (!start) return false;
    try {
      return this.detachAndHandOver(err, socket as HttpSocket, start);
    } catch (failure) {
      this.onFailure(failure, err, socket);
      return true;
    }
  }

  private detachAndHandOver(err: ParserError, raw: HttpSocket, start: Buffer): true {
    // a Node release that changed these: refuse (onFailure logs it) rather than share the socket between two parsers
    if (!freeParser) throw new Error("Node's _http_common.freeParser is missing");
    const listeners = nodeListeners(raw);
    if (!listeners) throw new Error(`Node's connection listeners were not found by name (${Object.values(NODE_LISTENERS).join(', ')})`);
    if (!raw.parser) throw new Error('the socket has no HTTP parser (socket.parser)');

    // the parser stopped for good: detach it now, before another read reaches it (or its 'end')
    raw.removeListener('data', listeners.data);
    raw.removeListener('end', listeners.end);
    raw.removeListener('pause', listeners.pause);
    raw.removeListener('resume', listeners.resume);
    freeParser(raw.parser, null, raw);
    raw._paused = false;
    this.taken++;

    const server = this.server;
    const connection = new ListConnection(raw, start, {
      headersTimeoutMs: () => server.headersTimeout,
      onHeadTimeout: (timedOut) => {
        // what Node does at its own header timeout (socketOnError): 'clientError', else close
        if (!server.emit('clientError', requestTimeoutError(), timedOut)) timedOut.destroy();
      },
    });
    // responses to requests before the LIST (pipelined) still go out on the socket through
    // Node's old connection state: hand over only once the last of them is done
    const handOver = () => {
      try {
        if (connection.destroyed) return; // the socket closed meanwhile: Node's old state cleans up
        const inFlight = raw._httpMessage;
        if (inFlight) return void inFlight.once('close', handOver);
        raw.removeListener('close', listeners.close);
        raw.removeListener('drain', listeners.drain);
        raw.removeListener('timeout', listeners.timeout);
        // the old state's keep-alive timer; the new connection sets its own through ListConnection
        raw.setTimeout(0);
        server.emit(server instanceof https.Server ? 'secureConnection' : 'connection', connection);
      } catch (failure) {
        // from an event listener nobody would catch it: the process would crash
        connection.stopReading();
        this.onFailure(failure, err, raw);
      }
    };
    handOver();
    return true;
  }
}

/** The error Node's HTTP server raises at its header and request timeouts. */
function requestTimeoutError(): Error & { code: string } {
  return Object.assign(new Error('Request timeout'), { code: 'ERR_HTTP_REQUEST_TIMEOUT' });
}

function nodeListeners(socket: Socket): Record<NodeEvent, (...args: unknown[]) => void> | undefined {
  const found = {} as Record<NodeEvent, (...args: unknown[]) => void>;
  for (const [event, name] of Object.entries(NODE_LISTENERS) as [NodeEvent, string][]) {
    const fn = socket.listeners(event).find((l) => l.name === name);
    if (!fn) return undefined;
    found[event] = fn as (...args: unknown[]) => void;
  }
  return found;
}

/**
 * One taken-over connection as Node's HTTP server sees it: reads are the socket's bytes (from
 * the LIST request on) with LIST request lines rewritten; writes go to the socket as they are.
 * What the broker reads from a connection (addresses, TLS state and peer certificate) is the
 * socket's; the TLS methods exist only when the socket is a TLSSocket, as on the socket itself.
 */
export class ListConnection extends Duplex {
  private readonly rewriter = new ListRequestRewriter();
  /** The deadline of the request head being received, and which head it is for. */
  private headTimer: NodeJS.Timeout | undefined;
  private headTimed = -1;
  private reading = true;
  getPeerCertificate?: TLSSocket['getPeerCertificate'];
  getCipher?: TLSSocket['getCipher'];
  getProtocol?: TLSSocket['getProtocol'];

  constructor(
    readonly socket: Socket,
    start: Buffer,
    private readonly head: { headersTimeoutMs: () => number; onHeadTimeout: (connection: ListConnection) => void },
  ) {
    super({ allowHalfOpen: true });
    if (socket instanceof TLSSocket) {
      this.getPeerCertificate = socket.getPeerCertificate.bind(socket);
      this.getCipher = socket.getCipher.bind(socket);
      this.getProtocol = socket.getProtocol.bind(socket);
    }
    this.forward(start);
    socket.on('data', (chunk: Buffer) => this.forward(chunk));
    socket.on('end', () => this.push(null));
    socket.on('close', () => this.destroy());
    socket.on('timeout', () => this.emit('timeout'));
  }

  private forward(chunk: Buffer) {
    if (!this.reading) return;
    const bytes = this.rewriter.push(chunk);
    this.timeHead();
    if (bytes.length > 0 && !this.push(bytes)) this.socket.pause();
  }

  /** Starts the deadline when a request head starts (this chunk has its first byte), clears it when the head is complete. */
  private timeHead() {
    if (!this.rewriter.inRequestHead) return this.clearHeadTimer();
    const head = this.rewriter.requestHeads;
    if (this.headTimed === head) return;
    this.clearHeadTimer();
    this.headTimed = head;
    const timeoutMs = this.head.headersTimeoutMs();
    if (!(timeoutMs > 0)) return; // 0 turns Node's header timeout off too
    this.headTimer = setTimeout(() => {
      this.headTimer = undefined;
      // what is still on its way belongs to a request that is refused: the parser sees none of it
      this.stopReading();
      this.head.onHeadTimeout(this);
    }, timeoutMs);
    this.headTimer.unref();
  }

  private clearHeadTimer() {
    if (this.headTimer) clearTimeout(this.headTimer);
    this.headTimer = undefined;
  }

  /** Hands no further bytes to the parser (the connection is being refused and closed). */
  stopReading() {
    this.reading = false;
    this.clearHeadTimer();
  }

  override _read() {
    this.socket.resume();
  }

  override _write(chunk: Buffer, _encoding: BufferEncoding, callback: (error?: Error | null) => void) {
    this.socket.write(chunk, callback);
  }

  override _writev(chunks: { chunk: Buffer }[], callback: (error?: Error | null) => void) {
    this.socket.cork();
    for (let i = 0; i < chunks.length - 1; i++) this.socket.write(chunks[i].chunk);
    this.socket.write(chunks[chunks.length - 1].chunk, callback);
    this.socket.uncork();
  }

  override _final(callback: (error?: Error | null) => void) {
    this.socket.end(callback);
  }

  override _destroy(err: Error | null, callback: (error?: Error | null) => void) {
    this.clearHeadTimer();
    this.socket.destroy();
    callback(err);
  }

  /** Node's server sets its keep-alive and idle timeouts through this. */
  setTimeout(ms: number, callback?: () => void): this {
    this.socket.setTimeout(ms);
    if (callback) this.once('timeout', callback);
    return this;
  }

  get remoteAddress() {
    return this.socket.remoteAddress;
  }
  get remotePort() {
    return this.socket.remotePort;
  }
  get remoteFamily() {
    return this.socket.remoteFamily;
  }
  get localAddress() {
    return this.socket.localAddress;
  }
  get localPort() {
    return this.socket.localPort;
  }
  get encrypted(): true | undefined {
    return (this.socket as Partial<TLSSocket>).encrypted;
  }
  get authorized(): boolean | undefined {
    return (this.socket as Partial<TLSSocket>).authorized;
  }
  get authorizationError(): Error | undefined {
    return (this.socket as Partial<TLSSocket>).authorizationError;
  }
  get alpnProtocol(): string | false | null | undefined {
    return (this.socket as Partial<TLSSocket>).alpnProtocol;
  }
}
