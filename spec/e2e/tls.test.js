'use strict';
// TLS under both transports, with third-party clients: node's tls (TCP over TLS + pomelo-protocol),
// the ws library over wss://, node's https for a static page on the wss port, and
// `openssl s_client`. Bad input on the TLS port (plain text, garbage, a ClientHello cut short, a
// close_notify mid-packet, renegotiation) gets a clean close and a log line; certificates rotate
// on SIGHUP for new connections while live ones go on; a broken certificate keeps the old one.
// Certificates are made here by the openssl command, in a temporary folder.

const assert = require('node:assert/strict');
const { test, before, after } = require('node:test');
const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');
const net = require('node:net');
const tls = require('node:tls');
const https = require('node:https');
const { execFileSync, spawnSync } = require('node:child_process');
const { startServer, fixture, watchdog } = require('./lib/server');
const { connect, closeAll, packet, PKG, DEFAULT_HANDSHAKE } = require('./lib/client');

watchdog(110000);
// under valgrind (NH_E2E_SLOW=4) handshakes take longer: the deadline and waits scale
const SLOW = Math.max(1, Number(process.env.NH_E2E_SLOW) || 1);

const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'nh-tls-'));
let srv;

function makeCert(name) {
  const key = path.join(dir, `${name}.key`);
  const cert = path.join(dir, `${name}.crt`);
  execFileSync('openssl', ['req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256',
    '-nodes', '-keyout', key, '-out', cert, '-days', '2', '-subj', `/CN=localhost/O=${name}`,
    '-addext', 'subjectAltName=DNS:localhost,IP:127.0.0.1'], { stdio: 'ignore' });
  return { key, cert, pem: fs.readFileSync(cert) };
}

// Installs a certificate as the one the fixture reads (cert.pem, key.pem).
function install(c) {
  fs.copyFileSync(c.cert, path.join(dir, 'cert.pem'));
  fs.copyFileSync(c.key, path.join(dir, 'key.pem'));
}

const certA = makeCert('a');
const certB = makeCert('b');
install(certA);

const tlsOpts = (ca) => ({ ca, servername: 'localhost' });
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

async function waitLog(re, ms = 5000 * SLOW) {
  const t0 = Date.now();
  while (Date.now() - t0 < ms) {
    if (re.test(srv.stderr)) return;
    await sleep(20);
  }
  assert.fail(`no log line matching ${re} within ${ms} ms\n${srv.logTail()}`);
}

// A raw TLS-port connection: resolves when the server closes it (bounded).
function rawClose(port, bytes, ms = 5000 * SLOW) {
  return new Promise((resolve, reject) => {
    const sock = net.connect({ host: '127.0.0.1', port });
    const timer = setTimeout(() => {
      sock.destroy();
      reject(new Error(`the server did not close the connection within ${ms} ms`));
    }, ms);
    sock.on('connect', () => sock.write(bytes));
    sock.on('data', () => {});
    sock.on('error', () => {});
    sock.on('close', () => {
      clearTimeout(timer);
      resolve();
    });
  });
}

function peerOrg(c) {
  return c.sock.getPeerCertificate().subject.O;
}

before(async () => {
  srv = await startServer(fixture('tls.lua'), [], {
    expect: ['tcp', 'tls', 'wss'],
    env: { NH_TLS_DIR: dir, NH_HANDSHAKE_TIMEOUT: String(SLOW) },
  });
});

after(async () => {
  await closeAll();
  if (srv && !srv.exited) await srv.stop();
  fs.rmSync(dir, { recursive: true, force: true });
});

const tlsAddr = () => ({ transport: 'tcp', host: '127.0.0.1', port: srv.listening.tls.port });
const wssAddr = () => ({ transport: 'ws', host: '127.0.0.1', port: srv.listening.wss.port, path: '/nano' });

test('TCP over TLS: handshake, request, push, a 256 KiB response, with a verified certificate', async () => {
  const c = await connect({ ...tlsAddr(), tls: tlsOpts(certA.pem) });
  assert.equal(c.sock.getProtocol(), 'TLSv1.3');
  const r = await c.request('Bench.ping', { n: 1 });
  assert.deepEqual(r.body, { n: 1 });
  c.notify('Bench.note', { x: 2 });
  const p = await c.waitPush('onNote');
  assert.deepEqual(p.body, { x: 2 });
  const big = await c.request('Bench.big', { n: 256 * 1024 });
  assert.equal(big.body.data.length, 256 * 1024);
  await c.close();
});

test('wss://: the ws library connects, handshakes and gets answers', async () => {
  const c = await connect({ ...wssAddr(), tls: tlsOpts(certA.pem) });
  const r = await c.request('Bench.ping', { n: 3 });
  assert.deepEqual(r.body, { n: 3 });
  await c.close();
});

test('https: a static page is served on the wss port, with ALPN http/1.1', async () => {
  const body = await new Promise((resolve, reject) => {
    const req = https.get({
      host: '127.0.0.1', port: srv.listening.wss.port, path: '/web/index.html', ...tlsOpts(certA.pem),
      ALPNProtocols: ['http/1.1'],
    }, (res) => {
      assert.equal(res.statusCode, 200);
      assert.equal(res.socket.alpnProtocol, 'http/1.1');
      let s = '';
      res.on('data', (d) => { s += d; });
      res.on('end', () => resolve(s));
    });
    req.on('error', reject);
  });
  assert.match(body, /over https/);
});

