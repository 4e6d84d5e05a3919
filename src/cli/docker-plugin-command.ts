/**
 * `keywarden docker-plugin`: the Docker Engine plugin process (secretprovider, VolumeDriver,
 * authz) on a unix socket. Broker credentials come from the environment, as for `exec`/`fetch`.
 *
 * SIGTERM/SIGINT close the socket and flush the audit event queue. Volume tmpfs mounts are left
 * in place on purpose: running containers still use them, and the next run (which reads the
 * volume state from --state-dir) keeps serving and refreshing them.
 */
import { InvalidArgumentError, type Command } from 'commander';
import { startDockerPlugin } from '../docker-plugin/docker-plugin.js';
import { validSize } from '../docker-plugin/tmpfs.js';
import { BrokerClient, clientConfigFromEnv, TransientError } from './client/broker-client.js';
import { CliError, DOCKER_PLUGIN_EXIT_CODES, ExitCode } from './client/exit-codes.js';
import { exitCodesHelp } from './help.js';
import { warn } from './client/log.js';
import { CREDENTIALS_HELP, parseSeconds } from './client/options.js';
import { runAction } from './client/run.js';

interface DockerPluginCliOptions {
  socket: string;
  stateDir: string;
  refreshInterval: number;
  cacheTtl: number;
  gatePulls?: boolean;
  failOpen?: boolean;
  volumeSize: string;
}

function parseCacheTtl(value: string): number {
  if (value.trim() === '0') return 0;
  return parseSeconds(value);
}

function parseSize(value: string): string {
  if (!validSize(value)) throw new InvalidArgumentError('expected a tmpfs size such as 1m or 512k (at most 1g)');
  return value;
}

async function dockerPluginAction(opts: DockerPluginCliOptions): Promise<number> {
  const config = clientConfigFromEnv(process.env);
  const client = new BrokerClient(config);
  const plugin = await startDockerPlugin(client, {
    socket: opts.socket,
    stateDir: opts.stateDir,
    refreshIntervalMs: opts.refreshInterval * 1000,
    cacheTtlMs: opts.cacheTtl * 1000,
    gatePulls: Boolean(opts.gatePulls),
    failOpen: Boolean(opts.failOpen),
    volumeSize: opts.volumeSize,
    log: warn,
  });
  warn(`docker plugin serving ${plugin.socket} (broker ${client.addr})`);
  if (config.credentials.kind === 'bootstrap') warn('a single-use bootstrap token gives one access token: the plugin stops working when it expires; use client credentials or mTLS');

  let resolveStop!: (code: number) => void;
  const stopped = new Promise<number>((resolve) => (resolveStop = resolve));
  // the socket is served first (dockerd may be waiting on it); credentials are checked right after
  client.authenticate().catch((err: unknown) => {
    if (err instanceof TransientError) warn(`broker unreachable at ${client.addr} (${err.reason}); calls are refused until it answers`);
    else if (err instanceof CliError) {
      warn(err.message);
      resolveStop(err.exitCode);
    } else warn(`authentication failed: ${(err as Error).message}`);
  });
  const onSignal = () => resolveStop(ExitCode.OK);
  process.once('SIGTERM', onSignal);
  process.once('SIGINT', onSignal);
  const code = await stopped;
  await plugin.close();
  client.close();
  return code;
}

export function registerDockerPluginCommand(program: Command): void {
  const plugin = program
    .command('docker-plugin')
    .description('serve the Docker Engine plugin (secretprovider, VolumeDriver, authz) on a unix socket')
    .option('--socket <PATH>', 'unix socket to serve; dockerd knows the plugin by its file name', '/run/docker/plugins/keywarden.sock')
    .option('--state-dir <DIR>', 'volume state and tmpfs mount points', '/run/keywarden-docker')
    .option('--refresh-interval <seconds>', 'how often mounted volumes are checked for changed secrets', parseSeconds, 30)
    .option('--cache-ttl <seconds>', 'how long an authz decision is reused for the same image and user (0: never)', parseCacheTtl, 30)
    .option('--gate-pulls', 'judge image pulls (POST /images/create) by the release gate too')
    .option('--fail-open', 'allow judged calls while the broker is unreachable (default: deny)')
    .option('--volume-size <SIZE>', 'tmpfs size of a volume unless its size option says otherwise', parseSize, '16m')
    .addHelpText('after', CREDENTIALS_HELP)
    .action(runAction(dockerPluginAction));
  exitCodesHelp(plugin, DOCKER_PLUGIN_EXIT_CODES);
}
