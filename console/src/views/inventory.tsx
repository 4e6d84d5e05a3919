import { get, type AuditEvent, type Client, type Page, type SigningKey, type TrustedIssuer, type TrustPolicy, type TrustPolicyVersion } from '../api';
import { Badge, fmtAge, fmtTime, href, Json, Loaded, Outcome, useLoad, type Route } from '../ui';
import { actorLabel } from './audit';

const TABS = [
  { id: 'policies', label: 'Trust policies', kind: 'trust-policy' },
  { id: 'keys', label: 'Signing keys', kind: 'signing-key' },
  { id: 'issuers', label: 'Trusted CI issuers', kind: 'trusted-issuer' },
  { id: 'clients', label: 'Clients', kind: 'client' },
];

/** Who changed a resource and when: its audit events (changes, not reads), oldest first. */
function History(props: { kind: string; name: string }) {
  const events = useLoad(
    () => get<Page<AuditEvent>>('/v1/audit', { resourceKind: props.kind, resource: props.name, order: 'asc', limit: 200 }),
    [props.kind, props.name],
  );
  return (
    <section aria-labelledby="h-history">
      <h3 id="h-history">History: who changed it, and when</h3>
      <Loaded state={events}>
        {(p) => {
          const changes = p.items.filter((e) => !/\.(read|list|sign|decide)$/.test(e.action) && e.action !== 'auth.token.issue');
          return changes.length === 0 ? (
            <p class="muted">No recorded changes.</p>
          ) : (
            <table data-testid="history">
              <thead>
                <tr>
                  <th scope="col">When</th>
                  <th scope="col">Who</th>
                  <th scope="col">Change</th>
                  <th scope="col">Outcome</th>
                  <th scope="col">Version</th>
                  <th scope="col">Event</th>
                </tr>
              </thead>
              <tbody>
                {changes.map((e) => (
                  <tr>
                    <td class="nowrap">{fmtTime(e.ts)}</td>
                    <td>{actorLabel(e)}</td>
                    <td class="mono">{e.action}</td>
                    <td>
                      <Outcome value={e.outcome} />
                    </td>
                    <td>{typeof e.details?.version === 'number' ? e.details.version : ''}</td>
                    <td>
                      <a href={href('audit', { resourceKind: props.kind, resource: props.name, until: new Date(e.ts + 1).toISOString(), event: e.seq })} aria-label={`Event ${e.seq}`}>
                        #{e.seq}
                      </a>
                    </td>
                  </tr>
                ))}
              </tbody>
            </table>
          );
        }}
      </Loaded>
      <p>
        <a href={href('audit', { resourceKind: props.kind, resource: props.name })}>All audit events for {props.name}</a>
      </p>
    </section>
  );
}

/** Every stored version of a policy, newest first, each document behind a disclosure. */
function PolicyVersions(props: { name: string }) {
  const v = useLoad(() => get<{ items: TrustPolicyVersion[] }>(`/v1/policies/${encodeURIComponent(props.name)}/versions`), [props.name]);
  return (
    <section aria-labelledby="h-versions">
      <h3 id="h-versions">Versions</h3>
      <Loaded state={v}>
        {(x) =>
          x.items.length === 0 ? (
            <p class="muted">No recorded versions.</p>
          ) : (
            <ul class="versions" data-testid="policy-versions">
              {x.items.map((item) => (
                <li data-version={item.version}>
                  <details>
                    <summary>
                      Version {item.version}: {item.change} by {item.updatedBy}, {fmtTime(item.at)}
                    </summary>
                    {item.document ? <Json value={item.document} /> : <p class="muted">Deleted: this version has no document.</p>}
                  </details>
                </li>
              ))}
            </ul>
          )
        }
      </Loaded>
    </section>
  );
}

function PolicyDetail(props: { name: string }) {
  const p = useLoad(() => get<TrustPolicy>(`/v1/policies/${encodeURIComponent(props.name)}`), [props.name]);
  return (
    <Loaded state={p}>
      {(x) => (
        <>
          <dl class="facts">
            <dt>Version</dt>
            <dd>{x.version}</dd>
            <dt>Last changed</dt>
            <dd>
              {fmtTime(x.updatedAt)} by {x.updatedBy}
            </dd>
            <dt>Created</dt>
            <dd>{fmtTime(x.createdAt)}</dd>
          </dl>
          <h3>Current document</h3>
          <Json value={x.document} />
        </>
      )}
    </Loaded>
  );
}

