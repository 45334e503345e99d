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
-- The host's own series counted on the Lua side (docs/operating.md, "Metrics"): the cluster's
-- RPCs and forwarded requests, the storage clients' queries, the HTTP client's requests.
-- Label values come from fixed lists or the game's own code (a client kind, a name given to
-- nano.redis.connect...), never from a query's text or what a client sent.
--
-- Cost per call: two clock reads (start, end) and two updates by series index (no label
-- strings cross into C, no label comparison; the end's clock read and both updates are one C
-- call, mc.done); the indexes are looked up once per label set and kept in a Calls object (one
-- per client, per target type, per method). FFI calls instead of the C API measured worse
-- (callgrind: about 3,000 more instructions per db:exec; this code runs interpreted, where an
-- FFI call costs more than a lua_CFunction).

local hrtime = require("nano.core").hrtime
local mc_series, mc_done = mc.series, mc.done

--- The clock the host's series time calls with (a monotonic real clock, seconds).
M.clock = hrtime

-- Sub-millisecond first buckets: an SQLite statement or a loopback round trip takes about 0.1 ms.
M.CALL_BUCKETS = { 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10 }

local SHAPES = {
  cluster_rpc = {
    total = "nano_cluster_rpc_total", seconds = "nano_cluster_rpc_seconds", labels = { "target" },
    help_total = "nano.rpc calls made by this server, by target server type and outcome (ok, "
      .. "error: the handler failed, timeout, unavailable: no server of that type or it left).",
    help_seconds = "nano.rpc call time until its result or error, by target server type.",
  },
  cluster_forwarded = {
    total = "nano_cluster_forwarded_total", seconds = "nano_cluster_forwarded_seconds",
    labels = { "target" },
    help_total = "Client messages this gate forwarded to a backend, by backend server type and "
      .. "outcome (requests: ok, error, timeout, unavailable; notifications: notify, unavailable).",
    help_seconds = "Forwarded request time until the backend's response, by backend server type.",
  },
  storage = {
    total = "nano_storage_queries_total", seconds = "nano_storage_query_seconds",
    labels = { "client", "name" },
    help_total = "Storage calls (db:exec, pg:query, tx:query, r:call), by client kind (sqlite, pg, "
      .. "redis), the name given to the client (\"default\" if none) and outcome (ok, error).",
    help_seconds = "Storage call time, queueing for a connection included, by client kind and name.",
  },
  http_client = {
    total = "nano_http_client_requests_total", seconds = "nano_http_client_request_seconds",
    labels = { "method" },
    help_total = "Requests made with nano.http, by method (GET, POST, ...; other) and outcome "
      .. "(the status class 1xx..5xx, or error: no response).",
    help_seconds = "nano.http request time until the response or the error, by method.",
  },
}

local families = {} -- shape -> { total = handle, seconds = handle }, defined on first use

local function host_families(shape)
  local f = families[shape]
  if f then return f end
  local sh = SHAPES[shape]
  local with_outcome = {}
  for i, l in ipairs(sh.labels) do with_outcome[i] = l end
  with_outcome[#with_outcome + 1] = "outcome"
  f = {
    total = mc.family(sh.total, sh.help_total, "counter", with_outcome, nil, true),
    seconds = mc.family(sh.seconds, sh.help_seconds, "histogram", sh.labels, M.CALL_BUCKETS, true),
  }
  families[shape] = f
  return f
end

-- The series of one label set (a client, a target type, a method): calls:done(outcome, t0).
local Calls = {}
Calls.__index = Calls

local function calls(shape, a, b)
  local f = host_families(shape)
  -- nil past a family's series limit (the game named clients without end): not counted then
  local si = b == nil and mc_series(f.seconds, a) or mc_series(f.seconds, a, b)
  return setmetatable({ total = f.total, seconds = f.seconds, a = a, b = b, si = si or false,
    outcomes = {} }, Calls)
end

--- One call: total{..., outcome} += 1; seconds{...} observes the time since t0 (not when t0 is
--- nil: a notification has no answer to wait for).
function Calls:done(outcome, t0)
  local i = self.outcomes[outcome]
  if i == nil then
    local total = self.total
    if self.b == nil then i = mc_series(total, self.a, outcome) else i = mc_series(total, self.a, self.b, outcome) end
    i = i or false
    self.outcomes[outcome] = i
  end
  mc_done(self.total, i, self.seconds, self.si, t0)
end

local by_target = { cluster_rpc = {}, cluster_forwarded = {} }

-- The Calls of a target server type ("unknown" when no member announced it: cluster.lua).
local function target_calls(shape, target)
  local c = by_target[shape][target]
  if not c then
    c = calls(shape, target)
    by_target[shape][target] = c
  end
  return c
end

--- One nano.rpc call (target: a server type or "unknown"; outcome: ok, error, timeout, unavailable).
function M.rpc_done(target, outcome, t0) target_calls("cluster_rpc", target):done(outcome, t0) end

--- One forwarded client message (t0 nil for a notification).
function M.forward_done(target, outcome, t0) target_calls("cluster_forwarded", target):done(outcome, t0) end

--- A storage client's series: client kind ("sqlite", "pg", "redis") and the name the game gave
--- it; calls:done(failed and "error" or "ok", t0) once per call.
function M.storage_calls(client, name) return calls("storage", client, name) end

local METHODS = { GET = true, HEAD = true, POST = true, PUT = true, PATCH = true, DELETE = true,
  OPTIONS = true }
local CLASSES = { "1xx", "2xx", "3xx", "4xx", "5xx" }
local by_method = {}

--- One nano.http request: its method (any other than the standard ones is "other") and status.
function M.http_done(method, status, t0)
  local m = METHODS[method] and method or "other"
  local c = by_method[m]
  if not c then
    c = calls("http_client", m)
    by_method[m] = c
  end
  c:done(type(status) == "number" and CLASSES[(status - status % 100) / 100] or "error", t0)
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
