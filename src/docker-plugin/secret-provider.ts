/**
 * `secretprovider`: swarm asks for a secret's value when a task that uses a secret created with
 * `--driver <plugin>` starts. The swarm service names its Keywarden client with the service label
 * `keywarden.client`; the secret label `keywarden.secret` names the Keywarden secret (default:
 * the swarm secret's name). The broker decides: the plugin's own client must be allowed to act
 * for that client (actsFor), and the secret must be granted to it. Deny by default.
 */
import { ForbiddenError, InvalidInputError, NotFoundError } from '../core/errors.js';
import { clampContext, explained, type PluginBrokerApi } from './broker-api.js';
import type { GetSecretRequest } from './protocol.js';

export const CLIENT_LABEL = 'keywarden.client';
export const SECRET_LABEL = 'keywarden.secret';
const NAME = /^[A-Za-z0-9._-]{1,128}$/;

export interface SecretProviderResponse {
  Value: string;
  DoNotReuse: boolean;
}

export class SecretProvider {
  constructor(
    private readonly broker: PluginBrokerApi,
    private readonly host: string,
  ) {}

  async getSecret(req: GetSecretRequest): Promise<SecretProviderResponse> {
    const client = req.ServiceLabels?.[CLIENT_LABEL];
    if (!client) {
      throw new InvalidInputError(
        `service ${req.ServiceName ?? req.ServiceID ?? '(unnamed)'} has no ${CLIENT_LABEL} label: label the service with the Keywarden client it runs as (docker service create --label ${CLIENT_LABEL}=NAME)`,
      );
    }
    if (!NAME.test(client)) throw new InvalidInputError(`the ${CLIENT_LABEL} label is not a client name: ${JSON.stringify(client.slice(0, 140))}`);
    const secret = req.SecretLabels?.[SECRET_LABEL] || req.SecretName;
    if (!NAME.test(secret)) throw new InvalidInputError(`not a Keywarden secret name: ${JSON.stringify(secret.slice(0, 140))} (set the secret label ${SECRET_LABEL})`);
    const context = clampContext({
      source: 'secretprovider',
      secretName: req.SecretName,
      service: req.ServiceName ?? undefined,
      serviceId: req.ServiceID ?? undefined,
      task: req.TaskName ?? undefined,
      taskId: req.TaskID ?? undefined,
      image: req.TaskImage ?? undefined,
      host: this.host,
    });
    // 403 not_delegated / 404 secret_not_found / unreachable propagate as errors: the value is never delivered.
    const delivered = await this.broker.readSecret(client, secret, context).catch((err: unknown) => {
      if (err instanceof ForbiddenError) throw explained(err, `the plugin may not act for client ${client}`);
      if (err instanceof NotFoundError) throw explained(err, `secret ${secret} is not granted to client ${client} (or does not exist)`);
      throw err;
    });
    return {
      Value: delivered.content.toString('base64'),
      // Fresh for every task: each task's read is then its own audited event naming that task and
      // image, and a revoked grant or a rotated value takes effect at the next task instead of
      // swarm handing the value it got for one task to later ones.
      DoNotReuse: true,
    };
  }
}
