-- The application surface: components (register options, routes, errors), lifecycle hooks,
-- listening, origin checks, heartbeat, dictionary, handshake validator, configuration, invoke,
-- clock, stats and logging.
local nt = require "nano.test"
local nano = require "nano"
local core = require "nano.core"
local U = require "spec.fixtures.api_util"

local function has(list, v)
  for _, x in ipairs(list) do if x == v then return true end end
  return false
end

describe("application", function()
  local server, c, fixture
  before_each(function()
    server = nt.start(U.FIXTURE)
    fixture = package.loaded.api_fixture
    c = server:connect()
  end)
  after_each(function()
    server:stop()
    U.restore_log_level()
  end)

  describe("nano.register", function()
    it("makes every function a handler except lifecycle hooks and _names; routes() lists them", function()
      local routes = nano.routes()
      for _, r in ipairs({ "Api.echo", "Api.note", "Api.upload", "lower.getthing", "Raw.len" }) do
        assert.is_true(has(routes, r), r)
      end
      for _, r in ipairs({ "Api._private", "Api.init", "Api.after_init", "Api.shutdown", "Api.before_shutdown" }) do
        assert.is_false(has(routes, r), r)
      end
      local sorted = { unpack(routes) }
      table.sort(sorted)
      assert.same(sorted, routes)
    end)

    it("a request's return value is its response; a notify's is ignored", function()
      assert.same({ a = { 1, 2 } }, c:request("Api.echo", { a = { 1, 2 } }))
      c:notify("Api.note", { n = 3 })
      assert.same({ n = 3 }, select(2, c:wait_push("onNote")))
    end)

    it("name_func rewrites handler names (nano's WithNameFunc)", function()
      assert.same({ thing = true }, c:request("lower.getthing", {}))
      local _, err = c:try_request("lower.GetThing", {})
      assert.equal(404, err.code)
    end)

    it("raw handlers get the payload undecoded (raw = true or a table of names)", function()
      assert.same({ type = "string", len = 7, data = '{"a":1}' }, c:request("Api.upload", { a = 1 }))
      assert.same({ len = 2 }, c:request("Raw.len", {}))
    end)

    it("takes the name from __name when opts has none", function()
      assert.is_true(has(nano.routes(), "Raw.len"))
    end)

    it("answers error({code, msg}) with that error, other errors with 500, unknown routes with 404", function()
      local logs = U.capture_logs()
      assert.same({ nil, { code = 403, msg = "not allowed" } }, { c:try_request("Api.deny", {}) })
      assert.same({ nil, { code = 500, msg = "internal error" } }, { c:try_request("Api.boom", {}) })
      assert.truthy(U.find(logs, "kaboom"))
      local _, err = c:try_request("Api.nothing", {})
      assert.same({ code = 404, msg = "handler not found: Api.nothing" }, err)
    end)

    it("answers 500 for an error code that is not a 32-bit integer, \"error\" for a msg that is not a string", function()
      local Bad = {}
      local errors = { nan = { code = 0 / 0, msg = "m" }, inf = { code = 1 / 0, msg = "m" },
        frac = { code = 403.5, msg = "m" }, big = { code = 2 ^ 40, msg = "m" },
        word = { code = "forbidden", msg = "m" }, tmsg = { code = 403, msg = { "x" } },
        fmsg = { code = 403, msg = print }, nmsg = { code = 403, msg = 12 },
        numeral = { code = "404", msg = "m" }, neg = { code = -2, msg = "m" } }
      for name, e in pairs(errors) do Bad[name] = function() error(e) end end
      nano.register(Bad, { name = "Bad" })
      local function reply(route) return select(2, c:try_request("Bad." .. route, {})) end
      for _, r in ipairs({ "nan", "inf", "frac", "big", "word" }) do
        assert.same({ code = 500, msg = "m" }, reply(r), r)
      end
      for _, r in ipairs({ "tmsg", "fmsg", "nmsg" }) do
        assert.same({ code = 403, msg = "error" }, reply(r), r)
      end
      assert.same({ code = 404, msg = "m" }, reply("numeral"))
      assert.same({ code = -2, msg = "m" }, reply("neg"))
    end)

    it("Go's hook names (Init, AfterInit, BeforeShutdown, Shutdown) are never routes; register warns", function()
      local logs = U.capture_logs()
      local called = {}
      local Go = {}
      for _, k in ipairs({ "Init", "AfterInit", "BeforeShutdown", "Shutdown", "afterInit", "OnReload" }) do
        Go[k] = function() called[#called + 1] = k end
      end
      function Go:Hello() return { hi = true } end
      nano.register(Go, { name = "Go" })
      assert.same({}, called)
      assert.is_true(has(nano.routes(), "Go.Hello"))
      for _, k in ipairs({ "Init", "AfterInit", "BeforeShutdown", "Shutdown", "afterInit", "OnReload" }) do
        assert.is_false(has(nano.routes(), "Go." .. k), k)
        assert.equal(404, select(2, c:try_request("Go." .. k, {})).code, k)
      end
      assert.same({}, called)
      assert.truthy(U.find(logs, "warn: register Go: Init is not called and not a route: the lifecycle hook is spelled init"))
      assert.truthy(U.find(logs, "rename Go.BeforeShutdown to Go.before_shutdown"))
      assert.truthy(U.find(logs, "register Go: afterInit is not called"))
    end)

    it("accepts nano's cluster form server.Component.handler", function()
      assert.same({ x = 1 }, c:request("game.Api.echo", { x = 1 }))
    end)

    it("registers a component while running: init and after_init run at once, routes at once", function()
      local calls = {}
      local Late = {}
      function Late:init() calls[#calls + 1] = "init" end
      function Late:after_init() calls[#calls + 1] = "after_init" end
      function Late:hello() return { hi = true } end
      assert.equal(Late, nano.register(Late, { name = "Late" }))
      assert.same({ "init", "after_init" }, calls)
      assert.same({ hi = true }, c:request("Late.hello", {}))
    end)

    it("registering the same table again updates its options", function()
      nano.register(fixture.Api, { name = "Api" }) -- no longer raw: upload gets the decoded table
      assert.same({ type = "table", len = 0, data = { a = 1 } }, c:request("Api.upload", { a = 1 }))
    end)

    it("raises on a bad component, name or option", function()
      assert.has_error(function() nano.register("x") end, "register: component must be a table, got string")
      assert.has_error(function() nano.register({}) end)
      assert.has_error(function() nano.register({}, { name = "a.b" }) end)
      assert.has_error(function() nano.register({}, { name = "N", name_func = "lower" }) end,
        "register: name_func must be a function")
      assert.has_error(function() nano.register({}, { name = "Api" }) end, "register: a component named 'Api' exists")
    end)
  end)

  describe("lifecycle", function()
    it("init then after_init for every component, in registration order", function()
      assert.same({ "Api.init", "Lower.init", "Api.after_init", "Lower.after_init" }, fixture.trace)
    end)

    it("before_shutdown, sessions closed, then shutdown, in registration order, once", function()
      local trace = fixture.trace
      nano.on_session_closed(function() trace[#trace + 1] = "session closed" end)
      nano.shutdown()
      nano.shutdown() -- a second call does nothing
      server:stop()
      assert.same({ "Api.init", "Lower.init", "Api.after_init", "Lower.after_init",
                    "Api.before_shutdown", "Lower.before_shutdown", "session closed",
                    "Api.shutdown", "Lower.shutdown" }, trace)
    end)

    it("logs a hook's error and runs the others", function()
      local logs = U.capture_logs()
      local ran = {}
      local A, B = {}, {}
      function A:init() error("init broke") end
      function A:after_init() ran[#ran + 1] = "A" end
      function B:init() ran[#ran + 1] = "B" end
      nano.register(A, { name = "A" })
      nano.register(B, { name = "B" })
      assert.same({ "A", "B" }, ran)
      assert.truthy(U.find(logs, "A.init failed"))
    end)
  end)

  describe("listening", function()
    it("listen returns the bound address; listeners() lists TCP and WebSocket", function()
      local addr = nano.listen("127.0.0.1:0")
      assert.matches("^127%.0%.0%.1:%d+$", addr)
      local tcp_n, ws_n, found = 0, 0, false
      for _, l in ipairs(nano.listeners()) do
        if l.websocket then ws_n = ws_n + 1 else tcp_n = tcp_n + 1 end
        if l.bound == addr then found = true end
      end
      assert.equal(2, tcp_n)
      assert.equal(1, ws_n)
      assert.is_true(found)
      local port = tonumber(addr:match(":(%d+)$"))
      local other = require("nano.client").connect("127.0.0.1", port)
      assert.same({ via = "second" }, other:request("Api.echo", { via = "second" }))
    end)

    local function upgrade(addr, path, origin)
      local host, port = addr:match("^(.*):(%d+)$")
      local r = U.raw(host, tonumber(port), "GET " .. path .. " HTTP/1.1\r\nHost: " .. addr
        .. "\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
        .. "Sec-WebSocket-Version: 13\r\nOrigin: " .. origin .. "\r\n\r\n")
      server:wait_until(function() return r.data:find("\r\n\r\n", 1, true) end)
      r.stream:close()
      return r.data:match("^HTTP/1%.1 (%d+)")
    end

    local function ws_addr()
      for _, l in ipairs(nano.listeners()) do
        if l.websocket then return l.bound end
      end
    end

    it("static prefixes get their slashes; a bad static entry raises", function()
      local id = core.listen("127.0.0.1:0", { websocket = true, static = { { prefix = "/ok/", dir = "." } } })
      assert.truthy(id)
      core.unlisten(id)
      local bad, err = pcall(core.listen, "127.0.0.1:0", { websocket = true, static = { { prefix = "web/", dir = "." } } })
      assert.is_false(bad)
      assert.truthy(err:find("static", 1, true))
      assert.has_error(function() nano.listen("127.0.0.1:0", { websocket = true, static = { ["/w/"] = 5 } }) end)
    end)

    it("configure names the key it refuses and changes nothing then", function()
      local before = nano.config()
      local ok, err = pcall(nano.configure, { heartbeat = 5, max_conns = -1 })
      assert.is_false(ok)
      assert.truthy(err:find("configure: max_conns:", 1, true), err)
      assert.same(before, nano.config())
      ok, err = pcall(nano.configure, { max_packet = "big" })
      assert.is_false(ok)
      assert.truthy(err:find("configure: max_packet: expected a number, got string", 1, true), err)
    end)

    -- nano.test moves every nano.listen to 127.0.0.1:0, so this goes to the core's listen itself.
    -- Under ASan, a listener (or its static folders) not freed on failure fails the run.
    it("a listen that cannot parse or bind its address fails and leaves nothing behind", function()
      local before = nano.stats().listeners
      for _, addr in ipairs({ "nonsense", "127.0.0.1:99999", "[::1", "999.0.0.1:0" }) do
        local id, err = core.listen(addr, { websocket = true, static = { { prefix = "/web/", dir = "web" } } })
        assert.is_nil(id, addr)
        assert.truthy(err:find(addr, 1, true), err)
      end
      assert.equal(before, nano.stats().listeners)
    end)

    it("set_check_origin decides WebSocket upgrades; a listener's own check_origin wins", function()
      local seen
      local fixture_ws = ws_addr()
      nano.set_check_origin(function(origin) seen = origin return origin == "http://good" end)
      assert.equal("101", upgrade(fixture_ws, "/nano", "http://good"))
      assert.equal("403", upgrade(fixture_ws, "/nano", "http://evil"))
      assert.equal("http://evil", seen)
      local own = nano.listen("127.0.0.1:0", { websocket = true, path = "/own",
        check_origin = function(origin) return origin == "http://evil" end })
      assert.equal("101", upgrade(own, "/own", "http://evil"))
      nano.set_check_origin(nil)
      assert.equal("101", upgrade(fixture_ws, "/nano", "http://evil"))
    end)
  end)

  describe("handshake", function()
    it("set_heartbeat_interval is in the handshake and config()", function()
      assert.equal(30, c.handshake.sys.heartbeat)
      nano.set_heartbeat_interval(5)
      assert.equal(5, nano.config().heartbeat)
      assert.equal(5, server:connect().handshake.sys.heartbeat)
      assert.has_error(function() nano.set_heartbeat_interval(0) end, "set_heartbeat_interval: expected seconds (>= 0.01)")
    end)

    it("set_dictionary: clients get it, may send codes, and a new one reaches new clients", function()
      assert.same({ ["Api.echo"] = 1, onNote = 2, onCompressed = 3 }, c.handshake.sys.dict)
      assert.same({ z = 9 }, c:request("Api.echo", { z = 9 })) -- the client sends code 1
      nano.set_dictionary({ ["Api.note"] = 7 })
      assert.same({ ["Api.note"] = 7 }, server:connect().handshake.sys.dict)
      local d = nano.dictionary()
      d["Api.note"] = 8 -- a copy
      assert.equal(7, nano.dictionary()["Api.note"])
      nano.set_dictionary({})
      assert.is_nil(server:connect().handshake.sys.dict)
    end)

    it("set_dictionary raises on bad codes", function()
      assert.has_error(function() nano.set_dictionary({ a = 0 }) end)
      assert.has_error(function() nano.set_dictionary({ a = 70000 }) end)
      assert.has_error(function() nano.set_dictionary({ a = 1, b = 1 }) end)
      assert.has_error(function() nano.set_dictionary("x") end)
    end)

    it("handshake carries servertime", function()
      assert.is_true(math.abs(c.handshake.sys.servertime - os.time()) <= 2)
    end)

    it("set_handshake_validator accepts or refuses a client from its handshake", function()
      local seen
      nano.set_handshake_validator(function(s, hs)
        seen = hs
        if hs.user.version == "1.0" then return true end
        return nil, "client too old"
      end)
      local ok = server:connect({ user = { version = "1.0" } })
      assert.equal("1.0", seen.user.version)
      assert.is_false(ok:is_closed())
      local logs = U.capture_logs()
      assert.has_error(function() server:connect({ user = { version = "0.9" } }) end)
      assert.truthy(U.find(logs, "client too old"))
      nano.set_handshake_validator(function() return false end)
      assert.has_error(function() server:connect() end)
      nano.set_handshake_validator(function() error("validator broke") end)
      assert.has_error(function() server:connect() end)
      nano.set_handshake_validator(nil)
      assert.is_false(server:connect():is_closed())
    end)
  end)

    it("a handshake body repeated from the last accepted one is still validated", function()
      local body = { user = { version = "1.0" } }
      assert.is_false(server:connect(body):is_closed()) -- accepted without a validator: remembered
      assert.is_false(server:connect(body):is_closed()) -- the same body again: accepted
      local calls = 0
      nano.set_handshake_validator(function()
        calls = calls + 1
        return false
      end)
      assert.has_error(function() server:connect(body) end)
      assert.equal(1, calls)
      nano.set_handshake_validator(nil)
      assert.is_false(server:connect(body):is_closed())
    end)

  describe("configuration and the loop", function()
    it("configure sets the core's limits; config reads them", function()
      nano.configure({ send_limit = 65536, max_conns = 50, handshake_timeout = 3 })
      local cfg = nano.config()
      assert.equal(65536, cfg.send_limit)
      assert.equal(50, cfg.max_conns)
      assert.equal(3, cfg.handshake_timeout)
      assert.equal(64 * 1024, cfg.max_packet)
    end)

    it("invoke runs fn on the next loop turn, not at once; an error is logged", function()
      local logs = U.capture_logs()
      local ran = {}
      nano.invoke(function() error("invoke broke") end)
      nano.invoke(function() ran[#ran + 1] = "later" end)
      ran[#ran + 1] = "now"
      server:poll()
      assert.same({ "now", "later" }, ran)
      assert.truthy(U.find(logs, "invoke broke"))
    end)

    it("now is the loop's clock in seconds; advance moves it", function()
      local t0 = nano.now()
      server:advance(10)
      assert.is_true(nano.now() - t0 >= 10)
    end)

    it("stats counts sessions and listeners", function()
      server:connect()
      local st = nano.stats()
      assert.equal(2, st.sessions)
      assert.equal(2, st.connections)
      assert.equal(2, st.listeners)
    end)

    it("stats says what the allocator keeps for small Lua objects: at least what they use", function()
      local st = nano.stats()
      local function fill() -- ~1.3 MB of small tables, garbage once it returns
        local keep = {}
        for i = 1, 20000 do keep[i] = { i } end
        return nano.stats(), #keep
      end
      local grown, n = fill()
      assert.equal(20000, n)
      assert.is_true(grown.lua_slab_bytes >= st.lua_slab_bytes + 1000000)
      collectgarbage()
      -- freed, they stay with the allocator for reuse: the slabs do not shrink (they may grow by
      -- a slab: what runs after `grown` was read, stats' own table among it, can need one in a
      -- size class that was full)
      assert.is_true(nano.stats().lua_slab_bytes >= grown.lua_slab_bytes)
      assert.is_true(nano.stats().lua_memory < grown.lua_memory)
    end)

    it("version is a string", function()
      assert.is_string(nano.version)
      assert.equal(core.version, nano.version)
    end)
  end)

  describe("logging", function()
    it("formats a table argument readably, never as a heap address", function()
      local logs = U.capture_logs()
      nano.log.info({ 1, 2, name = "ann", pos = { x = 1.5, y = 2 }, ["a b"] = "q\"\n" })
      nano.log.warn("player %s joined %s", { uid = 7 }, "room")
      local cyclic = { n = 1 }
      cyclic.self = cyclic
      nano.log.info(cyclic)
      local long = {}
      for i = 1, 100000 do long[i] = i end
      nano.log.info(long)
      assert.equal('info: {1, 2, ["a b"]="q\\"\\n", name="ann", pos={x=1.5, y=2}}', logs[1])
      assert.equal("warn: player {uid=7} joined room", logs[2])
      assert.equal("info: {n=1, self={...}}", logs[3])
      assert.is_true(#logs[4] < 600)
      assert.matches("^info: {1, 2, 3, .*%.%.%.}$", logs[4])
      for _, l in ipairs(logs) do assert.falsy(l:find("table: 0x", 1, true)) end
    end)

    it("nano.log.* formats lines for the logger; nil restores the default", function()
      U.capture_logs() -- for its log level
      local got = {}
      nano.set_logger(function(lvl, msg) got[#got + 1] = { lvl, msg } end)
      nano.log.info("player %d joined %s", 7, "lobby")
      nano.log.warn("plain")
      nano.log.error("bad %s", "thing")
      assert.same({ { "info", "player 7 joined lobby" }, { "warn", "plain" }, { "error", "bad thing" } }, got)
      nano.set_logger(nil)
      nano.log.info("to stderr")
      assert.equal(3, #got)
      assert.has_error(function() nano.set_logger("x") end)
    end)

    it("a logger that raises does not break the caller (the line goes to stderr)", function()
      U.capture_logs()
      nano.set_logger(function() error("logger broke") end)
      assert.has_no.errors(function() nano.log.warn("still logged") end)
    end)

    it("set_log_level drops lines below it", function()
      local logs = U.capture_logs()
      nano.set_log_level("warn")
      nano.log.info("hidden")
      nano.log.debug("hidden too")
      nano.log.warn("shown")
      assert.same({ "warn: shown" }, logs)
      nano.set_log_level("off")
      nano.log.error("nothing")
      assert.equal(1, #logs)
      assert.has_error(function() nano.set_log_level("loud") end)
    end)

    it("enable_debug logs messages going out and sends error text to clients", function()
      local logs = U.capture_logs()
      nano.enable_debug()
      assert.is_true(nano.config().debug)
      c:request("Api.echo", { d = 1 })
      assert.truthy(U.find(logs, "debug: session " .. c:session():id() .. " -> response"))
      local _, err = c:try_request("Api.boom", {})
      assert.equal(500, err.code)
      assert.truthy(err.msg:find("kaboom", 1, true))
      local g = nano.new_group("dbg")
      g:add(c:session())
      g:broadcast("onDbg", {})
      assert.truthy(U.find(logs, "debug: group dbg -> broadcast onDbg to 1 members"))
    end)
  end)
end)
