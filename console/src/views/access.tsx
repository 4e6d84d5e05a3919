import { get, type AccessReport, type StaleItem } from '../api';
import { Badge, fmtAge, fmtTime, href, Loaded, useLoad, type Route } from '../ui';

const TABS = [
  { id: 'secrets', label: 'By secret' },
  { id: 'clients', label: 'By client' },
  { id: 'stale', label: 'Stale access' },
];

function LastRead(props: { at: string | null; version?: number | null }) {
  if (!props.at) return <Badge kind="warn">never read</Badge>;
  return (
    <span title={fmtTime(props.at)}>
      {fmtAge(props.at)}
      {props.version ? <span class="muted"> (v{props.version})</span> : null}
    </span>
  );
}

export function Access(props: { route: Route }) {
  const tab = TABS.find((t) => t.id === props.route.query.get('tab'))?.id ?? 'secrets';
  const days = Math.min(3650, Math.max(1, Number(props.route.query.get('days')) || 30));
  const report = useLoad(() => get<AccessReport>('/v1/reports/access'), []);
  const stale = useLoad(() => (tab === 'stale' ? get<{ days: number; items: StaleItem[] }>('/v1/reports/stale-access', { days }) : Promise.resolve(undefined)), [tab, days]);

  return (
    <>
      <h1>Who can read what</h1>
      <nav aria-label="Access views" class="tabs">
        <ul>
          {TABS.map((t) => (
            <li>
              <a href={href('access', { tab: t.id })} aria-current={t.id === tab ? 'page' : undefined}>
                {t.label}
              </a>
            </li>
          ))}
        </ul>
      </nav>

      {tab === 'secrets' && (
        <Loaded state={report}>
          {(r) => {
            const bySecret = new Map<string, Array<{ client: string; enabled: boolean; groups: string[]; lastReadAt: string | null; lastReadVersion: number | null }>>();
            for (const s of r.secrets) bySecret.set(s.name, []);
            for (const c of r.clients)
              for (const s of c.secrets) {
                if (!bySecret.has(s.name)) bySecret.set(s.name, []);
                bySecret.get(s.name)!.push({ client: c.name, enabled: c.enabled, groups: s.groups, lastReadAt: s.lastReadAt, lastReadVersion: s.lastReadVersion });
              }
            const names = [...bySecret.keys()].sort();
            if (names.length === 0) return <p class="muted">No secrets.</p>;
            return (
              <div data-testid="access-secrets">
                {names.map((name) => {
                  const rows = bySecret.get(name)!;
                  return (
                    <section class="card" aria-labelledby={`s-${name}`}>
                      <h2 id={`s-${name}`}>
                        <span class="mono">{name}</span>{' '}
                        <a class="small" href={href('audit', { resourceKind: 'secret', resource: name })}>
                          all events for this secret
                        </a>
                      </h2>
                      {rows.length === 0 ? (
                        <p class="muted">No client can read it.</p>
                      ) : (
                        <table>
                          <thead>
                            <tr>
                              <th scope="col">Client</th>
                              <th scope="col">Through groups</th>
                              <th scope="col">Last read</th>
                              <th scope="col">Audit</th>
                            </tr>
                          </thead>
                          <tbody>
                            {rows.map((row) => (
                              <tr>
                                <th scope="row">
                                  {row.client} {!row.enabled && <Badge kind="deny">disabled</Badge>}
                                </th>
                                <td>{row.groups.join(', ')}</td>
                                <td>
                                  <LastRead at={row.lastReadAt} version={row.lastReadVersion} />
                                </td>
                                <td>
                                  <a href={href('audit', { action: 'secret.read', resource: name, actor: row.client })}>reads</a>
                                  {' · '}
                                  <a href={href('audit', { resourceKind: 'group', resource: row.groups[0] })}>grant changes</a>
                                </td>
                              </tr>
                            ))}
                          </tbody>
                        </table>
                      )}
                    </section>
                  );
                })}
              </div>
            );
          }}
        </Loaded>
      )}

      {tab === 'clients' && (
        <Loaded state={report}>
          {(r) =>
            r.clients.length === 0 ? (
              <p class="muted">No clients.</p>
            ) : (
              <div data-testid="access-clients">
                {r.clients.map((c) => (
                  <section class="card" aria-labelledby={`c-${c.name}`}>
                    <h2 id={`c-${c.name}`}>
                      {c.name} {!c.enabled && <Badge kind="deny">disabled</Badge>}{' '}
                      <a class="small" href={href('audit', { actor: c.name })}>
                        events by this client
                      </a>
                    </h2>
                    {c.secrets.length === 0 ? (
                      <p class="muted">Can read no secret.</p>
                    ) : (
                      <table>
                        <thead>
                          <tr>
                            <th scope="col">Secret</th>
                            <th scope="col">Through groups</th>
                            <th scope="col">Last read</th>
                            <th scope="col">Audit</th>
                          </tr>
                        </thead>
                        <tbody>
                          {c.secrets.map((s) => (
                            <tr>
                              <th scope="row" class="mono">
                                {s.name}
                              </th>
                              <td>{s.groups.join(', ')}</td>
                              <td>
                                <LastRead at={s.lastReadAt} version={s.lastReadVersion} />
                              </td>
                              <td>
                                <a href={href('audit', { action: 'secret.read', resource: s.name, actor: c.name })}>reads</a>
                              </td>
                            </tr>
                          ))}
                        </tbody>
                      </table>
                    )}
                  </section>
                ))}
              </div>
            )
          }
        </Loaded>
      )}

      {tab === 'stale' && (
        <section class="card" aria-labelledby="h-stale">
          <h2 id="h-stale">Granted but not read for {days} days, or never</h2>
          <form
            class="inline"
            onSubmit={(e) => {
              e.preventDefault();
              const d = new FormData(e.currentTarget as HTMLFormElement).get('days');
              location.hash = href('access', { tab: 'stale', days: String(d) });
            }}
          >
            <label>
              Days without a read <input name="days" type="number" min={1} max={3650} defaultValue={String(days)} />
            </label>
            <button type="submit">Show</button>
          </form>
          <Loaded state={stale}>
            {(s) =>
              !s || s.items.length === 0 ? (
                <p class="muted">No stale access.</p>
              ) : (
                <table data-testid="stale">
                  <thead>
                    <tr>
                      <th scope="col">Client</th>
                      <th scope="col">Secret</th>
                      <th scope="col">Group</th>
                      <th scope="col">Last read</th>
                      <th scope="col">Audit</th>
                    </tr>
                  </thead>
                  <tbody>
                    {s.items.map((i) => (
                      <tr>
                        <th scope="row">
                          {i.client} {!i.clientEnabled && <Badge kind="deny">disabled</Badge>}
                        </th>
                        <td class="mono">{i.secret}</td>
                        <td>{i.group}</td>
                        <td>
                          <LastRead at={i.lastReadAt} version={i.lastReadVersion} />
                        </td>
                        <td>
                          <a href={href('audit', { action: 'secret.read', resource: i.secret, actor: i.client })}>reads</a>
                          {' · '}
                          <a href={href('audit', { resourceKind: 'group', resource: i.group })}>grant</a>
                        </td>
                      </tr>
                    ))}
                  </tbody>
                </table>
              )
            }
          </Loaded>
        </section>
      )}
    </>
  );
}
