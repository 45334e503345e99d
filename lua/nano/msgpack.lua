-- The MessagePack serializer, on Debian's lua-messagepack (`require "MessagePack"`).
-- nano.set_serializer("msgpack") selects it; the handshake then says sys.serializer = "msgpack"
-- so that a client can tell how to decode payloads.
--
-- MessagePack.lua keeps its settings in the module, so a game script that changes them would
-- change what goes on the wire; this loads a private copy of the module instead.
local path = assert(package.searchpath("MessagePack", package.path),
                    "nano.msgpack: lua-messagepack is not installed (apt install lua-messagepack)")
local mp = assert(loadfile(path))()
mp.set_string("string")        -- str8/16/32: what current MessagePack libraries expect
mp.set_array("without_hole")   -- a table with keys 1..n (no holes) is an array, else a map


-- Numbers: integers up to 2^53 - 1 go out as MessagePack integers, every other number as float 64,
-- so each comes back exactly (spec/api_serializer_spec.lua) — except that lua-messagepack 0.5.2
-- builds float 64s with frexp/ldexp and writes a subnormal double (below 2.2e-308) as 0, and
-- reads one as a wrong number. Float 64 is therefore written and read here by its bits.
local ffi = require "ffi"
local bits = ffi.new("union { double d; uint8_t b[8]; }")
local char, byte = string.char, string.byte
local LITTLE = ffi.abi("le")
mp.packers["double"] = function(buffer, n)
  bits.d = n
  local b = bits.b
  if LITTLE then
    buffer[#buffer + 1] = char(0xCB, b[7], b[6], b[5], b[4], b[3], b[2], b[1], b[0])
  else
    buffer[#buffer + 1] = char(0xCB, b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7])
  end
end
local unpackers
for i = 1, math.huge do -- the module's (local) table of readers, an upvalue of unpack_cursor
  local name, value = debug.getupvalue(mp.unpack_cursor, i)
  if name == nil then break end
  if name == "unpackers" then unpackers = value break end
end
assert(unpackers, "nano.msgpack: this lua-messagepack has no unpackers table")
unpackers[0xCB] = function(c)
  local s, i, j = c.s, c.i, c.j
  if i + 7 > j then
    c:underflow(i + 7)
    s, i = c.s, c.i
  end
  c.i = i + 8
  local b1, b2 = byte(s, i, i + 1)
  -- a NaN from the wire becomes Lua's own NaN: LuaJIT keeps its type tags in NaN payloads, so a
  -- NaN with a chosen payload must never become a Lua value
  if b1 % 0x80 == 0x7F and b2 >= 0xF0 and s:sub(i + 1, i + 7) ~= "\240\0\0\0\0\0\0" then
    return 0 / 0
  end
  local b = bits.b
  for k = 0, 7 do b[LITTLE and 7 - k or k] = byte(s, i + k) end
  return tonumber(bits.d)
end

local pack, unpack = mp.pack, mp.unpack

return {
  name = "msgpack",
  -- nil is the empty payload, both ways, as with JSON
  marshal = function(v)
    if v == nil then return "" end
    return pack(v)
  end,
  unmarshal = function(s)
    if s == "" then return nil end
    return unpack(s)
  end,
}
