/**
 * `keywarden break-glass --reason TEXT [--name NAME] [--expires DURATION|never]`
 *
 * Recovery when every admin API key is lost or revoked, in the spirit of Vault's
 * `operator generate-root`: run on the broker host with the broker's own configuration (its
 * database and root key; no HTTP server, no API key), it issues a new admin API key and records
 * who ran it (uid, effective uid, the kernel's login uid, host, pid) and why in the audit log, in
 * the same transaction as the key.
 * The key goes to stdout, once; everything else to stderr.
 *
 * It never creates a root key or a database: a missing, incomplete or different root key, or a
 * database that holds no Keywarden data, is refused before anything is written.
 *
 * Exit codes: 0 key issued, 64 usage error, 66 root key missing/wrong or no Keywarden database,
 * 78 invalid configuration or the database cannot be opened, 70 other error.
 */
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import type { Command } from 'commander';
import { parseExpires } from './api-key-commands.js';
import { exitCodesHelp } from './help.js';

export const BreakGlassExit = { OK: 0, USAGE: 64, NO_INPUT: 66, INTERNAL: 70, CONFIG: 78 } as const;

const BREAK_GLASS_HELP = `
Runs on the broker host with the broker's configuration (KEYWARDEN_DATA_DIR, KEYWARDEN_DATABASE_URL,
the root key). Needs no API key and no running broker; a running broker may stay up. Prints the new
admin API key once on stdout; records the uid, effective uid and login uid (with their user
names), host, pid and --reason in the audit log (action apikey.break-glass); SUDO_USER only as a
claim. Never creates a root key: restore a lost root key from backup first.

Afterwards: create a regular admin key with \`keywarden api-key create --role admin\`, and revoke the
break-glass key (\`keywarden api-key revoke ID\`).`;

const BREAK_GLASS_EXIT_CODES = {
  0: 'the admin key was issued',
  64: 'usage error',
  66: 'the root key is missing, incomplete or another key; or the database holds no Keywarden data',
  70: 'other error',
  78: 'invalid configuration (a KEYWARDEN_* setting), or the database cannot be opened',
};

class BreakGlassError extends Error {
  constructor(
    readonly exitCode: number,
    message: string,
  ) {
    super(message);
  }
}

export interface BreakGlassOptions {
  reason: string;
  name?: string;
  expires: string;
}

const NAME = /^[A-Za-z0-9._@-]{1,128}$/;

/** /proc/self/loginuid holds this value when no login set it (a daemon, a container, a kernel without audit). */
const LOGIN_UID_UNSET = 4294967295;

/**
 * The audit login uid: set by PAM at login and inherited by every process after it, across sudo
 * and su, and only a privileged process may set it (once). Unlike SUDO_USER it is not the
 * runner's say-so. Null when unset or where there is no /proc (not Linux).
 */
export function readLoginUid(file = '/proc/self/loginuid'): number | null {
  let text: string;
  try {
    text = fs.readFileSync(file, 'utf8').trim();
  } catch {
    return null;
  }
  if (!/^\d{1,10}$/.test(text)) return null;
  const uid = Number(text);
  return uid === LOGIN_UID_UNSET ? null : uid;
}

/** The account name of `uid` from the passwd database (/etc/passwd, then getent for NSS); null when it has none. */
export function userName(uid: number | null, passwdFile = '/etc/passwd'): string | null {
  if (uid === null) return null;
  try {
    for (const line of fs.readFileSync(passwdFile, 'utf8').split('\n')) {
      const [name, , id] = line.split(':');
      if (name && id !== undefined && Number(id) === uid && /^\d+$/.test(id)) return name;
    }
  } catch {
    // no passwd file (a minimal container): try NSS
  }
  try {
    const entry = execFileSync('getent', ['passwd', String(uid)], { encoding: 'utf8', timeout: 2000, stdio: ['ignore', 'pipe', 'ignore'] });
    return entry.split(':')[0] || null;
  } catch {
    return null;
  }
}

