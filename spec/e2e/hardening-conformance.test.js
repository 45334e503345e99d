'use strict';
// Issue 19, items 10-14: logs a client cannot forge, WebSocket and HTTP conformance (text frames,
// close statuses of packet-level errors, Host and Sec-WebSocket-Version on the upgrade), and a
// second stop signal that ends the process while Lua holds the loop thread.
// Run by hand: NANO_HOST=build/nano-host node spec/e2e/hardening-conformance.test.js

const assert = require('node:assert/strict');
const { test } = require('node:test');
const { setup, sleep, logMatch } = require('./lib/harness');
const { startServer, fixture } = require('./lib/server');
const { packet, varint, PKG } = require('./lib/client');
const { RawConn, rawUpgrade, encodeFrame, wsKey, hex } = require('./lib/rawws');

const ctx = setup({ script: 'conformance.lua' });


// ---- raw sessions: the pomelo handshake over a raw WebSocket or TCP connection ----

const HANDSHAKE = packet(PKG.HANDSHAKE, Buffer.from('{"sys":{"type":"raw","version":"0"},"user":{}}'));

// A raw WebSocket connection past the pomelo handshake and ack.
async function wsSession() {
  const { host, port, path } = ctx.addr('ws');
  const { conn, res } = await rawUpgrade(host, port, path);
  assert.equal(res.status, 101, res.head);
  conn.write(encodeFrame(0x2, HANDSHAKE));
  const f = await conn.waitFrame(3000);
  assert.equal(f.payload[0], PKG.HANDSHAKE, `handshake response expected, got ${hex(f.payload.subarray(0, 8))}`);
  conn.write(encodeFrame(0x2, packet(PKG.HANDSHAKE_ACK)));
  return conn;
}

// A request message with any route bytes (pomelo-protocol would encode the route as UTF-8).
function rawRequest(id, routeBytes, payload = '{}') {
  const route = Buffer.from(routeBytes, 'latin1');
  const body = Buffer.concat([Buffer.from([0x00]), varint(id), Buffer.from([route.length]), route, Buffer.from(payload)]);
  return packet(PKG.DATA, body);
}

// The next close frame's status (data frames before it are skipped); then the TCP close.
async function closeStatus(conn) {
  for (;;) {
    const f = await conn.waitFrame(3000);
    if (f.opcode !== 0x8) continue;
    assert.ok(f.payload.length >= 2, `the close frame carries a status (${hex(f.payload)})`);
    await conn.waitClosed(3000);
    return f.payload.readUInt16BE(0);
  }
}

// ---- 10: client-chosen bytes in the log ----

const FORGED = '2026-01-01T00:00:00.000Z error FORGED';

ctx.test('a route with a newline, ESC and NUL cannot forge a log entry or drive the terminal', async () => {
  const srv = ctx.srv;
  const from = srv.stderr.length;
  const conn = await wsSession();
  try {
    conn.write(encodeFrame(0x2, rawRequest(1, `No.such\n${FORGED}\x1b[2J\x1b]0;pwned\x07\x00tail`)));
    const f = await conn.waitFrame(3000); // the error response: the route was looked up whole
    assert.equal(f.payload[0], PKG.DATA, hex(f.payload.subarray(0, 8)));
  } finally {
    conn.destroy();
  }
  const m = await logMatch(srv, /handler not found: No\.such.*/, from);
  const log = srv.stderr.slice(from);
  for (const line of log.split('\n')) {
    assert.ok(!line.startsWith('2026-01-01T'), `a client wrote a log entry of its own: ${JSON.stringify(line)}`);
  }
  assert.ok(!log.includes('\x1b'), 'an ESC byte reached the log');
  assert.ok(!log.includes('\x07') && !log.includes('\x00'), 'a control byte reached the log');
  assert.match(log, /\\e\[2J\\e\]0;pwned\\x07\\0tail/, `the route is logged whole, escaped: ${JSON.stringify(m[0])}`);
  await ctx.ping(await ctx.connect('tcp'), 1);
});

