import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { z } from 'zod';
import { InvalidInputError } from '../../src/core/errors.js';
import { limitSchema, nameSchema, parseWith } from '../../src/core/validation.js';
import { auth, expectProblem } from '../core/helpers.js';
import { startTestBroker, type TestBroker } from '../support/broker.js';

/** The message parseWith throws for `value`, or 'ok'. */
function messageOf(schema: z.ZodTypeAny, value: unknown, where?: string): string {
  try {
    parseWith(schema, value, where);
    return 'ok';
  } catch (err) {
    expect(err).toBeInstanceOf(InvalidInputError);
    return (err as Error).message;
  }
}

describe('validation messages read well (zod\'s default wording replaced)', () => {
  it('says what is wrong, in words, for each kind of issue', () => {
    const schema = z
      .object({
        count: z.number(),
        name: z.string(),
        role: z.enum(['admin', 'writer']),
        note: z.string().min(1).optional(),
        code: z.string().min(4).max(6).optional(),
        tags: z.array(z.string()).min(1).max(2).optional(),
        n: z.number().int().min(1).max(10).optional(),
        enabled: z.boolean().optional(),
        at: z.string().datetime().optional(),
        url: z.string().url().optional(),
      })
      .strict();
    expect(messageOf(schema, { count: 'x', role: 'root', extra: 1 })).toBe(
      "invalid body: count: must be a number, not a string; name: is required; role: must be one of admin, writer; unknown field 'extra'",
    );
    expect(messageOf(schema, { count: 1, name: 'a', role: 'admin', note: '', code: 'ab', tags: [] })).toBe(
      'invalid body: note: must not be empty; code: must be at least 4 characters; tags: must not be empty',
    );
    expect(messageOf(schema, { count: 1, name: 'a', role: 'admin', code: 'abcdefg', tags: ['a', 'b', 'c'], n: 1.5 })).toBe(
      'invalid body: code: must be at most 6 characters; tags: must have at most 2 items; n: must be an integer',
    );
    expect(messageOf(schema, { count: 1, name: 'a', role: 'admin', n: 11, enabled: 'yes', at: 'soon', url: 'nope' })).toBe(
      'invalid body: n: must be at most 10; enabled: must be true or false, not a string; at: must be an ISO 8601 date-time (e.g. 2030-01-01T00:00:00Z); url: must be a URL',
    );
    expect(messageOf(schema, { count: null, name: 'a', role: 'admin', a: 1, b: 2 })).toBe("invalid body: count: must be a number, not null; unknown fields 'a', 'b'");
  });

  it('names the body or query itself when the problem is at the top', () => {
    const schema = z.object({ name: z.string() }).strict();
    expect(messageOf(schema, undefined)).toBe('invalid body: the body is required');
    expect(messageOf(schema, ['x'])).toBe('invalid body: the body must be an object, not an array');
  });

  it('query parameters: a coerced number that is not one, and unknown parameters', () => {
    const query = z.object({ limit: limitSchema, cursor: z.string().optional() }).strict();
    expect(messageOf(query, { limit: 'abc' }, 'query')).toBe('invalid query: limit: must be a number');
    expect(messageOf(query, { limit: '0', sort: 'name' }, 'query')).toBe("invalid query: limit: must be at least 1; unknown parameter 'sort'");
    expect(messageOf(query, { limit: '5' }, 'query')).toBe('ok');
  });

  it('keeps the messages schemas state themselves (regex text, required_error, refinements)', () => {
    expect(messageOf(z.object({ name: nameSchema }), { name: 'no spaces' })).toBe('invalid body: name: must match ^[A-Za-z0-9._-]{1,128}$');
    const data = z.record(z.string(), z.unknown(), { required_error: 'no data provided', invalid_type_error: 'data must be a JSON object' });
    expect(messageOf(z.object({ data }), {})).toBe('invalid body: data: no data provided');
    expect(messageOf(z.object({ data }), { data: 3 })).toBe('invalid body: data: data must be a JSON object');
    expect(messageOf(z.object({ a: z.number() }).refine((v) => v.a > 1, 'a must exceed 1'), { a: 1 })).toBe('invalid body: a must exceed 1');
  });

  it('leaves zod alone outside parseWith (no global error map)', () => {
    const result = z.object({ a: z.number() }).safeParse({});
    expect(result.success).toBe(false);
    expect(result.error!.issues[0].message).toBe('Required');
  });
});

describe('validation messages over HTTP', () => {
  let tb: TestBroker;

  beforeAll(async () => {
    tb = await startTestBroker();
  });

  afterAll(async () => {
    await tb?.close();
  });

  it('a body with the wrong fields says which, in words, with the same words in errors[]', async () => {
    const res = await tb.request.post('/v1/groups').set(auth(tb.adminKey)).send({ nme: 'ops' });
    const body = expectProblem(res, 400, 'invalid_request');
    expect(body.detail).toBe("invalid body: name: is required; unknown field 'nme'");
    expect(body.errors).toEqual([
      { path: 'name', message: 'is required' },
      { path: '', message: "unknown field 'nme'" },
    ]);
    const role = await tb.request.post('/v1/api-keys').set(auth(tb.adminKey)).send({ name: 'ci', role: 'root' });
    expect(expectProblem(role, 400, 'invalid_request').detail).toBe('invalid body: role: must be one of admin, writer, auditor, signer');
  });

  it('?limit=abc says limit: must be a number', async () => {
    const res = await tb.request.get('/v1/secrets?limit=abc').set(auth(tb.adminKey));
    expect(expectProblem(res, 400, 'invalid_request').detail).toBe('invalid query: limit: must be a number');
    const unknown = await tb.request.get('/v1/groups?limt=5').set(auth(tb.adminKey));
    expect(expectProblem(unknown, 400, 'invalid_request').detail).toBe("invalid query: unknown parameter 'limt'");
  });
});
