-- The fixed workload of dispatch_compiles_spec.lua: a handler that answers at once, and one that
-- pushes (a C function call inside the handler) before it answers.
local nano = require "nano"

local Bench = {}
function Bench:ping(s, msg) return msg end
function Bench:echo(s, msg)
  s:push("onEcho", msg)
  return msg
end
nano.register(Bench, { name = "Bench" })
