-- nano's timers on the core's one timer heap (nano.core.timer), so that ten thousand timers cost
-- ten thousand heap entries and no Lua work between their due times.
--
-- Precision. nano runs every timer off one ticker of the timer precision (default 1 s): a timer
-- fires at the first tick at or after each of its nominal due times, at most once per tick. Here
-- each timer has its own ticks, counted from its creation in whole multiples of the precision,
-- with the same rule: the n-th call of an interval timer comes at the first tick at or after
-- created + n * interval, and never two calls on one tick. So with the default precision an
-- interval of 1.5 s fires at +2, +3, +5, +6, ... (1.5 s on average, as in nano), an interval below
-- the precision fires once per tick, and an after timer of 0.1 s fires after 1 s. Set a finer
-- precision (nano.set_timer_precision(0.001)) for sub-second timers. Cond timers check their
-- condition once per tick.
local core = require "nano.core"
local task_run = require("nano.task")._run
local scope = require "nano.scope"

local type, tostring, setmetatable = type, tostring, setmetatable
local xpcall, traceback = xpcall, debug.traceback
local floor, ceil, max = math.floor, math.ceil, math.max

local DEFAULT_PRECISION = 1
local MIN_PRECISION = 0.001

local M = {}

function M.attach(nano)
  local log = nano.log

  -- Lives in nano._state, so a reload keeps it and nano._reset clears it: timer_precision
  -- (secs), timer_seq (the last id given). A running timer is kept alive by its core timer.
  local function state()
    local S = nano._state
    S.timer_seq = S.timer_seq or 0
    S.timer_precision = S.timer_precision or DEFAULT_PRECISION
    return S
  end

  local now_ms = function() return floor(core.now() * 1000 + 0.5) end

  local Timer = {}
  Timer.__index = Timer

  --- t:id() -> the timer's id (unique while the server runs, increasing)
  function Timer:id() return self._id end

  --- t:stop(): the timer never fires again (also when called inside its own callback).
  --- Stopping a stopped timer does nothing.
  function Timer:stop()
    if self._stopped then return end
    self._stopped = true
    if self._ct then
      self._ct:stop()
      self._ct = nil
    end
  end

  function Timer:__tostring()
    return "timer " .. self._id .. (self._stopped and " (stopped)" or "")
  end

  local function run(t, fn, ...)
    local ok, err = xpcall(fn, traceback, ...)
    if not ok then log.error("timer %d: %s", t._id, tostring(err)) end
    return ok, err
  end

  -- Each call runs in a task (task.lua), so a callback may wait; an interval timer's next call
  -- does not wait for it.
  local function call(t, fn, ...)
    task_run(run, t, fn, ...)
  end

  local schedule

  -- One call of an interval (or count, or after) timer.
  local function fire(t)
    if t._stopped then return end
    t._n = t._n + 1
    if t._left then
      t._left = t._left - 1
      if t._left <= 0 then t:stop() end
    end
    call(t, t._fn, t)
    if t._chained and not t._stopped then schedule(t) end
  end

  -- Next tick index for call number n+1 (see the top of the file), as a one-shot core timer.
  schedule = function(t)
    local p, interval = t._p, t._interval
    local k = max(t._k + 1, ceil((t._n + 1) * interval / p))
    t._k = k
    local delay = t._created + k * p - now_ms()
    t._ct = core.timer(max(delay, 0) / 1000, 0, function() fire(t) end)
  end

  local function new(interval, count, fn, what)
    if type(interval) ~= "number" or interval ~= interval or interval <= 0 or interval > 1e9 then
      error(what .. ": interval must be a positive number of seconds", 3)
    end
    if type(fn) ~= "function" then error(what .. ": expected a function", 3) end
    local S = state()
    S.timer_seq = S.timer_seq + 1
    local p = floor(S.timer_precision * 1000 + 0.5)
    local ims = max(floor(interval * 1000 + 0.5), 1)
    local t = setmetatable({
      _id = S.timer_seq, _fn = fn, _n = 0, _k = 0, _left = count,
      _p = p, _interval = ims, _created = now_ms(),
    }, Timer)
    if ims % p == 0 or ims < p then
      -- every call lands on a fixed period: one repeating core timer
      local period = max(ims, p) / 1000
      t._ct = core.timer(period, count == 1 and 0 or period, function() fire(t) end)
    else
      t._chained = true
      schedule(t)
    end
    scope.record(function() t:stop() end, true) -- made while the script loads: the load's
    return t
  end

  --- nano.new_timer(interval, fn) -> timer: fn(timer) every interval seconds until stopped.
  function nano.new_timer(interval, fn)
    return new(interval, nil, fn, "new_timer")
  end

  --- nano.new_count_timer(interval, count, fn) -> timer: like new_timer, stops after count calls.
  function nano.new_count_timer(interval, count, fn)
    if type(count) ~= "number" or count < 1 or count % 1 ~= 0 then
      error("new_count_timer: count must be a positive integer", 2)
    end
    return new(interval, count, fn, "new_count_timer")
  end

  --- nano.new_after_timer(delay, fn) -> timer: fn(timer) once, after delay seconds.
  function nano.new_after_timer(delay, fn)
    return new(delay, 1, fn, "new_after_timer")
  end

  --- nano.new_cond_timer(cond, fn) -> timer: every tick of the timer precision, cond(now) is
  --- called with nano.now(); fn(timer) runs on every tick where it returns true (stop the timer in
  --- fn to fire once). A cond that raises is logged and counts as false.
  function nano.new_cond_timer(cond, fn)
    if type(cond) ~= "function" then error("new_cond_timer: cond must be a function of the time", 2) end
    if type(fn) ~= "function" then error("new_cond_timer: expected a function", 2) end
    local S = state()
    S.timer_seq = S.timer_seq + 1
    local t = setmetatable({ _id = S.timer_seq, _fn = fn, _n = 0 }, Timer)
    local tick = S.timer_precision
    t._ct = core.timer(tick, tick, function()
      if t._stopped then return end
      local ok, yes = run(t, cond, core.now()) -- a condition answers now: it cannot wait
      if ok and yes and not t._stopped then
        t._n = t._n + 1
        call(t, fn, t)
      end
    end)
    scope.record(function() t:stop() end, true)
    return t
  end

  --- nano.set_timer_precision(secs) -> true | nil, err: the tick of every timer made after it
  --- (default 1, at least 0.001). Fixed once the loop runs: then a different value is refused
  --- with nil, err (so a hot reload of a script that sets it does not fail).
  function nano.set_timer_precision(secs)
    if type(secs) ~= "number" or secs ~= secs or secs < MIN_PRECISION or secs > 1e6 then
      error("set_timer_precision: expected seconds, at least 0.001", 2)
    end
    local S = state()
    secs = floor(secs * 1000 + 0.5) / 1000
    if S.started and secs ~= S.timer_precision then
      log.warn("set_timer_precision(%g): the precision is fixed once the loop runs (it is %g)",
               secs, S.timer_precision)
      return nil, "timer precision is fixed once the loop runs"
    end
    S.timer_precision = secs
    return true
  end

  --- nano.timer_precision() -> secs
  function nano.timer_precision() return state().timer_precision end
end

return M
