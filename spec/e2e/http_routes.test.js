'use strict';
// nano.http.route on the metrics listener, with curl as the client: GET with a query, POST with a
// JSON body, a handler that waits, 404/405/413/500, HEAD, keep-alive with pipelined requests
// answered in order, and a route changed by hot reload (a failed reload changes nothing).
const test = require('node:test');
const assert = require('node:assert');
const fs = require('node:fs');
const os = require('node:os');
const net = require('node:net');
const path = require('node:path');
const { spawnSync } = require('node:child_process');
const { startServer, watchdog } = require('./lib/server');

watchdog();

const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'nh-http-'));
test.after(() => fs.rmSync(tmp, { recursive: true, force: true }));

const MAIN = (greeting) => `
local nano = require "nano"
nano.listen("127.0.0.1:0")
nano.listen_metrics("127.0.0.1:0")
nano.http.route("GET", "/hello", function(req)
  return { body = { text = "${greeting}, " .. (req.query.name or "?"), from = req.remote_addr } }
end)
nano.http.route("POST", "/echo", function(req)
  return { status = 201, headers = { ["X-Seen"] = req.headers["x-test"] or "-" }, body = req.json }
end)
nano.http.route("GET", "/slow", function(req)
  nano.sleep(tonumber(req.query.s) or 0.1)
  return "slept " .. (req.query.s or "") .. "\\n"
end)
nano.http.route("GET", "/boom", function(req) error("kaboom") end)
local task = require "nano.task"
local waiting = {}
nano.http.route("GET", "/wait", function(req)
  return task.await("release", function(resume) waiting[#waiting + 1] = resume end)
end)
nano.http.route("GET", "/waiting", function(req) return tostring(#waiting) end)
nano.http.route("POST", "/release", function(req)
  local n = #waiting
  for _, resume in ipairs(waiting) do resume("released\\n") end
  waiting = {}
  return "released " .. n
end)
`;

function curl(args) {
  const r = spawnSync('curl', ['-s', '-S', '--max-time', '10', '-w', '\n%{http_code}', ...args], { encoding: 'utf8', timeout: 15000 });
  assert.equal(r.status, 0, r.stderr);
  const at = r.stdout.lastIndexOf('\n');
  return { body: r.stdout.slice(0, at), status: Number(r.stdout.slice(at + 1)) };
}

async function withServer(fn) {
  const dir = fs.mkdtempSync(path.join(tmp, 'p-'));
  const main = path.join(dir, 'main.lua');
  fs.writeFileSync(main, MAIN('Hello'));
  const srv = await startServer(main, [], { expect: ['tcp'] });
  try {
    let m;
    for (let i = 0; i < 200 && !(m = /metrics on http:\/\/([0-9.]+:\d+)/.exec(srv.stderr)); i++) await new Promise((r) => setTimeout(r, 25));
    assert.ok(m, srv.log());
    await fn(`http://${m[1]}`, srv, main);
  } finally {
    await srv.stop();
  }
}

test('GET with a query and POST with a JSON body', async () => {
  await withServer(async (base) => {
    const g = curl([`${base}/hello?name=ada%20l`]);
    assert.equal(g.status, 200);
    const body = JSON.parse(g.body);
    assert.equal(body.text, 'Hello, ada l');
    assert.match(body.from, /^127\.0\.0\.1:\d+$/);
    const p = curl(['-i', '-X', 'POST', '-H', 'Content-Type: application/json', '-H', 'X-Test: yes', '-d', '{"a":[1,2]}', `${base}/echo`]);
    assert.equal(p.status, 201);
    assert.match(p.body, /^X-Seen: yes\r$/m);
    assert.match(p.body, /^Content-Type: application\/json\r$/m);
    assert.ok(p.body.endsWith('{"a":[1,2]}'));
    const bad = curl(['-X', 'POST', '-H', 'Content-Type: application/json', '-d', '{nope', `${base}/echo`]);
    assert.equal(bad.status, 400);
  });
});

