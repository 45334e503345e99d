-- The admin console's commands (`nano-host console`): policy in Lua, the socket in C
-- (core/console.c, nano.console_core).
--
-- Started by `nano-host main.lua` once the script has loaded, on nano.console_core.default_path()
-- (/tmp/nano-host-<pid>.sock, or under $NANO_HOST_RUN_DIR / $XDG_RUNTIME_DIR), owner only.
-- nano.configure{ console = "/run/game/console.sock" } moves it, { console = false } turns it off.
--
-- Commands: help, stats, sessions [n], session ID, kick ID, groups, routes, reload, log LEVEL,
-- eval LUA. eval runs LUA in a task on the loop thread (it may wait: nano.sleep), prints what it
-- printed and what it returned; an error is answered as an error; the watchdog stops a loop.
local cc = require "nano.console_core"
local core = require "nano.core"

local M = {}

local concat, sort, str_format = table.concat, table.sort, string.format
local setting -- nil: the default path; false: off; a string: that path

local HELP = [[
stats            the host's counters (nano.stats())
sessions [n]     the first n sessions (default 20): id, uid, transport, address
session ID       one session: uid, state, groups, address, last message id
kick ID          kicks the session (a kick packet, then close)
groups           every group and its member count
routes           the registered routes
reload           hot reload of the scripts (as SIGHUP)
log LEVEL        sets the log level: debug, info, warn, error, off
eval LUA         runs LUA on the loop thread; prints its output and results
help             this text]]

local function fmt_value(v)
  if type(v) == "table" then
    local ok, json = pcall(require("nano.json").marshal, v)
    if ok then return json end
  end
  if type(v) == "string" then return str_format("%q", v) end
  return tostring(v)
end

local function find_session(arg)
  local id = tonumber(arg)
  if not id then return nil, "expected a session id (a number)" end
  for _, s in ipairs(core.sessions()) do
    if s:id() == id then return s end
  end
  return nil, "no session " .. tostring(arg)
end

