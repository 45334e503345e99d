/* The `nano.core` module: what the Lua side of the API (lua/nano/) is built on. Mechanism only:
 * which handler runs, serialization and the public names are Lua's business.
 *
 * This file is the app: configuration, the hooks, sending, the watchdog's slices, the loop, stats
 * and the log; it opens the module and adds the other parts to it (lua_core.h lists them). */
#include <math.h>
#include <string.h>

#include <lauxlib.h>

#include "conn.h"
#include "host.h"
#include "log.h"
#include "lua_alloc.h"
#include "lua_binding.h"
#include "lua_core.h"
#include "lua_fs.h"
#include "lua_strcache.h"
#include "lua_watchdog.h"

static nh_host_t *host(lua_State *L) {
    return nh_lua_core_host(L);
}

/* Expected failures become nil + message (push to a closed session); see STYLE.md. */
static int push_send_result(lua_State *L, int r) {
    if (r == 0) {
        lua_pushboolean(L, 1);
        return 1;
    }
    lua_pushnil(L);
    switch (r) {
    case UV_EPIPE:
        lua_pushliteral(L, "session closed");
        break;
    case UV_ENOBUFS:
        lua_pushliteral(L, "send buffer exceeded");
        break;
    case UV_E2BIG:
        lua_pushliteral(L, "message too big");
        break;
    case NH_ECODEC_ROUTE_TOO_LONG:
        lua_pushliteral(L, "route longer than 255 bytes");
        break;
    default:
        lua_pushstring(L, uv_strerror(r));
    }
    return 2;
}

/* ---- configuration ---- */

/* Reads t[key] (t at index 1) as a number in [min, max] into *out; nil keeps *out. Raises
 * "configure: key: ..." on a wrong type or value. Returns whether the key was given. */
static int cfg_number(lua_State *L, const char *key, double min, double max, double *out) {
    lua_getfield(L, 1, key);
    int given = !lua_isnil(L, -1);
    if (given) {
        if (lua_type(L, -1) != LUA_TNUMBER)
            luaL_error(L, "configure: %s: expected a number, got %s", key, luaL_typename(L, -1));
        double v = lua_tonumber(L, -1);
        if (!(v >= min && v <= max))
            luaL_error(L, "configure: %s: %f is out of range (%f to %f)", key, v, min, max);
        *out = v;
    }
    lua_pop(L, 1);
    return given;
}

static int cfg_bool(lua_State *L, const char *key, int *out) {
    lua_getfield(L, 1, key);
    int given = !lua_isnil(L, -1);
    if (given) *out = lua_toboolean(L, -1);
    lua_pop(L, 1);
    return given;
}

/* configure{key = value, ...}: every key is checked before any is applied, so a bad value
 * changes nothing. */
static int c_configure(lua_State *L) {
    nh_host_t *h = host(L);
    luaL_checktype(L, 1, LUA_TTABLE);
    nh_config_t c = h->cfg;
    double v;
    if (cfg_number(L, "heartbeat", 0.01, 1e9, &v)) c.heartbeat_ms = (uint64_t)llround(v * 1000);
    if (cfg_number(L, "handshake_timeout", 0.01, 1e9, &v))
        c.handshake_timeout_ms = (uint64_t)llround(v * 1000);
    if (cfg_number(L, "max_packet", 64, NH_PKT_MAX_BODY, &v)) c.max_packet = (uint32_t)v;
    if (cfg_number(L, "max_ws_frame", 125, 9e15, &v)) c.max_ws_frame = (uint64_t)v;
    if (cfg_number(L, "send_limit", 1024, 9e15, &v)) c.send_limit = (size_t)v;
    if (cfg_number(L, "max_conns", 0, 4294967295.0, &v)) c.max_conns = (uint32_t)v;
    cfg_bool(L, "debug", &c.debug);
    /* lua_watchdog.h: stall time (0 or false: off), abort, exit time (0: never), Lua heap cap */
    lua_getfield(L, 1, "watchdog");
    int watchdog_off = lua_isboolean(L, -1) && !lua_toboolean(L, -1);
    lua_pop(L, 1);
    if (watchdog_off)
        c.watchdog.stall_ms = 0;
    else if (cfg_number(L, "watchdog", 0, 1e9, &v))
        c.watchdog.stall_ms = (uint64_t)llround(v * 1000);
    cfg_bool(L, "watchdog_abort", &c.watchdog.abort);
    if (cfg_number(L, "watchdog_exit", 0, 1e9, &v))
        c.watchdog.exit_ms = (uint64_t)llround(v * 1000);
    if (cfg_number(L, "lua_memory_limit", 0, 9e15, &v)) {
        if (v != 0 && v < 1048576)
            luaL_error(L, "configure: lua_memory_limit: 0 or at least 1 MiB");
        c.watchdog.memory_limit = (size_t)v;
    }
    h->cfg = c;
    nh_host_config_changed(h);
    return 0;
}

