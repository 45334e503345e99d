-- The nano-host side of scripts/bench: the same four routes as the floor (scripts/bench.d/floor.c)
-- and the pomelo peer, written the way a game developer would, with a Lua handler and JSON.
local nano = require "nano"

local Bench = {}

-- ping-pong: the request's payload is the response
function Bench:ping(s, msg) return msg end
if os.getenv("NH_BENCH_WAIT") == "1" then
  -- the same through a handler that waits (docs/async.md): a yield and a resume per request
  function Bench:ping(s, msg)
    nano.sleep(0)
    return msg
  end
end

-- a reply one level deep (section 8's second figure): written by the flat writer, as a flat
-- reply is (docs/benchmarks.md, eleventh pass), not by the encoder
function Bench:nested(s, msg) return { p = msg, ok = true } end

-- notify + push: the notify's payload comes back as a push
function Bench:note(s, msg) s:push("onNote", msg) end

-- broadcast: one group; a request to Bench.bcast pushes its payload to every member
local group
if nano.new_group then
  group = nano.new_group("bench")
else
  -- before nano.new_group (issue 3) landed: the core primitive it is built on
  local core = require "nano.core"
  local list, index = {}, {}
  group = {
    add = function(_, s)
      if index[s] then return end
      list[#list + 1] = s
      index[s] = #list
    end,
    leave = function(_, s)
      local i = index[s]
      if not i then return end
      local last = list[#list]
      list[i], index[last] = last, i
      list[#list], index[s] = nil, nil
    end,
    broadcast = function(_, route, v)
      return core.push_many(list, route, nano.serializer().marshal(v))
    end,
  }
  nano.on_session_closed(function(s) group:leave(s) end)
end

function Bench:join(s, msg)
  group:add(s)
  return {}
end

function Bench:bcast(s, msg)
  group:broadcast("onBcast", msg)
  return {}
end

-- storage figures: ping-pong through one SQLite primary-key SELECT (a task waits for it; the
-- response is the request's payload, as for Bench.ping)
local db
function Bench:sqlping(s, msg)
  local mid = s:last_mid()
  nano.spawn(function()
    if not db then
      db = assert(nano.sqlite.open(":memory:"))
      db:exec("CREATE TABLE kv (k INTEGER PRIMARY KEY, v TEXT)")
      db:exec("INSERT INTO kv VALUES (1, 'one')")
    end
    local rows = db:exec("SELECT v FROM kv WHERE k = ?", 1)
    if rows and rows[1] then s:response_mid(mid, msg) end
  end)
end

-- NH_BENCH_SERIALIZER=protobuf: the same routes with protobuf payloads (bench.proto's Ping)
if os.getenv("NH_BENCH_SERIALIZER") == "protobuf" then
  nano.set_serializer(nano.protobuf {
    proto = "bench.proto",
    routes = { ["Bench.ping"] = "Ping", ["Bench.note"] = "Ping", onNote = "Ping", onBcast = "Ping" },
  })
end

nano.set_heartbeat_interval(tonumber(os.getenv("NH_BENCH_HEARTBEAT")) or 10)
nano.register(Bench, { name = "Bench" })
nano.listen("127.0.0.1:0")
nano.listen("127.0.0.1:0", { websocket = true, path = "/nano" })
-- the TLS figures: the same routes over TLS and wss (scripts/bench makes the certificate)
local tls_dir = os.getenv("NH_BENCH_TLS_DIR")
if tls_dir then
  local tls = { cert = tls_dir .. "/cert.pem", key = tls_dir .. "/key.pem" }
  nano.listen("127.0.0.1:0", { tls = tls })
  nano.listen("127.0.0.1:0", { websocket = true, path = "/nano", tls = tls })
end
-- scripts/bench's metrics figure: the same server with the metrics listener on
if os.getenv("NH_BENCH_METRICS") == "1" then nano.listen_metrics("127.0.0.1:0") end
