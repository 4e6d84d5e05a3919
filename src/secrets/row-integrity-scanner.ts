import type { AccessService } from '../access/access-service.js';
import type { ClientsService } from '../identity/clients-service.js';
import type { IntegrityViolation, RowIntegrity } from './row-integrity.js';
import { secretRowState } from './row-integrity.js';
import type { IdRange, SecretsDal } from './secrets-dal.js';
import type { Clock } from '../core/clock.js';
import { LoopSlicer } from '../core/loop-slicer.js';

/**
 * Rows per page of the scan. A SQLite page is read synchronously (a few milliseconds for 250
 * rows); PostgreSQL pays a round trip per page, off the loop.
 */
const SQLITE_PAGE = 250;
const POSTGRES_PAGE = 1000;

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
   * exist. Cost is one indexed pass over five small tables (no decryption, no key provider), but
   * it runs on the watch's timer while requests are served: on SQLite a page is read
   * synchronously, so pages stay small there, and the MAC checks give the event loop a turn after
   * each millisecond of work (LoopSlicer), so a large table slows requests a little instead of
   * holding them for the whole pass. `signal` gives the scan up (at shutdown).
   */
  async scan(options: { page?: number; signal?: AbortSignal } = {}): Promise<IntegrityViolation[]> {
    const { rowIntegrity, secrets, access, clients } = this.deps;
    const page = options.page ?? (secrets.dialect === 'sqlite' ? SQLITE_PAGE : POSTGRES_PAGE);
    const slicer = new LoopSlicer(options.signal);
    const found: IntegrityViolation[] = [];
    const add = (v: IntegrityViolation) => {
      if (found.length < 1000) found.push(v);
    };
    /** Reads pages after `start` until a short one, checking each row; `next` is the key after a row. */
    const pages = async <Row, Key>(start: Key, read: (after: Key, limit: number) => Promise<Row[]>, next: (row: Row) => Key, check: (row: Row) => void) => {
      for (let after = start; ; ) {
        await slicer.pause();
        const rows = await read(after, page);
        for (const row of rows) {
          check(row);
          await slicer.pause();
        }
        if (rows.length < page) return;
        after = next(rows[rows.length - 1]);
      }
    };
    // the whole-table checks of a secret against its versions go page by page too (by id range)
    let checkedTo = 0;
    const againstVersions = async (ids: IdRange) => {
      // a replayed older state of a secret row (with its then valid MAC) lags behind its versions
      for (const s of await secrets.secretsBehindNewestVersion(ids)) add({ table: 'secrets', row: `secret ${s.id} (${s.name}): older than its newest version`, reason: 'mismatch' });
      for (const s of await secrets.secretsWithoutCurrentVersion(ids)) add({ table: 'secrets', row: `secret ${s.id} (${s.name}): its current version does not exist`, reason: 'mismatch' });
      checkedTo = ids.to ?? Infinity;
    };
    await pages(
      0,
      async (after, n) => {
        const rows = await secrets.secretPage(after, n);
        if (rows.length === n) await againstVersions({ from: after + 1, to: Number(rows[rows.length - 1].id) });
        return rows;
      },
      (s) => Number(s.id),
      (s) => {
        const reason = rowIntegrity.checkSecret(secretRowState(s), s.row_mac);
        if (reason) add({ table: 'secrets', row: `secret ${s.id} (${s.name})`, reason });
      },
    );
    // the last (short) page, and every id after it: secrets created during the scan
    await againstVersions({ from: checkedTo + 1 });
    await pages<Awaited<ReturnType<typeof access.dal.grantPage>>[number], [number, number]>([0, 0], (after, n) => access.dal.grantPage(after, n), (g) => [Number(g.group_id), Number(g.secret_id)], (g) => {
      const reason = rowIntegrity.checkGrant({ groupId: g.group_id, secretId: g.secret_id }, g.row_mac);
      if (reason) add({ table: 'access_grants', row: `grant group ${g.group_id} → secret ${g.secret_id}`, reason });
    });
    await pages<Awaited<ReturnType<typeof access.dal.membershipPage>>[number], [number, number]>([0, 0], (after, n) => access.dal.membershipPage(after, n), (m) => [Number(m.client_id), Number(m.group_id)], (m) => {
      const reason = rowIntegrity.checkMembership({ clientId: m.client_id, groupId: m.group_id }, m.row_mac);
      if (reason) add({ table: 'memberships', row: `membership client ${m.client_id} → group ${m.group_id}`, reason });
    });
    await pages(0, (after, n) => clients.delegationPage(after, n), (c) => Number(c.clientId), (c) => {
      const reason = rowIntegrity.checkDelegation(c, c.delegationMac);
      if (reason) add({ table: 'clients', row: `delegation of client ${c.clientId} (${c.name})`, reason });
    });
    await pages(0, (after, n) => secrets.versionPage(after, n), (v) => Number(v.id), (v) => {
      const reason = rowIntegrity.checkVersion({ secretId: v.secret_id, version: v.version, checksum: v.checksum, size: v.size }, v.row_mac);
      if (reason) add({ table: 'secret_versions', row: `version ${v.version} of secret ${v.secret_id}`, reason });
    });
    return found;
  }
}
