-- nano.listen_metrics and nano.metrics: Prometheus metrics and a health check for operators.
--
--   nano.listen_metrics("127.0.0.1:9100" [, { drain = 5 }]) -> bound address
--     GET /metrics (text format 0.0.4), GET /healthz (200 serving, 503 shutting down). `drain`
--     keeps the listener up that many seconds after shutdown starts, so that a load balancer
--     polling /healthz sees the 503 before the port goes away.
--   local c = nano.metrics.counter("game_matches_total", "Matches started.", { "mode" })
--   c:inc(1, { mode = "duel" })               -- or c:inc() when it has no labels
--   local g = nano.metrics.gauge("game_rooms", "Rooms open.")
--   g:set(12); g:inc(); g:dec(2)
--   local h = nano.metrics.histogram("game_match_seconds", "Match length.", {}, { 60, 300, 900 })
--   h:observe(412)
--
-- The core's own series (nano_*) are counted in C (core/metrics.h); these are Lua's, exported on
-- the same endpoint. A definition run again with the same shape (hot reload) returns the same
-- metric; a clash raises. Each metric holds at most 1000 label combinations: an update past that
-- returns nil, err (so a label fed from client input cannot grow without bound).
local mc = require "nano.metrics_core"

local M = {}

local Metric = {}
Metric.__index = Metric