static int c_config(lua_State *L) {
    const nh_config_t *c = &host(L)->cfg;
    lua_createtable(L, 0, 8);
    lua_pushnumber(L, (lua_Number)c->heartbeat_ms / 1000.0);
    lua_setfield(L, -2, "heartbeat");
    lua_pushnumber(L, (lua_Number)c->handshake_timeout_ms / 1000.0);
    lua_setfield(L, -2, "handshake_timeout");
    lua_pushnumber(L, c->max_packet);
    lua_setfield(L, -2, "max_packet");
    lua_pushnumber(L, (lua_Number)c->max_ws_frame);
    lua_setfield(L, -2, "max_ws_frame");
    lua_pushnumber(L, (lua_Number)c->send_limit);
    lua_setfield(L, -2, "send_limit");
    lua_pushnumber(L, c->max_conns);
    lua_setfield(L, -2, "max_conns");
    lua_pushboolean(L, c->debug);
    lua_setfield(L, -2, "debug");
    /* derived, read-only: how often heartbeats and timeouts are checked (nano.test steps by it) */
    lua_pushnumber(L, (lua_Number)host(L)->sweep_period / 1000.0);
    lua_setfield(L, -2, "sweep");
    lua_pushnumber(L, (lua_Number)c->watchdog.stall_ms / 1000.0);
    lua_setfield(L, -2, "watchdog");
    lua_pushboolean(L, c->watchdog.abort);
    lua_setfield(L, -2, "watchdog_abort");
    lua_pushnumber(L, (lua_Number)c->watchdog.exit_ms / 1000.0);
    lua_setfield(L, -2, "watchdog_exit");
    lua_pushnumber(L, (lua_Number)c->watchdog.memory_limit);
    lua_setfield(L, -2, "lua_memory_limit");
    return 1;
}

/* set_hook(name, fn | nil [, on_unsent]). The dispatch hook with on_unsent may return a request's
 * response instead of sending it: (value, empty_array, route), which the core writes as nano.json
 * does (or, when the second is a protobuf serializer's core types table, as the route's response
 * type: lua_protobuf.c), or (json_codec.flat_mark, value, route) when nano's flat writer wrote the
 * text already (lua_json.c; a hook around nano's dispatcher that writes JSON itself before it
 * returns these has the value serialized by on_unsent instead), and sends once the hook's thread
 * has returned (lua_dispatch.c) — the
 * dispatcher calls no C function for it, and each such call ends a JIT trace (docs/benchmarks.md).
 * Such a hook gets a ninth argument, true, for each request: only then may it return one (a
 * script's own hook around it, set without on_unsent, passes on eight, and its dispatcher then
 * sends as before). Only a return without a wait counts: after a yield the thread returns to
 * whoever resumed it (task.lua), not to the core, so a hook that waited sends its own answer
 * (nano's dispatcher does: t.waited). A value that does not encode, or is over the packet limit,
 * goes to on_unsent(session, id, value, route, size | nil), which answers the request in its
 * stead; if that fails, the core answers 500, as for a dispatcher that failed. */
static int c_set_hook(lua_State *L) {
    static const char *const names[] = {"dispatch", "handshake", "closed", "origin",
                                        "signal",   "failed",    NULL};
    nh_host_t *h = host(L);
    int which = luaL_checkoption(L, 1, NULL, names);
    if (!lua_isnil(L, 2)) luaL_checktype(L, 2, LUA_TFUNCTION);
    int unsent = which == NH_HOOK_DISPATCH && !lua_isnoneornil(L, 3);
    if (unsent) luaL_checktype(L, 3, LUA_TFUNCTION);
    if (which == NH_HOOK_DISPATCH) {
        luaL_unref(L, LUA_REGISTRYINDEX, h->hooks[NH_HOOK_UNSENT]);
        h->hooks[NH_HOOK_UNSENT] = LUA_NOREF;
        if (unsent && !lua_isnil(L, 2)) {
            lua_settop(L, 3);
            h->hooks[NH_HOOK_UNSENT] = luaL_ref(L, LUA_REGISTRYINDEX);
        }
    }
    luaL_unref(L, LUA_REGISTRYINDEX, h->hooks[which]);
    lua_settop(L, 2);
    h->hooks[which] = lua_isnil(L, 2) ? LUA_NOREF : luaL_ref(L, LUA_REGISTRYINDEX);
    nh_lua_dispatch_install(h);
    return 0;
}

/* try_call(fn, ...) -> fn's first result, or nil when fn raised an error (dropped). A pcall that
 * is a plain C call for LuaJIT: a trace stitches around it and goes on compiled after it, which
 * it cannot after Lua's own pcall of a function that calls C (serializers' try_marshal). */
static int c_try_call(lua_State *L) {
    luaL_checkany(L, 1);
    if (lua_pcall(L, lua_gettop(L) - 1, 1, 0) != 0) lua_pushnil(L);
    return 1;
}

/* set_predecode(on | core_types): the dispatch hook gets each payload's JSON value as well, or
 * with a protobuf serializer's core types table (schema:core_types) each request's payload
 * decoded with its route's type (lua_dispatch.c); false: neither */
