import { DomainError, InvalidInputError, NotFoundError, UpstreamError } from '../../core/errors.js';
import type { Logger } from 'pino';
import type { EgressPolicy } from './egress-policy.js';
import { RegistryClient, RegistryError } from './registry-client.js';
import type { RegistryCredentialsService, RegistryPurpose } from './registry-credentials-service.js';
import { ImageRefError } from './image-ref.js';

export type { RegistryPurpose };

/**
 * The broker's registry client: per-registry credentials come from secrets (mapped by
 * RegistryCredentialsService, which audits every decryption as a read before the credential is
 * used), plain HTTP only for KEYWARDEN_INSECURE_REGISTRIES.
 */
export function createRegistryClient(deps: {
  credentials: RegistryCredentialsService;
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
    credentials: (registry) => deps.credentials.credentialsFor(registry, deps.purpose),
  });
}

/** Registry failures as domain errors a caller can act on; never a 500. */
export function registryProblem(err: unknown): DomainError {
  if (err instanceof DomainError) return err;
  if (err instanceof ImageRefError) return new InvalidInputError(`image reference is invalid: ${err.message}`);
  if (err instanceof RegistryError) {
    switch (err.code) {
      case 'not_found':
        return new NotFoundError('image', { code: 'image_not_found', title: 'Image not found', detail: err.message });
      case 'insecure_refused':
        return new InvalidInputError(err.message, { code: 'insecure_registry_refused', title: 'Insecure registry refused' });
      case 'egress_refused':
        return new UpstreamError('egress_refused', 'Registry destination not allowed', err.message);
      case 'unauthorized':
        return new UpstreamError('registry_unauthorized', 'Registry refused the broker', err.message);
      case 'timeout':
      case 'unreachable':
        return new UpstreamError('registry_unreachable', 'Registry unreachable', err.message);
      default:
        return new UpstreamError('registry_error', 'Registry error', err.message);
    }
  }
  throw err;
}
