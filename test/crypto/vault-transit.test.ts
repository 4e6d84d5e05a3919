import crypto from 'node:crypto';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createServices } from '../../src/broker.js';
import { loadConfig } from '../../src/config.js';
import { createKeyProvider } from '../../src/crypto/create-key-provider.js';
import { KeyProviderError } from '../../src/crypto/key-provider.js';
import { rewrapAll } from '../../src/crypto/root-key-rotation.js';
import { VaultTransitKeyProvider } from '../../src/crypto/vault-transit-key-provider.js';
import { freshDatabase, silentLogger, startTestBroker, type TestBroker } from '../support/broker.js';
import { auth, expectProblem, markSensitive, unb64 } from '../core/helpers.js';

/** Just enough of Vault's transit engine: encrypt, decrypt, key read, rotate, token check. */
class FakeVault {
  token = crypto.randomBytes(12).toString('hex');
  readonly keys = new Map<string, Buffer[]>();
  readonly requests: Array<{ method: string; url: string; token?: string }> = [];
  /** When set, requests hang (no response) — a Vault that accepts connections but never answers. */
  hang = false;
  private server!: http.Server;
  url = '';

  async start(port = 0): Promise<void> {
    this.server = http.createServer((req, res) => this.handle(req, res));
    await new Promise<void>((resolve) => this.server.listen(port, '127.0.0.1', resolve));
    this.url = `http://127.0.0.1:${(this.server.address() as AddressInfo).port}`;
  }
  get port(): number {
    return Number(new URL(this.url).port);
  }
  async stop(): Promise<void> {
    this.server.closeAllConnections();
    await new Promise<void>((resolve) => this.server.close(() => resolve()));
  }

  private send(res: http.ServerResponse, status: number, body: unknown) {
    res.writeHead(status, { 'Content-Type': 'application/json' }).end(JSON.stringify(body));
  }

  private handle(req: http.IncomingMessage, res: http.ServerResponse) {
    let raw = '';
    req.on('data', (c) => (raw += c));
    req.on('end', () => {
      const token = req.headers['x-vault-token'] as string | undefined;
      this.requests.push({ method: req.method!, url: req.url!, token });
      if (this.hang) return;
      if (token !== this.token) return this.send(res, 403, { errors: ['permission denied'] });
      const m = /^\/v1\/transit\/(encrypt|decrypt|keys)\/([A-Za-z0-9_-]+)(\/rotate)?$/.exec(req.url!);
      if (!m) return this.send(res, 404, { errors: ['no handler for route'] });
      const [, op, name, rotate] = m;
      const body = raw ? JSON.parse(raw) : {};
      if (!this.keys.has(name)) this.keys.set(name, [crypto.randomBytes(32)]);
      const versions = this.keys.get(name)!;
      if (op === 'keys' && rotate && req.method === 'POST') {
        versions.push(crypto.randomBytes(32));
        return this.send(res, 200, { data: { latest_version: versions.length } });
      }
      if (op === 'keys' && req.method === 'GET') return this.send(res, 200, { data: { name, latest_version: versions.length, type: 'aes256-gcm96' } });
      if (op === 'encrypt' && req.method === 'POST') {
        const v = versions.length;
        const iv = crypto.randomBytes(12);
        const c = crypto.createCipheriv('aes-256-gcm', versions[v - 1], iv);
        const ct = Buffer.concat([iv, c.update(Buffer.from(body.plaintext, 'base64')), c.final(), c.getAuthTag()]);
        return this.send(res, 200, { data: { ciphertext: `vault:v${v}:${ct.toString('base64')}`, key_version: v } });
      }
      if (op === 'decrypt' && req.method === 'POST') {
        const cm = /^vault:v(\d+):(.+)$/.exec(body.ciphertext ?? '');
        const key = cm ? versions[Number(cm[1]) - 1] : undefined;
        if (!cm || !key) return this.send(res, 400, { errors: ['invalid ciphertext'] });
        try {
          const buf = Buffer.from(cm[2], 'base64');
          const d = crypto.createDecipheriv('aes-256-gcm', key, buf.subarray(0, 12));
          d.setAuthTag(buf.subarray(buf.length - 16));
          const pt = Buffer.concat([d.update(buf.subarray(12, buf.length - 16)), d.final()]);
          return this.send(res, 200, { data: { plaintext: pt.toString('base64') } });
        } catch {
          return this.send(res, 400, { errors: ['cipher: message authentication failed'] });
        }
      }
      return this.send(res, 405, { errors: ['unsupported operation'] });
    });
  }
}

function vaultProvider(vault: FakeVault, token = vault.token, timeoutMs?: number) {
  return new VaultTransitKeyProvider({ address: vault.url, token, mount: 'transit', keyName: 'keywarden', timeoutMs });
}

