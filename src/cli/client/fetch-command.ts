/**
 * `keywarden fetch --dir DIR [--secret NAME]... [--all] [--watch SECONDS] [--timeout SECONDS]`
 *
 * Writes secrets to DIR/<name> atomically and keeps DIR/.keywarden-manifest.json so files it
 * wrote for secrets no longer granted or requested are removed later (and nothing else is).
 * With --watch it polls the list endpoint and re-fetches only secrets whose checksum, version or
 * file metadata changed (like Keywhiz keysync), until SIGTERM/SIGINT.
 */
import fs from 'node:fs';
import path from 'node:path';
import { InvalidArgumentError, type Command } from 'commander';
import { BrokerClient, clientConfigFromEnv, MissingSecretsError, TransientError, withRetry, type FileMetadata, type SecretSummary } from './broker-client.js';
import { SECRET_NAME } from './env-names.js';
import { CliError, ExitCode, FETCH_EXIT_CODES, usageError } from './exit-codes.js';
import { redact, warn } from './log.js';
import { exitCodesHelp } from '../help.js';
import { CREDENTIALS_HELP, DEFAULT_TIMEOUT_SECONDS, parseSeconds } from './options.js';
import { runAction } from './run.js';
import { isIntact, readManifest, removeStale, removeStaleTemps, secretPath, UnsafeNameError, writeManifest, writeSecretFile, type Manifest } from './secret-files.js';

interface FetchOptions {
  dir: string;
  secret?: string[];
  all?: boolean;
  watch?: number;
  timeout: number;
  quiet?: boolean;
}

interface SyncContext {
  client: BrokerClient;
  dir: string;
  names: string[];
  all: boolean;
  manifest: Manifest;
  quiet: boolean;
}

/** What one pass did. */
interface SyncResult {
  /** Written (new or changed), with the version written. */
  updated: Array<{ name: string; version: number }>;
  /** Present and already up to date. */
  unchanged: number;
  /** Files of secrets no longer granted or requested, deleted. */
  removed: string[];
}

const plural = (n: number, word: string) => `${n} ${word}${n === 1 ? '' : 's'}`;

/** The line `fetch` prints on success (stderr), e.g. "wrote 2 secrets to /run/secrets (db v3, tls.key v1)". */
export function fetchSummary(dir: string, r: SyncResult): string {
  const MAX_NAMED = 5;
  const parts: string[] = [];
  if (r.updated.length) {
    const named = r.updated.slice(0, MAX_NAMED).map((u) => `${u.name} v${u.version}`);
    if (r.updated.length > MAX_NAMED) named.push(`+${r.updated.length - MAX_NAMED} more`);
    parts.push(`wrote ${plural(r.updated.length, 'secret')} to ${dir} (${named.join(', ')})`);
    if (r.unchanged) parts.push(`${r.unchanged} unchanged`);
  } else {
    parts.push(r.unchanged ? `${plural(r.unchanged, 'secret')} in ${dir} already up to date` : `no secrets granted to this client; nothing written to ${dir}`);
  }
  if (r.removed.length) parts.push(`removed ${plural(r.removed.length, 'stale file')}`);
  return parts.join('; ');
}

function metaKey(meta: FileMetadata): string {
  return JSON.stringify({ mode: meta.mode ?? null, owner: meta.owner ?? null, group: meta.group ?? null });
}

function collectName(value: string, previous: string[] = []): string[] {
  if (!SECRET_NAME.test(value)) throw new InvalidArgumentError(`invalid secret name ${JSON.stringify(value)} (allowed: ${SECRET_NAME.source})`);
  return [...previous, value];
}

/**
 * One pass: list, write what changed, remove what went away, save the manifest.
 * `strict` (the first pass) makes a requested secret that is not granted fatal (exit 66);
 * later passes warn and remove its file instead.
 */
async function syncOnce(ctx: SyncContext, strict: boolean): Promise<SyncResult> {
  const listed = await ctx.client.list();
  const byName = new Map(listed.map((s) => [s.name, s]));
  let desired: SecretSummary[];
  if (ctx.all) {
    desired = listed;
  } else {
    const missing = ctx.names.filter((n) => !byName.has(n));
    if (missing.length && strict) throw new MissingSecretsError(missing);
    for (const n of missing) if (ctx.manifest.files[n]) warn(`secret ${n} is no longer granted; removing its file`);
    desired = ctx.names.filter((n) => byName.has(n)).map((n) => byName.get(n)!);
  }
  for (const s of desired) secretPath(ctx.dir, s.name); // refuse unsafe names before writing anything

  const changed = desired.filter((s) => {
    const entry = ctx.manifest.files[s.name];
    return !entry || entry.checksum !== s.checksum || entry.version !== s.version || entry.meta !== metaKey(s.metadata) || !isIntact(ctx.dir, s.name, entry);
  });
  const updated: SyncResult['updated'] = [];
  if (changed.length) {
    let delivered;
    try {
      delivered = await ctx.client.fetchSecrets(changed.map((s) => s.name));
    } catch (err) {
      // Granted a moment ago, gone now: the next pass sees the new list.
      if (err instanceof MissingSecretsError && !strict) return { updated: [], unchanged: 0, removed: [] };
      throw err;
    }
    for (const secret of delivered) {
      const stamp = writeSecretFile(ctx.dir, secret.name, secret.content, secret.metadata, { warn });
      ctx.manifest.files[secret.name] = { version: secret.version, checksum: secret.checksum, ...stamp, meta: metaKey(secret.metadata) };
      updated.push({ name: secret.name, version: secret.version });
    }
  }
  const removed = removeStale(ctx.dir, ctx.manifest, new Set(desired.map((s) => s.name)), warn);
  if (updated.length || removed.length || strict) writeManifest(ctx.dir, ctx.manifest);
  if (!ctx.quiet) for (const n of removed) if (!strict) warn(`removed ${n}`);
  return { updated, unchanged: desired.length - updated.length, removed };
}

