'use strict';
// nano.listen_metrics: /metrics in the Prometheus text format (checked by promtool), counters that
// move by exactly the traffic sent, a route label set that hostile routes cannot grow, /healthz
// that turns 503 when shutdown starts, and the listener's HTTP limits.
const test = require('node:test');
const assert = require('node:assert');
const net = require('node:net');
const { startServer, fixture, watchdog } = require('./lib/server');
const { connect } = require('./lib/client');
const { metricsAddr, scrape, delta, assertPromtool } = require('./lib/metrics');

watchdog();

// One HTTP exchange over a fresh socket: resolves with the raw response text.
function rawHttp(addr, request) {
  return new Promise((resolve, reject) => {
    const sock = net.connect(addr.port, addr.host);
    let out = '';
    const timer = setTimeout(() => {
      sock.destroy();
      reject(new Error(`no complete reply to ${JSON.stringify(request.slice(0, 60))}: ${out}`));
    }, 5000);
    sock.on('data', (d) => (out += d.toString('latin1')));
    sock.on('error', (e) => {
      clearTimeout(timer);
      reject(e);
    });
    sock.on('close', () => {
      clearTimeout(timer);
      resolve(out);
    });
    sock.write(request);
  });
}

async function get(addr, path) {
  const res = await fetch(`http://${addr.host}:${addr.port}${path}`);
  return { status: res.status, type: res.headers.get('content-type'), body: await res.text() };
}

async function waitFor(what, fn, tries = 200) {
  for (let i = 0; i < tries; i++) {
    if (await fn()) return;
    await new Promise((r) => setTimeout(r, 25));
  }
  throw new Error(`timed out waiting for ${what}`);
}

test('counters move by exactly the traffic sent', { timeout: 60000 }, async () => {
  const srv = await startServer(fixture('metrics.lua'));
  try {
    const addr = await metricsAddr(srv);
    const before = await scrape(addr);
    const tcp = [];
    for (let i = 0; i < 3; i++) tcp.push(await connect({ transport: 'tcp', ...srv.tcp }));
    const ws = await connect({ transport: 'ws', ...srv.ws });
    for (let i = 0; i < 5; i++) assert.equal((await tcp[i % 3].request('M.ping', { n: i })).error, false);
    for (let i = 0; i < 2; i++) assert.equal((await ws.request('M.deny', {})).error, true);
    assert.equal((await tcp[0].request('No.such', {})).error, true);
    tcp[1].notify('M.note', {});
    await tcp[1].request('M.ping', 'x'); // after the notify on the same connection: it was handled
    assert.equal((await tcp[2].request('M.ping', { c: 1 }, { compress: true })).error, false);
    assert.equal((await tcp[2].request('M.boom', {})).error, true);
    const mid = await scrape(addr);
    assert.equal(mid.s.get('nano_sessions{transport="tcp"}'), 3);
    assert.equal(mid.s.get('nano_sessions{transport="ws"}'), 1);
    assert.equal(delta(before, mid, 'nano_connections_accepted_total{transport="tcp"}'), 3);
    assert.equal(delta(before, mid, 'nano_connections_accepted_total{transport="ws"}'), 1);
    assert.equal(delta(before, mid, 'nano_messages_total{direction="in",type="request"}'), 11);
    assert.equal(delta(before, mid, 'nano_messages_total{direction="in",type="notify"}'), 1);
    assert.equal(delta(before, mid, 'nano_messages_total{direction="out",type="response"}'), 11);
    assert.equal(delta(before, mid, 'nano_requests_total{route="M.ping",outcome="ok"}'), 7);
    assert.equal(delta(before, mid, 'nano_requests_total{route="M.boom",outcome="500"}'), 1);
    assert.equal(delta(before, mid, 'nano_requests_total{route="M.deny",outcome="403"}'), 2);
    assert.equal(delta(before, mid, 'nano_requests_total{route="unknown",outcome="404"}'), 1);
    assert.equal(delta(before, mid, 'nano_request_duration_seconds_count{route="M.ping"}'), 7);
    assert.equal(delta(before, mid, 'nano_request_duration_seconds_bucket{route="M.ping",le="+Inf"}'), 7);
    assert.ok(delta(before, mid, 'nano_bytes_total{direction="in"}') > 0);
    assert.ok(delta(before, mid, 'nano_bytes_total{direction="out"}') > 0);
    // Lua's own metrics, on the same endpoint
    assert.equal(mid.s.get('game_pings_total{kind="table"}'), 6);
    assert.equal(mid.s.get('game_pings_total{kind="string"}'), 1);
    assert.equal(mid.s.get('game_queue_depth'), 7);
    assert.equal(mid.s.get('game_payload_bytes_count'), 7);

    for (const c of tcp) await c.close();
    await ws.close();
    await waitFor('the closes to be counted', async () => {
      const after = await scrape(addr);
      return delta(before, after, 'nano_connections_closed_total{reason="client"}') === 4;
    });
    const after = await scrape(addr);
    assert.equal(after.s.get('nano_sessions{transport="tcp"}'), 0);
    assert.equal(delta(before, after, 'nano_connections_closed_total{reason="error"}'), 0);
  } finally {
    await srv.stop();
  }
});

