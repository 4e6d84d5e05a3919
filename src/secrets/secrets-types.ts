import { z } from 'zod';
import { descriptionSchema, labelsSchema, nameSchema } from '../core/validation.js';

export const MAX_CONTENT_BYTES = 1024 * 1024;

export const fileMetadataSchema = z
  .object({
    mode: z.string().regex(/^0?[0-7]{3,4}$/, 'mode must be octal, e.g. "0400"').optional(),
    owner: z.string().regex(/^[A-Za-z0-9._-]{1,64}$/).optional(),
    group: z.string().regex(/^[A-Za-z0-9._-]{1,64}$/).optional(),
  })
  .strict();
export type FileMetadata = z.infer<typeof fileMetadataSchema>;

/** ISO 8601 date-time with offset, or epoch seconds. */
export const expirySchema = z.union([
  z.string().datetime({ offset: true }).transform((s) => Date.parse(s)),
  z.number().int().positive().max(253402300799).transform((s) => s * 1000),
]);

const contentFields = {
  content: z.string().regex(/^[A-Za-z0-9+/]*={0,2}$/, 'content must be base64').optional(),
  value: z.string().optional(),
};

export const createSecretSchema = z
  .object({
    name: nameSchema,
    ...contentFields,
    description: descriptionSchema.optional(),
    type: z.string().regex(/^[A-Za-z0-9._/-]{1,64}$/).optional(),
    labels: labelsSchema.optional(),
    metadata: fileMetadataSchema.optional(),
    expiry: expirySchema.nullable().optional(),
    groups: z.array(nameSchema).max(100).optional(),
  })
  .strict()
  .describe('Exactly one of `content` or `value` is required.');

export const updateSecretSchema = z
  .object({
    description: descriptionSchema.optional(),
    labels: labelsSchema.optional(),
    metadata: fileMetadataSchema.optional(),
    expiry: expirySchema.nullable().optional(),
  })
  .strict();

export const addVersionSchema = z
  .object({
    ...contentFields,
    cas: z.number().int().min(0).optional(),
  })
  .strict()
  .describe('Exactly one of `content` or `value` is required.');

export const rollbackSchema = z.object({ version: z.number().int().positive() }).strict();

export interface SecretRecord {
  id: number;
  name: string;
  description: string;
  type: string;
  labels: Record<string, string>;
  metadata: FileMetadata;
  expiry: number | null;
  currentVersion: number;
  latestVersion: number;
  createdBy: string;
  createdAt: number;
  updatedBy: string;
  updatedAt: number;
  /** row-integrity.ts: MAC over id, name, current/latest version and deletion state. */
  rowMac?: string | null;
}

export interface SecretVersionRecord {
  id: number;
  secretId: number;
  version: number;
  iv: Buffer;
  ciphertext: Buffer;
  wrappedKey: Buffer;
  rootKeyVersion: string;
  checksum: string;
  size: number;
  createdBy: string;
  createdAt: number;
  /** row-integrity.ts: MAC over secret id, version, checksum and size. */
  rowMac?: string | null;
}

/** A secrets row. */
export interface SecretRow {
  id: number;
  name: string;
  description: string;
  type: string;
  /** JSON object */
  labels: string;
  /** JSON object */
  metadata: string;
  expiry: number | null;
  current_version: number;
  latest_version: number;
  created_by: string;
  created_at: number;
  updated_by: string;
  updated_at: number;
  deleted_at: number | null;
  row_mac: string | null;
}

/** A secret_versions row. */
export interface SecretVersionRow {
  id: number;
  secret_id: number;
  version: number;
  iv: Buffer;
  ciphertext: Buffer;
  wrapped_key: Buffer;
  root_key_version: string;
  checksum: string;
  size: number;
  created_by: string;
  created_at: number;
  row_mac: string | null;
}

export function rowToSecret(row: SecretRow): SecretRecord {
  return {
    id: row.id,
    name: row.name,
    description: row.description,
    type: row.type,
    labels: JSON.parse(row.labels),
    metadata: JSON.parse(row.metadata),
    expiry: row.expiry ?? null,
    currentVersion: row.current_version,
    latestVersion: row.latest_version,
    createdBy: row.created_by,
    createdAt: row.created_at,
    updatedBy: row.updated_by,
    updatedAt: row.updated_at,
    rowMac: row.row_mac ?? null,
  };
}

export function rowToVersion(row: SecretVersionRow): SecretVersionRecord {
  return {
    id: row.id,
    secretId: row.secret_id,
    version: row.version,
    iv: row.iv,
    ciphertext: row.ciphertext,
    wrappedKey: row.wrapped_key,
    rootKeyVersion: row.root_key_version,
    checksum: row.checksum,
    size: row.size,
    createdBy: row.created_by,
    createdAt: row.created_at,
    rowMac: row.row_mac ?? null,
  };
}

/** AAD binding a ciphertext to its row: moved elsewhere, it no longer authenticates. */
export function secretAad(secretId: number, version: number, name: string): string {
  return `keywarden:secret:v1:${secretId}:${version}:${name}`;
}
