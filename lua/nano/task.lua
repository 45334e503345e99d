-- nano.task: Lua code that waits without blocking the loop.
--
-- A task is a coroutine that nano runs. A function that waits (nano.sleep, a query, an HTTP
-- request, an RPC) calls task.await: it starts the operation, yields the task, and the operation's
-- completion — always a callback on the loop thread — resumes it with the results. The loop never
-- stops for a waiting task; other sessions go on.
--
-- The contract every waiting function is built on:
--
--   task.await(what, start) -> ...
--     Must run inside a task (task.current() ~= nil), else raises an error naming `what`.
--     Calls start(resume). The operation calls resume(...) exactly once when it completes, on the
--     loop thread, possibly before start returns; later calls are ignored (return false). await
--     returns resume's arguments. By convention a failure is resume(nil, "message").
--
--   task.spawn(fn, ...) -> t        runs fn(...) in a new task now (until its first wait)
--   t:wait([timeout]) -> ...        fn's results, or nil, err (raised, timed out, cancelled)
--   t:cancel()                      the task is never resumed again; waiters get nil, "cancelled"
--   task.sleep(secs)                waits on the core's timer heap (virtual time in nano.test)
--
-- Tasks reuse coroutines from a pool, so running a function that never waits costs one resume.
-- Each resume after a wait is a slice of its own for the watchdog (a budget per slice).
local core = require "nano.core"

local co_create, co_resume, co_yield, co_running =
  coroutine.create, coroutine.resume, coroutine.yield, coroutine.running
local type, select, tostring, error, setmetatable, unpack, xpcall, pcall =
  type, select, tostring, error, setmetatable, unpack, xpcall, pcall
local traceback = debug.traceback

local M = {}

local function pack(...) return { n = select("#", ...), ... } end

local function log_error(msg) core.log(core.ERROR, msg) end
M._set_log_error = function(fn) log_error = fn end -- nano routes it through nano.log

local Task = {}
Task.__index = Task
M.Task = Task

local by_co = setmetatable({}, { __mode = "k" }) -- coroutine -> task, while it can run

--- task.current() -> the running task, or nil outside one
function M.current()
  local co = co_running()
  return co and by_co[co]
end

