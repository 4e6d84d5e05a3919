import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startTestBroker, type TestBroker } from '../support/broker.js';

/**
 * The discovery document lists the grants the token endpoint accepts, taken from the grants the
 * composition root registered: one list, so the two cannot drift apart.
 */
describe('OpenID discovery lists the registered grants', () => {
  let tb: TestBroker;

  beforeAll(async () => {
    tb = await startTestBroker();
  });
  afterAll(async () => {
    await tb?.close();
  });

  it('grant_types_supported is exactly what the token endpoint accepts', async () => {
    const res = await tb.request.get('/.well-known/openid-configuration');
    expect(res.status).toBe(200);
    const listed: string[] = res.body.grant_types_supported;
    expect(listed).toEqual(tb.broker.services.auth.grantTypes());
    expect(listed).toEqual(['client_credentials', 'urn:keywarden:bootstrap', 'urn:ietf:params:oauth:grant-type:token-exchange']);
    for (const grant of listed) {
      const token = await tb.request.post('/v1/auth/token').type('form').send({ grant_type: grant });
      expect(token.status, `${grant}: ${token.text}`).toBe(400);
      expect(token.body.error, grant).toBe('invalid_request');
    }
    const unknown = await tb.request.post('/v1/auth/token').type('form').send({ grant_type: 'password' });
    expect(unknown.status).toBe(400);
    expect(unknown.body).toMatchObject({ code: 'unsupported_grant_type', error: 'unsupported_grant_type' });
  });
});
