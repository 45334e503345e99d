'use strict';
// pomelo's own web client (npm pomelo-jsclient-websocket) with protobuf on (npm pomelo-protobuf's
// browser build), unchanged, in headless Chromium against nano-host's pomelo protobuf mode: the
// handshake hands it the schemas (it keeps them in localStorage), a request and its response go
// as protobuf both ways, a push is decoded by its schema. Skipped only when Chromium cannot start.

const assert = require('node:assert/strict');
const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');
const { test, before, after } = require('node:test');
const { startServer, fixture, watchdog } = require('./lib/server');
const { launchChromium } = require('./lib/browser');

watchdog(100000);
const web = fs.mkdtempSync(path.join(os.tmpdir(), 'nh-pomelo-web-'));
const mods = path.join(__dirname, 'node_modules');
let srv;

// The page: the three libraries as pomelo's web demos load them, plus the small globals they
// expect (an EventEmitter, and the objects the two UMD-ish builds attach to).
const PAGE = `<!doctype html><meta charset="utf-8"><title>pomelo protobuf</title>
<script>window.module = { exports: {} }; // protocol.js ends with module.exports = Protocol</script>
<script src="protocol.js"></script>
<script>window.protobuf = {}; window.module = { exports: window.protobuf }; // protobuf.js: both</script>
<script src="protobuf.js"></script>
<script>
  // pomelo-client 0.1.1 calls protobuf.decodeStr(route, bytes); pomelo-protobuf 0.4.0's browser
  // build names that decode(route, bytes)
  protobuf.decodeStr = protobuf.decodeStr || protobuf.decode;
  function EventEmitter() {}
  EventEmitter.prototype.on = function (e, f) { (this._ev = this._ev || {}); (this._ev[e] = this._ev[e] || []).push(f); return this; };
  EventEmitter.prototype.once = function (e, f) { var self = this; function g() { self.removeListener(e, g); f.apply(self, arguments); } return this.on(e, g); };
  EventEmitter.prototype.removeListener = function (e, f) { var l = (this._ev || {})[e] || []; var i = l.indexOf(f); if (i >= 0) l.splice(i, 1); return this; };
  EventEmitter.prototype.removeAllListeners = function (e) { if (this._ev) { if (e) delete this._ev[e]; else this._ev = {}; } return this; };
  EventEmitter.prototype.emit = function (e) { var a = [].slice.call(arguments, 1), self = this; ((this._ev || {})[e] || []).slice().forEach(function (f) { f.apply(self, a); }); return this; };
  window.EventEmitter = EventEmitter;
</script>
<script src="pomelo-client.js"></script>
<script>
  window.results = {};
  pomelo.init({ host: location.hostname, port: location.port }, function () {
    results.protos = JSON.parse(localStorage.getItem('protos') || 'null');
    pomelo.on('onChat', function (m) { results.chat = m; });
    pomelo.request('Room.join', { name: 'ann', level: 3 }, function (res) {
      results.join = res;
      pomelo.notify('Room.say', { name: 'ann', text: 'hi over protobuf' });
    });
  });
</script>`;

before(async () => {
  fs.writeFileSync(path.join(web, 'index.html'), PAGE);
  fs.copyFileSync(path.join(mods, 'pomelo-protocol', 'lib', 'protocol.js'), path.join(web, 'protocol.js'));
  fs.copyFileSync(path.join(mods, 'pomelo-protobuf', 'lib', 'client', 'protobuf.js'), path.join(web, 'protobuf.js'));
  fs.copyFileSync(path.join(mods, 'pomelo-jsclient-websocket', 'lib', 'pomelo-client.js'), path.join(web, 'pomelo-client.js'));
  srv = await startServer(fixture('pomelo_web.lua'), [], { expect: ['ws'], env: { NH_WEB_DIR: web } });
});

after(async () => {
  if (srv && !srv.exited) await srv.stop();
  fs.rmSync(web, { recursive: true, force: true });
});

test("pomelo's web client with protobuf talks to nano-host unchanged", { timeout: 60000 }, async (t) => {
  const browser = await launchChromium();
  if (browser.skip) {
    console.error(`# pomelo_protobuf_browser: skipped: ${browser.skip}`);
    t.skip(browser.skip);
    return;
  }
  const { context, userDataDir } = browser;
  const errors = [];
  try {
    const page = await context.newPage();
    page.on('pageerror', (e) => errors.push(process.env.NH_DEBUG_PAGE ? e.stack : e.message));
    page.on('console', (m) => { if (process.env.NH_DEBUG_PAGE) console.error('# page:', m.text()); });
    await page.goto(`http://127.0.0.1:${srv.ws.port}/web/index.html`);
    await page.waitForFunction(() => window.results && window.results.chat, null, { timeout: 15000 })
      .catch(async (e) => {
        const r = await page.evaluate(() => window.results).catch(() => null);
        throw new Error(`${e.message}; page errors ${JSON.stringify(errors)}; results ${JSON.stringify(r)}\n${srv.logTail(20)}`);
      });
    const r = await page.evaluate(() => window.results);
    assert.ok(r.protos && r.protos.server['Room.join'] && r.protos.client['Room.join'], 'the handshake gave the schemas');
    assert.equal(typeof r.protos.version, 'number');
    assert.deepEqual(r.join, { code: 200, users: [{ name: 'ann', level: 3 }], tags: [1, 300, 70000], ratio: 0.5, delta: -3 });
    assert.deepEqual(r.chat, { from: 'ann', text: 'hi over protobuf', ids: [-1, 2] });
    assert.deepEqual(errors, []);
  } finally {
    await context.close();
    fs.rmSync(userDataDir, { recursive: true, force: true });
  }
});
