// Generates the request-body component schemas of openapi.yaml from the zod schemas the routes
// parse with, so the published contract cannot drift from what the broker accepts (issue 11,
// "One contract"). Only the components listed in REQUEST_SCHEMAS are rewritten; the rest of the
// file (comments, order, response schemas) is spliced through untouched.
//
//   npm run openapi           rewrite openapi.yaml
//   npm run openapi -- --check exit 1 when openapi.yaml is out of date
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import YAML, { isMap, isScalar, type Pair } from 'yaml';
import type { ZodTypeAny } from 'zod';
import { zodToJsonSchema } from 'zod-to-json-schema';
import { auditVerifyRequestSchema } from '../src/audit/audit-routes.js';
import { pluginEventsSchema } from '../src/audit/plugin-events-routes.js';
import { consoleLoginSchema } from '../src/console/console-routes.js';
import { createApiKeySchema } from '../src/identity/api-keys-service.js';
import { createClientSchema, membershipChangeSchema, updateClientSchema } from '../src/identity/clients-service.js';
import { createGroupSchema, updateGroupSchema } from '../src/identity/groups-service.js';
import { bootstrapTokenRequestSchema, mintJwtSchema, revokeSchema } from '../src/identity/workload-identity-service.js';
import { batchSchema, delegatedListSchema, delegatedReadSchema } from '../src/secrets/secrets-routes.js';
import { addVersionSchema, createSecretSchema, rollbackSchema, updateSecretSchema } from '../src/secrets/secrets-types.js';
import { clientReleaseRequestSchema, releaseRequestSchema } from '../src/trust/gate/gate-routes.js';
import { policyDocumentSchema } from '../src/trust/gate/policy-schema.js';
import { signRequestSchema } from '../src/trust/signing/signatures-service.js';
import { createSigningKeySchema } from '../src/trust/signing/signing-keys-service.js';
import { kvVersionsSchema, kvWriteSchema } from '../src/vault/kv-service.js';
import { trustedIssuerSchema, updateTrustedIssuerSchema } from '../src/trust/signing/trusted-issuers-service.js';

export const OPENAPI_PATH = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', 'openapi.yaml');

/** openapi.yaml component name -> the zod schema its route parses the request body with. */
export const REQUEST_SCHEMAS: Record<string, ZodTypeAny> = {
  SecretCreateRequest: createSecretSchema,
  SecretUpdateRequest: updateSecretSchema,
  SecretVersionCreateRequest: addVersionSchema,
  RollbackRequest: rollbackSchema,
  SecretBatchRequest: batchSchema,
  GroupCreateRequest: createGroupSchema,
  GroupUpdateRequest: updateGroupSchema,
  MembershipChange: membershipChangeSchema,
  ClientCreateRequest: createClientSchema,
  ClientUpdateRequest: updateClientSchema,
  BootstrapTokenRequest: bootstrapTokenRequestSchema,
  WorkloadJwtRequest: mintJwtSchema,
  TokenRevokeRequest: revokeSchema,
  ApiKeyCreateRequest: createApiKeySchema,
  AuditVerifyRequest: auditVerifyRequestSchema,
  SigningKeyCreateRequest: createSigningKeySchema,
  TrustedIssuerCreateRequest: trustedIssuerSchema,
  TrustedIssuerUpdateRequest: updateTrustedIssuerSchema,
  SignRequest: signRequestSchema,
  TrustPolicyDocument: policyDocumentSchema,
  ReleaseRequest: releaseRequestSchema,
  DelegatedSecretReadRequest: delegatedReadSchema,
  DelegatedSecretListRequest: delegatedListSchema,
  ClientReleaseRequest: clientReleaseRequestSchema,
  DockerPluginEventsRequest: pluginEventsSchema,
  VaultKvWrite: kvWriteSchema,
  VaultKvVersions: kvVersionsSchema,
  ConsoleLoginRequest: consoleLoginSchema,
};

/**
 * Request bodies that stay hand-written, and why. TokenRequest is RFC 6749 form or JSON parameters
 * read by AuthService.token (tokenParams), not a zod schema.
 */
export const HAND_WRITTEN_REQUESTS: Record<string, string> = {
  TokenRequest: 'RFC 6749 parameters parsed by tokenParams, not by a zod schema',
  CspReport: 'browser CSP violation reports (report-uri and the Reporting API), only logged, never parsed by a schema',
};

type JsonSchema = Record<string, unknown>;

function isObject(value: unknown): value is JsonSchema {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}

