import type { AccessService } from '../access/access-service.js';
import type { ClientsService } from '../identity/clients-service.js';
import type { IntegrityViolation, RowIntegrity } from './row-integrity.js';
import { secretRowState } from './row-integrity.js';
import type { SecretsDal } from './secrets-dal.js';
import type { Clock } from '../core/clock.js';

/**
 * The row-integrity work that touches the database: the one-time MACs after migrations 007 and
 * 011, and the background scan. The MACs themselves are computed and checked by RowIntegrity.
 */
export class RowIntegrityScanner {
  constructor(
    private readonly deps: { rowIntegrity: RowIntegrity; secrets: SecretsDal; access: AccessService; clients: Pick<ClientsService, 'backfillDelegationMacs' | 'delegationPage'> },
  ) {}

  /**
   * One-time MACs for rows that existed before migration 007 (secrets, grants, versions) and
   * 011 (memberships, delegations), in the first start after each. Afterwards a row without a
   * MAC is a forgery: the state rows say the backfills ran.
   */
  async backfillOnce(clock: Clock): Promise<number> {
    const { rowIntegrity, secrets, access, clients } = this.deps;
    const bound011 = await secrets.backfillOnce(clock, 2, async (trx) => (await access.backfillMembershipMacs(trx)) + (await clients.backfillDelegationMacs(trx)));
    return bound011 + await secrets.backfillOnce(clock, 1, async (trx) => {
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
   * exist. Cost is one indexed pass over five small tables (no decryption, no key provider).
   */
  async scan(page = 1000): Promise<IntegrityViolation[]> {
    const { rowIntegrity, secrets, access, clients } = this.deps;
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
    for (let after: [number, number] = [0, 0]; ; ) {
      const rows = await access.dal.membershipPage(after, page);
      for (const m of rows) {
        const reason = rowIntegrity.checkMembership({ clientId: m.client_id, groupId: m.group_id }, m.row_mac);
        if (reason) add({ table: 'memberships', row: `membership client ${m.client_id} → group ${m.group_id}`, reason });
      }
      if (rows.length < page) break;
      const last = rows[rows.length - 1];
      after = [Number(last.client_id), Number(last.group_id)];
    }
    for (let after = 0; ; ) {
      const rows = await clients.delegationPage(after, page);
      for (const c of rows) {
        const reason = rowIntegrity.checkDelegation(c, c.delegationMac);
        if (reason) add({ table: 'clients', row: `delegation of client ${c.clientId} (${c.name})`, reason });
      }
      if (rows.length < page) break;
      after = Number(rows[rows.length - 1].clientId);
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
