import { Command } from 'commander';
import { ConfigError } from '../config.js';
import { RootKeyUnavailableError } from '../crypto/key-provider.js';
import { registerExecCommand } from './client/exec-command.js';
import { registerFetchCommand } from './client/fetch-command.js';
import { registerDockerPluginCommand } from './docker-plugin-command.js';
import { auditCommand } from './audit-commands.js';
import { registerVerifyCommand } from './verify-command.js';
import { signCommand } from './sign-command.js';

export const program = new Command()
  .name('keywarden')
  .description('Keywarden: secrets and image-trust broker')
  .showHelpAfterError()
  .exitOverride((err) => {
    process.exit(err.exitCode === 0 ? 0 : 64);
  });

// the broker's own modules load only for broker commands, so exec/fetch start fast in containers
program
  .command('serve')
  .description('run the broker (configured by KEYWARDEN_* environment variables)')
  .action(async () => (await import('./serve.js')).serve());
program
  .command('migrate')
  .description('apply database migrations')
  .action(async () => (await import('./admin-commands.js')).migrateCommand());
program
  .command('init')
  .description('create the data dir, root key, database and admin API key')
  .action(async () => (await import('./admin-commands.js')).initCommand());
program
  .command('rotate-root-key')
  .description('add a root key version and rewrap every data key (resumable; reads keep working)')
  .option('--resume', 'do not add a version; finish rewrapping to the current one')
  .action(async (opts: { resume?: boolean }) => (await import('./admin-commands.js')).rotateRootKeyCommand(opts));
registerExecCommand(program);
registerFetchCommand(program);
registerDockerPluginCommand(program);
registerVerifyCommand(program);

program.addCommand(auditCommand());
program.addCommand(signCommand());

export async function main(argv: string[]): Promise<void> {
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
    process.exit(1);
  }
}

await main(process.argv);
