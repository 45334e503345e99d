'use strict';
// A small pomelo/nano client for the end-to-end tests, built on the third-party codec
// `pomelo-protocol` (packets and messages) and `ws` (WebSocket). Every wait is bounded.
//
//   const c = await connect({ transport: 'tcp' | 'ws', host, port, path });
//   const r = await c.request('Bench.ping', { n: 1 }, { compress: true });  // { id, flag, error, body, ... }
//   c.notify('Bench.note', { a: 1 });
//   const p = await c.waitPush('onNote', 2000);
//   c.rawSend(Buffer.from([9, 0, 0, 0]));  // TCP: bytes as they are; WS: one binary frame
//   await c.waitClose(2000);
//   await c.close();

const net = require('node:net');
const tls = require('node:tls');
const zlib = require('node:zlib');
const { EventEmitter } = require('node:events');
const WebSocket = require('ws');
const Protocol = require('pomelo-protocol');

const { Package, Message } = Protocol;

const PKG = { HANDSHAKE: 1, HANDSHAKE_ACK: 2, HEARTBEAT: 3, DATA: 4, KICK: 5 };
const MSG = { REQUEST: 0, NOTIFY: 1, RESPONSE: 2, PUSH: 3 };
const FLAG = { ROUTE_COMPRESSED: 0x01, GZIP: 0x10, ERROR: 0x20 };

const DEFAULT_HANDSHAKE = { sys: { type: 'js-websocket', version: '0.0.1' }, user: {} };

// pomelo-protocol 0.1.6 sizes and decodes ids with 32-bit shifts, so ids >= 2^31 come out wrong
// (Message.encode allocates one id byte and truncates the route). Ids are therefore encoded and
// decoded here, as BigInt varints; a Number is used while it is exact.
function varint(id) {
  let v = BigInt(id);
  const out = [];
  do {
    let b = Number(v & 0x7fn);
    v >>= 7n;
    if (v) b |= 0x80;
    out.push(b);
  } while (v);
  return Buffer.from(out);
}

function readVarint(buf, off) {
  let v = 0n;
  for (let i = 0; i < 10 && off + i < buf.length; i++) {
    const b = buf[off + i];
    v |= BigInt(b & 0x7f) << BigInt(7 * i);
    if (!(b & 0x80)) return { value: v <= BigInt(Number.MAX_SAFE_INTEGER) ? Number(v) : v, size: i + 1 };
  }
  throw new Error(`bad varint id at ${off}: ${buf.subarray(off, off + 11).toString('hex')}`);
}

const idKey = (id) => BigInt(id).toString();

// A request message: pomelo-protocol writes flag, route and payload; the id bytes are ours.
function encodeRequest(id, route, payload, compress) {
  const noId = Message.encode(0, MSG.NOTIFY, compress ? 1 : 0, route, payload);
  return Buffer.concat([Buffer.from([noId[0] & ~0x0e]), varint(id), noId.subarray(1)]);
}

// Splits a byte stream into packets (4-byte header: type, 3-byte big-endian body length).
// Bytes may arrive in any split; one chunk may hold many packets.
class PacketSplitter {
  constructor(onPacket) {
    this.onPacket = onPacket;
    this.buf = Buffer.alloc(0);
  }

  push(chunk) {
    this.buf = this.buf.length ? Buffer.concat([this.buf, chunk]) : Buffer.from(chunk);
    while (this.buf.length >= 4) {
      const len = (this.buf[1] << 16) | (this.buf[2] << 8) | this.buf[3];
      if (this.buf.length < 4 + len) break;
      const packet = this.buf.subarray(0, 4 + len);
      this.buf = this.buf.subarray(4 + len);
      this.onPacket(Buffer.from(packet));
    }
  }

  get pending() {
    return this.buf.length;
  }
}

let allClients = new Set();

