// Release gate over HTTP (issue #27, target 6). A real docker-registry behind a counting proxy,
// a real notary-server, and brokers started in-process on their own port (SQLite, or PostgreSQL
// with KEYWARDEN_TEST_DATABASE_URL). POST /v1/releases with a signer's API key, keep-alive, as
// an admission webhook calls it, for a fixed duration at 1 and at 16 concurrent callers:
//   - cached, by digest (cosign; notary by tag@digest, as its trust data is per tag): no registry request may be made;
//   - cached, by tag: at most one manifest HEAD per decision;
//   - uncached (a broker with KEYWARDEN_GATE_CACHE_TTL=0), by tag: resolve + verify every time;
//   - a baseline in the same run: GET /v1/policies/{name} with the same key (auth + one read).
// Reports p50/p90/p99/max (ms), decisions/s and registry requests per decision.
// Usage: node --import tsx bench/gate-http.ts [secondsPerScenario=2] [--out file.json]
import { generateKeyPairSync } from 'node:crypto';
import fs from 'node:fs';
import http from 'node:http';
import os from 'node:os';
import type { AddressInfo } from 'node:net';
import { RegistryClient } from '../src/trust/registry/registry-client.js';
import { attachCosignSignature, signPayload } from '../src/trust/cosign/cosign-signatures.js';
import { buildSimpleSigningPayload } from '../src/trust/cosign/simple-signing.js';
import { startTestBroker, dialectUnderTest, type TestBroker } from '../test/support/broker.js';
import { NotaryCli, notaryToolsAvailable, startNotaryServer } from '../test/support/notary-server.js';
import { pushTestImage, registryAvailable, startCountingProxy, startRegistry } from '../test/support/registry.js';

const args = process.argv.slice(2);
const outIdx = args.indexOf('--out');
const outFile = outIdx >= 0 ? args[outIdx + 1] : undefined;
const seconds = Number(args.find((a, i) => !a.startsWith('--') && (outIdx < 0 || i !== outIdx + 1)) ?? 2);

if (!registryAvailable().ok || !notaryToolsAvailable().ok) {
  process.stdout.write(JSON.stringify({ measured: false, reason: 'docker-registry or notary tools missing' }) + '\n');
  process.exit(0);
}

const registry = await startRegistry();
const proxy = await startCountingProxy(registry.hostPort);
const R = proxy.hostPort;
const notary = await startNotaryServer();
const cli = await NotaryCli.create(notary.url);
const env: Record<string, string> = { KEYWARDEN_INSECURE_REGISTRIES: `${R},127.0.0.1`, KEYWARDEN_GATE_TIMEOUT_MS: '5000' };
// KEYWARDEN_SQLITE_SYNCHRONOUS=normal: the same run without an fsync per commit (what the commit itself costs)
if (process.env.KEYWARDEN_SQLITE_SYNCHRONOUS) env.KEYWARDEN_SQLITE_SYNCHRONOUS = process.env.KEYWARDEN_SQLITE_SYNCHRONOUS;

// images: cosign-signed with a key of the bench's own (a PEM in the policy), and notary-published
const signingKey = generateKeyPairSync('ec', { namedCurve: 'P-256' });
const pem = signingKey.publicKey.export({ type: 'spki', format: 'pem' }).toString();
const regClient = new RegistryClient({ insecureRegistries: [R] });
const cosignImg = await pushTestImage(R, 'bench/cosign', 'v1', { user: '1000' });
const payload = buildSimpleSigningPayload(`${R}/bench/cosign`, cosignImg.digest);
await attachCosignSignature(regClient, { registry: R, repository: 'bench/cosign', digest: cosignImg.digest, payload, signatureB64: signPayload(signingKey.privateKey, payload).toString('base64') });
const notaryImg = await pushTestImage(R, 'bench/notary', 'v1', { user: '1000' });
const gun = `${R}/bench/notary`;
await cli.init(gun);
await cli.addHash(gun, 'v1', notaryImg.manifestBytes.length, notaryImg.digest.slice(7));
const notaryRoot = await cli.rootKey(gun);

interface Started {
  tb: TestBroker;
  port: number;
  signer: string;
  server: http.Server;
}

async function start(extraEnv: Record<string, string>): Promise<Started> {
  const tb = await startTestBroker({ env: { ...env, ...extraEnv } });
  const admin = { Authorization: `Bearer ${tb.adminKey}` };
  for (const doc of [
    { name: 'bench-cosign', images: [`${R}/bench/cosign`], cosign: { keys: [pem] } },
    { name: 'bench-notary', images: [`${R}/bench/notary`], notary: { server: notary.url, rootKeys: [notaryRoot.publicB64] } },
  ]) {
    const res = await tb.request.post('/v1/policies').set(admin).send(doc);
    if (res.status !== 201) throw new Error(`policy: ${res.status} ${res.text}`);
  }
  const signer = await tb.apiKey('signer');
  const server = tb.broker.app.listen(0, '127.0.0.1');
  await new Promise((r) => server.once('listening', r));
  return { tb, port: (server.address() as AddressInfo).port, signer, server };
}

const agent = new http.Agent({ keepAlive: true, maxSockets: 64 });

