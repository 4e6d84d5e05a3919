/**
 * A Docker API request read the way dockerd reads it, so that the authz plugin judges the call
 * dockerd will actually make. dockerd hands authz plugins the raw request URI, but it routes on
 * the decoded path and reads parameters from the decoded query and a form body:
 *
 * - Go's `url.ParseRequestURI` decodes the path (`/v1.41/containers%2Fcreate` is
 *   `/v1.41/containers/create`); absolute-form (`http://h/containers/create`) and `x:/…` URIs
 *   are accepted, and `#` is an ordinary character of the path or query.
 * - gorilla/mux (without UseEncodedPath) matches the decoded path against `/v{version:[0-9.]+}/…`
 *   and `/…`, so any `/v<digits and dots>` prefix reaches the endpoint (the version is checked
 *   after the authz plugins); paths that are not clean (`//`, `/./`, `/../`) are redirected, and
 *   trailing slashes do not match.
 * - handlers read `r.Form`: Go's `url.ParseQuery` (only `&` separates; a `;` is an error; the
 *   first of repeated keys wins with `Get`), preceded by a form-urlencoded body, which dockerd
 *   never shows an authz plugin.
 * - `encoding/json` matches object keys to field names case-insensitively; the last match wins.
 *
 * Whatever cannot be read exactly is an UnreadableRequest: the plugin denies it (fail closed).
 */
import { posix } from 'node:path';

export class UnreadableRequest extends Error {}

/** Bytes that Go's ParseRequestURI refuses (`stringContainsCTLByte`). */
const CONTROL = /[\x00-\x1f\x7f]/;
/** A URI scheme as Go's `getScheme` reads it: a letter, then letters, digits, `+`, `-`, `.`. */
const SCHEME = /^[A-Za-z][A-Za-z0-9+.-]*:/;
/** The router's version prefix (`/v{version:[0-9.]+}`); unknown and odd versions reach the endpoint too. */
const VERSION_PREFIX = /^\/v[0-9.]+(?=\/|$)/i;

const utf8 = new TextDecoder('utf-8', { fatal: true });

/** Go's `unescape`: every `%` starts two hex digits; in a query component `+` is a space. The result must be UTF-8. */
function unescape(s: string, what: string, plusIsSpace: boolean): string {
  const bad = /%(?![0-9A-Fa-f]{2})/.exec(s);
  if (bad) throw new UnreadableRequest(`the ${what} has a bad percent-encoding ${JSON.stringify(s.slice(bad.index, bad.index + 3))}`);
  const text = plusIsSpace ? s.replaceAll('+', ' ') : s;
  if (!text.includes('%')) return text;
  // literal runs and %XX escapes alternate; the escapes are bytes, so decode the whole as UTF-8
  const bytes = text.split(/(%[0-9A-Fa-f]{2})/).map((part, i) => (i % 2 === 1 ? Buffer.of(parseInt(part.slice(1), 16)) : Buffer.from(part, 'utf8')));
  try {
    return utf8.decode(Buffer.concat(bytes));
  } catch {
    throw new UnreadableRequest(`the ${what} does not decode to UTF-8`);
  }
}

/** Path and raw query of a request URI as Go's `url.ParseRequestURI` splits them; the path decoded. */
export function parseRequestUri(uri: string): { path: string; rawQuery: string } {
  if (CONTROL.test(uri)) throw new UnreadableRequest('the request URI has a control character');
  if (uri === '*') return { path: '*', rawQuery: '' };
  if (uri.startsWith(':')) throw new UnreadableRequest('the request URI has no scheme before ":"');
  const scheme = SCHEME.exec(uri)?.[0];
  let rest = scheme ? uri.slice(scheme.length) : uri;
  const q = rest.indexOf('?');
  const rawQuery = q < 0 ? '' : rest.slice(q + 1);
  if (q >= 0) rest = rest.slice(0, q);
  if (!rest.startsWith('/')) {
    // "x:opaque" has no path (mux redirects it); a relative reference is no request URI at all
    if (scheme) return { path: '', rawQuery };
    throw new UnreadableRequest('the request URI is not an absolute path');
  }
  if (scheme && rest.startsWith('//')) {
    const slash = rest.indexOf('/', 2);
    rest = slash < 0 ? '' : rest.slice(slash);
  }
  const path = unescape(rest, 'request path', false);
  if (CONTROL.test(path)) throw new UnreadableRequest('the request path has an encoded control character');
  return { path, rawQuery };
}

