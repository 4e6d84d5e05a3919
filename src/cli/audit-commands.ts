import fs from 'node:fs';
import os from 'node:os';
import readline from 'node:readline';
import { Command } from 'commander';
import { loadConfig } from '../config.js';
import { BROKER_EXIT_CODES, exitCodesHelp, noInputError, usageError } from './help.js';

// kept here rather than imported, so `--help` does not load the witness module
const WITNESS_EXIT_CODES = {
  0: 'the log is consistent with what this witness saw before (--once), or stopped by a signal without an alarm',
  1: 'no verifier key (give --key or --tofu), unreadable state file, pinned key conflict; with --once also a network or HTTP failure',
  2: 'fork: the same tree size with another root, or a consistency proof that does not verify',
  3: 'rollback: a smaller tree than already witnessed, or a signed time earlier than the witnessed one',
  4: 'the checkpoint is not signed by the pinned key, names another origin, or is malformed',
  64: 'usage error (missing or bad option, no API key)',
  66: 'a file named by --api-key-file or --key @file cannot be read',
};

const VERIFY_EXPORT_EXIT_CODES = {
  0: 'the export is intact',
  1: 'the export is not intact: the chain or tree is broken, altered, cut short or signed by another key (stderr says where)',
  64: 'usage error (missing --key for a format-2 export or --jwks for a format-1 one, a malformed key or JWKS)',
  66: 'the export, the --key @file or the --jwks file cannot be read',
};

async function brokerServices() {
  const [{ createServices }, { createLogger }] = await Promise.all([import('../broker.js'), import('../http/logging.js')]);
  return createServices(loadConfig(), { logger: createLogger('warn') });
}

/** Reads a file named on the command line; a missing or unreadable one ends with 66 (EX_NOINPUT). */
function readInput(what: string, file: string): string {
  try {
    return fs.readFileSync(file, 'utf8');
  } catch (err) {
    throw noInputError(`${what}: cannot read ${file} (${(err as NodeJS.ErrnoException).code ?? 'error'})`);
  }
}

/** `--key vkey` or `--key @file`. */
function keyOption(option: string, value: string | undefined): string | undefined {
  if (value === undefined) return undefined;
  return value.startsWith('@') ? readInput(option, value.slice(1)).trim() : value;
}

/** The first non-empty line of FILE (undefined for an empty file); unreadable: 66. */
async function firstLine(file: string): Promise<string | undefined> {
  let stat: fs.Stats;
  try {
    stat = fs.statSync(file);
  } catch (err) {
    throw noInputError(`--file: cannot read ${file} (${(err as NodeJS.ErrnoException).code ?? 'error'})`);
  }
  if (!stat.isFile()) throw noInputError(`--file: ${file} is not a regular file`);
  const input = fs.createReadStream(file, { encoding: 'utf8' });
  const lines = readline.createInterface({ input, crlfDelay: Infinity });
  try {
    for await (const line of lines) if (line.trim()) return line;
    return undefined;
  } catch (err) {
    throw noInputError(`--file: cannot read ${file} (${(err as NodeJS.ErrnoException).code ?? 'error'})`);
  } finally {
    lines.close();
    input.destroy();
  }
}

interface VerifyExportOptions {
  file: string;
  key?: string;
  jwks?: string;
}

