'use strict';
// Malformed input and WebSocket edge cases. Each bad connection must be closed alone:
// observer clients on both transports stay connected on the same server and keep working.
// Run by hand: NANO_HOST=build/nano-host node spec/e2e/limits.test.js

const assert = require('node:assert/strict');
const { setup, TRANSPORTS } = require('./lib/harness');
const { packet, PKG, MSG, Protocol } = require('./lib/client');
const { RawConn, rawUpgrade, upgradeRequest, encodeFrame, parseFrame, acceptFor, wsKey, hex } = require('./lib/rawws');

const { Message } = Protocol;
const ctx = setup();
const observers = ctx.observers({ timeoutMs: 2000 });
const observersWork = observers.work;

const ascii = (s) => [...Buffer.from(s)];
const pingRequest = (id = 1) => packet(PKG.DATA, Message.encode(id, MSG.REQUEST, 0, 'Bench.ping', Protocol.strencode('{}')));

const BAD = [
  { name: 'data packet before the handshake ack', ack: false, bytes: () => pingRequest() },
  { name: 'data packet before any handshake', handshake: false, bytes: () => pingRequest() },
  { name: 'header declaring a 1 MiB body (body never sent)', bytes: () => Buffer.from([0x04, 0x10, 0x00, 0x00]) },
  {
    name: 'a 70,000-byte packet sent in full (over the 64 KiB limit)',
    bytes: () => packet(PKG.DATA, Buffer.concat([Buffer.from([0x00, 0x01, 0x0a]), Buffer.from('Bench.ping'), Buffer.from(JSON.stringify({ s: 'x'.repeat(69980) }))])),
  },
  { name: 'invalid packet type 9', bytes: () => Buffer.from([0x09, 0x00, 0x00, 0x00]) },
  { name: 'invalid packet type 0', bytes: () => Buffer.from([0x00, 0x00, 0x00, 0x00]) },
  { name: 'route length past the end of the message', bytes: () => packet(PKG.DATA, [0x00, 0x01, 0x0a, ...ascii('Be')]) },
  { name: 'compressed route code cut short', bytes: () => packet(PKG.DATA, [0x01, 0x01, 0x00]) },
  { name: 'message type 5', bytes: () => packet(PKG.DATA, [0x0a, 0x01, 0x0a, ...ascii('Bench.ping{}')]) },
  {
    name: 'a 12-byte varint id',
    bytes: () => packet(PKG.DATA, [0x00, ...Array(11).fill(0x81), 0x01, 0x0a, ...ascii('Bench.ping{}')]),
  },
  { name: 'varint id running past the message', bytes: () => packet(PKG.DATA, [0x00, 0x81, 0x81]) },
  { name: 'empty data packet (no flag byte)', bytes: () => packet(PKG.DATA) },
];

ctx.test('observers connect on both transports', async () => {
  await observers.connect();
  await observersWork();
});

for (const tr of TRANSPORTS) {
  for (const bad of BAD) {
    ctx.test(`${tr}: ${bad.name} closes only that connection`, async () => {
      const c = await ctx.connect(tr, { handshake: bad.handshake === false ? false : undefined, ack: bad.ack });
      const before = c.packets.length;
      const logFrom = ctx.srv.stderr.length;
      const bytes = bad.bytes();
      c.rawSend(bytes);
      await c.waitClose(2000).catch((e) => {
        throw new Error(`server did not close after ${hex(bytes)}: ${e.message}`);
      });
      const data = c.packets.slice(before).filter((p) => p.type === PKG.DATA);
      assert.deepEqual(data.map((p) => p.raw.toString('hex')), [], 'no data packet (no response) for bad input');
      // ... and the server says why, in one log line (stderr may arrive after the close)
      const logRe = new RegExp(`${tr} \\S+ session \\d+: .+; closing`);
      for (let i = 0; i < 100 && !logRe.test(ctx.srv.stderr.slice(logFrom)); i++) await new Promise((r) => setTimeout(r, 20));
      assert.match(ctx.srv.stderr.slice(logFrom), logRe, 'a log line names the offending connection and why');
      await observersWork();
    });
  }
}

// ---- WebSocket specifics, on raw sockets ----

const wsAddr = () => ctx.addr('ws');

ctx.test('ws: GET on a wrong path is answered with HTTP 404', async () => {
  const { host, port } = wsAddr();
  const conn = await RawConn.open(host, port);
  try {
    conn.write(upgradeRequest('/wrong', `${host}:${port}`, wsKey()));
    const res = await conn.waitHttpHead(2000);
    assert.equal(res.status, 404, res.head);
  } finally {
    conn.destroy();
  }
  await observersWork();
});

