// Bench only: puts back helper V1's always-on LIST rewrite (issue 14, before list-connection.ts)
// in a broker process, to measure what it cost. Loaded with `--import` after tsx by bench/run.ts
// (scenario v). Every HTTP(S) server created in the process gets V1's `acceptListMethod`: each
// connection's bytes go through ListRequestRewriter in JavaScript, and adding the 'data'
// listener moves the socket off the parser's native read path.
import http from 'node:http';
import https from 'node:https';
import type { Duplex } from 'node:stream';
import { ListRequestRewriter } from '../src/http/list-method.js';

function acceptListMethodAlways(server: http.Server | https.Server): void {
  const event = server instanceof https.Server ? 'secureConnection' : 'connection';
  server.on(event, (socket: Duplex) => {
    const rewriter = new ListRequestRewriter();
    const emit = socket.emit;
    socket.emit = function (this: Duplex, name: string | symbol, ...args: unknown[]) {
      if (name === 'data' && Buffer.isBuffer(args[0])) {
        const bytes = rewriter.push(args[0]);
        if (bytes.length === 0) return true;
        return emit.call(this, 'data', bytes);
      }
      return emit.call(this, name, ...args);
    } as typeof socket.emit;
    socket.on('data', () => {});
  });
}

const createHttp = http.createServer;
const createHttps = https.createServer;
(http as { createServer: unknown }).createServer = function (this: unknown, ...args: unknown[]) {
  const server = (createHttp as (...a: unknown[]) => http.Server).apply(this, args);
  acceptListMethodAlways(server);
  return server;
};
(https as { createServer: unknown }).createServer = function (this: unknown, ...args: unknown[]) {
  const server = (createHttps as (...a: unknown[]) => https.Server).apply(this, args);
  acceptListMethodAlways(server);
  return server;
};
process.stderr.write('[bench] always-on LIST rewrite installed (V1)\n');
