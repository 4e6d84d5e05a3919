/**
 * `keywarden audit witness` as a real child process against a real broker on a loopback port:
 * what an operator running a witness outside the broker's trust domain would see.
 */
import crypto from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { checkAgainstState, openSignedCheckpoint } from '../../src/audit/audit-witness.js';
import { leafHash, referenceConsistencyProof, referenceRoot } from '../../src/audit/merkle.js';
import { ed25519KeyFromSeed, formatCheckpoint, parseVerifierKey, signNote, verifierKeyString } from '../../src/audit/signed-note.js';
import { baseEnv, closedPort, runCli, startCli, startCliBroker, waitFor, type CliBroker, type CliResult } from '../cli/cli-support.js';

const SEQUENCER_OFF = { KEYWARDEN_AUDIT_SEQUENCE_INTERVAL_MS: '0' };

let broker: CliBroker;
let auditorKeyFile: string;
let writer: string;
let verifierKey: string;
let dir: string;

beforeAll(async () => {
  broker = await startCliBroker({ env: SEQUENCER_OFF });
  dir = fs.mkdtempSync(path.join(os.tmpdir(), 'kw-witness-'));
  auditorKeyFile = path.join(dir, 'auditor.key');
  fs.writeFileSync(auditorKeyFile, (await broker.tb.apiKey('auditor')) + '\n', { mode: 0o600 });
  writer = await broker.tb.apiKey('writer');
  const res = await broker.tb.request.get('/v1/audit/checkpoint').set(broker.admin);
  expect(res.status).toBe(200);
  verifierKey = res.body.verifierKey;
}, 60_000);

afterAll(async () => {
  await broker?.close();
  fs.rmSync(dir, { recursive: true, force: true });
});

/** Appends `n` audited writes and sequences them: the log grows by at least `n` leaves. */
async function grow(n: number, target: CliBroker = broker, writerKey = writer): Promise<number> {
  for (let i = 0; i < n; i++) {
    const res = await target.tb.request
      .post('/v1/secrets')
      .set({ Authorization: `Bearer ${writerKey}` })
      .send({ name: `w-${crypto.randomBytes(4).toString('hex')}`, value: 'v' });
    expect(res.status).toBe(201);
  }
  await target.tb.broker.services.auditSequencer.flush();
  return (await target.tb.broker.services.auditTree.latestHead())!.treeSize;
}

function freshState(): string {
  return path.join(fs.mkdtempSync(path.join(dir, 's-')), 'witness.json');
}

function witness(state: string, extra: string[] = [], url = broker.url): Promise<CliResult> {
  return runCli(['audit', 'witness', '--url', url, '--api-key-file', auditorKeyFile, '--state', state, ...extra], baseEnv());
}

function logLines(out: string): Array<Record<string, any>> {
  return out
    .split('\n')
    .filter((l) => l.startsWith('{'))
    .map((l) => JSON.parse(l));
}

function alarmsOf(r: CliResult): string[] {
  return logLines(r.stdout)
    .filter((l) => l.level === 50 && l.alarm)
    .map((l) => l.alarm);
}

const readState = (file: string) => JSON.parse(fs.readFileSync(file, 'utf8'));

