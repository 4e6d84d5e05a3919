/**
 * The console's only way to the broker: same-origin fetches authenticated by the HttpOnly session
 * cookie. The API key is sent once, to POST /v1/console/session, and never kept; the CSRF token
 * (not a credential on its own) lives in memory for the state-changing calls.
 */
import type { components } from './generated/openapi';

export class ApiError extends Error {
  constructor(
    readonly status: number,
    readonly code: string,
    message: string,
  ) {
    super(message);
  }
}

let csrfToken = '';
const sessionListeners = new Set<(reason: string) => void>();

/** Called when a request finds the session gone (expired, logged out elsewhere, key revoked). */
export function onSessionEnd(fn: (reason: string) => void): () => void {
  sessionListeners.add(fn);
  return () => sessionListeners.delete(fn);
}

async function problem(res: Response): Promise<ApiError> {
  let code = 'http_' + res.status;
  let message = `${res.status} ${res.statusText}`;
  try {
    const body = await res.json();
    if (typeof body?.code === 'string') code = body.code;
    if (typeof body?.detail === 'string') message = body.detail;
    else if (typeof body?.title === 'string') message = body.title;
  } catch {
    /* not JSON */
  }
  return new ApiError(res.status, code, message);
}

export async function request(method: string, path: string, body?: unknown, accept = 'application/json'): Promise<Response> {
  const headers: Record<string, string> = { Accept: accept };
  if (body !== undefined) headers['Content-Type'] = 'application/json';
  if (method !== 'GET' && method !== 'HEAD' && csrfToken) headers['X-CSRF-Token'] = csrfToken;
  const res = await fetch(path, {
    method,
    headers,
    body: body === undefined ? undefined : JSON.stringify(body),
    credentials: 'same-origin',
    cache: 'no-store',
    redirect: 'error',
  });
  if (!res.ok) {
    const err = await problem(res);
    if (res.status === 401 && path !== '/v1/console/session') {
      csrfToken = '';
      for (const fn of sessionListeners) fn('Your session has ended. Sign in again.');
    }
    throw err;
  }
  return res;
}

export async function get<T>(path: string, query?: Record<string, string | number | undefined>): Promise<T> {
  const res = await request('GET', path + qs(query));
  return (await res.json()) as T;
}

export async function post<T>(path: string, body?: unknown): Promise<T> {
  const res = await request('POST', path, body);
  return (await res.json()) as T;
}

export function qs(query?: Record<string, string | number | undefined | null>): string {
  if (!query) return '';
  const p = new URLSearchParams();
  for (const [k, v] of Object.entries(query)) if (v !== undefined && v !== null && v !== '') p.set(k, String(v));
  const s = p.toString();
  return s ? `?${s}` : '';
}

/** Exchanges an API key for the session cookie. The caller drops its copy of the key right after. */
export async function login(apiKey: string): Promise<Session> {
  const res = await request('POST', '/v1/console/session', { apiKey });
  const s = (await res.json()) as Session;
  csrfToken = s.csrfToken;
  return s;
}

/** The current session (after a reload the cookie is still there; the CSRF token comes back with it). */
export async function currentSession(): Promise<Session | null> {
  try {
    const res = await request('GET', '/v1/console/session');
    const s = (await res.json()) as Session;
    csrfToken = s.csrfToken;
    return s;
  } catch (err) {
    if (err instanceof ApiError && (err.status === 401 || err.status === 403)) return null;
    throw err;
  }
}

export async function logout(): Promise<void> {
  try {
    await request('DELETE', '/v1/console/session');
  } finally {
    csrfToken = '';
  }
}

// ------------------------------------------------------------------ types of the API's answers

/** The API's schemas, generated from openapi.yaml (scripts/console-api-types.mjs): one contract. */
type Schemas = components['schemas'];

export type Session = Schemas['ConsoleSession'];
export type AuditEvent = Schemas['AuditEvent'];
/** A page of a cursor-paginated list. */
export interface Page<T> {
  items: T[];
  nextCursor: string | null;
}
export type TreeHead = Schemas['AuditTreeHead'];
export type InclusionProof = Schemas['AuditInclusionProof'];
export type VerifyResult = Schemas['AuditVerifyResult'];
export type Activity = Schemas['ActivityReport'];
export type ActivitySeries = Activity['series'];
export type AccessReport = Schemas['AccessReport'];
export type StaleItem = Schemas['StaleAccessReport']['items'][number];
export type ExpiringItem = Schemas['ExpiringReport']['items'][number];
export type ReleaseCheck = Schemas['ReleaseCheck'];
export type ReleaseDecision = Schemas['ReleaseDecision'];
export type TrustPolicy = Schemas['TrustPolicy'];
export type TrustPolicyVersion = Schemas['TrustPolicyVersion'];
export type SigningKey = Schemas['SigningKey'];
export type TrustedIssuer = Schemas['TrustedIssuer'];
export type Client = Schemas['Client'];
