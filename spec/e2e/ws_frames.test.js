'use strict';
// WebSocket frames as they come off the wire, against the real nano-host: a frame split across
// reads, a fragmented message with a ping between its fragments, and messages after the
// connection has been idle. Between frames an idle connection keeps no WebSocket state
// (transport_ws.c gives it back and takes one again with the next bytes): whatever is in
// progress across reads must survive that, and what comes after a pause must too.
// Run by hand: NANO_HOST=build/nano-host node spec/e2e/ws_frames.test.js

const assert = require('node:assert/strict');
const { setup, sleep } = require('./lib/harness');
const { packet, PKG, MSG, Protocol } = require('./lib/client');
const { rawUpgrade, encodeFrame } = require('./lib/rawws');

const { Message } = Protocol;
const ctx = setup({ script: 'hardening.lua' });

// A raw WebSocket connection through the upgrade and pomelo's handshake.
async function session() {
  const { host, port, path } = ctx.addr('ws');
  const { conn, res } = await rawUpgrade(host, port, path);
  assert.equal(res.status, 101, res.head);
  conn.write(encodeFrame(0x2, packet(PKG.HANDSHAKE, Buffer.from('{"sys":{"type":"raw","version":"0.0.1"}}'))));
  const hs = await conn.waitFrame(3000);
  assert.equal(hs.payload[0], PKG.HANDSHAKE);
  conn.write(encodeFrame(0x2, packet(PKG.HANDSHAKE_ACK, Buffer.alloc(0))));
  return conn;
}

// Runs fn(conn) on a fresh session; the socket is destroyed whatever happens.
async function withSession(fn) {
  const conn = await session();
  try {
    await fn(conn);
  } finally {
    conn.destroy();
  }
}

const request = (id, n) => packet(PKG.DATA, Message.encode(id, MSG.REQUEST, 0, 'Bench.ping', Protocol.strencode(JSON.stringify({ n }))));

// The next data packet's response (heartbeats skipped): [id, body].
async function response(conn) {
  for (;;) {
    const f = await conn.waitFrame(3000);
    assert.equal(f.opcode, 0x2, `expected a binary frame, got opcode ${f.opcode}`);
    if (f.payload[0] !== PKG.DATA) continue;
    const m = Message.decode(f.payload.subarray(4));
    return [m.id, JSON.parse(Protocol.strdecode(m.body))];
  }
}

ctx.test('ws: a frame split across reads, inside its header and inside its payload, is read whole', () =>
  withSession(async (conn) => {
    const frame = encodeFrame(0x2, request(1, 1));
    conn.write(frame.subarray(0, 1));
    await sleep(30);
    conn.write(frame.subarray(1, 9));
    await sleep(30);
    conn.write(frame.subarray(9));
    assert.deepEqual(await response(conn), [1, { n: 1 }]);
  }));

ctx.test('ws: a message in fragments over several reads, a ping between them, is read whole', () =>
  withSession(async (conn) => {
    const p = request(2, 2);
    conn.write(encodeFrame(0x2, p.subarray(0, 5), { fin: false }));
    await sleep(30);
    conn.write(encodeFrame(0x9, Buffer.from('hi')));
    const pong = await conn.waitFrame(3000);
    assert.equal(pong.opcode, 0xa);
    assert.equal(pong.payload.toString(), 'hi');
    await sleep(30);
    conn.write(encodeFrame(0x0, p.subarray(5), { fin: true }));
    assert.deepEqual(await response(conn), [2, { n: 2 }]);
  }));

ctx.test('ws: after idle pauses, messages and a close still work', () =>
  withSession(async (conn) => {
    for (let i = 3; i <= 5; i++) {
      await sleep(50); // each message on a connection that went idle
      conn.write(encodeFrame(0x2, request(i, i)));
      assert.deepEqual(await response(conn), [i, { n: i }]);
    }
    // two messages in one read, the second split into the next
    const a = encodeFrame(0x2, request(6, 6));
    const b = encodeFrame(0x2, request(7, 7));
    conn.write(Buffer.concat([a, b.subarray(0, 4)]));
    await sleep(30);
    conn.write(b.subarray(4));
    assert.deepEqual(await response(conn), [6, { n: 6 }]);
    assert.deepEqual(await response(conn), [7, { n: 7 }]);
    await sleep(50);
    const code = Buffer.alloc(2);
    code.writeUInt16BE(1000);
    conn.write(encodeFrame(0x8, code));
    const close = await conn.waitFrame(3000);
    assert.equal(close.opcode, 0x8);
    assert.equal(close.payload.readUInt16BE(0), 1000);
    await conn.waitClosed(3000);
  }));
