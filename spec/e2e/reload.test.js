'use strict';
// Hot reload end to end (docs/hot-reload.md): a client stays connected while room.lua is replaced
// under a running nano-host, first with SIGHUP, then with --watch and no signal. The fixture
// (fixtures/reload/app) is copied to a temporary folder for each server; only the copy is edited.
// Broken versions are made from fixtures/reload/versions/room_v2.lua by small edits (below), so
// the line an error must be reported at is known.
// Run by hand: NANO_HOST=build/nano-host node spec/e2e/reload.test.js

const { test, after } = require('node:test');
const assert = require('node:assert/strict');
const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');
const { startServer, fixture, watchdog } = require('./lib/server');
const { connect, closeAll } = require('./lib/client');

watchdog(100000);

const APP = fixture('reload/app');
const V2 = fs.readFileSync(fixture('reload/versions/room_v2.lua'), 'utf8');
const tmpDirs = [];
const servers = [];

after(async () => {
  await closeAll();
  for (const s of servers) if (!s.exited) await s.kill();
  for (const d of tmpDirs) fs.rmSync(d, { recursive: true, force: true });
});

function copyApp() {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'nh-reload-'));
  tmpDirs.push(dir);
  fs.cpSync(APP, dir, { recursive: true });
  return dir;
}

async function start(dir, args = []) {
  const srv = await startServer(path.join(dir, 'main.lua'), args, { expect: ['tcp'] });
  servers.push(srv);
  return srv;
}

// ---- versions of room.lua -------------------------------------------------------------------

function replaceOnce(s, from, to) {
  assert.equal(s.split(from).length, 2, `fixture room_v2.lua should contain "${from}" once`);
  return s.replace(from, to);
}

const lineOf = (s, needle) => s.slice(0, s.indexOf(needle)).split('\n').length;

function withVersion(n) {
  return replaceOnce(V2, 'local VERSION = 2', `local VERSION = ${n}`);
}

// Lines inserted just before `return Room`, after the module made its timer and closed callback.
function beforeReturn(s, lines) {
  return replaceOnce(s, '\nreturn Room', `\n${lines}\nreturn Room`);
}

const VERSIONS = {
  syntaxError() {
    const text = replaceOnce(V2, 'local VERSION = 2', 'local VERSION = = 2');
    return { text, line: lineOf(text, 'local VERSION = = 2') };
  },
  loadError() {
    const text = beforeReturn(withVersion(99), 'error("room refuses to load")');
    return { text, line: lineOf(text, 'error("room refuses to load")') };
  },
  hookError() {
    const hook = 'function Room:on_reload(old) self.counter = -1000; self.added = "hook"; error("on_reload refuses") end';
    const text = beforeReturn(withVersion(98), hook);
    return { text, line: lineOf(text, hook) };
  },
  dictChange() {
    return { text: beforeReturn(withVersion(97), 'nano.set_dictionary({ ["Room.hit"] = 7, onLoadTick = 2 })') };
  },
  v3(extra = false) {
    let text = withVersion(3);
    if (extra) {
      text = replaceOnce(text, 'local nano = require "nano"\n', 'local nano = require "nano"\nlocal greeting = require "lib.greeting"\n');
      text = replaceOnce(text, 'reloads = Room.reloads,', 'reloads = Room.reloads, greeting = greeting,');
    }
    return { text };
  },
};

const room = (dir) => path.join(dir, 'room.lua');

// An editor that saves through a rename (vim, many IDEs): the new inode replaces the old one.
function writeViaRename(file, text) {
  const tmp = path.join(path.dirname(file), `.${path.basename(file)}.swp`);
  fs.writeFileSync(tmp, text);
  fs.renameSync(tmp, file);
}

// ---- waiting on the server's log ------------------------------------------------------------

function waitLog(srv, re, from, timeoutMs = 5000) {
  return new Promise((resolve, reject) => {
    const check = () => {
      const m = re.exec(srv.stderr.slice(from));
      if (!m) return false;
      cleanup();
      resolve(m);
      return true;
    };
    const onExit = () => {
      cleanup();
      reject(new Error(`nano-host exited while waiting for ${re}\n${srv.logTail()}`));
    };
    const timer = setTimeout(() => {
      cleanup();
      reject(new Error(`no log line matching ${re} within ${timeoutMs} ms\n${srv.logTail()}`));
    }, timeoutMs);
    // server.js appends to srv.stderr in its own 'data' listener, registered before this one.
    const cleanup = () => {
      clearTimeout(timer);
      srv.proc.stderr.off('data', check);
      srv.proc.off('exit', onExit);
    };
    srv.proc.stderr.on('data', check);
    srv.proc.on('exit', onExit);
    check();
  });
}

