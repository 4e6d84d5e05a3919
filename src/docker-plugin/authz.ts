/**
 * `authz`: dockerd (started with `--authorization-plugin=<plugin>`) asks before every API call.
 * Reads and calls we do not judge are allowed. Container create, service create/update and,
 * with `gatePulls`, image pulls are judged by the broker's release gate for the image and the
 * user the container would run as. The broker unreachable means deny (fail closed) unless
 * `failOpen`. Decisions are cached per (image reference, user) for `cacheTtlMs`.
 */
import { UnavailableError } from '../core/errors.js';
import { clampContext, type PluginBrokerApi, type PluginEvent, type ReleaseDecision } from './broker-api.js';
import type { AuthzRequest, AuthzResponse } from './protocol.js';

export interface AuthzOptions {
  gatePulls: boolean;
  failOpen: boolean;
  cacheTtlMs: number;
  host: string;
  report: (event: PluginEvent) => void;
  log: (message: string) => void;
  now?: () => number;
}

/** What a judged call runs: the image reference as given, and the user (undefined: not a container). */
interface Judged {
  kind: 'container' | 'service' | 'pull';
  image: string;
  user?: string;
}

const MAX_CACHE_ENTRIES = 1000;
/** /v1.41/containers/create → /containers/create (the version prefix is optional). */
const VERSION_PREFIX = /^\/v\d+\.\d+(?=\/)/;

export function apiPath(uri: string): { path: string; query: URLSearchParams } {
  const u = new URL(uri, 'http://docker');
  return { path: u.pathname.replace(VERSION_PREFIX, '').replace(/\/+$/, '') || '/', query: u.searchParams };
}

function decodeBody(req: AuthzRequest): Record<string, unknown> {
  if (!req.RequestBody) throw new BodyError('the request has no body');
  let parsed: unknown;
  try {
    parsed = JSON.parse(Buffer.from(req.RequestBody, 'base64').toString('utf8'));
  } catch {
    throw new BodyError('the request body is not JSON');
  }
  if (!parsed || typeof parsed !== 'object' || Array.isArray(parsed)) throw new BodyError('the request body is not a JSON object');
  return parsed as Record<string, unknown>;
}

class BodyError extends Error {}

const str = (v: unknown): string | undefined => (typeof v === 'string' ? v : undefined);
const obj = (v: unknown): Record<string, unknown> | undefined => (v && typeof v === 'object' && !Array.isArray(v) ? (v as Record<string, unknown>) : undefined);

/** The call to judge, or undefined for calls the gate has no say in. Throws BodyError when a judged call cannot be read. */
export function judgedCall(req: AuthzRequest, gatePulls: boolean): Judged | undefined {
  const method = req.RequestMethod.toUpperCase();
  if (method !== 'POST') return undefined;
  const { path, query } = apiPath(req.RequestUri);
  if (path === '/containers/create') {
    const body = decodeBody(req);
    const image = str(body.Image);
    if (!image) throw new BodyError('the container has no Image');
    return { kind: 'container', image, user: str(body.User) ?? '' };
  }
  if (path === '/services/create' || /^\/services\/[^/]+\/update$/.test(path)) {
    const spec = obj(obj(decodeBody(req).TaskTemplate)?.ContainerSpec);
    const image = str(spec?.Image);
    if (!image) throw new BodyError('the service has no TaskTemplate.ContainerSpec.Image');
    return { kind: 'service', image, user: str(spec?.User) ?? '' };
  }
  if (path === '/images/create' && gatePulls) {
    // docker pull sends fromImage=REPO and tag=TAG or tag=sha256:… (a digest); fromSrc is an import
    const repo = query.get('fromImage');
    if (!repo) return undefined;
    const tag = query.get('tag');
    const image = !tag ? (repo.includes('@') || /:[^/]+$/.test(repo) ? repo : `${repo}:latest`) : tag.includes(':') ? `${repo}@${tag}` : `${repo}:${tag}`;
    return { kind: 'pull', image };
  }
  return undefined;
}

/** The gate's reason for a deny: its failed checks. */
export function denyReason(decision: ReleaseDecision): string {
  const failed = decision.checks.filter((c) => !c.ok).map((c) => `${c.type}: ${c.detail}`);
  return `keywarden release gate denied ${decision.image}${failed.length ? `: ${failed.join('; ')}` : ''} (decision ${decision.id})`;
}