test('openssl s_client completes a TLS 1.3 handshake', () => {
  const r = spawnSync('openssl', ['s_client', '-connect', `127.0.0.1:${srv.listening.tls.port}`,
    '-servername', 'localhost', '-CAfile', path.join(dir, 'a.crt'), '-verify_return_error', '-brief'],
  { input: '', timeout: 10000, encoding: 'utf8' });
  const out = r.stdout + r.stderr;
  assert.match(out, /CONNECTION ESTABLISHED/, out);
  assert.match(out, /Protocol version: TLSv1\.3/, out);
  assert.match(out, /Verification: OK/, out);
});

test('a plain-text pomelo client on the TLS port is closed, with a log line', async () => {
  const hs = packet(PKG.HANDSHAKE, JSON.stringify(DEFAULT_HANDSHAKE));
  await rawClose(srv.listening.tls.port, hs);
  await waitLog(/tls: handshake: [^\n]*; closing/);
  // the plain port is unharmed
  const c = await connect({ transport: 'tcp', host: '127.0.0.1', port: srv.tcp.port });
  await c.request('Bench.ping', { n: 4 });
  await c.close();
});

test('a garbage ClientHello is refused and closed', async () => {
  const before = (srv.stderr.match(/tls: handshake/g) || []).length;
  const junk = Buffer.concat([Buffer.from([0x16, 0x03, 0x01, 0x00, 0x40]), Buffer.alloc(64, 0xee)]);
  await rawClose(srv.listening.tls.port, junk);
  await sleep(50);
  assert.ok((srv.stderr.match(/tls: handshake/g) || []).length > before, srv.logTail());
});

test('a ClientHello cut short is closed at the handshake deadline', async () => {
  // The first bytes of a real ClientHello, then silence: closed by the 1 s handshake timeout.
  const hello = await new Promise((resolve) => {
    const fake = net.createServer((s) => s.once('data', (d) => { resolve(d); s.destroy(); fake.close(); }));
    fake.listen(0, '127.0.0.1', () => {
      const t = tls.connect({ host: '127.0.0.1', port: fake.address().port, rejectUnauthorized: false });
      t.on('error', () => {});
    });
  });
  const t0 = Date.now();
  await rawClose(srv.listening.tls.port, hello.subarray(0, 40));
  const dt = Date.now() - t0;
  assert.ok(dt >= 700 * SLOW, `closed after ${dt} ms: before the handshake deadline`);
});

test('close_notify in the middle of a packet closes cleanly; others are unharmed', async () => {
  const other = await connect({ ...tlsAddr(), tls: tlsOpts(certA.pem) });
  const sock = tls.connect({ host: '127.0.0.1', port: srv.listening.tls.port, ...tlsOpts(certA.pem) });
  await new Promise((r) => sock.once('secureConnect', r));
  sock.on('error', () => {});
  const closed = new Promise((r) => sock.once('close', r));
  sock.write(packet(PKG.HANDSHAKE, JSON.stringify(DEFAULT_HANDSHAKE)).subarray(0, 6));
  sock.end(); // close_notify after half a packet
  await closed;
  await other.request('Bench.ping', { n: 5 });
  await other.close();
});

test('renegotiation is refused (TLS 1.2) and the connection closed', async () => {
  const sock = tls.connect({ host: '127.0.0.1', port: srv.listening.tls.port, maxVersion: 'TLSv1.2', ...tlsOpts(certA.pem) });
  await new Promise((r) => sock.once('secureConnect', r));
  assert.equal(sock.getProtocol(), 'TLSv1.2');
  sock.on('error', () => {});
  const closed = new Promise((r) => sock.once('close', r));
  sock.renegotiate({}, () => {});
  await Promise.race([closed, sleep(5000).then(() => assert.fail('not closed after renegotiation'))]);
  await waitLog(/tls: renegotiation refused|tls: read: [^\n]*renegotiation/);
});

test('certificates rotate on SIGHUP for new connections; live ones keep theirs; a bad one keeps the old', async () => {
  const oldClient = await connect({ ...tlsAddr(), tls: tlsOpts(certA.pem) });
  assert.equal(peerOrg(oldClient), 'a');

  install(certB);
  const reloads = (srv.stderr.match(/reload/gi) || []).length;
  srv.proc.kill('SIGHUP');
  const t0 = Date.now();
  while ((srv.stderr.match(/reload/gi) || []).length === reloads && Date.now() - t0 < 5000) await sleep(20);
  const fresh = await connect({ ...tlsAddr(), tls: tlsOpts(certB.pem) });
  assert.equal(peerOrg(fresh), 'b');
  const freshWs = await connect({ ...wssAddr(), tls: tlsOpts(certB.pem) });
  await freshWs.request('Bench.ping', { n: 6 });
  await oldClient.request('Bench.ping', { n: 7 }); // the live connection goes on with certificate a
  assert.equal(peerOrg(oldClient), 'a');

  // a certificate file that is not a certificate: the reload fails, naming the file; b serves on
  fs.writeFileSync(path.join(dir, 'cert.pem'), 'not a certificate\n');
  srv.proc.kill('SIGHUP');
  await waitLog(/certificate [^\n]*cert\.pem: /);
  const still = await connect({ ...tlsAddr(), tls: tlsOpts(certB.pem) });
  assert.equal(peerOrg(still), 'b');
  for (const c of [oldClient, fresh, freshWs, still]) await c.close();
  install(certB);
});
