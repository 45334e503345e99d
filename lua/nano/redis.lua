-- nano.redis: a Redis client that waits without blocking the loop (hiredis through
-- nano.redis_core; waiting through nano.task). See docs/storage.md and docs/api.md.
--
--   local r, err = nano.redis.connect("redis://[:password@]127.0.0.1:6379/0" [, opts])
--   local v, err = r:call("SET", "k", "v")       -- "OK"; an error reply is nil, "ERR ..."
--   r:subscribe("news", function(payload, channel) ... end)   -- own connection; fn runs as a task
--   r:unsubscribe("news")      r:close()      r:state() -> "connecting" | "ready" | "closed"
--
-- opts: connect_timeout (s, default 5: one connection attempt), timeout (s, default 5: one
-- command; nil/false to wait forever), reconnect_max (s, default 5: the longest pause between
-- reconnection attempts; the pause doubles from 0.05 s), name (labels the client's metrics,
-- nano_storage_*{client="redis",name=...}; "default" without one).
--
-- Replies: status and bulk strings → strings, integers → numbers (exact to 2^53), nil → nil,
-- arrays → tables (a nil inside one is nano.redis.null, the same value as nano.json.null;
-- an error inside one is { err = "..." }). An error reply is nil, "<Redis's message>".
--
-- Connecting: inside a task, connect waits for the first connection (AUTH and SELECT from the
-- URL included) and returns nil, err if it fails. Outside a task (a main script's top level) it
-- returns the client at once and connects in the background; calls made meanwhile wait for the
-- connection (up to their timeout). A lost connection fails the calls waiting for replies with
-- "redis: connection lost: ..." and is re-established with backoff; calls made while it is down
-- wait for it. Commands issued by several tasks at once share the connection (pipelined).
local rc = require "nano.redis_core"
local core = require "nano.core"
local task = require "nano.task"
local metrics = require "nano.metrics"
local clock = metrics.clock

local type, select, tostring, tonumber, pairs, ipairs, setmetatable, unpack =
  type, select, tostring, tonumber, pairs, ipairs, setmetatable, unpack
local str_format, min = string.format, math.min

local M = {
  null = require("nano.json").null, -- a nil inside an array reply
}

local open = {} -- client -> true while open: closed when the server has stopped (M.close_all)
local stopping = false -- nano.shutdown() started: no more reconnecting (M._shutdown)

local Client = {}
Client.__index = Client

local function unescape(s)
  return (s:gsub("%%(%x%x)", function(h) return string.char(tonumber(h, 16)) end))
end

-- redis://[[user]:password@]host[:port][/db]  (also rediss-less unix: redis+unix:///path[?db=n])
local function parse_url(url)
  if type(url) ~= "string" then return nil, "expected a URL string, e.g. \"redis://127.0.0.1:6379/0\"" end
  local u = { port = 6379, db = 0 }
  local rest = url:match("^redis://(.*)$")
  if not rest then
    local path, q = url:match("^redis%+unix://([^?]+)(.*)$")
    if not path then
      return nil, "not a redis URL: " .. url .. " (expected redis://[:password@]host[:port][/db])"
    end
    u.path = path
    u.db = tonumber(q:match("db=(%d+)") or "0")
    return u
  end
  local auth, hostpart = rest:match("^(.*)@([^@]*)$")
  if not auth then hostpart = rest end
  if auth then
    local user, pass = auth:match("^([^:]*):(.*)$")
    if user then
      u.user = user ~= "" and unescape(user) or nil
      u.password = unescape(pass)
    else
      u.password = unescape(auth)
    end
  end
  local hp, db = hostpart:match("^([^/]*)/?(.*)$")
  if db ~= "" then
    u.db = tonumber(db)
    if not u.db or u.db < 0 or u.db % 1 ~= 0 then return nil, "bad database number in " .. url end
  end
  local host, port = hp:match("^%[(.*)%]:(%d+)$") -- [::1]:6379
  if not host then host, port = hp:match("^(.*):(%d+)$") end
  if not host then host = hp:match("^%[(.*)%]$") or hp end
  if host == "" then return nil, "no host in " .. url end
  u.host = host
  if port then
    u.port = tonumber(port)
    if u.port < 1 or u.port > 65535 then return nil, "port out of range in " .. url end
  end
  return u
end
M._parse_url = parse_url

local function where(self)
  local u = self.u
  return u.path or (u.host .. ":" .. u.port)
end

-- ---------------------------------------------------------------------------------------------
-- one connection at a time; reconnects

local start_conn, handshake

-- Through nano.log (the game's logger), loaded late: nano itself loads this module.
local function warn(msg) require("nano").log.warn("%s", msg) end

local function stop_timer(t)
  if t then t:stop() end
end

-- Fails every call that waits for a reply on the current connection.
local function fail_pending(self, err)
  local pending = self.pending
  self.pending = {}
  for _, done in pairs(pending) do done(nil, err) end
end

local function fail_waiting(self, err)
  local waiting = self.waiting
  self.waiting = {}
  for _, w in ipairs(waiting) do
    stop_timer(w.timer)
    w.resume(nil, err)
  end
end

-- The first connection's waiter (connect inside a task), told once.
local function tell_ready_waiter(self, ok, err)
  local w = self.ready_waiter
  self.ready_waiter = nil
  if w then w(ok, err) end
end

local function schedule_reconnect(self)
  if self.status == "closed" or self.retry then return end
  if stopping then -- shutting down: a connection that is gone stays gone
    fail_waiting(self, "redis: not connected, and the server is shutting down")
    return
  end
  local delay = min(0.05 * 2 ^ self.attempts, self.opts.reconnect_max)
  self.attempts = self.attempts + 1
  self.retry = core.timer(delay, 0, function()
    self.retry = nil
    start_conn(self)
  end)
end

-- Sends one command now; done(value, err) gets the reply. Returns true or nil, err.
local function send(self, args, n, done)
  local id = self.next_id
  self.next_id = id + 1
  local ok, err = self.conn:command(id, unpack(args, 1, n))
  if not ok then return nil, "redis: " .. err end
  self.pending[id] = done
  return true
end

local function became_ready(self)
  stop_timer(self.attempt_timer)
  self.attempt_timer = nil
  self.status = "ready"
  self.up = true
  self.attempts = 0
  self.last_err = nil
  local waiting = self.waiting
  self.waiting, self.waiting_done = {}, 0
  for _, w in ipairs(waiting) do
    if not w.done then w.start() end
  end
  if self.on_ready then self.on_ready() end
  tell_ready_waiter(self, true)
end

-- A handshake command (AUTH, SELECT) failed: this attempt is over.
local function attempt_failed(self, err)
  self.last_err = err
  tell_ready_waiter(self, nil, err)
  if self.conn then self.conn:close() end -- "gone" follows and schedules the next attempt
end

local function on_event(self, conn, event, a, b, c)
  if conn ~= self.conn then return end -- an old connection's late events
  if event == "reply" then
    local done = self.pending[a]
    self.pending[a] = nil
    -- A lost connection fails its pending calls before "gone" arrives: calls made meanwhile
    -- (a task resumed by one of these) wait for the next connection.
    if b == nil and self.status == "ready" and c and c:find("^redis: connection lost") then
      self.status = "connecting"
    end
    if done then done(b, c) end
  elseif event == "push" then
    if self.on_push then self.on_push(a) end
  elseif event == "connect" then
    if a then
      handshake(self, conn)
    else
      self.last_err = "redis: cannot connect to " .. where(self) .. ": " .. tostring(b)
    end
  elseif event == "gone" then
    self.conn = nil
    stop_timer(self.attempt_timer)
    self.attempt_timer = nil
    local why = self.last_err or ("redis: connection lost: " .. tostring(a))
    fail_pending(self, why:find("^redis: ") and why or ("redis: " .. why))
    if self.status == "closed" then return end
    local was_up = self.up
    self.up = false
    self.status = "connecting"
    if was_up then
      warn(str_format("redis %s: connection lost (%s); reconnecting", where(self), tostring(a)))
    end
    tell_ready_waiter(self, nil, why)
    schedule_reconnect(self)
  end
end

start_conn = function(self)
  if self.status == "closed" then return end
  local u = self.u
  local conn, err
  conn, err = rc.connect(u.host or "", u.port, u.path, function(event, a, b, c)
    on_event(self, conn, event, a, b, c)
  end)
  if not conn then
    self.last_err = "redis: cannot connect to " .. where(self) .. ": " .. err
    tell_ready_waiter(self, nil, self.last_err)
    schedule_reconnect(self)
    return
  end
  self.conn = conn
  self.status = "connecting"
  self.last_err = nil
  if self.opts.connect_timeout then
    self.attempt_timer = core.timer(self.opts.connect_timeout, 0, function()
      self.attempt_timer = nil
      attempt_failed(self, str_format("redis: connecting to %s timed out after %g s", where(self),
        self.opts.connect_timeout))
    end)
  end
end

-- Once the socket is up: AUTH and SELECT first, then PING; its answer makes the client ready.
handshake = function(self, conn)
  local u = self.u
  local steps = {}
  if u.password then
    steps[#steps + 1] = u.user and { "AUTH", u.user, u.password } or { "AUTH", u.password }
  end
  if u.db ~= 0 then steps[#steps + 1] = { "SELECT", tostring(u.db) } end
  steps[#steps + 1] = { "PING" }
  for i, cmd in ipairs(steps) do
    local last = i == #steps
    local ok, serr = send(self, cmd, #cmd, function(v, e)
      if self.conn ~= conn then return end
      if v == nil then
        if e and not e:find("^redis: ") then -- an error reply: wrong password, bad database
          attempt_failed(self, str_format("redis: %s on %s: %s", cmd[1], where(self), e))
        end
        return
      end
      if last then became_ready(self) end
    end)
    if not ok then
      attempt_failed(self, serr)
      return
    end
  end
end

local function new_client(u, opts)
  local o = { connect_timeout = 5, timeout = 5, reconnect_max = 5 }
  for k, v in pairs(opts or {}) do o[k] = v end
  if o.timeout == false then o.timeout = nil end
  return setmetatable({ u = u, opts = o, status = "connecting", pending = {}, waiting = {},
    next_id = 1, attempts = 0 }, Client)
end

--- nano.redis.connect(url [, opts]) -> client | nil, err
function M.connect(url, opts)
  local u, err = parse_url(url)
  if not u then return nil, "redis: " .. err end
  if opts ~= nil and type(opts) ~= "table" then return nil, "redis: connect: opts must be a table" end
  for _, k in ipairs({ "connect_timeout", "timeout", "reconnect_max" }) do
    local v = opts and opts[k]
    if v ~= nil and v ~= false and (type(v) ~= "number" or v <= 0) then
      return nil, "redis: connect: opts." .. k .. " must be seconds (a number > 0)"
    end
  end
  local name, nerr = metrics._client_name(opts, "redis: connect")
  if not name then return nil, nerr end
  local self = new_client(u, opts)
  self.rec = metrics._storage("redis", name)
  open[self] = true
  if not task.current() then
    start_conn(self)
    if not self.conn then -- refused before any I/O (a host name): no point retrying
      self:close()
      return nil, self.last_err
    end
    return self
  end
  local ok, cerr = task.await("nano.redis.connect", function(resume)
    self.ready_waiter = resume
    start_conn(self)
  end)
  if not ok then
    self:close()
    return nil, cerr
  end
  return self
end

-- ---------------------------------------------------------------------------------------------
-- calls

local function check_args(n, ...)
  if n == 0 then return nil, "redis: call: expected a command, e.g. r:call(\"GET\", key)" end
  for i = 1, n do
    local t = type((select(i, ...)))
    if t ~= "string" and t ~= "number" then
      return nil, str_format("redis: call: argument %d is a %s (expected a string or a number)", i, t)
    end
  end
  return true
end

--- r:call(cmd, ...) -> the reply | nil, err
function Client:call(...)
  local t0 = clock()
  local res, err = self:_call(...)
  self.rec(t0, res ~= nil)
  return res, err
end

function Client:_call(...)
  local n = select("#", ...)
  if self.status == "closed" then return nil, "redis: client closed" end
  local ok, err = check_args(n, ...)
  if not ok then return nil, err end
  local args = { ... }
  local timeout = self.opts.timeout
  return task.await("redis:call", function(resume)
    local timer
    local function done(v, e)
      stop_timer(timer)
      timer = nil
      resume(v, e)
    end
    local w
    if timeout then
      timer = core.timer(timeout, 0, function()
        timer = nil
        if w then
          w.done = true
          -- A long outage must not grow the list by every call that timed out in it.
          self.waiting_done = (self.waiting_done or 0) + 1
          if self.waiting_done > 64 and self.waiting_done * 2 > #self.waiting then
            local keep = {}
            for _, e in ipairs(self.waiting) do
              if not e.done then keep[#keep + 1] = e end
            end
            self.waiting, self.waiting_done = keep, 0
          end
        end
        resume(nil, str_format("redis: %s timed out after %g s", tostring(args[1]), timeout))
      end)
    end
    if self.status == "ready" and send(self, args, n, done) then return end
    -- Down, still connecting, or the connection is going away (hiredis refuses new commands
    -- before "gone" arrives): sent once a connection is ready.
    if self.status == "ready" then self.status = "connecting" end
    w = { resume = done }
    w.start = function()
      local sok, serr = send(self, args, n, done)
      if not sok then done(nil, serr) end
    end
    self.waiting[#self.waiting + 1] = w
  end)
end

--- r:state() -> "connecting" | "ready" | "closed"
function Client:state() return self.status end

--- r:close(): calls in flight get nil, "redis: client closed"; the subscriber connection closes.
function Client:close()
  if self.status == "closed" then return end
  self.status = "closed"
  open[self] = nil
  stop_timer(self.retry)
  stop_timer(self.attempt_timer)
  self.retry, self.attempt_timer = nil, nil
  fail_pending(self, "redis: client closed")
  fail_waiting(self, "redis: client closed")
  tell_ready_waiter(self, nil, "redis: client closed")
  if self.conn then self.conn:close() end
  if self.sub then self.sub:close() end
  local subw = self.sub_waiters
  self.sub_waiters = nil
  for _, list in pairs(subw or {}) do
    for _, resume in ipairs(list) do resume(nil, "redis: client closed") end
  end
end

Client.__tostring = function(self)
  return str_format("nano.redis client %s (%s)", where(self), self.status)
end

-- ---------------------------------------------------------------------------------------------
-- pub/sub, on a connection of its own

local function subscriber(self)
  if self.sub then return self.sub end
  local sub = new_client(self.u, self.opts)
  self.sub, self.handlers, self.sub_waiters = sub, {}, {}
  sub.on_push = function(msg)
    local kind = msg[1]
    if kind == "message" then
      local fn = self.handlers[msg[2]]
      if fn then task.spawn(fn, msg[3], msg[2]) end
    elseif kind == "subscribe" then
      local list = self.sub_waiters[msg[2]]
      self.sub_waiters[msg[2]] = nil
      for _, resume in ipairs(list or {}) do resume(true) end
    end
  end
  sub.on_ready = function() -- (re)subscribed after every (re)connection
    for channel in pairs(self.handlers) do sub.conn:subscribe("SUBSCRIBE", channel) end
  end
  start_conn(sub)
  return sub
end

--- r:subscribe(channel, fn) -> true | nil, err: fn(payload, channel) runs as a task for every
--- message. Inside a task, waits until the server has confirmed the subscription.
function Client:subscribe(channel, fn)
  if self.status == "closed" then return nil, "redis: client closed" end
  if type(channel) ~= "string" then return nil, "redis: subscribe: channel must be a string" end
  if type(fn) ~= "function" then return nil, "redis: subscribe: expected a function(payload, channel)" end
  local sub = subscriber(self)
  local had = self.handlers[channel]
  self.handlers[channel] = fn
  if had then return true end
  if sub.status == "ready" then -- else on_ready subscribes every channel once connected
    local ok, err = sub.conn:subscribe("SUBSCRIBE", channel)
    if not ok then return nil, "redis: " .. err end
  end
  if not task.current() then return true end
  local timeout = self.opts.timeout
  return task.await("redis:subscribe", function(resume)
    local timer
    local function done(v, e)
      stop_timer(timer)
      resume(v, e)
    end
    if timeout then
      timer = core.timer(timeout, 0, function()
        timer = nil
        resume(nil, str_format("redis: SUBSCRIBE %s timed out after %g s", channel, timeout))
      end)
    end
    local list = self.sub_waiters[channel] or {}
    self.sub_waiters[channel] = list
    list[#list + 1] = done
  end)
end

--- r:unsubscribe(channel) -> true
function Client:unsubscribe(channel)
  if not self.sub or not self.handlers[channel] then return true end
  self.handlers[channel] = nil
  if self.sub.status == "ready" then self.sub.conn:subscribe("UNSUBSCRIBE", channel) end
  return true
end

--- nano.redis._shutdown(): nano.shutdown() started: clients stop reconnecting, and calls wait
--- no longer for a connection that is down. Open connections go on serving the shutdown hooks
--- and the handlers still finishing; an idle one does not keep the loop alive.
function M._shutdown()
  stopping = true
  for c in pairs(open) do
    for _, cl in ipairs({ c, c.sub }) do
      if cl.retry then
        cl.retry:stop()
        cl.retry = nil
        fail_waiting(cl, "redis: not connected, and the server is shutting down")
      end
    end
  end
end

--- nano.redis.close_all(): closes every open client (once the server has stopped, after the
--- shutdown hooks; calls still in flight get "redis: client closed").
function M.close_all()
  for c in pairs(open) do c:close() end
  stopping = false
end

--- nano.redis.count() -> connections not yet freed (leak checks)
M.count = rc.count

return M
