-- The cluster figures of scripts/bench: a backend with the bench routes and no listener; the gate
-- (cluster_gate.lua) forwards Bench.* to it over NATS (NH_BENCH_NATS).
local nano = require "nano"
local Bench = {}
function Bench:ping(s, msg) return msg end
-- broadcast: one group whose members sit on the gates (remote sessions)
local group = nano.new_group("bench")
function Bench:join(s) group:add(s); return {} end
function Bench:bcast(s, msg) group:broadcast("onBcast", msg); return {} end
nano.register(Bench, { name = "Bench" })
nano.cluster({ nats = os.getenv("NH_BENCH_NATS"), type = "bench", id = "bench-1" })
