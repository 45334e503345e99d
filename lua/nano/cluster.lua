-- nano.cluster: several nano-host processes as one game, over NATS (see docs/cluster.md).
--
--   nano.cluster{ nats = "nats://127.0.0.1:4222", type = "room", id = "room-1" }
--
-- Every member subscribes to three subjects:
--   nano.ctl            discovery: hello (joining), beat (every heartbeat), bye (leaving)
--   nano.srv.<id>       messages for this member: forwarded client messages, RPCs, replies,
--                       and a gate's session operations (push, response, kick, bind...)
--   nano.grp.<id>.<g>   (gates only, per backend group they have members in) broadcasts
-- A message is a JSON header, a newline, and the payload bytes untouched (already serialized).
--
-- A process that listens is a gate for its own players. A client message whose route has no
-- handler here goes to a member of the route's type (the first part of "type.Comp.handler", or
-- the type that announced "Comp.handler"), sticky per session and type; the backend runs the
-- handler with a remote session whose push/response/kick/close/bind/set travel back here.
-- Delivery is at most once; a session's messages to one backend arrive in order (NATS keeps the
-- order of one publisher's messages on one subject).
local core = require "nano.core"
local nats = require "nano.nats_core"
local task = require "nano.task"
local json = require "nano.json"
local metrics = require "nano.metrics"
local clock = metrics.clock

local type, pairs, ipairs, tostring, tonumber, setmetatable, next, pcall, xpcall =
  type, pairs, ipairs, tostring, tonumber, setmetatable, next, pcall, xpcall
local str_format, str_find, str_match, str_sub = string.format, string.find, string.match, string.sub
local traceback = debug.traceback
local random = math.random

local M = {}

local MSG_REQUEST, MSG_NOTIFY = 0, 1

