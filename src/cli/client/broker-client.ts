/**
 * The client side of the broker API used by `keywarden exec` and `keywarden fetch`:
 * configuration from the environment, authentication (client credentials, single-use bootstrap
 * token, or mTLS), the client secret routes, and startup retry with capped exponential backoff.
 * Transport details live in http-transport.ts.
 */
import fs from 'node:fs';
import type http from 'node:http';
import { z } from 'zod';
import { CliError, ExitCode, usageError } from './exit-codes.js';
import { classifyNetworkError, createAgent, nodeTransport, TransientError, type HttpRequest, type HttpResponse, type Transport } from './http-transport.js';
import { registerSensitive, warn } from './log.js';

export type Credentials =
  | { kind: 'client_credentials'; clientId: string; clientSecret: string }
  | { kind: 'bootstrap'; token: string }
  | { kind: 'mtls'; cert: Buffer; key: Buffer };

export interface ClientConfig {
  /** Broker base URL without a trailing slash. */
  addr: string;
  credentials: Credentials;
  /** PEM CA bundle to trust for the broker's certificate (KEYWARDEN_CA). */
  ca?: Buffer;
}

/** Environment variables holding broker credentials; `exec` removes them from the child. */
export const CREDENTIAL_ENV_VARS = [
  'KEYWARDEN_CLIENT_ID',
  'KEYWARDEN_CLIENT_SECRET',
  'KEYWARDEN_BOOTSTRAP_TOKEN',
  'KEYWARDEN_TLS_CERT',
  'KEYWARDEN_TLS_KEY',
] as const;

function readFileOrUsage(variable: string, file: string): Buffer {
  try {
    return fs.readFileSync(file);
  } catch (err) {
    throw usageError(`${variable}: cannot read ${file} (${(err as NodeJS.ErrnoException).code ?? 'error'})`);
  }
}

/** KEYWARDEN_ADDR checked (http(s), no credentials), without a trailing slash; usage error (64) otherwise. */
export function brokerAddrFromEnv(env: NodeJS.ProcessEnv): string {
  const rawAddr = env.KEYWARDEN_ADDR?.trim();
  if (!rawAddr) throw usageError('KEYWARDEN_ADDR is not set (the broker URL, e.g. https://keywarden:8750)');
  let url: URL;
  try {
    url = new URL(rawAddr);
  } catch {
    throw usageError(`KEYWARDEN_ADDR is not a URL: ${rawAddr}`);
  }
  if (url.protocol !== 'http:' && url.protocol !== 'https:') throw usageError('KEYWARDEN_ADDR must be an http:// or https:// URL');
  if (url.username || url.password) throw usageError('KEYWARDEN_ADDR must not contain credentials');
  return url.href.replace(/\/+$/, '');
}

/** The CA bundle named by KEYWARDEN_CA, if any (unreadable: usage error). */
export function caFromEnv(env: NodeJS.ProcessEnv): Buffer | undefined {
  return env.KEYWARDEN_CA ? readFileOrUsage('KEYWARDEN_CA', env.KEYWARDEN_CA) : undefined;
}

/**
 * Reads KEYWARDEN_ADDR and credentials. Precedence: mTLS (KEYWARDEN_TLS_CERT + KEYWARDEN_TLS_KEY),
 * then KEYWARDEN_CLIENT_ID + KEYWARDEN_CLIENT_SECRET, then KEYWARDEN_BOOTSTRAP_TOKEN.
 * Anything missing or inconsistent is a usage error (exit 64).
 */