function KeyDetail(props: { name: string }) {
  const k = useLoad(() => get<SigningKey>(`/v1/signing-keys/${encodeURIComponent(props.name)}`), [props.name]);
  return (
    <Loaded state={k}>
      {(x) => (
        <>
          <dl class="facts">
            <dt>Status</dt>
            <dd>
              <Badge kind={x.status === 'active' ? 'allow' : 'deny'}>{x.status}</Badge>
            </dd>
            <dt>Algorithm</dt>
            <dd>{x.algorithm}</dd>
            <dt>Created</dt>
            <dd>
              {fmtTime(x.createdAt)} by {x.createdBy}
            </dd>
          </dl>
          <h3>Versions</h3>
          <table>
            <thead>
              <tr>
                <th scope="col">Version</th>
                <th scope="col">Key id (SHA-256 of the public key)</th>
                <th scope="col">Created</th>
              </tr>
            </thead>
            <tbody>
              {x.versions.map((v) => (
                <tr>
                  <td>
                    {v.version} {v.version === x.currentVersion && <Badge kind="allow">current</Badge>}
                  </td>
                  <td class="mono">{v.keyId}</td>
                  <td>{fmtTime(v.createdAt)}</td>
                </tr>
              ))}
            </tbody>
          </table>
        </>
      )}
    </Loaded>
  );
}

function IssuerDetail(props: { name: string }) {
  const i = useLoad(() => get<TrustedIssuer>(`/v1/trusted-issuers/${encodeURIComponent(props.name)}`), [props.name]);
  return (
    <Loaded state={i}>
      {(x) => (
        <dl class="facts">
          <dt>Issuer</dt>
          <dd class="mono">{x.issuer}</dd>
          <dt>Audience</dt>
          <dd class="mono">{x.audience}</dd>
          <dt>Enabled</dt>
          <dd>{x.enabled ? <Badge kind="allow">enabled</Badge> : <Badge kind="deny">disabled</Badge>}</dd>
          <dt>Claim rules</dt>
          <dd>
            <Json value={x.claims} />
          </dd>
          <dt>May sign with keys</dt>
          <dd>{x.keys.join(', ')}</dd>
          <dt>For images</dt>
          <dd class="mono">{x.images.join(', ')}</dd>
          <dt>Signer token lifetime</dt>
          <dd>{x.tokenTtl} s</dd>
          {x.problems.length > 0 && (
            <>
              <dt>Problems</dt>
              <dd class="error">{x.problems.join('; ')}</dd>
            </>
          )}
          <dt>Last changed</dt>
          <dd>{fmtTime(x.updatedAt)}</dd>
        </dl>
      )}
    </Loaded>
  );
}

function ClientDetail(props: { name: string }) {
  const c = useLoad(() => get<Client>(`/v1/clients/${encodeURIComponent(props.name)}`), [props.name]);
  return (
    <Loaded state={c}>
      {(x) => (
        <dl class="facts">
          <dt>Client id</dt>
          <dd class="mono">{x.clientId}</dd>
          <dt>Enabled</dt>
          <dd>{x.enabled ? <Badge kind="allow">enabled</Badge> : <Badge kind="deny">disabled</Badge>}</dd>
          <dt>Groups</dt>
          <dd>{(x.groups ?? []).join(', ') || '—'}</dd>
          <dt>Description</dt>
          <dd>{x.description || '—'}</dd>
          <dt>May ask the release gate</dt>
          <dd>{x.releaseGate ? 'yes' : 'no'}</dd>
          <dt>Acts for</dt>
          <dd>{x.actsFor.join(', ') || '—'}</dd>
          <dt>Created</dt>
          <dd>
            {fmtTime(x.createdAt)} by {x.createdBy}
          </dd>
          <dt>Last changed</dt>
          <dd>{fmtTime(x.updatedAt)}</dd>
          <dt>Secrets</dt>
          <dd>
            <a href={href('access', { tab: 'clients' })}>What this client can read</a>
          </dd>
        </dl>
      )}
    </Loaded>
  );
}

