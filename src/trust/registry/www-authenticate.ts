/**
 * The one parser of `WWW-Authenticate` headers (RFC 9110 section 11.6.1) for everything the broker
 * talks to: OCI registries (Bearer or Basic) and Notary servers (Bearer, the distribution token
 * flow). A header may carry several challenges, separated by commas like their parameters:
 *
 *   Bearer realm="https://auth.example/token",service="registry", Basic realm="x, \"y\""
 *
 * Hand-written because the npm parsers either read one challenge only (auth-header) or refuse
 * schemes other than Basic, Digest and Bearer (http-auth-utils), and the grammar is small.
 * Malformed input never throws: parsing stops, and the challenges read completely before the
 * error are returned.
 */

export interface AuthChallenge {
  /** Lower-cased: schemes are case-insensitive. */
  scheme: string;
  /** Parameter names lower-cased (case-insensitive), values unquoted and unescaped. */
  params: Record<string, string>;
  /** The token68 form (`Negotiate YIIC...==`), when the challenge carries one instead of params. */
  token68?: string;
}

/** The parameters of a Bearer challenge that the distribution token flow uses. */
export interface BearerChallenge {
  realm: string;
  service?: string;
  scope?: string;
}

const TOKEN_RE = /[!#$%&'*+\-.^_`|~0-9A-Za-z]+/y;
const TOKEN68_RE = /[A-Za-z0-9\-._~+/]+=*/y;
const OWS_RE = /[ \t]*/y;

class Scanner {
  pos = 0;
  constructor(readonly text: string) {}

  match(re: RegExp): string | undefined {
    re.lastIndex = this.pos;
    const m = re.exec(this.text);
    if (!m || m[0] === '') return undefined;
    this.pos = re.lastIndex;
    return m[0];
  }

  skipSpace(): void {
    OWS_RE.lastIndex = this.pos;
    OWS_RE.exec(this.text);
    this.pos = OWS_RE.lastIndex;
  }

  /** Skips whitespace and any number of commas (empty list elements are allowed). */
  skipSeparators(): boolean {
    const start = this.pos;
    for (;;) {
      this.skipSpace();
      if (this.text[this.pos] !== ',') break;
      this.pos++;
    }
    return this.pos > start;
  }

  atEnd(): boolean {
    return this.pos >= this.text.length;
  }

  /** A quoted-string starting at pos (which is a `"`); undefined when it is not terminated. */
  quotedString(): string | undefined {
    let value = '';
    for (let i = this.pos + 1; i < this.text.length; i++) {
      const c = this.text[i]!;
      if (c === '"') {
        this.pos = i + 1;
        return value;
      }
      if (c === '\\') {
        i++;
        if (i >= this.text.length) return undefined;
        value += this.text[i];
      } else {
        value += c;
      }
    }
    return undefined;
  }

  /** `name = value` at pos, or undefined (pos unchanged) when what follows is not a parameter. */
  param(): { name: string; value: string } | 'malformed' | undefined {
    const start = this.pos;
    const name = this.match(TOKEN_RE);
    if (name === undefined) return undefined;
    this.skipSpace();
    if (this.text[this.pos] !== '=') {
      this.pos = start;
      return undefined;
    }
    this.pos++;
    this.skipSpace();
    if (this.text[this.pos] === '"') {
      const value = this.quotedString();
      return value === undefined ? 'malformed' : { name: name.toLowerCase(), value };
    }
    const value = this.match(TOKEN_RE);
    if (value === undefined) {
      // `abc=` or `abc==` followed by the end or a comma: a token68, not a parameter
      this.pos = start;
      return undefined;
    }
    return { name: name.toLowerCase(), value };
  }
}

/** Every challenge in a `WWW-Authenticate` header value, in the order the server sent them. */
export function parseWwwAuthenticate(header: string | null | undefined): AuthChallenge[] {
  if (!header) return [];
  const s = new Scanner(header);
  const challenges: AuthChallenge[] = [];
  for (;;) {
    s.skipSeparators();
    if (s.atEnd()) return challenges;
    const scheme = s.match(TOKEN_RE);
    if (scheme === undefined) return challenges;
    const challenge: AuthChallenge = { scheme: scheme.toLowerCase(), params: {} };
    const hadSpace = s.pos < header.length && (header[s.pos] === ' ' || header[s.pos] === '\t');
    s.skipSpace();
    if (hadSpace && !s.atEnd() && header[s.pos] !== ',') {
      const first = s.param();
      if (first === 'malformed') return challenges;
      if (first) {
        challenge.params[first.name] = first.value;
        if (!readMoreParams(s, challenge)) return challenges;
      } else {
        const token68 = s.match(TOKEN68_RE);
        if (token68 === undefined) return challenges;
        challenge.token68 = token68;
        s.skipSpace();
        if (!s.atEnd() && header[s.pos] !== ',') return challenges;
      }
    } else if (!s.atEnd() && header[s.pos] !== ',') {
      return challenges;
    }
    challenges.push(challenge);
  }
}

/**
 * Reads `, name=value` pairs after the first parameter, stopping before a token that starts the
 * next challenge. False when the input is malformed.
 */
function readMoreParams(s: Scanner, challenge: AuthChallenge): boolean {
  for (;;) {
    s.skipSpace();
    if (s.atEnd()) return true;
    const beforeComma = s.pos;
    if (!s.skipSeparators()) return false; // something other than a comma after a value
    if (s.atEnd()) return true;
    const next = s.param();
    if (next === 'malformed') return false;
    if (!next) {
      // not `name=`: the scheme of the next challenge
      s.pos = beforeComma;
      return true;
    }
    challenge.params[next.name] = next.value;
  }
}

/** The first Bearer challenge that names a token realm (the distribution token flow). */
export function parseBearerChallenge(header: string | null | undefined): BearerChallenge | undefined {
  const bearer = parseWwwAuthenticate(header).find((c) => c.scheme === 'bearer' && c.params['realm']);
  if (!bearer) return undefined;
  return { realm: bearer.params['realm']!, service: bearer.params['service'], scope: bearer.params['scope'] };
}