async function verifyExportAction(opts: VerifyExportOptions): Promise<void> {
  const say = (text: string) => process.stderr.write(`keywarden audit verify-export: ${opts.file}: ${text}\n`);
  // usage and input checks first, so exit 1 always means "this export is not intact"
  const first = await firstLine(opts.file);
  let header: { type?: unknown } | undefined;
  try {
    header = first === undefined ? undefined : (JSON.parse(first) as { type?: unknown });
  } catch {
    header = undefined; // not JSON: the verifier reports the damaged line
  }
  const format2 = header?.type === 'export-header';
  const isJson = header !== undefined;
  const verifierKey = keyOption('--key', opts.key);
  if (verifierKey !== undefined) {
    const { parseVerifierKey, NoteError } = await import('../audit/signed-note.js');
    try {
      parseVerifierKey(verifierKey);
    } catch (err) {
      throw usageError(`--key is not a log verifier key: ${err instanceof NoteError ? err.reason : 'malformed'} (expected the verifierKey of GET /v1/audit/checkpoint)`);
    }
  }
  let jwks: { keys: import('jose').JWK[] } | undefined;
  if (opts.jwks !== undefined) {
    const text = readInput('--jwks', opts.jwks);
    try {
      jwks = JSON.parse(text) as { keys: import('jose').JWK[] };
    } catch {
      throw usageError(`--jwks: ${opts.jwks} is not JSON (expected the JWKS saved from /.well-known/jwks.json)`);
    }
    if (!jwks || !Array.isArray(jwks.keys)) throw usageError(`--jwks: ${opts.jwks} is not a JWKS (no "keys" array)`);
  }
  if (format2 && verifierKey === undefined) throw usageError('this is a format-2 export: give the log verifier key with --key <vkey|@file> (GET /v1/audit/checkpoint: verifierKey)');
  if (isJson && !format2 && !jwks) throw usageError('this is a format-1 (hash chain) export: give the broker JWKS of that time with --jwks <file>');

  const { verifyExportFile } = await import('../audit/offline-verify.js');
  let result: Awaited<ReturnType<typeof verifyExportFile>>;
  try {
    result = await verifyExportFile(opts.file, { verifierKey, jwks });
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    if (code) throw noInputError(`--file: cannot read ${opts.file} (${code})`);
    throw err;
  }
  process.stdout.write(JSON.stringify(result, null, 2) + '\n');
  if (result.ok) {
    const range = result.format === 2 ? `, leaves ${result.fromLeaf} to ${result.toLeaf} of a tree of ${result.treeSize}${result.checkpointTime ? `, signed ${result.checkpointTime}` : ''}` : '';
    say(`intact (format ${result.format}: ${result.checked} events checked${range})`);
    return;
  }
  const where =
    result.firstBadLeaf !== undefined ? ` [first bad leaf: ${result.firstBadLeaf}]` : result.legacy?.firstBrokenSeq !== undefined ? ` [first broken event: seq ${result.legacy.firstBrokenSeq}]` : '';
  say(`NOT intact (format ${result.format}, ${result.checked} events checked before the failure): ${result.reason ?? 'verification failed'}${where}`);
  process.exitCode = 1;
}

/** The person at the keyboard, for events the CLI records with its own hands on the database. */
function localActor() {
  let user: string | undefined;
  try {
    user = os.userInfo().username;
  } catch {
    // a uid without a passwd entry (containers)
  }
  user ||= process.env.USER || process.env.LOGNAME || (typeof process.getuid === 'function' ? `uid-${process.getuid()}` : 'unknown');
  return { kind: 'system', id: `${user}@${os.hostname()}`.slice(0, 128), name: 'keywarden-cli' };
}

