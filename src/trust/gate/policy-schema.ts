/**
 * Trust policy documents, image patterns and the "most specific policy wins" rule.
 */
import { createPublicKey } from 'node:crypto';
import { z } from 'zod';
import { nameSchema, NAME_PATTERN } from '../../core/validation.js';
import { matchesImagePattern } from '../glob.js';
import { looksLikeRegistryHost, normalizeDockerRepository, normalizeIdentityPrefix, SignedIdentityError } from '../cosign/signed-identity.js';
import { isValidRoleName } from '../notary/notary-client.js';
import { parsePinnedKey } from '../notary/tuf-keys.js';

const IMAGE_PATTERN = /^[A-Za-z0-9._:/\-[\]*?]{1,512}$/;
const LABEL_KEY = /^[A-Za-z0-9._/-]{1,128}$/;

const imagePatternSchema = z
  .string()
  .regex(IMAGE_PATTERN, 'image patterns are registry/repository globs: letters, digits, . _ - : / [ ] and the wildcards * ** ?')
  .refine((p) => !/\*{3,}/.test(p), 'use * (one path segment) or ** (any number of segments), not ***');

const pemOrKeyName = z
  .string()
  .max(16_384)
  .refine((k) => {
    if (k.trimStart().startsWith('-----BEGIN')) {
      try {
        createPublicKey(k);
        return true;
      } catch {
        return false;
      }
    }
    return NAME_PATTERN.test(k);
  }, 'each key is a broker signing-key name or a PEM public key');

const valueGlobSchema = z.string().max(256);

/** Validates with a signed-identity normaliser and reports its message as the zod issue. */
function identityValue(normalize: (v: string) => string, extra?: (v: string) => string | undefined) {
  return z
    .string()
    .min(1)
    .max(512)
    .superRefine((v, ctx) => {
      const problem = extra?.(v);
      if (problem) {
        ctx.addIssue({ code: z.ZodIssueCode.custom, message: problem });
        return;
      }
      try {
        normalize(v);
      } catch (err) {
        if (!(err instanceof SignedIdentityError)) throw err;
        ctx.addIssue({ code: z.ZodIssueCode.custom, message: err.message });
      }
    });
}

const repositoryOnly = (v: string): string | undefined => {
  const slash = v.indexOf('/');
  if (slash === -1 || !looksLikeRegistryHost(v.slice(0, slash))) return 'dockerRepository must be fully qualified: registry/repository';
  if (v.includes('@') || v.slice(v.lastIndexOf('/') + 1).includes(':')) return 'dockerRepository is a repository: no tag or digest';
  return undefined;
};

/** containers-policy.json(5) signedIdentity types that fit cosign payloads (they name a repository). */
const signedIdentityRequirementSchema = z.discriminatedUnion('type', [
  z.object({ type: z.literal('matchRepository') }).strict(),
  z.object({ type: z.literal('exactRepository'), dockerRepository: identityValue(normalizeDockerRepository, repositoryOnly) }).strict(),
  z
    .object({
      type: z.literal('remapIdentity'),
      prefix: identityValue(normalizeIdentityPrefix),
      signedPrefix: identityValue(normalizeIdentityPrefix),
    })
    .strict(),
]);

