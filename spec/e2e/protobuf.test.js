'use strict';
// Protobuf payloads end to end, against third-party encoders from npm:
//  - protobufjs: every field kind of spec/fixtures/protobuf/kinds.proto, fixed and randomized
//    messages, byte-exact both ways (protobufjs's bytes -> nano-host decodes and encodes again ->
//    the same bytes, which protobufjs decodes to the same object), and values built in Lua.
//  - pomelo-protobuf: its encoder agrees with protobuf on the subset it writes the standard way
//    (compat.proto); where it does not (int32, repeated scalars) the difference is pinned.
//  - a protobufjs client against examples/pingpong with NANO_PINGPONG_SERIALIZER=protobuf.
// Run by hand: NANO_HOST=build/nano-host node spec/e2e/protobuf.test.js

const { test, before, after } = require('node:test');
const assert = require('node:assert/strict');
const path = require('node:path');
const protobuf = require('protobufjs');
const pomeloProtobuf = require('pomelo-protobuf');
const { startServer, fixture, watchdog } = require('./lib/server');
const { connect, closeAll } = require('./lib/client');

watchdog(115000);
const ROOT = path.join(__dirname, '..', '..');
const PROTO = path.join(ROOT, 'spec', 'fixtures', 'protobuf');

const root = new protobuf.Root();
root.loadSync([path.join(PROTO, 'kinds.proto'), path.join(PROTO, 'compat.proto')], { keepCase: true });
const All = root.lookupType('kinds.All');
const Flat = root.lookupType('kinds.Flat');
const Compat = root.lookupType('compat.Compat');
const pingRoot = new protobuf.Root().loadSync(path.join(ROOT, 'examples', 'pingpong', 'pingpong.proto'), { keepCase: true });
const Ping = pingRoot.lookupType('pingpong.Ping');

const TO_OBJECT = { longs: String, enums: String, bytes: String, defaults: false, oneofs: false };
const servers = {};

before(async () => {
  servers.kinds = await startServer(fixture('protobuf_kinds.lua'));
  servers.pomelo = await startServer(path.join(PROTO, 'pomelo_main.lua'));
  servers.pingpong = await startServer(path.join(ROOT, 'examples', 'pingpong', 'main.lua'), [], {
    env: { NANO_PINGPONG_SERIALIZER: 'protobuf', NANO_PINGPONG_TCP: '127.0.0.1:0', NANO_PINGPONG_WS: '127.0.0.1:0' },
  });
});

after(async () => {
  await closeAll();
  // SIGTERM, and each must exit 0 (under ASan: no leak either)
  for (const s of Object.values(servers)) if (!s.exited) await s.stop();
});

function addr(srv, transport) {
  if (transport === 'tcp') return { transport, host: srv.tcp.host, port: srv.tcp.port };
  return { transport, host: srv.ws.host, port: srv.ws.port, path: srv.ws.path };
}

async function echo(c, route, bytes) {
  const r = await c.request(route, bytes);
  assert.equal(r.error, false, `${route}: error response ${r.text}`);
  return r.payload;
}

function encodeAll(obj) {
  const msg = All.fromObject(obj);
  assert.equal(All.verify(msg), null);
  return Buffer.from(All.encode(msg).finish());
}

// ---- fixed messages: every kind ----

const EVERY_KIND = {
  f_double: -1.25e300, f_float: 1.5, f_int64: '-9007199254740993', f_uint64: '18446744073709551615',
  f_int32: -5, f_fixed64: '9007199254740993', f_fixed32: 4294967295, f_bool: true, f_string: 'héllo ✓',
  f_inner: { id: 3, name: 'in' }, f_bytes: Buffer.from([0, 1, 255]).toString('base64'), f_uint32: 4000000000,
  f_color: 'GREEN', f_sfixed32: -2147483648, f_sfixed64: '-9223372036854775808', f_sint32: -2, f_sint64: '9223372036854775807',
  r_int32: [1, -1, 300], r_sint64: ['-1', '1', '-9007199254740993'], r_double: [0.5, -0], r_string: ['a', '', 'ü'],
  r_inner: [{ id: 1 }, {}, { name: 'z' }], r_color: ['RED', 'NEGATIVE'], r_unpacked: [1, 2, 3], r_bool: [true, false],
  r_fixed32: [7, 0],
  m_str_int: { k: -5 }, m_int_inner: { '-3': { id: 1 } }, m_uint_color: { 9: 'RED' }, m_bool_bytes: { true: 'AP8=' },
  c_inner: { id: 9 }, o_int32: 0, f_node: { child: { child: { value: 3 } } },
};

