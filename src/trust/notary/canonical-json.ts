/**
 * Canonical JSON as produced by notary's `github.com/docker/go/canonical/json`
 * (`MarshalCanonical` of a generically decoded value):
 *
 * - object keys sorted by their UTF-8 bytes (Go string order), no whitespace;
 * - strings: only `"` and `\` are escaped; every other character, including
 *   control characters and non-ASCII, is written as raw UTF-8;
 * - numbers: only integral values are allowed and they are written as integers
 *   (Go decodes numbers into float64 and the canonical encoder formats them with
 *   `strconv.AppendInt(int64(f))`); non-integral numbers are an error.
 */

export class CanonicalJsonError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'CanonicalJsonError';
  }
}

const MAX_DEPTH = 200;

function compareUtf8(a: string, b: string): number {
  return Buffer.compare(Buffer.from(a, 'utf8'), Buffer.from(b, 'utf8'));
}

function encodeString(s: string): string {
  // Lone surrogates become U+FFFD when the result is encoded as UTF-8, as Go does.
  return '"' + s.replace(/["\\]/g, (c) => '\\' + c) + '"';
}

function encodeNumber(n: number): string {
  if (!Number.isFinite(n)) throw new CanonicalJsonError(`unsupported number ${n}`);
  if (Math.floor(n) !== n) throw new CanonicalJsonError(`floating point number ${n} is not allowed in canonical JSON`);
  if (n <= -9223372036854775808 || n >= 9223372036854775807) {
    throw new CanonicalJsonError(`number ${n} is out of int64 range`);
  }
  return BigInt(n).toString();
}

function encode(value: unknown, depth: number, out: string[]): void {
  if (depth > MAX_DEPTH) throw new CanonicalJsonError('JSON nesting too deep');
  if (value === null) {
    out.push('null');
    return;
  }
  switch (typeof value) {
    case 'boolean':
      out.push(value ? 'true' : 'false');
      return;
    case 'number':
      out.push(encodeNumber(value));
      return;
    case 'string':
      out.push(encodeString(value));
      return;
    case 'object': {
      if (Array.isArray(value)) {
        out.push('[');
        value.forEach((item, i) => {
          if (i > 0) out.push(',');
          encode(item, depth + 1, out);
        });
        out.push(']');
        return;
      }
      const obj = value as Record<string, unknown>;
      const keys = Object.keys(obj)
        .filter((k) => obj[k] !== undefined)
        .sort(compareUtf8);
      out.push('{');
      keys.forEach((k, i) => {
        if (i > 0) out.push(',');
        out.push(encodeString(k), ':');
        encode(obj[k], depth + 1, out);
      });
      out.push('}');
      return;
    }
    default:
      throw new CanonicalJsonError(`unsupported value of type ${typeof value}`);
  }
}

/** Canonical JSON text of a JSON value (as returned by JSON.parse). */
export function canonicalJson(value: unknown): string {
  const out: string[] = [];
  encode(value, 0, out);
  return out.join('');
}

/** Canonical JSON as UTF-8 bytes (the bytes that TUF signatures cover). */
export function canonicalJsonBytes(value: unknown): Buffer {
  return Buffer.from(canonicalJson(value), 'utf8');
}
