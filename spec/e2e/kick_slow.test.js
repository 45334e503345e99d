'use strict';
// A kicked client that stops reading: the kick packet waits behind output the client never reads,
// so "close once the queue has drained" would hold the connection (its queue, its max_conns slot)
// for as long as the client likes. The server closes it at the close deadline instead.
const assert = require('node:assert');
const { setup, TRANSPORTS, sleep } = require('./lib/harness');

const ctx = setup({ script: 'kick_slow.lua' });

for (const tr of TRANSPORTS) {
  ctx.test(`${tr}: a kicked client that does not read is closed at the deadline`, async () => {
    const watcher = await ctx.connect(tr);
    const slow = await ctx.connect(tr);
    const before = (await watcher.request('Slow.connections', {})).body.n;
    (tr === 'tcp' ? slow.sock : slow.ws._socket).pause();
    slow.request('Slow.flood_then_kick', { count: 2000 }, { timeoutMs: 20000 }).catch(() => {});
    // 16 MB of pushes, then the kick: far more than loopback's socket buffers take.
    let n = before;
    const until = Date.now() + 8000; // deadline 1 s after the kick, checked by a sweep at most 1 s later
    while (Date.now() < until) {
      await sleep(200);
      n = (await watcher.request('Slow.connections', {})).body.n;
      if (n === before - 1) break;
    }
    assert.equal(n, before - 1, `the kicked, non-reading connection is still open (${n} connections)`);
    slow.sock?.destroy?.();
    slow.ws?.terminate?.();
    await watcher.close();
  });
}