static int c_set_predecode(lua_State *L) {
    nh_host_t *h = host(L);
    luaL_unref(L, LUA_REGISTRYINDEX, h->predecode_pb_ref);
    luaL_unref(L, LUA_REGISTRYINDEX, h->predecode_pb_names_ref);
    h->predecode_pb_ref = h->predecode_pb_names_ref = LUA_NOREF;
    memset(h->pb_routes, 0, sizeof h->pb_routes); /* their types were the old table's */
    h->predecode_json = 0;
    if (lua_istable(L, 1)) {
        lua_settop(L, 1);
        nh_lua_pb_push_names(L, 1);
        h->predecode_pb_names_ref = luaL_ref(L, LUA_REGISTRYINDEX);
        h->predecode_pb_ref = luaL_ref(L, LUA_REGISTRYINDEX);
    } else {
        h->predecode_json = lua_toboolean(L, 1);
    }
    return 0;
}

/* message_bytes(thread) -> the payload's bytes of the message that thread is dispatching, or nil
 * once it has yielded or returned (the dispatcher got false for them: lua_dispatch.c) */
static int c_message_bytes(lua_State *L) {
    nh_host_t *h = host(L);
    if (h->msg_thread && lua_tothread(L, 1) == h->msg_thread)
        lua_pushlstring(L, (const char *)h->msg_bytes, h->msg_len);
    else
        lua_pushnil(L);
    return 1;
}

/* ---- sending ---- */

/* Sends the response m to s (NULL: closed) and returns what nh_session_send_msg did; a response
 * sent is remembered, so that session.c answers only a request Lua failed to answer. */
static int send_response(nh_session_t *s, const nh_msg_t *m) {
    if (!s) return UV_EPIPE;
    int r = nh_session_send_msg(s, m);
    if (r == 0) s->answered_mid = m->id;
    return r;
}

/* The arguments respond and respond_value share: the session at 1 (NULL: closed) and the request
 * id at 2, which m answers (raises on a bad argument). */
static nh_session_t *check_response(lua_State *L, nh_msg_t *m) {
    nh_watchdog_check(L);
    nh_session_t *s = nh_lua_to_session(L, 1);
    *m = (nh_msg_t){0};
    m->type = NH_MSG_RESPONSE;
    luaL_checknumber(L, 2);
    m->id = nh_lua_check_msg_id(L, 2);
    return s;
}

/* The same for push and push_value: the session at 1 and the route (or its code) at 2. */
static nh_session_t *check_push(lua_State *L, nh_msg_t *m) {
    nh_watchdog_check(L);
    nh_session_t *s = nh_lua_to_session(L, 1);
    *m = (nh_msg_t){0};
    m->type = NH_MSG_PUSH;
    nh_lua_check_route(L, 2, m);
    return s;
}

int nh_lua_send_returned(nh_host_t *h, lua_State *T, nh_session_t *s, uint64_t id) {
    int first = lua_type(T, 1);
    if (first == LUA_TNIL) return 0;
    if (lua_gettop(T) != 3) lua_settop(T, 3); /* nano's dispatcher returns three */
    nh_msg_t m = {.type = NH_MSG_RESPONSE, .id = id};
    const void *mark = first == LUA_TLIGHTUSERDATA ? lua_touserdata(T, 1) : NULL;
    if (mark && (nh_lua_json_is_flat_mark(mark) || nh_lua_pb_is_flat_mark(mark))) {
        /* the dispatcher wrote the text or the protobuf bytes (a flat writer), the value second;
         * none finished there (a script's hook around the dispatcher wrote another since):
         * on_unsent, which serializes the value */
        m.payload = nh_lua_json_is_flat_mark(mark)
                        ? (const uint8_t *)nh_lua_json_flat_take(mark, &m.payload_len)
                        : nh_lua_pb_flat_take(mark, &m.payload_len);
        if (m.payload && send_response(s, &m) != UV_E2BIG) return 0;
        lua_pushvalue(T, 2);
        lua_replace(T, 1); /* the value, for on_unsent below */
    } else {
        int marker = lua_type(T, 2);
        if (marker == LUA_TTABLE) { /* a protobuf serializer's core types: the route's type */
            m.payload = nh_lua_pb_core_encode(T, 2, 3, 1, &m.payload_len);
        } else {
            size_t empty_len = 0;
            const char *empty = marker == LUA_TSTRING ? lua_tolstring(T, 2, &empty_len) : NULL;
            m.payload = (const uint8_t *)nh_lua_json_encode(T, 1, empty, empty_len, &m.payload_len);
        }
        if (m.payload && send_response(s, &m) != UV_E2BIG) return 0;
    }
    /* on_unsent(session, id, value, route, size | nil): the Lua side answers it (logged there);
     * should that fail, the caller's 500 answers instead */
    lua_State *L = h->L;
    if (h->hooks[NH_HOOK_UNSENT] == LUA_NOREF || !lua_checkstack(L, 6)) return -1;
    lua_rawgeti(L, LUA_REGISTRYINDEX, h->hooks[NH_HOOK_UNSENT]);
    nh_lua_push_session(L, s);
    lua_pushnumber(L, (lua_Number)id);
    lua_xmove(T, L, 3); /* the value, the empty-array marker, the route */
    lua_remove(L, -2);
    if (m.payload)
        lua_pushinteger(L, (lua_Integer)m.payload_len);
    else
        lua_pushnil(L);
    return nh_host_call_handler(h, 5, 0, "response", s->id, NULL, 0);
}

