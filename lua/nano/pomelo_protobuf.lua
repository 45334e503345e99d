-- pomelo's protobuf: nano.pomelo_protobuf{ server =, client = } (docs/api.md).
--
-- pomelo servers with protobuf enabled describe messages per route in JSON
-- (config/serverProtos.json, config/clientProtos.json):
--   { "Room.join": { "required uInt32 code": 1, "repeated User users": 2,
--                    "message User": { "optional string name": 1 } } }
-- and send them, in pomelo-protobuf's parsed form, in the handshake as
-- sys.protos = { server =, client =, version = } when the client's sys.protoVersion differs; the
-- client caches them and encodes the routes they name with npm's pomelo-protobuf, everything else
-- as JSON. pomelo-protobuf's wire format is protobuf's except that int32 is zigzag (sint32) and
-- a repeated scalar is one tag + an element count + the elements (docs/protocol.md); the codec is
-- core/protobuf.c's, in its "pomelo" flavour, so nothing of the wire format is written in Lua.
local pbc = require "nano.protobuf_codec"
local json = require "nano.json"

local type, pairs, tostring = type, pairs, tostring
local str_format = string.format

local M = {}

-- pomelo-protobuf's scalar types -> FieldDescriptorProto type numbers (int32 is zigzag there)
local SCALAR = { uInt32 = 13, int32 = 17, sInt32 = 17, float = 2, double = 1, string = 9 }
local OPTION = { required = true, optional = true, repeated = true }
local MESSAGE = 11

local function words(key)
  local w = {}
  for part in key:gmatch("%S+") do w[#w + 1] = part end
  return w
end

-- The parsed form pomelo's clients expect in the handshake (what pomelo-protobuf's parse makes):
-- fields by name { option=, type=, tag= }, nested message types under __messages, __tags by tag.
local function parse_object(obj, where, level)
  if type(obj) ~= "table" then error(str_format("pomelo_protobuf: %s: expected an object", where), level) end
  local proto, nested, tags = {}, {}, {}
  for key, v in pairs(obj) do
    local w = type(key) == "string" and words(key) or {}
    if w[1] == "message" and #w == 2 then
      nested[w[2]] = parse_object(v, where .. "." .. w[2], level + 1)
    elseif OPTION[w[1]] and #w == 3 then
      if type(v) ~= "number" or v < 1 or v % 1 ~= 0 then
        error(str_format("pomelo_protobuf: %s: '%s' needs a positive integer tag", where, key), level)
      end
      if tags[tostring(v)] then
        error(str_format("pomelo_protobuf: %s: tag %d used twice", where, v), level)
      end
      proto[w[3]] = { option = w[1], type = w[2], tag = v }
      tags[tostring(v)] = w[3]
    else
      error(str_format("pomelo_protobuf: %s: cannot read '%s' (\"required|optional|repeated <type> <name>\" or \"message <Name>\")",
        where, tostring(key)), level)
    end
  end
  proto.__messages, proto.__tags = nested, tags
  return proto
end

local function parse(protos, level)
  local parsed = {}
  for key, obj in pairs(protos) do parsed[key] = parse_object(obj, key, level + 1) end
  return parsed
end

-- The message list nano.protobuf_codec.build takes. A field's message type is found as
-- pomelo-protobuf finds it: among the current message's nested types, else a top-level
-- "message <Type>" entry.
local function descriptors(parsed, level)
  local list = {}
  local function add(full, proto)
    local fields = {}
    for name, f in pairs(proto) do
      if name ~= "__messages" and name ~= "__tags" then
        local t, type_name = SCALAR[f.type], nil
        if not t then
          if proto.__messages[f.type] then
            type_name = full .. "." .. f.type
          elseif parsed["message " .. f.type] then
            type_name = "message " .. f.type
          else
            error(str_format("pomelo_protobuf: %s.%s: unknown type '%s'%s", full, name, f.type,
              (f.type == "uInt64" or f.type == "sInt64") and " (pomelo-protobuf cannot encode 64-bit integers)" or ""), level)
          end
          t = MESSAGE
        end
        fields[#fields + 1] = { name = name, number = f.tag, type = t, repeated = f.option == "repeated",
                                type_name = type_name }
      end
    end
    list[#list + 1] = { name = full, fields = fields }
    for n, sub in pairs(proto.__messages) do add(full .. "." .. n, sub) end
  end
  for key, proto in pairs(parsed) do add(key, proto) end
  return list
end

local function load_side(v, script_dir, what, level)
  if v == nil then return {} end
  if type(v) == "string" then
    local path = (v:sub(1, 1) == "/" or not script_dir) and v or (script_dir .. "/" .. v)
    local f, err = io.open(path, "rb")
    if not f then error("pomelo_protobuf: " .. what .. ": " .. tostring(err), level) end
    local text = f:read("*a")
    f:close()
    local ok, t = pcall(json.unmarshal, text)
    if not ok or type(t) ~= "table" then error("pomelo_protobuf: " .. what .. ": " .. path .. " is not a JSON object", level) end
    v = t
  end
  if type(v) ~= "table" then error("pomelo_protobuf: " .. what .. ": expected a table or a JSON file", level) end
  return v
end

-- A version both sides can compare: a checksum of the schemas' JSON, unless given.
local function checksum(text)
  local h = 5381
  for i = 1, #text do h = (h * 33 + text:byte(i)) % 4294967296 end
  return h
end

--- pomelo_protobuf.new(opts, script_dir) -> serializer; see nano.pomelo_protobuf in docs/api.md.
function M.new(opts, script_dir, level)
  level = (level or 1) + 1
  if type(opts) ~= "table" then error("pomelo_protobuf: expected { server = ..., client = ... }", level) end
  local server = parse(load_side(opts.server, script_dir, "server", level + 1), level + 1)
  local client = parse(load_side(opts.client, script_dir, "client", level + 1), level + 1)
  local sschema, serr = pbc.build(descriptors(server, level + 1), "pomelo")
  if not sschema then error("pomelo_protobuf: server: " .. serr, level) end
  local cschema, cerr = pbc.build(descriptors(client, level + 1), "pomelo")
  if not cschema then error("pomelo_protobuf: client: " .. cerr, level) end
  local version = opts.version
  if version == nil then
    version = checksum(json.marshal(client) .. json.marshal(server))
  end
  local protos = { server = server, client = client, version = version }

  -- server-to-client kinds use the server's schemas, client-to-server the client's
  local function schema_for(route, kind)
    if not route then return nil end
    if kind == "response" or kind == "push" then
      return server[route] and sschema
    elseif kind == "request" or kind == "notify" then
      return client[route] and cschema
    end
  end

  local s = { name = "pomelo-protobuf", protos = protos, version = version }
  function s.marshal(v, route, kind)
    local schema = schema_for(route, kind)
    if not schema then return json.marshal(v) end
    if type(v) == "string" then return v end
    return schema:encode(route, v)
  end
  function s.unmarshal(bytes, route, kind)
    local schema = schema_for(route, kind)
    if not schema then return json.unmarshal(bytes) end
    local v, err = schema:decode(route, bytes)
    if not v then error(err, 0) end
    return v
  end
  --- The handshake's sys additions for a client's handshake: the schemas when its protoVersion
  --- is not ours (pomelo's rule), and useProto.
  function s.handshake(hs)
    local sys = type(hs) == "table" and type(hs.sys) == "table" and hs.sys or {}
    if sys.protoVersion ~= nil and sys.protoVersion == version then return { useProto = true } end
    return { useProto = true, protos = protos }
  end
  return s
end

return M
