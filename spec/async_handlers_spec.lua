-- Handlers that wait (docs/async.md): every handler, hook and callback runs in a task; a session's
-- messages are handled in order, with a bounded queue; waits survive a closed session and a
-- shutdown's grace period. Time is virtual: server:advance moves it.
local nt = require "nano.test"
local nano = require "nano"
local task = require "nano.task"
local U = require "spec.fixtures.api_util"

describe("handlers that wait", function()
  local server, c, trace
  local Slow = {}
  function Slow:sleep(s, msg)
    trace[#trace + 1] = "start " .. msg.n
    nano.sleep(msg.secs or 1)
    trace[#trace + 1] = "end " .. msg.n
    return { n = msg.n }
  end
  function Slow:quick(s, msg)
    trace[#trace + 1] = "quick " .. msg.n
    return { n = msg.n }
  end
  function Slow:answer_from_task(s, msg)
    local mid = s:last_mid()
    nano.spawn(function()
      nano.sleep(1)
      assert(s:response_mid(mid, { from = "task" }))
    end)
    nano.sleep(2)
    return { from = "handler" } -- answered already: not sent
  end
  -- answers at once from another task, then returns a value of its own (not sent)
  local function answer_first(_, s)
    local mid = s:last_mid()
    nano.spawn(function() assert(s:response_mid(mid, { from = "task" })) end)
    nano.sleep(0)
    return { from = "handler" }
  end
  Slow.answer_first = answer_first
  function Slow:in_task(s) return { task = task.current() ~= nil } end
  function Slow:fail(s, msg)
    trace[#trace + 1] = "fail " .. msg.n
    if msg.secs then nano.sleep(msg.secs) end
    if msg.refuse then error({ code = 409, msg = "refused " .. msg.n }) end
    error("failed " .. msg.n)
  end

  local Conc = {}
  Conc.answer_first = answer_first
  function Conc:sleep(s, msg)
    trace[#trace + 1] = "start " .. msg.n
    nano.sleep(1)
    trace[#trace + 1] = "end " .. msg.n
    return { n = msg.n }
  end

  before_each(function()
    trace = {}
    server = nt.start(U.FIXTURE)
    nano.register(Slow, { name = "Slow" })
    nano.register(Conc, { name = "Conc", concurrent = true })
    c = server:connect()
  end)
  after_each(function()
    server:stop()
    U.restore_log_level()
  end)

  -- Sends a request without waiting; the returned table gets .res / .err when it is answered.
  local function send(cl, route, msg)
    local r = {}
    cl:request(route, msg, function(res, err) r.res, r.err, r.done = res, err, true end)
    return r
  end

  it("a handler runs inside a task", function()
    assert.same({ task = true }, c:request("Slow.in_task", {}))
  end)

  it("a request whose handler waits is answered when the handler returns", function()
    local r = send(c, "Slow.sleep", { n = 1 })
    c:sync()
    server:advance(0.9)
    server:poll()
    assert.is_nil(r.done)
    server:advance(0.1)
    server:wait_until(function() return r.done end)
    assert.same({ n = 1 }, r.res)
  end)

  it("s:response_mid from another task answers, and the handler's return is not sent again", function()
    local r = send(c, "Slow.answer_from_task", {})
    c:sync()
    server:advance(1)
    server:wait_until(function() return r.done end)
    assert.same({ from = "task" }, r.res)
    server:advance(1)
    c:sync()
    -- a second answer for the same id would be taken as a response to nothing: the next
    -- request still gets its own answer
    assert.same({ n = 9 }, c:request("Slow.quick", { n = 9 }))
  end)

  -- one answer per request, in order (the handler's task found from the session's queue) and for
  -- a concurrent component's task (found in S.inflight): a second would be a stray response
  for _, route in ipairs({ "Slow.answer_first", "Conc.answer_first" }) do
    it("a request answered from another task is not answered again by its handler: " .. route, function()
      for _ = 1, 3 do
        assert.same({ from = "task" }, c:request(route, {}))
      end
      assert.same({ n = 9 }, c:request("Slow.quick", { n = 9 }))
      assert.equal(0, c:stray_responses())
    end)
  end

  it("a session's next message starts only when its previous handler has finished", function()
    local a = send(c, "Slow.sleep", { n = 1 })
    local b = send(c, "Slow.quick", { n = 2 })
    c:sync()
    server:poll()
    assert.same({ "start 1" }, trace)
    server:advance(1)
    server:wait_until(function() return a.done and b.done end)
    assert.same({ "start 1", "end 1", "quick 2" }, trace)
  end)

  -- Handlers run unprotected on the core's threads (a pcall around them would keep LuaJIT from
  -- compiling what follows a C call in them): their errors end the thread, and are answered as
  -- before; what the thread would have done next still happens.
  describe("a handler's error", function()
    it("is answered 500 and logged with session, route and traceback; the session goes on", function()
      local lines = U.capture_logs()
      local _, err = c:try_request("Slow.fail", { n = 1 })
      assert.same({ code = 500, msg = "internal error" }, err)
      local line = U.find(lines, "Slow.fail: handler error:")
      assert.truthy(line)
      assert.truthy(line:find("failed 1", 1, true))
      assert.truthy(line:find("stack traceback", 1, true))
      assert.same({ n = 2 }, c:request("Slow.quick", { n = 2 }))
      assert.equal(0, nano._state.running)
    end)

    it("error({ code, msg }) is the answer, logged at info", function()
      local lines = U.capture_logs()
      local _, err = c:try_request("Slow.fail", { n = 1, refuse = true })
      assert.same({ code = 409, msg = "refused 1" }, err)
      assert.truthy(U.find(lines, "Slow.fail: handler refused: 409 refused 1"))
    end)

    it("does not stop the messages queued behind it, which run in order", function()
      local a = send(c, "Slow.sleep", { n = 1 })
      local b = send(c, "Slow.fail", { n = 2 })
      local d = send(c, "Slow.quick", { n = 3 })
      local e = send(c, "Slow.fail", { n = 4 })
      local f = send(c, "Slow.quick", { n = 5 })
      c:sync()
      server:advance(1)
      server:wait_until(function() return a.done and b.done and d.done and e.done and f.done end)
      assert.same({ "start 1", "end 1", "fail 2", "quick 3", "fail 4", "quick 5" }, trace)
      assert.same({ 500, 500 }, { b.err.code, e.err.code })
      assert.same({ { n = 1 }, { n = 3 }, { n = 5 } }, { a.res, d.res, f.res })
      assert.equal(0, nano._state.running)
      assert.same({ n = 6 }, c:request("Slow.quick", { n = 6 })) -- the queue is free again
    end)

    it("after a wait is answered the same way", function()
      local lines = U.capture_logs()
      local r = send(c, "Slow.fail", { n = 1, secs = 1 })
      c:sync()
      server:advance(1)
      server:wait_until(function() return r.done end)
      assert.same({ code = 500, msg = "internal error" }, r.err)
      local line = U.find(lines, "Slow.fail: handler error:")
      assert.truthy(line)
      assert.truthy(line:find("failed 1", 1, true))
      assert.is_nil(U.find(lines, "task failed"))
      assert.equal(0, nano._state.running)
    end)

    it("in a concurrent component fails that call only", function()
      local Cf = {}
      function Cf:fail() error("concurrent failure") end
      function Cf:ok() return { ok = true } end
      nano.register(Cf, { name = "Cf", concurrent = true })
      assert.equal(500, select(2, c:try_request("Cf.fail", {})).code)
      assert.same({ ok = true }, c:request("Cf.ok", {}))
      assert.equal(0, nano._state.running)
    end)

    it("leaves no dead thread behind: the garbage collector takes it", function()
      local weak = setmetatable({}, { __mode = "k" })
      local Keep = {}
      function Keep:fail() weak[coroutine.running()] = true; error("x") end
      nano.register(Keep, { name = "Keep" })
      for _ = 1, 3 do c:try_request("Keep.fail", {}) end
      collectgarbage("collect")
      collectgarbage("collect")
      assert.is_nil(next(weak))
    end)
  end)

  it("other sessions are not held up by a waiting handler", function()
    local c2 = server:connect()
    local a = send(c, "Slow.sleep", { n = 1 })
    c:sync()
    assert.same({ n = 2 }, c2:request("Slow.quick", { n = 2 }))
    assert.is_nil(a.done)
  end)

  it("a concurrent component handles a session's messages at once", function()
    local a = send(c, "Conc.sleep", { n = 1 })
    local b = send(c, "Conc.sleep", { n = 2 })
    c:sync()
    server:poll()
    local started = { trace[1], trace[2] }
    table.sort(started) -- two connections: either read may come first
    assert.same({ "start 1", "start 2" }, started)
    server:advance(1)
    server:wait_until(function() return a.done and b.done end)
  end)

  it("beyond the session's queue a request gets 429 and the overflow is logged", function()
    nano.configure({ session_queue = 2 })
    assert.equal(2, nano.config().session_queue)
    local lines = U.capture_logs()
    local first = send(c, "Slow.sleep", { n = 1 })
    local queued = { send(c, "Slow.quick", { n = 2 }), send(c, "Slow.quick", { n = 3 }) }
    local over = send(c, "Slow.quick", { n = 4 })
    server:wait_until(function() return over.done end)
    assert.is_nil(over.res)
    assert.equal(429, over.err.code)
    assert.truthy(U.find(lines, "messages already wait for a handler"))
    server:advance(1)
    server:wait_until(function() return first.done and queued[1].done and queued[2].done end)
    assert.same({ n = 3 }, queued[2].res)
  end)

  it("a session's queue, once drained, holds the next burst in order and counts from zero", function()
    nano.configure({ session_queue = 2 })
    for round = 1, 2 do
      trace = {}
      local first = send(c, "Slow.sleep", { n = 1 })
      local queued = { send(c, "Slow.quick", { n = 2 }), send(c, "Slow.quick", { n = 3 }) }
      c:sync()
      server:advance(1)
      server:wait_until(function() return first.done and queued[1].done and queued[2].done end)
      assert.same({ "start 1", "end 1", "quick 2", "quick 3" }, trace, "round " .. round)
      assert.same({ { n = 2 }, { n = 3 } }, { queued[1].res, queued[2].res }, "round " .. round)
    end
    assert.equal(0, nano._state.running)
  end)

  it("configure refuses a session_queue that is not a whole number", function()
    assert.has_error(function() nano.configure({ session_queue = 1.5 }) end,
      "configure: session_queue: expected an integer number from 0 to 1e+06")
  end)

  it("a handler goes on after its session closed; push and response then fail", function()
    local results
    local Closing = {}
    function Closing:wait(s)
      nano.sleep(1)
      results = { push = { s:push("onX", {}) }, resp = { s:response({}) } }
    end
    nano.register(Closing, { name = "Closing" })
    send(c, "Closing.wait", {})
    c:sync()
    c:close()
    server:advance(1)
    assert.is_nil(results.push[1])
    assert.matches("closed", results.push[2])
    assert.is_nil(results.resp[1])
    assert.matches("closed", results.resp[2])
  end)

  it("lifecycle hooks, timer callbacks and close callbacks may wait", function()
    local Hooked = {}
    function Hooked:init() nano.sleep(1); trace[#trace + 1] = "init" end
    nano.register(Hooked, { name = "Hooked" }) -- registered while running: init runs now
    nano.new_after_timer(1, function() nano.sleep(1); trace[#trace + 1] = "timer" end)
    c:session():on_close(function() nano.sleep(1); trace[#trace + 1] = "on_close" end)
    c:close()
    server:advance(1)
    table.sort(trace)
    assert.same({ "init", "on_close" }, trace)
    server:advance(1)
    assert.same("timer", trace[3])
  end)

  it("waiting inside a C callback raises an error naming the function", function()
    local Sorting = {}
    function Sorting:sort(s)
      table.sort({ 3, 1, 2 }, function(a, b) nano.sleep(0); return a < b end)
    end
    nano.register(Sorting, { name = "Sorting" })
    local lines = U.capture_logs()
    local _, err = c:try_request("Sorting.sort", {})
    assert.equal(500, err.code)
    assert.matches("nano.sleep cannot wait here: a C function", U.find(lines, "Sorting.sort"), 1, true)
  end)

  -- A wait that failed must leave the core's dispatch as it was: the next handlers, of this
  -- session and another, run, wait and answer in order.
  it("after a wait failed in a C callback, handlers of any session still run and wait", function()
    local Sorting = {}
    function Sorting:sort(s)
      table.sort({ 3, 1, 2 }, function(a, b) nano.sleep(0); return a < b end)
    end
    nano.register(Sorting, { name = "Sorting" })
    U.capture_logs()
    local _, err = c:try_request("Sorting.sort", {})
    assert.equal(500, err.code)
    local other = server:connect()
    local got = {}
    c:request("Slow.sleep", { n = 1 }, function(res) got[#got + 1] = res.n end)
    other:request("Slow.sleep", { n = 2 }, function(res) got[#got + 1] = res.n end)
    c:request("Slow.quick", { n = 3 }, function(res) got[#got + 1] = res.n end) -- after 1: in order
    server:wait_until(function() return #trace == 2 end, nil, "both handlers waiting")
    local started = { trace[1], trace[2] }
    table.sort(started) -- two connections: either read may come first
    assert.same({ "start 1", "start 2" }, started)
    server:advance(1)
    server:wait_until(function() return #got == 3 end, nil, "three responses")
    table.sort(got)
    assert.same({ 1, 2, 3 }, got)
    assert.same("quick 3", trace[5])
  end)

  it("waiting outside any task raises an error naming the function and the cure", function()
    local ok, err = pcall(nano.sleep, 1)
    assert.is_false(ok)
    assert.matches("nano.sleep waits, so it can only be called from a handler", err, 1, true)
    assert.matches("nano.spawn", err, 1, true)
  end)

  describe("the watchdog", function()
    local core = require "nano.core"
    -- Busy for secs of real time: the watchdog measures real time, not the virtual clock.
    local function busy(secs)
      local t0 = core.hrtime()
      while core.hrtime() - t0 < secs do core.now() end -- a C call: the abort can land there
    end
    local Busy = {}
    function Busy:slices() -- 4 x 0.15 s of work: longer than the stall limit, but never at once
      for _ = 1, 4 do
        busy(0.15)
        nano.sleep(0)
      end
      return { ok = true }
    end
    function Busy:stuck_after_wait()
      nano.sleep(0)
      busy(5)
      return { ok = true }
    end

    before_each(function()
      nano.register(Busy, { name = "Busy" })
      nano.configure({ watchdog = 0.3 })
    end)

    it("measures each slice between waits: a handler that yields resets its budget", function()
      assert.same({ ok = true }, c:request("Busy.slices", {}))
      assert.equal(0, nano.stats().watchdog_aborts)
    end)

    it("aborts a slice that runs too long after a wait, as a handler error", function()
      local lines = U.capture_logs()
      local _, err = c:try_request("Busy.stuck_after_wait", {})
      assert.equal(500, err.code)
      assert.equal(1, nano.stats().watchdog_aborts)
      assert.truthy(U.find(lines, "Busy.stuck_after_wait: handler error"))
      -- named after the handler the slice continues, not the timer that resumed it
      assert.truthy(U.find(lines, "watchdog: session " .. c:session():id() .. " Busy.stuck_after_wait"))
    end)
  end)

  describe("shutdown", function()
    it("gives a waiting handler the grace period to finish, then closes at once", function()
      local lines = U.capture_logs()
      send(c, "Slow.sleep", { n = 1, secs = 2 })
      c:sync()
      nano.shutdown()
      assert.equal(1, #server:sessions()) -- sessions stay open during the grace
      server:advance(2)
      assert.same({ "start 1", "end 1" }, trace)
      server:wait_until(function() return #server:sessions() == 0 end)
      assert.is_nil(U.find(lines, "cut short"))
    end)

    it("cuts short what still waits after the grace and logs how many", function()
      nano.configure({ shutdown_grace = 1 })
      local lines = U.capture_logs()
      send(c, "Slow.sleep", { n = 1, secs = 10 })
      send(server:connect(), "Slow.sleep", { n = 2, secs = 10 })
      server:wait_until(function() return #trace == 2 end)
      nano.shutdown()
      server:advance(0.9)
      assert.equal(2, #server:sessions())
      server:advance(0.1)
      assert.truthy(U.find(lines, "shutdown: 2 waiting handlers cut short after the grace period"))
      server:wait_until(function() return #server:sessions() == 0 end)
    end)
  end)
end)
