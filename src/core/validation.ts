import { z, type ZodTypeAny } from 'zod';
import { InvalidInputError } from './errors.js';

export const NAME_PATTERN = /^[A-Za-z0-9._-]{1,128}$/;
export const nameSchema = z.string().regex(NAME_PATTERN, 'must match ^[A-Za-z0-9._-]{1,128}$');
export const labelsSchema = z
  .record(z.string().regex(/^[A-Za-z0-9._/-]{1,63}$/, 'label keys must match ^[A-Za-z0-9._/-]{1,63}$'), z.string().max(256))
  .refine((labels) => Object.keys(labels).length <= 64, 'at most 64 labels')
  // The count is a refinement, which JSON Schema export cannot see; the description carries it to openapi.yaml.
  .describe('At most 64 labels.');
export const descriptionSchema = z.string().max(4096);

const article = (word: string) => (/^[aeiou]/.test(word) ? `an ${word}` : `a ${word}`);
const quoted = (values: readonly unknown[]) => values.map((v) => (typeof v === 'string' ? v : JSON.stringify(v))).join(', ');
const plural = (n: number | bigint, one: string, many = `${one}s`) => `${n} ${Number(n) === 1 ? one : many}`;

/** What a value of zod's parsed types is called in a message ("must be a number"). */
function typeName(type: string): string {
  switch (type) {
    case 'integer':
      return 'an integer';
    case 'boolean':
      return 'true or false';
    case 'date':
      return 'a date';
    case 'null':
      return 'null';
    default:
      return article(type);
  }
}

/** The readable message for an issue, or undefined to keep zod's. */
function readableMessage(issue: z.ZodIssueOptionalMessage, where: string): string | undefined {
  switch (issue.code) {
    case z.ZodIssueCode.invalid_type:
      if (issue.received === z.ZodParsedType.undefined) return 'is required';
      // a coerced query parameter that is not a number arrives as NaN
      if (issue.received === z.ZodParsedType.nan) return 'must be a number';
      if (issue.expected === z.ZodParsedType.integer && issue.received === z.ZodParsedType.float) return 'must be an integer';
      return `must be ${typeName(issue.expected)}, not ${issue.received === 'null' ? 'null' : typeName(issue.received)}`;
    case z.ZodIssueCode.unrecognized_keys: {
      const noun = where === 'query' ? 'parameter' : 'field';
      const keys = issue.keys.map((k) => `'${k}'`).join(', ');
      return issue.keys.length === 1 ? `unknown ${noun} ${keys}` : `unknown ${noun}s ${keys}`;
    }
    case z.ZodIssueCode.invalid_enum_value:
      return `must be one of ${quoted(issue.options)}`;
    case z.ZodIssueCode.invalid_union_discriminator:
      return `must be one of ${quoted(issue.options)}`;
    case z.ZodIssueCode.invalid_literal:
      return `must be ${JSON.stringify(issue.expected)}`;
    case z.ZodIssueCode.too_small: {
      const n = issue.minimum;
      if (issue.type === 'string') {
        if (issue.exact) return `must be exactly ${plural(n, 'character')}`;
        return Number(n) === 1 && issue.inclusive ? 'must not be empty' : `must be at least ${plural(n, 'character')}`;
      }
      if (issue.type === 'array' || issue.type === 'set') {
        if (issue.exact) return `must have exactly ${plural(n, 'item')}`;
        return Number(n) === 1 && issue.inclusive ? 'must not be empty' : `must have at least ${plural(n, 'item')}`;
      }
      if (issue.type === 'number' || issue.type === 'bigint') return issue.inclusive ? `must be at least ${n}` : `must be greater than ${n}`;
      if (issue.type === 'date') return `must be on or after ${new Date(Number(n)).toISOString()}`;
      return undefined;
    }
    case z.ZodIssueCode.too_big: {
      const n = issue.maximum;
      if (issue.type === 'string') return issue.exact ? `must be exactly ${plural(n, 'character')}` : `must be at most ${plural(n, 'character')}`;
      if (issue.type === 'array' || issue.type === 'set') return issue.exact ? `must have exactly ${plural(n, 'item')}` : `must have at most ${plural(n, 'item')}`;
      if (issue.type === 'number' || issue.type === 'bigint') return issue.inclusive ? `must be at most ${n}` : `must be less than ${n}`;
      if (issue.type === 'date') return `must be on or before ${new Date(Number(n)).toISOString()}`;
      return undefined;
    }
    case z.ZodIssueCode.invalid_string: {
      const v = issue.validation;
      if (typeof v === 'object') {
        if ('startsWith' in v) return `must start with "${v.startsWith}"`;
        if ('endsWith' in v) return `must end with "${v.endsWith}"`;
        if ('includes' in v) return `must include "${v.includes}"`;
        return undefined;
      }
      if (v === 'url') return 'must be a URL';
      if (v === 'email') return 'must be an email address';
      if (v === 'datetime') return 'must be an ISO 8601 date-time (e.g. 2030-01-01T00:00:00Z)';
      if (v === 'date') return 'must be a date (YYYY-MM-DD)';
      if (v === 'regex') return 'is not in the expected format';
      return `must be ${article(v)}`;
    }
    case z.ZodIssueCode.not_multiple_of:
      return `must be a multiple of ${issue.multipleOf}`;
    case z.ZodIssueCode.not_finite:
      return 'must be a finite number';
    case z.ZodIssueCode.invalid_date:
      return 'must be a valid date';
    case z.ZodIssueCode.invalid_union:
      return 'does not match any of the accepted forms';
    default:
      return undefined;
  }
}

