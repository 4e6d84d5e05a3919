import fs from 'node:fs';
import { Command } from 'commander';

const EXIT = { ok: 0, failed: 1, usage: 64, unreachable: 69, denied: 77 } as const;

/** Where CI systems put their OIDC token; the first one set wins. */
const TOKEN_VARIABLES = ['KEYWARDEN_OIDC_TOKEN', 'ACTIONS_ID_TOKEN', 'CI_JOB_JWT_V2', 'CI_JOB_JWT', 'SIGSTORE_ID_TOKEN'];

class CliError extends Error {
  constructor(message: string, readonly exitCode: number) {
    super(message);
  }
}

async function post(addr: string, path: string, body: unknown, headers: Record<string, string>, form = false) {
  let res: Response;
  try {
    res = await fetch(`${addr}${path}`, {
      method: 'POST',
      headers: { 'content-type': form ? 'application/x-www-form-urlencoded' : 'application/json', ...headers },
      body: form ? new URLSearchParams(body as Record<string, string>).toString() : JSON.stringify(body),
      signal: AbortSignal.timeout(60_000),
    });
  } catch (err) {
    throw new CliError(`broker unreachable at ${addr}: ${(err as Error).message}`, EXIT.unreachable);
  }
  const text = await res.text();
  let json: Record<string, unknown>;
  try {
    json = JSON.parse(text) as Record<string, unknown>;
  } catch {
    json = { detail: text.slice(0, 200) };
  }
  if (!res.ok) {
    const code = res.status === 401 || res.status === 403 ? EXIT.denied : EXIT.failed;
    throw new CliError(`${path}: ${res.status} ${json.code ?? ''} ${json.detail ?? json.title ?? ''}`.trim(), code);
  }
  return json;
}

function readOidcToken(tokenFile?: string): string | undefined {
  if (tokenFile) return fs.readFileSync(tokenFile, 'utf8').trim();
  for (const name of TOKEN_VARIABLES) {
    const value = process.env[name];
    if (value) return value.trim();
  }
  return undefined;
}

export function signCommand(): Command {
  return new Command('sign')
    .description('sign an image digest with a broker-held key (CI step); prints the digest and signature reference')
    .argument('<image>', 'registry/repo:tag or registry/repo@sha256:...')
    .requiredOption('--key <name>', 'broker signing key name')
    .option('--token-file <path>', `file holding the CI OIDC token (default: $${TOKEN_VARIABLES.join(', $')})`)
    .option('--annotation <k=v...>', 'annotation to include in the signed payload', (v: string, prev: string[] = []) => [...prev, v])
    .option('--bundle', 'also attach a sigstore bundle as an OCI 1.1 referrer')
    .addHelpText('after', '\nAuthentication: KEYWARDEN_API_KEY (a signer API key), or a CI OIDC token exchanged for a signer token.\nExit codes: 0 signed, 1 failed, 64 usage, 69 broker unreachable, 77 denied.')
    .action(async (image: string, opts: { key: string; tokenFile?: string; annotation?: string[]; bundle?: boolean }) => {
      try {
        const addr = process.env.KEYWARDEN_ADDR?.replace(/\/$/, '');
        if (!addr) throw new CliError('KEYWARDEN_ADDR is not set', EXIT.usage);
        let bearer = process.env.KEYWARDEN_API_KEY;
        if (!bearer) {
          const oidc = readOidcToken(opts.tokenFile);
          if (!oidc) throw new CliError(`no credentials: set KEYWARDEN_API_KEY, or provide a CI OIDC token (${TOKEN_VARIABLES.join(', ')} or --token-file)`, EXIT.usage);
          const exchanged = await post(addr, '/v1/auth/token', {
            grant_type: 'urn:ietf:params:oauth:grant-type:token-exchange',
            subject_token: oidc,
            subject_token_type: 'urn:ietf:params:oauth:token-type:jwt',
          }, {}, true);
          bearer = exchanged.access_token as string;
        }
        const annotations: Record<string, string> = {};
        for (const a of opts.annotation ?? []) {
          const eq = a.indexOf('=');
          if (eq <= 0) throw new CliError(`--annotation must be key=value: ${a}`, EXIT.usage);
          annotations[a.slice(0, eq)] = a.slice(eq + 1);
        }
        const result = await post(addr, '/v1/signatures', { image, key: opts.key, bundle: Boolean(opts.bundle), ...(Object.keys(annotations).length ? { annotations } : {}) }, { authorization: `Bearer ${bearer}` });
        process.stdout.write(`digest: ${result.digest}\nsignature: ${result.signatureRef}\n${result.bundleRef ? `bundle: ${result.bundleRef}\n` : ''}key: ${result.key} (${result.keyId})\n`);
      } catch (err) {
        const code = err instanceof CliError ? err.exitCode : EXIT.failed;
        process.stderr.write(`keywarden sign: ${(err as Error).message}\n`);
        process.exit(code);
      }
    });
}
