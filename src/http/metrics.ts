import client from 'prom-client';
import type { RequestHandler } from 'express';
import {
  AUDIT_APPEND_PATHS,
  DATABASE_ERROR_KINDS,
  DELIVERY_REASONS,
  DELIVERY_ROUTES,
  GATE_RESULTS,
  GRANT_LABELS,
  ISSUANCE_OUTCOMES,
  RATE_LIMIT_SCOPES,
  ROOT_KEY_OPS,
  ROOT_KEY_PROVIDERS,
  type DeliveryReason,
  type Telemetry,
} from '../core/telemetry.js';
import type { PoolStats } from '../db/database.js';


export interface Metrics {
  registry: client.Registry;
  middleware: RequestHandler;
  /** The recorders domain code reports to (core/telemetry.ts), pre-bound to their label values. */
  telemetry: Telemetry;
  /** Where the pool gauges read from at each scrape (the composition root sets it once the database is open). */
  observePool(stats: () => PoolStats | undefined): void;
}

type Child = { inc(n?: number): void };
type HistogramChild = { observe(v: number): void };

/** One child per label value, every one created (at 0) up front: the series exist before the first event, so rate() and alerts work from the start. */
function bind<K extends string>(values: readonly K[], child: (value: K) => Child): Record<K, Child> {
  const out = {} as Record<K, Child>;
  for (const v of values) {
    out[v] = child(v);
    out[v].inc(0);
  }
  return out;
}

/** How often the event loop's delay is sampled (a libuv timer: 500 wake-ups a second, a few µs each). */
export const EVENT_LOOP_RESOLUTION_MS = 2;

const LATENCY_BUCKETS = [0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5];

