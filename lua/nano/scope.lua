-- The seam between hot reload (reload.lua, docs/hot-reload.md) and the API modules.
--
-- While the main script loads (first load or a reload's run) or a reload's hooks run, a scope is
-- open. Whatever an API function makes in that time is recorded here by the function itself:
-- timer.lua records how to stop its timers, pipeline.lua how to remove a stage, init.lua how to
-- remove an on_session_closed callback, http_server.lua how to put its route table back.
-- nano.new_group asks here for the group the previous load made under that name, and
-- nano.register hands its component to the reload's stager. With no scope open every call here
-- returns at once: the API behaves as if reload did not exist.
--
-- A record is { fn = undo, owned = bool }. owned: the thing belongs to the load that made it, and
-- is released (fn runs) when the next successful reload replaces that load. Not owned: fn only
-- puts back what the load changed, for a load that fails.
local core = require "nano.core"

local type, pcall, error, tostring = type, pcall, error, tostring
local str_format, str_match = string.format, string.match

local M = {}

local current = nil -- the open scope
local stager = nil -- nano.register's stand-in while a reload runs the script

--- scope.open([prev_groups]) -> sc, outer: records go to sc until scope.close(outer).
--- prev_groups (name -> { group, ... }): the groups of the load this one replaces, to reuse.
function M.open(prev_groups)
  local sc = { list = {}, groups = {}, group_seen = {}, prev_groups = prev_groups }
  local outer = current
  current = sc
  return sc, outer
end

--- scope.close(outer): the scope open before (a load can nest: a script that starts nano.test).
function M.close(outer) current = outer end

--- scope.active() -> true while a load (or a reload's hooks) runs
function M.active() return current ~= nil end

--- scope.record(undo, owned): what undoes the thing just made (see the top of the file).
function M.record(fn, owned)
  local sc = current
  if sc then sc.list[#sc.list + 1] = { fn = fn, owned = owned } end
end

--- scope.group(name, make) -> group: outside a scope, make(name). Inside, the n-th group of a
--- name is the n-th group of that name the previous load made (same members), else make(name).
function M.group(name, make)
  local sc = current
  if not sc then return make(name) end
  local n = (sc.group_seen[name] or 0) + 1
  sc.group_seen[name] = n
  local old = sc.prev_groups and sc.prev_groups[name]
  local g = old and old[n]
  if g and g:is_closed() then g = nil end
  if not g then g = make(name) end
  local list = sc.groups[name] or {}
  list[#list + 1] = g
  sc.groups[name] = list
  return g
end

--- scope.set_stager(fn | nil): while set, nano.register(comp, opts) returns
--- fn(existing_entry, comp, opts, name) instead of registering (a reload stages components).
function M.set_stager(fn) stager = fn end
function M.stager() return stager end

-- Runs the undo functions of list, newest first; only_owned: only the owned ones.
local function run(list, only_owned, log)
  for i = #list, 1, -1 do
    local e = list[i]
    if e.owned or not only_owned then
      local ok, err = pcall(e.fn)
      if not ok and log then log.error("reload: undoing a registration: %s", tostring(err)) end
    end
  end
end

--- scope.undo(sc, log): takes back everything sc recorded (a load that failed).
function M.undo(sc, log) run(sc.list, false, log) end

--- scope.release(records, log): stops what a replaced load owned.
function M.release(records, log) run(records, true, log) end

--- scope.owned(sc) -> the owned records of sc, to release when the next reload succeeds
function M.owned(sc)
  local out = {}
  for _, e in ipairs(sc.list) do
    if e.owned then out[#out + 1] = e end
  end
  return out
end

--- scope.reset(): nano.test between servers.
function M.reset()
  current, stager = nil, nil
end

-- core.timer is the C binding's and cannot call this module: it is the one function wrapped, so
-- that a timer any Lua code makes during a load (nano.invoke, a script calling core.timer) is
-- recorded. Outside a scope the wrapper only calls it.
local raw_timer = core.timer

-- Called through pcall, the C function's "bad argument" carries no position: name the line of
-- the caller instead.
local function rethrow(err)
  if type(err) == "string" and not str_match(err, "^[^\n:]+:%d+: ") then
    local info = debug.getinfo(3, "Sl")
    if info and info.currentline and info.currentline > 0 then
      err = str_format("%s:%d: %s", info.short_src, info.currentline, err)
    end
  end
  error(err, 0)
end

local function timer_in_scope(delay, rep, fn)
  local ok, t = pcall(raw_timer, delay, rep, fn)
  if not ok then rethrow(t) end
  if t then M.record(function() t:stop() end, true) end
  return t
end

-- A handler that waits (nano.sleep) makes a timer on its way, so this is on a path the JIT
-- compiles: no closure here (a return from a function whose locals a closure captured closes
-- them, UCLO, which is not compiled: the trace aborted), and the C function called rather than
-- tail-called.
function core.timer(delay, rep, fn)
  if current then return timer_in_scope(delay, rep, fn) end
  local t = raw_timer(delay, rep, fn)
  return t
end

return M