/* respond(session, id, payload, is_error) -> true | nil, err */
static int c_respond(lua_State *L) {
    nh_msg_t m;
    nh_session_t *s = check_response(L, &m);
    m.payload = (const uint8_t *)luaL_checklstring(L, 3, &m.payload_len);
    if (lua_toboolean(L, 4)) m.flags = NH_MSG_FLAG_ERROR;
    if (s && m.flags)
        nh_metrics_error_response(&s->host->metrics, s->id, m.id, (int)lua_tointeger(L, 5));
    return push_send_result(L, send_response(s, &m));
}

/* The value at index 3 as nano.json writes it (the empty-array marker at 4) into m's payload;
 * 0, nothing set, when it does not encode. A value that is json_codec.flat_mark stands for the
 * text nano's flat writer has just written (lua/nano/init.lua: flat_or): that text; the mark
 * without one does not encode (the caller serializes the value itself). */
static int json_payload(lua_State *L, nh_msg_t *m) {
    luaL_checkany(L, 3);
    if (lua_type(L, 3) == LUA_TLIGHTUSERDATA && /* the text the flat writer wrote (lua_json.c) */
        (m->payload =
             (const uint8_t *)nh_lua_json_flat_take(lua_touserdata(L, 3), &m->payload_len)))
        return 1;
    size_t empty_len = 0;
    const char *empty = lua_type(L, 4) == LUA_TSTRING ? lua_tolstring(L, 4, &empty_len) : NULL;
    m->payload = (const uint8_t *)nh_lua_json_encode(L, 3, empty, empty_len, &m->payload_len);
    return m->payload != NULL;
}

/* respond_value(session, id, value [, empty_array]) -> true | nil, err, size | false: the value
 * written as nano.json writes it and sent as the response, in one call. For the dispatcher: each
 * C function Lua calls ends the JIT's trace there (a trace exit, ~370 instructions a call:
 * docs/benchmarks.md), and this one replaces two (the encoder and respond). size: the text's
 * length, for the "message too big" log. false: the value does not encode (nothing sent; the
 * serializer's marshal says why). */
static int c_respond_value(lua_State *L) {
    nh_msg_t m;
    nh_session_t *s = check_response(L, &m);
    if (!json_payload(L, &m)) {
        lua_pushboolean(L, 0);
        return 1;
    }
    int r = send_response(s, &m);
    int n = push_send_result(L, r);
    if (r != UV_E2BIG) return n;
    lua_pushinteger(L, (lua_Integer)m.payload_len);
    return n + 1;
}

/* A push over the packet limit is refused (nil, "message too big"); the operator hears of it
 * too, since a caller may well ignore the result. */
static void log_push_too_big(uint64_t session, const nh_msg_t *m, size_t size) {
    char who[40] = "broadcast"; /* session 0: to a group */
    if (session) snprintf(who, sizeof who, "session %llu", (unsigned long long)session);
    if (m->route_compressed)
        nh_log(NH_LOG_ERROR, "%s: push #%u of %zu bytes is over the %u-byte packet limit; not sent",
               who, m->route_code, size, (unsigned)NH_PKT_MAX_BODY);
    else
        nh_log(NH_LOG_ERROR,
               "%s: push %.*s of %zu bytes is over the %u-byte packet limit; not sent", who,
               (int)(m->route_len > 128 ? 128 : m->route_len), m->route, size,
               (unsigned)NH_PKT_MAX_BODY);
}

/* Sends push m to s (NULL: closed): 0 or push's negative uv error (one too big is logged). */
static int push_to(nh_session_t *s, const nh_msg_t *m) {
    if (!s) return UV_EPIPE;
    int r = nh_session_send_msg(s, m);
    if (r == UV_E2BIG) log_push_too_big(s->id, m, m->payload_len);
    return r;
}

/* The same, and pushes push's results. */
static int send_push(lua_State *L, nh_session_t *s, const nh_msg_t *m) {
    return push_send_result(L, push_to(s, m));
}

/* push(session, route_or_code, payload) -> true | nil, err */
static int c_push(lua_State *L) {
    nh_msg_t m;
    nh_session_t *s = check_push(L, &m);
    m.payload = (const uint8_t *)luaL_checklstring(L, 3, &m.payload_len);
    return send_push(L, s, &m);
}

/* push_value(session, route_or_code, value [, empty_array]) -> true | nil, err | false: the
 * value written as nano.json writes it and pushed, in one call (respond_value's reason: one trace
 * exit for the JIT instead of two). false: the value does not encode (nothing sent). */
static int c_push_value(lua_State *L) {
    nh_msg_t m;
    nh_session_t *s = check_push(L, &m);
    if (!json_payload(L, &m)) {
        lua_pushboolean(L, 0);
        return 1;
    }
    return send_push(L, s, &m);
}

