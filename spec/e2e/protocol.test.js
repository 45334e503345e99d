'use strict';
// The pomelo/nano protocol end to end, over raw TCP and WebSocket: handshake, requests with
// string and compressed routes, notify/push, sessions, error responses, large payloads,
// pipelining, packet splitting, kick, and a clean exit on SIGTERM with clients connected.
// Run by hand: NANO_HOST=build/nano-host node spec/e2e/protocol.test.js

const assert = require('node:assert/strict');
const { setup, TRANSPORTS, sleep } = require('./lib/harness');
const { packet, encodeRequest, varint, readVarint, closeAll, PKG, MSG, FLAG, Protocol } = require('./lib/client');

const { Message } = Protocol;
const ctx = setup();

const hexBytes = (s) => Buffer.from(s.replace(/\s+/g, ''), 'hex');

// Our client's bytes against PROTOCOL.md's examples (no server needed).
ctx.test('client codec matches the byte examples in PROTOCOL.md', () => {
  const req = packet(PKG.DATA, Message.encode(1, MSG.REQUEST, 0, 'Bench.ping', Protocol.strencode('{"n":1}')));
  assert.deepEqual(req, hexBytes('04 00 00 14 00 01 0A 42 65 6E 63 68 2E 70 69 6E 67 7B 22 6E 22 3A 31 7D'));
  const creq = packet(PKG.DATA, Message.encode(1, MSG.REQUEST, 1, 1, Protocol.strencode('{"n":1}')));
  assert.deepEqual(creq, hexBytes('04 00 00 0B 01 01 00 01 7B 22 6E 22 3A 31 7D'));
  assert.deepEqual(packet(PKG.HANDSHAKE_ACK), hexBytes('02 00 00 00'));
  // the client's own request encoder (ids of any size)
  assert.deepEqual(packet(PKG.DATA, encodeRequest(1, 'Bench.ping', Buffer.from('{"n":1}'), false)), req);
  assert.deepEqual(packet(PKG.DATA, encodeRequest(1, 1, Buffer.from('{"n":1}'), true)), creq);
  assert.deepEqual(varint(300), hexBytes('AC 02'));
  assert.deepEqual(varint(2 ** 32 - 1), hexBytes('FF FF FF FF 0F'));
  assert.deepEqual(readVarint(hexBytes('04 AC 02'), 1), { value: 300, size: 2 });
  assert.deepEqual(readVarint(varint('18446744073709551615'), 0), { value: 18446744073709551615n, size: 10 });
  const chunks = [];
  const sp = new (require('./lib/client').PacketSplitter)((p) => chunks.push(p));
  const stream = Buffer.concat([hexBytes('03 00 00 00 04 00 00 05 04 AC 02 7B 7D'), hexBytes('05 00 00 00')]);
  for (const b of stream) sp.push(Buffer.from([b]));
  assert.deepEqual(chunks, [hexBytes('03 00 00 00'), hexBytes('04 00 00 05 04 AC 02 7B 7D'), hexBytes('05 00 00 00')]);
});

