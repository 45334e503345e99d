-- nano.test: game logic tested with busted against the real core, in-process.
--
--   local nt = require "nano.test"
--   local server = nt.start("main.lua")        -- fresh state, script loaded, loopback ports
--   local a = server:connect()                 -- a nano.client, handshake done
--   assert.same({ code = 0 }, a:request("Room.join", { uid = 7 }))
--   server:advance(60)                         -- virtual time: timers and heartbeats, in order
--   server:stop()                              -- everything released (checked)
--
-- One server at a time per process (there is one host); nt.start stops the previous one. Every
-- nano.listen of the script binds 127.0.0.1:0, so specs never collide on ports and can run in
-- parallel processes. See docs/testing.md.
local core = require "nano.core"
local tcp = require "nano.tcp"
local nano = require "nano"
local client = require "nano.client"

local type, pairs, ipairs, tostring, error, setmetatable = type, pairs, ipairs, tostring, error, setmetatable
local str_format, floor, max, min = string.format, math.floor, math.max, math.min

local nt = {
  timeout = 5, -- seconds of real time that waits (connect, request, wait_push, wait_until) allow
}

local current -- the running server
local real_listen = nano.listen

-- ---------------------------------------------------------------------------------------------
-- paths and project modules

local ffi = require "ffi"
pcall(ffi.cdef, "char *getcwd(char *buf, size_t size);")

local function cwd()
  local buf = ffi.new("char[?]", 4096)
  if ffi.C.getcwd(buf, 4096) == nil then return os.getenv("PWD") or "." end
  return ffi.string(buf)
end

local function absolute(path)
  if path:sub(1, 1) == "/" then return path end
  return (cwd() .. "/" .. path):gsub("/%./", "/")
end

local function dirname(path)
  return path:match("^(.*)/[^/]*$") or "."
end

local function file_exists(path)
  local f = io.open(path, "r")
  if f then f:close() end
  return f ~= nil
end

-- Modules loaded when nano.test was: never dropped (nano itself, busted, ...).
local baseline = {}
for name in pairs(package.loaded) do baseline[name] = true end

