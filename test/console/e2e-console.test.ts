/**
 * The auditors' console end to end: Debian's real Chromium (driven by playwright-core, no browser
 * download) against a listening broker seeded through its API with realistic activity: clients
 * reading secrets, a denied read, token issuances, a signature in a real registry, and allowed,
 * warned and denied release decisions. Every view is rendered, filtered and screenshotted; the
 * log is verified from the browser (intact, then after a row is tampered with); an event's
 * inclusion is verified in the browser with WebCrypto; no Content-Security-Policy violation may
 * happen (page events, console, and the broker's csp-report endpoint), and axe-core finds no
 * serious or critical accessibility violation on any view.
 *
 * Skipped without /usr/bin/chromium or docker-registry, unless KEYWARDEN_REQUIRE_TOOLS=1 (CI).
 */
import { spawnSync } from 'node:child_process';
import crypto from 'node:crypto';
import fs from 'node:fs';
import { createRequire } from 'node:module';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { chromium, type Browser, type BrowserContext, type Page } from 'playwright-core';
import supertest from 'supertest';
import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { ed25519KeyFromSeed, verifierKeyString } from '../../src/audit/signed-note.js';
import { listen, type RunningServer } from '../../src/http/server.js';
import { createKey, registerIssuer, startCiIssuer, type CiIssuer } from '../signing/helpers.js';
import { startTestBroker, type TestBroker } from '../support/broker.js';
import { pushTestImage, registryAvailable, startRegistry, type TestRegistry } from '../support/registry.js';

const here = path.dirname(fileURLToPath(import.meta.url));
const root = path.resolve(here, '..', '..');
const CHROMIUM = process.env.KEYWARDEN_CHROMIUM ?? '/usr/bin/chromium';
const SHOTS = path.join(root, 'test-output', 'screenshots');
const AXE = createRequire(import.meta.url).resolve('axe-core/axe.min.js');

function chromiumAvailable(): boolean {
  if (fs.existsSync(CHROMIUM)) return true;
  const reason = `chromium not found at ${CHROMIUM} (apt-get install chromium, or set KEYWARDEN_CHROMIUM); skipping the console's end-to-end tests`;
  if (process.env.KEYWARDEN_REQUIRE_TOOLS === '1') throw new Error(reason);
  console.warn(reason);
  return false;
}

const available = chromiumAvailable() && registryAvailable().ok;

const SECRET_VALUES = ['pg-pass-7f3a9c21e5', 'tok-api-0b8d1e44aa', 'tls-key-9c0ffee123', 'legacy-cert-55aa77'];
const auth = (key: string) => ({ Authorization: `Bearer ${key}` });

/** What must never show up in the browser: secret values and any credential. */
const forbidden: string[] = [...SECRET_VALUES];

