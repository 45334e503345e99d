-- The JSON serializer (default), on lua-cjson. An own cjson instance, so that a game script that
-- changes cjson's global settings cannot change what goes on the wire.
local cjson = require("cjson").new()
cjson.encode_sparse_array(true)
cjson.decode_max_depth(128)
cjson.encode_max_depth(128)

local encode, decode = cjson.encode, cjson.decode

return {
  name = "json",
  marshal = function(v)
    if v == nil then return "" end
    return encode(v)
  end,
  unmarshal = function(s)
    if s == "" then return nil end
    return decode(s)
  end,
  null = cjson.null,
}
