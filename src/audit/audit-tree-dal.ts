import type { Database, ProgramFactory, SqlValue, Statement, StatementProgram } from '../db/database.js';
import { rowToEvent, type AuditEventRow } from './audit-dal.js';
import type { AuditEvent } from './audit-types.js';
import { leafHash, perfectSubtrees, TreeFrontier, type NodeId } from './merkle.js';
import { leafData } from './audit-leaf-data.js';
import { compareWithKept, type KeptCheckpoint } from './kept-checkpoint.js';

/** An audit_tree_heads row. */
interface TreeHeadRow {
  id: number | string;
  tree_size: number | string;
  root_hash: string;
  created_at: number | string;
  note: string;
  key_id: string;
}

/** A signed tree head as stored: `note` is the C2SP signed note of a tlog-checkpoint. */
export interface StoredTreeHead {
  id: number;
  treeSize: number;
  rootHash: string;
  createdAt: number;
  note: string;
  keyId: string;
}

export function rowToHead(row: TreeHeadRow): StoredTreeHead {
  return {
    id: Number(row.id),
    treeSize: Number(row.tree_size),
    rootHash: row.root_hash,
    createdAt: Number(row.created_at),
    note: row.note,
    keyId: row.key_id,
  };
}

export const nodeKey = (n: NodeId): string => `${n.level}/${n.index}`;

/** Node lookups per statement: 2 parameters each, far below every driver's limit. */
const NODES_PER_SELECT = 400;

/** `(level, idx) IN (...)`: a row-value list, which PostgreSQL and SQLite (3.15+) both take. */
export function selectNodesStatement(ids: NodeId[]): Statement {
  const params: SqlValue[] = [];
  for (const n of ids) params.push(n.level, n.index);
  return { sql: `SELECT level, idx, hash FROM audit_tree_nodes WHERE (level, idx) IN (${ids.map(() => '(?, ?)').join(', ')})`, params };
}

type NodeRow = { level: number | string; idx: number | string; hash: string };

/** The stored perfect subtrees of the first `size` leaves, as a frontier; undefined when one is missing. A program step. */
function* storedFrontier(size: number): StatementProgram<TreeFrontier | undefined> {
  if (size === 0) return TreeFrontier.empty();
  const ids = perfectSubtrees(0, size);
  const stored = new Map<string, Buffer>();
  for (let i = 0; i < ids.length; i += NODES_PER_SELECT) {
    const rows = (yield selectNodesStatement(ids.slice(i, i + NODES_PER_SELECT))) as NodeRow[];
    for (const r of rows) stored.set(nodeKey({ level: Number(r.level), index: Number(r.idx) }), Buffer.from(r.hash, 'hex'));
  }
  const hashes = ids.map((id) => stored.get(nodeKey(id)));
  return hashes.every((h) => h !== undefined) ? TreeFrontier.fromNodes(size, hashes as Buffer[]) : undefined;
}

/** The head of the sequencer's queue: events without a leaf, in seq order. */
const QUEUED_EVENTS_SQL = 'SELECT * FROM audit_events WHERE leaf_index IS NULL ORDER BY seq LIMIT ?';

/** The Merkle leaf hash of a stored event: what its leaf commits to. */
export function queuedLeafHash(row: AuditEventRow): Buffer {
  return leafHash(leafData(rowToEvent(row)));
}

export const LATEST_HEAD_SQL = 'SELECT id, tree_size, root_hash, created_at, note, key_id FROM audit_tree_heads ORDER BY tree_size DESC, id DESC LIMIT 1';

/** A leaf as stored: its level-0 node, and its event unless retention removed that. */
export interface StoredLeaf {
  index: number;
  hash: string;
  event?: AuditEvent;
}

/**
 * Reads of the Merkle tree: nodes (audit_tree_nodes) and signed tree heads (audit_tree_heads).
 * The sequencer writes them (sequenceProgram in audit-sequencer-program.ts), nothing else does.
 */
export class AuditTreeDal {
  constructor(private readonly db: Database) {}

