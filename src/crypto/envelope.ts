import crypto from 'node:crypto';
import type { KeyProvider } from './key-provider.js';

export interface SealedBlob {
  iv: Buffer;
  /** AES-256-GCM ciphertext with the 16-byte tag appended. */
  ciphertext: Buffer;
  wrappedKey: Buffer;
  rootKeyVersion: string;
}

export class DecryptionError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'DecryptionError';
  }
}

const TAG_BYTES = 16;

/** Encrypts with a fresh 256-bit data key, bound by AAD to where the ciphertext belongs. */
export async function seal(provider: KeyProvider, plaintext: Buffer, aad: string): Promise<SealedBlob> {
  const dataKey = crypto.randomBytes(32);
  const iv = crypto.randomBytes(12);
  const cipher = crypto.createCipheriv('aes-256-gcm', dataKey, iv);
  cipher.setAAD(Buffer.from(aad, 'utf8'));
  const ciphertext = Buffer.concat([cipher.update(plaintext), cipher.final(), cipher.getAuthTag()]);
  const { wrapped, keyVersion } = await provider.wrap(dataKey);
  dataKey.fill(0);
  return { iv, ciphertext, wrappedKey: wrapped, rootKeyVersion: keyVersion };
}

export async function open(provider: KeyProvider, blob: SealedBlob, aad: string): Promise<Buffer> {
  const dataKey = await provider.unwrap(blob.wrappedKey, blob.rootKeyVersion);
  return openWithDataKey(dataKey, blob, aad);
}

export function openWithDataKey(dataKey: Buffer, blob: Pick<SealedBlob, 'iv' | 'ciphertext'>, aad: string): Buffer {
  if (blob.ciphertext.length < TAG_BYTES) throw new DecryptionError('ciphertext is truncated');
  try {
    const decipher = crypto.createDecipheriv('aes-256-gcm', dataKey, blob.iv);
    decipher.setAAD(Buffer.from(aad, 'utf8'));
    decipher.setAuthTag(blob.ciphertext.subarray(blob.ciphertext.length - TAG_BYTES));
    return Buffer.concat([decipher.update(blob.ciphertext.subarray(0, blob.ciphertext.length - TAG_BYTES)), decipher.final()]);
  } catch {
    throw new DecryptionError('ciphertext failed authentication (tampered, or not stored where it belongs)');
  }
}

/** Rewraps the data key under the current root key; the content ciphertext is untouched. */
export async function rewrap(provider: KeyProvider, blob: Pick<SealedBlob, 'wrappedKey' | 'rootKeyVersion'>) {
  const dataKey = await provider.unwrap(blob.wrappedKey, blob.rootKeyVersion);
  try {
    return await provider.wrap(dataKey);
  } finally {
    dataKey.fill(0);
  }
}
