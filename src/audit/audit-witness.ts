/**
 * An external witness of the audit transparency log (`keywarden audit witness`).
 *
 * It remembers the last signed tree head it verified (a local state file, outside the broker's
 * database) and, on every poll, accepts the broker's newest head only if it is signed by the
 * pinned key and is an append-only extension of the remembered one: same size means the same
 * root; a bigger size needs a consistency proof, checked against the root from the witness's OWN
 * state and the root from the signed note (never the roots the proof response carries, which the
 * broker could make up); a smaller size is a rollback. Anything else raises an alarm and the state
 * is left as it was, so the evidence stays and the next poll alarms again.
 *
 * Talks to the broker with global fetch and needs no database: run it where whoever can rewrite
 * the broker's database cannot rewrite the state file.
 */
import fs from 'node:fs';
import http from 'node:http';
import type { Logger } from 'pino';
import client from 'prom-client';
import { z } from 'zod';
import { writeFileAtomic } from '../core/atomic-file.js';
import { ConflictError, InvalidInputError, UnavailableError } from '../core/errors.js';
import { checkpointTime } from './audit-log-key.js';
import { verifyConsistency, EMPTY_ROOT } from './merkle.js';
import { NoteError, openNote, parseCheckpoint, parseVerifierKey, type NoteVerifier, type TreeCheckpoint } from './signed-note.js';

/** Exit codes of `keywarden audit witness` (documented in its help and the README). */
export const WitnessExit = {
  OK: 0,
  /** usage, unreadable state, key conflict; with --once also a network or HTTP failure */
  ERROR: 1,
  /** the log forked: same size with another root, or a consistency proof that does not verify */
  INCONSISTENT: 2,
  /** the log (or its signed time) went backwards */
  ROLLBACK: 3,
  /** the checkpoint is not signed by the pinned key, names another origin, or is malformed */
  BAD_SIGNATURE: 4,
} as const;

export type AlarmKind = 'fork' | 'inconsistent' | 'rollback' | 'time_rollback' | 'bad_signature' | 'wrong_origin' | 'malformed_checkpoint';

const ALARM_EXIT: Record<AlarmKind, number> = {
  fork: WitnessExit.INCONSISTENT,
  inconsistent: WitnessExit.INCONSISTENT,
  rollback: WitnessExit.ROLLBACK,
  time_rollback: WitnessExit.ROLLBACK,
  bad_signature: WitnessExit.BAD_SIGNATURE,
  wrong_origin: WitnessExit.BAD_SIGNATURE,
  malformed_checkpoint: WitnessExit.BAD_SIGNATURE,
};
export const ALARM_KINDS = Object.keys(ALARM_EXIT) as AlarmKind[];

const hex64 = z.string().regex(/^[0-9a-f]{64}$/);

const stateSchema = z
  .object({
    version: z.literal(1),
    origin: z.string().min(1),
    verifierKey: z.string().min(1),
    treeSize: z.number().int().nonnegative(),
    rootHash: hex64,
    /** the signed note of the head, as served: evidence if the log later contradicts it */
    checkpoint: z.string().nullable(),
    /** the signed time of that head (Timestamp extension line), when it had one */
    time: z.string().datetime().nullable(),
    verifiedAt: z.string().datetime(),
  })
  .strict();
export type WitnessState = z.infer<typeof stateSchema>;

export function readWitnessState(file: string): WitnessState | undefined {
  let text: string;
  try {
    text = fs.readFileSync(file, 'utf8');
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
    throw err;
  }
  let parsed: unknown;
  try {
    parsed = JSON.parse(text);
  } catch {
    throw new InvalidInputError(`witness state file ${file} is not JSON`, { code: 'witness_state_invalid' });
  }
  const result = stateSchema.safeParse(parsed);
  if (!result.success) {
    throw new InvalidInputError(`witness state file ${file} is not a witness state: ${result.error.issues.map((i) => `${i.path.join('.')}: ${i.message}`).join('; ')}`, {
      code: 'witness_state_invalid',
    });
  }
  return result.data;
}

/** Written atomically (temp + fsync + rename): a crash leaves the old state or the new one, never half of one. */
export function writeWitnessState(file: string, state: WitnessState): void {
  writeFileAtomic(file, JSON.stringify(stateSchema.parse(state), null, 2) + '\n');
}

export interface Alarm {
  kind: AlarmKind;
  detail: string;
}

