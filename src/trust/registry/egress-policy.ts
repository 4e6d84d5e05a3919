/**
 * Where the broker may open connections on behalf of the release gate, signing and Notary checks.
 *
 * - Destinations explicitly configured by the operator (KEYWARDEN_INSECURE_REGISTRIES,
 *   KEYWARDEN_EGRESS_ALLOW) may be reached at any address, private ones included.
 * - Anything else (a registry named in a trust policy or signer scope, a Notary server named in a
 *   policy) must be public: loopback, link-local, private, unspecified and other special-purpose
 *   addresses are refused, for IP literals and for every address a host name resolves to. The
 *   connection goes to the address that was checked (custom `lookup` on an undici Agent), so DNS
 *   cannot answer differently between the check and the connect.
 * - Plain HTTP only to KEYWARDEN_INSECURE_REGISTRIES hosts.
 *
 * Errors thrown by `fetch` carry short, fixed messages; the socket-level detail goes to the log.
 */
import dns from 'node:dns';
import net, { type LookupFunction } from 'node:net';
import ipaddr from 'ipaddr.js';
import type { Logger } from 'pino';
import { Agent, fetch as undiciFetch } from 'undici';
import { HostList } from './host-list.js';

export type EgressRefusal = 'plain_http' | 'non_public_address' | 'not_allowed';

/** A destination the egress rules do not permit. The message is safe to show to callers. */
export class EgressRefusedError extends Error {
  override readonly name = 'EgressRefusedError';
  constructor(
    readonly reason: EgressRefusal,
    message: string,
  ) {
    super(message);
  }
}

export type ConnectionFailure = 'timeout' | 'not_tls' | 'unreachable';

/** A connection-level failure with a fixed message (no socket error text, no addresses). */
export class EgressConnectionError extends Error {
  override readonly name = 'EgressConnectionError';
  constructor(readonly kind: ConnectionFailure) {
    super(kind === 'timeout' ? 'connection timed out' : kind === 'not_tls' ? 'the server does not speak TLS' : 'connection failed');
  }
}

// fec0::/10 (deprecated site-local) is not among ipaddr.js's special ranges but is not global either
const SITE_LOCAL_V6 = ipaddr.IPv6.parseCIDR('fec0::/10');

/**
 * True only for globally routable unicast addresses. IPv4-mapped IPv6 is judged as the IPv4
 * address it maps; NAT64, 6to4 and Teredo prefixes (which embed IPv4 addresses) are refused.
 */
export function isPublicAddress(address: string): boolean {
  const bare = address.replace(/^\[|\]$/g, '');
  if (!net.isIP(bare.split('%')[0]!)) return false;
  let parsed: ipaddr.IPv4 | ipaddr.IPv6;
  try {
    parsed = ipaddr.process(bare);
  } catch {
    return false;
  }
  if (parsed.kind() === 'ipv6' && (parsed as ipaddr.IPv6).match(SITE_LOCAL_V6)) return false;
  return parsed.range() === 'unicast';
}

export { HostList, isValidHostEntry } from './host-list.js';

/** The registry part of an image pattern (`registry/repository` glob) when it has no wildcard. */
export function literalRegistryOf(pattern: string): string | undefined {
  const slash = pattern.indexOf('/');
  if (slash <= 0) return undefined;
  const head = pattern.slice(0, slash);
  // a wildcard registry ("**", "*.example.com", "registry:*") names no host: it opens no egress
  if (/[*?]/.test(head)) return undefined;
  return head.toLowerCase();
}

/** "host[:port]" in the normalized form URL gives it (lowercase, IPv4 canonical, IPv6 compressed). */
function normalizedRegistry(registry: string): string | undefined {
  try {
    return new URL(`https://${registry}/`).host;
  } catch {
    return undefined;
  }
}

function redactedUrl(url: URL): string {
  return `${url.origin}${url.pathname}`;
}

function errorChain(err: unknown): unknown[] {
  const out: unknown[] = [];
  let e: unknown = err;
  for (let i = 0; i < 5 && e; i++) {
    out.push(e);
    e = typeof e === 'object' ? (e as { cause?: unknown }).cause : undefined;
  }
  return out;
}

