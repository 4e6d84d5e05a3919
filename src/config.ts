import net from 'node:net';
import path from 'node:path';
import { z } from 'zod';
import { isValidHostEntry } from './trust/registry/host-list.js';

const durationSeconds = z.coerce.number().int().positive();

const listenSchema = z
  .string()
  .regex(/^(\[[0-9a-fA-F:]+\]|[A-Za-z0-9.-]+):\d{1,5}$/, 'must be host:port, e.g. 127.0.0.1:8750');

/** KEYWARDEN_MAX_CONNECTIONS' default: client connections open at once; the listener closes more as they arrive. */
export const DEFAULT_MAX_CONNECTIONS = 4096;

const envSchema = z.object({
  KEYWARDEN_DATA_DIR: z.string().min(1).default('./data'),
  KEYWARDEN_DATABASE_URL: z
    .string()
    .regex(/^(sqlite:|postgres:|postgresql:)/, 'must start with sqlite: or postgres:')
    .optional(),
  KEYWARDEN_LISTEN: listenSchema.default('127.0.0.1:8750'),
  KEYWARDEN_LOG_LEVEL: z.enum(['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent']).default('info'),
  KEYWARDEN_KEY_PROVIDER: z.enum(['local', 'vault-transit']).default('local'),
  KEYWARDEN_ROOT_KEY_FILE: z.string().optional(),
  KEYWARDEN_ROOT_KEY: z.string().optional(),
  VAULT_ADDR: z.string().url().optional(),
  VAULT_TOKEN: z.string().optional(),
  KEYWARDEN_VAULT_TRANSIT_MOUNT: z.string().default('transit'),
  KEYWARDEN_VAULT_TRANSIT_KEY: z.string().default('keywarden'),
  KEYWARDEN_ACCESS_TOKEN_TTL: durationSeconds.default(900),
  KEYWARDEN_ACCESS_TOKEN_MAX_TTL: durationSeconds.default(3600),
  KEYWARDEN_WORKLOAD_JWT_MAX_TTL: durationSeconds.default(3600),
  KEYWARDEN_ISSUER: z.string().url().optional(),
  KEYWARDEN_TRUST_DOMAIN: z.string().regex(/^[a-z0-9.-]+$/).default('keywarden.local'),
  KEYWARDEN_BOOTSTRAP_ADMIN_KEY: z
    .string()
    .regex(/^kw_[A-Za-z0-9_-]{20,}$/, 'must look like kw_<at least 20 url-safe characters>')
    .optional(),
  KEYWARDEN_MAX_BODY_BYTES: z.coerce.number().int().positive().default(2 * 1024 * 1024),
  KEYWARDEN_MAX_CONNECTIONS: z.coerce.number().int().positive().max(1_000_000).default(DEFAULT_MAX_CONNECTIONS),
  KEYWARDEN_TRUST_PROXY: z.string().default('false'),
  KEYWARDEN_METRICS_AUTH: z.enum(['none', 'api-key']).default('none'),
  KEYWARDEN_TLS_CERT: z.string().optional(),
  KEYWARDEN_TLS_KEY: z.string().optional(),
  KEYWARDEN_TLS_CLIENT_CA: z.string().optional(),
  KEYWARDEN_AUDIT_FILE: z.string().optional(),
  KEYWARDEN_INSECURE_REGISTRIES: z.string().default(''),
  KEYWARDEN_EGRESS_ALLOW: z.string().default(''),
  KEYWARDEN_AUTH_MAX_FAILURES_PER_CLIENT: z.coerce.number().int().positive().default(10),
  KEYWARDEN_AUTH_MAX_FAILURES_PER_ADDRESS: z.coerce.number().int().positive().default(30),
  KEYWARDEN_AUTH_MAX_API_KEY_FAILURES_PER_ADDRESS: z.coerce.number().int().positive().default(50),
  KEYWARDEN_AUTH_FAILURE_WINDOW: durationSeconds.default(60),
  KEYWARDEN_AUDIT_CHECKPOINT_INTERVAL: z.coerce.number().int().min(0).default(3600),
  KEYWARDEN_AUDIT_VERIFY_INTERVAL: z.coerce.number().int().min(0).max(86_400).default(60),
  KEYWARDEN_AUDIT_FULL_VERIFY_INTERVAL: z.coerce.number().int().min(0).max(604_800).default(3600),
  KEYWARDEN_AUDIT_PASS_BUDGET_MS: z.coerce.number().int().positive().max(86_400_000).default(60_000),
  KEYWARDEN_AUDIT_PASS_WINDOW: durationSeconds.max(86_400).default(300),
  KEYWARDEN_AUDIT_SEQUENCE_INTERVAL_MS: z.coerce.number().int().min(0).max(60_000).default(500),
  KEYWARDEN_AUDIT_ORIGIN: z
    .string()
    .regex(/^[A-Za-z0-9][A-Za-z0-9._~:/-]{0,199}$/, 'a schema-less URL such as keywarden.example.com/audit-log (no spaces, no "+")')
    .optional(),
  KEYWARDEN_BOOTSTRAP_TOKEN_MAX_TTL: durationSeconds.max(3600).default(3600),
  KEYWARDEN_GATE_DEFAULT: z.enum(['deny', 'allow']).default('deny'),
  KEYWARDEN_GATE_CACHE_TTL: z.coerce.number().int().min(0).default(300),
  KEYWARDEN_GATE_TIMEOUT_MS: z.coerce.number().int().positive().max(120_000).default(5000),
  KEYWARDEN_DB_ACQUIRE_TIMEOUT_MS: z.coerce.number().int().positive().max(600_000).default(3000),
  KEYWARDEN_DB_STATEMENT_TIMEOUT_MS: z.coerce.number().int().positive().max(600_000).default(5000),
  KEYWARDEN_SQLITE_SYNCHRONOUS: z.enum(['full', 'normal']).default('full'),
  KEYWARDEN_SQLITE_FAST_PATH: z.enum(['on', 'off']).default('on'),
  // one path segment; the native API's own /v1/<segment> prefixes are refused below
  // the auditors' console: session lifetime (12 h at most), and where its built files are
  KEYWARDEN_CONSOLE_SESSION_TTL: durationSeconds.max(43_200).default(900),
  KEYWARDEN_CONSOLE_DIR: z.string().optional(),
  KEYWARDEN_VAULT_KV_MOUNT: z.string().regex(/^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$/, 'must be one path segment of letters, digits, _ and -').default('secret'),
});

