-- nano.http: an HTTP client that waits without blocking the loop (libcurl's multi interface on
-- libuv: core/http_client.c). Call it from a handler, hook, timer callback or task.
--
--   local res, err = nano.http.request{ method = "POST", url = "https://api.example.com/login",
--     headers = { ["content-type"] = "application/json" }, body = json, timeout = 5 }
--   -- res = { status = 200, headers = { ["content-type"] = "..." }, body = "..." } | nil, err
--   local res, err = nano.http.get("http://127.0.0.1:8080/status" [, { timeout = 2 }])
--
-- A 4xx or 5xx is a response (check res.status); nil, err is for what gave no response: a
-- refused connection, DNS, TLS, a timeout, a response over max_response (16 MiB by default).
-- Redirects are not followed unless redirects = true (or a number: the most to follow).
local core = require "nano.http_core"
local task = require "nano.task"
local metrics = require "nano.metrics"
local clock = metrics.clock

local type, pairs = type, pairs

local M = {}

--- nano.http.request{ method=, url=, headers=, body=, timeout=, redirects=, max_response=,
--- proxy=, insecure= } -> res | nil, err
function M.request(opts)
  if type(opts) ~= "table" then error("http.request: expected a table of options", 2) end
  if type(opts.url) ~= "string" then error("http.request: url is required", 2) end
  local t0 = clock()
  local res, err = task.await("nano.http.request", function(resume)
    local id, err = core.request(opts, function(r, e) resume(r, e) end)
    if not id then resume(nil, err) end
  end)
  M._rec = M._rec or metrics._http_recorder()
  M._rec(opts.method or "GET", res and res.status, t0)
  return res, err
end

--- nano.http.get(url [, opts]) -> res | nil, err
function M.get(url, opts)
  local o = { url = url, method = "GET" }
  for k, v in pairs(opts or {}) do o[k] = v end
  return M.request(o)
end

--- nano.http.in_flight() -> requests not answered yet
M.in_flight = core.in_flight

-- Every pending request dropped (their tasks are not resumed) and the connections closed: at
-- shutdown and between nano.test servers.
M._close = core.close

return M
