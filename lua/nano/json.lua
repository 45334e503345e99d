-- The JSON serializer (default), on lua-cjson. An own cjson instance, so that a game script that
-- changes cjson's global settings cannot change what goes on the wire.
local cjson = require("cjson").new()
cjson.encode_sparse_array(true)
cjson.decode_max_depth(128)
cjson.encode_max_depth(128)

local encode, decode = cjson.encode, cjson.decode

-- cjson encodes every empty table as {}: it cannot know that a table was meant as a list. Put
-- json.empty_array (or json.array(t), which returns it for an empty t) where [] must go; marshal
-- writes it as []. The marker carries a per-process random token, so a string from a
-- client can never imitate it.
local function token()
  local f = io.open("/dev/urandom", "rb")
  local bytes = f and f:read(8)
  if f then f:close() end
  if not bytes or #bytes < 8 then bytes = tostring({}) .. os.time() .. os.clock() end
  return (bytes:gsub(".", function(c) return string.format("%02x", c:byte()) end))
end
local EMPTY_ARRAY = "\0nano.empty_array." .. token() .. "\0"

-- Numbers are written as JavaScript's JSON.stringify writes them: integers up to 2^53 as plain
-- digits, every other double in the fewest significant digits that read back as the same double
-- (lua-cjson's "%.14g" would change a 16-digit uid or a microsecond timestamp). -0 stays "-0".
-- core/lua_json.c's format_double does the same in C; this is the fallback's copy.
local floor, abs, huge, format, tonumber = math.floor, math.abs, math.huge, string.format, tonumber

-- digits (a string) rounded to their first p, half to even (JavaScript's rule, and glibc's; LuaJIT's
-- own printf rounds half away from zero). Returns the p digits and 1 when they carried into a new
-- leading digit (999 -> 1000), else 0.
local function round_digits(digits, p)
  local head, next_digit, rest = digits:sub(1, p), digits:byte(p + 1) - 48, digits:sub(p + 2)
  local up = next_digit > 5 or (next_digit == 5 and (rest:find("[1-9]") ~= nil
    or (head:byte(p) - 48) % 2 == 1))
  if not up then return head, 0 end
  local i = p
  while i > 0 and head:byte(i) == 57 do i = i - 1 end -- trailing 9s become 0s
  if i == 0 then return "1" .. ("0"):rep(p - 1), 1 end
  return head:sub(1, i - 1) .. string.char(head:byte(i) + 1) .. ("0"):rep(p - i), 0
end

local function format_number(x)
  if x ~= x or x == huge or x == -huge then error("Cannot serialise number: must not be NaN or Inf", 0) end
  if x == 0 then return 1 / x < 0 and "-0" or "0" end
  if floor(x) == x and abs(x) <= 2 ^ 53 then return format("%.0f", x) end
  -- 100 significant digits: a double's expansion as far as a tie at 17 digits can matter
  local sign, d1, rest, e = format("%.99e", x):match("^(-?)(%d)%.(%d*)e([-+]%d+)$")
  local all, e10 = d1 .. rest, tonumber(e)
  -- at most 15 digits survive decimal -> double -> decimal, so 15 digits that read back are the
  -- shortest form once trailing zeros go; else 16 may do; 17 always do (subnormals: try them all)
  local d, n
  for prec = abs(x) < 2.2250738585072014e-308 and 1 or 15, 17 do
    local carry
    d, carry = round_digits(all, prec)
    n = e10 + carry + 1 -- x = 0.d * 10^n
    if prec == 17 or tonumber(sign .. "0." .. d .. "e" .. n) == x then break end
  end
  d = d:gsub("0+$", "")
  if d == "" then d = "0" end
  local k = #d
  if k <= n and n <= 21 then return sign .. d .. ("0"):rep(n - k) end
  if 0 < n and n <= 21 then return sign .. d:sub(1, n) .. "." .. d:sub(n + 1) end
  if -6 < n and n <= 0 then return sign .. "0." .. ("0"):rep(-n) .. d end
  return sign .. d:sub(1, 1) .. (k > 1 and "." .. d:sub(2) or "") .. (n - 1 < 0 and "e-" or "e+") .. abs(n - 1)
end

-- The fallback encoder (no C module): lua-cjson's rules (see core/lua_json.c: arrays, sparse
-- arrays, depth 128, errors, raw access), its string escapes (cjson.encode of each string), and
-- format_number for numbers.
local null, rawget, next, type = cjson.null, rawget, next, type
local function lua_encode(v)
  local out, n = {}, 0
  local put_value
  local function array_length(t)
    local max, items = 0, 0
    for k in next, t do
      if type(k) ~= "number" or k < 1 or floor(k) ~= k then return -1 end
      if k > max then max = k end
      items = items + 1
    end
    if max > items * 2 and max > 10 then return -1 end
    return max
  end
  function put_value(x, depth)
    local tx = type(x)
    if tx == "string" then
      n = n + 1
      out[n] = x == EMPTY_ARRAY and "[]" or encode(x)
    elseif tx == "number" then
      n = n + 1
      out[n] = format_number(x)
    elseif tx == "boolean" then
      n = n + 1
      out[n] = x and "true" or "false"
    elseif tx == "nil" or x == null then
      n = n + 1
      out[n] = "null"
    elseif tx == "table" then
      depth = depth + 1
      if depth > 128 then error(format("Cannot serialise, excessive nesting (%d)", depth), 0) end
      local len = array_length(x)
      if len > 0 then
        n = n + 1
        out[n] = "["
        for i = 1, len do
          if i > 1 then n = n + 1; out[n] = "," end
          put_value(rawget(x, i), depth)
        end
        n = n + 1
        out[n] = "]"
        return
      end
      n = n + 1
      out[n] = "{"
      local comma = false
      for k, val in next, x do
        local tk = type(k)
        n = n + 1
        if tk == "string" then
          out[n] = (comma and "," or "") .. encode(k) .. ":"
        elseif tk == "number" then
          out[n] = (comma and ',"' or '"') .. format_number(k) .. '":'
        else
          error("Cannot serialise " .. tk .. ": table key must be a number or string", 0)
        end
        comma = true
        put_value(val, depth)
      end
      n = n + 1
      out[n] = "}"
    else
      error("Cannot serialise " .. (tx == "userdata" and "userdata" or tx) .. ": type not supported", 0)
    end
  end
  put_value(v, 0)
  return table.concat(out)
