-- nano.http against a real HTTP server the spec starts (node, spec/fixtures/http/server.js):
-- status, headers, body, methods and request headers, a redirect (off by default), a timeout, a
-- refused connection, a response over the size cap, 100 concurrent requests, and the game loop
-- answering a client while a request waits.
local nt = require "nano.test"
local nano = require "nano"
local U = require "spec.fixtures.api_util"

-- The server's stdin is our popen handle: closing it (teardown) ends the server. popen("w") has
-- no stdout for us, so the port comes through a file.
local srv, port
describe("nano.http", function()
  local server, base
  setup(function()
    local f = os.tmpname()
    srv = io.popen("exec node spec/fixtures/http/server.js > " .. f, "w")
    for _ = 1, 200 do
      local h = io.open(f)
      local line = h and h:read("*l")
      if h then h:close() end
      if line and line ~= "" then port = tonumber(line) break end
      os.execute("sleep 0.02")
    end
    os.remove(f)
    assert(port, "the test HTTP server did not start")
    base = "http://127.0.0.1:" .. port
  end)
  teardown(function() srv:close() end)
  before_each(function() server = nt.start(U.FIXTURE) end)
  after_each(function() server:stop() end)

  it("gets status, headers (lower-cased, repeats joined) and body", function()
    local res = server:run(function() return nano.http.get(base .. "/hello") end)
    assert.equal(200, res.status)
    assert.equal("hello", res.body)
    assert.equal("yes", res.headers["x-test"])
    assert.equal("a=1, b=2", res.headers["set-cookie"])
  end)

  it("sends a method, headers and a body", function()
    local res = server:run(function()
      return nano.http.request{ method = "PUT", url = base .. "/echo", body = '{"a":1}',
        headers = { ["Content-Type"] = "application/json", ["X-Auth"] = "t0ken" } }
    end)
    assert.equal(201, res.status)
    assert.equal('{"a":1}', res.body)
    assert.equal("application/json", res.headers["content-type"])
    assert.equal("PUT", res.headers["x-method"])
    assert.equal("t0ken", res.headers["x-auth"])
  end)

  it("a 404 is a response, not an error", function()
    local res, err = server:run(function() return nano.http.get(base .. "/nothing") end)
    assert.is_nil(err)
    assert.equal(404, res.status)
  end)

  it("does not follow redirects unless asked", function()
    local res = server:run(function() return nano.http.get(base .. "/redirect") end)
    assert.equal(302, res.status)
    local followed = server:run(function() return nano.http.get(base .. "/redirect", { redirects = true }) end)
    assert.equal(200, followed.status)
    assert.equal("hello", followed.body)
  end)

  it("times out with a clear error", function()
    local res, err = server:run(function() return nano.http.get(base .. "/slow?ms=3000", { timeout = 0.2 }) end)
    assert.is_nil(res)
    assert.matches("timed out", err)
  end)

  it("reports a refused connection", function()
    local res, err = server:run(function() return nano.http.get("http://127.0.0.1:1/") end)
    assert.is_nil(res)
    assert.matches("connect", err:lower())
  end)

  it("refuses a 10 MiB response over a 1 MiB cap", function()
    local res, err = server:run(function()
      return nano.http.get(base .. "/big?bytes=" .. 10 * 1024 * 1024, { max_response = 1024 * 1024 })
    end)
    assert.is_nil(res)
    assert.equal("response larger than 1048576 bytes", err)
  end)

  it("gets a 10 MiB response under the default cap", function()
    local res = server:run(function() return nano.http.get(base .. "/big?bytes=" .. 10 * 1024 * 1024) end)
    assert.equal(10 * 1024 * 1024, #res.body)
  end)

  it("runs 100 requests at once", function()
    local done = server:run(function()
      local tasks = {}
      for i = 1, 100 do
        tasks[i] = nano.spawn(function()
          return nano.http.request{ method = "POST", url = base .. "/echo", body = tostring(i) }
        end)
      end
      local ok = 0
      for i = 1, 100 do
        local res = tasks[i]:wait()
        if res and res.body == tostring(i) then ok = ok + 1 end
      end
      return ok
    end)
    assert.equal(100, done)
  end)

  it("the game loop answers players while a request waits", function()
    local c = server:connect()
    local finished_at, pinged_at
    nano.spawn(function()
      nano.http.get(base .. "/slow?ms=500")
      finished_at = nano.now()
    end)
    c:request("Api.echo", { x = 1 })
    pinged_at = nano.now()
    server:wait_until(function() return finished_at end, 5, "the slow request")
    assert.truthy(pinged_at < finished_at)
  end)

  it("rejects bad options", function()
    assert.has_error(function() nano.http.request("x") end, "http.request: expected a table of options")
    local _, err = server:run(function() return nano.http.get("ftp://127.0.0.1/") end)
    assert.equal("url must start with http:// or https://", err)
    local ok, e = pcall(nano.http.get, base .. "/hello")
    assert.is_false(ok)
    assert.matches("nano.http.request waits, so it can only be called from a handler", e)
  end)
end)
