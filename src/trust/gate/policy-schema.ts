/**
 * Trust policy documents, image patterns and the "most specific policy wins" rule.
 */
import { createPublicKey } from 'node:crypto';
import { z } from 'zod';
import { nameSchema, NAME_PATTERN } from '../../http/validation.js';

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
      })
      .strict()
      .optional(),
    notary: z
      .object({
        server: z
          .string()
          .url()
          .max(1024)
          .refine((u) => /^https?:\/\//.test(u), 'server must be an http(s) URL'),
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
    if (doc.notary?.threshold !== undefined && doc.notary.delegations && doc.notary.threshold > doc.notary.delegations.length) {
      ctx.addIssue({ code: z.ZodIssueCode.custom, path: ['notary', 'threshold'], message: 'threshold exceeds the number of delegations' });
    }
    if (doc.notary?.threshold !== undefined && !doc.notary.delegations?.length) {
      ctx.addIssue({ code: z.ZodIssueCode.custom, path: ['notary', 'threshold'], message: 'threshold needs delegations' });
    }
  });

export type PolicyDocument = z.infer<typeof policyDocumentSchema>;

// ------------------------------------------------------------------------------ globs

function escapeRegex(s: string): string {
  return s.replace(/[.+^${}()|[\]\\]/g, '\\$&');
}

const imageRegexCache = new Map<string, RegExp>();

/** `*` and `?` stay within one path segment; `**` spans segments. Case-insensitive (hosts are). */
export function imagePatternRegex(pattern: string): RegExp {
  let re = imageRegexCache.get(pattern);
  if (re) return re;
  let out = '';
  for (let i = 0; i < pattern.length; i++) {
    const c = pattern[i]!;
    if (c === '*' && pattern[i + 1] === '*') {
      // "team/**" also matches "team" itself is not wanted: ** needs at least one character
      out += '.+';
      i++;
    } else if (c === '*') {
      out += '[^/]*';
    } else if (c === '?') {
      out += '[^/]';
    } else {
      out += escapeRegex(c);
    }
  }
  re = new RegExp(`^${out}$`, 'i');
  if (imageRegexCache.size > 10_000) imageRegexCache.clear();
  imageRegexCache.set(pattern, re);
  return re;
}

export function matchesImagePattern(pattern: string, repository: string): boolean {
  return imagePatternRegex(pattern).test(repository);
}

/** Label value globs: `*` any characters, `?` one character; the value "*" means "any value". */
export function matchesValueGlob(glob: string, value: string): boolean {
  if (glob === '*') return true;
  const re = new RegExp(`^${glob.split('').map((c) => (c === '*' ? '.*' : c === '?' ? '.' : escapeRegex(c))).join('')}$`, 's');
  return re.test(value);
}

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
