-- scope.lua: the seam through which the API modules record, for hot reload, what a load of the
-- main script makes. Outside a scope every call is a no-op; inside, records undo newest first.
local scope = require "nano.scope"
local nano = require "nano"
local core = require "nano.core"

after_each(function() scope.reset() end)

describe("nano.scope", function()
  it("records nothing when no scope is open", function()
    local sc, outer = scope.open()
    scope.close(outer)
    scope.record(function() error("never") end, true)
    assert.same({}, sc.list)
    assert.is_false(scope.active())
  end)

  it("undoes every record newest first; release runs only the owned ones", function()
    local order = {}
    local sc, outer = scope.open()
    assert.is_true(scope.active())
    scope.record(function() order[#order + 1] = "a" end, true)
    scope.record(function() order[#order + 1] = "b" end, false)
    scope.record(function() order[#order + 1] = "c" end, true)
    scope.close(outer)
    scope.undo(sc)
    assert.same({ "c", "b", "a" }, order)
    order = {}
    scope.release(scope.owned(sc))
    assert.same({ "c", "a" }, order)
  end)

  it("gives an inner scope's records to it alone, and the outer one back on close", function()
    local a, outer = scope.open()
    local b, outer_b = scope.open()
    scope.record(function() end, true)
    scope.close(outer_b)
    scope.record(function() end, true)
    scope.close(outer)
    assert.equal(1, #a.list)
    assert.equal(1, #b.list)
  end)

  it("hands out the previous load's n-th group of a name, unless it was closed", function()
    local g1, g2 = nano.new_group("g"), nano.new_group("g")
    local closed = nano.new_group("h")
    closed:close()
    local sc, outer = scope.open({ g = { g1, g2 }, h = { closed } })
    assert.equal(g1, nano.new_group("g"))
    assert.equal(g2, nano.new_group("g"))
    local third = nano.new_group("g")
    local h = nano.new_group("h")
    scope.close(outer)
    assert.is_true(third ~= g1 and third ~= g2)
    assert.not_equal(closed, h)
    assert.same({ g = { g1, g2, third }, h = { h } }, sc.groups)
    assert.not_equal(g1, nano.new_group("g")) -- outside a scope: a new group
  end)

  it("records the timers, stages and callbacks the API makes, and undo takes them back", function()
    local timers, closed = core.stats().timers, #nano._state.closed_cbs
    local sc, outer = scope.open()
    nano.new_timer(1, function() end)
    core.timer(1, 1, function() end)
    nano.on_session_closed(function() end)
    nano.pipeline.outbound:push_back(function() end)
    scope.close(outer)
    assert.equal(timers + 2, core.stats().timers)
    scope.undo(sc)
    assert.equal(timers, core.stats().timers)
    assert.equal(closed, #nano._state.closed_cbs)
    assert.equal(0, nano.pipeline.outbound:count())
  end)

  it("gives back the stages a cleared chain had", function()
    local f = function() end
    nano.pipeline.inbound:push_back(f)
    local sc, outer = scope.open()
    nano.pipeline.inbound:clear()
    scope.close(outer)
    assert.equal(0, nano.pipeline.inbound:count())
    scope.undo(sc)
    assert.equal(1, nano.pipeline.inbound:count())
    nano.pipeline.inbound:remove(f)
  end)

  it("hands nano.register to the stager while one is set", function()
    local got
    scope.set_stager(function(existing, comp, _, name)
      got = { existing = existing, name = name }
      return comp
    end)
    local comp = {}
    assert.equal(comp, nano.register(comp, { name = "Staged" }))
    scope.set_stager(nil)
    assert.same({ name = "Staged" }, got)
    assert.is_nil(nano._state.by_name.Staged)
  end)

  it("names the caller's line when core.timer refuses its arguments inside a scope", function()
    local _, outer = scope.open()
    local ok, err = pcall(function() core.timer("x") end)
    scope.close(outer)
    assert.is_false(ok)
    assert.matches("scope_spec%.lua:%d+: ", err)
  end)
end)
