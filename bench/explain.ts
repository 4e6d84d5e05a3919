// Captures the exact SQL one secret delivery runs (the access-token check, then
// SecretsService.deliver: the group-rule lookup,
// the secret_reads upsert and the audit append), whichever path runs it (knex, or the
// synchronous SQLite fast path when src/db/sqlite-fast-path.ts exists), and prints SQLite's
// EXPLAIN QUERY PLAN for each statement.
// Usage: KEYWARDEN_DATA_DIR=<dir> node --import tsx bench/explain.ts <client name> <secret name>
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import Database from 'better-sqlite3';
import { createServices } from '../src/broker.js';
import { loadConfig } from '../src/config.js';
import { sqliteFileFromUrl } from '../src/db/connection.js';

const [clientName, secretName] = process.argv.slice(2);
const config = loadConfig({ ...process.env, KEYWARDEN_LOG_LEVEL: 'warn' });
if (!config.databaseUrl.startsWith('sqlite:')) throw new Error('explain.ts is for SQLite');

const captured: Array<{ via: string; sql: string; bindings: unknown[] }> = [];
let capturing = false;
// the fast path (if this version of the broker has one): record what it runs
const fastPathFile = path.join(path.dirname(fileURLToPath(import.meta.url)), '..', 'src', 'db', 'sqlite-fast-path.ts');
if (fs.existsSync(fastPathFile)) {
  const mod: any = await import('../src/db/sqlite-fast-path.js' as string);
  const proto = mod.SqliteFastPath?.prototype;
  for (const method of ['get', 'run', 'all', 'exec']) {
    const original = proto?.[method];
    if (typeof original !== 'function') continue;
    proto[method] = function (this: unknown, sql: string, ...params: unknown[]) {
      if (capturing) captured.push({ via: 'fast path', sql, bindings: params });
      return original.call(this, sql, ...params);
    };
  }
}

const services = await createServices(config);
const db = services.db;
const client = await db('clients').where('name', clientName).first();
if (!client) throw new Error(`no client ${clientName}`);
const onQuery = (q: { sql: string; bindings?: unknown[] }) => {
  if (capturing) captured.push({ via: 'knex', sql: q.sql, bindings: q.bindings ?? [] });
};
const principal = { kind: 'client' as const, id: client.id, name: client.name, clientId: client.client_id, via: 'token' as const };
const issued = await services.tokens.issueClientToken(principal);
db.on('query', onQuery);
capturing = true;
await services.tokens.authenticate(issued.token); // the per-request token check
await services.secrets.deliver(
  principal,
  { requestId: 'bench-explain', sourceIp: '127.0.0.1', userAgent: 'keywarden-bench-explain' },
  [secretName],
);
capturing = false;
db.off('query', onQuery);

const counts: Record<string, number> = {};
for (const t of ['secrets', 'secret_versions', 'access_grants', 'memberships', 'audit_events']) {
  counts[t] = Number((await db(t).count<{ n: number }[]>('* as n').first())?.n);
}
await services.dbHandle.close();

console.log(`row counts: ${JSON.stringify(counts)}\n`);
const raw = new Database(sqliteFileFromUrl(config.databaseUrl), { readonly: true });
const seen = new Set<string>();
for (const q of captured) {
  if (/^\s*(begin|commit|rollback|savepoint|release)\b/i.test(q.sql) || seen.has(q.sql)) continue;
  seen.add(q.sql);
  console.log(`SQL (${q.via}): ${q.sql.replace(/\s+/g, ' ').trim()}`);
  const plan = raw.prepare(`EXPLAIN QUERY PLAN ${q.sql}`).all(...(q.bindings as any[])) as Array<{ detail: string }>;
  for (const row of plan) console.log(`  ${row.detail}`);
  const full = plan.filter((r) => /^SCAN /.test(r.detail) && !/USING (COVERING )?INDEX|USING INTEGER PRIMARY KEY/.test(r.detail));
  console.log(full.length ? `  => FULL SCAN: ${full.map((r) => r.detail).join('; ')}` : '  => no full table scan');
  console.log('');
}
if (!captured.length) console.log('no SQL captured: the delivery path changed; update bench/explain.ts');
raw.close();
