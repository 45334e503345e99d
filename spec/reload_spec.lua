-- Hot reload in-process (docs/hot-reload.md): each spec writes a small project to a temporary
-- folder, starts it with nano.test, edits files and calls nano.reload(). Timers are driven with
-- server:advance, so nothing here waits on the wall clock. The end-to-end counterpart (a real
-- client across SIGHUP and --watch) is spec/e2e/reload.test.js.
local nt = require "nano.test"
local nano = require "nano"
local core = require "nano.core"

local function write(path, text)
  local f = assert(io.open(path, "w"))
  f:write(text)
  f:close()
end

-- A temporary project: files = { ["main.lua"] = "...", ... }
local function project(files)
  local dir = os.tmpname()
  os.remove(dir)
  assert(os.execute("mkdir -p '" .. dir .. "'") == 0)
  for name, text in pairs(files) do write(dir .. "/" .. name, text) end
  return dir
end

local dirs, server = {}, nil

local function start(files)
  local dir = project(files)
  dirs[#dirs + 1] = dir
  server = nt.start(dir .. "/main.lua")
  return dir
end

-- Reload expecting success / failure; returns the error of a failure.
local function reload_ok()
  local ok, err = nano.reload()
  assert.is_true(ok, "reload failed: " .. tostring(err))
end

local function reload_fails(pattern)
  local ok, err = nano.reload()
  assert.is_nil(ok, "the reload should have failed")
  if pattern then assert.matches(pattern, err) end
  return err
end

after_each(function()
  if server then server:stop() end
  server = nil
  for _, d in ipairs(dirs) do os.execute("rm -rf '" .. d .. "'") end
  dirs = {}
end)

local MAIN = [[
local nano = require "nano"
nano.register(require("room"), { name = "Room" })
nano.listen("127.0.0.1:0")
]]

describe("nano.reload", function()
  describe("with handlers that wait", function()
    local OLD_ROOM = [[
      local nano = require "nano"
      local Room = {}
      function Room:slow() nano.sleep(1); return { v = 1 } end
      function Room:v() return { v = 1 } end
      return Room
    ]]
    local NEW_ROOM = [[
      local nano = require "nano"
      local Room = {}
      function Room:slow() nano.sleep(1); return { v = 2 } end
      function Room:v() return { v = 2 } end
      return Room
    ]]

    it("a waiting handler finishes with the code it started with; new messages get the new code", function()
      local dir = start({ ["main.lua"] = MAIN, ["room.lua"] = OLD_ROOM })
      local c, other = server:connect(), server:connect()
      local got
      c:request("Room.slow", {}, function(res) got = res end)
      c:sync()
      write(dir .. "/room.lua", NEW_ROOM)
      reload_ok() -- returns while the handler waits
      assert.is_nil(got)
      assert.same({ v = 2 }, other:request("Room.v", {}))
      server:advance(1)
      server:wait_until(function() return got end)
      assert.same({ v = 1 }, got)
    end)

    it("a message queued behind a waiting handler across a reload is handled, with the new code", function()
      local dir = start({ ["main.lua"] = MAIN, ["room.lua"] = OLD_ROOM })
      local c = server:connect()
      local first, queued
      c:request("Room.slow", {}, function(res) first = res end)
      c:request("Room.v", {}, function(res) queued = res end)
      c:sync()
      write(dir .. "/room.lua", NEW_ROOM)
      reload_ok()
      server:advance(1)
      server:wait_until(function() return first and queued end)
      assert.same({ v = 1 }, first)
      assert.same({ v = 2 }, queued)
    end)
  end)

  it("replaces functions, removes the ones the module dropped, keeps data and adds new fields", function()
    local dir = start({
      ["main.lua"] = MAIN,
      ["room.lua"] = [[
        local Room = { n = 0, cfg = "old" }
        function Room:hit() self.n = self.n + 1; return { v = 1, n = self.n } end
        function Room:gone() return {} end
        return Room
      ]],
    })
    local c = server:connect()
    assert.same({ v = 1, n = 1 }, c:request("Room.hit", {}))
    write(dir .. "/room.lua", [[
      local Room = { n = 50, cfg = "new", extra = "x" }
      function Room:hit() self.n = self.n + 1; return { v = 2, n = self.n, cfg = self.cfg, extra = self.extra } end
      function Room:fresh() return { fresh = true } end
      return Room
    ]])
    reload_ok()
    assert.same({ v = 2, n = 2, cfg = "old", extra = "x" }, c:request("Room.hit", {}))
    assert.same({ fresh = true }, c:request("Room.fresh", {}))
    local _, err = c:try_request("Room.gone", {})
    assert.equal(404, err.code)
    assert.same({ "Room.fresh", "Room.hit" }, nano.routes())
  end)

  it("keeps the component table: nano.register returns it, the module's own table reads through to it", function()
    local dir = start({
      ["main.lua"] = [[
        local nano = require "nano"
        local p = nano.persist("t")
        p.tables = p.tables or {}
        p.tables[#p.tables + 1] = nano.register(require("room"), { name = "Room" })
        nano.listen("127.0.0.1:0")
      ]],
      ["room.lua"] = "local Room = { n = 1 }\nfunction Room.get() return { n = Room.n } end\nreturn Room\n",
    })
    write(dir .. "/room.lua", [[
      local Room = { n = 99 }
      function Room.get() Room.n = Room.n + 1; return { n = Room.n } end
      return Room
    ]])
    reload_ok()
    local c = server:connect()
    assert.same({ n = 2 }, c:request("Room.get", {}))
    local tables = nano.persist("t").tables
    assert.equal(2, #tables)
    assert.equal(tables[1], tables[2])
    assert.equal(2, rawget(tables[1], "n"))
  end)

  it("gives on_reload a copy of the old component, after the swap", function()
    local dir = start({
      ["main.lua"] = MAIN,
      ["room.lua"] = "local Room = { n = 7 }\nfunction Room:v() return { v = 1 } end\nreturn Room\n",
    })
    write(dir .. "/room.lua", [[
      local Room = {}
      function Room:v() return { v = 2, seen = self.seen } end
      function Room:on_reload(old)
        self.seen = { old_n = old.n, old_v = old.v({}).v, new_v = self:v().v }
      end
      return Room
    ]])
    reload_ok()
    local c = server:connect()
    assert.same({ v = 2, seen = { old_n = 7, old_v = 1, new_v = 2 } }, c:request("Room.v", {}))
  end)

  it("drops components main.lua no longer registers, inits new ones, keeps ones made at runtime", function()
    local dir = start({
      ["main.lua"] = [[
        local nano = require "nano"
        nano.register({ a = function() return { a = 1 } end }, { name = "A" })
        nano.register({ add = function() nano.register({ r = function() return {} end }, { name = "Runtime" }); return {} end }, { name = "Maker" })
        nano.listen("127.0.0.1:0")
      ]],
    })
    local c = server:connect()
    c:request("Maker.add", {})
    write(dir .. "/main.lua", [[
      local nano = require "nano"
      local log = nano.persist("log", { calls = {} })
      local B = {}
      function B:init() log.calls[#log.calls + 1] = "init" end
      function B:after_init() log.calls[#log.calls + 1] = "after_init" end
      function B:b() return { b = 1 } end
      nano.register(B, { name = "B" })
      nano.listen("127.0.0.1:0")
    ]])
    reload_ok()
    assert.same({ "B.b", "Runtime.r" }, nano.routes())
    assert.same({ "init", "after_init" }, nano.persist("log").calls)
    assert.same({ b = 1 }, c:request("B.b", {}))
  end)

  it("keeps listeners (same port) and sessions", function()
    start({ ["main.lua"] = MAIN, ["room.lua"] = "return { ping = function() return { ok = true } end }\n" })
    local c = server:connect()
    local before = nano.listeners()
    reload_ok()
    reload_ok()
    assert.same(before, nano.listeners())
    assert.same({ ok = true }, c:request("Room.ping", {}))
    assert.equal(1, #server:sessions())
  end)
end)

describe("nano.reload from a handler", function()
  it("answers that request, and the next one runs the new code", function()
    local dir = start({
      ["main.lua"] = MAIN,
      ["room.lua"] = [[
        local nano = require "nano"
        return { v = function() return { v = 1 } end,
                 reload = function() local ok, err = nano.reload(); return { ok = ok, err = err, v = 1 } end }
      ]],
    })
    local c = server:connect()
    write(dir .. "/room.lua", [[
      local nano = require "nano"
      return { v = function() return { v = 2 } end,
               reload = function() local ok, err = nano.reload(); return { ok = ok, err = err, v = 2 } end }
    ]])
    assert.same({ ok = true, v = 1 }, c:request("Room.reload", {}))
    assert.same({ v = 2 }, c:request("Room.v", {}))
  end)
end)

describe("a failed reload", function()
  it("changes nothing: settings, listeners, modules, components", function()
    local dir = start({
      ["main.lua"] = MAIN .. 'nano.set_dictionary({ ["Room.v"] = 1 })\n',
      ["room.lua"] = "local Room = { n = 1 }\nfunction Room:v() return { v = 1 } end\nreturn Room\n",
    })
    local room = package.loaded.room
    local config, listeners, dict = nano.config(), nano.listeners(), nano.dictionary()
    local serializer = nano.serializer()
    write(dir .. "/main.lua", [[
      local nano = require "nano"
      nano.set_dictionary({ ["Room.v"] = 9 })
      nano.set_heartbeat_interval(1)
      nano.set_serializer("msgpack")
      nano.set_handshake_validator(function() return false end)
      nano.register(require("room"), { name = "Room" })
      nano.register({ x = function() end }, { name = "X" })
      nano.listen("127.0.0.1:0")
      nano.listen("127.0.0.1:0") -- a second listener: new
      error("main refuses")
    ]])
    write(dir .. "/room.lua", "local Room = { n = 2 }\nfunction Room:v() return { v = 2 } end\nreturn Room\n")
    local err = reload_fails("main%.lua:10: main refuses")
    assert.not_matches("\n", err)
    assert.same(config, nano.config())
    assert.same(listeners, nano.listeners())
    assert.equal(1, core.stats().listeners)
    assert.same(dict, nano.dictionary())
    assert.equal(serializer, nano.serializer())
    assert.equal(room, package.loaded.room)
    assert.same({ "Room.v" }, nano.routes())
    local c = server:connect() -- the validator did not change
    assert.same({ v = 1 }, c:request("Room.v", {}))
  end)

  it("reports a syntax error with file and line, and the next good edit reloads", function()
    local dir = start({ ["main.lua"] = MAIN, ["room.lua"] = "return { v = function() return { v = 1 } end }\n" })
    local room = package.loaded.room
    write(dir .. "/room.lua", "local x = 1\nreturn { v = function() return { v = 2 } end\n")
    reload_fails("room%.lua:3:")
    assert.equal(room, package.loaded.room)
    local c = server:connect()
    assert.same({ v = 1 }, c:request("Room.v", {}))
    write(dir .. "/room.lua", "return { v = function() return { v = 3 } end }\n")
    reload_ok()
    assert.same({ v = 3 }, c:request("Room.v", {}))
  end)

  it("puts the component back as it was when a hook fails, and stops what the hooks made", function()
    local dir = start({
      ["main.lua"] = MAIN,
      ["room.lua"] = "local Room = { n = 1, t = { 1 } }\nfunction Room:v() return { v = 1, n = self.n } end\nreturn Room\n",
    })
    local comp = nano._state.by_name.Room.comp
    local t, timers = comp.t, core.stats().timers
    write(dir .. "/room.lua", [[
      local nano = require "nano"
      local Room = setmetatable({ added = true }, { __index = { inherited = true } })
      function Room:v() return { v = 2 } end
      function Room:on_reload()
        nano.new_timer(0.01, function() error("a timer of a failed reload ran") end)
        self.n, self.t = -1, nil
        error("hook refuses")
      end
      return Room
    ]])
    reload_fails("Room%.on_reload: .*room%.lua:7: hook refuses")
    assert.equal(comp, nano._state.by_name.Room.comp)
    assert.same({ n = 1, t = { 1 }, v = comp.v }, comp)
    assert.equal(t, comp.t)
    assert.is_nil(getmetatable(comp))
    assert.equal(timers, core.stats().timers)
    local c = server:connect()
    assert.same({ v = 1, n = 1 }, c:request("Room.v", {}))
  end)

  it("undoes what the script made before it failed: timers, invokes, callbacks, stages", function()
    local dir = start({ ["main.lua"] = MAIN, ["room.lua"] = "return { v = function() return { v = 1 } end }\n" })
    local closed, timers = #nano._state.closed_cbs, core.stats().timers
    write(dir .. "/main.lua", [[
      local nano = require "nano"
      local p = nano.persist("ran")
      p.timer_id = nano.new_timer(0.01, function() p.timer = true end):id()
      require("nano.core").timer(0.01, 0.01, function() p.core_timer = true end)
      nano.invoke(function() p.invoke = true end)
      nano.on_session_closed(function() p.closed = true end)
      nano.pipeline.inbound:push_back(function() p.stage = true end)
      nano.register(require("room"), { name = "Room" })
      error("main refuses")
    ]])
    reload_fails("main refuses")
    assert.equal(timers, core.stats().timers)
    assert.equal(closed, #nano._state.closed_cbs)
    assert.equal(0, nano.pipeline.inbound:count())
    local c = server:connect()
    c:request("Room.v", {})
    c:close()
    server:wait_until(function() return #server:sessions() == 0 end)
    server:advance(1)
    local id = nano.persist("ran").timer_id
    assert.same({ timer_id = id }, nano.persist("ran"))
    local t = nano.new_timer(1, function() end) -- timer ids still only grow
    assert.is_true(t:id() > id)
    t:stop()
  end)

  it("restores pipeline stages a failed script cleared", function()
    local dir = start({
      ["main.lua"] = MAIN .. "nano.pipeline.inbound:push_back(function() end)\n",
      ["room.lua"] = "return { v = function() return { v = 1 } end }\n",
    })
    local stage = nano.pipeline.inbound._fns[1]
    write(dir .. "/main.lua", "local nano = require 'nano'\nnano.pipeline.inbound:clear()\nerror('no')\n")
    reload_fails()
    assert.equal(1, nano.pipeline.inbound:count())
    assert.equal(stage, nano.pipeline.inbound._fns[1])
  end)

  it("refuses, while sessions are connected, a dictionary that changes a code or a new serializer", function()
    local dir = start({
      ["main.lua"] = MAIN .. 'nano.set_dictionary({ ["Room.v"] = 1 })\n',
      ["room.lua"] = "return { v = function() return { v = 1 } end }\n",
    })
    local c = server:connect()
    write(dir .. "/main.lua", MAIN .. 'nano.set_dictionary({ ["Room.v"] = 2 })\n')
    reload_fails("dictionary changes route 'Room.v'")
    write(dir .. "/main.lua", MAIN .. 'nano.set_dictionary({ ["Room.w"] = 1 })\n')
    reload_fails("dictionary changes route 'Room.v' %(code 1 %-> nil%)")
    write(dir .. "/main.lua", MAIN .. 'nano.set_dictionary({ ["Room.v"] = 1 })\nnano.set_serializer("msgpack")\n')
    reload_fails("serializer changes from json to msgpack")
    write(dir .. "/main.lua", MAIN .. 'nano.set_dictionary({ ["Room.v"] = 1, onNew = 2 })\n')
    reload_ok() -- adding is fine
    assert.same({ ["Room.v"] = 1, onNew = 2 }, nano.dictionary())
    c:close()
    server:wait_until(function() return #server:sessions() == 0 end)
    write(dir .. "/main.lua", MAIN .. 'nano.set_dictionary({ ["Room.v"] = 5 })\n')
    reload_ok() -- nobody connected: anything goes
  end)
end)

describe("what old code made", function()
  local MAIN_TIMERS = [[
    local nano = require "nano"
    nano.set_timer_precision(0.01)
    local Room = require "room"
    nano.register(Room, { name = "Room" })
    nano.listen("127.0.0.1:0")
    local log = nano.persist("log", { ticks = {} })
    nano.new_timer(0.1, function() log.ticks[#log.ticks + 1] = "load v" .. Room.version() end)
  ]]
  local function room(v)
    return ([[
      local nano = require "nano"
      local log = nano.persist("log", { ticks = {} })
      local Room = {}
      local function version() return %d end
      Room.version = version
      function Room:start()
        local comp = self
        nano.new_timer(0.1, function()
          log.ticks[#log.ticks + 1] = "runtime v" .. version() .. " table v" .. comp.version()
        end)
        return {}
      end
      return Room
    ]]):format(v)
  end

  it("load timers are replaced; a handler's timer keeps its function", function()
    local dir = start({ ["main.lua"] = MAIN_TIMERS, ["room.lua"] = room(1) })
    local log = nano.persist("log")
    server:connect():request("Room.start", {})
    server:advance(0.1)
    assert.same({ "load v1", "runtime v1 table v1" }, log.ticks)
    write(dir .. "/room.lua", room(2))
    reload_ok()
    log.ticks = {}
    server:advance(0.1)
    table.sort(log.ticks)
    assert.same({ "load v2", "runtime v1 table v2" }, log.ticks)
  end)

  it("on_session_closed from the script is replaced; session:on_close from a handler is kept", function()
    local main = [[
      local nano = require "nano"
      local log = nano.persist("log", { closed = {} })
      local V = %d
      nano.register({ watch = function(_, s) s:on_close(function() log.closed[#log.closed + 1] = "on_close v" .. V end); return {} end }, { name = "Room" })
      nano.on_session_closed(function() log.closed[#log.closed + 1] = "closed v" .. V end)
      nano.listen("127.0.0.1:0")
    ]]
    local dir = start({ ["main.lua"] = main:format(1) })
    local c = server:connect()
    c:request("Room.watch", {})
    write(dir .. "/main.lua", main:format(2))
    reload_ok()
    reload_ok()
    c:close()
    server:wait_until(function() return #nano.persist("log").closed == 2 end)
    server:advance(0.1)
    assert.same({ "on_close v1", "closed v2" }, nano.persist("log").closed)
  end)

  it("pipeline stages from the script are replaced, not added twice", function()
    local main = MAIN .. "nano.pipeline.inbound:push_back(function() end)\nnano.pipeline.outbound:push_front(function() end)\n"
    start({ ["main.lua"] = main, ["room.lua"] = "return { v = function() return {} end }\n" })
    reload_ok()
    reload_ok()
    assert.equal(1, nano.pipeline.inbound:count())
    assert.equal(1, nano.pipeline.outbound:count())
  end)

  it("groups made while loading come back with their members", function()
    local main = [[
      local nano = require "nano"
      local a, b = nano.new_group("g"), nano.new_group("g")
      local p = nano.persist("p", { seen = {} })
      p.seen[#p.seen + 1] = { a, b }
      nano.register({ join = function(_, s) a:add(s); return { a = a:count(), b = b:count() } end }, { name = "Room" })
      nano.listen("127.0.0.1:0")
    ]]
    start({ ["main.lua"] = main })
    local c = server:connect()
    assert.same({ a = 1, b = 0 }, c:request("Room.join", {}))
    reload_ok()
    local seen = nano.persist("p").seen
    assert.equal(seen[1][1], seen[2][1])
    assert.equal(seen[1][2], seen[2][2])
    assert.not_equal(seen[2][1], seen[2][2])
    assert.equal(1, seen[2][1]:count())
  end)
end)

describe("nano.persist", function()
  it("returns the same table for a name, fills in defaults, and starts empty in a new server", function()
    start({ ["main.lua"] = MAIN, ["room.lua"] = "return {}\n" })
    local t = nano.persist("x", { a = 1, b = {} })
    t.a = 5
    assert.equal(t, nano.persist("x", { a = 2, c = 3 }))
    assert.same({ a = 5, b = {}, c = 3 }, t)
    assert.equal(nano.persist(), nano.persist())
    assert.not_equal(nano.persist(), t)
    assert.has_error(function() nano.persist(1) end)
  end)
end)

describe("nano.reload inside a load", function()
  it("is refused while the main script runs", function()
    local main = [[
      local nano = require "nano"
      local p = nano.persist("p", { results = {} })
      local ok, err = nano.reload()
      p.results[#p.results + 1] = tostring(ok) .. " " .. tostring(err)
      nano.listen("127.0.0.1:0")
    ]]
    start({ ["main.lua"] = main })
    reload_ok()
    assert.same({ "nil the main script is still loading", "nil a reload is already running" },
                nano.persist("p").results)
  end)
end)

describe("nano.watch", function()
  local U = require "spec.fixtures.api_util"
  after_each(function()
    nano.unwatch()
    U.restore_log_level()
  end)

  local function watched_with(opts)
    local dir = start({ ["main.lua"] = "require('nano').listen('127.0.0.1:0')\n" })
    for _, d in ipairs({ "lib", "spec", "spec/helpers", "tests", "test", "specs" }) do
      assert(os.execute("mkdir -p '" .. dir .. "/" .. d .. "'") == 0)
      write(dir .. "/" .. d .. "/m.lua", "return {}\n")
    end
    local logs = U.capture_logs()
    assert.is_true(nano.watch(opts))
    return U.find(logs, "watching")
  end

  it("leaves test folders (spec, specs, test, tests) out: saving a spec does not reload", function()
    assert.equal("info: watching 2 folders for .lua changes", watched_with()) -- the script's and lib
  end)

  it("watches them when exclude names other folders", function()
    assert.equal("info: watching 6 folders for .lua changes", watched_with({ exclude = { "lib" } }))
    nano.unwatch()
    assert.has_error(function() nano.watch({ exclude = "spec" }) end, "watch: exclude must be a list of folder names")
  end)
end)

describe("core.watch and core.scandir", function()
  it("report a file renamed into a folder, and stop after close", function()
    local dir = start({ ["main.lua"] = "require('nano').listen('127.0.0.1:0')\n" })
    assert(os.execute("mkdir '" .. dir .. "/sub'") == 0)
    local types = core.scandir(dir)
    assert.same({ ["main.lua"] = "file", sub = "dir" }, types)
    local seen = {}
    local w = assert(core.watch(dir, function(name, kind) seen[#seen + 1] = name .. " " .. kind end))
    write(dir .. "/.x.tmp", "x")
    assert(os.rename(dir .. "/.x.tmp", dir .. "/x.lua"))
    server:wait_until(function()
      for _, e in ipairs(seen) do if e == "x.lua rename" then return true end end
    end, 5, "a rename event for x.lua")
    w:close()
    w:close()
    local n = #seen
    write(dir .. "/y.lua", "y")
    server:advance(0.05)
    assert.equal(n, #seen)
    assert.is_nil(core.watch(dir .. "/missing", function() end))
    local entries, err = core.scandir(dir .. "/missing")
    assert.is_nil(entries)
    assert.matches("no such file", err)
  end)
end)
