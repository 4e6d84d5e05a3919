import { useState } from 'preact/hooks';
import { post, get, type TreeHead, type VerifyResult } from '../api';
import { PINNED_KEY } from '../inclusion';
import { hex, openNote, parseCheckpoint, parseVerifierKey } from '../merkle';
import { fmtAge, fmtTime, Loaded, useLoad } from '../ui';

export function Verify() {
  const [state, setState] = useState<{ busy?: boolean; result?: VerifyResult; error?: string }>({});
  const [pinned, setPinned] = useState(() => localStorage.getItem(PINNED_KEY) ?? '');
  const [pinMsg, setPinMsg] = useState('');
  const [headCheck, setHeadCheck] = useState('');
  const head = useLoad(() => get<TreeHead>('/v1/audit/checkpoint'), []);

  async function run(e: Event) {
    e.preventDefault();
    const form = new FormData(e.currentTarget as HTMLFormElement);
    const checkpoint = String(form.get('checkpoint') ?? '').trim();
    const from = String(form.get('fromLeaf') ?? '').trim();
    const to = String(form.get('toLeaf') ?? '').trim();
    let body: Record<string, unknown> = checkpoint ? { checkpoint: checkpoint.replace(/\r\n/g, '\n').replace(/\n?$/, '\n') } : {};
    if (from !== '' || to !== '') {
      if (from === '' || to === '') return setState({ error: 'give both ends of the range (from leaf and to leaf), or neither' });
      if (checkpoint) return setState({ error: 'a range is verified without a checkpoint: clear one of them' });
      body = { fromLeaf: Number(from), toLeaf: Number(to) };
    }
    setState({ busy: true });
    try {
      const result = await post<VerifyResult>('/v1/audit/verify', body);
      setState({ result });
    } catch (err) {
      setState({ error: (err as Error).message });
    }
  }

  async function pin(e: Event) {
    e.preventDefault();
    const v = String(new FormData(e.currentTarget as HTMLFormElement).get('vkey') ?? '').trim();
    if (!v) {
      localStorage.removeItem(PINNED_KEY);
      setPinned('');
      setPinMsg('No key pinned: checkpoints are checked against the key the broker publishes.');
      return;
    }
    try {
      await parseVerifierKey(v);
      localStorage.setItem(PINNED_KEY, v);
      setPinned(v);
      setPinMsg('Pinned. Inclusion checks now use this key.');
    } catch (err) {
      setPinMsg(`Not a verifier key: ${(err as Error).message}`);
    }
  }

  async function checkHead(h: TreeHead) {
    try {
      const key = await parseVerifierKey(pinned || h.verifierKey);
      const cp = parseCheckpoint(await openNote(h.checkpoint, key));
      setHeadCheck(`Signature verified in this browser: size ${cp.size}, root ${hex(cp.rootHash)}.`);
    } catch (err) {
      setHeadCheck(`Signature NOT verified: ${(err as Error).message}`);
    }
  }

  const r = state.result;
  return (
    <>
      <h1>Verify the audit log</h1>
      <section class="card" aria-labelledby="h-run">
        <h2 id="h-run">Re-derive the tree on the broker</h2>
        <p>
          The broker recomputes every stored event's leaf hash, every subtree and the root at every signed tree head, and checks each head's signature.
          Give a checkpoint you kept from earlier to also check that the log still extends it (a truncation is caught this way).
        </p>
        <form onSubmit={run}>
          <label for="cp">Earlier checkpoint (optional)</label>
          <textarea id="cp" name="checkpoint" rows={4} class="mono" />
          <fieldset>
            <legend>Only a range of leaves (optional)</legend>
            <p class="muted">
              Re-derives the leaves from the first up to, not including, the second, and checks them against the newest signed root through the stored
              subtrees around them. Events outside the range are not re-hashed.
            </p>
            <div class="range">
              <label>
                From leaf
                <input name="fromLeaf" type="number" min={0} step={1} inputMode="numeric" />
              </label>
              <label>
                To leaf (exclusive)
                <input name="toLeaf" type="number" min={1} step={1} inputMode="numeric" />
              </label>
            </div>
          </fieldset>
          <button type="submit" disabled={state.busy}>
            Verify the log
          </button>
        </form>
        <div aria-live="polite" data-testid="verify-result">
          {state.busy && <p class="muted">Verifying…</p>}
          {state.error && (
            <p class="error" role="alert">
              Verification could not run: {state.error}
            </p>
          )}
          {r &&
            (r.ok ? (
              <p class="ok result">
                <strong>Verified.</strong> {r.range ? `Leaves ${r.range.fromLeaf} to ${r.range.toLeaf - 1}: ` : ''}
                {r.leavesChecked} leaves recomputed from their events
                {r.leavesWithoutEvent ? `, ${r.leavesWithoutEvent} older leaves checked through the tree` : ''}, {r.headsChecked} signed tree heads checked; tree size{' '}
                {r.treeSize}, root <span class="mono">{r.rootHash}</span>.
              </p>
            ) : (
              <p class="error result" role="alert">
                <strong>Broken{r.firstBadLeaf !== undefined ? ` at leaf ${r.firstBadLeaf}` : ''}.</strong> {r.reason}
                {r.range ? ` (range verification of leaves ${r.range.fromLeaf} to ${r.range.toLeaf - 1})` : ''}
              </p>
            ))}
        </div>
      </section>

      <section class="card" aria-labelledby="h-head">
        <h2 id="h-head">Newest signed checkpoint</h2>
        <Loaded state={head}>
          {(h) => (
            <>
              <dl class="facts">
                <dt>Tree size</dt>
                <dd>{h.treeSize}</dd>
                <dt>Signed</dt>
                <dd>
                  {fmtTime(h.time)} ({fmtAge(h.time)})
                </dd>
                <dt>Root hash</dt>
                <dd class="mono">{h.rootHash}</dd>
                <dt>Log key</dt>
                <dd class="mono break">{h.verifierKey}</dd>
              </dl>
              <pre class="json" aria-label="Signed note">{h.checkpoint}</pre>
              <button type="button" class="secondary" onClick={() => checkHead(h)}>
                Check its signature here
              </button>
              <p aria-live="polite" data-testid="head-check">
                {headCheck}
              </p>
            </>
          )}
        </Loaded>
      </section>

      <section class="card" aria-labelledby="h-pin">
        <h2 id="h-pin">Pin the log key</h2>
        <p>
          Inclusion proofs on an event's detail are checked in this browser against a signed checkpoint. Pin the log's verifier key (obtained out of band) so a
          checkpoint signed by any other key is refused. The key is public; it is kept in this browser's storage.
        </p>
        <form onSubmit={pin}>
          <label for="vkey">Verifier key</label>
          <input id="vkey" name="vkey" class="mono" defaultValue={pinned} placeholder="origin+keyid+base64" />
          <button type="submit">Save</button>
        </form>
        <p role="status">{pinMsg}</p>
      </section>
    </>
  );
}
