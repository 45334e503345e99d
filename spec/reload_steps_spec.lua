-- The steps of a hot reload, one by one (reload.lua: snapshot, load, commit, rollback, watch,
-- first_load). spec/reload_spec.lua tests nano.reload() as a whole; here each step is called on
-- its own on a nano.test server, to show what it does and what it leaves to the next.
local nt = require "nano.test"
local nano = require "nano"
local core = require "nano.core"
local reload = require "nano.reload"

local function write(path, text)
  local f = assert(io.open(path, "w"))
  f:write(text)
  f:close()
end

local dirs, server = {}, nil

local function start(files)
  local dir = os.tmpname()
  os.remove(dir)
  assert(os.execute("mkdir -p '" .. dir .. "'") == 0)
  for name, text in pairs(files) do write(dir .. "/" .. name, text) end
  dirs[#dirs + 1] = dir
  server = nt.start(dir .. "/main.lua")
  return dir
end

after_each(function()
  reload.unwatch()
  if server then server:stop() end
  server = nil
  for _, d in ipairs(dirs) do os.execute("rm -rf '" .. d .. "'") end
  dirs = {}
end)

-- v: what Room.v answers; the script also makes a timer and an on_session_closed callback
local function room(v) return ("return { v = function() return { v = %d } end }\n"):format(v) end
local MAIN = [[
local nano = require "nano"
nano.register(require("room_steps"), { name = "Room" })
nano.new_timer(1, function() end)
nano.on_session_closed(function() end)
nano.listen("127.0.0.1:0")
]]

local function v_served()
  local c = server:connect()
  local r = c:request("Room.v", {})
  c:close()
  return r.v
end

describe("reload.snapshot", function()
  it("lists the loaded modules of the script's folder, and changes nothing", function()
    start({ ["main.lua"] = MAIN, ["room_steps.lua"] = room(1) })
    local mod = package.loaded.room_steps
    local snap = reload.snapshot()
    assert.same({ room_steps = mod }, snap.modules) -- not nano's own modules
    assert.equal(mod, package.loaded.room_steps)
    assert.same(core.config(), snap.config)
    assert.equal(nano._state.by_name, snap.top.by_name)
  end)
end)

describe("reload.load", function()
  it("runs the new script with components staged, not live, and records what it made", function()
    local dir = start({ ["main.lua"] = MAIN, ["room_steps.lua"] = room(1) })
    write(dir .. "/room_steps.lua", room(2))
    local timers, closed = core.stats().timers, #nano._state.closed_cbs
    local snap = reload.snapshot()
    local run = reload.load(snap)
    assert.is_nil(run.err)
    assert.equal(1, run.nmodules)
    assert.equal(1, #run.staged)
    assert.equal("Room", run.staged[1].name)
    assert.equal(1, v_served()) -- the live component is the old one until commit
    assert.equal(timers + 1, core.stats().timers)
    assert.equal(closed + 1, #nano._state.closed_cbs)
    assert.is_true(#run.scope.list >= 2)
    reload.rollback(snap, run)
  end)

  it("says why when the script raises, with its file and line", function()
    local dir = start({ ["main.lua"] = MAIN, ["room_steps.lua"] = room(1) })
    write(dir .. "/main.lua", MAIN .. "error('main refuses')\n")
    local snap = reload.snapshot()
    local run = reload.load(snap)
    assert.matches("main%.lua:6: main refuses", run.err)
    reload.rollback(snap, run)
  end)
end)

describe("reload.commit", function()
  it("swaps the staged components in and stops what the previous load made", function()
    local dir = start({ ["main.lua"] = MAIN, ["room_steps.lua"] = room(1) })
    local timers, closed = core.stats().timers, #nano._state.closed_cbs
    write(dir .. "/room_steps.lua", room(2))
    local run = reload.load(reload.snapshot())
    assert.same({ true, 1, 0, {} }, { reload.commit(run) })
    assert.equal(2, v_served())
    assert.equal(timers, core.stats().timers) -- the old load's timer stopped, the new one runs
    assert.equal(closed, #nano._state.closed_cbs)
    assert.equal(run.scope.groups, nano._state.load_groups)
  end)

  it("puts every component back when a hook fails", function()
    local dir = start({ ["main.lua"] = MAIN, ["room_steps.lua"] = room(1) })
    local comp = nano._state.by_name.Room.comp
    write(dir .. "/room_steps.lua", [[
      return { v = function() return { v = 2 } end, on_reload = function() error("no") end }
    ]])
    local snap = reload.snapshot()
    local run = reload.load(snap)
    local ok, err = reload.commit(run)
    assert.is_nil(ok)
    assert.matches("Room%.on_reload: .*no", err)
    assert.equal(comp, nano._state.by_name.Room.comp)
    assert.is_nil(comp.on_reload)
    assert.equal(1, v_served())
    reload.rollback(snap, run)
  end)
end)

describe("reload.rollback", function()
  it("undoes what the load made and puts settings and modules back", function()
    local dir = start({ ["main.lua"] = MAIN, ["room_steps.lua"] = room(1) })
    local mod = package.loaded.room_steps
    local timers, closed = core.stats().timers, #nano._state.closed_cbs
    local config = nano.config()
    write(dir .. "/main.lua", MAIN .. "nano.set_heartbeat_interval(7)\nnano.pipeline.inbound:push_back(function() end)\n")
    write(dir .. "/room_steps.lua", room(2))
    local snap = reload.snapshot()
    local run = reload.load(snap)
    assert.is_nil(run.err)
    assert.not_same(config, nano.config())
    reload.rollback(snap, run)
    assert.same(config, nano.config())
    assert.equal(timers, core.stats().timers)
    assert.equal(closed, #nano._state.closed_cbs)
    assert.equal(0, nano.pipeline.inbound:count())
    assert.equal(mod, package.loaded.room_steps)
    assert.equal(1, v_served())
  end)
end)

describe("reload.first_load", function()
  it("keeps what a successful first run made for the first reload to release", function()
    start({ ["main.lua"] = MAIN, ["room_steps.lua"] = room(1) })
    local owned = nano._state.load_owned
    assert.equal(3, #owned) -- the nano timer, its core timer, the on_session_closed callback
  end)

  it("undoes what a failed first run made", function()
    start({ ["main.lua"] = "require('nano').listen('127.0.0.1:0')\n" })
    local timers = core.stats().timers
    local ran = reload.first_load(function()
      nano.new_timer(1, function() end)
      return false
    end)
    assert.is_false(ran)
    assert.equal(timers, core.stats().timers)
  end)
end)

describe("reload.watch", function()
  it("watches the script's folder and its folders of modules, and unwatch stops", function()
    local dir = start({ ["main.lua"] = "require('nano').listen('127.0.0.1:0')\n" })
    for _, d in ipairs({ "lib", "spec", "assets" }) do
      assert(os.execute("mkdir -p '" .. dir .. "/" .. d .. "'") == 0)
    end
    write(dir .. "/lib/m.lua", "return {}\n")
    write(dir .. "/spec/m_spec.lua", "return {}\n")
    write(dir .. "/assets/a.png", "x")
    assert.is_true(reload.watch())
    assert.same({ dir, dir .. "/lib" }, reload.watching())
    reload.unwatch()
    assert.same({}, reload.watching())
  end)
end)
