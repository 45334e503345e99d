-- The benchmark target: the smallest useful game server. scripts/bench drives it with many
-- connections; it is also a quick way to try a client against nano-host.
--   nano-host examples/pingpong/main.lua
--   request Bench.ping {any}  -> response: the same payload back (route code 1)
--   notify  Bench.note {any}  -> push onNote with the same payload to the sender (route code 2)
-- Addresses: NANO_PINGPONG_TCP (default 127.0.0.1:3250) and NANO_PINGPONG_WS (default
-- 127.0.0.1:3251, path /nano); set either to "off" to skip that transport.
-- NANO_PINGPONG_SERIALIZER=protobuf: payloads are protobuf (pingpong.proto) instead of JSON.
-- NANO_PINGPONG_REPORT=<secs> logs requests and notifies per second every <secs>, as nano's
-- benchmark server prints its QPS.
local nano = require "nano"
local bench = require "bench"

nano.register(bench, { name = "Bench" })

-- NANO_PINGPONG_SERIALIZER=protobuf: payloads are pingpong.proto's Ping instead of JSON (protoc
-- compiles the schema when the script loads).
if os.getenv("NANO_PINGPONG_SERIALIZER") == "protobuf" then
  nano.set_serializer(nano.protobuf {
    proto = "pingpong.proto",
    routes = { ["Bench.ping"] = "Ping", ["Bench.note"] = "Ping", onNote = "Ping" },
  })
end

-- Route compression: clients that read the handshake's dict send 2 bytes instead of the route.
nano.set_dictionary({ ["Bench.ping"] = 1, onNote = 2 })

local tcp = os.getenv("NANO_PINGPONG_TCP") or "127.0.0.1:3250"
local ws = os.getenv("NANO_PINGPONG_WS") or "127.0.0.1:3251"
if tcp ~= "off" then nano.listen(tcp) end
if ws ~= "off" then nano.listen(ws, { websocket = true, path = { "/nano", "/" } }) end

bench.report_every = tonumber(os.getenv("NANO_PINGPONG_REPORT"))
