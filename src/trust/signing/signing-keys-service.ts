import crypto, { type KeyObject } from 'node:crypto';
import { z } from 'zod';
import type { AuditService } from '../../audit/audit-service.js';
import { open, seal } from '../../crypto/envelope.js';
import type { KeyProvider } from '../../crypto/key-provider.js';
import { ConflictError, ForbiddenError, InvalidInputError, NotFoundError } from '../../core/errors.js';
import type { RequestMeta } from '../../core/principal.js';
import { nameSchema } from '../../core/validation.js';
import { actorOf, principalLabel, type Principal } from '../../identity/identity-types.js';
import { rethrowUniqueAsConflictFn } from '../../identity/identity-util.js';
import { iso, type Clock } from '../../core/clock.js';
import type { Database, Transaction } from '../../db/database.js';
import { publicKeyId } from '../cosign/cosign-signatures.js';
import { SigningKeyDal, type SigningAlgorithm, type SigningKeyStatus } from './signing-key-dal.js';

export const createSigningKeySchema = z
  .object({ name: nameSchema, algorithm: z.enum(['ecdsa-p256', 'ed25519']).default('ecdsa-p256') })
  .strict();

export type { SigningAlgorithm };

export interface BrokerSigner {
  name: string;
  version: number;
  keyId: string;
  algorithm: SigningAlgorithm;
  publicKeyPem: string;
  sign(data: Buffer): Promise<Buffer>;
}

function signingKeyAad(name: string, version: number): string {
  return `keywarden:signing-key:v1:${name}:${version}`;
}

/**
 * The 400 for a write that names signing keys that do not exist (`code: unknown_reference`):
 * `policy references unknown signing key "ci-key"`, with one `errors` entry per unknown name.
 */
export function unknownSigningKeysError(subject: string, unknown: readonly string[], pathOf: (name: string) => string): InvalidInputError {
  const quoted = unknown.map((n) => JSON.stringify(n)).join(', ');
  return new InvalidInputError(`${subject} references unknown signing key${unknown.length === 1 ? '' : 's'} ${quoted}; create the signing key first`, {
    code: 'unknown_reference',
    title: 'Unknown reference',
    errors: unknown.map((n) => ({ path: pathOf(n), message: `unknown signing key ${JSON.stringify(n)}` })),
  });
}

/**
 * Image-signing keys generated inside the broker. Private halves are sealed with the root key
 * like secrets and are only ever used here; no route returns them.
 */
export class SigningKeysService {
  private readonly dal: SigningKeyDal;

  constructor(private readonly deps: { db: Database; keyProvider: KeyProvider; audit: AuditService; clock: Clock }) {
    this.dal = new SigningKeyDal(deps.db);
  }

  private async newVersion(trx: Transaction, name: string, version: number, algorithm: SigningAlgorithm) {
    const { privateKey, publicKey } =
      algorithm === 'ed25519' ? crypto.generateKeyPairSync('ed25519') : crypto.generateKeyPairSync('ec', { namedCurve: 'P-256' });
    const sealed = await seal(this.deps.keyProvider, privateKey.export({ format: 'der', type: 'pkcs8' }), signingKeyAad(name, version));
    const keyId = publicKeyId(publicKey);
    await this.dal.insertVersion(trx, {
      name,
      version,
      key_id: keyId,
      public_pem: publicKey.export({ format: 'pem', type: 'spki' }).toString(),
      iv: sealed.iv,
      private_ciphertext: sealed.ciphertext,
      wrapped_key: sealed.wrappedKey,
      root_key_version: sealed.rootKeyVersion,
      created_at: this.deps.clock(),
    });
    return keyId;
  }

  async create(principal: Principal, meta: RequestMeta, input: z.infer<typeof createSigningKeySchema>) {
    const now = this.deps.clock();
    await this.deps.audit
      .transact(async (trx, record) => {
        if (await this.dal.find(input.name, trx)) throw new ConflictError(`signing key ${input.name} already exists`, 'already_exists');
        await this.dal.insert(trx, {
          name: input.name,
          algorithm: input.algorithm,
          current_version: 1,
          status: 'active',
          created_by: principalLabel(principal),
          created_at: now,
          updated_at: now,
        });
        const keyId = await this.newVersion(trx, input.name, 1, input.algorithm);
        await record({ actor: actorOf(principal), action: 'signingkey.create', resource: { kind: 'signing-key', name: input.name }, outcome: 'allow', details: { algorithm: input.algorithm, keyId }, request: meta });
      })
      .catch(rethrowUniqueAsConflictFn(`signing key ${input.name} already exists`));
    return this.get(input.name);
  }

