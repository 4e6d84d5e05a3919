/**
 * Vault's `LIST` HTTP method, for the broker's own server.
 *
 * Vault clients (hvac always, node-vault by default) list with `LIST /v1/...`, which Node's HTTP
 * parser (llhttp) refuses before any JavaScript runs: http.METHODS has no LIST. Vault itself
 * treats `LIST /p` as `GET /p?list=true`, so this rewrites the request line to exactly that, on
 * the bytes of a connection, before the parser sees them. Only connections that have sent a LIST
 * go through it (list-connection.ts takes them over when llhttp refuses the method); all others
 * keep Node's native read path.
 *
 * Only request lines are touched. The rewriter follows HTTP/1.1 message framing (RFC 9112 6:
 * Content-Length, chunked Transfer-Encoding with extensions and trailers), so bytes of a body,
 * however much they look like a request line, pass through unchanged; pipelined and keep-alive
 * requests are each recognised. Anything it cannot frame exactly as llhttp would (a request with
 * both Content-Length and Transfer-Encoding, a bad length, obs-fold, an upgrade, over-long lines)
 * switches the connection to pass-through for good: llhttp then sees the original bytes and
 * decides, and no later "LIST " on that connection is rewritten.
 *
 * At most the request target of a LIST request is held back (up to MAX_TARGET bytes), so slow
 * headers still reach the parser as they arrive. The parser's header timeout starts only when it
 * sees the first byte of a request, which for a LIST is after the target: so the rewriter reports
 * when a request head starts and ends (`requestHeads`, `inRequestHead`), and list-connection.ts
 * times the head itself from its first byte.
 */
const MAX_TARGET = 16 * 1024;
const MAX_LINE = 64 * 1024;
const LIST_PREFIX = Buffer.from('LIST ');
/** First bytes of the header lines the framing depends on: c/C, t/T, u/U, and SP/HT (obs-fold). */
const HEADER_FIRST_BYTES = new Set([0x63, 0x43, 0x74, 0x54, 0x75, 0x55, 0x20, 0x09]);

type State =
  | { at: 'start'; held: number } // before a request line: `held` bytes of "LIST " matched so far
  | { at: 'target' } // after "LIST ": collecting the request target
  | { at: 'request-line' }
  | { at: 'headers' }
  | { at: 'body'; left: number }
  | { at: 'chunk-size' }
  | { at: 'chunk-data'; left: number }
  | { at: 'chunk-end' }
  | { at: 'trailers' }
  | { at: 'pass' };

/** The LIST-to-GET rewriter for one connection's byte stream (exported for unit tests). */
export class ListRequestRewriter {
  private state: State = { at: 'start', held: 0 };
  /** The current header, chunk-size or trailer line so far (pieces of the chunks it came in). */
  private lineParts: Buffer[] = [];
  private lineLength = 0;
  private target: number[] = [];
  private contentLengths: string[] = [];
  private transferEncoding: string[] = [];
  private upgrade = false;
  private heads = 0;

  /** Request heads started on this stream so far (a new value: a new head, a new deadline). */
  get requestHeads(): number {
    return this.heads;
  }

  /**
   * True from the first byte of a request line until the empty line that ends its headers: the
   * time the header timeout bounds. False between requests, in bodies, and once in pass-through
   * (the parser then sees every byte as it arrives, and times the head itself).
   */
  get inRequestHead(): boolean {
    const s = this.state;
    return (s.at === 'start' && s.held > 0) || s.at === 'target' || s.at === 'request-line' || s.at === 'headers';
  }

  /** Feeds the next bytes received; returns the bytes to hand to the HTTP parser. */
  push(chunk: Buffer): Buffer {
    if (this.state.at === 'pass') return chunk;
    const out: Buffer[] = [];
    let passFrom = 0; // start of the run of input bytes that pass unchanged
    const flush = (end: number) => {
      if (end > passFrom) out.push(chunk.subarray(passFrom, end));
    };
    for (let i = 0; i < chunk.length; i++) {
      const byte = chunk[i];
      const s = this.state;
      switch (s.at) {
        case 'start': {
          if (s.held === 0 && (byte === 0x0d || byte === 0x0a)) break; // empty lines before a request
          if (s.held === 0) this.heads++;
          if (byte === LIST_PREFIX[s.held]) {
            if (s.held === 0) flush(i);
            s.held++;
            passFrom = i + 1;
            if (s.held === LIST_PREFIX.length) {
              this.state = { at: 'target' };
              this.target = [];
            }
            break;
          }
          // not LIST: give back what was held as it was, and read this line as any request line
          if (s.held > 0) out.push(LIST_PREFIX.subarray(0, s.held));
          this.state = { at: 'request-line' };
          i--;
          break;
        }
        case 'target': {
          if (byte === 0x20 || byte === 0x0d || byte === 0x0a) {
            out.push(Buffer.from(`GET ${withListQuery(Buffer.from(this.target).toString('latin1'))}`, 'latin1'));
            passFrom = i;
            this.state = { at: 'request-line' };
            i--;
          } else if (this.target.length >= MAX_TARGET) {
            out.push(LIST_PREFIX, Buffer.from(this.target));
            passFrom = i;
            this.state = { at: 'pass' };
          } else {
            this.target.push(byte);
            passFrom = i + 1;
          }
          break;
        }
        case 'request-line': {
          // jump to the end of the line: only its end matters here
          const nl = chunk.indexOf(0x0a, i);
          if (nl < 0) i = chunk.length - 1;
          else {
            i = nl;
            this.startHeaders();
          }
          break;
        }
        case 'headers':
        case 'chunk-size':
        case 'trailers': {
          const nl = chunk.indexOf(0x0a, i);
          const end = nl < 0 ? chunk.length : nl;
          this.lineLength += end - i;
          if (this.lineLength > MAX_LINE) {
            this.state = { at: 'pass' };
            i--;
            break;
          }
          this.lineParts.push(chunk.subarray(i, end));
          i = end - (nl < 0 ? 1 : 0);
          if (nl >= 0) this.endLine(s.at);
          break;
        }
        case 'body': {
          const n = Math.min(s.left, chunk.length - i);
          s.left -= n;
          i += n - 1;
          if (s.left === 0) this.state = { at: 'start', held: 0 };
          break;
        }
        case 'chunk-data': {
          const n = Math.min(s.left, chunk.length - i);
          s.left -= n;
          i += n - 1;
          if (s.left === 0) this.state = { at: 'chunk-end' };
          break;
        }
        case 'chunk-end':
          // the CRLF after a chunk's data; anything else there is llhttp's error to report
          if (byte === 0x0a) {
            this.resetLine();
            this.state = { at: 'chunk-size' };
          } else if (byte !== 0x0d) this.state = { at: 'pass' };
          break;
        case 'pass':
          flush(i);
          out.push(chunk.subarray(i));
          return Buffer.concat(out);
      }
    }
    const s = this.state;
    // bytes still held (part of "LIST " or of a LIST target) wait for the next chunk
    if (!(s.at === 'start' && s.held > 0) && s.at !== 'target') flush(chunk.length);
    return out.length === 1 ? out[0] : Buffer.concat(out);
  }