class Client extends EventEmitter {
  constructor(opts) {
    super();
    this.setMaxListeners(0);
    this.opts = {
      transport: 'tcp',
      host: '127.0.0.1',
      path: '/nano',
      connectTimeoutMs: 3000,
      handshakeTimeoutMs: 3000,
      requestTimeoutMs: 5000,
      answerHeartbeat: true,
      // options given as undefined keep their defaults
      ...Object.fromEntries(Object.entries(opts || {}).filter(([, v]) => v !== undefined)),
    };
    this.transport = this.opts.transport;
    this.packets = []; // every packet received: { type, body (Buffer|null), at (ms) }
    this.pushes = []; // decoded push messages, each with a `consumed` mark
    this.responses = []; // decoded responses in arrival order
    this.unexpected = []; // responses for unknown / timed-out ids
    this.heartbeatsReceived = []; // arrival times (ms)
    this.heartbeatsSent = 0;
    this.sentPackets = 0;
    this.bytesReceived = 0;
    this.pending = new Map(); // id -> { resolve, reject, timer, route }
    this.timedOut = new Set();
    this.nextId = 1;
    this.dict = {};
    this.rdict = {};
    this.heartbeat = null;
    this.handshakeResponse = null;
    this.acked = false;
    this.closed = false;
    this.closeInfo = null; // { at, code, reason, error, hadError }
    this.errors = [];
    this.hbTimers = new Set();
    this.openedAt = null;
    this.splitter = new PacketSplitter((p) => this._onPacket(p));
    allClients.add(this);
  }

  // ---- connection ----

  _open() {
    const { transport, host, port, path, connectTimeoutMs } = this.opts;
    return new Promise((resolve, reject) => {
      let done = false;
      const timer = setTimeout(() => {
        if (done) return;
        done = true;
        this._destroy();
        reject(new Error(`${transport} connect to ${host}:${port} timed out after ${connectTimeoutMs} ms`));
      }, connectTimeoutMs);
      const ok = () => {
        if (done) return;
        done = true;
        clearTimeout(timer);
        this.openedAt = Date.now();
        resolve();
      };
      const fail = (err) => {
        if (done) return;
        done = true;
        clearTimeout(timer);
        reject(err);
      };
      const { tls: tlsOpts } = this.opts; // { ca, servername, ... }: node's tls options
      if (transport === 'tcp') {
        const sock = tlsOpts ? tls.connect({ host, port, ...tlsOpts }) : net.connect({ host, port });
        this.sock = sock;
        sock.setNoDelay(true);
        sock.on(tlsOpts ? 'secureConnect' : 'connect', ok);
        sock.on('data', (d) => {
          this.bytesReceived += d.length;
          this.splitter.push(d);
        });
        sock.on('error', (err) => {
          this.errors.push(err);
          fail(err);
        });
        sock.on('close', (hadError) => this._onClose({ hadError }));
      } else if (transport === 'ws') {
        const ws = new WebSocket(`${tlsOpts ? 'wss' : 'ws'}://${host}:${port}${path}`,
          { handshakeTimeout: connectTimeoutMs, ...(tlsOpts || {}) });
        this.ws = ws;
        ws.binaryType = 'nodebuffer';
        ws.on('open', () => {
          ws._socket.setNoDelay(true);
          ok();
        });
        ws.on('message', (data, isBinary) => {
          const buf = Array.isArray(data) ? Buffer.concat(data) : Buffer.from(data);
          this.bytesReceived += buf.length;
          if (!isBinary) this.textFrames = (this.textFrames || 0) + 1;
          this.splitter.push(buf);
        });
        ws.on('unexpected-response', (req, res) => {
          fail(new Error(`WebSocket upgrade refused: HTTP ${res.statusCode}`));
          req.destroy();
        });
        ws.on('error', (err) => {
          this.errors.push(err);
          fail(err);
        });
        ws.on('close', (code, reason) => this._onClose({ code, reason: reason.toString() }));
      } else {
        fail(new Error(`unknown transport ${transport}`));
      }
    });
  }

