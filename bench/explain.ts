// Captures the exact SQL one secret delivery runs (SecretsService.deliver: the group-rule lookup,
// the secret_reads upsert and the audit append) and prints SQLite's EXPLAIN QUERY PLAN for each.
// Usage: node --import tsx bench/explain.ts <client name> <secret name>
import { createServices } from '../src/broker.js';
import { loadConfig } from '../src/config.js';

const [clientName, secretName] = process.argv.slice(2);
const config = loadConfig({ ...process.env, KEYWARDEN_LOG_LEVEL: 'warn' });
if (!config.databaseUrl.startsWith('sqlite:')) throw new Error('explain.ts is for SQLite');
const services = await createServices(config);
const db = services.db;
const client = await db('clients').where('name', clientName).first();
if (!client) throw new Error(`no client ${clientName}`);

const captured: Array<{ sql: string; bindings: unknown[] }> = [];
const onQuery = (q: { sql: string; bindings?: unknown[] }) => captured.push({ sql: q.sql, bindings: q.bindings ?? [] });
db.on('query', onQuery);
await services.secrets.deliver(
  { kind: 'client', id: client.id, name: client.name, clientId: client.client_id, via: 'token' },
  { requestId: 'bench-explain', sourceIp: '127.0.0.1', userAgent: 'keywarden-bench-explain' },
  [secretName],
);
db.off('query', onQuery);

const counts: Record<string, number> = {};
for (const t of ['secrets', 'secret_versions', 'access_grants', 'memberships', 'audit_events']) {
  counts[t] = Number((await db(t).count<{ n: number }[]>('* as n').first())?.n);
}
console.log(`row counts: ${JSON.stringify(counts)}\n`);
for (const q of captured.filter((c) => !/^(begin|commit|rollback|savepoint|release)/i.test(c.sql.trim()))) {
  console.log(`SQL: ${q.sql}`);
  const plan = await db.raw(`EXPLAIN QUERY PLAN ${q.sql}`, q.bindings as any[]);
  for (const row of plan as Array<{ id: number; parent: number; detail: string }>) console.log(`  ${row.detail}`);
  const full = (plan as Array<{ detail: string }>).filter((r) => /^SCAN /.test(r.detail) && !/USING (COVERING )?INDEX|USING INTEGER PRIMARY KEY/.test(r.detail));
  console.log(full.length ? `  => FULL SCAN: ${full.map((r) => r.detail).join('; ')}` : '  => no full table scan');
  console.log('');
}
await services.dbHandle.close();
