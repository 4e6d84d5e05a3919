// A small closed-loop HTTP load generator (fallback when `wrk` is not installed).
// N keep-alive connections, each sends the next request as soon as the previous answer arrives,
// for a fixed duration. Prints one JSON line: requests, non-2xx, errors, req/s, latency percentiles (ms).
// Usage: node --import tsx bench/loadgen.ts --url http://127.0.0.1:PORT/path -c 16 -d 10 [-H 'Name: value']...
import http from 'node:http';
import { parseArgs } from 'node:util';

const { values } = parseArgs({
  options: {
    url: { type: 'string' },
    connections: { type: 'string', short: 'c', default: '16' },
    duration: { type: 'string', short: 'd', default: '10' },
    header: { type: 'string', short: 'H', multiple: true, default: [] },
    warmup: { type: 'string', default: '1' },
  },
});
if (!values.url) throw new Error('--url is required');
const url = new URL(values.url);
if (url.hostname !== '127.0.0.1') throw new Error('loadgen only targets 127.0.0.1');
const connections = Number(values.connections);
const durationMs = Number(values.duration) * 1000;
const warmupMs = Number(values.warmup) * 1000;
const headers: Record<string, string> = {};
for (const h of values.header ?? []) {
  const i = h.indexOf(':');
  headers[h.slice(0, i).trim()] = h.slice(i + 1).trim();
}

const agent = new http.Agent({ keepAlive: true, maxSockets: connections, maxFreeSockets: connections });
const latenciesUs: number[] = [];
let ok = 0;
let non2xx = 0;
let errors = 0;
let measuring = false;
let stopping = false;

function one(): Promise<void> {
  return new Promise((resolve) => {
    const start = process.hrtime.bigint();
    const req = http.request({ host: url.hostname, port: url.port, path: url.pathname + url.search, method: 'GET', agent, headers }, (res) => {
      res.on('data', () => {});
      res.on('end', () => {
        if (measuring) {
          latenciesUs.push(Number((process.hrtime.bigint() - start) / 1000n));
          if (res.statusCode! >= 200 && res.statusCode! < 300) ok++;
          else non2xx++;
        }
        resolve();
      });
    });
    req.on('error', () => {
      if (measuring) errors++;
      resolve();
    });
    req.end();
  });
}

async function worker() {
  while (!stopping) await one();
}

const workers = Array.from({ length: connections }, () => worker());
await new Promise((r) => setTimeout(r, warmupMs));
measuring = true;
const t0 = process.hrtime.bigint();
await new Promise((r) => setTimeout(r, durationMs));
measuring = false;
const elapsedS = Number(process.hrtime.bigint() - t0) / 1e9;
stopping = true;
await Promise.all(workers);
agent.destroy();

latenciesUs.sort((a, b) => a - b);
const pct = (p: number) => (latenciesUs.length ? latenciesUs[Math.min(latenciesUs.length - 1, Math.floor((p / 100) * latenciesUs.length))] / 1000 : NaN);
process.stdout.write(
  JSON.stringify({
    tool: 'node-loadgen',
    connections,
    durationS: elapsedS,
    requests: ok + non2xx,
    non2xx,
    errors,
    rps: (ok + non2xx) / elapsedS,
    p50: pct(50),
    p90: pct(90),
    p99: pct(99),
    max: latenciesUs.length ? latenciesUs[latenciesUs.length - 1] / 1000 : NaN,
  }) + '\n',
);
