// (d) Cached release decision. Sets up a trust policy whose checks need no network (an image
// pattern and nothing else, so the decision is a cacheable "allow"), makes one fresh decision for
// a digest-pinned image to fill the cache, then times repeated decisions that hit the cache:
//   - GateService.lookupCache alone (the cache read: one primary-key lookup)
//   - GateService.decide (cache hit + the decision row and its audit event, committed)
// sequentially, in-process, so the numbers are the broker's own latency without HTTP.
// Usage: KEYWARDEN_DATA_DIR=<dir> node --import tsx bench/gate.ts [iterations=2000]
import { createServices } from '../src/broker.js';
import { loadConfig } from '../src/config.js';
import type { Principal } from '../src/identity/identity-types.js';

const iterations = Number(process.argv[2] ?? 2000);
const config = loadConfig({ ...process.env, KEYWARDEN_LOG_LEVEL: 'warn' });
const services = (await createServices(config)) as any;
if (!services.gate || !services.policies) {
  process.stdout.write(JSON.stringify({ measured: false, reason: 'createServices has no gate/policies service yet' }) + '\n');
  process.exit(0);
}
const { gateCacheKey } = await import('../src/trust/gate/gate-service.js');
const { policyDocumentSchema } = await import('../src/trust/gate/policy-schema.js');
const principal: Principal = { kind: 'operator', role: 'writer', id: 'bench-gate', name: 'bench-gate', via: 'api-key' };
const meta = { requestId: 'bench-gate', sourceIp: '127.0.0.1', userAgent: 'keywarden-bench-gate' };

const policyName = 'bench-gate';
if (!(await services.db('trust_policies').where({ name: policyName }).first())) {
  await services.policies.create(principal, meta, policyDocumentSchema.parse({ name: policyName, images: ['registry.bench.invalid/team/**'] }));
}
const digest = `sha256:${'ab'.repeat(32)}`;
const image = `registry.bench.invalid/team/app@${digest}`;
const first = await services.gate.decide(principal, meta, image);
const second = await services.gate.decide(principal, meta, image);
if (!second.cached) throw new Error(`second decision was not served from the cache: ${JSON.stringify(second)}`);
const stored = (await services.policies.all()).find((p: any) => p.name === policyName);
const key = gateCacheKey('registry.bench.invalid/team/app', digest, policyName, stored.version, await services.gate.currentTrustEpoch());

async function time(fn: () => Promise<unknown>): Promise<{ p50: number; p90: number; p99: number; max: number; mean: number; n: number }> {
  for (let i = 0; i < 200; i++) await fn(); // warm-up
  const ms: number[] = [];
  for (let i = 0; i < iterations; i++) {
    const t0 = process.hrtime.bigint();
    await fn();
    ms.push(Number(process.hrtime.bigint() - t0) / 1e6);
  }
  ms.sort((a, b) => a - b);
  const at = (p: number) => ms[Math.min(ms.length - 1, Math.floor((p / 100) * ms.length))];
  return { n: ms.length, p50: at(50), p90: at(90), p99: at(99), max: ms[ms.length - 1], mean: ms.reduce((a, b) => a + b, 0) / ms.length };
}

const lookup = await time(async () => {
  if (!(await services.gate.lookupCache(key))) throw new Error('cache miss');
});
const decide = await time(async () => {
  const d = await services.gate.decide(principal, meta, image);
  if (!d.cached) throw new Error('not cached');
});
process.stdout.write(
  JSON.stringify({ measured: true, image, firstDecision: { decision: first.decision, cached: first.cached }, lookupCache: lookup, decideCached: decide }) + '\n',
);
await services.dbHandle.close();
