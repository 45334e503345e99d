-- nano.task, the primitive every waiting function stands on: spawn, await, sleep on virtual
-- time, wait with results, errors and timeouts, cancel, and the error outside a task.
local nt = require "nano.test"
local nano = require "nano"
local task = require "nano.task"
local U = require "spec.fixtures.api_util"

describe("tasks", function()
  local server
  before_each(function() server = nt.start(U.FIXTURE) end)
  after_each(function() server:stop() end)

  it("spawn runs the function now, until it first waits", function()
    local steps = {}
    local t = nano.spawn(function(a, b)
      steps[#steps + 1] = a + b
      nano.sleep(1)
      steps[#steps + 1] = "woke"
    end, 1, 2)
    assert.same({ 3 }, steps)
    assert.equal("running", t:state())
    server:advance(0.9)
    assert.same({ 3 }, steps)
    server:advance(0.1)
    assert.same({ 3, "woke" }, steps)
    assert.equal("done", t:state())
  end)

  it("wait returns the task's results from another task", function()
    local worker = nano.spawn(function() nano.sleep(2); return "a", nil, 3 end)
    local got
    nano.spawn(function() got = { worker:wait() } end)
    server:advance(2)
    assert.same({ "a", nil, 3 }, got)
  end)

  it("wait returns nil and the error with its traceback when the task raised", function()
    local lines = U.capture_logs()
    local worker = nano.spawn(function() nano.sleep(1); error("boom") end)
    local v, err
    nano.spawn(function() v, err = worker:wait() end)
    server:advance(1)
    assert.is_nil(v)
    assert.matches("boom", err)
    assert.matches("traceback", err)
    assert.is_nil(U.find(lines, "boom")) -- a waited-for task's error goes to its waiter
    U.restore_log_level()
  end)

  it("wait with a timeout returns nil, 'timeout' while the task goes on", function()
    local worker = nano.spawn(function() nano.sleep(10); return 1 end)
    local v, err
    nano.spawn(function() v, err = worker:wait(1) end)
    server:advance(1)
    assert.same({ nil, "timeout" }, { v, err })
    assert.equal("running", worker:state())
    server:advance(9)
    assert.equal("done", worker:state())
  end)

  it("an error in a task nobody waits for is logged with its traceback", function()
    local lines = U.capture_logs()
    nano.spawn(function() nano.sleep(1); error("unwatched") end)
    server:advance(1)
    U.restore_log_level()
    local line = U.find(lines, "unwatched")
    assert.truthy(line)
    assert.matches("traceback", line)
  end)

  it("cancel: the task is never resumed and its waiters get nil, 'cancelled'", function()
    local after = false
    local worker = nano.spawn(function() nano.sleep(1); after = true end)
    local v, err
    nano.spawn(function() v, err = worker:wait() end)
    assert.is_true(worker:cancel())
    server:advance(2)
    assert.is_false(after)
    assert.same({ nil, "cancelled" }, { v, err })
  end)

  it("await returns at once when the operation completes before start returns", function()
    local got = server:run(function()
      return task.await("now", function(resume) resume("x", 2) end)
    end)
    assert.equal("x", got)
  end)

  it("a completion called twice resumes once", function()
    local resumes, second = 0
    local r
    nano.spawn(function()
      task.await("twice", function(resume) r = resume end)
      resumes = resumes + 1
    end)
    assert.is_true(r())
    second = r()
    assert.equal(1, resumes)
    assert.is_false(second)
  end)

  it("waiting outside a task raises an error naming the function", function()
    local ok, err = pcall(nano.sleep, 1)
    assert.is_false(ok)
    assert.matches("nano.sleep waits, so it can only be called from a handler", err)
  end)

  it("server:run drives the loop until the task finishes and returns its results", function()
    local a, b = server:run(function() nano.sleep(0); return 1, 2 end)
    assert.same({ 1, 2 }, { a, b })
  end)
end)
