// An open-loop HTTP load generator (wrk2 is not packaged here): requests are sent at a fixed
// rate whatever the answers do, on a pool of keep-alive connections, and each request's latency
// is measured from the time it was SCHEDULED to be sent, not from when a free connection let it
// go: a server stall shows up as the latency of every request that should have been sent during
// it (no coordinated omission). A timer wakes every millisecond and sends every request due by
// then; answers are never awaited before the next send.
// Prints one JSON line: target rate, achieved rate (measured answers ÷ the time from the first
// measured send to the last answer),
// sent/completed/non-2xx/errors/unanswered of the measured requests, their latency percentiles
// (ms, from the scheduled time) and, for comparison with closed-loop tools, serviceLatencyMs (from
// when the request got a connection and was written).
// Usage: node --import tsx bench/open-loop.ts --url http://127.0.0.1:PORT/path --rate 1000 -d 10
//          [-c 128] [--warmup 1] [-H 'Name: value']...
import http from 'node:http';
import { parseArgs } from 'node:util';
import { percentiles, round } from './audit-bench-support.js';

const { values } = parseArgs({
  options: {
    url: { type: 'string' },
    rate: { type: 'string', default: '1000' },
    duration: { type: 'string', short: 'd', default: '10' },
    connections: { type: 'string', short: 'c', default: '128' },
    header: { type: 'string', short: 'H', multiple: true, default: [] },
    warmup: { type: 'string', default: '1' },
    // how long to wait for the last answers after the last send
    drain: { type: 'string', default: '5' },
  },
});
if (!values.url) throw new Error('--url is required');
const url = new URL(values.url);
if (url.hostname !== '127.0.0.1') throw new Error('open-loop only targets 127.0.0.1');
const rate = Number(values.rate);
const durationMs = Number(values.duration) * 1000;
const warmupMs = Number(values.warmup) * 1000;
const connections = Number(values.connections);
const headers: Record<string, string> = {};
for (const h of values.header ?? []) {
  const i = h.indexOf(':');
  headers[h.slice(0, i).trim()] = h.slice(i + 1).trim();
}

// requests beyond `connections` in flight wait in the agent's queue: their wait counts, since
// latency runs from the scheduled time
const agent = new http.Agent({ keepAlive: true, maxSockets: connections, maxFreeSockets: connections });
const latenciesMs: number[] = [];
/** from when the request got a connection (and was written) to its answer: what a closed-loop tool would report */
const serviceMs: number[] = [];
let sent = 0;
let completed = 0;
/** when the last measured request was answered: the achieved rate is answers ÷ (that − first measured send) */
let lastAnswerMs = 0;
/** every answer, warm-up ones included: what the server's CPU over the whole run is divided by */
let answeredTotal = 0;
let non2xx = 0;
let errors = 0;
let inFlight = 0;
let maxInFlight = 0;
const nowMs = () => Number(process.hrtime.bigint()) / 1e6;

function send(scheduledMs: number, measured: boolean): void {
  sent += measured ? 1 : 0;
  inFlight++;
  maxInFlight = Math.max(maxInFlight, inFlight);
  let onSocketMs = NaN;
  const done = (ok: boolean, status?: number) => {
    inFlight--;
    const at = nowMs();
    if (ok) answeredTotal++;
    if (!measured) return;
    if (!ok) {
      errors++;
      return;
    }
    completed++;
    lastAnswerMs = at;
    latenciesMs.push(at - scheduledMs);
    serviceMs.push(at - onSocketMs);
    if (status! < 200 || status! >= 300) non2xx++;
  };
  const req = http.request({ host: url.hostname, port: url.port, path: url.pathname + url.search, method: 'GET', agent, headers }, (res) => {
    res.on('data', () => {});
    res.on('end', () => done(true, res.statusCode));
    res.on('error', () => done(false));
  });
  req.on('socket', () => (onSocketMs = nowMs()));
  req.on('error', () => done(false));
  req.end();
}

const intervalMs = 1000 / rate;
const start = nowMs();
const measureFrom = start + warmupMs;
const end = measureFrom + durationMs;
let next = 0; // index of the next request to send; request i is due at start + i * intervalMs
await new Promise<void>((resolve) => {
  const tick = () => {
    const now = nowMs();
    for (;;) {
      const due = start + next * intervalMs;
      if (due > now || due >= end) break;
      send(due, due >= measureFrom);
      next++;
    }
    if (start + next * intervalMs >= end) return resolve();
    setTimeout(tick, 1);
  };
  tick();
});
const lastSend = nowMs();
const drainUntil = lastSend + Number(values.drain) * 1000;
while (inFlight > 0 && nowMs() < drainUntil) await new Promise((r) => setTimeout(r, 5));
const unanswered = inFlight;
agent.destroy();

const windowS = (lastSend - measureFrom) / 1000;
process.stdout.write(
  JSON.stringify({
    tool: 'bench/open-loop.ts',
    targetRate: rate,
    connections,
    durationS: round(windowS, 2),
    sent,
    completed,
    answeredTotal,
    non2xx,
    errors,
    unanswered,
    maxInFlight,
    // measured answers per second, from the first measured send to the last answer: below the
    // target when the server cannot keep up (unanswered requests are not in it)
    achievedRate: round(completed / Math.max(1e-9, (lastAnswerMs - measureFrom) / 1000), 1),
    sendRate: round(sent / windowS, 1),
    latencyMs: percentiles(latenciesMs, 2),
    serviceLatencyMs: percentiles(serviceMs, 2),
  }) + '\n',
);
process.exit(0);
