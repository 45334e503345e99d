'use strict';
// Handler faults: an error, a deep recursion, endless loops (interpreted, through a C function,
// JIT-compiled) and a handler that allocates without bound. Each fails only its own call: an
// error response and a log line naming the session and route; the session and every other
// client keep working, and the host exits cleanly at the end.
// Run by hand: NANO_HOST=build/nano-host node spec/e2e/hardening-faults.test.js

const assert = require('node:assert/strict');
const { test } = require('node:test');
const { setup, TRANSPORTS, logMatch } = require('./lib/harness');
const { startServer, fixture } = require('./lib/server');
const { connect } = require('./lib/client');

// Seconds without returning before the watchdog acts (longer when nano-host runs under valgrind,
// where the allocation test must reach the memory limit before the stall time).
const WATCHDOG = 0.5 * Math.max(1, Number(process.env.NH_E2E_SLOW) || 1);
const ctx = setup({
  script: 'hardening.lua',
  env: { NH_WATCHDOG: String(WATCHDOG) },
});
const clients = {};
let n = 0;


async function othersWork() {
  for (const tr of TRANSPORTS) await ctx.ping(clients[tr], ++n, { timeoutMs: 3000 });
}

async function expectFailedCall(c, route, body, logRe, timeoutMs = 10000) {
  const from = ctx.srv.stderr.length;
  const r = await c.request(route, body, { timeoutMs });
  assert.equal(r.error, true, `${route} must answer with an error response, got ${r.text}`);
  assert.equal(r.body.code, 500, r.text);
  const sid = (await c.request('Stats.get', {})).body; // the session still works
  assert.ok(sid, 'the session answers after the failed call');
  await logMatch(ctx.srv, logRe, from);
  await ctx.ping(c, ++n);
  await othersWork();
  return r;
}

ctx.test('clients on both transports', async () => {
  for (const tr of TRANSPORTS) clients[tr] = await ctx.connect(tr);
  await othersWork();
});

for (const tr of TRANSPORTS) {
  ctx.test(`${tr}: a handler error fails that call, logged with session and route`, async () => {
    const c = await ctx.connect(tr);
    await expectFailedCall(c, 'Fault.boom', {}, /session \d+ Fault\.boom: handler error: .*kaboom/);
    await c.close();
  });

  ctx.test(`${tr}: a deep recursion fails that call (stack overflow)`, async () => {
    const c = await ctx.connect(tr);
    await expectFailedCall(c, 'Fault.recurse', {}, /session \d+ Fault\.recurse: handler error: .*stack overflow/);
    await c.close();
  });

  ctx.test(`${tr}: an endless interpreted loop is aborted by the watchdog`, async () => {
    const c = await ctx.connect(tr);
    const from = ctx.srv.stderr.length;
    const t0 = Date.now();
    await expectFailedCall(c, 'Fault.spin', {}, /session \d+ Fault\.spin: handler error: .*aborted by the watchdog/);
    const ms = Date.now() - t0;
    assert.ok(ms >= WATCHDOG * 1000 * 0.9, `aborted after ${ms} ms, before the stall time`);
    await logMatch(ctx.srv, /watchdog: session \d+ Fault\.spin has run for [\d.]+ s without returning; aborting it/, from);
    await c.close();
  });

  ctx.test(`${tr}: an endless loop calling a C function is aborted by the watchdog`, async () => {
    const c = await ctx.connect(tr);
    await expectFailedCall(c, 'Fault.spin_cfunc', {}, /session \d+ Fault\.spin_cfunc: handler error: .*aborted by the watchdog/);
    await c.close();
  });

  ctx.test(`${tr}: an endless loop pushing through the FFI is aborted by the watchdog`, async () => {
    const c = await ctx.connect(tr);
    await expectFailedCall(c, 'Fault.spin_push', {}, /session \d+ Fault\.spin_push: handler error: .*aborted by the watchdog/);
    await c.close();
  });

  ctx.test(`${tr}: an endless loop reading s:uid() through the FFI is aborted by the watchdog`, async () => {
    const c = await ctx.connect(tr);
    await expectFailedCall(c, 'Fault.spin_uid', {}, /session \d+ Fault\.spin_uid: handler error: .*aborted by the watchdog/);
    await c.close();
  });

  ctx.test(`${tr}: an endless loop reading nano.now() through the FFI is aborted by the watchdog`, async () => {
    const c = await ctx.connect(tr);
    await expectFailedCall(c, 'Fault.spin_now', {}, /session \d+ Fault\.spin_now: handler error: .*aborted by the watchdog/);
    await c.close();
  });
}

for (const tr of TRANSPORTS) {
  ctx.test(`${tr}: a request whose dispatcher fails outside the handler still gets one error response`, async () => {
    const c = await ctx.connect(tr);
    const from = ctx.srv.stderr.length;
    const r = await c.request('Broken.before', {});
    assert.equal(r.error, true, `expected an error response, got ${r.text}`);
    assert.equal(r.body.code, 500, r.text);
    await logMatch(ctx.srv, /dispatch: .*the dispatcher failed before the handler/, from);
    const r2 = await c.request('Broken.after', {});
    assert.equal(r2.error, false, r2.text);
    assert.deepEqual(r2.body, { ran: true });
    await logMatch(ctx.srv, /dispatch: .*the dispatcher failed after the handler answered/, from);
    await ctx.ping(c, ++n); // answered after anything the server sent in between
    assert.deepEqual(c.unexpected.map((m) => m.text), [], 'no second response to an answered request');
    await c.close();
    await othersWork();
  });
}

