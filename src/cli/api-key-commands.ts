/**
 * `keywarden api-key create|list|revoke`: operator API keys over the broker's HTTP API
 * (POST/GET /v1/api-keys, DELETE /v1/api-keys/{id}), for automation that holds an admin key.
 * Reads KEYWARDEN_ADDR, KEYWARDEN_API_KEY (or --api-key-file) and KEYWARDEN_CA; the requests go
 * through the client commands' transport and error classification (cli/client/http-transport.ts).
 *
 * Exit codes: 0 ok, 1 the broker refused the request (400, 404, ...: its problem detail is
 * printed), 64 usage error, 69 broker unreachable or failing (5xx), 70 unexpected answer,
 * 77 the API key was refused (401) or lacks the admin role (403).
 */
import fs from 'node:fs';
import type { Command } from 'commander';
import { OPERATOR_ROLES, type OperatorRole } from '../core/principal.js';
import { brokerAddrFromEnv, caFromEnv } from './client/broker-client.js';
import { CliError } from './client/exit-codes.js';
import { exitCodesHelp } from './help.js';
import { classifyNetworkError, createAgent, nodeTransport, TransientError, type HttpRequest, type HttpResponse } from './client/http-transport.js';

export const ApiKeyExit = { OK: 0, REFUSED: 1, USAGE: 64, UNREACHABLE: 69, INTERNAL: 70, DENIED: 77 } as const;

const ENV_HELP = `
Environment: KEYWARDEN_ADDR (broker URL), KEYWARDEN_API_KEY (an admin API key; or --api-key-file),
KEYWARDEN_CA (PEM CA bundle for an https broker with a private CA).`;

const EXIT_CODES = {
  0: 'ok',
  1: 'the broker refused the request (its problem detail is printed)',
  64: 'usage error',
  69: 'broker unreachable, or failing with 5xx',
  70: 'unexpected answer',
  77: 'the API key was refused (401) or is not an admin key (403)',
};

class ApiKeyCliError extends Error {
  constructor(
    readonly exitCode: number,
    message: string,
  ) {
    super(message);
  }
}

const usage = (message: string) => new ApiKeyCliError(ApiKeyExit.USAGE, message);

const NAME = /^[A-Za-z0-9._@-]{1,128}$/;
const KEY_ID = /^[A-Za-z0-9_-]{1,32}$/;
const SIGNING_KEY_NAME = /^[A-Za-z0-9._-]{1,128}$/;
const TTL_MIN_SECONDS = 60;
const TTL_MAX_SECONDS = 10 * 365 * 86400;
const UNIT_SECONDS: Record<string, number> = { s: 1, m: 60, h: 3600, d: 86400, w: 7 * 86400 };

/**
 * A key's lifetime in seconds from `90m`, `24h`, `7d`, `4w`, `3600s` or an ISO 8601 time in the
 * future; undefined for `never` (when allowed). Between a minute and ten years, as the broker
 * accepts. Throws an Error saying what is wrong.
 */
export function parseExpires(value: string, options: { allowNever?: boolean; now?: number } = {}): number | undefined {
  const text = value.trim();
  if (options.allowNever && text === 'never') return undefined;
  let seconds: number;
  const m = /^(\d{1,10})([smhdw])$/.exec(text);
  if (m) {
    seconds = Number(m[1]) * UNIT_SECONDS[m[2]];
  } else if (/^\d{4}-\d{2}-\d{2}(T[\d:.]+(Z|[+-]\d{2}:?\d{2})?)?$/.test(text) && !Number.isNaN(Date.parse(text))) {
    seconds = Math.ceil((Date.parse(text) - (options.now ?? Date.now())) / 1000);
    if (seconds <= 0) throw new Error(`${text} is in the past`);
  } else {
    throw new Error(`must be a duration such as 90m, 24h, 7d or 4w, or an ISO 8601 time${options.allowNever ? ', or "never"' : ''} (got ${JSON.stringify(value)})`);
  }
  if (seconds < TTL_MIN_SECONDS) throw new Error('must be at least one minute');
  if (seconds > TTL_MAX_SECONDS) throw new Error('must be at most ten years');
  return seconds;
}

