-- nano.pipeline: functions that see every message on its way in (before the handler) and on its
-- way out (before it is written), as nano's Pipeline. Each stage is fn(session, msg) with
--   msg = { type = "request" | "notify" | "response" | "push", id = <number or nil>,
--           route = <string or nil>, data = <the raw payload string>, error = <true for error
--           responses> }
-- A stage lets the message through by returning nothing (or any true value); it drops it by
-- returning nil, err (or false, err) or by raising. A stage may replace msg.data (decrypt,
-- compress, ...); the other fields are for reading. Dropping an inbound request answers it with an
-- error response: err as { code =, msg = } chooses what the client sees, anything else is
-- code 500 (the text only in debug mode; it is always logged).
--
-- With no stage installed the pipeline costs nothing: the hooks into the dispatcher (nano._set_inbound,
-- nano._set_outbound) are only set while a chain has stages.
local type, tostring, setmetatable, getmetatable, ipairs = type, tostring, setmetatable, getmetatable, ipairs
local xpcall, traceback = xpcall, debug.traceback
local tinsert, tremove = table.insert, table.remove

local scope = require "nano.scope"

local TYPES = { [0] = "request", [1] = "notify", [2] = "response", [3] = "push" }

local M = {}

local function stage_error(e)
  if type(e) == "table" then return e end
  return traceback(tostring(e), 2)
end

local Chain = {}
Chain.__index = Chain

local function new_chain(name, on_change)
  return setmetatable({ _name = name, _fns = {}, _on_change = on_change }, Chain)
end

local function check(self, fn, what)
  if getmetatable(self) ~= Chain then error(what .. ": call it with ':' (pipeline.inbound:" .. what .. "(fn))", 3) end
  if type(fn) ~= "function" then error(what .. ": expected a function(session, msg)", 3) end
end

--- chain:push_back(fn): fn runs after the stages already there.
function Chain:push_back(fn)
  check(self, fn, "push_back")
  self._fns[#self._fns + 1] = fn
  self._on_change(self)
  scope.record(function() self:remove(fn) end, true) -- hot reload: the load's stage
end

--- chain:push_front(fn): fn runs before the stages already there.
function Chain:push_front(fn)
  check(self, fn, "push_front")
  tinsert(self._fns, 1, fn)
  self._on_change(self)
  scope.record(function() self:remove(fn) end, true)
end

--- chain:remove(fn) -> true if fn was a stage (its first occurrence is removed), else false
function Chain:remove(fn)
  check(self, fn, "remove")
  for i, f in ipairs(self._fns) do
    if f == fn then
      tremove(self._fns, i)
      self._on_change(self)
      return true
    end
  end
  return false
end

--- chain:clear(): removes every stage.
function Chain:clear()
  local saved = self._fns
  self._fns = {}
  self._on_change(self)
  -- a load that clears and then fails gets the stages back
  scope.record(function()
    self._fns = saved
    self._on_change(self)
  end, false)
end

--- chain:count() -> number of stages
function Chain:count() return #self._fns end

--- chain:process(session, msg) -> true | nil, err: runs the stages in order; the first that
--- drops the message stops it.
function Chain:process(s, msg)
  local fns = self._fns
  for i = 1, #fns do
    local ok, r1, r2 = xpcall(fns[i], stage_error, s, msg)
    if not ok then return nil, r1 end
    if r1 == false or (r1 == nil and r2 ~= nil) then
      return nil, r2 == nil and "dropped" or r2
    end
  end
  if type(msg.data) ~= "string" then
    return nil, self._name .. " pipeline: msg.data must stay a string"
  end
  return true
end

function M.attach(nano)
  local pipeline = {}

  -- The dispatcher's hook: fn(session, mtype, id, route, payload) -> payload | nil, err
  local function hook_for(chain)
    return function(s, mtype, id, route, payload, is_error)
      local msg = { type = TYPES[mtype], route = route, data = payload, error = is_error or nil,
                    id = (mtype == 0 or mtype == 2) and id or nil } -- notifies and pushes have none
      local ok, err = chain:process(s, msg)
      if not ok then return nil, err end
      return msg.data
    end
  end

  local function changed(chain)
    local setter = chain == pipeline.inbound and nano._set_inbound or nano._set_outbound
    setter(#chain._fns > 0 and hook_for(chain) or nil)
  end

  pipeline.inbound = new_chain("inbound", changed)
  pipeline.outbound = new_chain("outbound", changed)
  nano.pipeline = pipeline

  -- For group broadcasts: the outbound chain when it has stages, else nil.
  function nano._outbound_chain()
    local c = pipeline.outbound
    return #c._fns > 0 and c or nil
  end

  -- nano.test between servers: no stages.
  function nano._reset_pipeline()
    pipeline.inbound:clear()
    pipeline.outbound:clear()
  end
end

M.TYPES = TYPES
return M
