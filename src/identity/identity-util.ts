import { ConflictError } from '../core/errors.js';

export function isUniqueViolation(err: unknown): boolean {
  const code = (err as { code?: unknown } | null | undefined)?.code;
  return code === '23505' || code === 'SQLITE_CONSTRAINT_UNIQUE' || code === 'SQLITE_CONSTRAINT_PRIMARYKEY';
}

/** Concurrent writers can still collide on a unique index; that is a conflict, not a 500. */
export function rethrowUniqueAsConflictFn(detail: string) {
  return (err: unknown): never => {
    if (isUniqueViolation(err)) throw new ConflictError(detail, 'already_exists');
    throw err;
  };
}
