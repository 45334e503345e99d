-- nano.raw(bytes): a payload serialized already (nano's Broadcast(route, []byte)) is sent as it
-- is by s:push, s:response, a handler's return value, group:broadcast and group:multicast.
local nt = require "nano.test"
local nano = require "nano"
local U = require "spec.fixtures.api_util"

-- valid JSON the serializer would never write (spaces, 2.50, key order): so it was not re-encoded
local BYTES = '{ "b" : 2.50 ,"a":[1, 2] }'
-- a client that hands every payload over undecoded
local AS_BYTES = { marshal = function(v) return nano.serializer().marshal(v) end,
                   unmarshal = function(s) return s end }

describe("nano.raw", function()
  local server, group
  before_each(function()
    server = nt.start(U.FIXTURE)
    group = nano.new_group("raw")
    local Pre = {}
    function Pre:ret() return nano.raw(BYTES) end
    function Pre:respond(s) assert(s:response(nano.raw(BYTES))) end
    function Pre:push(s) assert(s:push("onRaw", nano.raw(BYTES))) end
    function Pre:join(s) assert(group:add(s)) return {} end
    function Pre:nested() return { inner = nano.raw(BYTES) } end
    nano.register(Pre, { name = "Pre" })
  end)
  after_each(function() server:stop() end)

  it("a handler's return value is sent as it is", function()
    local c = server:connect({ serializer = AS_BYTES })
    assert.equal(BYTES, c:request("Pre.ret", {}))
  end)

  it("s:response sends it as it is", function()
    local c = server:connect({ serializer = AS_BYTES })
    assert.equal(BYTES, c:request("Pre.respond", {}))
  end)

  it("s:push sends it as it is", function()
    local c = server:connect({ serializer = AS_BYTES })
    c:notify("Pre.push", {})
    assert.equal(BYTES, select(2, c:wait_push("onRaw")))
  end)

  it("group:broadcast and group:multicast send it to every member as it is", function()
    local a, b = server:connect({ serializer = AS_BYTES }), server:connect({ serializer = AS_BYTES })
    a:request("Pre.join", {})
    b:request("Pre.join", {})
    assert.equal(2, group:broadcast("onRaw", nano.raw(BYTES)))
    assert.equal(BYTES, select(2, a:wait_push("onRaw")))
    assert.equal(BYTES, select(2, b:wait_push("onRaw")))
    local before = #a:pushes("onRaw") + #b:pushes("onRaw")
    local first = group:sessions()[1]
    assert.equal(1, group:multicast("onRaw", nano.raw("[1]"), function(s) return s == first end))
    a:sync()
    b:sync()
    assert.equal(before + 1, #a:pushes("onRaw") + #b:pushes("onRaw"))
  end)

  it("is the same for msgpack: bytes are never re-encoded", function()
    nano.set_serializer("msgpack")
    local c = server:connect({ serializer = AS_BYTES })
    assert.equal(BYTES, c:request("Pre.ret", {}))
  end)

  it("nested inside a table it does not serialize (500), and nano.raw wants a string", function()
    local c = server:connect()
    assert.equal(500, select(2, c:try_request("Pre.nested", {})).code)
    assert.has_error(function() nano.raw({}) end, "raw: expected the payload's bytes (a string)")
    assert.matches("^nano.raw%(3 bytes%)$", tostring(nano.raw("abc")))
  end)
end)
