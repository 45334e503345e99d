-- nano.client: the protocol client of nano.test, also usable on its own (bots, load scripts).
local nt = require "nano.test"
local client = require "nano.client"
local core = require "nano.core"
local nano = require "nano"

local FIXTURE = "spec/fixtures/testing/main.lua"

-- This process's nano-host binary, to run scripts in other processes.
local function self_exe()
  local ffi = require "ffi"
  pcall(ffi.cdef, "long readlink(const char *path, char *buf, size_t size);")
  local buf = ffi.new("char[4096]")
  return ffi.string(buf, ffi.C.readlink("/proc/self/exe", buf, 4095))
end

describe("nano.client", function()
  local server
  before_each(function() server = nt.start(FIXTURE) end)
  after_each(function() server:stop() end)

  describe("requests", function()
    it("returns the decoded response", function()
      local c = server:connect()
      assert.same({ a = { 1, 2 }, s = "x" }, c:request("T.ping", { a = { 1, 2 }, s = "x" }))
    end)

    it("raises on an error response with the code and message the server sent", function()
      local c = server:connect()
      local ok, err = pcall(c.request, c, "T.deny", {})
      assert.is_false(ok)
      assert.matches("request 'T.deny' failed: 403 not in room", err, 1, true)
      ok, err = pcall(c.request, c, "T.nothing", {})
      assert.is_false(ok)
      assert.matches("request 'T.nothing' failed: 404 handler not found: T.nothing", err, 1, true)
    end)

    it("gives the error response to try_request instead", function()
      local c = server:connect()
      local res, err = c:try_request("T.deny", {})
      assert.is_nil(res)
      assert.same({ code = 403, msg = "not in room" }, err)
      res, err = c:try_request("T.boom")
      assert.is_nil(res)
      assert.same({ code = 500, msg = "internal error" }, err)
      assert.same({ n = 1 }, c:try_request("T.ping", { n = 1 }))
    end)

    it("matches responses to requests by id when callbacks are used", function()
      local c = server:connect()
      local got = {}
      for i = 1, 5 do
        c:request("T.ping", { i = i }, function(res, err) got[#got + 1] = { res.i, err } end)
      end
      server:wait_until(function() return #got == 5 end)
      assert.same({ { 1 }, { 2 }, { 3 }, { 4 }, { 5 } }, got)
    end)

    it("fails a pending request when the server kicks the client", function()
      local c = server:connect()
      local ok, err = pcall(c.request, c, "T.kickme", {})
      assert.is_false(ok)
      assert.matches("connection closed (kicked by the server) while waiting for the response to 'T.kickme'", err, 1, true)
      assert.is_true(c:was_kicked())
      assert.equal("kicked by the server", c:closed_reason())
      assert.has_error(function() c:request("T.ping", {}) end)
    end)
  end)

  describe("route compression", function()
    it("uses the handshake's dictionary for requests and pushes", function()
      local c = server:connect()
      assert.equal(1, c.dict["T.ping"])
      assert.equal("onNote", c.route_of[2])
      assert.same({ n = 1 }, c:request("T.ping", { n = 1 })) -- sent as code 1
      c:notify("T.note", { n = 2 })
      assert.same({ "onNote", { n = 2 } }, { c:wait_push("onNote") }) -- arrived as code 2
    end)
  end)

  describe("pushes", function()
    it("waits for each push once, in order, and keeps every push in pushes()", function()
      local c = server:connect()
      c:notify("T.many", { n = 3 })
      c:notify("T.note", { x = 1 })
      assert.same({ i = 1 }, select(2, c:wait_push("onMany")))
      assert.same({ x = 1 }, select(2, c:wait_push("onNote")))
      assert.same({ i = 2 }, select(2, c:wait_push("onMany")))
      assert.same({ "onMany", { i = 3 } }, { c:wait_push() })
      assert.same({
        { route = "onMany", msg = { i = 1 } }, { route = "onMany", msg = { i = 2 } },
        { route = "onMany", msg = { i = 3 } }, { route = "onNote", msg = { x = 1 } },
      }, c:pushes())
      assert.same({ { route = "onNote", msg = { x = 1 } } }, c:pushes("onNote"))
      c:clear_pushes()
      assert.same({}, c:pushes())
    end)

    it("calls on_push functions from the loop", function()
      local c = server:connect()
      local seen = {}
      c:on_push("onMany", function(msg, route) seen[#seen + 1] = route .. msg.i end)
      c:notify("T.many", { n = 2 })
      c:sync()
      assert.same({ "onMany1", "onMany2" }, seen)
    end)

    it("keeps at most max_pushes", function()
      local c = server:connect({ max_pushes = 2 })
      c:notify("T.many", { n = 4 })
      c:sync()
      assert.same({ { route = "onMany", msg = { i = 3 } }, { route = "onMany", msg = { i = 4 } } }, c:pushes())
    end)
  end)

  describe("on its own", function()
    it("connects to a host and port with client.connect", function()
      local c = client.connect(server.host, server.port)
      assert.same({ n = 1 }, c:request("T.ping", { n = 1 }))
      assert.equal(c:local_addr(), c:session():remote_addr())
      c:close()
      assert.is_true(c:is_closed())
    end)

    it("opens without blocking and calls back once the handshake is done", function()
      local ready
      local c = client.open(server.host, server.port, nil, function(cl, err) ready = { cl, err } end)
      server:wait_until(function() return ready end)
      assert.same({ c }, ready)
    end)

    it("says why a connection cannot be made", function()
      local port = server.port
      server:stop()
      local ok, err = pcall(client.connect, "127.0.0.1", port, { timeout = 2 })
      assert.is_false(ok)
      assert.matches("cannot connect to 127.0.0.1:" .. port .. ": connect: connection refused", err, 1, true)
      assert.equal(0, require("nano.tcp").count())
    end)

    it("refuses to block inside a loop callback and says what to do instead", function()
      local c = server:connect()
      local err
      nano.invoke(function()
        local _, e = pcall(c.request, c, "T.ping", {})
        err = e
      end)
      server:advance(0)
      server:wait_until(function() return err end)
      assert.matches("would block inside a loop callback", err, 1, true)
      assert.matches("callback form", err, 1, true)
    end)

    it("protects the loop from being run from inside itself", function()
      local err
      nano.invoke(function()
        local _, e = pcall(core.run, "nowait")
        err = e
      end)
      server:advance(0)
      assert.matches("called from inside the loop", err, 1, true)
    end)

    it("runs a bot script whose clients close when nano-host is told to stop", function()
      local p = io.popen("sh -c 'timeout 10 \"$0\" spec/fixtures/testing/bot.lua \"$1\" 2>&1; "
        .. "echo exit=$?' '" .. self_exe() .. "' " .. server.port)
      local pid = assert(tonumber(p:read("*l"):match("^pid (%d+)")))
      local state = require "state"
      local ok, err = pcall(server.wait_until, server, function() return state.calls >= 3 end)
      os.execute("kill -INT " .. pid)
      local out = p:read("*a")
      p:close()
      assert(ok, err)
      assert.matches("calls 1\ncalls 2\ncalls 3\n", out, 1, true)
      assert.matches("closed: closed by the client", out, 1, true)
      assert.matches("exit=0", out, 1, true)
    end)

    it("talks to a nano-host in another process", function()
      -- the server is the end-to-end tests' fixture; under timeout (its pid is the one killed: it
      -- passes the signal on), so that reading its output below ends even if it never listens
      local p = io.popen("exec sh -c 'echo $$; exec timeout -k 2 10 \"$0\" \"$1\" 2>&1' '" .. self_exe()
        .. "' spec/e2e/fixtures/basic.lua")
      local pid = assert(tonumber(p:read("*l")))
      local port
      for line in p:lines() do
        port = line:match("listening tcp://127%.0%.0%.1:(%d+)")
        if port then break end
      end
      local ok, err = pcall(function()
        assert.is_not_nil(port, "the server did not start")
        local c = client.connect("127.0.0.1", tonumber(port))
        assert.same({ n = 1 }, c:request("Bench.ping", { n = 1 }))
        c:notify("Bench.note", { hi = true })
        assert.same({ hi = true }, select(2, c:wait_push("onNote")))
        assert.has_error(function() c:session() end)
        c:close()
      end)
      os.execute("kill " .. pid)
      p:close()
      assert(ok, err)
    end)
  end)
end)
