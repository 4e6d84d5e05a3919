import { useEffect, useRef, useState } from 'preact/hooks';
import { get, qs, request, type AuditEvent, type Page } from '../api';
import { InclusionCheck } from '../inclusion';
import { download, fmtTime, href, Json, Outcome, type Route } from '../ui';

const FILTERS = ['actor', 'actorKind', 'action', 'resourceKind', 'resource', 'outcome', 'sourceIp', 'since', 'until'] as const;
type Filter = Partial<Record<(typeof FILTERS)[number], string>>;

const ACTIONS = ['secret.read', 'secret.*', 'auth.token.issue', 'auth.failure', 'authz.deny', 'image.sign', 'release.decide', 'policy.*', 'signingkey.*', 'trustedissuer.*', 'client.*', 'apikey.*', 'console.*', 'audit.*'];
const KINDS = ['secret', 'client', 'group', 'image', 'trust-policy', 'signing-key', 'trusted-issuer', 'api-key', 'audit-log'];
const PAGE = 25;

function filterFrom(q: URLSearchParams): Filter {
  const f: Filter = {};
  for (const k of FILTERS) {
    const v = q.get(k);
    if (v) f[k] = v;
  }
  return f;
}

/** datetime-local (the browser's local time) <-> ISO instant. */
const toLocalInput = (iso?: string) => {
  if (!iso) return '';
  const d = new Date(iso);
  if (Number.isNaN(d.getTime())) return '';
  return new Date(d.getTime() - d.getTimezoneOffset() * 60_000).toISOString().slice(0, 16);
};
const fromLocalInput = (v: string) => (v ? new Date(v).toISOString() : '');

export function actorLabel(e: AuditEvent): string {
  return `${e.actorKind}${e.actorName ? ' ' + e.actorName : e.actorId ? ' ' + e.actorId : ''}`;
}

