import fs from 'node:fs';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import YAML from 'yaml';
import { openApiFile } from '../../src/http/ops-routes.js';
import { JSON_BODY } from '../../src/http/routes.js';
import { auth, expectProblem } from '../core/helpers.js';
import { startTestBroker, type TestBroker } from '../support/broker.js';

/**
 * A route says what it takes as its body (RouteDefinition.accepts, JSON for post/put/patch by
 * default); a body of another type is a 415 naming the expected type, before the handler runs,
 * instead of a zod complaint about a body the JSON parser silently skipped.
 */
/** Whether a media type is one of the type-is patterns a route takes (exact, or `type/*+suffix`). */
function takes(patterns: readonly string[], mediaType: string): boolean {
  return patterns.some((p) => {
    if (p === mediaType) return true;
    const wildcard = /^([a-z]+)\/\*(\+[a-z]+)$/.exec(p);
    return !!wildcard && mediaType.startsWith(`${wildcard[1]}/`) && mediaType.endsWith(wildcard[2]);
  });
}

describe('request body types', () => {
  let tb: TestBroker;
  let base: string;
  let server: http.Server;

  beforeAll(async () => {
    tb = await startTestBroker();
    server = http.createServer(tb.broker.app);
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    base = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  });

  afterAll(async () => {
    await new Promise<void>((resolve) => server?.close(() => resolve()));
    await tb?.close();
  });

  const admin = () => auth(tb.adminKey);

  it('a JSON route sent curl\'s default form encoding answers 415, naming application/json, and changes nothing', async () => {
    // what `curl -d name=ops -H "Authorization: ..." /v1/groups` sends
    const res = await tb.request.post('/v1/groups').set(admin()).type('form').send('name=ops');
    const body = expectProblem(res, 415, 'unsupported_media_type');
    expect(res.headers['content-type']).toMatch(/^application\/problem\+json/);
    expect(body.detail).toBe('the request body is application/x-www-form-urlencoded; this route takes application/json');
    expect(body.accepted).toEqual([...JSON_BODY]);
    expect(res.headers['accept-post']).toBe('application/json, application/*+json');
    expectProblem(await tb.request.get('/v1/groups/ops').set(admin()), 404, 'not_found');
    // the same request as JSON works
    expect((await tb.request.post('/v1/groups').set(admin()).send({ name: 'ops' })).status).toBe(201);
  });

  it('text/plain and a body without any Content-Type are refused alike', async () => {
    const text = await tb.request.post('/v1/groups').set(admin()).set('Content-Type', 'text/plain').send('{"name":"t1"}');
    expect(expectProblem(text, 415, 'unsupported_media_type').detail).toBe('the request body is text/plain; this route takes application/json');
    // fetch sends a Uint8Array body with no Content-Type at all
    const bare = await fetch(`${base}/v1/groups`, { method: 'POST', headers: admin(), body: new TextEncoder().encode('{"name":"t2"}') });
    expect(bare.headers.get('content-type')).toMatch(/^application\/problem\+json/);
    const problem = (await bare.json()) as Record<string, unknown>;
    expect(bare.status).toBe(415);
    expect(problem).toMatchObject({ code: 'unsupported_media_type', detail: 'the request body has no Content-Type; this route takes application/json' });
    expectProblem(await tb.request.get('/v1/groups/t1').set(admin()), 404);
    expectProblem(await tb.request.get('/v1/groups/t2').set(admin()), 404);
  });

  it('PATCH says Accept-Patch; JSON with a charset and +json types are JSON', async () => {
    await tb.client('patched');
    const refused = await tb.request.patch('/v1/clients/patched').set(admin()).type('form').send('description=x');
    expectProblem(refused, 415, 'unsupported_media_type');
    expect(refused.headers['accept-patch']).toBe('application/json, application/*+json');
    expect(refused.headers['accept-post']).toBeUndefined();
    const charset = await tb.request.patch('/v1/clients/patched').set(admin()).set('Content-Type', 'application/json; charset=utf-8').send(JSON.stringify({ description: 'one' }));
    expect(charset.status, charset.text).toBe(200);
    const mergePatch = await tb.request.patch('/v1/clients/patched').set(admin()).set('Content-Type', 'application/merge-patch+json').send(JSON.stringify({ description: 'two' }));
    expect(mergePatch.status, mergePatch.text).toBe(200);
    expect(mergePatch.body.description).toBe('two');
  });

  it('a request without a body passes whatever its type: routes whose body is optional keep working', async () => {
    await tb.client('rotated');
    // `curl -X POST` (no body, no type) and `curl -d ''` (form type, Content-Length: 0)
    const noBody = await fetch(`${base}/v1/clients/rotated/secret`, { method: 'POST', headers: admin() });
    expect(noBody.status, await noBody.clone().text()).toBe(200);
    await noBody.text();
    const emptyForm = await fetch(`${base}/v1/clients/rotated/secret`, { method: 'POST', headers: { ...admin(), 'Content-Type': 'application/x-www-form-urlencoded' }, body: '' });
    expect(emptyForm.status, await emptyForm.clone().text()).toBe(200);
    await emptyForm.text();
    // a route that needs a body says so in words
    const missing = await fetch(`${base}/v1/groups`, { method: 'POST', headers: admin() });
    expect(missing.status).toBe(400);
    expect(((await missing.json()) as { detail: string }).detail).toBe('invalid body: the body is required');
  });

  it('who may not call the route learns nothing about its body: 401 and 403 come first', async () => {
    expectProblem(await tb.request.post('/v1/groups').type('form').send('name=x'), 401, 'unauthenticated');
    const auditor = await tb.apiKey('auditor');
    expectProblem(await tb.request.post('/v1/groups').set(auth(auditor)).type('form').send('name=x'), 403, 'forbidden');
  });

  it('the token endpoint takes RFC 6749 form parameters and JSON, and refuses other types', async () => {
    const c = await tb.client('tokens');
    const form = await tb.request.post('/v1/auth/token').type('form').send({ grant_type: 'client_credentials', client_id: c.clientId, client_secret: c.clientSecret });
    expect(form.status, form.text).toBe(200);
    const json = await tb.request.post('/v1/auth/token').send({ grant_type: 'client_credentials', client_id: c.clientId, client_secret: c.clientSecret });
    expect(json.status, json.text).toBe(200);
    const text = await tb.request.post('/v1/auth/token').set('Content-Type', 'text/plain').send(`grant_type=client_credentials&client_id=${c.clientId}`);
    const problem = expectProblem(text, 415, 'unsupported_media_type');
    expect(problem.detail).toBe('the request body is text/plain; this route takes application/x-www-form-urlencoded or application/json');
  });

  it('the Vault-compatible API reads any body as JSON, as Vault does (curl -d sends form type)', async () => {
    const write = await tb.request.post('/v1/secret/data/curl-written').set('X-Vault-Token', tb.adminKey).type('form').send('{"data":{"k":"v"}}');
    expect(write.status, write.text).toBe(200);
    const read = await tb.request.get('/v1/secrets/curl-written/content').set(admin());
    expect(read.status, read.text).toBe(200);
    expect(JSON.parse(Buffer.from(read.body.content, 'base64').toString('utf8'))).toEqual({ k: 'v' });
  });

  it('every body route declares its types, and they agree with the request bodies openapi.yaml documents', () => {
    const spec = YAML.parse(fs.readFileSync(openApiFile(), 'utf8'));
    const wrong: string[] = [];
    let checked = 0;
    for (const route of tb.broker.routes) {
      const key = `${route.method.toUpperCase()} ${route.path}`;
      if (!['post', 'put', 'patch'].includes(route.method)) {
        if (route.accepts !== undefined) wrong.push(`${key}: a ${route.method} route with body types`);
        continue;
      }
      if (route.accepts === undefined) {
        wrong.push(`${key}: no body types`);
        continue;
      }
      const documented = Object.keys(spec.paths?.[route.path]?.[route.method]?.requestBody?.content ?? {});
      if (route.accepts === 'any') {
        if (!(spec.paths?.[route.path]?.[route.method]?.tags ?? []).includes('vault')) wrong.push(`${key}: takes any body type, but is not a Vault route`);
        continue;
      }
      checked++;
      for (const mediaType of documented) {
        if (!takes(route.accepts, mediaType)) wrong.push(`${key}: openapi.yaml documents a ${mediaType} body the route refuses (it takes ${route.accepts.join(', ')})`);
      }
    }
    expect(wrong, wrong.join('\n')).toEqual([]);
    expect(checked).toBeGreaterThan(30);
  });
});
