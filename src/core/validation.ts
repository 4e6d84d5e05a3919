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

function describe(error: z.ZodError): string {
  return error.issues
    .slice(0, 5)
    .map((i) => (i.path.length ? `${i.path.join('.')}: ${i.message}` : i.message))
    .join('; ');
}

export function parseWith<S extends ZodTypeAny>(schema: S, value: unknown, where = 'body'): z.infer<S> {
  const result = schema.safeParse(value);
  if (!result.success) {
    throw new InvalidInputError(`invalid ${where}: ${describe(result.error)}`, {
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
