-- nano.client: a pomelo/nano protocol client for Lua code running in nano-host — the clients of
-- nano.test, and bots or load scripts against a remote server:
--
--   local client = require "nano.client"
--   local c = client.connect("127.0.0.1", 3250)         -- handshake and ack done
--   local res = c:request("Room.join", { uid = 7 })       -- decoded response; error response raises
--   c:notify("Room.say", { text = "hi" })
--   local route, msg = c:wait_push("onSay")               -- runs the loop until it arrives
--   c:close()
--
-- Bytes travel on nano.tcp (core/lua_tcp.c); packets and messages are encoded and decoded by the
-- C codec (nano.codec), never in Lua. Every blocking call runs the host's loop for at most
-- `timeout` seconds of real time, then raises "timed out after 5 s waiting for ...". Blocking calls
-- cannot run inside a loop callback (a handler, a timer, an on_push function): there, use the
-- callback forms (client.open, c:request(route, msg, fn), c:on_push). See docs/testing.md.
local core = require "nano.core"
local tcp = require "nano.tcp"
local codec = require "nano.codec"
local json = require "nano.json"

local type, pairs, ipairs, tostring, pcall, xpcall = type, pairs, ipairs, tostring, pcall, xpcall
local setmetatable, error = setmetatable, error
local str_format, traceback = string.format, debug.traceback

local PKT_HANDSHAKE, PKT_ACK, PKT_HEARTBEAT = codec.HANDSHAKE, codec.HANDSHAKE_ACK, codec.HEARTBEAT
local PKT_DATA, PKT_KICK = codec.DATA, codec.KICK
local MSG_REQUEST, MSG_NOTIFY, MSG_RESPONSE, MSG_PUSH =
  codec.REQUEST, codec.NOTIFY, codec.RESPONSE, codec.PUSH

local M = {
  timeout = 5,         -- default seconds of real time a blocking call waits
  max_pushes = 10000,  -- pushes kept per client for pushes()/wait_push (oldest dropped first)
  SYNC_ROUTE = "__nano.sync",
}

local Client = {}
Client.__index = Client
M.Client = Client

local open_clients = {} -- client -> true until its stream is closed (close_all)

local function log_error(fmt, ...)
  core.log(core.ERROR, "nano.client: " .. str_format(fmt, ...))
end

local function fmt_secs(s) return str_format("%g", s) end

-- ---------------------------------------------------------------------------------------------
-- waiting

-- Runs the loop until done() is true, for at most `timeout` s of real time. Returns true, or
-- nil and "timeout" | "closed" (the connection closed first; not checked when closing is what
-- is awaited) | "callback" (inside a loop callback, where the loop cannot run).
local function wait_raw(self, done, timeout, closing)
  if done() then return true end
  if core.running() then return nil, "callback" end
  local deadline = core.hrtime() + timeout
  -- Wakes the loop at the deadline even when nothing else happens. A timer counts from the loop's
  -- clock, which stands still between the loop's turns (the spec's own work before this wait, or
  -- server:advance's virtual time), so it can fire before the deadline: it is then armed again for
  -- what is left, not left to whatever event comes next.
  local wake
  local function arm()
    wake = core.timer(math.max(deadline - core.hrtime(), 0.001), 0, function() wake = nil end)
  end
  arm()
  local ok, why = true, nil
  while not done() do
    if not closing and self and self.state == "closed" then
      ok, why = nil, "closed"
      break
    end
    if core.hrtime() >= deadline then
      ok, why = nil, "timeout"
      break
    end
    if not wake then arm() end
    core.run("once")
  end
  if wake then wake:stop() end
  return ok, why
end

