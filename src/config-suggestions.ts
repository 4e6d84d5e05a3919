import { SETTING_NAMES } from './config.js';

/**
 * Unknown KEYWARDEN_* variables: a mistyped setting (KEYWARDEN_LISTN) is otherwise silently
 * ignored and its default used. The broker warns once per variable at start, with the closest
 * known name; the variable's value is never repeated.
 */

/**
 * KEYWARDEN_* variables that are not broker settings but are read by other parts of the same
 * program or its tooling, so that seeing them in the broker's environment is no mistake:
 * the clients (exec, fetch, verify, sign, api-key, the Docker plugin), docker-compose.yml, and
 * the test suite. test/core/unknown-settings.test.ts fails when a KEYWARDEN_* name used in the
 * repository is neither here nor in the configuration schema.
 */
export const OTHER_KEYWARDEN_VARIABLES: readonly string[] = [
  // clients: where the broker is, how to trust it, who they are
  'KEYWARDEN_ADDR',
  'KEYWARDEN_API_KEY',
  'KEYWARDEN_CA',
  'KEYWARDEN_CLIENT_ID',
  'KEYWARDEN_CLIENT_SECRET',
  'KEYWARDEN_BOOTSTRAP_TOKEN',
  'KEYWARDEN_OIDC_TOKEN',
  // docker-compose.yml: the URL clients use, passed to the broker as KEYWARDEN_ISSUER
  'KEYWARDEN_PUBLIC_URL',
  // the test suite and its tools
  'KEYWARDEN_TEST_DATABASE_URL',
  'KEYWARDEN_REQUIRE_TOOLS',
  'KEYWARDEN_CONTRACT_HOOK',
  'KEYWARDEN_PG_BIN_DIR',
  'KEYWARDEN_DOCKER_CLI',
  'KEYWARDEN_DCT_DOCKER_CLI',
  'KEYWARDEN_DOCKERD_BIN',
  'KEYWARDEN_DOCKER_REGISTRY_BIN',
  'KEYWARDEN_BUSYBOX_BIN',
  'KEYWARDEN_SYSTEM_PYTHON',
  'KEYWARDEN_CHROMIUM',
  'KEYWARDEN_UPDATE_DOCS_SCREENSHOTS',
];

const PREFIX = 'KEYWARDEN_';

/** Every KEYWARDEN_* name the program knows: the configuration schema's keys and the names above. */
export function knownKeywardenVariables(): Set<string> {
  return new Set([...SETTING_NAMES.filter((name) => name.startsWith(PREFIX)), ...OTHER_KEYWARDEN_VARIABLES]);
}

/**
 * Optimal string alignment distance (Damerau-Levenshtein with adjacent transpositions, each
 * substring edited once): insertions, deletions, substitutions and swaps of neighbours cost 1.
 */
export function editDistance(a: string, b: string): number {
  if (a === b) return 0;
  if (!a.length) return b.length;
  if (!b.length) return a.length;
  // three rows: i-2, i-1, i
  let before = new Array<number>(b.length + 1).fill(0);
  let previous = Array.from({ length: b.length + 1 }, (_, j) => j);
  let current = new Array<number>(b.length + 1).fill(0);
  for (let i = 1; i <= a.length; i++) {
    current[0] = i;
    for (let j = 1; j <= b.length; j++) {
      const cost = a[i - 1] === b[j - 1] ? 0 : 1;
      let d = Math.min(previous[j]! + 1, current[j - 1]! + 1, previous[j - 1]! + cost);
      if (i > 1 && j > 1 && a[i - 1] === b[j - 2] && a[i - 2] === b[j - 1]) d = Math.min(d, before[j - 2]! + 1);
      current[j] = d;
    }
    [before, previous, current] = [previous, current, before];
  }
  return previous[b.length]!;
}

/**
 * How far a name may be from a known one to be suggested: about one edit per four characters of
 * the part after the prefix, at least 1 and at most 3, so KEYWARDEN_LISTN finds KEYWARDEN_LISTEN
 * but KEYWARDEN_FOO does not find KEYWARDEN_CA.
 */
function maxDistance(name: string): number {
  const rest = name.startsWith(PREFIX) ? name.length - PREFIX.length : name.length;
  return Math.max(1, Math.min(3, Math.floor(rest / 4)));
}

/** The known name closest to `name` within the allowed distance (ties: alphabetical), if any. */
export function closestName(name: string, known: Iterable<string>): string | undefined {
  const wanted = name.toUpperCase();
  const limit = maxDistance(wanted);
  let best: { name: string; distance: number } | undefined;
  for (const candidate of [...known].sort()) {
    const distance = editDistance(wanted, candidate);
    if (distance <= limit && (!best || distance < best.distance)) best = { name: candidate, distance };
  }
  return best?.name;
}

export interface UnknownSetting {
  name: string;
  suggestion?: string;
  /** `unknown setting KEYWARDEN_LISTN (did you mean KEYWARDEN_LISTEN?)`: never the value. */
  message: string;
}

/**
 * The environment's variables that look like Keywarden settings but are not known: every
 * KEYWARDEN_* name (any case), and names whose prefix is a near miss of KEYWARDEN (KEYWARDN_LISTEN).
 */
export function unknownSettings(env: NodeJS.ProcessEnv = process.env, known: Set<string> = knownKeywardenVariables()): UnknownSetting[] {
  const found: UnknownSetting[] = [];
  for (const name of Object.keys(env).sort()) {
    if (known.has(name) || !looksLikeASetting(name)) continue;
    const suggestion = closestName(name, known);
    found.push({ name, suggestion, message: `unknown setting ${name}${suggestion ? ` (did you mean ${suggestion}?)` : ''}` });
  }
  return found;
}

function looksLikeASetting(name: string): boolean {
  const upper = name.toUpperCase();
  if (upper.startsWith(PREFIX)) return true;
  const underscore = upper.indexOf('_');
  if (underscore < 7) return false;
  const prefix = upper.slice(0, underscore);
  return prefix !== 'KEYWARDEN' && editDistance(prefix, 'KEYWARDEN') <= 2;
}
