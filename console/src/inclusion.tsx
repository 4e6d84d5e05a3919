import { useState } from 'preact/hooks';
import { ApiError, get, type AuditEvent, type InclusionProof, type TreeHead } from './api';
import { verifyEventInclusion, type InclusionResult } from './merkle';

export const PINNED_KEY = 'keywarden-console.verifier-key';

/** The verifier key to check checkpoints with: one the auditor pinned (public, so storable), else the broker's. */
export async function verifierKey(head?: TreeHead | null): Promise<{ key: string; pinned: boolean }> {
  const pinned = localStorage.getItem(PINNED_KEY);
  if (pinned) return { key: pinned, pinned: true };
  const h = head ?? (await get<TreeHead>('/v1/audit/checkpoint'));
  return { key: h.verifierKey, pinned: false };
}

/** "Verify inclusion" of one event: the proof and the signed checkpoint are checked here, in the browser. */
export function InclusionCheck(props: { event: AuditEvent }) {
  const [state, setState] = useState<{ busy?: boolean; result?: InclusionResult; error?: string; pinned?: boolean }>({});
  const e = props.event;

  async function run() {
    setState({ busy: true });
    try {
      const proof = await get<InclusionProof>('/v1/audit/proof/inclusion', { seq: e.seq });
      const head = await get<TreeHead>('/v1/audit/checkpoint');
      const note = proof.checkpoint ?? (head.treeSize === proof.treeSize ? head.checkpoint : null);
      if (!note) throw new Error(`no signed checkpoint of size ${proof.treeSize} was offered`);
      const vk = await verifierKey(head);
      const shown = { ...e, leafIndex: e.leafIndex ?? proof.leafIndex };
      const result = await verifyEventInclusion(shown, proof, note, vk.key);
      setState({ result, pinned: vk.pinned });
    } catch (err) {
      const msg =
        err instanceof ApiError && err.status === 409
          ? 'The event is still queued for the tree; try again in a moment.'
          : (err as Error).message;
      setState({ error: msg });
    }
  }

  return (
    <div class="inclusion">
      <button type="button" onClick={run} disabled={state.busy}>
        Verify inclusion
      </button>
      <div aria-live="polite" data-testid="inclusion-result">
        {state.busy && <p class="muted">Checking the proof and the signed checkpoint in this browser…</p>}
        {state.error && (
          <p class="error" role="alert">
            Inclusion not verified: {state.error}
          </p>
        )}
        {state.result && (
          <>
            <p class={state.result.ok ? 'ok' : 'error'}>
              <strong>{state.result.ok ? 'Included: verified in this browser.' : 'Not verified.'}</strong>{' '}
              {state.pinned ? 'Checked against your pinned log key.' : 'Checked against the log key the broker publishes; pin it on the Verify page to notice a key swap.'}
            </p>
            <ul class="steps">
              {state.result.steps.map((s) => (
                <li class={s.ok ? 'ok' : 'error'}>
                  <span aria-hidden="true">{s.ok ? '✓' : '✗'}</span> <strong>{s.label}:</strong> <span class="mono">{s.detail}</span>
                </li>
              ))}
            </ul>
          </>
        )}
      </div>
    </div>
  );
}
