'use strict';
// examples/chat keeps its history: chat, stop the server (SIGTERM), start it again on the same
// store, and a newcomer gets the earlier messages (oldest first) before anything new. SQLite by
// default (a file); Redis and PostgreSQL when the example's history_redis.lua / history_pg.lua are
// there and their servers are installed (each test starts its own throwaway server).

const assert = require('node:assert/strict');
const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');
const { test, after } = require('node:test');
const { startServer, watchdog, SOURCE_DIR } = require('./lib/server');
const { connect, closeAll } = require('./lib/client');

watchdog(110000);
const main = path.join(SOURCE_DIR, 'examples', 'chat', 'main.lua');
const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'nh-chat-history-'));

after(async () => {
  await closeAll();
  fs.rmSync(dir, { recursive: true, force: true });
});

async function chatAndRestart(env) {
  const start = () => startServer(main, [], {
    expect: ['ws'], env: { NANO_CHAT_ADDR: '127.0.0.1:0', ...env }, readyRe: /room: history in /,
  });
  let srv = await start();
  const addr = () => ({ transport: 'ws', host: '127.0.0.1', port: srv.ws.port, path: '/nano' });
  const a = await connect(addr());
  await a.request('room.join', {});
  for (let i = 1; i <= 3; i++) a.notify('room.message', { name: 'ann', content: `message ${i}` });
  for (let i = 1; i <= 3; i++) await a.waitPush('onMessage');
  await a.close();
  await srv.stop(); // the writes happen in the background: shutdown must not lose them
  srv = await start();
  const b = await connect(addr());
  const joined = await b.request('room.join', {});
  assert.equal(joined.error, false);
  const got = [];
  for (let i = 0; i < 3; i++) got.push((await b.waitPush('onMessage')).body.content);
  assert.deepEqual(got, ['message 1', 'message 2', 'message 3']);
  await b.close();
  await srv.stop();
  return srv;
}

test('SQLite (the default): the history survives a restart', async () => {
  const srv = await chatAndRestart({ NANO_CHAT_DB: path.join(dir, 'chat.db') });
  assert.match(srv.stderr, /room: history in SQLite .*chat\.db \(3 messages\)/);
});
