import path from 'node:path';
import type { Express, Router } from 'express';
import type { Knex } from 'knex';
import type { Logger } from 'pino';
import { AuditExporter } from './audit/audit-export.js';
import { loadAuditLogSigner, resolveAuditOrigin, type AuditLogSigner } from './audit/audit-log-key.js';
import { AuditProofs } from './audit/audit-proofs.js';
import { AuditSequencer } from './audit/audit-sequencer.js';
import { AuditTreeDal } from './audit/audit-tree-dal.js';
import { TreeHeadsService } from './audit/tree-heads-service.js';
import { AuditQueryDal } from './audit/audit-query-dal.js';
import { auditRoutes } from './audit/audit-routes.js';
import { pluginEventsRoutes } from './audit/plugin-events-routes.js';
import { PluginEventsService } from './audit/plugin-events-service.js';
import { AuditService } from './audit/audit-service.js';
import { AuditVerifyService } from './audit/audit-verify-service.js';
import { AuditHeavyPasses } from './audit/audit-heavy-passes.js';
import { AuditChainState, AuditChainWatch } from './audit/audit-watch.js';
import { ReportsService } from './audit/reports-service.js';
import { JsonlAuditSink } from './audit/audit-sink.js';
import { CHECKPOINT_FILE_NAME, KeptCheckpoints, sinkCheckpointFile } from './audit/kept-checkpoint.js';
import { ConfigError, type Config } from './config.js';
import { secureDataDir } from './data-dir.js';
import { openKeyProvider } from './crypto/create-key-provider.js';
import type { KeyProvider } from './crypto/key-provider.js';
import { instrumentKeyProvider } from './crypto/caching-key-provider.js';
import { SystemKeys } from './crypto/system-keys.js';
import { openDatabase, type DbHandle } from './db/connection.js';
import { migrateLatest } from './db/migrate.js';
import { Database } from './db/database.js';
import { CacheEpoch, deliveryEpochReader } from './db/cache-epoch.js';
import { AccessDal } from './access/access-dal.js';
import { AccessService } from './access/access-service.js';
import { ClientsDal } from './identity/clients-dal.js';
import { TokensDal } from './identity/tokens-dal.js';
import { BootstrapTokensDal } from './identity/bootstrap-tokens-dal.js';
import { ApiKeysDal } from './identity/api-keys-dal.js';
import { JwtKeysDal } from './identity/jwt-keys-dal.js';
import { AuthFailuresDal } from './identity/auth-failures-dal.js';
import { SecretsDal } from './secrets/secrets-dal.js';
import { RowIntegrityScanner } from './secrets/row-integrity-scanner.js';
import { buildApp } from './http/app.js';
import { authenticate, type CertificateAuthenticator } from './http/authenticate.js';
import { createLogger } from './http/logging.js';
import { createMetrics, type Metrics } from './http/metrics.js';
import { opsRoutes, readinessProbe } from './http/ops-routes.js';
import { vaultRouters } from './vault/vault-routes.js';
import { kvRoutes } from './vault/kv-routes.js';
import type { MountedRoute } from './http/routes.js';
import { API_KEY_FAILURE_BUCKET, ApiKeysService } from './identity/api-keys-service.js';
import { AuthService } from './identity/auth-service.js';
import { ClientsService } from './identity/clients-service.js';
import { GroupsService } from './identity/groups-service.js';
import { apiKeyRoutes, authRoutes, clientRoutes, groupRoutes } from './identity/identity-routes.js';
import { JwtKeyService } from './identity/jwt-key-service.js';
import { FailureRateLimiter, UsageBudget } from './identity/rate-limiter.js';
import { TokenService } from './identity/token-service.js';
import { BOOTSTRAP_GRANT, WorkloadIdentityService } from './identity/workload-identity-service.js';
import { workloadIdentityRoutes } from './identity/workload-identity-routes.js';
import { clientSecretsRoutes, secretsRoutes } from './secrets/secrets-routes.js';
import { SecretsService } from './secrets/secrets-service.js';
import { RowIntegrity } from './secrets/row-integrity.js';
import { EgressPolicy } from './trust/registry/egress-policy.js';
import { createRegistryClient } from './trust/registry/registry-access.js';
import { RegistryCredentialsService } from './trust/registry/registry-credentials-service.js';
import type { RegistryClient } from './trust/registry/registry-client.js';
import { SigningKeysService } from './trust/signing/signing-keys-service.js';
import { GateService } from './trust/gate/gate-service.js';
import { DecisionDal } from './trust/gate/decision-dal.js';
import { clientReleaseRoutes, policyRoutes, releaseRoutes } from './trust/gate/gate-routes.js';
import { PolicyService } from './trust/gate/policy-service.js';
import { SignaturesService } from './trust/signing/signatures-service.js';
import { signingRoutes } from './trust/signing/signing-routes.js';
import { TOKEN_EXCHANGE_GRANT, TrustedIssuersService } from './trust/signing/trusted-issuers-service.js';
import type { Clock } from './core/clock.js';
import { ConsoleSessionService } from './console/console-session-service.js';
import { consoleReportRoutes, consoleSessionRoutes, cspReportRoutes } from './console/console-routes.js';
import { consoleStaticRouter } from './console/console-static-routes.js';

