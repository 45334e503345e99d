-- The chat's history: the last 50 messages, kept across restarts. SQLite by default (a file next
-- to main.lua: no server to run); Redis or PostgreSQL when an environment variable names one:
--   NANO_CHAT_REDIS=redis://127.0.0.1:6379/0     (history_redis.lua)
--   NANO_CHAT_PG="host=127.0.0.1 dbname=chat"     (history_pg.lua)
--   NANO_CHAT_DB=path.db (or :memory:)           the SQLite file (default: chat.db here)
-- Every store has the same three calls, each waiting in a handler or task:
--   store:add({ name =, content = })    store:last(n) -> messages, oldest first    store:close()
local nano = require "nano"

local KEEP = 50

local M = { KEEP = KEEP }

local Sqlite = {}
Sqlite.__index = Sqlite

local function open_sqlite(path)
  local db, err = nano.sqlite.open(path)
  if not db then return nil, err end
  local ok, cerr = db:exec([[CREATE TABLE IF NOT EXISTS messages (
    id INTEGER PRIMARY KEY, name TEXT NOT NULL, content TEXT NOT NULL)]])
  if not ok then return nil, cerr end
  return setmetatable({ db = db }, Sqlite)
end

function Sqlite:add(msg)
  local ok, err = self.db:exec("INSERT INTO messages (name, content) VALUES (?, ?)", msg.name, msg.content)
  if not ok then return nil, err end
  return self.db:exec("DELETE FROM messages WHERE id <= ?", ok.last_insert_id - KEEP)
end

function Sqlite:last(n)
  local rows, err = self.db:exec("SELECT name, content FROM messages ORDER BY id DESC LIMIT ?", n or KEEP)
  if not rows then return nil, err end
  local list = {}
  for i = #rows, 1, -1 do list[#list + 1] = rows[i] end
  return list
end

function Sqlite:close() self.db:close() end

--- history.open([sqlite_path]) -> store, what (a line for the log) | nil, err. Call it in a task.
function M.open(sqlite_path)
  local redis, pg = os.getenv("NANO_CHAT_REDIS"), os.getenv("NANO_CHAT_PG")
  if redis or pg then
    local name = redis and "history_redis" or "history_pg"
    local ok, backend = pcall(require, name)
    if not ok then return nil, name .. ".lua is missing: " .. tostring(backend) end
    local store, err = backend.open(redis or pg)
    if not store then return nil, err end
    return store, (redis and "Redis " or "PostgreSQL ") .. (redis or pg)
  end
  local path = os.getenv("NANO_CHAT_DB") or sqlite_path
  local store, err = open_sqlite(path)
  if not store then return nil, err end
  return store, "SQLite " .. path
end

return M
