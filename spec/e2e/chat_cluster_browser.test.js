'use strict';
// examples/chat/cluster as players meet it: a nats-server, the chat backend (no listener) and two
// gates; one Chromium page on each gate. Both join the one room and talk to each other: the
// backend's group broadcasts reach players on both gates. Skipped, with a message, only when
// Chromium cannot start here.

const assert = require('node:assert/strict');
const fs = require('node:fs');
const path = require('node:path');
const { test, before, after } = require('node:test');
const { startServer, watchdog, SOURCE_DIR } = require('./lib/server');
const { launchChromium } = require('./lib/browser');
const { startNats } = require('./lib/nats');

watchdog(110000);
const dir = path.join(SOURCE_DIR, 'examples', 'chat', 'cluster');
let nats, backend, gates = [];

before(async () => {
  nats = await startNats();
  const env = { NANO_NATS: nats.url, NANO_CHAT_ADDR: '127.0.0.1:0', NANO_CHAT_DB: ':memory:' };
  backend = await startServer(path.join(dir, 'room_server.lua'), [], { expect: [], env, readyRe: /connected to NATS/ });
  for (let i = 0; i < 2; i++) {
    const g = await startServer(path.join(dir, 'gate.lua'), [], { expect: ['ws'], env });
    const t0 = Date.now();
    while (!/\(chat\) joined/.test(g.stderr) && Date.now() - t0 < 5000) await new Promise((r) => setTimeout(r, 25));
    gates.push(g);
  }
});

after(async () => {
  for (const s of [...gates, backend]) if (s && !s.exited) await s.stop();
  if (nats) await nats.cleanup();
});

test('two players on two gates chat in one room', { timeout: 90000 }, async (t) => {
  const browser = await launchChromium();
  if (browser.skip) {
    console.error(`# chat_cluster_browser: browser test skipped: ${browser.skip}`);
    t.skip(browser.skip);
    return;
  }
  const { context, userDataDir } = browser;
  const errors = [];
  try {
    context.setDefaultTimeout(15000);
    const open = async (gate, name) => {
      const page = await context.newPage();
      page.on('pageerror', (e) => errors.push(`${name}: ${e.message}`));
      const res = await page.goto(`http://127.0.0.1:${gate.ws.port}/web/?name=${name}`);
      assert.equal(res.status(), 200);
      await page.waitForSelector('#status[data-state="online"]');
      return page;
    };
    const has = (page, text) => page.waitForFunction((t) =>
      [...document.querySelectorAll('#messages li')].some((li) => li.textContent.includes(t)), text);
    const alice = await open(gates[0], 'alice');
    await has(alice, 'joined the room');
    const bob = await open(gates[1], 'bob');
    await has(bob, 'joined the room');
    await has(alice, 'New user'); // bob's arrival, announced by the backend to alice's gate
    await alice.fill('#text', 'hello from gate one');
    await alice.press('#text', 'Enter');
    await has(bob, 'hello from gate one');
    await bob.fill('#text', 'and back from gate two');
    await bob.press('#text', 'Enter');
    await has(alice, 'and back from gate two');
    const shot = path.join(process.env.NH_SCREENSHOT_DIR || fs.mkdtempSync('/tmp/nh-shot-'), 'chat_cluster.png');
    await bob.screenshot({ path: shot });
    t.diagnostic(`screenshot: ${shot}`);
    assert.deepEqual(errors, []);
  } finally {
    await context.close();
    fs.rmSync(userDataDir, { recursive: true, force: true });
  }
});
