-- The chat room: nano's chat demo, in Lua. Same routes and payloads, so nano's own web client
-- (and any pomelo/nano client that uses JSON) works against it unchanged:
--   request room.join    (any payload) -> push onMembers {members = {uids already here}} to the
--                         joiner, push onNewUser {content = "New user: <id>"} to the others,
--                         response {code = 0, result = "success"}
--   notify  room.message {name, content} -> push onMessage {name, content} to everyone
-- Not in nano's demo: the last 50 messages are kept (history.lua: SQLite by default, Redis or
-- PostgreSQL when configured) and a joiner gets them first, as onMessage pushes.
local nano = require "nano"
local json = require "nano.json"
local stats = require "stats"
local history = require "history"

local Room = {}

-- How often the room logs its member count and traffic (nano's demo: every minute).
Room.report_interval = 60
-- Seconds after joining when the server greets the newcomer.
Room.welcome_delay = 1

-- Lifecycle hooks (not handlers): init runs when the loop starts, after_init once every
-- component's init has run. Fields set on the component survive a hot reload; only the
-- functions are replaced.
function Room:init()
  self.group = nano.new_group("room")
  -- The recent messages live in memory too, so that a join never waits for the store; the store
  -- is opened, and the history read, in a task of its own.
  self.recent = self.recent or {}
  nano.spawn(function()
    local store, what = history.open(self.history_path or "chat.db")
    if not store then
      nano.log.error("room: no history: %s", tostring(what))
      return
    end
    self.store = store
    self.recent = store:last(history.KEEP) or {}
    nano.log.info("room: history in %s (%d messages)", what, #self.recent)
  end)
end

function Room:shutdown()
  if self.store then self.store:close() end
end

function Room:after_init()
  -- A closed session leaves its groups by itself: no on_session_closed needed for that.
  -- The timer calls through `self`, so after a reload it runs the new report function.
  self.reporter = nano.new_timer(self.report_interval, function() self:_report() end)
end

function Room:_report()
  nano.log.info("room: %d members, %d bytes in, %d bytes out", self.group:count(),
                stats.inbound_bytes, stats.outbound_bytes)
end

-- room.join: registered as a raw handler (see main.lua), so `payload` is the undecoded string
-- and any payload is accepted, as in nano's demo.
function Room:join(s, payload)
  s:bind(s:id()) -- the demo has no login: the session id is the uid
  if self.group:has(s) then
    return { code = 0, result = "success" } -- joining twice changes nothing
  end
  -- The joiner learns who is already here (json.array: an empty list is [] on the wire, not {});
  -- then the others learn about the joiner.
  s:push("onMembers", { members = json.array(self.group:members()) })
  for _, m in ipairs(self.recent) do s:push("onMessage", m) end -- what was said before
  self.group:broadcast("onNewUser", { content = "New user: " .. s:id() })
  self.group:add(s)
  -- A welcome line a moment after joining. The handler does not wait for it (its response goes
  -- now, and the session's next message is not held up): a task of its own waits instead.
  -- nano.sleep suspends only that task; the loop serves everyone meanwhile (docs/async.md).
  nano.spawn(function()
    nano.sleep(self.welcome_delay)
    if not s:is_closed() then
      -- its own route: nano's web client shows onMessage only, and ignores this one
      s:push("onWelcome", { content = "Welcome! " .. (self.group:count() - 1) .. " other(s) here." })
    end
  end)
  return { code = 0, result = "success" } -- a request handler's return value is its response
end

-- room.message: only members may talk; like nano's demo, only name and content go out.
function Room:message(s, msg)
  if not self.group:has(s) then
    error({ code = 403, msg = "join the room first" })
  end
  if type(msg) ~= "table" then error({ code = 400, msg = "expected {name, content}" }) end
  local name, content = msg.name, msg.content
  if (name ~= nil and type(name) ~= "string") or (content ~= nil and type(content) ~= "string") then
    error({ code = 400, msg = "name and content must be strings" })
  end
  local m = { name = name or "", content = content or "" }
  self.group:broadcast("onMessage", m)
  local recent = self.recent
  recent[#recent + 1] = m
  if #recent > history.KEEP then table.remove(recent, 1) end
  if self.store then -- written in the background: the sender does not wait for the disk
    local store = self.store
    nano.spawn(function()
      local ok, err = store:add(m)
      if not ok then nano.log.warn("room: history not saved: %s", tostring(err)) end
    end)
  end
end

return Room
