import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { api, createStore, dropStore, fmt, loadOptions, log, measure, median, root, setupBroker, startBroker, stop, token, type Measured } from './harness.js';

// (v) Vault KV read vs native delivery (issue 14), on SQLite.
/**
 * The same KV-shaped secret, granted to the bench client, read four ways, alternating `repeat`
 * times (median by req/s): the native route and the KV v2 route of the broker as it is (LIST
 * connections taken over on demand, list-connection.ts); the native route of a broker with helper
 * V1's always-on LIST rewrite put back (bench/always-on-list-rewrite.ts); and the KV route on
 * connections whose first request was a LIST (so they run through the rewriter). Each broker has
 * its own data dir; both run throughout, one is loaded at a time. Every run goes through the same
 * wrk Lua script, so the load generator does the same work in all four.
 */
export async function vaultScenario(repeat: number): Promise<Record<string, unknown>> {
  const current = await startBroker(await createStore('sqlite', 'v'));
  const always = await startBroker(await createStore('sqlite', 'v1'), { preload: ['--import', path.join(root, 'bench', 'always-on-list-rewrite.ts')] });
  const connections = loadOptions.connections;
  const scripts = fs.mkdtempSync(path.join(os.tmpdir(), 'keywarden-bench-lua-'));
  try {
    const setup = async (base: string) => {
      const creds = await setupBroker(base);
      await api(base, 'PUT', '/v1/secret/data/bench-kv', { data: { password: 'correct horse battery staple' } });
      await api(base, 'PUT', '/v1/groups/bench/secrets', { add: ['bench-kv'] });
      return creds;
    };
    const credsNew = await setup(current.base);
    const credsOld = await setup(always.base);
    // `lists` requests (one per connection at the start, as wrk writes each connection's first
    // request before any answer) are LIST /v1/secret/metadata/; the rest are the measured GET.
    // wrk checks the first request() result with its own parser, which refuses LIST: call 1 is a GET
    const script = (lists: number) => {
      const file = path.join(scripts, `list-${lists}.lua`);
      fs.writeFileSync(file, `local n = 0\nrequest = function()\n  n = n + 1\n  if n > 1 and n <= ${lists + 1} then return wrk.format("LIST", "/v1/secret/metadata/") end\n  return wrk.format(nil, nil)\nend\n`);
      return file;
    };
    const scenarios = [
      { key: 'native', label: 'native GET /v1/client/secrets/bench-kv', broker: current, creds: credsNew, path: '/v1/client/secrets/bench-kv', header: 'Authorization: Bearer', lists: 0 },
      { key: 'nativeAlwaysOnRewrite', label: 'native, V1 always-on LIST rewrite', broker: always, creds: credsOld, path: '/v1/client/secrets/bench-kv', header: 'Authorization: Bearer', lists: 0 },
      { key: 'kv', label: 'KV v2 GET /v1/secret/data/bench-kv', broker: current, creds: credsNew, path: '/v1/secret/data/bench-kv', header: 'X-Vault-Token:', lists: 0 },
      { key: 'kvAfterList', label: 'KV v2 on connections that sent LIST first', broker: current, creds: credsNew, path: '/v1/secret/data/bench-kv', header: 'X-Vault-Token:', lists: connections },
    ];
    const runs: Record<string, Measured[]> = Object.fromEntries(scenarios.map((s) => [s.key, []]));
    const once = async (s: (typeof scenarios)[number], label: string) => {
      const t = await token(s.broker.base, s.creds);
      const header = `${s.header} ${t}`;
      const check = await fetch(s.broker.base + s.path, { headers: { [header.split(':')[0]]: header.slice(header.indexOf(':') + 1).trim() } });
      if (check.status !== 200) throw new Error(`${s.key} check: ${check.status} ${await check.text()}`);
      await check.arrayBuffer();
      const r = await measure(s.broker, s.broker.base + s.path, [header], script(s.lists));
      log(`(v) ${s.label}, ${label}: ${fmt(r)}`);
      return r;
    };
    for (const s of scenarios) await once(s, 'warm-up (discarded)');
    for (let i = 0; i < repeat; i++) for (const s of scenarios) runs[s.key].push(await once(s, `run ${i + 1}/${repeat}`));
    const m = Object.fromEntries(scenarios.map((s) => [s.key, median(runs[s.key], (r) => r.rps)]));
    const cpu = (k: string) => m[k].serverCpuMsPerRequest;
    const ratios = {
      kvCpuPerRequestOverNative: cpu('kv') / cpu('native'),
      kvRpsOverNative: m.kv.rps / m.native.rps,
      kvAfterListCpuPerRequestOverNative: cpu('kvAfterList') / cpu('native'),
      alwaysOnCpuPerRequestOverNative: cpu('nativeAlwaysOnRewrite') / cpu('native'),
      alwaysOnRpsOverNative: m.nativeAlwaysOnRewrite.rps / m.native.rps,
    };
    log(`(v) ratios: ${JSON.stringify(ratios)}`);
    return { medians: m, runs, ratios };
  } finally {
    for (const b of [current, always]) {
      await stop(b.child);
      await dropStore(b.store!);
    }
    fs.rmSync(scripts, { recursive: true, force: true });
  }
}
