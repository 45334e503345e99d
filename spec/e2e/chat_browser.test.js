'use strict';
// examples/chat as a player meets it: nano-host serves the page and the WebSocket on one port,
// two headless Chromium tabs (Debian's chromium driven by npm playwright-core) join the room and
// talk to each other. Also: the page's static files (content types, redirect, no traversal), and
// the demo's exact routes and payloads as nano's own web client sees them.
//
// The browser part is skipped, with a message, only when Chromium cannot start here.
// A screenshot of both tabs lands next to the nano-host binary (chat_browser_*.png), or in
// $NH_SCREENSHOT_DIR.
// Run by hand: NANO_HOST=build/nano-host node spec/e2e/chat_browser.test.js

const assert = require('node:assert/strict');
const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');
const http = require('node:http');
const { test, before, after } = require('node:test');
const { startServer, watchdog, binaryPath, SOURCE_DIR } = require('./lib/server');
const { connect, closeAll } = require('./lib/client');
const { launchChromium } = require('./lib/browser');

const WAIT_MS = 15000;

watchdog(115000);
let srv = null;
let base = null; // http://127.0.0.1:PORT

before(async () => {
  srv = await startServer(path.join(SOURCE_DIR, 'examples', 'chat', 'main.lua'), [], {
    expect: ['ws'],
    // a one-second heartbeat, so that the test sees the page's heartbeats keep it connected
    env: { NANO_CHAT_ADDR: '127.0.0.1:0', NANO_CHAT_DB: ':memory:', NANO_CHAT_HEARTBEAT: '1' },
  });
  base = `http://${srv.ws.host}:${srv.ws.port}`;
});

after(async () => {
  await closeAll();
  if (srv && !srv.exited) await srv.stop();
});

function get(urlPath) {
  return new Promise((resolve, reject) => {
    const req = http.get(base + urlPath, (res) => {
      const chunks = [];
      res.on('data', (c) => chunks.push(c));
      res.on('end', () => resolve({ status: res.statusCode, headers: res.headers, body: Buffer.concat(chunks) }));
    });
    req.setTimeout(5000, () => req.destroy(new Error(`GET ${urlPath} timed out`)));
    req.on('error', reject);
  });
}

test('the page and its files are served with their content types', { timeout: 30000 }, async () => {
  const webDir = path.join(SOURCE_DIR, 'examples', 'chat', 'web');
  const cases = [
    ['/web/', 'index.html', 'text/html; charset=utf-8'],
    ['/web/index.html', 'index.html', 'text/html; charset=utf-8'],
    ['/web/nano-client.js', 'nano-client.js', 'text/javascript; charset=utf-8'],
    ['/web/chat.js', 'chat.js', 'text/javascript; charset=utf-8'],
    ['/web/chat.css', 'chat.css', 'text/css; charset=utf-8'],
    ['/web/?name=x', 'index.html', 'text/html; charset=utf-8'],
  ];
  for (const [url, file, type] of cases) {
    const res = await get(url);
    assert.equal(res.status, 200, `GET ${url}`);
    assert.equal(res.headers['content-type'], type, `content type of ${url}`);
    assert.deepEqual(res.body, fs.readFileSync(path.join(webDir, file)), `body of ${url} is ${file}`);
  }
  const redirect = await get('/web');
  assert.equal(redirect.status, 301, 'GET /web redirects');
  assert.equal(redirect.headers.location, '/web/');
});

test('nothing outside web/ can be reached', { timeout: 30000 }, async () => {
  // Each of these would name examples/chat/main.lua (or room.lua) if traversal worked.
  for (const url of ['/web/../main.lua', '/web/%2e%2e/main.lua', '/web/..%2fmain.lua', '/web/.%2e/room.lua',
    '/web/%2E%2E/%2E%2E/examples/chat/main.lua', '/web/..\\main.lua', '/web/missing.html', '/main.lua', '/']) {
    const res = await get(url);
    // "/" is also a WebSocket path of the example (pomelo's web client always opens it): a plain
    // GET there is a bad upgrade, 400.
    assert.equal(res.status, url === '/' ? 400 : 404, `GET ${url} -> ${res.status}`);
    assert.ok(!res.body.toString().includes('nano.register'), `GET ${url} leaked a script`);
  }
});

