-- Hot reload: new game code while sessions stay connected. The rules are in docs/hot-reload.md;
-- this file is the only place that implements them.
--
-- nano.reload() runs the main script again with every module of the script's folder unloaded.
-- While it runs, what it registers is built on the side: components are staged (nano.register
-- hands them to this file's stager, through scope.lua), and everything else it makes (timers,
-- on_session_closed callbacks, pipeline stages, HTTP routes) is recorded in an open scope by the
-- function that made it (scope.lua). Only when the script and every hook have succeeded is the
-- result swapped in, in one synchronous step, and what the previous run of the script made is
-- released. Any failure undoes the new run instead and the old code keeps serving. One loop
-- thread: no message is handled while this runs, so none sees half old, half new handlers.
--
-- The steps, each a function of this module (spec/reload_steps_spec.lua tests each):
--   snapshot()        what a failed reload must put back (settings, listeners, modules)
--   load(snap)        unloads the script's modules and runs the script, staging and recording
--   commit(run)       the swap: staged components in, hooks, the previous load's things released
--   rollback(snap, run)  a failed load or commit: undo what it made, put the snapshot back
--   watch(opts) / unwatch()   --watch: reload when a .lua file of the script's folder changes
-- first_load(run_main, ...) records the first run of the script like a reload's, so that the
-- first reload can replace what it made.
local core = require "nano.core"
local scope = require "nano.scope"

local type, pairs, ipairs, next, tostring = type, pairs, ipairs, next, tostring
local pcall, xpcall, traceback, error = pcall, xpcall, debug.traceback, error
-- the raw metatable functions: a component's metatable may have a __metatable field
local raw_getmt, raw_setmt = debug.getmetatable, debug.setmetatable
local str_format, str_match = string.format, string.match
local unpack = unpack -- LuaJIT's (Lua 5.1's) global

local M = {}

local nano, S, log -- set by attach

-- A monotonic clock in ms for the "reloaded in" figure (os.clock is CPU time, and the loop's
-- clock stands still while Lua runs).
local function clock_ms() return core.hrtime() * 1000 end

local function copy(t)
  local c = {}
  for k, v in pairs(t) do c[k] = v end
  return c
end

-- Makes t hold exactly the fields of src (t keeps its identity).
local function refill(t, src)
  for k in pairs(copy(t)) do t[k] = nil end
  for k, v in pairs(src) do t[k] = v end
end

-- The line of an error that says where (file:line: message): for a module that does not
-- compile, require puts it on the second line.
local function where(err)
  local s = tostring(err)
  local first = str_match(s, "^([^\n]*)") or s
  if first:find("%.lua:%d+:") then return first end
  return str_match(s, "[^%s'\"]+%.lua:%d+:[^\n]*") or first
end

-- ---------------------------------------------------------------------------------------------
-- first load

--- first_load(run_main, script, script_dir, args) -> run_main's result: the first run of the
--- main script (nano._load_main), in a scope, so the first reload can replace what it made.
function M.first_load(run_main, script, script_dir, args)
  S.script_args = args
  S.persist = {}
  local before = {}
  for _, e in ipairs(S.components) do before[e] = true end
  -- A load can nest (a script run by nano-host that starts a nano.test server): the outer
  -- load's scope comes back afterwards.
  local sc, outer = scope.open()
  local ok, ran = pcall(run_main, script, script_dir, args)
  scope.close(outer)
  if ok and ran then
    S.load_owned, S.load_groups = scope.owned(sc), sc.groups
    for _, e in ipairs(S.components) do
      if not before[e] then e.from_load = true end
    end
    return ran
  end
  scope.undo(sc, log)
  if not ok then error(ran, 0) end
  return ran
end

-- ---------------------------------------------------------------------------------------------
-- snapshot

