-- examples/chat as a cluster, the gate: it serves the page and the players' connections, and has
-- no chat logic of its own: room.* goes over NATS to the chat backend (room_server.lua), whose
-- pushes and broadcasts come back through here. Run two gates and one backend (README.md):
--   NANO_CHAT_ADDR=:3250 nano-host examples/chat/cluster/gate.lua
--   NANO_CHAT_ADDR=:3251 nano-host examples/chat/cluster/gate.lua
-- NANO_NATS: the NATS server (default nats://127.0.0.1:4222).
local nano = require "nano"

nano.cluster({ nats = os.getenv("NANO_NATS") or "nats://127.0.0.1:4222", type = "gate" })
nano.set_heartbeat_interval(tonumber(os.getenv("NANO_CHAT_HEARTBEAT")) or 30)
nano.listen(os.getenv("NANO_CHAT_ADDR") or ":3250", {
  websocket = true,
  path = { "/nano", "/" },
  static = { ["/web/"] = "../web" }, -- the same page as the single-process example
})
