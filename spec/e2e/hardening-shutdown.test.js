'use strict';
// Shutdown under load: SIGTERM while 1,000 clients (half TCP, half WebSocket) are sending
// requests. nano-host must exit 0, close every session exactly once (on_session_closed, counted
// by the fixture and printed by a component's shutdown hook), and every client must see its
// connection closed.
// Run by hand: NANO_HOST=build/nano-host node spec/e2e/hardening-shutdown.test.js

const assert = require('node:assert/strict');
const net = require('node:net');
const { test } = require('node:test');
const { startServer, fixture, watchdog } = require('./lib/server');
const { connect } = require('./lib/client');

const CLIENTS = Number(process.env.NH_SHUTDOWN_CLIENTS || 1000);
watchdog(170000);

test(`SIGTERM with ${CLIENTS} active clients: exit 0, every session closed once`, { timeout: 160000 }, async () => {
  const srv = await startServer(fixture('hardening.lua'), [], {});
  const clients = [];
  let stop = false;
  let answered = 0;
  let failed = 0;
  try {
    // Connect in batches so the listen backlog never overflows.
    for (let i = 0; i < CLIENTS; i += 100) {
      const batch = [];
      for (let j = i; j < Math.min(CLIENTS, i + 100); j++) {
        const tr = j % 2 ? 'ws' : 'tcp';
        const a = srv[tr];
        batch.push(connect({ transport: tr, host: a.host, port: a.port, path: a.path, connectTimeoutMs: 10000, handshakeTimeoutMs: 10000 }));
      }
      clients.push(...(await Promise.all(batch)));
    }
    // Every client keeps one request in flight until the end.
    const loop = async (c) => {
      while (!stop && !c.closed) {
        try {
          await c.request('Bench.ping', { n: 1 }, { timeoutMs: 20000 });
          answered++;
        } catch (e) {
          if (!c.closed) failed++;
        }
      }
    };
    const loops = clients.map(loop);
    const until = answered + CLIENTS * 3;
    const deadline = Date.now() + 60000;
    while (answered < until && Date.now() < deadline) await new Promise((r) => setTimeout(r, 20));
    assert.ok(answered >= until, `load did not build up: ${answered} answers`);
    assert.equal(failed, 0, 'requests failed before the shutdown');

    const res = await srv.stop(30000);
    stop = true;
    assert.equal(res.code, 0);
    await Promise.all(clients.map((c) => c.waitClose(10000)));
    await Promise.all(loops);
    const m = /hardening: sessions opened=(\d+) closed=(\d+) closed_twice=(\d+)/.exec(srv.stderr);
    assert.ok(m, `no session report in the log\n${srv.logTail()}`);
    assert.equal(Number(m[1]), CLIENTS, 'sessions opened');
    assert.equal(Number(m[2]), CLIENTS, 'sessions closed (on_session_closed)');
    assert.equal(Number(m[3]), 0, 'sessions closed twice');
    assert.doesNotMatch(srv.stderr, /handles still open|registry reference/);
    assert.doesNotMatch(srv.stderr, / error /, 'no error logged');
  } finally {
    stop = true;
    for (const c of clients) if (!c.closed) c._destroy();
    await srv.kill();
  }
});

// A connection with no session (a WebSocket port's plain HTTP request, still being sent) is
// closed by the shutdown too, at once: it does not hold the exit until the HTTP deadline.
test('SIGTERM with a half-sent HTTP request on the WebSocket port: closed at once, exit 0', { timeout: 60000 }, async () => {
  const srv = await startServer(fixture('hardening.lua'), [], { env: { NH_HANDSHAKE_TIMEOUT: '30' } });
  const sock = net.connect(srv.ws.port, srv.ws.host);
  try {
    await new Promise((resolve, reject) => { sock.once('connect', resolve); sock.once('error', reject); });
    const closed = new Promise((resolve) => sock.once('close', resolve));
    sock.on('error', () => {});
    sock.write('GET /page HTTP/1.1\r\nHost: x\r\n'); // no blank line: the head never ends
    await new Promise((r) => setTimeout(r, 200));
    const t0 = Date.now();
    const res = await srv.stop(20000);
    assert.equal(res.code, 0);
    assert.ok(Date.now() - t0 < 10000, `exit took ${Date.now() - t0} ms (the HTTP deadline is 30 s)`);
    await closed;
  } finally {
    sock.destroy();
    await srv.kill();
  }
});
