'use strict';
// Raw HTTP / WebSocket bytes over a plain net socket, for the tests that need to see or send
// exactly what the `ws` library would hide (HTTP errors, unmasked frames, control frames).

const net = require('node:net');
const crypto = require('node:crypto');

const WS_GUID = '258EAFA5-E914-47DA-95CA-C5AB0DC85B11';

// A net socket that records everything it receives; every wait is bounded.
class RawConn {
  constructor(sock) {
    this.sock = sock;
    this.data = Buffer.alloc(0);
    this.ended = false; // peer sent FIN
    this.closed = false;
    this.error = null;
    this.waiters = new Set();
    sock.on('data', (d) => {
      this.data = Buffer.concat([this.data, d]);
      this._tick();
    });
    sock.on('end', () => {
      this.ended = true;
      this._tick();
    });
    sock.on('error', (e) => {
      this.error = e;
      this._tick();
    });
    sock.on('close', () => {
      this.closed = true;
      this._tick();
    });
  }

  static open(host, port, timeoutMs = 3000) {
    return new Promise((resolve, reject) => {
      const sock = net.connect({ host, port });
      sock.setNoDelay(true);
      const timer = setTimeout(() => {
        sock.destroy();
        reject(new Error(`connect ${host}:${port} timed out`));
      }, timeoutMs);
      sock.once('connect', () => {
        clearTimeout(timer);
        resolve(new RawConn(sock));
      });
      sock.once('error', (e) => {
        clearTimeout(timer);
        reject(e);
      });
    });
  }

  _tick() {
    for (const w of [...this.waiters]) w();
  }

  write(buf) {
    if (!this.sock.destroyed) this.sock.write(buf);
  }

  // Resolves with check()'s first non-undefined value (re-checked on data/end/close).
  waitFor(check, timeoutMs, label) {
    return new Promise((resolve, reject) => {
      const attempt = () => {
        let v;
        try {
          v = check();
        } catch (e) {
          done();
          reject(e);
          return;
        }
        if (v !== undefined) {
          done();
          resolve(v);
        }
      };
      const timer = setTimeout(() => {
        done();
        reject(new Error(`timed out after ${timeoutMs} ms waiting for ${label}; received ${this.data.length} bytes: ${hex(this.data.subarray(0, 64))}`));
      }, timeoutMs);
      const done = () => {
        clearTimeout(timer);
        this.waiters.delete(attempt);
      };
      this.waiters.add(attempt);
      attempt();
    });
  }

  // Waits for a complete HTTP response head; resolves { status, headers, head, rest }.
  waitHttpHead(timeoutMs = 2000) {
    return this.waitFor(
      () => {
        const i = this.data.indexOf('\r\n\r\n');
        if (i < 0) {
          if (this.closed || this.ended) throw new Error(`connection closed before an HTTP response head; got ${JSON.stringify(this.data.toString('latin1'))}`);
          return undefined;
        }
        const head = this.data.subarray(0, i).toString('latin1');
        const lines = head.split('\r\n');
        const m = /^HTTP\/1\.[01] (\d{3})/.exec(lines[0]);
        if (!m) throw new Error(`not an HTTP status line: ${JSON.stringify(lines[0])}`);
        const headers = {};
        for (const l of lines.slice(1)) {
          const c = l.indexOf(':');
          if (c > 0) headers[l.slice(0, c).trim().toLowerCase()] = l.slice(c + 1).trim();
        }
        const rest = this.data.subarray(i + 4);
        this.data = rest;
        return { status: Number(m[1]), headers, head, rest };
      },
      timeoutMs,
      'an HTTP response head',
    );
  }

  // Waits until the peer has closed the connection (FIN or reset).
  waitClosed(timeoutMs = 2000) {
    return this.waitFor(() => (this.ended || this.closed ? true : undefined), timeoutMs, 'the server to close the connection');
  }

