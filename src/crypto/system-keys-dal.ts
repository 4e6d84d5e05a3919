import type { Database } from '../db/database.js';

/** A system_keys row: a broker-internal key, wrapped by the root key. */
export interface SystemKeyRow {
  name: string;
  wrapped_key: Buffer;
  root_key_version: string;
  created_at: number;
}

/** The system_keys table. */
export class SystemKeysDal {
  constructor(private readonly db: Database) {}

  async find(name: string): Promise<SystemKeyRow | undefined> {
    return this.db.reader<SystemKeyRow>('system_keys').where({ name }).first();
  }

  /** Inserts `row` unless a key of that name exists (another instance may have made it first). */
  async insertIfAbsent(row: SystemKeyRow): Promise<void> {
    await this.db.reader<SystemKeyRow>('system_keys').insert(row).onConflict('name').ignore();
  }
}