interface CommonOptions {
  apiKeyFile?: string;
  timeout: string;
}

interface Broker {
  addr: string;
  send(method: 'GET' | 'POST' | 'DELETE', path: string, body?: unknown): Promise<HttpResponse>;
  close(): void;
}

function readApiKey(opts: CommonOptions, env: NodeJS.ProcessEnv): string {
  if (opts.apiKeyFile) {
    let text: string;
    try {
      text = fs.readFileSync(opts.apiKeyFile, 'utf8');
    } catch (err) {
      throw usage(`--api-key-file: cannot read ${opts.apiKeyFile} (${(err as NodeJS.ErrnoException).code ?? 'error'})`);
    }
    const key = text.trim();
    if (!key) throw usage(`--api-key-file: ${opts.apiKeyFile} is empty`);
    return key;
  }
  const key = env.KEYWARDEN_API_KEY?.trim();
  if (!key) throw usage('KEYWARDEN_API_KEY is not set (or pass --api-key-file FILE)');
  return key;
}

/** KEYWARDEN_ADDR, KEYWARDEN_CA and the API key, checked before anything is sent. */
function connect(opts: CommonOptions, env: NodeJS.ProcessEnv): Broker {
  const timeoutSeconds = Number(opts.timeout);
  if (!Number.isFinite(timeoutSeconds) || timeoutSeconds <= 0 || timeoutSeconds > 3600) throw usage('--timeout must be a number of seconds between 0 and 3600');
  let addr: string;
  let ca: Buffer | undefined;
  try {
    addr = brokerAddrFromEnv(env);
    ca = caFromEnv(env);
  } catch (e) {
    if (e instanceof CliError) throw new ApiKeyCliError(e.exitCode, e.message);
    throw e;
  }
  const apiKey = readApiKey(opts, env);
  const agent = createAgent(addr, { ca });
  const transport = nodeTransport(addr, agent);
  return {
    addr,
    async send(method, path, body) {
      const headers: Record<string, string> = { authorization: `Bearer ${apiKey}`, accept: 'application/json' };
      if (body !== undefined) headers['content-type'] = 'application/json';
      try {
        // the transport passes the method through as it is (its type names only the methods the client routes use)
        return await transport({ method: method as HttpRequest['method'], path, headers, body: body === undefined ? undefined : JSON.stringify(body), timeoutMs: timeoutSeconds * 1000 });
      } catch (err) {
        const e = classifyNetworkError(err, addr);
        if (e instanceof TransientError) throw new ApiKeyCliError(ApiKeyExit.UNREACHABLE, `broker at ${addr} is unreachable: ${e.reason}`);
        if (e instanceof CliError) throw new ApiKeyCliError(e.exitCode, e.message);
        throw e;
      }
    },
    close() {
      agent.destroy();
    },
  };
}

function parseBody(res: HttpResponse): unknown {
  try {
    return res.body.length ? JSON.parse(res.body.toString('utf8')) : undefined;
  } catch {
    return undefined;
  }
}

/** `HTTP 403 forbidden: <detail>` from a problem document. */
function problemText(res: HttpResponse): string {
  const p = parseBody(res);
  const doc = p && typeof p === 'object' ? (p as { code?: unknown; detail?: unknown; title?: unknown; errors?: unknown }) : {};
  let text = `HTTP ${res.status}`;
  if (typeof doc.code === 'string') text += ` ${doc.code}`;
  const detail = typeof doc.detail === 'string' ? doc.detail : typeof doc.title === 'string' ? doc.title : undefined;
  if (detail) text += `: ${detail.slice(0, 500)}`;
  return text;
}

/** Throws for any answer but `expected`: 401/403 → 77, 5xx → 69, other 4xx → 1, anything else → 70. */
function expectStatus(res: HttpResponse, expected: number, what: string): void {
  if (res.status === expected) return;
  if (res.status === 401 || res.status === 403) throw new ApiKeyCliError(ApiKeyExit.DENIED, `${what}: the broker refused the API key (${problemText(res)})`);
  if (res.status >= 500) throw new ApiKeyCliError(ApiKeyExit.UNREACHABLE, `${what}: the broker failed (${problemText(res)})`);
  if (res.status >= 400) throw new ApiKeyCliError(ApiKeyExit.REFUSED, `${what}: ${problemText(res)}`);
  throw new ApiKeyCliError(ApiKeyExit.INTERNAL, `${what}: unexpected answer (${problemText(res)})`);
}

