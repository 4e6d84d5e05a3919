/** Shared fixtures for the image-signing tests: a loopback JWKS issuer, CI-like tokens, audit lookups. */
import { createHash } from 'node:crypto';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { SignJWT, exportJWK, generateKeyPair, type JWK, type JWTPayload, type CryptoKey } from 'jose';
import type { Response } from 'supertest';
import { expect } from 'vitest';
import type { AuditEvent } from '../../src/audit/audit-types.js';
import type { TestBroker } from '../support/broker.js';

export const CI_ISSUER = 'https://ci.example.test';
export const CI_AUDIENCE = 'keywarden';
export const TOKEN_EXCHANGE = 'urn:ietf:params:oauth:grant-type:token-exchange';

export function auth(key: string) {
  return { Authorization: `Bearer ${key}` };
}

export const sha256Hex = (b: Buffer | string) => createHash('sha256').update(b).digest('hex');

/** A CI OIDC provider's signing key, published as a JWKS on loopback. */
export interface CiIssuer {
  jwksUri: string;
  kid: string;
  alg: 'RS256' | 'ES256';
  privateKey: CryptoKey;
  publicJwk: JWK;
  /** requests the JWKS endpoint served */
  hits: number;
  mint(claims?: JWTPayload, opts?: { kid?: string; key?: CryptoKey; iss?: string; aud?: string; exp?: number; iat?: number }): Promise<string>;
  close(): Promise<void>;
}

export async function startCiIssuer(alg: 'RS256' | 'ES256' = 'RS256'): Promise<CiIssuer> {
  const { privateKey, publicKey } = await generateKeyPair(alg, { extractable: true });
  const kid = `ci-${alg.toLowerCase()}-1`;
  const publicJwk = { ...(await exportJWK(publicKey)), kid, alg, use: 'sig' };
  const state = { hits: 0 };
  const server = http.createServer((req, res) => {
    if (req.url === '/jwks') {
      state.hits++;
      res.writeHead(200, { 'Content-Type': 'application/json' });
      res.end(JSON.stringify({ keys: [publicJwk] }));
      return;
    }
    res.writeHead(404);
    res.end();
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const port = (server.address() as AddressInfo).port;
  return {
    jwksUri: `http://127.0.0.1:${port}/jwks`,
    kid,
    alg,
    privateKey,
    publicJwk,
    get hits() {
      return state.hits;
    },
    async mint(claims = {}, opts = {}) {
      const now = Math.floor(Date.now() / 1000);
      return new SignJWT({ repository: 'org/app', ref: 'refs/tags/v1.2.3', workflow: 'release', run_id: '42', ...claims })
        .setProtectedHeader({ alg, kid: opts.kid ?? kid, typ: 'JWT' })
        .setIssuer(opts.iss ?? CI_ISSUER)
        .setAudience(opts.aud ?? CI_AUDIENCE)
        .setSubject('repo:org/app:ref:refs/tags/v1.2.3')
        .setIssuedAt(opts.iat ?? now)
        .setExpirationTime(opts.exp ?? now + 300)
        .sign(opts.key ?? privateKey);
    },
    close: () =>
      new Promise<void>((resolve) => {
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  };
}

/** Registers the issuer the brief describes: org/app tag builds may sign with `keys` images under `images`. */
export async function registerIssuer(tb: TestBroker, ci: CiIssuer, images: string[], extra: Record<string, unknown> = {}) {
  const res = await tb.request
    .post('/v1/trusted-issuers')
    .set(auth(tb.adminKey))
    .send({
      name: 'github',
      issuer: CI_ISSUER,
      jwksUri: ci.jwksUri,
      audience: CI_AUDIENCE,
      claims: { repository: 'org/app', ref: 'refs/tags/v*' },
      keys: ['release'],
      images,
      ...extra,
    });
  expect(res.status, res.text).toBe(201);
  return res.body;
}

export function exchange(tb: TestBroker, subjectToken: string) {
  return tb.request
    .post('/v1/auth/token')
    .type('form')
    .send({ grant_type: TOKEN_EXCHANGE, subject_token: subjectToken, subject_token_type: 'urn:ietf:params:oauth:token-type:jwt' });
}

export async function createKey(tb: TestBroker, name: string, algorithm?: 'ecdsa-p256' | 'ed25519') {
  const res = await tb.request
    .post('/v1/signing-keys')
    .set(auth(tb.adminKey))
    .send(algorithm ? { name, algorithm } : { name });
  expect(res.status, res.text).toBe(201);
  return res.body;
}

/** Asserts a problem document with the given status and code. */
export function expectProblem(res: Response, status: number, code?: string) {
  const ctx = `${res.status} ${res.text?.slice(0, 400)}`;
  expect(res.status, ctx).toBe(status);
  expect(res.headers['content-type'], ctx).toMatch(/^application\/problem\+json/);
  if (code !== undefined) expect(res.body.code, ctx).toBe(code);
  return res.body;
}




/** Fetches a manifest (OCI or Docker) straight from a plain-http registry. */
export async function registryManifest(hostPort: string, repo: string, reference: string) {
  const res = await fetch(`http://${hostPort}/v2/${repo}/manifests/${reference}`, {
    headers: {
      Accept: [
        'application/vnd.oci.image.manifest.v1+json',
        'application/vnd.oci.image.index.v1+json',
        'application/vnd.docker.distribution.manifest.v2+json',
      ].join(', '),
    },
  });
  const bytes = Buffer.from(await res.arrayBuffer());
  return { status: res.status, mediaType: res.headers.get('content-type'), bytes, json: res.status === 200 ? JSON.parse(bytes.toString('utf8')) : undefined };
}

export async function registryBlob(hostPort: string, repo: string, digest: string): Promise<Buffer> {
  const res = await fetch(`http://${hostPort}/v2/${repo}/blobs/${digest}`);
  expect(res.status).toBe(200);
  return Buffer.from(await res.arrayBuffer());
}

export { capture, eventsAfter, headSeq } from '../support/audit-events.js';