/** Every variable the broker's configuration reads (config-suggestions.ts warns about unknown KEYWARDEN_* ones). */
export const SETTING_NAMES: readonly string[] = Object.keys(envSchema.shape);

/** /v1/<segment> prefixes the native API and the Vault-compatible sys/auth routes use: not a KV mount. */
const RESERVED_V1_SEGMENTS = ['api-keys', 'audit', 'auth', 'client', 'clients', 'console', 'groups', 'jwt-keys', 'policies', 'registry-credentials', 'releases', 'reports', 'secrets', 'signatures', 'signing-keys', 'tokens', 'trusted-issuers', 'sys', 'identity', 'plugin-events'];

export type KeyProviderConfig =
  | { kind: 'local'; keyFile: string; keyFromEnv?: string }
  | { kind: 'vault-transit'; address: string; token: string; mount: string; keyName: string };

export interface Config {
  dataDir: string;
  databaseUrl: string;
  listen: { host: string; port: number };
  logLevel: string;
  keyProvider: KeyProviderConfig;
  accessTokenTtlSeconds: number;
  accessTokenMaxTtlSeconds: number;
  workloadJwtMaxTtlSeconds: number;
  issuer: string;
  trustDomain: string;
  bootstrapAdminKey?: string;
  maxBodyBytes: number;
  /** KEYWARDEN_MAX_CONNECTIONS: open client connections at once; the listener closes more as they arrive. */
  maxConnections: number;
  /**
   * Which peers may set X-Forwarded-For: false (none), a hop count, or proxy addresses/CIDRs.
   * Passed to Express's `trust proxy`, so req.ip is the address the last trusted proxy saw.
   */
  trustProxy: TrustProxy;
  /** 'api-key': GET /metrics needs an operator API key (admin or auditor); 'none': public. */
  metricsAuth: 'none' | 'api-key';
  tls?: { certFile: string; keyFile: string; clientCaFile?: string };
  auditFile?: string;
  insecureRegistries: string[];
  /** KEYWARDEN_EGRESS_ALLOW: hosts the gate, signing and Notary checks may reach besides registries named in policies. */
  egressAllow: string[];
  /**
   * Failed authentications counted per window: per client id from one address and per address at
   * the token endpoint and console login; API keys that fail on any route (and the console login) per address.
   */
  authRateLimit: { maxFailuresPerClient: number; maxFailuresPerAddress: number; maxApiKeyFailuresPerAddress: number; windowSeconds: number };
  /** KEYWARDEN_VAULT_KV_MOUNT: the Vault-compatible KV v2 mount, /v1/<mount>/data/... */
  vaultKvMount: string;
  /** The auditors' console: session cookie lifetime in seconds, and the directory of its built files (default dist/console-app/). */
  console: { sessionTtlSeconds: number; dir?: string };
  bootstrapTokenMaxTtlSeconds: number;
  /**
   * Seconds after which the audit tree head is signed again although no event arrived, so
   * witnesses see the log is alive (KEYWARDEN_AUDIT_CHECKPOINT_INTERVAL); 0: only when it grows.
   */
  auditCheckpointIntervalSeconds: number;
  /** Milliseconds between sequencer runs (KEYWARDEN_AUDIT_SEQUENCE_INTERVAL_MS); 0: on demand only. */
  auditSequenceIntervalMs: number;
  /** The audit log's origin line and signing key name (KEYWARDEN_AUDIT_ORIGIN; default from the issuer). */
  auditOrigin?: string;
  /**
   * Seconds between background verifications of the audit chain (from the last signed
   * checkpoint to the head) and of the row MACs; 0 verifies at startup only. A truncation of the
   * log's tail goes unnoticed by a running instance for at most this long.
   */
  auditVerifyIntervalSeconds: number;
  /**
   * Seconds between the watch's passes over the whole tree again (KEYWARDEN_AUDIT_FULL_VERIFY_INTERVAL),
   * which find an edit of a leaf verified before; 0: at startup only.
   */
  auditFullVerifyIntervalSeconds: number;
  /**
   * Auditors' heavy passes (verifications and exports of the log): how many milliseconds of them
   * one key may use per window on all instances together (KEYWARDEN_AUDIT_PASS_BUDGET_MS,
   * KEYWARDEN_AUDIT_PASS_WINDOW).
   */
  auditPassBudget: { budgetMs: number; windowSeconds: number };
  /** Release gate: decision without a matching policy, decision cache TTL cap (0 = no caching), remote timeout. */
  gate: { defaultDecision: 'deny' | 'allow'; cacheTtlSeconds: number; timeoutMs: number };
  /**
   * Database time limits: waiting for a connection (pool or handshake), and running one
   * statement. Past them the request fails fast with 503 instead of hanging with the database.
   */
  dbTimeouts: { acquireMs: number; statementMs: number };
  /**
   * SQLite `synchronous` on every connection. 'full' (default) fsyncs the WAL at each commit, so an
   * acknowledged write and its audit event survive power loss; 'normal' survives a process crash only.
   */
  sqliteSynchronous: 'full' | 'normal';
  /**
   * KEYWARDEN_SQLITE_FAST_PATH (test and diagnostic setting): 'off' sends the delivery path's
   * reads and audit appends through knex instead of the second, synchronous SQLite connection.
   */
  sqliteFastPath: boolean;
}