  async latestHead(): Promise<StoredTreeHead | undefined> {
    const row = await this.db.readOne<TreeHeadRow>(LATEST_HEAD_SQL, []);
    return row ? rowToHead(row) : undefined;
  }

  /**
   * The origin the log was created with: the first line of its first signed head (not verified
   * here; every head is verified against the key of this origin, so an edited line fails there).
   */
  async storedOrigin(): Promise<string | undefined> {
    const row = await this.db.readOne<{ note: string }>('SELECT note FROM audit_tree_heads ORDER BY id ASC LIMIT 1', []);
    return row ? row.note.slice(0, row.note.indexOf('\n')) : undefined;
  }

  /** The newest head signed at exactly `size`. */
  async headAt(size: number): Promise<StoredTreeHead | undefined> {
    const row = await this.db.readOne<TreeHeadRow>('SELECT id, tree_size, root_hash, created_at, note, key_id FROM audit_tree_heads WHERE tree_size = ? ORDER BY id DESC LIMIT 1', [size]);
    return row ? rowToHead(row) : undefined;
  }

  /** Newest first. */
  async listHeads(limit: number, beforeId?: number): Promise<StoredTreeHead[]> {
    const q = this.db.reader<TreeHeadRow>('audit_tree_heads').orderBy('id', 'desc').limit(limit);
    if (beforeId !== undefined) q.where('id', '<', beforeId);
    return (await q).map(rowToHead);
  }

  /** Heads with sizes in (afterSize, upToSize], ascending by size then id, for verification passes. */
  async headsBetween(afterSize: number, upToSize: number): Promise<StoredTreeHead[]> {
    const rows: TreeHeadRow[] = await this.db.reader<TreeHeadRow>('audit_tree_heads').where('tree_size', '>', afterSize).andWhere('tree_size', '<=', upToSize).orderBy([{ column: 'tree_size' }, { column: 'id' }]);
    return rows.map(rowToHead);
  }

  /**
   * The same heads a page at a time: a long-lived log has a head for every sequencing run, too
   * many to read (and, on SQLite, to read synchronously) in one statement.
   */
  async *headPages(afterSize: number, upToSize: number, page = 500): AsyncGenerator<StoredTreeHead[]> {
    let after: StoredTreeHead | undefined;
    for (;;) {
      const q = this.db.reader<TreeHeadRow>('audit_tree_heads').where('tree_size', '<=', upToSize);
      const last = after;
      if (last) q.andWhere((w) => w.where('tree_size', '>', last.treeSize).orWhere((same) => same.where('tree_size', last.treeSize).andWhere('id', '>', last.id)));
      else q.andWhere('tree_size', '>', afterSize);
      const rows: TreeHeadRow[] = await q.orderBy([{ column: 'tree_size' }, { column: 'id' }]).limit(page);
      if (rows.length === 0) return;
      const heads = rows.map(rowToHead);
      yield heads;
      if (rows.length < page) return;
      after = heads[heads.length - 1];
    }
  }

  /** The root of the first `size` leaves from the stored perfect subtrees (hex); undefined when one is missing. */
  async storedRootAt(size: number): Promise<string | undefined> {
    if (size === 0) return TreeFrontier.empty().root().toString('hex');
    const ids = perfectSubtrees(0, size);
    const stored = await this.nodes(ids);
    const hashes = ids.map((id) => stored.get(nodeKey(id)));
    return hashes.every((h) => h !== undefined) ? TreeFrontier.fromNodes(size, hashes as Buffer[]).root().toString('hex') : undefined;
  }

  /** Stored hashes of the given perfect subtrees, by nodeKey; missing nodes are absent from the map. */
  async nodes(ids: NodeId[]): Promise<Map<string, Buffer>> {
    const found = new Map<string, Buffer>();
    for (let i = 0; i < ids.length; i += NODES_PER_SELECT) {
      const { sql, params } = selectNodesStatement(ids.slice(i, i + NODES_PER_SELECT));
      const rows = await this.db.readAll<NodeRow>(sql, params);
      for (const r of rows) found.set(nodeKey({ level: Number(r.level), index: Number(r.idx) }), Buffer.from(r.hash, 'hex'));
    }
    return found;
  }

