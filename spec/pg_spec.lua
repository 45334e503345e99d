-- nano.pg against a real PostgreSQL 15 this file starts once (nt.postgres): values of every
-- mapped type, parameters, errors, transactions, the pool, timeouts that cancel on the server,
-- and a server killed with a query in flight and brought back.
local nt = require "nano.test"
local nano = require "nano"
local U = require "spec.fixtures.api_util"

describe("nano.pg", function()
  local info, pgsrv, server
  setup(function() info, pgsrv = nt.postgres() end)
  teardown(function() pgsrv:stop() end)
  before_each(function() server = nt.start(U.FIXTURE) end)
  after_each(function()
    server:stop()
    assert.equal(0, nano.pg.count()) -- every connection freed
  end)

  local function connect(opts)
    return assert(nano.pg.connect(info, opts))
  end

  -- PostgreSQL cancels only a query that is running: a cancel that arrives before the backend
  -- has read the query is ignored, and the query then runs its full time. So the timeout tests
  -- move the clock once the server shows the sleep running (on a loaded machine the query can
  -- still be on its way when the test advances).
  local function wait_for_sleep_running(pattern)
    local probe, seen, done = connect({ pool = 1 }), false, false
    nano.spawn(function()
      for _ = 1, 20000 do
        local rows = probe:query("SELECT count(*)::int AS n FROM pg_stat_activity "
          .. "WHERE state = 'active' AND query LIKE $1 AND query NOT LIKE '%pg_stat_activity%'",
          pattern or "SELECT pg_sleep%")
        seen = rows and rows[1] and rows[1].n > 0
        if seen or done then break end
        nano.sleep(0)
      end
      probe:close()
    end)
    local ok, err = pcall(server.wait_until, server, function() return seen end, 30,
      "the sleep to run on the server")
    done = true
    assert(ok, err)
  end

  it("maps integers, floats, booleans, NULL and other types to Lua values", function()
    server:run(function()
      local pg = connect()
      local rows = assert(pg:query([[SELECT 1::int2 AS i2, '-2147483648'::int4 AS i4,
        9007199254740992::int8 AS i8, 9007199254740993::int8 AS big, 1.5::float4 AS f4,
        0.1::float8 AS f8, 'Infinity'::float8 AS inf, true AS t, false AS f, NULL::int AS n,
        'héllo'::text AS s, 12.50::numeric AS num, '2026-01-02'::date AS d,
        '\x00ff'::bytea AS b, ARRAY[1,2] AS arr]]))
      assert.equal(1, #rows)
      assert.same({
        i2 = 1, i4 = -2147483648, i8 = 9007199254740992, big = "9007199254740993", f4 = 1.5,
        f8 = 0.1, inf = math.huge, t = true, f = false, s = "héllo", num = "12.50",
        d = "2026-01-02", b = "\\x00ff", arr = "{1,2}",
      }, rows[1])
      pg:close()
    end)
  end)

  it("returns every row, keyed by column name, and an empty list for none", function()
    server:run(function()
      local pg = connect()
      local rows = pg:query("SELECT g AS id, 'n' || g AS name FROM generate_series(1, 3) g")
      assert.same({ { id = 1, name = "n1" }, { id = 2, name = "n2" }, { id = 3, name = "n3" } }, rows)
      assert.same({}, pg:query("SELECT 1 AS x WHERE false"))
      pg:close()
    end)
  end)

  it("binds $1..$n parameters: nil and nano.pg.null as NULL, booleans, numbers, strings", function()
    server:run(function()
      local pg = connect()
      local rows = assert(pg:query("SELECT $1::int AS a, $2::text AS b, $3::bool AS c, $4::float8 AS d, "
        .. "$5::int8 AS e, $6::text AS f, $7::text AS g", nil, nano.pg.null, true, 2.25,
        -9007199254740991, "it's; DROP TABLE x", "$1"))
      assert.same({ c = true, d = 2.25, e = -9007199254740991, f = "it's; DROP TABLE x", g = "$1" }, rows[1])
      pg:close()
    end)
  end)

  it("refuses a parameter of a type it cannot send, naming it", function()
    server:run(function()
      local pg = connect()
      local v, err = pg:query("SELECT $1::text, $2::text", "a", { 1 })
      assert.is_nil(v)
      assert.equal("pg: parameter $2 is a table (expected nil, nano.pg.null, a boolean, a number or a string)", err)
      v, err = pg:query(42)
      assert.is_nil(v)
      assert.matches("expected SQL text", err)
      v, err = pg:query("SELECT $1::text", "a\0b")
      assert.is_nil(v)
      assert.matches("NUL byte", err)
      pg:close()
    end)
  end)

  it("reports changes for commands and the server's message and SQLSTATE for errors", function()
    server:run(function()
      local pg = connect()
      assert.same({ changes = 0 }, pg:query("CREATE TABLE players (id int PRIMARY KEY, name text)"))
      assert.same({ changes = 2 }, pg:query("INSERT INTO players VALUES (1, 'a'), (2, 'b')"))
      assert.same({ changes = 1 }, pg:query("UPDATE players SET name = $1 WHERE id = $2", "z", 2))
      local v, err = pg:query("INSERT INTO players VALUES (1, 'dup')")
      assert.is_nil(v)
      assert.matches("duplicate key value violates unique constraint .* %(SQLSTATE 23505%)", err)
      v, err = pg:query("SELEC 1")
      assert.is_nil(v)
      assert.equal('pg: syntax error at or near "SELEC" (SQLSTATE 42601)', err)
      assert.same({ { name = "z" } }, pg:query("SELECT name FROM players WHERE id = 2"))
      pg:query("DROP TABLE players")
      pg:close()
    end)
  end)

  it("commits a transaction whose function returns, on one pinned connection", function()
    server:run(function()
      local pg = connect({ pool = 3 })
      pg:query("CREATE TABLE tx_ok (id int)")
      local pid1, pid2 = pg:transaction(function(tx)
        local a = tx:query("SELECT pg_backend_pid() AS pid")[1].pid
        tx:query("INSERT INTO tx_ok VALUES (1)")
        local b = tx:query("SELECT pg_backend_pid() AS pid")[1].pid
        return a, b
      end)
      assert.equal(pid1, pid2)
      assert.same({ { n = 1 } }, pg:query("SELECT count(*)::int AS n FROM tx_ok"))
      assert.is_true(pg:transaction(function() end))
      pg:query("DROP TABLE tx_ok")
      pg:close()
    end)
  end)

  it("rolls a transaction back when its function raises, and returns the error", function()
    server:run(function()
      local pg = connect()
      pg:query("CREATE TABLE tx_bad (id int)")
      local ok, err = pg:transaction(function(tx)
        tx:query("INSERT INTO tx_bad VALUES (1)")
        error("no gold left", 0)
      end)
      assert.is_nil(ok)
      assert.equal("no gold left", err)
      assert.same({ { n = 0 } }, pg:query("SELECT count(*)::int AS n FROM tx_bad"))
      pg:query("DROP TABLE tx_bad")
      pg:close()
    end)
  end)

  it("rolls a transaction back when one of its queries failed", function()
    server:run(function()
      local pg = connect()
      pg:query("CREATE TABLE tx_fail (id int PRIMARY KEY)")
      local ok, err = pg:transaction(function(tx)
        tx:query("INSERT INTO tx_fail VALUES (1)")
        tx:query("INSERT INTO tx_fail VALUES (1)")
      end)
      assert.is_nil(ok)
      assert.matches("duplicate key", err)
      assert.same({ { n = 0 } }, pg:query("SELECT count(*)::int AS n FROM tx_fail"))
      pg:query("DROP TABLE tx_fail")
      pg:close()
    end)
  end)

  it("runs 1,000 concurrent queries through a pool of 4 connections", function()
    server:run(function()
      local pg = connect({ pool = 4 })
      local tasks = {}
      for i = 1, 1000 do
        tasks[i] = nano.spawn(function() return pg:query("SELECT $1::int * 2 AS v", i) end)
      end
      for i = 1, 1000 do
        local rows, err = tasks[i]:wait()
        assert(rows, err)
        assert.equal(i * 2, rows[1].v)
      end
      assert.same({ size = 4, open = 4, idle = 4, waiting = 0 }, pg:stats())
      pg:close()
    end)
  end)

  it("resolves a host name off the loop (host=localhost)", function()
    server:run(function()
      local pg = assert(nano.pg.connect((info:gsub("127%.0%.0%.1", "localhost"))))
      assert.same({ { v = 1 } }, pg:query("SELECT 1 AS v"))
      pg:close()
      local bad, err = nano.pg.connect("host=no-such-host.invalid dbname=x")
      assert.is_nil(bad)
      assert.matches("^pg: connect: cannot resolve no%-such%-host%.invalid", err)
    end)
  end)

  it("answers queries on a closed pool and a bad conninfo with errors", function()
    server:run(function()
      local pg = connect()
      pg:close()
      local v, err = pg:query("SELECT 1")
      assert.is_nil(v)
      assert.equal("pg: pool closed", err)
      v, err = nano.pg.connect("host=127.0.0.1 port=" .. nt.free_port() .. " dbname=x")
      assert.is_nil(v)
      assert.matches("^pg: connect: .*Connection refused", err)
      v, err = nano.pg.connect("nonsense")
      assert.is_nil(v)
      assert.matches("missing \"=\"", err)
      v, err = nano.pg.connect(info, { pool = 0 })
      assert.is_nil(v)
      assert.matches("opts.pool", err)
    end)
  end)

  it("raises outside a task, before taking a connection from the pool", function()
    local pg
    server:run(function() pg = connect({ pool = 1 }) end)
    assert.has_error(function() pg:query("SELECT 1") end,
      "pg:query waits, so it can only be called from a task (nano.spawn, or a handler once handlers are tasks); here nothing can wait")
    assert.same({ size = 1, open = 1, idle = 1, waiting = 0 }, pg:stats())
    server:run(function() assert.same({ { v = 1 } }, pg:query("SELECT 1 AS v")) end)
    pg:close()
  end)

  it("times a query out on virtual time and cancels it on the server", function()
    local res, calling
    nano.spawn(function()
      local pg = connect({ pool = 1, timeout = 5 })
      calling = nano.now() -- the query's timeout runs from here, on the host's clock
      res = { pg:query("SELECT pg_sleep(60)") }
      -- the one connection is free again once the server has cancelled the sleep
      res.after = pg:query("SELECT 7 AS v")
      res.running = pg:query("SELECT count(*)::int AS n FROM pg_stat_activity WHERE query LIKE 'SELECT pg_sleep%'")
      pg:close()
    end)
    server:wait_until(function() return calling end)
    wait_for_sleep_running()
    -- real time passed while waiting for the server (the clock is real time + what advance adds)
    local left = calling + 4.9 - server:now()
    if left > 0 then
      server:advance(left)
      assert.is_nil(res)
    end
    server:advance(0.2)
    -- the cancel opens a connection of its own (a postgres backend forks): give a busy machine time
    server:wait_until(function() return res and res.running end, 30)
    assert.same({ nil, "pg: query timed out after 5 s (cancelled on the server)" }, { res[1], res[2] })
    assert.same({ { v = 7 } }, res.after)
    assert.same({ { n = 0 } }, res.running)
  end)

  it("cancels again when the server ignored the cancel, so the connection is freed", function()
    local res, calling
    nano.spawn(function()
      local pg = connect({ pool = 1, timeout = 1 })
      calling = true
      -- the block catches the first cancel and sleeps again (as a query still on its way to the
      -- backend ignores one): only a cancel sent after it ends the query
      res = { pg:query([[DO $$ BEGIN PERFORM pg_sleep(60);
        EXCEPTION WHEN query_canceled THEN PERFORM pg_sleep(60); END $$]]) }
      res.after = pg:query("SELECT 8 AS v")
      pg:close()
    end)
    server:wait_until(function() return calling end)
    wait_for_sleep_running("DO $$%")
    server:advance(1.1) -- the timeout: the first cancel
    server:wait_until(function() return res end, 30, "the timeout")
    assert.same({ nil, "pg: query timed out after 1 s (cancelled on the server)" }, { res[1], res[2] })
    server:advance(1.1) -- a second later: the cancel again
    server:wait_until(function() return res.after end, 30, "the connection to be free again")
    assert.same({ { v = 8 } }, res.after)
  end)

  it("ends a transaction whose query timed out: nothing committed, the pool usable", function()
    local res, calling
    nano.spawn(function()
      local pg = connect({ pool = 1, timeout = 5 })
      pg:query("CREATE TABLE tx_slow (id int)")
      res = { pg:transaction(function(tx)
        tx:query("INSERT INTO tx_slow VALUES (1)")
        calling = true -- the sleep's timer starts now, on virtual time
        local _, err = tx:query("SELECT pg_sleep(60)")
        return err
      end) }
      res.count = pg:query("SELECT count(*)::int AS n FROM tx_slow")
      pg:query("DROP TABLE tx_slow")
      pg:close()
    end)
    server:wait_until(function() return calling end)
    wait_for_sleep_running()
    server:advance(5.1)
    server:wait_until(function() return res and res.count end, 30)
    assert.same({ nil, "pg: query timed out after 5 s (cancelled on the server)" }, { res[1], res[2] })
    assert.same({ { n = 0 } }, res.count)
  end)

  it("gives up connecting after connect_timeout, on virtual time", function()
    local res, calling
    pgsrv:pause()
    nano.spawn(function()
      calling = true
      res = { nano.pg.connect(info, { connect_timeout = 3 }) }
    end)
    server:wait_until(function() return calling end)
    server:advance(2.9)
    local early = res
    server:advance(0.2)
    server:wait_until(function() return res end)
    pgsrv:resume()
    assert.is_nil(early)
    assert.same({ nil, "pg: connecting timed out after 3 s" }, res)
  end)

  it("fails the query in flight when the server dies, and reconnects for later queries", function()
    local lines = U.capture_logs()
    server:run(function()
      local pg = connect({ pool = 1 })
      local sleeping = nano.spawn(function() return pg:query("SELECT pg_sleep(30)") end)
      nano.sleep(0.2) -- the query is on the server
      pgsrv:kill()
      local v, err = sleeping:wait()
      assert.is_nil(v)
      assert.matches("^pg: connection lost", err)
      pgsrv:start()
      assert.same({ { v = 1 } }, pg:query("SELECT 1 AS v"))
      pg:close()
    end)
    U.restore_log_level()
    assert.truthy(U.find(lines, "pg: a pooled connection closed"))
  end)

  it("serves queries made while shutting down, and closes once stopped, failing queries in flight", function()
    local pg
    server:run(function() pg = connect({ pool = 2 }) end)
    local sleeping, saved
    nano.spawn(function() sleeping = { pg:query("SELECT pg_sleep(30)") } end)
    nano.shutdown()
    nano.spawn(function() saved = { pg:query("SELECT 'saved' AS v") } end)
    server:wait_until(function() return saved end)
    assert.same({ { { v = "saved" } } }, saved)
    assert.is_nil(sleeping)
    server:stop()
    assert.same({ nil, "pg: pool closed" }, sleeping)
  end)
end)
