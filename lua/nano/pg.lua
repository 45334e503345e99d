-- nano.pg: a PostgreSQL client with a pool of connections, waiting without blocking the loop
-- (asynchronous libpq through nano.pg_core; waiting through nano.task). See docs/storage.md.
--
--   local pg, err = nano.pg.connect("host=127.0.0.1 port=5432 dbname=game user=game" [, opts])
--   local rows, err = pg:query("SELECT id, name FROM players WHERE id = $1", 7)
--   local res = pg:query("UPDATE players SET name = $1 WHERE id = $2", "ann", 7) -- { changes = 1 }
--   local ok, err = pg:transaction(function(tx) tx:query(...); tx:query(...) end)
--   pg:close()
--
-- opts: pool (connections, default 4), timeout (s, default 30: one query; it is then cancelled
-- on the server; false: none), connect_timeout (s, default 10), name (labels the pool's metrics,
-- nano_storage_*{client="pg",name=...}; "default" without one).
--
-- Values: see nano.pg_core (core/lua_pg.c): rows are arrays of tables keyed by column name;
-- int2/int4/oid/float4/float8 numbers, int8 a number within ±2^53 and its decimal text beyond,
-- bool a boolean, NULL an absent key (nil), other types their text. Parameters: nil or
-- nano.pg.null → NULL, booleans, numbers, strings.
--
-- Connections open on demand, up to `pool`; one that the server dropped is replaced by a new
-- one at the next query (the query that was running on it fails with "pg: connection lost").
local pc = require "nano.pg_core"
local core = require "nano.core"
local task = require "nano.task"
local metrics = require "nano.metrics"
local clock = metrics.clock

local type, select, tostring, pairs, ipairs, setmetatable, unpack, pcall =
  type, select, tostring, pairs, ipairs, setmetatable, unpack, pcall
local str_format, remove = string.format, table.remove

local M = {
  null = require("nano.json").null, -- a NULL parameter (nil works too)
}

local open = {} -- pool -> true while open (closed once the server has stopped: M.close_all)

local Pool = {}
Pool.__index = Pool

local Tx = {}
Tx.__index = Tx