  private resetLine() {
    this.lineParts = [];
    this.lineLength = 0;
  }

  /** A complete line (without its LF, with a CR if it had one) in a line-oriented state. */
  private endLine(at: 'headers' | 'chunk-size' | 'trailers') {
    if (at === 'headers' && this.lineLength > 1) {
      // only Content-Length, Transfer-Encoding, Upgrade and obs-fold matter: skip decoding the rest
      const first = this.lineParts[0].length > 0 ? this.lineParts[0][0] : this.lineParts.find((p) => p.length > 0)![0];
      if (!HEADER_FIRST_BYTES.has(first)) return this.resetLine();
    }
    const raw = (this.lineParts.length === 1 ? this.lineParts[0] : Buffer.concat(this.lineParts)).toString('latin1');
    this.resetLine();
    const text = raw.endsWith('\r') ? raw.slice(0, -1) : raw;
    if (at === 'headers') this.endHeaderLine(text);
    else if (at === 'chunk-size') this.endChunkSize(text);
    else if (text === '') this.state = { at: 'start', held: 0 }; // the empty line after the trailers
  }

  private startHeaders() {
    this.state = { at: 'headers' };
    this.resetLine();
    this.contentLengths = [];
    this.transferEncoding = [];
    this.upgrade = false;
  }

  private endHeaderLine(text: string) {
    if (text === '') return this.endHeaders();
    if (text[0] === ' ' || text[0] === '\t') return void (this.state = { at: 'pass' }); // obs-fold
    const colon = text.indexOf(':');
    if (colon <= 0) return void (this.state = { at: 'pass' });
    const name = text.slice(0, colon).toLowerCase();
    const value = text.slice(colon + 1).trim();
    if (name === 'content-length') this.contentLengths.push(value);
    else if (name === 'transfer-encoding') this.transferEncoding.push(value);
    else if (name === 'upgrade') this.upgrade = true;
  }

  private endHeaders() {
    if (this.upgrade) return void (this.state = { at: 'pass' });
    if (this.transferEncoding.length > 0) {
      if (this.contentLengths.length > 0) return void (this.state = { at: 'pass' });
      const codings = this.transferEncoding.join(',').split(',').map((c) => c.trim().toLowerCase()).filter(Boolean);
      if (codings[codings.length - 1] !== 'chunked') return void (this.state = { at: 'pass' });
      this.resetLine();
      return void (this.state = { at: 'chunk-size' });
    }
    if (this.contentLengths.length > 0) {
      const values = new Set(this.contentLengths.join(',').split(',').map((v) => v.trim()));
      const [value] = values;
      if (values.size !== 1 || !/^\d{1,15}$/.test(value)) return void (this.state = { at: 'pass' });
      const length = Number(value);
      return void (this.state = length > 0 ? { at: 'body', left: length } : { at: 'start', held: 0 });
    }
    this.state = { at: 'start', held: 0 };
  }

  private endChunkSize(text: string) {
    const size = text.split(';')[0].trim();
    if (!/^[0-9a-fA-F]{1,12}$/.test(size)) return void (this.state = { at: 'pass' });
    const n = parseInt(size, 16);
    this.state = n === 0 ? { at: 'trailers' } : { at: 'chunk-data', left: n };
  }
}

/** `/p?q` → `/p?q&list=true`; an existing `list` parameter is replaced, so it is never doubled. */
export function withListQuery(target: string): string {
  const q = target.indexOf('?');
  const path = q < 0 ? target : target.slice(0, q);
  const params = q < 0 ? [] : target.slice(q + 1).split('&').filter((p) => p !== '' && p !== 'list' && !p.startsWith('list='));
  return `${path}?${[...params, 'list=true'].join('&')}`;
}