for (const tr of TRANSPORTS) {
  ctx.test(`${tr}: handshake response (code 200, heartbeat, dict)`, async () => {
    const c = await ctx.connect(tr, { handshake: false });
    const res = await c.handshake();
    assert.equal(c.packets[0].type, PKG.HANDSHAKE, 'first packet from the server is the handshake response');
    assert.equal(res.code, 200, JSON.stringify(res));
    assert.equal(typeof res.sys, 'object', JSON.stringify(res));
    assert.equal(res.sys.heartbeat, 30, `sys.heartbeat: ${JSON.stringify(res)}`);
    assert.equal(typeof res.sys.dict, 'object', `sys.dict missing: ${JSON.stringify(res)}`);
    assert.equal(res.sys.dict['Bench.ping'], 1, JSON.stringify(res.sys.dict));
    assert.equal(res.sys.dict.onNote, 2, JSON.stringify(res.sys.dict));
    await ctx.ping(c, 1);
    await c.close();
  });

  ctx.test(`${tr}: handshake accepts minimal and extended client bodies`, async () => {
    const bodies = [
      {},
      { sys: {} },
      { sys: { type: 'js-websocket', version: '0.0.1', rsa: {}, protoVersion: 'x' }, user: { any: 'thing' } },
    ];
    for (const body of bodies) {
      const c = await ctx.connect(tr, { handshake: body });
      assert.equal(c.handshakeResponse.code, 200, `handshake body ${JSON.stringify(body)}`);
      await ctx.ping(c, 7);
      await c.close();
    }
  });

  ctx.test(`${tr}: request/response with a string route`, async () => {
    const c = await ctx.connect(tr);
    const r = await c.request('Bench.ping', { n: 1, s: 'héllo ✓', a: [1, 2, { b: null }] });
    assert.equal(r.type, MSG.RESPONSE);
    assert.equal(r.error, false, r.text);
    assert.equal(r.flag & FLAG.ROUTE_COMPRESSED, 0, 'a response carries no route');
    assert.equal(r.id, 1);
    assert.deepEqual(r.body, { n: 1, s: 'héllo ✓', a: [1, 2, { b: null }] });
    // PROTOCOL.md: response to id 300 with {} is 04 AC 02 7B 7D.
    const r300 = await c.request('Bench.ping', {}, { id: 300 });
    assert.equal(r300.raw.toString('hex'), '04ac027b7d', `response bytes for id 300`);
    await c.close();
  });

  ctx.test(`${tr}: request/response with the compressed route (code 1)`, async () => {
    const c = await ctx.connect(tr);
    const r = await c.request('Bench.ping', { n: 2 }, { compress: true });
    assert.equal(r.type, MSG.RESPONSE);
    assert.equal(r.error, false, r.text);
    assert.deepEqual(r.body, { n: 2 });
    // both forms, interleaved, on one connection
    for (let i = 0; i < 6; i++) await ctx.ping(c, i, { compress: i % 2 === 0 });
    await c.close();
  });

  ctx.test(`${tr}: request ids are echoed exactly (1 to 5 varint bytes)`, async () => {
    const c = await ctx.connect(tr);
    for (const id of [127, 128, 300, 16383, 16384, 2 ** 31 - 1, 2 ** 31, 2 ** 32 - 1]) {
      const r = await c.request('Bench.ping', {}, { id });
      assert.equal(r.id, id);
      assert.deepEqual(r.raw, Buffer.concat([Buffer.from([0x04]), varint(id), Buffer.from('{}')]), `response bytes for id ${id}`);
    }
    await c.close();
  });

  ctx.test(`${tr}: ids above 2^53 are echoed exactly or refused (never a different id)`, async () => {
    const c = await ctx.connect(tr);
    for (const id of [2n ** 53n + 1n, 2n ** 63n - 1n]) {
      const from = c.packets.length;
      c.sendPacket(PKG.DATA, encodeRequest(id, 'Bench.ping', Buffer.from('{}'), false));
      const got = await c.waitFor(
        () => (c.closed ? null : c.packets.slice(from).find((p) => p.type === PKG.DATA)),
        2000,
        `a response to id ${id}`,
      ).catch(() => undefined);
      if (got === null) return; // refused: the connection was closed, which is acceptable
      assert.ok(got, `id ${id}: no response and the connection is still open (request left hanging)`);
      const echoed = readVarint(got.body, 1).value;
      assert.equal(BigInt(echoed), id, `id ${id} (${varint(id).toString('hex')}) answered as id ${echoed}: ${got.raw.toString('hex')}`);
    }
    await c.close();
  });

  ctx.test(`${tr}: the nano cluster route form server.Component.handler is accepted`, async () => {
    const c = await ctx.connect(tr);
    const r = await c.request('game.Bench.ping', { cluster: true });
    assert.equal(r.error, false, r.text);
    assert.deepEqual(r.body, { cluster: true });
    await c.close();
  });

  ctx.test(`${tr}: client heartbeats are not answered at once`, async () => {
    const c = await ctx.connect(tr);
    const from = c.packets.length;
    for (let i = 0; i < 20; i++) c.sendHeartbeat();
    // The server handles a connection's packets in order and its replies leave in order, so a
    // bounced heartbeat would arrive before the response to this ping (no waiting needed).
    await ctx.ping(c, 1);
    assert.equal(c.heartbeatsReceived.length, 0, 'the server bounced heartbeats back');
    assert.deepEqual(c.packets.slice(from).map((p) => p.type), [PKG.DATA], 'only the ping\'s response came back');
    await c.close();
  });

  ctx.test(`${tr}: notifies to unknown or failing handlers get nothing back and keep the connection`, async () => {
    const c = await ctx.connect(tr);
    c.notify('Bench.nope', {});
    c.notify('Nope.x', {});
    c.notify('Bench.boom', {});
    c.notify('Bench.deny', {});
    c.notify('Bench.ping', { x: 1 });
    await ctx.ping(c, 2); // replies come in order: anything for the notifies would be here by now
    assert.deepEqual(c.responses.map((r) => r.text), ['{"n":2}'], 'only the ping is answered');
    assert.equal(c.pushes.length, 0);
    await c.close();
  });

  ctx.test(`${tr}: notify is answered by a compressed onNote push`, async () => {
    const c = await ctx.connect(tr);
    const sent = { a: 1, text: 'note ✓', list: [true, false] };
    c.notify('Bench.note', sent);
    const p = await c.waitPush('onNote', 2000);
    assert.equal(p.type, MSG.PUSH);
    assert.equal(p.flag & FLAG.ROUTE_COMPRESSED, FLAG.ROUTE_COMPRESSED, `push flag 0x${p.flag.toString(16)}: route not compressed`);
    assert.equal(p.routeCode, 2);
    assert.equal(p.raw.subarray(0, 3).toString('hex'), '070002', 'push header: flag 07, code 00 02');
    assert.deepEqual(p.body, sent);
    assert.equal(c.responses.length, 0, 'a notify gets no response');
    await ctx.ping(c, 3);
    await c.close();
  });

  ctx.test(`${tr}: whoami binds the uid`, async () => {
    const c = await ctx.connect(tr);
    const r = await c.request('Bench.whoami', { uid: 42 });
    assert.equal(r.error, false, r.text);
    assert.deepEqual(r.body, { uid: 42 });
    await c.close();
  });

  ctx.test(`${tr}: session state persists on one connection, not across connections`, async () => {
    const c1 = await ctx.connect(tr);
    const c2 = await ctx.connect(tr);
    const a = await c1.request('Bench.state', { set: 'v1' });
    assert.equal(a.error, false, a.text);
    assert.equal(a.body.k, 'v1');
    assert.notEqual(a.body.id, undefined, 'state response has the session id');
    const b = await c1.request('Bench.state', {});
    assert.deepEqual(b.body, { k: 'v1', id: a.body.id });
    const other = await c2.request('Bench.state', {});
    assert.equal(other.error, false, other.text);
    assert.ok(other.body.k === undefined || other.body.k === null, `second connection sees k=${JSON.stringify(other.body.k)}`);
    assert.notEqual(other.body.id, a.body.id, 'two connections, two session ids');
    const c = await c1.request('Bench.state', { set: 'v2' });
    assert.equal(c.body.k, 'v2');
    await c1.close();
    await c2.close();
  });

  ctx.test(`${tr}: error responses (404, 500, 403) leave the connection usable`, async () => {
    const c = await ctx.connect(tr);
    const cases = [
      ['Bench.nope', {}, 404],
      ['Nope.ping', {}, 404],
      ['Bench.boom', {}, 500],
      ['Bench.deny', {}, 403, 'not in room'],
      [99, {}, 404], // a compressed route code that is not in the dictionary
    ];
    let n = 0;
    for (const [route, body, code, msg] of cases) {
      const r = await c.request(route, body, { compress: typeof route === 'number' });
      assert.equal(r.type, MSG.RESPONSE, route);
      assert.equal(r.error, true, `${route}: error flag (0x20) not set, flag 0x${r.flag.toString(16)}`);
      assert.equal(r.flag, 0x24, `${route}: flag`);
      assert.equal(typeof r.body, 'object', `${route}: payload ${JSON.stringify(r.text)}`);
      assert.equal(r.body.code, code, `${route}: ${r.text}`);
      assert.equal(typeof r.body.msg, 'string', `${route}: ${r.text}`);
      if (msg) assert.equal(r.body.msg, msg);
      await ctx.ping(c, ++n);
    }
    await c.close();
  });

  ctx.test(`${tr}: s:response answers later; a silent handler sends nothing`, async () => {
    const c = await ctx.connect(tr);
    const r = await c.request('Bench.later', {});
    assert.equal(r.error, false, r.text);
    assert.deepEqual(r.body, { later: true });
    await assert.rejects(c.request('Bench.silent', {}, { timeoutMs: 500 }), (e) => e.code === 'ETIMEDOUT');
    await ctx.ping(c, 5);
    assert.equal(c.unexpected.length, 0, `unexpected messages: ${c.unexpected.map((m) => m.raw.toString('hex'))}`);
    assert.equal(c.closed, false);
    await c.close();
  });

  ctx.test(`${tr}: 60 KB JSON payload round trip`, async () => {
    const c = await ctx.connect(tr);
    let s = '';
    for (let i = 0; s.length < 60000; i++) s += `${i % 10}abcdefghijklmnopqrstuvwxyz-`;
    s = s.slice(0, 60000);
    const r = await c.request('Bench.ping', { s });
    assert.equal(r.error, false, r.text.slice(0, 200));
    assert.equal(r.body.s.length, 60000);
    assert.ok(r.body.s === s, 'payload came back intact');
    const r2 = await c.request('Bench.ping', { s }, { compress: true });
    assert.ok(r2.body.s === s, 'payload came back intact (compressed route)');
    c.notify('Bench.note', { s });
    const p = await c.waitPush('onNote', 3000);
    assert.ok(p.body.s === s, 'a 60 KB push came back intact');
    await ctx.ping(c, 9);
    await c.close();
  });

  ctx.test(`${tr}: 1,000 pipelined requests are answered in order`, async () => {
    const c = await ctx.connect(tr);
    const N = 1000;
    const all = [];
    for (let i = 1; i <= N; i++) all.push(c.request('Bench.ping', { i }, { compress: i % 3 === 0, timeoutMs: 15000 }));
    const res = await Promise.all(all);
    res.forEach((r, k) => {
      assert.equal(r.id, k + 1);
      assert.equal(r.error, false, r.text);
      assert.deepEqual(r.body, { i: k + 1 });
    });
    const order = c.responses.map((r) => r.id);
    assert.deepEqual(order, Array.from({ length: N }, (_, k) => k + 1), 'responses arrive in request order');
    await c.close();
  });

  ctx.test(`${tr}: packets split across and joined within writes/frames`, async () => {
    const c = await ctx.connect(tr);
    const p1 = packet(PKG.DATA, Message.encode(101, MSG.REQUEST, 0, 'Bench.ping', Protocol.strencode('{"j":1}')));
    const p2 = packet(PKG.DATA, Message.encode(102, MSG.REQUEST, 1, 1, Protocol.strencode('{"j":2}')));
    const p3 = packet(PKG.DATA, Message.encode(103, MSG.REQUEST, 0, 'Bench.ping', Protocol.strencode('{"j":3}')));
    // two packets in one write (TCP) / one frame (WS)
    c.rawSend(Buffer.concat([p1, p2]));
    // one packet in three pieces: inside the header, inside the route, inside the payload
    c.rawSend(p3.subarray(0, 2));
    await sleep(30);
    c.rawSend(p3.subarray(2, 9));
    await sleep(30);
    c.rawSend(p3.subarray(9));
    await c.waitFor(() => (c.responses.length >= 3 ? true : undefined), 3000, '3 responses');
    assert.deepEqual(
      c.responses.map((r) => [r.id, r.body]),
      [
        [101, { j: 1 }],
        [102, { j: 2 }],
        [103, { j: 3 }],
      ],
    );
    await ctx.ping(c, 4);
    await c.close();
  });

  ctx.test(`${tr}: kick sends a kick packet (type 5), then closes`, async () => {
    const c = await ctx.connect(tr);
    await ctx.ping(c, 1);
    c.request('Bench.kickme', {}).catch(() => {});
    const info = await c.waitClose(3000);
    const kick = c.packets.findIndex((p) => p.type === PKG.KICK);
    assert.ok(kick >= 0, `no kick packet before the close (${c.describe()})`);
    assert.ok(c.packets[kick].at <= info.at);
    // nano's and pomelo's web clients JSON-parse the kick body in onKick: it must be JSON.
    assert.deepEqual(JSON.parse(Protocol.strdecode(c.packets[kick].body)), {});
    const after = c.packets.slice(kick + 1).map((p) => p.type);
    assert.deepEqual(after, [], 'nothing after the kick packet');
  });
}