/**
 * Zod's messages ("Expected number, received nan", "Required", "Unrecognized key(s) in object")
 * rewritten to read well in an API error ("must be a number", "is required", "unknown field
 * 'x'"). A message a schema states itself (`.regex(re, 'must match ...')`, `required_error`, a
 * refinement's) is kept: only zod's default wording is replaced.
 */
export function readableErrorMap(where = 'body'): z.ZodErrorMap {
  return (issue, ctx) => {
    if (ctx.defaultError !== z.defaultErrorMap(issue, { ...ctx, defaultError: '' }).message) return { message: ctx.defaultError };
    return { message: readableMessage(issue, where) ?? ctx.defaultError };
  };
}

function describe(error: z.ZodError, where: string): string {
  return error.issues
    .slice(0, 5)
    .map((i) => (i.path.length ? `${i.path.join('.')}: ${i.message}` : /^(is|must) /.test(i.message) ? `the ${where} ${i.message}` : i.message))
    .join('; ');
}

/** Parses `value` (a request's `where`: body, query, ...), or throws InvalidInputError listing what is wrong, readably. */
export function parseWith<S extends ZodTypeAny>(schema: S, value: unknown, where = 'body'): z.infer<S> {
  const result = schema.safeParse(value, { errorMap: readableErrorMap(where) });
  if (!result.success) {
    throw new InvalidInputError(`invalid ${where}: ${describe(result.error, where)}`, {
      errors: result.error.issues.slice(0, 20).map((i) => ({ path: i.path.join('.'), message: i.message })),
    });
  }
  return result.data;
}

export function parseName(value: unknown, what = 'name'): string {
  if (typeof value !== 'string' || !NAME_PATTERN.test(value)) {
    throw new InvalidInputError(`${what} must match ^[A-Za-z0-9._-]{1,128}$`);
  }
  return value;
}

/** Opaque cursor for keyset pagination. */
export function encodeCursor(value: string | number): string {
  return Buffer.from(JSON.stringify(value)).toString('base64url');
}

export function decodeCursor<T extends string | number>(cursor: unknown, kind: 'string' | 'number'): T | undefined {
  if (cursor === undefined) return undefined;
  try {
    const value = JSON.parse(Buffer.from(String(cursor), 'base64url').toString('utf8'));
    if (typeof value === kind) return value as T;
  } catch {
    // fall through
  }
  throw new InvalidInputError('cursor is malformed');
}

export const limitSchema = z.coerce.number().int().min(1).max(1000).default(100);