-- wait_raw that raises a clear error pointing at the caller's caller (`level` as error's).
local function wait(self, what, done, timeout, level, closing)
  timeout = timeout or self.timeout
  local ok, why = wait_raw(self, done, timeout, closing)
  if ok then return end
  level = (level or 2) + 1
  if why == "timeout" then
    error(str_format("timed out after %s s waiting for %s", fmt_secs(timeout), what), level)
  elseif why == "closed" then
    error(str_format("connection closed (%s) while waiting for %s",
      self._why or "closed", what), level)
  end
  error(str_format("nano.client: waiting for %s would block inside a loop callback (a handler, "
    .. "timer or push callback); use the callback form", what), level)
end
M._wait, M._wait_raw = wait, wait_raw

-- ---------------------------------------------------------------------------------------------
-- receiving

local function call_safely(what, fn, ...)
  local ok, err = xpcall(fn, traceback, ...)
  if not ok then log_error("%s: %s", what, tostring(err)) end
end

local function set_closed(self, reason)
  if self.state == "closed" then return end
  self.state = "closed"
  self._why = self._why or reason or "closed by the client"
  open_clients[self] = nil
  if self.hb_timer then
    self.hb_timer:stop()
    self.hb_timer = nil
  end
  local pending = self.pending
  self.pending = {}
  for _, p in pairs(pending) do
    p.done, p.failed = true, "connection closed (" .. self._why .. ")"
    if p.cb then call_safely("request callback", p.cb, nil, { code = "closed", msg = p.failed }) end
  end
  if self.on_ready then
    local cb = self.on_ready
    self.on_ready = nil
    call_safely("open callback", cb, nil, self._why)
  end
  for _, fn in ipairs(self.close_handlers) do call_safely("on_close callback", fn, self, self._why) end
end

local function fail(self, why)
  self._why = self._why or why
  self.stream:close()
end

local function send_packet(self, ptype, body)
  local ok, err = self.stream:write(codec.encode_packet(ptype, body))
  if not ok then return nil, err end
  return true
end

-- route and kind ("response" | "push" | "error") for serializers that pick a type by them
local function unmarshal(self, payload, route, kind)
  -- the non-raising decoder first, as nano's dispatcher does (lua/nano/json.lua)
  local ser = self.serializer
  local f = ser.try_unmarshal_for -- as the dispatcher: not when unmarshal was replaced
  local try, ok, v = (f == nil or f == ser.unmarshal) and ser.try_unmarshal, false, nil
  if try then ok, v = try(payload, route, kind) end
  if ok then return v end
  ok, v = pcall(ser.unmarshal, payload, route, kind)
  if ok then return v end
  return payload, "payload does not decode: " .. tostring(v)
end

local function on_handshake(self, body)
  local ok, hs = pcall(json.unmarshal, body)
  if not ok or type(hs) ~= "table" then return fail(self, "handshake response is not JSON") end
  if hs.code ~= 200 then
    return fail(self, str_format("handshake refused (code %s)", tostring(hs.code)))
  end
  local sys = type(hs.sys) == "table" and hs.sys or {}
  self.handshake = hs
  self.heartbeat = tonumber(sys.heartbeat)
  if type(sys.dict) == "table" then
    for route, code in pairs(sys.dict) do
      self.dict[route], self.route_of[code] = code, route
    end
  end
  if not self.serializer then
    local name = sys.serializer
    if name == nil or name == "json" then
      self.serializer = json
    else
      local sok, mod = pcall(require, "nano." .. tostring(name))
      if not sok then
        return fail(self, "the server speaks serializer '" .. tostring(name)
          .. "'; pass one to the client: { serializer = { marshal =, unmarshal = } }")
      end
      self.serializer = mod
    end
  end
  send_packet(self, PKT_ACK, "")
  self.state = "working"
  if self.on_ready then
    local cb = self.on_ready
    self.on_ready = nil
    call_safely("open callback", cb, self)
  end
end

