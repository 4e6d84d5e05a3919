import crypto from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { auth, expectProblem, markSensitive } from '../core/helpers.js';
import { cachesCaughtUp } from '../support/cache-bound.js';
import { capture } from '../support/audit-events.js';
import { startTestBroker, type TestBroker } from '../support/broker.js';
import { jwtPayload } from '../identity-workload/helpers.js';

/**
 * Issue 28, finding 2: renew-self mints a new token (new jti), and revoking the token it came
 * from must end it too. Renewals form a chain that is revoked as one, on every instance on the
 * database: by bootstrap reuse detection, by POST /v1/tokens/revoke of any jti of the chain, and
 * by revoke-self.
 */
describe('a renewal chain is revoked as one, on every instance', () => {
  let a: TestBroker;
  let b: TestBroker;
  let writer: Record<string, string>;
  let admin: Record<string, string>;
  let creds: { clientId: string; clientSecret: string };

  beforeAll(async () => {
    const rootKey = crypto.randomBytes(32).toString('base64');
    a = await startTestBroker({ rootKey });
    b = await startTestBroker({ db: a.db, rootKey, keepDatabase: true });
    writer = auth(await a.apiKey('writer'));
    admin = auth(a.adminKey);
    markSensitive('chain-secret-value');
    expect((await a.request.post('/v1/groups').set(writer).send({ name: 'payments' })).status).toBe(201);
    expect((await a.request.post('/v1/secrets').set(writer).send({ name: 'app.db', value: 'chain-secret-value', groups: ['payments'] })).status).toBe(201);
    const c = await a.client('billing', ['payments']);
    markSensitive(c.clientSecret);
    creds = { clientId: c.clientId, clientSecret: c.clientSecret };
  });
  afterAll(async () => {
    await b?.close();
    await a?.close();
  });

  const vt = (token: string) => ({ 'X-Vault-Token': token });
  const login = async (tb: TestBroker) => {
    const res = await tb.request.post('/v1/auth/approle/login').send({ role_id: creds.clientId, secret_id: creds.clientSecret });
    expect(res.status, res.text).toBe(200);
    return res.body.auth.client_token as string;
  };
  const renew = async (tb: TestBroker, token: string) => {
    const res = await tb.request.post('/v1/auth/token/renew-self').set(vt(token)).send({});
    expect(res.status, res.text).toBe(200);
    const renewed = res.body.auth.client_token as string;
    expect(jwtPayload(renewed).jti).not.toBe(jwtPayload(token).jti);
    return renewed;
  };
  const wrap = async () => {
    const res = await a.request.post('/v1/clients/billing/bootstrap-tokens').set(writer).send({});
    expect(res.status, res.text).toBe(201);
    markSensitive(res.body.token);
    return res.body.token as string;
  };

  /** The token reads the secret on KV and on the native API, on both instances. */
  async function expectWorks(token: string) {
    for (const tb of [a, b]) {
      const kv = await tb.request.get('/v1/secret/data/app/db').set(vt(token));
      expect(kv.status, kv.text).toBe(200);
      // a secret made on the native API reads on KV as its content, base64
      expect(kv.body.data.data).toEqual({ value: Buffer.from('chain-secret-value').toString('base64') });
      const native = await tb.request.get('/v1/client/secrets/app.db').set(auth(token));
      expect(native.status, native.text).toBe(200);
    }
  }

  /** The token is refused on KV (Vault's 403) and on the native API (401 token_revoked), on both instances. */
  async function expectRevoked(token: string) {
    for (const tb of [a, b]) {
      // the instance that committed the revocation is current at once, the other within the cache bound
      await cachesCaughtUp(tb);
      const kv = await tb.request.get('/v1/secret/data/app/db').set(vt(token));
      expect(kv.status, kv.text).toBe(403);
      expect(kv.body.errors[0]).toBe('permission denied');
      expectProblem(await tb.request.get('/v1/client/secrets/app.db').set(auth(token)), 401, 'token_revoked');
      // and it renews nothing
      expect((await tb.request.post('/v1/auth/token/renew-self').set(vt(token)).send({})).status).toBe(403);
    }
  }

  it('a thief unwraps first and renews; when the workload unwraps, reuse detection ends the renewed tokens too', async () => {
    const wrapping = await wrap();
    const stolen = await a.request.post('/v1/sys/wrapping/unwrap').set(vt(wrapping));
    expect(stolen.status, stolen.text).toBe(200);
    const first = stolen.body.auth.client_token as string;
    // renewed on the other instance, and renewed again: the chain runs across instances
    const renewed = await renew(b, first);
    const renewedAgain = await renew(a, renewed);
    await expectWorks(renewedAgain);

    // the real workload unwraps: refused, the token flagged compromised, what it issued revoked
    const { result: real, events } = await capture(a, () => a.request.post('/v1/sys/wrapping/unwrap').set(vt(wrapping)));
    expect(real.status).toBe(400);
    expect(events.find((e) => e.action === 'auth.bootstrap.reuse')?.details).toMatchObject({ alert: true, revokedJti: jwtPayload(first).jti });
    for (const t of [first, renewed, renewedAgain]) await expectRevoked(t);
  });

  it('POST /v1/tokens/revoke of the first jti ends every token renewed from it, and nothing else', async () => {
    const first = await login(a);
    const renewed = await renew(b, first);
    const renewedAgain = await renew(b, renewed);
    const otherLogin = await login(b);
    await expectWorks(renewedAgain);
    const res = await a.request.post('/v1/tokens/revoke').set(admin).send({ jti: jwtPayload(first).jti });
    expect(res.status, res.text).toBe(200);
    for (const t of [first, renewed, renewedAgain]) await expectRevoked(t);
    // another login of the same client is another chain
    await expectWorks(otherLogin);
  });

  it('POST /v1/tokens/revoke of a renewed jti ends the whole chain: the token it came from and the ones renewed from it', async () => {
    const first = await login(b);
    const renewed = await renew(a, first);
    const renewedAgain = await renew(b, renewed);
    const otherChain = await renew(a, await login(a));
    await expectWorks(first);
    const { result: res, events } = await capture(a, () => a.request.post('/v1/tokens/revoke').set(admin).send({ jti: jwtPayload(renewed).jti }));
    expect(res.status, res.text).toBe(200);
    expect(res.body).toEqual({ jti: jwtPayload(renewed).jti, revoked: true });
    expect(events.find((e) => e.action === 'token.revoke')?.details).toMatchObject({ chain: jwtPayload(first).jti });
    for (const t of [first, renewed, renewedAgain]) await expectRevoked(t);
    await expectWorks(otherChain);
  });

  it('revoke-self with a renewed token ends the chain; with the first token, the tokens renewed from it', async () => {
    const first = await login(a);
    const renewed = await renew(a, first);
    expect((await b.request.post('/v1/auth/token/revoke-self').set(vt(renewed))).status).toBe(204);
    for (const t of [first, renewed]) await expectRevoked(t);

    const second = await login(b);
    const secondRenewed = await renew(b, second);
    expect((await a.request.post('/v1/auth/token/revoke-self').set(vt(second))).status).toBe(204);
    for (const t of [second, secondRenewed]) await expectRevoked(t);
  });

  it('a renewal racing the revocation of its token yields a token that is refused', async () => {
    for (let i = 0; i < 5; i++) {
      const first = await login(a);
      const renewed = await renew(b, first);
      const [renewal, revocation] = await Promise.all([
        b.request.post('/v1/auth/token/renew-self').set(vt(renewed)).send({}),
        a.request.post('/v1/tokens/revoke').set(admin).send({ jti: jwtPayload(first).jti }),
      ]);
      expect(revocation.status, revocation.text).toBe(200);
      // the renewal either lost (403) or won with a token of the revoked chain
      if (renewal.status === 200) await expectRevoked(renewal.body.auth.client_token);
      else expect(renewal.status, renewal.text).toBe(403);
      await expectRevoked(renewed);
    }
  });

  it('tokens from before renewal chains (no chain claim) keep working, renew, and are revoked with what they were renewed into', async () => {
    const current = jwtPayload(await login(a));
    // a renewed token as the broker signed them before chains: `o` but no `c`
    const legacy = (
      await a.broker.services.tokens.sign(
        { kw: { ...current.kw, o: current.iat } },
        { audience: a.broker.services.tokens.accessAudience, subject: current.sub, ttlSeconds: 600, typ: 'at+jwt' },
      )
    ).token;
    expect(jwtPayload(legacy).kw.c).toBeUndefined();
    await expectWorks(legacy);
    const renewed = await renew(b, legacy);
    expect(jwtPayload(renewed).kw.c).toBe(jwtPayload(legacy).jti);
    await expectWorks(renewed);
    expect((await a.request.post('/v1/tokens/revoke').set(admin).send({ jti: jwtPayload(legacy).jti })).status).toBe(200);
    for (const t of [legacy, renewed]) await expectRevoked(t);
  });
});
