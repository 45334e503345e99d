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

  // Observer clients, one per transport, open across a file's tests: work() pings each and fails
  // if the server closed one (a fault aimed at other connections must not touch them).
  ctx.observers = ({ timeoutMs = 2000 } = {}) => {
    const obs = { clients: {}, pings: 0 };
    obs.connect = async () => {
      for (const tr of TRANSPORTS) obs.clients[tr] = await ctx.connect(tr);
    };
    obs.work = async () => {
      for (const tr of TRANSPORTS) {
        const c = obs.clients[tr];
        assert.ok(c && !c.closed, `the ${tr} observer was closed by the server`);
        await ctx.ping(c, ++obs.pings, { timeoutMs });
      }
    };
    obs.waitClose = async (ms) => {
      for (const tr of TRANSPORTS) await obs.clients[tr].waitClose(ms);
    };
    return obs;
  };

  // A file's last test: SIGTERM, and nano-host exits with code 0 within 10 s. `before` runs first
  // (e.g. observers still work), `after` once it has exited (e.g. clients were closed); with
  // `leaks`, the exit must not report libuv handles or Lua registry references left open.
  ctx.sigtermTest = (name, { before: pre, after: post, leaks = false } = {}) =>
    ctx.test(name, async (t) => {
      if (pre) await pre(t);
      const res = await ctx.srv.stop(10000);
      assert.equal(res.code, 0);
      if (leaks) assert.doesNotMatch(ctx.srv.stderr, /handles still open|registry reference/);
      if (post) await post(t, res);
    });

  return ctx;
}

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

// The first match of `re` in the server log after offset `from` (bounded wait).
async function logMatch(srv, re, from = 0, timeoutMs = 5000) {
  const until = Date.now() + timeoutMs;
  for (;;) {
    const m = re.exec(srv.stderr.slice(from));
    if (m) return m;
    if (Date.now() > until) assert.fail(`no log line matching ${re} within ${timeoutMs} ms\n${srv.logTail()}`);
    await sleep(20);
  }
}

module.exports = { setup, TRANSPORTS, sleep, logMatch };