interface Row {
  name: string;
  state: preact.ComponentChildren;
  changed: string;
}

async function loadRows(tab: string): Promise<Row[]> {
  if (tab === 'policies') {
    const p = await get<Page<TrustPolicy>>('/v1/policies', { limit: 1000 });
    return p.items.map((x) => ({ name: x.name, state: `version ${x.version}, ${String(x.document.mode ?? 'enforce')}`, changed: x.updatedAt }));
  }
  if (tab === 'keys') {
    const p = await get<{ items: SigningKey[] }>('/v1/signing-keys');
    return p.items.map((x) => ({ name: x.name, state: <><Badge kind={x.status === 'active' ? 'allow' : 'deny'}>{x.status}</Badge> {x.algorithm}, version {x.currentVersion}</>, changed: x.updatedAt }));
  }
  if (tab === 'issuers') {
    const p = await get<{ items: TrustedIssuer[] }>('/v1/trusted-issuers');
    return p.items.map((x) => ({ name: x.name, state: <>{x.enabled ? <Badge kind="allow">enabled</Badge> : <Badge kind="deny">disabled</Badge>} {x.issuer}</>, changed: x.updatedAt }));
  }
  const p = await get<Page<Client>>('/v1/clients', { limit: 1000 });
  return p.items.map((x) => ({ name: x.name, state: x.enabled ? <Badge kind="allow">enabled</Badge> : <Badge kind="deny">disabled</Badge>, changed: x.updatedAt }));
}

export function Inventory(props: { route: Route }) {
  const tab = TABS.find((t) => t.id === props.route.query.get('tab')) ?? TABS[0]!;
  const name = props.route.query.get('name');
  const rows = useLoad(() => loadRows(tab.id), [tab.id]);
  return (
    <>
      <h1>Inventory</h1>
      <nav aria-label="Inventory kinds" class="tabs">
        <ul>
          {TABS.map((t) => (
            <li>
              <a href={href('inventory', { tab: t.id })} aria-current={t.id === tab.id ? 'page' : undefined}>
                {t.label}
              </a>
            </li>
          ))}
        </ul>
      </nav>
      <div class="split">
        <section aria-labelledby="h-list">
          <h2 id="h-list">{tab.label}</h2>
          <Loaded state={rows}>
            {(r) =>
              r.length === 0 ? (
                <p class="muted">None.</p>
              ) : (
                <table data-testid="inventory">
                  <thead>
                    <tr>
                      <th scope="col">Name</th>
                      <th scope="col">State</th>
                      <th scope="col">Last changed</th>
                    </tr>
                  </thead>
                  <tbody>
                    {r.map((x) => (
                      <tr class={x.name === name ? 'selected' : ''}>
                        <th scope="row">
                          <a href={href('inventory', { tab: tab.id, name: x.name })} aria-current={x.name === name ? 'true' : undefined}>
                            {x.name}
                          </a>
                        </th>
                        <td>{x.state}</td>
                        <td title={fmtTime(x.changed)}>{fmtAge(x.changed)}</td>
                      </tr>
                    ))}
                  </tbody>
                </table>
              )
            }
          </Loaded>
        </section>
        {name && (
          <section class="card detail" aria-labelledby="h-item" data-testid="inventory-detail">
            <h2 id="h-item">
              {tab.label.replace(/s$/, '').replace(/ie$/, 'y')}: <span class="mono">{name}</span>
            </h2>
            {tab.id === 'policies' && <PolicyDetail name={name} />}
            {tab.id === 'policies' && <PolicyVersions name={name} />}
            {tab.id === 'keys' && <KeyDetail name={name} />}
            {tab.id === 'issuers' && <IssuerDetail name={name} />}
            {tab.id === 'clients' && <ClientDetail name={name} />}
            <History kind={tab.kind} name={name} />
          </section>
        )}
      </div>
    </>
  );
}