/**
 * The API endpoint a decoded path names, e.g. `/containers/create` for `/v1.99//containers/./create/`:
 * cleaned (dot segments, duplicate slashes), the version prefix and trailing slashes removed.
 * dockerd redirects or 404s some of these spellings, but judging them as their endpoint is never
 * less strict.
 */
export function apiEndpoint(path: string): string {
  if (!path.startsWith('/')) return path;
  const clean = posix.normalize(path).replace(VERSION_PREFIX, '').replace(/\/+$/, '');
  return clean === '' ? '/' : clean;
}

/** Query values as Go's `url.Values`: `first` is `Values.Get` ("" when absent). */
export class QueryValues {
  constructor(private readonly values: ReadonlyMap<string, readonly string[]>) {}

  first(key: string): string {
    return this.values.get(key)?.[0] ?? '';
  }
}

/** Go's `url.ParseQuery` (Go ≥ 1.17): pairs split on `&` only; a `;` or a bad escape makes dockerd refuse the request, so it is unreadable here. */
export function parseQuery(rawQuery: string): QueryValues {
  const values = new Map<string, string[]>();
  for (const pair of rawQuery.split('&')) {
    if (pair.includes(';')) throw new UnreadableRequest('the query has a ";" (Go refuses it as a separator)');
    if (pair === '') continue;
    const eq = pair.indexOf('=');
    const key = unescape(eq < 0 ? pair : pair.slice(0, eq), 'query', true);
    const value = unescape(eq < 0 ? '' : pair.slice(eq + 1), 'query', true);
    values.set(key, [...(values.get(key) ?? []), value]);
  }
  return new QueryValues(values);
}

/** A header of the request as dockerd passes them to plugins (the last value of each, canonical names). */
export function header(headers: Readonly<Record<string, string>> | null | undefined, name: string): string | undefined {
  const lower = name.toLowerCase();
  for (const [k, v] of Object.entries(headers ?? {})) if (k.toLowerCase() === lower) return v;
  return undefined;
}

/**
 * Whether the request was sent with `Content-Length: 0`. Anything else may carry a body: Go drops
 * `Transfer-Encoding` and `Content-Length` from a chunked request's headers, so the plugin cannot
 * tell "no body" from "a chunked body" without it.
 */
export function hasEmptyBody(headers: Readonly<Record<string, string>> | null | undefined): boolean {
  return /^[ \t]*0+[ \t]*$/.test(header(headers, 'Content-Length') ?? '');
}

/**
 * Go's case folding for JSON object keys: ASCII case, plus the non-ASCII letters that fold to an
 * ASCII one in some Go release (ſ → S, K (Kelvin) → K, ı and İ → I).
 */
function foldKey(key: string): string {
  return key.replace(/[\u017f\u212a\u0131\u0130]/g, (c) => ({ '\u017f': 's', '\u212a': 'k', '\u0131': 'i', '\u0130': 'i' })[c]!).toLowerCase();
}

/**
 * The member of a decoded JSON object that Go's encoding/json would put in the field `name`.
 * Go takes the last key in the document that folds to the name; JSON.parse keeps one value per
 * distinct key and not their order, so two distinct keys that fold alike are unreadable.
 */
export function jsonMember(object: Record<string, unknown>, name: string): unknown {
  const folded = foldKey(name);
  const keys = Object.keys(object).filter((k) => foldKey(k) === folded);
  if (keys.length > 1) throw new UnreadableRequest(`the body spells ${name} more than once (${keys.map((k) => JSON.stringify(k)).join(', ')})`);
  return keys.length === 1 ? object[keys[0]!] : undefined;
}
