/**
 * Minimal notary server client: fetches TUF role documents from
 * `GET {server}/v2/{gun}/_trust/tuf/{role}.json` with a per-request timeout, a size cap,
 * and the Docker registry bearer-token flow (401 + `WWW-Authenticate: Bearer realm=...`).
 * Never throws; failures are returned as values.
 *
 * Egress: redirects are followed by hand, never to another origin unless the broker's egress
 * policy (carried by an EgressPolicy fetch) explicitly allows that host, and never with the
 * Authorization header; the token realm gets credentials only on the server's origin or an
 * allowed host; plain http only to hosts the policy allows it for.
 */
import { egressPolicyOf, type EgressPolicy } from '../registry/egress-policy.js';
import { parseBearerChallenge, type BearerChallenge } from '../registry/www-authenticate.js';

// re-exported for the notary module's callers and tests; the parser is shared with the registry client
export { parseBearerChallenge };

export interface NotaryClientOptions {
  server: string;
  gun: string;
  timeoutMs?: number;
  fetchImpl?: typeof fetch;
  credentials?: { username: string; password: string };
}

export type FetchFailureKind = 'unreachable' | 'timeout' | 'not_found' | 'http' | 'too_large' | 'auth' | 'invalid';

export type RoleFetchResult =
  | { ok: true; bytes: Buffer; url: string }
  | { ok: false; kind: FetchFailureKind; message: string; status?: number; url: string };

/** Default cap on a single metadata document (notary's own default is 100 MiB for targets). */
export const DEFAULT_MAX_METADATA_BYTES = 32 * 1024 * 1024;

const GUN_RE = /^[A-Za-z0-9][A-Za-z0-9._:\-/]*$/;
const ROLE_RE = /^(?:root|timestamp|snapshot|targets(?:\/[A-Za-z0-9_][A-Za-z0-9._-]*)*)$/;

export function isValidGun(gun: string): boolean {
  return typeof gun === 'string' && gun.length <= 255 && GUN_RE.test(gun) && !gun.split('/').some((p) => p === '' || p === '.' || p === '..');
}

export function isValidRoleName(role: string): boolean {
  return typeof role === 'string' && role.length <= 255 && ROLE_RE.test(role) && !role.split('/').some((p) => p === '.' || p === '..');
}

function describeError(err: unknown): { kind: FetchFailureKind; message: string } {
  const e = err as { name?: string; message?: string; cause?: { message?: string; code?: string } };
  if (e?.name === 'TimeoutError' || e?.name === 'AbortError') {
    return { kind: 'timeout', message: 'request timed out' };
  }
  const cause = e?.cause?.message ?? e?.cause?.code;
  return { kind: 'unreachable', message: cause ? `${e?.message ?? 'fetch failed'}: ${cause}` : (e?.message ?? String(err)) };
}

const MAX_REDIRECTS = 5;

/** A destination the client refuses to contact; the message is fixed text. */
class NotaryEgressError extends Error {
  override readonly name = 'NotaryEgressError';
}

async function readLimited(res: Response, maxBytes: number): Promise<Buffer | 'too_large'> {
  const declared = Number(res.headers.get('content-length') ?? NaN);
  if (Number.isFinite(declared) && declared > maxBytes) {
    await res.body?.cancel().catch(() => undefined);
    return 'too_large';
  }
  if (!res.body) return Buffer.alloc(0);
  const reader = res.body.getReader();
  const chunks: Buffer[] = [];
  let total = 0;
  for (;;) {
    const { done, value } = await reader.read();
    if (done) break;
    total += value.byteLength;
    if (total > maxBytes) {
      await reader.cancel().catch(() => undefined);
      return 'too_large';
    }
    chunks.push(Buffer.from(value.buffer, value.byteOffset, value.byteLength));
  }
  return Buffer.concat(chunks, total);
}

export class NotaryClient {
  private readonly base: string;
  private readonly gun: string;
  private readonly timeoutMs: number;
  private readonly fetchImpl: typeof fetch;
  private readonly credentials?: { username: string; password: string };
  private token?: Promise<string | { error: string }>;
  /** the broker's egress rules, when fetchImpl enforces them */
  private readonly egress?: EgressPolicy;

  constructor(opts: NotaryClientOptions) {
    this.base = String(opts.server ?? '').replace(/\/+$/, '');
    this.gun = opts.gun;
    this.timeoutMs = opts.timeoutMs && opts.timeoutMs > 0 ? opts.timeoutMs : 5000;
    this.fetchImpl = opts.fetchImpl ?? globalThis.fetch;
    this.credentials = opts.credentials;
    this.egress = egressPolicyOf(this.fetchImpl);
  }

  private serverOrigin(): string | undefined {
    try {
      return new URL(this.base).origin;
    } catch {
      return undefined;
    }
  }

  /** Fetch-time scheme check (policies stored before https was required are caught here too). */
  private assertAllowed(url: URL): void {
    if (url.protocol !== 'http:' && url.protocol !== 'https:') throw new NotaryEgressError(`unsupported protocol ${url.protocol}`);
    if (url.protocol === 'http:' && this.egress && !this.egress.allowsPlainHttp(url)) {
      throw new NotaryEgressError('plain http refused: the host is not listed in KEYWARDEN_INSECURE_REGISTRIES');
    }
  }

  roleUrl(role: string): string {
    return `${this.base}/v2/${this.gun}/_trust/tuf/${role}.json`;
  }

