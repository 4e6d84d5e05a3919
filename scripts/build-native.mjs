#!/usr/bin/env node
// npm install hook: builds the one native addon (build/Release/keywarden_execve.node, which lets
// `keywarden exec` replace itself with the workload: Node 20 has no process.execve) and says so in
// one line. node-gyp's own output (a screen of `gyp info` lines) is kept and shown only on failure.
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
// npm tells lifecycle scripts where its bundled node-gyp is; run by hand, npm's copy next to this
// node, else node-gyp on PATH
const bundled = path.join(path.dirname(process.execPath), '..', 'lib', 'node_modules', 'npm', 'node_modules', 'node-gyp', 'bin', 'node-gyp.js');
const gyp = process.env.npm_config_node_gyp || (fs.existsSync(bundled) ? bundled : undefined);
// build against this node's own headers when it has them, so nothing is downloaded
const prefix = path.resolve(path.dirname(process.execPath), '..');
const nodedir = !process.env.npm_config_nodedir && fs.existsSync(path.join(prefix, 'include', 'node', 'node.h')) ? [`--nodedir=${prefix}`] : [];
const [command, args] = gyp ? [process.execPath, [gyp, 'rebuild', ...nodedir]] : ['node-gyp', ['rebuild', ...nodedir]];
const started = Date.now();
const result = spawnSync(command, args, { cwd: root, encoding: 'utf8', maxBuffer: 64 * 1024 * 1024 });
if (result.status === 0) {
  process.stdout.write(`keywarden: built the native execve addon for \`keywarden exec\` (${Date.now() - started} ms)\n`);
  process.exit(0);
}
process.stderr.write(result.stdout ?? '');
process.stderr.write(result.stderr ?? '');
const cause = result.error ? `: ${result.error.message}` : ` (exit ${result.status ?? result.signal})`;
process.stderr.write(
  `keywarden: building the native execve addon failed${cause}. It needs python3, make and a C compiler ` +
    `(Debian: apt-get install python3 make g++); node-gyp's output is above.\n`,
);
process.exit(1);
