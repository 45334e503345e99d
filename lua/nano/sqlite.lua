-- nano.sqlite: SQLite, the embedded default store: no server to run, statements off the loop
-- thread (core/sqlite_db.c on libuv's thread pool; one connection per handle, its statements in
-- order), WAL mode, a busy timeout, prepared statements cached. Waiting calls run in a handler,
-- hook, timer callback or task.
--
--   local db = assert(nano.sqlite.open("game.db"))
--   db:exec("CREATE TABLE IF NOT EXISTS players (id INTEGER PRIMARY KEY, name TEXT, gold INTEGER)")
--   local r = db:exec("INSERT INTO players (name, gold) VALUES (?, ?)", "ann", 10)
--   -- r = { changes = 1, last_insert_id = 1 }
--   local rows = db:exec("SELECT * FROM players WHERE gold > ?", 5)  -- { { id=1, name="ann", gold=10 } }
--   db:transaction(function(tx) tx:exec(...); tx:exec(...) end) -- commits; a raise rolls back
local core = require "nano.sqlite_core"
local task = require "nano.task"
local metrics = require "nano.metrics"
local clock = metrics.clock

local type, select, setmetatable, tostring, xpcall, error, unpack, pcall, pairs =
  type, select, setmetatable, tostring, xpcall, error, unpack, pcall, pairs
local traceback = debug.traceback

local M = {}
local DB = {}
DB.__index = DB

local open_dbs = setmetatable({}, { __mode = "k" }) -- to close at shutdown and between tests

local function str_open_error(path, err) return "sqlite.open " .. path .. ": " .. tostring(err) end

--- nano.sqlite.open(path [, { busy_timeout = secs, readonly = bool, max_rows = n, name = "..." }])
---   -> db | nil, err. name labels the handle's metrics (nano_storage_*{client="sqlite",name=}).
--- ":memory:" is a private in-memory database. Inside a task it waits for the file to open and
--- returns nil, err when it cannot; elsewhere (the main script) it returns at once and an open
--- error comes back from the first exec.
function M.open(path, opts)
  if type(path) ~= "string" then error("sqlite.open: expected a file path or \":memory:\"", 2) end
  if opts ~= nil and type(opts) ~= "table" then error("sqlite.open: options must be a table", 2) end
  local name, nerr = metrics._client_name(opts, "sqlite.open")
  if not name then error(nerr, 2) end
  local db = setmetatable({ path = path, _waiting = {}, _rec = metrics._storage("sqlite", name) }, DB)
  local opened = {}
  db._h = core.open(path, opts, function(ok, err)
    opened.done, opened.err = true, err
    if opened.resume then opened.resume(ok, err) end
    if not ok then db._open_err = err end
  end)
  open_dbs[db] = true
  if task.current() then
    local ok, err = task.await("nano.sqlite.open", function(resume)
      if opened.done then resume(not opened.err, opened.err) else opened.resume = resume end
    end)
    if not ok then
      db:close()
      return nil, str_open_error(path, err)
    end
  end
  return db
end


-- One statement, waiting for its result. The transaction lock is checked by the callers.
local function run(db, sql, n, params)
  if db._open_err then return nil, str_open_error(db.path, db._open_err) end
  if not db._h then return nil, "database closed" end
  local ok, res, err = pcall(task.await, "db:exec", function(resume)
    local queued, qerr = db._h:exec(sql, params, n, resume)
    if not queued then resume(nil, qerr) end
  end)
  if not ok then error(res, 3) end
  return res, err
end

-- While a transaction holds the handle, other tasks' statements wait for it to end.
local function wait_turn(db)
  local me = task.current()
  while db._tx and db._tx ~= me do
    task.await("db:exec", function(resume) db._waiting[#db._waiting + 1] = resume end)
  end
end

local function release(db)
  db._tx = nil
  local waiting = db._waiting
  db._waiting = {}
  for i = 1, #waiting do waiting[i]() end
end

--- db:exec(sql, ...) -> rows | { changes =, last_insert_id = } | nil, err
--- ? parameters are bound (never spliced): nil, boolean, number, string. Rows are tables keyed
--- by column name (a NULL column is absent); integers beyond 2^53 come back as strings.
function DB:exec(sql, ...)
  if type(sql) ~= "string" then error("db:exec: expected SQL text", 2) end
  local t0 = clock()
  local n = select("#", ...)
  local params = { ... }
  for i = 1, n do
    local t = type(params[i])
    if t ~= "nil" and t ~= "boolean" and t ~= "number" and t ~= "string" then
      self._rec(t0, false)
      return nil, "parameter " .. i .. ": cannot bind a " .. t .. " (nil, boolean, number or string)"
    end
  end
  wait_turn(self)
  local res, err = run(self, sql, n, params)
  self._rec(t0, res ~= nil)
  return res, err
end

--- db:transaction(fn) -> fn's results | nil, err
--- BEGIN, fn(db), COMMIT; if fn raises, ROLLBACK and nil, err. Other tasks' statements on this
--- handle wait until it ends.
function DB:transaction(fn)
  if type(fn) ~= "function" then error("db:transaction: expected a function", 2) end
  local me = task.current()
  if not me then
    error("db:transaction waits, so it can only be called from a handler, a hook, a timer "
      .. "callback or a task (nano.spawn); here nothing can wait", 2)
  end
  if self._tx == me then return nil, "already in a transaction" end
  wait_turn(self)
  self._tx = me
  local _, err = run(self, "BEGIN")
  if err then
    release(self)
    return nil, err
  end
  local res = { xpcall(fn, traceback, self) }
  if res[1] then
    local _, cerr = run(self, "COMMIT")
    if cerr then
      run(self, "ROLLBACK")
      release(self)
      return nil, cerr
    end
    release(self)
    return unpack(res, 2, table.maxn(res))
  end
  run(self, "ROLLBACK")
  release(self)
  local e = res[2]
  if type(e) == "table" then e = e.msg or tostring(e) end
  return nil, e
end

--- db:close(): the statements already queued still run (no write is lost), later ones get
--- nil, "database closed"; the connection closes on the pool. Idempotent.
function DB:close()
  if not self._h then return end
  local h = self._h
  self._h = nil
  open_dbs[self] = nil
  h:close()
end

--- db:pending() -> statements queued or running
function DB:pending() return self._h and self._h:pending() or 0 end

-- every open handle closed: at shutdown (after the shutdown hooks) and between nano.test servers
function M._close_all()
  for db in pairs(open_dbs) do db:close() end
end

return M
