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
