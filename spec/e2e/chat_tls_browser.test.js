'use strict';
// examples/chat over TLS as a browser meets it: the page from https:// and the chat over wss://
// on one port, with a self-signed certificate this test makes (Chromium told to accept it), two
// tabs that talk to each other. Skipped, with a message, only when Chromium cannot start here.
// Run by hand: NANO_HOST=build/nano-host node spec/e2e/chat_tls_browser.test.js

const assert = require('node:assert/strict');
const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');
const { execFileSync } = require('node:child_process');
const { test, before, after } = require('node:test');
const { startServer, watchdog, SOURCE_DIR } = require('./lib/server');
const { launchChromium } = require('./lib/browser');

watchdog(110000);
const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'nh-chat-tls-'));
let srv = null;

before(async () => {
  execFileSync('openssl', ['req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256',
    '-nodes', '-keyout', path.join(dir, 'key.pem'), '-out', path.join(dir, 'cert.pem'), '-days', '2',
    '-subj', '/CN=127.0.0.1', '-addext', 'subjectAltName=IP:127.0.0.1'], { stdio: 'ignore' });
  srv = await startServer(path.join(SOURCE_DIR, 'examples', 'chat', 'main.lua'), [], {
    expect: ['wss'],
    env: {
      NANO_CHAT_ADDR: '127.0.0.1:0', NANO_CHAT_DB: ':memory:',
      NANO_CHAT_TLS_CERT: path.join(dir, 'cert.pem'),
      NANO_CHAT_TLS_KEY: path.join(dir, 'key.pem'),
    },
  });
});

after(async () => {
  if (srv && !srv.exited) await srv.stop();
  fs.rmSync(dir, { recursive: true, force: true });
});

test('two tabs on https:// chat over wss://', { timeout: 90000 }, async (t) => {
  const browser = await launchChromium({ ignoreHTTPSErrors: true });
  if (browser.skip) {
    console.error(`# chat_tls_browser: browser test skipped: ${browser.skip}`);
    t.skip(browser.skip);
    return;
  }
  const { context, userDataDir } = browser;
  const errors = [];
  try {
    context.setDefaultTimeout(15000);
    const base = `https://127.0.0.1:${srv.listening.wss.port}`;
    const open = async (name) => {
      const page = await context.newPage();
      page.on('pageerror', (e) => errors.push(`${name}: ${e.message}`));
      page.on('console', (m) => m.type() === 'error' && errors.push(`${name} console: ${m.text()}`));
      const res = await page.goto(`${base}/web/?name=${name}`);
      assert.equal(res.status(), 200);
      assert.equal(new URL(page.url()).protocol, 'https:');
      await page.waitForSelector('#status[data-state="online"]');
      return page;
    };
    const alice = await open('alice');
    const bob = await open('bob');
    await alice.fill('#text', 'over wss');
    await alice.press('#text', 'Enter');
    await bob.waitForFunction(() =>
      [...document.querySelectorAll('#messages li.message')].some((li) => li.textContent === 'aliceover wss'));
    assert.equal(await bob.evaluate(() => window.chatClient.socket.url.split(':')[0]), 'wss');
    assert.deepEqual(errors, [], 'no script errors in the pages');
  } finally {
    await context.close();
    fs.rmSync(userDataDir, { recursive: true, force: true });
  }
});
