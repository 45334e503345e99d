-- nano.new_group(name): a set of sessions that receive the same pushes, as nano's Group.
--
-- Members are kept in one array (plus a session -> position index), and the same way in a core
-- member list (core.members_new: their addresses in C, so the core walks them without reading
-- each out of Lua), so a broadcast is a single core.push_many(members, route, payload): the
-- payload is serialized once, the message encoded once into one shared buffer, and each member's
-- send queue takes a reference to it. A member that is
-- closed or over its send limit misses that broadcast only (the core closes an over-limit
-- session) and is listed in the second result.
--
-- Differences from nano, on purpose: membership is by session, not by uid, so several sessions
-- that have not bound a uid yet can be members (nano keys its map by uid: a second unbound session
-- is a "duplicate"); and a closed session leaves its groups by itself, before the
-- on_session_closed callbacks run.
--
-- Errors follow the house rule: expected failures return nil, "message" (adding a session twice,
-- a member not found, any change or send on a closed group); programming mistakes raise (wrong
-- argument types, closing a group twice). Queries on a closed group (count, contains, members)
-- see an empty group, as in nano.
local core = require "nano.core"
local scope = require "nano.scope"

local type, tostring, setmetatable, getmetatable, pairs, ipairs, pcall =
  type, tostring, setmetatable, getmetatable, pairs, ipairs, pcall
local push_many, push = core.push_many, core.push
local members_new, members_add, members_remove = core.members_new, core.members_add, core.members_remove

local M = {}