async function sighup(srv, expect) {
  const mark = srv.stderr.length;
  srv.proc.kill('SIGHUP');
  return waitLog(srv, expect, mark);
}

const RELOADED = /reloaded in ([0-9.]+) ms/;
const FAILED = /reload failed, the old code keeps running: ([^\n]*)/;

async function hit(c, opts) {
  const r = await c.request('Room.hit', {}, opts);
  assert.equal(r.error, false, `Room.hit answered with an error: ${r.text}`);
  return r.body;
}

// Index of the first push at or after `from` that matches.
function findPush(c, from, route, pred = () => true) {
  for (let i = from; i < c.pushes.length; i++) {
    const p = c.pushes[i];
    if (p.route === route && pred(p.body)) return i;
  }
  return -1;
}

function waitPushAfter(c, from, route, pred, label) {
  return c.waitFor(() => {
    const i = findPush(c, from, route, pred);
    return i >= 0 ? i : undefined;
  }, 3000, label);
}

const countPushes = (c, from, route) => c.pushes.slice(from).filter((p) => p.route === route);

// ---- SIGHUP --------------------------------------------------------------------------------

test('SIGHUP: same connection gets the new code with its data; broken versions change nothing', { timeout: 40000 }, async () => {
  const dir = copyApp();
  const srv = await start(dir);
  const a = await connect({ transport: 'tcp', host: srv.tcp.host, port: srv.tcp.port });

  assert.deepEqual((await a.request('Room.join', { uid: 42, name: 'ann' })).body, { version: 1, members: 1 });
  await a.request('Room.subscribe', {});
  await a.request('Room.start_timer', {});
  assert.equal((await hit(a)).counter, 1);
  const v1 = await hit(a);
  assert.deepEqual(v1, { version: 1, counter: 2, hits: 2, local_hits: 2, name: 'ann', uid: 42, members: 1 });
  await waitPushAfter(a, 0, 'onLoadTick', (b) => b.version === 1, 'a v1 load tick');

  // v2 over room.lua, then SIGHUP
  fs.writeFileSync(room(dir), V2);
  const beforeReload = a.pushes.length;
  await sighup(srv, RELOADED);
  const v2 = await hit(a);
  assert.deepEqual(v2, {
    version: 2, // new handler
    counter: 3, // component data kept (v2's `counter = 100` is ignored), written as Room.counter
    hits: 3, // nano.persist kept
    local_hits: 1, // a module local starts again
    name: 'ann', // session state kept
    uid: 42, // binding kept
    members: 1, // the group made while loading is the same group
    added: 'v2', // a field the new module adds is added
    reloads: 1, // on_reload ran once, after the swap
    counter_at_reload: 2, // and saw the old component
  });

  // Timers: the load timer is replaced (no v1 tick after the first v2 one); the handler-made
  // timer keeps its old function, which calls the component's newest function.
  const firstV2 = await waitPushAfter(a, beforeReload, 'onLoadTick', (b) => b.version === 2, 'a v2 load tick');
  await a.waitFor(() => (countPushes(a, firstV2, 'onLoadTick').length >= 5 ? true : undefined), 3000, '5 load ticks');
  assert.deepEqual([...new Set(countPushes(a, firstV2, 'onLoadTick').map((p) => p.body.version))], [2],
    'a v1 load timer still runs after the reload');
  const rt = await waitPushAfter(a, firstV2, 'onRuntimeTick', () => true, 'a runtime tick after the reload');
  assert.deepEqual(a.pushes[rt].body, { closure: 1, table: 2 });

  // The group keeps its members: a new member's broadcast reaches the one that joined under v1.
  const b = await connect({ transport: 'tcp', host: srv.tcp.host, port: srv.tcp.port });
  assert.deepEqual((await b.request('Room.join', { uid: 7, name: 'bob' })).body, { version: 2, members: 2 });
  assert.deepEqual((await b.request('Room.shout', { text: 'hi' })).body, { version: 2 });
  assert.deepEqual((await a.waitPush('onShout')).body, { version: 2, text: 'hi' });

  // on_session_closed was replaced, not added to: one callback (v2's) for b's close.
  let mark = a.pushes.length;
  await b.close();
  await waitPushAfter(a, mark, 'onClosed', () => true, 'onClosed for b');
  await hit(a); // a round trip: every callback of that close has run before this answer
  assert.deepEqual(countPushes(a, mark, 'onClosed').map((p) => p.body.version), [2]);

  // Broken versions: each is refused, logged with file and line, and v2 keeps answering.
  let counter = 4;
  for (const name of ['syntaxError', 'loadError', 'hookError', 'dictChange']) {
    const v = VERSIONS[name]();
    fs.writeFileSync(room(dir), v.text);
    const m = await sighup(srv, FAILED);
    if (v.line) assert.match(m[1], new RegExp(`room\\.lua:${v.line}:`), `${name}: file and line in the log`);
    if (name === 'dictChange') assert.match(m[1], /dictionary/);
    const r = await hit(a, { compress: name === 'dictChange' }); // the old route code still works
    counter += 1;
    assert.equal(r.version, 2, `${name}: the old code keeps serving`);
    assert.equal(r.counter, counter, `${name}: component data untouched`);
    assert.equal(r.added, 'v2', `${name}: component fields untouched`);
    assert.equal(r.reloads, 1, `${name}: on_reload of a failed version left no trace`);
  }
  // Nothing the failed versions made is running: no ticks from them, one closed callback.
  const c2 = await connect({ transport: 'tcp', host: srv.tcp.host, port: srv.tcp.port });
  mark = a.pushes.length;
  await c2.close();
  await waitPushAfter(a, mark, 'onClosed', () => true, 'onClosed for c2');
  await hit(a);
  counter += 1;
  assert.deepEqual(countPushes(a, mark, 'onClosed').map((p) => p.body.version), [2]);
  const versionsSeen = new Set(a.pushes.filter((p) => p.route === 'onLoadTick').map((p) => p.body.version));
  assert.deepEqual([...versionsSeen].sort(), [1, 2], 'load ticks from a failed version');

  // The next good edit reloads.
  fs.writeFileSync(room(dir), VERSIONS.v3().text);
  await sighup(srv, RELOADED);
  const v3 = await hit(a);
  counter += 1;
  assert.equal(v3.version, 3);
  assert.equal(v3.counter, counter);
  assert.equal(v3.reloads, 2);
  assert.equal(v3.name, 'ann');
  assert.equal(a.closed, false);
  await a.close();
  await srv.stop();
});

