import crypto from 'node:crypto';
import type { Knex } from 'knex';
import type { KeyProvider } from './key-provider.js';

/**
 * Broker-internal symmetric keys (checksum HMAC, audit HMAC), random, wrapped by the root key and
 * stored in the database, so every instance derives the same values and root key rotation does
 * not change checksums.
 */
export class SystemKeys {
  private readonly cache = new Map<string, Buffer>();

  constructor(
    private readonly db: Knex,
    private readonly provider: KeyProvider,
    private readonly clock: () => number = Date.now,
  ) {}

  async get(name: 'checksum' | 'audit-hmac'): Promise<Buffer> {
    const cached = this.cache.get(name);
    if (cached) return cached;
    let row = await this.db('system_keys').where({ name }).first();
    if (!row) {
      const fresh = crypto.randomBytes(32);
      const { wrapped, keyVersion } = await this.provider.wrap(fresh);
      await this.db('system_keys')
        .insert({ name, wrapped_key: wrapped, root_key_version: keyVersion, created_at: this.clock() })
        .onConflict('name')
        .ignore();
      row = await this.db('system_keys').where({ name }).first();
    }
    const key = await this.provider.unwrap(row.wrapped_key, row.root_key_version);
    this.cache.set(name, key);
    return key;
  }

  async hmacHex(name: 'checksum' | 'audit-hmac', data: Buffer | string): Promise<string> {
    return crypto.createHmac('sha256', await this.get(name)).update(data).digest('hex');
  }
}
