-- nano.metrics: Lua's own counters, gauges and histograms (docs/api.md, "Metrics and health").
-- The endpoint itself (scrapes, promtool, healthz) is spec/e2e/metrics.test.js.
local nano = require "nano"

describe("nano.metrics", function()
  local n = 0
  local function name(base) n = n + 1; return "spec_" .. base .. "_" .. n end

  it("runs the api.md example", function()
    local matches = nano.metrics.counter(name("matches_total"), "Matches started, by mode.", { "mode" })
    assert.is_true(matches:inc(1, { mode = "duel" }))
    local rooms = nano.metrics.gauge(name("rooms"), "Rooms open.")
    assert.is_true(rooms:set(12))
    assert.is_true(rooms:inc())
    assert.is_true(rooms:dec(2))
  end)

  it("returns the same metric when defined again with the same shape (hot reload)", function()
    local nm = name("again_total")
    local a = nano.metrics.counter(nm, "x", { "k" })
    local b = nano.metrics.counter(nm, "x", { "k" })
    assert.equal(a.handle, b.handle)
  end)

  it("raises when a name is defined again with another kind or labels", function()
    local nm = name("clash")
    nano.metrics.counter(nm, "x", { "k" })
    assert.has_error(function() nano.metrics.gauge(nm, "x", { "k" }) end)
    assert.has_error(function() nano.metrics.counter(nm, "x", { "k", "j" }) end)
  end)

  it("refuses bad names, the nano_ prefix, bad labels and bad buckets", function()
    assert.has_error(function() nano.metrics.counter("9lives", "x") end)
    assert.has_error(function() nano.metrics.counter("has-dash", "x") end)
    assert.has_error(function() nano.metrics.counter("nano_mine_total", "x") end)
    assert.has_error(function() nano.metrics.counter(name("l"), "x", { "a", "a" }) end)
    assert.has_error(function() nano.metrics.histogram(name("h"), "x", { "le" }) end)
    assert.has_error(function() nano.metrics.histogram(name("h"), "x", {}, { 2, 1 }) end)
  end)

  it("raises on a missing label value and on a counter going down", function()
    local c = nano.metrics.counter(name("lbl_total"), "x", { "room" })
    assert.has_error(function() c:inc(1, {}) end, nil)
    assert.has_error(function() c:inc(-1, { room = "a" }) end)
    assert.has_error(function() c:set(3, { room = "a" }) end)
  end)

  it("caps a metric at 1,000 label combinations with nil, err", function()
    local c = nano.metrics.counter(name("many_total"), "x", { "who" })
    for i = 1, 1000 do assert.is_true(c:inc(1, { who = tostring(i) })) end
    local ok, err = c:inc(1, { who = "one too many" })
    assert.is_nil(ok)
    assert.matches("too many series", err)
    assert.is_true(c:inc(1, { who = "7" }), "an existing combination still counts")
  end)

  it("observes histograms", function()
    local h = nano.metrics.histogram(name("h_seconds"), "x", {}, { 1, 2 })
    assert.is_true(h:observe(1.5))
    assert.has_error(function() h:set(1) end)
  end)
end)

describe("nano.http.route", function()
  it("sits beside the HTTP client in nano.http", function()
    assert.is_function(nano.http.route)
    assert.is_function(nano.http.get)
  end)

  it("refuses a bad method, a path with a query, a missing handler and the core's paths", function()
    local fn = function() return "ok" end
    assert.has_error(function() nano.http.route("get", "/x", fn) end)
    assert.has_error(function() nano.http.route("GET", "x", fn) end)
    assert.has_error(function() nano.http.route("GET", "/x?y=1", fn) end)
    assert.has_error(function() nano.http.route("GET", "/x") end)
    assert.has_error(function() nano.http.route("GET", "/metrics", fn) end)
    assert.has_error(function() nano.http.route("GET", "/healthz", fn) end)
  end)
end)

describe("storage clients' metric names", function()
  it("refuse a name that is not a short plain word (it becomes a label value)", function()
    assert.has_error(function() nano.sqlite.open(":memory:", { name = "two words" }) end)
    local r, rerr = nano.redis.connect("redis://127.0.0.1:1/0", { name = string.rep("x", 65) })
    assert.is_nil(r)
    assert.matches("opts.name", rerr, 1, true)
    local pg, perr = nano.pg.connect("host=127.0.0.1 port=1", { name = 7 })
    assert.is_nil(pg)
    assert.matches("opts.name", perr, 1, true)
  end)
end)
