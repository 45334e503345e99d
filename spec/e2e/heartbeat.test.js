'use strict';
// Heartbeats with a 1 s interval (NH_HEARTBEAT=1): the server sends one every interval, closes a
// client that sends nothing for more than 2.5 intervals (its sweep checks every 250 ms), and keeps
// clients that answer (or send anything).
// Both transports run at the same time, so the whole file takes about 5 s.
// Run by hand: NANO_HOST=build/nano-host node spec/e2e/heartbeat.test.js

const assert = require('node:assert/strict');
const { setup, TRANSPORTS, sleep } = require('./lib/harness');
const { PKG } = require('./lib/client');

const ctx = setup({ env: { NH_HEARTBEAT: '1' } });

async function heartbeatCase(tr) {
  const silent = await ctx.connect(tr, { answerHeartbeat: false });
  const t0 = Date.now(); // ack sent
  const answering = await ctx.connect(tr);
  const t1 = Date.now();
  const chatty = await ctx.connect(tr, { answerHeartbeat: false }); // sends requests, no heartbeats
  for (const c of [silent, answering, chatty]) assert.equal(c.handshakeResponse.sys.heartbeat, 1, `${tr}: sys.heartbeat`);

  let n = 0;
  const chatter = setInterval(() => {
    if (!chatty.closed) chatty.request('Bench.ping', { n: ++n }).catch(() => {});
  }, 600);
  try {
    const info = await silent.waitClose(4500).catch((e) => {
      throw new Error(`${tr}: a client that sends nothing was not closed within 4.5 s: ${e.message}`);
    });
    const dt = info.at - t0;
    assert.ok(dt >= 1800 && dt <= 3600, `${tr}: silent client closed after ${dt} ms (expected ~2000-3500)`);

    const remaining = 4000 - (Date.now() - t1);
    if (remaining > 0) await sleep(remaining);
    assert.equal(answering.closed, false, `${tr}: the answering client was closed (${answering.describe()})`);
    assert.equal(chatty.closed, false, `${tr}: a client sending requests every 600 ms was closed (${chatty.describe()})`);
    await ctx.ping(answering, 1);
    await ctx.ping(chatty, 2);

    // The server sends heartbeats on its own, every interval.
    const hb = answering.heartbeatsReceived;
    assert.ok(hb.length >= 3 && hb.length <= 6, `${tr}: ${hb.length} heartbeats in ~4 s (expected about 4)`);
    assert.ok(hb[0] - t1 <= 1600, `${tr}: first heartbeat ${hb[0] - t1} ms after the ack`);
    for (let i = 1; i < hb.length; i++) {
      const gap = hb[i] - hb[i - 1];
      assert.ok(gap >= 600 && gap <= 1600, `${tr}: heartbeat gap ${gap} ms (expected ~1000), all: ${hb.map((x) => x - t1)}`);
    }
    assert.ok(answering.heartbeatsSent >= 2, `${tr}: the client answered ${answering.heartbeatsSent} heartbeats`);
    assert.ok(chatty.heartbeatsReceived.length >= 3, `${tr}: chatty client got ${chatty.heartbeatsReceived.length} heartbeats`);
    const types = new Set(answering.packets.map((p) => p.type));
    assert.ok(!types.has(PKG.KICK), `${tr}: answering client was kicked`);
  } finally {
    clearInterval(chatter);
    await Promise.all([silent, answering, chatty].map((c) => c.close()));
  }
}

ctx.test('heartbeat timeouts on both transports (concurrently)', async (t) => {
  await Promise.all(TRANSPORTS.map((tr) => t.test(`${tr}: silent closed, answering and chatty kept`, () => heartbeatCase(tr))));
}, { concurrency: true });

let last;
ctx.sigtermTest('SIGTERM: exit code 0', {
  before: async () => { last = await ctx.connect('ws'); },
  after: () => last.waitClose(2000),
});
