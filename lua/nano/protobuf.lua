-- The protobuf serializer: nano.protobuf{ proto =, routes = } (docs/api.md, "Protobuf").
--
-- Schemas come from .proto files compiled by protoc (`protoc --descriptor_set_out
-- --include_imports`, run once when the serializer is made: at script load, not per message) or
-- from a descriptor set file protoc wrote beforehand (`descriptor =`). The codec is C
-- (core/protobuf.c through nano.protobuf_codec); this file only maps routes to message types.
--
-- A serializer's marshal/unmarshal get (value, route, kind) where kind says the direction:
-- "request" and "notify" (client to server), "response" and "push" (server to client), "error"
-- (an error response), "kick". A route with no message type for that kind, an error without
-- `errors =`, and a kick are JSON, as pomelo's clients do for routes without a schema.
local pbc = require "nano.protobuf_codec"
local core = require "nano.core"
local json = require "nano.json"

local type, pairs, ipairs, tostring = type, pairs, ipairs, tostring
local str_format = string.format

local M = {}

local function shell_quote(s) return "'" .. s:gsub("'", "'\\''") .. "'" end

local function read_file(path)
  local f, err = io.open(path, "rb")
  if not f then return nil, err end
  local data = f:read("*a")
  f:close()
  return data
end

local function resolve(dir, path)
  if path:sub(1, 1) == "/" or not dir then return path end
  return dir .. "/" .. path
end

local function dirname(path) return path:match("^(.*)/[^/]*$") or "." end

