'use strict';
// Shared scaffolding for the *.test.js files: one nano-host per file, both transports,
// a 30 s limit per test, the server log on failure, a watchdog for the whole file.

const { test, before, after } = require('node:test');
const assert = require('node:assert/strict');
const { startServer, fixture, watchdog } = require('./server');
const { connect, closeAll } = require('./client');

const TRANSPORTS = ['tcp', 'ws'];

function setup({ script = 'basic.lua', args = [], env = {}, fileTimeoutMs = 115000 } = {}) {
  watchdog(fileTimeoutMs);
  const ctx = { srv: null };

  before(async () => {
    ctx.srv = await startServer(fixture(script), args, { env });
  });

  after(async () => {
    await closeAll();
    if (ctx.srv && !ctx.srv.exited) await ctx.srv.kill();
  });

  ctx.addr = (transport) => {
    const srv = ctx.srv;
    if (!srv) throw new Error('server not started');
    if (transport === 'tcp') return { transport, host: srv.tcp.host, port: srv.tcp.port };
    return { transport, host: srv.ws.host, port: srv.ws.port, path: srv.ws.path };
  };

  ctx.connect = (transport, extra = {}) => connect({ ...ctx.addr(transport), ...extra });

  // A test with a 30 s limit that prints the server log tail when it fails.
  ctx.test = (name, fn, opts = {}) =>
    test(name, { timeout: 30000, ...opts }, async (t) => {
      try {
        await fn(t);
      } catch (e) {
        if (ctx.srv) for (const line of ctx.srv.logTail(20).split('\n')) t.diagnostic(line);
        throw e;
      }
    });

  // Bench.ping round trip; asserts the echo.
  ctx.ping = async (c, n = 1, opts = {}) => {
    const r = await c.request('Bench.ping', { n }, opts);
    assert.equal(r.error, false, `ping got an error response: ${r.text}`);
    assert.deepEqual(r.body, { n }, `ping echo on ${c.transport}`);
    return r;
  };

  return ctx;
}

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

module.exports = { setup, TRANSPORTS, sleep };
