import crypto from 'node:crypto';
import { afterEach, describe, expect, it, vi } from 'vitest';
import { randomIdentifier } from '../../src/crypto/hashing.js';

// A key id is typed on a command line (`keywarden api-key revoke <id>`): one beginning with `-`
// is read as an option by commander, so the broker never issues one.
describe('randomIdentifier', () => {
  afterEach(() => vi.restoreAllMocks());

  it('draws again when the first draw would begin with - or _', () => {
    const draws = [Buffer.from([0xf8, 1, 2]), Buffer.from([0xfc, 1, 2]), Buffer.from([0x08, 1, 2])];
    expect(draws[0]!.toString('base64url')[0]).toBe('-');
    expect(draws[1]!.toString('base64url')[0]).toBe('_');
    const spy = vi.spyOn(crypto, 'randomBytes').mockImplementation(((() => draws.shift()) as unknown) as typeof crypto.randomBytes);
    expect(randomIdentifier(3)).toBe('CAEC');
    expect(spy).toHaveBeenCalledTimes(3);
  });

  it('keeps the URL-safe alphabet and length of its bytes', () => {
    for (let i = 0; i < 2000; i++) {
      const id = randomIdentifier(9);
      expect(id).toMatch(/^[A-Za-z0-9][A-Za-z0-9_-]{11}$/);
    }
  });
});
