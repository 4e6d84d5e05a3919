/**
 * Registry credentials: an admin maps a registry (host or host:port) to a secret holding
 * `{"username","password"}` or `{"token"}` JSON. The broker decrypts that secret only when it
 * talks to the registry, and every decryption is audited as a read (`secret.read`, via `broker`)
 * before the credential is used; if the event cannot be written, the credential is not used.
 */
import { z } from 'zod';
import type { AuditService } from '../../audit/audit-service.js';
import type { Clock } from '../../core/clock.js';
import { InvalidInputError } from '../../core/errors.js';
import { actorOf, type Principal, type RequestMeta } from '../../core/principal.js';
import { nameSchema, parseWith } from '../../core/validation.js';
import type { Database } from '../../db/database.js';
import type { SecretsService } from '../../secrets/secrets-service.js';
import { isValidRegistryHost } from './image-ref.js';
import { RegistryCredentialsDal } from './registry-credentials-dal.js';
import { RegistryError, type RegistryCredentials } from './registry-client.js';

/** The body of PUT /v1/registry-credentials/{registry}: the secret that holds the credentials. */
export const setRegistryCredentialSchema = z.object({ secret: nameSchema }).strict();

/** Why the broker talks to a registry: signing images, or the release gate's checks. */
export type RegistryPurpose = 'signing' | 'gate';

export interface RegistryCredentialMapping {
  registry: string;
  secret: string;
}

export class RegistryCredentialsService {
  private readonly dal: RegistryCredentialsDal;

  constructor(private readonly deps: { db: Database; secrets: SecretsService; audit: AuditService; clock: Clock }) {
    this.dal = new RegistryCredentialsDal(deps.db);
  }

  async set(principal: Principal | undefined, request: RequestMeta, registry: string, body: unknown): Promise<RegistryCredentialMapping> {
    if (!isValidRegistryHost(registry)) throw new InvalidInputError('registry must be a host or host:port');
    const { secret } = parseWith(setRegistryCredentialSchema, body);
    if (!(await this.deps.secrets.findLive(secret))) throw new InvalidInputError(`secret ${secret} does not exist`);
    await this.deps.audit.transact(async (trx, record) => {
      await this.dal.upsert(trx, registry, secret, this.deps.clock());
      await record({ actor: actorOf(principal), action: 'registry.credentials.set', resource: { kind: 'registry', name: registry }, outcome: 'allow', details: { secret }, request });
    });
    return { registry, secret };
  }

  async list(): Promise<RegistryCredentialMapping[]> {
    return (await this.dal.list()).map((r) => ({ registry: r.registry, secret: r.secret_name }));
  }

  /**
   * The credentials the broker presents to `registry`, decrypted from their secret (audited as a
   * read first); undefined when none are mapped or the secret is gone.
   */
  async credentialsFor(registry: string, purpose: RegistryPurpose): Promise<RegistryCredentials | undefined> {
    const mapping = await this.dal.find(registry);
    if (!mapping) return undefined;
    const secret = await this.deps.secrets.findLive(mapping.secret_name);
    if (!secret) return undefined;
    const version = await this.deps.secrets.currentVersionForBroker(secret, { via: 'broker', use: 'registry-credentials', registry, purpose });
    await this.deps.audit.record({
      actor: { kind: 'system', name: 'keywarden' },
      action: 'secret.read',
      resource: { kind: 'secret', name: mapping.secret_name },
      outcome: 'allow',
      details: { version: secret.currentVersion, via: 'broker', use: 'registry-credentials', registry, purpose },
    });
    const content = await this.deps.secrets.decrypt(secret, version);
    const credentials = parseCredentials(content);
    if (credentials) return credentials;
    throw new RegistryError('unauthorized', `registry credential secret ${mapping.secret_name} is not {"username","password"} or {"token"} JSON`, { registry });
  }
}

function parseCredentials(content: Buffer): RegistryCredentials | undefined {
  let parsed: unknown;
  try {
    parsed = JSON.parse(content.toString('utf8'));
  } catch {
    return undefined; // not usable as credentials
  }
  if (!parsed || typeof parsed !== 'object') return undefined;
  const { token, username, password } = parsed as { token?: unknown; username?: unknown; password?: unknown };
  if (typeof token === 'string') return { token };
  if (typeof username === 'string' && typeof password === 'string') return { username, password };
  return undefined;
}