/* ---- functions nano's Lua calls through the FFI ----
 * A C function Lua calls ends the JIT's trace there: the trace exits, the C call runs through the
 * VM, and another trace starts after it (~650 instructions a call, docs/benchmarks.md, twentieth
 * pass). A function called through the FFI is compiled into the caller's trace instead. Such a
 * function gets no lua_State: it must not raise, allocate Lua objects or call into Lua, so it
 * declines what it cannot do that way and the caller takes the C function that can. */

/* s:push(route, v) of a value the JSON flat writer has just written (lua/nano/init.lua:
 * session.push): udata is the memory of a session's userdata (checked by the caller), code the
 * route's dictionary code or -1 for route (route_len bytes). 0 when sent, a negative uv error as
 * push returns it (core.send_error gives the message), or NH_FFI_DECLINED: nothing done, no text
 * taken (the watchdog asks for an abort, which only the C function can raise; or no finished
 * text), and the caller pushes with core.push_value. */
#define NH_FFI_DECLINED 1
static double ffi_pushes; /* pushes sent here (core.ffi_pushes(): for specs) */
static int ffi_push_flat(const void *udata, int32_t code, const char *route, size_t route_len) {
    if (nh_watchdog_pending()) return NH_FFI_DECLINED;
    nh_msg_t m = {.type = NH_MSG_PUSH};
    m.payload = (const uint8_t *)nh_lua_json_flat_take(nh_lua_json_flat_mark(), &m.payload_len);
    if (!m.payload) return NH_FFI_DECLINED;
    if (code >= 0) {
        m.route_compressed = 1;
        m.route_code = (uint16_t)code;
    } else {
        m.route = route;
        m.route_len = route_len;
    }
    int r = push_to(nh_lua_session_of(udata), &m);
    if (r == 0) ffi_pushes++;
    return r;
}

/* The functions as lua/nano/init.lua declares them (ffi.cdef "struct nh_core_ffi"): keep the
 * two in step (core.ffi_size tells nano whether they are). */
static const struct nh_core_ffi {
    int (*push_flat)(const void *udata, int32_t code, const char *route, size_t route_len);
    double (*session_id)(const void *udata);
    double (*session_uid)(const void *udata);
    int (*session_closed)(const void *udata);
    double (*now)(void);
} core_ffi = {ffi_push_flat, nh_lua_ffi_session_id, nh_lua_ffi_session_uid,
              nh_lua_ffi_session_closed, nh_lua_ffi_now};

/* send_error(code) -> nil, err: the message push and respond give for a negative uv error (what
 * an FFI function returned). */
static int c_send_error(lua_State *L) {
    int r = (int)luaL_checkinteger(L, 1);
    return push_send_result(L, r ? r : UV_EINVAL);
}

static int c_ffi_pushes(lua_State *L) {
    lua_pushnumber(L, ffi_pushes);
    return 1;
}

/* push_many(sessions, route_or_code, payload) -> delivered, failed_list
 * sessions: an array, or a member list (members_new: a group's, walked without reading the
 * sessions out of Lua one by one). The packet is encoded once into one shared buffer that every
 * member's queue references.
 * Sessions that are closed or over their send limit are skipped (and listed in failed). */
static int c_push_many(lua_State *L) {
    nh_watchdog_check(L);
    int members = nh_lua_is_members(L, 1);
    if (!members) luaL_checktype(L, 1, LUA_TTABLE);
    nh_msg_t m = {0};
    m.type = NH_MSG_PUSH;
    nh_lua_check_route(L, 2, &m);
    m.payload = (const uint8_t *)luaL_checklstring(L, 3, &m.payload_len);
    uint8_t head[NH_MSG_MAX_HEADER];
    int hn = nh_msg_write_header(head, &m);
    if (hn < 0) return push_send_result(L, hn);
    if ((size_t)hn + m.payload_len > NH_PKT_MAX_BODY) log_push_too_big(0, &m, m.payload_len);
    lua_settop(L, 3);
    lua_newtable(L); /* slot 4: the failed list; made before the buffer so no error can leak it */
    /* the whole data packet, once: each member's queue references it (session.h) */
    size_t body = (size_t)hn + m.payload_len;
    nh_buf_t *b = nh_buf_new(NH_PKT_HEADER_LEN + body);
    if (!b) return luaL_error(L, "out of memory");
    nh_pkt_write_header(b->data, NH_PKT_DATA, body);
    memcpy(b->data + NH_PKT_HEADER_LEN, head, (size_t)hn);
    memcpy(b->data + NH_PKT_HEADER_LEN + hn, m.payload, m.payload_len);
    b->len = (uint32_t)(NH_PKT_HEADER_LEN + body);
    /* From here to the unref nothing may raise: members are looked up without checks that
     * throw (a non-session member simply fails). */
    int delivered = 0, failed = 0;
    if (members) {
        delivered = nh_lua_members_send_shared(L, 1, b, 4, &failed);
    } else {
        int n = (int)lua_objlen(L, 1);
        for (int i = 1; i <= n; i++) {
            lua_rawgeti(L, 1, i);
            nh_session_t *s = nh_lua_test_session(L, -1);
            int r = s ? nh_session_send_shared(s, b) : UV_EPIPE;
            if (r == 0) {
                delivered++;
                lua_pop(L, 1);
            } else {
                lua_rawseti(L, 4, ++failed);
            }
        }
    }
    nh_buf_unref(b);
    lua_pushinteger(L, delivered);
    if (failed)
        lua_pushvalue(L, 4);
    else
        lua_pushnil(L);
    return 2;
}