export interface BrokerOptions {
  /** Defaults to Date.now; tests pass a controllable clock. */
  clock?: Clock;
  logger?: Logger;
  keyProvider?: KeyProvider;
  db?: DbHandle;
  dbSchema?: string;
  certificates?: CertificateAuthenticator;
  /** Overrides KEYWARDEN_SQLITE_FAST_PATH: false disables the synchronous SQLite connection. */
  fastPath?: boolean;
}

/** What createServices builds for: the serving broker, or a CLI command on the broker's configuration. */
interface ServicesRole {
  /**
   * Whether verified tree heads are written to the checkpoint files. Only the serving broker
   * writes them: a CLI command may run as root and would leave a file the broker cannot read.
   */
  keepCheckpoints: boolean;
}

export interface Services {
  config: Config;
  db: Knex;
  dbHandle: DbHandle;
  /** The database port every repository is built on (it owns the SQLite fast path). */
  database: Database;
  /** When the delivery path's caches must drop what they hold (polled; src/db/cache-epoch.ts). */
  cacheEpoch: CacheEpoch;
  clock: Clock;
  logger: Logger;
  keyProvider: KeyProvider;
  systemKeys: SystemKeys;
  audit: AuditService;
  auditSink?: JsonlAuditSink;
  jwtKeys: JwtKeyService;
  tokens: TokenService;
  apiKeys: ApiKeysService;
  clients: ClientsService;
  groups: GroupsService;
  secrets: SecretsService;
  auth: AuthService;
  workload: WorkloadIdentityService;
  metrics: Metrics;
  auditQuery: AuditQueryDal;
  auditTree: AuditTreeDal;
  /** The log's tree-head key and origin (what witnesses pin). */
  auditLogSigner: AuditLogSigner;
  /** Gives queued audit events their leaves and signs tree heads (every instance runs one; one at a time gets in). */
  auditSequencer: AuditSequencer;
  auditProofs: AuditProofs;
  auditExporter: AuditExporter;
  treeHeads: TreeHeadsService;
  auditVerifier: AuditVerifyService;
  auditHeavyPasses: AuditHeavyPasses;
  /** Whether this instance found the audit chain intact; audited writes are refused when broken. */
  auditChain: AuditChainState;
  /** The newest verified tree head, kept outside the database (data directory, audit file). */
  auditCheckpoints: KeptCheckpoints;
  rowIntegrity: RowIntegrity;
  /** The row-MAC backfill and background scan over the database. */
  rowIntegrityScanner: RowIntegrityScanner;
  access: AccessService;
  reports: ReportsService;
  registryCredentials: RegistryCredentialsService;
  registry: RegistryClient;
  signingKeys: SigningKeysService;
  policies: PolicyService;
  gate: GateService;
  trustedIssuers: TrustedIssuersService;
  signatures: SignaturesService;
  /** The auditors' console: API key for a session cookie. */
  consoleSessions: ConsoleSessionService;
}

export interface Broker {
  app: Express;
  /** The routes the app mounts (method, path, access), for the contract test. */
  routes: readonly MountedRoute[];
  services: Services;
  close(): Promise<void>;
}