// What nano's own chat page (starx-wsclient.js on pomelo-protocol) sends and expects.
test("the demo's routes and payloads, as nano's web client sees them", { timeout: 30000 }, async () => {
  const addr = { transport: 'ws', host: srv.ws.host, port: srv.ws.port, path: '/nano' };
  const starxHandshake = { sys: { type: 'js-websocket', version: '0.0.1', rsa: {} } }; // user: undefined
  const a = await connect({ ...addr, handshake: starxHandshake });
  assert.equal(a.handshakeResponse.code, 200);
  assert.equal(typeof a.handshakeResponse.sys.heartbeat, 'number');

  const membersA = a.waitPush('onMembers', 5000);
  const joinA = await a.request('room.join', {});
  assert.equal(joinA.error, false, joinA.text);
  assert.deepEqual(joinA.body, { code: 0, result: 'success' });
  assert.equal((await membersA).text, '{"members":[]}', 'the first one in gets an empty list, as JSON []');

  const b = await connect({ ...addr, handshake: starxHandshake });
  const newUser = a.waitPush('onNewUser', 5000);
  const membersB = b.waitPush('onMembers', 5000);
  const joinB = await b.request('room.join', {});
  assert.deepEqual(joinB.body, { code: 0, result: 'success' });
  const others = (await membersB).body.members;
  assert.equal(others.length, 1, `members seen by the second: ${JSON.stringify(others)}`);
  const announced = /^New user: (\d+)$/.exec((await newUser).body.content);
  assert.ok(announced, `onNewUser: ${JSON.stringify((await newUser).body)}`);
  assert.notEqual(Number(announced[1]), others[0], 'the newcomer is announced, not an old member');

  const atB = b.waitPush('onMessage', 5000);
  const atA = a.waitPush('onMessage', 5000);
  a.notify('room.message', { name: 'guest1', content: 'hello from nano\'s client' });
  assert.deepEqual((await atB).body, { name: 'guest1', content: "hello from nano's client" });
  assert.deepEqual((await atA).body, { name: 'guest1', content: "hello from nano's client" }, 'the sender gets its own message too');
  await a.close();
  await b.close();
});

function screenshotDir() {
  if (process.env.NH_SCREENSHOT_DIR) return process.env.NH_SCREENSHOT_DIR;
  const bin = binaryPath();
  return fs.existsSync(bin) ? path.dirname(bin) : os.tmpdir();
}