/**
 * Who is at the keyboard, from what this process can check: its real and effective uid, the
 * login uid the kernel keeps across sudo and su, their names, the host and pid. SUDO_USER is an
 * environment variable anyone can set (`SUDO_USER=alice` typed by root): it is recorded, but only
 * as what the runner claims.
 */
export function whoAmI(reason: string, env: NodeJS.ProcessEnv = process.env, loginUid = readLoginUid()) {
  const uid = typeof process.getuid === 'function' ? process.getuid() : null;
  const euid = typeof process.geteuid === 'function' ? process.geteuid() : uid;
  let effectiveName: string | null = null;
  try {
    // the effective user's passwd entry
    effectiveName = os.userInfo().username || null;
  } catch {
    // a uid without a passwd entry (containers)
    effectiveName = userName(euid);
  }
  return {
    osUser: effectiveName ?? (euid !== null ? `uid-${euid}` : 'unknown'),
    uid,
    user: uid === euid ? effectiveName : userName(uid),
    euid,
    loginUid,
    loginUser: userName(loginUid),
    claimedSudoUser: env.SUDO_USER || null,
    host: os.hostname(),
    pid: process.pid,
    reason,
  };
}

function validate(opts: BreakGlassOptions) {
  const reason = (opts.reason ?? '').trim();
  if (!reason) throw new BreakGlassError(BreakGlassExit.USAGE, '--reason is required: say why the admin key is needed (it goes into the audit log)');
  if (reason.length > 500) throw new BreakGlassError(BreakGlassExit.USAGE, '--reason must be at most 500 characters');
  // eslint-disable-next-line no-control-regex
  if (/[\u0000-\u001f\u007f]/.test(reason)) throw new BreakGlassError(BreakGlassExit.USAGE, '--reason must be one line of text without control characters');
  const name = opts.name ?? `break-glass-${new Date().toISOString().replace(/[:.]/g, '-')}`;
  if (!NAME.test(name)) throw new BreakGlassError(BreakGlassExit.USAGE, '--name must match ^[A-Za-z0-9._@-]{1,128}$');
  let ttlSeconds: number | undefined;
  try {
    ttlSeconds = parseExpires(opts.expires, { allowNever: true });
  } catch (err) {
    throw new BreakGlassError(BreakGlassExit.USAGE, `--expires: ${(err as Error).message}`);
  }
  return { reason, name, ttlSeconds };
}

