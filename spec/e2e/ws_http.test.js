'use strict';
// The HTTP side of a WebSocket listener, with curl as the HTTP client and a real WebSocket client
// (ws + pomelo-protocol): nano.http.route served there (GET/POST with a JSON body, a handler that
// waits, one the watchdog aborts, 404/405/413/431, HEAD, keep-alive over one connection, a route changed by hot reload), a
// page and its WebSocket both on "/", a plain GET on a bare WebSocket path answered 400 with a
// body, and page loads that take no session id and leave nano.stats() sessions unchanged.
const test = require('node:test');
const assert = require('node:assert');
const fs = require('node:fs');
const os = require('node:os');
const net = require('node:net');
const path = require('node:path');
const { spawn, spawnSync } = require('node:child_process');
const { startServer, watchdog } = require('./lib/server');
const { connect, closeAll } = require('./lib/client');

watchdog();

const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'nh-wshttp-'));
test.after(async () => {
  await closeAll();
  fs.rmSync(tmp, { recursive: true, force: true });
});

const PAGE = '<!doctype html><title>game</title><script src="app.js"></script>\n';
const APP = 'console.log("the game page");\n';

const MAIN = (greeting) => `
local nano = require "nano"
local task = require "nano.task"
local Room = {}
function Room:whoami(s) return { id = s:id() } end
nano.register(Room, { name = "Room" })
-- the page and its socket share "/" (pomelo's web client always opens it)
nano.listen("127.0.0.1:0", { websocket = true, path = "/", static = { ["/"] = "web" } })
-- a bare WebSocket listener: nothing mapped on its path
nano.listen("127.0.0.1:0", { websocket = true, path = "/nano" })
nano.http.route("GET", "/hello", function(req)
  return { body = { text = "${greeting}, " .. (req.query.name or "?"), from = req.remote_addr } }
end)
nano.http.route("POST", "/echo", function(req)
  return { status = 201, headers = { ["X-Seen"] = req.headers["x-test"] or "-" }, body = req.json }
end)
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
nano.configure({ watchdog = 0.5 })
nano.http.route("GET", "/spin", function(req)
  while true do nano.now() end
end)
nano.http.route("GET", "/stats", function(req)
  local st = nano.stats()
  return { body = { sessions = st.sessions } }
end)
`;

function curl(args) {
  const r = spawnSync('curl', ['-s', '-S', '--max-time', '10', '-w', '\n%{http_code}', ...args], { encoding: 'utf8', timeout: 15000 });
  assert.equal(r.status, 0, r.stderr);
  const at = r.stdout.lastIndexOf('\n');
  return { body: r.stdout.slice(0, at), status: Number(r.stdout.slice(at + 1)), stderr: r.stderr };
}

async function withServer(fn) {
  const dir = fs.mkdtempSync(path.join(tmp, 'p-'));
  fs.mkdirSync(path.join(dir, 'web'));
  fs.writeFileSync(path.join(dir, 'web', 'index.html'), PAGE);
  fs.writeFileSync(path.join(dir, 'web', 'app.js'), APP);
  const main = path.join(dir, 'main.lua');
  fs.writeFileSync(main, MAIN('Hello'));
  const srv = await startServer(main, [], { expect: ['ws'] });
  try {
    let all = [];
    for (let i = 0; i < 200 && all.length < 2; i++) {
      all = [...srv.stderr.matchAll(/listening ws:\/\/([0-9.]+:\d+)(\/\S*)/g)];
      if (all.length < 2) await new Promise((r) => setTimeout(r, 25));
    }
    assert.equal(all.length, 2, srv.log());
    const page = all.find((m) => m[2] === '/');
    const bare = all.find((m) => m[2] === '/nano');
    await fn({ base: `http://${page[1]}`, addr: page[1], bare: `http://${bare[1]}` }, srv, main);
  } finally {
    await srv.stop();
  }
}

async function wsClient(addr, pathName) {
  const [host, port] = addr.split(':');
  return connect({ transport: 'ws', host, port: Number(port), path: pathName });
}

test('GET with a query and POST with a JSON body on the WebSocket listener', async () => {
  await withServer(async ({ base }) => {
    const g = curl([`${base}/hello?name=ada%20l`]);
    assert.equal(g.status, 200, g.body);
    const body = JSON.parse(g.body);
    assert.equal(body.text, 'Hello, ada l');
    assert.match(body.from, /^127\.0\.0\.1:\d+$/);
    const p = curl(['-i', '-X', 'POST', '-H', 'Content-Type: application/json', '-H', 'X-Test: yes', '-d', '{"a":[1,2]}', `${base}/echo`]);
    assert.equal(p.status, 201);
    assert.match(p.body, /^X-Seen: yes\r$/m);
    assert.match(p.body, /^Content-Type: application\/json\r$/m);
    assert.ok(p.body.endsWith('{"a":[1,2]}'), p.body);
    const bad = curl(['-X', 'POST', '-H', 'Content-Type: application/json', '-d', '{nope', `${base}/echo`]);
    assert.equal(bad.status, 400);
  });
});