  private async request(url: string, headers: Record<string, string>, maxBytes: number) {
    const signal = AbortSignal.timeout(this.timeoutMs);
    let current = new URL(url);
    const hdrs = { ...headers };
    let res: Response | undefined;
    for (let hop = 0; ; hop++) {
      this.assertAllowed(current);
      res = await this.fetchImpl(current, { method: 'GET', headers: hdrs, signal, redirect: 'manual' });
      const location = res.headers.get('location');
      if (![301, 302, 303, 307, 308].includes(res.status) || !location) break;
      await res.body?.cancel().catch(() => undefined);
      if (hop >= MAX_REDIRECTS) throw new NotaryEgressError('too many redirects');
      let next: URL;
      try {
        next = new URL(location, current);
      } catch {
        throw new NotaryEgressError('invalid redirect');
      }
      if (next.origin !== current.origin) {
        if (!this.egress?.isExplicit(next)) throw new NotaryEgressError('redirect to another host refused (not in KEYWARDEN_EGRESS_ALLOW)');
        // credentials belong to the origin that asked for them
        delete hdrs.authorization;
      }
      current = next;
    }
    if (res.status !== 200) {
      await res.body?.cancel().catch(() => undefined);
      return { res, body: undefined };
    }
    const body = await readLimited(res, maxBytes);
    return { res, body };
  }

  private fetchToken(challenge: BearerChallenge): Promise<string | { error: string }> {
    return (async () => {
      let url: URL;
      try {
        url = new URL(challenge.realm);
      } catch {
        return { error: 'invalid token realm' };
      }
      if (url.protocol !== 'http:' && url.protocol !== 'https:') return { error: `unsupported token realm ${url.protocol}` };
      // the realm receives the credentials: the server's own origin, or a host the operator allowed
      if (url.origin !== this.serverOrigin() && !this.egress?.isExplicit(url)) {
        return { error: 'token realm on another host refused (not in KEYWARDEN_EGRESS_ALLOW)' };
      }
      if (challenge.service) url.searchParams.set('service', challenge.service);
      if (challenge.scope) url.searchParams.set('scope', challenge.scope);
      const headers: Record<string, string> = { accept: 'application/json' };
      if (this.credentials) {
        const basic = Buffer.from(`${this.credentials.username}:${this.credentials.password}`, 'utf8').toString('base64');
        headers.authorization = `Basic ${basic}`;
      }
      try {
        const { res, body } = await this.request(url.toString(), headers, 1024 * 1024);
        if (res.status !== 200) return { error: `token endpoint answered HTTP ${res.status}` };
        if (body === 'too_large' || body === undefined) return { error: 'token response too large' };
        const json = JSON.parse(body.toString('utf8')) as { token?: unknown; access_token?: unknown };
        const token = typeof json.token === 'string' && json.token ? json.token : json.access_token;
        if (typeof token !== 'string' || !token) return { error: 'token response has no token' };
        return token;
      } catch (err) {
        const d = describeError(err);
        return { error: `token request failed: ${d.message}` };
      }
    })();
  }

  /** Fetch one role document. Never throws. */
  async fetchRole(role: string, maxBytes: number = DEFAULT_MAX_METADATA_BYTES): Promise<RoleFetchResult> {
    if (!isValidRoleName(role)) return { ok: false, kind: 'invalid', message: `invalid role name ${JSON.stringify(role)}`, url: '' };
    const url = this.roleUrl(role);
    try {
      let headers: Record<string, string> = { accept: 'application/json' };
      if (this.token) {
        const t = await this.token;
        if (typeof t === 'string') headers = { ...headers, authorization: `Bearer ${t}` };
      }
      let { res, body } = await this.request(url, headers, maxBytes);
      if (res.status === 401) {
        const challenge = parseBearerChallenge(res.headers.get('www-authenticate'));
        if (!challenge) return { ok: false, kind: 'auth', status: 401, message: `${role}.json: HTTP 401 without a bearer challenge`, url };
        if (!this.token || typeof (await this.token) !== 'string' || headers.authorization) {
          this.token = this.fetchToken(challenge);
        }
        const t = await this.token;
        if (typeof t !== 'string') return { ok: false, kind: 'auth', status: 401, message: `${role}.json: ${t.error}`, url };
        ({ res, body } = await this.request(url, { ...headers, authorization: `Bearer ${t}` }, maxBytes));
      }
      if (res.status === 404) return { ok: false, kind: 'not_found', status: 404, message: `${role}.json: HTTP 404`, url };
      if (res.status === 401 || res.status === 403) {
        return { ok: false, kind: 'auth', status: res.status, message: `${role}.json: HTTP ${res.status} (not authorized)`, url };
      }
      if (res.status !== 200) return { ok: false, kind: 'http', status: res.status, message: `${role}.json: HTTP ${res.status}`, url };
      if (body === 'too_large') return { ok: false, kind: 'too_large', message: `${role}.json exceeds ${maxBytes} bytes`, url };
      return { ok: true, bytes: body ?? Buffer.alloc(0), url };
    } catch (err) {
      const d = describeError(err);
      const message = d.kind === 'timeout' ? `request for ${role}.json timed out after ${this.timeoutMs} ms` : `${role}.json: ${d.message}`;
      return { ok: false, kind: d.kind, message, url };
    }
  }
}
