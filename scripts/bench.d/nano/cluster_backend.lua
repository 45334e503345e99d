-- The cluster figures of scripts/bench: a backend with the bench routes and no listener; the gate
-- (cluster_gate.lua) forwards Bench.* to it over NATS (NH_BENCH_NATS).
local nano = require "nano"
local Bench = {}
function Bench:ping(s, msg) return msg end
nano.register(Bench, { name = "Bench" })
nano.cluster({ nats = os.getenv("NH_BENCH_NATS"), type = "bench", id = "bench-1" })