local function group_names(nano, s)
  local r = nano._state.session_groups
  local names = {}
  for g in pairs(r and r[s] or {}) do names[#names + 1] = g:name() end
  sort(names)
  return names
end

local function describe(s)
  local state = s:is_closed() and "closed" or "open"
  return str_format("%d\tuid=%s\t%s\t%s\t%s", s:id(), tostring(s:uid() or "-"), s:transport() or "?",
                    s:remote_addr() or "?", state)
end

-- Runs LUA in a task; reply(ok, text) when it has finished (perhaps after waiting).
local function eval(nano, code, reply)
  local chunk, err = loadstring("return " .. code, "=console")
  if not chunk then chunk, err = loadstring(code, "=console") end
  if not chunk then return reply(false, err) end
  local out = {}
  local env = setmetatable({
    print = function(...)
      local parts = {}
      for i = 1, select("#", ...) do parts[i] = tostring((select(i, ...))) end
      out[#out + 1] = concat(parts, "\t")
    end,
    nano = nano,
  }, { __index = _G })
  setfenv(chunk, env)
  -- Interpreted, never compiled: the watchdog's hook cannot stop a JIT-compiled loop, and an
  -- operator's one-liner gains nothing from the compiler.
  if jit then jit.off(chunk, true) end
  nano.spawn(function()
    local res = { xpcall(chunk, function(e) return tostring(e) end) }
    if not res[1] then
      out[#out + 1] = tostring(res[2])
      return reply(false, concat(out, "\n"))
    end
    for i = 2, table.maxn(res) do out[#out + 1] = fmt_value(res[i]) end
    reply(true, concat(out, "\n"))
  end)
end

local commands = {}

function commands.help() return true, HELP end

function commands.stats(nano)
  local st, keys, lines = nano.stats(), {}, {}
  for k in pairs(st) do keys[#keys + 1] = k end
  sort(keys)
  for i, k in ipairs(keys) do lines[i] = str_format("%-20s %s", k, tostring(st[k])) end
  return true, concat(lines, "\n")
end

function commands.sessions(_, arg)
  local n = 20
  if arg ~= "" then
    n = tonumber(arg)
    if not n or n < 1 or n % 1 ~= 0 then return false, "sessions [n]: n is a positive integer" end
  end
  local all, lines = core.sessions(), {}
  sort(all, function(a, b) return a:id() < b:id() end)
  for i = 1, math.min(n, #all) do lines[i] = describe(all[i]) end
  lines[#lines + 1] = str_format("(%d of %d sessions)", math.min(n, #all), #all)
  return true, concat(lines, "\n")
end

function commands.session(nano, arg)
  local s, err = find_session(arg)
  if not s then return false, err end
  local groups = group_names(nano, s)
  return true, concat({
    "id        " .. s:id(),
    "uid       " .. tostring(s:uid() or "-"),
    "state     " .. (s:is_closed() and "closed" or "open"),
    "transport " .. tostring(s:transport()),
    "address   " .. tostring(s:remote_addr()),
    "last_mid  " .. tostring(s:last_mid()),
    "groups    " .. (#groups > 0 and concat(groups, ", ") or "-"),
  }, "\n")
end

function commands.kick(_, arg)
  local s, err = find_session(arg)
  if not s then return false, err end
  s:kick()
  return true, "kicked session " .. s:id()
end

function commands.groups(nano)
  local list = {}
  for g in pairs(nano._all_groups and nano._all_groups() or {}) do list[#list + 1] = g end
  sort(list, function(a, b) return a:name() < b:name() end)
  local lines = {}
  for i, g in ipairs(list) do lines[i] = str_format("%s\t%d members", g:name(), g:count()) end
  lines[#lines + 1] = str_format("(%d groups)", #list)
  return true, concat(lines, "\n")
end

function commands.routes(nano)
  local r = nano.routes()
  return true, #r > 0 and concat(r, "\n") or "(no routes)"
end

function commands.reload(nano)
  local ok, err = nano.reload()
  if not ok then return false, "reload failed: " .. tostring(err) end
  return true, "reloaded"
end

function commands.log(nano, arg)
  if arg == "" then return false, "log LEVEL: debug, info, warn, error or off" end
  local ok, err = pcall(nano.set_log_level, arg)
  if not ok then return false, (tostring(err):gsub("^.-: ", "")) end
  return true, "log level " .. arg
end

-- One command line; reply(ok, text) exactly once (eval may answer later).
function M.handle(nano, line, reply)
  local name, arg = line:match("^%s*(%S+)%s*(.-)%s*$")
  if not name then return reply(false, "empty command; try help") end
  if name == "eval" then
    if arg == "" then return reply(false, "eval LUA: give some Lua") end
    return eval(nano, arg, reply)
  end
  local fn = commands[name]
  if not fn then return reply(false, "unknown command '" .. name .. "'; try help") end
  local ok, res, text = pcall(fn, nano, arg)
  if not ok then return reply(false, tostring(res)) end
  reply(res, text)
end

function M.attach(nano)
  local configure = nano.configure
  --- nano.configure{ console = path | false, ... }: the console's socket (see above)
  function nano.configure(t)
    if type(t) == "table" and t.console ~= nil then
      local c = t.console
      if c ~= false and (type(c) ~= "string" or c == "") then
        error("configure: console must be a socket path or false", 2)
      end
      local rest = {}
      for k, v in pairs(t) do if k ~= "console" then rest[k] = v end end
      local ok, err = pcall(configure, rest)
      if not ok then error(err, 2) end
      setting = c
      return
    end
    local ok, err = pcall(configure, t)
    if not ok then error(err, 2) end
  end

  -- host.lua: after the main script has loaded
  function nano._console_start()
    if setting == false then return end
    local path = setting or cc.default_path()
    local ok, err = cc.start(path, function(id, line)
      local answered = false
      M.handle(nano, line, function(good, text)
        if answered then return end
        answered = true
        cc.reply(id, good, text or "")
      end)
    end)
    if not ok then nano.log.warn("%s (the console is off)", err) end
  end

  function nano._console_stop() cc.close() end
end

return M
