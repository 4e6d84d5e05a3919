// openapi.yaml's request-body schemas are generated from the zod schemas the routes parse with
// (scripts/openapi-requests.ts, `npm run openapi`). These tests fail when the committed file has
// drifted from zod, and when a request body is added that neither zod nor the hand-written list covers.
import fs from 'node:fs';
import { Ajv2020 } from 'ajv/dist/2020.js';
import addFormatsModule from 'ajv-formats';
import { describe, expect, it } from 'vitest';
import YAML from 'yaml';
import { generateOpenApi, HAND_WRITTEN_REQUESTS, OPENAPI_PATH, REQUEST_SCHEMAS, requestJsonSchema } from '../../scripts/openapi-requests.js';
import { policyDocumentSchema } from '../../src/trust/gate/policy-schema.js';

// ajv-formats is CommonJS with `exports.default` (see test/support/contract.ts).
type FormatsPlugin = (ajv: Ajv2020) => unknown;
const addFormats = ((addFormatsModule as unknown as { default?: FormatsPlugin }).default ?? addFormatsModule) as unknown as FormatsPlugin;

const committed = fs.readFileSync(OPENAPI_PATH, 'utf8');

function requestBodyComponents(spec: { paths: Record<string, Record<string, unknown>> }): Set<string> {
  const names = new Set<string>();
  for (const item of Object.values(spec.paths)) {
    for (const operation of Object.values(item)) {
      const content = (operation as { requestBody?: { content?: Record<string, { schema?: { $ref?: string } }> } })?.requestBody?.content ?? {};
      for (const media of Object.values(content)) {
        const ref = media.schema?.$ref?.match(/^#\/components\/schemas\/(.+)$/);
        if (ref) names.add(ref[1]!);
      }
    }
  }
  return names;
}

describe('openapi.yaml request schemas are generated from zod', () => {
  it('the committed openapi.yaml matches the zod request schemas (else: run npm run openapi)', () => {
    const generated = generateOpenApi(committed);
    // toBe on the whole text would print 3000 lines; compare per component for a readable failure.
    const generatedSchemas = (YAML.parse(generated) as { components: { schemas: Record<string, unknown> } }).components.schemas;
    const committedSchemas = (YAML.parse(committed) as { components: { schemas: Record<string, unknown> } }).components.schemas;
    for (const name of Object.keys(REQUEST_SCHEMAS)) {
      expect(committedSchemas[name], `components.schemas.${name} is out of date: run npm run openapi`).toEqual(generatedSchemas[name]);
    }
    expect(generated === committed, 'openapi.yaml is out of date with the zod request schemas: run npm run openapi').toBe(true);
  });

  it('every request body in paths is generated or explicitly hand-written', () => {
    const spec = YAML.parse(committed) as { paths: Record<string, Record<string, unknown>> };
    const covered = new Set([...Object.keys(REQUEST_SCHEMAS), ...Object.keys(HAND_WRITTEN_REQUESTS)]);
    expect([...requestBodyComponents(spec)].filter((name) => !covered.has(name))).toEqual([]);
  });

  it('detects a hand edit that loosens a generated constraint', () => {
    const loosened = committed.replace(/(rootKeys:\n(?:.*\n)*?\s+maxItems: )20\n/, '$1200\n');
    expect(loosened).not.toBe(committed);
    expect(generateOpenApi(loosened)).toBe(committed);
  });

  it('is idempotent and keeps every other byte of the file', () => {
    const generated = generateOpenApi(committed);
    expect(generateOpenApi(generated)).toBe(generated);
    const withoutRequests = (text: string) => {
      const schemas = (YAML.parse(text) as { components: { schemas: Record<string, unknown> } }).components.schemas;
      for (const name of Object.keys(REQUEST_SCHEMAS)) delete schemas[name];
      return schemas;
    };
    expect(withoutRequests(generated)).toEqual(withoutRequests(committed));
  });

  it('the generated JSON Schema rejects what zod rejects for bounds the yaml used to miss', () => {
    const ajv = new Ajv2020({ strict: false, allErrors: true });
    addFormats(ajv);
    const validate = ajv.compile(requestJsonSchema(policyDocumentSchema));
    const base = { name: 'p', images: ['registry.example.com/team/*'], cosign: { keys: ['k'] } };
    expect(validate(base)).toBe(true);
    expect(policyDocumentSchema.safeParse(base).success).toBe(true);
    for (const bad of [
      { ...base, cosign: { keys: Array.from({ length: 51 }, (_, i) => `k${i}`) } },
      { ...base, images: ['bad pattern with spaces'] },
      { ...base, rules: { maxAgeDays: 36_501 } },
      { images: base.images },
    ]) {
      expect(policyDocumentSchema.safeParse(bad).success).toBe(false);
      expect(validate(bad)).toBe(false);
    }
  });
});
