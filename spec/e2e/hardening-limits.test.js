'use strict';
// Limits: a client that stops reading while the server pushes (send_limit), slowloris clients
// that never finish the handshake or the HTTP upgrade (handshake_timeout), WebSocket frames and
// HTTP heads over their limits, bad close frames, and max_conns. Each closes only the offending
// connection, with a log line; observer clients on both transports keep working throughout.
// (Malformed packets and messages are in limits.test.js.)
// Run by hand: NANO_HOST=build/nano-host node spec/e2e/hardening-limits.test.js

const assert = require('node:assert/strict');
const fs = require('node:fs');
const { test } = require('node:test');
const { setup, TRANSPORTS, sleep, logMatch } = require('./lib/harness');
const { startServer, fixture } = require('./lib/server');
const { connect, packet, PKG } = require('./lib/client');
const { RawConn, rawUpgrade, upgradeRequest, encodeFrame, wsKey, hex } = require('./lib/rawws');

const SEND_LIMIT = 256 * 1024;
// Under valgrind (NH_E2E_SLOW) the server needs longer for an honest handshake.
const SLOW = Math.max(1, Number(process.env.NH_E2E_SLOW) || 1);
const HANDSHAKE_TIMEOUT = SLOW; // seconds
const ctx = setup({
  script: 'hardening.lua',
  env: { NH_SEND_LIMIT: String(SEND_LIMIT), NH_HANDSHAKE_TIMEOUT: String(HANDSHAKE_TIMEOUT), NH_HEARTBEAT: String(2 * SLOW) },
});
const observers = ctx.observers({ timeoutMs: 3000 });

function rssKiB(pid) {
  const m = /VmRSS:\s+(\d+) kB/.exec(fs.readFileSync(`/proc/${pid}/status`, 'utf8'));
  return Number(m[1]);
}


const observersWork = observers.work;

ctx.test('observers connect on both transports', async () => {
  await observers.connect();
  await observersWork();
});

// ---- a client that never reads ----

for (const tr of TRANSPORTS) {
  ctx.test(`${tr}: a client that stops reading is cut off at the send limit; memory stays bounded`, async () => {
    const srv = ctx.srv;
    const reader = await ctx.connect(tr); // gets a flood too, and reads it
    const slow = await ctx.connect(tr);
    const rss0 = rssKiB(srv.pid);
    const from = srv.stderr.length;
    const r = await reader.request('Flood.start', { size: 4096, every: 0.01, count: 2 });
    assert.equal(r.error, false, r.text);
    // Stop reading: the kernel buffers fill first, then the server's queue for this session.
    (tr === 'tcp' ? slow.sock : slow.ws._socket).pause();
    slow.request('Flood.start', { size: 16384, every: 0.002, count: 8 }, { timeoutMs: 20000 }).catch(() => {});
    const m = await logMatch(srv, new RegExp(`${tr} \\S+ session (\\d+): send buffer over ${SEND_LIMIT} bytes \\(client not reading\\); closing`), from, 15000);
    const rss1 = rssKiB(srv.pid);
    // The server held at most the send limit for this session (plus what the kernel took).
    assert.ok(rss1 - rss0 < 48 * 1024, `server RSS grew by ${rss1 - rss0} KiB while a client did not read`);
    (tr === 'tcp' ? slow.sock : slow.ws._socket).resume();
    await slow.waitClose(5000);
    // The reading client was flooded all along and is still connected and answering.
    const pushes = reader.pushes.filter((p) => p.route === 'onFlood').length;
    assert.ok(pushes > 0, 'the reading client received its flood');
    assert.ok(!reader.closed, `the reading client was closed (session ${m[1]} was the slow one)`);
    await ctx.ping(reader, 1);
    await reader.close();
    await observersWork();
  });
}

// ---- peers that vanish while the server writes ----

// Found by the soak: writing to a connection the peer has reset raised SIGPIPE, which killed
// nano-host (libuv leaves SIGPIPE alone; the host must ignore it).
for (const tr of TRANSPORTS) {
  ctx.test(`${tr}: clients that reset the connection while responses are on their way never take the server down`, async () => {
    for (let round = 0; round < 30; round++) {
      const c = await ctx.connect(tr).catch((e) => {
        assert.fail(`round ${round}: ${e.message}; nano-host exited: ${ctx.srv.exited} (signal ${ctx.srv.exitSignal})`);
      });
      for (let i = 0; i < 50; i++) c.request('Bench.ping', { pad: 'x'.repeat(2000), i }, { timeoutMs: 5000 }).catch(() => {});
      const sock = tr === 'tcp' ? c.sock : c.ws._socket;
      sock.resetAndDestroy(); // RST, not FIN: the server's next write fails
      await c.waitClose(5000);
    }
    assert.ok(!ctx.srv.exited, `nano-host died (signal ${ctx.srv.exitSignal})\n${ctx.srv.logTail()}`);
    await observersWork();
  });
}

