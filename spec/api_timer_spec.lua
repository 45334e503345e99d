-- Timers on virtual time (server:advance): intervals, counts, after, cond, precision rounding,
-- stopping (also from inside the callback), errors, and timers that push to clients.
local nt = require "nano.test"
local nano = require "nano"
local U = require "spec.fixtures.api_util"

-- seconds since t0, rounded to the millisecond (the clock's resolution)
local function since(t0) return math.floor((nano.now() - t0) * 1000 + 0.5) / 1000 end

describe("timers", function()
  local server
  after_each(function()
    server:stop()
    U.restore_log_level()
  end)

  describe("with the default precision (1 s)", function()
    before_each(function() server = nt.start(U.FIXTURE) end)

    it("nano.now() is the core's clock (read through the FFI), virtual time included", function()
      local core = require "nano.core"
      assert.equal(core.now(), nano.now())
      local t0 = nano.now()
      server:advance(2.5)
      assert.equal(core.now(), nano.now())
      assert.is_true(nano.now() - t0 >= 2.5) -- and the real time the loop took meanwhile
    end)

    it("new_timer calls fn(timer) every interval until stopped", function()
      local t0, calls = nano.now(), {}
      local t = nano.new_timer(2, function(timer) calls[#calls + 1] = { since(t0), timer } end)
      server:advance(1.9)
      assert.same({}, calls)
      server:advance(0.1)
      assert.same({ { 2, t } }, calls)
      server:advance(4)
      assert.same({ 2, 4, 6 }, { calls[1][1], calls[2][1], calls[3][1] })
      t:stop()
      server:advance(10)
      assert.equal(3, #calls)
    end)

    it("new_count_timer stops itself after count calls", function()
      local n = 0
      local t = nano.new_count_timer(1, 3, function() n = n + 1 end)
      server:advance(10)
      assert.equal(3, n)
      t:stop() -- stopping a finished timer does nothing
    end)

    it("new_after_timer calls fn once, after the delay", function()
      local t0, at = nano.now(), {}
      nano.new_after_timer(3, function() at[#at + 1] = since(t0) end)
      server:advance(2.5)
      assert.same({}, at)
      server:advance(10)
      assert.same({ 3 }, at)
    end)

    it("rounds to the precision as nano does: 1.5 s fires at the first tick after each due time", function()
      local t0, at = nano.now(), {}
      nano.new_timer(1.5, function() at[#at + 1] = since(t0) end)
      server:advance(6)
      assert.same({ 2, 3, 5, 6 }, at)
    end)

    it("fires an interval below the precision once per tick", function()
      local t0, at = nano.now(), {}
      nano.new_timer(0.1, function() at[#at + 1] = since(t0) end)
      server:advance(3)
      assert.same({ 1, 2, 3 }, at)
    end)

    it("fires a short after timer on the first tick", function()
      local t0, at = nano.now(), {}
      nano.new_after_timer(0.25, function() at[#at + 1] = since(t0) end)
      server:advance(0.9)
      assert.same({}, at)
      server:advance(0.1)
      assert.same({ 1 }, at)
    end)

    it("a timer stopped inside its own callback never fires again", function()
      local n = 0
      nano.new_timer(1, function(t)
        n = n + 1
        t:stop()
      end)
      server:advance(5)
      assert.equal(1, n)
    end)

    it("a timer can stop another one due at the same time", function()
      local fired = {}
      local second
      nano.new_timer(1, function() fired[#fired + 1] = "first"; second:stop() end)
      second = nano.new_timer(1, function() fired[#fired + 1] = "second" end)
      server:advance(3)
      assert.same({ "first", "first", "first" }, fired)
    end)

    it("logs a callback's error; that timer and the others go on", function()
      local logs = U.capture_logs()
      local bad, good = 0, 0
      local t = nano.new_timer(1, function() bad = bad + 1; error("tick failed") end)
      nano.new_timer(1, function() good = good + 1 end)
      server:advance(3)
      assert.equal(3, bad)
      assert.equal(3, good)
      local line = U.find(logs, "timer " .. t:id() .. ":")
      assert.truthy(line)
      assert.truthy(line:find("tick failed", 1, true))
      assert.truthy(line:find("^error: "))
    end)

    it("gives every timer a unique increasing id; stop twice does nothing", function()
      local a = nano.new_timer(1, function() end)
      local b = nano.new_after_timer(1, function() end)
      local c = nano.new_cond_timer(function() return false end, function() end)
      assert.is_true(b:id() > a:id() and c:id() > b:id())
      a:stop()
      a:stop()
      b:stop()
      c:stop()
    end)

    it("new_cond_timer checks cond(now) every tick and calls fn on each tick it is true", function()
      local t0 = nano.now()
      local checks, fired = {}, {}
      nano.new_cond_timer(function(now)
        checks[#checks + 1] = math.floor((now - t0) * 1000 + 0.5) / 1000
        return now - t0 >= 3
      end, function() fired[#fired + 1] = since(t0) end)
      server:advance(5)
      assert.same({ 1, 2, 3, 4, 5 }, checks)
      assert.same({ 3, 4, 5 }, fired)
    end)

    it("new_cond_timer fires once when fn stops the timer", function()
      local n = 0
      nano.new_cond_timer(function() return true end, function(t) n = n + 1; t:stop() end)
      server:advance(5)
      assert.equal(1, n)
    end)

    it("a cond that raises is logged and counts as false", function()
      local logs = U.capture_logs()
      local n = 0
      nano.new_cond_timer(function() error("bad cond") end, function() n = n + 1 end)
      server:advance(2)
      assert.equal(0, n)
      assert.truthy(U.find(logs, "bad cond"))
    end)

    it("raises on a non-positive interval, a bad count or a missing function", function()
      local fn = function() end
      assert.has_error(function() nano.new_timer(0, fn) end, "new_timer: interval must be a positive number of seconds")
      assert.has_error(function() nano.new_timer(-1, fn) end, "new_timer: interval must be a positive number of seconds")
      assert.has_error(function() nano.new_timer(1) end, "new_timer: expected a function")
      assert.has_error(function() nano.new_after_timer(0, fn) end, "new_after_timer: interval must be a positive number of seconds")
      assert.has_error(function() nano.new_count_timer(1, 0, fn) end, "new_count_timer: count must be a positive integer")
      assert.has_error(function() nano.new_count_timer(1, 1.5, fn) end, "new_count_timer: count must be a positive integer")
      assert.has_error(function() nano.new_cond_timer(true, fn) end, "new_cond_timer: cond must be a function of the time")
      assert.has_error(function() nano.new_cond_timer(fn) end, "new_cond_timer: expected a function")
    end)

    it("cannot change the precision once the loop runs (the same value is fine)", function()
      local logs = U.capture_logs()
      assert.equal(1, nano.timer_precision())
      assert.is_true(nano.set_timer_precision(1))
      assert.same({ nil, "timer precision is fixed once the loop runs" }, { nano.set_timer_precision(0.01) })
      assert.truthy(U.find(logs, "warn: set_timer_precision(0.01)"))
      assert.equal(1, nano.timer_precision())
      assert.has_error(function() nano.set_timer_precision(0.0001) end, "set_timer_precision: expected seconds, at least 0.001")
    end)

    it("runs timers on the loop: a timer's push reaches the client", function()
      local c = server:connect()
      local s = c:session()
      nano.new_count_timer(1, 2, function(t) s:push("onTick", { id = t:id() }) end)
      server:advance(2)
      assert.equal(2, #c:pushes("onTick"))
    end)

    it("answers a request later from a timer with s:response_mid", function()
      local c = server:connect()
      local got
      c:request("Api.later", { after = 2 }, function(res) got = res end)
      server:wait_until(function() return c:session():last_mid() > 0 end)
      server:advance(1)
      assert.is_nil(got)
      server:advance(1)
      server:wait_until(function() return got end)
      assert.is_true(got.later)
    end)
  end)

  describe("with a finer precision set before the loop runs", function()
    before_each(function() server = nt.start(U.FIXTURE, { args = { "precision=0.1" } }) end)

    it("fires sub-second timers on time", function()
      assert.equal(0.1, nano.timer_precision())
      local t0, at = nano.now(), {}
      nano.new_count_timer(0.5, 3, function() at[#at + 1] = since(t0) end)
      nano.new_after_timer(0.7, function() at[#at + 1] = since(t0) end)
      server:advance(3)
      assert.same({ 0.5, 0.7, 1, 1.5 }, at)
    end)

    it("rounds an interval that is not a multiple of the precision up to the next tick", function()
      local t0, at = nano.now(), {}
      nano.new_count_timer(0.15, 4, function() at[#at + 1] = since(t0) end)
      server:advance(2)
      assert.same({ 0.2, 0.3, 0.5, 0.6 }, at)
    end)

    it("checks a cond timer every tick of the precision", function()
      local n = 0
      nano.new_cond_timer(function() n = n + 1 return false end, function() end)
      server:advance(1)
      assert.equal(10, n)
    end)
  end)
end)