/** Runs the command; returns the exit code. */
export async function breakGlass(opts: BreakGlassOptions, out: NodeJS.WritableStream = process.stdout, err: NodeJS.WritableStream = process.stderr): Promise<number> {
  const say = (s: string) => err.write(`${s}\n`);
  try {
    const input = validate(opts);
    // the broker's modules load only here, so `--help` and usage errors stay fast
    const [{ loadConfig, ConfigError }, { createServices }, { openDatabase, sqliteFileFromUrl }, { Database }, { openKeyProviderForRecovery }, { KeyProviderError }, { createLogger }] = await Promise.all([
      import('../config.js'),
      import('../broker.js'),
      import('../db/connection.js'),
      import('../db/database.js'),
      import('../crypto/create-key-provider.js'),
      import('../crypto/key-provider.js'),
      import('../http/logging.js'),
    ]);
    let config;
    try {
      config = loadConfig();
    } catch (e) {
      if (e instanceof ConfigError) throw new BreakGlassError(BreakGlassExit.CONFIG, e.message);
      throw e;
    }
    // a SQLite file that is not there would be created by opening it: nothing to recover there
    const sqliteFile = config.databaseUrl.startsWith('sqlite:') ? sqliteFileFromUrl(config.databaseUrl) : undefined;
    if (sqliteFile !== undefined && sqliteFile !== ':memory:' && !fs.existsSync(sqliteFile)) {
      throw new BreakGlassError(
        BreakGlassExit.NO_INPUT,
        `there is no database at ${sqliteFile}: break-glass recovers an existing broker, run it with the broker's KEYWARDEN_DATA_DIR / KEYWARDEN_DATABASE_URL. Nothing was created.`,
      );
    }
    const dbHandle = await openDatabase(config.databaseUrl, { sqliteSynchronous: config.sqliteSynchronous, timeouts: config.dbTimeouts });
    let services: Awaited<ReturnType<typeof createServices>> | undefined;
    try {
      let keyProvider;
      try {
        keyProvider = await openKeyProviderForRecovery(config.keyProvider, new Database(dbHandle, { fastPath: false, checkpoints: false }));
      } catch (e) {
        if (e instanceof KeyProviderError) throw new BreakGlassError(BreakGlassExit.NO_INPUT, e.message);
        throw e;
      }
      if (!keyProvider) {
        throw new BreakGlassError(
          BreakGlassExit.NO_INPUT,
          `the database (${config.databaseUrl.split(':')[0]}) holds no Keywarden data: break-glass recovers an existing broker. ` +
            `Check KEYWARDEN_DATABASE_URL and KEYWARDEN_DATA_DIR; a new broker starts with \`keywarden init\`. Nothing was created.`,
        );
      }
      try {
        services = await createServices(config, { logger: createLogger('warn'), db: dbHandle, keyProvider });
      } catch (e) {
        if (e instanceof ConfigError) throw new BreakGlassError(BreakGlassExit.CONFIG, e.message);
        if (e instanceof KeyProviderError) throw new BreakGlassError(BreakGlassExit.NO_INPUT, e.message);
        throw e;
      }
      const issued = await services.apiKeys.breakGlass({ name: input.name, ttlSeconds: input.ttlSeconds, operator: whoAmI(input.reason) });
      // the event is committed with the key; sequencing it now puts it in a signed tree head (and
      // the audit file) at once, and a running broker does it shortly otherwise
      await services.auditSequencer.flush(5_000).catch((e) => say(`keywarden: note: the audit event is recorded but not sequenced yet (${(e as Error).message}); the broker will sequence it`));
      say(`keywarden: break-glass admin API key ${issued.id} (name ${issued.name}) issued${issued.expiresAt ? `, expires ${issued.expiresAt}` : ', never expires'}.`);
      say(`keywarden: recorded in the audit log as apikey.break-glass. The key is printed once, below on stdout: store it now.`);
      say('keywarden: next: create a regular admin key (keywarden api-key create --role admin --name NAME) and revoke this one (keywarden api-key revoke ' + issued.id + ').');
      out.write(`${issued.key}\n`);
      return BreakGlassExit.OK;
    } finally {
      if (services) {
        await services.auditSequencer.stop();
        services.auditSink?.close();
        await services.database.close();
        await services.registry.egress.close();
      }
      await dbHandle.close();
    }
  } catch (e) {
    if (e instanceof BreakGlassError) {
      say(`keywarden: break-glass refused: ${e.message}`);
      return e.exitCode;
    }
    // start-up errors carry their exit code (an unreachable database: 78)
    const code = (e as { exitCode?: unknown })?.exitCode;
    const known = typeof code === 'number' && Number.isInteger(code) && code > 0 && code < 256;
    say(`keywarden: break-glass failed: ${(e as Error)?.message ?? String(e)}`);
    return known ? code : BreakGlassExit.INTERNAL;
  }
}

export function registerBreakGlassCommand(program: Command): void {
  const command = program
    .command('break-glass')
    .description('recovery: issue a new admin API key locally on the broker host (audited; needs the database and root key)')
    .requiredOption('--reason <text>', 'why the key is needed (recorded in the audit log)')
    .option('--name <name>', 'name of the new key (default: break-glass-<time>)')
    .option('--expires <duration>', 'lifetime: 90m, 24h, 7d, 4w, or "never"', '24h')
    .addHelpText('after', BREAK_GLASS_HELP)
    .action(async (opts: BreakGlassOptions) => {
      process.exit(await breakGlass(opts));
    });
  exitCodesHelp(command, BREAK_GLASS_EXIT_CODES);
}