test('a handler that waits answers later; the listener serves others meanwhile', async () => {
  await withServer(async (base) => {
    const { spawn } = require('node:child_process');
    const waiter = spawn('curl', ['-s', '--max-time', '20', `${base}/wait`]);
    let got = '';
    waiter.stdout.on('data', (d) => (got += d));
    const exited = new Promise((r) => waiter.on('close', r));
    for (let i = 0; i < 400 && curl([`${base}/waiting`]).body !== '1'; i++) await new Promise((r) => setTimeout(r, 25));
    assert.equal(curl([`${base}/waiting`]).body, '1', 'the handler is waiting');
    assert.match(curl([`${base}/hello?name=meanwhile`]).body, /Hello, meanwhile/);
    assert.equal(curl(['-X', 'POST', `${base}/release`]).body, 'released 1');
    assert.equal(await exited, 0);
    assert.equal(got, 'released\n');
  });
});

test('404, 405 with Allow, 413, 500, and HEAD', async () => {
  await withServer(async (base) => {
    assert.equal(curl([`${base}/nope`]).status, 404);
    const m = curl(['-i', '-X', 'DELETE', `${base}/hello`]);
    assert.equal(m.status, 405);
    assert.match(m.body, /^Allow: GET\r$/m);
    const big = path.join(tmp, 'big.bin');
    fs.writeFileSync(big, Buffer.alloc(2 * 1024 * 1024, 97));
    assert.equal(curl(['-X', 'POST', '--data-binary', `@${big}`, `${base}/echo`]).status, 413);
    assert.equal(curl([`${base}/boom`]).status, 500);
    const head = curl(['-I', `${base}/hello`]);
    assert.equal(head.status, 200);
    assert.match(head.body, /Content-Length: \d+/);
    assert.equal(curl([`${base}/healthz`]).body, 'ok\n', 'the core paths still answer');
  });
});

test('keep-alive: pipelined requests on one connection are answered in order', async () => {
  await withServer(async (base) => {
    const { hostname, port } = new URL(base);
    const out = await new Promise((resolve, reject) => {
      const s = net.connect(Number(port), hostname);
      let data = '';
      s.on('data', (d) => (data += d));
      s.on('error', reject);
      s.on('close', () => resolve(data));
      s.write('GET /slow?s=0.2 HTTP/1.1\r\nHost: x\r\n\r\nGET /hello?name=b HTTP/1.1\r\nHost: x\r\n\r\nGET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n');
      setTimeout(() => reject(new Error(`no close: ${data}`)), 8000);
    });
    const order = out.split(/HTTP\/1\.1 \d+ [^\r]*\r\n/).slice(1).map((r) => r.slice(r.indexOf('\r\n\r\n') + 4).trim());
    assert.deepEqual(order.length, 3, out);
    assert.equal(order[0], 'slept 0.2');
    assert.match(order[1], /Hello, b/);
    assert.equal(order[2], 'ok');
  });
});

test('hot reload changes a route; a reload that fails changes nothing', async () => {
  await withServer(async (base, srv, main) => {
    assert.match(curl([`${base}/hello?name=x`]).body, /Hello, x/);
    fs.writeFileSync(main, MAIN('Howdy').replace(/nano\.http\.route\("GET", "\/boom"[^\n]*\n/, ''));
    srv.proc.kill('SIGHUP');
    for (let i = 0; i < 200 && !/reloaded in/.test(srv.stderr); i++) await new Promise((r) => setTimeout(r, 25));
    assert.match(curl([`${base}/hello?name=x`]).body, /Howdy, x/);
    assert.equal(curl([`${base}/boom`]).status, 404, 'a route the new script dropped is gone');
    fs.writeFileSync(main, MAIN('Broken') + '\nerror("reload must fail")\n');
    srv.proc.kill('SIGHUP');
    for (let i = 0; i < 200 && !/reload failed/.test(srv.stderr); i++) await new Promise((r) => setTimeout(r, 25));
    assert.match(srv.stderr, /reload failed/);
    assert.match(curl([`${base}/hello?name=x`]).body, /Howdy, x/, 'the routes before the failed reload');
  });
});
