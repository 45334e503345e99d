-- The world example: entering, the fixed-rate tick, interest management (who is sent what),
-- multicast to nearby players, leaving, and new code picked up by a running timer.
-- Run: cd examples/world && nano-host test
local nt = require "nano.test"

describe("world", function()
  local server, world
  before_each(function()
    server = nt.start("main.lua")
    world = require "world" -- the component the server registered (white-box checks)
  end)
  after_each(function() server:stop() end)

  local function enter(name)
    local c = server:connect()
    local me = c:request("World.enter", { name = name })
    return c, me
  end

  -- Puts a player somewhere (white-box: tests need known positions).
  local function place(c, x, y)
    local p = world.players[c:session()]
    p.x, p.y, p.tx, p.ty = x, y, x, y
  end

  -- The next onState this client gets after one more tick.
  local function next_state(c)
    c:clear_pushes()
    server:advance(world.tick)
    local _, state = c:wait_push("onState")
    return state
  end

  local function ids(state, kind)
    local set = {}
    for _, e in ipairs(state.entities) do
      if not kind or e.kind == kind then set[e.id] = e end
    end
    return set
  end

  it("lets a player in somewhere in the world", function()
    local c, me = enter("ann")
    assert.is_number(me.id)
    assert.is_true(me.x >= 0 and me.x <= me.size and me.y >= 0 and me.y <= me.size)
    assert.same({ 1000, 250, 0.1 }, { me.size, me.view, me.tick })
    assert.equal(me.id, c:session():uid())
    assert.same(me, c:request("World.enter", { name = "again" }), "entering twice changes nothing")
  end)

  it("gives every player a name of its own", function()
    local _, a = enter("ann")
    local _, b = enter("ann")
    local _, c = enter("")
    assert.equal("ann", a.name)
    assert.equal("ann#" .. b.id, b.name)
    assert.equal("player#" .. c.id, c.name)
  end)

  it("frees a name when its player leaves", function()
    local c = enter("ann")
    c:close()
    local _, again = enter("ann")
    assert.equal("ann", again.name)
  end)

  it("refuses moves and words from sessions that did not enter", function()
    local c = server:connect()
    local res, err = c:try_request("World.move", { x = 1, y = 1 })
    assert.is_nil(res)
    assert.equal(403, err.code)
  end)

  it("sends every player the state around it on every tick", function()
    local c, me = enter("ann")
    place(c, 500, 500)
    local s1 = next_state(c)
    local s2 = next_state(c)
    assert.equal(s1.tick + 1, s2.tick)
    local mine = ids(s2)[me.id]
    assert.same({ id = me.id, kind = "player", x = 500, y = 500, name = "ann" }, mine)
    for _, e in ipairs(s2.entities) do
      -- the 3 x 3 view-sized cells around the player's cell (250..749 here)
      assert.is_true(e.x >= 0 and e.x < 1000 and e.y >= 0 and e.y < 1000)
    end
    assert.is_true(next(ids(s2, "fish")) ~= nil, "there are fish around the middle of the world")
  end)

  it("moves a player towards its target at player_speed", function()
    local c, me = enter("ann")
    place(c, 100, 100)
    c:notify("World.move", { x = 400, y = 500 }) -- 500 away
    c:sync()
    server:advance(1)
    local p = world.entities[me.id]
    local moved = math.sqrt((p.x - 100) ^ 2 + (p.y - 100) ^ 2)
    assert.is_true(math.abs(moved - world.player_speed) < 1e-6, "moved " .. moved)
    server:advance(10)
    assert.same({ 400, 500 }, { p.x, p.y }, "stops at the target")
  end)

  it("keeps targets inside the world", function()
    local c, me = enter("ann")
    c:notify("World.move", { x = -50, y = 5000 })
    c:sync()
    server:advance(20)
    local p = world.entities[me.id]
    assert.same({ 0, 1000 }, { p.x, p.y })
  end)

  it("sends each player only what is near it", function()
    local a, ma = enter("ann")
    local b, mb = enter("bob")
    place(a, 100, 100)
    place(b, 900, 900)
    assert.is_nil(ids(next_state(a))[mb.id], "ann does not see bob across the world")
    place(b, 300, 200) -- one cell away
    local seen = ids(next_state(a))
    assert.is_not_nil(seen[mb.id], "ann sees bob nearby")
    assert.equal("bob", seen[mb.id].name)
    assert.is_not_nil(ids(next_state(b))[ma.id], "and bob sees ann")
  end)

  it("encodes one snapshot per occupied cell, however many players are in it", function()
    local clients = {}
    for i = 1, 5 do
      clients[i] = enter("p" .. i)
      place(clients[i], 10 + i, 10)
    end
    local far = enter("far")
    place(far, 990, 990)
    local calls = 0
    local multicast = world.group.multicast
    world.group.multicast = function(g, route, ...)
      if route == "onState" then calls = calls + 1 end
      return multicast(g, route, ...)
    end
    finally(function() world.group.multicast = nil end)
    server:advance(world.tick)
    assert.equal(2, calls)
    for _, c in ipairs(clients) do
      local _, st = c:wait_push("onState")
      assert.is_not_nil(st)
    end
  end)

  it("says things only to the players who can see the speaker", function()
    local a, ma = enter("ann")
    local b = enter("bob")
    local c = enter("cat")
    place(a, 100, 100)
    place(b, 200, 150)
    place(c, 900, 900)
    a:notify("World.say", { text = "anyone here?" })
    local _, said = b:wait_push("onSay")
    assert.same({ id = ma.id, name = "ann", text = "anyone here?" }, said)
    a:wait_push("onSay") -- the speaker hears itself
    c:sync()
    assert.same({}, c:pushes("onSay"))
  end)

  it("removes a player that leaves and tells the others", function()
    local a = enter("ann")
    local b, mb = enter("bob")
    b:close()
    local _, left = a:wait_push("onLeave")
    assert.same({ id = mb.id }, left)
    assert.is_nil(world.entities[mb.id])
    assert.equal(1, world.group:count())
  end)

  it("keeps every fish inside the world", function()
    server:advance(30)
    local n = 0
    for _, e in pairs(world.entities) do
      if e.kind == "fish" then
        n = n + 1
        assert.is_true(e.x >= 0 and e.x <= world.size and e.y >= 0 and e.y <= world.size)
      end
    end
    assert.equal(world.fish_count, n)
    assert.equal(300, world.ticks, "ten ticks a second")
  end)

  -- What a hot reload does to this component: the same table gets the new functions and keeps
  -- its fields. The ticker calls self:_tick(), so it runs the new code from the next tick on.
  it("runs new code on the next tick when the component's functions are replaced", function()
    local c = enter("ann")
    local old_tick, ticks = world._tick, world.ticks
    world._tick = function(self)
      self.patched = (self.patched or 0) + 1
      return old_tick(self)
    end
    server:advance(world.tick * 3)
    assert.equal(3, world.patched)
    assert.equal(ticks + 3, world.ticks, "the state carried on")
    assert.is_not_nil(c:wait_push("onState"))
  end)
end)
