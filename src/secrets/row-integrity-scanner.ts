import type { AccessService } from '../access/access-service.js';
import type { IntegrityViolation, RowIntegrity } from './row-integrity.js';
import { secretRowState } from './row-integrity.js';
import type { SecretsDal } from './secrets-dal.js';
import type { Clock } from '../core/clock.js';

/**
 * The row-integrity work that touches the database: the one-time MACs after migration 007 and
 * the background scan. The MACs themselves are computed and checked by RowIntegrity.
 */
export class RowIntegrityScanner {
  constructor(
    private readonly deps: { rowIntegrity: RowIntegrity; secrets: SecretsDal; access: AccessService },
  ) {}

  /**
   * One-time MACs for rows that existed before migration 007, in the first start after it.
   * Afterwards a row without a MAC is a forgery: the state row says the backfill ran.
   */
  async backfillOnce(clock: Clock): Promise<number> {
    const { rowIntegrity, secrets, access } = this.deps;
    return secrets.backfillOnce(clock, async (trx) => {
      let rows = 0;
      for (const s of await secrets.secretsWithoutMac(trx)) {
        await secrets.updateSecret(trx, s.id, { row_mac: rowIntegrity.secretMac(secretRowState(s)) });
        rows++;
      }
      rows += await access.backfillGrantMacs(trx);
      for (const v of await secrets.versionsWithoutMac(trx)) {
        await secrets.setVersionMac(trx, v.id, rowIntegrity.versionMac({ secretId: v.secret_id, version: v.version, checksum: v.checksum, size: v.size }));
        rows++;
      }
      return rows;
    });
  }

  /**
   * Checks every bound row, in pages. Also finds a live secret whose current version does not
   * exist. Cost is one indexed pass over three small tables (no decryption, no key provider).
   */
  async scan(page = 1000): Promise<IntegrityViolation[]> {
    const { rowIntegrity, secrets, access } = this.deps;
    const found: IntegrityViolation[] = [];
    const add = (v: IntegrityViolation) => {
      if (found.length < 1000) found.push(v);
    };
    for (let after = 0; ; ) {
      const rows = await secrets.secretPage(after, page);
      for (const s of rows) {
        const reason = rowIntegrity.checkSecret(secretRowState(s), s.row_mac);
        if (reason) add({ table: 'secrets', row: `secret ${s.id} (${s.name})`, reason });
      }
      if (rows.length < page) break;
      after = Number(rows[rows.length - 1].id);
    }
    for (let after: [number, number] = [0, 0]; ; ) {
      const rows = await access.dal.grantPage(after, page);
      for (const g of rows) {
        const reason = rowIntegrity.checkGrant({ groupId: g.group_id, secretId: g.secret_id }, g.row_mac);
        if (reason) add({ table: 'access_grants', row: `grant group ${g.group_id} → secret ${g.secret_id}`, reason });
      }
      if (rows.length < page) break;
      const last = rows[rows.length - 1];
      after = [Number(last.group_id), Number(last.secret_id)];
    }
    for (let after = 0; ; ) {
      const rows = await secrets.versionPage(after, page);
      for (const v of rows) {
        const reason = rowIntegrity.checkVersion({ secretId: v.secret_id, version: v.version, checksum: v.checksum, size: v.size }, v.row_mac);
        if (reason) add({ table: 'secret_versions', row: `version ${v.version} of secret ${v.secret_id}`, reason });
      }
      if (rows.length < page) break;
      after = Number(rows[rows.length - 1].id);
    }
    // a replayed older state of a secret row (with its then valid MAC) lags behind its versions
    for (const s of await secrets.secretsBehindNewestVersion()) add({ table: 'secrets', row: `secret ${s.id} (${s.name}): older than its newest version`, reason: 'mismatch' });
    for (const s of await secrets.secretsWithoutCurrentVersion()) add({ table: 'secrets', row: `secret ${s.id} (${s.name}): its current version does not exist`, reason: 'mismatch' });
    return found;
  }
}