for (const tr of ['tcp', 'ws']) {
  test(`${tr}: protobufjs bytes of every field kind come back byte-exact`, async () => {
    const c = await connect(addr(servers.kinds, tr));
    const bytes = encodeAll(EVERY_KIND);
    const back = await echo(c, 'Kinds.echo', bytes);
    assert.equal(back.toString('hex'), bytes.toString('hex'));
    assert.deepEqual(All.toObject(All.decode(back), TO_OBJECT), All.toObject(All.decode(bytes), TO_OBJECT));
    await c.close();
  });
}

// (no 64-bit map keys here: protobufjs decodes them to 8-byte hash strings and re-encodes those as 0;
// the echo tests above carry them)
test('values built in Lua decode in protobufjs to what Lua meant, and re-encode to the same bytes', async () => {
  const c = await connect(addr(servers.kinds, 'tcp'));
  const bytes = await echo(c, 'Kinds.sample', {});
  const obj = All.toObject(All.decode(bytes), TO_OBJECT);
  assert.deepEqual(obj, {
    f_double: -1.5, f_float: 0.25, f_int64: '-9007199254740993', f_uint64: '18446744073709551615', f_int32: -2147483648,
    f_fixed64: '9007199254740993', f_fixed32: 4294967295, f_bool: true, f_string: 'ünï', f_inner: { id: 7, name: 'seven' },
    f_bytes: Buffer.from([0, 255]).toString('base64'), f_uint32: 1, f_color: 'NEGATIVE', f_sfixed32: -1,
    f_sfixed64: '-9223372036854775808', f_sint32: 2147483647, f_sint64: '-9223372036854775808', r_int32: [-1, 0, 1],
    r_string: ['x', ''], r_inner: [{ id: 1 }, {}], r_color: ['RED', 5], r_unpacked: [3, 4], m_str_int: { k: -5 },
    c_text: 'chosen', o_int32: 0,
  });
  assert.equal(Buffer.from(All.encode(All.decode(bytes)).finish()).toString('hex'), bytes.toString('hex'));
  await c.close();
});

test('maps with many entries: the same entries either way (entry order is not fixed)', async () => {
  const c = await connect(addr(servers.kinds, 'tcp'));
  const m = {};
  for (let i = 0; i < 50; i++) m[`key${i}`] = i - 25;
  const back = await echo(c, 'Kinds.echo', encodeAll({ m_str_int: m, m_uint_color: { 1: 'RED', 2: 'GREEN' } }));
  assert.deepEqual(All.toObject(All.decode(back), TO_OBJECT), { m_str_int: m, m_uint_color: { 1: 'RED', 2: 'GREEN' } });
  await c.close();
});

// ---- randomized messages (a seeded generator, so a failure can be replayed) ----

