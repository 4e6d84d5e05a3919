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
    .description('remove events older than a time, after writing a signed checkpoint that covers them')
    .requiredOption('--before <time>', 'ISO 8601 time; events before it are removed')
    .action(async (opts: { before: string }) => {
      const before = Date.parse(opts.before);
      if (Number.isNaN(before)) throw new Error('--before must be an ISO 8601 time');
      const services = await brokerServices();
      const { pruneAuditLog } = await import('../audit/audit-retention.js');
      try {
        const result = await pruneAuditLog({ dal: services.auditQuery, checkpoints: services.checkpoints, audit: services.audit }, before);
        process.stdout.write(
          result.removed
            ? `removed ${result.removed} events through seq ${result.throughSeq}; anchored by checkpoint ${result.checkpointId}\n`
            : 'no events before that time\n',
        );
      } finally {
        await services.dbHandle.close();
      }
    });
  audit
    .command('verify-export')
    .description('verify an NDJSON export offline against a saved JWKS (exit 0 when intact)')
    .requiredOption('--file <path>', 'export from GET /v1/audit/export?checkpoints=true')
    .requiredOption('--jwks <path>', 'the broker JWKS saved from /.well-known/jwks.json')
    .action(async (opts: { file: string; jwks: string }) => {
      const jwks = JSON.parse(fs.readFileSync(opts.jwks, 'utf8'));
      const { verifyExportFile } = await import('../audit/offline-verify.js');
      const result = await verifyExportFile(opts.file, jwks);
      process.stdout.write(JSON.stringify(result, null, 2) + '\n');
      if (!result.ok) process.exitCode = 1;
    });
  audit
    .command('checkpoint')
    .description('write a signed checkpoint of the current head')
    .action(async () => {
      const services = await brokerServices();
      try {
        const cp = await services.checkpoints.create('on-demand');
        process.stdout.write(cp ? `checkpoint ${cp.id} at seq ${cp.seq} (${cp.headHash})\n` : 'the log is empty\n');
      } finally {
        await services.dbHandle.close();
      }
    });
  return audit;
}
