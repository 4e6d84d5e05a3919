import type { Database, Transaction } from '../../db/database.js';

/** A row of image_signatures: a signature the broker made and published. */
export interface SignatureRow {
  id: number;
  image: string;
  repository: string;
  digest: string;
  key_name: string;
  key_version: number;
  key_id: string;
  /** base64 */
  signature: string;
  payload: string;
  bundle: string;
  signature_ref: string;
  bundle_ref: string | null;
  signed_by: string;
  created_at: number;
}

/** At most this many signatures per listing, newest first. */
const LIST_LIMIT = 500;

/** The image_signatures table; nothing else queries it. */
export class SignatureDal {
  constructor(private readonly db: Database) {}

  /** Stores a signature; returns its id. */
  async insert(trx: Transaction, row: Omit<SignatureRow, 'id'>): Promise<number> {
    const [inserted] = (await trx<SignatureRow>('image_signatures').insert(row).returning('id')) as Array<{ id: number } | number>;
    return typeof inserted === 'object' ? inserted.id : (inserted as number);
  }

  async list(filter: { repository?: string; digest?: string }): Promise<SignatureRow[]> {
    const q = this.db.reader<SignatureRow>('image_signatures').orderBy('id', 'desc').limit(LIST_LIMIT);
    if (filter.repository !== undefined) q.where('repository', filter.repository);
    if (filter.digest !== undefined) q.where('digest', filter.digest);
    return q;
  }
}