test('promtool check metrics passes on a scrape after traffic', { timeout: 30000 }, async () => {
  const srv = await startServer(fixture('metrics.lua'));
  try {
    const addr = await metricsAddr(srv);
    const c = await connect({ transport: 'tcp', ...srv.tcp });
    await c.request('M.ping', { a: 1 });
    await c.request('M.deny', {});
    const { text } = await scrape(addr);
    assertPromtool(text);
    await c.close();
  } finally {
    await srv.stop();
  }
});

test('10,000 distinct bogus routes leave the series count bounded', { timeout: 120000 }, async () => {
  const srv = await startServer(fixture('metrics.lua'));
  try {
    const addr = await metricsAddr(srv);
    const c = await connect({ transport: 'tcp', ...srv.tcp });
    await c.request('No.warmup', {}); // the "unknown" route's 404 series exists from here on
    const before = await scrape(addr);
    const N = 10000;
    for (let done = 0; done < N; done += 500) {
      const batch = [];
      for (let i = done; i < done + 500; i++) batch.push(c.request(`Bogus${i}.route${i}`, {}));
      for (const r of await Promise.all(batch)) assert.equal(r.error, true);
    }
    const after = await scrape(addr);
    assert.equal(after.s.size, before.s.size, 'no new series');
    assert.equal(delta(before, after, 'nano_requests_total{route="unknown",outcome="404"}'), N);
    assert.ok(!after.text.includes('Bogus'), 'no bogus route appears as a label');
    await c.close();
  } finally {
    await srv.stop();
  }
});

test('/healthz says 200 while serving and 503 once SIGTERM starts the shutdown', { timeout: 30000 }, async () => {
  const srv = await startServer(fixture('metrics.lua'), [], { env: { NH_DRAIN: '3' } });
  try {
    const addr = await metricsAddr(srv);
    const ok = await get(addr, '/healthz');
    assert.equal(ok.status, 200);
    assert.equal(ok.body, 'ok\n');
    assert.equal((await scrape(addr)).s.get('nano_up'), 1);
    srv.proc.kill('SIGTERM');
    let health;
    await waitFor('/healthz to say 503', async () => {
      health = await get(addr, '/healthz').catch(() => null);
      return health && health.status === 503;
    });
    assert.equal(health.body, 'shutting down\n');
    assert.equal((await scrape(addr)).s.get('nano_up'), 0);
    assert.ok(await srv.waitExit(10000), srv.logTail());
    assert.equal(srv.exitCode, 0, srv.logTail());
  } finally {
    srv.kill();
  }
});

test('the metrics listener answers 404, 405, 413, 431, HEAD and keeps connections alive', { timeout: 30000 }, async () => {
  const srv = await startServer(fixture('metrics.lua'));
  try {
    const addr = await metricsAddr(srv);
    assert.equal((await get(addr, '/nope')).status, 404);
    assert.match(await rawHttp(addr, 'POST /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n'), /^HTTP\/1.1 405 /);
    assert.match(await rawHttp(addr, 'GET /metrics HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello'), /^HTTP\/1.1 413 /);
    const huge = `GET /metrics HTTP/1.1\r\nHost: x\r\nX-Big: ${'a'.repeat(9000)}\r\n\r\n`;
    assert.match(await rawHttp(addr, huge), /^HTTP\/1.1 431 /);
    assert.match(await rawHttp(addr, 'GARBAGE\r\n\r\n'), /^HTTP\/1.1 400 /);
    const head = await rawHttp(addr, 'HEAD /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n');
    assert.match(head, /^HTTP\/1.1 200 [^]*Content-Length: 3\r\n/);
    assert.ok(head.endsWith('\r\n\r\n'), 'HEAD has no body');
    // two requests on one connection: two replies, and the connection closes only on request
    const two = await rawHttp(addr, 'GET /healthz HTTP/1.1\r\nHost: x\r\n\r\nGET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n');
    assert.equal(two.match(/HTTP\/1.1 200 OK/g).length, 2, two);
    // the game listeners are not affected: a client still gets answered
    const c = await connect({ transport: 'tcp', ...srv.tcp });
    assert.equal((await c.request('M.ping', {})).error, false);
    await c.close();
  } finally {
    await srv.stop();
  }
});
