/**
 * The console's only way to the broker: same-origin fetches authenticated by the HttpOnly session
 * cookie. The API key is sent once, to POST /v1/console/session, and never kept; the CSRF token
 * (not a credential on its own) lives in memory for the state-changing calls.
 */

export interface Session {
  role: string;
  keyId: string;
  keyName?: string;
  expiresAt: string;
  csrfToken: string;
}

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

export interface AuditEvent {
  seq: number;
  leafIndex: number | null;
  ts: number;
  actorKind: string;
  actorId: string | null;
  actorName: string | null;
  action: string;
  resourceKind: string | null;
  resourceName: string | null;
  outcome: 'allow' | 'deny' | 'error';
  reason: string | null;
  requestId: string | null;
  sourceIp: string | null;
  userAgent: string | null;
  details: Record<string, unknown>;
  prevHash?: string;
  hash?: string;
}

export interface Page<T> {
  items: T[];
  nextCursor: string | null;
}

export interface TreeHead {
  id: number;
  treeSize: number;
  rootHash: string;
  time: string;
  origin: string;
  keyId: string;
  verifierKey: string;
  checkpoint: string;
}

export interface InclusionProof {
  leafIndex: number;
  treeSize: number;
  leafHash: string;
  hashes: string[];
  rootHash: string;
  event: AuditEvent | null;
  checkpoint: string | null;
}

export interface VerifyResult {
  ok: boolean;
  treeSize: number;
  rootHash: string;
  leavesChecked: number;
  leavesWithoutEvent: number;
  headsChecked: number;
  firstBadLeaf?: number;
  reason?: string;
  /** Present for a range verification: the leaves [fromLeaf, toLeaf) re-derived. */
  range?: { fromLeaf: number; toLeaf: number };
}

export interface ActivitySeries {
  secretReads: number[];
  denials: number[];
  tokenIssuances: number[];
  signatures: number[];
  releasesAllow: number[];
  releasesWarn: number[];
  releasesDeny: number[];
}

export interface Activity {
  window: string;
  bucketSeconds: number;
  from: string;
  to: string;
  series: ActivitySeries;
}

export interface AccessReport {
  generatedAt: string;
  clients: Array<{
    name: string;
    clientId: string;
    enabled: boolean;
    secrets: Array<{ name: string; groups: string[]; lastReadAt: string | null; lastReadVersion: number | null }>;
  }>;
  secrets: Array<{ name: string; clients: string[] }>;
}

export interface StaleItem {
  client: string;
  clientId: string;
  clientEnabled: boolean;
  secret: string;
  group: string;
  lastReadAt: string | null;
  lastReadVersion: number | null;
  neverRead: boolean;
}

export interface ExpiringItem {
  name: string;
  expiry: string;
  expired: boolean;
  version: number;
  updatedAt: string;
}

export interface ReleaseCheck {
  type: string;
  ok: boolean;
  detail: string;
  code?: string;
}

export interface ReleaseDecision {
  id: string;
  decision: 'allow' | 'deny' | 'warn';
  image: string;
  digest: string | null;
  policy: string | null;
  policyVersion: number | null;
  checks: ReleaseCheck[];
  cached: boolean;
  cachedFrom: string | null;
  validUntil: string | null;
  decidedBy: string;
  decidedAt: string;
}

export interface TrustPolicy {
  name: string;
  version: number;
  document: Record<string, unknown>;
  updatedBy: string;
  createdAt: string;
  updatedAt: string;
}

/** One recorded change of a trust policy (GET /v1/policies/{name}/versions); a delete has no document. */
export interface TrustPolicyVersion {
  version: number;
  change: 'create' | 'update' | 'delete';
  document: Record<string, unknown> | null;
  updatedBy: string;
  at: string;
}

export interface SigningKey {
  name: string;
  algorithm: string;
  status: string;
  currentVersion: number;
  keyId: string;
  createdBy: string;
  createdAt: string;
  updatedAt: string;
  versions: Array<{ version: number; keyId: string; createdAt: string }>;
}

export interface TrustedIssuer {
  name: string;
  issuer: string;
  jwksUri?: string;
  audience: string;
  claims: Record<string, string | string[]>;
  keys: string[];
  images: string[];
  tokenTtl: number;
  enabled: boolean;
  unconstrained: boolean;
  problems: string[];
  createdBy: string;
  createdAt: string;
  updatedAt: string;
}

export interface Client {
  name: string;
  clientId: string;
  description: string;
  labels: Record<string, string>;
  enabled: boolean;
  allowedAudiences?: string[];
  actsFor: string[];
  releaseGate: boolean;
  createdBy: string;
  createdAt: string;
  updatedAt: string;
  groups?: string[];
}
