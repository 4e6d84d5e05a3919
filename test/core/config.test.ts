import fs from 'node:fs';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { ConfigError, loadConfig, SETTING_NAMES } from '../../src/config.js';

describe('configuration from the environment', () => {
  it('defaults to SQLite and a local root key under ./data, on 127.0.0.1:8750', () => {
    const config = loadConfig({});
    expect(config.databaseUrl).toBe(`sqlite:${path.resolve('data', 'keywarden.db')}`);
    expect(config.listen).toEqual({ host: '127.0.0.1', port: 8750 });
    expect(config.keyProvider).toMatchObject({ kind: 'local', keyFile: path.resolve('data', 'root-key.json') });
    expect(config.accessTokenTtlSeconds).toBe(900);
    expect(config.issuer).toBe('http://127.0.0.1:8750');
    expect(config.maxConnections).toBe(4096);
  });

  it('KEYWARDEN_MAX_CONNECTIONS: a positive whole number, at most 1000000', () => {
    expect(loadConfig({ KEYWARDEN_MAX_CONNECTIONS: '200' }).maxConnections).toBe(200);
    for (const bad of ['0', '-5', '1.5', 'many', '1000001']) {
      expect(() => loadConfig({ KEYWARDEN_MAX_CONNECTIONS: bad }), bad).toThrow(/KEYWARDEN_MAX_CONNECTIONS/);
    }
  });

  it('treats empty variables as unset (compose files write ${VAR:-})', () => {
    const config = loadConfig({ KEYWARDEN_BOOTSTRAP_ADMIN_KEY: '', KEYWARDEN_LISTEN: '' });
    expect(config.bootstrapAdminKey).toBeUndefined();
    expect(config.listen.port).toBe(8750);
  });

  it('reports every invalid variable by name, with what it must be', () => {
    let error: unknown;
    try {
      loadConfig({
        KEYWARDEN_DATABASE_URL: 'mysql://x',
        KEYWARDEN_LISTEN: 'nonsense',
        KEYWARDEN_ACCESS_TOKEN_TTL: '-1',
        KEYWARDEN_BOOTSTRAP_ADMIN_KEY: 'short',
        KEYWARDEN_LOG_LEVEL: 'loud',
      });
    } catch (err) {
      error = err;
    }
    expect(error).toBeInstanceOf(ConfigError);
    const problems = (error as ConfigError).problems.join('\n');
    for (const name of ['KEYWARDEN_DATABASE_URL', 'KEYWARDEN_LISTEN', 'KEYWARDEN_ACCESS_TOKEN_TTL', 'KEYWARDEN_BOOTSTRAP_ADMIN_KEY', 'KEYWARDEN_LOG_LEVEL']) {
      expect(problems).toContain(name);
    }
  });

  it('requires Vault settings for the vault-transit provider and consistent TLS files', () => {
    expect(() => loadConfig({ KEYWARDEN_KEY_PROVIDER: 'vault-transit' })).toThrow(/VAULT_ADDR[\s\S]*VAULT_TOKEN/);
    expect(() => loadConfig({ KEYWARDEN_TLS_CERT: '/tmp/cert.pem' })).toThrow(/KEYWARDEN_TLS_CERT and KEYWARDEN_TLS_KEY/);
    expect(() => loadConfig({ KEYWARDEN_ACCESS_TOKEN_TTL: '7200', KEYWARDEN_ACCESS_TOKEN_MAX_TTL: '3600' })).toThrow(/must not exceed/);
    const https = loadConfig({ KEYWARDEN_TLS_CERT: '/c.pem', KEYWARDEN_TLS_KEY: '/k.pem', KEYWARDEN_LISTEN: '[::1]:9000' });
    expect(https.issuer).toBe('https://[::1]:9000');
    expect(https.listen.host).toBe('::1');
  });

  it('every setting has a row in the README configuration table', () => {
    const readme = fs.readFileSync(path.resolve(import.meta.dirname, '../../README.md'), 'utf8');
    expect(SETTING_NAMES.filter((name) => !readme.includes(`| \`${name}\` |`))).toEqual([]);
  });
});
