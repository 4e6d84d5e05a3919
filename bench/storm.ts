// The client side of a startup storm (issue 27, target 5): each client of --clients-file (a JSON
// array of { clientId, clientSecret }) does what a container does when it starts: on its own
// keep-alive connection, POST /v1/auth/token (client_credentials), then GET each of --secrets,
// one after another.
//   --mode storm:  every client starts at once, as a fleet does after a host restart;
//   --mode spread: the same clients, --concurrency at a time (the next one starts when one
//                  ends), so the same requests arrive as a steady stream at the rate the broker
//                  sustains: its wall time is what the same work takes without the burst.
// Prints one JSON line: wall time, per-request latency percentiles (ms; all requests, tokens,
// reads), status counts (2xx, 429, 5xx, other, connection errors), and sessions completed.
// Usage: node --import tsx bench/storm.ts --base http://127.0.0.1:PORT --clients-file F
//          --secrets a,b,c [--mode storm|spread] [--concurrency 16]
import fs from 'node:fs';
import http from 'node:http';
import { parseArgs } from 'node:util';
import { percentiles, round } from './audit-bench-support.js';

const { values } = parseArgs({
  options: {
    base: { type: 'string' },
    'clients-file': { type: 'string' },
    secrets: { type: 'string' },
    mode: { type: 'string', default: 'storm' },
    concurrency: { type: 'string', default: '16' },
    // a request unanswered this long counts as an error and ends its session
    timeout: { type: 'string', default: '60' },
  },
});
const base = new URL(values.base!);
if (base.hostname !== '127.0.0.1') throw new Error('storm only targets 127.0.0.1');
const clients = JSON.parse(fs.readFileSync(values['clients-file']!, 'utf8')) as Array<{ clientId: string; clientSecret: string }>;
const secrets = values.secrets!.split(',');
const timeoutMs = Number(values.timeout) * 1000;

const statuses = { ok: 0, tooMany: 0, serverError: 0, other: 0, errors: 0 };
const latency = { all: [] as number[], token: [] as number[], read: [] as number[] };
let sessionsCompleted = 0;
const firstProblems: string[] = [];

function request(agent: http.Agent, method: string, path: string, headers: Record<string, string>, body?: string): Promise<{ status: number; body: string } | undefined> {
  return new Promise((resolve) => {
    const req = http.request({ host: base.hostname, port: base.port, path, method, agent, headers, timeout: timeoutMs }, (res) => {
      let text = '';
      res.setEncoding('utf8');
      res.on('data', (d) => (text += d));
      res.on('end', () => resolve({ status: res.statusCode!, body: text }));
      res.on('error', () => resolve(undefined));
    });
    req.on('timeout', () => req.destroy(new Error('timeout')));
    req.on('error', (err) => {
      if (firstProblems.length < 5) firstProblems.push(`${method} ${path}: ${err.message}`);
      resolve(undefined);
    });
    req.end(body);
  });
}

/** One request, timed and counted; the answer when it was a 2xx. */
async function timed(kind: 'token' | 'read', agent: http.Agent, method: string, path: string, headers: Record<string, string>, body?: string): Promise<string | undefined> {
  const t0 = performance.now();
  const r = await request(agent, method, path, headers, body);
  const ms = performance.now() - t0;
  latency.all.push(ms);
  latency[kind].push(ms);
  if (!r) {
    statuses.errors++;
    return undefined;
  }
  if (r.status >= 200 && r.status < 300) {
    statuses.ok++;
    return r.body;
  }
  if (r.status === 429) statuses.tooMany++;
  else if (r.status >= 500) statuses.serverError++;
  else statuses.other++;
  if (firstProblems.length < 5) firstProblems.push(`${method} ${path}: ${r.status} ${r.body.slice(0, 200)}`);
  return undefined;
}

async function session(c: { clientId: string; clientSecret: string }): Promise<void> {
  // one connection per client, as each container has its own
  const agent = new http.Agent({ keepAlive: true, maxSockets: 1 });
  try {
    const form = new URLSearchParams({ grant_type: 'client_credentials', client_id: c.clientId, client_secret: c.clientSecret }).toString();
    const tokenBody = await timed('token', agent, 'POST', '/v1/auth/token', { 'content-type': 'application/x-www-form-urlencoded', 'content-length': String(Buffer.byteLength(form)) }, form);
    if (!tokenBody) return;
    const auth = { authorization: `Bearer ${(JSON.parse(tokenBody) as { access_token: string }).access_token}` };
    for (const s of secrets) if ((await timed('read', agent, 'GET', `/v1/client/secrets/${encodeURIComponent(s)}`, auth)) === undefined) return;
    sessionsCompleted++;
  } finally {
    agent.destroy();
  }
}

const t0 = performance.now();
if (values.mode === 'storm') {
  await Promise.all(clients.map(session));
} else if (values.mode === 'spread') {
  let next = 0;
  await Promise.all(
    Array.from({ length: Number(values.concurrency) }, async () => {
      while (next < clients.length) await session(clients[next++]);
    }),
  );
} else {
  throw new Error(`--mode must be storm or spread, not ${values.mode}`);
}
const wallS = (performance.now() - t0) / 1000;
const requests = latency.all.length;
process.stdout.write(
  JSON.stringify({
    mode: values.mode,
    ...(values.mode === 'spread' ? { concurrency: Number(values.concurrency) } : {}),
    clients: clients.length,
    secretsPerClient: secrets.length,
    sessionsCompleted,
    requests,
    wallS: round(wallS, 2),
    requestsPerSecond: round(requests / wallS, 1),
    statuses,
    latencyMs: { all: percentiles(latency.all), token: percentiles(latency.token), read: percentiles(latency.read) },
    firstProblems,
  }) + '\n',
);
process.exit(0);
