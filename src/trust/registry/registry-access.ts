import type { Knex } from 'knex';
import { problems, ProblemError } from '../../http/problem.js';
import type { AuditService } from '../../audit/audit-service.js';
import type { SecretsService } from '../../secrets/secrets-service.js';
import type { Logger } from 'pino';
import type { EgressPolicy } from './egress-policy.js';
import { RegistryClient, RegistryError, type RegistryCredentials } from './registry-client.js';
import { ImageRefError } from './image-ref.js';

/** Why the broker talks to a registry: signing images, or the release gate's checks. */
export type RegistryPurpose = 'signing' | 'gate';

/**
 * The broker's registry client: per-registry credentials come from secrets (named in
 * registry_credentials), plain HTTP only for KEYWARDEN_INSECURE_REGISTRIES. Every decryption
 * of such a secret is a read and is audited like one (`secret.read`, via `broker`), before
 * the credential is used; if the event cannot be written, the credential is not used.
 */
export function createRegistryClient(deps: {
  db: Knex;
  secrets: SecretsService;
  audit: AuditService;
  purpose: RegistryPurpose;
  insecureRegistries: string[];
  /** Where registry traffic may go (KEYWARDEN_EGRESS_ALLOW, private addresses, other origins). */
  egress?: EgressPolicy;
  logger?: Logger;
  timeoutMs?: number;
}): RegistryClient {
  return new RegistryClient({
    insecureRegistries: deps.insecureRegistries,
    egress: deps.egress,
    logger: deps.logger,
    timeoutMs: deps.timeoutMs,
    credentials: async (registry) => {
      const mapping = await deps.db('registry_credentials').where({ registry }).first();
      if (!mapping) return undefined;
      const secret = await deps.secrets.dal.findLive(mapping.secret_name);
      if (!secret) return undefined;
      const version = await deps.secrets.dal.getVersion(secret.id, secret.currentVersion);
      await deps.audit.record({
        actor: { kind: 'system', name: 'keywarden' },
        action: 'secret.read',
        resource: { kind: 'secret', name: mapping.secret_name },
        outcome: 'allow',
        details: { version: secret.currentVersion, via: 'broker', use: 'registry-credentials', registry, purpose: deps.purpose },
      });
      const content = await deps.secrets.decrypt(secret, version!);
      try {
        const parsed = JSON.parse(content.toString('utf8'));
        if (typeof parsed?.token === 'string') return { token: parsed.token } satisfies RegistryCredentials;
        if (typeof parsed?.username === 'string' && typeof parsed?.password === 'string') {
          return { username: parsed.username, password: parsed.password } satisfies RegistryCredentials;
        }
      } catch {
        // fall through: not usable as credentials
      }
      throw new RegistryError('unauthorized', `registry credential secret ${mapping.secret_name} is not {"username","password"} or {"token"} JSON`, { registry });
    },
  });
}

/** Registry failures as problems a caller can act on; never a 500. */
export function registryProblem(err: unknown): ProblemError {
  if (err instanceof ProblemError) return err;
  if (err instanceof ImageRefError) return problems.badRequest(`image reference is invalid: ${err.message}`);
  if (err instanceof RegistryError) {
    switch (err.code) {
      case 'not_found':
        return new ProblemError(404, 'image_not_found', 'Image not found', err.message);
      case 'insecure_refused':
        return new ProblemError(400, 'insecure_registry_refused', 'Insecure registry refused', err.message);
      case 'egress_refused':
        return new ProblemError(502, 'egress_refused', 'Registry destination not allowed', err.message);
      case 'unauthorized':
        return new ProblemError(502, 'registry_unauthorized', 'Registry refused the broker', err.message);
      case 'timeout':
      case 'unreachable':
        return new ProblemError(502, 'registry_unreachable', 'Registry unreachable', err.message);
      default:
        return new ProblemError(502, 'registry_error', 'Registry error', err.message);
    }
  }
  throw err;
}