export function auditCommand(): Command {
  const audit = new Command('audit').description('audit log maintenance and offline verification');
  exitCodesHelp(
    audit
      .command('prune')
      .description('remove the content of events older than a time; their leaf hashes stay in the Merkle tree, so proofs and verification still cover them')
      .requiredOption('--before <time>', 'ISO 8601 time; events before it are removed')
      .action(async (opts: { before: string }) => {
        const before = Date.parse(opts.before);
        if (Number.isNaN(before)) throw usageError(`--before must be an ISO 8601 time, e.g. 2024-01-31T00:00:00Z (got ${JSON.stringify(opts.before)})`);
        const services = await brokerServices();
        const { pruneAuditLog } = await import('../audit/audit-retention.js');
        try {
          const result = await pruneAuditLog({ dal: services.auditQuery, sequencer: services.auditSequencer, audit: services.audit }, before);
          process.stdout.write(result.removed ? `removed the events of leaves 0 to ${result.throughLeaf} (${result.removed} events)\n` : 'no events before that time\n');
        } finally {
          await services.dbHandle.close();
        }
      }),
    { 0: 'pruned (or nothing to prune)', ...BROKER_EXIT_CODES },
  );
  exitCodesHelp(
    audit
      .command('verify-export')
      .description('verify an NDJSON export offline (exit 0 when intact): format 2 against the log verifier key, format 1 (hash chain, before the Merkle tree) against a saved JWKS')
      .requiredOption('--file <path>', 'export from GET /v1/audit/export')
      .option('--key <vkey>', 'the log verifier key (GET /v1/audit/checkpoint: verifierKey), or @file to read it from a file')
      .option('--jwks <path>', 'format 1 only: the broker JWKS saved from /.well-known/jwks.json')
      .addHelpText('after', '\nThe verdict as JSON goes to stdout; one line to stderr says whether FILE is intact and, if not, where it broke and why.')
      .action(verifyExportAction),
    VERIFY_EXPORT_EXIT_CODES,
  );
  exitCodesHelp(
    audit
      .command('witness')
      .description('watch the log from outside its database: accept a new signed tree head only if it is signed by the pinned key and extends the last one this witness verified (consistency proofs); alarm on forks, rollbacks and bad signatures')
      .requiredOption('--url <url>', 'broker base URL')
      .requiredOption('--state <file>', 'where the witness keeps the last verified head (JSON, mode 0600); keep it outside the broker’s trust domain')
      .option('--api-key-file <file>', 'file with an auditor API key (default: KEYWARDEN_API_KEY)')
      .option('--key <vkey>', 'the log verifier key obtained out of band, or @file; a key pinned in the state file always wins')
      .option('--tofu', 'without --key and state: trust the key the broker publishes now (pinned into the state file)')
      .option('--once', 'poll once; the exit code is the verdict')
      .option('--interval <seconds>', 'seconds between polls', '10')
      .option('--metrics-port <port>', 'serve Prometheus metrics on 127.0.0.1:<port>/metrics')
      .action(async (opts: { url: string; state: string; apiKeyFile?: string; key?: string; tofu?: boolean; once?: boolean; interval: string; metricsPort?: string }) => {
        const interval = Number(opts.interval);
        if (!(interval > 0)) throw usageError('--interval must be a positive number of seconds');
        const metricsPort = opts.metricsPort === undefined ? undefined : Number(opts.metricsPort);
        if (metricsPort !== undefined && !(Number.isInteger(metricsPort) && metricsPort >= 0 && metricsPort < 65536)) throw usageError('--metrics-port must be a port number');
        try {
          const url = new URL(opts.url);
          if (url.protocol !== 'http:' && url.protocol !== 'https:') throw new Error();
        } catch {
          throw usageError(`--url must be an http:// or https:// URL (got ${JSON.stringify(opts.url)})`);
        }
        const apiKey = (opts.apiKeyFile ? readInput('--api-key-file', opts.apiKeyFile) : (process.env.KEYWARDEN_API_KEY ?? '')).trim();
        if (!apiKey) throw usageError('an auditor API key is required: --api-key-file or KEYWARDEN_API_KEY');
        const verifierKey = keyOption('--key', opts.key);
        const [{ AuditWitness, WitnessMetrics, runWitness }, { createLogger }] = await Promise.all([import('../audit/audit-witness.js'), import('../http/logging.js')]);
        const log = createLogger(process.env.KEYWARDEN_LOG_LEVEL ?? 'info').child({ component: 'audit-witness' });
        const metrics = metricsPort === undefined ? undefined : new WitnessMetrics();
        const server = metrics && metricsPort !== undefined ? await metrics.listen(metricsPort) : undefined;
        if (server) log.info({ url: server.url }, 'witness metrics listening');
        const stop = new AbortController();
        const onSignal = () => stop.abort();
        process.once('SIGTERM', onSignal);
        process.once('SIGINT', onSignal);
        try {
          const witness = new AuditWitness({ url: opts.url, apiKey, statePath: opts.state, verifierKey, tofu: Boolean(opts.tofu), log, metrics });
          process.exitCode = await runWitness(witness, { once: Boolean(opts.once), intervalMs: interval * 1000, signal: stop.signal });
        } finally {
          process.off('SIGTERM', onSignal);
          process.off('SIGINT', onSignal);
          await server?.close();
        }
      }),
    WITNESS_EXIT_CODES,
  );
  exitCodesHelp(
    audit
      .command('checkpoint')
      .description('sequence every queued event now and print the signed tree head (recorded in the audit log as audit.checkpoint, like POST /v1/audit/checkpoints)')
      .action(async () => {
        const services = await brokerServices();
        try {
          await services.auditSequencer.flush();
          const head = await services.auditTree.latestHead();
          // the same event the API records; its actor is the local user, as for the other local commands
          await services.audit.record({
            actor: localActor(),
            action: 'audit.checkpoint',
            resource: { kind: 'audit-log', name: 'checkpoints' },
            outcome: 'allow',
            details: { treeSize: head?.treeSize ?? 0, via: 'cli' },
          });
          process.stdout.write(head ? head.note : 'the log has no signed tree head\n');
        } finally {
          await services.dbHandle.close();
        }
      }),
    { 0: 'the signed tree head was printed', ...BROKER_EXIT_CODES },
  );
  return audit;
}