/* ---- slices the watchdog sees ---- */

/* resume(co, release, session, route, ...) -> true, finished, results... | false, false, err
 * coroutine.resume(co, ...) for a task that waited (task.lua's step), with what goes with it done
 * in the same call. First a new watchdog slice, so that each slice of a handler between waits has
 * a stall budget of its own and a stuck slice is named after the handler it continues (the
 * session's id and the route; session nil or false: none), not after the timer or completion that
 * resumed it. Then, when release is true (a dispatcher thread) and the coroutine returned, the
 * thread is handed back (as release_thread(co, true)). finished: it returned rather than yielded.
 * One C call where a resume after a wait took four (s:id(), a slice call, coroutine.resume,
 * coroutine.status), each a trace exit for the JIT. A failed coroutine keeps its frames (for its
 * traceback) and is not released. */
static int c_resume(lua_State *L) {
    luaL_checktype(L, 1, LUA_TTHREAD);
    nh_host_t *h = host(L);
    lua_State *T = lua_tothread(L, 1);
    int release = lua_toboolean(L, 2);
    uint64_t session = lua_isuserdata(L, 3) ? nh_lua_session_id(L, 3) : 0;
    size_t route_len = 0;
    const char *route = lua_type(L, 4) == LUA_TSTRING ? lua_tolstring(L, 4, &route_len) : NULL;
    int nargs = lua_gettop(L) - 4;
    if (nargs < 0) nargs = 0;
    int st = lua_status(T);
    if (T == L || (st != LUA_YIELD && (st != 0 || lua_gettop(T) == 0))) {
        lua_pushboolean(L, 0);
        lua_pushboolean(L, 0);
        lua_pushstring(L, T == L ? "cannot resume non-suspended coroutine"
                                 : "cannot resume dead coroutine");
        return 3;
    }
    if (!lua_checkstack(T, nargs)) return luaL_error(L, "resume: too many arguments");
    lua_xmove(L, T, nargs);
    nh_watchdog_slice(h->watchdog, session, route, route_len); /* copies the route */
    int r = lua_resume(T, nargs);
    if (r != 0 && r != LUA_YIELD) {
        lua_pushboolean(L, 0);
        lua_pushboolean(L, 0);
        lua_xmove(T, L, 1); /* the error value; T keeps its frames */
        return 3;
    }
    int n = lua_gettop(T);
    if (!lua_checkstack(L, n + 2)) {
        lua_settop(T, 0);
        return luaL_error(L, "resume: too many results");
    }
    lua_pushboolean(L, 1);
    lua_pushboolean(L, r == 0);
    lua_xmove(T, L, n);
    if (r == 0 && release) {
        lua_rawgeti(L, LUA_REGISTRYINDEX, h->threads_ref);
        lua_pushvalue(L, 1);
        lua_rawget(L, -2);
        int ours = lua_toboolean(L, -1);
        lua_pop(L, 2);
        if (ours) nh_host_release_thread(h, T, 1);
    }
    return n + 2;
}

/* release_thread(co, reusable): a dispatcher thread (host.h) that yielded — its handler waited —
 * has finished (reusable: true) or failed or been abandoned (false): task.lua hands it back. */
static int c_release_thread(lua_State *L) {
    luaL_checktype(L, 1, LUA_TTHREAD);
    nh_host_t *h = host(L);
    lua_State *T = lua_tothread(L, 1);
    if (T == L) return luaL_error(L, "release_thread: a thread cannot release itself");
    lua_rawgeti(L, LUA_REGISTRYINDEX, h->threads_ref);
    lua_pushvalue(L, 1);
    lua_rawget(L, -2);
    int ours = lua_toboolean(L, -1);
    lua_pop(L, 2);
    if (!ours) return luaL_error(L, "release_thread: not a dispatcher thread");
    nh_host_release_thread(h, T, lua_toboolean(L, 2));
    return 0;
}

/* ---- loop control ---- */

static const char running_key = 'r'; /* registry: true while c_run is inside uv_run */

static void set_running(lua_State *L, int on) {
    lua_pushlightuserdata(L, (void *)&running_key);
    lua_pushboolean(L, on);
    lua_rawset(L, LUA_REGISTRYINDEX);
}

/* run("once" | "nowait" | "default") -> true while the loop has work left.
 * uv_run is not reentrant: a handler or timer (called from inside the loop) that calls run()
 * gets an error instead of a corrupted loop. */
