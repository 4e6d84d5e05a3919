import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { listen, type RunningServer } from '../../src/http/server.js';
import { baseEnv, startCli } from '../cli/cli-support.js';
import { startTestBroker, type TestBroker } from '../support/broker.js';
import { pushTestImage, registryAvailable, startRegistry, type PushedImage, type TestRegistry } from '../support/registry.js';
import { auth, createKey, registerIssuer, startCiIssuer, type CiIssuer } from './helpers.js';

const available = registryAvailable().ok;

let tb: TestBroker;
let server: RunningServer;
let reg: TestRegistry;
let ci: CiIssuer;
let img: PushedImage;

describe.skipIf(!available)('keywarden sign (CLI)', () => {
  beforeAll(async () => {
    [reg, ci] = await Promise.all([startRegistry(), startCiIssuer('RS256')]);
    tb = await startTestBroker({ env: { KEYWARDEN_INSECURE_REGISTRIES: reg.hostPort } });
    server = await listen(tb.broker.app, { listen: { host: '127.0.0.1', port: 0 }, tls: undefined });
    await createKey(tb, 'release');
    await registerIssuer(tb, ci, [`${reg.hostPort}/org/*`]);
    img = await pushTestImage(reg.hostPort, 'org/app', 'v1');
  });
  afterAll(async () => {
    await server?.close();
    await Promise.all([tb?.close(), reg?.stop(), ci?.close()]);
  });

  it('exchanges the CI token, signs, prints digest and signature ref; bad credentials exit 77', async () => {
    const image = `${reg.hostPort}/org/app:v1`;
    const env = (extra: Record<string, string>) => baseEnv({ KEYWARDEN_ADDR: server.url, ...extra });
    const [ok, badToken, outOfScope] = await Promise.all([
      startCli(['sign', image, '--key', 'release', '--bundle', '--annotation', 'git.sha=abc123'], env({ ACTIONS_ID_TOKEN: await ci.mint() })).done,
      startCli(['sign', image, '--key', 'release'], env({ ACTIONS_ID_TOKEN: await ci.mint({ ref: 'refs/heads/main' }) })).done,
      startCli(['sign', `${reg.hostPort}/team/app:v1`, '--key', 'release'], env({ ACTIONS_ID_TOKEN: await ci.mint() })).done,
    ]);

    expect(ok.code, ok.stderr).toBe(0);
    const sigTag = `${img.digest.replace(':', '-')}.sig`;
    expect(ok.stdout).toContain(`digest: ${img.digest}\n`);
    expect(ok.stdout).toContain(`signature: ${reg.hostPort}/org/app:${sigTag}\n`);
    expect(ok.stdout).toMatch(/bundle: 127\.0\.0\.1:\d+\/org\/app@sha256:[a-f0-9]{64}\n/);
    const list = await tb.request.get('/v1/signatures').query({ image: `${reg.hostPort}/org/app@${img.digest}` }).set(auth(tb.adminKey));
    expect(list.body.items).toHaveLength(1);
    expect(list.body.items[0]).toMatchObject({ key: 'release', signedBy: 'signer:github' });
    const stored = await tb.broker.services.db('image_signatures').first();
    expect(JSON.parse(stored.payload).optional).toEqual({ 'git.sha': 'abc123' });

    expect(badToken.code, badToken.stderr).toBe(77);
    expect(badToken.stderr).toMatch(/claims_mismatch/);
    expect(badToken.stdout).toBe('');
    expect(outOfScope.code, outOfScope.stderr).toBe(77);
    expect(outOfScope.stderr).toMatch(/signing_not_allowed/);
  }, 120_000);
});