export function clientConfigFromEnv(env: NodeJS.ProcessEnv): ClientConfig {
  const addr = brokerAddrFromEnv(env);
  const ca = caFromEnv(env);

  let credentials: Credentials;
  if (env.KEYWARDEN_TLS_CERT || env.KEYWARDEN_TLS_KEY) {
    if (!env.KEYWARDEN_TLS_CERT || !env.KEYWARDEN_TLS_KEY) throw usageError('KEYWARDEN_TLS_CERT and KEYWARDEN_TLS_KEY must be set together');
    if (!addr.startsWith('https:')) throw usageError('mTLS (KEYWARDEN_TLS_CERT/KEYWARDEN_TLS_KEY) needs an https:// KEYWARDEN_ADDR');
    credentials = {
      kind: 'mtls',
      cert: readFileOrUsage('KEYWARDEN_TLS_CERT', env.KEYWARDEN_TLS_CERT),
      key: readFileOrUsage('KEYWARDEN_TLS_KEY', env.KEYWARDEN_TLS_KEY),
    };
  } else if (env.KEYWARDEN_CLIENT_ID || env.KEYWARDEN_CLIENT_SECRET) {
    if (!env.KEYWARDEN_CLIENT_ID || !env.KEYWARDEN_CLIENT_SECRET) throw usageError('KEYWARDEN_CLIENT_ID and KEYWARDEN_CLIENT_SECRET must be set together');
    credentials = { kind: 'client_credentials', clientId: env.KEYWARDEN_CLIENT_ID, clientSecret: env.KEYWARDEN_CLIENT_SECRET };
  } else if (env.KEYWARDEN_BOOTSTRAP_TOKEN) {
    credentials = { kind: 'bootstrap', token: env.KEYWARDEN_BOOTSTRAP_TOKEN };
  } else {
    throw usageError(
      'no broker credentials: set KEYWARDEN_CLIENT_ID and KEYWARDEN_CLIENT_SECRET, or KEYWARDEN_BOOTSTRAP_TOKEN, or KEYWARDEN_TLS_CERT and KEYWARDEN_TLS_KEY',
    );
  }
  if (credentials.kind === 'client_credentials') registerSensitive(credentials.clientSecret);
  if (credentials.kind === 'bootstrap') registerSensitive(credentials.token);
  return { addr, credentials, ca };
}

// ---------------------------------------------------------------------------------------------
// Errors

export { TransientError };

/** The broker answered 404 for secrets the client asked for. */
export class MissingSecretsError extends CliError {
  constructor(readonly names: string[] | undefined) {
    super(
      ExitCode.MISSING_SECRET,
      names?.length ? `secret(s) not found or not granted to this client: ${names.join(', ')}` : 'one or more requested secrets were not found or not granted to this client',
    );
  }
}

// ---------------------------------------------------------------------------------------------
// API shapes

const metadataSchema = z.object({ mode: z.string().optional(), owner: z.string().optional(), group: z.string().optional() });
export type FileMetadata = z.infer<typeof metadataSchema>;

const summarySchema = z.object({
  name: z.string(),
  version: z.number(),
  checksum: z.string(),
  metadata: metadataSchema.nullish().transform((m): FileMetadata => m ?? {}),
});
export type SecretSummary = z.infer<typeof summarySchema>;

const deliveredSchema = summarySchema.extend({ content: z.string() });
export type DeliveredSecret = Omit<z.infer<typeof deliveredSchema>, 'content'> & { content: Buffer };

const tokenSchema = z.object({ access_token: z.string().min(1), expires_in: z.number().optional() });

/** Batch requests are limited to 100 names by the broker. */
const BATCH_LIMIT = 100;
const DEFAULT_REQUEST_TIMEOUT_MS = 10_000;
/** Renew the access token this long (at most a fifth of its lifetime) before it expires. */
const TOKEN_RENEW_MARGIN_MS = 30_000;

function problemSummary(res: HttpResponse): string {
  let text = `HTTP ${res.status}`;
  if (/json/.test(res.contentType)) {
    try {
      const p = JSON.parse(res.body.toString('utf8')) as { code?: unknown; detail?: unknown; title?: unknown };
      if (typeof p.code === 'string') text += ` ${p.code}`;
      const detail = typeof p.detail === 'string' ? p.detail : typeof p.title === 'string' ? p.title : undefined;
      if (detail) text += `: ${detail.slice(0, 300)}`;
    } catch {
      /* not JSON after all */
    }
  }
  return text;
}

function problemCode(res: HttpResponse): string | undefined {
  try {
    const code = (JSON.parse(res.body.toString('utf8')) as { code?: unknown }).code;
    return typeof code === 'string' ? code : undefined;
  } catch {
    return undefined;
  }
}

function retryAfterMs(header: string | undefined): number | undefined {
  if (!header) return undefined;
  const seconds = Number(header);
  return Number.isFinite(seconds) && seconds >= 0 ? seconds * 1000 : undefined;
}

/** What a client route answered: status, parsed JSON (undefined if none), problem code and a one-line summary. */
export interface ClientRouteAnswer {
  status: number;
  json: unknown;
  code?: string;
  summary: string;
}

// ---------------------------------------------------------------------------------------------
// Client

export class BrokerClient {
  private readonly transport: Transport;
  private readonly agent: http.Agent;
  private token?: { value: string; expiresAt: number; renewAt: number };
  private bootstrapUsed = false;
  /** Per-request timeout; the retry loop lowers it near the deadline. */
  requestTimeoutMs = DEFAULT_REQUEST_TIMEOUT_MS;

