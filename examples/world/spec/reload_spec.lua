-- The world through a real hot reload (nano.reload, as SIGHUP and --watch do): a copy of the
-- example in a temporary folder, players connected, world.lua edited, reloaded. Players, the
-- group, the tick and the names (kept in nano.persist) survive; the new code runs from the next
-- message and the next tick.
local nt = require "nano.test"
local nano = require "nano"

local function read(path)
  local f = assert(io.open(path, "rb"))
  local s = f:read("*a")
  f:close()
  return s
end

local function write(path, text)
  local f = assert(io.open(path, "wb"))
  f:write(text)
  f:close()
end

describe("world across a hot reload", function()
  local dir, server
  before_each(function()
    dir = os.tmpname()
    os.remove(dir)
    assert(os.execute("mkdir -p '" .. dir .. "'") == 0)
    for _, f in ipairs({ "main.lua", "world.lua" }) do write(dir .. "/" .. f, read(f)) end
    server = nt.start(dir .. "/main.lua")
  end)
  after_each(function()
    server:stop()
    os.execute("rm -rf '" .. dir .. "'")
  end)

  -- world.lua with one replacement applied (plain text)
  local function edit(from, to)
    local path = dir .. "/world.lua"
    local src = read(path)
    local i, j = src:find(from, 1, true)
    assert(i, "world.lua has no " .. from)
    write(path, src:sub(1, i - 1) .. to .. src:sub(j + 1))
  end

  it("keeps players, the group, the tick and the names, and runs the new code", function()
    local a = server:connect()
    local ann = a:request("World.enter", { name = "ann" })
    local b = server:connect()
    b:request("World.enter", { name = "bob" })
    local world = require "world"
    world.players[a:session()].x, world.players[a:session()].y = 100, 100
    world.players[b:session()].x, world.players[b:session()].y = 150, 150
    world.players[a:session()].tx, world.players[a:session()].ty = 100, 100
    world.players[b:session()].tx, world.players[b:session()].ty = 150, 150
    server:advance(0.5)
    local ticks = world.ticks

    edit('text = msg.text:sub(1, 200)', 'text = "[v2] " .. msg.text:sub(1, 200)')
    edit('function World:_tick()\n', 'function World:_tick()\n  self.new_ticks = (self.new_ticks or 0) + 1\n')
    local ok, err = nano.reload()
    assert.is_true(ok, tostring(err))

    -- the component table is kept; the new module's table stands in for it
    assert.equal(world.ticks, require("world").ticks)
    assert.equal(2, world.group:count(), "both players are still in the world")
    assert.is_false(a:is_closed())

    a:notify("World.say", { text = "still here" })
    local _, said = b:wait_push("onSay")
    assert.same({ id = ann.id, name = "ann", text = "[v2] still here" }, said, "new code answers")

    a:clear_pushes()
    server:advance(0.3)
    assert.equal(3, world.new_ticks, "the running ticker calls the new _tick")
    assert.equal(ticks + 3, world.ticks, "the world carried on where it was")
    local _, state = a:wait_push("onState")
    assert.equal(world.ticks - 2, state.tick)

    -- "ann" is still taken: the names table (nano.persist) came through the reload
    local c = server:connect()
    assert.matches("^ann#%d+$", c:request("World.enter", { name = "ann" }).name)
  end)

  it("keeps serving the old code when the new world.lua does not load", function()
    local a = server:connect()
    a:request("World.enter", { name = "ann" })
    edit("function World:say(s, msg)", "function World:say(s, msg) this is not lua")
    local logged = {}
    nano.set_logger(function(level, msg) logged[#logged + 1] = level .. " " .. msg end)
    local ok, err = nano.reload()
    nano.set_logger(nil)
    assert.is_nil(ok)
    assert.matches("world.lua:%d+:", err)
    assert.matches("^error reload failed, the old code keeps running: .*world.lua:%d+:", logged[1])
    a:notify("World.say", { text = "old code" })
    local _, said = a:wait_push("onSay")
    assert.equal("old code", said.text)
  end)
end)
