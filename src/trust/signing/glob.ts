/**
 * Glob matching for image references and CI claims. `*` matches within one segment, `**`
 * across segments, `?` one character. With `segmentSeparator: null`, `*` matches anything.
 */
export function globMatch(pattern: string, value: string, options: { segmentSeparator?: string | null } = {}): boolean {
  const sep = options.segmentSeparator === undefined ? '/' : options.segmentSeparator;
  let re = '^';
  for (let i = 0; i < pattern.length; i++) {
    const c = pattern[i];
    if (c === '*') {
      if (pattern[i + 1] === '*') {
        re += '.*';
        i++;
      } else {
        re += sep ? `[^${escape(sep)}]*` : '.*';
      }
    } else if (c === '?') {
      re += sep ? `[^${escape(sep)}]` : '.';
    } else {
      re += escape(c);
    }
  }
  return new RegExp(re + '$').test(value);
}

function escape(s: string): string {
  return s.replace(/[.*+?^${}()|[\]\\/-]/g, '\\$&');
}
