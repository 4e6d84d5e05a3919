/**
 * `keywarden verify IMAGE [--api-key-file FILE] [--timeout SECONDS] [--json]`
 *
 * Asks the broker's release gate (POST /v1/releases) for a decision on IMAGE, prints every check
 * and the decision. Reads KEYWARDEN_ADDR and KEYWARDEN_API_KEY (or --api-key-file).
 *
 * Exit codes: 0 allow (and warn), 1 deny, 64 usage error, 69 broker unreachable (or 5xx),
 * 70 other error, 77 authentication/authorization denied (401/403).
 */
import fs from 'node:fs';
import type { Command } from 'commander';

export const VerifyExit = { ALLOW: 0, DENY: 1, USAGE: 64, UNREACHABLE: 69, INTERNAL: 70, DENIED: 77 } as const;

class VerifyError extends Error {
  constructor(
    readonly exitCode: number,
    message: string,
  ) {
    super(message);
  }
}

interface VerifyOptions {
  apiKeyFile?: string;
  timeout: string;
  json?: boolean;
}

interface Check {
  type: string;
  ok: boolean;
  detail: string;
}

function readApiKey(opts: VerifyOptions, env: NodeJS.ProcessEnv): string {
  if (opts.apiKeyFile) {
    let text: string;
    try {
      text = fs.readFileSync(opts.apiKeyFile, 'utf8');
    } catch (err) {
      throw new VerifyError(VerifyExit.USAGE, `--api-key-file: cannot read ${opts.apiKeyFile} (${(err as NodeJS.ErrnoException).code ?? 'error'})`);
    }
    const key = text.trim();
    if (!key) throw new VerifyError(VerifyExit.USAGE, `--api-key-file: ${opts.apiKeyFile} is empty`);
    return key;
  }
  const key = env.KEYWARDEN_API_KEY?.trim();
  if (!key) throw new VerifyError(VerifyExit.USAGE, 'KEYWARDEN_API_KEY is not set (or pass --api-key-file FILE)');
  return key;
}

function brokerAddr(env: NodeJS.ProcessEnv): string {
  const raw = env.KEYWARDEN_ADDR?.trim();
  if (!raw) throw new VerifyError(VerifyExit.USAGE, 'KEYWARDEN_ADDR is not set (the broker URL, e.g. https://keywarden:8750)');
  let url: URL;
  try {
    url = new URL(raw);
  } catch {
    throw new VerifyError(VerifyExit.USAGE, `KEYWARDEN_ADDR is not a URL: ${raw}`);
  }
  if (url.protocol !== 'http:' && url.protocol !== 'https:') throw new VerifyError(VerifyExit.USAGE, 'KEYWARDEN_ADDR must be an http:// or https:// URL');
  if (url.username || url.password) throw new VerifyError(VerifyExit.USAGE, 'KEYWARDEN_ADDR must not contain credentials');
  return url.href.replace(/\/+$/, '');
}

function problemText(status: number, body: unknown): string {
  const p = body && typeof body === 'object' ? (body as { code?: unknown; detail?: unknown; title?: unknown }) : {};
  let text = `HTTP ${status}`;
  if (typeof p.code === 'string') text += ` ${p.code}`;
  const detail = typeof p.detail === 'string' ? p.detail : typeof p.title === 'string' ? p.title : undefined;
  if (detail) text += `: ${detail.slice(0, 500)}`;
  return text;
}

