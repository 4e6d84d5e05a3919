import crypto from 'node:crypto';
import { afterAll, describe, expect, it } from 'vitest';
import { createServices } from '../../src/broker.js';
import { loadConfig } from '../../src/config.js';
import { KeyProviderError } from '../../src/crypto/key-provider.js';
import { LocalKeyProvider } from '../../src/crypto/local-key-provider.js';
import { freshDatabase, silentLogger, startTestBroker, type TestDatabase } from '../support/broker.js';
import { auth, expectProblem, markSensitive, unb64 } from './helpers.js';

describe('restart persistence', () => {
  let db: TestDatabase | undefined;
  afterAll(async () => {
    await db?.drop();
  });

  it('a second start on the same database and root key serves what the first stored', async () => {
    db = freshDatabase();
    const rootKey = crypto.randomBytes(32).toString('base64');
    const first = await startTestBroker({ db, rootKey, keepDatabase: true });
    const adminKey = first.adminKey;
    const writerKey = await first.apiKey('writer');
    markSensitive('persisted-value-1', 'persisted-value-2', adminKey, writerKey);
    const w = auth(writerKey);
    await first.request.post('/v1/groups').set(w).send({ name: 'persist' });
    const created = await first.request.post('/v1/secrets').set(w).send({ name: 'kept', value: 'persisted-value-1', labels: { k: 'v' }, groups: ['persist'] });
    expect(created.status).toBe(201);
    await first.request.post('/v1/secrets/kept/versions').set(w).send({ value: 'persisted-value-2' });
    const client = await first.client('kept-client', ['persist']);
    markSensitive(client.clientSecret);
    const revoked = await first.request.post('/v1/api-keys').set(auth(adminKey)).send({ name: 'gone', role: 'writer' });
    await first.request.delete(`/v1/api-keys/${revoked.body.id}`).set(auth(adminKey));
    const detailBefore = (await first.request.get('/v1/secrets/kept').set(w)).body;
    await first.close();

    const second = await startTestBroker({ db, rootKey, keepDatabase: true });
    try {
      // the bootstrap admin key from the first start still works, and no second bootstrap happened
      expect(second.adminKey).not.toBe(adminKey);
      const keys = await second.request.get('/v1/api-keys').set(auth(adminKey));
      expect(keys.status).toBe(200);
      expect(keys.body.items.filter((k: any) => k.id === 'bootstrap-admin')).toHaveLength(1);
      expectProblem(await second.request.get('/v1/secrets').set(auth(revoked.body.key)), 401, 'api_key_revoked');

      const c = await second.request.get('/v1/secrets/kept/content').set(auth(writerKey));
      expect(c.status).toBe(200);
      expect(unb64(c.body.content)).toBe('persisted-value-2');
      expect(unb64((await second.request.get('/v1/secrets/kept/content?version=1').set(auth(writerKey))).body.content)).toBe('persisted-value-1');
      expect((await second.request.get('/v1/secrets/kept').set(auth(writerKey))).body).toEqual(detailBefore);

      // the client's token from before the restart verifies (JWT keys persisted), and new ones can be issued
      const viaOldToken = await second.request.get('/v1/client/secrets/kept').set(auth(client.token));
      expect(viaOldToken.status).toBe(200);
      expect(unb64(viaOldToken.body.content)).toBe('persisted-value-2');
      const token = await second.request.post('/v1/auth/token').type('form').send({ grant_type: 'client_credentials', client_id: client.clientId, client_secret: client.clientSecret });
      expect(token.status).toBe(200);
      // checksums are computed with the persisted HMAC key
      markSensitive('persisted-value-3');
      const again = await second.request.post('/v1/secrets').set(auth(writerKey)).send({ name: 'kept-copy', value: 'persisted-value-2' });
      expect(again.body.checksum).toBe(detailBefore.checksum);
    } finally {
      await second.close();
    }
  });

  it('a restart with a different root key refuses to start instead of serving garbage', async () => {
    const db2 = freshDatabase();
    const first = await startTestBroker({ db: db2, keepDatabase: true });
    markSensitive('wrong-root-value');
    await first.request.post('/v1/secrets').set(auth(first.adminKey)).send({ name: 'locked', value: 'wrong-root-value' });
    await first.close();
    const handle = await db2.open();
    try {
      const config = loadConfig({ KEYWARDEN_DATABASE_URL: db2.url, KEYWARDEN_DATA_DIR: '/tmp/unused', KEYWARDEN_LOG_LEVEL: 'silent' });
      const otherKey = LocalKeyProvider.fromEnv(crypto.randomBytes(32).toString('base64'));
      await expect(createServices(config, { db: handle, keyProvider: otherKey, logger: silentLogger })).rejects.toThrow(KeyProviderError);
    } finally {
      await handle.close();
      await db2.drop();
    }
  });
});