/** Classifies a fetch/socket error without exposing its text. */
export function classifyConnectionError(err: unknown, url: URL): EgressRefusedError | EgressConnectionError | undefined {
  const chain = errorChain(err);
  const refused = chain.find((e): e is EgressRefusedError => e instanceof EgressRefusedError);
  if (refused) return refused;
  const known = chain.find((e): e is EgressConnectionError => e instanceof EgressConnectionError);
  if (known) return known;
  const codes = chain.map((e) => (e && typeof e === 'object' ? (e as { code?: unknown }).code : undefined)).filter((c) => typeof c === 'string');
  const messages = chain.map((e) => (e instanceof Error ? e.message : String(e))).join(': ');
  if (codes.some((c) => ['UND_ERR_CONNECT_TIMEOUT', 'UND_ERR_HEADERS_TIMEOUT', 'UND_ERR_BODY_TIMEOUT', 'ETIMEDOUT'].includes(c as string))) {
    return new EgressConnectionError('timeout');
  }
  if (
    url.protocol === 'https:' &&
    (codes.includes('ERR_SSL_WRONG_VERSION_NUMBER') || /wrong version number|packet length too long|http request|unknown protocol/i.test(messages))
  ) {
    return new EgressConnectionError('not_tls');
  }
  return undefined;
}

export interface EgressOptions {
  /** KEYWARDEN_INSECURE_REGISTRIES: plain HTTP allowed, and explicitly configured (any address). */
  insecureHosts: readonly string[];
  /** KEYWARDEN_EGRESS_ALLOW: explicitly configured destinations (any address, may be left to from another origin). */
  allowedHosts: readonly string[];
  logger?: Logger;
}

export type EgressFetch = typeof fetch & { readonly policy: EgressPolicy };

export class EgressPolicy {
  private readonly insecure: HostList;
  private readonly allowed: HostList;
  private readonly logger?: Logger;
  /**
   * Connection pools. HEAD requests get pools of their own: undici closes the connection after
   * every HEAD (nodejs/undici#258, against servers that send a body anyway), and in a shared pool
   * that close takes down a kept-alive connection the GETs that follow (a signature, a config
   * blob) would have reused.
   */
  private agents?: { explicit: Agent; publicOnly: Agent; explicitHead: Agent; publicOnlyHead: Agent };
  /** fetch that enforces these rules on every request (redirects must be `manual`). */
  readonly fetch: EgressFetch;

  constructor(opts: EgressOptions) {
    this.insecure = new HostList(opts.insecureHosts);
    this.allowed = new HostList(opts.allowedHosts);
    this.logger = opts.logger;
    const guarded = (input: Parameters<typeof fetch>[0], init?: RequestInit) => this.guardedFetch(input, init);
    this.fetch = Object.assign(guarded as typeof fetch, { policy: this });
  }

  /** Plain HTTP is allowed only to KEYWARDEN_INSECURE_REGISTRIES hosts. */
  allowsPlainHttp(url: URL): boolean {
    return url.protocol === 'http:' && this.insecure.matches(url);
  }

  /** Configured by the operator: reachable at any address, and from another origin (realm, redirect, upload). */
  isExplicit(url: URL): boolean {
    return this.insecure.matches(url) || this.allowed.matches(url);
  }

  /** The URL a registry "host[:port]" is reached at. */
  registryUrl(registry: string): URL {
    const http = this.insecure.matches(new URL(`http://${registry}/`));
    return new URL(`${http ? 'http' : 'https'}://${registry}/`);
  }

  /**
   * May the broker contact this registry at all? Yes when it is explicitly configured, or named
   * literally (no wildcard in the registry part) by one of `namedRegistries`.
   */
  registryPermitted(registry: string, namedRegistries: Iterable<string>): boolean {
    let url: URL;
    try {
      url = this.registryUrl(registry);
    } catch {
      return false;
    }
    if (this.isExplicit(url)) return true;
    const wanted = normalizedRegistry(registry);
    if (!wanted) return false;
    for (const named of namedRegistries) if (normalizedRegistry(named) === wanted) return true;
    return false;
  }

