/**
 * The authz plugin judges a call by what dockerd routes and reads, not by how the URI is spelled
 * (issue 28, finding 3). dockerd gives authz plugins the raw request URI but routes on the decoded
 * path. Against dockerd 20.10.24 (Go 1.19, gorilla/mux 1.8) every spelling in `routed` below
 * reached the create/update handler; those in `judgedAnyway` were redirected (301) or 404ed before
 * the plugin was asked, and the plugin judges them all the same. Pure functions and a stub broker:
 * no dockerd, no network.
 */
import { describe, expect, it } from 'vitest';
import { AuthzPlugin, judgedCall } from '../../src/docker-plugin/authz.js';
import type { PluginBrokerApi, PluginEvent, ReleaseDecision } from '../../src/docker-plugin/broker-api.js';
import type { AuthzRequest } from '../../src/docker-plugin/protocol.js';

const b64 = (s: string) => Buffer.from(s).toString('base64');
const CONTAINER_BODY = b64(JSON.stringify({ Image: 'reg.example/app:1', User: '1000' }));
const SERVICE_BODY = b64(JSON.stringify({ Name: 's', TaskTemplate: { ContainerSpec: { Image: 'reg.example/svc:2', User: '1000' } } }));
/** What dockerd passes for `docker pull` (seen from dockerd 20.10.24): no body, Content-Length: 0. */
const PULL_HEADERS = { 'Content-Length': '0', 'User-Agent': 'Docker-Client/28.2.2 (linux)' };
const PULL_QUERY = '?fromImage=reg.example%2Fpulled&tag=3';

/** Every character percent-encoded, `/` too when `slashes`. */
const encodeAll = (s: string, slashes = false) => [...s].map((c) => (c === '/' && !slashes ? c : `%${c.charCodeAt(0).toString(16).toUpperCase().padStart(2, '0')}`)).join('');

/** Spellings of `endpoint` (e.g. "/containers/create") that dockerd routes to its handler. */
function routed(endpoint: string): string[] {
  const rest = endpoint.slice(1);
  const slashAt = (i: number, enc: string) => rest.split('/').reduce((acc, seg, j) => (j === 0 ? seg : `${acc}${j === i ? enc : '/'}${seg}`), '');
  const parts = rest.split('/').length;
  return [
    endpoint,
    `/v1.41${endpoint}`,
    // any /v<digits and dots> prefix is routed; the version is checked after the authz plugins
    `/v1.24${endpoint}`,
    `/v1.99${endpoint}`,
    `/v1${endpoint}`,
    `/v1.41.0${endpoint}`,
    `/v01.41${endpoint}`,
    `/v.${endpoint}`,
    // an encoded slash in each place, upper- and lower-case hex
    ...Array.from({ length: parts - 1 }, (_, i) => ['%2F', '%2f'].flatMap((enc) => [`/${slashAt(i + 1, enc)}`, `/v1.41/${slashAt(i + 1, enc)}`])).flat(),
    `/v1.41%2F${rest}`,
    `/v1.41%2F${encodeAll(rest, true)}`,
    // encoded letters
    `${endpoint.slice(0, -1)}%${endpoint.charCodeAt(endpoint.length - 1).toString(16)}`,
    `/v1.41/${encodeAll(rest)}`,
    `/${encodeAll('v1.41')}/${encodeAll(rest)}`,
    // absolute-form and other schemes: Go takes the path after the authority
    `http://docker/v1.41${endpoint}`,
    `HTTP://docker${endpoint}`,
    `unix:///v1.41${endpoint}`,
    `x:/v1.41${endpoint}`,
    `v1.41:/v1.41/${encodeAll(rest)}`,
  ];
}

/** Spellings dockerd redirects (not clean) or 404s (trailing slash, case): judged as the endpoint anyway. */
function judgedAnyway(endpoint: string): string[] {
  const rest = endpoint.slice(1);
  const [first, ...others] = rest.split('/');
  return [
    `/v1.41${endpoint}/`,
    `${endpoint}//`,
    `/v1.41${endpoint}%2F`,
    `//${rest}`,
    `/v1.41//${rest}`,
    `/v1.41/${rest.split('/').join('//')}`,
    `/./${rest}`,
    `/v1.41/./${rest}`,
    `/v1.41/../${rest}`,
    `/v1.41/x/..${endpoint}`,
    `/v1.41/${first}/%2e/${others.join('/')}`,
    `/v1.41/${first}/x%2F..%2F${others.join('/')}`,
    `/v1.41/${first}%2F%2E%2E%2F${rest}`,
    `/V1.41/${rest.toUpperCase()}`,
  ];
}

