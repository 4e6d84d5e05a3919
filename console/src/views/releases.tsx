import { useEffect, useState } from 'preact/hooks';
import { get, type Page, type ReleaseDecision } from '../api';
import { Badge, fmtTime, href, Loaded, Outcome, useLoad, type Route } from '../ui';

function Detail(props: { id: string }) {
  const d = useLoad(() => get<ReleaseDecision>(`/v1/releases/${encodeURIComponent(props.id)}`), [props.id]);
  return (
    <Loaded state={d}>
      {(r) => (
        <section class="card detail" aria-labelledby="h-release" data-testid="release-detail">
          <h2 id="h-release">
            Decision <Outcome value={r.decision} /> for <span class="mono">{r.image}</span>
          </h2>
          <dl class="facts">
            <dt>Decision id</dt>
            <dd class="mono">{r.id}</dd>
            <dt>Digest</dt>
            <dd class="mono">{r.digest ?? 'not resolved'}</dd>
            <dt>Policy</dt>
            <dd>{r.policy ? `${r.policy} (version ${r.policyVersion})` : 'no matching policy (the gate default applied)'}</dd>
            <dt>Decided</dt>
            <dd>
              {fmtTime(r.decidedAt)} by {r.decidedBy}
              {r.cached && <span class="muted"> (cached from {r.cachedFrom})</span>}
            </dd>
            <dt>Valid until</dt>
            <dd>{fmtTime(r.validUntil)}</dd>
          </dl>
          <h3>Checks</h3>
          {r.checks.length === 0 ? (
            <p class="muted">No checks ran.</p>
          ) : (
            <table data-testid="checks">
              <thead>
                <tr>
                  <th scope="col">Check</th>
                  <th scope="col">Result</th>
                  <th scope="col">Reason</th>
                  <th scope="col">Code</th>
                </tr>
              </thead>
              <tbody>
                {r.checks.map((c) => (
                  <tr>
                    <th scope="row">{c.type}</th>
                    <td>{c.ok ? <Badge kind="allow">passed</Badge> : <Badge kind="deny">failed</Badge>}</td>
                    <td>{c.detail}</td>
                    <td class="mono">{c.code ?? ''}</td>
                  </tr>
                ))}
              </tbody>
            </table>
          )}
          <p>
            <a href={href('audit', { action: 'release.decide', resource: r.image })}>Audit events for this image</a>
            {' · '}
            <a href={href('releases')}>Back to the list</a>
          </p>
        </section>
      )}
    </Loaded>
  );
}

export function Releases(props: { route: Route }) {
  const q = props.route.query;
  const filter = { image: q.get('image') ?? '', policy: q.get('policy') ?? '', decision: q.get('decision') ?? '' };
  const key = JSON.stringify(filter);
  const [cursors, setCursors] = useState<Array<string | undefined>>([undefined]);
  useEffect(() => setCursors([undefined]), [key]);
  const cursor = cursors[cursors.length - 1];
  const list = useLoad(() => get<Page<ReleaseDecision>>('/v1/releases', { ...filter, limit: 25, cursor }), [key, cursor]);

  if (props.route.sub) return <><h1>Release decisions</h1><Detail id={props.route.sub} /></>;

  return (
    <>
      <h1>Release decisions</h1>
      <form
        class="filters card"
        key={key}
        aria-label="Filter release decisions"
        onSubmit={(e) => {
          e.preventDefault();
          const f = new FormData(e.currentTarget as HTMLFormElement);
          location.hash = href('releases', { image: String(f.get('image') ?? '').trim(), policy: String(f.get('policy') ?? '').trim(), decision: String(f.get('decision') ?? '') });
        }}
      >
        <div class="grid">
          <label>
            Image (exact reference)
            <input name="image" defaultValue={filter.image} />
          </label>
          <label>
            Policy
            <input name="policy" defaultValue={filter.policy} />
          </label>
          <label>
            Decision
            <select name="decision" defaultValue={filter.decision}>
              <option value="">any</option>
              <option value="allow">allow</option>
              <option value="warn">warn</option>
              <option value="deny">deny</option>
            </select>
          </label>
        </div>
        <div class="actions">
          <button type="submit">Apply filters</button>
          <a class="button secondary" href={href('releases')}>
            Clear
          </a>
        </div>
      </form>
      <Loaded state={list}>
        {(p) =>
          p.items.length === 0 ? (
            <p class="muted">No decisions match.</p>
          ) : (
            <div class="scroll">
              <table data-testid="releases">
                <thead>
                  <tr>
                    <th scope="col">Decided</th>
                    <th scope="col">Decision</th>
                    <th scope="col">Image</th>
                    <th scope="col">Policy</th>
                    <th scope="col">Failed checks</th>
                    <th scope="col">By</th>
                  </tr>
                </thead>
                <tbody>
                  {p.items.map((r) => (
                    <tr>
                      <td class="nowrap">
                        <a href={href('releases', undefined, r.id)}>{fmtTime(r.decidedAt)}</a>
                      </td>
                      <td>
                        <Outcome value={r.decision} />
                      </td>
                      <td class="mono">{r.image}</td>
                      <td>{r.policy ? `${r.policy} v${r.policyVersion}` : '—'}</td>
                      <td>{r.checks.filter((c) => !c.ok).map((c) => c.type).join(', ') || '—'}</td>
                      <td>{r.decidedBy}</td>
                    </tr>
                  ))}
                </tbody>
              </table>
            </div>
          )
        }
      </Loaded>
      <nav class="pager" aria-label="Pages">
        <button type="button" class="secondary" disabled={cursors.length < 2} onClick={() => setCursors((c) => c.slice(0, -1))}>
          Previous page
        </button>
        <button type="button" class="secondary" disabled={!list.data?.nextCursor} onClick={() => setCursors((c) => [...c, list.data!.nextCursor!])}>
          Next page
        </button>
      </nav>
    </>
  );
}