/** The JSON Schema (2020-12 compatible, as OpenAPI 3.1 wants) that a request must satisfy. */
export function requestJsonSchema(schema: ZodTypeAny): JsonSchema {
  // 'input' strategies: a request is what goes INTO the schema (before defaults and transforms).
  // jsonSchema7, not 2019-09: zod-to-json-schema writes draft-4 style boolean exclusiveMinimum for
  // every target but jsonSchema7, and OpenAPI 3.1 (JSON Schema 2020-12) needs the numeric form.
  const generated = zodToJsonSchema(schema, {
    target: 'jsonSchema7',
    $refStrategy: 'none',
    effectStrategy: 'input',
    pipeStrategy: 'input',
  }) as JsonSchema;
  delete generated.$schema;
  return generated;
}

/** Generated constraints plus the human fields of the existing component, recursively. */
function withHumanFields(generated: unknown, existing: unknown, components: JsonSchema): unknown {
  if (!isObject(generated)) return generated;
  let old = isObject(existing) ? existing : {};
  // The hand-written yaml often pointed at a shared component; its prose still describes this field.
  const ref = typeof old.$ref === 'string' ? /^#\/components\/schemas\/(.+)$/.exec(old.$ref) : null;
  if (ref && isObject(components[ref[1]!])) old = { ...(components[ref[1]!] as JsonSchema), ...old };
  const merged: JsonSchema = {};
  if ('type' in generated) merged.type = generated.type;
  for (const field of ['title', 'description'] as const) {
    if (generated[field] !== undefined) merged[field] = generated[field];
    else if (old[field] !== undefined) merged[field] = old[field];
  }
  for (const [key, value] of Object.entries(generated)) {
    if (key in merged) continue;
    if (key === 'properties' && isObject(value)) {
      const oldProperties = isObject(old.properties) ? old.properties : {};
      merged.properties = Object.fromEntries(Object.entries(value).map(([name, sub]) => [name, withHumanFields(sub, oldProperties[name], components)]));
    } else if (key === 'items' || key === 'additionalProperties') {
      merged[key] = withHumanFields(value, old[key], components);
    } else {
      merged[key] = value;
    }
  }
  for (const field of ['example', 'examples'] as const) {
    if (merged[field] === undefined && old[field] !== undefined) merged[field] = old[field];
  }
  return merged;
}

function renderComponent(value: unknown, indent: number): string {
  const text = YAML.stringify(value, { indent: 2, lineWidth: 0, flowCollectionPadding: true });
  const pad = ' '.repeat(indent);
  return text
    .split('\n')
    .map((line) => (line === '' ? line : pad + line))
    .join('\n');
}

/** openapi.yaml text with every REQUEST_SCHEMAS component regenerated; all other bytes unchanged. */
export function generateOpenApi(source: string): string {
  const doc = YAML.parseDocument(source);
  const schemas = doc.getIn(['components', 'schemas'], true);
  if (!isMap(schemas)) throw new Error('openapi.yaml has no components.schemas');
  const components = schemas.toJSON() as JsonSchema;
  const edits: { start: number; end: number; text: string }[] = [];
  for (const [name, zodSchema] of Object.entries(REQUEST_SCHEMAS)) {
    const pair = schemas.items.find((item): item is Pair<YAML.Scalar, YAML.YAMLMap> => isScalar(item.key) && item.key.value === name);
    if (!pair || !isMap(pair.value) || !pair.value.range) throw new Error(`openapi.yaml has no block mapping for components.schemas.${name}`);
    const [valueStart, valueEnd] = pair.value.range;
    const lineStart = source.lastIndexOf('\n', valueStart) + 1;
    const indent = valueStart - lineStart;
    const merged = withHumanFields(requestJsonSchema(zodSchema), pair.value.toJSON(), components);
    let text = renderComponent(merged, indent);
    // Keep whatever separated the component from the next one (the range ends after its last line).
    if (!source.slice(lineStart, valueEnd).endsWith('\n')) text = text.replace(/\n$/, '');
    edits.push({ start: lineStart, end: valueEnd, text });
  }
  let output = source;
  for (const edit of edits.sort((a, b) => b.start - a.start)) output = output.slice(0, edit.start) + edit.text + output.slice(edit.end);
  return output;
}

if (import.meta.url === pathToFileURL(process.argv[1] ?? '').href) {
  const source = fs.readFileSync(OPENAPI_PATH, 'utf8');
  const output = generateOpenApi(source);
  if (process.argv.includes('--check')) {
    if (output !== source) {
      console.error('openapi.yaml request schemas are out of date with the zod schemas: run npm run openapi');
      process.exit(1);
    }
  } else if (output !== source) {
    fs.writeFileSync(OPENAPI_PATH, output);
    console.log(`openapi.yaml: regenerated ${Object.keys(REQUEST_SCHEMAS).length} request schemas`);
  } else {
    console.log('openapi.yaml: request schemas already up to date');
  }
}
