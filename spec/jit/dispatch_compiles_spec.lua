-- The dispatch path is compiled by LuaJIT, not left to its interpreter (issue 18): under a steady
-- ping-pong, nano's dispatcher (lua/nano/init.lua, and the flat writer's walks it generates),
-- tasks (lua/nano/task.lua) and the JSON serializer (lua/nano/json.lua) get traces, and none of
-- the traces that start there aborts (an abort is retried, then the spot is blacklisted and left
-- to the interpreter for good; one the GC caused, by running a finalizer during the recording,
-- counts only if nothing compiled from that start or it happened there more than twice).
-- A handler that only returns its answer costs the dispatcher no C call at all: the core sends
-- the response the dispatcher returns (core.set_hook's on_unsent), so no trace there ends at one.
-- So does one that pushes a flat value: s:push writes it and hands it to the core through the
-- FFI (lua_host.c: ffi_push_flat). One that calls a C function (nano's API where it calls the core:
-- s:push of an array, which core.push_value encodes) ends its trace there, and LuaJIT "stitches" a new one
-- after it, which it can only do where the C function was not called inside a pcall'd function
-- (a continuation that returns into a pcall aborts: "NYI: return to lower frame"): the
-- dispatcher goes on compiled after it. Counted with jit.attach, not timed.
-- Run alone (its own CTest entry, jit_dispatch_compiles): the JIT's state is per process.
local nt = require "nano.test"
local funcinfo = require("jit.util").funcinfo
local traceerr = require("jit.vmdef").traceerr

local here = debug.getinfo(1, "S").source:match("^@(.*/)") or "./"

-- Trace error 0, "error thrown or hook called during recording": also what LuaJIT reports when a
-- __gc finalizer runs while a trace is being recorded (lj_gc.c aborts the recording first). That
-- depends on when the GC reaches its finalize phase, not on the code recorded, and the recording
-- is retried: such an abort is not the code's, as long as a trace from the same start compiles
-- and it does not come back (traces_of).
local RECORDING_INTERRUPTED = 0
assert(traceerr[RECORDING_INTERRUPTED]:find("during recording", 1, true))

-- nano.test's dispatch hook (lua/nano/test.lua) is on the path too: it tail-calls nano's
-- dispatcher, and which of the two becomes hot first, and so starts the trace that inlines the
-- other, depends on where the hot counters of their bytecode fall. Only that function of
-- test.lua: the rest is the spec's harness (wait_until's closures are not compiled).
local test_lua = assert(package.searchpath("nano.test", package.path))
local hook_line
do
  local n = 0
  for line in io.lines(test_lua) do
    n = n + 1
    if line:find('core.set_hook("dispatch", function', 1, true) then hook_line = n end
  end
  assert(hook_line, "nano.test's dispatch hook not found in " .. test_lua)
end

local function ours(info)
  local src = info and info.source or ""
  return src:find("nano/init%.lua$") or src:find("nano/task%.lua$") or src:find("nano/json%.lua$")
    or src:find("^=nano%.flat_writer") -- the walks init.lua generates
    or src:find("^=nano%.protobuf flat writer") -- the writers lua/nano/protobuf.lua generates
    or (src:find("nano/test%.lua$") and info.linedefined == hook_line)
end

