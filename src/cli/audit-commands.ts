import fs from 'node:fs';
import { Command } from 'commander';
import { loadConfig } from '../config.js';

// kept here rather than imported, so `--help` does not load the witness module
const WITNESS_HELP = `
Exit codes:
  0  the log is consistent with what this witness saw before (--once), or stopped by a signal without an alarm
  1  usage error, unreadable state file, pinned key conflict; with --once also a network or HTTP failure
  2  fork: the same tree size with another root, or a consistency proof that does not verify
  3  rollback: a smaller tree than already witnessed, or a signed time earlier than the witnessed one
  4  the checkpoint is not signed by the pinned key, names another origin, or is malformed`;

async function brokerServices() {
  const [{ createServices }, { createLogger }] = await Promise.all([import('../broker.js'), import('../http/logging.js')]);
  return createServices(loadConfig(), { logger: createLogger('warn') });
}

export function auditCommand(): Command {
  const audit = new Command('audit').description('audit log maintenance and offline verification');
  audit
    .command('prune')
    .description('remove the content of events older than a time; their leaf hashes stay in the Merkle tree, so proofs and verification still cover them')
    .requiredOption('--before <time>', 'ISO 8601 time; events before it are removed')
    .action(async (opts: { before: string }) => {
      const before = Date.parse(opts.before);
      if (Number.isNaN(before)) throw new Error('--before must be an ISO 8601 time');
      const services = await brokerServices();
      const { pruneAuditLog } = await import('../audit/audit-retention.js');
      try {
        const result = await pruneAuditLog({ dal: services.auditQuery, sequencer: services.auditSequencer, audit: services.audit }, before);
        process.stdout.write(result.removed ? `removed the events of leaves 0 to ${result.throughLeaf} (${result.removed} events)\n` : 'no events before that time\n');
      } finally {
        await services.dbHandle.close();
      }
    });
  audit
    .command('verify-export')
    .description('verify an NDJSON export offline (exit 0 when intact): format 2 against the log verifier key, format 1 (hash chain, before the Merkle tree) against a saved JWKS')
    .requiredOption('--file <path>', 'export from GET /v1/audit/export')
    .option('--key <vkey>', 'the log verifier key (GET /v1/audit/checkpoint: verifierKey), or @file to read it from a file')
    .option('--jwks <path>', 'format 1 only: the broker JWKS saved from /.well-known/jwks.json')
    .action(async (opts: { file: string; key?: string; jwks?: string }) => {
      const verifierKey = opts.key?.startsWith('@') ? fs.readFileSync(opts.key.slice(1), 'utf8').trim() : opts.key;
      const jwks = opts.jwks ? JSON.parse(fs.readFileSync(opts.jwks, 'utf8')) : undefined;
      const { verifyExportFile } = await import('../audit/offline-verify.js');
      const result = await verifyExportFile(opts.file, { verifierKey, jwks });
      process.stdout.write(JSON.stringify(result, null, 2) + '\n');
      if (!result.ok) process.exitCode = 1;
    });
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
    .addHelpText('after', () => WITNESS_HELP)
    .action(async (opts: { url: string; state: string; apiKeyFile?: string; key?: string; tofu?: boolean; once?: boolean; interval: string; metricsPort?: string }) => {
      const interval = Number(opts.interval);
      if (!(interval > 0)) throw new Error('--interval must be a positive number of seconds');
      const metricsPort = opts.metricsPort === undefined ? undefined : Number(opts.metricsPort);
      if (metricsPort !== undefined && !(Number.isInteger(metricsPort) && metricsPort >= 0 && metricsPort < 65536)) throw new Error('--metrics-port must be a port number');
      const apiKey = (opts.apiKeyFile ? fs.readFileSync(opts.apiKeyFile, 'utf8') : (process.env.KEYWARDEN_API_KEY ?? '')).trim();
      if (!apiKey) throw new Error('an auditor API key is required: --api-key-file or KEYWARDEN_API_KEY');
      const verifierKey = opts.key?.startsWith('@') ? fs.readFileSync(opts.key.slice(1), 'utf8').trim() : opts.key;
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
    });
  audit
    .command('checkpoint')
    .description('sequence every queued event now and print the signed tree head')
    .action(async () => {
      const services = await brokerServices();
      try {
        await services.auditSequencer.flush();
        const head = await services.auditTree.latestHead();
        process.stdout.write(head ? head.note : 'the log has no signed tree head\n');
      } finally {
        await services.dbHandle.close();
      }
    });
  return audit;
}
