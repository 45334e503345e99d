-- The fixed workload of dispatch_compiles_spec.lua: a handler that answers at once (with the
-- request, or tables around it), one that pushes before it answers (through the FFI: no C call),
-- and one whose push is a C function call (a value the flat writer leaves to the core's encoder).
local nano = require "nano"

local Bench = {}
function Bench:ping(s, msg) return msg end
-- a reply with a table one level down: the flat writer (lua/nano/init.lua) writes it too
function Bench:nested(s, msg) return { p = msg, ok = true } end
-- two levels down: the flat writer gives up on it, the core's encoder writes it
function Bench:deep(s, msg) return { p = { q = msg }, ok = true } end
function Bench:echo(s, msg)
  s:push("onEcho", msg)
  return msg
end
function Bench:echo_list(s, msg)
  s:push("onEcho", { msg }) -- an array: the flat writer leaves it to core.push_value, a C function
  return msg
end
nano.register(Bench, { name = "Bench" })
