'use strict';
// nano_cluster_rpc_* and nano_cluster_messages_total on a gate, over a real nats-server with
// two room backends: a known number of RPCs that succeed, fail in the handler, time out or find
// no server move the counters by exactly that, by the target's *type* (never its id); the
// latency histogram's count matches; a forwarded client request counts one envelope each way;
// promtool accepts the scrape.
const assert = require('node:assert/strict');
const { test, before, after } = require('node:test');
const { startServer, fixture, watchdog } = require('./lib/server');
const { connect, closeAll } = require('./lib/client');
const { startNats } = require('./lib/nats');
const { metricsAddr, scrape, delta, assertPromtool } = require('./lib/metrics');

watchdog(110000);
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
let nats, gate, room1, room2;

before(async () => {
  nats = await startNats();
  const env = (id) => ({ NH_NATS: nats.url, NH_CLUSTER_HEARTBEAT: '0.25', NH_ID: id });
  for (const id of ['room-1', 'room-2']) {
    const s = await startServer(fixture('cluster/room.lua'), [], { expect: [], env: env(id), readyRe: /cluster: connected to NATS/ });
    if (id === 'room-1') room1 = s; else room2 = s;
  }
  gate = await startServer(fixture('cluster/gate_metrics.lua'), [], { expect: ['tcp'], env: env('gate-1') });
  for (let i = 0; i < 400 && !(/room-1 \(room\) joined/.test(gate.stderr) && /room-2 \(room\) joined/.test(gate.stderr)); i++) await sleep(25);
});

after(async () => {
  await closeAll();
  for (const s of [gate, room1, room2]) if (s && !s.exited) await s.stop();
  if (nats) await nats.cleanup();
});

test('RPCs are counted by target type and outcome, with their latency', async () => {
  const addr = await metricsAddr(gate);
  const c = await connect({ transport: 'tcp', ...gate.tcp });
  const rpc = async (msg, ok) => {
    const r = await c.request('Gate.rpc', msg);
    assert.equal(r.error, false, r.text);
    assert.equal(r.body.ok, ok, r.text);
  };
  const b = await scrape(addr);
  for (let i = 0; i < 3; i++) await rpc({ target: 'room', route: 'Room.count' }, true);
  await rpc({ target: 'room-2', route: 'Room.count' }, true); // by id: counted under its type
  for (let i = 0; i < 2; i++) await rpc({ target: 'room', route: 'Room.fail' }, false);
  await rpc({ target: 'room', route: 'Room.slow', payload: { secs: 0.5 }, timeout: 0.1 }, false);
  await rpc({ target: 'nosuch-42', route: 'Room.count' }, false);
  const a = await scrape(addr);
  assert.equal(delta(b, a, 'nano_cluster_rpc_total{target="room",outcome="ok"}'), 4);
  assert.equal(delta(b, a, 'nano_cluster_rpc_total{target="room",outcome="error"}'), 2);
  assert.equal(delta(b, a, 'nano_cluster_rpc_total{target="room",outcome="timeout"}'), 1);
  assert.equal(delta(b, a, 'nano_cluster_rpc_total{target="room",outcome="unavailable"}'), 0);
  assert.equal(delta(b, a, 'nano_cluster_rpc_total{target="none",outcome="unavailable"}'), 1);
  assert.equal(delta(b, a, 'nano_cluster_rpc_seconds_count{target="room"}'), 7);
  assert.equal(delta(b, a, 'nano_cluster_rpc_seconds_bucket{target="room",le="+Inf"}'), 7);
  assert.ok(delta(b, a, 'nano_cluster_rpc_seconds_sum{target="room"}') >= 0.1, 'the timeout waited 0.1 s');
  assert.equal(delta(b, a, 'nano_cluster_messages_total{direction="out",kind="rpc"}'), 7);
  assert.ok(!/room-[12]|nosuch/.test(a.text), 'no member id or asked-for name in a label');
  assertPromtool(a.text);
  await c.close();
});

test('a forwarded client request counts one envelope out and its response one in', async () => {
  const addr = await metricsAddr(gate);
  const c = await connect({ transport: 'tcp', ...gate.tcp });
  const b = await scrape(addr);
  for (let i = 0; i < 3; i++) assert.equal((await c.request('room.Room.where', {})).error, false);
  const a = await scrape(addr);
  assert.equal(delta(b, a, 'nano_cluster_messages_total{direction="out",kind="fwd"}'), 3);
  assert.equal(delta(b, a, 'nano_cluster_messages_total{direction="in",kind="resp"}'), 3);
  await c.close();
});
