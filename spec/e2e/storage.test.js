'use strict';
// nano.redis and nano.pg in the real nano-host, against real servers this file starts: a profile
// saved through handlers is still there after nano-host restarts, and so is what closing
// sessions saved while SIGTERM shut the server down; a database server killed with
// a call in flight fails that call with an error response, and calls succeed again once it is
// back; SIGTERM with storage clients open still exits 0.
const test = require('node:test');
const assert = require('node:assert');
const { startServer, fixture } = require('./lib/server');
const { connect } = require('./lib/client');
const { startRedis, startPostgres, waitFor } = require('./lib/dbservers');

let redis, pg;
test.before(async () => {
  redis = await startRedis();
  pg = await startPostgres();
});
test.after(() => {
  if (redis) redis.stop();
  if (pg) pg.stop();
});

const env = () => ({ env: { NH_E2E_REDIS: redis.url, NH_E2E_PG: pg.conninfo } });

test('a profile saved in Redis and PostgreSQL is there after nano-host restarts, and so are the goodbyes sessions wrote while SIGTERM closed them', { timeout: 60000 }, async () => {
  let srv = await startServer(fixture('storage.lua'), [], env());
  try {
    const c = await connect({ transport: 'tcp', ...srv.tcp });
    const r = await c.request('Store.save', { id: 7, name: 'ann', gold: 15 });
    assert.deepEqual(r.body, { code: 0 }, r.text);
    await srv.stop(); // SIGTERM: exit 0 with both clients open
  } finally {
    await srv.kill();
  }
  srv = await startServer(fixture('storage.lua'), [], env());
  try {
    const c = await connect({ transport: 'ws', ...srv.ws });
    const r = await c.request('Store.load', { id: 7 });
    assert.deepEqual(r.body, { code: 0, redis: { name: 'ann', gold: 15 }, pg: { name: 'ann', gold: 15 } }, r.text);
    // the first run's session said goodbye in both stores during its shutdown
    const g = await c.request('Store.goodbyes', {});
    assert.deepEqual(g.body, { code: 0, redis: 1, pg: 1 }, g.text);
    await srv.stop();
  } finally {
    await srv.kill();
  }
});

for (const [name, route] of [['Redis', 'Store.block_redis'], ['PostgreSQL', 'Store.block_pg']]) {
  test(`${name} killed with a call in flight: an error response, then calls succeed again`, { timeout: 60000 }, async () => {
    const srv = await startServer(fixture('storage.lua'), [], env());
    try {
      const c = await connect({ transport: 'tcp', ...srv.tcp });
      assert.deepEqual((await c.request('Store.save', { id: 1, name: 'bo', gold: 1 })).body, { code: 0 });
      const blocked = c.request(route, {});
      const db = name === 'Redis' ? redis : pg;
      await waitFor(() => db.blocked(), 'the call to reach the server');
      db.kill();
      const r = await blocked;
      assert.equal(r.body.code, 500, r.text);
      const pattern = name === 'Redis' ? /^redis: connection lost/ : /^pg: connection lost/;
      assert.match(r.body.err, pattern);
      await db.start();
      if (name === 'Redis') { // an in-memory server came back empty: save again, then load
        assert.deepEqual((await c.request('Store.save', { id: 1, name: 'bo', gold: 1 })).body, { code: 0 });
      }
      const back = await c.request('Store.load', { id: 1 });
      assert.equal(back.body.code, 0, back.text);
      assert.deepEqual(back.body.pg, { name: 'bo', gold: 1 });
      await srv.stop();
    } finally {
      await srv.kill();
    }
  });
}