  _onClose(info) {
    if (this.closed) return;
    this.closed = true;
    this.closeInfo = { at: Date.now(), ...info, errors: this.errors.map((e) => e.code || e.message) };
    for (const t of this.hbTimers) clearTimeout(t);
    this.hbTimers.clear();
    for (const [id, p] of this.pending) {
      clearTimeout(p.timer);
      const err = new Error(`connection closed before the response to request ${id} (${p.route})`);
      err.code = 'ECLOSED';
      p.reject(err);
    }
    this.pending.clear();
    allClients.delete(this);
    this.emit('close', this.closeInfo);
    this.emit('_tick');
  }

  _destroy() {
    if (this.sock) this.sock.destroy();
    if (this.ws) this.ws.terminate();
  }

  // ---- sending ----

  // Sends bytes as they are: over TCP written to the stream, over WS as one binary frame.
  rawSend(buf) {
    if (this.closed) return false;
    if (this.transport === 'tcp') {
      this.sock.write(buf);
    } else {
      if (this.ws.readyState !== WebSocket.OPEN) return false;
      this.ws.send(buf, { binary: true });
    }
    return true;
  }

  sendPacket(type, body) {
    this.sentPackets++;
    return this.rawSend(Package.encode(type, body || null));
  }

  sendHandshake(body = DEFAULT_HANDSHAKE) {
    const text = typeof body === 'string' ? body : JSON.stringify(body);
    return this.sendPacket(PKG.HANDSHAKE, Protocol.strencode(text));
  }

  sendAck() {
    this.acked = true;
    return this.sendPacket(PKG.HANDSHAKE_ACK);
  }

  sendHeartbeat() {
    this.heartbeatsSent++;
    return this.sendPacket(PKG.HEARTBEAT);
  }

  // Performs the handshake: request, response (code checked by the caller), ack.
  async handshake(body = DEFAULT_HANDSHAKE, { ack = true } = {}) {
    const from = this.packets.length;
    this.sendHandshake(body);
    const pkt = await this.waitPacket(PKG.HANDSHAKE, this.opts.handshakeTimeoutMs, from);
    const text = pkt.body ? Protocol.strdecode(pkt.body) : '';
    let res;
    try {
      res = JSON.parse(text);
    } catch (e) {
      throw new Error(`handshake response is not JSON: ${JSON.stringify(text)}`);
    }
    this.handshakeResponse = res;
    const sys = res.sys || {};
    this.heartbeat = typeof sys.heartbeat === 'number' ? sys.heartbeat : null;
    this.dict = sys.dict || {};
    this.rdict = {};
    for (const [route, code] of Object.entries(this.dict)) this.rdict[code] = route;
    if (ack && res.code === 200) this.sendAck();
    return res;
  }

  _routeArg(route, compress) {
    if (!compress) return route;
    if (typeof route === 'number') return route;
    const code = this.dict[route];
    if (code === undefined) throw new Error(`route ${route} is not in the dictionary`);
    return code;
  }

  static payload(obj) {
    if (Buffer.isBuffer(obj)) return obj;
    return Protocol.strencode(JSON.stringify(obj === undefined ? {} : obj));
  }