-- pomelo's clients answer a server heartbeat one interval later, never at once (PROTOCOL.md);
-- on the host's clock, so nano.test's server:advance() drives it deterministically.
local function on_heartbeat(self)
  if not self.answer_heartbeats or self.hb_timer or not self.heartbeat then return end
  self.hb_timer = core.timer(self.heartbeat, 0, function()
    self.hb_timer = nil
    if self.state == "working" then send_packet(self, PKT_HEARTBEAT, "") end
  end)
end

local function on_push(self, route, payload)
  local msg, err = unmarshal(self, payload, route, "push")
  local entry = { route = route, msg = msg }
  if err then entry.error = err end
  local all, queue, max = self.all_pushes, self.queue, self.max_pushes
  all[#all + 1] = entry
  queue[#queue + 1] = entry
  if #all > max then table.remove(all, 1) end
  if #queue > max then table.remove(queue, 1) end
  local handlers = self.push_handlers[route]
  if handlers then
    for _, fn in ipairs(handlers) do call_safely("push callback for " .. tostring(route), fn, msg, route, self) end
  end
  for _, fn in ipairs(self.push_handlers_any) do call_safely("push callback", fn, msg, route, self) end
end

local function on_response(self, m)
  local p = self.pending[m.id]
  if not p then -- a response to nothing we wait for: ignore, as pomelo's clients do (counted)
    self.stray = self.stray + 1
    return
  end
  self.pending[m.id] = nil
  local v, err = unmarshal(self, m.payload, p.route, m.error and "error" or "response")
  p.done = true
  if m.error then
    if type(v) ~= "table" then v = { code = 500, msg = tostring(v) } end
    p.err = v
  elseif err then
    p.err = { code = "decode", msg = err }
  else
    p.resp = v
  end
  if p.cb then call_safely("request callback for " .. p.route, p.cb, p.resp, p.err) end
end

local function on_data(self, body)
  local m, err = codec.decode_message(body)
  if not m then return fail(self, "bad message from the server: " .. tostring(err)) end
  if m.type == MSG_RESPONSE then return on_response(self, m) end
  if m.type ~= MSG_PUSH then return fail(self, "the server sent a request or notify message") end
  local route = m.route
  if not route then route = self.route_of[m.code] or m.code end
  on_push(self, route, m.payload)
end

local function on_bytes(self, data)
  local buf = self.inbuf .. data
  local packets, rest = codec.decode_packets(buf)
  if not packets then return fail(self, "bad packet from the server: " .. tostring(rest)) end
  self.inbuf = rest
  for _, p in ipairs(packets) do
    if self.state == "closed" then return end
    local t = p.type
    if t == PKT_HANDSHAKE then
      if self.state ~= "handshake" then return fail(self, "second handshake from the server") end
      on_handshake(self, p.body)
    elseif t == PKT_HEARTBEAT then
      on_heartbeat(self)
    elseif t == PKT_DATA then
      if self.state ~= "working" then return fail(self, "data before the handshake") end
      on_data(self, p.body)
    elseif t == PKT_KICK then
      self.kicked = true
      return fail(self, "kicked by the server")
    else
      return fail(self, "unexpected packet type " .. tostring(t))
    end
  end
end

local function on_stream_event(self, event, arg)
  if event == "data" then
    on_bytes(self, arg)
  elseif event == "connect" then
    self.state = "handshake"
    self.local_address = self.stream:local_addr()
    local hs = { sys = { type = "nano-host-lua", version = core.version }, user = self.user or {} }
    send_packet(self, PKT_HANDSHAKE, json.marshal(hs))
  elseif event == "close" then
    set_closed(self, arg)
  end
end

-- ---------------------------------------------------------------------------------------------
-- opening

--- client.open(host, port, opts, on_ready) -> client, at once; on_ready(client) once the
--- handshake is done, or on_ready(nil, err). For scripts whose loop is running (callbacks).
--- opts: timeout (s, blocking calls), user (the handshake's "user" table), heartbeat (false: never
--- answer server heartbeats, to test timeouts), serializer ({ marshal=, unmarshal= }; default:
--- what the handshake names), max_pushes, tls (true, or { ca = "file.pem", verify = false,
--- server_name = "name" }: TLS to a listener with tls; true verifies against the system's CAs).
function M.open(host, port, opts, on_ready)
  if type(host) ~= "string" then error("client.open: expected a host like \"127.0.0.1\"", 2) end
  port = tonumber(port)
  if not port then error("client.open: expected a port number", 2) end
  opts = opts or {}
  local self = setmetatable({
    host = host, port = port,
    state = "connecting",
    timeout = opts.timeout or M.timeout,
    user = opts.user,
    answer_heartbeats = opts.heartbeat ~= false,
    serializer = opts.serializer,
    max_pushes = opts.max_pushes or M.max_pushes,
    inbuf = "",
    dict = {}, route_of = {},
    next_id = 0,
    pending = {},
    stray = 0,
    all_pushes = {}, queue = {},
    push_handlers = {}, push_handlers_any = {},
    close_handlers = {},
    on_ready = on_ready,
  }, Client)
  local tls = opts.tls
  if tls == true then tls = {} end
  if tls ~= nil and type(tls) ~= "table" then
    error("client.open: tls: expected true or { ca = \"ca.pem\", verify = false, server_name = }", 2)
  end
  self.stream = tcp.connect(host, port, function(_, event, arg) on_stream_event(self, event, arg) end, tls)
  open_clients[self] = true
  return self
end

--- client.connect(host, port, opts) -> client with the handshake done; raises when the server
--- cannot be reached, refuses the handshake, or does not answer within opts.timeout seconds.
function M.connect(host, port, opts)
  local self = M.open(host, port, opts)
  local ok, why = wait_raw(self, function() return self.state == "working" end, self.timeout)
  if ok then return self end
  local target = str_format("%s:%s", tostring(host), tostring(port))
  if why == "closed" then
    why = self._why
  elseif why == "timeout" then
    why = str_format("no handshake within %s s (state: %s)", fmt_secs(self.timeout), self.state)
  else
    why = "connect would block inside a loop callback; use client.open(host, port, opts, fn)"
  end
  self:_abort()
  error(str_format("cannot connect to %s: %s", target, why), 2)
end

-- ---------------------------------------------------------------------------------------------
-- sending

local function encode_route(self, route)
  return self.dict[route] or route
end

local function marshal(self, route, msg, level, kind)
  if msg == nil then msg = {} end
  local ok, payload = pcall(self.serializer.marshal, msg, route, kind)
  if not ok then
    error(str_format("cannot serialize the message for '%s': %s", route, tostring(payload)), level + 1)
  end
  return payload
end

local function check_working(self, what, level)
  if self.state ~= "working" then
    error(str_format("%s: the client is %s%s", what, self.state == "closed" and "closed" or "not connected yet",
      self._why and (" (" .. self._why .. ")") or ""), level + 1)
  end
end

local function send_request(self, route, msg, cb)
  self.next_id = self.next_id % 0xFFFFFFFF + 1
  local id = self.next_id
  local body = codec.encode_message(MSG_REQUEST, id, encode_route(self, route), marshal(self, route, msg, 3, "request"))
  local p = { route = route, cb = cb }
  self.pending[id] = p
  local ok, err = send_packet(self, PKT_DATA, body)
  if not ok then
    self.pending[id] = nil
    error(str_format("request '%s': %s", route, err), 3)
  end
  return p
end

local function error_text(err)
  if type(err) ~= "table" then return tostring(err) end
  return str_format("%s %s", tostring(err.code), tostring(err.msg or err.message or ""))
end

--- c:request(route, msg [, timeout]) -> the decoded response. An error response (the server's
--- error flag, e.g. a handler's error({ code = 403, msg = "..." })) raises
--- "request 'Room.join' failed: 403 ..."; use c:try_request to look at it instead.
--- c:request(route, msg, fn): does not wait; fn(response) or fn(nil, err) later.
function Client:request(route, msg, timeout)
  if type(route) ~= "string" then error("request: expected a route like \"Room.join\"", 2) end
  check_working(self, "request '" .. route .. "'", 2)
  if type(timeout) == "function" then
    send_request(self, route, msg, timeout)
    return true
  end
  local p = send_request(self, route, msg)
  wait(self, "the response to '" .. route .. "'", function() return p.done end, timeout, 2)
  if p.failed then error(str_format("%s while waiting for the response to '%s'", p.failed, route), 2) end
  if p.err then error(str_format("request '%s' failed: %s", route, error_text(p.err)), 2) end
  return p.resp
end

--- c:try_request(route, msg [, timeout]) -> response | nil, err: err is the error response's
--- payload ({ code =, msg = }). Timeouts and a closed connection still raise.
function Client:try_request(route, msg, timeout)
  if type(route) ~= "string" then error("try_request: expected a route like \"Room.join\"", 2) end
  check_working(self, "request '" .. route .. "'", 2)
  local p = send_request(self, route, msg)
  wait(self, "the response to '" .. route .. "'", function() return p.done end, timeout, 2)
  if p.failed then error(str_format("%s while waiting for the response to '%s'", p.failed, route), 2) end
  if p.err then return nil, p.err end
  return p.resp
end

--- c:notify(route, msg): sends and returns at once (notifies have no answer).
function Client:notify(route, msg)
  if type(route) ~= "string" then error("notify: expected a route like \"Room.say\"", 2) end
  check_working(self, "notify '" .. route .. "'", 2)
  local body = codec.encode_message(MSG_NOTIFY, 0, encode_route(self, route), marshal(self, route, msg, 2, "notify"))
  local ok, err = send_packet(self, PKT_DATA, body)
  if not ok then error(str_format("notify '%s': %s", route, err), 2) end
  return true
end

--- c:sync([timeout]): returns once the server has handled everything this client sent before
--- (a request round trip; a server answers it in order, here with an error "handler not found",
--- which sync ignores — nano.test servers answer it silently).
function Client:sync(timeout)
  check_working(self, "sync", 2)
  local p = send_request(self, M.SYNC_ROUTE, {})
  wait(self, "the server to answer sync", function() return p.done end, timeout, 2)
  if p.failed then error(p.failed .. " while waiting for the server to answer sync", 2) end
  return true
end

--- c:stray_responses() -> how many responses came for no request waiting for one (ignored, as
--- pomelo's clients ignore them): a request answered twice shows here.
function Client:stray_responses() return self.stray end

--- c:send_raw(bytes): bytes as they are, for protocol tests.
function Client:send_raw(bytes)
  return self.stream:write(bytes)
end

-- ---------------------------------------------------------------------------------------------
-- pushes

local function take(self, route)
  local queue = self.queue
  for i = 1, #queue do
    local e = queue[i]
    if route == nil or e.route == route then
      table.remove(queue, i)
      return e
    end
  end
end

--- c:wait_push([route [, timeout]]) -> route, msg: the oldest push of that route (any route when
--- nil) not returned by wait_push before; runs the loop until one arrives.
function Client:wait_push(route, timeout)
  local e
  local what = route and ("push '" .. tostring(route) .. "'") or "a push"
  wait(self, what, function()
    e = take(self, route)
    return e ~= nil
  end, timeout, 2)
  return e.route, e.msg
end

--- c:pushes([route]) -> { { route =, msg = }, ... }: every push received so far (wait_push does
--- not remove them from this list), oldest first; only that route's when given.
function Client:pushes(route)
  local list = {}
  for _, e in ipairs(self.all_pushes) do
    if route == nil or e.route == route then list[#list + 1] = { route = e.route, msg = e.msg } end
  end
  return list
end

--- c:clear_pushes(): forgets every push received so far.
function Client:clear_pushes()
  self.all_pushes, self.queue = {}, {}
end

--- c:on_push(route, fn): fn(msg, route, client) for every push of that route (every push when
--- route is nil) from now on, called from the loop. For bots.
function Client:on_push(route, fn)
  if type(fn) ~= "function" then error("on_push: expected a function", 2) end
  if route == nil then
    self.push_handlers_any[#self.push_handlers_any + 1] = fn
  else
    local list = self.push_handlers[route] or {}
    list[#list + 1] = fn
    self.push_handlers[route] = list
  end
end

--- c:on_close(fn): fn(client, reason) once the connection is gone.
function Client:on_close(fn)
  if type(fn) ~= "function" then error("on_close: expected a function", 2) end
  self.close_handlers[#self.close_handlers + 1] = fn
end

-- ---------------------------------------------------------------------------------------------
-- the connection

--- c:session() -> the server-side session of this client, when the server runs in this process
--- (nano.test): the session whose remote address is this client's local address.
function Client:session()
  local s = self._session
  if s then return s end
  if not self.local_address then error("session: the client is not connected", 2) end
  for _, cand in ipairs(core.sessions()) do
    if cand:remote_addr() == self.local_address then
      self._session = cand
      return cand
    end
  end
  error("session: no session in this process has the address " .. self.local_address
    .. " (is the server in another process?)", 2)
end

local function session_alive(s)
  for _, cand in ipairs(core.sessions()) do
    if cand == s then return true end
  end
  return false
end

function Client:_abort()
  if self.state ~= "closed" then self.stream:close() end
end

--- c:close([timeout]): closes the connection and waits until it is gone; when the server runs in
--- this process, also until it has closed the session (its on_session_closed callbacks ran).
function Client:close(timeout)
  if self.state == "closed" and self.stream:state() == "closed" then return end
  local s = self._session
  if not s and self.local_address then
    for _, cand in ipairs(core.sessions()) do
      if cand:remote_addr() == self.local_address then s = cand end
    end
  end
  self._why = self._why or "closed by the client"
  self.stream:close()
  if core.running() then return end
  wait(self, "the connection to close", function()
    return self.stream:state() == "closed" and (not s or not session_alive(s))
  end, timeout, 2, true)
end

--- c:is_closed() -> bool; c:closed_reason() -> why ("kicked by the server", ...), nil while open
function Client:is_closed() return self.state == "closed" end
function Client:closed_reason() return self.state == "closed" and self._why or nil end
function Client:was_kicked() return self.kicked == true end
function Client:local_addr() return self.local_address end

function Client:__tostring()
  return str_format("nano.client %s:%s (%s)", self.host, tostring(self.port), self.state)
end

--- client.close_all(): closes every client still open and waits until they are gone.
function M.close_all(timeout)
  local list = {}
  for c in pairs(open_clients) do list[#list + 1] = c end
  for _, c in ipairs(list) do
    c._why = c._why or "closed by the client"
    c.stream:close()
  end
  if core.running() then return end
  local deadline = core.hrtime() + (timeout or M.timeout)
  local function gone()
    for _, c in ipairs(list) do
      if c.stream:state() ~= "closed" then return false end
    end
    return true
  end
  -- closing takes one loop turn (the close callbacks); no waiting on anything else
  while not gone() and core.hrtime() < deadline do core.run("nowait") end
end

-- A script's clients end with the host: when nano.shutdown (SIGINT, SIGTERM) closes the sessions
-- (after the grace period of handlers that wait) it closes them too, or a bot's open connections
-- would keep nano-host running after it was asked to stop.
do
  local nano = require "nano"
  local on_stop = nano._on_stop
  nano._on_stop = function()
    if on_stop then on_stop() end
    M.close_all()
  end
end

--- client.count() -> clients not yet closed
function M.count()
  local n = 0
  for _ in pairs(open_clients) do n = n + 1 end
  return n
end

return M
