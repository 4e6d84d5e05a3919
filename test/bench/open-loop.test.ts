// bench/open-loop.ts must count a request's wait from its SCHEDULED send time (no coordinated
// omission): when the server stalls, the requests due during the stall wait behind it on the
// generator's side (one connection here), and their latency must include that wait. The stall is
// forced (the server's loop is held), so the bounds below are lower bounds the stall imposes,
// not speeds.
import { spawn } from 'node:child_process';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterEach, describe, expect, it } from 'vitest';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');
let server: http.Server | undefined;

afterEach(async () => {
  await new Promise((r) => server?.close(r) ?? r(undefined));
  server = undefined;
});

function runOpenLoop(args: string[]): Promise<any> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, ['--import', 'tsx', path.join(root, 'bench', 'open-loop.ts'), ...args], { cwd: root, stdio: ['ignore', 'pipe', 'inherit'] });
    let out = '';
    child.stdout.setEncoding('utf8').on('data', (d) => (out += d));
    child.on('error', reject);
    child.on('exit', (code) => (code === 0 ? resolve(JSON.parse(out.trim().split('\n').pop()!)) : reject(new Error(`open-loop exited with ${code}`))));
  });
}

describe('bench/open-loop.ts', () => {
  it('sends at the scheduled rate and counts the wait behind a stalled server in every delayed request', async () => {
    const STALL_MS = 400;
    let seen = 0;
    server = http.createServer((_req, res) => {
      // the 100th request (into the measured second) holds the server's loop, as a long GC or a synchronous batch would
      if (++seen === 100) {
        const until = Date.now() + STALL_MS;
        while (Date.now() < until) {
          /* the stall */
        }
      }
      res.end('ok');
    });
    await new Promise<void>((r) => server!.listen(0, '127.0.0.1', r));
    const { port } = server.address() as AddressInfo;
    const r = await runOpenLoop(['--url', `http://127.0.0.1:${port}/`, '--rate', '200', '-d', '1', '-c', '1', '--warmup', '0.2']);

    expect(r.sent).toBe(200);
    expect(r.completed).toBe(200);
    expect(r.errors + r.non2xx + r.unanswered).toBe(0);
    // the request in flight during the stall waited for all of it
    expect(r.latencyMs.max).toBeGreaterThanOrEqual(STALL_MS - 10);
    // about 80 requests were due during the stall, queued behind the one connection: from their
    // scheduled times, over a fifth of all measured requests waited at least a quarter of the stall
    expect(r.latencyMs.p90).toBeGreaterThanOrEqual(STALL_MS / 4);
    // measured from when each was written instead, the queued ones look fast: the gap is the omission the generator avoids
    expect(r.serviceLatencyMs.p90).toBeLessThan(r.latencyMs.p90);
  });
});