  // Sends a request; resolves with the decoded response { id, flag, type, error, body, text, raw }.
  // Options: compress (use the dictionary code), id (force an id), timeoutMs.
  request(route, obj, opts = {}) {
    const id = opts.id !== undefined ? opts.id : this.nextId++;
    const compress = !!opts.compress;
    const timeoutMs = opts.timeoutMs || this.opts.requestTimeoutMs;
    let msg;
    try {
      msg = encodeRequest(id, this._routeArg(route, compress), Client.payload(obj), compress);
    } catch (e) {
      return Promise.reject(e);
    }
    if (this.closed) {
      const err = new Error(`request ${route}: connection already closed`);
      err.code = 'ECLOSED';
      return Promise.reject(err);
    }
    const p = new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        this.pending.delete(idKey(id));
        this.timedOut.add(idKey(id));
        const err = new Error(`no response to request ${id} (${route}) within ${timeoutMs} ms`);
        err.code = 'ETIMEDOUT';
        reject(err);
      }, timeoutMs);
      this.pending.set(idKey(id), { resolve, reject, timer, route });
    });
    this.sendPacket(PKG.DATA, msg);
    return p;
  }

  notify(route, obj, opts = {}) {
    const compress = !!opts.compress;
    const msg = Message.encode(0, MSG.NOTIFY, compress ? 1 : 0, this._routeArg(route, compress), Client.payload(obj));
    return this.sendPacket(PKG.DATA, msg);
  }

  // ---- receiving ----

  _onPacket(buf) {
    // Decode with the third-party codec (one whole packet in, one { type, body } out).
    const pkt = Package.decode(buf);
    const entry = { type: pkt.type, body: pkt.body || null, at: Date.now(), raw: buf };
    this.packets.push(entry);
    this.emit('packet', entry);
    try {
      if (pkt.type === PKG.HEARTBEAT) this._onHeartbeat(entry);
      else if (pkt.type === PKG.DATA) this._onData(entry);
      else if (pkt.type === PKG.KICK) this.emit('kick', entry);
    } catch (err) {
      this.errors.push(err);
      this.emit('decode-error', err, entry);
    }
    this.emit('_tick');
  }

  _onHeartbeat(entry) {
    this.heartbeatsReceived.push(entry.at);
    this.emit('heartbeat', entry);
    // Answer each heartbeat one interval later, never at once (see PROTOCOL.md "Heartbeat").
    // One timer per received heartbeat: the answers keep the server's rate, so neither side can
    // make the other bounce heartbeats faster than once per interval.
    if (!this.opts.answerHeartbeat || this.closed || !this.heartbeat) return;
    const timer = setTimeout(() => {
      this.hbTimers.delete(timer);
      if (!this.closed) this.sendHeartbeat();
    }, this.heartbeat * 1000);
    timer.unref();
    this.hbTimers.add(timer);
  }

  _onData(entry) {
    const body = entry.body || Buffer.alloc(0);
    if (body.length === 0) throw new Error('data packet without a message');
    const flag = body[0];
    const m = Message.decode(body);
    let payload = Buffer.from(m.body);
    if (flag & FLAG.GZIP) payload = zlib.gunzipSync(payload);
    const text = Protocol.strdecode(payload);
    let parsed;
    let parseError = null;
    if (text.length) {
      try {
        parsed = JSON.parse(text);
      } catch (e) {
        parseError = e;
      }
    }
    const msg = {
      type: m.type,
      flag,
      id: m.type === MSG.REQUEST || m.type === MSG.RESPONSE ? readVarint(body, 1).value : 0,
      route: m.route,
      routeCompressed: !!(flag & FLAG.ROUTE_COMPRESSED),
      routeCode: undefined,
      error: !!(flag & FLAG.ERROR),
      body: parsed,
      parseError,
      text,
      payload, // the bytes (a protobuf payload is not text)
      raw: body,
      at: entry.at,
    };
    if (msg.routeCompressed && m.route !== null) {
      msg.routeCode = m.route;
      msg.route = this.rdict[m.route] !== undefined ? this.rdict[m.route] : m.route;
    }
    if (m.type === MSG.RESPONSE) {
      this.responses.push(msg);
      const p = this.pending.get(idKey(msg.id));
      if (p) {
        this.pending.delete(idKey(msg.id));
        clearTimeout(p.timer);
        p.resolve(msg);
      } else {
        this.unexpected.push(msg);
      }
      this.emit('response', msg);
    } else if (m.type === MSG.PUSH) {
      msg.consumed = false;
      this.pushes.push(msg);
      this.emit('push', msg);
    } else {
      this.unexpected.push(msg);
      this.emit('unexpected', msg);
    }
  }

  // Resolves with check()'s first non-undefined value, re-evaluated on every packet and on close.
  waitFor(check, timeoutMs, label = 'condition') {
    return new Promise((resolve, reject) => {
      let timer = null;
      const cleanup = () => {
        if (timer) clearTimeout(timer);
        this.off('_tick', attempt);
      };
      const attempt = () => {
        let v;
        try {
          v = check();
        } catch (e) {
          cleanup();
          reject(e);
          return true;
        }
        if (v === undefined) return false;
        cleanup();
        resolve(v);
        return true;
      };
      if (attempt()) return;
      timer = setTimeout(() => {
        cleanup();
        reject(new Error(`timed out after ${timeoutMs} ms waiting for ${label} (${this.describe()})`));
      }, timeoutMs);
      this.on('_tick', attempt);
    });
  }

  // Waits for a packet of `type` received at index >= from.
  waitPacket(type, timeoutMs = 2000, from = 0) {
    return this.waitFor(
      () => {
        for (let i = from; i < this.packets.length; i++) if (this.packets[i].type === type) return this.packets[i];
        if (this.closed) throw new Error(`connection closed while waiting for packet type ${type} (${this.describe()})`);
        return undefined;
      },
      timeoutMs,
      `packet type ${type}`,
    );
  }

  // Waits for (and consumes) the first unconsumed push of `route` (name, or code if unknown).
  waitPush(route, timeoutMs = 2000) {
    return this.waitFor(
      () => {
        const p = this.pushes.find((x) => !x.consumed && (x.route === route || x.routeCode === route));
        if (p) {
          p.consumed = true;
          return p;
        }
        if (this.closed) throw new Error(`connection closed while waiting for push ${route}`);
        return undefined;
      },
      timeoutMs,
      `push ${route}`,
    );
  }

  waitClose(timeoutMs = 2000) {
    return this.waitFor(() => (this.closed ? this.closeInfo : undefined), timeoutMs, 'the connection to close');
  }

  // Closes from the client side; resolves once closed (forcibly after 2 s).
  async close() {
    if (this.closed) return this.closeInfo;
    if (this.transport === 'tcp') this.sock.end();
    else if (this.ws.readyState === WebSocket.CONNECTING) this.ws.terminate();
    else this.ws.close(1000);
    try {
      return await this.waitClose(2000);
    } catch (e) {
      this._destroy();
      return this.waitClose(1000).catch(() => null);
    }
  }

  describe() {
    const types = this.packets.map((p) => p.type).join(',');
    return `${this.transport} client: received packet types [${types}], closed=${this.closed}` +
      (this.closeInfo ? ` ${JSON.stringify({ code: this.closeInfo.code, errors: this.closeInfo.errors })}` : '');
  }
}

// Opens a connection and, unless opts.handshake === false, performs the handshake and ack.
// opts: transport, host, port, path, handshake (false | body object), ack (default true),
//       answerHeartbeat (default true), connectTimeoutMs, requestTimeoutMs.
async function connect(opts) {
  const c = new Client(opts);
  await c._open();
  if (opts.handshake !== false) {
    const body = opts.handshake && typeof opts.handshake === 'object' ? opts.handshake : DEFAULT_HANDSHAKE;
    const res = await c.handshake(body, { ack: opts.ack !== false });
    if (res.code !== 200) {
      c._destroy();
      throw new Error(`handshake refused: ${JSON.stringify(res)}`);
    }
  }
  return c;
}

async function closeAll() {
  const list = [...allClients];
  await Promise.all(list.map((c) => c.close().catch(() => {})));
}

function packet(type, body) {
  return Buffer.from(Package.encode(type, body ? Buffer.from(body) : null));
}

module.exports = { connect, Client, PacketSplitter, closeAll, packet, varint, readVarint, encodeRequest, PKG, MSG, FLAG, DEFAULT_HANDSHAKE, Protocol };
