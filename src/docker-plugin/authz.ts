/**
 * `authz`: dockerd (started with `--authorization-plugin=<plugin>`) asks before every API call.
 * Reads and calls we do not judge are allowed. Container create, service create/update and,
 * with `gatePulls`, image pulls are judged by the broker's release gate for the image and the
 * user the container would run as. Calls are read as dockerd reads them (decoded path, any
 * version prefix, Go's query and JSON rules: docker-api-request.ts), so an encoded spelling is
 * judged as the endpoint it reaches; a call that cannot be read that way is denied. The broker
 * unreachable means deny (fail closed) unless `failOpen`. Decisions are cached per (image
 * reference, user) for `cacheTtlMs`.
 */
import { UnavailableError } from '../core/errors.js';
import { clampContext, type PluginBrokerApi, type PluginEvent, type ReleaseDecision } from './broker-api.js';
import { apiEndpoint, hasEmptyBody, jsonMember, parseQuery, parseRequestUri, UnreadableRequest, type QueryValues } from './docker-api-request.js';
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

/** A call as dockerd routes and reads it (see docker-api-request.ts). */
export interface ApiCall {
  /** As sent; dockerd's router matches methods case-sensitively, the plugin does not. */
  method: string;
  /** Decoded, cleaned, without the version prefix or trailing slashes: `/containers/create`. */
  endpoint: string;
  query: QueryValues;
}

/** Throws UnreadableRequest for a URI or query that dockerd would read differently or refuse. */
export function readApiCall(req: AuthzRequest): ApiCall {
  const { path, rawQuery } = parseRequestUri(req.RequestUri);
  return { method: req.RequestMethod, endpoint: apiEndpoint(path), query: parseQuery(rawQuery) };
}

function decodeBody(req: AuthzRequest): Record<string, unknown> {
  // dockerd shows the body only for application/json under 1 MiB with a Content-Length
  if (!req.RequestBody) throw new UnreadableRequest('the request has no body');
  let parsed: unknown;
  try {
    parsed = JSON.parse(Buffer.from(req.RequestBody, 'base64').toString('utf8'));
  } catch {
    throw new UnreadableRequest('the request body is not JSON');
  }
  if (!parsed || typeof parsed !== 'object' || Array.isArray(parsed)) throw new UnreadableRequest('the request body is not a JSON object');
  return parsed as Record<string, unknown>;
}

const str = (v: unknown): string | undefined => (typeof v === 'string' ? v : undefined);
const obj = (v: unknown): Record<string, unknown> | undefined => (v && typeof v === 'object' && !Array.isArray(v) ? (v as Record<string, unknown>) : undefined);

const CONTAINER_CREATE = /^\/containers\/create$/i;
const SERVICE_CREATE_OR_UPDATE = /^\/services\/(create|[^/]+\/update)$/i;
const IMAGE_CREATE = /^\/images\/create$/i;

/** The call to judge, or undefined for calls the gate has no say in. Throws UnreadableRequest when a call cannot be read. */
export function judgedCall(req: AuthzRequest, gatePulls: boolean): Judged | undefined {
  const { method, endpoint, query } = readApiCall(req);
  if (method.toUpperCase() !== 'POST') return undefined;
  if (CONTAINER_CREATE.test(endpoint)) {
    const body = decodeBody(req);
    const image = str(jsonMember(body, 'Image'));
    if (!image) throw new UnreadableRequest('the container has no Image');
    return { kind: 'container', image, user: str(jsonMember(body, 'User')) ?? '' };
  }
  if (SERVICE_CREATE_OR_UPDATE.test(endpoint)) {
    const spec = obj(jsonMember(obj(jsonMember(decodeBody(req), 'TaskTemplate')) ?? {}, 'ContainerSpec'));
    const image = str(spec && jsonMember(spec, 'Image'));
    if (!image) throw new UnreadableRequest('the service has no TaskTemplate.ContainerSpec.Image');
    return { kind: 'service', image, user: str(spec && jsonMember(spec, 'User')) ?? '' };
  }
  if (IMAGE_CREATE.test(endpoint) && gatePulls) {
    // dockerd reads r.Form: fields of a form-urlencoded body come before the query's, and the
    // plugin is never shown such a body (nor, with two Content-Type headers, the one Go uses)
    if (!hasEmptyBody(req.RequestHeaders)) throw new UnreadableRequest('the request may have a body (no Content-Length: 0), and dockerd would read fromImage and tag from a form body the plugin is not shown');
    // docker pull sends fromImage=REPO and tag=TAG or tag=sha256:… (a digest); without fromImage it is an import
    const repo = query.first('fromImage');
    if (!repo) return undefined;
    const tag = query.first('tag');
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
    let endpoint: string;
    try {
      endpoint = readApiCall(req).endpoint;
    } catch (err) {
      if (!(err instanceof UnreadableRequest)) throw err;
      const uri = JSON.stringify(req.RequestUri.slice(0, 200));
      const msg = `keywarden: cannot read ${req.RequestMethod} ${uri}: ${err.message}; the call is denied (fail closed)`;
      return this.refuse(req, { kind: 'docker-api', name: `${req.RequestMethod} ${uri}`.slice(0, 200) }, msg);
    }
    const resource = { kind: 'docker-api', name: `${req.RequestMethod} ${endpoint}`.slice(0, 200) };
    let judged: Judged | undefined;
    try {
      judged = judgedCall(req, this.options.gatePulls);
    } catch (err) {
      if (!(err instanceof UnreadableRequest)) throw err;
      return this.refuse(req, resource, `keywarden: cannot judge ${req.RequestMethod} ${endpoint}: ${err.message}`);
    }
    if (!judged) {
      this.options.report({ action: 'docker.authz.request', outcome: 'allow', resource, details: { judged: false, user: req.User ?? undefined } });
      return { Allow: true };
    }
    return this.judge(judged, req, resource);
  }

  /** A deny made before the broker was asked: the plugin reports it, with the URI as dockerd sent it. */
  private refuse(req: AuthzRequest, resource: { kind: string; name: string }, msg: string): AuthzResponse {
    this.options.report({ action: 'docker.authz.request', outcome: 'deny', resource, reason: msg, details: { uri: req.RequestUri.slice(0, 1024), user: req.User ?? undefined } });
    return { Allow: false, Msg: msg };
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
