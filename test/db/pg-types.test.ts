import pg from 'pg';
import { describe, expect, it } from 'vitest';
import { openDatabase } from '../../src/db/connection.js';
import { TEST_DATABASE_URL } from '../support/broker.js';

/**
 * The broker reads PostgreSQL BIGINT columns (epoch milliseconds) as numbers. That is a setting of
 * the broker's own connections, not of node-postgres for the whole process: importing the
 * database module must not change how anyone else's pg client parses int8.
 */
describe('PostgreSQL int8 parsing is per connection', () => {
  it('importing the database module leaves pg\'s global type parsers alone', () => {
    expect(typeof openDatabase).toBe('function');
    expect(pg.types.getTypeParser(pg.types.builtins.INT8, 'text')('9007199254740991')).toBe('9007199254740991');
  });

  it.skipIf(!TEST_DATABASE_URL)('the broker\'s connections read int8 as numbers, a plain pg client still as strings', async () => {
    const handle = await openDatabase(TEST_DATABASE_URL!);
    const plain = new pg.Client({ connectionString: TEST_DATABASE_URL });
    try {
      const broker = await handle.knex.raw('select 9007199254740991::bigint as n');
      expect(broker.rows[0].n).toBe(9007199254740991);
      await plain.connect();
      const other = await plain.query('select 9007199254740991::bigint as n');
      expect(other.rows[0].n).toBe('9007199254740991');
    } finally {
      await plain.end().catch(() => undefined);
      await handle.close();
    }
  });
});
