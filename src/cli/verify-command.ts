/**
 * `keywarden verify IMAGE [--api-key-file FILE] [--timeout SECONDS] [--json]`
 *
 * Asks the broker's release gate (POST /v1/releases) for a decision on IMAGE, prints every check
 * and the decision. Reads KEYWARDEN_ADDR and KEYWARDEN_API_KEY (or --api-key-file).
 *
 * While the broker is unreachable (connection refused, timeout, 5xx) it retries with backoff until
 * --timeout, as `exec` and `fetch` do (withRetry in client/broker-client.ts).
 *
 * Exit codes: 0 allow (and warn), 1 deny, 64 usage error, 69 broker unreachable (or 5xx),
 * 70 other error, 77 authentication/authorization denied (401/403).
 */
import fs from 'node:fs';
import type { Command } from 'commander';
import { brokerAddrFromEnv, caFromEnv, withRetry } from './client/broker-client.js';
import { CliError } from './client/exit-codes.js';
import { classifyNetworkError, createAgent, nodeTransport, TransientError, type HttpResponse } from './client/http-transport.js';
import { warn } from './client/log.js';
import { exitCodesHelp } from './help.js';

export const VerifyExit = { ALLOW: 0, DENY: 1, USAGE: 64, NO_INPUT: 66, UNREACHABLE: 69, INTERNAL: 70, DENIED: 77 } as const;

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
      throw new VerifyError(VerifyExit.NO_INPUT, `--api-key-file: cannot read ${opts.apiKeyFile} (${(err as NodeJS.ErrnoException).code ?? 'error'})`);
    }
    const key = text.trim();
    if (!key) throw new VerifyError(VerifyExit.USAGE, `--api-key-file: ${opts.apiKeyFile} is empty`);
    return key;
  }
  const key = env.KEYWARDEN_API_KEY?.trim();
  if (!key) throw new VerifyError(VerifyExit.USAGE, 'KEYWARDEN_API_KEY is not set (or pass --api-key-file FILE)');
  return key;
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
    const addr = brokerAddrFromEnv(env);
    const apiKey = readApiKey(opts, env);

    const agent = createAgent(addr, { ca: caFromEnv(env) });
    const transport = nodeTransport(addr, agent);
    // one request may take the whole --timeout (the gate may consult registries); failures that
    // may pass (refused, reset, 5xx, 429) are retried with backoff until then
    const target = { addr, requestTimeoutMs: timeoutSeconds * 1000 };
    let res: HttpResponse;
    let body: unknown;
    try {
      ({ res, body } = await withRetry(
        target,
        async () => {
          let r: HttpResponse;
          try {
            r = await transport({
              method: 'POST',
              path: '/v1/releases',
              headers: { authorization: `Bearer ${apiKey}`, 'content-type': 'application/json', accept: 'application/json' },
              body: JSON.stringify({ image }),
              timeoutMs: target.requestTimeoutMs,
            });
          } catch (e) {
            throw classifyNetworkError(e, addr);
          }
          let parsed: unknown;
          try {
            parsed = r.body.length ? JSON.parse(r.body.toString('utf8')) : undefined;
          } catch {
            parsed = undefined;
          }
          if (r.status >= 500 || r.status === 429 || r.status === 408) {
            const seconds = Number(r.retryAfter);
            throw new TransientError(problemText(r.status, parsed), Number.isFinite(seconds) && seconds >= 0 ? seconds * 1000 : undefined);
          }
          return { res: r, body: parsed };
        },
        { deadline: Date.now() + timeoutSeconds * 1000, maxRequestTimeoutMs: timeoutSeconds * 1000 },
      ));
    } finally {
      agent.destroy();
    }
    if (res.status === 401 || res.status === 403) throw new VerifyError(VerifyExit.DENIED, `the broker refused the API key: ${problemText(res.status, body)}`);
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
    if (e instanceof VerifyError || e instanceof CliError) {
      fail(e.message);
      return e.exitCode;
    }
    fail(`internal error: ${(e as Error)?.message ?? String(e)}`);
    return VerifyExit.INTERNAL;
  }
}

export function registerVerifyCommand(program: Command): void {
  const command = program
    .command('verify')
    .description('ask the release gate whether IMAGE may be released (exit 0 allow/warn, 1 deny)')
    .argument('<image>', 'fully qualified image reference, e.g. registry.example.com/team/app:v1')
    .option('--api-key-file <file>', 'read the operator API key from FILE instead of KEYWARDEN_API_KEY')
    .option('--timeout <seconds>', 'how long to wait for a decision, retrying while the broker is unreachable', '60')
    .option('--json', 'print the decision as JSON')
    .addHelpText(
      'after',
      `
Environment: KEYWARDEN_ADDR (broker URL), KEYWARDEN_API_KEY (operator API key: admin, writer or signer),
KEYWARDEN_CA (CA bundle to trust for the broker's TLS certificate).`,
    )
    .action(async (image: string, opts: VerifyOptions) => {
      const code = await verify(image, opts);
      process.exit(code);
    });
  exitCodesHelp(command, {
    0: 'allow (also warn: the policy is in warn mode)',
    1: 'deny',
    64: 'usage error (bad option, IMAGE, KEYWARDEN_ADDR; no API key)',
    66: 'the --api-key-file cannot be read',
    69: 'broker unreachable (or failing with 5xx) until --timeout; at once when it does not speak TLS',
    70: "internal or other error (also: the broker's TLS certificate does not verify)",
    77: 'authentication or authorization denied (401/403)',
  });
}
