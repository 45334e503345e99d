'use strict';
// Soak: nano-host under a mixed, churning load for NH_SOAK_SECONDS (default 45), then checks
// that nothing went wrong and nothing was kept:
//   - steady clients (both transports) in one group: requests (echo checked), notify -> push
//     (body checked), broadcasts to the whole group;
//   - churning clients that connect, join, ping and leave (half gracefully, half abruptly);
//   - clients that get kicked, and clients that send garbage and get closed;
//   - at the end: zero errors on the good clients, every session closed exactly once, the Lua
//     registry references back to their baseline, and server RSS back within a small margin of
//     what it was after warm-up. nano-host then exits 0 on SIGTERM.
// CTest runs it (soak_e2e, release build only); scripts/soak runs it for longer.
//   NANO_HOST=build/nano-host NH_SOAK_SECONDS=600 node spec/e2e/soak/soak.js

const assert = require('node:assert/strict');
const fs = require('node:fs');
const { test } = require('node:test');
const { startServer, fixture, watchdog } = require('../lib/server');
const { connect, PKG } = require('../lib/client');

const SECONDS = Number(process.env.NH_SOAK_SECONDS || 45);
const STEADY = Number(process.env.NH_SOAK_STEADY || 40);
const CHURN = Number(process.env.NH_SOAK_CHURN || 16); // concurrent churning clients
const RSS_MARGIN_KIB = Number(process.env.NH_SOAK_RSS_MARGIN_KIB || 16 * 1024);
watchdog((SECONDS + 120) * 1000);

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
const rssKiB = (pid) => Number(/VmRSS:\s+(\d+) kB/.exec(fs.readFileSync(`/proc/${pid}/status`, 'utf8'))[1]);

