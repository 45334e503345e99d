'use strict';
// Scraping nano.listen_metrics from an e2e test: the listener's address from the log line, one
// scrape parsed into "name{labels}" -> value, the difference of a sample between two scrapes,
// and promtool's verdict on a scrape's text.
//   const addr = await metricsAddr(srv);  const before = await scrape(addr);  ...
//   assert.equal(delta(before, await scrape(addr), 'nano_x_total{a="b"}'), 3);
const assert = require('node:assert');
const { spawnSync } = require('node:child_process');

async function metricsAddr(srv) {
  for (let i = 0; i < 200; i++) {
    const m = /metrics on http:\/\/([0-9.]+):(\d+)\/metrics/.exec(srv.stderr);
    if (m) return { host: m[1], port: Number(m[2]) };
    await new Promise((r) => setTimeout(r, 25));
  }
  throw new Error(`no metrics line\n${srv.log()}`);
}

// "name{labels}" -> value, for every sample line
function samples(text) {
  const out = new Map();
  for (const line of text.split('\n')) {
    if (!line || line.startsWith('#')) continue;
    const at = line.lastIndexOf(' ');
    out.set(line.slice(0, at), Number(line.slice(at + 1)));
  }
  return out;
}

async function scrape(addr) {
  const res = await fetch(`http://${addr.host}:${addr.port}/metrics`);
  assert.equal(res.status, 200);
  assert.equal(res.headers.get('content-type'), 'text/plain; version=0.0.4; charset=utf-8');
  const text = await res.text();
  return { text, s: samples(text) };
}

// how far a sample moved between two scrapes (absent before: from 0; absent after: a failure)
function delta(before, after, key) {
  const a = after.s.get(key);
  assert.ok(a !== undefined, `${key} missing from the scrape\n${after.text}`);
  return a - (before.s.get(key) || 0);
}

function assertPromtool(text) {
  const r = spawnSync('promtool', ['check', 'metrics'], { input: text, encoding: 'utf8' });
  assert.equal(r.status, 0, `promtool: ${r.stdout}${r.stderr}\n${text}`);
}

module.exports = { metricsAddr, samples, scrape, delta, assertPromtool };