function prepareDir(dir: string): string {
  const resolved = path.resolve(dir);
  try {
    fs.mkdirSync(resolved, { recursive: true, mode: 0o711 });
  } catch (err) {
    throw new CliError(ExitCode.INTERNAL, `cannot create ${resolved} (${(err as NodeJS.ErrnoException).code})`);
  }
  if (!fs.statSync(resolved).isDirectory()) throw usageError(`--dir ${resolved} is not a directory`);
  return resolved;
}

/** Sleeps until `ms` pass or stop() is called. */
function stopper() {
  let stopped = false;
  let wake: (() => void) | undefined;
  return {
    get stopped() {
      return stopped;
    },
    stop() {
      stopped = true;
      wake?.();
    },
    sleep(ms: number) {
      return new Promise<void>((resolve) => {
        if (stopped) return resolve();
        const timer = setTimeout(resolve, ms);
        wake = () => {
          clearTimeout(timer);
          resolve();
        };
      });
    },
  };
}

async function watchLoop(ctx: SyncContext, intervalSeconds: number): Promise<number> {
  const control = stopper();
  let signals = 0;
  const onSignal = (signal: NodeJS.Signals) => {
    if (++signals > 1) process.exit(128 + (signal === 'SIGINT' ? 2 : 15));
    control.stop();
  };
  process.on('SIGTERM', onSignal);
  process.on('SIGINT', onSignal);
  while (!control.stopped) {
    await control.sleep(intervalSeconds * 1000);
    if (control.stopped) break;
    try {
      const result = await syncOnce(ctx, false);
      if (!ctx.quiet) for (const u of result.updated) warn(`updated ${u.name} (version ${u.version})`);
    } catch (err) {
      if (err instanceof CliError && (err.exitCode === ExitCode.DENIED || err.exitCode === ExitCode.USAGE)) throw err;
      if (err instanceof TransientError) warn(`broker unreachable at ${ctx.client.addr}, retrying in ${intervalSeconds}s (${err.reason})`);
      else warn(`sync failed, retrying in ${intervalSeconds}s: ${(err as Error).message}`);
    }
  }
  return ExitCode.OK;
}

async function fetchAction(opts: FetchOptions): Promise<number> {
  const names = [...new Set(opts.secret ?? [])];
  if (!names.length && !opts.all) throw usageError('name secrets with --secret NAME or use --all');
  for (const n of names) {
    try {
      secretPath(opts.dir, n);
    } catch (err) {
      if (err instanceof UnsafeNameError) throw usageError(err.message);
      throw err;
    }
  }
  const config = clientConfigFromEnv(process.env);
  const dir = prepareDir(opts.dir);
  const client = new BrokerClient(config);
  try {
    removeStaleTemps(dir);
    const ctx: SyncContext = { client, dir, names, all: Boolean(opts.all), manifest: readManifest(dir, warn), quiet: Boolean(opts.quiet) };
    const first = await withRetry(client, () => syncOnce(ctx, true), { deadline: Date.now() + opts.timeout * 1000 });
    if (!ctx.quiet) process.stderr.write(redact(`keywarden fetch: ${fetchSummary(dir, first)}`) + '\n');
    if (opts.watch === undefined) return ExitCode.OK;
    if (config.credentials.kind === 'bootstrap') {
      warn(`with a single-use bootstrap token, --watch ends when the access token expires (in ${client.tokenExpiresInSeconds() ?? '?'}s)`);
    }
    return await watchLoop(ctx, opts.watch);
  } finally {
    client.close();
  }
}

export function registerFetchCommand(program: Command): void {
  const fetch = program
    .command('fetch')
    .description('write secrets to files in a directory (atomically), optionally keeping them up to date')
    .requiredOption('--dir <DIR>', 'directory to write DIR/<secret name> files into (created if missing)')
    .option('--secret <NAME>', 'secret to write (repeatable)', collectName)
    .option('--all', 'every secret granted to this client')
    .option('--watch <seconds>', 'keep running, re-fetching changed secrets every SECONDS until SIGTERM/SIGINT', parseSeconds)
    .option('--timeout <seconds>', 'how long to retry while the broker is unreachable at startup', parseSeconds, DEFAULT_TIMEOUT_SECONDS)
    .option('--quiet', 'print nothing on success (no summary line, no "updated" lines with --watch); warnings and errors still go to stderr')
    .addHelpText(
      'after',
      `${CREDENTIALS_HELP}\nFiles get the secret's metadata mode (default 0400) and, when running as root, its owner/group.\n` +
        `DIR/.keywarden-manifest.json records the files written; later runs delete those whose secrets went away.\n` +
        `On success one summary line goes to stderr (keywarden fetch: wrote N secrets to DIR ...) unless --quiet.`,
    )
    .action(runAction(fetchAction));
  exitCodesHelp(fetch, FETCH_EXIT_CODES);
}