ctx.test('tcp: the same route over TCP is escaped too', async () => {
  const srv = ctx.srv;
  const from = srv.stderr.length;
  const { host, port } = ctx.addr('tcp');
  const conn = await RawConn.open(host, port);
  try {
    conn.write(HANDSHAKE);
    await conn.waitFor(() => (conn.data.length >= 4 ? true : undefined), 3000, 'the handshake response');
    conn.write(Buffer.concat([packet(PKG.HANDSHAKE_ACK), rawRequest(1, `X.y\r\n${FORGED}\x1b[31m`)]));
    await logMatch(srv, /handler not found: X\.y/, from);
  } finally {
    conn.destroy();
  }
  const log = srv.stderr.slice(from);
  assert.ok(!log.split('\n').some((l) => l.startsWith('2026-01-01T')), log);
  assert.ok(!log.includes('\x1b') && !log.includes('\r'), JSON.stringify(log));
});

// ---- 11: text frames ----

ctx.test('ws: a text frame is refused with close 1003 (the protocol is binary), with a log line', async () => {
  const from = ctx.srv.stderr.length;
  const conn = await wsSession();
  try {
    // invalid UTF-8 in a text frame: never processed
    conn.write(encodeFrame(0x1, Buffer.from([0xff, 0xfe, 0xfd])));
    assert.equal(await closeStatus(conn), 1003);
  } finally {
    conn.destroy();
  }
  await logMatch(ctx.srv, /ws \S+ session \d+: text frame \(the protocol is binary\); closing/, from);
});

// ---- 12: packet-level protocol errors close with a status that says so ----

const PACKET_CASES = [
  { name: 'a response message sent by the client', bytes: () => packet(PKG.DATA, Buffer.from([0x04, 0x01, 0x7b, 0x7d])), code: 1002 },
  { name: 'a kick packet sent by the client', bytes: () => packet(PKG.KICK, Buffer.from('{}')), code: 1002 },
  { name: 'an unknown packet type', bytes: () => Buffer.from([0x09, 0, 0, 0]), code: 1002 },
  { name: 'a second handshake', bytes: () => HANDSHAKE, code: 1002 },
  { name: 'a packet over max_packet (header declares 16 MiB)', bytes: () => Buffer.from([PKG.DATA, 0xff, 0xff, 0xff]), code: 1009 },
  { name: 'a request id over 2^53 (allowed by the protocol, refused here)', bytes: () => rawRequest(2n ** 53n + 1n, 'Bench.ping'), code: 1008 },
];

for (const pc of PACKET_CASES) {
  ctx.test(`ws: ${pc.name} closes with ${pc.code}, not 1000`, async () => {
    const from = ctx.srv.stderr.length;
    const conn = await wsSession();
    try {
      conn.write(encodeFrame(0x2, pc.bytes()));
      assert.equal(await closeStatus(conn), pc.code);
    } finally {
      conn.destroy();
    }
    await logMatch(ctx.srv, /ws \S+ session \d+: .+; closing/, from);
  });
}

// ---- 13: the upgrade request ----

// The reply to an upgrade request; a refusal must also close the connection.
async function upgradeReply(lines) {
  const { host, port } = ctx.addr('ws');
  const conn = await RawConn.open(host, port);
  try {
    conn.write(`${lines.join('\r\n')}\r\n\r\n`);
    const res = await conn.waitHttpHead(3000);
    if (res.status !== 101) await conn.waitClosed(3000);
    return res;
  } finally {
    conn.destroy();
  }
}

function upgradeLines({ host = true, version = '13' } = {}) {
  const { host: h, port, path } = ctx.addr('ws');
  return [
    `GET ${path} HTTP/1.1`,
    ...(host ? [`Host: ${h}:${port}`] : []),
    'Upgrade: websocket',
    'Connection: Upgrade',
    `Sec-WebSocket-Key: ${wsKey()}`,
    ...(version ? [`Sec-WebSocket-Version: ${version}`] : []),
  ];
}

ctx.test('ws: an upgrade without Host is refused with 400 (RFC 7230 5.4), with a log line', async () => {
  const from = ctx.srv.stderr.length;
  const res = await upgradeReply(upgradeLines({ host: false }));
  assert.equal(res.status, 400, res.head);
  await logMatch(ctx.srv, /ws \S+: upgrade of '\/nano' refused: no Host header/, from);
  // and with two
  const two = upgradeLines();
  two.splice(2, 0, 'Host: evil.example');
  assert.equal((await upgradeReply(two)).status, 400);
  // the same request with its Host is upgraded
  assert.equal((await upgradeReply(upgradeLines())).status, 101);
});

