/**
 * Network errors name their cause (issue #15), as real CLI processes against real listeners:
 * connection refused, host not found, https spoken to a plain-HTTP broker (fails at once: not
 * transient), plain HTTP spoken to a TLS broker, a certificate this client does not trust; and
 * `verify --timeout` retries like `exec` and `fetch`.
 */
import fs from 'node:fs';
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import { listen } from '../../src/http/server.js';
import { createCa, issue, writePems } from '../support/pki.js';
import { addonBuilt, baseEnv, closedPort, runCli, startCli, startCliBroker, waitFor, type CliBroker } from './cli-support.js';

vi.setConfig({ testTimeout: 180_000, hookTimeout: 120_000 });

const IMAGE = `r.example.com/team/app@sha256:${'a'.repeat(64)}`;

describe('network errors', () => {
  let plain: CliBroker;
  let tls: CliBroker;
  let pemDir: string;
  let clientEnv: Record<string, string>;
  let apiKey: string;

  beforeAll(async () => {
    const ca = await createCa('keywarden test CA');
    const server = await issue(ca, { cn: 'localhost', ips: ['127.0.0.1'], usage: 'server' });
    const written = writePems({ 'server.pem': server.certPem, 'server-key.pem': server.keyPem });
    pemDir = written.dir;
    plain = await startCliBroker();
    tls = await startCliBroker({ tls: { certFile: written.paths['server.pem']!, keyFile: written.paths['server-key.pem']! } });
    const c = await plain.tb.client('net-errors', []);
    clientEnv = { KEYWARDEN_CLIENT_ID: c.clientId, KEYWARDEN_CLIENT_SECRET: c.clientSecret };
    apiKey = await plain.tb.apiKey('signer');
  });

  afterAll(async () => {
    await plain?.close();
    await tls?.close();
    if (pemDir) fs.rmSync(pemDir, { recursive: true, force: true });
  });

  it('connection refused and host not found are named, after retrying until --timeout (69)', async () => {
    const [refused, port1, dns] = await Promise.all([
      closedPort().then((port) => runCli(['fetch', '--dir', '/tmp/kw-never-written', '--all', '--timeout', '1'], baseEnv({ ...clientEnv, KEYWARDEN_ADDR: `http://127.0.0.1:${port}` }))),
      // port 1 is a "bad port" to the Fetch standard: the client must not refuse it on its own
      runCli(['fetch', '--dir', '/tmp/kw-never-written', '--all', '--timeout', '1'], baseEnv({ ...clientEnv, KEYWARDEN_ADDR: 'http://127.0.0.1:1' })),
      runCli(['fetch', '--dir', '/tmp/kw-never-written', '--all', '--timeout', '1'], baseEnv({ ...clientEnv, KEYWARDEN_ADDR: 'http://kw-no-such-host.invalid:8750' })),
    ]);
    expect(refused.code, refused.stderr).toBe(69);
    expect(refused.stderr).toMatch(/retrying in .*\(connection refused\)/);
    expect(refused.stderr).toMatch(/keywarden: cannot reach the broker at http:\/\/127\.0\.0\.1:\d+: connection refused/);
    expect(port1.code, port1.stderr).toBe(69);
    expect(port1.stderr).toMatch(/cannot reach the broker at http:\/\/127\.0\.0\.1:1: connection refused/);
    expect(dns.code, dns.stderr).toBe(69);
    expect(dns.stderr).toMatch(/cannot reach the broker at http:\/\/kw-no-such-host\.invalid:8750: host not found/);
    expect(fs.existsSync('/tmp/kw-never-written/db')).toBe(false);
  });

  it('https spoken to a plain-HTTP broker fails at once, naming the mismatch (exec, fetch, verify, sign)', async () => {
    const addr = plain.url.replace(/^http:/, 'https:');
    const env = baseEnv({ ...clientEnv, KEYWARDEN_ADDR: addr, KEYWARDEN_API_KEY: apiKey });
    const started = Date.now();
    const results = await Promise.all([
      // exec loads its execve addon first: without it, it cannot get as far as the network
      ...(addonBuilt ? [runCli(['exec', '--all', '--timeout', '60', '--', 'true'], env)] : []),
      runCli(['fetch', '--dir', '/tmp/kw-never-written', '--all', '--timeout', '60'], env),
      runCli(['verify', '--timeout', '60', IMAGE], env),
      runCli(['sign', '--key', 'k', IMAGE], env),
    ]);
    // far below the 60 s it would take if the mismatch were retried as a transient failure
    expect(Date.now() - started).toBeLessThan(50_000);
    for (const r of results) {
      expect(r.code, r.stderr).toBe(69);
      expect(r.stderr).toContain(`TLS handshake failed: the broker at ${addr} does not speak TLS (is KEYWARDEN_ADDR http://?)`);
      expect(r.stderr).not.toMatch(/retrying/);
    }
  });

  it('plain HTTP spoken to a TLS broker says so; an untrusted certificate fails at once (70) and says what to set', async () => {
    const httpToTls = tls.url.replace(/^https:/, 'http:');
    const [plainToTls, untrusted] = await Promise.all([
      runCli(['fetch', '--dir', '/tmp/kw-never-written', '--all', '--timeout', '1'], baseEnv({ ...clientEnv, KEYWARDEN_ADDR: httpToTls })),
      runCli(['verify', '--timeout', '60', IMAGE], baseEnv({ KEYWARDEN_ADDR: tls.url, KEYWARDEN_API_KEY: apiKey })),
    ]);
    expect(plainToTls.code, plainToTls.stderr).toBe(69);
    expect(plainToTls.stderr).toMatch(/connection closed by the broker before it answered \(if it serves TLS, KEYWARDEN_ADDR must be https:\/\/\)/);
    expect(untrusted.code, untrusted.stderr).toBe(70);
    expect(untrusted.stderr).toMatch(/TLS verification of the broker at https:\/\/127\.0\.0\.1:\d+ failed: its certificate is issued by a CA this client does not trust \([A-Z_]+\); set KEYWARDEN_CA/);
    expect(untrusted.stderr).not.toMatch(/retrying/);
  });

  describe('verify --timeout', () => {
    it('retries while the broker is unreachable and gives up with 69 at the timeout', async () => {
      const port = await closedPort();
      const started = Date.now();
      const r = await runCli(['verify', '--timeout', '2', IMAGE], baseEnv({ KEYWARDEN_ADDR: `http://127.0.0.1:${port}`, KEYWARDEN_API_KEY: apiKey }));
      const elapsed = Date.now() - started;
      expect(r.code, r.stderr).toBe(69);
      expect(r.stderr.match(/keywarden: broker unreachable at http:\/\/127\.0\.0\.1:\d+, retrying in \S+s \(connection refused\)/g)!.length).toBeGreaterThan(1);
      expect(r.stderr).toMatch(/cannot reach the broker at .*: connection refused \(gave up after \d+s\)/);
      expect(elapsed).toBeGreaterThanOrEqual(1_900);
    });

    it('keeps retrying until the broker comes up, then prints its decision', async () => {
      const port = await closedPort();
      const run = startCli(['verify', '--timeout', '60', IMAGE], baseEnv({ KEYWARDEN_ADDR: `http://127.0.0.1:${port}`, KEYWARDEN_API_KEY: apiKey }));
      await waitFor(() => /retrying in/.test(run.stderr()), 60_000);
      const late = await listen(plain.tb.broker.app, { listen: { host: '127.0.0.1', port } });
      try {
        const r = await run.done;
        // no trust policy matches this image: a decision (deny), not "unreachable"
        expect(r.code, r.stderr).toBe(1);
        expect(r.stdout).toMatch(/decision: DENY/);
      } finally {
        await late.close();
      }
    });
  });
});
