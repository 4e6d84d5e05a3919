import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import YAML from 'yaml';
import { openApiFile } from '../../src/http/ops-routes.js';
import { startTestBroker, type TestBroker } from '../support/broker.js';

/**
 * Installing Keywarden sends nothing anywhere: no dependency may run an install script except
 * the native builds listed in package.json `allowScripts` (better-sqlite3, esbuild), and in
 * particular not @scarf/scarf, which Swagger UI's package pulls in to report installs to a
 * third party. The /docs page is rendered by the broker itself instead.
 */
const root = path.resolve(import.meta.dirname, '../..');
const lock = JSON.parse(fs.readFileSync(path.join(root, 'package-lock.json'), 'utf8'));
const pkg = JSON.parse(fs.readFileSync(path.join(root, 'package.json'), 'utf8'));

describe('package-lock.json', () => {
  it('contains no @scarf/scarf and no swagger-ui-dist', () => {
    const names = Object.keys(lock.packages ?? {});
    expect(names.filter((n) => /(^|\/)@scarf\/scarf$/.test(n) || /(^|\/)swagger-ui-dist$/.test(n))).toEqual([]);
    const text = JSON.stringify(lock);
    expect(text).not.toContain('@scarf/scarf');
  });

  it('builds native modules from source, so prebuild-install downloads nothing from a third party', () => {
    // better-sqlite3's install script runs prebuild-install first, which fetches a binary from a
    // non-registry host unless told to build from source. It reads .prebuild-installrc from the
    // package directory upwards; an .npmrc key would work too, but npm 11 warns about every
    // key it does not know on every command, and the install must be quiet.
    expect(fs.readFileSync(path.join(root, '.prebuild-installrc'), 'utf8')).toMatch(/^buildFromSource=true$/m);
    expect(Object.keys(pkg.allowScripts ?? {})).toContain('better-sqlite3');
    const env = { ...process.env };
    delete env.npm_config_build_from_source;
    const run = spawnSync(process.execPath, [path.join(root, 'node_modules/prebuild-install/bin.js'), '--verbose'], {
      cwd: path.join(root, 'node_modules/better-sqlite3'),
      env,
      encoding: 'utf8',
      timeout: 30_000,
    });
    expect(run.stderr).toContain('--build-from-source specified, not attempting download');
    expect(run.stderr).not.toMatch(/https?:\/\//);
  });

  it('gives npm no project setting it does not know (npm warns about those on every command)', () => {
    const run = spawnSync('npm', ['--version'], { cwd: root, encoding: 'utf8', timeout: 30_000 });
    expect(run.status).toBe(0);
    expect(run.stderr).not.toMatch(/Unknown (project|user|env) config/);
  });

  it('lets only the packages named in allowScripts run install scripts', () => {
    const allowed = new Set(Object.keys(pkg.allowScripts ?? {}));
    const withScripts = Object.entries<any>(lock.packages ?? {})
      .filter(([name, entry]) => name !== '' && entry.hasInstallScript)
      .map(([name]) => name.replace(/^.*node_modules\//, ''));
    expect(withScripts.filter((n) => !allowed.has(n))).toEqual([]);
  });
});

describe('the install script', () => {
  /** A copy of what the install script builds, so the test never rebuilds the addon in use. */
  function nativeSourceCopy(): string {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'kw-native-'));
    fs.cpSync(path.join(root, 'binding.gyp'), path.join(dir, 'binding.gyp'));
    fs.cpSync(path.join(root, 'native'), path.join(dir, 'native'), { recursive: true });
    fs.cpSync(path.join(root, 'scripts', 'build-native.mjs'), path.join(dir, 'scripts', 'build-native.mjs'));
    return dir;
  }
  const env = { ...process.env, npm_config_node_gyp: '' };

  it('is the quiet native build', () => {
    expect(pkg.scripts.install).toBe('node scripts/build-native.mjs');
  });

  it('builds the execve addon and prints one line, not node-gyp\'s screen of output', () => {
    const dir = nativeSourceCopy();
    try {
      const run = spawnSync(process.execPath, ['scripts/build-native.mjs'], { cwd: dir, env, encoding: 'utf8', timeout: 120_000 });
      expect(run.status, run.stderr).toBe(0);
      expect(run.stdout).toMatch(/^keywarden: built the native execve addon for `keywarden exec` \(\d+ ms\)\n$/);
      expect(run.stderr).not.toMatch(/gyp info/);
      expect(fs.existsSync(path.join(dir, 'build', 'Release', 'keywarden_execve.node'))).toBe(true);
    } finally {
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });

  it('shows node-gyp\'s output and what the build needs when the build fails', () => {
    const dir = nativeSourceCopy();
    try {
      fs.writeFileSync(path.join(dir, 'native', 'execve.c'), '#error deliberately broken for the test\n');
      const run = spawnSync(process.execPath, ['scripts/build-native.mjs'], { cwd: dir, env, encoding: 'utf8', timeout: 120_000 });
      expect(run.status).toBe(1);
      expect(run.stderr).toContain('deliberately broken for the test');
      expect(run.stderr).toMatch(/gyp ERR!/);
      expect(run.stderr).toMatch(/keywarden: building the native execve addon failed .*python3, make and a C compiler/);
    } finally {
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });
});

describe('GET /docs', () => {
  let tb: TestBroker;
  beforeAll(async () => {
    tb = await startTestBroker();
  });
  afterAll(async () => {
    await tb?.close();
  });

  it('renders every operation of openapi.yaml as self-contained HTML with no script', async () => {
    const res = await tb.request.get('/docs');
    expect(res.status).toBe(200);
    expect(res.headers['content-type']).toMatch(/^text\/html/);
    expect(res.headers['content-security-policy']).toMatch(/default-src 'none'/);
    expect(res.headers['content-security-policy']).not.toMatch(/script-src/);
    const html = res.text;
    expect(html).not.toMatch(/<script/i);
    // nothing is loaded from anywhere: no src attributes, links only within the broker
    expect(html).not.toMatch(/\ssrc=/i);
    for (const [, href] of html.matchAll(/href="([^"]*)"/g)) expect(href, href).toMatch(/^(#|\/openapi\.yaml$)/);
    const spec = YAML.parse(fs.readFileSync(openApiFile(), 'utf8'));
    for (const [p, item] of Object.entries<any>(spec.paths)) {
      for (const method of ['get', 'put', 'post', 'delete', 'patch']) {
        if (!item[method]) continue;
        const escapedPath = p.replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);
        expect(html, `${method} ${p}`).toContain(`<span class="method">${method.toUpperCase()}</span> <code>${escapedPath}</code>`);
      }
    }
    for (const name of Object.keys(spec.components?.schemas ?? {})) expect(html).toContain(`id="schema-${name.replace(/[^A-Za-z0-9_-]/g, '-')}"`);
  });

  it('shows users the API, not notes for its maintainers', async () => {
    const html = (await tb.request.get('/docs')).text;
    for (const note of ['defineRoutes', 'contract-hook', 'test/contract', 'Adding routes']) expect(html).not.toContain(note);
    // the notes moved to the developer docs
    expect(fs.readFileSync(path.join(root, 'ARCHITECTURE.md'), 'utf8')).toMatch(/Every route mounted with `defineRoutes` must appear there/);
  });

  it('escapes the spec text it renders', async () => {
    const html = (await tb.request.get('/docs')).text;
    // descriptions in openapi.yaml contain `<` (e.g. "kw_<...>"); none may become markup
    const tags = [...html.matchAll(/<([a-z0-9]+)[\s>]/gi)].map((m) => m[1].toLowerCase());
    const known = new Set(['html', 'head', 'meta', 'title', 'style', 'body', 'h1', 'h2', 'h3', 'small', 'p', 'a', 'nav', 'div', 'section', 'span', 'code', 'table', 'tr', 'th', 'td', 'pre', 'br']);
    expect([...new Set(tags.filter((t) => !known.has(t)))]).toEqual([]);
  });
});