static int c_run(lua_State *L) {
    static const char *const modes[] = {"default", "once", "nowait", NULL};
    static const uv_run_mode uv_modes[] = {UV_RUN_DEFAULT, UV_RUN_ONCE, UV_RUN_NOWAIT};
    nh_host_t *h = host(L);
    int m = luaL_checkoption(L, 1, "once", modes);
    lua_pushlightuserdata(L, (void *)&running_key);
    lua_rawget(L, LUA_REGISTRYINDEX);
    int nested = lua_toboolean(L, -1);
    lua_pop(L, 1);
    if (nested) return luaL_error(L, "nano.core.run: called from inside the loop (a callback)");
    set_running(L, 1);
    nh_watchdog_mark_t mark; /* waiting for events is not a stuck call */
    nh_watchdog_loop_begin(h->watchdog, &mark);
    int alive = uv_run(h->loop, uv_modes[m]);
    nh_watchdog_loop_end(h->watchdog, &mark);
    set_running(L, 0);
    nh_conn_flush_all(h);
    lua_pushboolean(L, alive);
    return 1;
}

static int c_stop(lua_State *L) {
    nh_host_stop(host(L));
    return 0;
}

/* restart(): after stop() and the loop has drained, accept listen() calls again (nano.test). */
static int c_restart(lua_State *L) {
    nh_host_t *h = host(L);
    h->stopping = 0;
    nh_host_config_changed(h);
    return 0;
}

/* Registry references in use (luaL_ref): integer keys minus luaL_ref's free list, which it keeps
 * in the same table from key 0, minus the string cache's. Leak tests watch this return to its
 * baseline. */
int nh_lua_registry_refs(lua_State *L) {
    int keys = 0, free_slots = 0;
    lua_pushnil(L);
    while (lua_next(L, LUA_REGISTRYINDEX)) {
        lua_pop(L, 1);
        if (lua_type(L, -1) == LUA_TNUMBER && lua_tonumber(L, -1) >= 1) keys++;
    }
    /* The free list: t[0] is its head, each free slot holds the next one; the last free slot
     * holds nil (t[0] was empty when it was freed), so it is not a key and does not count. */
    lua_rawgeti(L, LUA_REGISTRYINDEX, 0);
    for (int ref = (int)lua_tointeger(L, -1), n = 0; ref > 0 && n <= keys; n++) {
        lua_pop(L, 1);
        lua_rawgeti(L, LUA_REGISTRYINDEX, ref);
        if (!lua_isnil(L, -1)) free_slots++;
        ref = (int)lua_tointeger(L, -1);
    }
    lua_pop(L, 1);
    /* the string cache's entries (at most NH_STRCACHE_SIZE, taken as routes and keys are first
     * seen) are not leaks: not counted, so that the baseline does not move with them */
    nh_host_t *h = nh_host_from_lua(L);
    int cached = h && h->strings ? h->strings->refs : 0;
    return keys - free_slots - cached;
}

static int c_stats(lua_State *L) {
    nh_host_t *h = host(L);
    lua_createtable(L, 0, 3);
    lua_pushinteger(L, h->nconns);
    lua_setfield(L, -2, "connections");
    lua_pushinteger(L, h->sessions.count);
    lua_setfield(L, -2, "sessions");
    int n = 0;
    for (nh_listener_t *l = h->listeners; l; l = l->next)
        n++;
    lua_pushinteger(L, n);
    lua_setfield(L, -2, "listeners");
    lua_pushnumber(L, (lua_Number)h->accept_failed); /* out of descriptors and other failures */
    lua_setfield(L, -2, "accept_failed");
    lua_pushinteger(L, nh_lua_core_timer_count(h));
    lua_setfield(L, -2, "timers");
    lua_pushnumber(L, (lua_Number)lua_gc(L, LUA_GCCOUNT, 0) * 1024 + lua_gc(L, LUA_GCCOUNTB, 0));
    lua_setfield(L, -2, "lua_memory");
    nh_lua_alloc_stats_t as = nh_lua_alloc_stats(L);
    lua_pushnumber(L, (lua_Number)as.slab_bytes);
    lua_setfield(L, -2, "lua_slab_bytes");
    lua_pushinteger(L, nh_lua_registry_refs(L));
    lua_setfield(L, -2, "lua_refs");
    nh_watchdog_stats_t ws;
    nh_watchdog_get_stats(h->watchdog, &ws);
    lua_pushnumber(L, (lua_Number)ws.stalls);
    lua_setfield(L, -2, "watchdog_stalls");
    lua_pushnumber(L, (lua_Number)ws.aborts);
    lua_setfield(L, -2, "watchdog_aborts");
    lua_pushnumber(L, (lua_Number)ws.memory_errors);
    lua_setfield(L, -2, "lua_memory_errors");
    return 1;
}

/* running() -> true inside a loop callback (blocking helpers such as nano.client's must not
 * run the loop from there) */
static int c_running(lua_State *L) {
    lua_pushlightuserdata(L, (void *)&running_key);
    lua_rawget(L, LUA_REGISTRYINDEX);
    lua_pushboolean(L, lua_toboolean(L, -1));
    return 1;
}

