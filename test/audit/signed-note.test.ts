import { createHash, generateKeyPairSync } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import {
  ED25519_ALG,
  NoteError,
  ed25519KeyFromSeed,
  formatCheckpoint,
  noteKeyId,
  openNote,
  parseCheckpoint,
  parseVerifierKey,
  signNote,
  verifierKeyString,
  type TreeCheckpoint,
} from '../../src/audit/signed-note.js';

// Vectors from github.com/golang/mod, sumdb/note/note_test.go (TestNewVerifier, TestNewSigner, TestSign, TestOpen),
// read at commit fe2ec04f7c3c3aa6fad97631aafcff6e49e2d1db.
const PETER_SKEY = 'PRIVATE+KEY+PeterNeumann+c74f20a3+AYEKFALVFGyNhPJEMzD1QIDr+Y7hfZx09iUvxdXHKDFz';
const PETER_VKEY = 'PeterNeumann+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW';
const ENOCH_VKEY = 'EnochRoot+af0cfe78+ATtqJ7zOtqQtYqOo0CpvDXNlMhV3HeJDpjrASKGLWdop';
const GO_TEXT = "If you think cryptography is the answer to your problem,\nthen you don't know what your problem is.\n";
const PETER_SIG =
  '\u2014 PeterNeumann x08go/ZJkuBS9UG/SffcvIAQxVBtiFupLLr8pAcElZInNIuGUgYN1FFYC2pZSNXgKvqfqdngotpRZb6KE6RyyBwJnAM=\n';
const ENOCH_SIG =
  '\u2014 EnochRoot rwz+eBzmZa0SO3NbfRGzPCpDckykFXSdeX+MNtCOXm2/5n2tiOHp+vAF1aGrQ5ovTG01oOTGwnWLox33WWd1RvMc+QQ=\n';
const GO_NOTE = `${GO_TEXT}\n${PETER_SIG}`; // TestSign's `want`

// Vector from github.com/C2SP/C2SP, signed-note.md, section "Verifier keys" / "Example".
const SPEC_VKEY = 'example.com/foo+530d903a+AekyeRrm56hApGFkyQR4ZCbV54Id2LKaANYcrnKv3U2k';
const SPEC_NOTE =
  'This is an example message.\n\n\u2014 example.com/foo Uw2QOkn8srV1yJGh2VYRlL1Tnagv1YEq6TfXppzi2ONncAlTgK7Ztg1ERYNZXsYjOBH3mFXmRKuwHjG1Yu72IneyaQM=\n';
// From github.com/C2SP/C2SP, signed-note.md, the opening example (no verifier key is published for it).
const QUASIMODO_NOTE =
  'Ognuno sta solo sul cuor della terra\ntrafitto da un raggio di sole:\n\ned \u00e8 subito sera.\n\n' +
  '\u2014 quasimodo.example/salvatore NnugSzTjtVAewIS+Z/iJhUPeFDkO/5QQ2i5ddnGITLlC+EhfLW9oJKONrMouFSQU0xMcXxj99ihAQwaqP3ZekRwNtIc=\n';
// From github.com/C2SP/C2SP, tlog-checkpoint.md, the opening example (no verifier key is published for it).
const SOFA_BODY = 'example.com/behind-the-sofa\n20852163\nCsUYapGGPo4dkMgIAUqom/Xajj7h2fB2MPA3j2jxq2I=\n';
const SOFA_NOTE = `${SOFA_BODY}\n\u2014 example.com/behind-the-sofa Az3grlgtzPICa5OS8npVmf1Myq/5IZniMp+ZJurmRDeOoRDe4URYN7u5/Zhcyv2q1gGzGku9nTo+zyWE+xeMcTOAYQ8=\n`;
// From github.com/golang/mod, sumdb/tlog/note_test.go (TestFormatTree / TestParseTree): the go.sum tree note,
// the checkpoint format's predecessor, whose root hash is tlog.RecordHash("hello world") = SHA-256(0x00 || data).
const GOSUM_TREE = 'go.sum database tree\n123456789012\nTszzRgjTG6xce+z2AG31kAXYKBgQVtCSCE40HmuwBb0=\n';

/** The 32-byte seed inside the Go PRIVATE+KEY string (after the 0x01 algorithm byte). */
function peterKey() {
  const material = Buffer.from(PETER_SKEY.split('+').slice(4).join('+'), 'base64');
  expect(material[0]).toBe(ED25519_ALG);
  return ed25519KeyFromSeed(material.subarray(1));
}

