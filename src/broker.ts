import type { Express, Router } from 'express';
import type { Knex } from 'knex';
import type { Logger } from 'pino';
import { AuditCheckpoints } from './audit/audit-checkpoints.js';
import { AuditQueryDal } from './audit/audit-query-dal.js';
import { auditRoutes } from './audit/audit-routes.js';
import { AuditService } from './audit/audit-service.js';
import { AuditVerifyService } from './audit/audit-verify-service.js';
import { AuditChainState, AuditChainWatch } from './audit/audit-watch.js';
import { ReportsService } from './audit/reports-service.js';
import { JsonlAuditSink } from './audit/audit-sink.js';
import type { Config } from './config.js';
import { secureDataDir } from './data-dir.js';
import { openKeyProvider } from './crypto/create-key-provider.js';
import type { KeyProvider } from './crypto/key-provider.js';
import { SystemKeys } from './crypto/system-keys.js';
import { openDatabase, type DbHandle } from './db/connection.js';
import { migrateLatest } from './db/migrate.js';
import { SqliteFastPath } from './db/sqlite-fast-path.js';
import { buildApp } from './http/app.js';
import { authenticate, type CertificateAuthenticator } from './http/authenticate.js';
import { createLogger } from './http/logging.js';
import { createMetrics } from './http/metrics.js';
import { opsRoutes } from './http/ops-routes.js';
import { ApiKeysService } from './identity/api-keys-service.js';
import { AuthService } from './identity/auth-service.js';
import { ClientsService } from './identity/clients-service.js';
import { GroupsService } from './identity/groups-service.js';
import { apiKeyRoutes, authRoutes, clientRoutes, groupRoutes } from './identity/identity-routes.js';
import { JwtKeyService } from './identity/jwt-key-service.js';
import { FailureRateLimiter } from './identity/rate-limiter.js';
import { TokenService } from './identity/token-service.js';
import { WorkloadIdentityService } from './identity/workload-identity-service.js';
import { workloadIdentityRoutes } from './identity/workload-identity-routes.js';
import { clientSecretsRoutes, secretsRoutes } from './secrets/secrets-routes.js';
import { SecretsService } from './secrets/secrets-service.js';
import { RowIntegrity } from './secrets/row-integrity.js';
import { EgressPolicy } from './trust/registry/egress-policy.js';
import { createRegistryClient } from './trust/registry/registry-access.js';
import type { RegistryClient } from './trust/registry/registry-client.js';
import { SigningKeysService } from './trust/signing/signing-keys-service.js';
import { GateService } from './trust/gate/gate-service.js';
import { policyRoutes, releaseRoutes } from './trust/gate/gate-routes.js';
import { PolicyService } from './trust/gate/policy-service.js';
import { SignaturesService } from './trust/signing/signatures-service.js';
import { signingRoutes } from './trust/signing/signing-routes.js';
import { TrustedIssuersService } from './trust/signing/trusted-issuers-service.js';

export interface BrokerOptions {
  /** Defaults to Date.now; tests pass a controllable clock. */
  clock?: () => number;
  logger?: Logger;
  keyProvider?: KeyProvider;
  db?: DbHandle;
  dbSchema?: string;
  certificates?: CertificateAuthenticator;
  /** false disables the synchronous SQLite read path (tests compare both paths). */
  fastPath?: boolean;
}

export interface Services {
  config: Config;
  db: Knex;
  dbHandle: DbHandle;
  fastPath?: SqliteFastPath;
  clock: () => number;
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
  auditQuery: AuditQueryDal;
  checkpoints: AuditCheckpoints;
  auditVerifier: AuditVerifyService;
  /** Whether this instance found the audit chain intact; audited writes are refused when broken. */
  auditChain: AuditChainState;
  rowIntegrity: RowIntegrity;
  reports: ReportsService;
  registry: RegistryClient;
  signingKeys: SigningKeysService;
  policies: PolicyService;
  gate: GateService;
  trustedIssuers: TrustedIssuersService;
  signatures: SignaturesService;
}

