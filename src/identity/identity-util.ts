import { problems } from '../http/problem.js';

export { iso } from '../secrets/secrets-types.js';

export function isUniqueViolation(err: unknown): boolean {
  const code = (err as any)?.code;
  return code === '23505' || code === 'SQLITE_CONSTRAINT_UNIQUE' || code === 'SQLITE_CONSTRAINT_PRIMARYKEY';
}

/** Concurrent writers can still collide on a unique index; that is a conflict, not a 500. */
export function rethrowUniqueAsConflictFn(detail: string) {
  return (err: unknown): never => {
    if (isUniqueViolation(err)) throw problems.conflict(detail, 'already_exists');
    throw err;
  };
}
