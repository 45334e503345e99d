'use strict';
// nano.shutdown() called by a handler: the handler's own response still reaches the client,
// then every connection closes and nano-host exits 0.
const test = require('node:test');
const assert = require('node:assert');
const { startServer, fixture } = require('./lib/server');
const { connect } = require('./lib/client');

for (const tr of ['tcp', 'ws']) {
  test(`${tr}: a handler that calls nano.shutdown() still gets its response out`, { timeout: 30000 }, async () => {
    const srv = await startServer(fixture('shutdown_handler.lua'));
    try {
      const c = await connect({ transport: tr, ...srv[tr] });
      const r = await c.request('Admin.stop', {});
      assert.equal(r.error, false, r.text);
      assert.deepEqual(r.body, { stopping: true });
      await c.waitClose(5000);
      assert.ok(await srv.waitExit(10000), `nano-host did not exit\n${srv.logTail()}`);
      assert.equal(srv.exitCode, 0, srv.logTail());
    } finally {
      srv.kill();
    }
  });
}
