// Reference point for (b): the required web framework (Express 5) answering the same small JSON
// body as the bare node:http baseline, with no middleware. The gap between this and
// baseline-server.ts is the framework's own cost, before any broker work.
// Usage: node --import tsx bench/express-baseline-server.ts PORT
import express from 'express';

const port = Number(process.argv[2] ?? 0);
const body = { name: 'bench-secret', version: 1, content: 'aHVudGVyMg==', checksum: '0'.repeat(64) };
const app = express();
app.disable('x-powered-by');
app.set('etag', false);
app.get('/v1/client/secrets/:name', (_req, res) => {
  res.json(body);
});
app.listen(port, '127.0.0.1', () => process.stdout.write(`listening ${port}\n`));