// ---- --watch -------------------------------------------------------------------------------

test('--watch: edits reload without a signal, broken edits are refused, new subfolders are watched', { timeout: 40000 }, async () => {
  const dir = copyApp();
  const srv = await start(dir, ['--watch']);
  await waitLog(srv, /watching \d+ folders? for \.lua changes/, 0);
  const a = await connect({ transport: 'tcp', host: srv.tcp.host, port: srv.tcp.port });
  await a.request('Room.join', { uid: 5, name: 'eve' });
  assert.equal((await hit(a)).version, 1);

  // saved the way vim does: a new file renamed over the old one
  let mark = srv.stderr.length;
  writeViaRename(room(dir), V2);
  await waitLog(srv, RELOADED, mark);
  let r = await hit(a);
  assert.deepEqual([r.version, r.counter, r.name, r.uid, r.reloads], [2, 2, 'eve', 5, 1]);

  // written in place with a syntax error: refused, logged with the line; v2 keeps answering
  const bad = VERSIONS.syntaxError();
  mark = srv.stderr.length;
  fs.writeFileSync(room(dir), bad.text);
  const m = await waitLog(srv, FAILED, mark);
  assert.match(m[1], new RegExp(`room\\.lua:${bad.line}:`));
  r = await hit(a);
  assert.deepEqual([r.version, r.counter], [2, 3]);

  // a new subfolder with a module (moved in whole, as a checkout would) and a room.lua using it
  const staging = fs.mkdtempSync(path.join(os.tmpdir(), 'nh-reload-lib-'));
  tmpDirs.push(staging);
  fs.mkdirSync(path.join(staging, 'lib'));
  fs.writeFileSync(path.join(staging, 'lib', 'greeting.lua'), 'return "hello"\n');
  fs.renameSync(path.join(staging, 'lib'), path.join(dir, 'lib'));
  mark = srv.stderr.length;
  fs.writeFileSync(room(dir), VERSIONS.v3(true).text); // in place: seen half-written, it fails to load
  await waitLog(srv, RELOADED, mark);
  r = await hit(a);
  assert.deepEqual([r.version, r.counter, r.greeting, r.reloads], [3, 4, 'hello', 2]);

  // editing only the module in the new subfolder reloads too (saved through a rename: a save
  // in place could be seen half-written, as an empty module, which would load)
  mark = srv.stderr.length;
  writeViaRename(path.join(dir, 'lib', 'greeting.lua'), 'return "bonjour"\n');
  await waitLog(srv, RELOADED, mark);
  r = await hit(a);
  assert.deepEqual([r.version, r.counter, r.greeting, r.reloads], [3, 5, 'bonjour', 3]);

  // a debounced save is one reload, however many events it makes
  assert.equal(srv.stderr.split('reloaded in ').length - 1, 3, 'reloads logged');
  assert.equal(a.closed, false);
  await a.close();
  await srv.stop();
});
