'use strict';
// nano_storage_* and nano_http_client_*: a known number of queries (successes and failures) on
// SQLite, Redis and PostgreSQL (real servers this file starts) and of HTTP client requests move
// the counters by exactly that, the latency histograms' counts match, labels are the client kind
// and its name (never the query), and promtool accepts the scrape.
const test = require('node:test');
const assert = require('node:assert');
const { startServer, fixture, watchdog } = require('./lib/server');
const { connect } = require('./lib/client');
const { startRedis, startPostgres } = require('./lib/dbservers');
const { metricsAddr, scrape, delta, assertPromtool } = require('./lib/metrics');

watchdog();

let redis, pg;
test.before(async () => {
  redis = await startRedis();
  pg = await startPostgres();
});
test.after(() => {
  if (redis) redis.stop();
  if (pg) pg.stop();
});

const start = () => startServer(fixture('metrics_storage.lua'), [], {
  expect: ['tcp'], env: { NH_E2E_REDIS: redis.url, NH_E2E_PG: pg.conninfo },
});

test('storage queries are counted by client and outcome, with their latency', { timeout: 60000 }, async () => {
  const srv = await start();
  try {
    const addr = await metricsAddr(srv);
    const c = await connect({ transport: 'tcp', ...srv.tcp });
    const sent = { sqlite: [3, 2], redis: [4, 1], pg: [2, 3] }; // [ok, failed]
    const before = await scrape(addr);
    for (const [client, [ok, failed]] of Object.entries(sent)) {
      for (let i = 0; i < ok + failed; i++) {
        const r = await c.request('S.query', { client, ok: i < ok });
        assert.equal(r.error, false, r.text);
        assert.equal(r.body.ok, i < ok, r.text);
      }
    }
    const after = await scrape(addr);
    const names = { sqlite: 'main', redis: 'cache', pg: 'default' };
    for (const [client, [ok, failed]] of Object.entries(sent)) {
      const l = `client="${client}",name="${names[client]}"`;
      assert.equal(delta(before, after, `nano_storage_queries_total{${l},outcome="ok"}`), ok, client);
      assert.equal(delta(before, after, `nano_storage_queries_total{${l},outcome="error"}`), failed, client);
      assert.equal(delta(before, after, `nano_storage_query_seconds_count{${l}}`), ok + failed, client);
      assert.equal(delta(before, after, `nano_storage_query_seconds_bucket{${l},le="+Inf"}`), ok + failed, client);
      assert.ok(delta(before, after, `nano_storage_query_seconds_sum{${l}}`) > 0, client);
    }
    assert.ok(!after.text.includes('no_such_table') && !after.text.includes('SELECT'), 'no query text in a label');
    assertPromtool(after.text);
    await c.close();
  } finally {
    await srv.stop();
  }
});

test('HTTP client requests are counted by method and status class, failures as error', { timeout: 60000 }, async () => {
  const srv = await start();
  try {
    const addr = await metricsAddr(srv);
    const c = await connect({ transport: 'tcp', ...srv.tcp });
    const before = await scrape(addr);
    const fetches = [
      [{ path: '/healthz' }, 200], [{ path: '/healthz' }, 200], [{ path: '/healthz', method: 'HEAD' }, 200],
      [{ path: '/nope' }, 404], [{ path: false }, null],
    ];
    for (const [msg, status] of fetches) {
      const r = await c.request('S.fetch', msg);
      assert.equal(r.body.status, status, r.text);
    }
    const after = await scrape(addr);
    assert.equal(delta(before, after, 'nano_http_client_requests_total{method="GET",outcome="2xx"}'), 2);
    assert.equal(delta(before, after, 'nano_http_client_requests_total{method="HEAD",outcome="2xx"}'), 1);
    assert.equal(delta(before, after, 'nano_http_client_requests_total{method="GET",outcome="4xx"}'), 1);
    assert.equal(delta(before, after, 'nano_http_client_requests_total{method="GET",outcome="error"}'), 1);
    assert.equal(delta(before, after, 'nano_http_client_request_seconds_count{method="GET"}'), 4);
    assert.equal(delta(before, after, 'nano_http_client_request_seconds_count{method="HEAD"}'), 1);
    assertPromtool(after.text);
    await c.close();
  } finally {
    await srv.stop();
  }
});
