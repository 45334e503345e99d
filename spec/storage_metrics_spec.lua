-- The storage clients' and the HTTP client's series on /metrics (docs/operating.md, "Metrics"):
-- scraped over HTTP before and after a known number of calls against a real SQLite database,
-- redis-server and PostgreSQL (nt.redis, nt.postgres), the counters move by exactly those calls
-- (successes and failures apart), the histograms count the same, and promtool accepts the text.
local nt = require "nano.test"
local nano = require "nano"
local U = require "spec.fixtures.api_util"

-- GET /metrics on the host's metrics listener (one per host: the same address returns it again).
local function scrape()
  local addr = nano.listen_metrics("127.0.0.1:0")
  local res = assert(nano.http.get("http://" .. addr .. "/metrics", { timeout = 5 }))
  assert.equal(200, res.status)
  local s = {}
  for line in res.body:gmatch("[^\n]+") do
    if line:sub(1, 1) ~= "#" then
      local key, v = line:match("^(.-) (%S+)$")
      s[key] = tonumber(v)
    end
  end
  return { text = res.body, s = s }
end

local function delta(before, after, key)
  assert(after.s[key], key .. " missing from the scrape")
  return after.s[key] - (before.s[key] or 0)
end

-- promtool check metrics on the scrape, less the families other spec files define with names
-- that its linter flags on purpose (spec_*: api_metrics_spec.lua tests what a name may be).
local function promtool(text)
  local keep = {}
  for line in text:gmatch("[^\n]+") do
    if not (line:find("^spec_") or line:find("^# %u+ spec_")) then keep[#keep + 1] = line end
  end
  local path = os.tmpname()
  local f = assert(io.open(path, "wb"))
  f:write(table.concat(keep, "\n"), "\n")
  f:close()
  local p = assert(io.popen("promtool check metrics < " .. path .. " 2>&1; echo \"exit=$?\""))
  local out = p:read("*a")
  p:close()
  os.remove(path)
  assert.matches("exit=0", out, 1, true)
end

-- Every sample of a family with `client`: its label sets, so that a test can say none came
-- from a query's text.
local function series_of(scr, family)
  local list = {}
  for key in pairs(scr.s) do
    if key:sub(1, #family + 1) == family .. "{" then list[#list + 1] = key end
  end
  table.sort(list)
  return list
end

-- the counts one client's calls must have moved
local function check_moved(before, after, client, name, ok, failed)
  local l = string.format('client="%s",name="%s"', client, name)
  assert.equal(ok, delta(before, after, "nano_storage_queries_total{" .. l .. ',outcome="ok"}'))
  if failed > 0 then
    assert.equal(failed, delta(before, after, "nano_storage_queries_total{" .. l .. ',outcome="error"}'))
  end
  assert.equal(ok + failed, delta(before, after, "nano_storage_query_seconds_count{" .. l .. "}"))
  assert.equal(ok + failed, delta(before, after, "nano_storage_query_seconds_bucket{" .. l .. ',le="+Inf"}'))
  assert.is_true(delta(before, after, "nano_storage_query_seconds_sum{" .. l .. "}") >= 0)
end

describe("storage metrics", function()
  local server
  before_each(function() server = nt.start(U.FIXTURE) end)
  after_each(function() server:stop() end)

  it("counts nano.sqlite statements by name and outcome, with their time", function()
    server:run(function()
      local db = assert(nano.sqlite.open(":memory:", { name = "spec_sqlite" }))
      local before = scrape()
      assert(db:exec("CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT NOT NULL)"))
      assert(db:exec("INSERT INTO t (id, v) VALUES (?, ?)", 1, "a"))
      assert(db:exec("INSERT INTO t (id, v) VALUES (?, ?)", 2, "b"))
      assert(db:exec("SELECT * FROM t"))
      assert.is_nil(db:exec("SELECT * FROM no_such_table"))         -- a prepare error
      assert.is_nil(db:exec("INSERT INTO t (id, v) VALUES (1, 'x')")) -- a constraint
      assert.is_nil(db:exec("SELECT ?", {}))                         -- a parameter refused
      local after = scrape()
      check_moved(before, after, "sqlite", "spec_sqlite", 4, 3)
      promtool(after.text)
      db:close()
    end)
  end)

  it("labels a client without a name \"default\", and no series with a query's text", function()
    server:run(function()
      local db = assert(nano.sqlite.open(":memory:"))
      local before = scrape()
      assert(db:exec("SELECT 'secret_text_1' AS x"))
      assert.is_nil(db:exec("SELECT secret_text_2 FROM nowhere"))
      local after = scrape()
      check_moved(before, after, "sqlite", "default", 1, 1)
      assert.is_nil(after.text:find("secret_text", 1, true))
      db:close()
    end)
  end)

  describe("against redis-server", function()
    local url, redis
    setup(function() url, redis = nt.redis() end)
    teardown(function() redis:stop() end)

    it("counts r:call by name and outcome (an error reply is an error, a nil reply is not)", function()
      server:run(function()
        local r = assert(nano.redis.connect(url, { name = "cache" }))
        local before = scrape()
        assert.equal("OK", r:call("SET", "m:k", "text"))
        assert.equal("text", r:call("GET", "m:k"))
        assert.is_nil((r:call("GET", "m:missing")))
        assert.equal(1, r:call("INCR", "m:n"))
        assert.is_nil((r:call("INCR", "m:k")))          -- not an integer
        assert.is_nil((r:call("NOSUCHCOMMAND")))
        assert.is_nil((r:call()))                      -- refused before sending
        local after = scrape()
        check_moved(before, after, "redis", "cache", 4, 3)
        promtool(after.text)
        r:close()
      end)
    end)
  end)

  describe("against PostgreSQL", function()
    local conninfo, pg
    setup(function() conninfo, pg = nt.postgres() end)
    teardown(function() pg:stop() end)

    it("counts pg:query and tx:query (not BEGIN/COMMIT) by name and outcome", function()
      server:run(function()
        local db = assert(nano.pg.connect(conninfo, { name = "main", pool = 2 }))
        local before = scrape()
        assert(db:query("CREATE TABLE IF NOT EXISTS m (id int PRIMARY KEY, v text)"))
        assert(db:query("INSERT INTO m VALUES ($1, $2)", 1, "a"))
        assert(db:query("SELECT * FROM m WHERE id = $1", 1))
        assert.is_nil(db:query("SELECT * FROM no_such_table"))
        assert.is_nil(db:query("INSERT INTO m VALUES (1, 'dup')"))
        assert(db:transaction(function(tx)
          assert(tx:query("INSERT INTO m VALUES ($1, $2)", 2, "b"))
          assert(tx:query("UPDATE m SET v = $1 WHERE id = $2", "c", 2))
        end))
        local after = scrape()
        check_moved(before, after, "pg", "main", 5, 2)
        assert.same({
          'nano_storage_queries_total{client="pg",name="main",outcome="error"}',
          'nano_storage_queries_total{client="pg",name="main",outcome="ok"}',
        }, (function()
          local l = {}
          for _, k in ipairs(series_of(after, "nano_storage_queries_total")) do
            if k:find('client="pg",name="main"', 1, true) then l[#l + 1] = k end
          end
          return l
        end)())
        promtool(after.text)
        db:close()
      end)
    end)
  end)
end)

describe("nano.http client metrics", function()
  local server
  before_each(function() server = nt.start(U.FIXTURE) end)
  after_each(function() server:stop() end)

  it("counts requests by method and status class, and no response as error", function()
    server:run(function()
      local addr = nano.listen_metrics("127.0.0.1:0")
      local before = scrape() -- counted once it is answered: after `before` was rendered
      assert.equal(404, nano.http.get("http://" .. addr .. "/nothing-here").status)
      assert.equal(404, nano.http.get("http://" .. addr .. "/nothing-here-either").status)
      assert.is_nil(nano.http.get("http://127.0.0.1:1/", { timeout = 2 }))  -- refused
      assert(nano.http.request{ method = "BREW", url = "http://" .. addr .. "/x" })
      local after = scrape()
      -- the `before` scrape itself is the one GET 2xx counted between the two renderings
      assert.equal(1, delta(before, after, 'nano_http_client_requests_total{method="GET",outcome="2xx"}'))
      assert.equal(2, delta(before, after, 'nano_http_client_requests_total{method="GET",outcome="4xx"}'))
      assert.equal(1, delta(before, after, 'nano_http_client_requests_total{method="GET",outcome="error"}'))
      assert.equal(1, delta(before, after, 'nano_http_client_requests_total{method="other",outcome="4xx"}'))
      assert.equal(4, delta(before, after, 'nano_http_client_request_seconds_count{method="GET"}'))
      assert.equal(1, delta(before, after, 'nano_http_client_request_seconds_count{method="other"}'))
      promtool(after.text)
    end)
  end)
end)
