-- The JSON serializer (default), on lua-cjson. An own cjson instance, so that a game script that
-- changes cjson's global settings cannot change what goes on the wire.
local cjson = require("cjson").new()
cjson.encode_sparse_array(true)
cjson.decode_max_depth(128)
cjson.encode_max_depth(128)

local encode, decode = cjson.encode, cjson.decode
local find, sub = string.find, string.sub

-- cjson encodes every empty table as {}: it cannot know that a table was meant as a list. Put
-- json.empty_array (or json.array(t), which returns it for an empty t) where [] must go; marshal
-- turns its encoding into []. The marker carries a per-process random token, so a string from a
-- client can never imitate it.
local function token()
  local f = io.open("/dev/urandom", "rb")
  local bytes = f and f:read(8)
  if f then f:close() end
  if not bytes or #bytes < 8 then bytes = tostring({}) .. os.time() .. os.clock() end
  return (bytes:gsub(".", function(c) return string.format("%02x", c:byte()) end))
end
local EMPTY_ARRAY = "\0nano.empty_array." .. token() .. "\0"
local EMPTY_ARRAY_JSON = encode(EMPTY_ARRAY)

local function replace_empty_arrays(s)
  local out, at = {}, 1
  while true do
    local i, j = find(s, EMPTY_ARRAY_JSON, at, true)
    if not i then break end
    out[#out + 1] = sub(s, at, i - 1)
    out[#out + 1] = "[]"
    at = j + 1
  end
  out[#out + 1] = sub(s, at)
  return table.concat(out)
end

-- nano-host's own codec (core/lua_json.c) writes what cjson writes, byte for byte, without
-- glibc's slow "%.14g" for integers, and writes the marker as [] itself; it reads plain JSON into
-- the values cjson makes and leaves everything else to cjson. cjson alone where the module is
-- missing (plain LuaJIT).
local has_fast, fast = pcall(require, "nano.json_codec")
local marshal, fast_decode
if has_fast then
  fast_decode = fast.decode
  local fast_encode = fast.encode
  marshal = function(v)
    if v == nil then return "" end
    return fast_encode(v, EMPTY_ARRAY)
  end
else
  marshal = function(v)
    if v == nil then return "" end
    local s = encode(v)
    if find(s, EMPTY_ARRAY_JSON, 1, true) then s = replace_empty_arrays(s) end
    return s
  end
end

return {
  name = "json",
  marshal = marshal,
  empty_array = EMPTY_ARRAY,
  --- json.array(t) -> t, or json.empty_array when t is empty: a list that encodes as [] even empty
  array = function(t)
    if next(t) == nil then return EMPTY_ARRAY end
    return t
  end,
  unmarshal = has_fast and function(s)
    if s == "" then return nil end
    -- plain JSON is decoded by nano-host's parser; anything else gets lua-cjson's own answer
    local ok, v = fast_decode(s)
    if ok then return v end
    return decode(s)
  end or function(s)
    if s == "" then return nil end
    return decode(s)
  end,
  null = cjson.null,
}
