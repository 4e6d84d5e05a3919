import { execFile, spawn } from 'node:child_process';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { listen, type RunningServer } from '../../src/http/server.js';
import { auth, markSensitive, remaining } from '../core/helpers.js';
import { startTestBroker, type TestBroker } from '../support/broker.js';
import { hvacAvailable, SYSTEM_PYTHON } from '../support/hvac.js';

const run = promisify(execFile);
const here = path.dirname(fileURLToPath(import.meta.url));
const hvac = hvacAvailable();

/**
 * The real Vault clients against a listening broker, unchanged: node-vault (npm) and hvac
 * (Debian's python3-hvac). Each runs its script (test/vault/clients/, the README's snippets) in
 * a process of its own with VAULT_ADDR pointing here, and reports what every call returned or
 * raised; this compares that with what the library promises its users.
 */
describe('Vault clients against Keywarden: AppRole, token self-service, unwrap', () => {
  let tb: TestBroker;
  let server: RunningServer;
  let writer: Record<string, string>;
  let role: { clientId: string; clientSecret: string };

  beforeAll(async () => {
    tb = await startTestBroker({ env: { KEYWARDEN_ACCESS_TOKEN_TTL: '900', KEYWARDEN_ACCESS_TOKEN_MAX_TTL: '3600' } });
    writer = auth(await tb.apiKey('writer'));
    await tb.request.post('/v1/groups').set(writer).send({ name: 'payments' });
    const res = await tb.request.post('/v1/clients').set(writer).send({ name: 'billing', groups: ['payments'] });
    expect(res.status).toBe(201);
    role = { clientId: res.body.clientId, clientSecret: res.body.clientSecret };
    markSensitive(role.clientSecret);
    server = await listen(tb.broker.app, { listen: { host: '127.0.0.1', port: 0 }, tls: undefined });
  });
  afterAll(async () => {
    await server?.close();
    await tb?.close();
  });

  async function wrappingToken(): Promise<{ token: string; accessor: string }> {
    const res = await tb.request.post('/v1/clients/billing/bootstrap-tokens').set(writer).send({});
    expect(res.status).toBe(201);
    markSensitive(res.body.token);
    return res.body;
  }

  async function runClient(command: string, script: string, wrapping: string): Promise<any> {
    const { stdout } = await run(command, [path.join(here, 'clients', script)], {
      env: { PATH: process.env.PATH ?? '/usr/bin:/bin', VAULT_ADDR: server.url, ROLE_ID: role.clientId, SECRET_ID: role.clientSecret, WRAPPING_TOKEN: wrapping },
      timeout: 60_000,
    });
    return JSON.parse(stdout);
  }

  async function compromised(accessor: string): Promise<boolean> {
    const listed = await tb.request.get('/v1/clients/billing/bootstrap-tokens').set(writer);
    return listed.body.items.find((i: { accessor: string }) => i.accessor === accessor)?.compromised;
  }

  async function replayAlerts(accessor: string): Promise<number> {
    const rows = await tb.broker.services.db('audit_events').where({ action: 'auth.bootstrap.reuse' });
    return rows.filter((r: { details: string | null }) => String(r.details).includes(accessor)).length;
  }

  it('node-vault: login adopts the token, lookup-self, renew-self adopts the new one, unwrap once then ApiResponseError, revoke-self', async () => {
    const wrap = await wrappingToken();
    const r = await runClient(process.execPath, 'node-vault-auth.mjs', wrap.token);
    expect(r.login).toMatchObject({ policies: ['payments'], renewable: true, lease_duration: 900, metadata: { role_name: 'billing' } });
    expect(r.tokenAdopted).toBe(true);
    // ttl is what remains, as in Vault: a lookup in the second after the login reads one less
    expect(r.lookup).toMatchObject({ display_name: 'approle-billing', policies: ['payments'], ttl: remaining(900), renewable: true });
    expect(r.renew.auth.lease_duration).toBe(1800);
    expect(r.renewAdopted).toBe(true);
    expect(r.renewedLookupTtl).toEqual(remaining(1800));
    expect(r.unwrap).toMatchObject({ metadata: { role_name: 'billing' }, policies: ['payments'] });
    expect(r.unwrappedLookup).toBe('approle-billing');
    // node-vault's error for a non-2xx answer: ApiResponseError, message = errors[0]
    expect(r.secondUnwrap).toMatchObject({ name: 'ApiResponseError', message: 'wrapping token is not valid or does not exist', statusCode: 400 });
    expect(r.unwrappedAfterReplay).toMatchObject({ name: 'ApiResponseError', message: 'permission denied', statusCode: 403 });
    expect(await compromised(wrap.accessor)).toBe(true);
    expect(await replayAlerts(wrap.accessor)).toBe(1);
    expect(r.health).toMatchObject({ initialized: true, sealed: false, standby: false });
    expect(r.mounts['secret/']).toMatchObject({ type: 'kv', options: { version: '2' } });
    // vault.list() sends the LIST method: the broker's server rewrote it
    expect(r.list).toEqual(['secret/']);
    expect(r.afterRevoke).toMatchObject({ name: 'ApiResponseError', message: 'permission denied', statusCode: 403 });
    expect(r.badLogin).toMatchObject({ name: 'ApiResponseError', message: 'invalid role or secret ID', statusCode: 400 });
  });

  it.skipIf(!hvac.ok)('hvac: login sets client.token, lookup, renew_self, unwrap once then InvalidRequest, revoke_self (204) then Forbidden', async () => {
    const wrap = await wrappingToken();
    const r = await runClient(SYSTEM_PYTHON, 'hvac-auth.py', wrap.token);
    expect(r.login).toMatchObject({ policies: ['payments'], renewable: true, lease_duration: 900, metadata: { role_name: 'billing' } });
    expect(r.token_adopted).toBe(true);
    expect(r.is_authenticated).toBe(true);
    expect(r.lookup).toMatchObject({ display_name: 'approle-billing', policies: ['payments'], ttl: remaining(900) });
    expect(r.renew.auth.lease_duration).toBe(1800);
    expect(r.renewed_lookup_ttl).toEqual(remaining(1800));
    expect(r.unwrap).toMatchObject({ metadata: { role_name: 'billing' } });
    expect(r.unwrapped_lookup).toBe('approle-billing');
    // hvac picks the exception by status: 400 → InvalidRequest, 403 → Forbidden
    expect(r.second_unwrap).toEqual({ exception: 'InvalidRequest', errors: ['wrapping token is not valid or does not exist'] });
    expect(r.unwrapped_after_replay).toBe(false);
    expect(await compromised(wrap.accessor)).toBe(true);
    expect(await replayAlerts(wrap.accessor)).toBe(1);
    expect(r.mounts['secret/']).toMatchObject({ type: 'kv', options: { version: '2' } });
    expect(r.health).toMatchObject({ initialized: true, sealed: false });
    expect(r.list).toBe(true);
    expect(r.revoke_status).toBe(204);
    expect(r.after_revoke).toMatchObject({ exception: 'Forbidden' });
    expect(r.after_revoke.errors[0]).toBe('permission denied');
    expect(r.is_authenticated_after_revoke).toBe(false);
    expect(r.bad_login).toEqual({ exception: 'InvalidRequest', errors: ['invalid role or secret ID'] });
  });
});