export function createMetrics(): Metrics {
  const registry = new client.Registry();
  const registers = [registry];
  // the event loop's delay (keywarden_nodejs_eventloop_lag_{p50,p90,p99,max,...}_seconds, since
  // the previous scrape) sampled every EVENT_LOOP_RESOLUTION_MS instead of prom-client's 10: a
  // stall is seen to within that, so a 20 ms stall reads as one, not as anything from 10 to 20
  client.collectDefaultMetrics({ register: registry, prefix: 'keywarden_', eventLoopMonitoringPrecision: EVENT_LOOP_RESOLUTION_MS });
  const duration = new client.Histogram({
    name: 'keywarden_http_request_duration_seconds',
    help: 'HTTP request duration by route and status',
    labelNames: ['method', 'route', 'status'],
    buckets: [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5],
    registers,
  });
  const middleware: RequestHandler = (req, res, next) => {
    const end = duration.startTimer();
    res.on('finish', () => {
      // the route pattern, never the raw path, keeps label cardinality bounded
      const route = req.route?.path ? `${req.baseUrl}${req.route.path}` : 'unmatched';
      end({ method: req.method, route, status: String(res.statusCode) });
    });
    next();
  };

  const deliveries = new client.Counter({
    name: 'keywarden_secret_deliveries_total',
    help: 'Secrets asked for by clients, by outcome (allow, deny, error), reason and route (client, batch, delegated, vault): one per secret',
    labelNames: ['route', 'outcome', 'reason'],
    registers,
  });
  const reasons = Object.keys(DELIVERY_REASONS) as DeliveryReason[];
  const deliveryChildren = Object.fromEntries(
    DELIVERY_ROUTES.map((route) => [route, bind(reasons, (reason) => deliveries.labels(route, DELIVERY_REASONS[reason], reason))]),
  ) as Record<(typeof DELIVERY_ROUTES)[number], Record<DeliveryReason, Child>>;

  const issuances = new client.Counter({
    name: 'keywarden_token_issuances_total',
    help: 'Access token requests by grant type and outcome (allow: a token was issued; deny: refused; error: failed)',
    labelNames: ['grant_type', 'outcome'],
    registers,
  });
  const issuanceChildren = Object.fromEntries(GRANT_LABELS.map((g) => [g, bind(ISSUANCE_OUTCOMES, (o) => issuances.labels(g, o))])) as Record<
    (typeof GRANT_LABELS)[number],
    Record<(typeof ISSUANCE_OUTCOMES)[number], Child>
  >;

  const gateDecisions = new client.Counter({ name: 'keywarden_gate_decisions_total', help: 'Release gate decisions by result', labelNames: ['result'], registers });
  const gateChildren = bind(GATE_RESULTS, (r) => gateDecisions.labels(r));
  const gateCache = new client.Counter({
    name: 'keywarden_gate_cache_lookups_total',
    help: 'Release gate decision cache lookups by result (hit, miss); only decisions a policy caches look up',
    labelNames: ['result'],
    registers,
  });
  const gateCacheChildren = bind(['hit', 'miss'] as const, (r) => gateCache.labels(r));

  const auditAppend = new client.Histogram({
    name: 'keywarden_audit_append_duration_seconds',
    help: 'Time to append audit events: read_batch and record commit a transaction of their own; transaction is the insert inside an audited change',
    labelNames: ['path'],
    buckets: LATENCY_BUCKETS,
    registers,
  });
  for (const path of AUDIT_APPEND_PATHS) auditAppend.zero({ path });
  const auditChildren = {} as Record<(typeof AUDIT_APPEND_PATHS)[number], HistogramChild>;
  for (const path of AUDIT_APPEND_PATHS) auditChildren[path] = auditAppend.labels(path);

  const dbErrors = new client.Counter({
    name: 'keywarden_db_errors_total',
    help: 'Database failures by kind (unavailable, timeout, storage_full, read_only, busy), including statements a retry later got through',
    labelNames: ['kind'],
    registers,
  });
  const dbErrorChildren = bind(DATABASE_ERROR_KINDS, (k) => dbErrors.labels(k));

  const rootKeyDuration = new client.Histogram({
    name: 'keywarden_root_key_operation_duration_seconds',
    help: 'Calls of the root key provider (data key wrap and unwrap; cache hits excluded)',
    labelNames: ['provider', 'op'],
    buckets: [0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5],
    registers,
  });
  const rootKeyErrors = new client.Counter({
    name: 'keywarden_root_key_errors_total',
    help: 'Failed calls of the root key provider',
    labelNames: ['provider', 'op'],
    registers,
  });
  for (const provider of ROOT_KEY_PROVIDERS) for (const op of ROOT_KEY_OPS) rootKeyDuration.zero({ provider, op });
  const rootKeyChildren = Object.fromEntries(
    ROOT_KEY_PROVIDERS.map((p) => [
      p,
      Object.fromEntries(ROOT_KEY_OPS.map((op) => [op, { duration: rootKeyDuration.labels(p, op) as HistogramChild, errors: bind([op], () => rootKeyErrors.labels(p, op))[op] }])),
    ]),
  ) as Record<(typeof ROOT_KEY_PROVIDERS)[number], Record<(typeof ROOT_KEY_OPS)[number], { duration: HistogramChild; errors: Child }>>;
  const rootKeyCache = new client.Counter({
    name: 'keywarden_root_key_cache_lookups_total',
    help: 'Lookups in the unwrapped data key cache in front of a remote root key provider (vault-transit), by result',
    labelNames: ['result'],
    registers,
  });
  const rootKeyCacheChildren = bind(['hit', 'miss'] as const, (r) => rootKeyCache.labels(r));

  const rateLimits = new client.Counter({
    name: 'keywarden_rate_limit_refusals_total',
    help: 'Authentications refused with 429 after too many failed attempts, by the bucket that was full (client: one client id from one address; address: one source address; api-key: API keys from one source address)',
    labelNames: ['scope'],
    registers,
  });
  const rateLimitChildren = bind(RATE_LIMIT_SCOPES, (s) => rateLimits.labels(s));

  let poolStats: (() => PoolStats | undefined) | undefined;
  new client.Gauge({
    name: 'keywarden_db_pool_connections',
    help: 'Connections of the database pool by state: used (checked out), free (idle), pending (callers waiting for one)',
    labelNames: ['state'],
    registers,
    collect() {
      const s = poolStats?.();
      if (!s) return;
      this.labels('used').set(s.used);
      this.labels('free').set(s.free);
      this.labels('pending').set(s.pending);
    },
  });
  new client.Gauge({
    name: 'keywarden_db_pool_max_connections',
    help: 'The most connections the database pool opens',
    registers,
    collect() {
      const s = poolStats?.();
      if (s) this.set(s.max);
    },
  });

  const telemetry: Telemetry = {
    secretDeliveries: (route, reason, count) => deliveryChildren[route][reason].inc(count),
    tokenIssuance: (grant, outcome) => issuanceChildren[grant][outcome].inc(),
    gateDecision: (result) => gateChildren[result].inc(),
    gateCacheLookup: (hit) => gateCacheChildren[hit ? 'hit' : 'miss'].inc(),
    auditAppend: (path, seconds) => auditChildren[path].observe(seconds),
    databaseError: (kind) => dbErrorChildren[kind].inc(),
    rootKeyOperation: (provider, op, seconds, failed) => {
      const c = rootKeyChildren[provider][op];
      c.duration.observe(seconds);
      if (failed) c.errors.inc();
    },
    rootKeyCacheLookup: (hit) => rootKeyCacheChildren[hit ? 'hit' : 'miss'].inc(),
    rateLimitRefusal: (scope) => rateLimitChildren[scope].inc(),
  };
  return {
    registry,
    middleware,
    telemetry,
    observePool(stats) {
      poolStats = stats;
    },
  };
}
