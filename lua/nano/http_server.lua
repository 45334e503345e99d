-- nano.http.route: HTTP endpoints in Lua, served on the HTTP side of every WebSocket listener
-- (before its static folders; a plain GET on the WebSocket path itself too) and on the metrics
-- listener (nano.listen_metrics) beside /metrics and /healthz. One route table for both.
-- (The client half of nano.http is http.lua.)
--
--   nano.http.route("POST", "/login", function(req)
--     -- req = { method, path, query, headers, body, json, remote_addr }
--     return { status = 200, headers = { ["X-Game"] = "chat" }, body = { token = "..." } }
--   end)
--
-- A handler runs in a task (it may wait: nano.sleep, nano.http.get, queries); the watchdog
-- applies. Its result: a table { status = 200, headers = {...}, body = string | table } (a table
-- body is sent as JSON), or a string (200, text/plain). An error is a 500 (the message is logged,
-- not sent). No route for the path: 404; a route but not for the method: 405 (GET routes answer
-- HEAD too). Paths match exactly. On a WebSocket listener a path no route has goes on to the
-- static folders (then 404, or 400 on the WebSocket path). Limits on both listeners: head 8 KiB
-- (431), body 1 MiB (413); keep-alive; requests on one connection are answered in order.
-- Hot reload: the main script runs again and registers its routes again; a route the new
-- script no longer registers is gone (the table is rebuilt on every run of the main script).
local mc = require "nano.metrics_core"
local json = require "nano.json"
local scope = require "nano.scope"

local M = {}

local function unescape(s)
  return (s:gsub("+", " "):gsub("%%(%x%x)", function(h) return string.char(tonumber(h, 16)) end))
end

local function parse_query(q)
  local out = {}
  for pair in q:gmatch("[^&]+") do
    local k, v = pair:match("^([^=]*)=?(.*)$")
    if k and k ~= "" then out[unescape(k)] = unescape(v) end
  end
  return out
end

local STATUS_TEXT = "text/plain; charset=utf-8"

local function header_lines(headers, default_type)
  local lines, has_type = {}, false
  for k, v in pairs(headers or {}) do
    k, v = tostring(k), tostring(v)
    if k:find("[\r\n:]") or v:find("[\r\n]") then error("bad header " .. string.format("%q", k), 0) end
    local lk = k:lower()
    if lk ~= "content-length" and lk ~= "connection" then
      if lk == "content-type" then has_type = true end
      lines[#lines + 1] = k .. ": " .. v .. "\r\n"
    end
  end
  if not has_type then lines[#lines + 1] = "Content-Type: " .. default_type .. "\r\n" end
  return table.concat(lines)
end

function M.attach(nano)
  nano.http = nano.http or {}
  local routes = {} -- path -> { METHOD = fn }
  local generation -- the main script run that registered them

  -- via: nil on the metrics listener, "ws" on a WebSocket listener (where the ids come from)
  local function reply(id, via, status, headers, body, ctype)
    local ok, lines = pcall(header_lines, headers, ctype)
    if not ok then
      nano.log.error("http route: %s", lines)
      return mc.http_respond(id, 500, "Content-Type: " .. STATUS_TEXT .. "\r\n", "internal error\n", via)
    end
    return mc.http_respond(id, status, lines, body, via)
  end

  -- Returns false when no route has the path on a WebSocket listener (its static folders are
  -- next); true when the request is taken (answered now or by the handler's task).
  local function dispatch(id, method, target, headers, body, remote, via)
    local path, query = target:match("^([^?]*)%??(.*)$")
    if path and path:sub(1, 1) ~= "/" then -- absolute-form target ("http://host/path?q")
      path = path:match("^%a[%w+.-]*://[^/]*(/.*)$") or "/"
    end
    local by_method = routes[path]
    if not by_method then
      if via then return false end
      reply(id, via, 404, nil, "404 not found: " .. path .. "\n", STATUS_TEXT)
      return true
    end
    local function answer(...) return reply(id, via, ...) end
    local fn = by_method[method] or (method == "HEAD" and by_method.GET)
    if not fn then
      local allowed = {}
      for m in pairs(by_method) do allowed[#allowed + 1] = m end
      table.sort(allowed)
      answer(405, { Allow = table.concat(allowed, ", ") }, "405 method not allowed: " .. method .. "\n",
             STATUS_TEXT)
      return true
    end
    local req = { method = method, path = path, query = parse_query(query or ""), headers = headers,
                  body = body, remote_addr = remote }
    if (headers["content-type"] or ""):find("json", 1, true) and body ~= "" then
      local ok, v = pcall(json.unmarshal, body)
      if not ok then
        answer(400, nil, "400 body is not JSON\n", STATUS_TEXT)
        return true
      end
      req.json = v
    end
    nano.spawn(function()
      local ok, res = xpcall(fn, debug.traceback, req)
      if not ok then
        nano.log.error("http %s %s: %s", method, path, tostring(res))
        return answer(500, nil, "500 internal error\n", STATUS_TEXT)
      end
      if type(res) == "string" then return answer(200, nil, res, STATUS_TEXT) end
      if type(res) ~= "table" then
        nano.log.error("http %s %s: the handler returned %s, not a table or string", method, path, type(res))
        return answer(500, nil, "500 internal error\n", STATUS_TEXT)
      end
      local status = tonumber(res.status) or 200
      local b, ctype = res.body, STATUS_TEXT
      if type(b) == "table" then
        local jok, out = pcall(json.marshal, b)
        if not jok then
          nano.log.error("http %s %s: body does not serialize: %s", method, path, tostring(out))
          return answer(500, nil, "500 internal error\n", STATUS_TEXT)
        end
        b, ctype = out, "application/json"
      elseif b == nil then
        b = ""
      end
      local rok, err = pcall(answer, status, res.headers, tostring(b), ctype)
      if not rok then
        nano.log.error("http %s %s: %s", method, path, tostring(err))
        answer(500, nil, "500 internal error\n", STATUS_TEXT)
      end
    end)
    return true
  end

  --- nano.http.route(method, path, fn(req) -> res)
  function nano.http.route(method, path, fn)
    if type(method) ~= "string" or not method:match("^%u+$") then
      error("http.route: method must be like \"GET\" or \"POST\"", 2)
    end
    if type(path) ~= "string" or path:sub(1, 1) ~= "/" or path:find("[?#%s]") then
      error("http.route: path must start with / (no query)", 2)
    end
    if type(fn) ~= "function" then error("http.route: expected a handler function", 2) end
    if path == "/metrics" or path == "/healthz" then error("http.route: " .. path .. " is the core's", 2) end
    local run = nano._main_runs and nano._main_runs() or 0
    if generation ~= run then -- a new run of the main script (hot reload): start afresh
      local before, gen = routes, generation
      routes, generation = {}, run
      -- a reload that fails changes nothing: the routes its partial run registered are dropped
      scope.record(function() routes, generation = before, gen end, false)
    end
    routes[path] = routes[path] or {}
    routes[path][method] = fn
    mc.http_router(dispatch)
  end

  local stopped = nano._stopped
  function nano._stopped(...)
    mc.http_router(nil) -- releases the router's registry reference
    return stopped(...)
  end
end

return M