export interface Broker {
  app: Express;
  services: Services;
  close(): Promise<void>;
}

/** Opens the database, runs migrations, and wires every service with its dependencies. */
export async function createServices(config: Config, options: BrokerOptions = {}): Promise<Services> {
  const clock = options.clock ?? Date.now;
  const logger = options.logger ?? createLogger(config.logLevel);
  secureDataDir(config.dataDir, logger);
  const dbHandle = options.db ?? (await openDatabase(config.databaseUrl, { schema: options.dbSchema, sqliteSynchronous: config.sqliteSynchronous, timeouts: config.dbTimeouts }));
  const db = dbHandle.knex;
  let keyProvider: KeyProvider;
  try {
    // before migrations and before any key is made: a missing root key must not be replaced
    keyProvider = options.keyProvider ?? (await openKeyProvider(config.keyProvider, db));
  } catch (err) {
    if (!options.db) await dbHandle.close();
    throw err;
  }
  await migrateLatest(db);
  const fastPath = dbHandle.sqliteFile && options.fastPath !== false ? new SqliteFastPath(dbHandle.sqliteFile, () => dbHandle.openTransactions() > 0, dbHandle.sqliteSynchronous) : undefined;
  const systemKeys = new SystemKeys(db, keyProvider, clock);
  // loaded once up front: they are immutable, and fetching them lazily inside a transaction
  // would need a second connection (SQLite has one)
  await systemKeys.get('checksum');
  await systemKeys.get('audit-hmac');
  const rowIntegrity = await RowIntegrity.load(systemKeys);
  const auditChain = new AuditChainState();
  const auditSink = config.auditFile ? new JsonlAuditSink(config.auditFile) : undefined;
  const audit = new AuditService({ db, systemKeys, clock, logger, sink: auditSink, fastPath, chainGuard: () => auditChain.assertIntact() });
  // rows from before migration 007 get their MACs once; the count is on the record
  const sealedRows = await rowIntegrity.backfillOnce(db, clock);
  if (sealedRows > 0) {
    await audit.record({ actor: { kind: 'system', name: 'keywarden' }, action: 'integrity.backfill', resource: { kind: 'table', name: 'secrets' }, outcome: 'allow', details: { rows: sealedRows } });
  }
  const jwtKeys = new JwtKeyService({
    db,
    keyProvider,
    clock,
    maxTokenTtlSeconds: Math.max(config.accessTokenMaxTtlSeconds, config.workloadJwtMaxTtlSeconds),
  });
  const tokens = new TokenService({
    db,
    jwtKeys,
    clock,
    issuer: config.issuer,
    trustDomain: config.trustDomain,
    accessTokenTtlSeconds: config.accessTokenTtlSeconds,
    fastPath,
  });
  const apiKeys = new ApiKeysService({ db, audit, clock });
  const clients = new ClientsService({ db, audit, clock });
  const groups = new GroupsService({ db, audit, clock, rowIntegrity });
  const secrets = new SecretsService({ db, keyProvider, systemKeys, audit, clock, fastPath, rowIntegrity });
  const windowMs = config.authRateLimit.windowSeconds * 1000;
  const rateLimiter = new FailureRateLimiter(db, clock, {
    client: { maxFailures: config.authRateLimit.maxFailuresPerClient, windowMs },
    address: { maxFailures: config.authRateLimit.maxFailuresPerAddress, windowMs },
  });
  const auth = new AuthService({ clients, tokens, audit, clock, rateLimiter });
  const workload = new WorkloadIdentityService({
    db,
    audit,
    clients,
    tokens,
    auth,
    clock,
    bootstrapTokenMaxTtlSeconds: config.bootstrapTokenMaxTtlSeconds,
    workloadJwtMaxTtlSeconds: config.workloadJwtMaxTtlSeconds,
    accessTokenMaxTtlSeconds: config.accessTokenMaxTtlSeconds,
  });
  const auditQuery = new AuditQueryDal(db);
  const checkpoints = new AuditCheckpoints({ db, jwtKeys, clock, issuer: config.issuer, chainGuard: () => auditChain.assertIntact() });
  const auditVerifier = new AuditVerifyService({ dal: auditQuery, checkpoints, jwks: () => jwtKeys.jwks({ includeRetired: true }) });
  const reports = new ReportsService({ db, clock });
  // one set of egress rules for every registry and Notary connection (see egress-policy.ts)
  const egress = new EgressPolicy({ insecureHosts: config.insecureRegistries, allowedHosts: config.egressAllow, logger });
  const registry = createRegistryClient({ db, secrets, audit, purpose: 'signing', insecureRegistries: config.insecureRegistries, egress, logger });
  const signingKeys = new SigningKeysService({ db, keyProvider, audit, clock });
  const policies = new PolicyService({ db, audit, clock, egress });
  const gate = new GateService({
    db,
    audit,
    clock,
    // the gate's own client: every registry exchange bounded by KEYWARDEN_GATE_TIMEOUT_MS
    registry: createRegistryClient({ db, secrets, audit, purpose: 'gate', insecureRegistries: config.insecureRegistries, egress, logger, timeoutMs: config.gate.timeoutMs }),
    egress,
    logger,
    signingKeys,
    policies,
    options: config.gate,
  });
  const trustedIssuers = new TrustedIssuersService({ db, audit, tokens, auth, clock });
  const signatures = new SignaturesService({ db, audit, registry, signingKeys, clock, policies });
  return {
    config, db, dbHandle, fastPath, clock, logger, keyProvider, systemKeys, audit, auditSink, jwtKeys, tokens, apiKeys, clients, groups, secrets, auth, workload,
    auditQuery, checkpoints, auditVerifier, auditChain, rowIntegrity, reports, registry, signingKeys, policies, gate, trustedIssuers, signatures,
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
    auditRoutes({ audit: s.audit, dal: s.auditQuery, verifier: s.auditVerifier, checkpoints: s.checkpoints, reports: s.reports }),
    policyRoutes(s.policies),
    releaseRoutes(s.gate),
    signingRoutes({ db: s.db, audit: s.audit, signingKeys: s.signingKeys, issuers: s.trustedIssuers, signatures: s.signatures }),
  ];
}

