'use strict';
// issue 19 #8: numbers keep their value on the way out. Node sends random doubles (any bit
// pattern but NaN/Inf) and integers up to 2^53; nano-host decodes them, and its reply must read
// back in node (JSON.parse) as the very same numbers, written as JSON.stringify writes them —
// both by the C codec (the response itself) and by nano.json's Lua fallback encoder.
// Run by hand: NANO_HOST=build/nano-host node spec/e2e/json_numbers.test.js

const assert = require('node:assert/strict');
const crypto = require('node:crypto');
const { setup, TRANSPORTS } = require('./lib/harness');

const ctx = setup({ script: 'json_numbers.lua' });

function randomDoubles(n) {
  const out = [];
  while (out.length < n) {
    const x = new Float64Array(crypto.randomBytes(8).buffer.slice(0))[0];
    if (Number.isFinite(x)) out.push(x);
  }
  return out;
}

function randomIntegers(n) {
  const out = [];
  for (let i = 0; i < n; i++) {
    const mag = 2 ** Math.floor(Math.random() * 54); // every magnitude up to 2^53
    out.push(Math.round((Math.random() * 2 - 1) * mag) + 0); // + 0: no -0 (JSON writes it as 0)
  }
  return out;
}

const SPECIAL = [
  0, 1, -1, 123456789012345, 1764204000123456, 1234567890123456, 2 ** 53, -(2 ** 53), 2 ** 53 + 2,
  2 ** 60, 1e21, 1e20, 0.1, 0.1 + 0.2, 1 / 3, 1e-7, 1e-6, 5e-324, Number.MAX_VALUE, -Number.MIN_VALUE,
  2.2250738585072014e-308, 4503599627370495.5, 1.7642040001234567e15, 3.141592653589793,
];

function checkSame(sent, got, what) {
  assert.equal(got.length, sent.length, `${what}: length`);
  for (let i = 0; i < sent.length; i++) {
    assert.ok(Object.is(got[i], sent[i]), `${what}: sent ${sent[i]}, got back ${got[i]}`);
  }
}

for (const tr of TRANSPORTS) {
  ctx.test(`${tr}: random doubles and integers come back exactly, written as JSON.stringify writes them`, async () => {
    const c = await ctx.connect(tr);
    const batches = [SPECIAL, randomIntegers(2000), randomDoubles(2000), randomDoubles(2000)];
    for (const list of batches) {
      const r = await c.request('Num.echo', list);
      assert.equal(r.error, false, r.text);
      const want = JSON.stringify(list);
      // the C codec: the response text itself
      assert.ok(r.text.startsWith(`[${want},`), `C codec wrote ${r.text.slice(0, 300)}\nnode writes ${want.slice(0, 300)}`);
      checkSame(list, r.body[0], 'C codec');
      // the Lua fallback encoder
      assert.equal(r.body[1], want, 'Lua fallback encoder');
      checkSame(list, JSON.parse(r.body[1]), 'Lua fallback');
    }
    await c.close();
  });

  ctx.test(`${tr}: a push carries numbers as exactly as a response`, async () => {
    const c = await ctx.connect(tr);
    const list = [1764204000123456, 1234567890123456, 0.1 + 0.2, ...randomDoubles(200)];
    c.notify('Num.push', list);
    const p = await c.waitPush('onNumbers', 5000);
    assert.equal(p.text, JSON.stringify(list));
    checkSame(list, p.body, 'push');
    await c.close();
  });
}
