'use strict';
// `nano-host console`: every command over the host's Unix socket (plain mode: stdin is not a
// terminal), the owner-only socket, eval with an error and eval that loops (stopped by the
// watchdog), malformed commands, a configured path and the console turned off.
const test = require('node:test');
const assert = require('node:assert');
const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');
const { spawn, spawnSync } = require('node:child_process');
const { startServer, fixture, binaryPath, watchdog } = require('./lib/server');
const { connect } = require('./lib/client');

watchdog();

const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'nh-console-'));
fs.chmodSync(tmp, 0o755); // the other-user test must reach the socket to be refused by it
test.after(() => fs.rmSync(tmp, { recursive: true, force: true }));

// Runs `nano-host console ARG` with `input` on stdin: { status, stdout, stderr }.
function consoleRun(arg, input, { user } = {}) {
  return new Promise((resolve) => {
    const cmd = user ? 'runuser' : binaryPath();
    const args = user ? ['-u', user, '--', binaryPath(), 'console', arg] : ['console', arg];
    const p = spawn(cmd, args, { stdio: ['pipe', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    const timer = setTimeout(() => p.kill('SIGKILL'), 20000);
    p.stdout.on('data', (d) => (stdout += d));
    p.stderr.on('data', (d) => (stderr += d));
    p.on('close', (status) => {
      clearTimeout(timer);
      resolve({ status, stdout, stderr });
    });
    p.stdin.on('error', () => {}); // a client that exits early (cannot connect) stops reading
    p.stdin.end(input);
  });
}

async function withHost(env, fn) {
  const srv = await startServer(fixture('console.lua'), [], { expect: ['tcp'], env });
  try {
    await fn(srv);
  } finally {
    await srv.stop();
  }
}

async function consoleLine(srv) {
  for (let i = 0; i < 200; i++) {
    const m = /console on (\S+) /.exec(srv.stderr);
    if (m) return m[1];
    await new Promise((r) => setTimeout(r, 25));
  }
  throw new Error(`no console line\n${srv.log()}`);
}

test('the console socket is owner-only and found by pid', async () => {
  await withHost({ NANO_HOST_RUN_DIR: tmp }, async (srv) => {
    const sock = await consoleLine(srv);
    assert.equal(sock, path.join(tmp, `nano-host-${srv.pid}.sock`));
    const st = fs.statSync(sock);
    assert.ok(st.isSocket());
    assert.equal(st.mode & 0o777, 0o600);
    const r = await consoleRun(String(srv.pid), 'routes\n');
    // by pid the client looks in the same run folder, through the same variable
    assert.equal(r.status, 1, 'without NANO_HOST_RUN_DIR the client looks in /tmp: not found');
    const r2 = spawnSync(binaryPath(), ['console', String(srv.pid)], {
      input: 'routes\n',
      encoding: 'utf8',
      env: { ...process.env, NANO_HOST_RUN_DIR: tmp },
      timeout: 20000,
    });
    assert.equal(r2.status, 0, r2.stderr);
    assert.equal(r2.stdout, 'Lobby.join\n');
  });
});

test('another user cannot connect: the file mode, and the credential check behind it', async (t) => {
  if (process.getuid() !== 0) return t.skip('needs root to run the client as nobody');
  await withHost({ NH_CONSOLE: path.join(tmp, 'perm.sock') }, async (srv) => {
    const sock = await consoleLine(srv);
    const r = await consoleRun(sock, 'stats\n', { user: 'nobody' });
    assert.notEqual(r.status, 0);
    assert.match(r.stderr, /Permission denied/);
    assert.doesNotMatch(r.stdout, /sessions/);
    // with the file opened to everyone, the server still refuses the other user
    fs.chmodSync(sock, 0o666);
    const r2 = await consoleRun(sock, 'stats\n', { user: 'nobody' });
    assert.notEqual(r2.status, 0);
    assert.doesNotMatch(r2.stdout, /sessions/);
    assert.match(srv.stderr, /console: refused a connection from uid \d+/);
    // and its owner still gets in
    const r3 = await consoleRun(sock, 'routes\n');
    assert.equal(r3.status, 0, r3.stderr);
  });
});

test('a host clears sockets killed hosts left; the client with no argument finds the live one', async () => {
  const dir = fs.mkdtempSync(path.join(tmp, 'run-'));
  const dead = spawnSync('true');
  const stale = path.join(dir, `nano-host-${dead.pid}.sock`);
  // a socket file whose process is gone, as SIGKILL leaves it
  const mk = spawnSync('python3', ['-c', 'import socket,sys; socket.socket(socket.AF_UNIX).bind(sys.argv[1])', stale]);
  assert.equal(mk.status, 0, String(mk.stderr));
  assert.ok(fs.existsSync(stale));
  await withHost({ NANO_HOST_RUN_DIR: dir }, async (srv) => {
    await consoleLine(srv);
    assert.ok(!fs.existsSync(stale), 'the stale socket was removed');
    const r = spawnSync(binaryPath(), ['console'], {
      input: 'routes\n',
      encoding: 'utf8',
      env: { ...process.env, NANO_HOST_RUN_DIR: dir },
      timeout: 20000,
    });
    assert.equal(r.status, 0, r.stderr);
    assert.equal(r.stdout, 'Lobby.join\n');
  });
});

test("the client refuses a socket that is not its user's", async (t) => {
  if (process.getuid() !== 0) return t.skip('needs root to make a file owned by nobody');
  const fake = path.join(tmp, 'fake.sock');
  fs.writeFileSync(fake, '');
  fs.chownSync(fake, 65534, 65534);
  const r = await consoleRun(fake, 'stats\n');
  assert.equal(r.status, 1);
  assert.match(r.stderr, /is not a socket of this user/);
});

test('every command answers, in plain mode', async () => {
  const sockPath = path.join(tmp, 'cmds.sock');
  await withHost({ NH_CONSOLE: sockPath }, async (srv) => {
    await consoleLine(srv);
    const a = await connect({ transport: 'tcp', ...srv.tcp });
    const b = await connect({ transport: 'tcp', ...srv.tcp });
    assert.equal((await a.request('Lobby.join', { uid: 101 })).error, false);
    assert.equal((await b.request('Lobby.join', { uid: 102 })).error, false);
    const ida = (await consoleRun(sockPath, 'eval (function() for _, s in ipairs(require("nano.core").sessions()) do if s:uid() == 101 then return s:id() end end end)()\n')).stdout.trim();
    assert.match(ida, /^\d+$/);

    const run = async (line) => {
      const r = await consoleRun(sockPath, `${line}\n`);
      assert.equal(r.status, 0, `${line}: ${r.stderr}`);
      return r.stdout;
    };
    assert.match(await run('help'), /eval LUA/);
    assert.match(await run('stats'), /^sessions\s+2$/m);
    const sessions = await run('sessions');
    assert.match(sessions, new RegExp(`^${ida}\\tuid=101\\ttcp\\t127\\.0\\.0\\.1:\\d+\\topen$`, 'm'));
    assert.match(sessions, /\(2 of 2 sessions\)/);
    assert.match(await run('sessions 1'), /\(1 of 2 sessions\)/);
    const one = await run(`session ${ida}`);
    assert.match(one, /^uid\s+101$/m);
    assert.match(one, /^state\s+open$/m);
    assert.match(one, /^groups\s+lobby$/m);
    assert.match(one, /^address\s+127\.0\.0\.1:\d+$/m);
    assert.match(await run('groups'), /^lobby\t2 members$/m);
    assert.equal(await run('routes'), 'Lobby.join\n');
    assert.match(await run('log debug'), /log level debug/);
    assert.match(await run('log info'), /log level info/);
    assert.equal(await run('reload'), 'reloaded\n');
    assert.match(srv.stderr, /reloaded in/);
    assert.equal(await run('eval print("hi", 1) return 1 + 1, { x = true }'), 'hi\t1\n2\n{"x":true}\n');
    assert.equal(await run('eval nano.sleep(0.05) return "waited"'), '"waited"\n');
    assert.match(await run(`kick ${ida}`), new RegExp(`kicked session ${ida}`));
    await a.waitClose(5000);
    assert.ok(a.packets.some((p) => p.type === 5), 'the client got a kick packet');
    assert.match(await run('groups'), /^lobby\t1 members$/m);
    await b.close();
  });
});

test('eval with an error and eval that loops answer with errors; the host goes on', async () => {
  const sockPath = path.join(tmp, 'eval.sock');
  await withHost({ NH_CONSOLE: sockPath }, async (srv) => {
    await consoleLine(srv);
    const r = await consoleRun(sockPath, 'eval error("boom")\neval while true do end\neval 6 * 7\n');
    assert.equal(r.status, 1, 'a failed command makes the plain-mode exit status 1');
    assert.match(r.stderr, /^error: (console:1: )?boom$/m);
    assert.match(r.stderr, /^error: aborted by the watchdog: console command ran longer than 0\.5 s/m);
    assert.equal(r.stdout, '42\n', 'the next command still runs');
    const c = await connect({ transport: 'tcp', ...srv.tcp });
    assert.equal((await c.request('Lobby.join', { uid: 7 })).error, false);
    await c.close();
  });
});

test('malformed commands get errors, never a crash', async () => {
  const sockPath = path.join(tmp, 'bad.sock');
  await withHost({ NH_CONSOLE: sockPath }, async (srv) => {
    await consoleLine(srv);
    const lines = ['frobnicate', 'sessions abc', 'sessions -1', 'session', 'session 999999', 'kick x', 'log', 'log loud', 'eval', 'eval )(', '\u0000\u0001\u00ff'];
    const r = await consoleRun(sockPath, lines.join('\n') + '\nroutes\n');
    assert.equal(r.status, 1);
    assert.equal(r.stderr.match(/^error: /gm).length, lines.length, r.stderr);
    assert.match(r.stderr, /unknown command 'frobnicate'/);
    assert.match(r.stderr, /no session 999999/);
    assert.match(r.stderr, /unknown level loud/);
    assert.equal(r.stdout, 'Lobby.join\n');
    // a line over the limit: an error, then the connection closes
    const long = await consoleRun(sockPath, `eval ${'x'.repeat(70000)}\n`);
    assert.match(long.stderr, /line too long/);
    const after = await consoleRun(sockPath, 'routes\n');
    assert.equal(after.stdout, 'Lobby.join\n');
  });
});

test('console = false turns it off', async () => {
  await withHost({ NH_CONSOLE: 'off', NANO_HOST_RUN_DIR: tmp }, async (srv) => {
    const c = await connect({ transport: 'tcp', ...srv.tcp });
    await c.close();
    assert.doesNotMatch(srv.stderr, /console on/);
    assert.ok(!fs.existsSync(path.join(tmp, `nano-host-${srv.pid}.sock`)));
  });
});

test('the socket file is removed when the host stops', async () => {
  const sockPath = path.join(tmp, 'gone.sock');
  const srv = await startServer(fixture('console.lua'), [], { expect: ['tcp'], env: { NH_CONSOLE: sockPath } });
  await consoleLine(srv);
  assert.ok(fs.existsSync(sockPath));
  await srv.stop();
  assert.ok(!fs.existsSync(sockPath));
});

test('in a terminal it prompts and edits lines (libedit), through a pty', async (t) => {
  if (spawnSync('script', ['--version']).status !== 0) return t.skip('util-linux script is missing');
  const sockPath = path.join(tmp, 'tty.sock');
  await withHost({ NH_CONSOLE: sockPath }, async (srv) => {
    await consoleLine(srv);
    // script(1) gives the client a pty; SHELL=/bin/sh so that no rc file changes the folder
    const p = spawn('script', ['-qec', `${binaryPath()} console ${sockPath}`, '/dev/null'], {
      env: { ...process.env, SHELL: '/bin/sh' },
      stdio: ['pipe', 'pipe', 'pipe'],
    });
    let out = '';
    p.stdout.on('data', (d) => (out += d));
    const done = new Promise((resolve) => p.on('close', resolve));
    const until = async (re) => {
      for (let i = 0; i < 400 && !re.test(out); i++) await new Promise((r) => setTimeout(r, 25));
      assert.match(out, re);
    };
    try {
      await until(/nano> /);
      p.stdin.write('routes\r');
      await until(/Lobby\.join/);
      // Ctrl-A then typing inserts at the start of the line: line editing is on
      p.stdin.write('utes\x01ro\r');
      await until(/Lobby\.join[^]*Lobby\.join/);
      p.stdin.write('\x04');
      assert.equal(await done, 0);
    } finally {
      p.kill('SIGKILL');
    }
  });
});