describe('keywarden audit witness', () => {
  it('refuses to start without a key unless trust on first use is asked for', async () => {
    const state = freshState();
    const r = await witness(state, ['--once']);
    expect(r.code).toBe(1);
    expect(r.stderr).toMatch(/--key|--tofu/);
    expect(fs.existsSync(state)).toBe(false);
  }, 60_000);

  it('pins the first head with --key, then verifies growth through consistency proofs (exit 0)', async () => {
    const state = freshState();
    const first = await witness(state, ['--once', '--key', verifierKey]);
    expect(first.code, first.stdout + first.stderr).toBe(0);
    const pinned = readState(state);
    const head = (await broker.tb.broker.services.auditTree.latestHead())!;
    expect(pinned).toMatchObject({ verifierKey, treeSize: head.treeSize, rootHash: head.rootHash, checkpoint: head.note });
    expect(fs.statSync(state).mode & 0o777).toBe(0o600);

    // several steps, so both power-of-two and other old sizes are proven from
    let previous = pinned.treeSize;
    for (const n of [1, 3, 2]) {
      const size = await grow(n);
      expect(size).toBeGreaterThan(previous);
      const r = await witness(state, ['--once']);
      expect(r.code, r.stdout + r.stderr).toBe(0);
      expect(logLines(r.stdout).some((l) => l.msg === 'tree head verified' && l.previousSize === previous && l.treeSize === size)).toBe(true);
      expect(readState(state)).toMatchObject({ treeSize: size, rootHash: (await broker.tb.broker.services.auditTree.latestHead())!.rootHash });
      previous = size;
    }
    // a healthy log with nothing new: still exit 0
    expect((await witness(state, ['--once'])).code).toBe(0);
  }, 120_000);

  it('with --tofu pins the key the broker publishes, with a warning', async () => {
    const state = freshState();
    const r = await witness(state, ['--once', '--tofu']);
    expect(r.code, r.stdout + r.stderr).toBe(0);
    expect(readState(state).verifierKey).toBe(verifierKey);
    expect(logLines(r.stdout).some((l) => l.level === 40 && /trust on first use/.test(l.msg))).toBe(true);
  }, 60_000);

  it('the pinned key in the state file wins over a different --key (exit 1)', async () => {
    const state = freshState();
    expect((await witness(state, ['--once', '--key', verifierKey])).code).toBe(0);
    const before = fs.readFileSync(state, 'utf8');
    const other = verifierKeyString(parseVerifierKey(verifierKey).name, ed25519KeyFromSeed(crypto.randomBytes(32)).publicRaw);
    const r = await witness(state, ['--once', '--key', other]);
    expect(r.code).toBe(1);
    expect(r.stderr).toMatch(/pinned/);
    expect(fs.readFileSync(state, 'utf8')).toBe(before);
  }, 60_000);

  it('a fork (the same size with another root, or a bigger tree that does not extend the witnessed one) is alarm 2, and the state stays', async () => {
    const state = freshState();
    await grow(2);
    expect((await witness(state, ['--once', '--key', verifierKey])).code).toBe(0);
    // the witness saw another tree of this size (what a split view shows one of two witnesses)
    const forked = { ...readState(state), rootHash: crypto.randomBytes(32).toString('hex') };
    fs.writeFileSync(state, JSON.stringify(forked));
    const before = fs.readFileSync(state, 'utf8');

    const same = await witness(state, ['--once']);
    expect(same.code, same.stdout + same.stderr).toBe(2);
    expect(alarmsOf(same)).toEqual(['fork']);
    expect(fs.readFileSync(state, 'utf8')).toBe(before);

    await grow(3);
    const bigger = await witness(state, ['--once']);
    expect(bigger.code, bigger.stdout + bigger.stderr).toBe(2);
    expect(alarmsOf(bigger)).toEqual(['inconsistent']);
    expect(fs.readFileSync(state, 'utf8')).toBe(before);
  }, 120_000);

  it('a checkpoint signed by another key (another broker under the same origin) is alarm 4', async () => {
    // a second log with its own key but the same name: what an impostor broker serves
    const impostor = await startCliBroker({ env: SEQUENCER_OFF });
    try {
      const state = freshState();
      expect((await witness(state, ['--once', '--key', verifierKey])).code).toBe(0);
      const before = fs.readFileSync(state, 'utf8');
      const impostorAuditor = await impostor.tb.apiKey('auditor');
      const r = await runCli(
        ['audit', 'witness', '--url', impostor.url, '--state', state, '--once'],
        baseEnv({ KEYWARDEN_API_KEY: impostorAuditor }),
      );
      expect(r.code, r.stdout + r.stderr).toBe(4);
      expect(alarmsOf(r)).toEqual(['bad_signature']);
      expect(fs.readFileSync(state, 'utf8')).toBe(before);
    } finally {
      await impostor.close();
    }
  }, 120_000);

  it('a log truncated in the database (the newest heads, nodes and events deleted) is a rollback: alarm 3, and the state stays', async () => {
    const target = await startCliBroker({ env: SEQUENCER_OFF });
    try {
      const targetWriter = await target.tb.apiKey('writer');
      const older = await grow(3, target, targetWriter);
      await grow(4, target, targetWriter);
      const vkey = (await target.tb.request.get('/v1/audit/checkpoint').set(target.admin)).body.verifierKey;
      const state = freshState();
      const keyEnv = baseEnv({ KEYWARDEN_API_KEY: await target.tb.apiKey('auditor') });
      const args = ['audit', 'witness', '--url', target.url, '--state', state, '--once'];
      expect((await runCli([...args, '--key', vkey], keyEnv)).code).toBe(0);
      const before = fs.readFileSync(state, 'utf8');
      expect(JSON.parse(before).treeSize).toBeGreaterThan(older);

      // whoever can write the database rolls the log back to an older signed head
      const knex = target.tb.handle.knex;
      await knex('audit_tree_heads').where('tree_size', '>', older).del();
      const nodes: Array<{ level: number; idx: number }> = await knex('audit_tree_nodes').select('level', 'idx');
      for (const n of nodes) if ((Number(n.idx) + 1) * 2 ** Number(n.level) > older) await knex('audit_tree_nodes').where({ level: n.level, idx: n.idx }).del();
      await knex('audit_events').where('leaf_index', '>=', older).del();
      expect((await target.tb.broker.services.auditTree.latestHead())!.treeSize).toBe(older);

      const r = await runCli(args, keyEnv);
      expect(r.code, r.stdout + r.stderr).toBe(3);
      expect(alarmsOf(r)).toEqual(['rollback']);
      expect(fs.readFileSync(state, 'utf8')).toBe(before);
    } finally {
      await target.close();
    }
  }, 120_000);

  it('a signed time earlier than the witnessed one is alarm 3', async () => {
    const state = freshState();
    expect((await witness(state, ['--once', '--key', verifierKey])).code).toBe(0);
    const future = { ...readState(state), time: new Date(Date.now() + 3600_000).toISOString() };
    fs.writeFileSync(state, JSON.stringify(future));
    const before = fs.readFileSync(state, 'utf8');
    const r = await witness(state, ['--once']);
    expect(r.code, r.stdout + r.stderr).toBe(3);
    expect(alarmsOf(r)).toEqual(['time_rollback']);
    expect(fs.readFileSync(state, 'utf8')).toBe(before);
  }, 60_000);

  it('a broker it cannot reach is not an alarm: exit 1 with --once, nothing written', async () => {
    const state = freshState();
    const r = await witness(state, ['--once', '--key', verifierKey], `http://127.0.0.1:${await closedPort()}`);
    expect(r.code).toBe(1);
    expect(alarmsOf(r)).toEqual([]);
    expect(fs.existsSync(state)).toBe(false);
  }, 60_000);

  describe('polling', () => {
    let running: ReturnType<typeof startCli> | undefined;
    afterEach(() => running?.kill('SIGKILL'));

    it('polls until SIGTERM, follows growth, and serves its metrics on 127.0.0.1', async () => {
      const state = freshState();
      const port = await closedPort();
      running = startCli(
        ['audit', 'witness', '--url', broker.url, '--api-key-file', auditorKeyFile, '--state', state, '--key', verifierKey, '--interval', '0.2', '--metrics-port', String(port)],
        baseEnv(),
      );
      const metric = async (name: string) => {
        const res = await fetch(`http://127.0.0.1:${port}/metrics`).catch(() => undefined);
        const m = res?.ok ? (await res.text()).match(new RegExp(`^${name} (\\S+)$`, 'm')) : null;
        return m ? Number(m[1]) : undefined;
      };
      const sizeNow = (await broker.tb.broker.services.auditTree.latestHead())!.treeSize;
      let seen: number | undefined;
      await waitFor(() => seen === sizeNow || (void metric('keywarden_witness_tree_size').then((v) => (seen = v)), false), 30_000);
      const grown = await grow(2);
      await waitFor(() => seen === grown || (void metric('keywarden_witness_tree_size').then((v) => (seen = v)), false), 30_000);
      expect(readState(state).treeSize).toBe(grown);
      const text = await (await fetch(`http://127.0.0.1:${port}/metrics`)).text();
      expect(text).toMatch(/^keywarden_witness_alarm\{kind="fork"\} 0$/m);
      expect(Number(text.match(/^keywarden_witness_last_success_timestamp_seconds (\S+)$/m)![1])).toBeGreaterThan(Date.now() / 1000 - 60);

      running.kill('SIGTERM');
      const done = await running.done;
      expect(done.code, done.stdout + done.stderr).toBe(0);
      running = undefined;
    }, 90_000);

    it('keeps polling after an alarm, latches the alarm metric, and exits with the alarm code on SIGTERM', async () => {
      const state = freshState();
      expect((await witness(state, ['--once', '--key', verifierKey])).code).toBe(0);
      fs.writeFileSync(state, JSON.stringify({ ...readState(state), rootHash: crypto.randomBytes(32).toString('hex') }));
      const before = fs.readFileSync(state, 'utf8');
      const port = await closedPort();
      running = startCli(['audit', 'witness', '--url', broker.url, '--api-key-file', auditorKeyFile, '--state', state, '--interval', '0.2', '--metrics-port', String(port)], baseEnv());
      let text = '';
      await waitFor(() => /^keywarden_witness_alarm\{kind="fork"\} 1$/m.test(text) || (void fetch(`http://127.0.0.1:${port}/metrics`).then((r) => r.text()).then((t) => (text = t), () => undefined), false), 30_000);
      running.kill('SIGTERM');
      const done = await running.done;
      running = undefined;
      expect(done.code).toBe(2);
      expect(alarmsOf(done).length).toBeGreaterThanOrEqual(1);
      expect(new Set(alarmsOf(done))).toEqual(new Set(['fork']));
      expect(fs.readFileSync(state, 'utf8')).toBe(before);
    }, 90_000);
  });
});

