-- nano: the game developer's API. Policy lives here (which handler runs, serialization, error
-- replies, lifecycle); mechanism (sockets, codec, sessions, timers) is the C core, `nano.core`.
-- See docs/api.md for every function with an example.
local core = require "nano.core"
local respond, respond_value = core.respond, core.respond_value
local message_bytes = core.message_bytes
local metrics_core = require "nano.metrics_core"
-- hot reload's seam (scope.lua): what a load makes is recorded by the functions below themselves
local scope = require "nano.scope"

local type, pairs, ipairs, tostring, select = type, pairs, ipairs, tostring, select
local next, rawget, getmetatable = next, rawget, getmetatable
local xpcall, pcall, traceback = xpcall, pcall, debug.traceback
local str_format, str_match = string.format, string.match

local MSG_REQUEST, MSG_NOTIFY = 0, 1
local FLAG_GZIP = 0x10

local nano = { version = core.version }

-- All of nano's state is in this one table, so that a reload of game scripts (which re-runs
-- main.lua but never reloads this module) keeps it, and nano.test can reset it (nano._reset).
local function fresh_state() return {
  components = {},      -- in registration order: { name=, comp=, opts= }
  by_name = {},         -- name -> entry above
  handlers = {},        -- route -> { fn=, comp=, raw=, route= }
  dict = {},            -- route -> code
  route_of = {},        -- code -> route
  serializer = require "nano.json",
  session_serializer = setmetatable({}, { __mode = "k" }), -- session -> its component's serializer
  validator = nil,      -- handshake validator
  check_origin = nil,   -- default origin check for WebSocket listeners
  listeners = {},       -- "addr transport path" -> { { id=, addr=, bound=, opts= }, ... }
  listen_seen = {},     -- same key -> listen calls in this run of the main script
  listener_origin = {}, -- listener id -> fn
  closed_cbs = {},      -- nano.on_session_closed
  session_close_cbs = setmetatable({}, { __mode = "k" }), -- session -> { fn, ... }
  debug = false,
  started = false,
  stopping = false,
  logger = nil,
  script = nil,
  script_dir = nil,
  handshake_cache = nil,
  handshake_time = -1,
  -- handlers that wait (task.lua): messages waiting for their session's previous handler,
  -- requests being handled, and the limits of both (nano.configure)
  -- session -> { head=, tail=, [i]=msg }: the messages waiting (made when the first one waits;
  -- whether the session's handler runs, and how many wait, is in its userdata: state_of below)
  queues = setmetatable({}, { __mode = "k" }),
  -- session -> { mid, route }: its last request whose handler returned without answering it,
  -- for the type of the answer given later (session.response_mid)
  unanswered = setmetatable({}, { __mode = "k" }),
  -- session -> { [mid] = task }: requests being handled by concurrent components' tasks (a
  -- session's in-order requests are found through the task its state names)
  inflight = setmetatable({}, { __mode = "k" }),
  session_queue = 64,   -- messages queued per session behind a running handler
  shutdown_grace = 5,   -- seconds nano.shutdown gives waiting handlers
  running = 0,          -- handlers started and not finished (waits included)
  -- { timer = } during nano.shutdown's grace period, else false (not nil: a key that is there
  -- is a direct slot in the dispatcher's compiled code, an absent one a hash lookup)
  grace = false,
} end
local S = fresh_state()
nano._state = S

-- ---------------------------------------------------------------------------------------------
-- logging

local LEVELS = { debug = core.DEBUG, info = core.INFO, warn = core.WARN, error = core.ERROR }

-- A table in a log line, readably: {1, 2, name="ann", pos={x=1.5, y=2}}. Array part first, then
-- the other keys sorted; at most 3 levels deep and 512 bytes; a table seen already is {...}; a
-- table with __tostring is its tostring.
local LOG_TABLE_MAX, LOG_TABLE_DEPTH = 512, 3
local function log_string(v)
  return '"' .. v:gsub('[%c"\\]', function(c)
    if c == "\n" then return "\\n" end
    if c == "\t" then return "\\t" end
    if c == '"' or c == "\\" then return "\\" .. c end
    return str_format("\\%d", c:byte())
  end) .. '"'
end
local function describe(v, depth, seen, out)
  if #out > LOG_TABLE_MAX then return end
  local tv = type(v)
  if tv == "string" then out[#out + 1] = log_string(v:sub(1, LOG_TABLE_MAX)) return end
  local mt = tv == "table" and getmetatable(v)
  if tv ~= "table" or (type(mt) == "table" and mt.__tostring) then
    out[#out + 1] = tostring(v)
    return
  end
  if seen[v] or depth >= LOG_TABLE_DEPTH then out[#out + 1] = "{...}" return end
  seen[v] = true
  out[#out + 1] = "{"
  local n, first = #v, true
  for i = 1, n do
    if #out > LOG_TABLE_MAX then break end
    if not first then out[#out + 1] = ", " end
    first = false
    describe(rawget(v, i), depth + 1, seen, out)
  end
  local keys = {}
  for k in next, v do
    if not (type(k) == "number" and k >= 1 and k <= n and k % 1 == 0) then keys[#keys + 1] = k end
  end
  table.sort(keys, function(a, b)
    if type(a) == type(b) and (type(a) == "string" or type(a) == "number") then return a < b end
    return type(a) < type(b)
  end)
  for _, k in ipairs(keys) do
    if #out > LOG_TABLE_MAX then break end
    if not first then out[#out + 1] = ", " end
    first = false
    if type(k) == "string" and k:match("^[%a_][%w_]*$") then
      out[#out + 1] = k
    else
      out[#out + 1] = "["
      describe(k, LOG_TABLE_DEPTH, seen, out)
      out[#out + 1] = "]"
    end
    out[#out + 1] = "="
    describe(rawget(v, k), depth + 1, seen, out)
  end
  out[#out + 1] = "}"
end
local function readable(v)
  local out = {}
  describe(v, 0, {}, out)
  local s = table.concat(out)
  if #s > LOG_TABLE_MAX then s = s:sub(1, LOG_TABLE_MAX) .. "...}" end
  return s
end
nano._readable = readable

local function emit(level, name, fmt, ...)
  if level < core.log_level() then return end
  local msg
  local nargs = select("#", ...)
  if nargs == 0 then
    msg = type(fmt) == "table" and readable(fmt) or tostring(fmt)
  else
    local args = { ... }
    for i = 1, nargs do
      if type(args[i]) == "table" then args[i] = readable(args[i]) end
    end
    msg = str_format(fmt, unpack(args, 1, nargs))
  end
  if S.logger then
    local ok, err = pcall(S.logger, name, msg)
    if ok then return end
    core.log(core.ERROR, "logger failed: " .. tostring(err))
  end
  core.log(level, msg)
end

nano.log = {}
for name, level in pairs(LEVELS) do
  nano.log[name] = function(fmt, ...) return emit(level, name, fmt, ...) end
end
local log = nano.log

--- nano.set_logger(fn): fn(level_name, message) receives every log line from Lua; nil restores
--- the default (stderr, through the core).
function nano.set_logger(fn)
  if not (fn == nil or type(fn) == "function") then error("set_logger: expected a function or nil", 2) end
  S.logger = fn
end

function nano.set_log_level(name)
  local level = LEVELS[name] or (name == "off" and 4) or error("set_log_level: unknown level " .. tostring(name), 2)
  core.log_level(level)
end

function nano.enable_debug()
  S.debug = true
  core.configure({ debug = true })
  if core.log_level() > core.DEBUG then core.log_level(core.DEBUG) end
end

-- ---------------------------------------------------------------------------------------------
-- serialization

-- The serializer a session speaks: its last handler's component's (register's serializer
-- option), else the server's. Serializers get (v, route, kind), kind = "response" | "push" |
-- "error" | "kick"; serializers that need neither (JSON, msgpack) ignore them.
-- (rawget: the compiled lookup skips the weak table's metatable)
local function serializer_of(s) return s and rawget(S.session_serializer, s) or S.serializer end
nano._serializer_of = serializer_of
local function marshal(v, route, kind, s) return serializer_of(s).marshal(v, route, kind) end

-- nano.raw(bytes): a payload already serialized, sent as it is (nano's Broadcast of []byte). A
-- userdata, so that one nested inside a table fails to serialize instead of being written as
-- something else; its bytes are in a weak table.
local raw_bytes = setmetatable({}, { __mode = "k" })
local RAW_PROTO = newproxy(true)
getmetatable(RAW_PROTO).__tostring = function(r) return "nano.raw(" .. #raw_bytes[r] .. " bytes)" end

--- nano.raw(bytes) -> a payload that s:push, s:response, a handler's return value,
--- group:broadcast and group:multicast send unchanged, without the serializer.
function nano.raw(bytes)
  if type(bytes) ~= "string" then error("raw: expected the payload's bytes (a string)", 2) end
  local r = newproxy(RAW_PROTO)
  raw_bytes[r] = bytes
  return r
end

-- The payload bytes for v: a nano.raw's bytes, else the serializer's. Raises when v does not
-- serialize (callers pcall it).
local function to_payload(v, route, kind, s)
  local bytes = raw_bytes[v]
  if bytes then return bytes end
  return marshal(v, route, kind, s)
end
nano._to_payload = to_payload
function nano._raw_bytes(v) return raw_bytes[v] end

local function check_serializer(s, what, level)
  if type(s) == "string" then
    local ok, mod = pcall(require, "nano." .. s)
    if not ok then error(what .. ": unknown serializer '" .. s .. "'", level + 1) end
    if s == "protobuf" then
      error(what .. ": 'protobuf' needs a schema: nano.set_serializer(nano.protobuf{ proto = ... })", level + 1)
    end
    s = mod
  end
  if type(s) ~= "table" or type(s.marshal) ~= "function" or type(s.unmarshal) ~= "function" then
    error(what .. ": expected a name or a table with marshal and unmarshal", level + 1)
  end
  return s
end

--- nano.set_serializer("json" | "msgpack" | nano.protobuf{...} | { name=, marshal=, unmarshal= })
-- The core decodes each payload as JSON with the message (lua_dispatch.c) while the default
-- serializer is nano.json and no inbound pipeline rewrites payloads: most handlers then get a
-- value without one more C call from Lua. handle() still checks each handler's own serializer.
local inbound -- pipeline hook (nano.pipeline), set by nano.pipeline when used
-- A serializer's fast paths (try_marshal / try_unmarshal, and the core's own JSON for core_json)
-- stand for its marshal / unmarshal only while those are the functions they were made for
-- (try_marshal_for / try_unmarshal_for, when given): a script that wraps json.marshal gets its
-- wrapper called.
local function fast_encoder(ser)
  local f = ser.try_marshal_for
  return ser.try_marshal ~= nil and (f == nil or f == ser.marshal)
end
local function fast_decoder(ser)
  local f = ser.try_unmarshal_for
  return ser.try_unmarshal ~= nil and (f == nil or f == ser.unmarshal)
end
local function core_encodes(ser) return ser.core_json and ser.try_marshal_for == ser.marshal end
local function core_decodes(ser) return ser.core_json and ser.try_unmarshal_for == ser.unmarshal end
-- A protobuf serializer's message types by route as the core reads them (nano.protobuf's
-- core_pb: { decode =, encode = } core types tables, lua_protobuf.c): while its marshal /
-- unmarshal are its own, the core decodes its requests' payloads (the default serializer's) and
-- encodes the responses its handlers return, as it does JSON's.
local function core_pb_decodes(ser)
  return ser.core_pb ~= nil and ser.try_unmarshal_for == ser.unmarshal and ser.core_pb.decode
end
local function core_pb_encodes(ser)
  return ser.core_pb ~= nil and ser.try_marshal_for == ser.marshal and ser.core_pb.encode
end
-- What the core would decode ser's payloads with: true (JSON), a core types table, or false/nil.
local function decoded_for(ser) return core_decodes(ser) or core_pb_decodes(ser) end
-- what the core decodes payloads with (core.set_predecode): decoded_for the default serializer,
-- or false; a handler uses the value only if its serializer is decoded the same way
local predecoded = false

local function update_predecode()
  local ser = S.serializer
  predecoded = ser and not inbound and decoded_for(ser) or false
  core.set_predecode(predecoded)
end
nano._update_predecode = update_predecode -- reload.lua, after a failed reload put S back

function nano.set_serializer(s)
  S.serializer = check_serializer(s, "set_serializer", 2)
  S.handshake_cache = nil
  update_predecode()
end

function nano.serializer() return S.serializer end

--- nano.protobuf{ proto = "game.proto" | { files }, routes = { [route] = type | { request =,
--- response = } }, errors =, enums =, import_paths =, descriptor = } -> a serializer.
function nano.protobuf(opts) return require("nano.protobuf").new(opts, S.script_dir, 2) end

--- nano.pomelo_protobuf{ server = "serverProtos.json" | t, client = ... | t [, version =] } -> a
--- serializer for pomelo's protobuf clients (schemas sent in the handshake).
function nano.pomelo_protobuf(opts) return require("nano.pomelo_protobuf").new(opts, S.script_dir, 2) end

-- ---------------------------------------------------------------------------------------------
-- sending: the session methods that serialize (the rest of the session is C, lua_session.c)

local session = core.session_methods
nano.session_methods = session

-- Outbound pipeline hook (nano.pipeline.outbound), set only while that chain has stages:
-- fn(s, mtype, id, route, payload, is_error) -> payload | nil, err
local outbound

-- Whether the core may encode v itself and send it (a response the dispatcher returns to the
-- core, core.respond_value, core.push_value): nano.json unwrapped, no outbound pipeline or debug
-- log to see the bytes, and not bytes already (nano.raw).
local function core_sends(ser, v)
  return core_encodes(ser) and not outbound and not S.debug and v ~= nil and not rawget(raw_bytes, v)
end

-- A JSON value the core sends (a reply, a push) that is one table of string keys and number,
-- string or boolean values, or tables of those one level down, up to 8 members in each, is written
-- here by the JSON codec's flat writer (lua_json.c), called through the FFI: the JIT compiles
-- these calls into the caller's trace, where the core's encoder reads the table through a C API
-- call per key, type and value (docs/benchmarks.md, tenth pass). The text is the encoder's, byte
-- for byte. write_flat(t, empty) -> true when t was written whole; the core then takes the text
-- where it is given FLAT_MARK in the value's place (core.respond_value, core.push_value, or
-- returned by the dispatcher). Anything else (a table two levels down, an array, a key that is
-- not a string, NaN, the empty-array marker `empty`, more members) is left to the core's encoder:
-- false.
local write_flat, FLAT_MARK
do
  local FLAT_MEMBERS = 8
  local has_codec, codec = pcall(require, "nano.json_codec")
  local has_ffi, ffi = pcall(require, "ffi")
  local usable = false
  if has_codec and has_ffi and codec.flat_writer then
    pcall(ffi.cdef, [[
      struct nh_json_flat {
        void (*begin)(void);
        int (*num)(int first, const char *k, size_t kl, double x);
        int (*str)(int first, const char *k, size_t kl, const char *s, size_t sl);
        int (*boolean)(int first, const char *k, size_t kl, int b);
        int (*open)(int first, const char *k, size_t kl);
        int (*close)(int none);
        int (*finish)(int none);
      };
    ]])
    -- a binary whose writer has other functions than this declaration (another version's):
    -- everything goes to the encoder
    usable = codec.flat_writer_size == ffi.sizeof("struct nh_json_flat")
  end
  if usable then
    local W = ffi.cast("const struct nh_json_flat *", codec.flat_writer)
    FLAT_MARK = codec.flat_mark
    -- A member whose value is a number, string or boolean (first: 1 for the first, else 0);
    -- false when it is not one to write here.
    local function scalar(first, k, v, empty)
      if type(k) ~= "string" then return false end
      local tv = type(v)
      if tv == "number" then return W.num(first, k, #k, v) ~= 0 end
      if tv == "string" then return v ~= empty and W.str(first, k, #k, v, #v) ~= 0 end
      if tv == "boolean" then return W.boolean(first, k, #k, v and 1 or 0) ~= 0 end
      return false
    end
    -- walk(t, empty): t's members in next's order (raw, as the encoder's lua_next), each handed to
    -- member(first, k, v, empty), then done(none); false as soon as member gives up. Unrolled,
    -- not a loop: a loop in the dispatcher's trace aborts it ("inner loop in root trace"), which
    -- leaves the whole dispatcher to the interpreter. Generated here, so that the walk one level
    -- down is a function of its own, not the one that calls it: a function that reaches itself
    -- again can be recorded as recursion, which aborted the dispatcher's trace (bf4bf46).
    local function unrolled_walk(name, member, done)
      local src = { "local next, member, done = ...\nreturn function(t, empty)\n",
        "  local k, v = next(t)\n  if k == nil then return done(1) end\n",
        "  if not member(1, k, v, empty) then return false end\n" }
      for _ = 2, FLAT_MEMBERS do
        src[#src + 1] = "  k, v = next(t, k); if k == nil then return done(0) end\n" ..
          "  if not member(0, k, v, empty) then return false end\n"
      end
      src[#src + 1] = "  return next(t, k) == nil and done(0)\nend\n"
      return assert(load(table.concat(src), "=" .. name))(next, member, done)
    end
    local inner = unrolled_walk("nano.flat_writer (one level down)", scalar,
      function(none) return W.close(none) ~= 0 end)
    local outer = unrolled_walk("nano.flat_writer", function(first, k, v, empty)
      if type(v) == "table" then
        return type(k) == "string" and W.open(first, k, #k) ~= 0 and inner(v, empty)
      end
      return scalar(first, k, v, empty)
    end, function(none) return W.finish(none) ~= 0 end)
    write_flat = function(t, empty)
      W.begin()
      return outer(t, empty)
    end
  else
    write_flat = function() return false end
  end
end
-- v, or FLAT_MARK when the flat writer wrote it (for core.respond_value and core.push_value)
local function flat_or(v, empty)
  if type(v) == "table" and write_flat(v, empty) then return FLAT_MARK end
  return v
end

-- v's bytes for route and kind -> true, bytes | false, err: nano.raw's own, else the serializer's
-- non-raising encoder (called as it is: see fast_encoder), else its marshal under pcall, which
-- also says why v does not serialize.
local function serialize(s, ser, v, route, kind)
  local bytes = raw_bytes[v]
  if bytes then return true, bytes end
  if fast_encoder(ser) then
    bytes = ser.try_marshal(v, route, kind)
    if bytes then return true, bytes end
  end
  return pcall(to_payload, v, route, kind, s)
end

local MSG_RESPONSE, MSG_PUSH = 2, 3

function nano._set_outbound(fn) outbound = fn end

-- The payload to write after the outbound pipeline, or nil, err when a stage dropped it.
local function outgoing(s, mtype, id, route, payload, is_error)
  if not outbound then return payload end
  local ok, res, why = pcall(outbound, s, mtype, id, route, payload, is_error)
  if ok and res ~= nil then return res end
  local err = ok and why or res
  if type(err) == "table" then err = err.msg or err.message or "dropped" end
  log.debug("session %d: dropped by the outbound pipeline: %s", s:id(), tostring(err))
  return nil, "dropped by the outbound pipeline: " .. tostring(err)
end

local function send_error(s, id, code, msg)
  local ok, payload = pcall(marshal, { code = code, msg = msg }, nil, "error", s)
  if not ok then payload = str_format('{"code":%d,"msg":"internal error"}', code) end
  local out, err = outgoing(s, MSG_RESPONSE, id, nil, payload, true)
  if not out then return nil, err end
  return core.respond(s, id, out, true, code) -- the code: per-route metrics (core/metrics.h)
end

local function route_code(route)
  return S.dict[route] or route
end

-- The core's functions nano calls through the FFI (lua_host.c: core_ffi): compiled into the
-- caller's trace, where a C function ends it (docs/benchmarks.md, twentieth pass). nil with a
-- binary of another version.
local core_ffi
do
  local ok, ffi = pcall(require, "ffi")
  if ok and core.ffi then
    pcall(ffi.cdef, [[
      struct nh_core_ffi {
        int (*push_flat)(const void *udata, int32_t code, const char *route, size_t route_len);
        double (*session_id)(const void *udata);
        double (*session_uid)(const void *udata);
        int (*session_closed)(const void *udata);
        double (*now)(void);
      };
    ]])
    if core.ffi_size == ffi.sizeof("struct nh_core_ffi") then
      core_ffi = ffi.cast("const struct nh_core_ffi *", core.ffi)
    end
  end
end
local SESSION_MT = core.session_metatable

-- s:id(), s:uid(), s:is_closed(): read through the FFI from a session's userdata (a handler
-- calling one as a C function paid ~650 instructions for it: docs/benchmarks.md, twentieth
-- pass); anything else, or -1 (the watchdog's abort, which the C methods raise), to the C methods
if core_ffi then
  -- the function pointers held here: reading one from the struct makes a cdata each time
  local ffi_id, ffi_uid, ffi_closed = core_ffi.session_id, core_ffi.session_uid, core_ffi.session_closed
  local function read_through_ffi(read, c_method)
    return function(s)
      if getmetatable(s) == SESSION_MT then
        local v = read(s)
        if v >= 0 then return v end
      end
      return c_method(s)
    end
  end
  session.id = read_through_ffi(ffi_id, session.id)
  session.uid = read_through_ffi(ffi_uid, session.uid)
  local c_is_closed = session.is_closed
  function session.is_closed(s)
    if getmetatable(s) == SESSION_MT then
      local closed = ffi_closed(s)
      if closed >= 0 then return closed == 1 end
    end
    return c_is_closed(s)
  end
end

--- s:push(route, v) -> true | nil, err (v: a value to serialize, or nano.raw(bytes))
local push_value, push_error = core.push_value, core.send_error
local ffi_push_flat = core_ffi and core_ffi.push_flat
function session.push(s, route, v)
  -- as a handler's response (handle()): JSON without a pipeline or debug log is encoded and sent
  -- by one C call, and the serializer's non-raising encoder comes before a pcall (each C call
  -- ends a JIT trace, and one inside a pcall'd function is not compiled after it)
  local ser = serializer_of(s)
  if core_sends(ser, v) then
    local empty = ser.empty_array
    local payload = flat_or(v, empty)
    if payload == FLAT_MARK then
      -- to a session of the core's by a route's name: pushed through the FFI, with no C call
      -- (lua_host.c: ffi_push_flat). Declined (the watchdog's abort, which push_value raises):
      -- push_value takes the text.
      if ffi_push_flat and type(route) == "string" and getmetatable(s) == SESSION_MT then
        local code = S.dict[route]
        local r
        if code then r = ffi_push_flat(s, code, nil, 0) else r = ffi_push_flat(s, -1, route, #route) end
        if r == 0 then return true end
        if r < 0 then return push_error(r) end
      end
    end
    local ok, err = push_value(s, route_code(route), payload, empty)
    if ok ~= false then return ok, err end
  end
  local ok, payload = serialize(s, ser, v, route, "push")
  if not ok then return nil, "cannot serialize: " .. tostring(payload) end
  if S.debug then log.debug("session %d -> push %s %s", s:id(), route, payload) end
  local out, err = outgoing(s, MSG_PUSH, nil, route, payload)
  if not out then return nil, err end
  return core.push(s, route_code(route), out)
end

local task = require "nano.task"
local current_task = task.current

-- A session's dispatch state, in its userdata (core/lua_session.c, lsession_t): the number of the
-- task running its in-order messages (0: none) and how many messages wait behind it. Read and
-- written through the FFI: a message's dispatch touches the session's memory only there, where a
-- table per session (found in a table keyed by sessions) cost four or five cache lines that the
-- ~200 ms between a session's messages had taken out of the cache (docs/benchmarks.md, sixteenth
-- pass). s must be a session's userdata (the core's, or checked by a session method first).
local ffi = require "ffi"
if not pcall(ffi.typeof, "nh_lsession_t") then
  ffi.cdef [[
    typedef struct nh_lsession { uintptr_t ref; double uid; int32_t busy, waiting; } nh_lsession_t;
  ]]
end
local lsession_ptr = ffi.typeof("nh_lsession_t *")
local state_of = ffi.cast -- state_of(lsession_ptr, s): no function of ours, where a JIT trace
-- could start and then run into its caller's loop (LuaJIT aborts such a trace)

-- Tasks by number, for a session's state to name its running task (weak: a task that ended and
-- was dropped leaves).
local task_by_n, tasks_numbered = setmetatable({}, { __mode = "v" }), 0
-- the next number no task has (a loop: after 2^31 tasks the numbers wrap around)
local function free_number()
  repeat tasks_numbered = tasks_numbered % 0x7fffffff + 1 until task_by_n[tasks_numbered] == nil
  return tasks_numbered
end
-- No loop here: this is on the dispatcher's path, and a JIT trace that starts in a function (its
-- hot counter is shared with other code's, so that can happen on any call) aborts at a loop
-- ("inner loop in root trace": seen in the JIT spec).
local function number_of(t)
  local n = t.n
  if n then return n end
  n = tasks_numbered % 0x7fffffff + 1
  if task_by_n[n] == nil then tasks_numbered = n else n = free_number() end
  t.n, task_by_n[n] = n, t
  return n
end

-- The message a task is handling is on the task (t.msg_s, t.msg_type, t.msg_id), so that a
-- notify handler calling s:response() gets nano's ErrSessionOnNotify. The task handling a request
-- is found from the session (handling_task) so that an answer from any task (s:response_mid)
-- tells the handler (t.answered) not to answer again when it returns: the session's running task
-- (its number in the session's state) for in-order messages, S.inflight (session ->
-- { [mid] = task }) for concurrent components. Nothing is allocated per message.

-- The task whose handler is handling request mid of session s, or nil.
local function handling_task(s, mid)
  local n = state_of(lsession_ptr, s).busy
  local t = n ~= 0 and task_by_n[n]
  if t and t.msg_s == s and t.msg_id == mid and t.msg_type == MSG_REQUEST then return t end
  local inflight = S.inflight[s]
  return inflight and inflight[mid] or nil
end

--- s:response_mid(mid, v) -> true | nil, err
function session.response_mid(s, mid, v)
  s:id() -- a session (what state_of reads), or its error
  local handling = handling_task(s, mid)
  -- a response's type follows its request's route: the handling task's, else that of the
  -- session's last request left unanswered (serializers that pick no type by route ignore it)
  local late = not handling and S.unanswered[s]
  local route = handling and handling.watch_route or (late and late[1] == mid and late[2] or nil)
  local ok, payload = pcall(to_payload, v, route, "response", s)
  if not ok then return nil, "cannot serialize: " .. tostring(payload) end
  if handling then handling.answered = true end
  if S.debug then log.debug("session %d -> response id=%d %s", s:id(), mid, payload) end
  local out, err = outgoing(s, MSG_RESPONSE, mid, nil, payload)
  if not out then return nil, err end
  return core.respond(s, mid, out, false)
end

--- s:response(v): answers the last request of this session.
function session.response(s, v)
  if s:is_closed() then return nil, "session closed" end
  local t = current_task()
  if t and t.msg_s == s and t.msg_type == MSG_NOTIFY then
    return nil, "response called while handling a notify"
  end
  local mid = s:last_mid()
  if mid == 0 then return nil, "no request to respond to" end
  return session.response_mid(s, mid, v)
end

--- s:kick([reason]): sends the kick packet, then closes. The body is the serialized reason
--- ({} by default; a string becomes { reason = "..." }): nano's and pomelo's browser clients
--- JSON-parse it, and an empty body would throw in their onKick.
local c_kick = session.kick
function session.kick(s, reason)
  if type(reason) ~= "table" then reason = { reason = reason } end
  local ok, body = pcall(marshal, reason, nil, "kick", s)
  if not ok then body = "{}" end
  return c_kick(s, body)
end

--- s:on_close(fn): fn(s) once, after the connection is gone.
function session.on_close(s, fn)
  if type(fn) ~= "function" then error("on_close: expected a function", 2) end
  local list = S.session_close_cbs[s]
  if not list then
    list = {}
    S.session_close_cbs[s] = list
  end
  list[#list + 1] = fn
end

-- ---------------------------------------------------------------------------------------------
-- components and handlers

local LIFECYCLE = { init = true, after_init = true, before_shutdown = true, shutdown = true,
                    on_reload = true }
-- Other spellings of the hooks (nano's Go names, camelCase): never routes, a warning at register.
local HOOK_SPELLINGS = { Init = "init", AfterInit = "after_init", afterInit = "after_init",
  BeforeShutdown = "before_shutdown", beforeShutdown = "before_shutdown", Shutdown = "shutdown",
  OnReload = "on_reload", onReload = "on_reload" }

local function run_hook(entry, hook, fn, ...)
  local ok, err = xpcall(fn, traceback, entry.comp, ...)
  if not ok then log.error("%s.%s failed: %s", entry.name, hook, tostring(err)) end
  return ok, err
end

-- Runs a lifecycle hook in a task (it may wait). Returns ok, err when it finished without
-- waiting; true when it waits (its error, if any, is logged when it comes).
local function call_hook(entry, hook, ...)
  local fn = entry.comp[hook]
  if type(fn) ~= "function" then return true end
  local t = task.spawn(run_hook, entry, hook, fn, ...)
  if t.status == "done" then return t.results[1], t.results[2] end
  return true
end
nano._call_hook = call_hook

-- Rebuilds the route table from every registered component's current functions.
local function build_handlers()
  local handlers = {}
  for _, e in ipairs(S.components) do
    local raw, name_func = e.opts.raw, e.opts.name_func
    for k, fn in pairs(e.comp) do
      if type(k) == "string" and type(fn) == "function" and not LIFECYCLE[k]
          and not HOOK_SPELLINGS[k] and k:sub(1, 1) ~= "_" then
        local hname = name_func and name_func(k) or k
        local route = e.name .. "." .. hname
        handlers[route] = {
          fn = fn, comp = e.comp, route = route, concurrent = e.opts.concurrent == true,
          serializer = e.opts.serializer,
          raw = raw == true or (type(raw) == "table" and raw[k] == true),
        }
      end
    end
  end
  S.handlers = handlers
  for route in pairs(handlers) do metrics_core.route(route) end -- per-route series (metrics.h)
  for route, code in pairs(S.dict) do metrics_core.route_code(code, route) end
end
nano._build_handlers = build_handlers

--- nano.register(component, { name=, name_func=, raw=, concurrent=, serializer= })
--- Every function of the table becomes a handler at route "<name>.<function>", except lifecycle
--- hooks (init, after_init, before_shutdown, shutdown, on_reload), their other spellings (Go's
--- Init, AfterInit, BeforeShutdown, Shutdown; camelCase), which are not called either but warned
--- about, and names starting with "_".
function nano.register(comp, opts)
  if type(comp) ~= "table" then
    error("register: component must be a table, got " .. type(comp)
      .. (comp == nil and " (does the module end with `return` of its table?)" or ""), 2)
  end
  opts = opts or {}
  local name = opts.name or comp.__name
  if type(name) ~= "string" or name == "" or name:find("%.") then
    error("register: give the component a name without dots: nano.register(t, { name = \"Room\" })", 2)
  end
  if opts.name_func ~= nil and type(opts.name_func) ~= "function" then
    error("register: name_func must be a function", 2)
  end
  for k, hook in pairs(HOOK_SPELLINGS) do
    if type(rawget(comp, k)) == "function" then
      log.warn("register %s: %s is not called and not a route: the lifecycle hook is spelled %s "
        .. "(rename %s.%s to %s.%s)", name, k, hook, name, k, name, hook)
    end
  end
  if opts.serializer ~= nil then
    local copy = {}
    for k, v in pairs(opts) do copy[k] = v end
    copy.serializer = check_serializer(opts.serializer, "register", 2)
    opts = copy
  end
  local existing = S.by_name[name]
  -- during a hot reload (reload.lua) registrations are staged, then swapped in all at once
  local stage = scope.stager()
  if stage then return stage(existing, comp, opts, name) end
  if existing then
    if existing.comp ~= comp then error("register: a component named '" .. name .. "' exists", 2) end
    existing.opts = opts
    build_handlers()
    return existing.comp
  end
  local entry = { name = name, comp = comp, opts = opts }
  S.components[#S.components + 1] = entry
  S.by_name[name] = entry
  build_handlers()
  if S.started then -- registered while running: its lifecycle starts now
    call_hook(entry, "init")
    call_hook(entry, "after_init")
  end
  return comp
end

function nano.routes()
  local list = {}
  for route in pairs(S.handlers) do list[#list + 1] = route end
  table.sort(list)
  return list
end

-- ---------------------------------------------------------------------------------------------
-- dictionary, heartbeat, limits

--- nano.set_dictionary({ ["Room.join"] = 1, onMessage = 2, ... }): route compression codes
function nano.set_dictionary(map)
  if type(map) ~= "table" then error("set_dictionary: expected a table of route = code", 2) end
  local dict, route_of = {}, {}
  for route, code in pairs(map) do
    if type(route) ~= "string" or #route > 255 then
      error("set_dictionary: routes must be strings of at most 255 bytes", 2)
    end
    if type(code) ~= "number" or code < 1 or code > 65535 or code % 1 ~= 0 then
      error("set_dictionary: code for '" .. route .. "' must be an integer in 1..65535", 2)
    end
    if route_of[code] then
      error(str_format("set_dictionary: code %d used for both '%s' and '%s'", code, route_of[code], route), 2)
    end
    dict[route], route_of[code] = code, route
  end
  S.dict, S.route_of = dict, route_of
  for route, code in pairs(dict) do metrics_core.route_code(code, route) end
  S.handshake_cache = nil
end

function nano.dictionary()
  local copy = {}
  for k, v in pairs(S.dict) do copy[k] = v end
  return copy
end

--- nano.set_heartbeat_interval(secs): default 30; a session silent for more than 2.5x this is closed.
function nano.set_heartbeat_interval(secs)
  if type(secs) ~= "number" or secs < 0.01 then
    error("set_heartbeat_interval: expected seconds (>= 0.01)", 2)
  end
  core.configure({ heartbeat = secs })
  S.handshake_cache = nil
end

--- nano.configure{ max_packet=, send_limit=, max_conns=, handshake_timeout=, max_ws_frame= }
--- Two limits are nano's own (handlers that wait, docs/async.md): session_queue (messages
--- queued per session behind a running handler; default 64) and shutdown_grace (seconds
--- nano.shutdown gives waiting handlers; default 5).
local LUA_LIMITS = { session_queue = { 0, 1e6, true }, shutdown_grace = { 0, 1e6, false } }

function nano.configure(t)
  if type(t) ~= "table" then error("configure: expected a table", 2) end
  local core_t, mine = {}, {}
  for k, v in pairs(t) do
    local lim = LUA_LIMITS[k]
    if lim then
      if type(v) ~= "number" or not (v >= lim[1] and v <= lim[2]) or (lim[3] and v % 1 ~= 0) then
        error(str_format("configure: %s: expected a%s number from %g to %g", k,
                         lim[3] and "n integer" or "", lim[1], lim[2]), 2)
      end
      mine[k] = v
    else
      core_t[k] = v
    end
  end
  local ok, err = pcall(core.configure, core_t)
  if not ok then error(err, 2) end -- the caller's line, not this one
  for k, v in pairs(mine) do S[k] = v end
  S.handshake_cache = nil
end

function nano.config()
  local c = core.config()
  c.session_queue, c.shutdown_grace = S.session_queue, S.shutdown_grace
  return c
end

function nano.set_handshake_validator(fn)
  if not (fn == nil or type(fn) == "function") then error("set_handshake_validator: expected a function", 2) end
  S.validator = fn
end

function nano.set_check_origin(fn)
  if not (fn == nil or type(fn) == "function") then error("set_check_origin: expected a function", 2) end
  S.check_origin = fn
end

-- ---------------------------------------------------------------------------------------------
-- listening

local function resolve_dir(dir)
  if dir:sub(1, 1) == "/" or not S.script_dir then return dir end
  return S.script_dir .. "/" .. dir
end

--- nano.listen(addr, { websocket=, path=, check_origin=, static=, tls= })
--- tls: { cert=, key= [, ca=, ciphers=, min_version=] } (PEM files, relative to the main script)
--- serves TCP over TLS, or wss:// with websocket = true.
--- static: { ["/web/"] = "web" } serves files of the folder (relative to the main script) over
--- HTTP on the same port. When the main script runs again (hot reload), the same listen call
--- finds the listener it made the first time and keeps it.
function nano.listen(addr, opts)
  if type(addr) ~= "string" then error("listen: expected an address like \"127.0.0.1:3250\"", 2) end
  opts = opts or {}
  -- the n-th call with the same address, transport and path in a run of the script is the same
  -- listener (port 0 is a new port each time it is bound, so the address alone can't say)
  local path = opts.path or "/"
  if type(path) == "table" then path = table.concat(path, " ") end
  local key = addr .. (opts.websocket and (" ws " .. path) or " tcp")
  local seen = (S.listen_seen[key] or 0) + 1
  S.listen_seen[key] = seen
  local same = S.listeners[key]
  local existing = same and same[seen]
  local tls = opts.tls
  if tls ~= nil then
    if type(tls) ~= "table" or type(tls.cert) ~= "string" or type(tls.key) ~= "string" then
      error("listen: tls: expected { cert = \"cert.pem\", key = \"key.pem\" } (PEM files)", 2)
    end
    local files = {}
    for k, v in pairs(tls) do files[k] = v end
    for _, k in ipairs({ "cert", "key", "ca" }) do
      if files[k] then files[k] = resolve_dir(files[k]) end
    end
    tls = files
  end
  if existing then
    if (tls ~= nil) ~= (existing.opts.tls ~= nil) then
      error("listen " .. addr .. ": turning TLS on or off needs a restart", 2)
    end
    if tls then -- certificates are read again: a reload rotates them for new connections
      local ok, err = core.listener_tls(existing.id, tls)
      if not ok then error("listen " .. addr .. ": tls: " .. err, 2) end
    end
    if opts.check_origin then S.listener_origin[existing.id] = opts.check_origin end
    return existing.bound
  end
  local statics = {}
  if opts.static then
    for prefix, dir in pairs(opts.static) do
      if type(prefix) == "number" then prefix, dir = dir.prefix, dir.dir end
      if type(prefix) ~= "string" or type(dir) ~= "string" then
        error("listen: static: expected { [\"/web/\"] = \"folder\" }", 2)
      end
      if prefix:sub(1, 1) ~= "/" then prefix = "/" .. prefix end
      if prefix:sub(-1) ~= "/" then prefix = prefix .. "/" end
      statics[#statics + 1] = { prefix = prefix, dir = resolve_dir(dir) }
    end
  end
  local id, bound = core.listen(addr, {
    websocket = opts.websocket and true or false,
    path = opts.path,
    check_origin = opts.websocket and true or false,
    static = statics,
    tls = tls,
  })
  if not id then
    S.expected_failure = bound -- a port in use is no bug: the main script's error says it alone
    error(bound, 2)
  end
  same = same or {}
  same[seen] = { id = id, addr = addr, bound = bound, opts = opts }
  S.listeners[key] = same
  if opts.check_origin then S.listener_origin[id] = opts.check_origin end
  return bound
end

function nano.listeners()
  local list = {}
  for _, same in pairs(S.listeners) do
    for _, l in ipairs(same) do
      list[#list + 1] = { id = l.id, addr = l.addr, bound = l.bound, websocket = l.opts.websocket and true or false,
                          tls = l.opts.tls ~= nil }
    end
  end
  return list
end

-- ---------------------------------------------------------------------------------------------
-- the core's hooks

-- extra: fields the serializer adds to sys for this client (pomelo's protos); not cached
local function build_handshake(extra)
  local now = os.time()
  if not extra and S.handshake_cache and S.handshake_time == now then return S.handshake_cache end
  local sys = {
    heartbeat = core.config().heartbeat,
    servertime = now,
    serializer = S.serializer.name,
  }
  if next(S.dict) then sys.dict = S.dict end
  for k, v in pairs(extra or {}) do sys[k] = v end
  local ok, json = pcall(require("nano.json").marshal, { code = 200, sys = sys, user = {} })
  if not ok then json = '{"code":500}' end
  if extra then return json end
  S.handshake_cache, S.handshake_time = json, now
  return json
end

local json_unmarshal = require("nano.json").unmarshal

-- The last handshake body accepted as JSON, kept alive: clients of one game send the same body,
-- and while it lives the core's copy of the next one is that string (Lua interns strings), so a
-- repeated body allocates nothing and, with no validator and no serializer hook to read it, is
-- not decoded again (19,000 decoded handshakes' tables were ~67 B per idle connection of garbage).
local last_hs_body

local function on_handshake(s, body)
  if body == last_hs_body and not S.validator and not S.serializer.handshake then
    return build_handshake(nil), true
  end
  local ok, hs = pcall(json_unmarshal, body)
  if not ok or (hs ~= nil and type(hs) ~= "table") then
    log.warn("session %d: handshake is not JSON; refusing", s:id())
    return '{"code":500}', false
  end
  last_hs_body = body
  if S.validator then
    local vok, verr, reason = xpcall(S.validator, traceback, s, hs or {})
    if not vok or verr == false or (verr == nil and reason) then
      log.info("session %d: handshake refused by the validator: %s", s:id(), tostring(reason or verr))
      return '{"code":500}', false
    end
  end
  local extra
  if S.serializer.handshake then
    local hok, res = pcall(S.serializer.handshake, hs or {})
    if hok then extra = res else log.error("serializer handshake: %s", tostring(res)) end
  end
  return build_handshake(extra), true
end

-- Why a handler failed, as the client sees it: a table error({code=, msg=}) as given; anything
-- else "internal error" (the text only in debug mode; it is always in the log). A code that is
-- not an integer in the 32-bit range (NaN, 1.5, 2^40, "x") becomes 500, a message that is not a
-- string (a table would show a heap address) becomes "error".
local function error_reply(err)
  if type(err) == "table" then
    local code, msg = tonumber(err.code), err.msg
    if msg == nil then msg = err.message end
    if not code or code ~= code or code % 1 ~= 0 or code < -2147483648 or code > 2147483647 then
      code = 500
    end
    return code, type(msg) == "string" and msg or "error"
  end
  return 500, S.debug and tostring(err) or "internal error"
end

nano._error_reply = error_reply

local function handler_traceback(e)
  if type(e) == "table" then return e end
  return traceback(tostring(e), 2)
end

-- The handler of a route (a number is a dictionary code), and the route's name; nil when none.
local function resolve(route)
  if type(route) == "number" then
    route = S.route_of[route]
    if not route then return nil end
  end
  local h = S.handlers[route]
  if h then return h, route end
  -- nano's cluster form: server.Component.handler
  local short = str_match(route, "([^.]+%.[^.]+)$")
  return short and S.handlers[short], route
end

-- Handles one message, inside a task: pipeline, decoding, the handler (which may wait), the
-- answer. h is the handler resolved on arrival when the message runs at once; a queued message's
-- (h nil) is looked up now, so that a message queued across a hot reload gets the new code.
-- A handler's error, as logged and answered: a table error({ code =, msg = }) is the handler's
-- answer (logged at info), anything else a failure (logged with its traceback, answered 500).
local function handler_error(s, mtype, id, route, err, tb, answered)
  if type(err) == "table" then
    log.info("session %d %s: handler refused: %s %s", s:id(), route, tostring(err.code), tostring(err.msg))
  else
    log.error("session %d %s: handler error: %s", s:id(), route, tostring(tb or err))
  end
  if mtype == MSG_REQUEST and not answered then send_error(s, id, error_reply(err)) end
end

-- A response after the core's try at sending it as JSON (sent: true; false: it did not encode or
-- was not tried; nil: not sent, why): the serializer's way (serialize), the pipeline and respond
-- when it did not encode, the log and a 500 when it was over the packet limit.
local function respond_rest(s, id, route, ser, res, sent, why, size)
  if sent == false then
    local mok, out = serialize(s, ser, res, route, "response")
    if not mok then
      log.error("session %d %s: response does not serialize: %s", s:id(), route, tostring(out))
      send_error(s, id, 500, S.debug and tostring(out) or "internal error")
      return
    end
    if S.debug then log.debug("session %d -> response id=%d %s", s:id(), id, out) end
    out = outgoing(s, MSG_RESPONSE, id, route, out)
    if out then
      size = #out
      local _
      _, why = respond(s, id, out, false)
    end
  end
  if why == "message too big" then
    log.error("session %d %s: response of %d bytes is over the packet limit; answered 500",
              s:id(), route, size)
    send_error(s, id, 500, "response too large")
  end
end

-- res sent as the core's JSON by one call (core.respond_value), and respond_rest when it did not
-- encode or was too big.
local function respond_json(s, id, route, ser, res, empty)
  local sent, why, size = respond_value(s, id, flat_or(res, empty), empty)
  if sent ~= false and why ~= "message too big" then return end
  return respond_rest(s, id, route, ser, res, sent, why, size)
end

-- The core's dispatch hook could not send a response the dispatcher returned (core.set_hook):
-- size nil: it does not encode as the core's JSON; else it is over the packet limit.
local function unsent(s, id, res, route, size)
  if size then return respond_rest(s, id, route, nil, res, nil, "message too big", size) end
  return respond_rest(s, id, route, serializer_of(s), res, false)
end

-- What follows a handler's call (handle, below), answering it. A function of its own, with a
-- fixed argument list: a handler that waited resumes in LuaJIT's interpreter, which goes on
-- interpreting until it reaches the start of a compiled trace, and a function's entry is one
-- where the code after a call is not (inline in handle, this ran interpreted after every wait:
-- docs/benchmarks.md). A handler that did not wait has it inlined into its trace as before.
local function handled(t, s, mtype, id, route, ok, res, inflight, defer)
  -- false, not nil: a field stored nil would make the next message's store check the task's
  -- metatable for __newindex
  t.msg_s, t.watch_route = false, false
  if inflight then inflight[id] = nil end
  local answered = t.answered
  if not ok then
    handler_error(s, mtype, id, route, res, nil, answered)
    return
  end
  if mtype == MSG_REQUEST and res == nil and not answered then
    -- answered later (s:response_mid), with the type of this route
    local late = S.unanswered[s]
    if late then late[1], late[2] = id, route else S.unanswered[s] = { id, route } end
    return
  end
  if mtype == MSG_REQUEST and res ~= nil and not answered then
    -- Each C function called here ends a JIT trace (docs/benchmarks.md): JSON without a pipeline
    -- or debug log is encoded and sent by the core, either after the dispatcher returns it (defer:
    -- the core's hook said it takes it, and the handler did not wait, so this thread returns to
    -- the core that resumed it; core.set_hook) or by one call (the same bytes as marshal's). Its
    -- results are taken as they are, not through select(): that too ended the trace. The
    -- session's serializer is read again: the handler may have waited meanwhile.
    local ser = serializer_of(s)
    if core_sends(ser, res) then
      if defer and not t.waited then return res, ser.empty_array, route end
      return respond_json(s, id, route, ser, res, ser.empty_array)
    end
    -- protobuf: the core encodes a table with the route's response type (nothing to send
    -- otherwise: unsent answers then, through the serializer)
    if defer and not t.waited and type(res) == "table" and not outbound and not S.debug then
      local types = core_pb_encodes(ser)
      if types then return res, types, route end
    end
    return respond_rest(s, id, route, ser, res, false)
  end
end

-- concurrent: the task is one of a concurrent component's (handle_one), found through S.inflight
-- while it handles a request; protect: call the handler under xpcall (not on a core thread).
-- payload is false when the core decoded it (pre) and kept the bytes: they are read (a string
-- made) only where needed, before the handler runs, while the core's thread t.co runs the message.
local function handle(t, h, s, mtype, id, route, payload, flags, pre, protect, concurrent, defer)
  local name
  if h then
    name = type(route) == "string" and route or h.route
  else
    h, name = resolve(route)
  end
  if not h then
    if payload == false then payload = message_bytes(t.co) end
    if name and nano._forward and nano._forward(s, mtype, id, name, payload) then return end
    if name then
      log.warn("session %d: handler not found: %s", s:id(), name)
      if mtype == MSG_REQUEST then send_error(s, id, 404, "handler not found: " .. name) end
    else
      log.warn("session %d: unknown route code %s", s:id(), tostring(route))
      if mtype == MSG_REQUEST then send_error(s, id, 404, "unknown route code " .. tostring(route)) end
    end
    return
  end
  route = name
  if inbound then
    if payload == false then payload = message_bytes(t.co) end
    local ok, res, why = pcall(inbound, s, mtype, id, route, payload)
    if not ok or res == nil then
      local err = ok and why or res
      log.warn("session %d %s: dropped by the inbound pipeline: %s", s:id(), route,
               type(err) == "table" and tostring(err.code) .. " " .. tostring(err.msg) or tostring(err))
      if mtype == MSG_REQUEST then send_error(s, id, error_reply(err)) end
      return
    end
    payload = res
    pre = nil -- the core decoded the bytes the pipeline was given, not these
  end
  -- pushes and later responses to this session speak the serializer of the handler it called
  -- (stored only when it changes: storing nil for a session not in the table made a new key of
  -- it each message)
  local hser = h.serializer
  if rawget(S.session_serializer, s) ~= hser then S.session_serializer[s] = hser end
  -- pre: the payload's value as the default serializer reads it (nano.json, or a protobuf one:
  -- the request with its route's type), decoded by the core with the message
  -- (core.set_predecode, `predecoded`); only this handler's serializer decides whether it is the
  -- one to use.
  local ser = serializer_of(s)
  local use_pre = pre ~= nil and not h.raw and predecoded ~= false and predecoded == decoded_for(ser)
  if payload == false and not use_pre then payload = message_bytes(t.co) end
  local msg = payload
  if not h.raw then
    if flags and flags % 32 >= FLAG_GZIP then
      if mtype == MSG_REQUEST then send_error(s, id, 400, "gzip payloads are not supported") end
      return
    end
    -- The serializer's non-raising decoder is called as it is (the JIT compiles the return from
    -- it, not from a pcall that called C: docs/benchmarks.md); it declines what it cannot read,
    -- and unmarshal, under pcall, decodes that or says why not.
    local try, ok, decoded = fast_decoder(ser) and ser.try_unmarshal, false, nil
    if use_pre then
      ok, decoded = true, pre
    elseif try then
      ok, decoded = try(payload, route, mtype == MSG_REQUEST and "request" or "notify")
    end
    if not ok then
      ok, decoded = pcall(ser.unmarshal, payload, route, mtype == MSG_REQUEST and "request" or "notify")
    end
    if not ok then
      log.warn("session %d %s: payload does not decode: %s", s:id(), route, tostring(decoded))
      if mtype == MSG_REQUEST then send_error(s, id, 400, "payload does not decode") end
      return
    end
    msg = decoded
  end
  t.msg_s, t.msg_type, t.msg_id, t.answered, t.watch_route = s, mtype, id, false, route
  local inflight
  if concurrent and mtype == MSG_REQUEST then
    inflight = S.inflight[s]
    if not inflight then
      inflight = {}
      S.inflight[s] = inflight
    end
    inflight[id] = t
  end
  -- On the core's threads the handler is called unprotected: its error ends the thread, and the
  -- core (or task.lua, after a wait) hands it to thread_failed() below, which answers it as this
  -- would have. A pcall here would cost every handler that calls a C function (s:push, ...) its
  -- compiled code after that call: LuaJIT cannot return from there into a pcall, so that part
  -- ran in the interpreter (~900 instructions a message, docs/benchmarks.md).
  local ok, res
  if protect then
    ok, res = xpcall(h.fn, handler_traceback, h.comp, s, msg)
  else
    ok, res = true, h.fn(h.comp, s, msg)
  end
  return handled(t, s, mtype, id, route, ok, res, inflight, defer)
end

local function stop_core()
  core.stop()
  if nano._on_stop then nano._on_stop() end -- nano.client closes a script's own clients
end

-- The end of the grace period: handlers still waiting are cut short (their sessions close;
-- the tasks are never resumed once the loop stops), and the core closes everything.
local function stop_now()
  local grace = S.grace
  if not grace then return end
  S.grace = false
  if grace.timer then grace.timer:stop() end
  if S.running > 0 then
    log.warn("shutdown: %d waiting handler%s cut short after the grace period", S.running,
             S.running == 1 and "" or "s")
  end
  -- after the grace: handlers finishing may still make RPCs; then goodbye, calls in flight fail
  if nano._cluster_leave then nano._cluster_leave() end
  -- Inside a handler, the handler's response is not sent yet: stop on the next loop turn, so
  -- that it is queued first (and gets the last flush every closing connection gets).
  if current_task() then core.timer(0, 0, stop_core) else stop_core() end
end
nano._stop_now = stop_now

-- Called when a handler finishes: the last one ends the grace period early.
local function handler_done()
  S.running = S.running - 1
  if S.running == 0 and S.grace then stop_now() end
end


-- A reply the dispatcher returns to the core as JSON (empty: the serializer's empty-array marker),
-- written by the flat writer when it can be (write_flat, above): the core then gets
-- (FLAT_MARK, value, route) and sends the text (nh_lua_send_returned); as protobuf (empty: the
-- serializer's core types table), written by the route's type's flat writer when it has one: the
-- core then gets (protobuf_codec.flat_mark, value, route). Any other value goes back as (value,
-- empty, route) for the core to encode.
local function flat_reply(res, empty, rroute)
  if type(res) == "table" then
    local te = type(empty)
    if te == "string" then
      if write_flat(res, empty) then return FLAT_MARK, res, rroute end
    elseif te == "table" then
      -- protobuf: empty is the core types table, the route's flat writer in its [4]
      -- (lua/nano/protobuf.lua): the bytes written through the FFI, its mark in the value's place
      local writers = empty[4]
      local write = writers and writers[rroute]
      local mark = write and write(res)
      if mark then return mark, res, rroute end
    end
  end
  return res, empty, rroute
end

-- handle_one's and handle_in_order's ends are functions of their own for the reason handled's is.
-- Their results go back to the core that resumed the thread (flat_reply: the reply's text).
local function one_done(t, res, empty, rroute)
  t.work = false
  handler_done()
  return flat_reply(res, empty, rroute)
end

-- A task that handles one message of a concurrent component. t.work says, should the thread
-- end with an error, what it was doing (thread_failed): true here; "order" with t.work_s = the
-- session below, for a session's in-order messages.
local function handle_one(t, h, s, mtype, id, route, payload, flags, pre, defer)
  S.running = S.running + 1
  t.work = true
  return one_done(t, handle(t, h, s, mtype, id, route, payload, flags, pre, false, true, defer))
end

-- The first message waiting for session s (st: its state), taken off its queue; nil when none.
local function next_waiting(s, st)
  local q = S.queues[s]
  if not q or q.head >= q.tail then
    st.waiting = 0
    return nil
  end
  q.head = q.head + 1
  local m = q[q.head]
  q[q.head] = nil
  st.waiting = q.tail - q.head
  if q.head == q.tail then q.head, q.tail = 0, 0 end
  return m
end

-- The messages queued behind a failed one, in a task of their own (each handler protected here:
-- this task is not one of the core's threads).
local function drain_queue(s)
  local t = current_task()
  local st = state_of(lsession_ptr, s)
  S.running = S.running + 1
  st.busy = t.n or number_of(t)
  while st.waiting > 0 do
    local m = next_waiting(s, st)
    if not m then break end
    handle(t, nil, s, m[1], m[2], m[3], m[4], m[5], nil, true, false, nil)
  end
  st.busy = 0
  handler_done()
end

-- handle_in_order's end, after its message's handler (a function of its own: see one_done)
local function in_order_done(t, s, id, res, empty, rroute)
  local st = state_of(lsession_ptr, s)
  if st.waiting > 0 then
    if res ~= nil then
      if type(empty) == "table" then respond_rest(s, id, rroute, serializer_of(s), res, false) -- protobuf
      else respond_json(s, id, rroute, serializer_of(s), res, empty) end
      res = nil
    end
    while st.waiting > 0 do
      local m = next_waiting(s, st)
      if not m then break end
      handle(t, nil, s, m[1], m[2], m[3], m[4], m[5], nil, false, false, nil)
    end
  end
  t.work, t.work_s = false, false
  st.busy = 0
  handler_done()
  return flat_reply(res, empty, rroute)
end

-- A session's worker: handles its message, then the ones queued behind it meanwhile, in order.
-- One task per busy session, named in the session's state (set by dispatch).
-- defer: the response may be returned to the core (handle), which sends it after this returns;
-- messages queued meanwhile (a handler that ran the loop) are answered after it, so it is sent
-- first then.
local function handle_in_order(t, h, s, mtype, id, route, payload, flags, pre, defer)
  S.running = S.running + 1
  t.work, t.work_s = "order", s
  return in_order_done(t, s, id,
                       handle(t, h, s, mtype, id, route, payload, flags, pre, false, false, defer))
end

-- One of the core's dispatcher threads ended with an error err (tb: its traceback), t its task.
-- Inside a handler it is the handler's error: answered as handle() answers one, and true is
-- returned (the core logs nothing more). Anywhere else the dispatcher failed: false, and the
-- core logs it (and answers 500 a request left unanswered). Either way what the thread was doing
-- is finished for it: the session's queued messages go on in a new task, the handler count
-- drops.
local function thread_failed(t, err, tb)
  if not t then return false end
  local s = t.msg_s
  if s then
    local mtype, id, route = t.msg_type, t.msg_id, t.watch_route
    t.msg_s, t.watch_route = false, false
    local inflight = mtype == MSG_REQUEST and S.inflight[s]
    if inflight then inflight[id] = nil end
    handler_error(s, mtype, id, route, err, tb, t.answered)
  end
  local work, ws = t.work, t.work_s
  if work then
    t.work, t.work_s = false, false
    if work ~= true then
      local st = state_of(lsession_ptr, ws)
      if st.waiting > 0 then task.spawn(drain_queue, ws) else st.busy = 0 end
    end
    handler_done()
  end
  return s and true or false
end
task._set_thread_failed(thread_failed)

-- The core's dispatch hook: one message from a session. By default a session's messages are
-- handled one after another (the next starts when the previous handler has returned, waits
-- included); a component registered with { concurrent = true } gets a task per message.
local enter_task = task._enter
-- defer: true when the core takes a request's response returned by this (core.set_hook's
-- on_unsent: nano's own hook, or one around it that passes it on); the dispatcher then returns
-- (value, empty_array, route) rather than calling the core to send it.
local function dispatch(s, mtype, id, route, payload, flags, co, pre, defer)
  -- a script's own hook around this one that passes on the first six values only: the bytes
  if payload == false and pre == nil then
    co = co or coroutine.running()
    payload = message_bytes(co)
  end
  local h = resolve(route)
  if h and h.concurrent then
    return handle_one(enter_task(co), h, s, mtype, id, route, payload, flags, pre, defer)
  end
  local st = state_of(lsession_ptr, s)
  if st.busy == 0 then
    local t = enter_task(co)
    st.busy = t.n or number_of(t)
    return handle_in_order(t, h, s, mtype, id, route, payload, flags, pre, defer)
  end
  local waiting = st.waiting
  if waiting >= S.session_queue then
    log.warn("session %d: %d messages already wait for a handler; dropping %s %s", s:id(),
             waiting, mtype == MSG_REQUEST and "request" or "notify", tostring(route))
    if mtype == MSG_REQUEST then send_error(s, id, 429, "too many requests in flight") end
    return
  end
  local queues = S.queues
  local q = queues[s]
  if not q then
    q = { head = 0, tail = 0 }
    queues[s] = q
  end
  q.tail = q.tail + 1
  st.waiting = q.tail - q.head
  if payload == false then payload = message_bytes(co) end -- the core's bytes go with the message
  -- and not the value the core decoded: what decodes payloads may change before the message's
  -- turn (a reload, nano.set_serializer), so its bytes are decoded then
  q[q.tail] = { mtype, id, route, payload, flags }
end
nano._dispatch = dispatch
nano._unsent = unsent

function nano._set_inbound(fn)
  inbound = fn
  update_predecode()
end

local function run_close_cb(fn, s, what)
  local ok, err = xpcall(fn, traceback, s)
  if not ok then log.error("session %d %s callback: %s", s:id(), what, tostring(err)) end
end

-- Each callback runs in a task of its own (it may wait, e.g. to save the player).
local function on_closed(s)
  if nano._leave_groups then nano._leave_groups(s) end -- first: callbacks see the groups without s
  if nano._cluster_session_closed then nano._cluster_session_closed(s) end
  local list = S.session_close_cbs[s]
  if list then
    S.session_close_cbs[s] = nil
    for _, fn in ipairs(list) do task._run(run_close_cb, fn, s, "on_close") end
  end
  for _, fn in ipairs(S.closed_cbs) do task._run(run_close_cb, fn, s, "on_session_closed") end
end

local function on_origin(listener_id, origin)
  local fn = S.listener_origin[listener_id] or S.check_origin
  if not fn then return true end
  local ok, res = xpcall(fn, traceback, origin)
  if not ok then
    log.error("check_origin: %s", tostring(res))
    return false
  end
  return res and true or false
end

local function on_signal(name)
  if name == "shutdown" then
    nano.shutdown()
  elseif name == "reload" then
    if nano.reload then nano.reload() else log.warn("reload is not available") end
  end
end

--- nano.on_session_closed(fn): fn(session) after any session's connection is gone.
function nano.on_session_closed(fn)
  if type(fn) ~= "function" then error("on_session_closed: expected a function", 2) end
  S.closed_cbs[#S.closed_cbs + 1] = fn
  scope.record(function() -- made while the script loads: the next reload's callbacks replace it
    local cbs = S.closed_cbs
    for i = 1, #cbs do
      if cbs[i] == fn then
        table.remove(cbs, i)
        return
      end
    end
  end, true)
end

-- ---------------------------------------------------------------------------------------------
-- loop, lifecycle

--- nano.invoke(fn): runs fn on the next loop turn.
function nano.invoke(fn)
  if type(fn) ~= "function" then error("invoke: expected a function", 2) end
  core.timer(0, 0, function()
    task._run(function()
      local ok, err = xpcall(fn, traceback)
      if not ok then log.error("invoke: %s", tostring(err)) end
    end)
  end)
end

-- through the FFI (a C call ends a handler's trace: docs/benchmarks.md, twentieth pass); -1
-- where core.now answers (a second host in the process: tests; the watchdog's abort it raises)
local ffi_now, core_now = core_ffi and core_ffi.now, core.now
function nano.now()
  if ffi_now then
    local t = ffi_now()
    if t >= 0 then return t end
  end
  return core_now()
end

-- ---------------------------------------------------------------------------------------------
-- waiting (task.lua): code that waits without blocking the loop

task._set_log_error(function(msg) log.error("%s", msg) end)

--- nano.spawn(fn, ...) -> task: runs fn now in a new coroutine; task:wait([timeout]) -> results.
nano.spawn = task.spawn
--- nano.sleep(secs): suspends the calling task (a handler, hook, timer callback or spawned task).
nano.sleep = task.sleep

--- nano.http.request{...} / nano.http.get(url): an HTTP client that waits (http.lua)
nano.http = require "nano.http"
--- nano.sqlite.open(path): SQLite, statements off the loop thread (sqlite.lua)
nano.sqlite = require "nano.sqlite"

--- nano.shutdown(): before_shutdown hooks, stop accepting, give handlers that wait up to
--- `shutdown_grace` seconds (nano.configure) to finish, close every session; when the loop has
--- drained, shutdown hooks run and nano-host exits 0.
function nano.shutdown()
  if S.stopping then return end
  S.stopping = true
  for _, e in ipairs(S.components) do call_hook(e, "before_shutdown") end
  nano.redis._shutdown() -- storage clients stop reconnecting; they close in nano._stopped
  S.grace = {}
  -- the handler calling shutdown is not one to wait for
  local own = current_task() and current_task().msg_s and 1 or 0
  if S.running - own > 0 and S.shutdown_grace > 0 then
    for _, same in pairs(S.listeners) do
      for _, l in ipairs(same) do core.unlisten(l.id) end
    end
    log.info("shutdown: waiting up to %g s for %d handler%s", S.shutdown_grace,
             S.running - own, S.running - own == 1 and "" or "s")
    S.grace.timer = core.timer(S.shutdown_grace, 0, stop_now)
  else
    stop_now()
  end
end

function nano.stats() return core.stats() end

local task_of, task_forget = task._of, task._forget
local function dispatch_failed(co, err, tb)
  local t = task_of(co)
  if t then -- the core forgets the thread
    t.status, t.err = "failed", tostring(err)
    task_forget(co)
  end
  return thread_failed(t, err, tb)
end

local function install_hooks()
  core.set_hook("dispatch", dispatch, unsent)
  core.set_hook("failed", dispatch_failed)
  update_predecode()
  core.set_hook("handshake", on_handshake)
  core.set_hook("closed", on_closed)
  core.set_hook("origin", on_origin)
  core.set_hook("signal", on_signal)
end
install_hooks()
nano._install_hooks = install_hooks

-- The main script's error as logged: a start-up failure nano expects (nano.listen on a port in use
-- or not allowed) is its message alone, one line that reads as what it is, not as a crash;
-- anything else (the user's code) keeps its traceback, without the frames below the main chunk
-- (nano-host's own: xpcall, _load_main, host.lua).
local function main_traceback(e)
  local expected = S.expected_failure
  S.expected_failure = nil
  if type(e) == "string" and expected and e:sub(-#expected) == expected then return e end
  local tb = traceback(tostring(e), 2)
  local at = tb:find("in main chunk", 1, true)
  local eol = at and tb:find("\n", at, true)
  if eol then tb = tb:sub(1, eol - 1) end
  return tb
end

-- Runs the main script (first load). Returns true, or false after logging the error.
function nano._main_runs() return S.main_runs or 0 end
local reload -- reload.lua, attached below
local function run_main(script, script_dir, args)
  S.main_runs = (S.main_runs or 0) + 1
  S.script, S.script_dir = script, script_dir
  S.listen_seen = {}
  local chunk, err = loadfile(script)
  if not chunk then
    log.error("%s", err)
    return false
  end
  local ok, rerr = xpcall(chunk, main_traceback, unpack(args or {}))
  if not ok then
    log.error("%s", tostring(rerr))
    return false
  end
  return true
end
-- recorded like a reload's run, so that the first reload can replace what it made
function nano._load_main(script, script_dir, args)
  return reload.first_load(run_main, script, script_dir, args)
end

function nano._start(opts)
  S.started = true
  for _, e in ipairs(S.components) do call_hook(e, "init") end
  for _, e in ipairs(S.components) do call_hook(e, "after_init") end
  if opts and opts.watch and nano.watch then nano.watch() end
end

function nano._stopped()
  nano.unwatch() -- watchers do not keep the loop alive; closed before the host stops for good
  for _, e in ipairs(S.components) do call_hook(e, "shutdown") end
  nano.http._close() -- requests still in flight are dropped, kept-alive connections closed
  nano.sqlite._close_all() -- storage handles (used by the hooks above)
  nano.redis.close_all(); nano.pg.close_all()
end

-- nano.new_group (group.lua), nano.new_timer / new_count_timer / new_after_timer /
-- new_cond_timer / set_timer_precision (timer.lua), nano.pipeline (pipeline.lua)
require("nano.group").attach(nano)
require("nano.metrics").attach(nano)
require("nano.console").attach(nano)
require("nano.timer").attach(nano)
require("nano.pipeline").attach(nano)
-- nano.cluster / rpc / cluster_route / cluster_members (cluster.lua): several processes, one game
require("nano.cluster").attach(nano)
nano.redis = require("nano.redis") -- Redis client (issue 13)
nano.pg = require("nano.pg") -- PostgreSQL client (issue 13)
-- nano.reload / watch / unwatch / persist (reload.lua)
reload = require("nano.reload")
reload.attach(nano)
-- nano.http.route (http_server.lua)
require("nano.http_server").attach(nano)

-- nano.test: back to the state of a fresh process, between specs. Closes every listener and
-- session, stops every timer, drains the loop, empties S in place (other modules hold S) and
-- restores the configuration nano-host started with.
local DEFAULT_CONFIG = core.config()
function nano._reset()
  if nano._cluster_leave then nano._cluster_leave() end
  nano.http._close()
  nano.sqlite._close_all()
  core.stop()
  local deadline = core.hrtime() + 5
  repeat
    core.run("nowait") -- close callbacks: sessions are told (on_session_closed) and freed
    local st = core.stats()
    local open = st.connections + st.sessions + st.listeners
    if open > 0 and core.hrtime() > deadline then
      error("nano._reset: connections still open after 5 s", 2)
    end
  until open == 0
  core.stop_timers()
  task._reset()
  for k in pairs(S) do S[k] = nil end
  for k, v in pairs(fresh_state()) do S[k] = v end
  inbound = nil
  scope.reset()
  nano._reset_pipeline() -- empties nano.pipeline's chains (and so unsets both pipeline hooks)
  core.configure(DEFAULT_CONFIG)
  install_hooks()
  core.restart()
end

return nano
