import { Command } from 'commander';
import { ConfigError } from '../config.js';
import { initCommand, migrateCommand, rotateRootKeyCommand } from './admin-commands.js';
import { registerExecCommand } from './client/exec-command.js';
import { registerFetchCommand } from './client/fetch-command.js';
import { auditCommand } from './audit-commands.js';
import { serve } from './serve.js';
import { registerVerifyCommand } from './verify-command.js';
import { signCommand } from './sign-command.js';

export const program = new Command()
  .name('keywarden')
  .description('Keywarden: secrets and image-trust broker')
  .showHelpAfterError()
  .exitOverride((err) => {
    process.exit(err.exitCode === 0 ? 0 : 64);
  });

program.command('serve').description('run the broker (configured by KEYWARDEN_* environment variables)').action(serve);
program.command('migrate').description('apply database migrations').action(migrateCommand);
program.command('init').description('create the data dir, root key, database and admin API key').action(initCommand);
program
  .command('rotate-root-key')
  .description('add a root key version and rewrap every data key (resumable; reads keep working)')
  .option('--resume', 'do not add a version; finish rewrapping to the current one')
  .action(rotateRootKeyCommand);
registerExecCommand(program);
registerFetchCommand(program);
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
    process.stderr.write(`keywarden: ${(err as Error).message}\n`);
    process.exit(1);
  }
}

await main(process.argv);
