-- nano.sqlite: every type round trip, parameters bound (never spliced), errors with SQLite's
-- message, transactions (commit, rollback on a raise, other tasks wait), a file that lasts, 1,000
-- concurrent statements, close with work queued, and the loop answering players meanwhile.
local nt = require "nano.test"
local nano = require "nano"
local U = require "spec.fixtures.api_util"

describe("nano.sqlite", function()
  local server, db
  before_each(function()
    server = nt.start(U.FIXTURE)
    db = nt.sqlite()
    server:run(function()
      assert(db:exec("CREATE TABLE t (id INTEGER PRIMARY KEY, i INTEGER, f REAL, s TEXT, b BLOB, n TEXT)"))
    end)
  end)
  after_each(function() server:stop() end)

  it("round-trips integers, floats, text, blobs with NUL bytes, booleans and NULL", function()
    local rows = server:run(function()
      local r = assert(db:exec("INSERT INTO t (i, f, s, b, n) VALUES (?, ?, ?, ?, ?)",
        2 ^ 53, 0.1, "héllo", "a\0b", nil))
      assert(r.changes == 1 and r.last_insert_id == 1)
      assert(db:exec("INSERT INTO t (i, f, s) VALUES (?, ?, ?)", true, -1.5e300, ""))
      return db:exec("SELECT i, f, s, b, n FROM t ORDER BY id")
    end)
    assert.same({ i = 9007199254740992, f = 0.1, s = "héllo", b = "a\0b" }, rows[1])
    assert.same({ i = 1, f = -1.5e300, s = "" }, rows[2])
  end)

  it("returns integers beyond 2^53 as exact strings", function()
    local rows = server:run(function()
      return db:exec("SELECT 9223372036854775807 AS big, -9007199254740993 AS neg, 42 AS small")
    end)
    assert.same({ big = "9223372036854775807", neg = "-9007199254740993", small = 42 }, rows[1])
  end)

  it("binds parameters: SQL in a value stays a value", function()
    local rows = server:run(function()
      assert(db:exec("INSERT INTO t (s) VALUES (?)", "x'); DROP TABLE t; --"))
      return db:exec("SELECT s FROM t WHERE s = ?", "x'); DROP TABLE t; --")
    end)
    assert.equal("x'); DROP TABLE t; --", rows[1].s)
  end)

  it("gives SQLite's message for bad SQL, a wrong parameter count and a constraint", function()
    local e1, e2, e3 = server:run(function()
      local _, a = db:exec("SELEKT 1")
      local _, b = db:exec("SELECT ?, ?", 1)
      assert(db:exec("CREATE TABLE u (k TEXT UNIQUE)"))
      assert(db:exec("INSERT INTO u VALUES ('a')"))
      local _, c = db:exec("INSERT INTO u VALUES ('a')")
      return a, b, c
    end)
    assert.matches('near "SELEKT": syntax error', e1)
    assert.equal("the statement has 2 parameter(s), 1 given", e2)
    assert.matches("UNIQUE constraint failed: u.k", e3)
  end)

  it("refuses a parameter it cannot bind, naming it", function()
    local _, err = server:run(function() return db:exec("SELECT ?", {}) end)
    assert.equal("parameter 1: cannot bind a table (nil, boolean, number or string)", err)
  end)

  it("commits a transaction", function()
    local n = server:run(function()
      local ok, err = db:transaction(function(tx)
        tx:exec("INSERT INTO t (i) VALUES (1)")
        tx:exec("INSERT INTO t (i) VALUES (2)")
        return "done"
      end)
      assert(ok == "done", err)
      return db:exec("SELECT count(*) AS n FROM t")[1].n
    end)
    assert.equal(2, n)
  end)

  it("rolls back a transaction whose function raises", function()
    local res, err, n = server:run(function()
      local r, e = db:transaction(function(tx)
        tx:exec("INSERT INTO t (i) VALUES (1)")
        error({ code = 409, msg = "changed my mind" })
      end)
      return r, e, db:exec("SELECT count(*) AS n FROM t")[1].n
    end)
    assert.is_nil(res)
    assert.equal("changed my mind", err)
    assert.equal(0, n)
  end)

  it("other tasks' statements wait for a transaction to end", function()
    local order = server:run(function()
      local order = {}
      local t1 = nano.spawn(function()
        db:transaction(function(tx)
          tx:exec("INSERT INTO t (i) VALUES (1)")
          nano.sleep(0.05) -- the transaction holds the handle across a wait
          order[#order + 1] = "tx"
          tx:exec("INSERT INTO t (i) VALUES (2)")
        end)
      end)
      local t2 = nano.spawn(function()
        local rows = db:exec("SELECT count(*) AS n FROM t")
        order[#order + 1] = "read " .. rows[1].n
      end)
      t1:wait()
      t2:wait()
      return order
    end)
    assert.same({ "tx", "read 2" }, order)
  end)

  it("keeps data in a file across handles, in WAL mode", function()
    local path = os.tmpname()
    local rows, mode = server:run(function()
      local a = assert(nano.sqlite.open(path))
      assert(a:exec("CREATE TABLE k (v TEXT)"))
      assert(a:exec("INSERT INTO k VALUES ('kept')"))
      local m = a:exec("PRAGMA journal_mode")[1].journal_mode
      a:close()
      local b = assert(nano.sqlite.open(path))
      local r = b:exec("SELECT v FROM k")
      b:close()
      return r, m
    end)
    os.remove(path); os.remove(path .. "-wal"); os.remove(path .. "-shm")
    assert.same({ { v = "kept" } }, rows)
    assert.equal("wal", mode)
  end)

  it("a write that waits past the busy timeout for another handle's lock fails with SQLite's message", function()
    local path = os.tmpname()
    local err = server:run(function()
      local a = assert(nano.sqlite.open(path))
      local b = assert(nano.sqlite.open(path, { busy_timeout = 0.1 }))
      assert(a:exec("CREATE TABLE k (v INTEGER)"))
      local locked = false
      local holder = nano.spawn(function()
        a:transaction(function(tx)
          tx:exec("INSERT INTO k VALUES (1)") -- the write lock, held across a wait
          locked = true
          nano.sleep(1)
        end)
      end)
      -- until the holder has the lock (a fixed sleep lost the race on a loaded machine)
      for _ = 1, 200 do
        if locked then break end
        nano.sleep(0.01)
      end
      assert(locked, "the holder never took the write lock")
      local _, e = b:exec("INSERT INTO k VALUES (2)")
      holder:wait()
      a:close(); b:close()
      return e
    end)
    os.remove(path); os.remove(path .. "-wal"); os.remove(path .. "-shm")
    assert.matches("database is locked", err)
  end)

  it("says which file cannot be opened", function()
    local db2, err = server:run(function() return nano.sqlite.open("/nonexistent-dir/x.db") end)
    assert.is_nil(db2)
    assert.matches("sqlite.open /nonexistent%-dir/x.db: unable to open database file", err)
  end)

  it("runs 1,000 statements from 1,000 tasks", function()
    local n = server:run(function()
      local tasks = {}
      for i = 1, 1000 do
        tasks[i] = nano.spawn(function() return db:exec("INSERT INTO t (i) VALUES (?)", i) end)
      end
      for i = 1, 1000 do assert(tasks[i]:wait()) end
      return db:exec("SELECT count(*) AS n, sum(i) AS s FROM t")[1]
    end)
    assert.same({ n = 1000, s = 500500 }, n)
  end)

  it("runs the statements queued before close, then refuses new ones", function()
    local results = server:run(function()
      local tasks = {}
      for i = 1, 20 do tasks[i] = nano.spawn(function() return db:exec("INSERT INTO t (i) VALUES (?)", i) end) end
      db:close()
      local out = {}
      for i = 1, 20 do
        local r, err = tasks[i]:wait()
        out[#out + 1] = r and r.changes or err
      end
      local _, later = db:exec("SELECT 1")
      out[#out + 1] = later
      return out
    end)
    for i = 1, 20 do assert.equal(1, results[i]) end
    assert.equal("database closed", results[21])
  end)

  it("a handler that queries does not hold up another player", function()
    local c = server:connect()
    local done
    nano.spawn(function()
      db:exec("WITH RECURSIVE r(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM r WHERE x < 1000000) SELECT count(*) FROM r")
      done = true
    end)
    assert.same({ x = 1 }, c:request("Api.echo", { x = 1 }))
    assert.is_nil(done) -- answered while the query still ran on the pool
    server:wait_until(function() return done end, 60, "the long query")
  end)

  it("exec outside a task raises a clear error", function()
    local ok, err = pcall(db.exec, db, "SELECT 1")
    assert.is_false(ok)
    assert.matches("db:exec waits, so it can only be called from a handler", err)
  end)
end)
