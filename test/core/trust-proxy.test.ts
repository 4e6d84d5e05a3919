import { spawn } from 'node:child_process';
import crypto from 'node:crypto';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ConfigError, loadConfig } from '../../src/config.js';
import { capture } from '../support/audit-events.js';
import { startTestBroker, type TestBroker } from '../support/broker.js';
import { auth, expectProblem } from './helpers.js';

/**
 * The client address behind a proxy: X-Forwarded-For is appended to by each proxy, so only the
 * entries written by proxies the broker trusts are facts; anything to their left was written
 * by the client. The broker must take the address the last trusted proxy saw.
 * Supertest connects from loopback, which plays the trusted proxy here.
 */
const root = path.resolve(import.meta.dirname, '../..');

describe('KEYWARDEN_TRUST_PROXY configuration', () => {
  it('accepts false, a hop count, or addresses/CIDRs; false is the default', () => {
    expect(loadConfig({}).trustProxy).toBe(false);
    expect(loadConfig({ KEYWARDEN_TRUST_PROXY: 'false' }).trustProxy).toBe(false);
    expect(loadConfig({ KEYWARDEN_TRUST_PROXY: '2' }).trustProxy).toBe(2);
    expect(loadConfig({ KEYWARDEN_TRUST_PROXY: '10.0.0.0/8, 192.168.1.7,::1/128,loopback' }).trustProxy).toEqual([
      '10.0.0.0/8',
      '192.168.1.7',
      '::1/128',
      'loopback',
    ]);
  });

  it('refuses `true` (trust every hop) and malformed lists, naming the variable', () => {
    for (const value of ['true', '10.0.0.0/33', 'proxy.example.com', '1.2.3.4/8/1', '99']) {
      let error: unknown;
      try {
        loadConfig({ KEYWARDEN_TRUST_PROXY: value });
      } catch (err) {
        error = err;
      }
      expect(error, value).toBeInstanceOf(ConfigError);
      expect((error as ConfigError).problems.join('\n')).toContain('KEYWARDEN_TRUST_PROXY');
    }
  });

  it('`keywarden serve` with KEYWARDEN_TRUST_PROXY=true exits 78 and says why', async () => {
    const child = spawn(process.execPath, ['--import', 'tsx', path.join(root, 'src/cli/main.ts'), 'serve'], {
      cwd: root,
      env: { ...process.env, KEYWARDEN_TRUST_PROXY: 'true', KEYWARDEN_DATA_DIR: path.join(root, 'nonexistent-data-dir-for-config-test') },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let stderr = '';
    child.stderr!.on('data', (d) => (stderr += d));
    child.stdout!.resume();
    const code = await new Promise<number | null>((resolve) => child.on('exit', resolve));
    expect(code, stderr).toBe(78);
    expect(stderr).toMatch(/KEYWARDEN_TRUST_PROXY: `true` is no longer accepted/);
  });
});

type Variant = { name: string; trustProxy: string; chain: string; expected: string };

const VARIANTS: Variant[] = [
  { name: 'one trusted hop', trustProxy: '1', chain: '6.6.6.6, 1.2.3.4', expected: '1.2.3.4' },
  { name: 'a CIDR list naming the proxy', trustProxy: '127.0.0.0/8,::1/128', chain: '6.6.6.6, 1.2.3.4', expected: '1.2.3.4' },
  { name: 'two trusted hops', trustProxy: '2', chain: '6.6.6.6, 1.2.3.4, 10.1.2.3', expected: '1.2.3.4' },
  { name: 'a CIDR list naming both proxies', trustProxy: 'loopback,10.0.0.0/8', chain: '6.6.6.6, 1.2.3.4, 10.1.2.3', expected: '1.2.3.4' },
];

for (const v of VARIANTS) {
  describe(`behind a proxy, ${v.name} (KEYWARDEN_TRUST_PROXY=${v.trustProxy})`, () => {
    let tb: TestBroker;

    beforeAll(async () => {
      tb = await startTestBroker({
        env: { KEYWARDEN_TRUST_PROXY: v.trustProxy, KEYWARDEN_AUTH_MAX_FAILURES_PER_ADDRESS: '3', KEYWARDEN_AUTH_MAX_FAILURES_PER_CLIENT: '1000' },
      });
    });
    afterAll(async () => {
      await tb?.close();
    });

    const badLogin = (forwardedFor: string) =>
      tb.request
        .post('/v1/auth/token')
        .set('X-Forwarded-For', forwardedFor)
        .type('form')
        .send({ grant_type: 'client_credentials', client_id: `kwc_${crypto.randomBytes(6).toString('hex')}`, client_secret: 'kws_wrong' });

    it('records the address the last trusted proxy saw, not the client-chosen left-most entry', async () => {
      const { result: res, events } = await capture(tb, () =>
        tb.request.post('/v1/groups').set(auth(tb.adminKey)).set('X-Forwarded-For', v.chain).send({ name: `g-${crypto.randomBytes(3).toString('hex')}` }),
      );
      expect(res.status, res.text).toBe(201);
      expect(events.map((e) => e.action)).toContain('group.create');
      for (const e of events) expect(e.sourceIp).toBe(v.expected);
    });

    it('spoofed left-most entries do not escape the per-address auth failure limit', async () => {
      const spoofed = (i: number) => v.chain.replace('6.6.6.6', `6.6.${i}.${i}`);
      for (let i = 0; i < 3; i++) {
        const { result: res, events } = await capture(tb, () => badLogin(spoofed(i)));
        expectProblem(res, 401, 'invalid_client');
        expect(events.map((e) => `${e.action}@${e.sourceIp}`)).toEqual([`auth.failure@${v.expected}`]);
      }
      // a fresh left-most entry is still the same client address: locked out
      expectProblem(await badLogin(spoofed(99)), 429, 'rate_limited');
      // with no X-Forwarded-For at all the peer is the proxy itself, a different address
      expectProblem(await tb.request.post('/v1/auth/token').type('form').send({ grant_type: 'client_credentials', client_id: 'kwc_x', client_secret: 'kws_y' }), 401, 'invalid_client');
    });
  });
}

describe('a proxy that is not trusted cannot set the client address', () => {
  let tb: TestBroker;
  beforeAll(async () => {
    // only 10.0.0.0/8 is trusted; the test's connection comes from loopback
    tb = await startTestBroker({ env: { KEYWARDEN_TRUST_PROXY: '10.0.0.0/8' } });
  });
  afterAll(async () => {
    await tb?.close();
  });

  it('records the socket address and ignores X-Forwarded-For', async () => {
    const { result: res, events } = await capture(tb, () =>
      tb.request.post('/v1/groups').set(auth(tb.adminKey)).set('X-Forwarded-For', '6.6.6.6, 1.2.3.4').send({ name: 'g-untrusted' }),
    );
    expect(res.status, res.text).toBe(201);
    expect(events.length).toBeGreaterThan(0);
    for (const e of events) expect(e.sourceIp).toMatch(/^(::ffff:)?127\.0\.0\.1$|^::1$/);
  });
});