const ENDPOINTS = [
  { endpoint: '/containers/create', query: '?name=c1', body: CONTAINER_BODY, headers: undefined, expected: { kind: 'container', image: 'reg.example/app:1', user: '1000' } },
  { endpoint: '/services/create', query: '', body: SERVICE_BODY, headers: undefined, expected: { kind: 'service', image: 'reg.example/svc:2', user: '1000' } },
  { endpoint: '/services/abc123/update', query: '?version=3', body: SERVICE_BODY, headers: undefined, expected: { kind: 'service', image: 'reg.example/svc:2', user: '1000' } },
  { endpoint: '/images/create', query: PULL_QUERY, body: undefined, headers: PULL_HEADERS, expected: { kind: 'pull', image: 'reg.example/pulled:3' } },
] as const;

const request = (method: string, uri: string, extra: Partial<AuthzRequest> = {}): AuthzRequest => ({ RequestMethod: method, RequestUri: uri, User: '', ...extra });

describe('every spelling dockerd routes to a judged endpoint is judged as that endpoint', () => {
  for (const e of ENDPOINTS) {
    const rows = [...routed(e.endpoint).map((s) => ['routed by dockerd', s]), ...judgedAnyway(e.endpoint).map((s) => ['redirected or 404 in dockerd', s])];
    it.each(rows.flatMap(([how, s]) => ['POST', 'post', 'Post'].map((m) => [m, s!, how!])))(`%s %s (${e.endpoint}, %s)`, (method, spelling) => {
      const req = request(method, `${spelling}${e.query}`, { RequestBody: e.body, RequestHeaders: e.headers });
      expect(judgedCall(req, true)).toEqual(e.expected);
    });
  }

  it('the spellings in the table are distinct and encoded (a table that repeats the plain path would prove nothing)', () => {
    const all = routed('/containers/create');
    expect(new Set(all).size).toBe(all.length);
    expect(all.filter((s) => s.includes('%')).length).toBeGreaterThanOrEqual(8);
    expect(all).toEqual(expect.arrayContaining(['/v1.41/containers%2Fcreate', '/containers/creat%65', '/v1.41%2Fcontainers/create']));
    expect(routed('/services/x/update')).toContain('/services/x%2Fupdate');
  });
});

describe('calls that are not judged stay allowed', () => {
  it.each([
    ['GET', '/v1.41/containers/json'],
    ['GET', '/v1.41/containers%2Fcreate'],
    ['HEAD', '/containers/create'],
    ['PUT', '/v1.41/containers/create'],
    ['POST', '/v1.41/containers/abc/start'],
    ['POST', '/v1.41/containers/create-x'],
    ['POST', '/v1.41/containers/create%2Fx'],
    ['POST', '/v1.41/services/a%2Fb/update'],
    // dockerd answers 404 to these (the prefix is stripped once; `;`, `#` and `\` are path characters)
    ['POST', '/v1.41/v1.41/containers/create'],
    ['POST', '/v1.41/containers/create;x'],
    ['POST', '/v1.41/containers/create#x'],
    ['POST', '/v1.41/containers\\create'],
    ['POST', 'x:opaque'],
    ['OPTIONS', '*'],
  ])('%s %s', (method, uri) => {
    expect(judgedCall(request(method, uri, { RequestBody: CONTAINER_BODY }), true)).toBeUndefined();
  });

  it('images/create is not judged without gatePulls, whatever its spelling or body', () => {
    for (const s of routed('/images/create')) expect(judgedCall(request('POST', `${s}${PULL_QUERY}`), false)).toBeUndefined();
  });
});

