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
  core.set_hook("dispatch", function(s, mtype, id, route, payload, flags, co, pre, defer)
    if route == client.SYNC_ROUTE then
      if mtype == 0 then core.respond(s, id, "{}", false) end
      return
    end
    return dispatch(s, mtype, id, route, payload, flags, co, pre, defer)
  end, nano._unsent)
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
  nano._stop_now() -- a stopping spec does not wait out the grace of handlers still waiting
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

--- nt.stop(): stops the running server, if any, and the throwaway database servers (test
--- runner cleanup).
function nt.stop()
  if current then current:stop() end
  nt.stop_services()
end

-- ---------------------------------------------------------------------------------------------
-- throwaway database servers: nt.redis(), nt.postgres()
--
-- Each starts a real server of its own in a fresh temporary folder on a free loopback port and
-- returns (url, handle). handle:stop() stops it and removes the folder; handle:kill() kills it
-- (SIGKILL: a crash), handle:start() starts it again on the same port and folder. Servers left
-- running are stopped by nt.stop() (the test runner calls it at the end) or when the process
-- exits. Starting a server blocks the process for a moment (it is test set-up, not a handler).

local services = {} -- handle -> true while its server may be running

local function sh_quote(s) return "'" .. tostring(s):gsub("'", "'\\''") .. "'" end

local function run_cmd(cmd)
  local ok = os.execute(cmd)
  return ok == 0 or ok == true
end

local function read_cmd(cmd)
  local f = io.popen(cmd)
  local out = f:read("*a")
  f:close()
  return out
end

pcall(ffi.cdef, [[
  int socket(int domain, int type, int protocol);
  int bind(int fd, const void *addr, unsigned int len);
  int getsockname(int fd, void *addr, unsigned int *len);
  int close(int fd);
  unsigned int getuid(void);
]])

-- A loopback port nobody listens on now: bound to 127.0.0.1:0, read, released. Another process
-- could take it before the server does; the start helpers retry with a new port if so.
local function free_port()
  local fd = ffi.C.socket(2, 1, 0) -- AF_INET, SOCK_STREAM
  if fd < 0 then error("nt: socket() failed", 3) end
  local sa = ffi.new("uint8_t[16]")
  sa[0] = 2 -- sin_family (little-endian short)
  sa[4], sa[5], sa[6], sa[7] = 127, 0, 0, 1
  local len = ffi.new("unsigned int[1]", 16)
  if ffi.C.bind(fd, sa, 16) ~= 0 or ffi.C.getsockname(fd, sa, len) ~= 0 then
    ffi.C.close(fd)
    error("nt: cannot bind a loopback port", 3)
  end
  ffi.C.close(fd)
  return sa[2] * 256 + sa[3]
end

--- nt.free_port() -> a loopback port nothing listens on right now
nt.free_port = free_port

local function need_binary(helper, path, package)
  if not file_exists(path) then
    error(str_format("%s: %s is not installed (Debian package %s; scripts/setup installs it)",
      helper, path, package), 3)
  end
end

local function temp_dir(tag)
  local dir = read_cmd("mktemp -d /tmp/nano-test-" .. tag .. ".XXXXXX"):gsub("%s+$", "")
  if dir == "" then error("nt: mktemp failed", 3) end
  return dir
end

-- Waits (bounded) until probe() is true; sleeps between tries with the shell's sleep.
local function wait_for(probe, secs)
  local deadline = core.hrtime() + secs
  while core.hrtime() < deadline do
    if probe() then return true end
    os.execute("sleep 0.05")
  end
  return probe()
end

local Service = {}
Service.__index = Service

function Service:stop()
  if not services[self] then return end
  services[self] = nil
  self:_halt()
  run_cmd("rm -rf " .. sh_quote(self.dir))
end

--- handle:pause() / handle:resume(): SIGSTOP / SIGCONT the server (the kernel still accepts
--- connections, nothing answers: timeouts).
function Service:pause()
  local pid = self:_pid()
  if pid then run_cmd(str_format("kill -STOP %d", pid)) end
end

function Service:resume()
  local pid = self:_pid()
  if pid then run_cmd(str_format("kill -CONT %d", pid)) end
end

local function track(svc)
  services[svc] = true
  -- Stopped when the process exits, even if nobody called stop (a spec that raised).
  svc._gc = newproxy(true)
  getmetatable(svc._gc).__gc = function() pcall(Service.stop, svc) end
  return svc
end

-- redis ----------------------------------------------------------------------------------------

local REDIS_SERVER = "/usr/bin/redis-server"

local function redis_ping(svc)
  return read_cmd(str_format("redis-cli -h 127.0.0.1 -p %d %s ping 2>/dev/null", svc.port,
    svc.password and ("-a " .. sh_quote(svc.password) .. " --no-auth-warning") or "")):find("PONG") ~= nil
end

function Service:_start_redis()
  for _ = 1, 5 do
    self.port = self.port or free_port()
    local cmd = str_format("%s --bind 127.0.0.1 --port %d --dir %s --daemonize yes --pidfile %s "
      .. "--logfile %s --save '' --appendonly no --unixsocket %s --unixsocketperm 700%s", REDIS_SERVER,
      self.port, sh_quote(self.dir), sh_quote(self.dir .. "/redis.pid"), sh_quote(self.dir .. "/redis.log"),
      sh_quote(self.dir .. "/redis.sock"),
      self.password and (" --requirepass " .. sh_quote(self.password)) or "")
    if run_cmd(cmd) and wait_for(function() return redis_ping(self) end, 5) then return end
    self:_halt()
    if self.fixed_port then break end
    self.port = nil -- taken meanwhile: another port
  end
  error("nt.redis: redis-server did not start; its log: " .. self.dir .. "/redis.log", 3)