  async get(name: string) {
    const key = await this.dal.find(name);
    if (!key) throw new NotFoundError(`signing key ${name}`);
    const versions = await this.dal.publicVersions(name);
    const current = versions.find((v) => v.version === key.current_version);
    if (!current) throw new Error(`signing key ${name} has no row for its current version ${key.current_version}`);
    return {
      name: key.name,
      algorithm: key.algorithm,
      status: key.status,
      currentVersion: key.current_version,
      keyId: current.key_id,
      publicKeyPem: current.public_pem,
      createdBy: key.created_by,
      createdAt: iso(key.created_at),
      updatedAt: iso(key.updated_at),
      versions: versions.map((v) => ({ version: v.version, keyId: v.key_id, publicKeyPem: v.public_pem, createdAt: iso(v.created_at) })),
    };
  }

  async list() {
    return Promise.all((await this.dal.names()).map((name) => this.get(name)));
  }

  async rotate(principal: Principal, meta: RequestMeta, name: string) {
    await this.deps.audit.transact(async (trx, record) => {
      const key = await this.dal.find(name, trx);
      if (!key) throw new NotFoundError(`signing key ${name}`);
      const version = key.current_version + 1;
      const keyId = await this.newVersion(trx, name, version, key.algorithm);
      await this.dal.update(trx, name, { current_version: version, updated_at: this.deps.clock() });
      await record({ actor: actorOf(principal), action: 'signingkey.rotate', resource: { kind: 'signing-key', name }, outcome: 'allow', details: { version, keyId }, request: meta });
    });
    return this.get(name);
  }

  async setStatus(principal: Principal, meta: RequestMeta, name: string, status: SigningKeyStatus) {
    await this.deps.audit.transact(async (trx, record) => {
      const key = await this.dal.find(name, trx);
      if (!key) throw new NotFoundError(`signing key ${name}`);
      await this.dal.update(trx, name, { status, updated_at: this.deps.clock() });
      await record({ actor: actorOf(principal), action: status === 'disabled' ? 'signingkey.disable' : 'signingkey.enable', resource: { kind: 'signing-key', name }, outcome: 'allow', request: meta });
    });
    return this.get(name);
  }

  /**
   * The names among `names` that are not signing keys, in the order given, without duplicates.
   * Policies, signer scopes and trusted issuers refuse them when they are written, instead of
   * failing only when the gate decides or a signer signs (and quietly starting to count once a
   * key of that name is created).
   */
  async unknownNames(names: readonly string[]): Promise<string[]> {
    const wanted = [...new Set(names)];
    if (wanted.length === 0) return [];
    const existing = new Set(await this.dal.names());
    return wanted.filter((n) => !existing.has(n));
  }

  /** Whether the key exists and may sign; undefined when there is no such key. */
  async statusOf(name: string): Promise<SigningKeyStatus | undefined> {
    return (await this.dal.find(name))?.status;
  }

  /** The current version's signer; refuses disabled keys. */
  async signer(name: string): Promise<BrokerSigner> {
    const key = await this.dal.find(name);
    if (!key) throw new NotFoundError(`signing key ${name}`);
    if (key.status !== 'active') throw new ForbiddenError(`signing key ${name} is disabled`, 'signing_key_disabled');
    const row = await this.dal.findVersion(name, key.current_version);
    if (!row) throw new Error(`signing key ${name} has no row for its current version ${key.current_version}`);
    const der = await open(
      this.deps.keyProvider,
      { iv: row.iv, ciphertext: row.private_ciphertext, wrappedKey: row.wrapped_key, rootKeyVersion: row.root_key_version },
      signingKeyAad(name, row.version),
    );
    const privateKey = crypto.createPrivateKey({ key: der, format: 'der', type: 'pkcs8' });
    const algorithm = key.algorithm;
    return {
      name,
      version: row.version,
      keyId: row.key_id,
      algorithm,
      publicKeyPem: row.public_pem,
      // ECDSA: DER signature over SHA-256, as cosign writes; Ed25519: pure EdDSA
      sign: async (data) => crypto.sign(algorithm === 'ed25519' ? null : 'sha256', data, privateKey),
    };
  }

  /** Every version's public key (old versions keep verifying after rotation). */
  async publicKeys(name: string): Promise<Array<{ keyId: string; version: number; publicKey: KeyObject; status: string }> | undefined> {
    const key = await this.dal.find(name);
    if (!key) return undefined;
    const rows = await this.dal.publicVersions(name, 'asc');
    return rows.map((r) => ({ keyId: r.key_id, version: r.version, publicKey: crypto.createPublicKey(r.public_pem), status: key.status }));
  }
}
