-- Traffic counters on the pipeline, as in nano's chat demo: every message's payload bytes on
-- the way in (before its handler runs) and on the way out (before it is written).
local nano = require "nano"

local Stats = { inbound_bytes = 0, outbound_bytes = 0 }

function Stats:init()
  -- A stage that returns nothing lets the message through; returning nil, err would drop it.
  nano.pipeline.inbound:push_back(function(_, msg)
    self.inbound_bytes = self.inbound_bytes + #msg.data
  end)
  nano.pipeline.outbound:push_back(function(_, msg)
    self.outbound_bytes = self.outbound_bytes + #msg.data
  end)
end

-- stats.get (request): the counters and the member count. Not in nano's demo; handy to watch.
function Stats:get(s, msg)
  local room = require "room"
  return {
    inbound_bytes = self.inbound_bytes,
    outbound_bytes = self.outbound_bytes,
    members = room.group and room.group:count() or 0,
  }
end

return Stats
