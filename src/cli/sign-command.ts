import fs from 'node:fs';
import type http from 'node:http';
import { Command } from 'commander';
import { brokerAddrFromEnv, caFromEnv } from './client/broker-client.js';
import { CliError as ClientError } from './client/exit-codes.js';
import { classifyNetworkError, createAgent, nodeTransport, TransientError, type HttpResponse, type Transport } from './client/http-transport.js';
import { exitCodesHelp } from './help.js';

const EXIT = { ok: 0, failed: 1, usage: 64, noInput: 66, unreachable: 69, internal: 70, denied: 77 } as const;

/** Where CI systems put their OIDC token; the first one set wins. */
const TOKEN_VARIABLES = ['KEYWARDEN_OIDC_TOKEN', 'ACTIONS_ID_TOKEN', 'CI_JOB_JWT_V2', 'CI_JOB_JWT', 'SIGSTORE_ID_TOKEN'];

class CliError extends Error {
  constructor(message: string, readonly exitCode: number) {
    super(message);
  }
}

interface Broker {
  addr: string;
  transport: Transport;
}

async function post(broker: Broker, path: string, body: unknown, headers: Record<string, string>, form = false) {
  const { addr } = broker;
  let res: HttpResponse;
  try {
    res = await broker.transport({
      method: 'POST',
      path,
      headers: { 'content-type': form ? 'application/x-www-form-urlencoded' : 'application/json', accept: 'application/json', ...headers },
      body: form ? new URLSearchParams(body as Record<string, string>).toString() : JSON.stringify(body),
      timeoutMs: 60_000,
    });
  } catch (err) {
    // signing is not retried: say why the broker could not be reached (refused, DNS, TLS)
    const e = classifyNetworkError(err, addr);
    if (e instanceof TransientError) throw new CliError(`cannot reach the broker at ${addr}: ${e.reason}`, EXIT.unreachable);
    throw new CliError(e.message, e instanceof ClientError ? e.exitCode : EXIT.failed);
  }
  const text = res.body.toString('utf8');
  let json: Record<string, unknown>;
  try {
    json = JSON.parse(text) as Record<string, unknown>;
  } catch {
    json = { detail: text.slice(0, 200) };
  }
  if (res.status < 200 || res.status > 299) {
    const code = res.status === 401 || res.status === 403 ? EXIT.denied : EXIT.failed;
    throw new CliError(`${path}: ${res.status} ${json.code ?? ''} ${json.detail ?? json.title ?? ''}`.trim(), code);
  }
  return json;
}

function readOidcToken(tokenFile?: string): string | undefined {
  if (tokenFile) {
    try {
      return fs.readFileSync(tokenFile, 'utf8').trim();
    } catch (err) {
      throw new CliError(`--token-file: cannot read ${tokenFile} (${(err as NodeJS.ErrnoException).code ?? 'error'})`, EXIT.noInput);
    }
  }
  for (const name of TOKEN_VARIABLES) {
    const value = process.env[name];
    if (value) return value.trim();
  }
  return undefined;
}

export function signCommand(): Command {
  const command = new Command('sign')
    .description('sign an image digest with a broker-held key (CI step); prints the digest and signature reference')
    .argument('<image>', 'registry/repo:tag or registry/repo@sha256:...')
    .requiredOption('--key <name>', 'broker signing key name')
    .option('--token-file <path>', `file holding the CI OIDC token (default: $${TOKEN_VARIABLES.join(', $')})`)
    .option('--annotation <k=v...>', 'annotation to include in the signed payload', (v: string, prev: string[] = []) => [...prev, v])
    .option('--bundle', 'also attach a sigstore bundle as an OCI 1.1 referrer')
    .addHelpText(
      'after',
      '\nEnvironment: KEYWARDEN_ADDR (broker URL), KEYWARDEN_CA (CA bundle to trust for its TLS certificate).\n' +
        'Authentication: KEYWARDEN_API_KEY (a signer API key), or a CI OIDC token exchanged for a signer token.',
    )
    .action(async (image: string, opts: { key: string; tokenFile?: string; annotation?: string[]; bundle?: boolean }) => {
      let agent: http.Agent | undefined;
      try {
        const addr = brokerAddrFromEnv(process.env);
        agent = createAgent(addr, { ca: caFromEnv(process.env) });
        const broker: Broker = { addr, transport: nodeTransport(addr, agent) };
        let bearer = process.env.KEYWARDEN_API_KEY;
        if (!bearer) {
          const oidc = readOidcToken(opts.tokenFile);
          if (!oidc) throw new CliError(`no credentials: set KEYWARDEN_API_KEY, or provide a CI OIDC token (${TOKEN_VARIABLES.join(', ')} or --token-file)`, EXIT.usage);
          const exchanged = await post(broker, '/v1/auth/token', {
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
        const result = await post(broker, '/v1/signatures', { image, key: opts.key, bundle: Boolean(opts.bundle), ...(Object.keys(annotations).length ? { annotations } : {}) }, { authorization: `Bearer ${bearer}` });
        process.stdout.write(`digest: ${result.digest}\nsignature: ${result.signatureRef}\n${result.bundleRef ? `bundle: ${result.bundleRef}\n` : ''}key: ${result.key} (${result.keyId})\n`);
      } catch (err) {
        const code = err instanceof CliError || err instanceof ClientError ? err.exitCode : EXIT.failed;
        process.stderr.write(`keywarden sign: ${(err as Error).message}\n`);
        agent?.destroy();
        process.exit(code);
      }
      agent?.destroy();
    });
  return exitCodesHelp(command, {
    0: 'signed',
    1: 'failed (the broker refused the request, e.g. an unknown key or image)',
    64: 'usage error (missing --key or IMAGE, bad --annotation, no KEYWARDEN_ADDR or credentials)',
    66: 'the --token-file cannot be read',
    69: 'broker unreachable (connection refused, host not found, does not speak TLS)',
    70: "the broker's TLS certificate does not verify (set KEYWARDEN_CA)",
    77: 'authentication or authorization denied',
  });
}