interface ApiKeyView {
  id: string;
  name: string;
  role: string;
  createdBy: string;
  createdAt: string;
  expiresAt: string | null;
  revokedAt: string | null;
  scope?: { keys: string[]; images: string[] };
}

function isApiKeyView(v: unknown): v is ApiKeyView {
  const k = v as ApiKeyView;
  return !!k && typeof k === 'object' && typeof k.id === 'string' && typeof k.name === 'string' && typeof k.role === 'string' && typeof k.createdAt === 'string';
}

function statusOf(k: ApiKeyView, now: number): string {
  if (k.revokedAt) return 'revoked';
  if (k.expiresAt && Date.parse(k.expiresAt) <= now) return 'expired';
  return 'active';
}

function table(rows: string[][]): string {
  const widths = rows[0].map((_, i) => Math.max(...rows.map((r) => r[i].length)));
  return rows.map((r) => r.map((cell, i) => (i === r.length - 1 ? cell : cell.padEnd(widths[i]))).join('  ')).join('\n') + '\n';
}

interface Io {
  env: NodeJS.ProcessEnv;
  out: NodeJS.WritableStream;
  err: NodeJS.WritableStream;
}

const defaultIo = (): Io => ({ env: process.env, out: process.stdout, err: process.stderr });

async function run(io: Io, fn: () => Promise<void>): Promise<number> {
  try {
    await fn();
    return ApiKeyExit.OK;
  } catch (e) {
    if (e instanceof ApiKeyCliError) {
      io.err.write(`keywarden: ${e.message}\n`);
      return e.exitCode;
    }
    io.err.write(`keywarden: internal error: ${(e as Error)?.message ?? String(e)}\n`);
    return ApiKeyExit.INTERNAL;
  }
}

export interface CreateOptions extends CommonOptions {
  role?: string;
  name?: string;
  expires?: string;
  scopeKey?: string[];
  scopeImage?: string[];
  json?: boolean;
}

export function apiKeyCreate(opts: CreateOptions, io: Io = defaultIo()): Promise<number> {
  return run(io, async () => {
    if (!opts.role || !(OPERATOR_ROLES as readonly string[]).includes(opts.role)) throw usage(`--role must be one of ${OPERATOR_ROLES.join(', ')}`);
    if (!opts.name || !NAME.test(opts.name)) throw usage('--name must match ^[A-Za-z0-9._@-]{1,128}$');
    let ttlSeconds: number | undefined;
    if (opts.expires !== undefined) {
      try {
        ttlSeconds = parseExpires(opts.expires, { allowNever: true });
      } catch (e) {
        throw usage(`--expires: ${(e as Error).message}`);
      }
    }
    const keys = opts.scopeKey ?? [];
    const images = opts.scopeImage ?? [];
    if ((keys.length || images.length) && opts.role !== 'signer') throw usage('--scope-key and --scope-image apply to --role signer only');
    for (const k of keys) if (!SIGNING_KEY_NAME.test(k)) throw usage(`--scope-key ${JSON.stringify(k)} is not a signing key name (${SIGNING_KEY_NAME.source})`);
    for (const i of images) if (!i || i.length > 512) throw usage('--scope-image must be 1 to 512 characters');
    const body: { name: string; role: OperatorRole; ttlSeconds?: number; scope?: { keys: string[]; images: string[] } } = { name: opts.name, role: opts.role as OperatorRole };
    if (ttlSeconds !== undefined) body.ttlSeconds = ttlSeconds;
    if (keys.length || images.length) body.scope = { keys, images };
    const broker = connect(opts, io.env);
    try {
      const res = await broker.send('POST', '/v1/api-keys', body);
      expectStatus(res, 201, 'creating the API key failed');
      const created = parseBody(res) as (ApiKeyView & { key?: unknown }) | undefined;
      if (!isApiKeyView(created) || typeof created.key !== 'string') throw new ApiKeyCliError(ApiKeyExit.INTERNAL, 'the broker answered with something that is not an API key');
      if (opts.json) {
        io.out.write(JSON.stringify(created, null, 2) + '\n');
      } else {
        io.err.write(`keywarden: created API key ${created.id} (${created.role}, ${created.name})${created.expiresAt ? `, expires ${created.expiresAt}` : ''}; the key is shown once:\n`);
        io.out.write(`${created.key}\n`);
      }
    } finally {
      broker.close();
    }
  });
}

