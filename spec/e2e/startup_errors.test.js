'use strict';
// issue 19 #18: an expected start-up failure (a port in use, a missing script) prints one clear
// line and exits non-zero, with no Lua traceback through nano's own files; a bug in the user's
// code keeps its traceback (the user's frames only).
// Run by hand: NANO_HOST=build/nano-host node spec/e2e/startup_errors.test.js

const { test } = require('node:test');
const assert = require('node:assert/strict');
const path = require('node:path');
const { spawnSync } = require('node:child_process');
const { binaryPath, fixture, watchdog } = require('./lib/server');

watchdog(60000);

function run(script) {
  const r = spawnSync(binaryPath(), [script], { encoding: 'utf8', timeout: 20000 });
  assert.equal(r.signal, null, `nano-host was killed (${r.signal}):\n${r.stderr}`);
  const lines = r.stderr.split('\n').filter((l) => l.length > 0);
  return { status: r.status, stderr: r.stderr, lines };
}

test('a port already in use: one line naming the address, exit status 1, no traceback', () => {
  const r = run(fixture('startup/port_in_use.lua'));
  assert.equal(r.status, 1, r.stderr);
  const errors = r.lines.filter((l) => !/ info /.test(l)); // "listening ..." of the first listen
  assert.equal(errors.length, 1, `expected one line:\n${r.stderr}`);
  assert.match(errors[0], /error .*port_in_use\.lua:5: listen 127\.0\.0\.1:\d+: address already in use$/);
  assert.doesNotMatch(r.stderr, /traceback/);
  assert.doesNotMatch(r.stderr, /nano\/(init|reload|host)\.lua/);
});

test('a missing script: one line with the reason, exit status 1', () => {
  const r = run(path.join(__dirname, 'fixtures', 'startup', 'no_such_script.lua'));
  assert.equal(r.status, 1, r.stderr);
  assert.equal(r.lines.length, 1, r.stderr);
  assert.match(r.lines[0], /^nano-host: cannot open .*no_such_script\.lua: No such file or directory$/);
});

test("a bug in the user's code keeps its traceback, without nano-host's own frames", () => {
  const r = run(fixture('startup/user_error.lua'));
  assert.equal(r.status, 1, r.stderr);
  assert.match(r.stderr, /user_error\.lua:2: attempt to index local 't' \(a nil value\)/);
  assert.match(r.stderr, /stack traceback:/);
  assert.match(r.stderr, /user_error\.lua:3: in main chunk/);
  assert.doesNotMatch(r.stderr, /nano\/(init|reload|host)\.lua/);
  assert.doesNotMatch(r.stderr, /xpcall/);
});
