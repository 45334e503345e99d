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
