#!/usr/bin/env node
// Builds the auditors' console (console/) into dist/console-app/{index.html,app.js,app.css} (not
// dist/console/: that is where tsc puts src/console/): one minified ES module and one stylesheet,
// no inline script or style (the broker serves it under a strict Content-Security-Policy),
// nothing loaded from another host. Run by `npm run build:console` and by `prepare`; prints one
// line with the gzip sizes. `--if-stale` skips the build when the output is newer than every
// source file.
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { gzipSync } from 'node:zlib';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const src = path.join(root, 'console');
const out = path.join(root, 'dist', 'console-app');

function newest(dir) {
  let t = 0;
  if (!fs.existsSync(dir)) return t;
  for (const e of fs.readdirSync(dir, { withFileTypes: true })) {
    const p = path.join(dir, e.name);
    t = Math.max(t, e.isDirectory() ? newest(p) : fs.statSync(p).mtimeMs);
  }
  return t;
}

export function consoleIsStale() {
  const built = ['index.html', 'app.js', 'app.css'].map((f) => path.join(out, f));
  if (!built.every((f) => fs.existsSync(f))) return true;
  const builtAt = Math.min(...built.map((f) => fs.statSync(f).mtimeMs));
  return newest(src) > builtAt || fs.statSync(fileURLToPath(import.meta.url)).mtimeMs > builtAt;
}

export async function buildConsole({ quiet = false } = {}) {
  if (!fs.existsSync(path.join(src, 'src', 'main.tsx'))) {
    // a build context without the console's sources (an image that leaves console/ out)
    if (!quiet) process.stdout.write('keywarden: console/ is not here; the console was not built\n');
    return null;
  }
  let esbuild;
  try {
    esbuild = await import('esbuild');
  } catch {
    // a production install (--omit=dev) has no esbuild: the console is then not built, and the
    // broker answers /console/ with 503 "console not built"
    if (!quiet) process.stdout.write('keywarden: esbuild is not installed (dev dependency); the console was not built\n');
    return null;
  }
  const started = Date.now();
  fs.mkdirSync(out, { recursive: true });
  const result = await esbuild.build({
    entryPoints: { app: path.join(src, 'src', 'main.tsx'), 'app-css': path.join(src, 'src', 'styles.css') },
    bundle: true,
    minify: true,
    format: 'esm',
    target: ['chrome110', 'firefox115', 'safari16'],
    jsx: 'automatic',
    jsxImportSource: 'preact',
    outdir: out,
    entryNames: '[name]',
    legalComments: 'none',
    sourcemap: false,
    metafile: true,
    logLevel: 'warning',
    define: { 'process.env.NODE_ENV': '"production"' },
  });
  fs.renameSync(path.join(out, 'app-css.css'), path.join(out, 'app.css'));
  fs.copyFileSync(path.join(src, 'index.html'), path.join(out, 'index.html'));
  const sizes = ['app.js', 'app.css', 'index.html'].map((f) => {
    const bytes = fs.readFileSync(path.join(out, f));
    return { file: f, bytes: bytes.length, gzip: gzipSync(bytes, { level: 9 }).length };
  });
  const total = sizes.reduce((n, s) => n + s.gzip, 0);
  if (!quiet) {
    const kb = (n) => `${(n / 1024).toFixed(1)} KiB`;
    process.stdout.write(
      `keywarden: built the console in ${Date.now() - started} ms: ${sizes.map((s) => `${s.file} ${kb(s.gzip)}`).join(', ')} gzipped (${kb(total)} in all)\n`,
    );
  }
  void result;
  return { sizes, total };
}

if (process.argv[1] && path.resolve(process.argv[1]) === fileURLToPath(import.meta.url)) {
  if (process.argv.includes('--if-stale') && !consoleIsStale()) process.exit(0);
  buildConsole().catch((err) => {
    process.stderr.write(`keywarden: building the console failed: ${err?.message ?? err}\n`);
    process.exit(1);
  });
}