// ---- slowloris: handshake timeout ----

// Connections that never complete the handshake are closed after handshake_timeout (the sweep
// runs every heartbeat/4 = 0.5 s here, so within about 1.5 s; all times NH_E2E_SLOW).
async function expectTimedOut(what, open, { trickle } = {}) {
  const srv = ctx.srv;
  const from = srv.stderr.length;
  const t0 = Date.now();
  const conn = await open();
  let timer = null;
  if (trickle) {
    let i = 0;
    timer = setInterval(() => {
      if (i < trickle.length && !conn.closed && !conn.ended) conn.write(trickle.subarray(i, ++i));
    }, 100);
  }
  try {
    await conn.waitClosed(HANDSHAKE_TIMEOUT * 1000 + 3000 * SLOW);
  } finally {
    if (timer) clearInterval(timer);
    conn.destroy();
  }
  const ms = Date.now() - t0;
  assert.ok(ms >= HANDSHAKE_TIMEOUT * 1000 * 0.9, `${what}: closed after ${ms} ms, before the handshake timeout`);
  await logMatch(srv, new RegExp(`session \\d+: no handshake within ${HANDSHAKE_TIMEOUT.toFixed(1).replace('.', '\\.')} s; closing`), from);
  await observersWork();
}

ctx.test('tcp: a connection that sends nothing is closed after the handshake timeout', async () => {
  const { host, port } = ctx.addr('tcp');
  await expectTimedOut('silent', () => RawConn.open(host, port));
});

ctx.test('tcp: a handshake sent one byte every 100 ms is closed after the handshake timeout', async () => {
  const { host, port } = ctx.addr('tcp');
  const hs = packet(PKG.HANDSHAKE, Buffer.from(JSON.stringify({ sys: { type: 'js-websocket', version: '0.0.1' }, user: {} })));
  await expectTimedOut('trickled handshake', () => RawConn.open(host, port), { trickle: hs });
});

ctx.test('tcp: a handshake never acknowledged is closed after the handshake timeout', async () => {
  const { host, port } = ctx.addr('tcp');
  await expectTimedOut('no ack', async () => {
    const conn = await RawConn.open(host, port);
    conn.write(packet(PKG.HANDSHAKE, Buffer.from('{"sys":{}}')));
    return conn;
  });
});

ctx.test('ws: an HTTP upgrade sent one byte every 100 ms is closed after the handshake timeout', async () => {
  const { host, port, path } = ctx.addr('ws');
  const req = Buffer.from(upgradeRequest(path, `${host}:${port}`, wsKey()));
  await expectTimedOut('trickled upgrade', () => RawConn.open(host, port), { trickle: req });
});

ctx.test('ws: an upgraded connection that never sends the pomelo handshake is closed', async () => {
  const { host, port, path } = ctx.addr('ws');
  await expectTimedOut('upgraded, silent', async () => {
    const { conn, res } = await rawUpgrade(host, port, path);
    assert.equal(res.status, 101, res.head);
    return conn;
  });
});

// ---- WebSocket frames and heads over their limits, bad close frames ----

async function expectWsClose(name, frames, expectCode, logRe) {
  const { host, port, path } = ctx.addr('ws');
  const from = ctx.srv.stderr.length;
  const { conn, res } = await rawUpgrade(host, port, path);
  try {
    assert.equal(res.status, 101, res.head);
    for (const f of frames) conn.write(f);
    const f = await conn.waitFrame(3000);
    assert.equal(f.opcode, 0x8, `${name}: expected a close frame, got ${hex(f.header)}`);
    assert.ok(f.payload.length >= 2, `${name}: the close frame carries a status`);
    assert.equal(f.payload.readUInt16BE(0), expectCode, `${name}: close status`);
    await conn.waitClosed(3000);
  } finally {
    conn.destroy();
  }
  await logMatch(ctx.srv, logRe, from);
  await observersWork();
}

const closeFrame = (code, reason = Buffer.alloc(0)) => {
  const p = Buffer.alloc(2);
  p.writeUInt16BE(code);
  return encodeFrame(0x8, Buffer.concat([p, Buffer.from(reason)]));
};