export interface ListOptions extends CommonOptions {
  json?: boolean;
}

export function apiKeyList(opts: ListOptions, io: Io = defaultIo()): Promise<number> {
  return run(io, async () => {
    const broker = connect(opts, io.env);
    try {
      const res = await broker.send('GET', '/v1/api-keys');
      expectStatus(res, 200, 'listing API keys failed');
      const body = parseBody(res) as { items?: unknown } | undefined;
      if (!body || !Array.isArray(body.items) || !body.items.every(isApiKeyView)) throw new ApiKeyCliError(ApiKeyExit.INTERNAL, 'the broker answered with something that is not an API key list');
      const items = body.items as ApiKeyView[];
      if (opts.json) {
        io.out.write(JSON.stringify({ items }, null, 2) + '\n');
        return;
      }
      const now = Date.now();
      io.out.write(
        table([
          ['ID', 'NAME', 'ROLE', 'STATUS', 'CREATED', 'EXPIRES', 'CREATED BY'],
          ...items.map((k) => [k.id, k.name, k.role, statusOf(k, now), k.createdAt, k.expiresAt ?? '-', k.createdBy ?? '-']),
        ]),
      );
    } finally {
      broker.close();
    }
  });
}

export function apiKeyRevoke(id: string, opts: CommonOptions, io: Io = defaultIo()): Promise<number> {
  return run(io, async () => {
    if (!KEY_ID.test(id)) throw usage(`${JSON.stringify(id)} is not an API key id (the id from \`keywarden api-key list\`, not the key itself)`);
    const broker = connect(opts, io.env);
    try {
      const res = await broker.send('DELETE', `/v1/api-keys/${encodeURIComponent(id)}`);
      expectStatus(res, 204, `revoking API key ${id} failed`);
      io.err.write(`keywarden: revoked API key ${id}\n`);
    } finally {
      broker.close();
    }
  });
}

const collect = (value: string, previous: string[] = []) => [...previous, value];

function common(cmd: Command): Command {
  exitCodesHelp(cmd, EXIT_CODES);
  return cmd
    .option('--api-key-file <file>', 'read the admin API key from FILE instead of KEYWARDEN_API_KEY')
    .option('--timeout <seconds>', 'give up waiting for the broker after this many seconds', '30')
    .addHelpText('after', ENV_HELP);
}

export function registerApiKeyCommand(program: Command): void {
  const apiKey = program.command('api-key').description('create, list and revoke operator API keys over the broker API (needs an admin API key)');
  common(
    apiKey
      .command('create')
      .description('create an API key; prints the key (once) on stdout')
      .requiredOption('--role <role>', `${OPERATOR_ROLES.join(' | ')}`)
      .requiredOption('--name <name>', 'a name for the key (^[A-Za-z0-9._@-]{1,128}$)')
      .option('--expires <duration>', 'lifetime: 90m, 24h, 7d, 4w, an ISO 8601 time, or "never" (the default)')
      .option('--scope-key <name>', 'signer keys only: a signing key it may use (repeatable)', collect)
      .option('--scope-image <glob>', 'signer keys only: images it may sign (repeatable)', collect)
      .option('--json', 'print the created key and its metadata as JSON'),
  ).action(async (opts: CreateOptions) => process.exit(await apiKeyCreate(opts)));
  common(apiKey.command('list').description('list every API key (never the keys themselves)').option('--json', 'print JSON')).action(async (opts: ListOptions) =>
    process.exit(await apiKeyList(opts)),
  );
  common(apiKey.command('revoke').description('revoke an API key by its id (idempotent)').argument('<id>', 'the key id, from `keywarden api-key list`')).action(
    async (id: string, opts: CommonOptions) => process.exit(await apiKeyRevoke(id, opts)),
  );
}
