-- The nano-host side of `scripts/bench --only storage`: ping-pong as in bench.d/nano, plus
-- Bench.store, a request whose handler does one Redis GET and one PostgreSQL primary-key SELECT
-- before answering (servers named by NH_BENCH_REDIS and NH_BENCH_PG).
local nano = require "nano"

local redis_url = assert(os.getenv("NH_BENCH_REDIS"), "NH_BENCH_REDIS")
local pg_info = assert(os.getenv("NH_BENCH_PG"), "NH_BENCH_PG")
local r = assert(nano.redis.connect(redis_url))
local pg = assert(nano.pg.connect(pg_info, { pool = tonumber(os.getenv("NH_BENCH_PG_POOL")) or 8 }))

local Bench = {}

function Bench:ping(s, msg) return msg end

-- Handlers are not tasks yet (issue 12): the waiting runs in a task of its own, which answers
-- the request by its id when both replies are in.
function Bench:store(s, msg)
  local mid = s:last_mid()
  nano.spawn(function()
    local v, err = r:call("GET", "bench:key")
    local rows, perr = pg:query("SELECT name FROM bench_players WHERE id = $1", 42)
    if not rows or err then
      s:response_mid(mid, { code = 500, err = err or perr })
      return
    end
    s:response_mid(mid, { v = v, name = rows[1] and rows[1].name })
  end)
end

nano.set_heartbeat_interval(10)
nano.register(Bench, { name = "Bench" })
nano.listen("127.0.0.1:0")
nano.listen("127.0.0.1:0", { websocket = true, path = "/nano" })
