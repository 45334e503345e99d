-- The payload's bytes when the core decoded them (core.set_predecode, lua_dispatch.c): the
-- dispatcher gets the value and false for the bytes, and makes a string of them only where it
-- needs one (core.message_bytes): a raw handler, a handler speaking another serializer, a message
-- queued behind a waiting handler. Each of them must still see the bytes as they came.
local nt = require "nano.test"
local nano = require "nano"
local core = require "nano.core"
local U = require "spec.fixtures.api_util"

-- valid JSON as no encoder writes it: the handler saw the bytes, not a re-encoding
local BYTES = '{ "b" : 2.50 ,"a":[1, 2] }'
local json = require "nano.json"
-- strings go as they are, anything else (client:sync()'s {}) as JSON; payloads come back as bytes
local AS_BYTES = { marshal = function(v) return type(v) == "string" and v or json.marshal(v) end,
                   unmarshal = function(s) return s end }

describe("a payload the core decoded", function()
  local server, c
  before_each(function()
    server = nt.start(U.FIXTURE)
    local Raw = {}
    function Raw:echo(_, bytes) return nano.raw(bytes) end
    function Raw:wait(_, msg)
      nano.sleep(msg.secs)
      return {}
    end
    nano.register(Raw, { name = "RawIn", raw = { echo = true } })
    local Own = {}
    function Own:echo(_, text) return text end -- its serializer hands the bytes over as they are
    nano.register(Own, { name = "Own", serializer = AS_BYTES })
    local Bytes = {}
    -- the bytes of the message this thread dispatches, before and after a wait
    function Bytes:now()
      local co = coroutine.running()
      local before = core.message_bytes(co)
      nano.sleep(0)
      return { before = before, after = core.message_bytes(co) or "gone" }
    end
    function Bytes:echo(_, msg) return msg end
    nano.register(Bytes, { name = "Bytes" })
    c = server:connect({ serializer = AS_BYTES })
  end)
  after_each(function()
    server:stop()
    U.restore_log_level()
  end)

  it("reaches a raw handler as the bytes that came", function()
    assert.equal(BYTES, c:request("RawIn.echo", BYTES))
  end)

  it("reaches a handler with its own serializer as the bytes that came", function()
    assert.equal(BYTES, c:request("Own.echo", BYTES))
  end)

  it("queued behind a waiting handler, still reaches a raw handler as the bytes that came", function()
    local done
    c:request("RawIn.wait", '{"secs":1}', function(res) done = res end)
    local r = {}
    c:request("RawIn.echo", BYTES, function(res, err) r.res, r.err = res, err end)
    c:sync()
    server:poll()
    assert.is_nil(r.res) -- queued: the first handler is still waiting
    server:advance(1)
    server:wait_until(function() return done and r.res end)
    assert.equal(BYTES, r.res)
  end)

  -- the core's decoder sets an object's keys in one go when its string cache says no two are the
  -- same (lua_json.c, key_is_new), in order when two may be: a key given twice keeps its last value
  it("keeps the last value of a key given twice, as lua-cjson does", function()
    for _ = 1, 2 do -- the second time, the keys come from the core's string cache
      assert.same({ k = 3, x = 2 }, json.unmarshal(c:request("Bytes.echo", '{"k":1,"x":2,"k":3}')))
      assert.same({ k = 1, x = 2 }, json.unmarshal(c:request("Bytes.echo", '{"k":1,"x":2}')))
      assert.same({ k = 3 }, json.unmarshal(c:request("Bytes.echo", '{"\\u006b":1,"k":3}')))
    end
  end)

  it("reaches the handler through a script's own hook that passes on six values only", function()
    local dispatch = nano._dispatch
    core.set_hook("dispatch", function(s, mtype, id, route, payload, flags)
      return dispatch(s, mtype, id, route, payload, flags)
    end)
    assert.equal(BYTES, c:request("RawIn.echo", BYTES))
    local j = server:connect()
    assert.same({ b = 2.5, a = { 1, 2 } }, j:request("Bytes.echo", { b = 2.5, a = { 1, 2 } }))
  end)

  it("is readable by its thread until the thread waits, not after", function()
    local res = json.unmarshal(c:request("Bytes.now", BYTES))
    assert.same({ before = BYTES, after = "gone" }, res)
  end)
end)