local function under(file, dir)
  return dir and file:sub(1, #dir + 1) == dir .. "/"
end

-- Drops the modules whose file is under one of `dirs` (the script's folder, the current one)
-- from package.loaded, so that the next require loads them fresh: module-level game state (a
-- members table) starts empty in every spec. nano's own modules stay.
local located = {} -- search path -> module name -> absolute file (found files don't move)

local function drop_project_modules(dirs)
  local search = ""
  for _, dir in ipairs(dirs) do search = search .. dir .. "/?.lua;" .. dir .. "/?/init.lua;" end
  search = search .. package.path
  local cache = located[search]
  if not cache then
    cache = {}
    located[search] = cache
  end
  local nano_dir = package.nano_lua_dir and absolute(package.nano_lua_dir)
  for name in pairs(package.loaded) do
    if not baseline[name] and type(name) == "string" then
      local file = cache[name]
      if not file then -- not found is not cached: the file may appear (a spec writing a project)
        file = package.searchpath(name, search)
        file = file and absolute(file)
        cache[name] = file
      end
      if file then
        if not under(file, nano_dir) then
          for _, dir in ipairs(dirs) do
            if under(file, dir) then
              package.loaded[name] = nil
              break
            end
          end
        end
      end
    end
  end
end

-- ---------------------------------------------------------------------------------------------
-- the server

local Server = {}
Server.__index = Server
nt.Server = Server

-- Messages to the sync route (client:sync()) are answered here, without a log line.
local function install_sync_hook()
  local dispatch = nano._dispatch
  core.set_hook("dispatch", function(s, mtype, id, route, payload, flags)
    if route == client.SYNC_ROUTE then
      if mtype == 0 then core.respond(s, id, "{}", false) end
      return
    end
    return dispatch(s, mtype, id, route, payload, flags)
  end)
end

local function load_script(path, dir, args)
  -- _load_main logs why a script failed; keep that text for the spec's error.
  local S = nano._state
  local why
  local capture = function(level, msg)
    if level == "error" then -- goes into nt.start's error instead
      why = why and (why .. "\n" .. msg) or msg
    else
      core.log(core[level:upper()] or core.INFO, msg)
    end
  end
  S.logger = capture
  local ok = nano._load_main(path, dir, args)
  if S.logger == capture then S.logger = nil end
  return ok, why
end

--- nt.start(script [, opts]) -> server. opts: args (the script's ...), timeout (seconds waits
--- allow for this server's clients; default nt.timeout).
function nt.start(script, opts)
  if type(script) ~= "string" then error("nt.start: expected the main script, e.g. nt.start(\"main.lua\")", 2) end
  opts = opts or {}
  if current then current:stop() end
  local path = absolute(script)
  if not file_exists(path) then error("nt.start: cannot open " .. path, 2) end
  local dir = dirname(path)
  local here = cwd()

  nano._reset()
  drop_project_modules({ dir, here })
  local saved_path = package.path
  local prefix = dir .. "/?.lua;" .. dir .. "/?/init.lua;"
  if package.path:sub(1, #prefix) ~= prefix then package.path = prefix .. package.path end
  -- Every listener of the script on loopback, on a port the system picks.
  nano.listen = function(_, lopts) return real_listen("127.0.0.1:0", lopts) end

  local server = setmetatable({
    script = path, dir = dir, cwd = here,
    timeout = opts.timeout or nt.timeout,
    clients = {},
    _saved_path = saved_path,
  }, Server)
  current = server

  local ok, why = load_script(path, dir, opts.args)
  if not ok then
    server:_release()
    error(str_format("nt.start: %s failed to load:\n%s", script, why or "(see the log)"), 2)
  end
  nano._start()
  install_sync_hook()

  -- The clients' listener: the script's first plain TCP one, else one of ours; connect{ tls = }
  -- uses its first TCP listener with TLS.
  local addr, tls_addr
  for _, l in ipairs(nano.listeners()) do
    if not l.websocket and not l.tls and (not addr or l.id < addr.id) then addr = l end
    if not l.websocket and l.tls and (not tls_addr or l.id < tls_addr.id) then tls_addr = l end
  end
  server.address = addr and addr.bound or real_listen("127.0.0.1:0")
  server.host, server.port = server.address:match("^(.*):(%d+)$")
  server.port = tonumber(server.port)
  if tls_addr then server.tls_port = tonumber(tls_addr.bound:match(":(%d+)$")) end
  return server
end

--- nt.sqlite([path]) -> a nano.sqlite database for a spec (in memory unless a path is given),
--- closed when the server stops. Call it after nt.start; use it in server:run or handlers.
function nt.sqlite(path)
  if not current then error("nt.sqlite: start a server first (nt.start)", 2) end
  local db = nano.sqlite.open(path or ":memory:")
  current._dbs = current._dbs or {}
  current._dbs[#current._dbs + 1] = db
  return db
end

--- nt.current() -> the running server, or nil
function nt.current() return current end

--- server:connect([opts]) -> a nano.client connected to the server, handshake done. opts as in
--- client.connect (user =, heartbeat = false, timeout =, serializer =, tls = : then the script's
--- first TCP listener with tls).
function Server:connect(opts)
  if current ~= self then error("connect: this server was stopped", 2) end
  local o = { timeout = self.timeout, serializer = nano._state.serializer }
  for k, v in pairs(opts or {}) do o[k] = v end
  local port = self.port
  if o.tls then
    port = self.tls_port or error("connect: tls: the script has no TCP listener with tls", 2)
  end
  local ok, c = pcall(client.connect, self.host, port, o)
  if not ok then error(c, 2) end
  self.clients[#self.clients + 1] = c
  return c
end

-- I/O that is ready (clients reading what the server sent, the server reading what they sent).
local function poll()
  core.run("nowait")
  core.run("nowait")
end

--- server:poll(): runs the loop for what is ready now, without waiting.
function Server:poll() poll() end

--- server:advance(secs): moves the host's virtual clock forward, firing every timer that falls
--- due (game timers, heartbeats, timeouts) in order. Time moves in steps of half the heartbeat
--- sweep period with ready I/O handled between steps, so clients answer heartbeats as real ones
--- would and pushes sent by timers reach them.
function Server:advance(secs)
  if type(secs) ~= "number" or secs < 0 then error("advance: expected seconds >= 0", 2) end
  local total = floor(secs * 1000 + 0.5)
  local step = max(1, floor(core.config().sweep * 1000 / 2))
  poll()
  while total > 0 do
    local d = min(step, total)
    core.advance(d / 1000)
    poll()
    total = total - d
  end
end

--- server:now() -> the host's clock (seconds; virtual: advance moves it)
function Server:now() return core.now() end

--- server:wait_until(fn [, timeout [, what]]) -> fn's first true value: runs the loop until fn()
--- returns a true value; raises after timeout seconds of real time.
function Server:wait_until(fn, timeout, what)
  if type(fn) ~= "function" then error("wait_until: expected a function", 2) end
  timeout = timeout or self.timeout
  local v
  local ok, why = client._wait_raw(nil, function()
    v = fn()
    return v
  end, timeout)
  if ok then return v end
  if why == "timeout" then
    error(str_format("timed out after %s s waiting for %s", str_format("%g", timeout), what or "the condition"), 2)
  end
  error("wait_until cannot run the loop inside a loop callback", 2)
end

--- server:sessions() -> the sessions open now
--- server:run(fn, ...) -> fn's results: runs fn as a task (it may wait: nano.sleep, queries,
--- HTTP) and drives the loop until it finishes; raises fn's error, or after `nt.timeout` s.
function Server:run(fn, ...)
  if type(fn) ~= "function" then error("run: expected a function", 2) end
  local t = nano.spawn(fn, ...)
  local ok, why = client._wait_raw(nil, function() return t:state() ~= "running" end, self.timeout)
  if not ok then
    t:cancel()
    if why == "timeout" then
      error(str_format("timed out after %s s waiting for the task", str_format("%g", self.timeout)), 2)
    end
    error("run cannot drive the loop inside a loop callback", 2)
  end
  if t:state() ~= "done" then error(t.err, 2) end
  return unpack(t.results, 1, t.results.n)
end

function Server:sessions()
  local list = {}
  for _, s in ipairs(core.sessions()) do
    if not s:is_closed() then list[#list + 1] = s end
  end
  return list
end

--- server:listeners() -> nano.listeners() (bound addresses: 127.0.0.1:<port>)
function Server:listeners() return nano.listeners() end

local function drain(timeout, what)
  local deadline = core.hrtime() + timeout
  while true do
    local st = core.stats()
    if st.connections + st.sessions + st.listeners + tcp.count() == 0 then return true end
    if core.hrtime() > deadline then
      error(str_format("server:stop: %s still open after %g s (%d connections, %d sessions, %d "
        .. "listeners, %d client streams)", what, timeout, st.connections, st.sessions,
        st.listeners, tcp.count()), 3)
    end
    core.run("nowait")
  end
end

-- Back to no server: everything closed, fresh nano state, paths and listen restored.
function Server:_release()
  client.close_all(self.timeout)
  nano._reset()
  nano.listen = real_listen
  package.path = self._saved_path
  drop_project_modules({ self.dir, self.cwd })
  if current == self then current = nil end
end

--- server:stop(): shuts down as nano-host does (before_shutdown hooks, sessions closed,
--- shutdown hooks), closes every client, stops every timer, and checks that nothing is left:
--- raises if a connection, session, listener, client stream or timer survived.
function Server:stop()
  if current ~= self then return end
  client.close_all(self.timeout)
  nano.shutdown()
  drain(self.timeout, "connections")
  nano._stopped()
  self:_release()
  local st = core.stats()
  if st.connections + st.sessions + st.listeners + st.timers + tcp.count() > 0 then
    error(str_format("server:stop: left behind %d connections, %d sessions, %d listeners, %d "
      .. "timers, %d client streams", st.connections, st.sessions, st.listeners, st.timers,
      tcp.count()), 2)
  end
end

--- nt.stop(): stops the running server, if any (test runner cleanup).
function nt.stop()
  if current then current:stop() end
end

return nt
