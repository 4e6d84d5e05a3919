// (f) Flatness (issue 27, target 7): delivery with --seed-large secrets and --clients-large
// clients against --seed-small and --clients-small, on every database of the run. Two stores per
// database, seeded through the service layer (bench/seed.ts: every 10th secret granted to the
// bench group, every 10th client a member of it) while their broker is stopped; then both brokers
// run and the rounds alternate small, large, `repeat` times (closed loop, wrk). Reported: the
// median over rounds of large ÷ small for req/s and for the broker's CPU per delivery
// (target: within 1.2×). Seeding 100k secrets takes minutes: run it with --only f.
import { round } from './audit-bench-support.js';
import { createStore, databaseLabel, deliveryHeader, dropStore, fmt, lastJson, log, measure, medianOf, runScript, setupBroker, settle, startBroker, stop, warmUp, type BenchOptions, type Creds, type Measured, type ServerProc } from './harness.js';

async function seeded(kind: 'sqlite' | 'postgres', label: string, secrets: number, clients: number): Promise<{ broker: ServerProc; creds: Creds; seed: unknown }> {
  const store = await createStore(kind, `f_${label}`);
  let broker = await startBroker(store);
  const creds = await setupBroker(broker.base);
  await stop(broker.child);
  log(`(f) ${databaseLabel(kind)}: seeding ${secrets} secrets and ${clients} clients ...`);
  const seed = lastJson(runScript('seed.ts', ['--total', String(secrets), '--clients', String(clients)], store));
  log(`(f) ${databaseLabel(kind)}: seeded ${JSON.stringify(seed)}`);
  broker = await startBroker(store);
  await warmUp(broker, creds);
  return { broker, creds, seed };
}

export async function flatScenario(opts: BenchOptions): Promise<Record<string, unknown>> {
  const result: Record<string, unknown> = { small: { secrets: opts.seedSmall, clients: opts.clientsSmall }, large: { secrets: opts.seedLarge, clients: opts.clientsLarge } };
  for (const kind of opts.databases) {
    const sides: Record<'small' | 'large', Awaited<ReturnType<typeof seeded>> | undefined> = { small: undefined, large: undefined };
    try {
      sides.small = await seeded(kind, 'small', opts.seedSmall, opts.clientsSmall);
      sides.large = await seeded(kind, 'large', opts.seedLarge, opts.clientsLarge);
      const runs: Record<'small' | 'large', Measured[]> = { small: [], large: [] };
      const rps: number[] = [];
      const cpu: number[] = [];
      const run = async (side: 'small' | 'large', label: string) => {
        const { broker, creds } = sides[side]!;
        await settle(broker);
        const { url, header } = await deliveryHeader(broker.base, creds);
        const r = await measure(broker, url, [header]);
        log(`(f) ${databaseLabel(kind)} ${side} (${label}): ${fmt(r)}`);
        return r;
      };
      for (let i = 0; i < opts.repeat; i++) {
        const s = await run('small', `run ${i + 1}/${opts.repeat}`);
        const l = await run('large', `run ${i + 1}/${opts.repeat}`);
        runs.small.push(s);
        runs.large.push(l);
        rps.push(l.rps / s.rps);
        cpu.push(l.serverCpuMsPerRequest / s.serverCpuMsPerRequest);
      }
      result[kind] = {
        largeOverSmall: { rps: round(medianOf(rps), 3), serverCpuPerDelivery: round(medianOf(cpu), 3) },
        seed: { small: sides.small.seed, large: sides.large.seed },
        runs,
      };
      log(`(f) ${databaseLabel(kind)}: large ÷ small req/s ${round(medianOf(rps), 3)}, CPU per delivery ${round(medianOf(cpu), 3)}`);
    } finally {
      for (const side of Object.values(sides)) {
        if (!side) continue;
        await stop(side.broker.child);
        await dropStore(side.broker.store!);
      }
    }
  }
  return result;
}
