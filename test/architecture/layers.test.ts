/**
 * The layer rules of ARCHITECTURE.md, checked on every import in src/. A rule broken here is a
 * design decision to take in ARCHITECTURE.md first, not an exception to add below.
 */
import fs from 'node:fs';
import path from 'node:path';
import ts from 'typescript';
import { describe, expect, it } from 'vitest';

const root = path.resolve(import.meta.dirname, '../..');
const src = path.join(root, 'src');

interface ImportEdge {
  from: string; // path relative to src/, e.g. "secrets/secrets-service.ts"
  to: string; // relative to src/ for project modules, else the package name
  internal: boolean;
}

function sourceFiles(dir: string): string[] {
  return fs.readdirSync(dir, { withFileTypes: true }).flatMap((e) => {
    const p = path.join(dir, e.name);
    if (e.isDirectory()) return sourceFiles(p);
    return e.name.endsWith('.ts') ? [p] : [];
  });
}

function importsOf(file: string): ImportEdge[] {
  const info = ts.preProcessFile(fs.readFileSync(file, 'utf8'), true, true);
  const from = path.relative(src, file);
  return info.importedFiles.map(({ fileName }) => {
    if (!fileName.startsWith('.')) {
      const parts = fileName.split('/');
      const pkg = fileName.startsWith('@') ? parts.slice(0, 2).join('/') : parts[0]!;
      return { from, to: pkg, internal: false };
    }
    const target = path.relative(src, path.resolve(path.dirname(file), fileName)).replace(/\.js$/, '.ts');
    return { from, to: target, internal: true };
  });
}

const edges = sourceFiles(src).flatMap(importsOf);
const layerOf = (rel: string) => (rel.includes('/') ? rel.split('/')[0]! : rel);
/** Transport code: the http layer itself, route tables in the domain folders, the CLI and the composition root. */
const isTransport = (rel: string) => layerOf(rel) === 'http' || layerOf(rel) === 'cli' || rel === 'broker.ts' || rel.endsWith('-routes.ts');
/** Repositories (the only modules that run SQL) and the database layer. */
const isPersistence = (rel: string) => layerOf(rel) === 'db' || rel.endsWith('-dal.ts') || rel === 'db/migrate.ts';
const violations = (broken: ImportEdge[]) => broken.map((e) => `${e.from} -> ${e.to}`);

describe('layer rules (ARCHITECTURE.md)', () => {
  it('reads the imports of every module', () => {
    expect(edges.length).toBeGreaterThan(300);
    expect(edges.some((e) => e.from === 'broker.ts' && e.to === 'http/app.ts')).toBe(true);
  });

  it('core/ depends on nothing else in the project', () => {
    expect(violations(edges.filter((e) => layerOf(e.from) === 'core' && e.internal && layerOf(e.to) !== 'core'))).toEqual([]);
  });

  it('domain modules never import http/ (only route tables, the CLI and the composition root do)', () => {
    expect(violations(edges.filter((e) => e.internal && layerOf(e.to) === 'http' && !isTransport(e.from)))).toEqual([]);
  });

  it('nothing but the CLI (and its entry point) imports cli/; the Docker plugin uses only the broker client in cli/client/', () => {
    const allowed = (e: ImportEdge) => layerOf(e.from) === 'cli' || (layerOf(e.from) === 'docker-plugin' && e.to.startsWith('cli/client/'));
    expect(violations(edges.filter((e) => e.internal && layerOf(e.to) === 'cli' && !allowed(e)))).toEqual([]);
  });

  it('knex and the database drivers are imported only by db/ and the repositories (*-dal.ts)', () => {
    const drivers = new Set(['knex', 'pg', 'better-sqlite3']);
    expect(violations(edges.filter((e) => !e.internal && drivers.has(e.to) && !isPersistence(e.from) && e.from !== 'broker.ts'))).toEqual([]);
  });

  it('the SQLite fast path is an implementation detail of db/', () => {
    expect(violations(edges.filter((e) => e.internal && e.to === 'db/sqlite-fast-path.ts' && layerOf(e.from) !== 'db'))).toEqual([]);
  });

  it('repositories are called by services of their own domain or through that domain’s service', () => {
    // a DAL is imported only from its own folder (its service), the composition root and db/
    const crossDomainDal = edges.filter(
      (e) => e.internal && e.to.endsWith('-dal.ts') && path.dirname(e.to) !== path.dirname(e.from) && e.from !== 'broker.ts',
    );
    expect(violations(crossDomainDal)).toEqual([]);
  });
});
