-- nano.redis against a real redis-server this file starts (nt.redis): replies of every type,
-- errors, AUTH/SELECT from the URL, pipelining 1,000 calls, pub/sub, timeouts on virtual time,
-- and a server killed with calls in flight and brought back.
local nt = require "nano.test"
local nano = require "nano"
local U = require "spec.fixtures.api_util"

describe("nano.redis", function()
  local url, redis, server
  setup(function() url, redis = nt.redis() end)
  teardown(function() redis:stop() end)
  before_each(function() server = nt.start(U.FIXTURE) end)
  after_each(function()
    server:stop()
    assert.equal(0, nano.redis.count()) -- every connection freed
  end)

  local function connect(opts)
    return assert(nano.redis.connect(url, opts))
  end

  it("maps status, string, integer, nil and array replies to Lua", function()
    server:run(function()
      local r = connect()
      assert.equal("OK", r:call("SET", "k:str", "a\0b"))
      assert.equal("a\0b", r:call("GET", "k:str"))
      assert.equal(nil, r:call("GET", "k:missing"))
      assert.equal(0, r:call("EXISTS", "k:list"))
      assert.equal(3, r:call("RPUSH", "k:list", "x", 2, 3.5))
      assert.same({ "x", "2", "3.5" }, r:call("LRANGE", "k:list", 0, -1))
      assert.same({ "a\0b", nano.redis.null }, r:call("MGET", "k:str", "k:missing"))
      assert.same({}, r:call("LRANGE", "k:empty", 0, -1))
      assert.equal("PONG", r:call("PING"))
      r:close()
    end)
  end)

  it("keeps integers exact up to 2^53", function()
    server:run(function()
      local r = connect()
      r:call("SET", "k:big", "9007199254740990")
      assert.equal(9007199254740991, r:call("INCR", "k:big"))
      assert.equal(-5, r:call("DECRBY", "k:neg", 5))
      r:close()
    end)
  end)

  it("returns an error reply as nil and Redis's message, and the connection goes on", function()
    server:run(function()
      local r = connect()
      r:call("SET", "k:s", "text")
      local v, err = r:call("INCR", "k:s")
      assert.is_nil(v)
      assert.matches("not an integer", err)
      v, err = r:call("NOSUCHCOMMAND")
      assert.is_nil(v)
      assert.matches("unknown command", err)
      assert.equal("text", r:call("GET", "k:s"))
      r:close()
    end)
  end)

  it("maps an error inside an array reply (MULTI/EXEC) to { err = ... }", function()
    server:run(function()
      local r = connect()
      r:call("SET", "k:t", "text")
      assert.equal("OK", r:call("MULTI"))
      assert.equal("QUEUED", r:call("INCR", "k:t"))
      assert.equal("QUEUED", r:call("GET", "k:t"))
      local res = r:call("EXEC")
      assert.matches("not an integer", res[1].err)
      assert.equal("text", res[2])
      r:close()
    end)
  end)

  it("refuses arguments that are not strings or numbers with an error naming them", function()
    server:run(function()
      local r = connect()
      local v, err = r:call("SET", "k", {})
      assert.is_nil(v)
      assert.equal("redis: call: argument 3 is a table (expected a string or a number)", err)
      v, err = r:call()
      assert.is_nil(v)
      assert.matches("expected a command", err)
      r:close()
    end)
  end)

  it("answers calls on a closed client with an error", function()
    server:run(function()
      local r = connect()
      r:close()
      local v, err = r:call("GET", "k")
      assert.is_nil(v)
      assert.equal("redis: client closed", err)
      assert.equal("closed", r:state())
    end)
  end)

  it("rejects a bad URL and reports a server that is not there", function()
    server:run(function()
      local r, err = nano.redis.connect("http://127.0.0.1")
      assert.is_nil(r)
      assert.matches("not a redis URL", err)
      local port = nt.free_port()
      r, err = nano.redis.connect("redis://127.0.0.1:" .. port .. "/0")
      assert.is_nil(r)
      assert.matches("cannot connect to 127.0.0.1:" .. port .. ": connect: Connection refused", err)
    end)
  end)

  it("resolves a host name off the loop, and reports one that does not resolve", function()
    server:run(function()
      local r = assert(nano.redis.connect((url:gsub("127%.0%.0%.1", "localhost"))))
      assert.equal("PONG", r:call("PING"))
      r:close()
      local bad, err = nano.redis.connect("redis://no-such-host.invalid:6379/0")
      assert.is_nil(bad)
      assert.matches("^redis: cannot connect to no%-such%-host%.invalid:6379: connect: cannot resolve", err)
    end)
  end)

  it("selects the database named in the URL", function()
    server:run(function()
      local r0 = connect()
      local r3 = assert(nano.redis.connect((url:gsub("/0$", "/3"))))
      r3:call("SET", "k:db", "three")
      assert.equal("three", r3:call("GET", "k:db"))
      assert.is_nil(r0:call("GET", "k:db"))
      r0:close()
      r3:close()
    end)
  end)

  it("connects over a unix socket (redis+unix://path?db=n)", function()
    server:run(function()
      local r = assert(nano.redis.connect("redis+unix://" .. redis.socket .. "?db=4"))
      r:call("SET", "k:unix", "4")
      local tcp4 = assert(nano.redis.connect((url:gsub("/0$", "/4"))))
      assert.equal("4", tcp4:call("GET", "k:unix"))
      r:close()
      tcp4:close()
    end)
  end)

  it("authenticates with the password in the URL, and says so when it is wrong", function()
    local purl, psrv = nt.redis({ password = "s3cret" })
    server:run(function()
      local r = assert(nano.redis.connect(purl))
      assert.equal("OK", r:call("SET", "k", "v"))
      r:close()
      local bad, err = nano.redis.connect((purl:gsub("s3cret", "wrong")))
      assert.is_nil(bad)
      assert.matches("AUTH on 127.0.0.1:%d+: WRONGPASS", err)
      local none
      none, err = nano.redis.connect((purl:gsub(":s3cret@", "")))
      assert.is_nil(none)
      assert.matches("NOAUTH", err)
    end)
    psrv:stop()
  end)

  it("authenticates as the ACL user named in the URL (redis://user:password@...)", function()
    server:run(function()
      local admin = connect()
      assert.equal("OK", admin:call("ACL", "SETUSER", "game", "on", ">p%w", "~*", "+@all"))
      local r = assert(nano.redis.connect((url:gsub("^redis://", "redis://game:p%%25w@"))))
      assert.equal("game", r:call("ACL", "WHOAMI")) -- "%25" in the URL is "%"
      r:close()
      admin:call("ACL", "DELUSER", "game")
      admin:close()
    end)
  end)

  it("pipelines 1,000 concurrent calls from 1,000 tasks on one connection", function()
    server:run(function()
      local r = connect()
      r:call("DEL", "k:count")
      local tasks = {}
      for i = 1, 1000 do
        tasks[i] = nano.spawn(function()
          local n = r:call("INCR", "k:count")
          local _, err = r:call("SET", "k:item:" .. i, i)
          assert(not err, err)
          return n, r:call("GET", "k:item:" .. i)
        end)
      end
      local seen = {}
      for i = 1, 1000 do
        local n, v = tasks[i]:wait()
        assert.equal(tostring(i), v)
        seen[n] = true
      end
      for n = 1, 1000 do assert.is_true(seen[n]) end
      assert.equal("1000", r:call("GET", "k:count"))
      r:close()
    end)
  end)

  it("delivers published messages to a subscriber's function, run as a task", function()
    server:run(function()
      local r = connect()
      local got = {}
      assert.is_true(r:subscribe("news", function(payload, channel)
        got[#got + 1] = channel .. "=" .. payload .. "/" .. r:call("GET", "k:sub")
      end))
      r:call("SET", "k:sub", "set")
      assert.equal(1, r:call("PUBLISH", "news", "hello"))
      assert.equal(0, r:call("PUBLISH", "other", "ignored"))
      for _ = 1, 300 do -- bounded: the message comes over the subscriber's socket
        if #got == 1 then break end
        nano.sleep(0.01)
      end
      assert.same({ "news=hello/set" }, got)
      assert.is_true(r:unsubscribe("news"))
      local receivers
      for _ = 1, 300 do -- bounded: the UNSUBSCRIBE goes over the subscriber's socket
        receivers = r:call("PUBLISH", "news", "unheard")
        if receivers == 0 then break end
        nano.sleep(0.01)
      end
      assert.equal(0, receivers)
      assert.same({ "news=hello/set" }, got)
      r:close()
    end)
  end)

  it("fails a command that gets no reply within the timeout, on virtual time", function()
    local res, calling
    nano.spawn(function()
      local r = connect({ timeout = 2 })
      calling = true
      res = { r:call("BLPOP", "k:never", 0) }
      r:close()
    end)
    server:wait_until(function() return calling end)
    server:advance(1.9)
    assert.is_nil(res)
    server:advance(0.2)
    server:wait_until(function() return res end)
    assert.same({ nil, "redis: BLPOP timed out after 2 s" }, res)
  end)

  it("gives up connecting after connect_timeout, on virtual time", function()
    local res, calling
    redis:pause() -- the kernel accepts, nobody answers the handshake
    nano.spawn(function()
      calling = true
      res = { nano.redis.connect(url, { connect_timeout = 3 }) }
    end)
    server:wait_until(function() return calling end)
    server:advance(2.9)
    local early = res
    server:advance(0.2)
    server:wait_until(function() return res end)
    redis:resume()
    assert.is_nil(early)
    assert.is_nil(res[1])
    assert.matches("^redis: connecting to 127.0.0.1:%d+ timed out after 3 s$", res[2])
  end)

  it("fails the calls in flight when the server dies, then reconnects for later calls", function()
    local lines = U.capture_logs()
    server:run(function()
      local r = connect({ reconnect_max = 0.1 })
      local blocked = nano.spawn(function() return r:call("BLPOP", "k:wait", 0) end)
      nano.sleep(0)
      redis:kill()
      local v, err = blocked:wait()
      assert.is_nil(v)
      assert.matches("^redis: connection lost", err)
      redis:start()
      assert.equal("PONG", r:call("PING")) -- waits for the reconnection
      assert.equal("ready", r:state())
      r:close()
    end)
    U.restore_log_level()
    assert.truthy(U.find(lines, "connection lost"))
  end)

  it("subscribes again after the server came back", function()
    local lines = U.capture_logs()
    server:run(function()
      local r = connect({ reconnect_max = 0.1 })
      local got = {}
      assert.is_true(r:subscribe("after", function(payload) got[#got + 1] = payload end))
      redis:kill()
      redis:start()
      -- bounded: the subscriber reconnects within a few backoff steps
      local receivers = 0
      for _ = 1, 200 do
        receivers = r:call("PUBLISH", "after", "again")
        if receivers == 1 then break end
        nano.sleep(0.02)
      end
      assert.equal(1, receivers)
      for _ = 1, 300 do -- bounded: the message comes over the subscriber's socket
        if #got > 0 then break end
        nano.sleep(0.01)
      end
      assert.same({ "again" }, got)
      r:close()
    end)
    U.restore_log_level()
    assert.truthy(U.find(lines, "reconnecting"))
  end)

  it("serves calls made while shutting down, and closes once stopped, failing calls in flight", function()
    local r, b
    server:run(function() r, b = connect(), connect() end)
    local blocked, saved
    nano.spawn(function() blocked = { b:call("BLPOP", "k:never", 0) } end) -- b is held by it
    nano.shutdown()
    -- what a shutdown hook or a closing session does on the way out
    nano.spawn(function() saved = { r:call("SET", "k:bye", "saved") } end)
    server:wait_until(function() return saved end)
    assert.same({ "OK" }, saved)
    assert.is_nil(blocked)
    server:stop()
    assert.same({ nil, "redis: client closed" }, blocked)
  end)

  it("keeps a client in nano.persist open across a hot reload, without reconnecting", function()
    server:stop()
    local dir = os.tmpname()
    os.remove(dir)
    assert(os.execute("mkdir -p '" .. dir .. "'") == 0)
    local f = assert(io.open(dir .. "/main.lua", "w"))
    f:write((([[
      local nano = require "nano"
      local P = nano.persist("db")
      P.loads = (P.loads or 0) + 1
      P.redis = P.redis or assert(nano.redis.connect("URL"))
    ]]):gsub("URL", url)))
    f:close()
    server = nt.start(dir .. "/main.lua")
    local P = nano.persist("db")
    local r = P.redis
    server:run(function() assert.equal("OK", r:call("CLIENT", "SETNAME", "persisted")) end)
    assert.is_true(nano.reload())
    assert.equal(2, P.loads)
    assert.equal(r, P.redis)
    assert.equal(1, nano.redis.count())
    server:run(function()
      assert.equal("persisted", r:call("CLIENT", "GETNAME")) -- the same server-side connection
    end)
    os.execute("rm -rf '" .. dir .. "'")
  end)
end)
