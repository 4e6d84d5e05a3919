import type { Database, Transaction } from '../../db/database.js';

/** A row of registry_credentials: which secret holds the broker's credentials for a registry. */
export interface RegistryCredentialRow {
  registry: string;
  secret_name: string;
  created_at: number;
}

/** The registry_credentials table; nothing else queries it. */
export class RegistryCredentialsDal {
  constructor(private readonly db: Database) {}

  async find(registry: string): Promise<RegistryCredentialRow | undefined> {
    return this.db.reader<RegistryCredentialRow>('registry_credentials').where({ registry }).first();
  }

  async list(): Promise<RegistryCredentialRow[]> {
    return this.db.reader<RegistryCredentialRow>('registry_credentials').orderBy('registry');
  }

  /** Maps `registry` to `secretName`; a registry mapped before keeps its created_at. */
  async upsert(trx: Transaction, registry: string, secretName: string, now: number): Promise<void> {
    await trx<RegistryCredentialRow>('registry_credentials')
      .insert({ registry, secret_name: secretName, created_at: now })
      .onConflict('registry')
      .merge({ secret_name: secretName });
  }
}
