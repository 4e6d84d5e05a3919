import fs from 'node:fs';
import { Command } from 'commander';
import { loadConfig } from '../config.js';

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