export const policyDocumentSchema = z
  .object({
    name: nameSchema,
    images: z.array(imagePatternSchema).min(1).max(100),
    mode: z.enum(['enforce', 'warn']).default('enforce'),
    description: z.string().max(4096).optional(),
    cosign: z
      .object({
        keys: z.array(pemOrKeyName).min(1).max(50),
        threshold: z.number().int().min(1).max(50).default(1),
        /** which repositories a signature may name (default: the image's own, matchRepository) */
        signedIdentity: z
          .union([signedIdentityRequirementSchema, z.array(signedIdentityRequirementSchema).min(1).max(50)])
          .optional(),
      })
      .strict()
      .optional(),
    notary: z
      .object({
        server: z
          .string()
          .url()
          .max(1024)
          .refine((u) => /^https?:\/\//.test(u), 'server must be an http(s) URL')
          // credentials in the URL would be sent along and shown back to readers of the policy
          .refine((u) => URL.canParse(u) && !new URL(u).username && !new URL(u).password, 'server must not contain credentials'),
        gun: z.string().min(1).max(512).regex(/^[A-Za-z0-9._:/\-[\]]+$/, 'gun is registry/repository').optional(),
        rootKeys: z.array(z.string().min(1).max(16_384)).min(1).max(20),
        delegations: z
          .array(z.string().regex(/^[A-Za-z0-9._/-]{1,255}$/, 'delegation roles look like targets/releases'))
          .max(20)
          .optional(),
        threshold: z.number().int().min(1).max(20).optional(),
      })
      .strict()
      .optional(),
    rules: z
      .object({
        nonRootUser: z.boolean().optional(),
        requiredLabels: z.record(z.string().regex(LABEL_KEY, 'label keys must match ^[A-Za-z0-9._/-]{1,128}$'), valueGlobSchema).optional(),
        forbidLabels: z
          .union([
            z.array(z.string().regex(LABEL_KEY, 'label keys must match ^[A-Za-z0-9._/-]{1,128}$')).max(100),
            z.record(z.string().regex(LABEL_KEY, 'label keys must match ^[A-Za-z0-9._/-]{1,128}$'), valueGlobSchema),
          ])
          .optional(),
        maxAgeDays: z.number().positive().max(36_500).optional(),
      })
      .strict()
      .optional(),
  })
  .strict()
  .superRefine((doc, ctx) => {
    if (doc.notary) notaryReferenceIssues(doc.notary, ctx);
    // counted as the verifier counts them: "releases" and "targets/releases" are one role
    const delegations = new Set((doc.notary?.delegations ?? []).map(normaliseDelegation));
    if (doc.notary?.threshold !== undefined && delegations.size > 0 && doc.notary.threshold > delegations.size) {
      ctx.addIssue({ code: z.ZodIssueCode.custom, path: ['notary', 'threshold'], message: `threshold exceeds the number of distinct delegations (${delegations.size})` });
    }
    if (doc.notary?.threshold !== undefined && !doc.notary.delegations?.length) {
      ctx.addIssue({ code: z.ZodIssueCode.custom, path: ['notary', 'threshold'], message: 'threshold needs delegations' });
    }
  });

/** As the Notary verifier names a required role: "releases" is short for "targets/releases". */
export function normaliseDelegation(name: string): string {
  const n = name.trim().replace(/^\/+|\/+$/g, '');
  return n.startsWith('targets/') ? n : `targets/${n}`;
}

/**
 * What a Notary block refers to, checked when the policy is written instead of at every decision.
 * Without asking the Notary server (a policy write never depends on a remote server), "unknown"
 * can only mean what the verifier would refuse before any fetch:
 *  - a pinned root key that is neither a PEM public key or certificate, base64 of one, nor a
 *    64-hex key id (it could never designate a key of root.json);
 *  - a delegation that is not a delegation role name (`targets/<name>[/<name>...]`, or `<name>`
 *    for `targets/<name>`), e.g. `targets/../x`, `a//b`, `targets/-x`;
 *  - the same delegation named twice.
 * Whether a delegation role exists in the repository's trust data is only known to the Notary
 * server, and changes as publishers add or remove roles: it is checked at decision time, where a
 * missing role is a `tag_missing` or `bad_metadata` deny.
 */
function notaryReferenceIssues(notary: { rootKeys: string[]; delegations?: string[] }, ctx: z.RefinementCtx): void {
  for (const [i, key] of notary.rootKeys.entries()) {
    try {
      parsePinnedKey(key);
    } catch (err) {
      // TufKeyError, or node:crypto refusing the DER inside: either way the input is not a key
      ctx.addIssue({
        code: z.ZodIssueCode.custom,
        path: ['notary', 'rootKeys', i],
        message: `not a usable pinned root key (${err instanceof Error ? err.message : String(err)}): give a PEM public key or certificate, base64 of one, or a 64-hex key id`,
      });
    }
  }
  const seen = new Map<string, number>();
  for (const [i, name] of (notary.delegations ?? []).entries()) {
    const role = normaliseDelegation(name);
    if (!isValidRoleName(role)) {
      ctx.addIssue({
        code: z.ZodIssueCode.custom,
        path: ['notary', 'delegations', i],
        message: `${JSON.stringify(name)} is not a delegation role: use targets/<name> (segments of letters, digits, . _ -, not . or ..)`,
      });
    } else if (seen.has(role)) {
      ctx.addIssue({
        code: z.ZodIssueCode.custom,
        path: ['notary', 'delegations', i],
        message: `${JSON.stringify(name)} names ${role} again (delegations.${seen.get(role)})`,
      });
    } else {
      seen.set(role, i);
    }
  }
}

export type PolicyDocument = z.infer<typeof policyDocumentSchema>;

/**
 * The policy schema for one broker: a Notary server uses https, unless its host is configured for
 * plain HTTP (KEYWARDEN_INSECURE_REGISTRIES). The Notary client checks the same at fetch time.
 */
export function policyDocumentSchemaFor(opts: { allowsPlainHttp: (url: URL) => boolean }) {
  return policyDocumentSchema.superRefine((doc, ctx) => {
    const server = doc.notary?.server;
    if (!server || !URL.canParse(server)) return;
    const url = new URL(server);
    if (url.protocol === 'http:' && !opts.allowsPlainHttp(url)) {
      ctx.addIssue({
        code: z.ZodIssueCode.custom,
        path: ['notary', 'server'],
        message: 'server must be an https URL (plain http only for hosts listed in KEYWARDEN_INSECURE_REGISTRIES)',
      });
    }
  });
}

// ------------------------------------------------------------------------------ globs
// Image patterns and label value globs are matched by ../glob.ts, the engine signer scopes and
// claim rules use too, so a pattern selects the same images in a policy as in a signer scope.

// ------------------------------------------------------------------------------ specificity

/**
 * How specific a pattern is, compared lexicographically (bigger wins):
 *  1. more path segments ("/"-separated components);
 *  2. fewer "**" wildcards;
 *  3. fewer "*" / "?" wildcards;
 *  4. longer literal prefix (characters before the first wildcard);
 *  5. more literal characters overall.
 * Ties between policies are broken by policy name (alphabetically first wins), so the choice is
 * always deterministic.
 */
export function patternSpecificity(pattern: string): number[] {
  const segments = pattern.split('/').length;
  const doubleStars = (pattern.match(/\*\*/g) ?? []).length;
  const singles = (pattern.replace(/\*\*/g, '').match(/[*?]/g) ?? []).length;
  const firstWildcard = pattern.search(/[*?]/);
  const literalPrefix = firstWildcard === -1 ? pattern.length : firstWildcard;
  const literals = pattern.replace(/[*?]/g, '').length;
  return [segments, -doubleStars, -singles, literalPrefix, literals];
}

export function compareSpecificity(a: number[], b: number[]): number {
  for (let i = 0; i < Math.max(a.length, b.length); i++) {
    const d = (a[i] ?? 0) - (b[i] ?? 0);
    if (d !== 0) return d;
  }
  return 0;
}

export interface StoredPolicy {
  name: string;
  version: number;
  document: PolicyDocument;
}

/** The most specific policy whose patterns match `registry/repository`, with the winning pattern. */
export function selectPolicy<P extends StoredPolicy>(policies: P[], repository: string): { policy: P; pattern: string } | undefined {
  let best: { policy: P; pattern: string; score: number[] } | undefined;
  for (const policy of policies) {
    for (const pattern of policy.document.images) {
      if (!matchesImagePattern(pattern, repository)) continue;
      const score = patternSpecificity(pattern);
      if (
        !best ||
        compareSpecificity(score, best.score) > 0 ||
        (compareSpecificity(score, best.score) === 0 && policy.name < best.policy.name)
      ) {
        best = { policy, pattern, score };
      }
    }
  }
  return best && { policy: best.policy, pattern: best.pattern };
}
