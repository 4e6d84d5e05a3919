// (c) Delivery as the secrets table grows: one store seeded to --seed-small then to --seed-large
// secrets (bench/seed.ts, broker stopped), delivery of `bench-secret` and of a seeded secret from
// the middle of the table at each size, with the per-component costs (bench/components.ts) and,
// on SQLite, the query plans of one delivery (bench/explain.ts). Sequential, not alternating: the
// same store grows. (f) is the side-by-side flatness figure.
import { createStore, databaseLabel, deliveryHeader, dropStore, fmt, lastJson, log, measure, runScript, setupBroker, startBroker, stop, type DatabaseKind } from './harness.js';

export async function tableSizeScenario(kind: DatabaseKind, sizes: Array<[label: string, secrets: number]>): Promise<Record<string, unknown>> {
  const store = await createStore(kind, 'c');
  let broker = await startBroker(store);
  try {
    const creds = await setupBroker(broker.base);
    const delivery = async (label: string, secret = 'bench-secret') => {
      const { url, header } = await deliveryHeader(broker.base, creds, secret);
      const r = await measure(broker, url, [header]);
      log(`(c) ${databaseLabel(kind)} ${label}: ${fmt(r)}`);
      return r;
    };
    const out: Record<string, unknown> = {};
    for (const [label, total] of sizes) {
      await stop(broker.child);
      log(`(c) ${databaseLabel(kind)}: seeding to ${total} secrets through SecretsService.create ...`);
      const seed = lastJson(runScript('seed.ts', ['--total', String(total)], store));
      log(`(c) seeded ${seed.created} in ${seed.seconds.toFixed(1)} s`);
      const explain = kind === 'sqlite' ? runScript('explain.ts', ['bench-client', 'bench-secret'], store) : 'EXPLAIN is SQLite-only (bench/explain.ts)';
      broker = await startBroker(store);
      await delivery(`warm-up ${total} (discarded)`);
      const r = await delivery(`delivery with ${total} secrets`);
      // a seeded secret too, from the middle of the table (every 10th is granted)
      const mid = `seed-${String(Math.floor(total / 2 / 10) * 10).padStart(6, '0')}`;
      const rMid = await delivery(`delivery of ${mid} with ${total} secrets`, mid);
      // the same per-component costs as in (b), at this table size (server stopped again)
      await stop(broker.child);
      const components = runScript('components.ts', ['2000'], store);
      process.stdout.write(`\n---- ${databaseLabel(kind)}: per-component cost with ${total} secrets ----\n${components}\n`);
      process.stdout.write(`\n---- EXPLAIN QUERY PLAN with ${total} secrets ----\n${explain}\n`);
      broker = await startBroker(store);
      out[label] = { secrets: total, seed, delivery: r, deliveryOfSeeded: { secret: mid, ...rMid }, explain, components };
    }
    return out;
  } finally {
    await stop(broker.child);
    await dropStore(store);
  }
}
