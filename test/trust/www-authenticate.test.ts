/**
 * The one WWW-Authenticate parser (src/trust/registry/www-authenticate.ts), used by the registry
 * client and the Notary client alike.
 */
import { describe, expect, it } from 'vitest';
import { parseBearerChallenge, parseWwwAuthenticate } from '../../src/trust/registry/www-authenticate.js';

describe('parseWwwAuthenticate', () => {
  it('reads a Bearer challenge of the distribution token flow', () => {
    expect(parseWwwAuthenticate('Bearer realm="https://auth.example/token",service="registry.example",scope="repository:team/app:pull"')).toEqual([
      { scheme: 'bearer', params: { realm: 'https://auth.example/token', service: 'registry.example', scope: 'repository:team/app:pull' } },
    ]);
  });

  it('treats scheme and parameter names case-insensitively, values as sent', () => {
    expect(parseWwwAuthenticate('BEARER Realm="https://A.example/Token", SERVICE=Reg')).toEqual([
      { scheme: 'bearer', params: { realm: 'https://A.example/Token', service: 'Reg' } },
    ]);
    expect(parseWwwAuthenticate('bAsIc realm="x"')[0]!.scheme).toBe('basic');
  });

  it('keeps commas and escaped quotes inside quoted strings', () => {
    const [c] = parseWwwAuthenticate('Bearer realm="https://auth.example/token",scope="repository:a:pull,push repository:b:pull",error_description="say \\"no\\", twice \\\\ ok"');
    expect(c!.params).toEqual({
      realm: 'https://auth.example/token',
      scope: 'repository:a:pull,push repository:b:pull',
      error_description: 'say "no", twice \\ ok',
    });
  });

  it('separates several challenges, with or without parameters', () => {
    expect(parseWwwAuthenticate('Basic realm="reg, \\"main\\"", Bearer realm="https://auth.example/token",service=reg , Negotiate, NTLM')).toEqual([
      { scheme: 'basic', params: { realm: 'reg, "main"' } },
      { scheme: 'bearer', params: { realm: 'https://auth.example/token', service: 'reg' } },
      { scheme: 'negotiate', params: {} },
      { scheme: 'ntlm', params: {} },
    ]);
  });

  it('reads token68 credentials and whitespace around "="', () => {
    expect(parseWwwAuthenticate('Negotiate YIIC+/abc==, Bearer realm = "r" , scope= "s"')).toEqual([
      { scheme: 'negotiate', params: {}, token68: 'YIIC+/abc==' },
      { scheme: 'bearer', params: { realm: 'r', scope: 's' } },
    ]);
  });

  it('returns the challenges read before malformed input, and never throws', () => {
    expect(parseWwwAuthenticate(null)).toEqual([]);
    expect(parseWwwAuthenticate('')).toEqual([]);
    expect(parseWwwAuthenticate('   ,  ')).toEqual([]);
    expect(parseWwwAuthenticate('"quoted"')).toEqual([]);
    expect(parseWwwAuthenticate('Basic realm="a", Bearer realm="unterminated')).toEqual([{ scheme: 'basic', params: { realm: 'a' } }]);
    expect(parseWwwAuthenticate('Basic realm="a" trailing, Bearer realm="b"')).toEqual([]);
    expect(parseWwwAuthenticate('Bearer realm="a\\')).toEqual([]);
  });
});

describe('parseBearerChallenge', () => {
  it('finds the Bearer challenge among others', () => {
    expect(parseBearerChallenge('Basic realm="notary", Bearer realm="https://auth.example/token",service="notary",scope="repository:a/b:pull"')).toEqual({
      realm: 'https://auth.example/token',
      service: 'notary',
      scope: 'repository:a/b:pull',
    });
  });

  it('needs a realm', () => {
    expect(parseBearerChallenge('Basic realm="x"')).toBeUndefined();
    expect(parseBearerChallenge('Bearer service="x"')).toBeUndefined();
    expect(parseBearerChallenge('Bearer service="x", Bearer realm="r"')).toEqual({ realm: 'r', service: undefined, scope: undefined });
  });
});
