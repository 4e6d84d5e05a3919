import { expect } from 'vitest';
import type { TestBroker } from './broker.js';

/** Creates the trust policy, or replaces it when one of that name exists; returns the stored policy. */
export async function upsertPolicy(tb: TestBroker, admin: Record<string, string>, doc: Record<string, unknown>) {
  const existing = await tb.request.get(`/v1/policies/${doc.name}`).set(admin);
  const res =
    existing.status === 200
      ? await tb.request.put(`/v1/policies/${doc.name}`).set(admin).send(doc)
      : await tb.request.post('/v1/policies').set(admin).send(doc);
  expect([200, 201], res.text).toContain(res.status);
  return res.body;
}
