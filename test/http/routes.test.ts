import express from 'express';
import { describe, expect, it } from 'vitest';
import { defineRoutes, routesOf } from '../../src/http/routes.js';

/** Route tables belong to the router they are defined on: no module-wide list shared by every app. */
describe('route tables', () => {
  it('each router lists its own routes, once each', () => {
    const a = express.Router();
    const b = express.Router();
    const ok = () => undefined;
    defineRoutes(a, [{ method: 'get', path: '/v1/things', access: 'public', handler: ok }]);
    defineRoutes(a, [{ method: 'delete', path: '/v1/things/{name}', access: ['writer'], handler: ok }]);
    defineRoutes(b, [{ method: 'get', path: '/v1/others', access: 'client', handler: ok }]);
    defineRoutes(b, [{ method: 'get', path: '/v1/others', access: 'client', handler: ok }]);
    expect(routesOf(a)).toEqual([
      { method: 'get', path: '/v1/things', access: 'public' },
      { method: 'delete', path: '/v1/things/{name}', access: ['writer'] },
    ]);
    expect(routesOf(b)).toEqual([{ method: 'get', path: '/v1/others', access: 'client' }]);
    expect(routesOf(express.Router())).toEqual([]);
  });
});
