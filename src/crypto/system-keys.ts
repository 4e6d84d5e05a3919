import crypto from 'node:crypto';
import type { Database } from '../db/database.js';
import type { KeyProvider } from './key-provider.js';
import type { Clock } from '../core/clock.js';
import { SystemKeysDal } from './system-keys-dal.js';

/** `audit-log-signing` is the seed of the audit log's Ed25519 tree-head key (src/audit/audit-log-key.ts). */
export type SystemKeyName = 'checksum' | 'audit-hmac' | 'audit-log-signing';

/**
 * Broker-internal symmetric keys (checksum HMAC, audit HMAC), random, wrapped by the root key and
 * stored in the database, so every instance derives the same values and root key rotation does
 * not change checksums.
 */
export class SystemKeys {
  private readonly cache = new Map<string, Buffer>();
  private readonly dal: SystemKeysDal;

  constructor(
    db: Database,
    private readonly provider: KeyProvider,
    private readonly clock: Clock = Date.now,
  ) {
    this.dal = new SystemKeysDal(db);
  }

  async get(name: SystemKeyName): Promise<Buffer> {
    const cached = this.cache.get(name);
    if (cached) return cached;
    let row = await this.dal.find(name);
    if (!row) {
      const fresh = crypto.randomBytes(32);
      const { wrapped, keyVersion } = await this.provider.wrap(fresh);
      await this.dal.insertIfAbsent({ name, wrapped_key: wrapped, root_key_version: keyVersion, created_at: this.clock() });
      row = await this.dal.find(name);
      if (!row) throw new Error(`system key ${name} vanished right after it was stored`);
    }
    const key = await this.provider.unwrap(row.wrapped_key, row.root_key_version);
    this.cache.set(name, key);
    return key;
  }

  async hmacHex(name: SystemKeyName, data: Buffer | string): Promise<string> {
    return crypto.createHmac('sha256', await this.get(name)).update(data).digest('hex');
  }
}