describe('witness checks (no broker can serve these notes)', () => {
  const { privateKey, publicRaw } = ed25519KeyFromSeed(crypto.randomBytes(32));
  const name = 'example.test/audit-log';
  const verifier = parseVerifierKey(verifierKeyString(name, publicRaw));
  const root = crypto.randomBytes(32);

  it('a note signed by the pinned key for another origin is wrong_origin', () => {
    const note = signNote(formatCheckpoint({ origin: 'other.test/log', size: 1, rootHash: root, extensions: [] }), name, privateKey);
    expect(openSignedCheckpoint(note, verifier)).toMatchObject({ ok: false, alarm: { kind: 'wrong_origin' } });
    const good = signNote(formatCheckpoint({ origin: name, size: 1, rootHash: root, extensions: [] }), name, privateKey);
    expect(openSignedCheckpoint(good, verifier)).toMatchObject({ ok: true });
  });

  it('a note with a flipped signature bit is bad_signature', () => {
    const good = signNote(formatCheckpoint({ origin: name, size: 1, rootHash: root, extensions: [] }), name, privateKey);
    const bad = good.replace(/— (\S+) (\S+)/, (_m, n: string, sig: string) => `— ${n} ${Buffer.from(Buffer.from(sig, 'base64').map((b, i) => (i === 10 ? b ^ 1 : b))).toString('base64')}`);
    expect(openSignedCheckpoint(bad, verifier)).toMatchObject({ ok: false, alarm: { kind: 'bad_signature' } });
  });

  it('growth is accepted only with a proof connecting the root the witness holds to the signed new root', async () => {
    const leaves = Array.from({ length: 7 }, (_, i) => leafHash(`leaf ${i}`));
    const oldRoot = referenceRoot(leaves.slice(0, 3)).toString('hex');
    const next = { checkpoint: { origin: name, size: 7, rootHash: referenceRoot(leaves), extensions: [] }, time: undefined };
    const proof = async (from: number, to: number) => {
      expect([from, to]).toEqual([3, 7]);
      return referenceConsistencyProof(leaves, 3);
    };
    expect(await checkAgainstState({ treeSize: 3, rootHash: oldRoot, time: null }, next, proof)).toEqual({ ok: true });
    // the same valid proof, but the witness remembers another old tree
    const otherOld = referenceRoot([leafHash('x'), ...leaves.slice(1, 3)]).toString('hex');
    expect(await checkAgainstState({ treeSize: 3, rootHash: otherOld, time: null }, next, proof)).toMatchObject({ ok: false, alarm: { kind: 'inconsistent' } });
  });
});
