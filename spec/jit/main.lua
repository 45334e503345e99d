-- The fixed workload of dispatch_compiles_spec.lua: a handler that answers at once (with the
-- request, or a table around it), and one that pushes (a C function call inside the handler)
-- before it answers.
local nano = require "nano"

local Bench = {}
function Bench:ping(s, msg) return msg end
-- a reply with a table one level down: the flat writer (lua/nano/init.lua) gives up on it
function Bench:nested(s, msg) return { p = msg, ok = true } end
function Bench:echo(s, msg)
  s:push("onEcho", msg)
  return msg
end
nano.register(Bench, { name = "Bench" })
