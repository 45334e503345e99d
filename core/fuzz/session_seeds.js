'use strict';
// Writes the seed corpus of fuzz_session (core/fuzz/corpus/session/): whole client conversations
// over TCP and WebSocket that reach every handler of the target's game script. Run by hand after
// changing the script: node core/fuzz/session_seeds.js
const fs = require('node:fs');
const path = require('node:path');

const out = path.join(__dirname, 'corpus', 'session');
const TCP = 0, WS = 1, ADVANCE = 2;

const pkt = (type, body = Buffer.alloc(0)) => {
  const b = Buffer.from(body);
  return Buffer.concat([Buffer.from([type, (b.length >> 16) & 255, (b.length >> 8) & 255, b.length & 255]), b]);
};
const varint = (n) => {
  const bytes = [];
  do {
    let b = n % 128;
    n = Math.floor(n / 128);
    if (n > 0) b |= 128;
    bytes.push(b);
  } while (n > 0);
  return Buffer.from(bytes);
};
// type 0 request (with id), 1 notify; route a string, or a number (compressed)
const msg = (type, id, route, payload) => {
  const compressed = typeof route === 'number';
  const parts = [Buffer.from([(type << 1) | (compressed ? 1 : 0)])];
  if (type === 0) parts.push(varint(id));
  if (compressed) parts.push(Buffer.from([route >> 8, route & 255]));
  else parts.push(Buffer.from([Buffer.byteLength(route)]), Buffer.from(route));
  parts.push(Buffer.from(payload));
  return pkt(4, Buffer.concat(parts));
};
const req = (id, route, obj = {}) => msg(0, id, route, typeof obj === 'string' ? obj : JSON.stringify(obj));
const notify = (route, obj = {}) => msg(1, 0, route, JSON.stringify(obj));
const hs = (user = {}) => pkt(1, JSON.stringify({ sys: { type: 'js-websocket', version: '0.0.1' }, user }));
const ack = pkt(2);
const heartbeat = pkt(3);

const mask = Buffer.from([0x11, 0x22, 0x33, 0x44]);
const frame = (opcode, payload = Buffer.alloc(0), fin = true) => {
  const p = Buffer.from(payload);
  let head;
  if (p.length < 126) head = Buffer.from([(fin ? 0x80 : 0) | opcode, 0x80 | p.length]);
  else head = Buffer.from([(fin ? 0x80 : 0) | opcode, 0x80 | 126, p.length >> 8, p.length & 255]);
  const masked = Buffer.from(p.map((b, i) => b ^ mask[i % 4]));
  return Buffer.concat([head, mask, masked]);
};
const upgrade = (extra = '') =>
  Buffer.from('GET /nano HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n' +
    `Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n${extra}\r\n`);

const everything = [
  req(1, 'Room.ping', { n: 1 }), req(2, 1, { n: 2 }), notify('Room.push', { a: 1 }), notify(2, {}),
  req(3, 'Room.boom'), req(4, 'Room.deny'), req(5, 'Room.later', { x: 1 }), req(6, 'Room.mid', { mid: 6 }),
  req(7, 'Room.state', { k: 'v' }), req(8, 'Room.join'), req(9, 'Room.leave'), req(10, 'Room.after', [1]),
  req(11, 'Room.many'), req(12, 'Room.info'), req(13, 'Room.bind', { uid: 42 }), req(14, 'Raw.echo', 'raw bytes'),
  req(15, 'Nope.missing'), req(16, 999), heartbeat, req(17, 'Room.ping', 'not json'), notify('Room.later'),
  req(300, 'chat.Room.ping', {}), req(2 ** 53, 'Room.ping', {}),
];

const seeds = {
  tcp_everything: [TCP, hs(), ack, ...everything],
  tcp_kick: [TCP, hs(), ack, req(1, 'Room.kick'), req(2, 'Room.ping')],
  tcp_close: [TCP, hs(), ack, req(1, 'Room.close'), req(2, 'Room.ping')],
  tcp_join_then_close: [TCP, hs(), ack, req(1, 'Room.join'), req(2, 'Room.after'), req(3, 'Room.close')],
  tcp_denied: [TCP, hs({ deny: true }), ack, req(1, 'Room.ping')],
  tcp_before_ack: [TCP, hs(), req(1, 'Room.ping')],
  tcp_timeouts: [TCP | ADVANCE, hs(), ack, req(1, 'Room.ping')],
  tcp_no_ack_timeout: [TCP | ADVANCE, hs()],
  tcp_bad_uid: [TCP, hs(), ack, req(1, 'Room.bind', { uid: 1e300 }), req(2, 'Room.mid', { mid: 1e300 })],
  ws_everything: [WS, upgrade(), frame(2, hs()), frame(2, ack), ...everything.map((p) => frame(2, p))],
  ws_joined: [WS, upgrade(), frame(2, Buffer.concat([hs(), ack, req(1, 'Room.ping'), req(2, 'Room.join')]))],
  ws_fragmented: [WS, upgrade(), frame(2, hs().subarray(0, 5), false), frame(0, hs().subarray(5), true),
    frame(9, 'ping'), frame(2, ack), frame(10, 'pong'), frame(2, req(1, 'Room.ping')), frame(8, Buffer.from([3, 232]))],
  ws_kick: [WS, upgrade(), frame(2, Buffer.concat([hs(), ack, req(1, 'Room.kick')]))],
  ws_timeouts: [WS | ADVANCE, upgrade(), frame(2, hs())],
  ws_origin_refused: [WS, upgrade('Origin: http://evil\r\n'), frame(2, hs())],
  ws_static: [WS, Buffer.from('GET /web/chrome HTTP/1.1\r\nHost: x\r\n\r\n')],
  ws_static_dir: [WS, Buffer.from('GET /web HTTP/1.1\r\nHost: x\r\n\r\n')],
  ws_static_escape: [WS, Buffer.from('GET /web/..%2f..%2fREADME.md HTTP/1.1\r\nHost: x\r\n\r\n')],
  ws_wrong_path: [WS, Buffer.from('GET /other HTTP/1.1\r\nHost: x\r\n\r\n')],
  ws_no_upgrade: [WS, Buffer.from('GET /nano HTTP/1.1\r\nHost: x\r\n\r\n')],
};

fs.mkdirSync(out, { recursive: true });
for (const [name, parts] of Object.entries(seeds)) {
  const bytes = Buffer.concat(parts.map((p) => (typeof p === 'number' ? Buffer.from([p]) : p)));
  fs.writeFileSync(path.join(out, name), bytes);
}
console.log(`wrote ${Object.keys(seeds).length} seeds to ${out}`);