/** Runs the command; returns the exit code (never throws). */
export async function verify(image: string, opts: VerifyOptions, env: NodeJS.ProcessEnv = process.env, out = process.stdout, err = process.stderr): Promise<number> {
  const say = (s: string) => out.write(`${s}\n`);
  const fail = (s: string) => err.write(`keywarden: ${s}\n`);
  try {
    const timeoutSeconds = Number(opts.timeout);
    if (!Number.isFinite(timeoutSeconds) || timeoutSeconds <= 0 || timeoutSeconds > 3600) {
      throw new VerifyError(VerifyExit.USAGE, '--timeout must be a number of seconds between 0 and 3600');
    }
    if (!image || /\s/.test(image)) throw new VerifyError(VerifyExit.USAGE, 'IMAGE must be a fully qualified reference, e.g. registry.example.com/team/app:v1');
    const addr = brokerAddr(env);
    const apiKey = readApiKey(opts, env);

    let res: Response;
    try {
      res = await fetch(`${addr}/v1/releases`, {
        method: 'POST',
        headers: { Authorization: `Bearer ${apiKey}`, 'Content-Type': 'application/json', Accept: 'application/json' },
        body: JSON.stringify({ image }),
        redirect: 'manual',
        signal: AbortSignal.timeout(timeoutSeconds * 1000),
      });
    } catch (e) {
      const x = e as { name?: string; code?: string; cause?: { code?: string } };
      const why = x?.name === 'TimeoutError' ? `no answer within ${timeoutSeconds} s` : (x?.cause?.code ?? x?.code ?? 'network error');
      throw new VerifyError(VerifyExit.UNREACHABLE, `broker at ${addr} is unreachable (${why})`);
    }
    const text = await res.text().catch(() => '');
    let body: unknown;
    try {
      body = text ? JSON.parse(text) : undefined;
    } catch {
      body = undefined;
    }
    if (res.status === 401 || res.status === 403) throw new VerifyError(VerifyExit.DENIED, `the broker refused the API key: ${problemText(res.status, body)}`);
    if (res.status >= 500) throw new VerifyError(VerifyExit.UNREACHABLE, `the broker could not decide: ${problemText(res.status, body)}`);
    if (res.status === 400) throw new VerifyError(VerifyExit.USAGE, problemText(res.status, body));
    if (res.status !== 200 && res.status !== 201) throw new VerifyError(VerifyExit.INTERNAL, `unexpected answer: ${problemText(res.status, body)}`);
    const d = body as { decision?: unknown; checks?: unknown; digest?: unknown; policy?: unknown; policyVersion?: unknown; cached?: unknown; id?: unknown };
    if (!d || (d.decision !== 'allow' && d.decision !== 'deny' && d.decision !== 'warn') || !Array.isArray(d.checks)) {
      throw new VerifyError(VerifyExit.INTERNAL, 'the broker answered with something that is not a release decision');
    }
    if (opts.json) {
      say(JSON.stringify(d, null, 2));
    } else {
      say(`image:    ${image}`);
      if (typeof d.digest === 'string') say(`digest:   ${d.digest}`);
      say(`policy:   ${typeof d.policy === 'string' ? `${d.policy} (version ${String(d.policyVersion)})` : '(none)'}`);
      for (const c of d.checks as Check[]) say(`${c.ok ? '✓' : '✗'} ${c.type}: ${c.detail}`);
      say(`decision: ${String(d.decision).toUpperCase()}${d.cached ? ' (cached)' : ''}${typeof d.id === 'string' ? ` [${d.id}]` : ''}`);
    }
    if (d.decision === 'warn') fail('policy is in warn mode: this image would have been denied');
    return d.decision === 'deny' ? VerifyExit.DENY : VerifyExit.ALLOW;
  } catch (e) {
    if (e instanceof VerifyError) {
      fail(e.message);
      return e.exitCode;
    }
    fail(`internal error: ${(e as Error)?.message ?? String(e)}`);
    return VerifyExit.INTERNAL;
  }
}

export function registerVerifyCommand(program: Command): void {
  program
    .command('verify')
    .description('ask the release gate whether IMAGE may be released (exit 0 allow/warn, 1 deny)')
    .argument('<image>', 'fully qualified image reference, e.g. registry.example.com/team/app:v1')
    .option('--api-key-file <file>', 'read the operator API key from FILE instead of KEYWARDEN_API_KEY')
    .option('--timeout <seconds>', 'give up waiting for the broker after this many seconds', '60')
    .option('--json', 'print the decision as JSON')
    .addHelpText(
      'after',
      `
Environment: KEYWARDEN_ADDR (broker URL), KEYWARDEN_API_KEY (operator API key: admin, writer or signer).

Exit codes:
  0    allow (also warn: the policy is in warn mode)
  1    deny
  64   usage error
  69   broker unreachable (or failing with 5xx)
  70   internal or other error
  77   authentication or authorization denied (401/403)`,
    )
    .action(async (image: string, opts: VerifyOptions) => {
      const code = await verify(image, opts);
      process.exit(code);
    });
}
