/**
 * The one glob engine of the trust layer. Signer scopes (API keys and trusted issuers), release
 * policy selection, trusted-issuer claim rules and policy label rules all match through here, so
 * a pattern means the same thing wherever it is written.
 *
 * Image patterns (`registry/repository`, matchesImagePattern):
 *   - `/` separates segments.
 *   - `?` matches exactly one character other than `/`.
 *   - `*` matches zero or more characters other than `/` (it stays inside one segment).
 *   - `**` (or any longer run of `*`) matches ONE or more characters, `/` included. So `team/**`
 *     matches `team/app` and `team/app/sub` but not `team` itself, and between two slashes it
 *     stands for at least one segment, never zero (`a/`, `**`, `/b` written together does not
 *     match `a/b`). This is the rule release policies always had; signer scopes used to let `**`
 *     match nothing, which only ever mattered for patterns like `team/app**`, now narrower.
 *   - Every other character is literal (there is no escape character, `[` and `]` included).
 *   - ASCII letters compare case-insensitively: registry hosts are case-insensitive and the
 *     distribution spec allows only lower case in repository paths, so `Registry.io/Team/*`
 *     names the same images as `registry.io/team/*`. Only ASCII is folded, so no Unicode case
 *     rule can make two different names equal.
 *
 * Value globs (claim values, label values, matchesValueGlob):
 *   - No segments: `*` (and `**`) match zero or more characters of any kind, `?` exactly one.
 *   - Case-sensitive: claims and labels are exact strings.
 *
 * Characters are Unicode code points (`?` never splits a surrogate pair). Matching simulates the
 * pattern as a state machine over the input, one pass, no backtracking: O(pattern × value) time
 * and O(pattern) memory in the worst case, whatever the pattern. Patterns come from API callers
 * and values from registries and CI tokens, so a regular expression (backtracking in V8) is not
 * safe here.
 */

const SEGMENT_SEPARATOR = '/';

/** One step of a compiled pattern. */
type Token =
  /** exactly this (already case-folded) character */
  | { kind: 'char'; char: string }
  /** exactly one character; `/` only when crossesSegments */
  | { kind: 'one'; crossesSegments: boolean }
  /** zero or more characters; `/` only when crossesSegments */
  | { kind: 'many'; crossesSegments: boolean };

interface GlobMode {
  /** `?`/`*` stop at this character and `**` crosses it; null: no segments. */
  separator: string | null;
  fold: (char: string) => string;
}

const foldAscii = (char: string) => (char >= 'A' && char <= 'Z' ? char.toLowerCase() : char);
const sameChar = (char: string) => char;

const IMAGE_MODE: GlobMode = { separator: SEGMENT_SEPARATOR, fold: foldAscii };
const VALUE_MODE: GlobMode = { separator: null, fold: sameChar };

function compile(pattern: string, mode: GlobMode): Token[] {
  const chars = [...pattern];
  const tokens: Token[] = [];
  const segmented = mode.separator !== null;
  for (let i = 0; i < chars.length; i++) {
    const c = chars[i]!;
    if (c === '*') {
      let run = 1;
      while (chars[i + 1] === '*') {
        run++;
        i++;
      }
      if (segmented && run >= 2) {
        // `**`: one or more characters of any kind
        tokens.push({ kind: 'one', crossesSegments: true }, { kind: 'many', crossesSegments: true });
      } else {
        tokens.push({ kind: 'many', crossesSegments: !segmented });
      }
    } else if (c === '?') {
      tokens.push({ kind: 'one', crossesSegments: !segmented });
    } else {
      tokens.push({ kind: 'char', char: mode.fold(c) });
    }
  }
  return tokens;
}

/** Adds the states reachable without reading input: a `many` token may match nothing. */
function closeOverEmpty(states: Uint8Array, tokens: Token[]): void {
  for (let j = 0; j < tokens.length; j++) if (states[j] && tokens[j]!.kind === 'many') states[j + 1] = 1;
}

function matches(pattern: string, value: string, mode: GlobMode): boolean {
  const tokens = compile(pattern, mode);
  // states[j] = 1: the first j tokens can match the input read so far
  let current = new Uint8Array(tokens.length + 1);
  let next = new Uint8Array(tokens.length + 1);
  current[0] = 1;
  closeOverEmpty(current, tokens);
  for (const raw of value) {
    const c = mode.fold(raw);
    const isSeparator = c === mode.separator;
    next.fill(0);
    let alive = false;
    for (let j = 0; j < tokens.length; j++) {
      if (!current[j]) continue;
      const t = tokens[j]!;
      if (t.kind === 'char') {
        if (t.char === c) {
          next[j + 1] = 1;
          alive = true;
        }
      } else if (t.crossesSegments || !isSeparator) {
        next[t.kind === 'one' ? j + 1 : j] = 1;
        alive = true;
      }
    }
    if (!alive) return false;
    closeOverEmpty(next, tokens);
    [current, next] = [next, current];
  }
  return current[tokens.length] === 1;
}

/** Whether `registry/repository` matches an image pattern (see the module comment). */
export function matchesImagePattern(pattern: string, repository: string): boolean {
  return matches(pattern, repository, IMAGE_MODE);
}

/** Whether a claim or label value matches a value glob: `*` anything, `?` one character, case-sensitive. */
export function matchesValueGlob(pattern: string, value: string): boolean {
  return matches(pattern, value, VALUE_MODE);
}
