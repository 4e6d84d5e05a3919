import { InvalidInputError } from '../core/errors.js';
import type { AuditLogSigner } from './audit-log-key.js';
import type { AuditProofs } from './audit-proofs.js';
import type { AuditQueryDal } from './audit-query-dal.js';
import type { AuditTreeDal, StoredTreeHead } from './audit-tree-dal.js';
import { nodeKey } from './audit-tree-dal.js';
import { perfectSubtrees } from './merkle.js';
import { EXPORT_FORMAT } from './offline-verify.js';

export interface ExportPlan {
  fromLeaf: number;
  toLeaf: number;
  head: StoredTreeHead;
}

/**
 * Format 2 exports (NDJSON), verifiable offline against the signed head they end with
 * (offline-verify.ts): a header; the compact range of the leaves before the first exported one
 * (the perfect-subtree hashes of [0, from)); the events of [from, to) in leaf order; the
 * perfect subtrees of [to, treeSize); the signed checkpoint. Leaves retention removed are
 * covered by the prefix hashes, so a pruned log still exports and verifies.
 */
export class AuditExporter {
  constructor(private readonly deps: { tree: AuditTreeDal; events: AuditQueryDal; proofs: AuditProofs; signer: () => Promise<AuditLogSigner> }) {}

  async plan(range: { from?: number; to?: number }): Promise<ExportPlan> {
    const head = await this.deps.proofs.latest();
    const toLeaf = range.to ?? head.treeSize;
    if (toLeaf > head.treeSize) throw new InvalidInputError(`to ${toLeaf} is beyond the newest signed tree head (size ${head.treeSize})`, { code: 'tree_size_too_large' });
    const firstStored = (await this.deps.events.firstStoredLeaf()) ?? toLeaf;
    const fromLeaf = Math.min(Math.max(range.from ?? 0, firstStored), toLeaf);
    return { fromLeaf, toLeaf, head };
  }

  async *lines(plan: ExportPlan): AsyncGenerator<string> {
    const { fromLeaf, toLeaf, head } = plan;
    const signer = await this.deps.signer();
    yield JSON.stringify({ type: 'export-header', format: EXPORT_FORMAT, origin: signer.origin, verifierKey: signer.verifierKey, fromLeaf, toLeaf, treeSize: head.treeSize });
    if (fromLeaf > 0) {
      const ids = perfectSubtrees(0, fromLeaf);
      const nodes = await this.deps.tree.nodes(ids);
      yield JSON.stringify({ type: 'prefix', treeSize: fromLeaf, hashes: ids.map((id) => this.required(nodes, id)) });
    }
    for await (const event of this.deps.events.leafRange(fromLeaf, toLeaf)) yield JSON.stringify(event);
    if (toLeaf < head.treeSize) {
      const ids = perfectSubtrees(toLeaf, head.treeSize);
      const nodes = await this.deps.tree.nodes(ids);
      yield JSON.stringify({ type: 'suffix', nodes: ids.map((id) => ({ level: id.level, index: id.index, hash: this.required(nodes, id) })) });
    }
    yield JSON.stringify({ type: 'checkpoint', checkpoint: head.note });
  }

  private required(nodes: Map<string, Buffer>, id: { level: number; index: number }): string {
    const hash = nodes.get(nodeKey(id));
    // exported as missing, the file fails verification, which is what a damaged tree should do
    return hash ? hash.toString('hex') : '';
  }
}
