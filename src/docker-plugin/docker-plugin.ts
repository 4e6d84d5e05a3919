/**
 * `keywarden docker-plugin` put together: broker client → the three interfaces → the socket.
 * The CLI command (src/cli/docker-plugin-command.ts) and the tests both start it through here.
 */
import os from 'node:os';
import type { BrokerClient } from '../cli/client/broker-client.js';
import { AuthzPlugin } from './authz.js';
import { PluginBrokerApi } from './broker-api.js';
import { EventReporter } from './event-reporter.js';
import { listenPlugin } from './plugin-server.js';
import { SecretProvider } from './secret-provider.js';
import { VolumeDriver } from './volume-driver.js';

export interface DockerPluginOptions {
  socket: string;
  stateDir: string;
  refreshIntervalMs: number;
  cacheTtlMs: number;
  gatePulls: boolean;
  failOpen: boolean;
  volumeSize: string;
  socketMode?: number;
  log: (message: string) => void;
}

export interface RunningDockerPlugin {
  socket: string;
  volumes: VolumeDriver;
  events: EventReporter;
  /** Closes the socket and flushes the audit events; tmpfs mounts stay for running containers. */
  close(): Promise<void>;
}

export async function startDockerPlugin(client: BrokerClient, options: DockerPluginOptions): Promise<RunningDockerPlugin> {
  const broker = new PluginBrokerApi(client);
  const host = os.hostname();
  const events = new EventReporter(broker, { log: options.log });
  const report = events.report.bind(events);
  const volumes = new VolumeDriver(broker, {
    stateDir: options.stateDir,
    defaultSize: options.volumeSize,
    refreshIntervalMs: options.refreshIntervalMs,
    host,
    report,
    log: options.log,
  });
  const authz = new AuthzPlugin(broker, { gatePulls: options.gatePulls, failOpen: options.failOpen, cacheTtlMs: options.cacheTtlMs, host, report, log: options.log });
  if (options.failOpen) options.log('WARNING: --fail-open: while the broker is unreachable, judged Docker calls are ALLOWED without a release-gate decision');
  const server = await listenPlugin(options.socket, { secrets: new SecretProvider(broker, host), volumes, authz, report, log: options.log }, options.socketMode);
  volumes.start();
  return {
    socket: server.socket,
    volumes,
    events,
    async close() {
      volumes.stop();
      await server.close();
      await events.close();
    },
  };
}
