import { Command } from 'commander';
import { ConfigError } from '../config.js';
import { RootKeyUnavailableError } from '../crypto/key-provider.js';
import { registerExecCommand } from './client/exec-command.js';
import { registerFetchCommand } from './client/fetch-command.js';
import { registerDockerPluginCommand } from './docker-plugin-command.js';
import { auditCommand } from './audit-commands.js';
import { registerVerifyCommand } from './verify-command.js';
import { signCommand } from './sign-command.js';
import { registerBreakGlassCommand } from './break-glass-command.js';
import { registerApiKeyCommand } from './api-key-commands.js';
import { applyCliConventions, BROKER_EXIT_CODES, exitCodesHelp, packageVersion } from './help.js';

export const program = new Command()
  .name('keywarden')
  .description('Keywarden: secrets and image-trust broker')
  .version(packageVersion(), '-V, --version', 'print the version of keywarden');

// the broker's own modules load only for broker commands, so exec/fetch start fast in containers
exitCodesHelp(
  program
    .command('serve')
    .description('run the broker (configured by KEYWARDEN_* environment variables)')
    .action(async () => (await import('./serve.js')).serve()),
  { 0: 'stopped by SIGTERM or SIGINT after draining', ...BROKER_EXIT_CODES },
);
exitCodesHelp(
  program
    .command('migrate')
    .description('apply database migrations')
    .action(async () => (await import('./admin-commands.js')).migrateCommand()),
  { 0: 'migrations applied, or the database was up to date', 1: BROKER_EXIT_CODES[1], 64: BROKER_EXIT_CODES[64], 78: BROKER_EXIT_CODES[78] },
);
exitCodesHelp(
  program
    .command('init')
    .description('create the data dir, root key, database and admin API key')
    .action(async () => (await import('./admin-commands.js')).initCommand()),
  { 0: 'initialized (or already initialized)', ...BROKER_EXIT_CODES },
);
exitCodesHelp(
  program
    .command('rotate-root-key')
    .description('add a root key version and rewrap every data key (resumable; reads keep working)')
    .option('--resume', 'do not add a version; finish rewrapping to the current one')
    .action(async (opts: { resume?: boolean }) => (await import('./admin-commands.js')).rotateRootKeyCommand(opts)),
  { 0: 'every data key is wrapped by the newest root key version', ...BROKER_EXIT_CODES, 1: 'failed; run again with --resume to finish rewrapping' },
);
registerExecCommand(program);
registerFetchCommand(program);
registerDockerPluginCommand(program);
registerVerifyCommand(program);
registerBreakGlassCommand(program);
registerApiKeyCommand(program);

program.addCommand(auditCommand());
program.addCommand(signCommand());

export async function main(argv: string[]): Promise<void> {
  // every command, however it was added: usage errors exit 64, help hint after an error
  applyCliConventions(program);
  try {
    await program.parseAsync(argv);
  } catch (err) {
    if (err instanceof ConfigError) {
      process.stderr.write(`keywarden: ${err.message}\n`);
      process.exit(78);
    }
    if (err instanceof RootKeyUnavailableError) {
      process.stderr.write(`keywarden: ${err.message}\n`);
      process.exit(err.exitCode);
    }
    process.stderr.write(`keywarden: ${(err as Error).message}\n`);
    // errors that carry their exit code (CliError: 64 usage, 66 unreadable input, ...), else 1
    const code = (err as { exitCode?: unknown })?.exitCode;
    process.exit(typeof code === 'number' && Number.isInteger(code) && code > 0 && code < 256 ? code : 1);
  }
}

await main(process.argv);