  /**
   * Leaves [from, to) in index order, in batches: each level-0 node with the event it hashes
   * (an event missing where a node exists was pruned, or deleted). Driven by the nodes, so a
   * deleted node shows as a gap the caller detects. On SQLite a page is read synchronously, so
   * pages stay small there (a few milliseconds each); PostgreSQL pays a round trip per page.
   */
  async *leaves(from: number, to: number, batch = this.db.dialect === 'sqlite' ? 250 : 1000): AsyncGenerator<StoredLeaf[]> {
    let next = from;
    while (next < to) {
      const end = Math.min(next + batch, to);
      const [nodeRows, eventRows] = await Promise.all([
        this.db.reader('audit_tree_nodes').select('idx', 'hash').where('level', 0).andWhere('idx', '>=', next).andWhere('idx', '<', end).orderBy('idx') as Promise<Array<{ idx: number | string; hash: string }>>,
        this.db.reader<AuditEventRow>('audit_events').where('leaf_index', '>=', next).andWhere('leaf_index', '<', end) as Promise<AuditEventRow[]>,
      ]);
      const events = new Map<number, AuditEvent>();
      for (const row of eventRows) events.set(Number(row.leaf_index), rowToEvent(row));
      yield nodeRows.map((r) => ({ index: Number(r.idx), hash: r.hash, event: events.get(Number(r.idx)) }));
      next = end;
    }
  }

  /**
   * Events with a leaf index that no signed head covers (evidence of a rollback). Counted against
   * the newest head in the same statement: the sequencer commits leaves and their head together,
   * so one snapshot never shows covered leaves as uncovered, while a head read by an earlier
   * statement can be outrun by a sequencing commit (another instance's, or this one's timer).
   */
  async leavesBeyondNewestHead(): Promise<number> {
    const row = await this.db.readOne<{ n: number | string }>('SELECT COUNT(*) AS n FROM audit_events WHERE leaf_index >= COALESCE((SELECT MAX(tree_size) FROM audit_tree_heads), 0)', []);
    return Number(row?.n ?? 0);
  }

  /**
   * The next `limit` events waiting for the sequencer, in the order it takes them: the sequencer
   * hashes their leaves before its transaction (queuedLeafHash), outside the synchronous step.
   */
  async queuedEvents(limit: number): Promise<AuditEventRow[]> {
    return this.db.readAll<AuditEventRow>(QUEUED_EVENTS_SQL, [limit]);
  }

  /** The lowest leaf whose event is still stored (retention removes the oldest first); undefined when none is. */
  async firstStoredEventLeaf(): Promise<number | undefined> {
    const row = await this.db.readOne<{ l: number | string | null }>('SELECT MIN(leaf_index) AS l FROM audit_events', []);
    return row?.l === null || row?.l === undefined ? undefined : Number(row.l);
  }

  /** Events still waiting for the sequencer, and the age of the oldest (for metrics and readiness). */
  async queueStats(): Promise<{ queued: number; oldestTs: number | null }> {
    const row = (await this.db.reader('audit_events').whereNull('leaf_index').count('* as n').min('ts as oldest').first()) as { n: number | string; oldest: number | string | null } | undefined;
    return { queued: Number(row?.n ?? 0), oldestTs: row?.oldest === null || row?.oldest === undefined ? null : Number(row.oldest) };
  }
}

/**
 * The sequencer's advisory lock: a constant for Keywarden's audit sequencer and the schema, so
 * that logs in different schemas of one database (one per deployment, or per test) do not wait
 * for each other. Held only by sequencing transactions.
 */
const SEQUENCER_LOCK_SQL = "SELECT pg_try_advisory_xact_lock(1263884612, hashtext(current_schema())) AS locked";

/** Rows per UPDATE / INSERT of a sequencing batch: a few parameters each, far below driver limits. */
const ROWS_PER_STATEMENT = 250;