function reasonOf(fn: () => unknown): string {
  try {
    fn();
  } catch (err) {
    if (err instanceof NoteError) return err.reason;
    throw err; // anything but a NoteError is a crash, and fails the test
  }
  throw new Error('expected a NoteError, got success');
}

/** Deterministic PRNG (mulberry32) so a failing garbled input can be reproduced. */
function prng(seed: number) {
  return () => {
    seed = (seed + 0x6d2b79f5) | 0;
    let t = Math.imul(seed ^ (seed >>> 15), 1 | seed);
    t = (t + Math.imul(t ^ (t >>> 7), 61 | t)) ^ t;
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

describe('Ed25519 note keys', () => {
  it('derives the Go PeterNeumann verifier key and key id from its seed', () => {
    const key = peterKey();
    expect(noteKeyId('PeterNeumann', key.publicRaw).toString('hex')).toBe('c74f20a3');
    expect(verifierKeyString('PeterNeumann', key.publicRaw)).toBe(PETER_VKEY);
  });

  it('parses verifier keys from Go and from the spec', () => {
    const peter = parseVerifierKey(PETER_VKEY);
    expect(peter.name).toBe('PeterNeumann');
    expect(peter.keyId.toString('hex')).toBe('c74f20a3');
    expect(parseVerifierKey(SPEC_VKEY).keyId.toString('hex')).toBe('530d903a');
    expect(parseVerifierKey(ENOCH_VKEY).name).toBe('EnochRoot');
  });

  it('a parsed verifier checks signatures made with the seed, and refuses corrupted ones', () => {
    const key = peterKey();
    const verifier = parseVerifierKey(PETER_VKEY);
    const note = signNote('hi\n', 'PeterNeumann', key.privateKey);
    const sig = Buffer.from(note.split(' ').pop()!.trim(), 'base64').subarray(4);
    expect(verifier.verify(Buffer.from('hi\n'), sig)).toBe(true);
    expect(verifier.verify(Buffer.from('ho\n'), sig)).toBe(false);
    const bad = Buffer.from(sig);
    bad[0] ^= 1;
    expect(verifier.verify(Buffer.from('hi\n'), bad)).toBe(false);
    expect(verifier.verify(Buffer.from('hi\n'), sig.subarray(1))).toBe(false);
  });

  it('rejects every substring and every one-character change of a verifier key (as Go TestNewVerifier)', () => {
    for (let i = 0; i <= PETER_VKEY.length; i++) {
      for (let j = i + 1; j <= PETER_VKEY.length; j++) {
        if (i === 0 && j === PETER_VKEY.length) continue;
        expect(reasonOf(() => parseVerifierKey(PETER_VKEY.slice(i, j)))).toBeTruthy();
      }
    }
    for (let i = 0; i < PETER_VKEY.length; i++) {
      const mangled = PETER_VKEY.slice(0, i) + String.fromCharCode(PETER_VKEY.charCodeAt(i) + 1) + PETER_VKEY.slice(i + 1);
      expect(reasonOf(() => parseVerifierKey(mangled))).toBeTruthy();
    }
  });

  it('names why a verifier key is refused', () => {
    // Go TestNewVerifier: wrong length key and unknown algorithm, both with a key hash adjusted to match.
    // "BADKEY==" leaves non-zero bits in the padding ("Y="), which Go's lenient base64 accepts and we do not, so
    // here it fails one step earlier than in Go.
    expect(reasonOf(() => parseVerifierKey('PeterNeumann+cc469956+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TWBADKEY=='))).toBe(
      'malformed verifier key base64',
    );
    const longKey = Buffer.concat([Buffer.from(PETER_VKEY.split('+')[2], 'base64'), Buffer.of(0)]);
    const longKeyId = createHash('sha256').update('PeterNeumann\n').update(longKey).digest().subarray(0, 4).toString('hex');
    expect(reasonOf(() => parseVerifierKey(`PeterNeumann+${longKeyId}+${longKey.toString('base64')}`))).toBe(
      'malformed Ed25519 verifier key',
    );
    expect(reasonOf(() => parseVerifierKey('PeterNeumann+173116ae+ZRpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW'))).toBe(
      'unsupported signature type 0x65',
    );
    // Swapped key id: Enoch's id on Peter's key.
    expect(reasonOf(() => parseVerifierKey(PETER_VKEY.replace('c74f20a3', 'af0cfe78')))).toBe('verifier key id does not match key');
    expect(reasonOf(() => parseVerifierKey(PETER_VKEY.replace('c74f20a3', 'C74F20A3')))).toBe('malformed verifier key id');
    expect(reasonOf(() => parseVerifierKey(PETER_VKEY.replace('+ARpc', '+ARpc!')))).toBe('malformed verifier key base64');
    expect(reasonOf(() => parseVerifierKey(PETER_VKEY.replace('/', '_')))).toBe('malformed verifier key base64');
    expect(reasonOf(() => parseVerifierKey(`Peter Neumann${PETER_VKEY.slice('PeterNeumann'.length)}`))).toBe('invalid key name');
    expect(reasonOf(() => parseVerifierKey(`+${PETER_VKEY}`))).toBe('invalid key name');
  });

  it('refuses seeds and public keys of the wrong size, and bad names', () => {
    expect(reasonOf(() => ed25519KeyFromSeed(Buffer.alloc(31)))).toBe('Ed25519 seed must be 32 bytes');
    expect(reasonOf(() => noteKeyId('a', Buffer.alloc(33)))).toBe('Ed25519 public key must be 32 bytes');
    for (const name of ['', 'a+b', 'a b', 'a\u00a0b', 'a\u3000b', 'a\tb', 'a\ud800b']) {
      expect(reasonOf(() => verifierKeyString(name, Buffer.alloc(32)))).toBe('invalid key name');
    }
  });
});

describe('signNote', () => {
  it('reproduces the Go-signed note byte for byte (Ed25519 is deterministic)', () => {
    expect(signNote(GO_TEXT, 'PeterNeumann', peterKey().privateKey)).toBe(GO_NOTE);
  });

  it('refuses text that is not a valid note text, bad names and non-Ed25519 keys', () => {
    const { privateKey } = peterKey();
    expect(reasonOf(() => signNote('abc', 'PeterNeumann', privateKey))).toBe('malformed note text'); // Go TestSign
    expect(reasonOf(() => signNote('a\u0001b\n', 'PeterNeumann', privateKey))).toBe('malformed note text');
    expect(reasonOf(() => signNote('a\rb\n', 'PeterNeumann', privateKey))).toBe('malformed note text');
    expect(reasonOf(() => signNote('a\ud800\n', 'PeterNeumann', privateKey))).toBe('malformed note text');
    expect(reasonOf(() => signNote(GO_TEXT, 'bad name', privateKey))).toBe('invalid key name'); // Go TestSign badSigner
    expect(reasonOf(() => signNote(GO_TEXT, 'a+b', privateKey))).toBe('invalid key name');
    const ec = generateKeyPairSync('ec', { namedCurve: 'P-256' });
    expect(reasonOf(() => signNote(GO_TEXT, 'PeterNeumann', ec.privateKey))).toBe('signing key must be an Ed25519 private key');
    expect(reasonOf(() => signNote(GO_TEXT, 'PeterNeumann', peterKey().publicKey))).toBe(
      'signing key must be an Ed25519 private key',
    );
  });
});

describe('openNote', () => {
  const peter = parseVerifierKey(PETER_VKEY);
  const enoch = parseVerifierKey(ENOCH_VKEY);

  it('opens the Go-signed note and the spec example', () => {
    expect(openNote(GO_NOTE, [peter])).toEqual({ text: GO_TEXT, verifiedBy: ['PeterNeumann'] });
    expect(openNote(SPEC_NOTE, [parseVerifierKey(SPEC_VKEY)])).toEqual({
      text: 'This is an example message.\n',
      verifiedBy: ['example.com/foo'],
    });
  });

  it('ignores signatures by unknown keys and reports every known signer (Go TestOpen)', () => {
    const note = `${GO_TEXT}\n${PETER_SIG}${ENOCH_SIG}`;
    expect(openNote(note, [peter]).verifiedBy).toEqual(['PeterNeumann']);
    expect(openNote(note, [enoch]).verifiedBy).toEqual(['EnochRoot']);
    expect(openNote(note, [peter, enoch]).verifiedBy).toEqual(['PeterNeumann', 'EnochRoot']);
    expect(reasonOf(() => openNote(note, []))).toBe('note has no verifiable signatures');
    // Repeats by a known key are skipped, as in Go.
    expect(openNote(`${GO_TEXT}\n${PETER_SIG}${PETER_SIG}${ENOCH_SIG}`, [peter]).verifiedBy).toEqual(['PeterNeumann']);
  });

  it('takes the text up to the last empty line, so texts may hold empty lines (spec example)', () => {
    // No key is published for this example: it must get as far as "no verifiable signatures", not "malformed".
    const stranger = parseVerifierKey(verifierKeyString('quasimodo.example/salvatore', peterKey().publicRaw));
    expect(reasonOf(() => openNote(QUASIMODO_NOTE, [stranger]))).toBe('note has no verifiable signatures');
    const { privateKey, publicRaw } = peterKey();
    const text = 'one\n\ntwo\n';
    const note = signNote(text, 'PeterNeumann', privateKey);
    expect(openNote(note, [parseVerifierKey(verifierKeyString('PeterNeumann', publicRaw))]).text).toBe(text);
  });

  it('rejects a tampered body', () => {
    const tampered = GO_NOTE.replace('cryptography', 'cryptographY');
    expect(reasonOf(() => openNote(tampered, [peter]))).toBe('invalid signature for key PeterNeumann+c74f20a3');
    // Go TestOpen: four base64 characters spliced into the signature.
    const spliced = `${GO_TEXT}\n${PETER_SIG.slice(0, 60)}ABCD${PETER_SIG.slice(60)}`;
    expect(reasonOf(() => openNote(spliced, [peter]))).toBe('invalid signature for key PeterNeumann+c74f20a3');
  });

  it('rejects a note signed by another key of the same name, and a swapped key id', () => {
    const other = ed25519KeyFromSeed(Buffer.alloc(32, 7));
    const impostor = signNote(GO_TEXT, 'PeterNeumann', other.privateKey);
    expect(reasonOf(() => openNote(impostor, [peter]))).toBe('note has no verifiable signatures');
    // The impostor's signature relabelled with Peter's key id: now it is "known" and must fail to verify.
    const raw = Buffer.from(impostor.trimEnd().split(' ').pop()!, 'base64');
    peter.keyId.copy(raw, 0);
    const relabelled = `${GO_TEXT}\n\u2014 PeterNeumann ${raw.toString('base64')}\n`;
    expect(reasonOf(() => openNote(relabelled, [peter]))).toBe('invalid signature for key PeterNeumann+c74f20a3');
  });

  it('accepts 100 signature lines and refuses 101 (Go limit)', () => {
    expect(openNote(`${GO_TEXT}\n${PETER_SIG.repeat(100)}`, [peter]).verifiedBy).toEqual(['PeterNeumann']);
    expect(reasonOf(() => openNote(`${GO_TEXT}\n${PETER_SIG.repeat(101)}`, [peter]))).toBe('malformed note: too many signatures');
    expect(reasonOf(() => openNote(`${GO_TEXT}\n${PETER_SIG.repeat(101)}`, []))).toBe('malformed note: too many signatures');
  });

  it('refuses ambiguous verifiers only when their key signed', () => {
    expect(reasonOf(() => openNote(`${GO_TEXT}\n${ENOCH_SIG}`, [enoch, peter, enoch]))).toBe('ambiguous key EnochRoot+af0cfe78');
    expect(openNote(GO_NOTE, [enoch, peter, enoch]).verifiedBy).toEqual(['PeterNeumann']);
  });

  it('rejects the malformed messages of Go TestOpen', () => {
    const bad = [
      GO_TEXT,
      `${GO_TEXT}\n`,
      `${GO_TEXT}\n${PETER_SIG.slice(0, -1)}`, // missing final newline
      `\u0001${GO_TEXT}\n${PETER_SIG}`,
      `${GO_TEXT}\n\u2014 Bad Name x08go/ZJkuBS9UG/SffcvIAQxVBtiFupLLr8pAcElZInNIuGUgYN1FFYC2pZSNXgKvqfqdngotpRZb6KE6RyyBwJnAM=`,
      `${GO_TEXT}\n${PETER_SIG}Unexpected line.\n`,
    ];
    for (const note of bad) expect(reasonOf(() => openNote(note, [peter]))).toMatch(/^malformed note/);
  });

  it('rejects bad base64, a hyphen instead of the em dash, and a bare key id', () => {
    const cases = [
      `${GO_TEXT}\n${PETER_SIG.replace('x08go/', 'x08go_')}`, // URL-safe alphabet
      `${GO_TEXT}\n${PETER_SIG.replace('JnAM=', 'JnAM')}`, // unpadded
      `${GO_TEXT}\n${PETER_SIG.replace('JnAM=', 'JnAN=')}`, // non-zero padding bits
      `${GO_TEXT}\n${PETER_SIG.replace('\u2014 ', '- ')}`,
      `${GO_TEXT}\n\u2014 PeterNeumann x08gow==\n`, // key id only, no signature
      `${GO_TEXT}\n\u2014 PeterNeumann\n`,
      `${GO_TEXT}\n\u2014 PeterNeumann \n`,
    ];
    for (const note of cases) expect(reasonOf(() => openNote(note, [peter]))).toBe('malformed note: bad signature line');
  });

  it('throws only NoteError on every truncation and every one-character change of a signed note', () => {
    for (let i = 0; i < GO_NOTE.length; i++) reasonOf(() => openNote(GO_NOTE.slice(0, i), [peter]));
    for (let i = 0; i < GO_NOTE.length; i++) {
      const c = GO_NOTE.charCodeAt(i);
      for (const replacement of [c + 1, c - 1, 0x0a, 0x20]) {
        if (replacement === c) continue;
        const mangled = GO_NOTE.slice(0, i) + String.fromCharCode(replacement) + GO_NOTE.slice(i + 1);
        reasonOf(() => openNote(mangled, [peter]));
      }
    }
  });

  it('throws only NoteError on random garbage built from note-ish pieces', () => {
    const random = prng(20240315);
    const pieces = ['\n', '\n\n', '\u2014 ', ' ', 'PeterNeumann', '+', '=', 'x08go/ZJ', 'AAAA', '\u00e8', '\ud800', '\u0000', 'ab'];
    for (let n = 0; n < 2000; n++) {
      let s = '';
      const len = Math.floor(random() * 20);
      for (let k = 0; k < len; k++) s += pieces[Math.floor(random() * pieces.length)];
      reasonOf(() => openNote(s, [peter]));
      try {
        parseCheckpoint(s);
      } catch (err) {
        expect(err).toBeInstanceOf(NoteError);
      }
    }
  });
});

describe('tlog checkpoints', () => {
  const goSumRoot = createHash('sha256').update(Buffer.from([0])).update('hello world').digest();

  it('parses the C2SP tlog-checkpoint example and formats it back identically', () => {
    const cp = parseCheckpoint(SOFA_BODY);
    expect(cp.origin).toBe('example.com/behind-the-sofa');
    expect(cp.size).toBe(20852163);
    expect(cp.rootHash.toString('base64')).toBe('CsUYapGGPo4dkMgIAUqom/Xajj7h2fB2MPA3j2jxq2I=');
    expect(cp.extensions).toEqual([]);
    expect(formatCheckpoint(cp)).toBe(SOFA_BODY);
    // No key is published for the example note: it must parse, and then fail only for want of a known key.
    const stranger = parseVerifierKey(verifierKeyString('example.com/behind-the-sofa', peterKey().publicRaw));
    expect(reasonOf(() => openNote(SOFA_NOTE, [stranger]))).toBe('note has no verifiable signatures');
  });

  it('formats and parses the Go go.sum tree note (an origin with spaces)', () => {
    const cp: TreeCheckpoint = { origin: 'go.sum database tree', size: 123456789012, rootHash: goSumRoot, extensions: [] };
    expect(formatCheckpoint(cp)).toBe(GOSUM_TREE);
    expect(parseCheckpoint(GOSUM_TREE)).toEqual(cp);
  });

  it('round-trips a checkpoint with extension lines through a signed note', () => {
    const key = ed25519KeyFromSeed(Buffer.alloc(32, 42));
    const cp: TreeCheckpoint = { origin: 'keywarden.example/audit', size: 0, rootHash: goSumRoot, extensions: ['ext one', 'two'] };
    const note = signNote(formatCheckpoint(cp), cp.origin, key.privateKey);
    const opened = openNote(note, [parseVerifierKey(verifierKeyString(cp.origin, key.publicRaw))]);
    expect(parseCheckpoint(opened.text)).toEqual(cp);
  });

  it('rejects malformed sizes: leading zero, sign, hex, oversize', () => {
    const withSize = (s: string) => `example.com/log\n${s}\nCsUYapGGPo4dkMgIAUqom/Xajj7h2fB2MPA3j2jxq2I=\n`;
    expect(parseCheckpoint(withSize('0')).size).toBe(0);
    expect(parseCheckpoint(withSize('9007199254740991')).size).toBe(Number.MAX_SAFE_INTEGER);
    for (const s of ['020852163', '00', '-1', '+1', ' 1', '1 ', '1e3', '0xabcdef', '1.0', '']) {
      expect(reasonOf(() => parseCheckpoint(withSize(s)))).toMatch(/^malformed checkpoint/);
    }
    expect(reasonOf(() => parseCheckpoint(withSize('9007199254740992')))).toBe('checkpoint size too large');
    expect(reasonOf(() => parseCheckpoint(withSize('123456789012345678901234567890')))).toBe('checkpoint size too large');
  });

  it('rejects bad root hashes, empty origins, empty lines and a missing final newline', () => {
    const withHash = (h: string) => `example.com/log\n1\n${h}\n`;
    expect(reasonOf(() => parseCheckpoint(withHash('TszzRgjTG6xce+z2AG31kAXYKBgQVtCSCE40HmuwBTOOBIG=')))).toBe(
      'malformed checkpoint root hash',
    ); // Go TestParseTree
    expect(reasonOf(() => parseCheckpoint(withHash(Buffer.alloc(31).toString('base64'))))).toBe('malformed checkpoint root hash');
    expect(reasonOf(() => parseCheckpoint(withHash(Buffer.alloc(33).toString('base64'))))).toBe('malformed checkpoint root hash');
    expect(reasonOf(() => parseCheckpoint(withHash('CsUYapGGPo4dkMgIAUqom/Xajj7h2fB2MPA3j2jxq2J=')))).toBe(
      'malformed checkpoint root hash',
    );
    expect(reasonOf(() => parseCheckpoint(withHash('CsUYapGGPo4dkMgIAUqom_Xajj7h2fB2MPA3j2jxq2I=')))).toBe(
      'malformed checkpoint root hash',
    );
    expect(reasonOf(() => parseCheckpoint(`\n${SOFA_BODY.slice(SOFA_BODY.indexOf('\n') + 1)}`))).toBe(
      'malformed checkpoint: empty line',
    );
    expect(reasonOf(() => parseCheckpoint(`${SOFA_BODY}\n`))).toBe('malformed checkpoint: empty line');
    expect(reasonOf(() => parseCheckpoint(SOFA_BODY.slice(0, -1)))).toBe('malformed checkpoint');
    expect(reasonOf(() => parseCheckpoint('example.com/log\n1\n'))).toBe('malformed checkpoint: fewer than three lines');
    expect(reasonOf(() => parseCheckpoint(`${SOFA_BODY}ext\u0007\n`))).toBe('malformed checkpoint');
  });

  it('refuses to format what it would refuse to parse', () => {
    const ok: TreeCheckpoint = { origin: 'example.com/log', size: 1, rootHash: goSumRoot, extensions: [] };
    expect(reasonOf(() => formatCheckpoint({ ...ok, origin: '' }))).toBe('malformed checkpoint origin');
    expect(reasonOf(() => formatCheckpoint({ ...ok, origin: 'a\nb' }))).toBe('malformed checkpoint origin');
    expect(reasonOf(() => formatCheckpoint({ ...ok, size: -1 }))).toBe('malformed checkpoint size');
    expect(reasonOf(() => formatCheckpoint({ ...ok, size: 1.5 }))).toBe('malformed checkpoint size');
    expect(reasonOf(() => formatCheckpoint({ ...ok, size: 2 ** 53 }))).toBe('malformed checkpoint size');
    expect(reasonOf(() => formatCheckpoint({ ...ok, rootHash: Buffer.alloc(20) }))).toBe('malformed checkpoint root hash');
    expect(reasonOf(() => formatCheckpoint({ ...ok, extensions: [''] }))).toBe('malformed checkpoint extension line');
    expect(reasonOf(() => formatCheckpoint({ ...ok, extensions: ['a\nb'] }))).toBe('malformed checkpoint extension line');
  });
});