  // Waits for one complete server frame at the start of the buffer; consumes it.
  waitFrame(timeoutMs = 2000) {
    return this.waitFor(
      () => {
        const f = parseFrame(this.data);
        if (f) {
          this.data = this.data.subarray(f.size);
          return f;
        }
        if (this.closed || this.ended) throw new Error(`connection closed while waiting for a frame; have ${hex(this.data)}`);
        return undefined;
      },
      timeoutMs,
      'a WebSocket frame',
    );
  }

  destroy() {
    this.sock.destroy();
  }
}

function wsKey() {
  return crypto.randomBytes(16).toString('base64');
}

function acceptFor(key) {
  return crypto.createHash('sha1').update(key + WS_GUID).digest('base64');
}

function upgradeRequest(path, host, key, extra = '') {
  return (
    `GET ${path} HTTP/1.1\r\nHost: ${host}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n` +
    `Sec-WebSocket-Key: ${key}\r\nSec-WebSocket-Version: 13\r\n${extra}\r\n`
  );
}

// Opens a raw connection and completes the WebSocket upgrade; resolves { conn, res, key }.
async function rawUpgrade(host, port, path, timeoutMs = 2000) {
  const conn = await RawConn.open(host, port, timeoutMs);
  const key = wsKey();
  conn.write(upgradeRequest(path, `${host}:${port}`, key));
  const res = await conn.waitHttpHead(timeoutMs);
  return { conn, res, key };
}

// A client frame (masked unless opts.mask === false).
function encodeFrame(opcode, payload = Buffer.alloc(0), { mask = true, fin = true, rsv = 0 } = {}) {
  payload = Buffer.from(payload);
  const len = payload.length;
  let hdr;
  if (len < 126) {
    hdr = Buffer.from([0, len]);
  } else if (len < 65536) {
    hdr = Buffer.from([0, 126, len >> 8, len & 0xff]);
  } else {
    hdr = Buffer.alloc(10);
    hdr[1] = 127;
    hdr.writeBigUInt64BE(BigInt(len), 2);
  }
  hdr[0] = (fin ? 0x80 : 0) | (rsv << 4) | opcode;
  if (!mask) return Buffer.concat([hdr, payload]);
  hdr[1] |= 0x80;
  const key = crypto.randomBytes(4);
  const body = Buffer.alloc(len);
  for (let i = 0; i < len; i++) body[i] = payload[i] ^ key[i & 3];
  return Buffer.concat([hdr, key, body]);
}

// Parses one frame from the start of buf; null when incomplete.
function parseFrame(buf) {
  if (buf.length < 2) return null;
  const fin = !!(buf[0] & 0x80);
  const rsv = (buf[0] >> 4) & 7;
  const opcode = buf[0] & 0x0f;
  const masked = !!(buf[1] & 0x80);
  let len = buf[1] & 0x7f;
  let off = 2;
  if (len === 126) {
    if (buf.length < 4) return null;
    len = buf.readUInt16BE(2);
    off = 4;
  } else if (len === 127) {
    if (buf.length < 10) return null;
    len = Number(buf.readBigUInt64BE(2));
    off = 10;
  }
  let maskKey = null;
  if (masked) {
    if (buf.length < off + 4) return null;
    maskKey = buf.subarray(off, off + 4);
    off += 4;
  }
  if (buf.length < off + len) return null;
  let payload = Buffer.from(buf.subarray(off, off + len));
  if (maskKey) for (let i = 0; i < len; i++) payload[i] ^= maskKey[i & 3];
  return { fin, rsv, opcode, masked, payload, size: off + len, header: Buffer.from(buf.subarray(0, off)) };
}

function hex(buf) {
  return Buffer.from(buf).toString('hex').replace(/(..)/g, '$1 ').trim();
}

module.exports = { RawConn, rawUpgrade, upgradeRequest, encodeFrame, parseFrame, acceptFor, wsKey, hex };