/** Opens the database, runs migrations, and wires every service with its dependencies. */
export async function createServices(config: Config, options: BrokerOptions = {}, role: ServicesRole = { keepCheckpoints: false }): Promise<Services> {
  const clock = options.clock ?? Date.now;
  const logger = options.logger ?? createLogger(config.logLevel);
  secureDataDir(config.dataDir, logger);
  const dbHandle = options.db ?? (await openDatabase(config.databaseUrl, { schema: options.dbSchema, sqliteSynchronous: config.sqliteSynchronous, timeouts: config.dbTimeouts }));
  const db = dbHandle.knex;
  // the operational metrics (core/telemetry.ts) every service reports to
  const metrics = createMetrics();
  const telemetry = metrics.telemetry;
  let keyProvider: KeyProvider;
  try {
    // before migrations and before any key is made: a missing root key must not be replaced
    // (a port without the fast path: that connection opens after the migrations)
    keyProvider = instrumentKeyProvider(options.keyProvider ?? (await openKeyProvider(config.keyProvider, new Database(dbHandle, { fastPath: false, checkpoints: false }))), telemetry);
  } catch (err) {
    if (!options.db) await dbHandle.close();
    throw err;
  }
  await migrateLatest(db);
  const database = new Database(dbHandle, { fastPath: options.fastPath ?? config.sqliteFastPath, onFailure: (kind) => telemetry.databaseError(kind) });
  metrics.observePool(() => database.poolStats());
  const cacheEpoch = new CacheEpoch(deliveryEpochReader(database), { logger, name: 'delivery cache epoch' });
  const systemKeys = new SystemKeys(database, keyProvider, clock);
  // loaded once up front: they are immutable, and fetching them lazily inside a transaction
  // would need a second connection (SQLite has one)
  await systemKeys.get('checksum');
  await systemKeys.get('audit-hmac');
  const rowIntegrity = await RowIntegrity.load(systemKeys);
  const auditChain = new AuditChainState();
  const auditSink = config.auditFile ? new JsonlAuditSink(config.auditFile) : undefined;
  const auditTree = new AuditTreeDal(database);
  const origin = resolveAuditOrigin({ configured: config.auditOrigin, stored: await auditTree.storedOrigin(), issuer: config.issuer });
  if ('conflict' in origin) {
    await database.close();
    if (!options.db) await dbHandle.close();
    throw new ConfigError([origin.conflict]);
  }
  const logSigner = await loadAuditLogSigner(systemKeys, origin.origin);
  const signer = async () => logSigner;
  const auditCheckpoints = new KeptCheckpoints({
    files: [path.join(config.dataDir, CHECKPOINT_FILE_NAME), ...(config.auditFile ? [sinkCheckpointFile(config.auditFile)] : [])],
    open: logSigner.open,
    logger,
    persist: role.keepCheckpoints,
  });
  const unreadableCheckpoint = auditCheckpoints.load();
  if (unreadableCheckpoint) {
    // as for any other tampering: audited writes and readiness are refused, not the start
    auditChain.fail(unreadableCheckpoint.reason, clock());
    logger.error({ reason: unreadableCheckpoint.reason }, 'AUDIT LOG VERIFICATION FAILED: audited operations are refused until an operator investigates and restarts the broker');
  }
  const auditSequencer = new AuditSequencer({
    db: database,
    tree: auditTree,
    signer,
    clock,
    logger,
    registry: metrics.registry,
    intervalMs: config.auditSequenceIntervalMs,
    resignAfterMs: config.auditCheckpointIntervalSeconds * 1000,
    sink: auditSink,
    onTreeMismatch: (reason, firstBadLeaf) => auditChain.fail(reason, clock(), firstBadLeaf),
    chainGuard: () => auditChain.assertIntact(),
    kept: auditCheckpoints,
  });
  // the release gate's trust epoch (migration 013); like the delivery path's, read again after each audited change here
  const trustEpoch = new CacheEpoch(() => new DecisionDal(database).trustEpoch(), { logger, name: 'gate trust epoch' });
  const audit = new AuditService({
    db: database,
    systemKeys,
    clock,
    logger,
    sink: auditSink,
    chainGuard: () => auditChain.assertIntact(),
    onQueued: (count) => auditSequencer.noteAppended(count),
    telemetry,
    cacheEpochs: [cacheEpoch, trustEpoch],
  });
  // rows from before migration 007 get their MACs once; the count is on the record
  const access = new AccessService(new AccessDal(database), rowIntegrity, cacheEpoch);
  const secretsDal = new SecretsDal(database);
  const clientsDal = new ClientsDal(database);
  const clients = new ClientsService({ dal: clientsDal, access, audit, clock, rowIntegrity });
  const rowIntegrityScanner = new RowIntegrityScanner({ rowIntegrity, secrets: secretsDal, access, clients });
  const sealedRows = await rowIntegrityScanner.backfillOnce(clock);
  if (sealedRows > 0) {
    await audit.record({ actor: { kind: 'system', name: 'keywarden' }, action: 'integrity.backfill', resource: { kind: 'table', name: 'secrets' }, outcome: 'allow', details: { rows: sealedRows } });
  }
  const jwtKeys = new JwtKeyService({
    dal: new JwtKeysDal(database),
    keyProvider,
    clock,
    maxTokenTtlSeconds: Math.max(config.accessTokenMaxTtlSeconds, config.workloadJwtMaxTtlSeconds, config.console.sessionTtlSeconds),
  });
  const tokens = new TokenService({
    dal: new TokensDal(database),
    clients: clientsDal,
    jwtKeys,
    clock,
    issuer: config.issuer,
    trustDomain: config.trustDomain,
    accessTokenTtlSeconds: config.accessTokenTtlSeconds,
    accessTokenMaxTtlSeconds: config.accessTokenMaxTtlSeconds,
    telemetry,
    cacheEpoch,
  });
  const windowMs = config.authRateLimit.windowSeconds * 1000;
  const rateLimiter = new FailureRateLimiter(new AuthFailuresDal(database), clock, {
    client: { maxFailures: config.authRateLimit.maxFailuresPerClient, windowMs },
    address: { maxFailures: config.authRateLimit.maxFailuresPerAddress, windowMs },
    [API_KEY_FAILURE_BUCKET]: { maxFailures: config.authRateLimit.maxApiKeyFailuresPerAddress, windowMs },
  }, telemetry);
  // a signer scope may name only existing signing keys (signingKeys is built below, before any request)
  const apiKeys = new ApiKeysService({ dal: new ApiKeysDal(database), audit, clock, rateLimiter, unknownSigningKeys: (names) => signingKeys.unknownNames(names) });
  const secrets = new SecretsService({ db: database, access, keyProvider, systemKeys, audit, clock, rowIntegrity, delegation: clients, telemetry });
  const groups = new GroupsService({ access, secrets, clients: clientsDal, audit, clock });
  const auth = new AuthService({ clients, tokens, audit, rateLimiter, telemetry });
  const workload = new WorkloadIdentityService({
    bootstrapTokens: new BootstrapTokensDal(database),
    clientsDal,
    access,
    audit,
    clients,
    tokens,
    auth,
    clock,
    bootstrapTokenMaxTtlSeconds: config.bootstrapTokenMaxTtlSeconds,
    workloadJwtMaxTtlSeconds: config.workloadJwtMaxTtlSeconds,
    accessTokenMaxTtlSeconds: config.accessTokenMaxTtlSeconds,
  });
  const auditQuery = new AuditQueryDal(database);
  const auditProofs = new AuditProofs({ tree: auditTree, events: auditQuery });
  const auditExporter = new AuditExporter({ tree: auditTree, events: auditQuery, proofs: auditProofs, signer });
  const treeHeads = new TreeHeadsService({ tree: auditTree, signer });
  const auditVerifier = new AuditVerifyService({ tree: auditTree, signer });
  const auditHeavyPasses = new AuditHeavyPasses({
    budget: new UsageBudget(new AuthFailuresDal(database), clock, {
      kind: 'audit-pass',
      budget: config.auditPassBudget.budgetMs,
      windowMs: config.auditPassBudget.windowSeconds * 1000,
      code: 'audit_pass_limit',
      detail: `this key has used its ${config.auditPassBudget.budgetMs} ms of audit log verification and export for this ${config.auditPassBudget.windowSeconds} s window (KEYWARDEN_AUDIT_PASS_BUDGET_MS); retry later`,
    }),
  });
  const reports = new ReportsService({ access, clients, secrets, events: auditQuery, clock, tree: auditTree, chain: auditChain, sink: auditSink });
  // one set of egress rules for every registry and Notary connection (see egress-policy.ts)
  const egress = new EgressPolicy({ insecureHosts: config.insecureRegistries, allowedHosts: config.egressAllow, logger });
  const registryCredentials = new RegistryCredentialsService({ db: database, secrets, audit, clock });
  const registry = createRegistryClient({ credentials: registryCredentials, purpose: 'signing', insecureRegistries: config.insecureRegistries, egress, logger });
  const signingKeys = new SigningKeysService({ db: database, keyProvider, audit, clock });
  const policies = new PolicyService({ db: database, audit, clock, egress, signingKeys });
  const gate = new GateService({
    db: database,
    audit,
    clock,
    // the gate's own client: every registry exchange bounded by KEYWARDEN_GATE_TIMEOUT_MS
    registry: createRegistryClient({ credentials: registryCredentials, purpose: 'gate', insecureRegistries: config.insecureRegistries, egress, logger, timeoutMs: config.gate.timeoutMs }),
    egress,
    logger,
    signingKeys,
    policies,
    options: config.gate,
    clientCapabilities: clients,
    telemetry,
    trustEpoch,
  });
  const trustedIssuers = new TrustedIssuersService({ db: database, audit, tokens, auth, clock, signingKeys });
  // the token endpoint's grants beyond client_credentials (the discovery document lists what is registered)
  auth.registerGrant(BOOTSTRAP_GRANT, (params, meta) => workload.exchangeBootstrapToken(params.bootstrap_token, meta));
  auth.registerGrant(TOKEN_EXCHANGE_GRANT, (params, meta) => trustedIssuers.exchange(params, meta));
  tokens.registerSignerTokenCheck((token) => trustedIssuers.checkSignerToken(token));
  const consoleSessions = new ConsoleSessionService({ apiKeys, tokens, jwtKeys, audit, clock, issuer: config.issuer, ttlSeconds: config.console.sessionTtlSeconds, rateLimiter });
  const signatures = new SignaturesService({ db: database, audit, registry, signingKeys, clock, policies });
  return {
    config, db, dbHandle, database, cacheEpoch, clock, logger, keyProvider, systemKeys, audit, auditSink, jwtKeys, tokens, apiKeys, clients, groups, secrets, auth, workload,
    metrics, auditQuery, auditTree, auditLogSigner: logSigner, auditSequencer, auditProofs, auditExporter, treeHeads, auditVerifier, auditHeavyPasses, auditChain, auditCheckpoints, rowIntegrity, rowIntegrityScanner, access, reports, registryCredentials, registry, signingKeys, policies, gate, trustedIssuers, signatures, consoleSessions,
  };
}

