-- nano's chat demo on nano-host. Run it, then open http://127.0.0.1:3250/web/ in two tabs:
--   nano-host examples/chat/main.lua
-- NANO_CHAT_ADDR changes the address (default ":3250", every interface, as nano's demo);
-- NANO_CHAT_HEARTBEAT the heartbeat interval in seconds (default 30); NANO_CHAT_TLS_CERT and
-- NANO_CHAT_TLS_KEY (PEM files) serve the page over https:// and the chat over wss://.
local nano = require "nano"

local room = require "room"
local stats = require "stats"

-- The history's SQLite file (history.lua; NANO_CHAT_DB overrides): next to this script, or the
-- script's first argument (the specs pass ":memory:").
local here = debug.getinfo(1, "S").source:match("^@(.*)/[^/]*$") or "."
room.history_path = (...) or here .. "/chat.db"

-- As nano's demo registers it: component name "room", handler names lower-cased by a name
-- function (ours are lower case already; a handler named Join would still be room.join).
-- join takes any payload, so it gets the raw bytes instead of decoded JSON.
nano.register(room, { name = "room", name_func = string.lower, raw = { join = true } })
nano.register(stats, { name = "stats" })

nano.set_heartbeat_interval(tonumber(os.getenv("NANO_CHAT_HEARTBEAT")) or 30)

-- One port for both: WebSocket clients upgrade on /nano (nano's web client) or / (pomelo's web
-- client, which cannot choose a path), browsers get the page at /web/.
local cert, key = os.getenv("NANO_CHAT_TLS_CERT"), os.getenv("NANO_CHAT_TLS_KEY")
nano.listen(os.getenv("NANO_CHAT_ADDR") or ":3250", {
  websocket = true,
  path = { "/nano", "/" },
  static = { ["/web/"] = "web" }, -- relative to this file
  tls = cert and { cert = cert, key = key } or nil,
})
