-- Groups (nano.new_group): membership, broadcast and multicast through real connections, closed
-- sessions leaving by themselves, closed groups, the send limit, and 1,000 members.
local nt = require "nano.test"
local nano = require "nano"
local U = require "spec.fixtures.api_util"

describe("nano.new_group", function()
  local server, g
  before_each(function()
    server = nt.start(U.FIXTURE)
    g = nano.new_group("room")
  end)
  after_each(function()
    server:stop()
    U.restore_log_level()
  end)

  -- n clients, each bound to uid 100+i and added to g; returns clients and their sessions
  local function members(n)
    local cs, ss = {}, {}
    for i = 1, n do
      cs[i] = server:connect()
      ss[i] = cs[i]:session()
      assert(ss[i]:bind(100 + i))
      assert.is_true(g:add(ss[i]))
    end
    return cs, ss
  end

  describe("add", function()
    it("adds a session once; a second add returns nil, 'session already in group'", function()
      local _, ss = members(1)
      assert.same({ nil, "session already in group" }, { g:add(ss[1]) })
      assert.equal(1, g:count())
    end)

    it("accepts several sessions that have not bound a uid (membership is per session)", function()
      local a, b = server:connect():session(), server:connect():session()
      assert.is_true(g:add(a))
      assert.is_true(g:add(b))
      assert.equal(2, g:count())
      assert.same({ 0, 0 }, g:members())
    end)

    it("refuses a closed session", function()
      local c = server:connect()
      local s = c:session()
      c:close()
      assert.same({ nil, "session closed" }, { g:add(s) })
    end)

    it("raises when given something that is not a session", function()
      assert.has_error(function() g:add({}) end, "add: expected a session")
      assert.has_error(function() g.add(nil, server:connect():session()) end)
    end)
  end)

  describe("leave and leave_all", function()
    it("leave returns true for a member, false for a session that is not one", function()
      local _, ss = members(2)
      assert.is_true(g:leave(ss[1]))
      assert.is_false(g:leave(ss[1]))
      assert.same({ 102 }, g:members())
    end)

    it("leave_all empties the group and the sessions can join again", function()
      local _, ss = members(3)
      assert.is_true(g:leave_all())
      assert.equal(0, g:count())
      assert.is_true(g:add(ss[2]))
      assert.same({ 102 }, g:members())
    end)
  end)

  describe("queries", function()
    it("count, contains, member, members, has, sessions and find_member", function()
      local _, ss = members(3)
      local other = server:connect():session()
      assert.equal(3, g:count())
      assert.is_true(g:contains(102))
      assert.is_false(g:contains(999))
      assert.equal(ss[3], g:member(103))
      assert.same({ nil, "member not found" }, { g:member(999) })
      local uids = g:members()
      table.sort(uids)
      assert.same({ 101, 102, 103 }, uids)
      assert.is_true(g:has(ss[1]))
      assert.is_false(g:has(other))
      local list = g:sessions()
      assert.equal(3, #list)
      list[1] = nil -- a copy: the group is not changed
      assert.equal(3, g:count())
      ss[2]:set("admin", true)
      assert.equal(ss[2], g:find_member(function(s) return s:get("admin") end))
      assert.same({ nil, "member not found" }, { g:find_member(function() return false end) })
      assert.equal("room", g:name())
    end)

    it("member finds a session by the uid it has now, also when bound after joining", function()
      local s = server:connect():session()
      g:add(s)
      assert.is_false(g:contains(55))
      s:bind(55)
      assert.equal(s, g:member(55))
    end)

    it("raises on a uid that is not a number", function()
      assert.has_error(function() g:member("7") end, "member: expected a uid (number)")
    end)
  end)

  describe("core.push_many (the broadcast's one C call)", function()
    it("delivers to the sessions and lists what is not one as failed, without raising", function()
      local core = require "nano.core"
      local cs, ss = members(2)
      local not_sessions = { {}, io.stdout, "s", 7 }
      local list = { ss[1], not_sessions[1], not_sessions[2], ss[2], not_sessions[3], not_sessions[4] }
      local n, failed = core.push_many(list, "onRaw", '{"x":1}')
      assert.equal(2, n)
      assert.same(not_sessions, failed)
      for _, c in ipairs(cs) do assert.same({ "onRaw", { x = 1 } }, { c:wait_push("onRaw") }) end
    end)
  end)

  describe("core member lists (a group's members, walked in C)", function()
    local core = require "nano.core"

    it("push_many to one delivers to its sessions and lists what is not one as failed", function()
      local cs, ss = members(2)
      local m, other = core.members_new(), {}
      assert.equal(1, core.members_add(m, ss[1]))
      assert.equal(2, core.members_add(m, other))
      assert.equal(3, core.members_add(m, ss[2]))
      local n, failed = core.push_many(m, "onRaw", '{"x":1}')
      assert.equal(2, n)
      assert.same({ other }, failed)
      for _, c in ipairs(cs) do assert.same({ "onRaw", { x = 1 } }, { c:wait_push("onRaw") }) end
    end)

    it("members_remove moves the last member into the place it empties", function()
      local cs, ss = members(3)
      local m = core.members_new()
      for i = 1, 3 do core.members_add(m, ss[i]) end
      assert.equal(ss[3], core.members_remove(m, 1))
      assert.is_nil(core.members_remove(m, 2)) -- the last: nothing moves
      assert.has_error(function() core.members_remove(m, 2) end)
      assert.equal(1, core.push_many(m, "onRaw", "{}"))
      cs[3]:wait_push("onRaw")
      cs[1]:sync()
      cs[2]:sync()
      server:poll()
      assert.same({}, cs[1]:pushes())
      assert.same({}, cs[2]:pushes())
    end)

    it("keeps a member that closed: it is listed as failed, not read after it is gone", function()
      local m = core.members_new()
      -- the sessions are not kept here: only the list holds the first one's userdata after close
      -- (its group lets it go)
      local cs = (function()
        local cs, ss = members(2)
        core.members_add(m, ss[1])
        core.members_add(m, ss[2])
        return cs
      end)()
      cs[1]:close()
      server:wait_until(function() return g:count() == 1 end)
      collectgarbage()
      collectgarbage()
      local n, failed = core.push_many(m, "onRaw", "{}")
      assert.equal(1, n)
      assert.equal(1, #failed)
      assert.is_true(failed[1]:is_closed())
    end)
  end)

  describe("broadcast", function()
    it("reaches exactly the members left after leaves from the middle, the end and the front", function()
      local cs, ss = members(6)
      assert.is_true(g:leave(ss[3]))
      assert.is_true(g:leave(ss[6]))
      assert.is_true(g:leave(ss[1]))
      assert.equal(3, (g:broadcast("onSay", { text = "hi" })))
      for _, i in ipairs({ 2, 4, 5 }) do cs[i]:wait_push("onSay") end
      for _, c in ipairs(cs) do c:sync() end
      server:poll()
      for i, c in ipairs(cs) do
        assert.equal((i == 2 or i == 4 or i == 5) and 1 or 0, #c:pushes("onSay"), "client " .. i)
      end
    end)

    it("pushes to every member exactly once and says how many got it", function()
      local cs = members(3)
      local outsider = server:connect()
      local n, failed = g:broadcast("onSay", { text = "hi" })
      assert.equal(3, n)
      assert.is_nil(failed)
      for _, c in ipairs(cs) do
        assert.same({ "onSay", { text = "hi" } }, { c:wait_push("onSay") })
      end
      outsider:sync()
      server:poll()
      for _, c in ipairs(cs) do assert.equal(1, #c:pushes("onSay")) end
      assert.same({}, outsider:pushes())
    end)

    it("compresses a route that is in the dictionary", function()
      local r = U.raw(server.host, server.port)
      server:wait_until(function() return r.handshake end)
      local s
      server:wait_until(function()
        s = U.session_of(r.local_addr)
        return s
      end)
      -- a request round trip through another client so the ack has surely been read
      server:connect():sync()
      g:add(s)
      assert.equal(1, (g:broadcast("onCompressed", { a = 1 })))
      assert.equal(1, (g:broadcast("onPlain", { b = 2 })))
      server:wait_until(function() return #r.msgs == 2 end)
      assert.equal(3, r.msgs[1].code)
      assert.is_nil(r.msgs[1].route)
      assert.equal('{"a":1}', r.msgs[1].payload)
      assert.equal("onPlain", r.msgs[2].route)
      r.stream:close()
    end)

    it("a closed member is listed as failed and the others still get it", function()
      local cs, ss = members(3)
      -- closing from the server side: the session stays in the group until its connection is gone
      ss[2]:close()
      local n, failed = g:broadcast("onSay", { text = "still here" })
      assert.equal(2, n)
      assert.same({ ss[2] }, failed)
      cs[1]:wait_push("onSay")
      cs[3]:wait_push("onSay")
    end)

    it("drops a member over its send limit from that broadcast (and closes it), not the others", function()
      nano.configure({ send_limit = 4096 })
      local cs, ss = members(3)
      -- member 2's queue is nearly full: nothing is written until the loop runs again
      assert(ss[2]:push("onFill", string.rep("x", 3000)))
      local n, failed = g:broadcast("onBig", { text = string.rep("y", 2000) })
      assert.equal(2, n)
      assert.same({ ss[2] }, failed)
      assert.is_true(ss[2]:is_closed())
      local _, msg = cs[1]:wait_push("onBig")
      assert.equal(2000, #msg.text)
      cs[3]:wait_push("onBig")
      server:wait_until(function() return cs[2]:is_closed() end)
      server:wait_until(function() return g:count() == 2 end)
    end)

    it("returns nil, err when the value does not serialize", function()
      members(1)
      local n, err = g:broadcast("onSay", { f = function() end })
      assert.is_nil(n)
      assert.matches("^cannot serialize", err)
    end)

    it("raises on a route that is not a string", function()
      assert.has_error(function() g:broadcast(7, {}) end, "broadcast: route must be a string")
    end)

    it("reaches 1,000 members with exactly one copy each", function()
      local cs = {}
      for i = 1, 1000 do
        cs[i] = server:connect()
        assert.is_true(g:add(cs[i]:session()))
      end
      local n, failed = g:broadcast("onTick", { seq = 1 })
      assert.equal(1000, n)
      assert.is_nil(failed)
      for i = 1, 1000 do
        local _, msg = cs[i]:wait_push("onTick")
        assert.equal(1, msg.seq)
      end
      cs[1]:sync() -- anything still in flight would have arrived by now
      server:poll()
      for i = 1, 1000 do
        if #cs[i]:pushes() ~= 1 then error("client " .. i .. " got " .. #cs[i]:pushes() .. " pushes") end
      end
    end)
  end)

  describe("multicast", function()
    it("pushes only to the members the filter accepts", function()
      local cs, ss = members(4)
      ss[2]:set("team", "red")
      ss[4]:set("team", "red")
      local n, failed = g:multicast("onTeam", { team = "red" }, function(s) return s:get("team") == "red" end)
      assert.equal(2, n)
      assert.is_nil(failed)
      cs[2]:wait_push("onTeam")
      cs[4]:wait_push("onTeam")
      cs[1]:sync()
      cs[3]:sync()
      assert.same({}, cs[1]:pushes("onTeam"))
      assert.same({}, cs[3]:pushes("onTeam"))
    end)

    it("raises without a filter function", function()
      assert.has_error(function() g:multicast("onX", {}) end, "multicast: expected a filter function(session)")
    end)
  end)

  describe("closed sessions", function()
    it("leave every group by themselves, before on_session_closed callbacks run", function()
      local g2 = nano.new_group("other")
      local cs, ss = members(2)
      g2:add(ss[1])
      local seen
      nano.on_session_closed(function(s)
        if s == ss[1] then seen = { g:count(), g:has(s), g2:count() } end
      end)
      cs[1]:close()
      assert.same({ 1, false, 0 }, seen)
      assert.same({ 102 }, g:members())
    end)

    it("also when the server closes or kicks them", function()
      local cs, ss = members(3)
      ss[1]:kick()
      ss[2]:close()
      server:wait_until(function() return g:count() == 1 end)
      assert.same({ 103 }, g:members())
      assert.is_true(cs[1]:was_kicked())
    end)
  end)

  describe("close", function()
    it("empties the group; changes and sends then return nil, 'group closed'", function()
      local _, ss = members(2)
      assert.is_true(g:close())
      assert.is_true(g:is_closed())
      assert.same({ nil, "group closed" }, { g:add(ss[1]) })
      assert.same({ nil, "group closed" }, { g:leave(ss[1]) })
      assert.same({ nil, "group closed" }, { g:leave_all() })
      assert.same({ nil, "group closed" }, { g:broadcast("onX", {}) })
      assert.same({ nil, "group closed" }, { g:multicast("onX", {}, function() return true end) })
      assert.equal(0, g:count())
      assert.is_false(g:contains(101))
      assert.same({}, g:members())
    end)

    it("raises when the group is closed twice", function()
      g:close()
      assert.has_error(function() g:close() end, "close: group 'room' is already closed")
    end)

    it("forgets its members: a later close of theirs does not touch it", function()
      local cs = members(1)
      g:close()
      cs[1]:close()
      assert.equal(0, g:count())
    end)
  end)

  it("new_group raises without a name", function()
    assert.has_error(function() nano.new_group() end, "new_group: expected a name (string)")
  end)
end)
