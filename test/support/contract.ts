/**
 * Response contract: checks an HTTP response of the broker against openapi.yaml's response for
 * its method, path and status (content type and, for JSON, the body against the schema).
 *
 * test/support/contract-hook.ts applies it to every response of the suite (see there); the
 * functions here are also usable on their own (test/contract/openapi.test.ts unit-tests them).
 */
import fs from 'node:fs';
import { fileURLToPath } from 'node:url';
import { Ajv2020, type ValidateFunction } from 'ajv/dist/2020.js';
import addFormatsModule from 'ajv-formats';
import YAML from 'yaml';

/** The repository's openapi.yaml (the file the broker serves); no src import, so that every test file can load this cheaply. */
export const OPENAPI_FILE = fileURLToPath(new URL('../../openapi.yaml', import.meta.url));

// ajv-formats is CommonJS with `exports.default`; under NodeNext the default import is the module
type FormatsPlugin = (ajv: Ajv2020) => unknown;
const addFormats = ((addFormatsModule as unknown as { default?: FormatsPlugin }).default ?? addFormatsModule) as unknown as FormatsPlugin;

const HTTP_METHODS = ['get', 'put', 'post', 'delete', 'options', 'head', 'patch', 'trace'] as const;
const SPEC_ID = 'keywarden:openapi.yaml';
const PROBLEM_POINTER = '#/components/schemas/Problem';
const VAULT_ERROR_POINTER = '#/components/schemas/VaultError';
/** The Vault-compatible API's prefixes (the KV mount as the test brokers configure it: the default). */
const VAULT_PREFIX = /^\/v1\/(sys|auth\/approle|auth\/cert|auth\/token|secret)\//;

/**
 * The one allowlist of responses to requests that openapi.yaml does not describe (no operation
 * for the method and path). They must still be a problem document (the Problem schema); nothing
 * else is accepted for an undocumented request.
 */
export const UNDOCUMENTED_REQUEST_RESPONSES: ReadonlyArray<{ status: number; code: string; why: string }> = [
  { status: 404, code: 'route_not_found', why: 'no route for the method and path (tests probe unknown paths and methods)' },
  { status: 405, code: 'method_not_allowed', why: 'a documented path, with a method it does not list (components/responses/MethodNotAllowed)' },
];

/**
 * Answers openapi.yaml states once, in components/responses, instead of on every operation:
 * 405 to a method a documented path does not list (there is no operation to put it on), 415
 * from any operation that takes a request body, to a body of another type, and 429 from any
 * operation that authenticates a credential (it documents 401, or Vault's 403 on the Vault
 * routes) once too many API keys failed from the caller's address.
 */
const METHOD_NOT_ALLOWED_POINTER = '#/components/responses/MethodNotAllowed';
const UNSUPPORTED_MEDIA_TYPE_POINTER = '#/components/responses/UnsupportedMediaType';
const RATE_LIMITED_POINTER = '#/components/responses/TooManyRequests';
const VAULT_RATE_LIMITED_POINTER = '#/components/responses/VaultTooManyRequests';

export interface ObservedResponse {
  method: string;
  /** Path with optional query string, or an absolute URL. */
  url: string;
  status: number;
  /** The Content-Type header, if any. */
  contentType?: string;
  /** The raw body ('' or undefined when there is none). */
  body?: string;
}

type Json = any;

interface CompiledOperation {
  method: string;
  template: string;
  regex: RegExp;
  literalSegments: number;
  pointer: string;
  responses: Record<string, Json>;
  /** Whether the operation takes a request body (and so may answer 415). */
  hasRequestBody: boolean;
}

interface Contract {
  spec: Json;
  ajv: Ajv2020;
  operations: CompiledOperation[];
  validators: Map<string, ValidateFunction>;
}

let loaded: Contract | undefined;

