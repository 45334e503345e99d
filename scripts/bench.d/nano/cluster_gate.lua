-- The cluster figures of scripts/bench: a gate with no handlers of its own; Bench.* goes to the
-- backend (cluster_backend.lua) and back.
local nano = require "nano"
nano.set_heartbeat_interval(tonumber(os.getenv("NH_BENCH_HEARTBEAT")) or 10)
nano.cluster({ nats = os.getenv("NH_BENCH_NATS"), type = "gate", id = "gate-1" })
nano.listen("127.0.0.1:0")
nano.listen("127.0.0.1:0", { websocket = true, path = "/nano" })
