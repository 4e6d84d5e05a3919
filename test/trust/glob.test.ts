/**
 * One glob engine (src/trust/glob.ts) for signer scopes, release policy selection, claim rules and
 * label rules. The same table runs against the module, through a signer scope check and a policy
 * selection, and through a running broker (a scoped signer key signing, a release decision), so a
 * pattern can never select different images in a signer scope and in a policy.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Principal } from '../../src/identity/identity-types.js';
import { selectPolicy, type PolicyDocument } from '../../src/trust/gate/policy-schema.js';
import { matchesImagePattern, matchesValueGlob } from '../../src/trust/glob.js';
import { signingScopeProblem } from '../../src/trust/signing/signatures-service.js';
import { claimMismatch } from '../../src/trust/signing/trusted-issuers-service.js';
import { bearer, startTestBroker, type TestBroker } from '../support/broker.js';

/** [image pattern, registry/repository, matches] */
const IMAGE_CASES: Array<[string, string, boolean]> = [
  ['r.io/team/app', 'r.io/team/app', true],
  ['r.io/team/app', 'r.io/team/app2', false],
  ['r.io/team/*', 'r.io/team/app', true],
  ['r.io/team/*', 'r.io/team/app/sub', false], // * stays in one segment
  ['r.io/team/*', 'r.io/team', false],
  ['r.io/*/app', 'r.io/team/app', true],
  ['r.io/te?m/app', 'r.io/team/app', true],
  ['r.io/te?m/app', 'r.io/te/m/app', false], // ? never matches /
  ['r.io/team/**', 'r.io/team/app', true],
  ['r.io/team/**', 'r.io/team/app/sub/deeper', true],
  ['r.io/team/**', 'r.io/team', false], // ** needs at least one more segment
  ['r.io/team**', 'r.io/team', false], // ... and at least one character (signer scopes used to say true)
  ['r.io/team**', 'r.io/team2/app', true],
  ['r.io/**/app', 'r.io/team/app', true],
  ['r.io/**/app', 'r.io/a/b/c/app', true],
  ['r.io/**/app', 'r.io/app', false],
  ['r.io/**', 'q.io/team/app', false],
  ['**', 'r.io/team/app', true],
  ['*.example.com/app', 'registry.example.com/app', true],
  ['*.example.com/app', 'registry.example.com/team/app', false],
  ['127.0.0.1:5000/**', '127.0.0.1:5000/team/app/sub', true],
  ['R.IO/Team/*', 'r.io/team/app', true], // case-insensitive (signer scopes used to say false)
  ['r.io/team/[ab]', 'r.io/team/a', false], // brackets are literal
  ['r.io/team/[ab]', 'r.io/team/[ab]', true],
  ['r.io/team.app', 'r.io/teamxapp', false], // . is literal
];

/** [value glob, claim or label value, matches] */
const VALUE_CASES: Array<[string, string, boolean]> = [
  ['refs/heads/main', 'refs/heads/main', true],
  ['refs/heads/main', 'refs/heads/Main', false], // claims are case-sensitive
  ['refs/heads/main', 'refs/heads/main2', false],
  ['refs/tags/v*', 'refs/tags/v1.2.3', true],
  ['refs/tags/v*', 'refs/tags/v1/x', true], // no segments in values: * spans /
  ['refs/tags/v*', 'refs/heads/v1', false],
  ['repo:org/*', 'repo:ORG/app', false],
  ['v?.*', 'v1.2', true],
  ['v?.*', 'v12', false],
  ['a**b', 'ab', true], // ** is * here
  ['a?c', 'a\u{1F600}c', true], // ? is one code point
  ['*', '', true],
  ['https://*', 'https://x/y', true],
  ['https://*', 'http://x', false],
  ['line*', 'line1\nline2', true],
];

const signer = (images: string[]): Principal => ({ kind: 'operator', role: 'signer', id: 'k', name: 'ci', scope: { keys: ['release'], images }, via: 'api-key' });
const policy = (name: string, images: string[]) => ({ name, version: 1, document: { name, images, mode: 'enforce' } as PolicyDocument });