ctx.test('ws: an unsupported Sec-WebSocket-Version is refused with 400 naming version 13 (RFC 6455 4.2.2)', async () => {
  for (const version of ['8', '14', null]) {
    const res = await upgradeReply(upgradeLines({ version }));
    assert.equal(res.status, 400, `version ${version}: ${res.head}`);
    assert.equal(res.headers['sec-websocket-version'], '13', `version ${version}: ${res.head}`);
  }
  // other refusals do not carry it
  const res = await upgradeReply(upgradeLines({ host: false }));
  assert.equal(res.headers['sec-websocket-version'], undefined, res.head);
});

ctx.sigtermTest('SIGTERM: exit code 0');

// ---- 14: a second stop signal while Lua holds the loop thread ----

// Each case runs its own server. The stall lasts 60 s and the wait for the exit 20 s, so a
// second signal that is not acted on fails the test (never a timing of how fast it is).
async function secondSignal(name, stall, signals, expectCode) {
  const srv = await startServer(fixture('conformance.lua'));
  try {
    const from = srv.stderr.length;
    await stall(srv, from);
    srv.proc.kill(signals[0]);
    // signals of two kinds: never merged into one pending signal, whatever the timing
    srv.proc.kill(signals[1]);
    const exited = await srv.waitExit(20000);
    assert.ok(exited, `${name}: nano-host did not exit after ${signals.join(' + ')}\n${srv.logTail()}`);
    assert.ok(expectCode.includes(srv.exitCode), `${name}: exit status ${srv.exitCode} (signal ${srv.exitSignal})\n${srv.logTail()}`);
    assert.match(srv.stderr, /second stop signal \(SIGINT\/SIGTERM\): exiting now/);
  } finally {
    await srv.kill();
  }
}

// Both signals are sent at once, so which of them is taken second (and names the status) is the
// kernel's choice: 130 (SIGINT) or 143 (SIGTERM).
test('a second stop signal ends a JIT-compiled endless handler at once (SIGTERM + SIGINT: status 128 + signal)', { timeout: 60000 }, async () => {
  await secondSignal(
    'handler',
    async (srv, from) => {
      const c = await RawConn.open(srv.tcp.host, srv.tcp.port);
      c.write(HANDSHAKE);
      await c.waitFor(() => (c.data.length >= 4 ? true : undefined), 3000, 'the handshake response');
      c.write(Buffer.concat([packet(PKG.HANDSHAKE_ACK), rawRequest(1, 'Stall.spin')]));
      await logMatch(srv, /Stall\.spin: spinning/, from);
    },
    ['SIGTERM', 'SIGINT'],
    [130, 143],
  );
});

test('a second stop signal ends a stalled before_shutdown hook at once (SIGINT + SIGTERM: status 143)', { timeout: 60000 }, async () => {
  const srv = await startServer(fixture('conformance.lua'));
  try {
    const from = srv.stderr.length;
    const c = await RawConn.open(srv.tcp.host, srv.tcp.port);
    c.write(HANDSHAKE);
    await c.waitFor(() => (c.data.length >= 4 ? true : undefined), 3000, 'the handshake response');
    c.write(Buffer.concat([packet(PKG.HANDSHAKE_ACK), rawRequest(1, 'Stall.arm')]));
    await c.waitFor(() => (c.data.indexOf('armed') >= 0 ? true : undefined), 3000, 'Stall.arm answered');
    srv.proc.kill('SIGINT');
    await logMatch(srv, /before_shutdown: stalling/, from); // the hook holds the loop thread now
    srv.proc.kill('SIGTERM');
    const exited = await srv.waitExit(20000);
    assert.ok(exited, `nano-host did not exit after the second signal\n${srv.logTail()}`);
    assert.equal(srv.exitCode, 143, `exit status (signal ${srv.exitSignal})\n${srv.logTail()}`);
    assert.match(srv.stderr, /second stop signal \(SIGINT\/SIGTERM\): exiting now/);
  } finally {
    await srv.kill();
  }
});

test('one stop signal still shuts down gracefully (status 0)', { timeout: 60000 }, async () => {
  const srv = await startServer(fixture('conformance.lua'));
  try {
    const res = await srv.stop(10000);
    assert.equal(res.code, 0);
  } finally {
    await srv.kill();
  }
});