describe("the dispatch path", function()
  local server
  after_each(function() if server then server:stop() end end)

  -- the traces of a steady burst of requests to route (jit.flush first: what earlier code
  -- traced goes, the workload's traces are recorded afresh)
  local function traces_of(route)
    local c = server:connect()
    local function burst(n)
      local got = 0
      for i = 1, n do c:request(route, { i = i }, function() got = got + 1 end) end
      server:wait_until(function() return got == n end, nil, n .. " responses")
    end
    local starts, is_stitch, compiled_from, interrupted = {}, {}, {}, {}
    local r = { compiled = {}, aborts = {}, stitched = {} }
    -- for a start: otr, oex = the trace it continues and how ("stitch" after a C call)
    -- for an abort: err, its detail
    local function on_trace(what, tr, func, pc, err, info)
      if what == "start" then
        starts[tr] = funcinfo(func, pc)
        if info == -1 and ours(starts[tr]) then is_stitch[tr] = true end -- oex -1: a stitch
      elseif what == "stop" and ours(starts[tr]) then
        r.compiled[#r.compiled + 1] = starts[tr].loc
        compiled_from[starts[tr].loc] = true
        if is_stitch[tr] then r.stitched[#r.stitched + 1] = starts[tr].loc end
      elseif what == "abort" and ours(starts[tr]) then
        local at = funcinfo(func, pc)
        local why = (traceerr[err] or tostring(err)):gsub("%%[ds]", tostring(info))
        local text = string.format("%s (aborted at %s: %s)", starts[tr].loc, tostring(at.loc), why)
        if err == RECORDING_INTERRUPTED then interrupted[#interrupted + 1] = { starts[tr].loc, text }
        else r.aborts[#r.aborts + 1] = text end
      end
    end
    -- finalize the garbage of what ran before (the server's start, the last case): its __gc
    -- calls would otherwise run during the workload, and each one interrupts a recording
    collectgarbage()
    jit.flush()
    jit.attach(on_trace, "trace")
    for _ = 1, 20 do burst(300) end
    jit.attach(on_trace)
    c:close()
    -- an interrupted recording counts when no trace from its start compiled, or when its start
    -- was interrupted more than twice (a finalizer is rare after the collection above; an error
    -- the code throws while it is recorded would come back every time)
    local times = {}
    for _, abort in ipairs(interrupted) do times[abort[1]] = (times[abort[1]] or 0) + 1 end
    for _, abort in ipairs(interrupted) do
      if not compiled_from[abort[1]] or times[abort[1]] > 2 then r.aborts[#r.aborts + 1] = abort[2] end
    end
    return r
  end

  -- route's handler calls no C function: compiled, no abort, and no trace continues after a C call
  local function compiles_without_c_calls(route, main)
    server = nt.start(here .. (main or "main.lua"))
    local r = traces_of(route)
    assert.is_true(#r.compiled > 0, "no trace starts in nano's dispatch path")
    assert.same({}, r.aborts)
    assert.same({}, r.stitched, "a trace of the dispatcher continues after a C call")
  end

  it("compiles a handler that answers at once, with no C call on the way", function()
    compiles_without_c_calls("Bench.ping")
  end)

  it("compiles a reply with a table one level down (the flat writer's walk one level down)", function()
    compiles_without_c_calls("Bench.nested")
  end)

  it("compiles a reply with a table two levels down (the flat writer leaves it to the encoder)", function()
    compiles_without_c_calls("Bench.deep")
  end)

  it("compiles a protobuf reply written by its type's flat writer", function()
    local pbc = require "nano.protobuf_codec"
    local before = pbc.flat_taken()
    compiles_without_c_calls("Bench.ping", "main_pb.lua")
    -- every reply of the workload (20 bursts of 300) was the writer's, not the core encoder's
    assert.is_true(pbc.flat_taken() - before >= 6000, "replies written by the flat writer: "
      .. (pbc.flat_taken() - before))
  end)

  it("compiles a handler that pushes: the push goes through the FFI, with no C call", function()
    local core = require "nano.core"
    local before = core.ffi_pushes()
    compiles_without_c_calls("Bench.echo")
    -- every push of the workload (20 bursts of 300) went that way
    assert.is_true(core.ffi_pushes() - before >= 6000, "pushes through the FFI: "
      .. (core.ffi_pushes() - before))
  end)

  it("compiles the dispatcher after a C function the handler calls", function()
    server = nt.start(here .. "main.lua")
    local r = traces_of("Bench.echo_list")
    assert.is_true(#r.compiled > 0, "no trace starts in nano's dispatch path")
    assert.same({}, r.aborts)
    assert.is_true(#r.stitched >= 1, "the dispatcher is not compiled after the C calls it makes: "
      .. #r.stitched .. " stitched continuation(s) in nano's files (" .. table.concat(r.stitched, ", ") .. ")")
  end)
end)
