import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { auth, expectProblem, markSensitive } from '../core/helpers.js';
import { startTestBroker, type TestBroker } from '../support/broker.js';

type Creds = { clientId: string; clientSecret: string };

function loginWith(tb: TestBroker) {
  return (clientId: string, clientSecret: string) =>
    tb.request.post('/v1/auth/token').type('form').send({ grant_type: 'client_credentials', client_id: clientId, client_secret: clientSecret });
}

async function newClient(tb: TestBroker, name: string): Promise<Creds> {
  const res = await tb.request.post('/v1/clients').set(auth(tb.adminKey)).send({ name });
  expect(res.status, res.text).toBe(201);
  markSensitive(res.body.clientSecret);
  return res.body;
}

function expectRateLimited(res: any, maxRetryAfter: number): number {
  const body = expectProblem(res, 429, 'rate_limited');
  const retryAfter = Number(res.headers['retry-after']);
  expect(Number.isInteger(retryAfter)).toBe(true);
  expect(retryAfter).toBeGreaterThanOrEqual(1);
  expect(retryAfter).toBeLessThanOrEqual(maxRetryAfter);
  expect(body.retryAfter).toBe(retryAfter);
  return retryAfter;
}

describe('token endpoint rate limit per client id', () => {
  let tb: TestBroker;
  let now = Date.now();
  const clock = () => now;
  let login: ReturnType<typeof loginWith>;

  beforeAll(async () => {
    tb = await startTestBroker({
      clock,
      env: { KEYWARDEN_AUTH_MAX_FAILURES_PER_CLIENT: '3', KEYWARDEN_AUTH_MAX_FAILURES_PER_ADDRESS: '1000', KEYWARDEN_AUTH_FAILURE_WINDOW: '60' },
    });
    login = loginWith(tb);
  });
  afterAll(async () => {
    await tb?.close();
  });

  it('3 wrong secrets → then 429 with Retry-After, even for the right secret; other clients unaffected; window expiry restores', async () => {
    const victim = await newClient(tb, 'rl-victim');
    const bystander = await newClient(tb, 'rl-bystander');
    for (let i = 0; i < 3; i++) expectProblem(await login(victim.clientId, `${victim.clientSecret}-wrong`), 401, 'invalid_client');
    expectRateLimited(await login(victim.clientId, `${victim.clientSecret}-wrong`), 60);
    // locked: even the correct secret is refused, so guessing cannot continue
    now += 30_000;
    const retry = expectRateLimited(await login(victim.clientId, victim.clientSecret), 60);
    expect(retry).toBeLessThanOrEqual(30);
    // the same client id via HTTP Basic is the same bucket
    const basic = Buffer.from(`${victim.clientId}:${victim.clientSecret}`).toString('base64');
    expectRateLimited(await tb.request.post('/v1/auth/token').set('Authorization', `Basic ${basic}`).type('form').send({ grant_type: 'client_credentials' }), 60);

    // a successful login of another client is not blocked by the first client's failures
    const ok = await login(bystander.clientId, bystander.clientSecret);
    expect(ok.status, ok.text).toBe(200);

    // after the window it works again
    now += 30_001;
    const after = await login(victim.clientId, victim.clientSecret);
    expect(after.status, after.text).toBe(200);
    expect((await tb.request.get('/v1/client/secrets').set(auth(after.body.access_token))).status).toBe(200);
  });

  it('a success resets the client counter; failures must be consecutive within the window', async () => {
    const c = await newClient(tb, 'rl-reset');
    for (let i = 0; i < 2; i++) expectProblem(await login(c.clientId, 'kws_wrong-secret'), 401, 'invalid_client');
    expect((await login(c.clientId, c.clientSecret)).status).toBe(200);
    for (let i = 0; i < 2; i++) expectProblem(await login(c.clientId, 'kws_wrong-secret'), 401, 'invalid_client');
    expect((await login(c.clientId, c.clientSecret)).status).toBe(200);
    // failures spread over more than one window never add up to a lockout
    for (let i = 0; i < 2; i++) expectProblem(await login(c.clientId, 'kws_wrong-secret'), 401, 'invalid_client');
    now += 60_001;
    for (let i = 0; i < 2; i++) expectProblem(await login(c.clientId, 'kws_wrong-secret'), 401, 'invalid_client');
    expect((await login(c.clientId, c.clientSecret)).status).toBe(200);
  });

  it('unknown client ids are limited too', async () => {
    for (let i = 0; i < 3; i++) expectProblem(await login('kwc_does-not-exist', 'kws_guess'), 401, 'invalid_client');
    expectRateLimited(await login('kwc_does-not-exist', 'kws_guess'), 60);
  });

  it('a burst of concurrent wrong guesses still ends in a lockout', async () => {
    const c = await newClient(tb, 'rl-burst');
    const burst = await Promise.all(Array.from({ length: 6 }, () => login(c.clientId, 'kws_wrong-guess')));
    // every response is either a counted failure or already throttled; never a success
    for (const r of burst) expect([401, 429]).toContain(r.status);
    expectRateLimited(await login(c.clientId, c.clientSecret), 60);
    now += 60_001;
  });
});