/** POST /v1/releases for `image`; for a `GET /path` "image", that GET instead (the baseline). */
function decide(b: Started, image: string): Promise<{ status: number; body: string }> {
  const get = image.startsWith('GET ') ? image.slice(4) : undefined;
  const body = get ? '' : JSON.stringify({ image });
  return new Promise((resolve, reject) => {
    const req = http.request(
      { host: '127.0.0.1', port: b.port, method: get ? 'GET' : 'POST', path: get ?? '/v1/releases', agent, headers: { ...(get ? {} : { 'content-type': 'application/json', 'content-length': Buffer.byteLength(body) }), authorization: `Bearer ${b.signer}` } },
      (res) => {
        let text = '';
        res.setEncoding('utf8');
        res.on('data', (c) => (text += c));
        res.on('end', () => resolve({ status: res.statusCode ?? 0, body: text }));
      },
    );
    req.on('error', reject);
    req.end(body);
  });
}

const pct = (sorted: number[], p: number) => sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))]!;
const round = (n: number) => Math.round(n * 1000) / 1000;

async function scenario(b: Started, image: string, concurrency: number, expect: { cached: boolean; decision: string }) {
  // warm-up (and, for a cached scenario, fill the cache)
  for (let i = 0; i < 20; i++) {
    const r = await decide(b, image);
    if (r.status !== 200) throw new Error(`${image}: HTTP ${r.status} ${r.body}`);
  }
  const before = proxy.requests.length;
  const connectionsBefore = proxy.connections;
  const latencies: number[] = [];
  const cpu0 = process.cpuUsage();
  const started = performance.now();
  const end = started + seconds * 1000;
  let wrong = 0;
  await Promise.all(
    Array.from({ length: concurrency }, async () => {
      while (performance.now() < end) {
        const t0 = performance.now();
        const r = await decide(b, image);
        latencies.push(performance.now() - t0);
        const d = JSON.parse(r.body) as { decision?: string; cached?: boolean; name?: string };
        if (r.status !== 200 || (image.startsWith('GET ') ? !d.name : d.decision !== expect.decision || d.cached !== expect.cached)) wrong++;
      }
    }),
  );
  const elapsed = (performance.now() - started) / 1000;
  const cpu = process.cpuUsage(cpu0);
  const asked = proxy.requests.slice(before);
  latencies.sort((a, b2) => a - b2);
  return {
    concurrency,
    n: latencies.length,
    perSecond: Math.round(latencies.length / elapsed),
    p50: round(pct(latencies, 50)),
    p90: round(pct(latencies, 90)),
    p99: round(pct(latencies, 99)),
    max: round(latencies[latencies.length - 1]!),
    unexpected: wrong,
    // the whole process: broker, load generator and registry proxy (they share it); robust to other load on the machine
    processCpuUsPerDecision: Math.round((cpu.user + cpu.system) / latencies.length),
    registryRequestsPerDecision: round(asked.length / latencies.length),
    registryConnectionsOpened: proxy.connections - connectionsBefore,
    // what one decision asked the registry (the first decision measured)
    registryRequestsOfOne: asked.slice(0, Math.round(asked.length / latencies.length)),
    manifestHeadsPerDecision: round(asked.filter((r) => r.startsWith('HEAD ') && r.includes('/manifests/')).length / latencies.length),
  };
}

const cached = await start({});
const uncached = await start({ KEYWARDEN_GATE_CACHE_TTL: '0' });
const results: Record<string, unknown> = {};
try {
  const cases: Array<[string, Started, string, { cached: boolean; decision: string }]> = [
    // the same broker's cheapest authenticated read (a policy by name), in the same run: what any request costs here
    ['baselineAuthenticatedGet', cached, 'GET /v1/policies/bench-cosign', { cached: false, decision: '' }],
    ['cachedDigestCosign', cached, `${R}/bench/cosign@${cosignImg.digest}`, { cached: true, decision: 'allow' }],
    ['cachedDigestNotary', cached, `${R}/bench/notary:v1@${notaryImg.digest}`, { cached: true, decision: 'allow' }],
    ['cachedTagCosign', cached, `${R}/bench/cosign:v1`, { cached: true, decision: 'allow' }],
    ['cachedTagNotary', cached, `${R}/bench/notary:v1`, { cached: true, decision: 'allow' }],
    ['uncachedTagCosign', uncached, `${R}/bench/cosign:v1`, { cached: false, decision: 'allow' }],
    ['uncachedTagNotary', uncached, `${R}/bench/notary:v1`, { cached: false, decision: 'allow' }],
  ];
  // BENCH_GATE_ONLY=cachedDigestCosign,...: a subset (for a profile)
  const only = process.env.BENCH_GATE_ONLY?.split(',');
  for (const [name, b, image, expect] of cases) {
    if (only && !only.includes(name)) continue;
    results[name] = { c1: await scenario(b, image, 1, expect), c16: await scenario(b, image, 16, expect) };
    process.stderr.write(`${name}: ${JSON.stringify(results[name])}\n`);
  }
} finally {
  for (const b of [cached, uncached]) {
    b.server.closeAllConnections();
    await new Promise((r) => b.server.close(r));
    await b.tb.close();
  }
  agent.destroy();
  await notary.stop();
  await cli.cleanup();
  await proxy.close();
  await registry.stop();
}
const out = { measured: true, dialect: dialectUnderTest, sqliteSynchronous: env.KEYWARDEN_SQLITE_SYNCHRONOUS ?? 'full', date: new Date().toISOString(), loadavg: os.loadavg(), cpus: os.cpus().length, secondsPerScenario: seconds, results };
if (outFile) fs.writeFileSync(outFile, JSON.stringify(out, null, 2) + '\n');
process.stdout.write(JSON.stringify(out) + '\n');