test(`soak: ${SECONDS} s of churn, requests, pushes, broadcasts and kicks`, { timeout: (SECONDS + 110) * 1000 }, async (t) => {
  const srv = await startServer(fixture('hardening.lua'), [], { env: { NH_HEARTBEAT: '3' } });
  const addr = (tr) => ({ transport: tr, host: srv[tr].host, port: srv[tr].port, path: srv[tr].path });
  const errors = [];
  const count = { requests: 0, pushes: 0, broadcasts: 0, broadcastsReceived: 0, churned: 0, kicked: 0, bad: 0 };
  const fail = (what, e) => {
    if (errors.length < 20) errors.push(`${what}: ${e && e.message ? e.message : e}`);
    else errors.length++;
  };
  let running = true;
  const steady = [];
  let monitor = null;
  try {
  monitor = await connect(addr('tcp'));
  const stats = async (gc) => (await monitor.request('Stats.get', { gc: !!gc })).body;
  const rssStart = rssKiB(srv.pid);
  const refsBaseline = (await stats(true)).lua_refs; // one session: the monitor

  // ---- steady clients ----
  for (let i = 0; i < STEADY; i++) {
    const c = await connect(addr(i % 2 ? 'ws' : 'tcp'));
    await c.request('Soak.join', {});
    c.on('close', () => running && fail(`steady ${i} (${c.transport})`, 'closed by the server'));
    steady.push(c);
  }
  const steadyLoop = async (c, i) => {
    let n = 0;
    while (running) {
      n++;
      try {
        const r = await c.request('Bench.ping', { i, n }, { timeoutMs: 10000 });
        if (r.error || r.body.i !== i || r.body.n !== n) fail(`steady ${i} ping`, `bad echo ${r.text}`);
        count.requests++;
        c.notify('Bench.note', { i, n });
        const p = await c.waitPush('onNote', 10000);
        if (p.body.i !== i || p.body.n !== n) fail(`steady ${i} push`, `bad body ${p.text}`);
        count.pushes++;
        if (n % 20 === i % 20) {
          const b = await c.request('Soak.broadcast', { from: i, n }, { timeoutMs: 10000 });
          if (b.error) fail(`steady ${i} broadcast`, b.text);
          count.broadcasts++;
        }
        // broadcasts pile up as pushes: consume them
        for (const p of c.pushes) if (!p.consumed && p.route === 'onBroadcast') { p.consumed = true; count.broadcastsReceived++; }
        if (c.pushes.length > 1000) c.pushes = c.pushes.filter((p) => !p.consumed);
        if (c.packets.length > 1000) c.packets = c.packets.slice(-10);
        await sleep(5 + (n % 20));
      } catch (e) {
        if (running) fail(`steady ${i}`, e);
        return;
      }
    }
  };

  // ---- churning clients: connect, join, ping, leave; some get kicked, some send garbage ----
  const churnLoop = async (k) => {
    let n = 0;
    while (running) {
      n++;
      const tr = (k + n) % 2 ? 'ws' : 'tcp';
      const kind = n % 10 === 3 ? 'kick' : n % 10 === 7 ? 'bad' : 'good';
      let c;
      try {
        c = await connect({ ...addr(tr), connectTimeoutMs: 10000, handshakeTimeoutMs: 10000 });
        await c.request('Soak.join', {}, { timeoutMs: 10000 });
        if (kind === 'kick') {
          await c.request('Soak.kick_me', {}, { timeoutMs: 10000 });
          await c.waitPacket(PKG.KICK, 10000);
          await c.waitClose(10000);
          count.kicked++;
          continue;
        }
        if (kind === 'bad') {
          c.rawSend(Buffer.from([0x09, 0x00, 0x00, 0x00])); // packet type 9: closed by the server
          await c.waitClose(10000);
          count.bad++;
          continue;
        }
        for (let j = 0; j < 3; j++) {
          const r = await c.request('Bench.ping', { k, n, j }, { timeoutMs: 10000 });
          if (r.error || r.body.j !== j) fail(`churn ${k} ping`, r.text);
          count.requests++;
        }
        if (n % 2) await c.close();
        else {
          c._destroy(); // abrupt: no close handshake
          await c.waitClose(10000);
        }
        count.churned++;
      } catch (e) {
        if (running) fail(`churn ${k} (${kind}, ${tr})`, e);
        if (c && !c.closed) c._destroy();
      }
    }
  };

  const loops = [...steady.map(steadyLoop), ...Array.from({ length: CHURN }, (_, k) => churnLoop(k))];

  // warm-up, then the baseline the end is compared with
  await sleep(Math.min(5000, SECONDS * 200));
  const rssWarm = rssKiB(srv.pid);
  let rssPeak = rssWarm;
  const t0 = Date.now();
  while (Date.now() - t0 < SECONDS * 1000 && errors.length === 0 && !srv.exited) {
    await sleep(500);
    if (!srv.exited) rssPeak = Math.max(rssPeak, rssKiB(srv.pid));
  }
  assert.ok(!srv.exited, `nano-host exited during the soak (code ${srv.exitCode}, signal ${srv.exitSignal})\n${srv.logTail()}`);
  running = false;
  await Promise.all(loops);
  for (const c of steady) await c.close();

  // Every session but the monitor's closed; garbage collected.
  const deadline = Date.now() + 20000;
  let end = await stats(true);
  while (end.sessions !== 1 && Date.now() < deadline) {
    await sleep(100);
    end = await stats(true);
  }
  await sleep(500); // let the allocator return what the closed connections used
  end = await stats(true);
  const rssEnd = rssKiB(srv.pid);
  t.diagnostic(`counts ${JSON.stringify(count)}`);
  t.diagnostic(`server: sessions opened ${end.opened}, closed ${end.closed}, lua_refs ${refsBaseline} -> ${end.lua_refs}, lua heap ${Math.round(end.lua_memory / 1024)} KiB`);
  t.diagnostic(`RSS KiB: start ${rssStart}, after warm-up ${rssWarm}, peak ${rssPeak}, end ${rssEnd}`);

  assert.deepEqual(errors, [], `errors on good clients (${errors.length})`);
  assert.ok(count.requests > 0 && count.pushes > 0 && count.broadcasts > 0 && count.broadcastsReceived > 0, 'every kind of traffic ran');
  assert.ok(count.churned > 0 && count.kicked > 0 && count.bad > 0, 'connections churned, were kicked, and were refused');
  assert.equal(end.sessions, 1, 'only the monitor session is left');
  assert.equal(end.closed_twice, 0, 'no session closed twice');
  assert.equal(end.closed, end.opened - 1, 'every session but the monitor closed exactly once');
  assert.equal(end.lua_refs, refsBaseline, 'Lua registry references back to the baseline');
  assert.ok(rssEnd <= rssWarm + RSS_MARGIN_KIB, `RSS ${rssEnd} KiB at the end, ${rssWarm} KiB after warm-up (margin ${RSS_MARGIN_KIB} KiB)`);

  await monitor.close();
  const res = await srv.stop(15000);
  assert.equal(res.code, 0);
  assert.doesNotMatch(srv.stderr, /handles still open|registry reference/);
  } catch (e) {
    const sid = /session (\d+)/;
    t.diagnostic(srv.stderr.split('\n').filter((l) => / session 1[: ]/.test(l) || / error /.test(l)).slice(-20).join('\n'));
    throw e;
  } finally {
    running = false;
    for (const c of [monitor, ...steady]) if (c && !c.closed) c._destroy();
    await srv.kill();
  }
});
