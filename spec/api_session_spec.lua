-- Sessions: every session method through real connections, and the close callbacks
-- (s:on_close, nano.on_session_closed) for every way a connection ends.
local nt = require "nano.test"
local nano = require "nano"
local U = require "spec.fixtures.api_util"

describe("sessions", function()
  local server, c, s
  before_each(function()
    server = nt.start(U.FIXTURE)
    c = server:connect()
    s = c:session()
  end)
  after_each(function()
    server:stop()
    U.restore_log_level()
  end)

  describe("identity", function()
    it("id is unique; uid is 0 until bind", function()
      local s2 = server:connect():session()
      assert.is_number(s:id())
      assert.are_not.equal(s:id(), s2:id())
      assert.equal(0, s:uid())
      assert.same({ uid = 7 }, c:request("Api.bind", { uid = 7 }))
      assert.equal(7, s:uid())
    end)

    it("bind refuses a uid that is not a positive integer", function()
      for _, bad in ipairs({ 0, -3, 1.5 }) do
        local _, err = c:try_request("Api.bind", { uid = bad })
        assert.same({ code = 400, msg = "illegal uid: must be a positive integer" }, err)
      end
      assert.equal(0, s:uid())
    end)

    it("last_mid is the id of the last request", function()
      assert.equal(0, s:last_mid())
      c:request("Api.echo", {})
      c:request("Api.echo", {})
      assert.equal(c.next_id, s:last_mid())
    end)

    it("remote_addr is the client's address and transport is tcp", function()
      assert.equal(c:local_addr(), s:remote_addr())
      assert.equal("tcp", s:transport())
      assert.is_false(s:is_closed())
    end)

    it("id, uid and is_closed answer after the session closed (read through the FFI)", function()
      c:request("Api.bind", { uid = 42 })
      local id = s:id()
      c:close()
      server:wait_until(function() return s:is_closed() end)
      assert.equal(id, s:id())
      assert.equal(42, s:uid())
      assert.is_true(s:is_closed())
    end)

    it("id, uid and is_closed raise for a receiver that is not a session", function()
      for _, m in ipairs({ "id", "uid", "is_closed" }) do
        for _, bad in ipairs({ {}, newproxy(true), 1 }) do
          assert.has_error(function() nano.session_methods[m](bad) end)
        end
      end
    end)

    it("tostring names the session", function()
      assert.matches("^session " .. s:id(), tostring(s))
    end)
  end)

  describe("sending", function()
    it("push reaches the client", function()
      assert.is_true(s:push("onHello", { n = 1 }))
      assert.same({ "onHello", { n = 1 } }, { c:wait_push("onHello") })
    end)

    it("push returns nil, err for a value that does not serialize", function()
      local ok, err = s:push("onHello", { f = print })
      assert.is_nil(ok)
      assert.matches("^cannot serialize", err)
    end)

    it("response answers the request being handled", function()
      assert.same({ responded = true }, c:request("Api.respond", {}))
    end)

    it("response inside a notify handler returns nil, err (nano's ErrSessionOnNotify)", function()
      c:notify("Api.respond_on_notify", {})
      c:sync()
      assert.same({ nil, "response called while handling a notify" }, s:get("response_result"))
    end)

    it("response_mid answers a given request later", function()
      local got
      c:request("Api.later", { after = 1 }, function(res) got = res end)
      server:wait_until(function() return s:last_mid() > 0 end)
      server:advance(1)
      server:wait_until(function() return got end)
      assert.same({ later = true, mid = s:last_mid() }, got)
    end)

    it("push of a flat value goes through the FFI, by the route's name or its dictionary code", function()
      local core = require "nano.core"
      local before = core.ffi_pushes()
      local v = { n = 1.5, text = "h\"i", yes = true, inner = { k = -2 } }
      assert.is_true(s:push("onHello", v))
      assert.is_true(s:push("onNote", { n = 2 })) -- code 2 in the fixture's dictionary
      assert.same({ "onHello", v }, { c:wait_push("onHello") })
      assert.same({ "onNote", { n = 2 } }, { c:wait_push("onNote") })
      assert.equal(2, core.ffi_pushes() - before)
    end)

    it("push of what the flat writer leaves (an array) goes through the core's encoder", function()
      local core = require "nano.core"
      local before = core.ffi_pushes()
      assert.is_true(s:push("onHello", { 1, 2, { a = { b = { c = 3 } } } }))
      assert.same({ "onHello", { 1, 2, { a = { b = { c = 3 } } } } }, { c:wait_push("onHello") })
      assert.equal(0, core.ffi_pushes() - before)
    end)

    it("push through the FFI returns push's errors: a route too long, a message too big", function()
      assert.same({ nil, "route longer than 255 bytes" }, { s:push(string.rep("r", 256), { n = 1 }) })
      assert.same({ nil, "message too big" }, { s:push("onHello", { pad = string.rep("z", 0x1000000) }) })
      assert.is_true(s:push("onHello", { n = 3 })) -- the session is not harmed
      assert.same({ "onHello", { n = 3 } }, { c:wait_push("onHello") })
    end)

    it("push raises for a receiver that is not a session, as a session method does", function()
      for _, bad in ipairs({ {}, newproxy(true), 1 }) do
        assert.has_error(function() nano.session_methods.push(bad, "onHello", { n = 1 }) end)
      end
    end)

    it("sending to a closed session returns nil, 'session closed'", function()
      c:close()
      assert.same({ nil, "session closed" }, { s:push("onHello", {}) })
      assert.same({ nil, "session closed" }, { s:response_mid(1, {}) })
    end)
  end)

  describe("state", function()
    it("set, get, value, has, has_key, remove, clear, state and restore", function()
      s:set("room", "lobby")
      s:set(1, { deep = true })
      assert.equal("lobby", s:get("room"))
      assert.equal("lobby", s:value("room"))
      assert.is_true(s:has("room"))
      assert.is_true(s:has_key(1))
      local saved = s:state()
      assert.same({ room = "lobby", [1] = { deep = true } }, saved)
      saved.room = "changed" -- a copy
      assert.equal("lobby", s:get("room"))
      s:remove("room")
      assert.is_false(s:has("room"))
      s:clear()
      assert.same({}, s:state())
      s:restore({ a = 1 })
      assert.same({ a = 1 }, s:state())
    end)

    it("is reachable from handlers and stays readable after close", function()
      assert.same({ value = 5, has = true }, c:request("Api.state", { set = "hp", value = 5 }))
      assert.equal(5, s:get("hp"))
      c:close()
      assert.equal(5, s:get("hp"))
    end)
  end)

  describe("nano.session_methods", function()
    it("gives every session a new method", function()
      nano.session_methods.notice = function(self, text) return self:push("onNotice", { text = text }) end
      assert.is_true(s:notice("hello"))
      assert.same({ text = "hello" }, select(2, c:wait_push("onNotice")))
      nano.session_methods.notice = nil
    end)
  end)

  describe("closing", function()
    it("close closes the connection; a second close returns nil, err", function()
      assert.is_true(s:close())
      server:wait_until(function() return c:is_closed() end)
      assert.is_true(s:is_closed())
      assert.same({ nil, "session already closed" }, { s:close() })
      assert.is_false(c:was_kicked())
    end)

    it("id, uid and tostring keep their values once the session is gone", function()
      local id = s:id()
      assert.is_true(s:bind(42))
      local gone = false
      nano.on_session_closed(function(x) if x == s then gone = true end end)
      assert.is_true(s:close())
      server:wait_until(function() return gone end)
      assert.equal(id, s:id())
      assert.equal(42, s:uid())
      assert.equal(("session %d (uid 42, closed)"):format(id), tostring(s))
    end)

    it("kick sends the kick packet, then closes", function()
      assert.is_true(s:kick())
      server:wait_until(function() return c:is_closed() end)
      assert.is_true(c:was_kicked())
      assert.same({ nil, "session already closed" }, { s:kick() })
    end)

    it("a handler can close or kick its own session", function()
      local c2 = server:connect()
      c:notify("Api.kick_me", {})
      c2:notify("Api.close_me", {})
      server:wait_until(function() return c:is_closed() and c2:is_closed() end)
      assert.is_true(c:was_kicked())
      assert.is_false(c2:was_kicked())
    end)
  end)

  describe("close callbacks", function()
    -- every close callback call as { who, session, closed-at-call-time, push result }
    local calls
    local function watch(sess)
      sess:on_close(function(x) calls[#calls + 1] = { "on_close", x, x:is_closed(), (x:push("onX", {})) } end)
    end
    before_each(function()
      calls = {}
      nano.on_session_closed(function(x) calls[#calls + 1] = { "closed", x, x:is_closed() } end)
    end)

    local function assert_once_after_gone(sess)
      local mine = {}
      for _, call in ipairs(calls) do
        if call[2] == sess then mine[#mine + 1] = call end
      end
      assert.same({ { "on_close", sess, true, nil }, { "closed", sess, true } }, mine)
    end

    local function settle()
      server:poll()
      server:advance(1)
      server:poll()
    end

    it("run once, after the connection is gone, when the client leaves", function()
      watch(s)
      c:close()
      settle()
      assert_once_after_gone(s)
      assert.is_nil(s:remote_addr())
      assert.is_nil(s:transport())
    end)

    it("run once when the server closes the session", function()
      watch(s)
      s:close()
      server:wait_until(function() return #calls == 2 end)
      settle()
      assert_once_after_gone(s)
    end)

    it("run once when the session is kicked", function()
      watch(s)
      s:kick()
      server:wait_until(function() return #calls == 2 end)
      settle()
      assert_once_after_gone(s)
    end)

    it("run once on a heartbeat timeout (nothing received for more than 2.5x the interval)", function()
      c:close() -- it was told 30 s in its handshake, so it would time out too
      calls = {}
      nano.set_heartbeat_interval(1)
      local quiet = server:connect({ heartbeat = false })
      local qs = quiet:session()
      local alive = server:connect() -- answers heartbeats
      watch(qs)
      server:advance(2.25) -- silent for more than 2x the interval: still open (2x would close it)
      assert.same({}, calls)
      assert.is_false(quiet:is_closed())
      server:advance(0.5) -- past 2.5x, and the sweep (every 0.25 s here) has looked
      server:wait_until(function() return #calls == 2 end)
      settle()
      assert_once_after_gone(qs)
      server:advance(5)
      assert.is_false(alive:is_closed())
      assert.is_false(alive:session():is_closed())
    end)

    it("run once when the client sends a bad packet", function()
      watch(s)
      c:send_raw("\9\0\0\0") -- packet type 9 does not exist
      server:wait_until(function() return #calls == 2 end)
      settle()
      assert_once_after_gone(s)
    end)

    it("run once for every session at server shutdown", function()
      local c2 = server:connect()
      local s2 = c2:session()
      watch(s)
      watch(s2)
      nano.shutdown()
      server:wait_until(function() return #calls == 4 end)
      settle()
      assert_once_after_gone(s)
      assert_once_after_gone(s2)
    end)

    it("on_close callbacks run in the order they were added; an error is logged and the rest run", function()
      local logs = U.capture_logs()
      local order = {}
      s:on_close(function() order[#order + 1] = 1 end)
      s:on_close(function() error("callback broke") end)
      s:on_close(function() order[#order + 1] = 3 end)
      nano.on_session_closed(function() error("global broke") end)
      nano.on_session_closed(function() order[#order + 1] = "global" end)
      c:close()
      assert.same({ 1, 3, "global" }, order)
      assert.truthy(U.find(logs, "on_close callback"))
      assert.truthy(U.find(logs, "callback broke"))
      assert.truthy(U.find(logs, "global broke"))
    end)

    it("raise when not given a function", function()
      assert.has_error(function() s:on_close("x") end)
      assert.has_error(function() nano.on_session_closed(nil) end)
    end)
  end)
end)
