-- The fixed workload of dispatch_compiles_spec.lua: a handler that answers at once.
local nano = require "nano"

local Bench = {}
function Bench:ping(s, msg) return msg end
nano.register(Bench, { name = "Bench" })