/* sessions() -> { session, ... }: every session of the host (nano.test finds a client's). */
static int c_sessions(lua_State *L) {
    nh_host_t *h = host(L);
    lua_createtable(L, (int)h->sessions.count, 0);
    int i = 0;
    for (nh_session_t *s = h->sessions.head; s; s = s->next) {
        nh_lua_push_session(L, s);
        lua_rawseti(L, -2, ++i);
    }
    return 1;
}

/* ---- logging ---- */

static int c_log(lua_State *L) {
    nh_watchdog_check(L); /* a compiled loop calling only nano.log.* is stopped here */
    int level = (int)luaL_checkinteger(L, 1);
    size_t len;
    const char *msg = luaL_checklstring(L, 2, &len);
    nh_log_text(level, msg, len); /* NULs and control bytes escaped (log.h) */
    return 0;
}

static int c_log_level(lua_State *L) {
    nh_watchdog_check(L); /* nano.log.* calls this first, also for lines that are filtered out */
    if (lua_gettop(L) >= 1) nh_log_set_level((int)luaL_checkinteger(L, 1));
    lua_pushinteger(L, nh_log_get_level());
    return 1;
}

static int open_core(lua_State *L) {
    static const luaL_Reg fns[] = {
        {"configure", c_configure},
        {"config", c_config},
        {"set_hook", c_set_hook},
        {"set_predecode", c_set_predecode},
        {"message_bytes", c_message_bytes},
        {"try_call", c_try_call},
        {"respond", c_respond},
        {"respond_value", c_respond_value},
        {"push_value", c_push_value},
        {"push", c_push},
        {"push_many", c_push_many},
        {"send_error", c_send_error},
        {"ffi_pushes", c_ffi_pushes},
        {"release_thread", c_release_thread},
        {"resume", c_resume},
        {"run", c_run},
        {"stop", c_stop},
        {"restart", c_restart},
        {"stats", c_stats},
        {"log", c_log},
        {"log_level", c_log_level},
        {"sessions", c_sessions},
        {"running", c_running},
        {NULL, NULL},
    };
    lua_newtable(L);
    luaL_register(L, NULL, fns);
    nh_lua_core_listen(L);  /* listen, unlisten, listener_tls: lua_listen.c */
    nh_lua_core_timers(L);  /* now, hrtime, advance, timer, stop_timers: lua_timer.c */
    nh_lua_open_fs(L);      /* watch, scandir: lua_fs.c */
    nh_lua_core_members(L); /* members_new, members_add, members_remove: lua_session.c */
    nh_lua_open_session(L);
    lua_setfield(L, -2, "session_methods");
    /* what nano's Lua checks before it hands a session to an FFI function (core.ffi) */
    luaL_getmetatable(L, NH_LUA_SESSION_MT);
    lua_setfield(L, -2, "session_metatable");
    lua_pushlightuserdata(L, (void *)&core_ffi);
    lua_setfield(L, -2, "ffi");
    lua_pushinteger(L, (lua_Integer)sizeof core_ffi);
    lua_setfield(L, -2, "ffi_size");
    lua_pushstring(L, NH_VERSION);
    lua_setfield(L, -2, "version");
    static const char *const levels[] = {"DEBUG", "INFO", "WARN", "ERROR"};
    for (int i = 0; i < 4; i++) {
        lua_pushinteger(L, i);
        lua_setfield(L, -2, levels[i]);
    }
    return 1;
}

void nh_lua_open(lua_State *L) {
    lua_getglobal(L, "package");
    lua_getfield(L, -1, "preload");
    lua_pushcfunction(L, open_core);
    lua_setfield(L, -2, "nano.core");
    lua_pushcfunction(L, nh_lua_open_codec);
    lua_setfield(L, -2, "nano.codec");
    lua_pushcfunction(L, nh_lua_open_tcp);
    lua_setfield(L, -2, "nano.tcp");
    lua_pushcfunction(L, nh_lua_open_json);
    lua_setfield(L, -2, "nano.json_codec");
    lua_pushcfunction(L, nh_lua_open_nats);
    lua_setfield(L, -2, "nano.nats_core");
    lua_pushcfunction(L, nh_lua_open_sqlite);
    lua_setfield(L, -2, "nano.sqlite_core");
    lua_pushcfunction(L, nh_lua_open_http);
    lua_setfield(L, -2, "nano.http_core");
    lua_pushcfunction(L, nh_lua_open_redis);
    lua_setfield(L, -2, "nano.redis_core");
    lua_pushcfunction(L, nh_lua_open_pg);
    lua_setfield(L, -2, "nano.pg_core");
    lua_pushcfunction(L, nh_lua_open_metrics);
    lua_setfield(L, -2, "nano.metrics_core");
    lua_pushcfunction(L, nh_lua_open_console);
    lua_setfield(L, -2, "nano.console_core");
    lua_pushcfunction(L, nh_lua_open_protobuf);
    lua_setfield(L, -2, "nano.protobuf_codec");
    lua_pop(L, 2);
}
