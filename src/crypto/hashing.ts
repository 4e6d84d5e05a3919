import crypto from 'node:crypto';

export function sha256Hex(data: Buffer | string): string {
  return crypto.createHash('sha256').update(data).digest('hex');
}

/** Constant-time comparison of two hex digests of equal algorithm. */
export function digestsEqual(a: string, b: string): boolean {
  const ab = Buffer.from(a, 'hex');
  const bb = Buffer.from(b, 'hex');
  return ab.length === bb.length && ab.length > 0 && crypto.timingSafeEqual(ab, bb);
}

/** High-entropy random token with a recognisable prefix, URL-safe. */
export function randomToken(prefix: string, bytes = 32): string {
  return `${prefix}${crypto.randomBytes(bytes).toString('base64url')}`;
}

/**
 * Random URL-safe identifier that a shell command line can carry as an argument: it never starts
 * with `-` (which a CLI parser would read as an option) or `_`. One draw in 32 starts with either
 * and is drawn again.
 */
export function randomIdentifier(bytes: number): string {
  for (;;) {
    const id = crypto.randomBytes(bytes).toString('base64url');
    if (/^[A-Za-z0-9]/.test(id)) return id;
  }
}