export type TrustProxy = false | number | string[];

/** proxy-addr's named ranges, accepted in KEYWARDEN_TRUST_PROXY lists like addresses. */
const NAMED_PROXY_RANGES = new Set(['loopback', 'linklocal', 'uniquelocal']);

/**
 * KEYWARDEN_TRUST_PROXY: `false`, a hop count, or a comma-separated list of proxy addresses,
 * CIDRs and proxy-addr range names. `true` is refused: it made Express trust every
 * X-Forwarded-For entry, so a client could choose its own address.
 */
export function parseTrustProxy(value: string): { trustProxy: TrustProxy; problem?: string } {
  const v = value.trim();
  if (v === 'false' || v === '0') return { trustProxy: false };
  if (v === 'true') {
    return {
      trustProxy: false,
      problem:
        'KEYWARDEN_TRUST_PROXY: `true` is no longer accepted (it trusted every X-Forwarded-For entry, which the client controls); ' +
        'set the number of proxy hops in front of the broker (e.g. 1) or the proxies\' addresses/CIDRs (e.g. 10.0.0.5,192.168.0.0/16)',
    };
  }
  if (/^\d+$/.test(v)) {
    const hops = Number(v);
    if (hops > 10) return { trustProxy: false, problem: 'KEYWARDEN_TRUST_PROXY: a hop count must be at most 10' };
    return { trustProxy: hops };
  }
  const entries = v.split(',').map((s) => s.trim()).filter(Boolean);
  const invalid = entries.filter((entry) => !isProxyAddressOrRange(entry));
  if (!entries.length || invalid.length) {
    return {
      trustProxy: false,
      problem: `KEYWARDEN_TRUST_PROXY: must be false, a hop count, or a comma-separated list of IP addresses/CIDRs (invalid: ${invalid.join(', ') || value})`,
    };
  }
  return { trustProxy: entries };
}