describe('the query is read as dockerd reads it (Go url.ParseQuery, Values.Get)', () => {
  const pull = (query: string, headers: Record<string, string> = PULL_HEADERS) => judgedCall(request('POST', `/v1.41/images/create?${query}`, { RequestHeaders: headers }), true);

  it.each([
    // `#` is no fragment delimiter in a request URI: dockerd pulls the fromImage after it
    ['x=1#&fromImage=reg.example/hash&tag=3', 'reg.example/hash:3'],
    ['tag=1#&fromImage=reg.example/hash', 'reg.example/hash:1#'],
    // the first of repeated keys
    ['fromImage=reg.example/first&fromImage=reg.example/second&tag=1&tag=2', 'reg.example/first:1'],
    // keys and values are decoded; + is a space
    ['from%49mage=reg.example%2Fpct&t%61g=4', 'reg.example/pct:4'],
    ['fromImage=reg.example/a+b', 'reg.example/a b:latest'],
    ['fromImage=reg.example/d&tag=sha256%3Aabc', 'reg.example/d@sha256:abc'],
    ['&&fromImage=reg.example/empty-pairs&&tag=5&', 'reg.example/empty-pairs:5'],
  ])('?%s pulls %s', (query, image) => {
    expect(pull(query)).toEqual({ kind: 'pull', image });
  });

  it('an empty first fromImage is an import in dockerd (Get returns ""), not a pull', () => {
    expect(pull('fromImage=&fromImage=reg.example/second&tag=1')).toBeUndefined();
    expect(pull('fromSrc=-&repo=x')).toBeUndefined();
  });

  it('Content-Length: 0 is read in any header case; without it a pull cannot be judged from the query alone', () => {
    expect(pull('fromImage=reg.example/p&tag=1', { 'content-length': '0' })).toEqual({ kind: 'pull', image: 'reg.example/p:1' });
    // no Content-Length: no body, or a chunked one (Go drops Transfer-Encoding from the headers)
    expect(() => pull('fromImage=reg.example/p&tag=1', {})).toThrow(/may have a body .* form body/);
    // a form body's fromImage comes before the query's; dockerd never shows it to the plugin
    expect(() => pull('fromImage=reg.example/p&tag=1', { 'Content-Type': 'application/x-www-form-urlencoded', 'Content-Length': '39' })).toThrow(/may have a body/);
    // with two Content-Type headers dockerd passes the last, Go parses the form by the first
    expect(() => pull('', { 'Content-Type': 'application/json', 'Content-Length': '40' })).toThrow(/may have a body/);
    expect(() => judgedCall(request('POST', '/v1.41/images/create'), true)).toThrow(/may have a body/);
  });
});

describe('the JSON body is read as Go reads it: keys match field names case-insensitively', () => {
  const create = (body: string) => judgedCall(request('POST', '/v1.41/containers/create', { RequestBody: b64(body) }), true);
  const service = (body: string) => judgedCall(request('POST', '/v1.41/services/create', { RequestBody: b64(body) }), true);

  it('a single key in any case is the field', () => {
    expect(create('{"image":"reg.example/lower:1","USER":"0"}')).toEqual({ kind: 'container', image: 'reg.example/lower:1', user: '0' });
    expect(create('{"Image":"reg.example/a:1","U\u017fer":"0"}')).toEqual({ kind: 'container', image: 'reg.example/a:1', user: '0' });
    expect(service('{"taskTemplate":{"containerSpec":{"image":"reg.example/s:1","user":"0"}}}')).toEqual({ kind: 'service', image: 'reg.example/s:1', user: '0' });
  });

  it.each([
    // dockerd runs the last key that folds to the name: kwprobe/other:2 and user 0 in the probe
    '{"Image":"reg.example/signed:1","image":"reg.example/evil:1"}',
    '{"Image":"reg.example/a:1","User":"1000","user":"0"}',
    '{"Image":"reg.example/a:1","User":"1000","U\u017fer":"0"}',
    '{"Image":"reg.example/a:1","\u0131mage":"reg.example/evil:1"}',
  ])('two spellings of one field are refused: %s', (body) => {
    expect(() => create(body)).toThrow(/spells (Image|User) more than once/);
  });

  it('two spellings of a service field on the way to the image are refused', () => {
    expect(() => service('{"TaskTemplate":{"ContainerSpec":{"Image":"a:1"}},"taskTemplate":{"ContainerSpec":{"Image":"b:1"}}}')).toThrow(/spells TaskTemplate more than once/);
    expect(() => service('{"TaskTemplate":{"ContainerSpec":{"Image":"a:1"},"CONTAINERSPEC":{"Image":"b:1"}}}')).toThrow(/spells ContainerSpec more than once/);
  });
});