export type HeadCheck = { ok: true; checkpoint: TreeCheckpoint; time: number | undefined } | { ok: false; alarm: Alarm };

/** Opens a signed checkpoint with the pinned key and checks that its origin is the key's (the log's) name. */
export function openSignedCheckpoint(note: string, verifier: NoteVerifier): HeadCheck {
  let text: string;
  try {
    text = openNote(note, [verifier]).text;
  } catch (err) {
    const reason = err instanceof NoteError ? err.reason : (err as Error).message;
    return { ok: false, alarm: { kind: 'bad_signature', detail: `checkpoint not signed by the pinned key: ${reason}` } };
  }
  let checkpoint: TreeCheckpoint;
  try {
    checkpoint = parseCheckpoint(text);
  } catch (err) {
    return { ok: false, alarm: { kind: 'malformed_checkpoint', detail: `signed note is not a checkpoint: ${(err as Error).message}` } };
  }
  if (checkpoint.origin !== verifier.name) {
    return { ok: false, alarm: { kind: 'wrong_origin', detail: `checkpoint origin "${checkpoint.origin}" is not the pinned log "${verifier.name}"` } };
  }
  return { ok: true, checkpoint, time: checkpointTime(checkpoint.extensions) };
}

/** A consistency proof, as hashes only: the roots it must connect come from the caller. */
export type FetchConsistencyProof = (fromSize: number, toSize: number) => Promise<Buffer[]>;

/**
 * Decides whether `next` (already opened with the pinned key) may replace `state`. Rolls back of
 * size and of signed time are alarms; growth is accepted only with a consistency proof that
 * connects the stored root to the signed new root.
 */
export async function checkAgainstState(
  state: Pick<WitnessState, 'treeSize' | 'rootHash' | 'time'>,
  next: { checkpoint: TreeCheckpoint; time: number | undefined },
  fetchProof: FetchConsistencyProof,
): Promise<{ ok: true } | { ok: false; alarm: Alarm }> {
  const oldRoot = Buffer.from(state.rootHash, 'hex');
  const { size, rootHash } = next.checkpoint;
  if (size < state.treeSize) {
    return { ok: false, alarm: { kind: 'rollback', detail: `tree size ${size} is smaller than the witnessed ${state.treeSize}` } };
  }
  if (state.time !== null && next.time !== undefined && next.time < Date.parse(state.time)) {
    return { ok: false, alarm: { kind: 'time_rollback', detail: `signed time ${new Date(next.time).toISOString()} is earlier than the witnessed ${state.time}` } };
  }
  if (size === state.treeSize) {
    if (rootHash.equals(oldRoot)) return { ok: true };
    return { ok: false, alarm: { kind: 'fork', detail: `tree size ${size} has root ${rootHash.toString('hex')}, the witnessed root is ${state.rootHash}` } };
  }
  // growth from the empty tree needs no proof, but the remembered root must be the empty root
  const proof = state.treeSize === 0 ? [] : await fetchProof(state.treeSize, size);
  if (!verifyConsistency(state.treeSize, size, proof, oldRoot, rootHash)) {
    return { ok: false, alarm: { kind: 'inconsistent', detail: `tree ${size} is not an extension of the witnessed tree ${state.treeSize} (consistency proof does not verify)` } };
  }
  return { ok: true };
}

export class WitnessMetrics {
  readonly registry = new client.Registry();
  readonly alarm = new client.Gauge({
    name: 'keywarden_witness_alarm',
    help: '1 once the witness has raised this kind of alarm (stays 1 until the witness restarts: the evidence does not go away)',
    labelNames: ['kind'],
    registers: [this.registry],
  });
  readonly treeSize = new client.Gauge({ name: 'keywarden_witness_tree_size', help: 'Tree size of the last verified signed head', registers: [this.registry] });
  readonly lastSuccess = new client.Gauge({
    name: 'keywarden_witness_last_success_timestamp_seconds',
    help: 'Unix time of the last poll that verified the log',
    registers: [this.registry],
  });
  readonly pollErrors = new client.Counter({
    name: 'keywarden_witness_poll_errors_total',
    help: 'Polls that failed without verdict (network, HTTP status, unreadable response): not alarms',
    registers: [this.registry],
  });

  constructor() {
    for (const kind of ALARM_KINDS) this.alarm.set({ kind }, 0);
  }

