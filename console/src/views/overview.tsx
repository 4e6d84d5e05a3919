import { useState } from 'preact/hooks';
import { get, type Activity, type AuditEvent, type ExpiringItem, type Page, type TreeHead } from '../api';
import { Badge, BarChart, fmtAge, fmtTime, href, Loaded, useLoad } from '../ui';

const WINDOWS = [
  { id: 'hour', label: 'Last hour' },
  { id: 'day', label: 'Last day' },
  { id: '30d', label: 'Last 30 days' },
];

const SERIES: Array<{ key: keyof Activity['series']; title: string; kind: string }> = [
  { key: 'secretReads', title: 'Secret reads', kind: 'reads' },
  { key: 'denials', title: 'Denials', kind: 'denials' },
  { key: 'tokenIssuances', title: 'Token issuances', kind: 'tokens' },
  { key: 'signatures', title: 'Signatures', kind: 'signatures' },
  { key: 'releasesAllow', title: 'Releases allowed', kind: 'allow' },
  { key: 'releasesWarn', title: 'Releases warned', kind: 'warn' },
  { key: 'releasesDeny', title: 'Releases denied', kind: 'deny' },
];

/** GET /v1/audit/status: this instance's background verification, the queue and the file sink. */
interface AuditStatus {
  chain: { status: string; reason: string | null; firstBadLeaf: number | null; detectedAt: string | null };
  queued: number;
  sink: { configured: boolean; status: string; lastWriteAt: string | null; lastError: string | null };
}

interface Health {
  ready: { status: string; checks: Record<string, string> } | null;
  status: AuditStatus | null;
  head: TreeHead | null;
  newest: AuditEvent | null;
}

async function loadHealth(): Promise<Health> {
  const [ready, status, head, newest] = await Promise.all([
    fetch('/readyz', { headers: { Accept: 'application/json' }, cache: 'no-store' })
      .then((r) => r.json())
      .catch(() => null),
    get<AuditStatus>('/v1/audit/status').catch(() => null),
    get<TreeHead>('/v1/audit/checkpoint').catch(() => null),
    get<Page<AuditEvent>>('/v1/audit', { limit: 1 }).then((p) => p.items[0] ?? null),
  ]);
  return { ready, status, head, newest };
}

const SINK_KIND: Record<string, string> = { ok: 'allow', idle: 'warn', off: 'warn', failing: 'deny' };

export function Overview() {
  const [win, setWin] = useState('day');
  const health = useLoad(loadHealth, []);
  const activity = useLoad(() => get<Activity>('/v1/reports/activity', { window: win }), [win]);
  const soon = new Date(Date.now() + 30 * 86400_000).toISOString();
  const expiring = useLoad(() => get<{ items: ExpiringItem[] }>('/v1/reports/expiring', { before: soon }), []);

  return (
    <>
      <h1>Overview</h1>
      <section aria-labelledby="h-health" class="card">
        <h2 id="h-health">Audit log health</h2>
        <Loaded state={health}>
          {(h) => {
            const chain = h.status?.chain.status ?? h.ready?.checks?.auditChain ?? 'unknown';
            const age = h.head ? Date.now() - new Date(h.head.time).getTime() : Infinity;
            const writing = h.newest ? (h.newest.leafIndex !== null ? 'sequenced' : 'queued') : 'empty';
            return (
              <dl class="facts" data-testid="health">
                <dt>Verification</dt>
                <dd data-testid="chain-status">
                  <Badge kind={chain === 'ok' ? 'allow' : chain === 'pending' ? 'warn' : 'deny'}>{chain}</Badge>{' '}
                  {h.status?.chain.status === 'broken' ? (
                    <span class="error">
                      {h.status.chain.reason}
                      {h.status.chain.firstBadLeaf !== null ? ` (first bad leaf ${h.status.chain.firstBadLeaf})` : ''}
                    </span>
                  ) : (
                    <span class="muted">background verification of the tree and its signed heads</span>
                  )}
                </dd>
                <dt>Latest signed checkpoint</dt>
                <dd data-testid="checkpoint">
                  {h.head ? (
                    <>
                      tree size <strong>{h.head.treeSize}</strong>, signed {fmtTime(h.head.time)} (
                      <span class={age > 3600_000 ? 'warn-text' : ''}>{fmtAge(h.head.time)}</span>), key {h.head.origin}+{h.head.keyId}
                    </>
                  ) : (
                    'none yet'
                  )}
                </dd>
                <dt>Audit sink</dt>
                <dd data-testid="sink">
                  {h.ready?.checks?.database === 'ok' ? <Badge kind="allow">database writable</Badge> : <Badge kind="deny">database {h.ready?.checks?.database ?? 'unknown'}</Badge>}{' '}
                  {h.status && (
                    <>
                      <Badge kind={SINK_KIND[h.status.sink.status] ?? 'warn'}>file sink {h.status.sink.status}</Badge>{' '}
                      {h.status.sink.lastWriteAt && <span class="muted">last write {fmtAge(h.status.sink.lastWriteAt)}; </span>}
                      {h.status.sink.lastError && <span class="error">{h.status.sink.lastError}; </span>}
                      <span class="muted">{h.status.queued} queued for the tree; </span>
                    </>
                  )}
                  {h.newest ? (
                    <span class="muted">
                      newest event #{h.newest.seq} {fmtAge(h.newest.ts)}, {writing}
                    </span>
                  ) : null}
                  {h.ready?.checks?.storage === 'full' && <Badge kind="deny">storage full</Badge>}
                </dd>
              </dl>
            );
          }}
        </Loaded>
        <p>
          <a href={href('verify')}>Verify the whole log now</a>
        </p>
      </section>

      <section aria-labelledby="h-activity" class="card">
        <h2 id="h-activity">Activity</h2>
        <fieldset class="segmented">
          <legend>Time window</legend>
          {WINDOWS.map((w) => (
            <label>
              <input type="radio" name="window" value={w.id} checked={win === w.id} onChange={() => setWin(w.id)} />
              {w.label}
            </label>
          ))}
        </fieldset>
        <Loaded state={activity}>
          {(a) => (
            <div class="charts" data-testid="charts">
              {SERIES.map((s) => (
                <BarChart title={s.title} kind={s.kind} values={a.series[s.key] ?? []} bucketSeconds={a.bucketSeconds} from={a.from} />
              ))}
            </div>
          )}
        </Loaded>
      </section>

      <section aria-labelledby="h-expiring" class="card">
        <h2 id="h-expiring">Secrets expiring within 30 days</h2>
        <Loaded state={expiring}>
          {(e) =>
            e.items.length === 0 ? (
              <p class="muted">None.</p>
            ) : (
              <table data-testid="expiring">
                <thead>
                  <tr>
                    <th scope="col">Secret</th>
                    <th scope="col">Expiry</th>
                    <th scope="col">Version</th>
                    <th scope="col">Audit</th>
                  </tr>
                </thead>
                <tbody>
                  {e.items.map((s) => (
                    <tr>
                      <th scope="row">{s.name}</th>
                      <td>
                        {s.expired ? <Badge kind="deny">expired</Badge> : null} {fmtTime(s.expiry)} ({fmtAge(s.expiry)})
                      </td>
                      <td>{s.version}</td>
                      <td>
                        <a href={href('audit', { resourceKind: 'secret', resource: s.name })}>events</a>
                      </td>
                    </tr>
                  ))}
                </tbody>
              </table>
            )
          }
        </Loaded>
      </section>
    </>
  );
}