function rng(seed) {
  let s = seed >>> 0;
  return () => {
    s = (s + 0x6d2b79f5) >>> 0;
    let t = s;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

function randomAll(r) {
  const int = (lo, hi) => lo + Math.floor(r() * (hi - lo + 1));
  const nz = (f) => { for (;;) { const v = f(); if (v !== 0 && v !== '0') return v; } }; // proto3 omits zeros
  const big = (signed) => {
    let v = BigInt(int(0, 2 ** 31)) * BigInt(2 ** 32) + BigInt(int(0, 2 ** 32 - 1));
    if (!signed) v = v * 2n + BigInt(int(0, 1));
    if (signed && r() < 0.5) v = -v;
    return r() < 0.5 ? v.toString() : String(BigInt(int(-1000, 1000)) * (signed ? 1n : 0n) + BigInt(int(1, 1000)));
  };
  const str = () => {
    const chars = ['a', 'Z', '0', ' ', 'é', '✓', '😀', '\u0000', '\n'];
    let s = '';
    for (let i = int(1, 8); i > 0; i--) s += chars[int(0, chars.length - 1)];
    return s;
  };
  const bytes = () => Buffer.from(Array.from({ length: int(1, 6) }, () => int(0, 255))).toString('base64');
  const inner = () => { const o = {}; if (r() < 0.7) o.id = nz(() => int(-1000, 1000)); if (r() < 0.7) o.name = str(); return o; };
  const colors = ['RED', 'GREEN', 'NEGATIVE'];
  const gen = {
    f_double: () => nz(() => (r() - 0.5) * 10 ** int(-300, 300)),
    f_float: () => nz(() => Math.fround((r() - 0.5) * 10 ** int(-30, 30))),
    f_int64: () => nz(() => big(true)), f_uint64: () => nz(() => big(false)),
    f_int32: () => nz(() => int(-(2 ** 31), 2 ** 31 - 1)), f_fixed64: () => nz(() => big(false)),
    f_fixed32: () => nz(() => int(0, 2 ** 32 - 1)), f_bool: () => true, f_string: str, f_inner: inner, f_bytes: bytes,
    f_uint32: () => nz(() => int(0, 2 ** 32 - 1)), f_color: () => colors[int(0, 2)],
    f_sfixed32: () => nz(() => int(-(2 ** 31), 2 ** 31 - 1)), f_sfixed64: () => nz(() => big(true)),
    f_sint32: () => nz(() => int(-(2 ** 31), 2 ** 31 - 1)), f_sint64: () => nz(() => big(true)),
    r_int32: () => Array.from({ length: int(1, 5) }, () => int(-(2 ** 31), 2 ** 31 - 1)),
    r_sint64: () => Array.from({ length: int(1, 5) }, () => big(true)),
    r_double: () => Array.from({ length: int(1, 5) }, () => (r() - 0.5) * 1e10),
    r_string: () => Array.from({ length: int(1, 4) }, str),
    r_inner: () => Array.from({ length: int(1, 4) }, inner),
    r_color: () => Array.from({ length: int(1, 4) }, () => colors[int(0, 2)]),
    r_unpacked: () => Array.from({ length: int(1, 4) }, () => int(0, 2 ** 32 - 1)),
    r_bool: () => Array.from({ length: int(1, 4) }, () => r() < 0.5),
    r_fixed32: () => Array.from({ length: int(1, 4) }, () => int(0, 2 ** 32 - 1)),
    // one entry per map: a map's entries may be written in any order
    m_str_int: () => ({ [str()]: int(-100, 100) }), m_int_inner: () => ({ [big(true)]: inner() }),
    m_uint_color: () => ({ [int(0, 2 ** 32 - 1)]: colors[int(0, 2)] }), m_bool_bytes: () => ({ [r() < 0.5]: bytes() }),
    o_int32: () => int(-5, 5), f_node: () => ({ child: { value: nz(() => int(-9, 9)) } }),
  };
  const o = {};
  for (const [k, f] of Object.entries(gen)) if (r() < 0.6) o[k] = f();
  const oneof = int(0, 3);
  if (oneof === 1) o.c_text = str();
  if (oneof === 2) o.c_inner = inner();
  if (oneof === 3) o.c_number = int(-5, 5);
  return o;
}

test('randomized messages: 300 protobufjs encodings come back byte-exact', async () => {
  const c = await connect(addr(servers.kinds, 'tcp'));
  for (let seed = 1; seed <= 300; seed++) {
    const obj = randomAll(rng(seed));
    const bytes = encodeAll(obj);
    const back = await echo(c, 'Kinds.echo', bytes);
    assert.equal(back.toString('hex'), bytes.toString('hex'), `seed ${seed}: ${JSON.stringify(obj)}`);
  }
  await c.close();
});

// Scalar fields only (kinds.Flat): nano-host answers through the type's flat writer
// (lua/nano/protobuf.lua), or its encoder where a value is not one the writer takes (a 64-bit
// integer beyond 2^53 decodes to a string): byte-exact either way.
test('randomized scalar-only messages: 300 protobufjs encodings come back byte-exact', async () => {
  const c = await connect(addr(servers.kinds, 'tcp'));
  const FIELDS = Object.keys(Flat.fields);
  for (let seed = 1; seed <= 300; seed++) {
    const all = randomAll(rng(1000 + seed));
    const r = rng(seed);
    const obj = {};
    for (const k of FIELDS) if (k in all) obj[k] = all[k];
    if (r() < 0.5) obj.o_sint64 = r() < 0.3 ? 0 : Math.floor((r() - 0.5) * 2 ** 40); // optional: 0 is written
    if (r() < 0.3) obj.f_color = [1, 2, -3][Math.floor(r() * 3)]; // by number (decoded to its name)
    const msg = Flat.fromObject(obj);
    assert.equal(Flat.verify(msg), null);
    const bytes = Buffer.from(Flat.encode(msg).finish());
    const back = await echo(c, 'Kinds.flat', bytes);
    assert.equal(back.toString('hex'), bytes.toString('hex'), `seed ${seed}: ${JSON.stringify(obj)}`);
  }
  await c.close();
});

// ---- pomelo-protobuf ----

const POMELO_COMPAT = {
  'optional uInt32 u': 1, 'optional sInt32 s': 2, 'optional string t': 3, 'optional double d': 4,
  'optional float f': 5, 'optional Sub sub': 6, 'repeated Sub subs': 7,
  'message Sub': { 'optional uInt32 id': 1, 'optional string name': 2 },
};
const initCompat = () => pomeloProtobuf.init({
  encoderProtos: pomeloProtobuf.parse({ compat: POMELO_COMPAT }), decoderProtos: pomeloProtobuf.parse({ compat: POMELO_COMPAT }),
});

test('pomelo-protobuf: its bytes are protobuf on the standard subset, and come back byte-exact', async () => {
  initCompat();
  const c = await connect(addr(servers.kinds, 'ws'));
  const r = rng(7);
  for (let i = 0; i < 100; i++) {
    const obj = {
      u: 1 + Math.floor(r() * 2 ** 31), s: Math.floor((r() - 0.5) * 2 ** 31) || 1, t: `text ${i} ✓`, d: r() - 0.5,
      f: Math.fround(r() + 1), sub: { id: 1 + i, name: 'n' }, subs: [{ id: 2 }, { name: 'x' }],
    };
    const pomeloBytes = pomeloProtobuf.encode('compat', obj);
    assert.equal(pomeloBytes.toString('hex'), Buffer.from(Compat.encode(Compat.fromObject(obj)).finish()).toString('hex'));
    const back = await echo(c, 'Compat.echo', pomeloBytes);
    assert.equal(back.toString('hex'), pomeloBytes.toString('hex'));
    assert.deepEqual(pomeloProtobuf.decode('compat', back), obj);
  }
  await c.close();
});

test('pomelo-protobuf is not protobuf for int32 (zigzag) and repeated scalars (varint tag, then a count)', () => {
  const protos = pomeloProtobuf.parse({ q: { 'optional int32 i': 1, 'repeated uInt32 r': 2 } });
  pomeloProtobuf.setEncoderProtos(protos);
  assert.equal(pomeloProtobuf.encode('q', { i: -1 }).toString('hex'), '0801'); // protobuf int32 -1: 08ffffffffffffffffff01
  // protobuf: 12 03 01ac02 (wire type 2, byte length); pomelo-protobuf: 10 02 (wire type 0, count)
  assert.equal(pomeloProtobuf.encode('q', { r: [1, 300] }).toString('hex'), '100201ac02');
});

// pomelo's protobuf mode: schemas in pomelo's JSON form (spec/fixtures/protobuf/*Protos.json),
// sent in the handshake as pomelo does; the client side is npm's pomelo-protobuf, used the way
// pomelo's web client uses it (protos.client to encode requests, protos.server to decode).
const POMELO_HS = (protoVersion) => ({ sys: { type: 'js-websocket', version: '0.0.1', protoVersion }, user: {} });

for (const tr of ['tcp', 'ws']) {
  test(`${tr}: pomelo protobuf mode: schemas in the handshake, then pomelo-protobuf payloads both ways`, async () => {
    const c = await connect({ ...addr(servers.pomelo, tr), handshake: POMELO_HS(0) });
    const sys = c.handshakeResponse.sys;
    assert.equal(sys.useProto, true);
    assert.ok(sys.protos && sys.protos.server['Room.join'] && sys.protos.client['Room.say'], 'sys.protos');
    assert.deepEqual(sys.protos.client['Room.join'].name, { option: 'required', type: 'string', tag: 1 });
    pomeloProtobuf.init({ encoderProtos: sys.protos.client, decoderProtos: sys.protos.server });

    const req = pomeloProtobuf.encode('Room.join', { name: 'ann', level: 5 });
    const r = await c.request('Room.join', req);
    assert.equal(r.error, false, r.text);
    assert.deepEqual(pomeloProtobuf.decode('Room.join', r.payload),
      { code: 200, users: [{ name: 'ann', level: 5 }], tags: [1, 300, 70000], ratio: 0.5, delta: -3 });

    c.notify('Room.say', pomeloProtobuf.encode('Room.say', { name: 'ann', text: 'hi ✓' }));
    const push = await c.waitPush('onChat', 5000);
    assert.deepEqual(pomeloProtobuf.decode('onChat', push.payload), { from: 'ann', text: 'hi ✓', ids: [-1, 2] });

    // a route without a schema is JSON, as in pomelo
    const plain = await c.request('Room.plain', { a: 1 });
    assert.deepEqual(plain.body, { echo: { a: 1 } });
    // bytes that do not decode: 400, JSON
    const bad = await c.request('Room.join', Buffer.from([0x0a, 0x09, 0x61]));
    assert.deepEqual(bad.body, { code: 400, msg: 'payload does not decode' });
    await c.close();

    // a client that has this version cached gets no schemas again
    const again = await connect({ ...addr(servers.pomelo, tr), handshake: POMELO_HS(sys.protos.version) });
    assert.equal(again.handshakeResponse.sys.protos, undefined);
    assert.equal(again.handshakeResponse.sys.useProto, true);
    await again.close();
  });
}

// ---- the protobuf pingpong example with a protobufjs client ----

for (const tr of ['tcp', 'ws']) {
  test(`${tr}: a protobufjs client plays pingpong (request, notify + push)`, async () => {
    const c = await connect(addr(servers.pingpong, tr));
    assert.equal(c.handshakeResponse.sys.serializer, 'protobuf');
    const req = Buffer.from(Ping.encode(Ping.fromObject({ n: 42, text: 'ping ✓' })).finish());
    const back = await echo(c, 'Bench.ping', req);
    assert.deepEqual(Ping.toObject(Ping.decode(back)), { n: 42, text: 'ping ✓' });
    c.notify('Bench.note', Buffer.from(Ping.encode(Ping.fromObject({ n: 7 })).finish()));
    const push = await c.waitPush('onNote', 5000);
    assert.deepEqual(Ping.toObject(Ping.decode(push.payload)), { n: 7 });
    // bytes that are not a Ping: a 400 error response (JSON, as errors are without `errors =`)
    const bad = await c.request('Bench.ping', Buffer.from([0x0a, 0x05, 0x61]));
    assert.equal(bad.error, true);
    assert.deepEqual(bad.body, { code: 400, msg: 'payload does not decode' });
    await c.close();
  });
}
