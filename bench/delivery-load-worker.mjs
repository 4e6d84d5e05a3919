// The client side of bench/audit-heavy-pass.ts, in a worker thread with its own event loop, so
// that what the bench measures is the broker's loop, not its own clients' work on the same loop.
// `workers` clients deliver in a loop (a new access token, then GET the secret) and one prober
// asks /healthz every 50 ms, until the parent posts 'stop'; then the timings are posted back.
// With `scrapeMs` it also GETs /metrics that often, as a Prometheus server would (bench/loop-stalls.ts).
import { parentPort, workerData } from 'node:worker_threads';

// plain JavaScript: Node 20's worker threads do not take the tsx loader the bench runs under
/** @type {{ base: string, workers: number, clientId: string, clientSecret: string, scrapeMs?: number }} */
const { base, workers, clientId, clientSecret, scrapeMs } = workerData;
if (!new URL(base).hostname.startsWith('127.')) throw new Error('the bench load only targets loopback');

async function deliver() {
  const started = performance.now();
  const token = await fetch(`${base}/v1/auth/token`, {
    method: 'POST',
    headers: { 'content-type': 'application/x-www-form-urlencoded' },
    body: new URLSearchParams({ grant_type: 'client_credentials', client_id: clientId, client_secret: clientSecret }),
  });
  if (token.status !== 200) throw new Error(`token: ${token.status} ${await token.text()}`);
  const { access_token } = (await token.json());
  const read = await fetch(`${base}/v1/client/secrets/bench-secret`, { headers: { authorization: `Bearer ${access_token}` } });
  if (read.status !== 200) throw new Error(`read: ${read.status} ${await read.text()}`);
  await read.arrayBuffer();
  return performance.now() - started;
}

let running = true;
parentPort.on('message', (m) => {
  if (m === 'stop') running = false;
});
const latencies = [];
const health = [];
const loops = Array.from({ length: workers }, async () => {
  while (running) latencies.push(await deliver());
});
const prober = (async () => {
  while (running) {
    const s = performance.now();
    await (await fetch(`${base}/healthz`)).arrayBuffer();
    health.push(performance.now() - s);
    await new Promise((r) => setTimeout(r, 50));
  }
})();
const scrapes = [];
const scraper = (async () => {
  while (running && scrapeMs) {
    const s = performance.now();
    const res = await fetch(`${base}/metrics`);
    if (res.status !== 200) throw new Error(`metrics: ${res.status}`);
    await res.arrayBuffer();
    scrapes.push(performance.now() - s);
    await new Promise((r) => setTimeout(r, scrapeMs));
  }
})();
parentPort.postMessage({ started: true });
await Promise.all([...loops, prober, scraper]);
parentPort.postMessage({ latencies, health, scrapes });