export async function createBroker(config: Config, options: BrokerOptions = {}): Promise<Broker> {
  const services = await createServices(config, options);
  const metrics = createMetrics();
  const auditWatch = new AuditChainWatch({
    db: services.db,
    state: services.auditChain,
    verifier: services.auditVerifier,
    dal: services.auditQuery,
    checkpoints: services.checkpoints,
    audit: services.audit,
    rowIntegrity: services.rowIntegrity,
    registry: metrics.registry,
    logger: services.logger,
    clock: services.clock,
    intervalMs: config.auditVerifyIntervalSeconds * 1000,
  });
  await auditWatch.start();
  const app = buildApp({
    logger: services.logger,
    metrics,
    maxBodyBytes: config.maxBodyBytes,
    trustProxy: config.trustProxy,
    apiKeys: services.apiKeys,
    tokens: services.tokens,
    audit: services.audit,
    certificates: options.certificates ?? ((socket) => services.workload.authenticateCertificate(socket)),
    publicRouters: [
      opsRoutes({
        db: services.db,
        keyProvider: services.keyProvider,
        metrics,
        metricsAuth: config.metricsAuth,
        auditChain: services.auditChain,
        sqliteFile: services.dbHandle.sqliteFile,
        authenticate: authenticate({ apiKeys: services.apiKeys, tokens: services.tokens, audit: services.audit }),
      }),
    ],
    routers: domainRouters(services),
  });
  return {
    app,
    services,
    async close() {
      await auditWatch.stop();
      services.auditSink?.close();
      services.fastPath?.close();
      await services.registry.egress.close();
      if (!options.db) await services.dbHandle.close();
    },
  };
}