-- Coroutines are reused: a task's coroutine runs `run_loop`, which calls the task's function
-- under xpcall and, when it returns or raises, yields DONE with the outcome instead of dying, so
-- the next task resumes the same coroutine with its own function. A handler that never waits
-- then costs one resume and no coroutine creation (measured in docs/benchmarks.md). A coroutine
-- whose task was cancelled while waiting is never resumed again and is left to the GC.
local next_turn -- task.sleep(0), below
local DONE = {}
local NO_RESULTS = { n = 0 } -- shared: most tasks (every handler's) return nothing
local POOL_MAX = 256
local pool, pool_n = {}, 0         -- coroutines for nano.spawn's tasks
local run_pool, run_pool_n = {}, 0 -- tasks of M._run, with their coroutines

local function task_traceback(e) return traceback(tostring(e), 2) end

local function run_loop(fn, ...)
  return run_loop(co_yield(DONE, xpcall(fn, task_traceback, ...)))
end

-- The same for M._run's functions, which catch their own errors (nano's dispatcher, timer and
-- close callbacks): no second xpcall per message. Should one raise all the same, its coroutine
-- dies and is not reused (stepped's "not ok" path).
local function run_loop_caught(fn, ...)
  return run_loop_caught(co_yield(DONE, true, fn(...)))
end

local function finish(t, ok, ...)
  t.status = ok and "done" or "failed"
  by_co[t.co] = nil
  if ok then
    t.results = select("#", ...) == 0 and NO_RESULTS or pack(...)
  else
    t.err = tostring((...))
  end
  local waiters = t.waiters
  t.waiters = nil
  if not ok and (not waiters or #waiters == 0) then
    log_error((t.name or "task") .. " failed: " .. t.err)
  end
  if waiters then
    for i = 1, #waiters do
      if ok then waiters[i](unpack(t.results, 1, t.results.n)) else waiters[i](nil, t.err) end
    end
  end
end

-- What a resume of t's coroutine came back with: DONE and the outcome when the function
-- returned or raised (the coroutine goes back to the pool), nothing when it waits. finished: the
-- coroutine returned (core.resume says so; a core thread's function simply returns, and
-- core.resume has handed the thread back then).
local release_thread = core.release_thread
local thread_failed -- nano's dispatcher: a core thread's error after a wait (M._set_thread_failed)
-- A core thread (see M._enter): no DONE protocol, the function simply returns. A fixed argument
-- list: LuaJIT compiles no trace that starts at a vararg function's entry, and this is where a
-- handler's resume after a wait comes back to.
local function stepped_core(t, ok, finished, marker)
  if not ok then
    by_co[t.co] = nil
    release_thread(t.co, false)
    local tb = traceback(t.co, tostring(marker))
    if thread_failed and thread_failed(t, marker, tb) then
      t.status, t.err = "failed", tostring(marker) -- the dispatcher answered and logged it
      return
    end
    return finish(t, false, tb)
  end
  if finished then t.status = "done" end
end
-- Any other task (spawn, _run: run_loop's DONE protocol); core threads go to stepped_core.
local function stepped(t, ok, finished, marker, ...)
  if marker == DONE then
    finish(t, ...)
    if t.reusable then
      if run_pool_n < POOL_MAX then
        run_pool_n = run_pool_n + 1
        run_pool[run_pool_n] = t
      end
    elseif pool_n < POOL_MAX then
      pool_n = pool_n + 1
      pool[pool_n] = t.co
    end
    return
  end
  if not ok then -- run_loop catches errors; an M._run function that raised gets here
    by_co[t.co] = nil
    return finish(t, false, traceback(t.co, tostring(marker)))
  end
end

-- A task's first resume (coroutine.resume: no new watchdog slice, it runs inside its caller's).
local function started(t, ok, ...) return stepped(t, ok, false, ...) end

-- Resumes t with the values; when its function returns or raises, the task is finished. A resume
-- after a wait starts a new slice for the watchdog: each slice between waits gets the whole
-- budget, and a stuck slice is named after the task (t.msg_s, the session, and t.watch_route,
-- which nano sets for a handler). core.resume does the slice, the resume, and a core thread's
-- hand-back in one C call (each C call is a trace exit for the JIT).
local core_resume = core.resume
local function step(t, ...)
  -- a core thread resumed here returns to this resume, not to the core: nano's dispatcher then
  -- sends its response itself (init.lua's handle)
  if t.core_thread then
    t.waited = true
    return stepped_core(t, core_resume(t.co, true, t.msg_s, t.watch_route, ...))
  end
  return stepped(t, core_resume(t.co, false, t.msg_s, t.watch_route, ...))
end

--- task.spawn(fn, ...) -> task: fn runs now, in a (pooled) coroutine, until it first waits.
function M.spawn(fn, ...)
  if type(fn) ~= "function" then error("spawn: expected a function", 2) end
  local co
  if pool_n > 0 then
    co = pool[pool_n]
    pool[pool_n] = nil
    pool_n = pool_n - 1
  else
    co = co_create(run_loop)
  end
  -- every field a handler's task gets, so the table is sized once
  local t = setmetatable({ co = co, status = "running", msg_s = false, msg_type = false,
                           msg_id = false, answered = false, watch_route = false,
                           n = false }, Task)
  by_co[co] = t
  started(t, co_resume(co, fn, ...))
  return t
end

-- task._run(fn, ...): as spawn, for nano's own tasks (a handler, a timer or close callback) that
-- nobody keeps a handle to: the task table itself is reused once it finished, so running a
-- handler that never waits allocates nothing. task.current() inside one is valid until it ends.
function M._run(fn, ...)
  local t
  if run_pool_n > 0 then
    t = run_pool[run_pool_n]
    run_pool[run_pool_n] = nil
    run_pool_n = run_pool_n - 1
    t.status = "running"
  else
    t = setmetatable({ co = co_create(run_loop_caught), status = "running", reusable = true,
                       msg_s = false, msg_type = false, msg_id = false, answered = false,
                       watch_route = false, n = false }, Task)
  end
  by_co[t.co] = t
  started(t, co_resume(t.co, fn, ...))
end

-- task._enter([co]) -> t: the core runs each message's dispatcher on a thread of its own, which
-- it resumes itself (host.h: nh_host_handler_thread) and reuses when the function returns, so a
-- handler that does not wait costs no coroutine.resume, no yield and no table write here. The
-- dispatcher calls this first: the thread's task is made once and kept with it. When a handler
-- waits, the thread is left to that wait; step() resumes it like any task, core.resume gives it
-- back to the core once it has finished, and stepped_core() drops it if it failed.
-- co is the running thread, which the core passes with each message: coroutine.running() is not
-- compiled by the JIT, and a call to it costs the dispatcher ~200 instructions (a trace exit).
-- nano's dispatcher runs handlers unprotected on the core's threads: fn(t, err, traceback) answers
-- a handler's error that ends one (true), or leaves it to be logged as a failed task (false).
function M._set_thread_failed(fn) thread_failed = fn end
--- task._of(co) -> the task of a coroutine, while it can run
function M._of(co) return by_co[co] end
--- task._forget(co): a core thread that died is not a task any more. by_co's keys are weak, but
--- its values (the tasks) hold their coroutines: without this the dead thread, and all its
--- stack held, would stay.
function M._forget(co) by_co[co] = nil end

function M._enter(co)
  co = co or co_running()
  local t = by_co[co]
  if t then
    t.status, t.waited = "running", false
    return t
  end
  t = setmetatable({ co = co, status = "running", core_thread = true, msg_s = false,
                     msg_type = false, msg_id = false, answered = false, watch_route = false,
                     work = false, work_s = false, waited = false, n = false }, Task)
  by_co[co] = t
  return t
end

-- A yield fails when a C function stands between the task and the waiting call (a table.sort
-- comparator, a string.gsub callback, an iterator of a C library): LuaJIT's message ("attempt to
-- yield across C-call boundary") names neither the call nor the cure, so it is replaced.
local FORGET = {} -- resume(FORGET): the wait failed to start; later completions are ignored
local function cannot_wait(what, why)
  return what .. " cannot wait here: a C function (table.sort, string.gsub, a C library's "
    .. "callback) called this code, and a task cannot wait through it; call " .. what
    .. " outside that callback (" .. tostring(why) .. ")"
end
local function yielded(what, resume, ok, ...)
  if ok then return ... end
  resume(FORGET)
  error(cannot_wait(what, (...)), 3)
end
-- (a fixed argument list: what runs first after nano.sleep(0)'s resume, see stepped_core)
local function yielded_sleep(ok, err)
  if ok then return end
  local t = by_co[co_running()]
  if t then t.sleeping = false end
  error(cannot_wait("nano.sleep", err), 3)
end
--- task.await(what, start) -> the values the operation resumes with (see the contract above).
function M.await(what, start)
  local co = co_running()
  local t = co and by_co[co]
  if not t then
    error(what .. " waits, so it can only be called from a handler, a hook, a timer callback or "
      .. "a task (nano.spawn); here nothing can wait", 3)
  end
  local state, early = "starting", nil
  local function resume(...)
    if state == "done" then return false end
    if ... == FORGET then
      state = "done"
      return false
    end
    if state == "starting" then
      state, early = "done", pack(...)
      return true
    end
    state = "done"
    if t.status == "running" then step(t, ...) end
    return true
  end
  start(resume)
  if state == "done" then return unpack(early, 1, early.n) end
  state = "waiting"
  return yielded(what, resume, pcall(co_yield))
end

-- nano.sleep(0), "let the others run": every task that asks in one loop turn is resumed on the
-- next by one core timer, not one timer each (a timer is a userdata and two registry refs).
-- The list holds resume functions (task.await's) or, for nano.sleep(0) itself, the waiting task:
-- it needs no completion callback, so its wait makes no closure (the hot path of a handler that
-- lets others run).
local ready, ready_n, ready_timer = {}, 0, nil
local function step_ready(t)
  if t.sleeping and t.status == "running" then
    t.sleeping = false
    step(t)
  end
end
local function run_ready()
  local list, n = ready, ready_n
  ready, ready_n, ready_timer = {}, 0, nil
  for i = 1, n do
    local r = list[i]
    if type(r) == "function" then r() else step_ready(r) end
  end
end
-- nano.test's reset stops every timer: the tasks waiting on it are dropped with it
function M._reset() ready, ready_n, ready_timer = {}, 0, nil end
next_turn = function(resume)
  ready_n = ready_n + 1
  ready[ready_n] = resume
  if not ready_timer then ready_timer = core.timer(0, 0, run_ready) end
end

--- task.sleep(secs): waits secs seconds of the core's clock (server:advance moves it in tests).
function M.sleep(secs)
  if type(secs) ~= "number" or secs < 0 or secs ~= secs then
    error("sleep: expected seconds (a number >= 0)", 2)
  end
  if secs == 0 then
    local co = co_running()
    local t = co and by_co[co]
    if not t then return M.await("nano.sleep", next_turn) end -- await says why it cannot wait
    ready_n = ready_n + 1
    ready[ready_n] = t
    if not ready_timer then ready_timer = core.timer(0, 0, run_ready) end
    t.sleeping = true
    return yielded_sleep(pcall(co_yield))
  end
  return M.await("nano.sleep", function(resume)
    core.timer(secs, 0, function() resume() end)
  end)
end

--- t:wait([timeout]) -> fn's results | nil, err
function Task:wait(timeout)
  if self.status == "done" then return unpack(self.results, 1, self.results.n) end
  if self.status ~= "running" then return nil, self.err end
  if timeout ~= nil and (type(timeout) ~= "number" or timeout < 0) then
    error("wait: timeout must be seconds (a number >= 0)", 2)
  end
  return M.await("task:wait", function(resume)
    local waiters = self.waiters or {}
    self.waiters = waiters
    waiters[#waiters + 1] = resume
    if timeout then
      core.timer(timeout, 0, function() resume(nil, "timeout") end)
    end
  end)
end

--- t:cancel(): the task is not resumed again; its waiters get nil, "cancelled".
function Task:cancel()
  if self.status ~= "running" then return false end
  self.status, self.err = "cancelled", "cancelled"
  by_co[self.co] = nil -- its coroutine stays suspended (not pooled) until the GC takes it
  if self.core_thread then release_thread(self.co, false) end -- the core forgets it too
  local waiters = self.waiters
  self.waiters = nil
  if waiters then
    for i = 1, #waiters do waiters[i](nil, "cancelled") end
  end
  return true
end

--- t:status() -> "running" | "done" | "failed" | "cancelled"
function Task:state() return self.status end

return M