  /** Serves /metrics on 127.0.0.1 only: the witness's numbers are nobody else's business. */
  async listen(port: number): Promise<{ url: string; close(): Promise<void> }> {
    const server = http.createServer((req, res) => {
      if (req.method !== 'GET' || req.url !== '/metrics') {
        res.writeHead(404).end();
        return;
      }
      this.registry.metrics().then(
        (body) => res.writeHead(200, { 'Content-Type': this.registry.contentType }).end(body),
        () => res.writeHead(500).end(),
      );
    });
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen(port, '127.0.0.1', resolve);
    });
    const address = server.address() as { port: number };
    return {
      url: `http://127.0.0.1:${address.port}/metrics`,
      close: () => new Promise<void>((resolve) => server.close(() => resolve())),
    };
  }
}

export interface WitnessOptions {
  url: string;
  apiKey: string;
  statePath: string;
  /** a verifier key string given on the command line */
  verifierKey?: string;
  tofu: boolean;
  log: Logger;
  metrics?: WitnessMetrics;
  requestTimeoutMs?: number;
}

export type PollResult =
  | { status: 'verified'; treeSize: number; previousSize: number | null }
  | { status: 'alarm'; alarm: Alarm; exitCode: number }
  | { status: 'error'; error: Error };

/** A failed request: the witness learns nothing, it is not evidence of anything (retried next poll). */
class WitnessFetchError extends UnavailableError {}

const checkpointJsonSchema = z.object({ verifierKey: z.string() }).passthrough();
const consistencyJsonSchema = z.object({ hashes: z.array(hex64) }).passthrough();

export class AuditWitness {
  private readonly base: string;

  constructor(private readonly opts: WitnessOptions) {
    this.base = opts.url.replace(/\/+$/, '');
  }

  private async get(pathAndQuery: string, accept: string): Promise<string> {
    let res: Response;
    try {
      res = await fetch(this.base + pathAndQuery, {
        headers: { Accept: accept, Authorization: `Bearer ${this.opts.apiKey}` },
        signal: AbortSignal.timeout(this.opts.requestTimeoutMs ?? 10_000),
        redirect: 'error',
      });
    } catch (err) {
      throw new WitnessFetchError(`GET ${pathAndQuery}: ${(err as Error).cause ? `${(err as Error).message}: ${((err as Error).cause as Error).message}` : (err as Error).message}`);
    }
    const body = await res.text().catch(() => '');
    if (!res.ok) throw new WitnessFetchError(`GET ${pathAndQuery}: HTTP ${res.status} ${body.slice(0, 200)}`);
    return body;
  }

  private async getJson<T>(pathAndQuery: string, schema: z.ZodType<T>): Promise<T> {
    const body = await this.get(pathAndQuery, 'application/json');
    let parsed: unknown;
    try {
      parsed = JSON.parse(body);
    } catch {
      throw new WitnessFetchError(`GET ${pathAndQuery}: response is not JSON`);
    }
    const result = schema.safeParse(parsed);
    if (!result.success) throw new WitnessFetchError(`GET ${pathAndQuery}: unexpected response shape`);
    return result.data;
  }

  /** The pinned key: the state file's, else --key, else (with --tofu only) the one the broker publishes now. */
  private async pinnedKey(state: WitnessState | undefined): Promise<string> {
    const given = this.opts.verifierKey?.trim();
    if (state) {
      if (given && given !== state.verifierKey) {
        throw new ConflictError(`--key differs from the key pinned in ${this.opts.statePath} (${state.verifierKey}); the state file's key wins: move the state file away to start over with another key`, 'witness_key_conflict');
      }
      return state.verifierKey;
    }
    if (given) return given;
    if (!this.opts.tofu) {
      throw new InvalidInputError('no verifier key: give --key <vkey|@file> (the log verifier key, obtained out of band), or --tofu to trust the key the broker publishes now', { code: 'witness_no_key' });
    }
    const published = await this.getJson('/v1/audit/checkpoint', checkpointJsonSchema);
    this.opts.log.warn({ verifierKey: published.verifierKey }, 'trust on first use: pinning the verifier key the broker publishes; compare it with the key obtained out of band');
    return published.verifierKey;
  }