const escapePointer = (part: string) => part.replace(/~/g, '~0').replace(/\//g, '~1');

function resolvePointer(spec: Json, ref: string): Json {
  let node = spec;
  for (const raw of ref.replace(/^#\/?/, '').split('/').filter((p) => p !== '')) {
    const part = decodeURIComponent(raw).replace(/~1/g, '/').replace(/~0/g, '~');
    node = node?.[part];
  }
  return node;
}

/** Follows $ref chains; returns the object and the JSON pointer where it lives. */
function deref(spec: Json, node: Json, pointer: string): { node: Json; pointer: string } {
  const seen = new Set<string>();
  while (node && typeof node === 'object' && typeof node.$ref === 'string' && !seen.has(node.$ref)) {
    seen.add(node.$ref);
    pointer = node.$ref;
    node = resolvePointer(spec, node.$ref);
  }
  return { node, pointer };
}

function templateRegex(template: string): RegExp {
  const source = template
    .split(/(\{[^}]+\})/)
    .map((part) => (/^\{[^}]+\+\}$/.test(part) ? '.+' : /^\{[^}]+\}$/.test(part) ? '[^/]+' : part.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')))
    .join('');
  return new RegExp(`^${source}/?$`);
}

export function loadContract(file = OPENAPI_FILE): Contract {
  const spec = YAML.parse(fs.readFileSync(file, 'utf8'));
  // openapi.yaml is OpenAPI 3.1: its schemas are JSON Schema 2020-12 (no `nullable`)
  if (!/^3\.1\./.test(String(spec.openapi))) throw new Error(`contract: expected OpenAPI 3.1, openapi.yaml says ${spec.openapi}`);
  // strict off: the document carries OpenAPI members (paths, info, x-...) and schema annotations
  // (example, discriminator) that are not JSON Schema keywords
  const ajv = new Ajv2020({ strict: false, allErrors: true, validateFormats: true });
  addFormats(ajv);
  ajv.addSchema({ ...spec, $id: SPEC_ID });
  const operations: CompiledOperation[] = [];
  for (const [template, pathItem] of Object.entries<Json>(spec.paths ?? {})) {
    for (const method of HTTP_METHODS) {
      const op = pathItem?.[method];
      if (!op) continue;
      operations.push({
        method: method.toUpperCase(),
        template,
        regex: templateRegex(template),
        literalSegments: template.split('/').filter((s) => s && !s.startsWith('{')).length,
        pointer: `#/paths/${escapePointer(template)}/${method}`,
        responses: op.responses ?? {},
        hasRequestBody: op.requestBody !== undefined,
      });
    }
  }
  return { spec, ajv, operations, validators: new Map() };
}

function contract(): Contract {
  loaded ??= loadContract();
  return loaded;
}

function validatorFor(c: Contract, pointer: string): ValidateFunction {
  let validate = c.validators.get(pointer);
  if (!validate) {
    validate = c.ajv.compile({ $ref: `${SPEC_ID}${pointer}` });
    c.validators.set(pointer, validate);
  }
  return validate;
}

/** The operation openapi.yaml documents for a method and path (literal segments win over templates). */
export function findOperation(method: string, path: string, c: Contract = contract()): CompiledOperation | undefined {
  // HEAD is answered by the GET route
  const wanted = method.toUpperCase() === 'HEAD' ? ['HEAD', 'GET'] : [method.toUpperCase()];
  const candidates = c.operations.filter((o) => wanted.includes(o.method) && o.regex.test(path));
  candidates.sort((a, b) => wanted.indexOf(a.method) - wanted.indexOf(b.method) || b.literalSegments - a.literalSegments);
  return candidates[0];
}

/** The path as sent (not normalised: `/a/..` must stay as the server saw it). */
function pathOf(url: string): string {
  return url.replace(/^[a-z][a-z0-9+.-]*:\/\/[^/?#]*/i, '').replace(/[?#].*$/s, '') || '/';
}

function mediaTypeOf(contentType: string | undefined): string | undefined {
  return contentType?.split(';')[0].trim().toLowerCase() || undefined;
}

const isJsonMediaType = (mediaType: string) => mediaType === 'application/json' || /^application\/[^/]+\+json$/.test(mediaType);

function matchesMediaRange(range: string, mediaType: string): boolean {
  const r = range.toLowerCase();
  if (r === '*/*' || r === mediaType) return true;
  return r.endsWith('/*') && mediaType.startsWith(r.slice(0, -1));
}

function formatErrors(validate: ValidateFunction): string {
  return (validate.errors ?? [])
    .slice(0, 10)
    .map((e) => `  ${e.instancePath || '(body)'} ${e.message}${e.params && Object.keys(e.params).length ? ` ${JSON.stringify(e.params)}` : ''} [schema ${e.schemaPath}]`)
    .join('\n');
}

function validateJson(c: Contract, pointer: string, text: string, what: string): string[] {
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch {
    return [`${what}: body is not valid JSON: ${JSON.stringify(text.slice(0, 200))}`];
  }
  const validate = validatorFor(c, pointer);
  if (validate(value)) return [];
  return [`${what}: body does not match the schema at ${pointer}\n${formatErrors(validate)}\n  body: ${text.slice(0, 500)}`];
}

/**
 * Checks one response against openapi.yaml; returns what is wrong (empty when it conforms).
 * Responses to requests the spec does not describe must be one of UNDOCUMENTED_REQUEST_RESPONSES.
 */
export function contractViolations(r: ObservedResponse, c: Contract = contract()): string[] {
  const method = r.method.toUpperCase();
  const path = pathOf(r.url);
  const mediaType = mediaTypeOf(r.contentType);
  const body = r.body ?? '';
  const hasBody = body.length > 0 && method !== 'HEAD';
  const what = `${method} ${path} -> ${r.status}${mediaType ? ` ${mediaType}` : ''}`;
  const op = findOperation(method, path, c);

  if (!op) {
    // a method the path does not list: only where openapi.yaml documents the path with other methods
    if (r.status === 405 && !c.operations.some((o) => o.regex.test(path))) return [`${what}: 405, but openapi.yaml documents no operation at ${path}`];
    // an unknown path or method under a Vault-compatible prefix is Vault's 404 or 405, in Vault's error shape (issue 14)
    if (mediaType === 'application/json' && (r.status === 404 || r.status === 405) && VAULT_PREFIX.test(path)) return validateJson(c, VAULT_ERROR_POINTER, body, what);
    if (mediaType !== 'application/problem+json') return [`${what}: no operation in openapi.yaml for ${method} ${path}, and the response is not a problem document`];
    if (!hasBody) return [];
    let code: unknown;
    try {
      code = JSON.parse(body)?.code;
    } catch {
      /* reported by validateJson */
    }
    const allowed = UNDOCUMENTED_REQUEST_RESPONSES.some((a) => a.status === r.status && (a.code === '*' || a.code === code));
    const problems = validateJson(c, r.status === 405 ? `${METHOD_NOT_ALLOWED_POINTER}/content/application~1problem+json/schema` : PROBLEM_POINTER, body, what);
    if (!allowed) problems.push(`${what}: no operation in openapi.yaml for ${method} ${path}; code ${JSON.stringify(code)} is not in UNDOCUMENTED_REQUEST_RESPONSES`);
    return problems;
  }

  const opName = `${op.method} ${op.template}`;
  const statusKey = String(r.status);
  const rangeKey = `${statusKey[0]}XX`;
  const key = [statusKey, rangeKey, rangeKey.toLowerCase(), 'default'].find((k) => k in op.responses);
  if (!key && r.status === 415 && op.hasRequestBody) {
    // any operation with a body may refuse a body of another type (components/responses/UnsupportedMediaType)
    if (mediaType !== 'application/problem+json') return [`${what}: a 415 must be a problem document`];
    return hasBody ? validateJson(c, `${UNSUPPORTED_MEDIA_TYPE_POINTER}/content/application~1problem+json/schema`, body, what) : [];
  }
  if (!key && r.status === 429) {
    // any operation that authenticates a credential may refuse a caller whose address failed too often
    const vault = VAULT_PREFIX.test(op.template);
    if (vault && '403' in op.responses) {
      if (mediaType !== 'application/json') return [`${what}: a 429 on a Vault route must be Vault's error (application/json)`];
      return hasBody ? validateJson(c, `${VAULT_RATE_LIMITED_POINTER}/content/application~1json/schema`, body, what) : [];
    }
    if (!vault && '401' in op.responses) {
      if (mediaType !== 'application/problem+json') return [`${what}: a 429 must be a problem document`];
      return hasBody ? validateJson(c, `${RATE_LIMITED_POINTER}/content/application~1problem+json/schema`, body, what) : [];
    }
  }
  if (!key) {
    return [`${what}: openapi.yaml documents no ${r.status} response (nor ${rangeKey} or default) for ${opName}; documented: ${Object.keys(op.responses).join(', ')}`];
  }
  const { node: response, pointer: responsePointer } = deref(c.spec, op.responses[key], `${op.pointer}/responses/${escapePointer(key)}`);
  const content: Record<string, Json> = response?.content ?? {};
  const ranges = Object.keys(content);
  if (ranges.length === 0) {
    return hasBody ? [`${what}: ${opName} ${key} documents no body, but the response has one: ${body.slice(0, 200)}`] : [];
  }
  if (!mediaType) {
    return hasBody ? [`${what}: the response has a body but no Content-Type; ${opName} ${key} documents ${ranges.join(', ')}`] : [];
  }
  const range = ranges.find((m) => m.toLowerCase() === mediaType) ?? ranges.find((m) => matchesMediaRange(m, mediaType));
  if (!range) return [`${what}: content type ${mediaType} is not documented for ${opName} ${key}; documented: ${ranges.join(', ')}`];
  if (!hasBody) return [];
  const mediaPointer = `${responsePointer}/content/${escapePointer(range)}`;
  const media = content[range];
  if (isJsonMediaType(mediaType) && media?.schema) return validateJson(c, `${mediaPointer}/schema`, body, what);
  // newline-delimited JSON: each line against the line schema openapi.yaml names
  if (mediaType === 'application/x-ndjson' && media?.['x-keywarden-line-schema']) {
    return body
      .split('\n')
      .filter((line) => line.trim() !== '')
      .flatMap((line, i) => validateJson(c, `${mediaPointer}/x-keywarden-line-schema`, line, `${what} line ${i + 1}`));
  }
  return [];
}

export class ContractViolation extends Error {
  constructor(readonly problems: string[]) {
    super(`response does not match openapi.yaml:\n${problems.join('\n')}`);
    this.name = 'ContractViolation';
  }
}

/** Throws a ContractViolation naming method, path, status and the schema errors. */
export function assertMatchesContract(r: ObservedResponse, c?: Contract): void {
  const problems = contractViolations(r, c);
  if (problems.length > 0) throw new ContractViolation(problems);
}

/**
 * For a fetch Response from a broker the hook cannot see (one in another process, e.g. a spawned
 * `keywarden serve`): reads a clone of the body and throws a ContractViolation if it does not match.
 */
export async function assertFetchMatchesContract(method: string, url: string, res: Response): Promise<void> {
  const body = method.toUpperCase() === 'HEAD' ? '' : await res.clone().text();
  assertMatchesContract({ method, url, status: res.status, contentType: res.headers.get('content-type') ?? undefined, body });
}