-- Label values in the order of the metric's label names, from { name = value } or { v1, v2 }.
local function values(self, labels, level)
  local names = self.labels
  if #names == 0 then return end
  if type(labels) ~= "table" then
    error(string.format("metric '%s': expected label values { %s = ... }", self.name, names[1]), level)
  end
  local out = {}
  for i, name in ipairs(names) do
    local v = labels[name]
    if v == nil then v = labels[i] end
    if v == nil then error(string.format("metric '%s': label '%s' missing", self.name, name), level) end
    out[i] = tostring(v)
  end
  return unpack(out, 1, #names)
end

local function update(self, set, v, labels)
  if type(v) ~= "number" then error(string.format("metric '%s': expected a number", self.name), 3) end
  return mc.update(self.handle, set, v, values(self, labels, 4))
end

function Metric:inc(n, labels)
  if type(n) == "table" then n, labels = 1, n end
  n = n or 1
  if self.kind == "counter" and n < 0 then
    error(string.format("counter '%s' cannot go down", self.name), 2)
  end
  return update(self, false, n, labels)
end

function Metric:dec(n, labels)
  if self.kind ~= "gauge" then error(string.format("metric '%s' is not a gauge", self.name), 2) end
  if type(n) == "table" then n, labels = 1, n end
  return update(self, false, -(n or 1), labels)
end

function Metric:set(v, labels)
  if self.kind ~= "gauge" then error(string.format("metric '%s' is not a gauge", self.name), 2) end
  return update(self, true, v, labels)
end

function Metric:observe(v, labels)
  if self.kind ~= "histogram" then error(string.format("metric '%s' is not a histogram", self.name), 2) end
  return update(self, false, v, labels)
end

local function define(kind, name, help, labels, buckets)
  if type(name) ~= "string" then error("metrics." .. kind .. ": expected a name", 3) end
  if help ~= nil and type(help) ~= "string" then error("metrics." .. kind .. ": help must be a string", 3) end
  if labels ~= nil and type(labels) ~= "table" then
    error("metrics." .. kind .. ": labels must be a list of names", 3)
  end
  local names = {}
  for i, l in ipairs(labels or {}) do names[i] = l end
  local ok, handle = pcall(mc.family, name, help or "", kind, names, buckets)
  if not ok then error(handle, 3) end
  return setmetatable({ kind = kind, name = name, labels = names, handle = handle }, Metric)
end

M.DEFAULT_BUCKETS = { 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10 }

function M.counter(name, help, labels) return define("counter", name, help, labels) end
function M.gauge(name, help, labels) return define("gauge", name, help, labels) end
function M.histogram(name, help, labels, buckets)
  return define("histogram", name, help, labels, buckets or M.DEFAULT_BUCKETS)
end

-- ---------------------------------------------------------------------------------------------
-- The core's own series kept by Lua modules: cluster RPCs (cluster.lua), storage queries
-- (sqlite.lua, redis.lua, pg.lua), the HTTP client (http.lua). docs/operating.md lists them.
-- Each module looks its series up once (a label set is fixed when a client is made, or is one of
-- a few outcomes) and then bumps them by index: per call one clock read at each end and two C
-- calls with numbers only. Label values never come from a query text or a client.

local clock = mc.clock -- uv_hrtime in seconds, as nano.core's hrtime
M.clock = clock
local record = mc.record -- (counter, i, histogram, j, t0): counts one, observes clock() - t0

-- the same as the core's handler latency (core/metrics.c): half a millisecond to ten seconds
local LATENCY = { 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10 }

local core_families = {}

local function core_family(kind, name, help, labels, buckets)
  local f = core_families[name]
  if not f then
    f = { handle = mc.core_family(name, help, kind, labels, buckets), index = {} }
    core_families[name] = f
  end
  return f
end

-- the series' index, or false past the family's series limit (then nothing is counted)
local function series_of(f, key, ...)
  local i = f.index[key]
  if i == nil then
    i = mc.series(f.handle, ...) or false
    f.index[key] = i
  end
  return i
end

local bump = mc.bump

local function bumper(f, i)
  if not i then return function() end end
  local h = f.handle
  return function(v) bump(h, i, v) end
end

local STORAGE_OUTCOMES = { "ok", "error" }

--- A storage client's recorder: rec(t0, ok) after each query, t0 = metrics.clock() before it.
--- kind: "sqlite" | "redis" | "pg"; name: the client's name (opts.name), "default" without one.
function M._storage(kind, name)
  local q = core_family("counter", "nano_storage_queries_total",
    "Storage queries (db:exec, r:call, pg:query) by client kind, client name and outcome.",
    { "client", "name", "outcome" })
  local s = core_family("histogram", "nano_storage_query_seconds",
    "Storage query latency as the caller waits for it (queueing included), by client.",
    { "client", "name" }, LATENCY)
  local key = kind .. "\0" .. name
  local out = {}
  for _, o in ipairs(STORAGE_OUTCOMES) do out[o] = series_of(q, key .. "\0" .. o, kind, name, o) end
  -- past a family's series limit a series is false: its handle is nil too, and record skips it
  local ok_i, err_i, s_i = out.ok, out.error, series_of(s, key, kind, name)
  local okh, errh, sh = ok_i and q.handle, err_i and q.handle, s_i and s.handle
  ok_i, err_i, s_i = ok_i or 0, err_i or 0, s_i or 0
  return function(t0, ok)
    if ok then record(okh, ok_i, sh, s_i, t0) else record(errh, err_i, sh, s_i, t0) end
  end
end

--- the name in a client's options (a short plain word), "default" without one | nil, err
function M._client_name(opts, what)
  local name = opts and opts.name
  if name == nil then return "default" end
  if type(name) ~= "string" or not name:match("^[%w_.%-]+$") or #name > 64 then
    return nil, what .. ": opts.name must be 1 to 64 letters, digits, '_', '.' or '-'"
  end
  return name
end

local RPC_OUTCOMES = { ok = true, error = true, timeout = true, unavailable = true }

-- A recorder over a counter by (target, outcome) and a latency histogram by target:
-- fn(target, outcome, t0) counts the call and, when t0 is given, observes its latency. Each
-- target's series are made at its first call (the outcomes are a fixed set).
local function by_target(c, s, outcomes)
  local by = {} -- target -> outcome -> { counter handle, index, histogram handle, index }
  return function(target, outcome, t0)
    local t = by[target]
    if not t then
      t = {}
      local j = series_of(s, target, target)
      for o in pairs(outcomes) do
        local i = series_of(c, target .. "\0" .. o, target, o)
        t[o] = { i and c.handle, i or 0, j and s.handle, j or 0 }
      end
      by[target] = t
    end
    local r = t[outcome]
    if t0 then
      record(r[1], r[2], r[3], r[4], t0)
    elseif r[1] then
      bump(r[1], r[2], 1)
    end
  end
end

--- cluster RPCs: rpc(target_type, outcome, t0); outcome ok | error | timeout | unavailable
function M._rpc_recorder()
  local c = core_family("counter", "nano_cluster_rpc_total",
    "nano.rpc calls by target server type and outcome (ok, error, timeout, unavailable).",
    { "target", "outcome" })
  local s = core_family("histogram", "nano_cluster_rpc_seconds",
    "nano.rpc latency by target server type, failed calls included.", { "target" }, LATENCY)
  return by_target(c, s, RPC_OUTCOMES)
end

local FORWARD_OUTCOMES = { ok = true, error = true, timeout = true, unavailable = true, notify = true }

--- client messages a gate forwarded: fwd(target_type, outcome, t0); outcome ok | error | timeout |
--- unavailable for requests (t0: when it was forwarded), notify | unavailable for notifications
--- (t0 nil: nothing is waited for, so no latency is observed)
function M._forward_recorder()
  local c = core_family("counter", "nano_cluster_forwarded_total",
    "Client messages this gate forwarded to a backend, by backend server type and outcome "
      .. "(requests: ok, error, timeout, unavailable; notifications: notify, unavailable).",
    { "target", "outcome" })
  local s = core_family("histogram", "nano_cluster_forwarded_seconds",
    "Forwarded requests' time until the backend's response, by backend server type.",
    { "target" }, LATENCY)
  return by_target(c, s, FORWARD_OUTCOMES)
end

--- cluster envelopes: msg(direction, kind) with kind one of a fixed set (else "other")
function M._cluster_messages(kinds)
  local c = core_family("counter", "nano_cluster_messages_total",
    "Cluster envelopes sent and received, by direction and kind (fwd: a forwarded client "
      .. "message, rpc/rpcres: an RPC and its result, push/resp/kick...: a backend's session "
      .. "operation, grp: a group broadcast).",
    { "direction", "kind" })
  local by = { out = {}, ["in"] = {} }
  for dir, t in pairs(by) do
    for _, k in ipairs(kinds) do t[k] = bumper(c, series_of(c, dir .. k, dir, k)) end
    t.other = bumper(c, series_of(c, dir .. "\0other", dir, "other"))
  end
  return function(dir, kind)
    local t = by[dir]
    local f = t[kind] or t.other
    f(1)
  end
end

local HTTP_METHODS = { GET = true, POST = true, PUT = true, DELETE = true, PATCH = true, HEAD = true,
  OPTIONS = true }

--- the HTTP client: rec(method, status | nil, t0); method outside the usual ones is "other",
--- outcome is the status class (2xx...) or "error" when no response came
function M._http_recorder()
  local c = core_family("counter", "nano_http_client_requests_total",
    "nano.http requests by method and outcome (the status class 1xx..5xx, or error: no response).",
    { "method", "outcome" })
  local s = core_family("histogram", "nano_http_client_request_seconds",
    "nano.http request latency by method, failed requests included.", { "method" }, LATENCY)
  local by = {}
  local classes = { "1xx", "2xx", "3xx", "4xx", "5xx" }
  return function(method, status, t0)
    local m = HTTP_METHODS[method] and method or "other"
    local o = status and classes[math.floor(status / 100)] or "error"
    local t = by[m]
    if not t then
      t = {}
      by[m] = t
    end
    local r = t[o]
    if not r then
      local i, j = series_of(c, m .. "\0" .. o, m, o), series_of(s, m, m)
      r = { i and c.handle, i or 0, j and s.handle, j or 0 }
      t[o] = r
    end
    record(r[1], r[2], r[3], r[4], t0)
  end
end

function M.attach(nano)
  nano.metrics = M
  --- nano.listen_metrics(addr [, { drain = secs }]) -> bound address
  function nano.listen_metrics(addr, opts)
    if type(addr) ~= "string" then error("listen_metrics: expected an address like \"127.0.0.1:9100\"", 2) end
    if opts ~= nil and type(opts) ~= "table" then error("listen_metrics: opts must be a table", 2) end
    local drain = opts and opts.drain or 0
    if type(drain) ~= "number" or drain < 0 or drain > 3600 then
      error("listen_metrics: drain must be 0 to 3600 seconds", 2)
    end
    local ok, bound = pcall(mc.listen, addr, drain)
    if not ok then error(bound, 2) end
    return bound
  end
end

return M