describe('AuthzPlugin: encoded spellings ask the gate; what it cannot read is denied without asking', () => {
  function plugin() {
    const asked: string[] = [];
    const events: PluginEvent[] = [];
    const broker = {
      async decideRelease(image: string): Promise<ReleaseDecision> {
        asked.push(image);
        return { id: 'rd_test', decision: 'deny', image, digest: null, checks: [{ type: 'cosign', ok: false, detail: 'no signature' }], cached: false };
      },
    } as unknown as PluginBrokerApi;
    const authz = new AuthzPlugin(broker, { gatePulls: true, failOpen: false, cacheTtlMs: 0, host: 'h', report: (e) => events.push(e), log: () => undefined });
    return { authz, asked, events };
  }

  it.each(['/v1.41/containers%2Fcreate', '/containers/creat%65', '/v1.41%2Fcontainers/create', '/v1.99/containers/create', 'http://docker/v1.41/containers/create'])('POST %s is denied by the gate', async (uri) => {
    const { authz, asked } = plugin();
    const res = await authz.request(request('POST', uri, { RequestBody: CONTAINER_BODY }));
    expect(res).toEqual({ Allow: false, Msg: 'keywarden release gate denied reg.example/app:1: cosign: no signature (decision rd_test)' });
    expect(asked).toEqual(['reg.example/app:1']);
  });

  it('services/x%2Fupdate and images%2Fcreate ask the gate too', async () => {
    const { authz, asked } = plugin();
    expect((await authz.request(request('POST', '/services/x%2Fupdate?version=1', { RequestBody: SERVICE_BODY }))).Allow).toBe(false);
    expect((await authz.request(request('POST', `/images%2Fcreate${PULL_QUERY}`, { RequestHeaders: PULL_HEADERS }))).Allow).toBe(false);
    expect(asked).toEqual(['reg.example/svc:2', 'reg.example/pulled:3']);
  });

  it.each([
    ['POST', '/v1.41/containers/create%zz', /bad percent-encoding "%zz"/],
    ['POST', '/v1.41/containers/create%4', /bad percent-encoding "%4"/],
    ['GET', '/v1.41/containers/json%', /bad percent-encoding "%"/],
    ['POST', '/v1.41/containers/create%00', /encoded control character/],
    ['GET', '/v1.41/containers/a%0Ab/json', /encoded control character/],
    ['POST', '/v1.41/containers%2Fcreate%ff', /does not decode to UTF-8/],
    ['POST', '/v1.41/containers/create\u0000', /control character/],
    ['POST', 'containers/create', /not an absolute path/],
    ['POST', ':/containers/create', /no scheme/],
    ['POST', '/v1.41/containers/create?name=a;b', /";"/],
    ['GET', '/v1.41/containers/json?all=1;2', /";"/],
    ['POST', '/v1.41/images/create?fromImage=reg.example/x%zz', /query has a bad percent-encoding/],
    ['POST', '/v1.41/images/create?fromImage=%C3%28', /query does not decode to UTF-8/],
  ])('%s %s is denied (fail closed), the gate not asked, the deny reported with the raw URI', async (method, uri, reason) => {
    const { authz, asked, events } = plugin();
    const res = await authz.request(request(method, uri, { RequestBody: CONTAINER_BODY, RequestHeaders: PULL_HEADERS }));
    expect(res.Allow).toBe(false);
    expect(res.Msg).toMatch(/^keywarden: cannot read /);
    expect(res.Msg).toMatch(reason);
    expect(res.Msg).toMatch(/denied \(fail closed\)$/);
    expect(asked).toEqual([]);
    expect(events).toEqual([expect.objectContaining({ action: 'docker.authz.request', outcome: 'deny', reason: res.Msg, details: expect.objectContaining({ uri }) })]);
  });

  it('a judged endpoint it cannot read is denied with the endpoint and the reason', async () => {
    const { authz, asked } = plugin();
    const res = await authz.request(request('POST', '/v1.41/containers%2Fcreate', { RequestBody: b64('{"Image":"a:1","image":"b:1"}') }));
    expect(res).toEqual({ Allow: false, Msg: 'keywarden: cannot judge POST /containers/create: the body spells Image more than once ("Image", "image")' });
    const pull = await authz.request(request('POST', '/images/create?fromImage=a'));
    expect(pull.Msg).toMatch(/^keywarden: cannot judge POST \/images\/create: the request may have a body/);
    expect(asked).toEqual([]);
  });
});
