-- Hot reload: new game code while sessions stay connected. The rules are in docs/hot-reload.md;
-- this file is the only place that implements them.
--
-- nano.reload() runs the main script again with every module of the script's folder unloaded.
-- While it runs, what it registers is built on the side: components are staged (nano.register
-- does not touch the live ones), and everything else it makes (timers, on_session_closed
-- callbacks, pipeline stages, listeners, settings) is recorded so it can be taken back. Only when
-- the script and every hook have succeeded is the result swapped in, in one synchronous step, and
-- what the previous run of the script made is released. Any failure undoes the new run instead
-- and the old code keeps serving. One loop thread: no message is handled while this runs, so
-- none sees half old, half new handlers.
--
-- To record without touching the other API modules, attach() wraps a few nano functions
-- (new_*timer, new_group, on_session_closed, pipeline push/clear) and core.timer. Outside a load
-- the wrappers are a tail call to the original.
local core = require "nano.core"

local type, pairs, ipairs, next, tostring = type, pairs, ipairs, next, tostring
local pcall, xpcall, traceback, error = pcall, xpcall, debug.traceback, error
local setmetatable = setmetatable
-- the raw metatable functions: a component's metatable may have a __metatable field
local raw_getmt, raw_setmt = debug.getmetatable, debug.setmetatable
local str_format, str_match = string.format, string.match
local unpack = unpack -- LuaJIT's (Lua 5.1's) global

local M = {}

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