  constructor(
    readonly config: ClientConfig,
    private readonly clock: () => number = Date.now,
  ) {
    const mtls = config.credentials.kind === 'mtls' ? config.credentials : undefined;
    this.agent = createAgent(config.addr, { ca: config.ca, cert: mtls?.cert, key: mtls?.key });
    this.transport = nodeTransport(config.addr, this.agent);
  }

  get addr(): string {
    return this.config.addr;
  }

  close(): void {
    this.agent.destroy();
  }

  private async send(req: Omit<HttpRequest, 'timeoutMs'>): Promise<HttpResponse> {
    let res: HttpResponse;
    try {
      res = await this.transport({ ...req, timeoutMs: this.requestTimeoutMs });
    } catch (err) {
      throw classifyNetworkError(err, this.addr);
    }
    if (res.status >= 500 || res.status === 429 || res.status === 408) {
      throw new TransientError(problemSummary(res), retryAfterMs(res.retryAfter));
    }
    return res;
  }

  private json<T>(res: HttpResponse, schema: z.ZodType<T, z.ZodTypeDef, unknown>, what: string): T {
    let parsed: unknown;
    try {
      parsed = JSON.parse(res.body.toString('utf8'));
    } catch {
      throw new CliError(ExitCode.INTERNAL, `the broker sent a malformed ${what} response (not JSON)`);
    }
    const result = schema.safeParse(parsed);
    if (!result.success) throw new CliError(ExitCode.INTERNAL, `the broker sent an unexpected ${what} response`);
    return result.data;
  }

  /** Obtains an access token now (no-op for mTLS). Denials are CliError 77. */
  async authenticate(): Promise<void> {
    const creds = this.config.credentials;
    if (creds.kind === 'mtls') return;
    const form = new URLSearchParams();
    if (creds.kind === 'client_credentials') {
      form.set('grant_type', 'client_credentials');
      form.set('client_id', creds.clientId);
      form.set('client_secret', creds.clientSecret);
    } else {
      if (this.bootstrapUsed) {
        throw new CliError(ExitCode.DENIED, 'the access token expired and the single-use bootstrap token cannot be exchanged again');
      }
      form.set('grant_type', 'urn:keywarden:bootstrap');
      form.set('bootstrap_token', creds.token);
    }
    const started = this.clock();
    const res = await this.send({
      method: 'POST',
      path: '/v1/auth/token',
      headers: { 'content-type': 'application/x-www-form-urlencoded', accept: 'application/json' },
      body: form.toString(),
    });
    if (res.status === 401 || res.status === 403) {
      if (creds.kind === 'bootstrap' && problemCode(res) === 'bootstrap_token_reused') {
        throw new CliError(ExitCode.DENIED, 'authentication denied: the bootstrap token has already been used (it is single-use)');
      }
      throw new CliError(ExitCode.DENIED, `authentication denied (${problemSummary(res)})`);
    }
    if (res.status !== 200) throw new CliError(ExitCode.INTERNAL, `token request failed (${problemSummary(res)})`);
    const body = this.json(res, tokenSchema, 'token');
    if (creds.kind === 'bootstrap') this.bootstrapUsed = true;
    registerSensitive(body.access_token);
    const lifetimeMs = (body.expires_in ?? 300) * 1000;
    this.token = {
      value: body.access_token,
      expiresAt: started + lifetimeMs,
      renewAt: started + lifetimeMs - Math.min(TOKEN_RENEW_MARGIN_MS, lifetimeMs / 5),
    };
  }

  /** Seconds until the current access token expires (undefined for mTLS / no token). */
  tokenExpiresInSeconds(): number | undefined {
    return this.token ? Math.max(0, Math.round((this.token.expiresAt - this.clock()) / 1000)) : undefined;
  }

  private async authHeaders(): Promise<Record<string, string>> {
    if (this.config.credentials.kind === 'mtls') return {};
    if (!this.token || this.clock() >= this.token.renewAt) await this.authenticate();
    return { authorization: `Bearer ${this.token!.value}` };
  }

  /**
   * A client-route call; a 401 on a token we hold triggers one re-authentication. With
   * `passDenied` a final 401/403 is returned for the caller to interpret instead of thrown.
   */
  private async clientCall(method: 'GET' | 'POST', path: string, body?: unknown, passDenied = false): Promise<HttpResponse> {
    for (let attempt = 0; ; attempt++) {
      const headers: Record<string, string> = { accept: 'application/json', ...(await this.authHeaders()) };
      if (body !== undefined) headers['content-type'] = 'application/json';
      const res = await this.send({ method, path, headers, body: body === undefined ? undefined : JSON.stringify(body) });
      if (res.status === 401 && attempt === 0 && this.config.credentials.kind !== 'mtls') {
        this.token = undefined;
        continue;
      }
      if (!passDenied && (res.status === 401 || res.status === 403)) throw new CliError(ExitCode.DENIED, `access denied (${problemSummary(res)})`);
      return res;
    }
  }