-- Runs protoc over the files; returns the descriptor set's bytes or nil, protoc's message.
function M.compile(files, import_paths)
  local tmp = os.tmpname()
  local errf = tmp .. ".err"
  local args, seen = {}, {}
  local function include(d)
    if not seen[d] then
      seen[d] = true
      args[#args + 1] = "-I" .. shell_quote(d)
    end
  end
  for _, d in ipairs(import_paths or {}) do include(d) end
  for _, f in ipairs(files) do include(dirname(f)) end
  for _, f in ipairs(files) do args[#args + 1] = shell_quote(f) end
  local cmd = str_format("protoc --include_imports --descriptor_set_out=%s %s 2>%s",
    shell_quote(tmp), table.concat(args, " "), shell_quote(errf))
  local status = os.execute(cmd)
  local set = read_file(tmp)
  local msg = read_file(errf) or ""
  os.remove(tmp)
  os.remove(errf)
  if (status ~= 0 and status ~= true) or not set or set == "" then
    if msg == "" then msg = "protoc failed (is protobuf-compiler installed?)" end
    return nil, (msg:gsub("%s+$", ""))
  end
  return set
end

local KINDS = { request = true, notify = true, response = true, push = true }
local KIND_ORDER = { "request", "notify", "response", "push" } -- errors name the first bad one

-- routes: { ["Room.join"] = { request = "JoinRequest", response = "JoinResponse" },
--           onMessage = "ChatMessage" }: a string is the type of every direction of the route.
local function route_table(schema, routes, level)
  local by_route = {}
  for route, spec in pairs(routes or {}) do
    if type(route) ~= "string" then error("protobuf: routes: keys must be route strings", level) end
    local t = {}
    if type(spec) == "string" then
      t.request, t.notify, t.response, t.push = spec, spec, spec, spec
    elseif type(spec) == "table" then
      for kind, name in pairs(spec) do
        if not KINDS[kind] then
          error(str_format("protobuf: routes['%s']: unknown direction '%s' (request, notify, response, push)",
            route, tostring(kind)), level)
        end
        t[kind] = name
      end
      -- a notify's message is the request's unless given
      t.notify = t.notify or t.request
    else
      error(str_format("protobuf: routes['%s']: expected a message type name or a table", route), level)
    end
    for _, kind in ipairs(KIND_ORDER) do
      local name = t[kind]
      if name ~= nil and (type(name) ~= "string" or not schema:has(name)) then
        error(str_format("protobuf: routes['%s'].%s: no message type '%s' in the schema", route, kind,
          tostring(name)), level)
      end
    end
    by_route[route] = t
  end
  return by_route
end

-- Flat writers: a response whose type has only single scalar, string, bytes and enum fields is
-- written by a function made here for that type, which reads each field with rawget and hands it
-- to the codec's flat writer through the FFI (lua_protobuf.c, "the flat writer"). nano's
-- dispatcher calls it for a response it returns to the core (flat_reply in lua/nano/init.lua), so
-- the JIT compiles the writing into the dispatcher's trace where the core's encoder would read the
-- table through the C API. The bytes are the encoder's: each field is written by the same C code.
-- writer(t) -> the codec's flat_mark when it wrote t whole; false when a value is one it does not
-- write (a 64-bit integer as a string or cdata) or does not fit (the encoder then says why).
local flat_writer
do
  local has_ffi, ffi = pcall(require, "ffi")
  local usable = false
  if has_ffi and pbc.flat_writer then
    pcall(ffi.cdef, [[
      struct nh_pb_flat {
        void (*begin)(void);
        int (*num)(uint32_t number, int type, int presence, double x);
        int (*boolean)(uint32_t number, int presence, int b);
        int (*str)(uint32_t number, int presence, const char *s, size_t len);
        int (*finish)(void);
      };
    ]])
    -- another version's writer: every response goes to the encoder
    usable = pbc.flat_writer_size == ffi.sizeof("struct nh_pb_flat")
  end
  local W = usable and ffi.cast("const struct nh_pb_flat *", pbc.flat_writer)
  local BOOL, STRING, BYTES, ENUM = 8, 9, 12, 14 -- FieldDescriptorProto.Type

  -- the field's lines of the generated function: v is its value, k its enum's names (when it has)
  local function field_src(f, k)
    local get = str_format("  v = rawget(t, %q)\n  if v ~= nil then\n", f.name)
    local p = f.presence and 1 or 0
    if f.type == BOOL then
      return get .. str_format(
        "    if type(v) ~= \"boolean\" or W.boolean(%d, %d, v and 1 or 0) == 0 then return false end\n  end\n",
        f.number, p)
    elseif f.type == STRING or f.type == BYTES then
      return get .. str_format(
        "    if type(v) ~= \"string\" or W.str(%d, %d, v, #v) == 0 then return false end\n  end\n",
        f.number, p)
    elseif f.type == ENUM then
      return get .. str_format(
        "    if type(v) == \"string\" then v = E[%d][v] end\n" ..
        "    if type(v) ~= \"number\" or W.num(%d, %d, %d, v) == 0 then return false end\n  end\n",
        k, f.number, f.type, p)
    end
    return get .. str_format(
      "    if type(v) ~= \"number\" or W.num(%d, %d, %d, v) == 0 then return false end\n  end\n",
      f.number, f.type, p)
  end

  -- schema, type name -> writer, or nil when the type is not flat (or no FFI)
  flat_writer = function(schema, name)
    local fields = usable and schema:flat_fields(name)
    if not fields then return nil end
    local src, enums = { "local W, MARK, E, rawget, type = ...\nreturn function(t)\n  W.begin()\n  local v\n" }, {}
    for _, f in ipairs(fields) do
      if f.enum then enums[#enums + 1] = f.enum end
      src[#src + 1] = field_src(f, #enums)
    end
    src[#src + 1] = "  return W.finish() ~= 0 and MARK\nend\n"
    return assert(load(table.concat(src), "=nano.protobuf flat writer (" .. name .. ")"))(
      W, pbc.flat_mark, enums, rawget, type)
  end
end

--- protobuf.flat_writer(schema, type) -> writer | nil: the flat writer of a type (for specs).
M.flat_writer = flat_writer

-- The flat writers of the types a core types table encodes, by route (see flat_writer).
local function flat_writers(schema, types)
  local by_route, by_type = {}, {}
  for route, name in pairs(types) do
    if by_type[name] == nil then by_type[name] = flat_writer(schema, name) or false end
    by_route[route] = by_type[name]
  end
  return by_route
end

--- protobuf.new(opts, script_dir) -> serializer; see nano.protobuf in docs/api.md.
function M.new(opts, script_dir, level)
  level = (level or 1) + 1
  if type(opts) ~= "table" then error("protobuf: expected { proto = \"game.proto\", routes = {...} }", level) end
  local set, err
  if opts.descriptor then
    set, err = read_file(resolve(script_dir, opts.descriptor))
    if not set then error("protobuf: cannot read the descriptor set: " .. tostring(err), level) end
  else
    local files = opts.proto
    if type(files) == "string" then files = { files } end
    if type(files) ~= "table" or #files == 0 then
      error("protobuf: give proto = \"file.proto\" (or a list), or descriptor = \"set.pb\"", level)
    end
    local abs, imports = {}, {}
    for i, f in ipairs(files) do abs[i] = resolve(script_dir, f) end
    for i, d in ipairs(opts.import_paths or {}) do imports[i] = resolve(script_dir, d) end
    set, err = M.compile(abs, imports)
    if not set then error("protobuf: " .. err, level) end
  end
  local schema, lerr = pbc.load(set)
  if not schema then error("protobuf: " .. lerr, level) end
  if opts.errors ~= nil and (type(opts.errors) ~= "string" or not schema:has(opts.errors)) then
    error("protobuf: errors: no message type '" .. tostring(opts.errors) .. "' in the schema", level)
  end
  if not (opts.enums == nil or opts.enums == "names" or opts.enums == "numbers") then
    error("protobuf: enums: \"names\" (default) or \"numbers\"", level)
  end
  local by_route = route_table(schema, opts.routes, level + 1)
  local errors_type = opts.errors
  local enum_numbers = opts.enums == "numbers"

  -- kind -> route -> the type's encode and decode closures (schema:codec), made once: finding a
  -- message's codec is two table reads, and the C side looks nothing up per message
  local enc, dec, codecs = {}, {}, {}
  local function codec(name)
    local c = codecs[name]
    if not c then
      c = { schema:codec(name) }
      codecs[name] = c
    end
    return c
  end
  for _, kind in ipairs(KIND_ORDER) do enc[kind], dec[kind] = {}, {} end
  for route, t in pairs(by_route) do
    for kind, name in pairs(t) do
      local c = codec(name)
      enc[kind][route], dec[kind][route] = c[1], c[2]
    end
  end
  if errors_type then
    local c = codec(errors_type)
    enc.error, dec.error = { [true] = c[1] }, { [true] = c[2] }
  end
  local json_marshal, json_unmarshal = json.marshal, json.unmarshal
  local function type_of(route, kind)
    if kind == "error" then return errors_type end
    local t = route and by_route[route]
    return t and t[kind]
  end

  local s = { name = "protobuf", schema = schema, routes = by_route }
  --- marshal(v, route, kind) -> bytes. A string is taken as already encoded.
  function s.marshal(v, route, kind)
    local fns = enc[kind]
    local encode = fns and fns[kind == "error" or route]
    if not encode then return json_marshal(v) end
    if type(v) == "string" then return v end
    return encode(v)
  end
  --- unmarshal(bytes, route, kind) -> table; raises when the bytes do not decode.
  function s.unmarshal(bytes, route, kind)
    local fns = dec[kind]
    local decode = fns and fns[kind == "error" or route]
    if not decode then return json_unmarshal(bytes) end
    local v, derr = decode(bytes, enum_numbers)
    if not v then error(derr, 0) end
    return v
  end
  -- The non-raising pair nano's dispatcher calls without a pcall (docs/api.md): false / nil
  -- where unmarshal / marshal would raise, which then say why.
  local json_try_unmarshal, json_try_marshal = json.try_unmarshal, json.try_marshal
  local try_call = core.try_call
  function s.try_unmarshal(bytes, route, kind)
    local fns = dec[kind]
    local decode = fns and fns[kind == "error" or route]
    if not decode then
      if json_try_unmarshal and bytes ~= "" then return json_try_unmarshal(bytes) end
      return false
    end
    local v = decode(bytes, enum_numbers) -- nil, err: no raise
    if v == nil then return false end
    return true, v
  end
  function s.try_marshal(v, route, kind)
    local fns = enc[kind]
    local encode = fns and fns[kind == "error" or route]
    if not encode then return json_try_marshal and json_try_marshal(v) end
    if type(v) == "string" then return v end
    return try_call(encode, v) -- the encoder raises on a value that does not fit the type
  end
  s.try_marshal_for, s.try_unmarshal_for = s.marshal, s.unmarshal
  -- The same types as the core reads them (lua_protobuf.c, core types): it decodes requests'
  -- payloads and encodes the responses handlers return itself, without a Lua string of the
  -- bytes or a call from Lua (nano's dispatcher: core_pb in lua/nano/init.lua). Requests only: a
  -- notify's type may differ from its route's request type.
  local req_types, resp_types = {}, {}
  for route, t in pairs(by_route) do req_types[route], resp_types[route] = t.request, t.response end
  local encode_types = schema:core_types(resp_types)
  -- [4]: the responses' flat writers by route, for nano's dispatcher (flat_reply in init.lua)
  encode_types[4] = flat_writers(schema, resp_types)
  s.core_pb = { decode = schema:core_types(req_types, enum_numbers), encode = encode_types }
  --- The message type for a route and direction, or nil (JSON).
  s.type_of = type_of
  return s
end

return M