describe('token endpoint rate limit per source address', () => {
  let tb: TestBroker;
  let now = Date.now();
  const clock = () => now;
  let login: ReturnType<typeof loginWith>;

  beforeAll(async () => {
    tb = await startTestBroker({
      clock,
      env: { KEYWARDEN_AUTH_MAX_FAILURES_PER_CLIENT: '100', KEYWARDEN_AUTH_MAX_FAILURES_PER_ADDRESS: '4', KEYWARDEN_AUTH_FAILURE_WINDOW: '120' },
    });
    login = loginWith(tb);
  });
  afterAll(async () => {
    await tb?.close();
  });

  it('failures across different client ids from one address → 429 for everyone from that address until the window ends', async () => {
    const valid = await newClient(tb, 'rl-addr-valid');
    // all supertest requests come from 127.0.0.1
    for (let i = 0; i < 4; i++) expectProblem(await login(`kwc_spray-${i}`, 'kws_spray'), 401, 'invalid_client');
    expectRateLimited(await login('kwc_spray-next', 'kws_spray'), 120);
    // the address is throttled, so even a valid client from it is refused
    expectRateLimited(await login(valid.clientId, valid.clientSecret), 120);
    // and so is every grant type from that address
    expectRateLimited(await tb.request.post('/v1/auth/token').type('form').send({ grant_type: 'urn:keywarden:bootstrap', bootstrap_token: 'kwb_x' }), 120);
    // throttled attempts do not extend the window
    now += 120_001;
    const ok = await login(valid.clientId, valid.clientSecret);
    expect(ok.status, ok.text).toBe(200);
  });

  it('unknown bootstrap tokens count against the address', async () => {
    now += 120_001;
    for (let i = 0; i < 4; i++) {
      expectProblem(await tb.request.post('/v1/auth/token').type('form').send({ grant_type: 'urn:keywarden:bootstrap', bootstrap_token: `kwb_guess-${i}` }), 401, 'invalid_bootstrap_token');
    }
    expectRateLimited(await tb.request.post('/v1/auth/token').type('form').send({ grant_type: 'urn:keywarden:bootstrap', bootstrap_token: 'kwb_guess-x' }), 120);
    now += 120_001;
  });

  it('malformed requests (400) are not counted as failures', async () => {
    now += 120_001;
    for (let i = 0; i < 6; i++) expectProblem(await login('kwc_x', ''), 400, 'invalid_request');
    const valid = await newClient(tb, 'rl-addr-after-400');
    expect((await login(valid.clientId, valid.clientSecret)).status).toBe(200);
  });
});

describe('token endpoint rate limit: the per-client bucket is per source address', () => {
  let tb: TestBroker;

  beforeAll(async () => {
    // behind a trusted proxy the source address comes from X-Forwarded-For
    tb = await startTestBroker({
      env: { KEYWARDEN_TRUST_PROXY: '1', KEYWARDEN_AUTH_MAX_FAILURES_PER_CLIENT: '3', KEYWARDEN_AUTH_MAX_FAILURES_PER_ADDRESS: '1000' },
    });
  });
  afterAll(async () => {
    await tb?.close();
  });

  it('failures from one address lock that address out, while the workload logs in from its own', async () => {
    const victim = await newClient(tb, 'rl-remote-victim');
    const from = (ip: string, secret: string) =>
      tb.request
        .post('/v1/auth/token')
        .set('X-Forwarded-For', ip)
        .type('form')
        .send({ grant_type: 'client_credentials', client_id: victim.clientId, client_secret: secret });
    for (let i = 0; i < 3; i++) expectProblem(await from('203.0.113.7', 'kws_wrong'), 401, 'invalid_client');
    expectRateLimited(await from('203.0.113.7', victim.clientSecret), 60);
    const legit = await from('198.51.100.20', victim.clientSecret);
    expect(legit.status, legit.text).toBe(200);
  });
});