end

-- nano-host's own codec (core/lua_json.c) writes the same text faster, without glibc's slow
-- printf for integers, and writes the marker as [] itself; it reads plain JSON into the values
-- cjson makes and leaves everything else to cjson. The Lua encoder above where the module is
-- missing (plain LuaJIT).
local has_fast, fast = pcall(require, "nano.json_codec")
local marshal, fast_decode, try_marshal
local function lua_marshal(v)
  if v == nil then return "" end
  return lua_encode(v)
end
if has_fast then
  fast_decode = fast.decode
  local fast_encode = fast.encode
  marshal = function(v)
    if v == nil then return "" end
    return fast_encode(v, EMPTY_ARRAY)
  end
  try_marshal = fast.try_encoder(EMPTY_ARRAY)
else
  marshal = lua_marshal
end

local unmarshal = has_fast and function(s)
  if s == "" then return nil end
  -- plain JSON is decoded by nano-host's parser; anything else gets lua-cjson's own answer
  local ok, v = fast_decode(s)
  if ok then return v end
  return decode(s)
end or function(s)
  if s == "" then return nil end
  return decode(s)
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
  unmarshal = unmarshal,
  null = cjson.null,
  -- For nano's dispatcher, which calls them without pcall (a serializer without them is called
  -- under pcall): try_unmarshal(bytes) -> true, value | false; try_marshal(v) -> bytes | nil.
  -- false/nil mean "ask unmarshal/marshal", which decode or raise the error. Never raise.
  try_unmarshal = fast_decode,
  try_marshal = try_marshal,
  -- ...standing for these two: a script that replaces json.marshal or json.unmarshal (to wrap
  -- them) gets its own function called, never the fast ones
  try_marshal_for = marshal,
  try_unmarshal_for = unmarshal,
  -- the core reads and writes this JSON itself, with the same codec (a response returned to the
  -- core, core.respond_value, core.push_value, core.set_predecode): the same values and bytes
  core_json = has_fast or nil,
  -- for specs: the fallback encoder and the number formatter, used where nano.json_codec is missing
  _lua_marshal = lua_marshal,
  _format_number = format_number,
}