ctx.test('sessions release every Lua registry reference when they close', async () => {
  const mon = clients.tcp;
  const refs = async () => (await mon.request('Stats.get', { gc: true })).body;
  const before = await refs();
  const many = [];
  for (let i = 0; i < 40; i++) many.push(await ctx.connect(TRANSPORTS[i % 2]));
  for (const [i, c] of many.entries()) {
    await c.request('Soak.join', {}); // a group member
    c.notify('Bench.note', { i }); // a push
    await c.waitPush('onNote', 3000);
    if (i % 3 === 0) await c.request('Fault.boom', {}); // a failed call
  }
  assert.ok((await refs()).lua_refs >= before.lua_refs + many.length, 'each open session holds a reference');
  await Promise.all(many.map((c, i) => (i % 2 ? c.close() : (c._destroy(), c.waitClose(3000)))));
  const deadline = Date.now() + 5000;
  let after = await refs();
  while (after.sessions !== before.sessions && Date.now() < deadline) after = await refs();
  assert.equal(after.sessions, before.sessions);
  assert.equal(after.lua_refs, before.lua_refs, 'registry references back to where they were');
});

ctx.sigtermTest('SIGTERM: exit code 0', { before: othersWork, leaks: true });

// A compiled endless loop never returns: with watchdog_exit the process ends (status 70) so a
// supervisor can restart it, after the watchdog has logged which handler was stuck.
test('a JIT-compiled endless loop: logged, then watchdog_exit ends the process with status 70', { timeout: 30000 }, async () => {
  const srv = await startServer(fixture('hardening.lua'), [], {
    env: { NH_WATCHDOG: '0.2', NH_WATCHDOG_EXIT: '1.5' },
  });
  try {
    const c = await connect({ transport: 'tcp', host: srv.tcp.host, port: srv.tcp.port });
    c.request('Fault.spin_jit_forever', {}, { timeoutMs: 20000 }).catch(() => {});
    const exited = await srv.waitExit(15000);
    assert.ok(exited, `nano-host still running 15 s after a compiled endless loop\n${srv.logTail()}`);
    assert.equal(srv.exitCode, 70, srv.logTail());
    assert.match(srv.stderr, /watchdog: session \d+ Fault\.spin_jit_forever has run for [\d.]+ s/);
    assert.match(srv.stderr, /watchdog: session \d+ Fault\.spin_jit_forever has been stuck for [\d.]+ s and cannot be aborted \(JIT-compiled code never runs the hook\): exiting \(70\)/);
    await c.waitClose(3000);
  } finally {
    await srv.kill();
  }
});

// The Lua memory limit on a server of its own, whose watchdog stall time is far away: a slow
// allocator (valgrind) must meet the memory limit, not the stall time.
test('Lua memory limit: a handler allocating without bound fails that call; live data and garbage under it do not', { timeout: 120000 }, async () => {
  const LIMIT = 32 << 20;
  const srv = await startServer(fixture('hardening.lua'), [], { env: { NH_WATCHDOG: '60', NH_LUA_MEMORY_LIMIT: String(LIMIT) } });
  try {
    const cs = {};
    for (const tr of TRANSPORTS) cs[tr] = await connect({ transport: tr, host: srv[tr].host, port: srv[tr].port, path: srv[tr].path });
    for (const tr of TRANSPORTS) {
      const c = cs[tr];
      const before = (await c.request('Stats.get', { gc: true })).body.lua_memory;
      const from = srv.stderr.length;
      const r = await c.request('Fault.hog', {}, { timeoutMs: 60000 });
      assert.equal(r.error, true, `Fault.hog must answer with an error response, got ${r.text}`);
      assert.equal(r.body.code, 500, r.text);
      await logMatch(srv, /session \d+ Fault\.hog: handler error: .*Lua memory limit exceeded/, from);
      const after = (await c.request('Stats.get', { gc: true })).body;
      assert.ok(after.lua_memory < before + (8 << 20), `Lua heap back near ${before} after the failed call: ${after.lua_memory}`);
      assert.ok(after.lua_memory_errors >= 1);
      for (const other of TRANSPORTS) assert.deepEqual((await cs[other].request('Bench.ping', { tr })).body, { tr });
    }
    // 16 MiB kept alive (under the limit), then dropped, three times: the garbage that goes over
    // the limit is collected rather than failing a call
    for (let i = 0; i < 3; i++) {
      const r = await cs.ws.request('Fault.keep', { mb: 16 }, { timeoutMs: 30000 });
      assert.equal(r.error, false, r.text);
      assert.equal((await cs.ws.request('Fault.release', {}, { timeoutMs: 30000 })).error, false);
    }
    const res = await srv.stop(10000);
    assert.equal(res.code, 0);
    assert.doesNotMatch(srv.stderr, /handles still open|registry reference/);
  } finally {
    await srv.kill();
  }
});