const FRAME_CASES = [
  {
    name: 'a frame header declaring 1 MiB (over max_ws_frame; body never sent)',
    frames: () => {
      const h = Buffer.from([0x82, 0xff, 0, 0, 0, 0, 0, 0x10, 0, 0, 1, 2, 3, 4]);
      return [h];
    },
    code: 1009,
  },
  { name: 'close status 999 (below the valid range)', frames: () => [closeFrame(999)], code: 1002 },
  { name: 'close status 1005 on the wire', frames: () => [closeFrame(1005)], code: 1002 },
  { name: 'close status 1015 on the wire', frames: () => [closeFrame(1015)], code: 1002 },
  { name: 'close status 5000', frames: () => [closeFrame(5000)], code: 1002 },
  { name: 'a 1-byte close payload', frames: () => [encodeFrame(0x8, Buffer.from([3]))], code: 1002 },
  { name: 'a close reason that is not UTF-8', frames: () => [closeFrame(1000, Buffer.from([0xff, 0xfe]))], code: 1007 },
  { name: 'reserved bits set', frames: () => [encodeFrame(0x2, Buffer.from([1]), { rsv: 4 })], code: 1002 },
  { name: 'reserved opcode 3', frames: () => [encodeFrame(0x3, Buffer.from([1]))], code: 1002 },
  { name: 'a fragmented ping', frames: () => [encodeFrame(0x9, Buffer.from('x'), { fin: false })], code: 1002 },
  { name: 'a continuation frame without a message', frames: () => [encodeFrame(0x0, Buffer.from('x'))], code: 1002 },
  { name: 'a 126-byte ping', frames: () => [encodeFrame(0x9, Buffer.alloc(126))], code: 1002 },
];

for (const fc of FRAME_CASES) {
  ctx.test(`ws: ${fc.name} closes only that connection`, async () => {
    await expectWsClose(fc.name, fc.frames(), fc.code, /ws \S+ session \d+: .+; closing/);
  });
}

ctx.test('ws: an HTTP head over 8 KiB is answered 431 and closed', async () => {
  const { host, port, path } = ctx.addr('ws');
  const from = ctx.srv.stderr.length;
  const conn = await RawConn.open(host, port);
  try {
    conn.write(upgradeRequest(path, `${host}:${port}`, wsKey(), `X-Pad: ${'a'.repeat(9000)}\r\n`));
    const res = await conn.waitHttpHead(3000);
    assert.equal(res.status, 431, res.head);
    await conn.waitClosed(3000);
  } finally {
    conn.destroy();
  }
  await logMatch(ctx.srv, /ws \S+: .*(too big|too large|over).*; closing/i, from);
  await observersWork();
});

ctx.sigtermTest('SIGTERM: exit code 0', { before: observersWork, leaks: true });

// ---- max_conns: its own server, so that other tests' connections don't count ----

test('max_conns: connections beyond it are refused at once; the others are unaffected', { timeout: 60000 }, async () => {
  const MAX = 4;
  const srv = await startServer(fixture('hardening.lua'), [], { env: { NH_MAX_CONNS: String(MAX) } });
  const clients = [];
  try {
    for (let i = 0; i < MAX; i++) {
      const tr = TRANSPORTS[i % 2];
      const a = tr === 'tcp' ? srv.tcp : srv.ws;
      clients.push(await connect({ transport: tr, host: a.host, port: a.port, path: a.path }));
    }
    const from = srv.stderr.length;
    for (const tr of TRANSPORTS) {
      const a = tr === 'tcp' ? srv.tcp : srv.ws;
      const t0 = Date.now();
      await assert.rejects(connect({ transport: tr, host: a.host, port: a.port, path: a.path, connectTimeoutMs: 3000 * SLOW, handshakeTimeoutMs: 3000 * SLOW }),
        (e) => !/timed out/.test(e.message) || assert.fail(`${tr}: the refused connection was not closed: ${e.message}`));
      assert.ok(Date.now() - t0 < 2500 * SLOW, `${tr}: refused within ${Date.now() - t0} ms`);
    }
    await logMatch(srv, /\d+ connections \(max_conns\); refused \d+ new one\(s\)/, from);
    // A burst of refused connections is logged once, not once per connection.
    const burst = await Promise.all(Array.from({ length: 40 }, () => RawConn.open(srv.tcp.host, srv.tcp.port)));
    await Promise.all(burst.map((c) => c.waitClosed(3000)));
    for (const c of burst) c.destroy();
    const lines = srv.stderr.slice(from).match(/\(max_conns\); refused/g) || [];
    assert.ok(lines.length <= 3, `${lines.length} log lines for 42 refused connections`);
    for (const [i, c] of clients.entries()) {
      const r = await c.request('Bench.ping', { i });
      assert.deepEqual(r.body, { i }, `existing client ${i} still works`);
    }
    // A slot frees up: the next connection is accepted.
    await clients.pop().close();
    const deadline = Date.now() + 3000;
    let extra = null;
    while (!extra) {
      try {
        extra = await connect({ transport: 'tcp', host: srv.tcp.host, port: srv.tcp.port });
      } catch (e) {
        if (Date.now() > deadline) throw e;
        await sleep(50);
      }
    }
    assert.deepEqual((await extra.request('Bench.ping', { x: 1 })).body, { x: 1 });
    clients.push(extra);
    const res = await srv.stop(10000);
    assert.equal(res.code, 0);
  } finally {
    await srv.kill();
  }
});
