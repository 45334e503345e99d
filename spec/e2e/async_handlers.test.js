'use strict';
// Handlers that wait (docs/async.md), end to end: 500 clients each send a Request whose handler
// sleeps 100 ms; they are all answered, within a generous bound (the figure is logged: it is a
// few hundred ms on a quiet machine), while a separate client's pings keep being answered.
// Run by hand: NANO_HOST=build/nano-host node spec/e2e/async_handlers.test.js

const assert = require('node:assert/strict');
const { test } = require('node:test');
const { startServer, fixture, watchdog } = require('./lib/server');
const { connect } = require('./lib/client');

const CLIENTS = 500;
watchdog(110000);

test(`${CLIENTS} requests that each sleep 100 ms are answered together; pings go on`, { timeout: 100000 }, async () => {
  const srv = await startServer(fixture('async.lua'), [], {});
  const clients = [];
  try {
    const a = srv.tcp;
    for (let i = 0; i < CLIENTS; i += 100) { // batches: the listen backlog never overflows
      const batch = [];
      for (let j = i; j < Math.min(CLIENTS, i + 100); j++) {
        batch.push(connect({ transport: 'tcp', host: a.host, port: a.port, connectTimeoutMs: 10000, handshakeTimeoutMs: 10000 }));
      }
      clients.push(...(await Promise.all(batch)));
    }
    const pinger = await connect({ transport: 'tcp', host: a.host, port: a.port });

    let naps = true;
    const pings = [];
    const pingLoop = (async () => {
      while (naps) {
        const t0 = process.hrtime.bigint();
        const r = await pinger.request('Async.ping', { p: pings.length }, { timeoutMs: 10000 });
        assert.equal(r.body.p, pings.length);
        pings.push(Number(process.hrtime.bigint() - t0) / 1e6);
      }
    })();

    const t0 = process.hrtime.bigint();
    const answers = await Promise.all(clients.map((c, n) => c.request('Async.nap', { n, secs: 0.1 }, { timeoutMs: 20000 })));
    const totalMs = Number(process.hrtime.bigint() - t0) / 1e6;
    naps = false;
    await pingLoop;

    answers.forEach((r, n) => assert.equal(r.body.napped, n));
    pings.sort((x, y) => x - y);
    const p50 = pings[Math.floor(pings.length / 2)];
    console.log(`async e2e: ${CLIENTS} sleeping requests answered in ${totalMs.toFixed(0)} ms; ` +
      `${pings.length} pings meanwhile, p50 ${p50.toFixed(2)} ms, max ${pings[pings.length - 1].toFixed(2)} ms`);
    // Generous: one after another they would take 50 s.
    assert.ok(totalMs < 10000, `answered in ${totalMs} ms`);
    assert.ok(pings.length >= 1, 'no ping was answered while the handlers slept');
  } finally {
    for (const c of clients) c.close();
    await srv.stop(10000);
  }
});