export function AuditExplorer(props: { route: Route }) {
  const filter = filterFrom(props.route.query);
  const key = JSON.stringify(filter);
  const [cursors, setCursors] = useState<Array<string | undefined>>([undefined]);
  const [page, setPage] = useState<{ data?: Page<AuditEvent>; error?: string; loading: boolean }>({ loading: true });
  const [selected, setSelected] = useState<AuditEvent | null>(null);
  const [exporting, setExporting] = useState('');
  const detail = useRef<HTMLElement>(null);
  const cursor = cursors[cursors.length - 1];

  useEffect(() => {
    setCursors([undefined]);
    setSelected(null);
  }, [key]);

  useEffect(() => {
    let live = true;
    setPage((p) => ({ data: p.data, loading: true }));
    get<Page<AuditEvent>>('/v1/audit', { ...filter, limit: PAGE, cursor }).then(
      (data) => live && setPage({ data, loading: false }),
      (err: Error) => live && setPage({ error: err.message, loading: false }),
    );
    return () => {
      live = false;
    };
    // eslint-disable-next-line react-hooks/exhaustive-deps
  }, [key, cursor]);

  useEffect(() => {
    if (selected) detail.current?.focus();
  }, [selected]);

  // #/audit?...&event=N (links from other views) opens that event's detail when it is on the page
  const wanted = Number(props.route.query.get('event'));
  useEffect(() => {
    if (!wanted) return;
    const hit = page.data?.items.find((e) => e.seq === wanted);
    if (hit) setSelected(hit);
  }, [page.data, wanted]);

  function apply(e: Event) {
    e.preventDefault();
    const form = new FormData(e.currentTarget as HTMLFormElement);
    const next: Record<string, string> = {};
    for (const k of FILTERS) {
      const v = String(form.get(k) ?? '').trim();
      if (v) next[k] = k === 'since' || k === 'until' ? fromLocalInput(v) : v;
    }
    location.hash = href('audit', next);
  }

  async function exportAs(format: 'ndjson' | 'csv') {
    setExporting(`Preparing ${format.toUpperCase()}…`);
    try {
      const res = await request('GET', '/v1/reports/audit-events' + qs({ ...filter, format }), undefined, format === 'csv' ? 'text/csv' : 'application/x-ndjson');
      const text = await res.text();
      const name = /filename="?([^";]+)"?/.exec(res.headers.get('content-disposition') ?? '')?.[1] ?? `keywarden-audit-events.${format}`;
      download(name, format === 'csv' ? 'text/csv' : 'application/x-ndjson', text);
      const lines = text.split('\n').filter(Boolean).length - (format === 'csv' ? 1 : 0);
      setExporting(`Exported ${lines} events as ${name}.`);
    } catch (err) {
      setExporting(`Export failed: ${(err as Error).message}`);
    }
  }

  const items = page.data?.items ?? [];
  return (
    <>
      <h1>Audit explorer</h1>
      <form class="filters card" onSubmit={apply} aria-label="Filter audit events" key={key}>
        <div class="grid">
          <label>
            Actor (name or id)
            <input name="actor" defaultValue={filter.actor} />
          </label>
          <label>
            Actor kind
            <select name="actorKind" defaultValue={filter.actorKind ?? ''}>
              <option value="">any</option>
              {['operator', 'client', 'ci', 'system', 'anonymous', 'unknown'].map((k) => (
                <option value={k}>{k}</option>
              ))}
            </select>
          </label>
          <label>
            Action
            <input name="action" list="actions" defaultValue={filter.action} placeholder="secret.read or secret.*" />
            <datalist id="actions">
              {ACTIONS.map((a) => (
                <option value={a} />
              ))}
            </datalist>
          </label>
          <label>
            Target kind
            <select name="resourceKind" defaultValue={filter.resourceKind ?? ''}>
              <option value="">any</option>
              {KINDS.map((k) => (
                <option value={k}>{k}</option>
              ))}
            </select>
          </label>
          <label>
            Target name
            <input name="resource" defaultValue={filter.resource} />
          </label>
          <label>
            Outcome
            <select name="outcome" defaultValue={filter.outcome ?? ''}>
              <option value="">any</option>
              <option value="allow">allow</option>
              <option value="deny">deny</option>
              <option value="error">error</option>
            </select>
          </label>
          <label>
            Source address
            <input name="sourceIp" defaultValue={filter.sourceIp} placeholder="10.0.0.7 or 10.0.*" />
          </label>
          <label>
            From (local time)
            <input name="since" type="datetime-local" defaultValue={toLocalInput(filter.since)} />
          </label>
          <label>
            Until (local time)
            <input name="until" type="datetime-local" defaultValue={toLocalInput(filter.until)} />
          </label>
        </div>
        <div class="actions">
          <button type="submit">Apply filters</button>
          <a href={href('audit')} class="button secondary">
            Clear
          </a>
          <span class="spacer" />
          <button type="button" class="secondary" onClick={() => exportAs('ndjson')}>
            Export NDJSON
          </button>
          <button type="button" class="secondary" onClick={() => exportAs('csv')}>
            Export CSV
          </button>
        </div>
        <p role="status" class="muted" data-testid="export-status">
          {exporting}
        </p>
      </form>

      <section aria-labelledby="h-events">
        <h2 id="h-events">
          Events <span class="muted">(newest first{cursors.length > 1 ? `, page ${cursors.length}` : ''})</span>
        </h2>
        {page.error && (
          <p class="error" role="alert">
            Could not load: {page.error}
          </p>
        )}
        {!page.error && items.length === 0 && !page.loading && <p class="muted">No events match.</p>}
        {items.length > 0 && (
          <div class="scroll">
            <table data-testid="events" aria-busy={page.loading}>
              <thead>
                <tr>
                  <th scope="col">#</th>
                  <th scope="col">Time</th>
                  <th scope="col">Actor</th>
                  <th scope="col">Action</th>
                  <th scope="col">Target</th>
                  <th scope="col">Outcome</th>
                  <th scope="col">Source</th>
                  <th scope="col">
                    <span class="sr-only">Details</span>
                  </th>
                </tr>
              </thead>
              <tbody>
                {items.map((e) => (
                  <tr data-seq={e.seq} class={selected?.seq === e.seq ? 'selected' : ''}>
                    <td>{e.seq}</td>
                    <td class="nowrap">{fmtTime(e.ts)}</td>
                    <td>{actorLabel(e)}</td>
                    <td class="mono">{e.action}</td>
                    <td>{e.resourceKind ? `${e.resourceKind} ${e.resourceName ?? ''}` : '—'}</td>
                    <td>
                      <Outcome value={e.outcome} />
                    </td>
                    <td class="mono">{e.sourceIp ?? '—'}</td>
                    <td>
                      <button type="button" class="link" onClick={() => setSelected(e)} aria-label={`Details of event ${e.seq}`}>
                        Details
                      </button>
                    </td>
                  </tr>
                ))}
              </tbody>
            </table>
          </div>
        )}
        <nav class="pager" aria-label="Pages">
          <button type="button" class="secondary" disabled={cursors.length < 2} onClick={() => setCursors((c) => c.slice(0, -1))}>
            Previous page
          </button>
          <button type="button" class="secondary" disabled={!page.data?.nextCursor} onClick={() => setCursors((c) => [...c, page.data!.nextCursor!])}>
            Next page
          </button>
        </nav>
      </section>

      {selected && (
        <section class="card detail" aria-labelledby="h-detail" ref={detail} tabIndex={-1} data-testid="event-detail">
          <h2 id="h-detail">Event #{selected.seq}</h2>
          <dl class="facts">
            <dt>Event number</dt>
            <dd>{selected.seq}</dd>
            <dt>Leaf index</dt>
            <dd>{selected.leafIndex ?? 'queued'}</dd>
            <dt>Time</dt>
            <dd>
              {fmtTime(selected.ts)} <span class="muted">({selected.ts} ms)</span>
            </dd>
            <dt>Actor</dt>
            <dd>
              {selected.actorKind} {selected.actorName ?? ''} <span class="mono muted">{selected.actorId ?? ''}</span>
            </dd>
            <dt>Action</dt>
            <dd class="mono">{selected.action}</dd>
            <dt>Target</dt>
            <dd>
              {selected.resourceKind ?? '—'} {selected.resourceName ?? ''}
            </dd>
            <dt>Outcome</dt>
            <dd>
              <Outcome value={selected.outcome} />
            </dd>
            <dt>Reason</dt>
            <dd>{selected.reason ?? '—'}</dd>
            <dt>Request id</dt>
            <dd class="mono">{selected.requestId ?? '—'}</dd>
            <dt>Source address</dt>
            <dd class="mono">{selected.sourceIp ?? '—'}</dd>
            <dt>User agent</dt>
            <dd class="mono">{selected.userAgent ?? '—'}</dd>
            {selected.prevHash && (
              <>
                <dt>Chain link (before the tree)</dt>
                <dd class="mono">
                  {selected.prevHash} → {selected.hash}
                </dd>
              </>
            )}
            <dt>Details</dt>
            <dd>
              <Json value={selected.details} />
            </dd>
          </dl>
          <p class="muted">The audit log records names, ids, versions and hashes; it never holds a secret value, key or token.</p>
          <InclusionCheck event={selected} key={selected.seq} />
          <p>
            <button type="button" class="secondary" onClick={() => setSelected(null)}>
              Close details
            </button>
          </p>
        </section>
      )}
    </>
  );
}