export type SequenceOutcome =
  | { status: 'busy' }
  | { status: 'idle'; treeSize: number }
  | { status: 'resigned' | 'sequenced'; treeSize: number; rootHash: string; sequenced: number; head: StoredTreeHead; eventTimes: number[] };

/** Signs a tree head: the signed note, and the key id (8 hex) it was signed with. */
export type TreeHeadSigner = (treeSize: number, rootHash: Buffer, now: number) => { note: string; keyId: string };

/** Thrown when the stored tree does not match its own latest signed head: nothing is appended to it. */
export class TreeStateMismatch extends Error {
  constructor(
    message: string,
    /** The first leaf that is not as signed, when known. */
    readonly firstBadLeaf?: number,
  ) {
    super(message);
  }
}

/**
 * One sequencing step, in one transaction: take up to `batch` queued events in seq order, give
 * them the next leaf indexes, store their leaves and every perfect subtree they complete, and
 * sign the new tree head. On PostgreSQL a transaction-scoped advisory lock makes it one
 * sequencer at a time across instances (released by commit, rollback, or the connection dying,
 * so a crashed instance's turn passes to the next one to try); SQLite has one writer.
 *
 * It only ever appends: the frontier it extends is read back from the stored nodes and must
 * hash to the latest signed root, so a tree whose nodes were edited is never built upon.
 * The unique leaf_index and the nodes' primary key make a second assignment fail rather than
 * fork the tree. When nothing is queued, a head older than `resignAfterMs` is signed again at
 * the same size, so witnesses see a fresh timestamp.
 */
/** Opens a stored head's signed note with the log key: its size and root, or throws when it does not verify. */
export type TreeHeadOpener = (note: string) => { treeSize: number; rootHash: string };

