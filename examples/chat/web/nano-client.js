// nano-client.js — a small pomelo/nano protocol client for the browser, over WebSocket.
//
// Written for nano-host's examples and meant to be read: every byte it sends is explained in
// docs/protocol.md. It speaks to any pomelo/nano server that uses the JSON serializer.
//
//   const client = new NanoClient();
//   client.on('onMessage', (msg) => show(msg));        // a push, by route
//   client.on('close', (why) => ...);                  // also: 'kick', 'error'
//   await client.connect('ws://127.0.0.1:3250/nano');  // handshake done, ack sent
//   const res = await client.request('room.join', {}); // rejects on an error response or timeout
//   client.notify('room.message', { name: 'me', content: 'hi' });
//   client.close();
(function (global) {
  'use strict';

  // Packet types: the first byte of every packet.
  const PKG_HANDSHAKE = 1;
  const PKG_HANDSHAKE_ACK = 2;
  const PKG_HEARTBEAT = 3;
  const PKG_DATA = 4;
  const PKG_KICK = 5;

  // Message types: bits 1-3 of a data packet's flag byte.
  const MSG_REQUEST = 0;
  const MSG_NOTIFY = 1;
  const MSG_RESPONSE = 2;
  const MSG_PUSH = 3;

  const FLAG_ROUTE_CODE = 0x01; // route is a 2-byte dictionary code
  const FLAG_GZIP = 0x10; // payload is gzip-compressed (not supported here)
  const FLAG_ERROR = 0x20; // the response is an error object {code, msg}

  const utf8 = new TextEncoder();
  const fromUtf8 = new TextDecoder();

  // A packet: type, 3-byte big-endian body length, body.
  function encodePacket(type, body) {
    const len = body ? body.length : 0;
    const out = new Uint8Array(4 + len);
    out[0] = type;
    out[1] = (len >> 16) & 0xff;
    out[2] = (len >> 8) & 0xff;
    out[3] = len & 0xff;
    if (body) out.set(body, 4);
    return out;
  }

  // Base-128 varint, least significant group first. Arithmetic instead of bit operators so
  // that ids above 2^31 stay exact.
  function varintBytes(n) {
    const out = [];
    do {
      let b = n % 128;
      n = Math.floor(n / 128);
      if (n > 0) b += 128;
      out.push(b);
    } while (n > 0);
    return out;
  }

  // A message: flag, id (request only), route (string or dictionary code), payload.
  function encodeMessage(type, id, route, payload, dict) {
    const head = [];
    const code = dict[route];
    head.push((type << 1) | (code ? FLAG_ROUTE_CODE : 0));
    if (type === MSG_REQUEST) head.push(...varintBytes(id));
    if (code) {
      head.push((code >> 8) & 0xff, code & 0xff);
    } else {
      const r = utf8.encode(route);
      if (r.length > 255) throw new Error('route longer than 255 bytes: ' + route);
      head.push(r.length, ...r);
    }
    const out = new Uint8Array(head.length + payload.length);
    out.set(head, 0);
    out.set(payload, head.length);
    return out;
  }

  function decodeMessage(bytes, routeOfCode) {
    let at = 0;
    const flag = bytes[at++];
    const type = (flag >> 1) & 0x07;
    const msg = { type, id: 0, route: null, error: (flag & FLAG_ERROR) !== 0, gzip: (flag & FLAG_GZIP) !== 0 };
    if (type === MSG_REQUEST || type === MSG_RESPONSE) {
      let scale = 1;
      for (;;) {
        if (at >= bytes.length) throw new Error('truncated message id');
        const b = bytes[at++];
        msg.id += (b & 0x7f) * scale;
        scale *= 128;
        if (b < 128) break;
      }
    }
    if (type !== MSG_RESPONSE) {
      if (flag & FLAG_ROUTE_CODE) {
        const code = (bytes[at] << 8) | bytes[at + 1];
        at += 2;
        msg.route = routeOfCode[code] || String(code);
      } else {
        const len = bytes[at++];
        msg.route = fromUtf8.decode(bytes.subarray(at, at + len));
        at += len;
      }
    }
    msg.payload = bytes.subarray(at);
    return msg;
  }

  function parseJson(bytes) {
    if (!bytes || bytes.length === 0) return null;
    return JSON.parse(fromUtf8.decode(bytes));
  }

  class NanoClient {
    constructor(opts) {
      this.opts = Object.assign({ requestTimeoutMs: 10000, user: {} }, opts);
      this.listeners = new Map(); // event or push route -> [fn]
      this.pending = new Map(); // request id -> { resolve, reject, timer }
      this.nextId = 1;
      this.dict = {}; // route -> code, from the handshake
      this.routeOfCode = {};
      this.inbox = new Uint8Array(0); // bytes of a packet split across frames
      this.socket = null;
      this.heartbeatTimer = null;
      this.heartbeatMs = 0;
      this.lastReceived = 0;
      this.lastSent = 0;
      this.handshake = null; // the server's handshake response
    }

    on(event, fn) {
      if (!this.listeners.has(event)) this.listeners.set(event, []);
      this.listeners.get(event).push(fn);
      return this;
    }

    off(event, fn) {
      const list = this.listeners.get(event) || [];
      this.listeners.set(event, list.filter((f) => f !== fn));
      return this;
    }

    emit(event, ...args) {
      for (const fn of (this.listeners.get(event) || []).slice()) {
        try {
          fn(...args);
        } catch (e) {
          console.error('nano-client: listener for ' + event + ' failed', e);
        }
      }
    }

    // Opens the WebSocket, sends the handshake, and resolves once the server accepted it and
    // the ack is sent (from then on requests and notifies may flow).
    connect(url) {
      return new Promise((resolve, reject) => {
        const ws = new WebSocket(url);
        ws.binaryType = 'arraybuffer'; // packets are binary frames
        this.socket = ws;
        this.connectWaiter = { resolve, reject };
        ws.onopen = () => {
          const hello = { sys: { type: 'js-websocket', version: '0.1.0', rsa: {} }, user: this.opts.user };
          this.send(encodePacket(PKG_HANDSHAKE, utf8.encode(JSON.stringify(hello))));
        };
        ws.onmessage = (ev) => this.onBytes(new Uint8Array(ev.data));
        ws.onerror = () => this.emit('error', new Error('WebSocket error on ' + url));
        ws.onclose = (ev) => this.onClose(ev);
      });
    }

    request(route, msg) {
      const id = this.nextId++;
      return new Promise((resolve, reject) => {
        const timer = setTimeout(() => {
          this.pending.delete(id);
          reject(new Error('request ' + route + ' timed out'));
        }, this.opts.requestTimeoutMs);
        this.pending.set(id, { resolve, reject, timer, route });
        this.sendMessage(MSG_REQUEST, id, route, msg);
      });
    }

    notify(route, msg) {
      this.sendMessage(MSG_NOTIFY, 0, route, msg);
    }

    close() {
      if (this.socket) this.socket.close(1000);
    }

    // ---- internals ----

    send(bytes) {
      if (this.socket && this.socket.readyState === WebSocket.OPEN) this.socket.send(bytes);
    }

    sendMessage(type, id, route, msg) {
      const payload = utf8.encode(JSON.stringify(msg === undefined ? {} : msg));
      this.send(encodePacket(PKG_DATA, encodeMessage(type, id, route, payload, this.dict)));
    }

    // Frames are joined into one byte stream: a frame may hold several packets, or part of one.
    onBytes(bytes) {
      this.lastReceived = Date.now();
      let buf = bytes;
      if (this.inbox.length) {
        buf = new Uint8Array(this.inbox.length + bytes.length);
        buf.set(this.inbox, 0);
        buf.set(bytes, this.inbox.length);
      }
      let at = 0;
      while (buf.length - at >= 4) {
        const len = (buf[at + 1] << 16) | (buf[at + 2] << 8) | buf[at + 3];
        if (buf.length - at < 4 + len) break;
        this.onPacket(buf[at], buf.subarray(at + 4, at + 4 + len));
        at += 4 + len;
      }
      this.inbox = buf.slice(at);
    }

    onPacket(type, body) {
      switch (type) {
        case PKG_HANDSHAKE:
          return this.onHandshake(parseJson(body));
        case PKG_HEARTBEAT:
          // Receiving anything proves the server is alive; ours go out on a timer. But a hidden
          // tab's timers may be slowed to once a minute, so a server heartbeat also triggers one
          // of ours when none left for a whole interval (never more: no heartbeat ping-pong).
          if (this.heartbeatMs && Date.now() - this.lastSent >= this.heartbeatMs) this.sendHeartbeat();
          return;
        case PKG_DATA:
          return this.onMessage(decodeMessage(body, this.routeOfCode));
        case PKG_KICK: {
          let reason = null;
          try {
            reason = parseJson(body);
          } catch (e) {
            reason = fromUtf8.decode(body);
          }
          return this.emit('kick', reason);
        }
        default:
          this.emit('error', new Error('unknown packet type ' + type));
      }
    }

    onHandshake(res) {
      const waiter = this.connectWaiter;
      this.connectWaiter = null;
      if (!res || res.code !== 200) {
        const err = new Error(res && res.code === 501 ? 'client version refused by the server' : 'handshake refused');
        if (waiter) waiter.reject(err);
        this.emit('error', err);
        this.close();
        return;
      }
      this.handshake = res;
      const sys = res.sys || {};
      this.dict = sys.dict || {};
      this.routeOfCode = {};
      for (const route of Object.keys(this.dict)) this.routeOfCode[this.dict[route]] = route;
      this.send(encodePacket(PKG_HANDSHAKE_ACK));
      this.startHeartbeat(sys.heartbeat);
      if (waiter) waiter.resolve(res);
    }

    // Send a heartbeat every interval and never answer one: the server (nano, nano-host) sends
    // its own on a timer, and two peers that answer each other at once would bounce heartbeats
    // at full speed. A server silent for two intervals is gone.
    startHeartbeat(seconds) {
      if (!seconds) return;
      const ms = seconds * 1000;
      this.heartbeatMs = ms;
      this.lastSent = Date.now();
      this.heartbeatTimer = setInterval(() => {
        if (Date.now() - this.lastReceived > 2 * ms + 1000) {
          this.emit('error', new Error('server heartbeat timeout'));
          this.socket.close(4000, 'heartbeat timeout');
          return;
        }
        this.sendHeartbeat();
      }, ms);
    }

    sendHeartbeat() {
      this.lastSent = Date.now();
      this.send(encodePacket(PKG_HEARTBEAT));
    }

    onMessage(m) {
      if (m.gzip) {
        this.emit('error', new Error('gzip payloads are not supported by this client'));
        return;
      }
      let body;
      try {
        body = parseJson(m.payload);
      } catch (e) {
        this.emit('error', new Error('payload is not JSON: ' + e.message));
        return;
      }
      if (m.type === MSG_PUSH) {
        this.emit(m.route, body);
        return;
      }
      if (m.type !== MSG_RESPONSE) return;
      const p = this.pending.get(m.id);
      if (!p) return; // timed out already
      this.pending.delete(m.id);
      clearTimeout(p.timer);
      if (m.error) {
        const err = new Error((body && body.msg) || 'error response to ' + p.route);
        err.code = body && body.code;
        p.reject(err);
      } else {
        p.resolve(body);
      }
    }

    onClose(ev) {
      clearInterval(this.heartbeatTimer);
      this.heartbeatTimer = null;
      const why = new Error('connection closed (' + ev.code + ')');
      if (this.connectWaiter) this.connectWaiter.reject(why);
      this.connectWaiter = null;
      for (const p of this.pending.values()) {
        clearTimeout(p.timer);
        p.reject(why);
      }
      this.pending.clear();
      this.emit('close', ev);
    }
  }

  global.NanoClient = NanoClient;
})(typeof window !== 'undefined' ? window : globalThis);
