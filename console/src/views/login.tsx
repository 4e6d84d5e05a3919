import { useRef, useState } from 'preact/hooks';
import { ApiError, login, type Session } from '../api';

/**
 * Paste an auditor's (or admin's) API key once; it is exchanged for an HttpOnly session cookie and
 * dropped: the field is emptied before the request goes out and nothing is written to storage.
 */
export function Login(props: { notice: string; onLogin: (s: Session) => void }) {
  const input = useRef<HTMLInputElement>(null);
  const [error, setError] = useState('');
  const [busy, setBusy] = useState(false);

  async function submit(e: Event) {
    e.preventDefault();
    const field = input.current!;
    let key = field.value.trim();
    field.value = '';
    if (!key) {
      setError('Paste an API key.');
      field.focus();
      return;
    }
    setBusy(true);
    setError('');
    try {
      const s = await login(key);
      key = '';
      props.onLogin(s);
    } catch (err) {
      key = '';
      const e2 = err as ApiError;
      setError(
        e2.code === 'console_role_forbidden'
          ? 'This key cannot sign in to the console: only auditor and admin keys can.'
          : e2.status === 401
            ? 'The key was not accepted (unknown, revoked or expired).'
            : `Sign-in failed: ${e2.message}`,
      );
      field.focus();
    } finally {
      setBusy(false);
    }
  }

  return (
    <main id="main" class="login">
      <h1>Keywarden console</h1>
      <p>A read-only view of the audit log, access and release decisions, for auditors.</p>
      {props.notice && (
        <p class="notice" role="status">
          {props.notice}
        </p>
      )}
      <form onSubmit={submit} autocomplete="off">
        <label for="api-key">Auditor or admin API key</label>
        <input id="api-key" ref={input} type="password" name="api-key" autocomplete="off" spellcheck={false} required aria-describedby="api-key-help" />
        <p id="api-key-help" class="muted">
          The key is exchanged for a short-lived session cookie and is not stored in the browser.
        </p>
        {error && (
          <p class="error" role="alert">
            {error}
          </p>
        )}
        <button type="submit" disabled={busy}>
          Sign in
        </button>
      </form>
    </main>
  );
}
