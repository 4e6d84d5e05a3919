// Seeds secrets through the broker's own service layer (envelope encryption, audit events and
// all), so every row is a real, decryptable secret; and with --clients, clients the same way
// (ClientsService.create: row MAC, memberships, audit events). Run while the server is stopped
// (SQLite has one writer). Configured by the same KEYWARDEN_* environment variables as
// `keywarden serve` (KEYWARDEN_DATABASE_URL for PostgreSQL).
// Usage: node --import tsx bench/seed.ts --total 100000 [--clients 10000] [--group bench] [--concurrency 8]
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
    // live clients wanted in all (seeded ones are named <client-prefix>NNNNNN)
    clients: { type: 'string', default: '0' },
    'client-prefix': { type: 'string', default: 'seed-client-' },
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

// clients, up to --clients live ones; every 10th in the group, so the group's membership grows too
const liveClients = Number((await services.db('clients').count<{ n: number }[]>('* as n').first())?.n ?? 0);
const seededClients = Number((await services.db('clients').where('name', 'like', `${values['client-prefix']}%`).count<{ n: number }[]>('* as n').first())?.n ?? 0);
const clientsToCreate = Math.max(0, Number(values.clients) - liveClients);
let nextClient = 0;
let clientsDone = 0;
const c0 = Date.now();
async function clientWorker() {
  while (nextClient < clientsToCreate) {
    const i = seededClients + nextClient++;
    await services.clients.create(principal, { requestId: `seed-client-${i}`, sourceIp: null, userAgent: 'keywarden-bench-seed' }, {
      name: `${values['client-prefix']}${String(i).padStart(6, '0')}`,
      groups: i % 10 === 0 ? [values.group!] : [],
    });
    clientsDone++;
    if (clientsDone % 5000 === 0) process.stderr.write(`seed: ${clientsDone}/${clientsToCreate} clients\n`);
  }
}
if (clientsToCreate) process.stderr.write(`seed: ${liveClients} clients, creating ${clientsToCreate}\n`);
await Promise.all(Array.from({ length: concurrency }, () => clientWorker()));
const clientSeconds = (Date.now() - c0) / 1000;
process.stdout.write(
  JSON.stringify({ created: done, seconds: elapsed, perSecond: done / Math.max(elapsed, 1e-9), clientsCreated: clientsDone, clientSeconds, clientsPerSecond: clientsDone / Math.max(clientSeconds, 1e-9) }) + '\n',
);
await services.dbHandle.close();