ctx.test('ws: plain GET without Upgrade on the endpoint path is answered with HTTP 400', async () => {
  const { host, port, path } = wsAddr();
  const conn = await RawConn.open(host, port);
  try {
    conn.write(`GET ${path} HTTP/1.1\r\nHost: ${host}:${port}\r\nAccept: */*\r\n\r\n`);
    const res = await conn.waitHttpHead(2000);
    assert.equal(res.status, 400, res.head);
  } finally {
    conn.destroy();
  }
  await observersWork();
});

ctx.test('ws: a query string on the endpoint path and browser-style headers are accepted', async () => {
  const c = await ctx.connect('ws', { path: `${wsAddr().path}?token=abc&v=1` });
  await ctx.ping(c, 1);
  await c.close();
  // Firefox sends "Connection: keep-alive, Upgrade"; header names and values vary in case.
  const { host, port, path } = wsAddr();
  const conn = await RawConn.open(host, port);
  try {
    const key = wsKey();
    conn.write(
      `GET ${path} HTTP/1.1\r\nHost: ${host}:${port}\r\nUser-Agent: e2e\r\nupgrade: WebSocket\r\n` +
        `CONNECTION: keep-alive, Upgrade\r\nsec-websocket-key: ${key}\r\nSec-WebSocket-Version: 13\r\n` +
        `Origin: http://example.com\r\nSec-WebSocket-Extensions: permessage-deflate; client_max_window_bits\r\n\r\n`,
    );
    const res = await conn.waitHttpHead(2000);
    assert.equal(res.status, 101, res.head);
    assert.equal(res.headers['sec-websocket-accept'], acceptFor(key));
    assert.equal(res.headers['sec-websocket-extensions'], undefined, 'no extension was negotiated');
  } finally {
    conn.destroy();
  }
  await observersWork();
});

ctx.test('ws: upgrade response and binary frames carry the pomelo packets', async () => {
  const { host, port, path } = wsAddr();
  const { conn, res, key } = await rawUpgrade(host, port, path);
  try {
    assert.equal(res.status, 101, res.head);
    assert.equal((res.headers.upgrade || '').toLowerCase(), 'websocket', res.head);
    assert.match(res.headers.connection || '', /upgrade/i, res.head);
    assert.equal(res.headers['sec-websocket-accept'], acceptFor(key), res.head);
    conn.write(encodeFrame(0x2, packet(PKG.HANDSHAKE, Buffer.from(JSON.stringify({ sys: { type: 'js-websocket', version: '0.0.1' }, user: {} })))));
    const f = await conn.waitFrame(2000);
    assert.equal(f.opcode, 0x2, `handshake response in a binary frame, got ${hex(f.header)}`);
    assert.equal(f.masked, false, 'server frames are not masked');
    assert.equal(f.fin, true);
    assert.equal(f.payload[0], PKG.HANDSHAKE, hex(f.payload.subarray(0, 16)));
    assert.equal(JSON.parse(f.payload.subarray(4).toString()).code, 200);
    // ack and a request in one frame; then a request as a fragmented message (binary + continuation)
    conn.write(encodeFrame(0x2, Buffer.concat([packet(PKG.HANDSHAKE_ACK), pingRequest(1)])));
    const r1 = await conn.waitFrame(2000);
    assert.equal(r1.opcode, 0x2);
    assert.equal(r1.payload.toString('hex'), '0400000404017b7d', 'response to id 1 with {}');
    const p2 = pingRequest(2);
    conn.write(encodeFrame(0x2, p2.subarray(0, 5), { fin: false }));
    conn.write(encodeFrame(0x0, p2.subarray(5), { fin: true }));
    const r2 = await conn.waitFrame(2000);
    assert.equal(r2.payload.toString('hex'), '0400000404027b7d', 'response to id 2 (fragmented request)');
  } finally {
    conn.destroy();
  }
  await observersWork();
});

