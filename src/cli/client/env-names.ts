/** Secret name → environment variable name, and `--secret NAME[=ENV_VAR]` parsing. */
import { InvalidArgumentError } from 'commander';
import { CliError, usageError } from './exit-codes.js';

/** The broker's secret-name rule. */
export const SECRET_NAME = /^[A-Za-z0-9._-]{1,128}$/;
export const ENV_NAME = /^[A-Za-z_][A-Za-z0-9_]*$/;

/** `db-password` → `DB_PASSWORD`; `1st.key` → `_1ST_KEY`. */
export function envNameFor(secretName: string): string {
  const upper = secretName.toUpperCase().replace(/[^A-Z0-9]/g, '_');
  return /^[0-9]/.test(upper) ? `_${upper}` : upper;
}

export interface SecretSelector {
  name: string;
  /** Explicit environment variable name, when given as NAME=ENV_VAR. */
  env?: string;
}

/** Parses one `--secret` value; throws a usage error (exit 64) when malformed. */
export function parseSecretSelector(value: string): SecretSelector {
  const eq = value.indexOf('=');
  const name = eq < 0 ? value : value.slice(0, eq);
  const env = eq < 0 ? undefined : value.slice(eq + 1);
  if (!SECRET_NAME.test(name)) throw usageError(`invalid secret name ${JSON.stringify(name)} (allowed: ${SECRET_NAME.source})`);
  if (env !== undefined && !ENV_NAME.test(env)) {
    throw usageError(`invalid environment variable name ${JSON.stringify(env)} for secret ${name}`);
  }
  return env === undefined ? { name } : { name, env };
}

/** Commander collector for repeatable `--secret` (commander turns its errors into exit 64). */
export function collectSelector(value: string, previous: SecretSelector[] = []): SecretSelector[] {
  try {
    return [...previous, parseSecretSelector(value)];
  } catch (err) {
    throw err instanceof CliError ? new InvalidArgumentError(err.message) : err;
  }
}

/**
 * Maps secret names to environment variable names: explicit names win, others are derived.
 * Two secrets landing on one variable is a usage error (exit 64) rather than a silent overwrite.
 */
export function assignEnvNames(names: string[], explicit: SecretSelector[]): Map<string, string> {
  const byName = new Map<string, string>();
  for (const s of explicit) if (s.env) byName.set(s.name, s.env);
  const result = new Map<string, string>();
  const owner = new Map<string, string>();
  for (const name of names) {
    const env = byName.get(name) ?? envNameFor(name);
    const other = owner.get(env);
    if (other !== undefined && other !== name) {
      throw usageError(`secrets ${other} and ${name} both map to ${env}; name one explicitly with --secret ${name}=OTHER_NAME`);
    }
    owner.set(env, name);
    result.set(name, env);
  }
  return result;
}
