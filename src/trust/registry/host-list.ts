/**
 * Host lists of the egress settings (KEYWARDEN_EGRESS_ALLOW, KEYWARDEN_INSECURE_REGISTRIES).
 * Kept apart from egress-policy.ts, which loads undici and ipaddr.js: the configuration is
 * validated at every CLI start, `keywarden exec` included, and needs none of that.
 */

interface HostRule {
  /** normalized host name (as in URL.hostname), without a leading "*." */
  host: string;
  /** "*.example.com": any subdomain of host */
  subdomains: boolean;
  /** undefined: any port */
  port?: number;
}

const HOST_ENTRY = /^(\*\.)?(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9.-]+)(?::(\d{1,5}))?$/;

/** True when `entry` is a valid KEYWARDEN_EGRESS_ALLOW / KEYWARDEN_INSECURE_REGISTRIES entry. */
export function isValidHostEntry(entry: string): boolean {
  return parseHostEntry(entry) !== undefined;
}

function parseHostEntry(entry: string): HostRule | undefined {
  const m = HOST_ENTRY.exec(entry.trim());
  if (!m) return undefined;
  const port = m[3] === undefined ? undefined : Number(m[3]);
  if (port !== undefined && (port < 1 || port > 65535)) return undefined;
  let host: string;
  try {
    host = new URL(`http://${m[2]}/`).hostname;
  } catch {
    return undefined;
  }
  if (m[1] && host.startsWith('[')) return undefined;
  return { host, subdomains: !!m[1], port };
}

function effectivePort(url: URL): number {
  if (url.port) return Number(url.port);
  return url.protocol === 'http:' ? 80 : 443;
}

/**
 * A list of host entries: `host` (any port), `host:port`, `*.example.com[:port]` (any subdomain).
 * IPv4 and IPv6 literals are compared in their normalized URL form.
 */
export class HostList {
  private readonly rules: HostRule[];
  constructor(entries: readonly string[]) {
    this.rules = [];
    for (const entry of entries) {
      const rule = parseHostEntry(entry);
      if (!rule) throw new Error(`invalid host entry "${entry}"`);
      this.rules.push(rule);
    }
  }

  matches(url: URL): boolean {
    const host = url.hostname.toLowerCase();
    const port = effectivePort(url);
    return this.rules.some(
      (r) => (r.port === undefined || r.port === port) && (r.subdomains ? host.endsWith(`.${r.host}`) : host === r.host),
    );
  }
}