-- Through nano.log (the game's logger), loaded late: nano itself loads this module.
local function warn(msg) require("nano").log.warn("%s", msg) end

local function stop_timer(t)
  if t then t:stop() end
end

local function prefix(err)
  if err:find("^pg: ") then return err end
  return "pg: " .. err
end

-- ---------------------------------------------------------------------------------------------
-- connections

local function drop(pool, conn)
  if conn.dead then return end
  conn.dead = true
  pool.nconns = pool.nconns - 1
  for i, c in ipairs(pool.idle) do
    if c == conn then
      remove(pool.idle, i)
      break
    end
  end
end

local open_conn

-- Gives a free connection to the oldest waiting acquirer, or back to the idle list.
local function release(pool, conn)
  if conn.dead then
    -- The pool has room again: a waiting acquirer gets a new connection.
    if pool.closed or pool.nconns >= pool.size then return end
    local w = remove(pool.queue, 1)
    if w then open_conn(pool, w) end
    return
  end
  if conn.busy then
    conn.release_when_done = true
    return
  end
  local w = remove(pool.queue, 1)
  if w then
    w(conn)
  else
    pool.idle[#pool.idle + 1] = conn
  end
end

-- Opens a connection; got(conn) or got(nil, err) once it is ready or failed.
open_conn = function(pool, got)
  pool.nconns = pool.nconns + 1
  local conn = { pool = pool }
  local timer
  local told = false
  local function tell(c, err)
    if told then return end
    told = true
    stop_timer(timer)
    got(c, err)
  end
  local c, err = pc.connect(pool.conninfo, function(event, a, b, lost)
    if event == "result" then
      -- A lost connection leaves the pool now, before the waiting task resumes and releases it.
      if lost then drop(pool, conn) end
      conn.busy = false
      local cb = conn.on_result
      conn.on_result = nil
      if cb then cb(a, b) end
      if conn.release_when_done then
        conn.release_when_done = false
        release(pool, conn)
      end
    elseif event == "connect" then
      if a then
        tell(conn)
      else
        pool.last_err = prefix(tostring(b))
        tell(nil, pool.last_err)
      end
    elseif event == "gone" then
      drop(pool, conn)
      pool.conns[conn] = nil
      local cb = conn.on_result
      conn.on_result = nil
      if cb then cb(nil, "pg: connection lost: " .. tostring(a)) end
      tell(nil, prefix(tostring(a)))
      if not conn.closed_by_us and not pool.closed then
        warn("pg: a pooled connection closed: " .. tostring(a))
        release(pool, conn) -- wakes a waiting acquirer with a new connection
      end
    end
  end)
  if not c then
    pool.nconns = pool.nconns - 1
    conn.dead = true
    return got(nil, prefix(err))
  end
  conn.c = c
  pool.conns[conn] = true
  if pool.opts.connect_timeout then
    timer = core.timer(pool.opts.connect_timeout, 0, function()
      timer = nil
      tell(nil, str_format("pg: connecting timed out after %g s", pool.opts.connect_timeout))
      conn.closed_by_us = true
      c:close()
    end)
  end
end

-- Closes a connection whose session state is unknown (a transaction that could not end): the
-- server rolls back what it had open, and the pool opens a fresh connection when it needs one.
local function discard(pool, conn)
  if conn.dead then return end
  drop(pool, conn)
  conn.closed_by_us = true
  local cb = conn.on_result
  conn.on_result = nil
  if cb then cb(nil, "pg: connection discarded") end
  conn.c:close()
end

-- Waits for a free connection: idle, new (under the pool size), or the next one released.
local function acquire(pool)
  if pool.closed then return nil, "pg: pool closed" end
  local conn = remove(pool.idle)
  if conn then return conn end
  return task.await("pg:query", function(resume)
    if pool.nconns < pool.size then
      open_conn(pool, resume)
    else
      pool.queue[#pool.queue + 1] = resume
    end
  end)
end

-- Runs one statement on conn: the result, or nil, err (timeout: cancelled on the server).
local function run(conn, sql, n, ...)
  local pool = conn.pool
  if conn.dead then return nil, "pg: connection lost" end
  local ok, err = conn.c:query(sql, n, ...)
  if not ok then return nil, prefix(err) end
  conn.busy = true
  local timeout = pool.opts.timeout
  return task.await("pg:query", function(resume)
    local timer, again
    conn.on_result = function(v, e)
      stop_timer(timer)
      stop_timer(again)
      if v == nil then resume(nil, prefix(tostring(e))) else resume(v) end
    end
    if timeout then
      timer = core.timer(timeout, 0, function()
        timer = nil
        -- The connection stays busy until the server answers the cancel; then it is free.
        -- PostgreSQL cancels only a query that is running: one still on its way to the backend
        -- (a busy server) ignores the cancel and would run its full time. So ask again every
        -- second until the connection answers.
        conn.c:cancel()
        again = core.timer(1, 1, function()
          if not conn.dead then conn.c:cancel() end
        end)
        resume(nil, str_format("pg: query timed out after %g s (cancelled on the server)", timeout))
      end)
    end
  end)
end

-- Raised before anything is taken from the pool: a query cannot wait outside a task, and a
-- connection must not leave the pool on the way to that error.
local function need_task(what)
  if not task.current() then
    error(what .. " waits, so it can only be called from a task (nano.spawn, or a handler once "
      .. "handlers are tasks); here nothing can wait", 3)
  end
end

local function check_sql(sql)
  if type(sql) ~= "string" then return nil, "pg: query: expected SQL text (a string), got a " .. type(sql) end
  return true
end

-- ---------------------------------------------------------------------------------------------
-- the pool

--- nano.pg.connect(conninfo [, opts]) -> pool | nil, err. Inside a task the first connection is
--- opened (and its error returned); outside one connections open at the first query.
function M.connect(conninfo, opts)
  if type(conninfo) ~= "string" then
    return nil, "pg: connect: expected a conninfo string, e.g. \"host=127.0.0.1 port=5432 dbname=game\""
  end
  if opts ~= nil and type(opts) ~= "table" then return nil, "pg: connect: opts must be a table" end
  local o = { pool = 4, timeout = 30, connect_timeout = 10 }
  for k, v in pairs(opts or {}) do o[k] = v end
  if type(o.pool) ~= "number" or o.pool < 1 or o.pool % 1 ~= 0 then
    return nil, "pg: connect: opts.pool must be a whole number >= 1"
  end
  for _, k in ipairs({ "timeout", "connect_timeout" }) do
    if o[k] == false then
      o[k] = nil
    elseif type(o[k]) ~= "number" or o[k] <= 0 then
      return nil, "pg: connect: opts." .. k .. " must be seconds (a number > 0) or false"
    end
  end
  local name, nerr = metrics._client_name(o, "pg: connect")
  if not name then return nil, nerr end
  local pool = setmetatable({ conninfo = conninfo, opts = o, size = o.pool, nconns = 0,
    idle = {}, queue = {}, conns = {}, rec = metrics._storage("pg", name) }, Pool)
  open[pool] = true
  if task.current() then
    local conn, err = acquire(pool)
    if not conn then
      pool:close()
      return nil, err
    end
    release(pool, conn)
  end
  return pool
end

--- pg:query(sql, ...) -> rows | { changes = n } | nil, err
function Pool:query(sql, ...)
  need_task("pg:query")
  local t0 = clock()
  local ok, err = check_sql(sql)
  if not ok then
    self.rec(t0, false)
    return nil, err
  end
  local conn, cerr = acquire(self)
  if not conn then
    self.rec(t0, false)
    return nil, cerr
  end
  local res, qerr = run(conn, sql, select("#", ...), ...)
  release(self, conn)
  self.rec(t0, res ~= nil)
  return res, qerr
end

--- pg:transaction(fn) -> fn's results (true if none) | nil, err. fn(tx) runs with one pooled
--- connection pinned: tx:query(sql, ...) as pg:query. Commits when fn returns, rolls back when it
--- raises (the error is returned) or when a tx:query failed and fn went on.
function Pool:transaction(fn)
  need_task("pg:transaction")
  if type(fn) ~= "function" then return nil, "pg: transaction: expected a function(tx)" end
  local conn, cerr = acquire(self)
  if not conn then return nil, cerr end
  local _, err = run(conn, "BEGIN", 0)
  if err then
    release(self, conn)
    return nil, err
  end
  local tx = setmetatable({ conn = conn, open = true }, Tx)
  local res = { pcall(fn, tx) }
  tx.open = false
  local ok = res[1]
  if ok and tx.failed then ok, res[2] = false, tx.failed end
  if ok then
    local _, cmerr = run(conn, "COMMIT", 0)
    -- A COMMIT that timed out or could not be sent leaves the transaction's fate to the server:
    -- the connection is not reused.
    if cmerr then discard(self, conn) end
    release(self, conn)
    if cmerr then return nil, cmerr end
    if #res == 1 then return true end
    return unpack(res, 2, #res)
  end
  -- A query that timed out is still being cancelled (the connection is busy): ROLLBACK cannot be
  -- sent, so the connection goes, and the server rolls back with it.
  local _, rberr = run(conn, "ROLLBACK", 0)
  if rberr then discard(self, conn) end
  release(self, conn)
  return nil, (type(res[2]) == "string" and res[2]) or ("pg: transaction: " .. tostring(res[2]))
end

--- tx:query(sql, ...): as pg:query, on the transaction's connection
function Tx:query(sql, ...)
  local rec, t0 = self.conn.pool.rec, clock()
  if not self.open then
    rec(t0, false)
    return nil, "pg: this transaction has ended"
  end
  local ok, err = check_sql(sql)
  if not ok then
    rec(t0, false)
    return nil, err
  end
  local res, qerr = run(self.conn, sql, select("#", ...), ...)
  if qerr then self.failed = self.failed or qerr end
  rec(t0, res ~= nil)
  return res, qerr
end

--- pg:close(): queries in flight and waiting get nil, "pg: pool closed"; connections close.
function Pool:close()
  if self.closed then return end
  self.closed = true
  open[self] = nil
  local queue = self.queue
  self.queue = {}
  for _, w in ipairs(queue) do w(nil, "pg: pool closed") end
  for conn in pairs(self.conns) do
    local cb = conn.on_result
    conn.on_result = nil
    if cb then cb(nil, "pg: pool closed") end
    conn.dead = true
    conn.c:close()
  end
  self.conns, self.idle = {}, {}
end

--- pg:stats() -> { size, open, idle, waiting }
function Pool:stats()
  return { size = self.size, open = self.nconns, idle = #self.idle, waiting = #self.queue }
end

Pool.__tostring = function(self)
  return str_format("nano.pg pool (%d/%d connections%s)", self.nconns, self.size, self.closed and ", closed" or "")
end

--- nano.pg.close_all(): closes every open pool (once the server has stopped, after the shutdown
--- hooks; idle connections do not keep the loop alive meanwhile).
function M.close_all()
  for p in pairs(open) do p:close() end
end

--- nano.pg.count() -> connections not yet freed (leak checks)
M.count = pc.count

return M