export function domainRouters(s: Services): Router[] {
  // Express tries routers in order: the hot path (secret delivery) goes first
  return [
    clientSecretsRoutes(s.secrets),
    authRoutes(s.auth, s.jwtKeys, s.audit, s.config.issuer),
    secretsRoutes(s.secrets),
    groupRoutes(s.groups),
    clientRoutes(s.clients),
    apiKeyRoutes(s.apiKeys),
    workloadIdentityRoutes(s.workload),
    auditRoutes({
      audit: s.audit,
      dal: s.auditQuery,
      verifier: s.auditVerifier,
      proofs: s.auditProofs,
      exporter: s.auditExporter,
      treeHeads: s.treeHeads,
      sequencer: s.auditSequencer,
      reports: s.reports,
      heavyPasses: s.auditHeavyPasses,
    }),
    policyRoutes(s.policies),
    releaseRoutes(s.gate),
    // the Docker plugin's routes (issue 13): a client an admin made a delegate
    clientReleaseRoutes(s.gate),
    pluginEventsRoutes(new PluginEventsService({ audit: s.audit, clientCapabilities: s.clients })),
    signingRoutes({ registryCredentials: s.registryCredentials, signingKeys: s.signingKeys, issuers: s.trustedIssuers, signatures: s.signatures }),
    // the auditors' console (issue 16): sessions, and the reports the API lacked
    consoleSessionRoutes(s.consoleSessions, { tls: s.config.tls !== undefined }),
    consoleReportRoutes({ reports: s.reports, audit: s.audit, heavyPasses: s.auditHeavyPasses }),
  ];
}

