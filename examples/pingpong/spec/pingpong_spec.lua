-- The benchmark target: echo and notify -> push, with route compression.
-- Run: cd examples/pingpong && nano-host test
local nt = require "nano.test"

describe("pingpong", function()
  local server
  before_each(function() server = nt.start("main.lua") end)
  after_each(function() server:stop() end)

  it("echoes a request's payload", function()
    local c = server:connect()
    assert.same({ n = 1, s = "x", list = { 1, 2, 3 } }, c:request("Bench.ping", { n = 1, s = "x", list = { 1, 2, 3 } }))
  end)

  it("answers a notify with a push of the same payload to the sender only", function()
    local a, b = server:connect(), server:connect()
    a:notify("Bench.note", { hello = "you" })
    local route, msg = a:wait_push("onNote")
    assert.equal("onNote", route)
    assert.same({ hello = "you" }, msg)
    b:sync()
    assert.same({}, b:pushes())
  end)

  it("offers its routes for compression in the handshake", function()
    local c = server:connect()
    assert.same({ ["Bench.ping"] = 1, onNote = 2 }, c.handshake.sys.dict)
  end)

  it("keeps answering in order under many pipelined requests", function()
    local c = server:connect()
    local got, n = {}, 500
    for i = 1, n do
      c:request("Bench.ping", { i = i }, function(res) got[#got + 1] = res.i end)
    end
    server:wait_until(function() return #got == n end, nil, n .. " responses")
    for i = 1, n do assert.equal(i, got[i]) end
  end)

  it("counts what it served", function()
    local c = server:connect()
    c:request("Bench.ping", {})
    c:notify("Bench.note", {})
    c:wait_push("onNote")
    local bench = require "bench"
    assert.equal(1, bench.pings)
    assert.equal(1, bench.notes)
  end)
end)
