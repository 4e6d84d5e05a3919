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
 * Variables that change how a program (or the loader, shell or runtime that starts it) loads
 * code, finds files, trusts TLS peers or routes traffic. Whoever may name a secret (a writer)
 * must not be able to set one of these in a workload just by picking the secret's name, so
 * `exec` sets them only from an explicit `--secret NAME=VARIABLE` on the command line.
 *
 * The exact names start from glibc's list of variables the loader drops for setuid programs
 * (UNSECURE_ENVVARS in sysdeps/generic/unsecvars.h), plus the shell's startup and expansion
 * variables (bash(1) "Shell Variables", POSIX sh ENV/IFS/PS4), and the documented startup and
 * option variables of the common runtimes (Node, Python, Perl, Ruby, Java, .NET, PHP, Lua, Go),
 * TLS trust stores, proxies and git. Comparison is case-insensitive: Windows environments are,
 * and curl and most HTTP libraries read both `http_proxy` and `HTTP_PROXY`. Derived names are
 * upper case anyway. Credentials for services (AWS_*, DATABASE_URL, ...) are deliberately not on
 * the list: delivering those is what `exec --all` is for.
 */
export const PROTECTED_ENV_NAMES: ReadonlySet<string> = new Set([
  // glibc loader / libc (unsecvars.h, besides the LD_* and MALLOC_* prefixes below)
  'GCONV_PATH', 'GETCONF_DIR', 'GLIBC_TUNABLES', 'HOSTALIASES', 'LOCALDOMAIN', 'LOCPATH', 'NIS_PATH',
  'NLSPATH', 'RESOLV_HOST_CONF', 'RES_OPTIONS', 'TMPDIR', 'TZDIR',
  // where programs are found and config files are read from
  'PATH', 'HOME', 'SHELL', 'CDPATH', 'EDITOR', 'VISUAL', 'PAGER', 'BROWSER', 'LESSOPEN', 'LESSCLOSE',
  'SSH_ASKPASS', 'SUDO_ASKPASS', 'SSH_AUTH_SOCK', 'TERMINFO', 'TERMINFO_DIRS', 'INPUTRC', 'ZDOTDIR', 'FPATH',
  // shells: startup files, options, expansion, prompts (PS4 is expanded under set -x)
  'ENV', 'IFS', 'SHELLOPTS', 'BASHOPTS', 'GLOBIGNORE', 'PROMPT_COMMAND', 'HISTFILE',
  'PS0', 'PS1', 'PS2', 'PS3', 'PS4',
  // runtimes
  'CLASSPATH', '_JAVA_OPTIONS', 'JDK_JAVA_OPTIONS', 'PHPRC', 'PHP_INI_SCAN_DIR',
  'GODEBUG', 'GOFLAGS', 'GOTOOLCHAIN', 'GOENV', 'GOROOT',
  'ASAN_OPTIONS', 'LSAN_OPTIONS', 'MSAN_OPTIONS', 'TSAN_OPTIONS', 'UBSAN_OPTIONS',
  // TLS trust and key logging
  'SSL_CERT_FILE', 'SSL_CERT_DIR', 'SSLKEYLOGFILE', 'REQUESTS_CA_BUNDLE', 'CURL_CA_BUNDLE',
  // proxies
  'HTTP_PROXY', 'HTTPS_PROXY', 'FTP_PROXY', 'ALL_PROXY', 'NO_PROXY', 'GRPC_PROXY',
]);

/** Whole families: every variable starting with one of these is protected. */
export const PROTECTED_ENV_PREFIXES: readonly string[] = [
  'LD_', 'DYLD_', 'MALLOC_', // dynamic loaders (glibc, musl, macOS) and malloc tuning/tracing
  'BASH_', // BASH_ENV, exported functions (BASH_FUNC_*), BASH_XTRACEFD, BASH_LOADABLES_PATH
  'NODE_', 'NPM_CONFIG_', // NODE_OPTIONS, NODE_PATH, NODE_EXTRA_CA_CERTS, NODE_TLS_REJECT_UNAUTHORIZED, ...
  'PYTHON', // PYTHONPATH, PYTHONSTARTUP, PYTHONHOME, PYTHONWARNINGS (imports modules), ...
  'PERL', // PERL5LIB, PERL5OPT, PERLLIB, PERLIO, PERL5DB, ...
  'RUBY', 'GEM_', 'BUNDLE_', // RUBYOPT, RUBYLIB, GEM_PATH, BUNDLE_GEMFILE
  'JAVA_', // JAVA_TOOL_OPTIONS, JAVA_HOME, JAVA_OPTS
  'DOTNET_', 'CORECLR_', 'COREHOST_', 'COMPLUS_', // DOTNET_STARTUP_HOOKS, CORECLR_PROFILER_PATH
  'LUA_', // LUA_INIT runs code, LUA_PATH, LUA_CPATH
  'OPENSSL_', // OPENSSL_CONF can load engines/providers
  'GIT_', // GIT_SSH_COMMAND, GIT_EXEC_PATH, GIT_CONFIG_*, ...
  'XDG_', // XDG_CONFIG_HOME and friends: where config files are read from
  'KEYWARDEN_', // this CLI's own settings and credentials
];

/** Whether `name` is a variable that only an explicit `--secret NAME=VARIABLE` may set. */
export function isProtectedEnvName(name: string): boolean {
  const upper = name.toUpperCase();
  return PROTECTED_ENV_NAMES.has(upper) || PROTECTED_ENV_PREFIXES.some((prefix) => upper.startsWith(prefix));
}

/**
 * Maps secret names to environment variable names: explicit names win, others are derived.
 * Two secrets landing on one variable is a usage error (exit 64) rather than a silent overwrite,
 * and so is a derived name that is protected (see PROTECTED_ENV_NAMES): the secret's name came
 * from the broker, so it must not pick such a variable; the command line has to name it.
 */
export function assignEnvNames(names: string[], explicit: SecretSelector[]): Map<string, string> {
  const byName = new Map<string, string>();
  for (const s of explicit) if (s.env) byName.set(s.name, s.env);
  const result = new Map<string, string>();
  const owner = new Map<string, string>();
  for (const name of names) {
    const explicitEnv = byName.get(name);
    const env = explicitEnv ?? envNameFor(name);
    if (explicitEnv === undefined && isProtectedEnvName(env)) {
      throw usageError(
        `secret ${name} would set ${env}, which changes how programs load or run; refusing to set it from a secret name. ` +
          `If that is intended, map it explicitly with --secret ${name}=${env}`,
      );
    }
    const other = owner.get(env);
    if (other !== undefined && other !== name) {
      throw usageError(`secrets ${other} and ${name} both map to ${env}; name one explicitly with --secret ${name}=OTHER_NAME`);
    }
    owner.set(env, name);
    result.set(name, env);
  }
  return result;
}

/**
 * Refuses (exit 64) to replace a variable that is already in `base`, unless `override` is set.
 * `base` is the environment the program would get without secrets (credentials removed).
 */
export function refuseOverrides(base: ReadonlyMap<string, string>, envNames: ReadonlyMap<string, string>, override: boolean): void {
  if (override) return;
  for (const [secret, env] of envNames) {
    if (base.has(env)) {
      throw usageError(`secret ${secret} would replace ${env}, which is already set in the environment; pass --override to allow it`);
    }
  }
}
