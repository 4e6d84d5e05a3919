/**
 * `keywarden exec [--secret NAME[=ENV_VAR]]... [--all] [--override] [--timeout S] -- CMD ARGS...`
 *
 * Fetches secrets into environment variables and replaces itself with CMD through execve(2):
 * no shell, no lingering parent. Broker credentials are removed from CMD's environment.
 *
 * Secret names come from the broker (any writer may pick them), so before anything is fetched:
 * a name that would derive a loader/shell/runtime variable (NODE_OPTIONS, LD_PRELOAD, PATH, ...,
 * see isProtectedEnvName) is refused unless the command line maps it explicitly, and a variable
 * already in the environment is never replaced without --override. Both end with exit 64.
 */
import type { Command } from 'commander';
import { BrokerClient, clientConfigFromEnv, CREDENTIAL_ENV_VARS, MissingSecretsError, withRetry, type DeliveredSecret } from './broker-client.js';
import { assignEnvNames, collectSelector, refuseOverrides, type SecretSelector } from './env-names.js';
import { CliError, EXEC_EXIT_CODES, ExitCode, usageError } from './exit-codes.js';
import { exitCodesHelp } from '../help.js';
import { loadExecve } from './execve.js';
import { warn } from './log.js';
import { CREDENTIALS_HELP, DEFAULT_TIMEOUT_SECONDS, parseSeconds } from './options.js';
import { runAction } from './run.js';

interface ExecOptions {
  secret?: SecretSelector[];
  all?: boolean;
  override?: boolean;
  timeout: number;
}

const utf8 = new TextDecoder('utf-8', { fatal: true });

/** Secret content → environment value; refuses what an environment cannot carry faithfully. */
function envValue(secret: DeliveredSecret): string {
  if (secret.content.includes(0)) {
    throw new CliError(ExitCode.INTERNAL, `secret ${secret.name} contains a NUL byte and cannot be passed in the environment; use keywarden fetch`);
  }
  try {
    return utf8.decode(secret.content);
  } catch {
    throw new CliError(ExitCode.INTERNAL, `secret ${secret.name} is not valid UTF-8 and cannot be passed in the environment; use keywarden fetch`);
  }
}

/** One env name per secret name; a secret given twice with different variables is a usage error. */
function checkSelectors(selectors: SecretSelector[]): void {
  const seen = new Map<string, string | undefined>();
  for (const s of selectors) {
    if (seen.has(s.name) && seen.get(s.name) !== s.env) throw usageError(`--secret ${s.name} is given more than once with different variables`);
    seen.set(s.name, s.env);
  }
}

/** Names to fetch: every granted secret with --all, else the named ones. */
async function resolveNames(client: BrokerClient, opts: ExecOptions): Promise<string[]> {
  const named = [...new Set((opts.secret ?? []).map((s) => s.name))];
  if (!opts.all) return named;
  const granted = (await client.list()).map((s) => s.name);
  const missing = named.filter((n) => !granted.includes(n));
  if (missing.length) throw new MissingSecretsError(missing);
  return granted;
}

/** Fetches all names at once; on a 404, lists to say which ones are missing. */
async function fetchAll(client: BrokerClient, names: string[]): Promise<DeliveredSecret[]> {
  if (!names.length) return [];
  try {
    return await client.fetchSecrets(names);
  } catch (err) {
    if (!(err instanceof MissingSecretsError)) throw err;
    const granted = await client.list().then((items) => new Set(items.map((s) => s.name)), () => undefined);
    const missing = granted ? names.filter((n) => !granted.has(n)) : [];
    throw new MissingSecretsError(missing.length ? missing : undefined);
  }
}

/** The program's environment before secrets: ours, without the broker credentials. */
function inheritedEnv(base: NodeJS.ProcessEnv): Map<string, string> {
  const env = new Map<string, string>();
  for (const [k, v] of Object.entries(base)) if (v !== undefined) env.set(k, v);
  for (const k of CREDENTIAL_ENV_VARS) env.delete(k);
  return env;
}

/** Callers have checked the names with assignEnvNames and refuseOverrides first. */
export function buildChildEnv(inherited: ReadonlyMap<string, string>, secrets: DeliveredSecret[], envNames: Map<string, string>): string[] {
  const env = new Map(inherited);
  for (const secret of secrets) {
    const name = envNames.get(secret.name)!;
    if (env.has(name)) warn(`${name} (secret ${secret.name}) overrides a variable already in the environment`);
    env.set(name, envValue(secret));
  }
  return [...env].map(([k, v]) => `${k}=${v}`);
}

async function execAction(command: string, args: string[], opts: ExecOptions): Promise<number> {
  const selectors = opts.secret ?? [];
  if (!selectors.length && !opts.all) throw usageError('name secrets with --secret NAME[=ENV_VAR] or use --all');
  checkSelectors(selectors);
  const addon = loadExecve();
  const client = new BrokerClient(clientConfigFromEnv(process.env));
  const deadline = Date.now() + opts.timeout * 1000;
  const inherited = inheritedEnv(process.env);
  let secrets: DeliveredSecret[];
  let envNames: Map<string, string>;
  try {
    ({ secrets, envNames } = await withRetry(
      client,
      async () => {
        const names = await resolveNames(client, opts);
        const envNames = assignEnvNames(names, selectors);
        refuseOverrides(inherited, envNames, opts.override === true);
        return { secrets: await fetchAll(client, names), envNames };
      },
      { deadline },
    ));
  } finally {
    client.close();
  }
  const env = buildChildEnv(inherited, secrets, envNames);
  try {
    addon.execve(command, [command, ...args], env);
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    if (code === 'ENOENT' || code === 'ENOTDIR') throw new CliError(ExitCode.COMMAND_NOT_FOUND, `${command}: command not found`);
    throw new CliError(ExitCode.CANNOT_EXECUTE, `${command}: cannot execute (${code ?? 'error'})`);
  }
  return ExitCode.INTERNAL; // unreachable: execve either replaced the process or threw
}

export function registerExecCommand(program: Command): void {
  const exec = program
    .command('exec')
    .description('fetch secrets into environment variables, then replace this process with CMD (execve, no shell)')
    .usage('[options] -- CMD [ARGS...]')
    .option(
      '--secret <NAME[=ENV_VAR]>',
      'secret to put in the environment (repeatable); ENV_VAR defaults to NAME uppercased with non-alphanumerics as _. ' +
        'Variables that change how programs load or run (PATH, LD_*, NODE_OPTIONS, PYTHON*, ...) are set only when named as ENV_VAR',
      collectSelector,
    )
    .option('--all', 'every secret granted to this client')
    .option('--override', 'allow secrets to replace variables already set in the environment')
    .option('--timeout <seconds>', 'how long to retry while the broker is unreachable', parseSeconds, DEFAULT_TIMEOUT_SECONDS)
    .argument('<command>', 'program to run (looked up on PATH)')
    .argument('[args...]', 'its arguments, passed literally')
    .addHelpText(
      'after',
      `${CREDENTIALS_HELP}\nCredential variables are removed from CMD's environment.\n` +
        `A secret whose name maps to a protected variable (PATH, LD_*, NODE_*, PYTHON*, ...), or to a variable that is\n` +
        `already set (without --override), is refused with exit 64 before anything is fetched.\n` +
        `Once the secrets are fetched, keywarden becomes CMD: the exit code is then CMD's own.`,
    )
    .action(runAction(execAction));
  exitCodesHelp(exec, EXEC_EXIT_CODES);
}