describe('vault-transit key provider', () => {
  const vault = new FakeVault();
  let tb: TestBroker;
  let w: Record<string, string>;

  beforeAll(async () => {
    await vault.start();
    // built as the broker builds it from configuration (with the unwrap cache)
    const config = loadConfig({ KEYWARDEN_KEY_PROVIDER: 'vault-transit', VAULT_ADDR: vault.url, VAULT_TOKEN: vault.token, KEYWARDEN_DATA_DIR: '/tmp/unused' });
    tb = await startTestBroker({ keyProvider: createKeyProvider(config.keyProvider) });
    w = auth(await tb.apiKey('writer'));
  });
  afterAll(async () => {
    await tb?.close();
    await vault.stop().catch(() => undefined);
  });

  it('a broker on Vault stores and serves secrets; data keys are transit ciphertexts', async () => {
    markSensitive('vault-backed-value');
    await tb.request.post('/v1/groups').set(w).send({ name: 'vg' });
    const res = await tb.request.post('/v1/secrets').set(w).send({ name: 'v.secret', value: 'vault-backed-value', groups: ['vg'] });
    expect(res.status, res.text).toBe(201);
    const c = await tb.request.get('/v1/secrets/v.secret/content').set(w);
    expect(unb64(c.body.content)).toBe('vault-backed-value');
    const client = await tb.client('vault-client', ['vg']);
    const viaClient = await tb.request.get('/v1/client/secrets/v.secret').set(auth(client.token));
    expect(unb64(viaClient.body.content)).toBe('vault-backed-value');
    const row = await tb.broker.services.db('secret_versions').first();
    expect(Buffer.from(row.wrapped_key).toString('utf8')).toMatch(/^vault:v1:/);
    expect(row.root_key_version).toBe('1');
    const transit = vault.requests.filter((r) => r.url.startsWith('/v1/transit/'));
    expect(transit.length).toBeGreaterThan(0);
    expect(transit.every((r) => r.token === vault.token)).toBe(true);
    expect(transit.some((r) => r.url === '/v1/transit/encrypt/keywarden')).toBe(true);
    expect((await tb.request.get('/readyz')).status).toBe(200);
  });

  it('rotation bumps the version; new data keys use it; old ones still open; rewrap moves them', async () => {
    const provider = tb.broker.services.keyProvider;
    expect(await provider.currentVersion()).toBe('1');
    expect(await provider.rotate()).toBe('2');
    expect(vault.requests.some((r) => r.method === 'POST' && r.url === '/v1/transit/keys/keywarden/rotate')).toBe(true);
    markSensitive('vault-value-after-rotation');
    const v2 = await tb.request.post('/v1/secrets/v.secret/versions').set(w).send({ value: 'vault-value-after-rotation' });
    expect(v2.status).toBe(201);
    const rows = await tb.broker.services.db('secret_versions').orderBy('version');
    expect(rows.map((r: any) => r.root_key_version)).toEqual(['1', '2']);
    expect(Buffer.from(rows[1].wrapped_key).toString()).toMatch(/^vault:v2:/);
    expect(unb64((await tb.request.get('/v1/secrets/v.secret/content?version=1').set(w)).body.content)).toBe('vault-backed-value');

    const result = await rewrapAll(tb.broker.services.database, provider);
    expect(result.targetVersion).toBe('2');
    const after = await tb.broker.services.db('secret_versions').select('root_key_version', 'wrapped_key');
    expect(after.every((r: any) => r.root_key_version === '2' && Buffer.from(r.wrapped_key).toString().startsWith('vault:v2:'))).toBe(true);
    expect(unb64((await tb.request.get('/v1/secrets/v.secret/content?version=1').set(w)).body.content)).toBe('vault-backed-value');
  });

  it('a wrong token fails clearly: provider errors name the HTTP status, the broker will not start', async () => {
    const bad = vaultProvider(vault, 'not-the-token');
    const err = await bad.wrap(crypto.randomBytes(32)).catch((e) => e);
    expect(err).toBeInstanceOf(KeyProviderError);
    expect(err.message).toMatch(/HTTP 403/);
    expect(err.message).toMatch(/permission denied/);
    await expect(bad.check()).rejects.toThrow(KeyProviderError);

    const db = freshDatabase();
    const handle = await db.open();
    try {
      const config = loadConfig({ KEYWARDEN_DATABASE_URL: db.url, KEYWARDEN_DATA_DIR: '/tmp/unused', KEYWARDEN_LOG_LEVEL: 'silent' });
      await expect(createServices(config, { db: handle, keyProvider: bad, logger: silentLogger })).rejects.toThrow(/HTTP 403/);
    } finally {
      await handle.close();
      await db.drop();
    }
  });

  it('a token revoked while running: writes fail with a 503 problem, never a crash', async () => {
    const good = vault.token;
    vault.token = 'rotated-away';
    try {
      markSensitive('value-while-vault-refuses');
      const res = await tb.request.post('/v1/secrets').set(w).send({ name: 'v.refused', value: 'value-while-vault-refuses' });
      expectProblem(res, 503, 'key_provider_unavailable');
      expect((await tb.request.get('/readyz')).status).toBe(503);
    } finally {
      vault.token = good;
    }
    expectProblem(await tb.request.get('/v1/secrets/v.refused').set(w), 404, 'not_found');
    expect((await tb.request.get('/readyz')).status).toBe(200);
  });

  it('a hung Vault makes /readyz fail within the provider timeout instead of hanging', async () => {
    const slow = vaultProvider(vault, vault.token, 300);
    vault.hang = true;
    try {
      const started = Date.now();
      await expect(slow.check()).rejects.toThrow(KeyProviderError);
      expect(Date.now() - started).toBeLessThan(3000);
    } finally {
      vault.hang = false;
    }
  });

  it('Vault down → /readyz 503 with the key provider named; back up → 200', async () => {
    const port = vault.port;
    await vault.stop();
    const res = await tb.request.get('/readyz');
    expect(res.status).toBe(503);
    expect(res.body).toMatchObject({ status: 'not ready', checks: { database: 'ok', keyProvider: 'unavailable' } });
    await vault.start(port);
    expect((await tb.request.get('/readyz')).status).toBe(200);
  });
});
