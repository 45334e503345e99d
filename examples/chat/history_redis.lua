-- Chat history in Redis: one list per room key, the newest 50 messages kept (RPUSH + LTRIM),
-- each message stored as JSON. Chosen by history.lua when NANO_CHAT_REDIS names a server
-- (e.g. redis://127.0.0.1:6379/0).
--
--   local store = assert(require("history_redis").open(url))
--   store:add({ from = "ann", content = "hi" })      -- in a handler or task (it waits)
--   store:last(20) -> messages, oldest first
--   store:close()
local nano = require "nano"
local json = require "nano.json"

local KEEP = 50

local M = {}
local Store = {}
Store.__index = Store

--- open(url [, key]) -> store | nil, err. Outside a task it connects in the background.
function M.open(url, key)
  local r, err = nano.redis.connect(url)
  if not r then return nil, err end
  return setmetatable({ r = r, key = key or "nano:chat:history" }, Store)
end

--- store:add(msg) -> true | nil, err
function Store:add(msg)
  local ok, err = self.r:call("RPUSH", self.key, json.marshal(msg))
  if not ok then return nil, err end
  ok, err = self.r:call("LTRIM", self.key, -KEEP, -1)
  if not ok then return nil, err end
  return true
end

--- store:last(n) -> the newest n (at most 50) messages, oldest first | nil, err
function Store:last(n)
  n = math.min(n or KEEP, KEEP)
  if n < 1 then return {} end
  local list, err = self.r:call("LRANGE", self.key, -n, -1)
  if not list then return nil, err end
  for i, s in ipairs(list) do list[i] = json.unmarshal(s) end
  return list
end

function Store:close() self.r:close() end

return M