-- A module of the game: its file is in the script's folder (nano's own modules never are
-- reloaded, even when the script's folder holds them).
local function script_module_test()
  local dir = S.script_dir
  local prefix = dir and (dir:sub(-1) == "/" and dir or dir .. "/")
  local path = package.path
  return function(name)
    if not prefix or type(name) ~= "string" or name == "nano" or name:sub(1, 5) == "nano." then
      return false
    end
    local file = package.searchpath(name, path)
    return file ~= nil and file:sub(1, #prefix) == prefix
  end
end

-- Fields of S a failed reload leaves as they are: counters that must only grow (timer ids),
-- and the persistent tables (documented as not undone).
local KEEP = { timer_seq = true, persist = true }

--- snapshot() -> snap: what the main script may change, to put back if the reload fails: the
--- fields of nano's state, the listeners, the core's settings and log level, and the loaded
--- modules of the script's folder.
function M.snapshot()
  local listeners = {}
  for key, list in pairs(S.listeners) do listeners[key] = copy(list) end
  local is_script_module = script_module_test()
  local modules = {}
  for name, v in pairs(package.loaded) do
    if is_script_module(name) then modules[name] = v end
  end
  return {
    top = copy(S),
    listeners = listeners,
    origin = copy(S.listener_origin),
    config = core.config(),
    log_level = core.log_level(),
    modules = modules,
    is_script_module = is_script_module,
  }
end

local function restore(snap)
  local kept = {}
  for _, list in pairs(snap.listeners) do
    for _, l in pairs(list) do kept[l.id] = true end
  end
  for _, list in pairs(S.listeners) do
    for _, l in pairs(list) do
      if not kept[l.id] then core.unlisten(l.id) end
    end
  end
  refill(S.listeners, snap.listeners)
  refill(S.listener_origin, snap.origin)
  for k in pairs(copy(S)) do
    if snap.top[k] == nil and not KEEP[k] then S[k] = nil end
  end
  for k, v in pairs(snap.top) do
    if not KEEP[k] then S[k] = v end
  end
  local now, changed = core.config(), {}
  for k, v in pairs(snap.config) do
    if now[k] ~= v then changed[k] = v end
  end
  if next(changed) then core.configure(changed) end
  if core.log_level() ~= snap.log_level then core.log_level(snap.log_level) end
  -- the modules as they were: the new run's are dropped, the old ones put back
  local now_loaded = {}
  for name in pairs(package.loaded) do
    if snap.is_script_module(name) then now_loaded[#now_loaded + 1] = name end
  end
  for _, name in ipairs(now_loaded) do package.loaded[name] = nil end
  for name, v in pairs(snap.modules) do package.loaded[name] = v end
  nano._update_predecode() -- the core decodes payloads for the serializer put back
end

-- ---------------------------------------------------------------------------------------------
-- load

-- Connected clients got the dictionary and the serializer in their handshake: a reload may add
-- routes to the dictionary but must not change what they already use.
local function check_protocol(old)
  if core.stats().sessions == 0 then return true end
  local old_name, new_name = old.serializer and old.serializer.name, S.serializer and S.serializer.name
  if old_name ~= new_name then
    return nil, str_format("the serializer changes from %s to %s while sessions are connected",
                           tostring(old_name), tostring(new_name))
  end
  for route, code in pairs(old.dict or {}) do
    if S.dict[route] ~= code then
      return nil, str_format("the dictionary changes route '%s' (code %d -> %s) while sessions are connected",
                             route, code, tostring(S.dict[route]))
    end
  end
  return true
end

--- load(snap) -> run: unloads the script's modules (those snap lists) and runs the main script
--- again. nano.register stages its components in run.staged (the live ones are untouched); what
--- the script makes is recorded in run.scope. run.err: why the load failed (the script raised,
--- or it changed the protocol connected clients use), nil when it succeeded.
function M.load(snap)
  local nmodules = 0
  for name in pairs(snap.modules) do
    package.loaded[name] = nil
    nmodules = nmodules + 1
  end
  local run = { staged = {}, nmodules = nmodules }
  local staged_by_name = {}
  scope.set_stager(function(existing, comp, opts, name)
    local st = staged_by_name[name]
    if st then
      if st.comp ~= comp then error("register: a component named '" .. name .. "' exists", 2) end
      st.opts = opts
      return st.existing and st.existing.comp or comp
    end
    st = { name = name, comp = comp, opts = opts, existing = existing }
    if existing then
      st.snap = { fields = copy(existing.comp), mt = raw_getmt(existing.comp),
                  opts = existing.opts, from_load = existing.from_load }
    end
    run.staged[#run.staged + 1] = st
    staged_by_name[name] = st
    return existing and existing.comp or comp
  end)
  S.listen_seen = {}

  local sc, outer = scope.open(S.load_groups)
  run.scope = sc
  local chunk, lerr = loadfile(S.script)
  if not chunk then
    run.err = lerr
  else
    S.main_runs = (S.main_runs or 0) + 1 -- tables rebuilt per run (nano.http.route)
    local ok, rerr = xpcall(chunk, traceback, unpack(S.script_args or {}))
    if not ok then run.err = tostring(rerr) end
  end
  scope.close(outer)
  scope.set_stager(nil)
  if not run.err then
    local ok, err = check_protocol(snap.top)
    if not ok then run.err = err end
  end
  return run
end

-- ---------------------------------------------------------------------------------------------
-- commit

-- The new module's functions replace the old ones (and old ones it no longer has go away); data
-- fields keep their values; fields it adds are added; its metatable becomes the component's.
local function merge(dst, src)
  for k, v in pairs(copy(dst)) do
    if type(v) == "function" and src[k] == nil then dst[k] = nil end
  end
  for k, v in pairs(src) do
    if type(v) == "function" or dst[k] == nil then dst[k] = v end
  end
  raw_setmt(dst, raw_getmt(src))
  -- The new module's own table (its `local Room = {}`) now stands for the component, so code
  -- that says Room.counter instead of self.counter reads and writes the kept data.
  refill(src, {})
  raw_setmt(src, { __index = dst, __newindex = dst })
end

local function call_hook(e, hook, ...)
  local fn = e.comp[hook]
  if type(fn) ~= "function" then return true end
  local ok, err = xpcall(fn, traceback, e.comp, ...)
  if ok then return true end
  return nil, str_format("%s.%s: %s", e.name, hook, tostring(err))
end

-- Runs the hooks of the swap in a scope of their own: if one fails, what they made is undone.
local function run_hooks(added, merged)
  local sc, outer = scope.open()
  local ok, err = true, nil
  if S.started then
    for _, e in ipairs(added) do
      if ok then ok, err = call_hook(e, "init") end
    end
    for _, e in ipairs(added) do
      if ok then ok, err = call_hook(e, "after_init") end
    end
  end
  for _, m in ipairs(merged) do
    if ok then ok, err = call_hook(m.entry, "on_reload", m.old) end
  end
  scope.close(outer)
  if not ok then scope.undo(sc, log) end
  return ok, err
end

--- commit(run) -> true, nmerged, nadded, removed_names | nil, err: the swap. Staged components
--- become the components (kept ones merged, new ones added, ones the script no longer registers
--- removed), the handlers are rebuilt, the hooks run (init/after_init of new ones while the
--- server runs, on_reload of kept ones). If a hook fails every component is put back as it was
--- and nothing else changes. Otherwise what the previous load owned is released and this load's
--- things become the ones the next reload replaces.
function M.commit(run)
  local staged = run.staged
  local comps_before, by_name_before = copy(S.components), copy(S.by_name)
  local seen, merged, added = {}, {}, {}
  for _, st in ipairs(staged) do
    local e = st.existing
    if e then
      seen[e] = true
      e.opts = st.opts
      e.from_load = true
      if e.comp ~= st.comp then
        merge(e.comp, st.comp)
        merged[#merged + 1] = { entry = e, old = copy(st.snap.fields) }
        raw_setmt(merged[#merged].old, st.snap.mt)
      end
    else
      e = { name = st.name, comp = st.comp, opts = st.opts, from_load = true }
      S.components[#S.components + 1] = e
      S.by_name[st.name] = e
      seen[e] = true
      added[#added + 1] = e
    end
  end
  local removed = {}
  for i = #S.components, 1, -1 do
    local e = S.components[i]
    if e.from_load and not seen[e] then
      removed[#removed + 1] = e.name
      table.remove(S.components, i)
      S.by_name[e.name] = nil
    end
  end
  nano._build_handlers()

  local ok, err = run_hooks(added, merged)
  if not ok then
    for _, st in ipairs(staged) do
      if st.existing then
        local e = st.existing
        refill(e.comp, st.snap.fields)
        raw_setmt(e.comp, st.snap.mt)
        e.opts, e.from_load = st.snap.opts, st.snap.from_load
      end
    end
    refill(S.components, comps_before)
    refill(S.by_name, by_name_before)
    nano._build_handlers()
    return nil, err
  end

  -- The new code is in: release what the previous load made, keep what this one made.
  scope.release(S.load_owned or {}, log)
  S.load_owned = scope.owned(run.scope)
  S.load_groups = run.scope.groups
  return true, #merged, #added, removed
end

-- ---------------------------------------------------------------------------------------------
-- rollback

--- rollback(snap, run): a load (or its commit) failed: what the run made is undone, newest
--- first, and the snapshot is put back (settings, listeners, nano's state, the old modules).
function M.rollback(snap, run)
  scope.undo(run.scope, log)
  restore(snap)
end

-- ---------------------------------------------------------------------------------------------
-- nano.reload

local reloading = false

local function do_reload()
  local t0 = clock_ms()
  local snap = M.snapshot()
  local run = M.load(snap)
  local ok, err, nmerged, nadded, removed = not run.err, run.err, nil, nil, nil
  if ok then
    local cok, a, b, c = M.commit(run)
    if cok then nmerged, nadded, removed = a, b, c else ok, err = nil, a end
  end
  if not ok then
    M.rollback(snap, run)
    return nil, err
  end
  for _, name in ipairs(removed) do log.info("reload: component %s is gone (its routes with it)", name) end
  S.reload_count = (S.reload_count or 0) + 1
  return true, str_format("%.1f ms (%d modules, %d components kept, %d new)",
                          clock_ms() - t0, run.nmodules, nmerged, nadded)
end

-- ---------------------------------------------------------------------------------------------
-- --watch: fs events on the script's folder and its subfolders that hold .lua files

local MAX_DEPTH, MAX_DIRS = 8, 256
-- Test folders (at any depth) are not game code: saving a spec must not reload the server.
local TEST_DIRS = { "spec", "specs", "test", "tests" }
local function name_set(list)
  local set = {}
  for _, n in ipairs(list) do set[n] = true end
  return set
end
local W = { watchers = {}, timer = nil, lua_changed = false, debounce = 0.15,
            exclude = name_set(TEST_DIRS) }

local function skip_dir(name)
  return name:sub(1, 1) == "." or name == "node_modules" or W.exclude[name] == true
end
local function lua_file(name) return name:sub(1, 1) ~= "." and name:sub(-4) == ".lua" end

-- Folders to watch: the script's, and every folder below it with a .lua file in it or below it
-- (a new file there is a new module), and empty ones (made to hold modules: a file written
-- there right after the folder was made is seen).
local function lua_dirs(dir, depth, out)
  local entries = core.scandir(dir)
  if not entries then return false end
  local any = next(entries) == nil
  for name, kind in pairs(entries) do
    if kind == "file" and lua_file(name) then
      any = true
    elseif kind == "dir" and depth < MAX_DEPTH and not skip_dir(name) and #out < MAX_DIRS then
      if lua_dirs(dir .. "/" .. name, depth + 1, out) then any = true end
    end
  end
  if any and depth > 0 then out[#out + 1] = dir end
  return any
end

local on_event

local function sync_watchers()
  local want = { S.script_dir }
  lua_dirs(S.script_dir, 0, want)
  if #want >= MAX_DIRS then log.warn("watch: more than %d folders; watching the first", MAX_DIRS) end
  local set = {}
  for _, d in ipairs(want) do set[d] = true end
  for d, w in pairs(copy(W.watchers)) do
    if not set[d] then
      w:close()
      W.watchers[d] = nil
    end
  end
  for _, d in ipairs(want) do
    if not W.watchers[d] then
      local w, err = core.watch(d, on_event)
      if w then W.watchers[d] = w else log.warn("%s", err) end
    end
  end
end

-- A few directory reads per save: the folders may have changed with the files.
local function fire()
  W.timer = nil
  sync_watchers()
  if W.lua_changed then
    W.lua_changed = false
    nano.reload()
  end
end

on_event = function(name, kind, msg)
  if kind == "error" then
    log.warn("watch: %s", tostring(msg))
    return
  end
  if name == nil or lua_file(name) then W.lua_changed = true end
  -- Debounce: an editor's save is several events; reload once they have stopped.
  if W.timer then W.timer:stop() end
  W.timer = core.timer(W.debounce, 0, fire)
end

--- watch([opts]) -> true | nil, err: nano.watch (below).
function M.watch(opts)
  if not S.script_dir then return nil, "no script folder to watch" end
  if opts ~= nil and type(opts) ~= "table" then error("watch: expected a table of options", 3) end
  if opts and opts.exclude ~= nil then
    local ok = type(opts.exclude) == "table"
    for _, n in ipairs(ok and opts.exclude or {}) do ok = ok and type(n) == "string" end
    if not ok then error("watch: exclude must be a list of folder names", 3) end
    W.exclude = name_set(opts.exclude)
  else
    W.exclude = name_set(TEST_DIRS)
  end
  if opts and opts.debounce ~= nil then
    if type(opts.debounce) ~= "number" or opts.debounce < 0 or opts.debounce > 60 then
      error("watch: debounce must be seconds between 0 and 60", 3)
    end
    W.debounce = opts.debounce
  end
  sync_watchers()
  local n = 0
  for _ in pairs(W.watchers) do n = n + 1 end
  if n == 0 then return nil, "cannot watch " .. S.script_dir end
  log.info("watching %d folder%s for .lua changes", n, n == 1 and "" or "s")
  return true
end

--- unwatch(): stops watching.
function M.unwatch()
  for d, w in pairs(copy(W.watchers)) do
    w:close()
    W.watchers[d] = nil
  end
  if W.timer then
    W.timer:stop()
    W.timer = nil
  end
  W.lua_changed = false
end

--- watching() -> the folders watched (a list, sorted)
function M.watching()
  local out = {}
  for d in pairs(W.watchers) do out[#out + 1] = d end
  table.sort(out)
  return out
end

-- ---------------------------------------------------------------------------------------------
-- the public functions

function M.attach(nano_)
  nano, S, log = nano_, nano_._state, nano_.log

  --- nano.persist([name [, defaults]]) -> table: the same table every time it is asked for with
  --- this name, across reloads (a restart starts empty). Fields of defaults missing from it are
  --- added. name defaults to the calling file.
  function nano.persist(name, defaults)
    if name == nil then name = debug.getinfo(2, "S").source end
    if type(name) ~= "string" then error("persist: expected a name (string)", 2) end
    if defaults ~= nil and type(defaults) ~= "table" then error("persist: defaults must be a table", 2) end
    local all = S.persist
    if not all then
      all = {}
      S.persist = all
    end
    local t = all[name]
    if not t then
      t = {}
      all[name] = t
    end
    if defaults then
      for k, v in pairs(defaults) do
        if t[k] == nil then t[k] = v end
      end
    end
    return t
  end

  --- nano.reload() -> true | nil, err: loads the new code of the script's folder and swaps it in;
  --- on any error nothing changes (the error is logged with file and line).
  function nano.reload()
    if reloading then return nil, "a reload is already running" end
    if scope.active() then return nil, "the main script is still loading" end
    if not S.script then return nil, "no main script to reload" end
    local t_start = clock_ms()
    reloading = true
    local ok, res, info = pcall(do_reload)
    reloading = false
    scope.close(nil)
    scope.set_stager(nil)
    if not ok then res, info = nil, res end
    require("nano.metrics_core").reload(res and true or false, (clock_ms() - t_start) / 1000)
    if not res then
      local short, full = where(info), tostring(info)
      log.error("reload failed, the old code keeps running: %s%s", short,
                full ~= short and "\n" .. full or "")
      return nil, short
    end
    log.info("reloaded in %s", info)
    return true
  end

  --- nano.watch([{ debounce = secs, exclude = { name, ... } }]) -> true | nil, err: reload when a
  --- .lua file in the script's folder (or a subfolder with .lua files) changes, once the changes
  --- have stopped for debounce seconds (default 0.15). Folders named in exclude (default: spec,
  --- specs, test, tests; also hidden ones and node_modules, always) are not watched, at any depth.
  --- `nano-host --watch main.lua` calls it.
  function nano.watch(opts)
    local ok, err = M.watch(opts) -- not a tail call: M.watch's errors name the caller's line
    return ok, err
  end

  --- nano.unwatch(): stops watching.
  function nano.unwatch() M.unwatch() end
end

return M
