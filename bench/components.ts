// Per-component cost of one secret delivery, in-process and sequential (no HTTP, no
// concurrency): where the broker's time goes, one piece at a time. p50 is reported because it is
// robust to the process being descheduled on a shared host.
// Usage: KEYWARDEN_DATA_DIR=<dir with the bench client/secret> node --import tsx bench/components.ts [iterations=2000]
import { createServices } from '../src/broker.js';
import { loadConfig } from '../src/config.js';

const iterations = Number(process.argv[2] ?? 2000);
const config = loadConfig({ ...process.env, KEYWARDEN_LOG_LEVEL: 'warn' });
const s = await createServices(config);
const client = await s.db('clients').where('name', 'bench-client').first();
if (!client) throw new Error('run after bench/run.ts --keep (needs bench-client)');
const principal = { kind: 'client' as const, id: client.id, name: client.name, clientId: client.client_id, via: 'token' as const };
const meta = { requestId: 'bench-components', sourceIp: '127.0.0.1', userAgent: 'keywarden-bench-components' };
const issued = await s.tokens.issueClientToken(principal);
const found = (await s.access.findForClient(client.id, 'bench-secret'))!;
// the raw better-sqlite3 reference row needs knex's own connection object: on PostgreSQL (or a
// knex whose connection is wrapped) there is none, and the row is skipped
const conn = s.db.client.acquireRawConnection ? await (s.db.client as any).acquireConnection() : undefined;
const stmt = typeof conn?.prepare === 'function' ? conn.prepare('select * from secrets where name = ? and deleted_at is null') : undefined;
if (conn) await (s.db.client as any).releaseConnection(conn);

async function time(label: string, fn: () => unknown): Promise<[string, number, number]> {
  for (let i = 0; i < 200; i++) await fn();
  const us: number[] = [];
  for (let i = 0; i < iterations; i++) {
    const t0 = process.hrtime.bigint();
    await fn();
    us.push(Number(process.hrtime.bigint() - t0) / 1000);
  }
  us.sort((a, b) => a - b);
  return [label, us[Math.floor(us.length / 2)], us[Math.floor(us.length * 0.99)]];
}

const rows = [
  ...(stmt ? [await time('raw better-sqlite3: prepared select by name (reference)', () => stmt.get('bench-secret'))] : []),
  await time('knex: select secret by name (build SQL, prepare, run)', () => s.db('secrets').where('name', 'bench-secret').whereNull('deleted_at').first()),
  await time('tokens.authenticate (verified-token cache + client/revocation query)', () => s.tokens.authenticate(issued.token)),
  await time('access.findForClient (5-table join)', () => s.access.findForClient(client.id, 'bench-secret')),
  await time('decrypt: unwrap data key + AES-GCM open', () => (s.secrets as any).decrypt(found.secret, found.version)),
  await time('audit.record (own transaction: head read, chain hash, insert, head update)', () =>
    s.audit.record({ actor: { kind: 'client', id: principal.clientId, name: principal.name }, action: 'secret.read', resource: { kind: 'secret', name: 'bench-secret' }, outcome: 'allow', details: { version: 1 }, request: meta }),
  ),
  await time('secrets.deliver (all of the above but auth, plus secret_reads upsert)', () => s.secrets.deliver(principal, meta, ['bench-secret'])),
];
for (const [label, p50, p99] of rows) console.log(`${p50.toFixed(0).padStart(7)} us p50 ${p99.toFixed(0).padStart(7)} us p99  ${label}`);
await s.dbHandle.close();