describe.skipIf(!available)('auditors console in Chromium', () => {
  let tb: TestBroker;
  let server: RunningServer;
  let reg: TestRegistry;
  let ci: CiIssuer;
  let base: string;
  let browser: Browser;
  let ctx: BrowserContext;
  let page: Page;
  let auditorKey: string;
  let writerKey: string;
  let host: string;
  const consoleErrors: string[] = [];
  const pageErrors: string[] = [];

  const admin = () => auth(tb.adminKey);
  const flush = () => tb.broker.services.auditSequencer.flush();

  async function seed() {
    const W = admin();
    for (const g of ['payments', 'web', 'archive']) expect((await tb.request.post('/v1/groups').set(W).send({ name: g })).status).toBe(201);
    const secrets: Array<[string, string, string[], string?]> = [
      ['db-password', SECRET_VALUES[0]!, ['payments']],
      ['api-token', SECRET_VALUES[1]!, ['payments', 'web']],
      ['tls-key', SECRET_VALUES[2]!, ['web'], new Date(Date.now() + 5 * 86400_000).toISOString()],
      ['legacy-cert', SECRET_VALUES[3]!, ['archive']],
    ];
    for (const [name, value, groups, expiry] of secrets) {
      const res = await tb.request.post('/v1/secrets').set(W).send({ name, value, groups, ...(expiry ? { expiry } : {}) });
      expect(res.status, res.text).toBe(201);
    }
    const payments = await tb.client('payments-api', ['payments']);
    const web = await tb.client('web-frontend', ['web']);
    await tb.client('batch-archiver', ['archive']);
    forbidden.push(payments.clientSecret, payments.token, web.clientSecret, web.token);
    const read = (token: string, name: string) => tb.request.get(`/v1/client/secrets/${name}`).set(auth(token));
    for (const name of ['db-password', 'db-password', 'db-password', 'api-token']) expect((await read(payments.token, name)).status).toBe(200);
    for (const name of ['tls-key', 'api-token']) expect((await read(web.token, name)).status).toBe(200);
    // the denial: the web frontend asks for the payments database password
    expect((await read(web.token, 'db-password')).status).toBeGreaterThanOrEqual(403);

    // image trust: a broker-held key, a CI issuer, a signature in a real registry, three decisions
    await createKey(tb, 'release');
    await registerIssuer(tb, ci, [`${host}/org/*`]);
    await pushTestImage(host, 'org/app', 'v1');
    await pushTestImage(host, 'org/app', 'v2');
    await pushTestImage(host, 'staging/app', 'v1');
    const signed = await tb.request.post('/v1/signatures').set(W).send({ image: `${host}/org/app:v1`, key: 'release' });
    expect(signed.status, signed.text).toBe(201);
    const policy = (name: string, images: string[], mode: string, description: string) => ({ name, images, mode, description, cosign: { keys: ['release'] } });
    expect((await tb.request.post('/v1/policies').set(W).send(policy('org-app', [`${host}/org/*`], 'enforce', 'first draft'))).status).toBe(201);
    const put = await tb.request.put('/v1/policies/org-app').set(W).send(policy('org-app', [`${host}/org/*`], 'enforce', 'releases of org/* must be signed by the release key'));
    expect(put.status, put.text).toBe(200);
    expect((await tb.request.post('/v1/policies').set(W).send(policy('staging', [`${host}/staging/*`], 'warn', 'staging: warn only'))).status).toBe(201);
    const decide = async (image: string, expected: string) => {
      const res = await tb.request.post('/v1/releases').set(W).send({ image });
      expect(res.status, res.text).toBe(200);
      expect(res.body.decision, JSON.stringify(res.body.checks)).toBe(expected);
    };
    await decide(`${host}/org/app:v1`, 'allow');
    await decide(`${host}/org/app:v2`, 'deny');
    await decide(`${host}/staging/app:v1`, 'warn');
    await flush();
  }

  /** A browser context with the page-side CSP listener installed before any page script runs. */
  async function strictContext(): Promise<BrowserContext> {
    const c = await browser.newContext({ acceptDownloads: true, viewport: { width: 1280, height: 900 }, locale: 'en-GB', timezoneId: 'UTC' });
    // a step that hangs fails on its own, within the test's time
    c.setDefaultTimeout(10_000);
    await c.addInitScript({
      content: `window.__csp = []; document.addEventListener('securitypolicyviolation', (e) => window.__csp.push(e.violatedDirective + ' ' + e.blockedURI));`,
    });
    return c;
  }

  function watch(p: Page) {
    p.on('console', (m) => {
      if (m.type() === 'error') consoleErrors.push(m.text());
    });
    p.on('pageerror', (e) => pageErrors.push(String(e)));
  }

  async function login(p: Page, key: string) {
    await p.goto(`${base}/console/`);
    await p.getByLabel('Auditor or admin API key').fill(key);
    await p.getByRole('button', { name: 'Sign in' }).click();
    await p.getByTestId('session-role').waitFor();
  }

  /**
   * What the page shows, and the broker's latest session and authentication events (their
   * reasons; never a credential): printed when a test fails, so that a failure in CI says why.
   */
  async function diagnose(p: Page): Promise<string> {
    const text = await p
      .locator('body')
      .innerText({ timeout: 2_000 })
      .catch((err: unknown) => `(no text: ${String(err).split('\n')[0]})`);
    const events = await tb.handle
      .knex('audit_events')
      .whereIn('action', ['auth.failure', 'console.login', 'console.logout', 'authz.deny'])
      .orderBy('seq', 'desc')
      .limit(6)
      .select('seq', 'ts', 'action', 'outcome', 'reason', 'details')
      .catch((err: unknown) => [{ error: String(err) }]);
    const lines = events.map((e: Record<string, unknown>) => {
      const d = typeof e.details === 'string' ? (JSON.parse(e.details) as Record<string, unknown>) : {};
      return JSON.stringify({ seq: e.seq, at: e.ts ? new Date(Number(e.ts)).toISOString() : undefined, action: e.action, outcome: e.outcome, reason: e.reason, path: d.path, why: d.why, error: e.error });
    });
    return [`url: ${p.url()}`, `page: ${text.replace(/\s+/g, ' ').slice(0, 600)}`, 'latest session and authentication events:', ...lines, `console errors: ${JSON.stringify(consoleErrors.slice(-5))}`].join('\n  ');
  }

  /** Sessions found gone at the start of a view's test: none may be (the test after signing out checks). */
  const sessionLosses: string[] = [];
  let currentTest = '';

  /**
   * Each view's test starts signed in. A session lost along the way is recorded, with the
   * broker's reason, and the page signs in again: one test reports the loss, instead of every
   * later view failing on a timeout that hides it.
   */
  async function signedIn(p: Page) {
    const signOut = p.getByRole('button', { name: 'Sign out' });
    await signOut.or(p.getByLabel('Auditor or admin API key')).first().waitFor();
    if (await signOut.isVisible()) return;
    sessionLosses.push(`before "${currentTest}":\n  ${await diagnose(p)}`);
    await login(p, auditorKey);
  }

  async function go(p: Page, hash: string) {
    await p.evaluate(`location.hash = ${JSON.stringify(hash)}`);
  }

  async function shot(p: Page, name: string) {
    fs.mkdirSync(SHOTS, { recursive: true });
    await p.screenshot({ path: path.join(SHOTS, `${name}.png`), fullPage: true });
  }

  async function cspViolations(p: Page): Promise<string[]> {
    return (await p.evaluate('window.__csp')) as string[];
  }

  async function cspReports(): Promise<number> {
    const res = await supertest(tb.broker.app).get('/metrics');
    const m = /^keywarden_console_csp_reports_total(?:\{[^}]*\})? (\d+)/m.exec(res.text);
    return m ? Number(m[1]) : 0;
  }

  /** The page's visible text and HTML never contain a secret value or credential. */
  async function expectNoSecrets(p: Page) {
    const html = await p.content();
    for (const s of forbidden) expect(html.includes(s), 'the console shows a secret or credential').toBe(false);
  }

  async function rows(p: Page, testId: string): Promise<string[]> {
    return p.getByTestId(testId).locator('tbody tr').allInnerTexts();
  }

  /**
   * Polls in the test, not in the page: page.waitForFunction compiles its predicate with
   * new Function, which the console's CSP (no 'unsafe-eval') rightly refuses and reports.
   */
  async function until(p: Page, expression: string, expected: unknown = true) {
    await expect.poll(() => p.evaluate(expression), { timeout: 10_000 }).toEqual(expected);
  }
  const rowCount = (testId: string) => `document.querySelectorAll('[data-testid=${testId}] tbody tr').length`;

  beforeAll(async () => {
    // the bundle the broker serves, built from console/ when missing or older than its sources
    const built = spawnSync(process.execPath, [path.join(root, 'scripts', 'build-console.mjs'), '--if-stale'], { encoding: 'utf8' });
    expect(built.status, built.stderr).toBe(0);
    [reg, ci] = await Promise.all([startRegistry(), startCiIssuer('ES256')]);
    host = reg.hostPort;
    // background verification off: the tamper test below restores the row before anything else runs
    tb = await startTestBroker({ env: { KEYWARDEN_INSECURE_REGISTRIES: host, KEYWARDEN_AUDIT_VERIFY_INTERVAL: '0' } });
    server = await listen(tb.broker.app, { listen: { host: '127.0.0.1', port: 0 }, tls: undefined });
    base = server.url;
    auditorKey = await tb.apiKey('auditor');
    writerKey = await tb.apiKey('writer');
    forbidden.push(auditorKey, writerKey, tb.adminKey);
    await seed();
    browser = await chromium.launch({
      executablePath: CHROMIUM,
      args: ['--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking', '--disable-component-update', '--disable-sync', '--disable-dev-shm-usage'],
    });
    ctx = await strictContext();
    page = await ctx.newPage();
    watch(page);
  }, 120_000);

  beforeEach(({ task, onTestFailed }) => {
    currentTest = task.name;
    onTestFailed(async () => {
      if (page && tb) console.error(`console e2e failure, the shared page:\n  ${await diagnose(page)}`);
    });
  });

  afterAll(async () => {
    // the two screenshots the README shows: written when missing, or refreshed on request
    // (KEYWARDEN_UPDATE_DOCS_SCREENSHOTS=1), so an ordinary run leaves the committed ones alone
    for (const [shotName, doc] of [['overview', 'console-overview.png'], ['audit-event', 'console-audit.png']]) {
      const from = path.join(SHOTS, `${shotName}.png`);
      const to = path.join(root, 'docs', doc!);
      if (fs.existsSync(from) && (process.env.KEYWARDEN_UPDATE_DOCS_SCREENSHOTS === '1' || !fs.existsSync(to))) {
        fs.mkdirSync(path.join(root, 'docs'), { recursive: true });
        fs.copyFileSync(from, to);
      }
    }
    await browser?.close();
    await server?.close();
    await Promise.all([tb?.close(), reg?.stop(), ci?.close()]);
  });

  it('serves the console with a strict CSP and no inline script or style', async () => {
    const res = await fetch(`${base}/console/`);
    expect(res.status).toBe(200);
    const csp = res.headers.get('content-security-policy')!;
    expect(csp).toContain("script-src 'self'");
    expect(csp).toContain("frame-ancestors 'none'");
    expect(csp).not.toMatch(/unsafe-inline|unsafe-eval/);
    const html = await res.text();
    expect(html).not.toMatch(/<script(?![^>]*\bsrc=)[^>]*>|<style|style=/i);
    expect(html).not.toMatch(/https?:\/\//);
  });

  it('refuses a writer key, signs an auditor in, and keeps the key nowhere in the browser', async () => {
    await page.goto(`${base}/console/`);
    // the sign-in form shows once the page has asked for a session (Loading… until then): wait for it
    await page.getByRole('heading', { name: 'Keywarden console' }).waitFor();
    await page.getByLabel('Auditor or admin API key').fill(writerKey);
    await page.getByRole('button', { name: 'Sign in' }).click();
    await page.getByRole('alert').filter({ hasText: 'only auditor and admin keys' }).waitFor();
    expect(await page.getByLabel('Auditor or admin API key').inputValue()).toBe('');
    await page.getByLabel('Auditor or admin API key').fill('kw_not-a-real-key-at-all-0000000000000000000');
    await page.getByRole('button', { name: 'Sign in' }).click();
    await page.getByRole('alert').filter({ hasText: 'not accepted' }).waitFor();
    await shot(page, 'login');

    await login(page, auditorKey);
    expect(await page.getByTestId('session-role').innerText()).toContain('auditor');
    const stored = (await page.evaluate(`JSON.stringify([document.cookie, Object.entries(localStorage), Object.entries(sessionStorage)])`)) as string;
    expect(stored.includes(auditorKey)).toBe(false);
    expect(stored).not.toContain('kw_console'); // HttpOnly
    const cookies = await ctx.cookies();
    const cookie = cookies.find((c) => c.name === 'kw_console');
    expect(cookie).toMatchObject({ httpOnly: true, sameSite: 'Strict' });
    expect(cookie!.value.includes(auditorKey)).toBe(false);
  });

  it('overview: log health, activity charts and expiring secrets', async () => {
    await signedIn(page);
    await go(page, '#/overview');
    await page.getByTestId('health').waitFor();
    expect(await page.getByTestId('chain-status').innerText()).toMatch(/ok|pending/);
    expect(await page.getByTestId('checkpoint').innerText()).toMatch(/tree size \d+/);
    await page.getByTestId('charts').waitFor();
    const total = async (kind: string) => Number(await page.getByTestId(`total-${kind}`).innerText());
    expect(await total('reads')).toBe(6);
    expect(await total('denials')).toBeGreaterThanOrEqual(1);
    expect(await total('tokens')).toBeGreaterThanOrEqual(3);
    expect(await total('signatures')).toBe(1);
    expect(await total('allow')).toBe(1);
    expect(await total('warn')).toBe(1);
    expect(await total('deny')).toBe(1);
    expect(await page.locator('svg rect.bar-reads').count()).toBe(24);
    await page.getByLabel('Last hour').check();
    await until(page, `document.querySelectorAll('svg rect.bar-reads').length === 60`);
    expect(await total('reads')).toBe(6);
    await page.getByLabel('Last 30 days').check();
    await until(page, `document.querySelectorAll('svg rect.bar-reads').length === 30`);
    await page.getByLabel('Last day').check();
    await until(page, `document.querySelectorAll('svg rect.bar-reads').length === 24`);
    const expiring = await rows(page, 'expiring');
    expect(expiring).toHaveLength(1);
    expect(expiring[0]).toContain('tls-key');
    await expectNoSecrets(page);
    await shot(page, 'overview');
  });

  it('audit explorer: filters change the results, pages follow the cursor, details show every field', async () => {
    await signedIn(page);
    await go(page, '#/audit');
    await page.getByTestId('events').waitFor();
    const first = await page.getByTestId('events').locator('tbody tr').evaluateAll((trs) => trs.map((tr) => Number(tr.getAttribute('data-seq'))));
    expect(first).toHaveLength(25);
    await page.getByRole('button', { name: 'Next page' }).click();
    await until(page, `Number(document.querySelector('[data-testid=events] tbody tr')?.getAttribute('data-seq')) < ${Math.min(...first)}`);
    await page.getByRole('button', { name: 'Previous page' }).click();
    await until(page, `Number(document.querySelector('[data-testid=events] tbody tr')?.getAttribute('data-seq')) === ${first[0]}`);

    // by actor and action: the payments service's four reads
    await page.getByLabel('Actor (name or id)').fill('payments-api');
    await page.getByLabel('Action').fill('secret.read');
    await page.getByRole('button', { name: 'Apply filters' }).click();
    await until(page, `location.hash.includes('actor=payments-api')`);
    await until(page, rowCount('events'), 4);
    for (const r of await rows(page, 'events')) expect(r).toMatch(/client payments-api[\s\S]*secret\.read[\s\S]*allow/);
    expect((await rows(page, 'events')).filter((r) => r.includes('db-password'))).toHaveLength(3);
    await shot(page, 'audit');

    // by outcome and target: the denied read
    await page.goto(`${base}/console/#/audit?outcome=deny&resourceKind=secret&resource=db-password`);
    await until(page, rowCount('events'), 1);
    const denied = await rows(page, 'events');
    expect(denied).toHaveLength(1);
    expect(denied[0]).toMatch(/web-frontend[\s\S]*deny/);

    // by source address, and by time range. A hash change keeps the old answer on screen until
    // the new one arrives, so each step below shows a different answer from the one before it.
    await page.goto(`${base}/console/#/audit?sourceIp=10.99.*`);
    await page.getByText('No events match.').waitFor();
    // six reads and the denied one
    await page.goto(`${base}/console/#/audit?action=secret.read&since=${new Date(Date.now() - 3600_000).toISOString()}`);
    await until(page, rowCount('events'), 7);
    const ip = (await page.getByTestId('events').locator('tbody tr').first().locator('td').nth(6).innerText()).trim();
    await page.goto(`${base}/console/#/audit?action=secret.read&until=2001-01-01T00:00:00.000Z`);
    await page.getByText('No events match.').waitFor();
    // the six allowed reads, all from the test's address
    await page.goto(`${base}/console/#/audit?action=secret.read&outcome=allow&sourceIp=${encodeURIComponent(ip)}`);
    await until(page, rowCount('events'), 6);

    // an event's detail: every recorded field, and its inclusion verified in the browser
    await page.getByRole('button', { name: /Details of event/ }).first().click();
    const detail = page.getByTestId('event-detail');
    await detail.waitFor();
    const text = await detail.innerText();
    for (const label of ['Event number', 'Leaf index', 'Time', 'Actor', 'Action', 'Target', 'Outcome', 'Reason', 'Request id', 'Source address', 'User agent', 'Details']) {
      expect(text).toContain(label);
    }
    expect(text).toContain('secret.read');
    await flush();
    await detail.getByRole('button', { name: 'Verify inclusion' }).click();
    await detail.getByText('Included: verified in this browser.').waitFor({ timeout: 15_000 });
    const steps = await detail.getByTestId('inclusion-result').innerText();
    expect(steps).toMatch(/Checkpoint signature:.*Ed25519 signature by .* verified/);
    expect(steps).toMatch(/Inclusion proof:.*lead from leaf \d+ to the signed root/);
    await shot(page, 'audit-event');

    // against a pinned log key that did not sign the checkpoint, the same check fails in the browser
    const origin = (await supertest(tb.broker.app).get('/v1/audit/checkpoint').set(auth(auditorKey))).body.origin as string;
    const rogue = verifierKeyString(origin, ed25519KeyFromSeed(crypto.randomBytes(32)).publicRaw);
    await page.evaluate(`localStorage.setItem('keywarden-console.verifier-key', ${JSON.stringify(rogue)})`);
    await detail.getByRole('button', { name: 'Verify inclusion' }).click();
    await detail.getByText('Not verified.').waitFor();
    expect(await detail.getByTestId('inclusion-result').innerText()).toMatch(/pinned log key[\s\S]*no signature by/);
    await shot(page, 'audit-event-wrong-key');
    await page.evaluate(`localStorage.removeItem('keywarden-console.verifier-key')`);
    await expectNoSecrets(page);
  });

  it('exports the filtered events as NDJSON and CSV', async () => {
    await signedIn(page);
    await page.goto(`${base}/console/#/audit?action=secret.read&actor=payments-api`);
    await until(page, rowCount('events'), 4);
    const [ndjson] = await Promise.all([page.waitForEvent('download'), page.getByRole('button', { name: 'Export NDJSON' }).click()]);
    expect(ndjson.suggestedFilename()).toMatch(/\.ndjson$/);
    const lines = fs.readFileSync((await ndjson.path())!, 'utf8').split('\n').filter(Boolean).map((l) => JSON.parse(l));
    expect(lines).toHaveLength(4);
    for (const e of lines) expect(e).toMatchObject({ action: 'secret.read', actorName: 'payments-api', outcome: 'allow' });
    expect(lines.filter((e) => e.resourceName === 'db-password')).toHaveLength(3);

    const [csv] = await Promise.all([page.waitForEvent('download'), page.getByRole('button', { name: 'Export CSV' }).click()]);
    expect(csv.suggestedFilename()).toMatch(/\.csv$/);
    const csvLines = fs.readFileSync((await csv.path())!, 'utf8').trim().split(/\r?\n/);
    expect(csvLines[0]).toMatch(/^seq,/);
    expect(csvLines).toHaveLength(5);
    for (const l of csvLines.slice(1)) expect(l).toContain('secret.read');
    await page.getByTestId('export-status').filter({ hasText: 'Exported 4 events' }).waitFor();
    for (const s of forbidden) {
      expect(JSON.stringify(lines).includes(s)).toBe(false);
      expect(csvLines.join('\n').includes(s)).toBe(false);
    }
  });

  it('who can read what: per secret, per client, stale access, with links to the events', async () => {
    await signedIn(page);
    await go(page, '#/access');
    const bySecret = page.getByTestId('access-secrets');
    await bySecret.waitFor();
    const db = bySecret.locator('section').filter({ has: page.getByRole('heading', { name: /db-password/ }) });
    const dbRows = await db.locator('tbody tr').allInnerTexts();
    expect(dbRows).toHaveLength(1);
    expect(dbRows[0]).toMatch(/payments-api[\s\S]*payments[\s\S]*ago/);
    const api = bySecret.locator('section').filter({ has: page.getByRole('heading', { name: /api-token/ }) });
    expect((await api.locator('tbody tr').allInnerTexts()).map((r) => r.split('\t')[0]!.trim()).sort()).toEqual(['payments-api', 'web-frontend']);
    await shot(page, 'access');

    await page.getByRole('link', { name: 'By client' }).click();
    const byClient = page.getByTestId('access-clients');
    await byClient.waitFor();
    const web = byClient.locator('section').filter({ has: page.getByRole('heading', { name: /web-frontend/ }) });
    expect((await web.locator('tbody tr').allInnerTexts()).map((r) => r.split('\t')[0]!.trim()).sort()).toEqual(['api-token', 'tls-key']);

    await page.getByRole('link', { name: 'Stale access' }).click();
    await page.getByTestId('stale').waitFor();
    const stale = await rows(page, 'stale');
    expect(stale).toHaveLength(1);
    expect(stale[0]).toMatch(/batch-archiver[\s\S]*legacy-cert[\s\S]*never read/);

    // the events behind a row
    await go(page, '#/access?tab=secrets');
    await db.getByRole('link', { name: 'reads' }).click();
    await until(page, `location.hash.startsWith('#/audit') && location.hash.includes('resource=db-password')`);
    await until(page, rowCount('events'), 3);
    await expectNoSecrets(page);
  });

  it('release decisions: filters and the detail with every check and reason', async () => {
    await signedIn(page);
    await go(page, '#/releases');
    await page.getByTestId('releases').waitFor();
    expect(await rows(page, 'releases')).toHaveLength(3);
    await shot(page, 'releases');
    await page.locator('select[name=decision]').selectOption('deny');
    await page.getByRole('button', { name: 'Apply filters' }).click();
    await until(page, rowCount('releases'), 1);
    expect((await rows(page, 'releases'))[0]).toContain(`${host}/org/app:v2`);
    await page.locator('select[name=decision]').selectOption('');
    await page.getByLabel('Policy', { exact: true }).fill('staging');
    await page.getByRole('button', { name: 'Apply filters' }).click();
    // the deny filter's single row stays on screen until the new answer arrives: wait for the new row
    await expect.poll(() => rows(page, 'releases'), { timeout: 10_000 }).toEqual([expect.stringMatching(/warn[\s\S]*staging\/app:v1/)]);
    await until(page, `location.hash.includes('policy=staging') && !location.hash.includes('decision=')`);

    // the staging filter's row stays on screen until the deny filter's answer replaces it
    await page.goto(`${base}/console/#/releases?decision=deny`);
    await expect.poll(() => rows(page, 'releases'), { timeout: 10_000 }).toEqual([expect.stringMatching(/deny[\s\S]*\/org\/app:v2/)]);
    await page.getByTestId('releases').locator('tbody tr a').first().click();
    const detail = page.getByTestId('release-detail');
    await detail.waitFor();
    expect(await detail.innerText()).toMatch(/org-app \(version 2\)/);
    const checks = await rows(page, 'checks');
    expect(checks.some((c) => /cosign[\s\S]*failed/.test(c))).toBe(true);
    await shot(page, 'release-detail');
  });

  it('inventory: policies, signing keys, trusted issuers and clients with who changed them', async () => {
    await signedIn(page);
    await go(page, '#/inventory?tab=policies');
    await page.getByTestId('inventory').waitFor();
    expect((await rows(page, 'inventory')).join('\n')).toMatch(/org-app[\s\S]*version 2/);
    await page.getByRole('link', { name: 'org-app' }).click();
    await page.getByTestId('history').waitFor();
    const history = await rows(page, 'history');
    expect(history).toHaveLength(2);
    expect(history[0]).toMatch(/operator[\s\S]*policy\.create[\s\S]*allow/);
    expect(history[1]).toMatch(/policy\.update[\s\S]*2/);
    expect(await page.getByTestId('inventory-detail').innerText()).toContain('releases of org/* must be signed by the release key');
    // the version history (GET /v1/policies/{name}/versions): each version's document behind a disclosure
    const versions = page.getByTestId('policy-versions');
    await versions.waitFor();
    const v1 = versions.locator('li[data-version="1"]');
    const v2 = versions.locator('li[data-version="2"]');
    expect(await v2.locator('summary').innerText()).toMatch(/Version 2: update by /);
    expect(await v1.locator('summary').innerText()).toMatch(/Version 1: create by /);
    expect(await v1.innerText()).not.toContain('first draft');
    await v1.locator('summary').click();
    await v2.locator('summary').click();
    expect(await v1.locator('pre').innerText()).toContain('first draft');
    expect(await v1.locator('pre').innerText()).not.toContain('must be signed by the release key');
    expect(await v2.locator('pre').innerText()).toContain('releases of org/* must be signed by the release key');
    await shot(page, 'inventory');
    // the event behind a history row opens in the explorer
    await page.getByTestId('history').locator('tbody tr').nth(1).getByRole('link').click();
    await page.getByTestId('event-detail').waitFor();
    expect(await page.getByTestId('event-detail').innerText()).toMatch(/policy\.update[\s\S]*trust-policy org-app/);
    await go(page, '#/inventory?tab=policies');

    await page.getByRole('link', { name: 'Signing keys' }).click();
    await page.getByRole('link', { name: 'release', exact: true }).click();
    await page.getByTestId('inventory-detail').getByText('ecdsa-p256').waitFor();
    // the history loads on its own, after the detail: wait for it rather than read it at once
    await page.getByTestId('history').getByText('signingkey.create').first().waitFor();

    await page.getByRole('link', { name: 'Trusted CI issuers' }).click();
    await page.getByRole('link', { name: 'github', exact: true }).click();
    await page.getByTestId('inventory-detail').getByText('https://ci.example.test').waitFor();
    await page.getByTestId('history').getByText('trustedissuer.create').first().waitFor();

    await page.getByRole('link', { name: 'Clients' }).click();
    await page.getByRole('link', { name: 'payments-api', exact: true }).click();
    await page.getByTestId('inventory-detail').getByText('kwc_', { exact: false }).first().waitFor();
    await page.getByTestId('history').getByText('client.create').first().waitFor();
    await expectNoSecrets(page);
  });

  it('verify: success, then the broken position after a row is tampered with', async () => {
    await signedIn(page);
    await flush();
    await go(page, '#/verify');
    await page.getByRole('button', { name: 'Verify the log' }).click();
    const result = page.getByTestId('verify-result');
    await result.getByText('Verified.').waitFor();
    expect(await result.innerText()).toMatch(/\d+ leaves recomputed/);
    await page.getByRole('button', { name: 'Check its signature here' }).click();
    await page.getByTestId('head-check').getByText('Signature verified in this browser').waitFor();
    await shot(page, 'verify');

    // someone with database access edits one recorded read
    const knex = tb.handle.knex;
    const victim = await knex('audit_events').where({ action: 'secret.read' }).whereNotNull('leaf_index').orderBy('seq').first();
    await knex('audit_events').where({ seq: victim.seq }).update({ resource_name: 'api-token' });
    const at = Number(victim.leaf_index);
    const size = Number((await knex('audit_tree_heads').max('tree_size as n').first())?.n);
    expect(size).toBeGreaterThan(0);
    expect(at).toBeGreaterThan(0);
    try {
      await page.getByRole('button', { name: 'Verify the log' }).click();
      await result.getByText(`Broken at leaf ${at}.`).waitFor();
      await shot(page, 'verify-broken');
      // a range around the edited event names it; a range that ends before it does not re-hash it
      await page.getByLabel('From leaf').fill(String(Math.max(0, at - 2)));
      await page.getByLabel('To leaf (exclusive)').fill(String(Math.min(size, at + 3)));
      await page.getByRole('button', { name: 'Verify the log' }).click();
      await result.getByText(`Broken at leaf ${at}.`).waitFor();
      expect(await result.innerText()).toContain(`range verification of leaves ${Math.max(0, at - 2)} to ${Math.min(size, at + 3) - 1}`);
      await page.getByLabel('From leaf').fill('0');
      await page.getByLabel('To leaf (exclusive)').fill(String(at));
      await page.getByRole('button', { name: 'Verify the log' }).click();
      await result.getByText('Verified.').waitFor();
      expect(await result.innerText()).toMatch(new RegExp(`Leaves 0 to ${at - 1}: ${at} leaves recomputed`));
      await page.getByLabel('From leaf').fill('');
      await page.getByLabel('To leaf (exclusive)').fill('');
    } finally {
      await knex('audit_events').where({ seq: victim.seq }).update({ resource_name: victim.resource_name });
    }
    await page.getByRole('button', { name: 'Verify the log' }).click();
    await result.getByText('Verified.').waitFor();
  });

  it('is keyboard navigable: skip link, then the views by Tab and Enter', async () => {
    await signedIn(page);
    await page.goto(`${base}/console/#/overview`);
    await page.reload();
    await page.getByTestId('health').waitFor();
    await page.keyboard.press('Tab');
    expect(await page.evaluate('document.activeElement.textContent')).toBe('Skip to content');
    await page.keyboard.press('Tab');
    expect(await page.evaluate('document.activeElement.textContent')).toBe('Overview');
    await page.keyboard.press('Tab');
    await page.keyboard.press('Enter');
    await until(page, `location.hash === '#/audit'`);
    // focus is visible: the focused element has an outline
    const outline = await page.evaluate(`getComputedStyle(document.activeElement).outlineStyle`);
    expect(outline).not.toBe('none');
  });

  it('logging out ends the session', async () => {
    await signedIn(page);
    await page.getByRole('button', { name: 'Sign out' }).click();
    await page.getByText('You have signed out.').waitFor();
    const status = await page.evaluate(`fetch('/v1/console/session').then((r) => r.status)`);
    expect(status).toBe(401);
    await page.reload();
    await page.getByLabel('Auditor or admin API key').waitFor();
  });

  it('the session lasted through every view (none was found ended before its test, up to signing out)', () => {
    expect(sessionLosses, sessionLosses.join('\n')).toEqual([]);
  });

  it('revoking the API key ends its session', async () => {
    const created = await supertest(tb.broker.app).post('/v1/api-keys').set(admin()).send({ name: 'auditor-to-revoke', role: 'auditor' });
    expect(created.status).toBe(201);
    forbidden.push(created.body.key);
    const c = await strictContext();
    try {
      const p = await c.newPage();
      watch(p);
      await login(p, created.body.key);
      await go(p, '#/audit');
      await p.getByTestId('events').waitFor();
      expect((await supertest(tb.broker.app).delete(`/v1/api-keys/${created.body.id}`).set(admin())).status).toBe(204);
      await go(p, '#/releases');
      await p.getByText('Your session has ended. Sign in again.').waitFor();
      await p.getByLabel('Auditor or admin API key').waitFor();
      expect(await cspViolations(p)).toEqual([]);
    } finally {
      await c.close();
    }
  });

  it('reports no Content-Security-Policy violation, in the page, the console or to the broker', async () => {
    expect(await cspViolations(page)).toEqual([]);
    expect(consoleErrors.filter((e) => /Content Security Policy|Refused to/i.test(e))).toEqual([]);
    // the only console errors are the expected refusals (the writer's key, the bad key, the ended sessions)
    expect(consoleErrors.filter((e) => !/status of 40[13]/.test(e))).toEqual([]);
    expect(pageErrors).toEqual([]);
    expect(await cspReports()).toBe(0);

    // the listeners do see a violation: an inline script injected into a console page
    const c = await strictContext();
    try {
      const p = await c.newPage();
      await p.goto(`${base}/console/`);
      await p.evaluate(`(() => { const s = document.createElement('script'); s.textContent = 'window.__ran = 1'; document.body.append(s); })()`);
      await until(p, 'window.__csp.length > 0');
      expect(await p.evaluate('window.__ran')).toBeUndefined();
      await expect.poll(cspReports, { timeout: 10_000 }).toBeGreaterThan(0);
    } finally {
      await c.close();
    }
  });

  it('passes axe-core with no serious or critical violation on every view', { timeout: 180_000 }, async () => {
    const axe = fs.readFileSync(AXE, 'utf8');
    // axe is injected as an inline script, which the console's CSP rightly refuses; this
    // context alone bypasses CSP (the CSP assertions above run in a strict context)
    const c = await browser.newContext({ bypassCSP: true, viewport: { width: 1280, height: 900 }, timezoneId: 'UTC' });
    try {
      const p = await c.newPage();
      const check = async (name: string) => {
        await p.addScriptTag({ content: axe });
        const res = (await p.evaluate(
          `axe.run(document, { runOnly: { type: 'tag', values: ['wcag2a', 'wcag2aa', 'wcag21a', 'wcag21aa', 'best-practice'] } }).then((r) => r.violations.map((v) => ({ id: v.id, impact: v.impact, nodes: v.nodes.length, help: v.help, target: v.nodes[0] && v.nodes[0].target })))`,
        )) as Array<{ id: string; impact: string }>;
        const bad = res.filter((v) => v.impact === 'serious' || v.impact === 'critical');
        expect(bad, `${name}: ${JSON.stringify(bad)}`).toEqual([]);
      };
      await p.goto(`${base}/console/`);
      await p.getByLabel('Auditor or admin API key').waitFor();
      await check('login');
      await login(p, auditorKey);
      const views: Array<[string, string]> = [
        ['#/overview', 'charts'],
        ['#/audit', 'events'],
        ['#/access', 'access-secrets'],
        ['#/access?tab=stale', 'stale'],
        ['#/releases', 'releases'],
        ['#/inventory?tab=policies&name=org-app', 'history'],
      ];
      for (const [hash, testId] of views) {
        await go(p, hash);
        await p.getByTestId(testId).waitFor();
        await check(hash);
      }
      await go(p, '#/audit');
      await p.getByRole('button', { name: /Details of event/ }).first().click();
      await p.getByTestId('event-detail').waitFor();
      await check('event detail');
      await go(p, '#/verify');
      await p.getByRole('button', { name: 'Verify the log' }).waitFor();
      await check('#/verify');
    } finally {
      await c.close();
    }
  });
});
