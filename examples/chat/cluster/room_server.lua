-- examples/chat as a cluster, the chat backend: the single-process example's room and stats
-- components, unchanged, on a process with no listener. Players reach it through the gates;
-- its group broadcasts reach them on whichever gate they are.
--   nano-host examples/chat/cluster/room_server.lua
local nano = require "nano"

-- the components of examples/chat, one folder up
local here = debug.getinfo(1, "S").source:match("^@(.*)/[^/]*$") or "."
package.path = here .. "/../?.lua;" .. package.path
local room = require "room"
local stats = require "stats"
room.history_path = here .. "/../chat.db" -- the same file as the one-process example's

nano.register(room, { name = "room", name_func = string.lower, raw = { join = true } })
nano.register(stats, { name = "stats" })
nano.cluster({ nats = os.getenv("NANO_NATS") or "nats://127.0.0.1:4222", type = "chat" })
