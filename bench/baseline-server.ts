// (a) Baseline: a bare node:http server answering a small JSON body. No framework, no database.
// Usage: node --import tsx bench/baseline-server.ts <port>
import http from 'node:http';

const port = Number(process.argv[2] ?? 18080);
const body = JSON.stringify({ name: 'bench', version: 1, content: 'c2VjcmV0LXZhbHVl', checksum: 'x'.repeat(64) });

const server = http.createServer((_req, res) => {
  res.writeHead(200, { 'content-type': 'application/json; charset=utf-8', 'content-length': Buffer.byteLength(body) });
  res.end(body);
});
server.keepAliveTimeout = 65_000;
server.listen(port, '127.0.0.1', () => {
  process.stdout.write(`listening ${port}\n`);
});
process.on('SIGTERM', () => server.close(() => process.exit(0)));
