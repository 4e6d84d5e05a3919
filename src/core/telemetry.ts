/**
 * The operational figures domain code reports (the port; `http/metrics.ts` implements it with
 * prom-client, and `noTelemetry` is the default for services built without one).
 *
 * Every argument is a bounded enum: never a secret, client, key or image name, never a token.
 * Implementations pre-bind one counter per combination, so a call is an array lookup and an
 * increment, with no allocation (the secret delivery path calls it once per request).
 */

/** How a client asked for secrets: one by name, a batch of several, a delegate (the Docker plugin), or the Vault KV API. */
export const DELIVERY_ROUTES = ['client', 'batch', 'delegated', 'vault'] as const;
export type DeliveryRoute = (typeof DELIVERY_ROUTES)[number];

/**
 * Why a secret was or was not delivered, each with its outcome. `not_granted` covers a secret
 * that does not exist as well (the API does not tell the two apart, nor does this).
 */
export const DELIVERY_REASONS = {
  granted: 'allow',
  not_granted: 'deny',
  not_delegated: 'deny',
  integrity: 'error',
  key_provider: 'error',
  audit_unavailable: 'error',
  database: 'error',
  other: 'error',
} as const;
export type DeliveryReason = keyof typeof DELIVERY_REASONS;

/** The grant types of the token endpoint (and the Vault API's renew-self), by short name; `unsupported`: one the broker does not offer. */
export const GRANT_LABELS = ['client_credentials', 'bootstrap', 'token_exchange', 'renew', 'other', 'unsupported'] as const;
export type GrantLabel = (typeof GRANT_LABELS)[number];

const GRANT_TYPE_LABELS: Record<string, GrantLabel> = {
  client_credentials: 'client_credentials',
  'urn:keywarden:bootstrap': 'bootstrap',
  'urn:ietf:params:oauth:grant-type:token-exchange': 'token_exchange',
};

/** The label for a grant_type parameter: the caller's string itself never becomes a label value. */
export function grantLabel(grantType: string | undefined, supported: boolean): GrantLabel {
  if (!supported || grantType === undefined) return 'unsupported';
  return GRANT_TYPE_LABELS[grantType] ?? 'other';
}

export const ISSUANCE_OUTCOMES = ['allow', 'deny', 'error'] as const;
export type IssuanceOutcome = (typeof ISSUANCE_OUTCOMES)[number];

export const GATE_RESULTS = ['allow', 'warn', 'deny'] as const;
export type GateResult = (typeof GATE_RESULTS)[number];

/**
 * Where audit events are appended: `read_batch` (the group commit of secret reads, a
 * transaction of its own), `record` (one event, a transaction of its own), `transaction` (the
 * insert inside an audited change's transaction).
 */
export const AUDIT_APPEND_PATHS = ['read_batch', 'record', 'transaction'] as const;
export type AuditAppendPath = (typeof AUDIT_APPEND_PATHS)[number];

/** The database failure kinds of db/db-errors.ts (DatabaseFailureKind). */
export const DATABASE_ERROR_KINDS = ['unavailable', 'timeout', 'storage_full', 'read_only', 'busy'] as const;
export type DatabaseErrorKind = (typeof DATABASE_ERROR_KINDS)[number];

export const ROOT_KEY_PROVIDERS = ['local', 'vault-transit'] as const;
export type RootKeyProviderKind = (typeof ROOT_KEY_PROVIDERS)[number];
export const ROOT_KEY_OPS = ['wrap', 'unwrap'] as const;
export type RootKeyOp = (typeof ROOT_KEY_OPS)[number];

export const RATE_LIMIT_SCOPES = ['client', 'address', 'api-key'] as const;
export type RateLimitScope = (typeof RATE_LIMIT_SCOPES)[number];

export interface Telemetry {
  /** `count` secrets of one request delivered (allow), refused (deny) or failed (error). */
  secretDeliveries(route: DeliveryRoute, reason: DeliveryReason, count: number): void;
  tokenIssuance(grant: GrantLabel, outcome: IssuanceOutcome): void;
  gateDecision(result: GateResult): void;
  gateCacheLookup(hit: boolean): void;
  auditAppend(path: AuditAppendPath, seconds: number): void;
  databaseError(kind: DatabaseErrorKind): void;
  /** One call of the root key provider (not a cache hit), with its duration, and whether it failed. */
  rootKeyOperation(provider: RootKeyProviderKind, op: RootKeyOp, seconds: number, failed: boolean): void;
  /** A lookup in the unwrapped data key cache (in front of a remote provider). */
  rootKeyCacheLookup(hit: boolean): void;
  rateLimitRefusal(scope: RateLimitScope): void;
}

const nothing = () => undefined;

/** Records nothing: for services built without metrics (tools, unit tests). */
export const noTelemetry: Telemetry = {
  secretDeliveries: nothing,
  tokenIssuance: nothing,
  gateDecision: nothing,
  gateCacheLookup: nothing,
  auditAppend: nothing,
  databaseError: nothing,
  rootKeyOperation: nothing,
  rootKeyCacheLookup: nothing,
  rateLimitRefusal: nothing,
};

/** Seconds since `startMs` (a `performance.now()` reading). */
export function secondsSince(startMs: number): number {
  return (performance.now() - startMs) / 1000;
}
