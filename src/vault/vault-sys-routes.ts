import { Router, type Request } from 'express';
import { InvalidInputError } from '../core/errors.js';
import { defineRoutes } from '../http/routes.js';
import { vaultResponse } from './vault-response.js';

/** Readiness as /readyz decides it (http/ops-routes.ts readinessProbe). */
export type HealthProbe = () => Promise<{ ready: boolean; checks: Record<string, string> }>;

/** The Vault version clients are told; KV v2 and the token endpoints here follow Vault 1.x. */
export const VAULT_COMPAT_VERSION = '1.15.0+keywarden';

/** A status code from a sys/health query parameter (Vault takes any; only real HTTP codes are honoured here). */
function codeParam(req: Request, name: string, fallback: number): number {
  const raw = req.query[name];
  if (raw === undefined) return fallback;
  const code = Number(raw);
  if (typeof raw !== 'string' || !Number.isInteger(code) || code < 200 || code > 599) throw new InvalidInputError(`${name} must be an HTTP status code`);
  return code;
}

/** One mount as sys/mounts and sys/internal/ui/mounts describe it. */
function kvMountEntry(kvMount: string) {
  return {
    type: 'kv',
    description: 'Keywarden secrets (KV version 2)',
    accessor: `kv_${kvMount}`,
    config: { default_lease_ttl: 0, max_lease_ttl: 0, force_no_cache: false },
    options: { version: '2' },
    local: false,
    seal_wrap: false,
    external_entropy_access: false,
    plugin_version: '',
    running_plugin_version: 'v0.0.0+builtin',
    running_sha256: '',
    uuid: '',
  };
}

/**
 * The sys endpoints Vault clients call before anything else: health (Vault's status codes over
 * Keywarden's readiness) and mount discovery (one KV v2 mount, KEYWARDEN_VAULT_KV_MOUNT).
 */
export function vaultSysRoutes(deps: { health: HealthProbe; kvMount: string }): Router {
  const router = Router();
  const mounts = { [`${deps.kvMount}/`]: kvMountEntry(deps.kvMount) };
  defineRoutes(router, [
    {
      // every Keywarden instance serves reads and writes: there is no standby, and "not ready"
      // (database, key provider, storage or audit chain) is what Vault calls sealed
      method: 'get',
      path: '/v1/sys/health',
      access: 'public',
      handler: async (req, res) => {
        const activeCode = codeParam(req, 'activecode', 200);
        const sealedCode = codeParam(req, 'sealedcode', 503);
        const { ready, checks } = await deps.health();
        res
          .status(ready ? activeCode : sealedCode)
          .set('Cache-Control', 'no-store')
          .json({
            initialized: true,
            sealed: !ready,
            standby: false,
            performance_standby: false,
            replication_performance_mode: 'disabled',
            replication_dr_mode: 'disabled',
            server_time_utc: Math.floor(Date.now() / 1000),
            version: VAULT_COMPAT_VERSION,
            cluster_name: 'keywarden',
            cluster_id: '',
            keywarden_checks: checks,
          });
      },
    },
    {
      method: 'get',
      path: '/v1/sys/mounts',
      access: 'public',
      handler: (req, res) => {
        // Vault sends the mounts both at the top level (older clients) and under data
        res.json({ ...mounts, ...vaultResponse(req.requestId, { data: mounts }) });
      },
    },
    {
      method: 'get',
      path: '/v1/sys/internal/ui/mounts/{path}',
      access: 'public',
      handler: (req, res) => {
        if (req.params.path !== deps.kvMount) throw new InvalidInputError(`no mount found for path ${String(req.params.path)}/`, { code: 'mount_not_found' });
        res.json(vaultResponse(req.requestId, { data: { path: `${deps.kvMount}/`, ...kvMountEntry(deps.kvMount) } }));
      },
    },
  ]);
  return router;
}
