export { verifyNotaryTrust } from './notary-verifier.js';
export type { NotaryCheckInput, NotaryCheckResult, NotaryResultCode } from './notary-types.js';
export { canonicalJson, canonicalJsonBytes, CanonicalJsonError } from './canonical-json.js';
export {
  computeKeyId,
  parseTufKey,
  parsePinnedKey,
  pinnedKeyMatches,
  certificateProblem,
  decodePem,
  decodeBase64Strict,
  type ParsedTufKey,
  type PinnedKey,
} from './tuf-keys.js';
export { verifySignature, verifyRoleSignatures } from './tuf-signatures.js';
export { NotaryClient, parseBearerChallenge, type RoleFetchResult } from './notary-client.js';
export { parseRoleDocument, parseRfc3339, checkRawAgainstMeta } from './tuf-metadata.js';