  /**
   * Checks scheme and IP literals before a connection; returns whether the destination is
   * explicitly configured (else only public addresses may be connected to).
   */
  checkDestination(url: URL): 'explicit' | 'public-only' {
    if (url.protocol !== 'https:' && url.protocol !== 'http:') {
      throw new EgressRefusedError('not_allowed', `unsupported protocol ${url.protocol}`);
    }
    if (url.protocol === 'http:' && !this.allowsPlainHttp(url)) {
      throw new EgressRefusedError('plain_http', 'plain HTTP is allowed only to KEYWARDEN_INSECURE_REGISTRIES hosts');
    }
    if (url.username || url.password) throw new EgressRefusedError('not_allowed', 'URLs with embedded credentials are refused');
    if (this.isExplicit(url)) return 'explicit';
    const host = url.hostname.replace(/^\[|\]$/g, '');
    if (net.isIP(host) && !isPublicAddress(host)) {
      throw new EgressRefusedError('non_public_address', 'the destination is a non-public address that is not explicitly allowed');
    }
    return 'public-only';
  }

  private dispatcher(kind: 'explicit' | 'public-only', head = false): Agent {
    if (!this.agents) {
      const publicOnlyLookup: LookupFunction = (hostname, options, callback) => {
        dns.lookup(hostname, { family: options.family, hints: options.hints, all: true }, (err, addresses) => {
          if (err) return callback(err, '', 4);
          // every address must be public: a mixed answer could otherwise be raced into a private one
          if (addresses.length === 0 || addresses.some((a) => !isPublicAddress(a.address))) {
            this.logger?.warn({ hostname, addresses: addresses.map((a) => a.address) }, 'egress: host resolves to a non-public address; refused');
            return callback(
              new EgressRefusedError('non_public_address', 'the destination resolves to a non-public address that is not explicitly allowed'),
              '',
              4,
            );
          }
          if (options.all) (callback as unknown as (e: null, a: dns.LookupAddress[]) => void)(null, addresses);
          else callback(null, addresses[0]!.address, addresses[0]!.family);
        });
      };
      this.agents = {
        explicit: new Agent(),
        publicOnly: new Agent({ connect: { lookup: publicOnlyLookup } }),
        explicitHead: new Agent(),
        publicOnlyHead: new Agent({ connect: { lookup: publicOnlyLookup } }),
      };
    }
    if (head) return kind === 'explicit' ? this.agents.explicitHead : this.agents.publicOnlyHead;
    return kind === 'explicit' ? this.agents.explicit : this.agents.publicOnly;
  }

  private async guardedFetch(input: Parameters<typeof fetch>[0], init?: RequestInit): Promise<Response> {
    const url = new URL(input instanceof Request ? input.url : String(input));
    let kind: 'explicit' | 'public-only';
    try {
      kind = this.checkDestination(url);
    } catch (err) {
      this.logger?.warn({ url: redactedUrl(url), reason: (err as EgressRefusedError).reason }, 'egress: destination refused');
      throw err;
    }
    if (init?.redirect !== 'manual') {
      // a followed redirect would bypass the origin rules of the callers
      throw new EgressRefusedError('not_allowed', 'egress fetch needs redirect: manual');
    }
    try {
      const head = (init?.method ?? 'GET').toUpperCase() === 'HEAD';
      const res = await undiciFetch(url, { ...(init as object), dispatcher: this.dispatcher(kind, head) } as Parameters<typeof undiciFetch>[1]);
      return res as unknown as Response;
    } catch (err) {
      const name = err && typeof err === 'object' ? (err as { name?: string }).name : undefined;
      if (name === 'TimeoutError' || name === 'AbortError') throw err;
      const classified = classifyConnectionError(err, url) ?? new EgressConnectionError('unreachable');
      const chain = errorChain(err).map((e) =>
        e instanceof Error ? { name: e.name, message: e.message, code: (e as { code?: unknown }).code } : { message: String(e) },
      );
      this.logger?.warn({ url: redactedUrl(url), failure: classified instanceof EgressRefusedError ? classified.reason : classified.kind, err: chain }, 'egress: request failed');
      throw classified;
    }
  }

  async close(): Promise<void> {
    const agents = this.agents;
    this.agents = undefined;
    if (agents) await Promise.all(Object.values(agents).map((a) => a.close()));
  }
}

/** The egress policy a fetch function enforces, when it is an EgressPolicy's fetch. */
export function egressPolicyOf(fetchImpl: unknown): EgressPolicy | undefined {
  const policy = fetchImpl && typeof fetchImpl === 'function' ? (fetchImpl as Partial<EgressFetch>).policy : undefined;
  return policy instanceof EgressPolicy ? policy : undefined;
}
