/**
 * The broker routes the Docker plugin calls (issue 13), over the same BrokerClient as
 * `keywarden exec`/`fetch`. Answers are checked with zod and failures become core errors the
 * handlers turn into the protocol's `Err`:
 *   403 → ForbiddenError (its problem code kept), 404 → NotFoundError,
 *   unreachable / 5xx / timeout → UnavailableError, failed token exchange → ForbiddenError.
 */
import { z } from 'zod';
import { BrokerClient, TransientError, type ClientRouteAnswer } from '../cli/client/broker-client.js';
import { CliError } from '../cli/client/exit-codes.js';
import { ForbiddenError, InvalidInputError, NotFoundError, UnavailableError } from '../core/errors.js';
import type { DockerContext } from '../core/docker-context.js';

const metadataSchema = z
  .object({ mode: z.string().optional(), owner: z.string().optional(), group: z.string().optional() })
  .passthrough()
  .nullish()
  .transform((m) => ({ mode: m?.mode, owner: m?.owner, group: m?.group }));

const summarySchema = z.object({ name: z.string(), version: z.number(), checksum: z.string(), metadata: metadataSchema }).passthrough();
const deliveredSchema = summarySchema.extend({ content: z.string() });
const listSchema = z.object({ client: z.string(), items: z.array(summarySchema.extend({ content: z.string().optional() })) }).passthrough();

export type SecretSummary = z.infer<typeof summarySchema>;
export type SecretItem = SecretSummary & { content?: Buffer };

const checkSchema = z.object({ type: z.string(), ok: z.boolean(), detail: z.string(), code: z.string().optional() }).passthrough();
const decisionSchema = z
  .object({ id: z.string(), decision: z.enum(['allow', 'deny', 'warn']), image: z.string(), digest: z.string().nullable(), checks: z.array(checkSchema), cached: z.boolean() })
  .passthrough();
export type ReleaseDecision = z.infer<typeof decisionSchema>;

export interface PluginEvent {
  action: string;
  outcome: 'allow' | 'deny' | 'error';
  resource?: { kind: string; name: string };
  reason?: string;
  details?: Record<string, unknown>;
}

/** Context strings are at most 256 characters on the broker; longer ones are cut, not refused. */
export function clampContext(context: Record<string, string | undefined>): DockerContext {
  const out: Record<string, string> = {};
  for (const [k, v] of Object.entries(context)) if (typeof v === 'string' && v !== '') out[k] = v.slice(0, 256);
  return out as DockerContext;
}

const brokerDecided = new WeakSet<Error>();
function decidedByBroker<E extends Error>(err: E): E {
  brokerDecided.add(err);
  return err;
}

/** The broker refused this (403/404) and recorded the refusal in its own audit log. */
export function auditedByBroker(err: unknown): boolean {
  return err instanceof Error && brokerDecided.has(err);
}

/** The same refusal with a message that says what it means for the Docker call (the broker's answer kept after it). */
export function explained(err: unknown, detail: string): unknown {
  if (!auditedByBroker(err)) return err;
  const e = err as ForbiddenError | NotFoundError;
  const out = e instanceof ForbiddenError ? new ForbiddenError(`${detail} (${e.detail})`, e.code) : new NotFoundError(detail, { code: e.code, detail: `${detail} (${e.detail})` });
  return decidedByBroker(out);
}

export class PluginBrokerApi {
  constructor(private readonly client: BrokerClient) {}

  get addr(): string {
    return this.client.addr;
  }

  private async post(path: string, body: unknown): Promise<ClientRouteAnswer> {
    try {
      return await this.client.postClientRoute(path, body);
    } catch (err) {
      if (err instanceof TransientError) throw new UnavailableError(`the Keywarden broker at ${this.client.addr} is unreachable (${err.reason})`, { code: 'broker_unreachable' });
      if (err instanceof CliError) throw new ForbiddenError(`the plugin cannot use the broker: ${err.message}`, 'plugin_unauthenticated');
      throw err;
    }
  }

  private expectOk<T>(answer: ClientRouteAnswer, schema: z.ZodType<T, z.ZodTypeDef, unknown>, what: string): T {
    if (answer.status === 403 || answer.status === 401) throw decidedByBroker(new ForbiddenError(answer.summary, answer.code ?? 'forbidden'));
    if (answer.status === 404) throw decidedByBroker(new NotFoundError(what, { code: answer.code ?? 'not_found', detail: answer.summary }));
    if (answer.status === 400) throw new InvalidInputError(`the broker refused the request (${answer.summary})`);
    if (answer.status !== 200 && answer.status !== 201 && answer.status !== 202) throw new UnavailableError(`the broker answered ${answer.summary}`);
    const parsed = schema.safeParse(answer.json);
    if (!parsed.success) throw new UnavailableError(`the broker sent an unexpected ${what} response`);
    return parsed.data;
  }

  /** One secret of `client` (a delegated, audited read). */
  async readSecret(client: string, secret: string, context: DockerContext): Promise<SecretSummary & { content: Buffer }> {
    const answer = await this.post('/v1/client/delegated/secrets/read', { client, secret, context });
    const item = this.expectOk(answer, deliveredSchema, `secret ${secret}`);
    return { ...item, content: Buffer.from(item.content, 'base64') };
  }

  /** Every secret granted to `client`, with the values when `includeContent` (each an audited read). */
  async listSecrets(client: string, includeContent: boolean, context: DockerContext): Promise<SecretItem[]> {
    const answer = await this.post('/v1/client/delegated/secrets/list', { client, includeContent, context });
    return this.expectOk(answer, listSchema, `secrets of client ${client}`).items.map((i) => ({
      ...i,
      content: i.content === undefined ? undefined : Buffer.from(i.content, 'base64'),
    }));
  }

  /** The release gate's decision for `image` run as `containerUser` ("" = the image's own user). */
  async decideRelease(image: string, context: DockerContext & { containerUser?: string }): Promise<ReleaseDecision> {
    const answer = await this.post('/v1/client/releases', { image, context });
    return this.expectOk(answer, decisionSchema, 'release decision');
  }

  async reportEvents(events: PluginEvent[]): Promise<void> {
    const answer = await this.post('/v1/client/docker-plugin/events', { events });
    this.expectOk(answer, z.object({ recorded: z.number() }).passthrough(), 'event report');
  }
}