export class AuthzPlugin {
  private readonly cache = new Map<string, { allow: boolean; msg?: string; expiresAt: number; decisionId: string }>();
  private readonly now: () => number;

  constructor(
    private readonly broker: PluginBrokerApi,
    private readonly options: AuthzOptions,
  ) {
    this.now = options.now ?? Date.now;
  }

  async request(req: AuthzRequest): Promise<AuthzResponse> {
    const { path } = apiPath(req.RequestUri);
    const resource = { kind: 'docker-api', name: `${req.RequestMethod} ${path}`.slice(0, 200) };
    let judged: Judged | undefined;
    try {
      judged = judgedCall(req, this.options.gatePulls);
    } catch (err) {
      if (!(err instanceof BodyError)) throw err;
      const msg = `keywarden: cannot judge ${req.RequestMethod} ${path}: ${err.message}`;
      this.options.report({ action: 'docker.authz.request', outcome: 'deny', resource, reason: msg, details: { user: req.User ?? undefined } });
      return { Allow: false, Msg: msg };
    }
    if (!judged) {
      this.options.report({ action: 'docker.authz.request', outcome: 'allow', resource, details: { judged: false, user: req.User ?? undefined } });
      return { Allow: true };
    }
    return this.judge(judged, req, resource);
  }

  private async judge(judged: Judged, req: AuthzRequest, resource: { kind: string; name: string }): Promise<AuthzResponse> {
    const key = JSON.stringify([judged.image, judged.user ?? null]);
    const hit = this.cache.get(key);
    if (hit && hit.expiresAt > this.now()) {
      // the broker did not see this call: audit it through the plugin's event report
      this.options.report({
        action: 'docker.authz.request',
        outcome: hit.allow ? 'allow' : 'deny',
        resource,
        reason: hit.msg,
        details: { image: judged.image, containerUser: judged.user, cached: true, decision: hit.decisionId, user: req.User ?? undefined },
      });
      return hit.allow ? { Allow: true } : { Allow: false, Msg: hit.msg };
    }
    let decision: ReleaseDecision;
    try {
      decision = await this.broker.decideRelease(
        judged.image,
        clampContext({ source: 'authz', image: judged.image, containerUser: judged.user, host: this.options.host }) as Parameters<PluginBrokerApi['decideRelease']>[1],
      );
    } catch (err) {
      const unreachable = err instanceof UnavailableError;
      const cause = (err as Error).message;
      if (unreachable && this.options.failOpen) {
        this.options.log(`FAIL-OPEN: allowing ${resource.name} of ${judged.image} WITHOUT a release-gate decision: ${cause}`);
        this.options.report({ action: 'docker.authz.fail-open', outcome: 'allow', resource, reason: cause, details: { image: judged.image, containerUser: judged.user } });
        return { Allow: true };
      }
      const msg = unreachable
        ? `keywarden: the release gate could not be asked about ${judged.image}, so the call is denied (fail closed): ${cause}`
        : `keywarden: the release gate refused to decide about ${judged.image}: ${cause}`;
      // the CLI's log() prefixes "keywarden: " itself; docker's stderr needs it in Msg
      this.options.log(msg.replace(/^keywarden: /, ''));
      this.options.report({ action: 'docker.authz.request', outcome: 'error', resource, reason: msg, details: { image: judged.image, containerUser: judged.user } });
      return { Allow: false, Msg: msg };
    }
    // 'warn' is a policy in warn mode: the gate records the failures but does not stop the release
    const allow = decision.decision !== 'deny';
    const msg = allow ? undefined : denyReason(decision);
    this.remember(key, { allow, msg, expiresAt: this.now() + this.options.cacheTtlMs, decisionId: decision.id });
    return allow ? { Allow: true } : { Allow: false, Msg: msg };
  }

  private remember(key: string, entry: { allow: boolean; msg?: string; expiresAt: number; decisionId: string }): void {
    if (this.options.cacheTtlMs <= 0) return;
    this.cache.delete(key);
    if (this.cache.size >= MAX_CACHE_ENTRIES) this.cache.delete(this.cache.keys().next().value!);
    this.cache.set(key, entry);
  }
}
