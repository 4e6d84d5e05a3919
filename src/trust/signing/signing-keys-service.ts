import crypto, { type KeyObject } from 'node:crypto';
import type { Knex } from 'knex';
import { z } from 'zod';
import type { AuditService } from '../../audit/audit-service.js';
import { open, seal } from '../../crypto/envelope.js';
import type { KeyProvider } from '../../crypto/key-provider.js';
import { problems } from '../../http/problem.js';
import type { RequestMeta } from '../../http/request-context.js';
import { nameSchema } from '../../http/validation.js';
import { actorOf, principalLabel, type Principal } from '../../identity/identity-types.js';
import { iso, rethrowUniqueAsConflictFn } from '../../identity/identity-util.js';
import { publicKeyId } from '../cosign/cosign-signatures.js';

export const createSigningKeySchema = z
  .object({ name: nameSchema, algorithm: z.enum(['ecdsa-p256', 'ed25519']).default('ecdsa-p256') })
  .strict();

export type SigningAlgorithm = 'ecdsa-p256' | 'ed25519';

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
 * Image-signing keys generated inside the broker. Private halves are sealed with the root key
 * like secrets and are only ever used here; no route returns them.
 */
export class SigningKeysService {
  constructor(private readonly deps: { db: Knex; keyProvider: KeyProvider; audit: AuditService; clock: () => number }) {}

  private async newVersion(trx: Knex.Transaction, name: string, version: number, algorithm: SigningAlgorithm) {
    const { privateKey, publicKey } =
      algorithm === 'ed25519' ? crypto.generateKeyPairSync('ed25519') : crypto.generateKeyPairSync('ec', { namedCurve: 'P-256' });
    const sealed = await seal(this.deps.keyProvider, privateKey.export({ format: 'der', type: 'pkcs8' }), signingKeyAad(name, version));
    const keyId = publicKeyId(publicKey);
    await trx('signing_key_versions').insert({
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
        if (await trx('signing_keys').where({ name: input.name }).first()) throw problems.conflict(`signing key ${input.name} already exists`, 'already_exists');
        await trx('signing_keys').insert({
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
    const key = await this.deps.db('signing_keys').where({ name }).first();
    if (!key) throw problems.notFound(`signing key ${name}`);
    const versions = await this.deps.db('signing_key_versions').where({ name }).orderBy('version', 'desc').select('version', 'key_id', 'public_pem', 'created_at');
    const current = versions.find((v: any) => v.version === key.current_version);
    return {
      name: key.name,
      algorithm: key.algorithm as SigningAlgorithm,
      status: key.status as 'active' | 'disabled',
      currentVersion: key.current_version,
      keyId: current.key_id,
      publicKeyPem: current.public_pem,
      createdBy: key.created_by,
      createdAt: iso(key.created_at),
      updatedAt: iso(key.updated_at),
      versions: versions.map((v: any) => ({ version: v.version, keyId: v.key_id, publicKeyPem: v.public_pem, createdAt: iso(v.created_at) })),
    };
  }

  async list() {
    const names = await this.deps.db('signing_keys').orderBy('name').select('name');
    return Promise.all(names.map((n: any) => this.get(n.name)));
  }

  async rotate(principal: Principal, meta: RequestMeta, name: string) {
    await this.deps.audit.transact(async (trx, record) => {
      const key = await trx('signing_keys').where({ name }).first();
      if (!key) throw problems.notFound(`signing key ${name}`);
      const version = key.current_version + 1;
      const keyId = await this.newVersion(trx, name, version, key.algorithm);
      await trx('signing_keys').where({ name }).update({ current_version: version, updated_at: this.deps.clock() });
      await record({ actor: actorOf(principal), action: 'signingkey.rotate', resource: { kind: 'signing-key', name }, outcome: 'allow', details: { version, keyId }, request: meta });
    });
    return this.get(name);
  }

  async setStatus(principal: Principal, meta: RequestMeta, name: string, status: 'active' | 'disabled') {
    await this.deps.audit.transact(async (trx, record) => {
      const key = await trx('signing_keys').where({ name }).first();
      if (!key) throw problems.notFound(`signing key ${name}`);
      await trx('signing_keys').where({ name }).update({ status, updated_at: this.deps.clock() });
      await record({ actor: actorOf(principal), action: status === 'disabled' ? 'signingkey.disable' : 'signingkey.enable', resource: { kind: 'signing-key', name }, outcome: 'allow', request: meta });
    });
    return this.get(name);
  }

  /** The current version's signer; refuses disabled keys. */
  async signer(name: string): Promise<BrokerSigner> {
    const key = await this.deps.db('signing_keys').where({ name }).first();
    if (!key) throw problems.notFound(`signing key ${name}`);
    if (key.status !== 'active') throw problems.forbidden(`signing key ${name} is disabled`, 'signing_key_disabled');
    const row = await this.deps.db('signing_key_versions').where({ name, version: key.current_version }).first();
    const der = await open(
      this.deps.keyProvider,
      { iv: row.iv, ciphertext: row.private_ciphertext, wrappedKey: row.wrapped_key, rootKeyVersion: row.root_key_version },
      signingKeyAad(name, row.version),
    );
    const privateKey = crypto.createPrivateKey({ key: der, format: 'der', type: 'pkcs8' });
    const algorithm = key.algorithm as SigningAlgorithm;
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
    const key = await this.deps.db('signing_keys').where({ name }).first();
    if (!key) return undefined;
    const rows = await this.deps.db('signing_key_versions').where({ name }).orderBy('version');
    return rows.map((r: any) => ({ keyId: r.key_id, version: r.version, publicKey: crypto.createPublicKey(r.public_pem), status: key.status }));
  }
}
