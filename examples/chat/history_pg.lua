-- Chat history in PostgreSQL: a table of messages (JSON text), the newest 50 kept. Chosen by
-- history.lua when NANO_CHAT_PG names a server (a conninfo: "host=127.0.0.1 dbname=chat").
--
--   local store = assert(require("history_pg").open(conninfo))
--   store:add({ from = "ann", content = "hi" })      -- in a handler or task (it waits)
--   store:last(20) -> messages, oldest first
--   store:close()
local nano = require "nano"
local json = require "nano.json"

local KEEP = 50

local M = {}
local Store = {}
Store.__index = Store

--- open(conninfo [, table]) -> store | nil, err. The table is created at the first add/last.
function M.open(conninfo, tbl)
  local pg, err = nano.pg.connect(conninfo, { pool = 2 })
  if not pg then return nil, err end
  tbl = tbl or "chat_history"
  if not tbl:match("^[%a_][%w_]*$") then return nil, "history_pg: bad table name " .. tbl end
  return setmetatable({ pg = pg, tbl = tbl }, Store)
end

local function ready(self)
  if self.created then return true end
  local ok, err = self.pg:query("CREATE TABLE IF NOT EXISTS " .. self.tbl
    .. " (id bigserial PRIMARY KEY, body text NOT NULL)")
  if not ok then return nil, err end
  self.created = true
  return true
end

--- store:add(msg) -> true | nil, err
function Store:add(msg)
  local ok, err = ready(self)
  if not ok then return nil, err end
  return self.pg:transaction(function(tx)
    assert(tx:query("INSERT INTO " .. self.tbl .. " (body) VALUES ($1)", json.marshal(msg)))
    assert(tx:query("DELETE FROM " .. self.tbl .. " WHERE id <= (SELECT id FROM " .. self.tbl
      .. " ORDER BY id DESC OFFSET $1 LIMIT 1)", KEEP))
  end)
end

--- store:last(n) -> the newest n (at most 50) messages, oldest first | nil, err
function Store:last(n)
  n = math.min(n or KEEP, KEEP)
  local ok, err = ready(self)
  if not ok then return nil, err end
  local rows
  rows, err = self.pg:query("SELECT body FROM (SELECT id, body FROM " .. self.tbl
    .. " ORDER BY id DESC LIMIT $1) t ORDER BY id", n)
  if not rows then return nil, err end
  for i, row in ipairs(rows) do rows[i] = json.unmarshal(row.body) end
  return rows
end

function Store:close() self.pg:close() end

return M