/**
 * Issue 28: a client whose token expired logs in again with the same client object. node-vault
 * and hvac send their current token with every request, the login included; the broker's login
 * path ignores it, as Vault's does. The broker runs on a test clock, moved past the token's
 * expiry while the script waits (it says when it has logged in, and goes on when told).
 */
describe('Vault clients log in again after their token expired', () => {
  let tb: TestBroker;
  let server: RunningServer;
  let role: { clientId: string; clientSecret: string };
  let now = Date.now();

  beforeAll(async () => {
    tb = await startTestBroker({ clock: () => now, env: { KEYWARDEN_ACCESS_TOKEN_TTL: '900', KEYWARDEN_ACCESS_TOKEN_MAX_TTL: '3600' } });
    const c = await tb.client('relogin', []);
    markSensitive(c.clientSecret);
    role = { clientId: c.clientId, clientSecret: c.clientSecret };
    server = await listen(tb.broker.app, { listen: { host: '127.0.0.1', port: 0 }, tls: undefined });
  });
  afterAll(async () => {
    await server?.close();
    await tb?.close();
  });

  /** Runs the script; when it prints "logged-in", moves the clock past the token's expiry and lets it go on. */
  function runAcrossExpiry(command: string, script: string): Promise<any> {
    return new Promise((resolve, reject) => {
      const child = spawn(command, [path.join(here, 'clients', script)], {
        env: { PATH: process.env.PATH ?? '/usr/bin:/bin', VAULT_ADDR: server.url, ROLE_ID: role.clientId, SECRET_ID: role.clientSecret },
        stdio: ['pipe', 'pipe', 'pipe'],
      });
      const bound = setTimeout(() => child.kill(), 60_000);
      let stdout = '';
      let stderr = '';
      child.stderr.on('data', (d) => (stderr += d));
      child.stdout.on('data', (d) => {
        const before = stdout;
        stdout += d;
        if (!before.includes('logged-in\n') && stdout.includes('logged-in\n')) {
          now += 910_000; // past the 900 s token and the 5 s clock tolerance
          child.stdin.write('go\n');
        }
      });
      child.on('error', reject);
      child.on('close', (code) => {
        clearTimeout(bound);
        const last = stdout.trim().split('\n').pop() ?? '';
        if (code !== 0 || !last.startsWith('{')) reject(new Error(`${script} exited ${code}: ${stderr.slice(-2000)} ${stdout.slice(-500)}`));
        else resolve(JSON.parse(last));
      });
    });
  }

  it('node-vault: the expired token is refused (403), approleLogin on the same client succeeds although it sends it', async () => {
    const r = await runAcrossExpiry(process.execPath, 'node-vault-relogin.mjs');
    expect(r.expiredLookup).toMatchObject({ name: 'ApiResponseError', message: 'permission denied', statusCode: 403 });
    expect(r.stillSendsExpiredToken).toBe(true);
    expect(r.relogin).toEqual({ newToken: true, adopted: true });
    expect(r.lookupAfterRelogin).toBe('approle-relogin');
  });

  it.skipIf(!hvac.ok)('hvac: the expired token is not authenticated, auth.approle.login on the same client succeeds although it sends it', async () => {
    const r = await runAcrossExpiry(SYSTEM_PYTHON, 'hvac-relogin.py');
    expect(r.expired_is_authenticated).toBe(false);
    expect(r.still_sends_expired_token).toBe(true);
    expect(r.relogin).toEqual({ renewed_token: true, adopted: true });
    expect(r.lookup_after_relogin).toBe('approle-relogin');
  });
});
