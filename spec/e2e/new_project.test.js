'use strict';
// `nano-host new NAME`: the skeleton's own specs pass under `nano-host test`, `nano-host main.lua`
// serves its page (curl) and answers the call the page makes, and a second `new` refuses to
// touch the existing folder.
const test = require('node:test');
const assert = require('node:assert');
const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');
const { spawnSync } = require('node:child_process');
const { startServer, binaryPath, watchdog } = require('./lib/server');
const { connect } = require('./lib/client');

watchdog();

function run(args, cwd, timeout = 60000) {
  return spawnSync(binaryPath(), args, { cwd, encoding: 'utf8', timeout });
}

function curl(url) {
  const r = spawnSync('curl', ['-s', '-S', '--max-time', '10', '-w', '\n%{http_code}', url], {
    encoding: 'utf8',
    timeout: 15000,
  });
  assert.equal(r.status, 0, r.stderr);
  const at = r.stdout.lastIndexOf('\n');
  return { body: r.stdout.slice(0, at), status: Number(r.stdout.slice(at + 1)) };
}

const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'nh-new-'));
const project = path.join(tmp, 'demo');
test.after(() => fs.rmSync(tmp, { recursive: true, force: true }));

test('nano-host new creates the skeleton', () => {
  const r = run(['new', 'demo'], tmp);
  assert.equal(r.status, 0, r.stderr);
  for (const f of ['main.lua', 'spec/hello_spec.lua', '.busted', 'web/index.html', 'web/nano-client.js', 'README.md']) {
    assert.ok(fs.existsSync(path.join(project, f)), `${f} missing`);
  }
  const readme = fs.readFileSync(path.join(project, 'README.md'), 'utf8');
  for (const cmd of ['nano-host main.lua', 'nano-host test', 'kill -HUP']) assert.ok(readme.includes(cmd), cmd);
});

test("the new project's specs pass under nano-host test", () => {
  const r = run(['test'], project, 120000);
  assert.equal(r.status, 0, `${r.stdout}\n${r.stderr}`);
  assert.match(r.stdout, /2 successes \/ 0 failures \/ 0 errors/);
});

test('nano-host main.lua serves the page and answers the call it makes', { timeout: 30000 }, async () => {
  const srv = await startServer(path.join(project, 'main.lua'), [], {
    cwd: project,
    expect: ['ws'],
    env: { NANO_ADDR: '127.0.0.1:0' },
  });
  try {
    const base = `http://127.0.0.1:${srv.ws.port}`;
    const page = curl(`${base}/`);
    assert.equal(page.status, 200);
    assert.match(page.body, /<script src="nano-client.js"><\/script>/);
    assert.match(page.body, /hello\.greet/);
    const js = curl(`${base}/nano-client.js`);
    assert.equal(js.status, 200);
    assert.match(js.body, /class NanoClient|function NanoClient/);
    // what the page does: connect on /nano and request hello.greet
    const c = await connect({ transport: 'ws', host: '127.0.0.1', port: srv.ws.port, path: '/nano' });
    const res = await c.request('hello.greet', { name: 'Ada' });
    assert.equal(res.error, false, res.text);
    assert.equal(res.body.text, 'Hello, Ada!');
    await c.close();
  } finally {
    await srv.stop();
  }
});

test('nano-host new refuses an existing folder and leaves it as it was', () => {
  const main = path.join(project, 'main.lua');
  fs.writeFileSync(main, '-- mine\n');
  const r = run(['new', 'demo'], tmp);
  assert.notEqual(r.status, 0);
  assert.match(r.stderr, /exists; refusing to overwrite/);
  assert.equal(fs.readFileSync(main, 'utf8'), '-- mine\n');
  fs.writeFileSync(path.join(tmp, 'afile'), 'x');
  assert.notEqual(run(['new', 'afile'], tmp).status, 0);
});

test('nano-host new without a name prints its usage', () => {
  const r = run(['new'], tmp);
  assert.equal(r.status, 2);
  assert.match(r.stderr, /usage: nano-host new NAME/);
});