  /** One poll. Usage problems (no key, key conflict, broken state file) throw; everything else is a result. */
  async poll(): Promise<PollResult> {
    const { log, metrics, statePath } = this.opts;
    const state = readWitnessState(statePath);
    let vkey: string;
    try {
      vkey = await this.pinnedKey(state);
    } catch (err) {
      if (err instanceof WitnessFetchError) return this.failed(err);
      throw err;
    }
    let verifier: NoteVerifier;
    try {
      verifier = parseVerifierKey(vkey);
    } catch (err) {
      throw new InvalidInputError(`verifier key is malformed: ${(err as Error).message}`, { code: 'witness_bad_key' });
    }
    try {
      const note = await this.get('/v1/audit/checkpoint', 'text/plain');
      const opened = openSignedCheckpoint(note, verifier);
      if (!opened.ok) return this.alarm(opened.alarm, note, state);
      const { checkpoint, time } = opened;
      const previous = state ?? { treeSize: 0, rootHash: EMPTY_ROOT.toString('hex'), time: null };
      const verdict = await checkAgainstState(previous, opened, (from, to) => this.consistencyProof(from, to));
      if (!verdict.ok) return this.alarm(verdict.alarm, note, state);
      if (!state || state.treeSize !== checkpoint.size || state.checkpoint !== note) {
        writeWitnessState(statePath, {
          version: 1,
          origin: verifier.name,
          verifierKey: vkey,
          treeSize: checkpoint.size,
          rootHash: checkpoint.rootHash.toString('hex'),
          checkpoint: note,
          time: time === undefined ? null : new Date(time).toISOString(),
          verifiedAt: new Date().toISOString(),
        });
      }
      metrics?.treeSize.set(checkpoint.size);
      metrics?.lastSuccess.set(Date.now() / 1000);
      const previousSize = state?.treeSize ?? null;
      log.info({ origin: verifier.name, treeSize: checkpoint.size, previousSize, rootHash: checkpoint.rootHash.toString('hex') }, state ? 'tree head verified' : 'first tree head pinned');
      return { status: 'verified', treeSize: checkpoint.size, previousSize };
    } catch (err) {
      if (err instanceof WitnessFetchError) return this.failed(err);
      throw err;
    }
  }

  private async consistencyProof(from: number, to: number): Promise<Buffer[]> {
    const res = await this.getJson(`/v1/audit/proof/consistency?from=${from}&to=${to}`, consistencyJsonSchema);
    return res.hashes.map((h) => Buffer.from(h, 'hex'));
  }

  private failed(error: Error): PollResult {
    this.opts.metrics?.pollErrors.inc();
    this.opts.log.warn({ err: { message: error.message } }, 'witness poll failed; retrying at the next poll');
    return { status: 'error', error };
  }

  private alarm(alarm: Alarm, note: string, state: WitnessState | undefined): PollResult {
    this.opts.metrics?.alarm.set({ kind: alarm.kind }, 1);
    // the offending signed note is kept in the log line: with a valid signature it proves the log misbehaved
    this.opts.log.error(
      { alarm: alarm.kind, detail: alarm.detail, witnessed: state ? { treeSize: state.treeSize, rootHash: state.rootHash, checkpoint: state.checkpoint } : null, served: note },
      `audit log witness alarm: ${alarm.kind}`,
    );
    return { status: 'alarm', alarm, exitCode: ALARM_EXIT[alarm.kind] };
  }
}

/**
 * `--once`: one poll, its exit code. Otherwise polls every `intervalMs` until `signal` aborts, and
 * returns the exit code of the first alarm seen (0 without one): alarms do not stop the witness, so
 * its metrics stay up and a persisting problem is reported again at every poll.
 */
export async function runWitness(witness: AuditWitness, options: { once: boolean; intervalMs: number; signal: AbortSignal }): Promise<number> {
  if (options.once) {
    const result = await witness.poll();
    return result.status === 'verified' ? WitnessExit.OK : result.status === 'alarm' ? result.exitCode : WitnessExit.ERROR;
  }
  let exitCode: number = WitnessExit.OK;
  while (!options.signal.aborted) {
    const result = await witness.poll();
    if (result.status === 'alarm' && exitCode === WitnessExit.OK) exitCode = result.exitCode;
    await new Promise<void>((resolve) => {
      const timer = setTimeout(done, options.intervalMs);
      options.signal.addEventListener('abort', done, { once: true });
      function done() {
        clearTimeout(timer);
        options.signal.removeEventListener('abort', done);
        resolve();
      }
    });
  }
  return exitCode;
}