export function sequenceProgram(opts: {
  batch: number;
  now: number;
  resignAfterMs: number;
  sign: TreeHeadSigner;
  open: TreeHeadOpener;
  /** Checkpoints kept outside the database (kept-checkpoint.ts): the tree extended must extend each. */
  kept?: ReadonlyArray<Pick<KeptCheckpoint, 'file' | 'treeSize' | 'rootHash'>>;
  /**
   * Leaf hashes of queued events by seq, computed before the transaction (queuedLeafHash), so
   * that the transaction, synchronous on SQLite, does not hash: the hashing is most of a batch's
   * work. A queued event's row is written once and never updated by the broker, so the hash of
   * the row read a moment earlier is the hash of the row sequenced; an event not in the map
   * (queued since, or the map left out) is hashed here.
   */
  leafHashes?: ReadonlyMap<number, Buffer>;
}): ProgramFactory<SequenceOutcome> {
  return function* (dialect) {
    if (dialect === 'postgres') {
      const [lock] = (yield { sql: SEQUENCER_LOCK_SQL, params: [] }) as Array<{ locked: boolean }>;
      if (!lock?.locked) return { status: 'busy' };
    }
    const [headRow] = (yield { sql: LATEST_HEAD_SQL, params: [] }) as TreeHeadRow[];
    const latest = headRow ? rowToHead(headRow) : undefined;
    const size = latest?.treeSize ?? 0;
    const frontier = yield* storedFrontier(size);
    if (!frontier) throw new TreeStateMismatch(`nodes of the tree of size ${size} are missing`);
    if (latest) {
      // the columns are only a copy: the head extended is the one the log key signed, so a tree
      // rehashed in the database, with its root column rewritten to match, is never signed over
      let signed: { treeSize: number; rootHash: string };
      try {
        signed = opts.open(latest.note);
      } catch {
        throw new TreeStateMismatch(`the newest tree head (size ${size}) is not signed by the log key`);
      }
      if (signed.treeSize !== size || signed.rootHash !== latest.rootHash) {
        throw new TreeStateMismatch(`tree head ${latest.id}: its columns differ from what its signed checkpoint says`);
      }
      if (frontier.root().toString('hex') !== latest.rootHash) {
        throw new TreeStateMismatch(`the stored nodes do not hash to the signed root of tree size ${size}`);
      }
    }
    // a log cut back to an older signed head (events, nodes and heads together) is consistent
    // in itself: only a checkpoint kept outside the database shows it, and nothing is signed over it
    for (const cp of opts.kept ?? []) {
      let rootAtKept: string | undefined = cp.treeSize === 0 ? cp.rootHash : undefined;
      if (cp.treeSize === size && latest) rootAtKept = latest.rootHash;
      else if (cp.treeSize > 0 && cp.treeSize < size) rootAtKept = (yield* storedFrontier(cp.treeSize))?.root().toString('hex');
      const mismatch = compareWithKept(cp, size, rootAtKept);
      if (mismatch) throw new TreeStateMismatch(mismatch.reason, mismatch.firstBadLeaf);
    }

    const queued = (yield { sql: QUEUED_EVENTS_SQL, params: [opts.batch] }) as AuditEventRow[];
    // an empty log still gets a signed head of size 0, so there is always one to publish
    if (queued.length === 0 && latest && opts.now - latest.createdAt < opts.resignAfterMs) return { status: 'idle', treeSize: size };

    const assigned: Array<{ seq: number; index: number }> = [];
    const newNodes: Array<{ node: NodeId; hash: Buffer }> = [];
    for (const row of queued) {
      const index = frontier.size;
      const seq = Number(row.seq);
      frontier.appendLeafHash(opts.leafHashes?.get(seq) ?? queuedLeafHash(row), (node, hash) => newNodes.push({ node, hash }));
      assigned.push({ seq, index });
    }
    for (let i = 0; i < assigned.length; i += ROWS_PER_STATEMENT) {
      const chunk = assigned.slice(i, i + ROWS_PER_STATEMENT);
      const updated = (yield {
        // COALESCE rather than "leaf_index IS NULL": the guard must not match the queue's partial
        // index predicate, or PostgreSQL, with statistics older than a large backlog, plans a scan
        // of the whole queue per chunk instead of primary-key lookups
        sql: `WITH v(seq, leaf_index) AS (VALUES ${chunk.map(() => '(CAST(? AS BIGINT), CAST(? AS BIGINT))').join(', ')}) UPDATE audit_events SET leaf_index = v.leaf_index FROM v WHERE audit_events.seq = v.seq AND COALESCE(audit_events.leaf_index, -1) = -1 RETURNING audit_events.seq`,
        params: chunk.flatMap((a) => [a.seq, a.index]),
      }) as object[];
      if (updated.length !== chunk.length) throw new Error(`sequencing assigned ${updated.length} of ${chunk.length} leaf indexes`);
    }
    for (let i = 0; i < newNodes.length; i += ROWS_PER_STATEMENT) {
      const chunk = newNodes.slice(i, i + ROWS_PER_STATEMENT);
      yield {
        sql: `INSERT INTO audit_tree_nodes (level, idx, hash) VALUES ${chunk.map(() => '(?, ?, ?)').join(', ')}`,
        params: chunk.flatMap((n) => [n.node.level, n.node.index, n.hash.toString('hex')]),
      };
    }
    const root = frontier.root();
    const { note, keyId } = opts.sign(frontier.size, root, opts.now);
    const [inserted] = (yield {
      sql: 'INSERT INTO audit_tree_heads (tree_size, root_hash, created_at, note, key_id) VALUES (?, ?, ?, ?, ?) RETURNING id',
      params: [frontier.size, root.toString('hex'), opts.now, note, keyId],
    }) as Array<{ id: number | string }>;
    const head: StoredTreeHead = { id: Number(inserted.id), treeSize: frontier.size, rootHash: root.toString('hex'), createdAt: opts.now, note, keyId };
    return { status: queued.length ? 'sequenced' : 'resigned', treeSize: frontier.size, rootHash: head.rootHash, sequenced: queued.length, head, eventTimes: queued.map((r) => Number(r.ts)) };
  };
}
