import { render } from 'preact';
import { useEffect, useRef, useState } from 'preact/hooks';
import { currentSession, logout, onSessionEnd, type Session } from './api';
import { href, useRoute } from './ui';
import { Login } from './views/login';
import { Overview } from './views/overview';
import { AuditExplorer } from './views/audit';
import { Access } from './views/access';
import { Releases } from './views/releases';
import { Inventory } from './views/inventory';
import { Verify } from './views/verify';

const VIEWS: Array<{ id: string; label: string }> = [
  { id: 'overview', label: 'Overview' },
  { id: 'audit', label: 'Audit explorer' },
  { id: 'access', label: 'Who can read what' },
  { id: 'releases', label: 'Release decisions' },
  { id: 'inventory', label: 'Inventory' },
  { id: 'verify', label: 'Verify' },
];

function App() {
  const [session, setSession] = useState<Session | null | undefined>(undefined);
  const [notice, setNotice] = useState('');
  const route = useRoute();
  const main = useRef<HTMLElement>(null);

  useEffect(() => {
    currentSession().then(setSession, () => setSession(null));
    return onSessionEnd((reason) => {
      setSession(null);
      setNotice(reason);
    });
  }, []);

  const view = VIEWS.find((v) => v.id === route.view) ?? VIEWS[0]!;
  useEffect(() => {
    document.title = session ? `${view.label} · Keywarden console` : 'Sign in · Keywarden console';
  }, [view, session]);

  if (session === undefined) return <p class="muted" role="status">Loading…</p>;
  if (session === null) {
    return (
      <Login
        notice={notice}
        onLogin={(s) => {
          setNotice('');
          setSession(s);
        }}
      />
    );
  }

  async function signOut() {
    try {
      await logout();
    } catch {
      /* the session is gone either way */
    }
    setSession(null);
    setNotice('You have signed out.');
  }

  return (
    <>
      <a class="skip" href="#main" onClick={(e) => { e.preventDefault(); main.current?.focus(); }}>
        Skip to content
      </a>
      <header class="top">
        <span class="brand">Keywarden console</span>
        <nav aria-label="Views">
          <ul>
            {VIEWS.map((v) => (
              <li>
                <a href={href(v.id)} aria-current={v.id === view.id ? 'page' : undefined}>
                  {v.label}
                </a>
              </li>
            ))}
          </ul>
        </nav>
        <div class="who">
          <span data-testid="session-role">
            Signed in as <strong>{session.role}</strong> (key {session.keyName ? `${session.keyName}, ` : ''}
            {session.keyId})
          </span>
          <span class="muted-light">session ends {new Date(session.expiresAt).toISOString().slice(11, 16)} UTC</span>
          <button type="button" class="secondary" onClick={signOut}>
            Sign out
          </button>
        </div>
      </header>
      <main id="main" ref={main} tabIndex={-1}>
        {view.id === 'overview' && <Overview />}
        {view.id === 'audit' && <AuditExplorer route={route} />}
        {view.id === 'access' && <Access route={route} />}
        {view.id === 'releases' && <Releases route={route} />}
        {view.id === 'inventory' && <Inventory route={route} />}
        {view.id === 'verify' && <Verify />}
      </main>
    </>
  );
}

render(<App />, document.getElementById('app')!);
