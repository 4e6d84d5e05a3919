// Seeds secrets through the broker's own service layer (envelope encryption, audit events and
// all), so every row is a real, decryptable secret. Run while the server is stopped (SQLite has
// one writer). Configured by the same KEYWARDEN_* environment variables as `keywarden serve`.
// Usage: node --import tsx bench/seed.ts --total 100000 [--group bench] [--concurrency 8]
import { parseArgs } from 'node:util';
import { createServices } from '../src/broker.js';
import { loadConfig } from '../src/config.js';
import type { Principal } from '../src/identity/identity-types.js';

const { values } = parseArgs({
  options: {
    total: { type: 'string', default: '1000' },
    group: { type: 'string', default: 'bench' },
    concurrency: { type: 'string', default: '8' },
    prefix: { type: 'string', default: 'seed-' },
  },
});
const total = Number(values.total);
const concurrency = Number(values.concurrency);
const config = loadConfig({ ...process.env, KEYWARDEN_LOG_LEVEL: 'warn' });
const services = await createServices(config);
const principal: Principal = { kind: 'operator', role: 'admin', id: 'bench-seed', name: 'bench-seed', via: 'api-key' };

const existing = Number((await services.db('secrets').whereNull('deleted_at').count<{ n: number }[]>('* as n').first())?.n ?? 0);
// names already used by this prefix: continue numbering after them
const seeded = Number((await services.db('secrets').where('name', 'like', `${values.prefix}%`).count<{ n: number }[]>('* as n').first())?.n ?? 0);
const toCreate = Math.max(0, total - existing);
process.stderr.write(`seed: ${existing} live secrets, creating ${toCreate} (concurrency ${concurrency})\n`);

let next = 0;
let done = 0;
const t0 = Date.now();
async function worker() {
  while (next < toCreate) {
    const i = seeded + next++;
    const name = `${values.prefix}${String(i).padStart(6, '0')}`;
    await services.secrets.create(principal, { requestId: `seed-${i}`, sourceIp: null, userAgent: 'keywarden-bench-seed' }, {
      name,
      content: Buffer.from(`value-${i}-${'x'.repeat(32)}`),
      // every 10th seeded secret is granted to the bench group: the client sees 10% of them
      groups: i % 10 === 0 ? [values.group!] : [],
      labels: { tier: i % 2 ? 'odd' : 'even' },
    });
    done++;
    if (done % 10000 === 0) process.stderr.write(`seed: ${done}/${toCreate} (${Math.round(done / ((Date.now() - t0) / 1000))}/s)\n`);
  }
}
await Promise.all(Array.from({ length: concurrency }, () => worker()));
const elapsed = (Date.now() - t0) / 1000;
process.stdout.write(JSON.stringify({ created: done, seconds: elapsed, perSecond: done / Math.max(elapsed, 1e-9) }) + '\n');
await services.dbHandle.close();
