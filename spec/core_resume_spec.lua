-- core.resume (lua_host.c): coroutine.resume for a task that waited, with the watchdog's new
-- slice and a dispatcher thread's hand-back in the same C call (task.lua's step). Its results:
-- true, finished, values... | false, false, err.
local core = require "nano.core"

describe("core.resume", function()
  it("passes values in and out, and says whether the coroutine returned or yielded", function()
    local co = coroutine.create(function(a, b)
      local c = coroutine.yield(a + b, "waiting")
      return c * 2, "done"
    end)
    assert.same({ true, false, 3, "waiting" }, { core.resume(co, false, nil, nil, 1, 2) })
    assert.same({ true, true, 10, "done" }, { core.resume(co, false, nil, nil, 5) })
  end)

  it("gives a coroutine's error as false, false, err and keeps its frames for a traceback", function()
    local function fails_here() error("broken", 0) end
    local co = coroutine.create(function()
      coroutine.yield()
      fails_here()
    end)
    assert.same({ true, false }, { core.resume(co, false, nil, nil) })
    assert.same({ false, false, "broken" }, { core.resume(co, false, nil, nil) })
    assert.matches("fails_here", debug.traceback(co))
  end)

  it("refuses a dead coroutine and the running one, as coroutine.resume does", function()
    local co = coroutine.create(function() end)
    assert.same({ true, true }, { core.resume(co, false, nil, nil) })
    assert.same({ false, false, "cannot resume dead coroutine" }, { core.resume(co, false, nil, nil) })
    local inner
    local outer = coroutine.create(function()
      inner = { core.resume(coroutine.running(), false, nil, nil) }
    end)
    assert.is_true((core.resume(outer, false, nil, nil)))
    assert.same({ false, false, "cannot resume non-suspended coroutine" }, inner)
  end)

  it("names the slice after a session it is given (a number is not a session)", function()
    local co = coroutine.create(function() return "ran" end)
    assert.has_error(function() core.resume(co, false, newproxy(), "Room.join") end)
    assert.same({ true, true, "ran" }, { core.resume(co, false, 7, "Room.join") })
  end)
end)
