/**
 * The console reads the API through types generated from openapi.yaml (one contract): a schema
 * change that breaks what a view reads fails here, not in an auditor's browser.
 */
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { describe, expect, it } from 'vitest';

const root = path.resolve(import.meta.dirname, '..', '..');

describe('console against the contract', () => {
  it('type-checks against the types generated from openapi.yaml', () => {
    const generated = spawnSync(process.execPath, [path.join(root, 'scripts', 'console-api-types.mjs')], { encoding: 'utf8' });
    expect(generated.status, generated.stderr).toBe(0);
    const types = fs.readFileSync(path.join(root, 'console', 'src', 'generated', 'openapi.ts'), 'utf8');
    // generated from this openapi.yaml: a schema the console uses is there
    expect(types).toMatch(/AuditInclusionProof: \{/);
    const tsc = spawnSync(process.execPath, [path.join(root, 'node_modules', 'typescript', 'bin', 'tsc'), '-p', path.join(root, 'console', 'tsconfig.json')], { encoding: 'utf8' });
    expect(tsc.status, `${tsc.stdout}${tsc.stderr}`).toBe(0);
  }, 120_000);

  it('hand-writes none of the API types it reads', () => {
    const api = fs.readFileSync(path.join(root, 'console', 'src', 'api.ts'), 'utf8');
    // Page<T> is the one generic shape; every answer type is an alias of a generated schema
    const interfaces = [...api.matchAll(/^export interface (\w+)/gm)].map((m) => m[1]);
    expect(interfaces).toEqual(['Page']);
    expect(api).toMatch(/from '\.\/generated\/openapi'/);
  });
});
