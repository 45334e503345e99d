-- Serializers: JSON by default, MessagePack (lua-messagepack) and custom ones, named in the
-- handshake and used on the wire both ways.
local nt = require "nano.test"
local nano = require "nano"
local client = require "nano.client"
local U = require "spec.fixtures.api_util"

describe("serializers", function()
  local server
  before_each(function() server = nt.start(U.FIXTURE) end)
  after_each(function()
    server:stop()
    U.restore_log_level()
  end)

  -- what the client's payloads and the server's replies look like on the wire
  local function wire()
    local seen = {}
    nano.pipeline.inbound:push_back(function(_, msg) seen.inbound = msg.data end)
    nano.pipeline.outbound:push_back(function(_, msg) seen.outbound = msg.data end)
    return seen
  end

  it("is JSON by default, and the handshake says so", function()
    assert.equal("json", nano.serializer().name)
    local seen = wire()
    local c = server:connect()
    assert.equal("json", c.handshake.sys.serializer)
    assert.same({ a = 1 }, c:request("Api.echo", { a = 1 }))
    assert.equal('{"a":1}', seen.inbound)
    assert.equal('{"a":1}', seen.outbound)
  end)

  it("msgpack: named in the handshake, so a client picks it, and used both ways", function()
    nano.set_serializer("msgpack")
    assert.equal("msgpack", nano.serializer().name)
    local seen = wire()
    -- a plain nano.client chooses its decoder from the handshake's sys.serializer
    local c = client.connect(server.host, server.port)
    assert.equal("msgpack", c.handshake.sys.serializer)
    local v = { name = "ann", list = { 1, 2, 3 }, nested = { ok = true, n = -5, f = 1.5 } }
    assert.same(v, c:request("Api.echo", v))
    local mp = require "MessagePack"
    assert.same(v, mp.unpack(seen.inbound))
    assert.same(v, mp.unpack(seen.outbound))
    assert.equal("\129\161a\1", require("nano.msgpack").marshal({ a = 1 })) -- fixmap, fixstr, fixint
    c:notify("Api.note", { n = 1 })
    assert.same({ n = 1 }, select(2, c:wait_push("onNote")))
    local _, err = c:try_request("Api.deny", {})
    assert.same({ code = 403, msg = "not allowed" }, err)
  end)

  it("a custom serializer table: its name goes in the handshake", function()
    local calls = 0
    local text = {
      name = "text",
      marshal = function(v)
        calls = calls + 1
        return v == nil and "" or ("T:" .. tostring(v.s))
      end,
      unmarshal = function(s) return { s = s:match("^T:(.*)$") } end,
    }
    nano.set_serializer(text)
    local c = server:connect({ serializer = text })
    assert.equal("text", c.handshake.sys.serializer)
    assert.same({ s = "hello" }, c:request("Api.echo", { s = "hello" }))
    assert.is_true(calls >= 2)
  end)

  it("a client that does not know the server's serializer cannot connect", function()
    nano.set_serializer({ name = "exotic", marshal = tostring, unmarshal = tostring })
    assert.has_error(function() client.connect(server.host, server.port, { timeout = 2 }) end)
  end)

  it("raises on an unknown name or a table without marshal and unmarshal", function()
    assert.has_error(function() nano.set_serializer("yaml") end, "set_serializer: unknown serializer 'yaml'")
    -- protobuf needs its schema: nano.protobuf{...} makes the serializer
    assert.has_error(function() nano.set_serializer("protobuf") end,
      "set_serializer: 'protobuf' needs a schema: nano.set_serializer(nano.protobuf{ proto = ... })")
    assert.has_error(function() nano.set_serializer({ marshal = tostring }) end)
    assert.has_error(function() nano.set_serializer(42) end)
  end)

  it("starts as JSON again on every nt.start", function()
    nano.set_serializer("msgpack")
    server:stop()
    server = nt.start(U.FIXTURE)
    assert.equal("json", nano.serializer().name)
  end)
end)

describe("nano.msgpack", function()
  local msgpack = require "nano.msgpack"

  it("maps nil and the empty payload to each other", function()
    assert.equal("", msgpack.marshal(nil))
    assert.is_nil(msgpack.unmarshal(""))
  end)

  it("round-trips tables, arrays, strings, integers and floats", function()
    local v = { 1, 2, { x = "y" }, -1, 2 ^ 40, 0.25, true, false, "" }
    assert.same(v, msgpack.unmarshal(msgpack.marshal(v)))
  end)

  -- issue 19 #8: MessagePack keeps every number: integers up to 2^53 as uint/int 64 (or smaller),
  -- every other number as float 64, so big integers and random doubles come back exactly
  it("keeps big integers and every double exactly", function()
    local nums = { 2 ^ 53 - 1, -(2 ^ 53 - 1), 2 ^ 53, 2 ^ 53 + 2, 2 ^ 63, -2 ^ 63, 2 ^ 64, 1764204000123456,
      1234567890123456, 123456789012345, 0.1 + 0.2, 5e-324, 1.7976931348623157e308 }
    local ffi = require "ffi"
    local u = ffi.new("union { double d; uint32_t w[2]; }")
    math.randomseed(8)
    for _ = 1, 2000 do
      local hi = math.random(0, 2 ^ 32 - 1)
      if math.floor(hi / 2 ^ 20) % 2048 ~= 2047 then -- not NaN/Inf
        u.w[0], u.w[1] = math.random(0, 2 ^ 32 - 1), hi
        nums[#nums + 1] = tonumber(u.d)
      end
    end
    local back = msgpack.unmarshal(msgpack.marshal(nums))
    for i, x in ipairs(nums) do assert.equal(x, back[i]) end
    -- a big integer is an integer on the wire (0xcf: uint 64), not a float
    assert.equal("\207\0\6\68\136\192\189\26\64", msgpack.marshal(1764204000123456))
  end)

  it("reads a NaN with any payload as Lua's NaN, and infinities as such", function()
    for _, bytes in ipairs({ "\203\127\248\0\0\0\0\0\0", "\203\255\255\255\255\255\255\255\255",
                             "\203\127\241\2\3\4\5\6\7", "\203\255\252\0\0\0\0\0\1" }) do
      local v = msgpack.unmarshal(bytes)
      assert.equal("number", type(v))
      assert.is_true(v ~= v)
    end
    assert.equal(math.huge, msgpack.unmarshal("\203\127\240\0\0\0\0\0\0"))
    assert.equal(-math.huge, msgpack.unmarshal("\203\255\240\0\0\0\0\0\0"))
  end)

  it("raises on bytes that are not MessagePack", function()
    assert.has_error(function() msgpack.unmarshal("\193") end)
  end)

  it("is not changed by a script that changes the global MessagePack module's settings", function()
    local mp = require "MessagePack"
    local before = msgpack.marshal({ s = "abc" })
    mp.set_string("binary")
    local ok, after = pcall(msgpack.marshal, { s = "abc" })
    mp.set_string("string_compat")
    assert.is_true(ok)
    assert.equal(before, after)
    assert.equal("\129\161s\163abc", before)
  end)
end)
