import fs from 'node:fs';
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
    // better-sqlite3's install script runs prebuild-install first, which fetches a binary from
    // a non-registry host unless build-from-source is set; npm passes .npmrc keys to scripts.
    const npmrc = fs.readFileSync(path.join(root, '.npmrc'), 'utf8');
    expect(npmrc).toMatch(/^build-from-source=true$/m);
    expect(Object.keys(pkg.allowScripts ?? {})).toContain('better-sqlite3');
  });

  it('lets only the packages named in allowScripts run install scripts', () => {
    const allowed = new Set(Object.keys(pkg.allowScripts ?? {}));
    const withScripts = Object.entries<any>(lock.packages ?? {})
      .filter(([name, entry]) => name !== '' && entry.hasInstallScript)
      .map(([name]) => name.replace(/^.*node_modules\//, ''));
    expect(withScripts.filter((n) => !allowed.has(n))).toEqual([]);
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

  it('escapes the spec text it renders', async () => {
    const html = (await tb.request.get('/docs')).text;
    // descriptions in openapi.yaml contain `<` (e.g. "kw_<...>"); none may become markup
    const tags = [...html.matchAll(/<([a-z0-9]+)[\s>]/gi)].map((m) => m[1].toLowerCase());
    const known = new Set(['html', 'head', 'meta', 'title', 'style', 'body', 'h1', 'h2', 'h3', 'small', 'p', 'a', 'nav', 'div', 'section', 'span', 'code', 'table', 'tr', 'th', 'td', 'pre', 'br']);
    expect([...new Set(tags.filter((t) => !known.has(t)))]).toEqual([]);
  });
});
