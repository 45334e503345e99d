-- nano.json_codec (core/lua_json.c) must write what the JSON serializer's lua-cjson instance
-- writes, byte for byte, except numbers (lua-cjson's "%.14g" changes numbers of more than 14
-- digits; both encoders write them as JavaScript does). nano.json's fallback encoder (plain
-- LuaJIT, no C module) must write the same text as the C one, numbers included.
local fast = require("nano.json_codec").encode
local fast_number = require("nano.json_codec").format_number
local try = require("nano.json_codec").try_encoder() -- never raises: nil where encode raises
local json = require "nano.json"
local lua_marshal, lua_number = json._lua_marshal, json._format_number
local cjson = require("cjson").new()
cjson.encode_sparse_array(true)
cjson.encode_max_depth(128)
cjson.decode_max_depth(128) -- as lua/nano/json.lua sets them

-- for values whose numbers have at most 14 significant digits
local function same_as_cjson(v)
  local want = cjson.encode(v)
  assert.equal(want, fast(v))
  assert.equal(want, lua_marshal(v))
  assert.equal(want, try(v))
end

-- the C and the fallback encoder agree, and the text reads back as the same value
local function same_both(v)
  local got = fast(v)
  assert.equal(got, lua_marshal(v))
  return got
end

describe("nano.json_codec", function()
  it("escapes every byte value as lua-cjson does", function()
    for c = 0, 255 do
      same_as_cjson(string.char(c))
      same_as_cjson("a" .. string.char(c) .. "b")
    end
    local all = {}
    for c = 0, 255 do all[#all + 1] = string.char(c) end
    same_as_cjson(table.concat(all))
    same_as_cjson({ [table.concat(all)] = table.concat(all) }) -- keys are escaped the same way
  end)

  it("writes numbers as JavaScript's JSON.stringify does, in both encoders", function()
    -- value -> what node's JSON.stringify writes (checked by hand; -0 stays -0 to read back)
    local js = {
      { 0, "0" }, { -0.0, "-0" }, { 1, "1" }, { -1, "-1" }, { 123456, "123456" },
      { 2 ^ 31, "2147483648" }, { 2 ^ 53, "9007199254740992" }, { -2 ^ 53, "-9007199254740992" },
      { 2 ^ 53 + 2, "9007199254740994" }, { 2 ^ 60, "1152921504606847000" },
      { 123456789012345, "123456789012345" }, { 1764204000123456, "1764204000123456" },
      { 1234567890123456, "1234567890123456" }, { 1e20, "100000000000000000000" },
      { 1e21, "1e+21" }, { 1e300, "1e+300" }, { -1e300, "-1e+300" }, { 0.1, "0.1" },
      { 0.5, "0.5" }, { 1 / 3, "0.3333333333333333" }, { 2 / 3, "0.6666666666666666" },
      { 1e-6, "0.000001" }, { 1.5e-7, "1.5e-7" }, { 1e-7, "1e-7" }, { 5e-324, "5e-324" },
      { 1.7976931348623157e308, "1.7976931348623157e+308" }, { 123.456, "123.456" },
      { 12345678901234.5, "12345678901234.5" }, { 4503599627370495.5, "4503599627370495.5" },
      { 0.1 + 0.2, "0.30000000000000004" }, { -0.000001234, "-0.000001234" },
      { 2.5e-310, "2.5e-310" },
    }
    for _, case in ipairs(js) do
      local x, want = case[1], case[2]
      assert.equal(want, fast_number(x))
      assert.equal(want, lua_number(x))
      assert.equal(want, fast(x))
      assert.equal('{"n":' .. want .. "}", same_both({ n = x }))
      assert.equal("[" .. want .. "]", same_both({ x }))
      if x ~= 0 and x ~= 1 then assert.equal('{"' .. want .. '":true}', same_both({ [x] = true, [0.5] = nil })) end
    end
  end)

  it("writes integers up to 2^53 as plain digits and every double so that it reads back", function()
    local x = 1
    for _ = 1, 34 do -- 3^33 < 2^53
      for _, v in ipairs({ x, -x, x + 1, x - 1 }) do
        local s = fast_number(v)
        assert.matches("^%-?%d+$", s)
        assert.equal(v, tonumber(s))
        assert.equal(s, lua_number(v))
      end
      x = x * 3
    end
    -- random bit patterns: every finite double, subnormals included
    local ffi = require "ffi"
    local u = ffi.new("union { double d; uint32_t w[2]; }")
    math.randomseed(19)
    for _ = 1, 20000 do
      local hi = math.random(0, 2 ^ 32 - 1)
      -- exponent all ones: NaN or Inf (a NaN with a payload would even confuse LuaJIT's tags)
      if math.floor(hi / 2 ^ 20) % 2048 ~= 2047 then
        u.w[0], u.w[1] = math.random(0, 2 ^ 32 - 1), hi
        local v = tonumber(u.d)
        local s = fast_number(v)
        assert.equal(v, tonumber(s), s)
        assert.equal(s, lua_number(v))
      end
    end
  end)

  it("refuses NaN and Inf in both encoders", function()
    for _, v in ipairs({ 0 / 0, 1 / 0, -1 / 0, { n = 1 / 0 } }) do
      assert.matches("must not be NaN or Inf", select(2, pcall(fast, v)))
      assert.matches("must not be NaN or Inf", select(2, pcall(lua_marshal, v)))
    end
  end)

  it("tells arrays from objects, sparse arrays included", function()
    local cases = {
      {}, { 1, 2, 3 }, { "a", nil, "c" }, { [1] = 1, [3] = 3 }, { [2] = "x" }, { [10] = 1 },
      { [11] = 1 }, { [20] = 1, [19] = 2, [18] = 3, [17] = 4, [16] = 5, [15] = 6, [14] = 7,
      [13] = 8, [12] = 9, [11] = 10 }, { [21] = 1, [1] = 2 }, { [0] = 1 }, { [-1] = 1 },
      { [1.5] = 1 }, { [1] = 1, x = 2 }, { x = 1 }, { [1] = { [1] = { [1] = {} } } },
      { true, false, cjson.null }, { a = cjson.null }, { [1] = 1, [1e6] = 1 },
    }
    for _, t in ipairs(cases) do same_as_cjson(t) end
  end)

  it("encodes objects in the same key order with the same number keys", function()
    local t = {}
    for i = 1, 50 do t["k" .. i] = i end
    t[2.5] = "two and a half"
    t[-3] = "minus three"
    same_as_cjson(t)
    same_as_cjson({ nested = t, list = { t, t } })
  end)

  it("encodes the shapes game messages have", function()
    same_as_cjson({ code = 0, result = "success" })
    same_as_cjson({ name = "Zoë", content = "héllo \"wörld\" / \\ \n\t", ts = 1732492800 })
    same_as_cjson({ members = { "ann", "bob" }, room = { id = 7, pos = { x = 1.25, y = -3 } } })
    same_as_cjson({ seq = 123456789, hp = 99.5, alive = true, items = {} })
    same_as_cjson("plain string")
    same_as_cjson(true)
    same_as_cjson(false)
  end)

  it("refuses what lua-cjson refuses", function()
    local bad = { 0 / 0, 1 / 0, -1 / 0, { n = 1 / 0 }, function() end, { f = print },
      coroutine.create(function() end), { [true] = 1 }, { [{}] = 1 } }
    for _, v in ipairs(bad) do
      assert.is_false((pcall(cjson.encode, v)))
      local ok, err = pcall(fast, v)
      assert.is_false(ok)
      assert.matches("^Cannot serialise", err)
      local lok, lerr = pcall(lua_marshal, v)
      assert.is_false(lok)
      assert.equal(err, lerr)
      local tok, none = pcall(try, v) -- declines without raising: the dispatcher calls it as is
      assert.is_true(tok)
      assert.is_nil(none)
    end
  end)

  it("refuses nesting deeper than 128, as lua-cjson does", function()
    local function nest(n)
      local t = {}
      for _ = 1, n - 1 do t = { t } end
      return t
    end
    same_as_cjson(nest(128))
    local objects = {} -- two stack slots a level (key and value), where an array takes one
    for _ = 1, 127 do objects = { a = objects, b = 1 } end
    same_as_cjson(objects)
    assert.is_false((pcall(cjson.encode, nest(129))))
    local ok, err = pcall(fast, nest(129))
    assert.is_false(ok)
    assert.matches("excessive nesting", err)
    assert.equal(err, select(2, pcall(lua_marshal, nest(129))))
    assert.is_nil(try(nest(129)))
    assert.is_nil(try({ deep = nest(129), [{}] = 1 }))
    -- the encoder is still usable after an error
    same_as_cjson({ after = "error" })
  end)

  it("ignores metatables", function()
    local t = setmetatable({ a = 1 }, { __index = function() return "x" end, __len = function() return 9 end })
    same_as_cjson(t)
  end)

  it("encodes big values", function()
    local long = string.rep("0123456789\"/", 20000)
    same_as_cjson(long)
    local list = {}
    for i = 1, 20000 do list[i] = { id = i, name = "n" .. i } end
    same_as_cjson(list)
  end)

  it("writes the empty-array marker as []", function()
    local marker = "\0marker\0"
    assert.equal('{"a":[]}', fast({ a = marker }, marker))
    assert.equal('["\\u0000marker",[]]', fast({ "\0marker", marker }, marker))
    assert.equal("[]", fast(marker, marker))
    assert.equal('"\\u0000marker\\u0000"', fast(marker))
    local try_marker = require("nano.json_codec").try_encoder(marker)
    assert.equal('{"a":[]}', try_marker({ a = marker }))
    assert.equal('"\\u0000marker\\u0000"', try(marker))
  end)

  it("gives the serializer's non-raising pair what marshal and unmarshal give", function()
    for _, v in ipairs({ { n = 1 }, { a = { json.empty_array, "x" } }, "s", 12.5, true }) do
      assert.equal(json.marshal(v), json.try_marshal(v))
      local text = json.marshal(v)
      local ok, back = json.try_unmarshal(text)
      assert.is_true(ok)
      assert.same(json.unmarshal(text), back)
    end
    assert.equal("", json.try_marshal(nil)) -- marshal(nil) is "" (no payload)
    assert.is_nil(json.try_marshal({ f = print }))
    assert.is_false(json.try_unmarshal("{'lenient': 1}")) -- left to unmarshal (lua-cjson)
  end)
end)

-- decode: where nano-host's parser answers, its value must be the one lua-cjson makes; where it
-- declines, nano.json's unmarshal must give lua-cjson's own answer (value or error).
describe("nano.json_codec decode", function()
  local fast_decode = require("nano.json_codec").decode
  local unmarshal = require("nano.json").unmarshal
  local cdecode = cjson.decode

  -- deep equality that tells -0 from 0 and keeps cjson.null's identity
  local function same(a, b)
    if type(a) ~= type(b) then return false end
    if type(a) == "number" then
      if a ~= a then return b ~= b end -- NaN (lua-cjson reads "NaN")
      return a == b and (a ~= 0 or 1 / a == 1 / b)
    end
    if type(a) ~= "table" then return a == b end
    for k, v in pairs(a) do if not same(v, b[k]) then return false end end
    for k in pairs(b) do if a[k] == nil then return false end end
    return true
  end

  local function check(text, must_be_fast)
    local cok, want = pcall(cdecode, text)
    local ok, got = fast_decode(text)
    if ok then
      assert.is_true(cok, "nano-host decoded what lua-cjson refuses: " .. text)
      assert.is_true(same(want, got), "different value for " .. text)
    else
      assert.is_false(must_be_fast == true, "declined plain JSON: " .. text)
    end
    local uok, u = pcall(unmarshal, text)
    assert.equal(cok, uok, "unmarshal and lua-cjson disagree on " .. text)
    if cok then assert.is_true(same(want, u), "unmarshal's value differs for " .. text) else assert.equal(want, u) end
  end

  it("reads plain JSON into lua-cjson's values", function()
    local plain = { '{"n":123}', '{"n":-7}', '[]', '{}', '[1,2,3]', '[1,[2,[3,[]]],{}]', 'null',
      'true', 'false', '"str"', '0', '-0', '1.5', '-1.5e3', '1E-7', '2e+2', '123456789012345',
      '1234567890123456', '-999999999999999', '12345678901234567890', '9007199254740993',
      '0.1', '3.14159265358979323846', '1e308', '1e-320', ' {"a" : [ 1 , "x" , null ] } \n',
      '{"a":1,"a":2}', '{"nested":{"deep":{"list":[{"k":"v"}]}}}', '[null,null]',
      '{"":""}', '"\\"\\\\\\/\\b\\f\\n\\r\\t"', '"\\u0000"', '"\\u00e9\\u4e2d\\uffff"',
      '"\\ud83d\\ude00"', '"h\\u00e9llo w\\u00f6rld"', '"caf\195\169"', '{"name":"Zo\195\171"}',
      -- a key given twice, once escaped; keys that differ only between their first and last 8 bytes
      '{"a":1,"\\u0061":2}', '{"\\u0061":1,"a":2}', '{"aaaaaaaaXbbbbbbbb":1,"aaaaaaaaYbbbbbbbb":2}' }
    for _, t in ipairs(plain) do check(t, true) end
  end)

  -- the decoder builds a table from its first members held on the stack (lua_json.c, DEC_BATCH):
  -- sizes around and past that batch, and a key given again on either side of it
  it("reads objects and arrays of any size, the last of a repeated key winning", function()
    for _, n in ipairs({ 1, 2, 15, 16, 17, 31, 32, 33, 100, 1000 }) do
      local items, pairs_ = {}, {}
      for i = 1, n do
        items[i] = tostring(i * 3)
        pairs_[i] = string.format('"k%d":%d', i, i)
      end
      check("[" .. table.concat(items, ",") .. "]", true)
      check("{" .. table.concat(pairs_, ",") .. "}", true)
      check('{"dup":0,' .. table.concat(pairs_, ",") .. ',"dup":1}', true)
      check('{"k1":"again",' .. table.concat(pairs_, ",") .. "}", true)
      check("[" .. table.concat(items, ",") .. ',{"in":[' .. table.concat(items, ",") .. "]}]", true)
    end
    local _, v = fast_decode('{"dup":0,"a":1,"b":2,"c":3,"d":4,"e":5,"f":6,"g":7,"h":8,"i":9,' ..
                             '"j":10,"k":11,"l":12,"m":13,"n":14,"o":15,"p":16,"q":17,"dup":1}')
    assert.equal(1, v.dup)
    -- objects nested 128 deep, each holding a batch's worth of members before the next level
    local open = string.rep('{"a":1,"b":2,"c":3,"d":4,"e":5,"f":6,"g":7,"h":8,"i":9,"j":10,' ..
                            '"k":11,"l":12,"m":13,"n":14,"o":15,"z":', 127)
    check(open .. "{}" .. string.rep("}", 127), true)
  end)

  it("leaves everything else to lua-cjson", function()
    local other = { ' ', '{', '}', '[1,]', '{"a":1,}', '{"a"}', '{a:1}', "{'a':1}", '01', '-',
      '+1', '.5', '1.', '1e', '1e+', '0x10', 'NaN', 'nan', 'inf', '-Infinity', 'tru', 'nul',
      'null x', '[1] [2]', '"unterminated', '"bad \\x escape"', '"\\u12"', '"\\ud83d"',
      '"\\ude00"', '"\\ud83d\\u0041"', '"raw\ttab"', '"raw\nline"', '\0\0', '\0{}', '"a"\0',
      string.rep("[", 129) .. string.rep("]", 129), string.rep('{"a":', 129) .. "1" .. string.rep("}", 129),
      "1" .. string.rep("0", 80), "[" .. string.rep("1,", 1000) .. "1]" }
    for _, t in ipairs(other) do check(t) end
    -- 128 deep is still plain JSON
    check(string.rep("[", 128) .. string.rep("]", 128), true)
  end)

  it("agrees with lua-cjson on random mutations of game messages", function()
    local seeds = { '{"n":123}', '{"name":"ann","pos":{"x":1.5,"y":-2},"items":[1,2,3],"ok":true}',
      '[{"id":1,"t":"a\\u00e9"},null,false,"x\\ny"]' }
    local alphabet = '{}[]",:.-+eE0123456789 \\u/abtnrfx\0\t'
    math.randomseed(7)
    for _ = 1, 3000 do
      local s = seeds[math.random(#seeds)]
      for _ = 1, math.random(1, 3) do
        local i = math.random(1, #s + 1)
        local op = math.random(3)
        local c = alphabet:sub(math.random(#alphabet), math.random(#alphabet) > 0 and nil or 1)
        c = c:sub(1, 1)
        if op == 1 then
          s = s:sub(1, i - 1) .. c .. s:sub(i)
        elseif op == 2 then
          s = s:sub(1, i - 1) .. s:sub(i + 1)
        else
          s = s:sub(1, i - 1) .. c .. s:sub(i + 1)
        end
      end
      check(s)
    end
  end)
end)