test('a handler that waits answers later; the listener serves others meanwhile', async () => {
  await withServer(async ({ base }) => {
    const waiter = spawn('curl', ['-s', '--max-time', '20', `${base}/wait`]);
    let got = '';
    waiter.stdout.on('data', (d) => (got += d));
    const exited = new Promise((r) => waiter.on('close', r));
    for (let i = 0; i < 400 && curl([`${base}/waiting`]).body !== '1'; i++) await new Promise((r) => setTimeout(r, 25));
    assert.equal(curl([`${base}/waiting`]).body, '1', 'the handler is waiting');
    assert.match(curl([`${base}/hello?name=meanwhile`]).body, /Hello, meanwhile/);
    assert.equal(curl([`${base}/app.js`]).body, APP, 'a static file meanwhile');
    assert.equal(curl(['-X', 'POST', `${base}/release`]).body, 'released 1');
    assert.equal(await exited, 0);
    assert.equal(got, 'released\n');
  });
});

test('404 with a small body, 405 with Allow, 413 and 431', async () => {
  await withServer(async ({ base }) => {
    const nf = curl([`${base}/nope`]);
    assert.equal(nf.status, 404);
    assert.ok(nf.body.length > 0 && nf.body.length < 200, nf.body);
    const m = curl(['-i', '-X', 'DELETE', `${base}/hello`]);
    assert.equal(m.status, 405);
    assert.match(m.body, /^Allow: GET\r$/m);
    const big = path.join(tmp, 'big.bin');
    fs.writeFileSync(big, Buffer.alloc(2 * 1024 * 1024, 97));
    assert.equal(curl(['-X', 'POST', '--data-binary', `@${big}`, `${base}/echo`]).status, 413);
    const huge = curl(['-H', `X-Pad: ${'a'.repeat(9000)}`, `${base}/hello`]);
    assert.equal(huge.status, 431);
    assert.equal(curl([`${base}/hello?name=after`]).status, 200, 'the listener still serves');
  });
});

test('the watchdog aborts a route handler that never returns: 500, and the listener goes on', async () => {
  await withServer(async ({ base }, srv) => {
    const r = curl([`${base}/spin`]);
    assert.equal(r.status, 500);
    for (let i = 0; i < 200 && !/aborted by the watchdog/.test(srv.stderr); i++) await new Promise((res) => setTimeout(res, 25));
    assert.match(srv.stderr, /aborted by the watchdog/);
    assert.match(curl([`${base}/hello?name=after`]).body, /Hello, after/);
  });
});

test('HEAD answers with the headers GET would send and no body (a route and a file)', async () => {
  await withServer(async ({ base }) => {
    const get = curl([`${base}/hello?name=h`]);
    const head = curl(['-I', `${base}/hello?name=h`]);
    assert.equal(head.status, 200);
    assert.match(head.body, new RegExp(`Content-Length: ${Buffer.byteLength(get.body)}\r`));
    assert.doesNotMatch(head.body, /Hello/);
    const file = curl(['-I', `${base}/app.js`]);
    assert.equal(file.status, 200);
    assert.match(file.body, new RegExp(`Content-Length: ${APP.length}\r`));
    assert.match(file.body, /Content-Type: text\/javascript/);
  });
});

test('keep-alive: curl reuses one connection for two URLs (a route, then a file)', async () => {
  await withServer(async ({ base }) => {
    const r = spawnSync('curl', ['-s', '-S', '--max-time', '10', '-w', '[%{http_code} %{num_connects}]\n',
      `${base}/hello?name=one`, `${base}/app.js`], { encoding: 'utf8', timeout: 15000 });
    assert.equal(r.status, 0, r.stderr);
    const codes = [...r.stdout.matchAll(/\[(\d+) (\d+)\]/g)].map((m) => [Number(m[1]), Number(m[2])]);
    assert.deepEqual(codes, [[200, 1], [200, 0]], `the second transfer opened no connection:\n${r.stdout}`);
    assert.match(r.stdout, /Hello, one/);
    assert.ok(r.stdout.includes(APP));
  });
});

