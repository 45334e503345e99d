'use strict';
// The cluster's series on /metrics (docs/operating.md, "Metrics"), over a real nats-server: a
// gate scraped before and after a known number of nano.rpc calls (ok, a handler error, a timeout,
// an unknown target) and forwarded client requests; each counter moves by exactly that, by target
// server type (never a server id, never a type a client made up), the histograms count the same,
// and promtool accepts the text.
const test = require('node:test');
const { before, after } = test;
const assert = require('node:assert');
const { spawnSync } = require('node:child_process');
const { startServer, fixture, watchdog } = require('./lib/server');
const { connect, closeAll } = require('./lib/client');
const { startNats } = require('./lib/nats');

watchdog(60000);
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
let nats, gate, room;

async function waitFor(what, fn, ms = 5000) {
  const t0 = Date.now();
  while (Date.now() - t0 < ms) {
    if (await fn()) return;
    await sleep(25);
  }
  assert.fail(`timed out after ${ms} ms waiting for ${what}`);
}

function metricsUrl(srv) {
  const m = /metrics on (http:\/\/[0-9.]+:\d+\/metrics)/.exec(srv.stderr);
  assert.ok(m, `no metrics line\n${srv.log()}`);
  return m[1];
}

async function scrape(srv) {
  const res = await fetch(metricsUrl(srv));
  assert.equal(res.status, 200);
  const text = await res.text();
  const s = new Map();
  for (const line of text.split('\n')) {
    if (!line || line.startsWith('#')) continue;
    const at = line.lastIndexOf(' ');
    s.set(line.slice(0, at), Number(line.slice(at + 1)));
  }
  return { text, s };
}

function delta(b, a, key) {
  assert.ok(a.s.has(key), `${key} missing from the scrape:\n${a.text}`);
  return a.s.get(key) - (b.s.get(key) || 0);
}

function promtool(text) {
  const r = spawnSync('promtool', ['check', 'metrics'], { input: text, encoding: 'utf8' });
  assert.equal(r.status, 0, `promtool: ${r.stdout}${r.stderr}`);
}

before(async () => {
  nats = await startNats();
  const env = { NH_NATS: nats.url, NH_CLUSTER_HEARTBEAT: '0.25' };
  room = await startServer(fixture('cluster/room.lua'), [], {
    expect: [], env: { ...env, NH_ID: 'room-1' }, readyRe: /cluster: connected to NATS/,
  });
  gate = await startServer(fixture('cluster/metrics_gate.lua'), [], { expect: ['tcp'], env });
  await waitFor('the gate to see the room', () => /room-1 \(room\) joined/.test(gate.stderr));
  await waitFor('the metrics listener', () => /metrics on http/.test(gate.stderr));
});

after(async () => {
  await closeAll();
  for (const s of [gate, room]) if (s && !s.exited) await s.stop();
  if (nats) await nats.cleanup();
});

const player = () => connect({ transport: 'tcp', host: '127.0.0.1', port: gate.tcp.port });

test('nano.rpc calls count by target type and outcome, and their histogram counts them all', async () => {
  const c = await player();
  const rpcs = async (body) => {
    const r = await c.request('Gate.rpcs', body);
    assert.equal(r.error, false, r.text);
    return r.body;
  };
  const b = await scrape(gate);
  assert.deepEqual(await rpcs({ target: 'room', route: 'Room.count', n: 5 }), { ok: 5, failed: 0 });
  // by id: still labelled with the member's type
  assert.deepEqual(await rpcs({ target: 'room-1', route: 'Room.count', n: 2 }), { ok: 2, failed: 0 });
  assert.deepEqual(await rpcs({ target: 'room', route: 'Room.fail', n: 3 }), { ok: 0, failed: 3 });
  assert.deepEqual(await rpcs({ target: 'room', route: 'Room.slow', body: { secs: 3 }, timeout: 0.2, n: 1 }),
    { ok: 0, failed: 1 });
  assert.deepEqual(await rpcs({ target: 'no-such-type', route: 'X.y', n: 4 }), { ok: 0, failed: 4 });
  const a = await scrape(gate);
  const k = (t, o) => `nano_cluster_rpc_total{target="${t}",outcome="${o}"}`;
  assert.equal(delta(b, a, k('room', 'ok')), 7);
  assert.equal(delta(b, a, k('room', 'error')), 3);
  assert.equal(delta(b, a, k('room', 'timeout')), 1);
  assert.equal(delta(b, a, k('none', 'unavailable')), 4);
  assert.equal(delta(b, a, 'nano_cluster_rpc_seconds_count{target="room"}'), 11);
  assert.equal(delta(b, a, 'nano_cluster_rpc_seconds_bucket{target="room",le="+Inf"}'), 11);
  assert.equal(delta(b, a, 'nano_cluster_rpc_seconds_count{target="none"}'), 4);
  // the timeout alone took 0.2 s or more
  assert.ok(delta(b, a, 'nano_cluster_rpc_seconds_sum{target="room"}') >= 0.2);
  // never a server id or the unknown type's name as a label
  assert.doesNotMatch(a.text, /room-1|no-such-type/);
  promtool(a.text);
});

test('forwarded client requests count by backend type and outcome; a made-up type is "none"', async () => {
  const c = await player();
  const b = await scrape(gate);
  for (let i = 0; i < 4; i++) assert.equal((await c.request('room.Room.where', {})).body.server, 'room-1');
  for (let i = 0; i < 2; i++) assert.equal((await c.request('room.Room.fail', {})).error, true);
  for (let i = 0; i < 3; i++) {
    const r = await c.request(`made${i}.Up.route`, {});
    assert.equal(r.body.code, 503, r.text);
  }
  c.notify('room.Room.where', {});
  c.notify('room.Room.where', {});
  let a;
  await waitFor('the notifications to be counted', async () => {
    a = await scrape(gate);
    return (a.s.get('nano_cluster_forwarded_total{target="room",outcome="notify"}') || 0) -
      (b.s.get('nano_cluster_forwarded_total{target="room",outcome="notify"}') || 0) === 2;
  });
  const k = (t, o) => `nano_cluster_forwarded_total{target="${t}",outcome="${o}"}`;
  assert.equal(delta(b, a, k('room', 'ok')), 4);
  assert.equal(delta(b, a, k('room', 'error')), 2);
  assert.equal(delta(b, a, k('none', 'unavailable')), 3);
  assert.equal(delta(b, a, 'nano_cluster_forwarded_seconds_count{target="room"}'), 6);
  assert.equal(delta(b, a, 'nano_cluster_forwarded_seconds_count{target="none"}'), 3);
  assert.doesNotMatch(a.text, /made\d/);
  promtool(a.text);
});