  /**
   * POST to a client route whose 4xx answers the caller maps itself (the Docker plugin's
   * delegated routes tell "not delegated" from "not granted" by status and problem code).
   * Transient failures still throw TransientError; a failed token exchange throws CliError 77.
   */
  async postClientRoute(path: string, body: unknown): Promise<ClientRouteAnswer> {
    const res = await this.clientCall('POST', path, body, true);
    let json: unknown;
    try {
      json = res.body.length ? JSON.parse(res.body.toString('utf8')) : undefined;
    } catch {
      json = undefined;
    }
    return { status: res.status, json, code: problemCode(res), summary: problemSummary(res) };
  }

  /** Every secret granted to this client (no content). */
  async list(): Promise<SecretSummary[]> {
    const res = await this.clientCall('GET', '/v1/client/secrets');
    if (res.status !== 200) throw new CliError(ExitCode.INTERNAL, `listing secrets failed (${problemSummary(res)})`);
    return this.json(res, z.object({ items: z.array(summarySchema) }), 'secret list').items;
  }

  /** Content of the named secrets, all or nothing; a 404 becomes MissingSecretsError. */
  async fetchSecrets(names: string[]): Promise<DeliveredSecret[]> {
    const out: DeliveredSecret[] = [];
    for (let i = 0; i < names.length; i += BATCH_LIMIT) {
      const chunk = names.slice(i, i + BATCH_LIMIT);
      const res = await this.clientCall('POST', '/v1/client/secrets/batch', { names: chunk });
      if (res.status === 404) throw new MissingSecretsError(undefined);
      if (res.status !== 200) throw new CliError(ExitCode.INTERNAL, `fetching secrets failed (${problemSummary(res)})`);
      for (const item of this.json(res, z.object({ items: z.array(deliveredSchema) }), 'secret batch').items) {
        const content = Buffer.from(item.content, 'base64');
        registerSensitive(content.toString('utf8'));
        out.push({ ...item, content });
      }
    }
    return out;
  }
}

// ---------------------------------------------------------------------------------------------
// Retry

export interface RetryOptions {
  /** Epoch ms after which to give up with exit 69. */
  deadline: number;
  /** Upper bound of one request's timeout (default 10 s); the deadline lowers it. */
  maxRequestTimeoutMs?: number;
  initialDelayMs?: number;
  maxDelayMs?: number;
  sleep?: (ms: number) => Promise<void>;
  clock?: () => number;
}

export const sleep = (ms: number) => new Promise<void>((resolve) => setTimeout(resolve, ms));

/** What withRetry needs of a client: its address (for messages) and the per-request timeout it sets. */
export interface RetryTarget {
  readonly addr: string;
  requestTimeoutMs: number;
}

/**
 * Runs `fn` until it succeeds or fails with something other than TransientError, backing off
 * 0.25 s, 0.5 s, ... capped at 5 s (each with ±25% jitter) and printing a line per retry.
 * Gives up at the deadline with CliError 69, naming the last cause.
 */
export async function withRetry<T>(client: RetryTarget, fn: () => Promise<T>, opts: RetryOptions): Promise<T> {
  const clock = opts.clock ?? Date.now;
  const wait = opts.sleep ?? sleep;
  const initial = opts.initialDelayMs ?? 250;
  const max = opts.maxDelayMs ?? 5_000;
  const started = clock();
  for (let attempt = 0; ; attempt++) {
    const remaining = opts.deadline - clock();
    client.requestTimeoutMs = Math.max(500, Math.min(opts.maxRequestTimeoutMs ?? DEFAULT_REQUEST_TIMEOUT_MS, remaining));
    try {
      return await fn();
    } catch (err) {
      if (!(err instanceof TransientError)) throw err;
      const left = opts.deadline - clock();
      if (left <= 0) {
        const waited = Math.round((clock() - started) / 1000);
        throw new CliError(ExitCode.UNREACHABLE, `cannot reach the broker at ${client.addr}: ${err.reason}${attempt ? ` (gave up after ${waited}s)` : ''}`);
      }
      const base = Math.min(max, initial * 2 ** Math.min(attempt, 20));
      let delay = Math.max(err.retryAfterMs ?? 0, base / 2 + Math.random() * base * 0.5 + base * 0.25);
      delay = Math.min(delay, max, left);
      warn(`broker unreachable at ${client.addr}, retrying in ${(delay / 1000).toFixed(2)}s (${err.reason})`);
      await wait(delay);
    }
  }
}