ctx.test('100 clients on each transport at once', async () => {
  const clients = await Promise.all(Array.from({ length: 200 }, (_, i) => ctx.connect(TRANSPORTS[i % 2])));
  const res = await Promise.all(clients.map((c, i) => c.request('Bench.state', { set: `c${i}` })));
  res.forEach((r, i) => assert.equal(r.body.k, `c${i}`));
  assert.equal(new Set(res.map((r) => r.body.id)).size, 200, 'distinct session ids');
  const again = await Promise.all(clients.map((c) => c.request('Bench.state', {})));
  again.forEach((r, i) => assert.deepEqual(r.body, res[i].body));
  await closeAll();
});

// Last: SIGTERM with clients on both transports connected → exit code 0, clients closed.
const clients = [];
ctx.sigtermTest('SIGTERM with clients connected: exit code 0, clients disconnected', {
  before: async () => {
    for (const tr of TRANSPORTS) {
      const c = await ctx.connect(tr);
      await ctx.ping(c, 1);
      clients.push(c);
    }
    clients.push(await ctx.connect('tcp', { handshake: false })); // connected, no handshake
  },
  after: async (t, res) => {
    t.diagnostic(`nano-host exited ${res.ms} ms after SIGTERM`);
    for (const c of clients) await c.waitClose(2000);
  },
});