export async function createBroker(config: Config, options: BrokerOptions = {}): Promise<Broker> {
  const services = await createServices(config, options, { keepCheckpoints: true });
  const metrics = services.metrics;
  if (services.database.dialect === 'postgres') {
    // instances share the database but not a disk: each compares with its own kept checkpoint only
    services.logger.warn(
      { checkpointFile: path.join(config.dataDir, CHECKPOINT_FILE_NAME) },
      'on PostgreSQL the audit checkpoint is kept per instance, in its own data directory: a log cut back in the database is caught only by an instance that kept a newer head. Run `keywarden audit witness` outside the database\'s trust domain (see the README, "Transparency log")',
    );
  }
  // events queued before the start (by an instance that died, or before migration 008) are
  // sequenced before serving, and an empty log gets its first signed head; a busy lock means
  // another instance is doing it, and the timer carries on either way
  await services.auditSequencer.flush(5_000).catch((err) => services.logger.warn({ err: { message: (err as Error).message } }, 'audit sequencing at startup did not finish'));
  const auditWatch = new AuditChainWatch({
    state: services.auditChain,
    verifier: services.auditVerifier,
    audit: services.audit,
    rowIntegrity: services.rowIntegrityScanner,
    registry: metrics.registry,
    logger: services.logger,
    clock: services.clock,
    intervalMs: config.auditVerifyIntervalSeconds * 1000,
    fullIntervalMs: config.auditFullVerifyIntervalSeconds * 1000,
    kept: { checkpoints: services.auditCheckpoints, tree: services.auditTree },
  });
  await auditWatch.start();
  services.auditSequencer.start();
  await services.cacheEpoch.refresh();
  services.cacheEpoch.start();
  services.gate.trustEpoch.start();
  const { app, routes } = buildApp({
    logger: services.logger,
    metrics,
    maxBodyBytes: config.maxBodyBytes,
    trustProxy: config.trustProxy,
    apiKeys: services.apiKeys,
    tokens: services.tokens,
    audit: services.audit,
    certificates: options.certificates ?? ((socket) => services.workload.authenticateCertificate(socket)),
    consoleSessions: services.consoleSessions,
    consoleTls: config.tls !== undefined,
    publicRouters: [
      // the auditors' console: static files with their own headers, and its CSP reports (own small body parser)
      consoleStaticRouter({ dir: config.console.dir }),
      cspReportRoutes({ logger: services.logger, registry: metrics.registry }),
      opsRoutes({
        db: services.database,
        keyProvider: services.keyProvider,
        metrics,
        metricsAuth: config.metricsAuth,
        auditChain: services.auditChain,
        sqliteFile: services.dbHandle.sqliteFile,
        authenticate: authenticate({ apiKeys: services.apiKeys, tokens: services.tokens, audit: services.audit }),
      }),
      // the Vault-compatible API (issue 14) parses, authenticates and answers errors itself, for its prefixes only
      vaultRouters(services, {
        health: readinessProbe({ db: services.database, keyProvider: services.keyProvider, auditChain: services.auditChain, sqliteFile: services.dbHandle.sqliteFile }),
        kv: [kvRoutes({ secrets: services.secrets, access: services.access, mount: services.config.vaultKvMount })],
      }),
    ],
    routers: domainRouters(services),
  });
  return {
    app,
    routes,
    services,
    async close() {
      await services.cacheEpoch.stop();
      await services.auditSequencer.stop();
      await services.gate.trustEpoch.stop();
      await auditWatch.stop();
      services.auditSink?.close();
      await services.database.close();
      await services.registry.egress.close();
      if (!options.db) await services.dbHandle.close();
    },
  };
}