function M.attach(nano)
  local log = nano.log
  local session_mt = debug.getregistry()["nano.session"]

  -- session -> { [group] = true }: which groups to leave when the session closes. Weak both ways:
  -- neither a closed session nor a dropped group is kept alive by it.
  local function registry()
    local S = nano._state
    local r = S.session_groups
    if not r then
      r = setmetatable({}, { __mode = "k" })
      S.session_groups = r
    end
    return r
  end

  local Group = {}
  Group.__index = Group

  -- A session of this process, or (in a cluster) a remote session: a player on a gate, whose
  -- pushes travel there (cluster.lua).
  local function is_remote(s) return nano._is_remote_session ~= nil and nano._is_remote_session(s) end

  local function check_session(s, what)
    if getmetatable(s) ~= session_mt and not is_remote(s) then error(what .. ": expected a session", 3) end
  end

  local function check_group(g, what)
    if getmetatable(g) ~= Group then error(what .. ": call it as group:" .. what .. "(...)", 3) end
  end

  local function forget(g, s)
    local mine = registry()[s]
    if mine then mine[g] = nil end
  end

  --- g:name() -> the name given to nano.new_group
  function Group:name() return self._name end

  --- g:add(s) -> true | nil, err ("session already in group", "session closed", "group closed")
  function Group:add(s)
    check_group(self, "add")
    check_session(s, "add")
    if self._closed then return nil, "group closed" end
    if self._index[s] then return nil, "session already in group" end
    if s:is_closed() then return nil, "session closed" end
    local n = members_add(self._members, s) -- the same position as in _list: both append
    self._list[n] = s
    self._index[s] = n
    if is_remote(s) then self._nremote = (self._nremote or 0) + 1 end
    local r = registry()
    local mine = r[s]
    if not mine then
      mine = setmetatable({}, { __mode = "k" })
      r[s] = mine
    end
    mine[self] = true
    return true
  end

  -- Swap-remove: O(1), so members() has no particular order.
  local function remove(g, s)
    local index, list = g._index, g._list
    local i = index[s]
    if not i then return false end
    members_remove(g._members, i) -- the same swap in the core's list
    local n = #list
    local last = list[n]
    list[i], index[last] = last, i
    list[n], index[s] = nil, nil
    forget(g, s)
    if g._nremote and is_remote(s) then g._nremote = g._nremote - 1 end
    return true
  end

  --- g:leave(s) -> true (it was a member) | false (it was not) | nil, "group closed"
  function Group:leave(s)
    check_group(self, "leave")
    check_session(s, "leave")
    if self._closed then return nil, "group closed" end
    return remove(self, s)
  end

  --- g:leave_all() -> true | nil, "group closed"
  function Group:leave_all()
    check_group(self, "leave_all")
    if self._closed then return nil, "group closed" end
    for _, s in ipairs(self._list) do forget(self, s) end
    self._list, self._index, self._members, self._nremote = {}, {}, members_new(), nil
    return true
  end

  --- g:count() -> number of members
  function Group:count() return #self._list end

  --- g:member(uid) -> session | nil, "member not found"
  --- The member bound to uid (the first found when several are).
  function Group:member(uid)
    check_group(self, "member")
    if type(uid) ~= "number" then error("member: expected a uid (number)", 2) end
    local list = self._list
    for i = 1, #list do
      local s = list[i]
      if s:uid() == uid then return s end
    end
    return nil, "member not found"
  end

  --- g:contains(uid) -> boolean
  function Group:contains(uid)
    return (self:member(uid)) ~= nil
  end

  --- g:has(s) -> boolean: whether this session is a member
  function Group:has(s)
    return self._index[s] ~= nil
  end

  --- g:members() -> { uid, ... } of every member (0 for a session that has not bound a uid)
  function Group:members()
    local uids, list = {}, self._list
    for i = 1, #list do uids[i] = list[i]:uid() end
    return uids
  end

  --- g:sessions() -> { session, ... }: a copy of the member list
  function Group:sessions()
    local copy, list = {}, self._list
    for i = 1, #list do copy[i] = list[i] end
    return copy
  end

  --- g:find_member(filter) -> session | nil, "member not found": the first member for which
  --- filter(session) returns true (nano 0.5's FindMember)
  function Group:find_member(filter)
    check_group(self, "find_member")
    if type(filter) ~= "function" then error("find_member: expected a function(session)", 2) end
    local list = self._list
    for i = 1, #list do
      if filter(list[i]) then return list[i] end
    end
    return nil, "member not found"
  end

  -- Sends one push to `targets`: one shared buffer; with an outbound pipeline, each member's
  -- message goes through it and only those the pipeline left unchanged share the buffer.
  local function send_with(g, targets, route, v, what, serializer)
    local S = nano._state
    local ok, payload = true, nano._raw_bytes(v) -- nano.raw(bytes): as they are
    if not payload then ok, payload = pcall(serializer.marshal, v, route, "push") end
    if not ok then return nil, "cannot serialize: " .. tostring(payload) end
    local code = S.dict[route] or route
    if S.debug then
      log.debug("group %s -> %s %s to %d members %s", g._name, what, route, #targets, payload)
    end
    local remote -- members on gates: one message per gate (cluster.lua), the rest as usual
    if g._nremote and g._nremote > 0 then
      local here = {}
      for i = 1, #targets do
        local s = targets[i]
        if getmetatable(s) == session_mt then
          here[#here + 1] = s
        else
          remote = remote or {}
          remote[#remote + 1] = s
        end
      end
      targets = here
    end
    local chain = nano._outbound_chain()
    if not chain then
      -- every member: the core's member list, the same sessions in the same order
      local n, failed = push_many(targets == g._list and g._members or targets, code, payload)
      if remote then n = n + nano._cluster_group_push(remote, route, payload) end
      return n, failed
    end
    local shared, failed, delivered = {}, nil, 0
    for i = 1, #targets do
      local s = targets[i]
      local msg = { type = "push", route = route, data = payload }
      local pok, err = chain:process(s, msg)
      if pok and msg.data == payload then
        shared[#shared + 1] = s
      elseif pok and push(s, code, msg.data) then
        delivered = delivered + 1
      else
        if not pok then
          log.debug("session %d %s: push dropped by the outbound pipeline: %s", s:id(), route, tostring(err))
        end
        failed = failed or {}
        failed[#failed + 1] = s
      end
    end
    local n, more = push_many(shared, code, payload)
    if remote then n = n + nano._cluster_group_push(remote, route, payload) end
    if more then
      failed = failed or {}
      for i = 1, #more do failed[#failed + 1] = more[i] end
    end
    return delivered + n, failed
  end

  -- Members that speak another serializer than the server's (register's serializer option)
  -- get the value encoded once per serializer.
  local function send(g, targets, route, v, what)
    if type(route) ~= "string" then error(what .. ": route must be a string", 3) end
    if g._closed then return nil, "group closed" end
    local serializer_of, default = nano._serializer_of, nano._state.serializer
    local by, order = nil, nil
    for i = 1, #targets do
      local ser = serializer_of(targets[i])
      if ser ~= default then
        if not by then by, order = {}, {} end
        if not by[ser] then
          by[ser] = {}
          order[#order + 1] = ser
        end
        local list = by[ser]
        list[#list + 1] = targets[i]
      end
    end
    if not by then return send_with(g, targets, route, v, what, default) end
    local rest = {}
    for i = 1, #targets do
      if serializer_of(targets[i]) == default then rest[#rest + 1] = targets[i] end
    end
    if #rest > 0 then order[#order + 1] = default; by[default] = rest end
    local total, failed = 0, nil
    for _, ser in ipairs(order) do
      local n, f = send_with(g, by[ser], route, v, what, ser)
      if not n then return nil, f end
      total = total + n
      if f then
        failed = failed or {}
        for i = 1, #f do failed[#failed + 1] = f[i] end
      end
    end
    return total, failed
  end

  --- g:broadcast(route, v) -> delivered, failed | nil, err
  --- Pushes v to every member. delivered counts the members whose send queue took it; failed
  --- (nil when empty) lists the others (closed, over their send limit, or dropped by the
  --- outbound pipeline).
  function Group:broadcast(route, v)
    check_group(self, "broadcast")
    return send(self, self._list, route, v, "broadcast")
  end

  --- g:multicast(route, v, filter) -> delivered, failed | nil, err
  --- Like broadcast, to the members for which filter(session) returns true.
  function Group:multicast(route, v, filter)
    check_group(self, "multicast")
    if type(filter) ~= "function" then error("multicast: expected a filter function(session)", 2) end
    if self._closed then return nil, "group closed" end
    local targets, list = {}, self._list
    for i = 1, #list do
      if filter(list[i]) then targets[#targets + 1] = list[i] end
    end
    return send(self, targets, route, v, "multicast")
  end

  --- g:close() -> true: every member leaves; later changes and sends return nil, "group closed".
  --- Closing a closed group raises (nano's ErrCloseClosedGroup).
  function Group:close()
    check_group(self, "close")
    if self._closed then error("close: group '" .. self._name .. "' is already closed", 2) end
    for _, s in ipairs(self._list) do forget(self, s) end
    self._closed = true
    self._list, self._index, self._members, self._nremote = {}, {}, members_new(), nil
    return true
  end

  --- g:is_closed() -> boolean
  function Group:is_closed() return self._closed end

  function Group:__tostring()
    return "group " .. self._name .. " (" .. #self._list .. " members" .. (self._closed and ", closed)" or ")")
  end

  local function make(name)
    local g = setmetatable({ _name = name, _list = {}, _index = {}, _members = members_new(), _closed = false }, Group)
    nano._all_groups()[g] = true
    return g
  end

  --- nano.new_group(name) -> group
  -- Hot reload (scope.lua): while the main script runs again, the n-th group of a name it makes
  -- is the n-th group of that name the previous run made, members and all.
  function nano.new_group(name)
    if type(name) ~= "string" then error("new_group: expected a name (string)", 2) end
    return scope.group(name, make)
  end

  -- Every group not yet collected (weak keys): the admin console's `groups`.
  local all = setmetatable({}, { __mode = "k" })
  function nano._all_groups() return all end

  -- The closed hook (init.lua's on_closed) calls this first: the session leaves every group.
  function nano._leave_groups(s)
    local r = nano._state.session_groups
    local mine = r and r[s]
    if not mine then return end
    r[s] = nil
    for g in pairs(mine) do remove(g, s) end
  end
end

return M
