-- The protobuf workload of dispatch_compiles_spec.lua: the same handler that answers at once, with
-- protobuf payloads. Its response type has scalar fields only, so the dispatcher writes it through
-- the type's flat writer (lua/nano/protobuf.lua), which is to compile into its trace.
local nano = require "nano"

local here = debug.getinfo(1, "S").source:match("^@(.*/)") or "./"
nano.set_serializer(nano.protobuf { proto = here .. "ping.proto", routes = { ["Bench.ping"] = "jit.Ping" } })

local Bench = {}
function Bench:ping(s, msg) return msg end
nano.register(Bench, { name = "Bench" })
