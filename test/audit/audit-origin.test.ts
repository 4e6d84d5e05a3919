import crypto from 'node:crypto';
import { describe, expect, it } from 'vitest';
import { ConfigError } from '../../src/config.js';
import { freshDatabase, startTestBroker } from '../support/broker.js';
import { openCheckpoint } from '../support/independent-tlog-verifier.js';
import { auth } from './audit-helpers.js';

/**
 * A log's origin is its name: heads are signed under it. It is fixed by the first head, so a
 * broker restarted with another issuer (another port, say) keeps signing the same log, and a
 * configured origin that contradicts the stored one is refused instead of starting a second log.
 */
describe('the audit log keeps the origin it was created with', () => {
  it('survives a change of issuer, and refuses a contradicting KEYWARDEN_AUDIT_ORIGIN', async () => {
    const db = freshDatabase();
    const rootKey = crypto.randomBytes(32).toString('base64');
    const first = await startTestBroker({ db, rootKey, keepDatabase: true, env: { KEYWARDEN_ISSUER: 'https://a.example:8443' } });
    let head;
    try {
      const W = auth(await first.apiKey('writer'));
      expect((await first.request.post('/v1/groups').set(W).send({ name: 'before' })).status).toBe(201);
      await first.broker.services.auditSequencer.flush();
      head = (await first.request.get('/v1/audit/checkpoint').set(auth(await first.apiKey('auditor')))).body;
      expect(head.origin).toBe('a.example:8443/audit-log');
    } finally {
      await first.close();
    }

    const second = await startTestBroker({ db, rootKey, keepDatabase: true, env: { KEYWARDEN_ISSUER: 'http://127.0.0.1:9999' } });
    try {
      expect(second.broker.services.auditChain.status).toBe('ok');
      const A = auth(await second.apiKey('auditor'));
      await second.broker.services.auditSequencer.flush();
      const now = (await second.request.get('/v1/audit/checkpoint').set(A)).body;
      expect(now.origin).toBe('a.example:8443/audit-log');
      expect(now.verifierKey).toBe(head.verifierKey);
      expect(openCheckpoint(now.checkpoint, head.verifierKey).size).toBeGreaterThan(head.treeSize);
      expect((await second.request.post('/v1/audit/verify').set(A).send({ checkpoint: head.checkpoint })).body).toMatchObject({ ok: true });
    } finally {
      await second.close();
    }

    const refused = startTestBroker({ db, rootKey, keepDatabase: true, env: { KEYWARDEN_AUDIT_ORIGIN: 'other.example/audit-log' } });
    await expect(refused).rejects.toBeInstanceOf(ConfigError);
    await expect(refused).rejects.toThrow(/created as "a\.example:8443\/audit-log"/);
    await db.drop();
  });
});