describe('image patterns: one meaning for signer scopes and release policies', () => {
  it.each(IMAGE_CASES)('%s vs %s -> %s', (pattern, repository, expected) => {
    expect(matchesImagePattern(pattern, repository)).toBe(expected);
    expect(signingScopeProblem(signer([pattern]), 'release', repository) === undefined).toBe(expected);
    expect(selectPolicy([policy('p', [pattern])], repository)?.policy.name).toBe(expected ? 'p' : undefined);
  });
});

describe('value globs: claim rules and label rules', () => {
  it.each(VALUE_CASES)('%s vs %j -> %s', (pattern, value, expected) => {
    expect(matchesValueGlob(pattern, value)).toBe(expected);
    expect(claimMismatch({ ref: value }, { ref: pattern }) === undefined).toBe(expected);
    expect(claimMismatch({ ref: value }, { ref: ['no-such-value', pattern] }) === undefined).toBe(expected);
  });
});

describe('matching time does not depend on backtracking', () => {
  // A backtracking regular expression needs about n^7 steps for these; the matcher needs n*m.
  const n = 20_000;
  it('value globs with many stars against a long run of one letter', () => {
    const pattern = '*a*a*a*a*a*a*a*b';
    expect(matchesValueGlob(pattern, 'a'.repeat(n))).toBe(false);
    expect(matchesValueGlob(pattern, 'a'.repeat(n) + 'b')).toBe(true);
  });

  it('image patterns with many ** against a long, deep repository', () => {
    const deep = `r.io/${Array.from({ length: n / 2 }, () => 'a').join('/')}`;
    expect(matchesImagePattern('r.io/**a**a**a**a**a**a**a**b', deep)).toBe(false);
    expect(matchesImagePattern('r.io/**a**a**a**a**a**a**a**b', `${deep}/b`)).toBe(true);
    expect(matchesImagePattern('r.io/*a*a*a*a*a*a*a*b', `r.io/${'a'.repeat(n)}`)).toBe(false);
    expect(signingScopeProblem(signer(['r.io/**a**a**a**a**a**a**a**b']), 'release', deep)).toMatch(/outside this signer's scope/);
  });
});

describe('a running broker reads every pattern the same way for signing and for release decisions', () => {
  let tb: TestBroker;
  let admin: Record<string, string>;
  let writer: Record<string, string>;
  const DIGEST = `sha256:${'d'.repeat(64)}`;

  beforeAll(async () => {
    tb = await startTestBroker();
    admin = bearer(tb.adminKey);
    writer = bearer(await tb.apiKey('writer'));
    // a scope names only existing keys: a disabled one is refused right after the scope check
    expect((await tb.request.post('/v1/signing-keys').set(admin).send({ name: 'parked-key' })).status).toBe(201);
    expect((await tb.request.post('/v1/signing-keys/parked-key/disable').set(admin)).status).toBe(200);
  });
  afterAll(async () => {
    await tb?.close();
  });

  // values that are not valid image references ([ab]) stay in the unit table above
  const referenceCases = IMAGE_CASES.map((c, i) => [i, ...c] as const).filter(([, , repository]) => /^[a-z0-9.:/_-]+$/.test(repository));

  it.each(referenceCases)('case %i: %s vs %s -> %s', async (i, pattern, repository, expected) => {
    // signing: the scope check comes first; inside the scope the (disabled) key is the next refusal
    const key = await tb.apiKey('signer', { scope: { keys: ['parked-key'], images: [pattern] } });
    const signed = await tb.request.post('/v1/signatures').set(bearer(key)).send({ image: `${repository}:v1`, key: 'parked-key' });
    if (expected) {
      expect(signed.status, signed.text).toBe(403);
      expect(signed.body.detail).toMatch(/signing key parked-key is disabled/);
    } else {
      expect(signed.status, signed.text).toBe(403);
      expect(signed.body.detail).toMatch(/outside this signer's scope/);
    }

    // release decision: a policy without remote checks decides without contacting a registry
    const name = `glob-case-${i}`;
    const created = await tb.request.post('/v1/policies').set(admin).send({ name, images: [pattern] });
    expect(created.status, created.text).toBe(201);
    try {
      const decided = await tb.request.post('/v1/releases').set(writer).send({ image: `${repository}@${DIGEST}` });
      expect(decided.status, decided.text).toBe(200);
      expect(decided.body.policy).toBe(expected ? name : null);
    } finally {
      expect((await tb.request.delete(`/v1/policies/${name}`).set(admin)).status).toBe(204);
    }
  });
});
