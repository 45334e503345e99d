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
local core = require "nano.core"

local co_create, co_resume, co_yield, co_running, co_status =
  coroutine.create, coroutine.resume, coroutine.yield, coroutine.running, coroutine.status
local type, select, tostring, error, setmetatable, unpack = type, select, tostring, error, setmetatable, unpack
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

local function finish(t, ok, ...)
  t.status = ok and "done" or "failed"
  by_co[t.co] = nil
  if ok then
    t.results = pack(...)
  else
    t.err = traceback(t.co, tostring((...)))
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

-- Resumes t with the values; when its function returns or raises, the task is finished.
local function step(t, ...)
  local co = t.co
  local res = pack(co_resume(co, ...))
  if co_status(co) == "dead" then finish(t, unpack(res, 1, res.n)) end
end

--- task.spawn(fn, ...) -> task: fn runs now, in a new coroutine, until it first waits.
function M.spawn(fn, ...)
  if type(fn) ~= "function" then error("spawn: expected a function", 2) end
  local t = setmetatable({ co = co_create(fn), status = "running" }, Task)
  by_co[t.co] = t
  step(t, ...)
  return t
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
  return co_yield()
end

--- task.sleep(secs): waits secs seconds of the core's clock (server:advance moves it in tests).
function M.sleep(secs)
  if type(secs) ~= "number" or secs < 0 or secs ~= secs then
    error("sleep: expected seconds (a number >= 0)", 2)
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
  by_co[self.co] = nil
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
