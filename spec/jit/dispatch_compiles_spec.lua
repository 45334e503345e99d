-- The dispatch path is compiled by LuaJIT, not left to its interpreter (issue 18): under a steady
-- ping-pong, nano's dispatcher (lua/nano/init.lua), tasks (lua/nano/task.lua) and the JSON
-- serializer (lua/nano/json.lua) get traces, none of the traces that start there aborts (an abort
-- is retried, then the spot is blacklisted and left to the interpreter for good), and the
-- dispatcher goes on compiled after the C functions it calls (core.respond_value):
-- LuaJIT ends a trace at a call of a C function and "stitches" a new one after it, which it can
-- only do where the C function was not called inside a pcall'd function (a continuation that
-- returns into a pcall aborts: "NYI: return to lower frame"). Counted with jit.attach, not timed.
-- Run alone (its own CTest entry, jit_dispatch_compiles): the JIT's state is per process.
local nt = require "nano.test"
local funcinfo = require("jit.util").funcinfo
local traceerr = require("jit.vmdef").traceerr

local here = debug.getinfo(1, "S").source:match("^@(.*/)") or "./"

local function ours(info)
  local src = info and info.source or ""
  return src:find("nano/init%.lua$") or src:find("nano/task%.lua$") or src:find("nano/json%.lua$")
end

describe("the dispatch path", function()
  local server
  after_each(function() if server then server:stop() end end)

  it("compiles: traces start in nano's dispatcher, and none of them aborts", function()
    server = nt.start(here .. "main.lua")
    local c = server:connect()
    local function burst(n)
      local got = 0
      for i = 1, n do c:request("Bench.ping", { i = i }, function() got = got + 1 end) end
      server:wait_until(function() return got == n end, nil, n .. " responses")
    end
    local starts, compiled, aborts, is_stitch, stitched = {}, {}, {}, {}, {}
    -- for a start: otr, oex = the trace it continues and how ("stitch" after a C call)
    -- for an abort: err, its detail
    local function on_trace(what, tr, func, pc, err, info)
      if what == "start" then
        starts[tr] = funcinfo(func, pc)
        if info == -1 and ours(starts[tr]) then is_stitch[tr] = true end -- oex -1: a stitch
      elseif what == "stop" and ours(starts[tr]) then
        compiled[#compiled + 1] = starts[tr].loc
        if is_stitch[tr] then stitched[#stitched + 1] = starts[tr].loc end
      elseif what == "abort" and ours(starts[tr]) then
        local at = funcinfo(func, pc)
        local why = (traceerr[err] or tostring(err)):gsub("%%[ds]", tostring(info))
        aborts[#aborts + 1] = string.format("%s (aborted at %s: %s)", starts[tr].loc,
          tostring(at.loc), why)
      end
    end
    jit.flush() -- what earlier code traced goes: the workload's traces are recorded afresh
    jit.attach(on_trace, "trace")
    for _ = 1, 20 do burst(300) end
    jit.attach(on_trace)
    assert.is_true(#compiled > 0, "no trace starts in nano/init.lua or nano/task.lua")
    assert.same({}, aborts)
    -- after core.respond_value at least (the core decodes the payload before the call)
    assert.is_true(#stitched >= 1, "the dispatcher is not compiled after the C calls it makes: "
      .. #stitched .. " stitched continuation(s) in nano's files (" .. table.concat(stitched, ", ") .. ")")
  end)
end)