function M.attach(nano)
  local log = nano.log
  local C -- the cluster state, nil until nano.cluster

  -- ---------------------------------------------------------------------------------------------
  -- envelopes

  local function encode(h, body)
    return json.marshal(h) .. "\n" .. (body or "")
  end

  local function decode(data)
    local nl = str_find(data, "\n", 1, true)
    if not nl then return nil end
    local ok, h = pcall(json.unmarshal, str_sub(data, 1, nl - 1))
    if not ok or type(h) ~= "table" then return nil end
    return h, str_sub(data, nl + 1)
  end

  -- envelopes by direction and kind (nano_cluster_messages_total), RPCs (nano_cluster_rpc_*):
  -- defined by nano.cluster, so that a host without a cluster shows none of these series
  local count_msg, count_rpc

  local function send(to, h, body)
    if not C or not C.link then return nil, "not in a cluster" end
    h.from = C.id
    local ok, err = C.link:publish("nano.srv." .. to, encode(h, body))
    if not ok then return nil, err end
    count_msg("out", h.k)
    return true
  end

  local function serializer() return nano._state.serializer end

  -- ---------------------------------------------------------------------------------------------
  -- members

  local function alive_of_type(t)
    local list = {}
    for id, m in pairs(C.members) do
      if m.type == t and id ~= C.id then list[#list + 1] = id end
    end
    table.sort(list)
    return list
  end

  local function routes_list()
    local list = {}
    for route in pairs(nano._state.handlers) do list[#list + 1] = route end
    return list
  end

  local function announce(op)
    if not C.link then return end
    C.link:publish("nano.ctl", encode({
      op = op, id = C.id, type = C.type, gate = #nano.listeners() > 0, routes = op ~= "bye" and routes_list() or nil,
    }))
  end

  local fail_member -- below

  local function on_ctl(h)
    if h.id == C.id then return end
    local m = C.members[h.id]
    if h.op == "bye" then
      if m then fail_member(h.id, "member " .. h.id .. " left the cluster", "info") end
      return
    end
    if not m then
      m = { id = h.id }
      C.members[h.id] = m
      log.info("cluster: member %s (%s) joined", tostring(h.id), tostring(h.type))
      if h.op == "hello" then announce("beat") end -- the newcomer learns about us at once
    end
    m.type, m.gate, m.last = h.type, h.gate, core.now()
    if h.routes then
      local set = {}
      for _, r in ipairs(h.routes) do set[r] = true end
      m.routes = set
    end
  end

  -- ---------------------------------------------------------------------------------------------
  -- calls in flight: RPCs and forwarded requests, each waiting for one reply

  -- No timer per call (a forwarded request is one): one repeating check every CALL_TICK s ends
  -- the calls past their deadline, so a timeout is late by at most that.
  local CALL_TICK = 0.05

  local function new_call(target, done, timeout)
    C.next_cid = C.next_cid + 1
    local cid = C.next_cid
    C.calls[cid] = { target = target, done = done, deadline = core.now() + timeout, timeout = timeout }
    return cid
  end

  local function finish_call(cid, ...)
    local call = C.calls[cid]
    if not call then return end
    C.calls[cid] = nil
    call.done(...)
  end

  local function expire_calls()
    if not C or not next(C.calls) then return end
    local now = core.now()
    for cid, call in pairs(C.calls) do
      if now >= call.deadline then
        finish_call(cid, nil, { code = 503, msg = str_format("no answer from %s within %g s", call.target, call.timeout) },
          "timeout")
      end
    end
  end

  function fail_member(id, why, level)
    C.members[id] = nil
    log[level or "warn"]("cluster: %s", why)
    for cid, call in pairs(C.calls) do
      if call.target == id then finish_call(cid, nil, { code = 503, msg = why }) end
    end
    for _, bound in pairs(C.bindings) do
      for t, bid in pairs(bound) do
        if bid == id then bound[t] = nil end
      end
    end
  end

  local function fail_all(why)
    for cid in pairs(C.calls) do finish_call(cid, nil, { code = 503, msg = why }) end
  end

  -- ---------------------------------------------------------------------------------------------
  -- choosing a member

  local function pick(t, s)
    local list = alive_of_type(t)
    if #list == 0 then return nil end
    local fn = C.routers[t]
    if fn and s then
      local ok, id = xpcall(fn, traceback, s, list)
      if ok and C.members[id] then return id end
      if not ok then log.error("cluster_route(%s): %s", t, tostring(id)) end
    end
    return list[random(#list)]
  end

  -- type.Comp.handler -> type, Comp.handler; Comp.handler -> the type that announced it
  local function target_of(route)
    local t, short = str_match(route, "^([^.]+)%.([^.]+%.[^.]+)$")
    if t then return t, short end
    for _, m in pairs(C.members) do
      if m.routes and m.routes[route] then return m.type, route end
    end
    return nil, route
  end

  -- ---------------------------------------------------------------------------------------------
  -- RPC

  --- nano.rpc(type_or_id, "Comp.method", payload [, { timeout = secs }]) -> result | nil, err
  function nano.rpc(target, route, payload, opts)
    if not C then return nil, "not in a cluster (call nano.cluster first)" end
    if type(target) ~= "string" or type(route) ~= "string" then
      error("rpc: expected (type_or_id, \"Comp.method\", payload)", 2)
    end
    local t0 = clock()
    local id = C.members[target] and target or pick(target)
    -- counted by the target's type (a bounded set), never by the id or type the caller named
    if not id then
      count_rpc("none", "unavailable", t0)
      return nil, "no server of type or id '" .. target .. "'"
    end
    local ttype = tostring(C.members[id].type)
    local ok, body = pcall(serializer().marshal, payload)
    if not ok then
      count_rpc(ttype, "error", t0)
      return nil, "cannot serialize: " .. tostring(body)
    end
    local timeout = opts and opts.timeout or C.timeout
    local outcome = "ok"
    local res, err = task.await("nano.rpc", function(resume)
      local cid = new_call(id, function(r, e, why)
        if e then
          -- a code 503 is the cluster's own (no member, member gone, leaving); others the handler's
          outcome = why or (type(e) == "table" and e.code == 503 and "unavailable") or "error"
          return resume(nil, e)
        end
        return resume(r)
      end, timeout)
      local sent, why = send(id, { k = "rpc", cid = cid, r = route }, body)
      if not sent then finish_call(cid, nil, { code = 503, msg = why }) end
    end)
    count_rpc(ttype, outcome, t0)
    if err then return nil, type(err) == "table" and (tostring(err.msg) .. " (" .. tostring(err.code) .. ")") or err end
    return res
  end

  -- ---------------------------------------------------------------------------------------------
  -- remote sessions (backend side)

  local RS = {}
  RS.__index = RS
  M.RemoteSession = RS

  local function rs_send(rs, h, body)
    if rs._closed then return nil, "closed" end
    h.sid = rs._sid
    return send(rs._gate, h, body)
  end

  function RS:id() return self._sid end
  function RS:uid() return self._uid end
  function RS:remote() return true end
  function RS:gate() return self._gate end
  function RS:is_closed() return self._closed end
  function RS:last_mid() return self._mid or 0 end
  function RS:transport() return "remote" end

  function RS:bind(uid)
    uid = tonumber(uid)
    if not uid or uid % 1 ~= 0 then error("bind: expected an integer uid", 2) end
    self._uid = uid
    return rs_send(self, { k = "bind", uid = uid })
  end

  function RS:set(k, v)
    self._state[k] = v
    local ok = pcall(json.marshal, v)
    if ok then rs_send(self, { k = "set", key = k, v = v }) end
  end
  function RS:get(k) return self._state[k] end
  function RS:has(k) return self._state[k] ~= nil end
  function RS:remove(k)
    self._state[k] = nil
    rs_send(self, { k = "set", key = k })
  end
  function RS:state()
    local copy = {}
    for k, v in pairs(self._state) do copy[k] = v end
    return copy
  end

  -- a payload for this remote session: nano.raw's bytes as they are, else its handler's
  -- component's serializer (or the server's), told the route and direction (protobuf needs them)
  local function rs_payload(rs, v, route, kind)
    local raw = nano._raw_bytes(v)
    if raw then return true, raw end
    return pcall((rs._ser or serializer()).marshal, v, route, kind)
  end

  function RS:push(route, v)
    local ok, body = rs_payload(self, v, route, "push")
    if not ok then return nil, "cannot serialize: " .. tostring(body) end
    return rs_send(self, { k = "push", r = route }, body)
  end

  -- the gate's call id of a forwarded request, so that the gate stops waiting for it
  local function resp_header(rs, mid, err)
    local cids = rs._cids
    local cid = cids[mid]
    cids[mid] = nil
    return { k = "resp", mid = mid, cid = cid, err = err }
  end

  function RS:response_mid(mid, v)
    local ok, body = rs_payload(self, v, self._route, "response")
    if not ok then return nil, "cannot serialize: " .. tostring(body) end
    if self._answering == mid then self._answered = true end
    return rs_send(self, resp_header(self, mid), body)
  end

  function RS:response(v)
    if self._mtype == MSG_NOTIFY then return nil, "response called while handling a notify" end
    if not self._mid or self._mid == 0 then return nil, "no request to respond to" end
    return self:response_mid(self._mid, v)
  end

  function RS:kick(reason)
    if type(reason) ~= "table" then reason = { reason = reason } end
    local ok, body = rs_payload(self, reason, nil, "kick")
    return rs_send(self, { k = "kick" }, ok and body or "{}")
  end

  function RS:close() return rs_send(self, { k = "close" }) end

  function RS:on_close(fn)
    if type(fn) ~= "function" then error("on_close: expected a function", 2) end
    self._on_close[#self._on_close + 1] = fn
  end

  function RS:__tostring() return str_format("remote session %s@%s", tostring(self._sid), tostring(self._gate)) end

  function nano._is_remote_session(s) return getmetatable(s) == RS end

  -- a group's broadcast to its members on gates: one message per gate with their session ids;
  -- the gate encodes the push once for all of them. Returns how many were sent for.
  function nano._cluster_group_push(list, route, payload)
    local by_gate = {}
    for i = 1, #list do
      local rs = list[i]
      if not rs._closed then
        local sids = by_gate[rs._gate]
        if not sids then
          sids = {}
          by_gate[rs._gate] = sids
        end
        sids[#sids + 1] = rs._sid
      end
    end
    local n = 0
    for gate, sids in pairs(by_gate) do
      if send(gate, { k = "gpush", sids = sids, r = route }, payload) then n = n + #sids end
    end
    return n
  end

  local function remote_session(gate, sid)
    local key = gate .. ":" .. sid
    local rs = C.remote[key]
    if not rs then
      rs = setmetatable({ _gate = gate, _sid = sid, _state = {}, _on_close = {}, _queue = {}, _cids = {},
                         _closed = false }, RS)
      C.remote[key] = rs
    end
    return rs, key
  end

  local function close_remote(key)
    local rs = C.remote[key]
    if not rs then return end
    C.remote[key] = nil
    rs._closed = true
    if nano._leave_groups then nano._leave_groups(rs) end
    for _, fn in ipairs(rs._on_close) do
      nano.spawn(function()
        local ok, err = xpcall(fn, traceback, rs)
        if not ok then log.error("remote session on_close: %s", tostring(err)) end
      end)
    end
  end

  -- runs the handler of one forwarded message, then the next queued for the same session
  local run_next
  local function run_forwarded(rs, h, body)
    local handler = nano._state.handlers[h.r]
    local mtype, mid = h.t, h.mid
    local function fail(code, msg)
      if mtype == MSG_REQUEST then rs_send(rs, resp_header(rs, mid, true), json.marshal({ code = code, msg = msg })) end
    end
    if not handler then
      log.warn("cluster: %s: handler not found: %s", tostring(rs), tostring(h.r))
      return fail(404, "handler not found: " .. tostring(h.r))
    end
    local msg = body
    rs._ser, rs._route = handler.serializer or serializer(), h.r
    if not handler.raw then
      local ok, decoded = pcall(rs._ser.unmarshal, body, h.r, mtype == MSG_REQUEST and "request" or "notify")
      if not ok then return fail(400, "payload does not decode") end
      msg = decoded
    end
    rs._mid, rs._mtype, rs._answering, rs._answered = mid, mtype, mid, false
    local ok, res = xpcall(handler.fn, traceback, handler.comp, rs, msg)
    local answered = rs._answered
    if not ok then
      local code, text = nano._error_reply(res)
      if type(res) ~= "table" then log.error("cluster: %s %s: handler error: %s", tostring(rs), h.r, tostring(res)) end
      if not answered then fail(code, text) end
      return
    end
    if mtype == MSG_REQUEST and res ~= nil and not answered then
      local mok, out = rs_payload(rs, res, h.r, "response")
      if not mok then return fail(500, "internal error") end
      rs_send(rs, resp_header(rs, mid), out)
    end
  end

  function run_next(rs)
    local item = table.remove(rs._queue, 1)
    if not item then
      rs._busy = false
      return
    end
    rs._busy = true
    nano.spawn(function()
      run_forwarded(rs, item[1], item[2])
      run_next(rs)
    end)
  end

  local function on_forwarded(h, body)
    local rs = remote_session(h.from, h.sid)
    rs._uid = h.uid or rs._uid
    if h.cid then rs._cids[h.mid] = h.cid end
    if type(h.st) == "table" then
      for k, v in pairs(h.st) do rs._state[k] = v end
    end
    local q = rs._queue
    q[#q + 1] = { h, body }
    if not rs._busy then run_next(rs) end
  end

  local function on_rpc(h, body)
    local handler = nano._state.handlers[h.r]
    local function reply(res, err)
      if err then
        send(h.from, { k = "rpcres", cid = h.cid, err = err })
      else
        local ok, out = pcall(serializer().marshal, res)
        if not ok then return send(h.from, { k = "rpcres", cid = h.cid, err = { code = 500, msg = "result does not serialize" } }) end
        send(h.from, { k = "rpcres", cid = h.cid }, out)
      end
    end
    if not handler then return reply(nil, { code = 404, msg = "no handler " .. tostring(h.r) .. " on " .. C.id }) end
    nano.spawn(function()
      local ok, msg = pcall(serializer().unmarshal, body)
      if not ok then return reply(nil, { code = 400, msg = "payload does not decode" }) end
      local hok, res = xpcall(handler.fn, traceback, handler.comp, nil, msg)
      if not hok then
        local code, text = nano._error_reply(res)
        if type(res) ~= "table" then log.error("cluster: rpc %s: %s", h.r, tostring(res)) end
        return reply(nil, { code = code, msg = text })
      end
      reply(res)
    end)
  end

  local function on_rpc_result(h, body)
    if h.err then return finish_call(h.cid, nil, h.err) end
    local ok, res = pcall(serializer().unmarshal, body)
    if not ok then return finish_call(h.cid, nil, { code = 500, msg = "result does not decode" }) end
    finish_call(h.cid, res)
  end

  -- ---------------------------------------------------------------------------------------------
  -- the gate side: forwarding, and what backends ask of this gate's sessions

  local function route_code(route) return nano._state.dict[route] or route end

  -- a client message whose route has no handler here; true when it went to another member
  local function forward(s, mtype, id, route, payload)
    if not C then return false end
    local t, short = target_of(route)
    if not t or t == C.type then return false end
    local bound = C.bindings[s]
    if not bound then
      bound = {}
      C.bindings[s] = bound
    end
    local member = bound[t]
    if not member or not C.members[member] then
      member = pick(t, s)
      bound[t] = member
    end
    if not member then
      if mtype == MSG_REQUEST then
        core.respond(s, id, json.marshal({ code = 503, msg = "no server of type " .. t }), true)
      end
      log.warn("session %d %s: no server of type %s", s:id(), route, t)
      return true
    end
    C.by_sid[s:id()] = s
    local seen = C.seen[s]
    if not seen then
      seen = {}
      C.seen[s] = seen
    end
    seen[member] = true
    local h = { k = "fwd", sid = s:id(), uid = s:uid(), st = s:state(), t = mtype, mid = id, r = short }
    if mtype == MSG_REQUEST then
      h.cid = new_call(member, function(_, err)
        if err then core.respond(s, id, json.marshal(err), true) end
      end, C.timeout)
    end
    local ok, err = send(member, h, payload)
    if not ok and h.cid then finish_call(h.cid, nil, { code = 503, msg = err }) end
    return true
  end
  nano._forward = forward

  local session_ops = {
    resp = function(s, h, body)
      if h.cid then C.calls[h.cid] = nil end -- the forwarded request is answered: no timeout for it
      core.respond(s, h.mid, body, h.err and true or false)
    end,
    push = function(s, h, body) core.push(s, route_code(h.r), body) end,
    kick = function(s, _, body)
      local ok, reason = pcall(serializer().unmarshal, body)
      s:kick(ok and reason or nil)
    end,
    close = function(s) s:close() end,
    bind = function(s, h) s:bind(h.uid) end,
    set = function(s, h)
      if h.v == nil then s:remove(h.key) else s:set(h.key, h.v) end
    end,
  }

  local function on_group_push(h, body)
    local list = {}
    for _, sid in ipairs(h.sids or {}) do
      local s = C.by_sid[sid]
      if s and not s:is_closed() then list[#list + 1] = s end
    end
    if #list > 0 then core.push_many(list, route_code(h.r), body) end
  end

  local function on_session_op(h, body)
    local s = C.by_sid[h.sid]
    if not s or s:is_closed() then return end
    session_ops[h.k](s, h, body)
  end

  -- ---------------------------------------------------------------------------------------------
  -- the message loop

  local handlers = {
    fwd = on_forwarded, rpc = on_rpc, rpcres = on_rpc_result, gpush = on_group_push,
    closed = function(h) close_remote(h.from .. ":" .. h.sid) end,
  }
  for k in pairs(session_ops) do handlers[k] = on_session_op end

  local function on_msg(_, subject, _, data)
    if not C then return end
    local h, body = decode(data)
    if not h then
      log.warn("cluster: a message on %s that is not an envelope (%d bytes); dropped", subject, #data)
      return
    end
    if subject == "nano.ctl" then return on_ctl(h) end
    count_msg("in", h.k)
    local fn = handlers[h.k]
    if not fn then
      log.warn("cluster: unknown message kind %s from %s", tostring(h.k), tostring(h.from))
      return
    end
    fn(h, body)
  end

  local function subscribe_all()
    for _, subject in ipairs({ "nano.ctl", "nano.srv." .. C.id }) do
      local ok, err = C.link:subscribe(subject)
      if not ok then log.error("cluster: subscribe %s: %s", subject, err) end
    end
  end

  local function on_event(name, text)
    if not C then return end
    if name == "connected" then
      log.info("cluster: connected to NATS %s as %s (%s)", C.url, C.id, C.type)
      announce("hello")
    elseif name == "reconnected" then
      log.info("cluster: reconnected to NATS")
      announce("hello")
    elseif name == "disconnected" then
      log.warn("cluster: lost NATS %s; calls in flight fail, retrying", C.url)
      fail_all("the cluster's NATS connection was lost")
    elseif name == "error" then
      if text:find("Slow Consumer", 1, true) then C.slow = C.slow + 1 end
      log.warn("cluster: NATS: %s", text)
    end
  end

  local function sweep()
    if not C then return end
    announce("beat")
    local now, limit = core.now(), C.heartbeat * C.dead_after
    for id, m in pairs(C.members) do
      if id ~= C.id and now - (m.last or now) > limit then
        fail_member(id, str_format("member %s silent for %g s; dropped", id, now - m.last))
      end
    end
  end

  --- nano.cluster{ nats=, type=, id=, heartbeat=1, dead_after=3, timeout=5, max_queue=64 MiB }
  function nano.cluster(opts)
    if type(opts) ~= "table" or type(opts.type) ~= "string" or opts.type:find("[.%s*>]") then
      error("cluster: expected { nats = \"nats://host:port\", type = \"name\" } (a type without dots)", 2)
    end
    if C then -- the main script runs again on a hot reload: the same membership goes on
      if opts.type ~= C.type or (opts.id and opts.id ~= C.id) or (opts.nats or C.url) ~= C.url then
        error("cluster: already joined as " .. C.id .. " (" .. C.type .. "); changing the type, id or "
          .. "NATS address needs a restart", 2)
      end
      C.timeout = opts.timeout or C.timeout
      return C.id
    end
    local worker = os.getenv("NANO_WORKER")
    local id = opts.id or str_format("%s-%s%x", opts.type, worker and ("w" .. worker .. "-") or "",
      (math.floor(core.hrtime() * 1e6) + random(0xffffff)) % 0xffffffff)
    if type(id) ~= "string" or id:find("[.%s*>]") then error("cluster: an id without dots or spaces", 2) end
    C = {
      id = id, type = opts.type, url = opts.nats or "nats://127.0.0.1:4222",
      heartbeat = opts.heartbeat or 1, dead_after = opts.dead_after or 3, timeout = opts.timeout or 5,
      members = {}, calls = {}, next_cid = 0, routers = {},
      bindings = setmetatable({}, { __mode = "k" }), seen = setmetatable({}, { __mode = "k" }),
      by_sid = setmetatable({}, { __mode = "v" }), remote = {}, slow = 0,
    }
    count_msg = count_msg or metrics._cluster_messages({ "fwd", "rpc", "rpcres", "resp", "push",
      "kick", "close", "bind", "set", "closed", "gpush" })
    count_rpc = count_rpc or metrics._rpc_recorder()
    local link, err = nats.connect(C.url, id, on_msg, on_event, opts.max_queue)
    if not link then
      C = nil
      error("cluster: " .. tostring(err), 2)
    end
    C.link = link
    subscribe_all()
    C.members[id] = { id = id, type = C.type, last = core.now() }
    C.timer = core.timer(C.heartbeat, C.heartbeat, sweep)
    C.call_timer = core.timer(CALL_TICK, CALL_TICK, expire_calls)
    if not link:connected() then
      log.warn("cluster: NATS %s is not reachable yet; retrying in the background", C.url)
    end
    return id
  end

  --- nano.cluster_route(type, fn(session, ids) -> id): picks the member for a session's messages
  function nano.cluster_route(t, fn)
    if type(t) ~= "string" or type(fn) ~= "function" then error("cluster_route: expected (type, fn)", 2) end
    if not C then error("cluster_route: call nano.cluster first", 2) end
    C.routers[t] = fn
  end

  --- nano.cluster_members() -> { { id=, type=, gate=, self= }, ... }
  function nano.cluster_members()
    local list = {}
    if not C then return list end
    for id, m in pairs(C.members) do
      list[#list + 1] = { id = id, type = m.type, gate = m.gate and true or false, self = id == C.id }
    end
    table.sort(list, function(a, b) return a.id < b.id end)
    return list
  end

  function nano.cluster_id() return C and C.id end

  --- nano.cluster_stats() -> { id=, members=, calls=, connected=, delivered=, slow_consumers= }
  function nano.cluster_stats()
    if not C then return nil end
    local members, calls = 0, 0
    for _ in pairs(C.members) do members = members + 1 end
    for _ in pairs(C.calls) do calls = calls + 1 end
    local delivered, slow = C.link:counts()
    return { id = C.id, type = C.type, members = members, calls = calls, connected = C.link:connected(),
             delivered = delivered, slow_consumers = math.max(slow, C.slow) }
  end

  -- a gate's session closed: every backend that saw it is told (their on_close runs there)
  function nano._cluster_session_closed(s)
    if not C then return end
    local seen = C.seen[s]
    if seen then
      for member in pairs(seen) do send(member, { k = "closed", sid = s:id() }) end
    end
    C.seen[s], C.bindings[s] = nil, nil
  end

  --- leaves the cluster: goodbye, calls in flight fail, the connection closes
  function nano._cluster_leave()
    if not C then return end
    local c = C
    announce("bye")
    fail_all("leaving the cluster")
    c.timer:stop()
    c.call_timer:stop()
    c.link:close()
    C = nil
  end

  nano.session_methods.remote = function() return false end
end

return M