end

function Service:_halt_redis(signal)
  local f = io.open(self.dir .. "/redis.pid")
  local pid = f and f:read("*n")
  if f then f:close() end
  if pid then
    run_cmd(str_format("kill -%s %d 2>/dev/null", signal or "TERM", pid))
    wait_for(function() return not run_cmd(str_format("kill -0 %d 2>/dev/null", pid)) end, 5)
    os.remove(self.dir .. "/redis.pid")
  end
end

--- nt.redis([opts]) -> url, handle: a throwaway redis-server on 127.0.0.1 (opts.password sets
--- requirepass; the URL carries it). handle: stop(), kill(), start(), port, url, socket (a unix
--- socket it also listens on).
function nt.redis(opts)
  need_binary("nt.redis", REDIS_SERVER, "redis-server")
  opts = opts or {}
  local svc = setmetatable({ kind = "redis", dir = temp_dir("redis"), password = opts.password }, Service)
  svc._halt = Service._halt_redis
  svc.start = function(self)
    self.fixed_port = true
    self:_start_redis()
    services[self] = true
  end
  svc.kill = function(self) self:_halt_redis("KILL") end
  svc._pid = function(self)
    local f = io.open(self.dir .. "/redis.pid")
    local pid = f and f:read("*n")
    if f then f:close() end
    return pid
  end
  svc:_start_redis()
  svc.socket = svc.dir .. "/redis.sock" -- also listening there: redis+unix://<socket>
  svc.url = str_format("redis://%s127.0.0.1:%d/0", svc.password and (":" .. svc.password .. "@") or "", svc.port)
  return svc.url, track(svc)
end

-- postgres -------------------------------------------------------------------------------------

local PG_BIN = "/usr/lib/postgresql/15/bin/"

-- As root (CI) PostgreSQL refuses to run: its commands run as the `postgres` user.
local function as_pg(cmd)
  if ffi.C.getuid() == 0 then return "runuser -u postgres -- " .. cmd end
  return cmd
end

function Service:_start_pg()
  for _ = 1, 5 do
    self.port = self.port or free_port()
    local cmd = as_pg(str_format("%spg_ctl -D %s -l %s -w -t 30 -o %s start >/dev/null 2>&1", PG_BIN,
      sh_quote(self.dir .. "/data"), sh_quote(self.dir .. "/log"),
      sh_quote(str_format("-p %d -k %s -c listen_addresses=127.0.0.1 -c fsync=off "
        .. "-c synchronous_commit=off -c full_page_writes=off", self.port, self.dir))))
    if run_cmd(cmd) then return end
    if self.fixed_port then break end
    self.port = nil
  end
  error("nt.postgres: postgres did not start; its log: " .. self.dir .. "/log", 3)
end

function Service:_halt_pg(mode)
  run_cmd(as_pg(str_format("%spg_ctl -D %s -m %s -w -t 30 stop >/dev/null 2>&1", PG_BIN,
    sh_quote(self.dir .. "/data"), mode or "fast")))
end

--- nt.postgres() -> conninfo, handle: a throwaway PostgreSQL 15 (initdb + pg_ctl, as the
--- postgres user when run as root) on 127.0.0.1, database "postgres", user "postgres", trust
--- authentication. handle: stop(), kill() (immediate shutdown: no clean close), start(), port.
function nt.postgres()
  need_binary("nt.postgres", PG_BIN .. "initdb", "postgresql")
  need_binary("nt.postgres", PG_BIN .. "pg_ctl", "postgresql")
  local svc = setmetatable({ kind = "postgres", dir = temp_dir("pg") }, Service)
  if ffi.C.getuid() == 0 and not run_cmd("chown postgres: " .. sh_quote(svc.dir)) then
    error("nt.postgres: cannot give " .. svc.dir .. " to the postgres user", 2)
  end
  local init = as_pg(str_format("%sinitdb -D %s -A trust -U postgres --no-sync -E UTF8 >%s 2>&1",
    PG_BIN, sh_quote(svc.dir .. "/data"), sh_quote(svc.dir .. "/initdb.log")))
  if not run_cmd(init) then
    local log = read_cmd("cat " .. sh_quote(svc.dir .. "/initdb.log"))
    run_cmd("rm -rf " .. sh_quote(svc.dir))
    error("nt.postgres: initdb failed:\n" .. log, 2)
  end
  svc._halt = Service._halt_pg
  svc.start = function(self)
    self.fixed_port = true
    self:_start_pg()
    services[self] = true
  end
  svc.kill = function(self) self:_halt_pg("immediate") end
  svc._pid = function(self) -- the postmaster's: first line of postmaster.pid
    local f = io.open(self.dir .. "/data/postmaster.pid")
    local pid = f and f:read("*n")
    if f then f:close() end
    return pid
  end
  svc:_start_pg()
  svc.url = str_format("host=127.0.0.1 port=%d user=postgres dbname=postgres", svc.port)
  return svc.url, track(svc)
end

--- nt.stop_services(): closes every nano.redis / nano.pg client and stops every throwaway server.
function nt.stop_services()
  nano.redis.close_all()
  nano.pg.close_all()
  local deadline = core.hrtime() + 5
  while (nano.redis.count() + nano.pg.count()) > 0 and core.hrtime() < deadline do
    core.run("nowait")
  end
  for svc in pairs(services) do svc:stop() end
end

return nt