function M.attach(nano)
  local S = nano._state
  local log = nano.log

  -- The recording in progress, while a script load runs (or a reload's hooks): a list of
  -- { fn, owned } in the order things were made. On failure every fn runs, newest first. When
  -- the load succeeds its owned entries are kept in S.load_owned, and run when the next
  -- successful reload replaces this load. groups: name -> { group, ... } made by this load.
  local scope = nil
  local reloading = false

  local function record(fn, owned)
    if scope then scope.list[#scope.list + 1] = { fn = fn, owned = owned } end
  end

  local function run_entries(list, only_owned)
    for i = #list, 1, -1 do
      local e = list[i]
      if e.owned or not only_owned then
        local ok, err = pcall(e.fn)
        if not ok then log.error("reload: undoing a registration: %s", tostring(err)) end
      end
    end
  end

  local function remove_first(list, v)
    for i = 1, #list do
      if list[i] == v then
        table.remove(list, i)
        return
      end
    end
  end

  -- ---------------------------------------------------------------------------------------------
  -- recording wrappers

  -- Called through pcall inside a load, the wrapped function's "error at the caller" carries no
  -- position (the caller is pcall); name the script line that called it instead.
  local function rethrow(err)
    if type(err) == "string" and not str_match(err, "^[^\n:]+:%d+: ") then
      local info = debug.getinfo(3, "Sl")
      if info and info.currentline and info.currentline > 0 then
        err = str_format("%s:%d: %s", info.short_src, info.currentline, err)
      end
    end
    error(err, 0)
  end

  local wrappers = setmetatable({}, { __mode = "k" })

  local function wrap(t, k, make)
    local orig = type(t) == "table" and t[k]
    if type(orig) ~= "function" or wrappers[orig] then return end
    local w = make(orig)
    wrappers[w] = true
    t[k] = w
  end

  -- fn(...) -> x: inside a load, after(x, ...) records what x needs to be undone.
  local function recording(after)
    return function(orig)
      return function(...)
        if not scope then return orig(...) end
        local ok, x, y = pcall(orig, ...)
        if not ok then rethrow(x) end
        after(x, ...)
        return x, y
      end
    end
  end

  local stop_it = recording(function(t)
    if t and t.stop then record(function() t:stop() end, true) end
  end)

  local function install_wrappers()
    -- Every Lua timer is a core timer: this catches nano.invoke and direct core.timer calls.
    -- nano's own timers are wrapped too (a chained timer makes a new core timer per call).
    wrap(core, "timer", stop_it)
    for _, k in ipairs({ "new_timer", "new_count_timer", "new_after_timer", "new_cond_timer" }) do
      wrap(nano, k, stop_it)
    end
    wrap(nano, "on_session_closed", recording(function(_, fn)
      record(function() remove_first(S.closed_cbs, fn) end, true)
    end))
    -- The n-th group of a name made by a reload is the n-th group of that name the previous
    -- load made: same members. (A group made at other times is just a new group, as in nano.)
    wrap(nano, "new_group", function(orig)
      return function(name, ...)
        if not scope then return orig(name, ...) end
        local prev
        if type(name) == "string" then
          local n = (scope.group_seen[name] or 0) + 1
          scope.group_seen[name] = n
          local old = scope.reuse_groups and S.load_groups and S.load_groups[name]
          prev = old and old[n]
          if prev and prev.is_closed and prev:is_closed() then prev = nil end
        end
        local g = prev
        if not g then
          local ok, x = pcall(orig, name, ...)
          if not ok then rethrow(x) end
          g = x
        end
        local list = scope.groups[name] or {}
        list[#list + 1] = g
        scope.groups[name] = list
        return g
      end
    end)
    local chain = nano.pipeline and nano.pipeline.inbound
    local Chain = chain and raw_getmt(chain)
    if Chain and Chain.remove then
      local function staged(_, chain_, fn) record(function() chain_:remove(fn) end, true) end
      wrap(Chain, "push_back", recording(staged))
      wrap(Chain, "push_front", recording(staged))
      -- clear() in a load that then fails: the stages come back (only on failure).
      wrap(Chain, "clear", function(orig)
        return function(self, ...)
          if scope and type(self) == "table" and type(self._fns) == "table" then
            local saved = copy(self._fns)
            record(function()
              orig(self)
              for _, f in ipairs(saved) do self:push_back(f) end
            end, false)
          end
          return orig(self, ...)
        end
      end)
    end
  end

  -- reuse_groups: a reload's run of the script (not the first load, not hooks) gets the groups
  -- of the previous load back.
  local function new_scope(reuse_groups)
    return { list = {}, groups = {}, group_seen = {}, reuse_groups = reuse_groups }
  end

  -- ---------------------------------------------------------------------------------------------
  -- persistent state

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

  -- ---------------------------------------------------------------------------------------------
  -- first load: recorded like a reload, so the first reload can replace what it made

  local load_main = nano._load_main
  function nano._load_main(script, script_dir, args)
    S.script_args = args
    S.persist = {}
    install_wrappers()
    local before = {}
    for _, e in ipairs(S.components) do before[e] = true end
    -- A load can nest (a script run by nano-host that starts a nano.test server): keep this
    -- load's scope in a local and give the outer one back afterwards.
    local sc, outer = new_scope(), scope
    scope = sc
    local ok, ran = pcall(load_main, script, script_dir, args)
    scope = outer
    if ok and ran then
      S.load_owned, S.load_groups = {}, sc.groups
      for _, e in ipairs(sc.list) do
        if e.owned then S.load_owned[#S.load_owned + 1] = e end
      end
      for _, e in ipairs(S.components) do
        if not before[e] then e.from_load = true end
      end
      return ran
    end
    run_entries(sc.list, false)
    if not ok then error(ran, 0) end
    return ran
  end

  -- ---------------------------------------------------------------------------------------------
  -- reload

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

  -- What the main script may change in S, to put back if the reload fails.
  local function snapshot()
    local listeners = {}
    for key, list in pairs(S.listeners) do listeners[key] = copy(list) end
    return {
      top = copy(S),
      listeners = listeners,
      origin = copy(S.listener_origin),
      config = core.config(),
      log_level = core.log_level(),
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
  end

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

  -- The swap: staged registrations become the components; hooks run; any failure puts every
  -- component back as it was. Returns true, merged, added, removed_names | nil, err.
  local function commit(staged)
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

    local hooks = new_scope()
    scope = hooks
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
    scope = nil
    if ok then return true, #merged, #added, removed end

    run_entries(hooks.list, false)
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

  local function do_reload()
    local t0 = clock_ms()
    local is_script_module = script_module_test()
    local saved = {}
    for name, v in pairs(package.loaded) do
      if is_script_module(name) then saved[name] = v end
    end
    local nmodules = 0
    for name in pairs(saved) do
      package.loaded[name] = nil
      nmodules = nmodules + 1
    end

    local snap = snapshot()
    local staged, staged_by_name = {}, {}
    S.reload_register = function(existing, comp, opts, name)
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
      staged[#staged + 1] = st
      staged_by_name[name] = st
      return existing and existing.comp or comp
    end
    S.listen_seen = {}

    local load = new_scope(true)
    scope = load
    local ok, err
    local chunk, lerr = loadfile(S.script)
    if not chunk then
      ok, err = nil, lerr
    else
      S.main_runs = (S.main_runs or 0) + 1 -- tables rebuilt per run (nano.http.route)
      local rok, rerr = xpcall(chunk, traceback, unpack(S.script_args or {}))
      if rok then ok = true else ok, err = nil, tostring(rerr) end
    end
    scope = nil
    S.reload_register = nil
    if ok then ok, err = check_protocol(snap.top) end

    local nmerged, nadded, removed
    if ok then
      local cok, a, b, c = commit(staged)
      if cok then nmerged, nadded, removed = a, b, c else ok, err = nil, a end
    end
    if not ok then
      run_entries(load.list, false)
      restore(snap)
      local now = {}
      for name in pairs(package.loaded) do
        if is_script_module(name) then now[#now + 1] = name end
      end
      for _, name in ipairs(now) do package.loaded[name] = nil end
      for name, v in pairs(saved) do package.loaded[name] = v end
      return nil, err
    end

    -- The new code is in: release what the previous load made, keep what this one made.
    run_entries(S.load_owned or {}, true)
    S.load_owned = {}
    for _, e in ipairs(load.list) do
      if e.owned then S.load_owned[#S.load_owned + 1] = e end
    end
    S.load_groups = load.groups
    for _, name in ipairs(removed) do log.info("reload: component %s is gone (its routes with it)", name) end
    S.reload_count = (S.reload_count or 0) + 1
    return true, str_format("%.1f ms (%d modules, %d components kept, %d new)",
                            clock_ms() - t0, nmodules, nmerged, nadded)
  end

  --- nano.reload() -> true | nil, err: loads the new code of the script's folder and swaps it in;
  --- on any error nothing changes (the error is logged with file and line).
  function nano.reload()
    if reloading then return nil, "a reload is already running" end
    if scope then return nil, "the main script is still loading" end
    if not S.script then return nil, "no main script to reload" end
    install_wrappers()
    local t_start = clock_ms()
    reloading = true
    local ok, res, info = pcall(do_reload)
    reloading = false
    scope = nil
    S.reload_register = nil
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

  --- nano.watch([{ debounce = secs, exclude = { name, ... } }]) -> true | nil, err: reload when a
  --- .lua file in the script's folder (or a subfolder with .lua files) changes, once the changes
  --- have stopped for debounce seconds (default 0.15). Folders named in exclude (default: spec,
  --- specs, test, tests; also hidden ones and node_modules, always) are not watched, at any depth.
  --- `nano-host --watch main.lua` calls it.
  function nano.watch(opts)
    if not S.script_dir then return nil, "no script folder to watch" end
    if opts ~= nil and type(opts) ~= "table" then error("watch: expected a table of options", 2) end
    if opts and opts.exclude ~= nil then
      local ok = type(opts.exclude) == "table"
      for _, n in ipairs(ok and opts.exclude or {}) do ok = ok and type(n) == "string" end
      if not ok then error("watch: exclude must be a list of folder names", 2) end
      W.exclude = name_set(opts.exclude)
    else
      W.exclude = name_set(TEST_DIRS)
    end
    if opts and opts.debounce ~= nil then
      if type(opts.debounce) ~= "number" or opts.debounce < 0 or opts.debounce > 60 then
        error("watch: debounce must be seconds between 0 and 60", 2)
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

  --- nano.unwatch(): stops watching.
  function nano.unwatch()
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

  -- Watchers do not keep the loop alive; close them before the host stops for good.
  local stopped = nano._stopped
  function nano._stopped(...)
    nano.unwatch()
    return stopped(...)
  end

  install_wrappers()
end

return M
