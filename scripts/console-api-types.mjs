#!/usr/bin/env node
// Generates console/src/generated/openapi.ts, the TypeScript types of the API's schemas, from
// openapi.yaml with openapi-typescript: the console's view of the API's answers is the contract
// itself, never a second hand-written copy. Run by `npm run typecheck` (esbuild strips types, so
// the console bundle does not need it). The output is not committed (.gitignore).
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import openapiTS, { astToString } from 'openapi-typescript';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const target = path.join(root, 'console', 'src', 'generated', 'openapi.ts');

const ast = await openapiTS(pathToFileURL(path.join(root, 'openapi.yaml')));
const text = `// Generated from openapi.yaml by scripts/console-api-types.mjs. Do not edit.\n${astToString(ast)}`;
fs.mkdirSync(path.dirname(target), { recursive: true });
if (!fs.existsSync(target) || fs.readFileSync(target, 'utf8') !== text) fs.writeFileSync(target, text);