function isProxyAddressOrRange(entry: string): boolean {
  if (NAMED_PROXY_RANGES.has(entry)) return true;
  const [address, prefix, ...rest] = entry.split('/');
  const family = net.isIP(address);
  if (!family || rest.length) return false;
  if (prefix === undefined) return true;
  if (!/^\d{1,3}$/.test(prefix)) return false;
  return Number(prefix) <= (family === 4 ? 32 : 128);
}

export class ConfigError extends Error {
  constructor(readonly problems: string[]) {
    super(`invalid configuration:\n  - ${problems.join('\n  - ')}`);
  }
}

export function loadConfig(env: NodeJS.ProcessEnv = process.env): Config {
  // an empty variable means unset (compose files write `${VAR:-}`)
  const present = Object.fromEntries(Object.entries(env).filter(([, v]) => v !== undefined && v !== ''));
  const parsed = envSchema.safeParse(present);
  if (!parsed.success) {
    throw new ConfigError(parsed.error.issues.map((i) => `${i.path.join('.')}: ${i.message}`));
  }
  const e = parsed.data;
  const problems: string[] = [];
  const dataDir = path.resolve(e.KEYWARDEN_DATA_DIR);
  const databaseUrl = e.KEYWARDEN_DATABASE_URL ?? `sqlite:${path.join(dataDir, 'keywarden.db')}`;

  const lastColon = e.KEYWARDEN_LISTEN.lastIndexOf(':');
  const host = e.KEYWARDEN_LISTEN.slice(0, lastColon).replace(/^\[|\]$/g, '');
  const port = Number(e.KEYWARDEN_LISTEN.slice(lastColon + 1));
  if (port > 65535) problems.push('KEYWARDEN_LISTEN: port must be at most 65535');

  let keyProvider: KeyProviderConfig;
  if (e.KEYWARDEN_KEY_PROVIDER === 'vault-transit') {
    if (!e.VAULT_ADDR) problems.push('VAULT_ADDR: required when KEYWARDEN_KEY_PROVIDER=vault-transit');
    if (!e.VAULT_TOKEN) problems.push('VAULT_TOKEN: required when KEYWARDEN_KEY_PROVIDER=vault-transit');
    keyProvider = {
      kind: 'vault-transit',
      address: e.VAULT_ADDR ?? '',
      token: e.VAULT_TOKEN ?? '',
      mount: e.KEYWARDEN_VAULT_TRANSIT_MOUNT,
      keyName: e.KEYWARDEN_VAULT_TRANSIT_KEY,
    };
  } else {
    keyProvider = {
      kind: 'local',
      keyFile: path.resolve(e.KEYWARDEN_ROOT_KEY_FILE ?? path.join(dataDir, 'root-key.json')),
      keyFromEnv: e.KEYWARDEN_ROOT_KEY,
    };
  }
  if (e.KEYWARDEN_ACCESS_TOKEN_TTL > e.KEYWARDEN_ACCESS_TOKEN_MAX_TTL) {
    problems.push('KEYWARDEN_ACCESS_TOKEN_TTL: must not exceed KEYWARDEN_ACCESS_TOKEN_MAX_TTL');
  }
  let tls: Config['tls'];
  if (e.KEYWARDEN_TLS_CERT || e.KEYWARDEN_TLS_KEY) {
    if (!e.KEYWARDEN_TLS_CERT || !e.KEYWARDEN_TLS_KEY) {
      problems.push('KEYWARDEN_TLS_CERT and KEYWARDEN_TLS_KEY must be set together');
    } else {
      tls = { certFile: e.KEYWARDEN_TLS_CERT, keyFile: e.KEYWARDEN_TLS_KEY, clientCaFile: e.KEYWARDEN_TLS_CLIENT_CA };
    }
  }
  const { trustProxy, problem: trustProxyProblem } = parseTrustProxy(e.KEYWARDEN_TRUST_PROXY);
  if (trustProxyProblem) problems.push(trustProxyProblem);
  const hostList = (name: string, value: string) => {
    const entries = value.split(',').map((s) => s.trim()).filter(Boolean);
    const invalid = entries.filter((entry) => !isValidHostEntry(entry));
    if (invalid.length) problems.push(`${name}: entries are host, host:port or *.domain[:port] (invalid: ${invalid.join(', ')})`);
    return entries;
  };
  const insecureRegistries = hostList('KEYWARDEN_INSECURE_REGISTRIES', e.KEYWARDEN_INSECURE_REGISTRIES);
  const egressAllow = hostList('KEYWARDEN_EGRESS_ALLOW', e.KEYWARDEN_EGRESS_ALLOW);
  if (RESERVED_V1_SEGMENTS.includes(e.KEYWARDEN_VAULT_KV_MOUNT.toLowerCase())) problems.push(`KEYWARDEN_VAULT_KV_MOUNT: /v1/${e.KEYWARDEN_VAULT_KV_MOUNT} is a route of the broker's own API`);
  if (problems.length) throw new ConfigError(problems);

  const scheme = tls ? 'https' : 'http';
  const issuerHost = host.includes(':') ? `[${host}]` : host;
  return {
    dataDir,
    databaseUrl,
    listen: { host, port },
    logLevel: e.KEYWARDEN_LOG_LEVEL,
    keyProvider,
    accessTokenTtlSeconds: e.KEYWARDEN_ACCESS_TOKEN_TTL,
    accessTokenMaxTtlSeconds: e.KEYWARDEN_ACCESS_TOKEN_MAX_TTL,
    workloadJwtMaxTtlSeconds: e.KEYWARDEN_WORKLOAD_JWT_MAX_TTL,
    issuer: (e.KEYWARDEN_ISSUER ?? `${scheme}://${issuerHost}:${port}`).replace(/\/$/, ''),
    trustDomain: e.KEYWARDEN_TRUST_DOMAIN,
    bootstrapAdminKey: e.KEYWARDEN_BOOTSTRAP_ADMIN_KEY,
    maxBodyBytes: e.KEYWARDEN_MAX_BODY_BYTES,
    maxConnections: e.KEYWARDEN_MAX_CONNECTIONS,
    vaultKvMount: e.KEYWARDEN_VAULT_KV_MOUNT,
    console: { sessionTtlSeconds: e.KEYWARDEN_CONSOLE_SESSION_TTL, dir: e.KEYWARDEN_CONSOLE_DIR ? path.resolve(e.KEYWARDEN_CONSOLE_DIR) : undefined },
    trustProxy,
    metricsAuth: e.KEYWARDEN_METRICS_AUTH,
    tls,
    auditFile: e.KEYWARDEN_AUDIT_FILE,
    authRateLimit: {
      maxFailuresPerClient: e.KEYWARDEN_AUTH_MAX_FAILURES_PER_CLIENT,
      maxFailuresPerAddress: e.KEYWARDEN_AUTH_MAX_FAILURES_PER_ADDRESS,
      maxApiKeyFailuresPerAddress: e.KEYWARDEN_AUTH_MAX_API_KEY_FAILURES_PER_ADDRESS,
      windowSeconds: e.KEYWARDEN_AUTH_FAILURE_WINDOW,
    },
    bootstrapTokenMaxTtlSeconds: e.KEYWARDEN_BOOTSTRAP_TOKEN_MAX_TTL,
    auditCheckpointIntervalSeconds: e.KEYWARDEN_AUDIT_CHECKPOINT_INTERVAL,
    auditSequenceIntervalMs: e.KEYWARDEN_AUDIT_SEQUENCE_INTERVAL_MS,
    auditOrigin: e.KEYWARDEN_AUDIT_ORIGIN,
    auditVerifyIntervalSeconds: e.KEYWARDEN_AUDIT_VERIFY_INTERVAL,
    auditFullVerifyIntervalSeconds: e.KEYWARDEN_AUDIT_FULL_VERIFY_INTERVAL,
    auditPassBudget: { budgetMs: e.KEYWARDEN_AUDIT_PASS_BUDGET_MS, windowSeconds: e.KEYWARDEN_AUDIT_PASS_WINDOW },
    gate: {
      defaultDecision: e.KEYWARDEN_GATE_DEFAULT,
      cacheTtlSeconds: e.KEYWARDEN_GATE_CACHE_TTL,
      timeoutMs: e.KEYWARDEN_GATE_TIMEOUT_MS,
    },
    insecureRegistries,
    egressAllow,
    dbTimeouts: { acquireMs: e.KEYWARDEN_DB_ACQUIRE_TIMEOUT_MS, statementMs: e.KEYWARDEN_DB_STATEMENT_TIMEOUT_MS },
    sqliteSynchronous: e.KEYWARDEN_SQLITE_SYNCHRONOUS,
    sqliteFastPath: e.KEYWARDEN_SQLITE_FAST_PATH === 'on',
  };
}
