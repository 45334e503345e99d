-- A handler's return value as its response. With the JSON serializer, no outbound pipeline and
-- no debug log, the core encodes and sends it (returned by the dispatcher to the core, or after a
-- wait by one call, core.respond_value: no C call, or one, for the JIT's trace,
-- docs/benchmarks.md); everything else goes through the serializer's marshal. Both must put the
-- same bytes on the wire and fail the same way.
local nt = require "nano.test"
local nano = require "nano"
local json = require "nano.json"
local U = require "spec.fixtures.api_util"

-- a client that hands every payload over undecoded: the bytes themselves are compared
local AS_BYTES = { marshal = function(v) return json.marshal(v) end,
                   unmarshal = function(s) return s end }

-- numbers of every shape, escapes, the empty-array marker, nesting, a sparse array
local VALUE = { n = 123, f = 0.1, big = 2 ^ 53 + 2, neg = -7.25e-9, s = 'a"b\\c/\n\0ë',
                list = { 1, "two", true, json.null }, none = json.empty_array,
                nested = { deeper = { json.empty_array, { x = 1 } } }, sparse = { [1] = 1, [40] = 2 } }

describe("a handler's response", function()
  local server, lines
  before_each(function()
    server = nt.start(U.FIXTURE)
    local Resp = {}
    function Resp:value() return VALUE end
    function Resp:unencodable() return { f = print } end
    function Resp:nan() return { n = 0 / 0 } end
    function Resp:nested_nan() return { ok = true, p = { n = 0 / 0 } } end -- the flat writer gives up
    nano.register(Resp, { name = "Resp" })
  end)
  after_each(function()
    server:stop()
    U.restore_log_level()
  end)

  it("is the text nano.json's marshal writes, byte for byte", function()
    local c = server:connect({ serializer = AS_BYTES })
    assert.equal(json.marshal(VALUE), c:request("Resp.value", {}))
  end)

  it("and s:push write the text nano.json's marshal writes (core.push_value: one C call too)", function()
    local c = server:connect({ serializer = AS_BYTES })
    c:request("Resp.value", {}) -- the session, as the server sees it
    local s = c:session()
    assert.is_true(s:push("onValue", VALUE))
    assert.equal(json.marshal(VALUE), select(2, c:wait_push("onValue")))
    local ok, err = s:push("onValue", { f = print })
    assert.is_nil(ok)
    assert.matches("^cannot serialize: Cannot serialise function", err)
    assert.is_true(s:push("onNil", nil))
    assert.equal("", select(2, c:wait_push("onNil")))
  end)

  it("is the same text through an outbound pipeline, which sees the encoded bytes", function()
    local seen
    nano.pipeline.outbound:push_back(function(_, msg)
      if msg.type == "response" then seen = msg.data end
    end)
    local c = server:connect({ serializer = AS_BYTES })
    assert.equal(json.marshal(VALUE), c:request("Resp.value", {}))
    assert.equal(json.marshal(VALUE), seen)
  end)

  it("that does not encode is answered 500 and logged with the encoder's reason", function()
    lines = U.capture_logs()
    local c = server:connect()
    for _, route in ipairs({ "Resp.unencodable", "Resp.nan", "Resp.nested_nan" }) do
      local _, err = c:try_request(route, {})
      assert.same({ code = 500, msg = "internal error" }, err)
    end
    assert.truthy(U.find(lines, "Resp.unencodable: response does not serialize: Cannot serialise function"))
    assert.truthy(U.find(lines, "Resp.nan: response does not serialize: Cannot serialise number: must not be NaN or Inf"))
    assert.truthy(U.find(lines, "Resp.nested_nan: response does not serialize: Cannot serialise number: must not be NaN or Inf"))
    -- and the session goes on
    assert.equal(123, c:request("Resp.value", {}).n)
  end)

  -- A table of string keys and number, string or boolean values, or tables of those one level
  -- down, up to 8 members in each, is written by the dispatcher through the FFI (init.lua's
  -- flat_reply, lua_json.c's flat writer); anything else by the core's encoder. Both must write
  -- the same text.
  it("that is a flat table is written by the dispatcher, byte for byte the encoder's text", function()
    local codec = require "nano.json_codec"
    local flat = {
      {}, { n = 123 }, { neg = -7, z = -0.0, f = 0.1, tiny = 5e-324, big = 2 ^ 53 + 2, huge = 1.5e300 },
      { s = 'a"b\\c/\n\0\127ë\u{1F600}', e = "", t = true, f = false },
      { ['k"\\/\n'] = 1, ["ü"] = "v", [""] = 0 },
      { a = 1, b = 2, c = 3, d = 4, e = 5, f = 6, g = 7, h = 8 },
      -- one level down
      { x = 1, nested = { y = 2 } }, { p = {}, ok = true }, { inner = { ['k"\n'] = -0.0, f = 0.1, s = "ë" } },
      { p = { a = 1, b = 2, c = 3, d = 4, e = 5, f = 6, g = 7, h = 8 }, q = { s = 'a"b', t = true } },
      { a = {}, b = {}, c = {}, d = {}, e = {}, f = {}, g = {}, h = { z = false } },
    }
    local not_flat = {
      { a = 1, b = 2, c = 3, d = 4, e = 5, f = 6, g = 7, h = 8, i = 9 }, -- more than 8
      { 1, 2, 3 }, { [1] = 1, s = "s" }, { l = json.empty_array }, { n = json.null },
      -- one level down: what is not flat there
      { p = { q = { r = 1 } } }, { p = { 1, 2 } }, { p = { [1] = 1, s = "s" } },
      { p = { a = 1, b = 2, c = 3, d = 4, e = 5, f = 6, g = 7, h = 8, i = 9 } },
      { p = { l = json.empty_array } }, { p = { n = json.null } },
      { [1] = { y = 2 } },
    }
    local Flat = {}
    local current
    function Flat:reply() return current end
    nano.register(Flat, { name = "Flat" })
    local c = server:connect({ serializer = AS_BYTES })
    for i, t in ipairs(flat) do
      current = t
      local before = codec.flat_taken()
      assert.equal(json.marshal(t), c:request("Flat.reply", {}), "flat table " .. i)
      assert.equal(before + 1, codec.flat_taken(), "flat table " .. i .. " written by the dispatcher")
    end
    for i, t in ipairs(not_flat) do
      current = t
      local before = codec.flat_taken()
      assert.equal(json.marshal(t), c:request("Flat.reply", {}), "table " .. i)
      assert.equal(before, codec.flat_taken(), "table " .. i .. " left to the encoder")
    end
  end)

  it("that is flat is the flat writer's text after a wait and in s:push too", function()
    local codec = require "nano.json_codec"
    local T = { n = -12.5, s = 'q"/\n', ok = true }
    local Flat = {}
    function Flat:waited() nano.sleep(0) return T end
    nano.register(Flat, { name = "Flat" })
    local c = server:connect({ serializer = AS_BYTES })
    local before = codec.flat_taken()
    assert.equal(json.marshal(T), c:request("Flat.waited", {})) -- core.respond_value's
    assert.equal(before + 1, codec.flat_taken())
    assert.is_true(c:session():push("onFlat", T)) -- core.push_value's
    assert.equal(json.marshal(T), select(2, c:wait_push("onFlat")))
    assert.equal(before + 2, codec.flat_taken())
    assert.is_true(c:session():push("onNested", { t = T })) -- one level down: flat too
    assert.equal(json.marshal({ t = T }), select(2, c:wait_push("onNested")))
    assert.equal(before + 3, codec.flat_taken())
    assert.is_true(c:session():push("onDeep", { t = { u = T } })) -- two levels: the encoder's
    assert.equal(json.marshal({ t = { u = T } }), select(2, c:wait_push("onDeep")))
    assert.equal(before + 3, codec.flat_taken())
  end)

  it("that is flat but over the packet limit is answered as the encoder's would be", function()
    lines = U.capture_logs()
    local Flat = {}
    function Flat:big() return { s = string.rep("x", 0xFFFFFF) } end
    nano.register(Flat, { name = "Flat" })
    local c = server:connect()
    local before = require("nano.json_codec").flat_taken()
    local _, err = c:try_request("Flat.big", {})
    assert.equal(before + 1, require("nano.json_codec").flat_taken()) -- written by the dispatcher
    assert.same({ code = 500, msg = "response too large" }, err)
    assert.truthy(U.find(lines, "Flat.big"))
    assert.equal(123, c:request("Resp.value", {}).n) -- and the session goes on
  end)

  it("goes through json.marshal and json.unmarshal when a script has wrapped them", function()
    local marshal, unmarshal = json.marshal, json.unmarshal
    local seen = {}
    json.marshal = function(v) seen[#seen + 1] = "marshal"; return marshal(v) end
    json.unmarshal = function(b) seen[#seen + 1] = "unmarshal"; return unmarshal(b) end
    local ok, err = pcall(function()
      local c = server:connect({ serializer = { marshal = marshal, unmarshal = unmarshal } })
      for i = #seen, 1, -1 do seen[i] = nil end -- the handshake's own JSON
      assert.same({ n = 1 }, c:request("Api.echo", { n = 1 }))
      c:session():push("onValue", { p = 1 })
      assert.same({ p = 1 }, select(2, c:wait_push("onValue")))
    end)
    json.marshal, json.unmarshal = marshal, unmarshal
    assert(ok, err)
    -- the server's (the client has the unwrapped pair): the request's unmarshal, then the
    -- response's and the push's marshal
    assert.same({ "unmarshal", "marshal", "marshal" }, seen)
  end)

  it("follows the session's serializer when it is not JSON", function()
    nano.set_serializer("msgpack")
    local msgpack = require "nano.msgpack"
    local c = server:connect({ serializer = { marshal = msgpack.marshal, unmarshal = function(s) return s end } })
    assert.equal(msgpack.marshal({ n = 1 }), c:request("Api.echo", { n = 1 }))
  end)
end)

-- While nano.json is the default serializer, the core decodes each payload with the message
-- (core.set_predecode); the handler's own serializer still decides what the handler gets.
describe("a request's payload", function()
  local server
  -- a client that sends the text given as it is
  local AS_TEXT = { marshal = function(v) return v end, unmarshal = function(s) return s end }
  before_each(function()
    server = nt.start(U.FIXTURE)
    local Text = {}
    function Text:got(s, msg) return "got:" .. tostring(msg) end
    nano.register(Text, { name = "Text", serializer = {
      name = "text", marshal = function(v) return v end, unmarshal = function(b) return b end } })
    local Echo = {}
    function Echo:back(s, msg) return { v = msg } end
    nano.register(Echo, { name = "Echo" })
  end)
  after_each(function() server:stop() end)

  it("goes through the handler's own serializer, even when it is JSON text", function()
    local c = server:connect({ serializer = AS_TEXT })
    assert.equal('got:{"a":1}', c:request("Text.got", '{"a":1}'))
  end)

  it("that is not plain JSON is what nano.json's unmarshal (lua-cjson) makes of it", function()
    local c = server:connect({ serializer = AS_TEXT })
    for _, text in ipairs({ '"raw\ttab"', '+1', '01', '0x10', '[1, 2 ,3]', '{"n": 1e2}' }) do
      assert.equal(json.marshal({ v = json.unmarshal(text) }), c:request("Echo.back", text))
    end
  end)

  it("is decoded by the serializer set later, not by the JSON the core read", function()
    nano.set_serializer({ name = "upper", marshal = function(v) return tostring(v.v) end,
                          unmarshal = function(b) return b:upper() end })
    local c = server:connect({ serializer = AS_TEXT })
    assert.equal('{"A":1}', c:request("Echo.back", '{"a":1}'))
  end)
end)

-- A handler's answer is returned by nano's dispatcher to the core, which sends it once the
-- dispatcher's thread has returned (core.set_hook("dispatch", fn, on_unsent)): no C call in the
-- dispatcher for it. Only a hook set with on_unsent is told (a ninth argument, true, for each
-- request) that it may return one; any other hook's results are dropped, as before.
describe("a response the dispatcher returns to the core", function()
  local core = require "nano.core"
  local server
  before_each(function()
    server = nt.start(U.FIXTURE)
    local Ret = {}
    function Ret:after_push(s, msg)
      s:push("onFirst", { n = msg.n })
      return { n = msg.n }
    end
    function Ret:after_wait(s, msg)
      nano.sleep(0)
      return { waited = msg.n }
    end
    nano.register(Ret, { name = "Ret" })
  end)
  after_each(function()
    server:stop()
    U.restore_log_level()
  end)

  -- A hook around nano's dispatcher, as nano.test's own: whether each request's dispatch
  -- returned a response to the core (true) or sent it itself (false), in order
  local function watch_returns()
    local dispatch, returned = nano._dispatch, {}
    core.set_hook("dispatch", function(...)
      local r = { dispatch(...) }
      returned[#returned + 1] = r[1] ~= nil
      return unpack(r, 1, 3)
    end, nano._unsent)
    return returned
  end

  it("arrives once, after what the handler pushed", function()
    local returned = watch_returns()
    local c = server:connect()
    local order = {}
    c:on_push("onFirst", function() order[#order + 1] = "push" end)
    local res = c:request("Ret.after_push", { n = 7 })
    order[#order + 1] = "response"
    assert.same({ n = 7 }, res)
    assert.same({ "push", "response" }, order)
    assert.same({ n = 8 }, c:request("Ret.after_push", { n = 8 }))
    assert.equal(0, c:stray_responses())
    assert.same({ true, true }, returned) -- returned to the core, not sent by a C call
  end)

  it("is sent by the dispatcher itself after a wait (the thread no longer returns to the core)", function()
    local returned = watch_returns()
    local c = server:connect()
    assert.same({ waited = 1 }, c:request("Ret.after_wait", { n = 1 }))
    -- the same thread, reused for a handler that answers at once
    assert.same({ n = 2 }, c:request("Ret.after_push", { n = 2 }))
    assert.same({ false, true }, returned)
  end)

  it("is not taken from a script's own hook set without on_unsent: nano's dispatcher sends it", function()
    local dispatch, nargs, returned = nano._dispatch, {}, {}
    core.set_hook("dispatch", function(...)
      nargs[#nargs + 1] = select("#", ...)
      returned[#returned + 1] = dispatch(...) == nil
      return { ignored = true } -- a hook without on_unsent: its results are not a response
    end)
    local c = server:connect()
    assert.same({ n = 3 }, c:request("Ret.after_push", { n = 3 }))
    assert.same({ waited = 4 }, c:request("Ret.after_wait", { n = 4 }))
    assert.equal(0, c:stray_responses())
    assert.same({ 8, 8 }, nargs)
    assert.same({ true, true }, returned)
  end)

  it("from a hook with on_unsent: requests get true as a ninth argument, notifies nothing", function()
    local ninth = {}
    core.set_hook("dispatch", function(s, mtype, id, route, payload, flags, co, pre, defer)
      ninth[#ninth + 1] = { mtype, defer }
      if mtype == 0 and defer then return { route = route, id = id }, nil, route end
    end, function() end)
    local c = server:connect()
    local got = c:request("Any.thing", {})
    assert.same("Any.thing", got.route)
    c:notify("Any.note", {})
    c:sync() -- a request too: answered by the hook, as any other
    assert.same({ 0, true }, ninth[1])
    assert.same({ 1, nil }, ninth[2])
  end)

  it("that does not encode or is over the packet limit goes to on_unsent, which answers it", function()
    local calls = {}
    local c = server:connect()
    core.set_hook("dispatch", function(s, mtype, id, route, payload, flags, co, pre, defer)
      if route == "Bad.fn" then return { f = print }, nil, route end
      if route == "Bad.big" then return string.rep("x", 0xFFFFFF), nil, route end
      core.respond(s, id, "{}", false)
    end, function(s, id, value, route, size)
      calls[#calls + 1] = { route = route, size = size, value = type(value), s = s == c:session() }
      core.respond(s, id, '{"code":500}', true, 500)
    end)
    local _, err = c:try_request("Bad.fn", {})
    assert.same({ code = 500 }, err)
    _, err = c:try_request("Bad.big", {})
    assert.same({ code = 500 }, err)
    assert.same({ route = "Bad.fn", value = "table", s = true }, calls[1])
    assert.same({ route = "Bad.big", value = "string", size = 0xFFFFFF + 2, s = true }, calls[2])
    assert.equal(2, #calls)
  end)

  it("written by the flat writer is still the value's text when a hook around the dispatcher writes JSON before it returns", function()
    local c = server:connect()
    local dispatch = nano._dispatch
    core.set_hook("dispatch", function(...)
      local a, b, r = dispatch(...)
      c:session():push("onState", { hp = 1 }) -- flat: a text of its own, taken by the push
      return a, b, r
    end, nano._unsent)
    local res = c:request("Ret.after_push", { n = 5 })
    assert.same({ n = 5 }, res) -- not the push's { hp = 1 }
    assert.same({ hp = 1 }, select(2, c:wait_push("onState")))
    assert.equal(0, c:stray_responses())
  end)

  it("that on_unsent fails to answer is answered 500 by the core", function()
    core.set_hook("dispatch", function(s, mtype, id, route, payload, flags, co, pre, defer)
      if route == "Bad.fn" then return { f = print }, nil, route end
      core.respond(s, id, "{}", false)
    end, function() error("on_unsent broke") end)
    local c = server:connect()
    local _, err = c:try_request("Bad.fn", {})
    assert.same({ code = 500, msg = "internal error" }, err)
    assert.same({}, c:request("Any.thing", {})) -- the session goes on
    assert.equal(0, c:stray_responses())
  end)
end)
