-- The second gate of scripts/bench's cluster broadcast figure (the same as cluster_gate.lua,
-- another id): half of the group's members connect here.
local nano = require "nano"
nano.set_heartbeat_interval(tonumber(os.getenv("NH_BENCH_HEARTBEAT")) or 10)
nano.cluster({ nats = os.getenv("NH_BENCH_NATS"), type = "gate", id = "gate-2" })
nano.listen("127.0.0.1:0")
