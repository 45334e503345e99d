-- The Bench component: echo a request, answer a notify with a push.
local nano = require "nano"

local Bench = { pings = 0, notes = 0 }

-- Request: the return value is the response.
function Bench:ping(s, msg)
  self.pings = self.pings + 1
  return msg
end

-- Notify: no response; a push back to the caller instead.
function Bench:note(s, msg)
  self.notes = self.notes + 1
  s:push("onNote", msg)
end

function Bench:after_init()
  if not self.report_every then return end
  local last_pings, last_notes, every = self.pings, self.notes, self.report_every
  self.reporter = nano.new_timer(every, function()
    nano.log.info("pingpong: %.0f requests/s, %.0f notifies/s, %d sessions",
                  (self.pings - last_pings) / every, (self.notes - last_notes) / every,
                  nano.stats().sessions)
    last_pings, last_notes = self.pings, self.notes
  end)
end

return Bench
