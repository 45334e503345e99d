-- A real-time world over WebSocket (and TCP), ticking ten times a second.
--   nano-host examples/world/main.lua        then open http://127.0.0.1:3252/web/
--   nano-host --watch examples/world/main.lua   ... and edit world.lua while it runs
-- Addresses: NANO_WORLD_ADDR (WebSocket + page, default 127.0.0.1:3252) and NANO_WORLD_TCP
-- (default off).
local nano = require "nano"
local world = require "world"

-- Timers tick at the timer precision (1 s by default, as nano). The world ticks every 0.1 s, so
-- ask for a finer one before the loop starts (a reload asking again for the same value is fine).
nano.set_timer_precision(0.01)

nano.register(world, { name = "World" })

nano.listen(os.getenv("NANO_WORLD_ADDR") or "127.0.0.1:3252", {
  websocket = true,
  path = { "/nano", "/" },
  static = { ["/web/"] = "web", ["/lib/"] = "../chat/web" }, -- the page, and the shared JS client
})
local tcp = os.getenv("NANO_WORLD_TCP")
if tcp and tcp ~= "off" then nano.listen(tcp) end
