'use strict';
// `nano-host --workers 2`: two processes on one port (SO_REUSEPORT), joined as one cluster over a
// real nats-server; SIGHUP to the parent reloads both; a worker killed is started again; SIGTERM
// to the parent stops both and the parent exits 0.

const assert = require('node:assert/strict');
const net = require('node:net');
const { test, before, after } = require('node:test');
const { startServer, fixture, watchdog } = require('./lib/server');
const { connect, closeAll } = require('./lib/client');
const { startNats } = require('./lib/nats');

watchdog(90000);
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
let nats, srv, port;

const freePort = () => new Promise((resolve) => {
  const s = net.createServer();
  s.listen(0, '127.0.0.1', () => {
    const p = s.address().port;
    s.close(() => resolve(p));
  });
});

async function waitFor(what, fn, ms = 8000) {
  const t0 = Date.now();
  while (Date.now() - t0 < ms) {
    if (await fn()) return;
    await sleep(25);
  }
  assert.fail(`timed out waiting for ${what}\n${srv.logTail()}`);
}

const count = (re) => (srv.stderr.match(re) || []).length;

before(async () => {
  nats = await startNats();
  port = await freePort();
  srv = await startServer(fixture('workers.lua'), ['--workers', '2'], {
    expect: ['tcp'], env: { NH_PORT: String(port), NH_NATS: nats.url },
  });
  await waitFor('both workers listening', () => count(/listening tcp:\/\//g) === 2);
});

after(async () => {
  await closeAll();
  if (srv && !srv.exited) await srv.kill();
  if (nats) await nats.cleanup();
});

test('connections to the one port reach both workers, which see each other in the cluster', async () => {
  const seen = new Set();
  for (let i = 0; i < 40 && seen.size < 2; i++) {
    const c = await connect({ transport: 'tcp', host: '127.0.0.1', port });
    const r = await c.request('Worker.who', {});
    seen.add(r.body.worker);
    await c.close();
  }
  assert.deepEqual([...seen].sort(), [1, 2]);
  await waitFor('each worker to see the other', async () => {
    const c = await connect({ transport: 'tcp', host: '127.0.0.1', port });
    const r = await c.request('Worker.who', {});
    await c.close();
    return r.body.members === 2;
  });
});

test('SIGHUP to the parent reloads every worker', async () => {
  const before = count(/reloaded/g);
  srv.proc.kill('SIGHUP');
  await waitFor('two reloads', () => count(/reloaded/g) >= before + 2);
});

test('a worker that dies is started again; the other keeps its players', async () => {
  const { execFileSync } = require('node:child_process');
  const kids = execFileSync('pgrep', ['-P', String(srv.pid)]).toString().trim().split('\n').map(Number);
  assert.equal(kids.length, 2);
  process.kill(kids[0], 'SIGKILL');
  await waitFor('the restart line', () => /worker \d \(pid \d+\) killed by signal 9; starting it again/.test(srv.stderr));
  await waitFor('a third listening line', () => count(/listening tcp:\/\//g) === 3);
});

test('SIGTERM to the parent stops every worker and exits 0', async () => {
  const r = await srv.stop();
  assert.equal(r.code, 0);
});