test('two browser tabs join the room and chat', { timeout: 90000 }, async (t) => {
  const browser = await launchChromium();
  if (browser.skip) {
    t.diagnostic(`SKIPPED: ${browser.skip}`);
    console.error(`# chat_browser: browser test skipped: ${browser.skip}`);
    t.skip(browser.skip);
    return;
  }
  const { context, userDataDir } = browser;
  const pageErrors = [];
  try {
    context.setDefaultTimeout(WAIT_MS);
    const open = async (name) => {
      const page = await context.newPage();
      page.on('pageerror', (e) => pageErrors.push(`${name}: ${e.message}`));
      page.on('console', (m) => {
        if (m.type() === 'error') pageErrors.push(`${name} console: ${m.text()}`);
      });
      const res = await page.goto(`${base}/web/?name=${name}`);
      assert.equal(res.status(), 200);
      await page.waitForSelector('#status[data-state="online"]');
      return page;
    };
    const lines = (page, sel) => page.$$eval(sel, (els) => els.map((e) => e.textContent));

    const alice = await open('alice');
    assert.deepEqual(await lines(alice, '#messages li.system'), ['you are the first one here', 'joined the room (success)']);

    const bob = await open('bob');
    // alice hears about bob; bob learns who was there
    await alice.waitForFunction(() =>
      [...document.querySelectorAll('#messages li.system')].some((li) => /^New user: \d+$/.test(li.textContent)));
    const bobSystem = await lines(bob, '#messages li.system');
    assert.match(bobSystem[0], /^members: \d+$/, `bob's first line: ${bobSystem[0]}`);

    // alice types and sends with the button; bob sees it
    await alice.fill('#text', 'hi bob, this is alice');
    await alice.click('#send');
    await bob.waitForFunction(() =>
      [...document.querySelectorAll('#messages li.message')].some((li) => li.textContent === 'alicehi bob, this is alice'));
    assert.equal(await alice.inputValue('#text'), '', 'the input is cleared after sending');

    // bob answers with Enter; alice sees it, and markup arrives as text, never as HTML
    await bob.fill('#text', 'hello alice <b>not bold</b>');
    await bob.press('#text', 'Enter');
    await alice.waitForFunction(() =>
      [...document.querySelectorAll('#messages li.message')].some((li) => li.textContent.includes('hello alice <b>not bold</b>')));
    assert.equal(await alice.$$eval('#messages b', (els) => els.length), 0, 'message text is not parsed as HTML');
    // bob's own copy comes back through the server too: wait for it before comparing the tabs
    await bob.waitForFunction(() =>
      [...document.querySelectorAll('#messages li.message')].some((li) => li.textContent.includes('hello alice <b>not bold</b>')));

    // both tabs show the same conversation, in order
    const convA = await lines(alice, '#messages li.message');
    const convB = await lines(bob, '#messages li.message');
    // (a joiner first gets the room's history: what the earlier test said comes before)
    assert.deepEqual(convA.slice(-2), ['alicehi bob, this is alice', 'bobhello alice <b>not bold</b>']);
    assert.deepEqual(convB, convA);
    assert.ok(convA.includes("guest1hello from nano's client"), `the history was shown: ${JSON.stringify(convA)}`);

    // Idle for more than 2.5 times the heartbeat interval: without the page's heartbeats the server
    // would close both connections (it closes a session silent for more than 2.5 x 1 s, checked
    // every 250 ms, so by 2.75 s).
    const idleMs = 3500;
    const before = await alice.evaluate(() => window.chatClient.lastSent);
    await new Promise((r) => setTimeout(r, idleMs));
    for (const page of [alice, bob]) {
      assert.equal(await page.getAttribute('#status', 'data-state'), 'online', 'still online after idling');
    }
    assert.ok((await alice.evaluate(() => window.chatClient.lastSent)) > before, 'the page sent heartbeats');
    await alice.fill('#text', 'still here');
    await alice.press('#text', 'Enter');
    await bob.waitForFunction(() =>
      [...document.querySelectorAll('#messages li.message')].some((li) => li.textContent === 'alicestill here'));

    const dir = screenshotDir();
    fs.mkdirSync(dir, { recursive: true });
    for (const [name, page] of [['alice', alice], ['bob', bob]]) {
      const file = path.join(dir, `chat_browser_${name}.png`);
      await page.screenshot({ path: file });
      assert.ok(fs.statSync(file).size > 5000, `screenshot ${file} looks empty`);
      t.diagnostic(`screenshot: ${file}`);
    }
    assert.deepEqual(pageErrors, [], 'no script errors in the pages');

    // a client that goes away leaves the room. Once bob's WebSocket has closed (the server
    // answered his close frame and closed the socket), any later request sees him gone.
    await bob.evaluate(() => new Promise((resolve) => {
      window.chatClient.on('close', () => resolve());
      window.chatClient.close();
    }));
    await bob.close();
    const probe = await connect({ transport: 'ws', host: srv.ws.host, port: srv.ws.port, path: '/nano' });
    assert.equal((await probe.request('stats.get', {})).body.members, 1, 'bob left the room when he disconnected');
    await probe.close();
  } finally {
    await context.close();
    fs.rmSync(userDataDir, { recursive: true, force: true });
  }
});