test('pipelined requests on one connection are answered in order, a waiting route first', async () => {
  await withServer(async ({ addr }) => {
    const [host, port] = addr.split(':');
    const out = await new Promise((resolve, reject) => {
      const s = net.connect(Number(port), host);
      let data = '';
      s.on('data', (d) => (data += d));
      s.on('error', reject);
      s.on('close', () => resolve(data));
      s.write('GET /wait HTTP/1.1\r\nHost: x\r\n\r\nGET /hello?name=b HTTP/1.1\r\nHost: x\r\n\r\nGET /app.js HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n');
      setTimeout(() => reject(new Error(`no close: ${data}`)), 8000);
      // release the waiting handler once it waits
      (async () => {
        for (let i = 0; i < 400 && curl([`http://${addr}/waiting`]).body !== '1'; i++) await new Promise((r) => setTimeout(r, 25));
        curl(['-X', 'POST', `http://${addr}/release`]);
      })();
    });
    const order = out.split(/HTTP\/1\.1 \d+ [^\r]*\r\n/).slice(1).map((r) => r.slice(r.indexOf('\r\n\r\n') + 4));
    assert.equal(order.length, 3, out);
    assert.equal(order[0], 'released\n');
    assert.match(order[1], /Hello, b/);
    assert.equal(order[2], APP);
  });
});

test('hot reload changes a route on the WebSocket listener', async () => {
  await withServer(async ({ base }, srv, main) => {
    assert.match(curl([`${base}/hello?name=x`]).body, /Hello, x/);
    fs.writeFileSync(main, MAIN('Howdy').replace(/nano\.http\.route\("POST", "\/echo"[\s\S]*?\nend\)\n/, ''));
    srv.proc.kill('SIGHUP');
    for (let i = 0; i < 200 && !/reloaded in/.test(srv.stderr); i++) await new Promise((r) => setTimeout(r, 25));
    assert.match(curl([`${base}/hello?name=x`]).body, /Howdy, x/);
    assert.equal(curl(['-X', 'POST', '-d', 'x', `${base}/echo`]).status, 404, 'a route the new script dropped is gone');
  });
});

test('a page and its WebSocket both on "/"', async () => {
  await withServer(async ({ base, addr }) => {
    const page = curl([`${base}/`]);
    assert.equal(page.status, 200);
    assert.equal(page.body, PAGE);
    const c = await wsClient(addr, '/');
    const r = await c.request('Room.whoami', {});
    assert.equal(typeof r.body.id, 'number', JSON.stringify(r));
    assert.equal(curl([`${base}/`]).body, PAGE, 'the page again, with the socket open');
    await c.close();
  });
});

test('a file far bigger than send_limit is streamed whole (read in chunks as the queue drains)', async () => {
  await withServer(async ({ base }, srv, main) => {
    const big = Buffer.alloc(3 * 1024 * 1024 + 123);
    for (let i = 0; i < big.length; i++) big[i] = (i * 31 + (i >> 11)) & 255; // default send_limit: 1 MiB
    fs.writeFileSync(path.join(path.dirname(main), 'web', 'big.bin'), big);
    const out = path.join(tmp, 'big.out');
    const r = curl(['-o', out, `${base}/big.bin`]);
    assert.equal(r.status, 200);
    assert.ok(fs.readFileSync(out).equals(big), 'the same bytes');
    assert.match(curl([`${base}/hello?name=after`]).body, /Hello, after/);
  });
});

test('a plain GET on a WebSocket path with nothing mapped is 400 with a body that says why', async () => {
  await withServer(async ({ bare }) => {
    const r = curl([`${bare}/nano`]);
    assert.equal(r.status, 400);
    assert.match(r.body, /\/nano is a WebSocket endpoint/);
    assert.equal(curl([`${bare}/other`]).status, 404);
  });
});

test('page loads take no session id and leave nano.stats() sessions unchanged', async () => {
  await withServer(async ({ base, addr }) => {
    const a = await wsClient(addr, '/');
    const first = (await a.request('Room.whoami', {})).body.id;
    const before = JSON.parse(curl([`${base}/stats`]).body).sessions;
    assert.equal(before, 1);
    for (let i = 0; i < 5; i++) {
      assert.equal(curl([`${base}/`, `${base}/app.js`, `${base}/hello`]).status, 200);
      assert.equal(curl([`${base}/nope`]).status, 404);
    }
    assert.equal(JSON.parse(curl([`${base}/stats`]).body).sessions, before);
    const b = await wsClient(addr, '/');
    const second = (await b.request('Room.whoami', {})).body.id;
    assert.equal(second, first + 1, 'the next session took the next id: the page loads took none');
    await a.close();
    await b.close();
  });
});