ctx.test('ws: upgrade and first frame in one write; then a frame dribbled one byte at a time', async () => {
  const { host, port, path } = wsAddr();
  const conn = await RawConn.open(host, port);
  try {
    const key = wsKey();
    const hs = packet(PKG.HANDSHAKE, Buffer.from('{"sys":{"type":"js-websocket","version":"0.0.1"},"user":{}}'));
    conn.write(Buffer.concat([Buffer.from(upgradeRequest(path, `${host}:${port}`, key)), encodeFrame(0x2, hs)]));
    const res = await conn.waitHttpHead(2000);
    assert.equal(res.status, 101, res.head);
    const f = await conn.waitFrame(2000);
    assert.equal(f.payload[0], PKG.HANDSHAKE, `handshake response expected, got ${hex(f.payload.subarray(0, 8))}`);
    const frame = encodeFrame(0x2, Buffer.concat([packet(PKG.HANDSHAKE_ACK), pingRequest(7)]));
    for (const b of frame) {
      conn.write(Buffer.from([b]));
      await new Promise((r) => setTimeout(r, 3));
    }
    const r = await conn.waitFrame(2000);
    assert.equal(r.payload.toString('hex'), '0400000404077b7d', 'response to id 7');
  } finally {
    conn.destroy();
  }
  await observersWork();
});

ctx.test('ws: an unmasked client frame closes the connection', async () => {
  const { host, port, path } = wsAddr();
  const { conn, res } = await rawUpgrade(host, port, path);
  try {
    assert.equal(res.status, 101, res.head);
    const hs = packet(PKG.HANDSHAKE, Buffer.from('{"sys":{}}'));
    conn.write(encodeFrame(0x2, hs, { mask: false }));
    await conn.waitClosed(2000);
    // At most a close frame (1002 expected) before the TCP close; never a handshake response.
    const f = parseFrame(conn.data);
    if (f) {
      assert.equal(f.opcode, 0x8, `expected only a close frame, got ${hex(conn.data.subarray(0, 32))}`);
      if (f.payload.length >= 2) assert.equal(f.payload.readUInt16BE(0), 1002, `close code (${hex(f.payload)})`);
    }
  } finally {
    conn.destroy();
  }
  await observersWork();
});

ctx.test('ws: a ping frame is answered with a pong carrying the same payload', async () => {
  const { host, port, path } = wsAddr();
  const { conn, res } = await rawUpgrade(host, port, path);
  try {
    assert.equal(res.status, 101, res.head);
    conn.write(encodeFrame(0x9, Buffer.from('nano-ping')));
    const f = await conn.waitFrame(2000);
    assert.equal(f.opcode, 0xa, `expected pong, got ${hex(f.header)} ${hex(f.payload)}`);
    assert.equal(f.fin, true);
    assert.equal(f.masked, false);
    assert.equal(f.payload.toString(), 'nano-ping');
    // an empty ping too
    conn.write(encodeFrame(0x9));
    const g = await conn.waitFrame(2000);
    assert.equal(g.opcode, 0xa);
    assert.equal(g.payload.length, 0);
  } finally {
    conn.destroy();
  }
  await observersWork();
});

ctx.test('ws: a client close frame gets a close frame back, then the TCP close', async () => {
  const { host, port, path } = wsAddr();
  const { conn, res } = await rawUpgrade(host, port, path);
  try {
    assert.equal(res.status, 101, res.head);
    const payload = Buffer.concat([Buffer.from([0x03, 0xe8]), Buffer.from('bye')]); // 1000 "bye"
    conn.write(encodeFrame(0x8, payload));
    const f = await conn.waitFrame(2000);
    assert.equal(f.opcode, 0x8, `expected a close frame, got ${hex(f.header)}`);
    assert.equal(f.masked, false);
    if (f.payload.length) assert.equal(f.payload.readUInt16BE(0), 1000, `close code (${hex(f.payload)})`);
    await conn.waitClosed(2000);
  } finally {
    conn.destroy();
  }
  await observersWork();
});

ctx.test('ws: a close frame without a status gets a close frame back (never status 1005 on the wire)', async () => {
  const { host, port, path } = wsAddr();
  const { conn, res } = await rawUpgrade(host, port, path);
  try {
    assert.equal(res.status, 101, res.head);
    conn.write(encodeFrame(0x8));
    const f = await conn.waitFrame(2000);
    assert.equal(f.opcode, 0x8, `expected a close frame, got ${hex(f.header)}`);
    assert.notEqual(f.payload.length, 1, 'a close payload of 1 byte is invalid');
    if (f.payload.length >= 2) {
      const code = f.payload.readUInt16BE(0);
      assert.ok(![1005, 1006, 1015].includes(code), `close code ${code} must not be sent`);
    }
    await conn.waitClosed(2000);
  } finally {
    conn.destroy();
  }
  await observersWork();
});

ctx.sigtermTest('SIGTERM with observers connected: exit code 0', {
  before: observersWork,
  after: () => observers.waitClose(2000),
});
