/* The session events (session.h) implemented by Lua: the hooks lua/nano/init.lua sets with
 * core.set_hook ("dispatch", "handshake", "closed") are called from here, each through
 * nh_host_call_lua / nh_host_call_handler (protected, with a traceback, logged). session.c and the
 * transports know only nh_session_events_t; this file is where they meet the Lua stack. */
#include <stdio.h>
#include <string.h>

#include "host.h"
#include "log.h"
#include "lua_binding.h"
#include "lua_strcache.h"

/* registry key of the last handshake reply: the string stays alive (and its bytes valid) until
 * the next handshake, as nh_session_handshake_t promises */
static const char reply_key = 'r';

static int on_handshake(void *ud, nh_session_t *s, const uint8_t *body, size_t len,
                        nh_session_handshake_t *out) {
    nh_host_t *h = ud;
    lua_State *L = h->L;
    lua_rawgeti(L, LUA_REGISTRYINDEX, h->hooks[NH_HOOK_HANDSHAKE]);
    nh_lua_push_session(L, s);
    lua_pushlstring(L, (const char *)body, len);
    if (nh_host_call_lua(h, 2, 2, "handshake") != 0) return -1;
    size_t rlen = 0;
    const char *resp = lua_tolstring(L, -2, &rlen); /* a number becomes its string in place */
    out->accepted = lua_toboolean(L, -1);
    out->reply = (const uint8_t *)resp;
    out->reply_len = rlen;
    lua_pushlightuserdata(L, (void *)&reply_key);
    lua_pushvalue(L, -3);
    lua_rawset(L, LUA_REGISTRYINDEX);
    lua_pop(L, 2);
    return 0;
}

struct returned_ctx {
    nh_session_t *s;
    uint64_t id;
};

/* The dispatcher returned without waiting: its results are the request's response, if any; -1
 * when it could not be answered (session.c then answers 500, as for a failed dispatcher) */
static int on_returned(nh_host_t *h, lua_State *T, void *ctx) {
    struct returned_ctx *rc = ctx;
    return nh_lua_send_returned(h, T, rc->s, rc->id);
}

/* The message type the protobuf core types table has for m's route (the string at route_at),
 * through h->pb_routes: a route seen before costs no Lua call. NULL: none. */
static const void *pb_route_type(nh_host_t *h, lua_State *L, const nh_msg_t *m, int route_at) {
    size_t len = m->route_len;
    struct nh_pb_route_slot *slot = NULL;
    if (len && len <= sizeof slot->route) {
        slot = &h->pb_routes[(len + (uint8_t)m->route[len - 1] + (uint8_t)m->route[len / 2]) & 15];
        if (slot->len == len && memcmp(slot->route, m->route, len) == 0) return slot->type;
    }
    lua_rawgeti(L, LUA_REGISTRYINDEX, h->predecode_pb_ref);
    const void *type = nh_lua_pb_core_type(L, lua_gettop(L), route_at);
    lua_pop(L, 1);
    if (slot) {
        slot->type = type;
        slot->len = (uint8_t)len;
        memcpy(slot->route, m->route, len);
    }
    return type;
}

/* Pushes the payload's value as the serializer reads it, decoded here (core.set_predecode), and
 * returns 1; 0 with nothing pushed when it is not: JSON that is not plain, a gzip'd payload, a
 * protobuf request whose route has no type here (or a notify: its type may differ; or a route
 * code), bytes that do not decode. The dispatcher then decodes the bytes itself. */
static int predecode(nh_host_t *h, lua_State *L, const nh_msg_t *m, int route_at) {
    if (m->flags & NH_MSG_FLAG_GZIP) return 0;
    if (h->predecode_json)
        return nh_lua_json_decode(L, (const char *)m->payload, m->payload_len, h->strings);
    if (h->predecode_pb_ref == LUA_NOREF || m->type != NH_MSG_REQUEST || m->route_compressed)
        return 0;
    const void *type = pb_route_type(h, L, m, route_at);
    if (!type) return 0;
    lua_rawgeti(L, LUA_REGISTRYINDEX, h->predecode_pb_names_ref);
    int names = lua_gettop(L);
    if (!nh_lua_pb_core_decode(L, names, type, m->payload, m->payload_len)) {
        lua_pop(L, 1);
        return 0;
    }
    lua_replace(L, names); /* the table, where the names were */
    return 1;
}

static int on_message(void *ud, nh_session_t *s, const nh_msg_t *m) {
    nh_host_t *h = ud;
    /* On a thread of its own (host.h): the handler may wait without a coroutine.resume in Lua */
    lua_State *L = nh_host_handler_thread(h);
    if (!L) {
        nh_log(NH_LOG_ERROR, "session %llu: dispatch: out of memory", (unsigned long long)s->id);
        return -1;
    }
    lua_rawgeti(L, LUA_REGISTRYINDEX, h->hooks[NH_HOOK_DISPATCH]);
    nh_lua_push_session(L, s);
    lua_pushinteger(L, m->type);
    lua_pushnumber(L, (lua_Number)m->id);
    if (m->route_compressed)
        lua_pushinteger(L, m->route_code);
    else
        nh_strcache_push(h->strings, L, m->route, m->route_len);
    int bytes_at = lua_gettop(L) + 1;
    lua_pushboolean(L, 0); /* the bytes: see below */
    lua_pushinteger(L, m->flags);
    lua_pushthread(L); /* the thread itself: Lua's coroutine.running() is not compiled */
    int nargs = 8;
    /* The payload's value as the serializer reads it, when the dispatcher asked for it (its
     * serializer is JSON, or protobuf: predecode): the decoder is called here rather than from
     * Lua, where each call of a C function costs the JIT's trace an exit (docs/benchmarks.md).
     * nil when it is not decoded here: the dispatcher then decodes the bytes itself, and it also
     * does when the handler turns out not to speak that. With the value, the bytes are false: a
     * string of them is made only if the dispatcher asks (core.message_bytes: a pipeline, a raw
     * handler, a handler with another serializer, a queued message), not one per message for the
     * GC. */
    if (!predecode(h, L, m, bytes_at - 1)) {
        lua_pushnil(L);
        lua_pushlstring(L, (const char *)m->payload, m->payload_len);
        lua_replace(L, bytes_at);
    }
    /* The Lua dispatcher protects each handler itself and answers with an error response; this
     * pcall only catches a failure of the dispatcher. The route is for the watchdog's log. */
    char code[8];
    const char *route = m->route;
    size_t route_len = m->route_len;
    if (m->route_compressed) { /* "#<code>", without snprintf's cost on every message */
        char digits[5];
        size_t n = 0;
        unsigned v = m->route_code;
        do
            digits[n++] = (char)('0' + v % 10);
        while ((v /= 10) != 0);
        code[0] = '#';
        for (size_t i = 0; i < n; i++)
            code[1 + i] = digits[n - 1 - i];
        route_len = n + 1;
        route = code;
    }
    /* core.message_bytes' message while this thread runs it (a handler may run the loop, e.g. a
     * spec's server:poll(), and dispatch another message on another thread meanwhile) */
    lua_State *prev_thread = h->msg_thread;
    const uint8_t *prev_bytes = h->msg_bytes;
    size_t prev_len = h->msg_len;
    h->msg_thread = L;
    h->msg_bytes = m->payload;
    h->msg_len = m->payload_len;
    /* A request to a hook that may return its response (core.set_hook's on_unsent): told so by
     * a ninth argument, and what it returns is sent once it has (returned() below). */
    struct returned_ctx rc = {s, m->id};
    nh_returned_fn returned = NULL;
    if (m->type == NH_MSG_REQUEST && h->hooks[NH_HOOK_UNSENT] != LUA_NOREF) {
        lua_pushboolean(L, 1);
        nargs++;
        returned = on_returned;
    }
    int r = nh_host_resume_handler(h, L, nargs, "dispatch", s->id, route, route_len, returned, &rc);
    h->msg_thread = prev_thread;
    h->msg_bytes = prev_bytes;
    h->msg_len = prev_len;
    return r;
}

static void on_closed(void *ud, nh_session_t *s) {
    nh_host_t *h = ud;
    if (!s->binding_ref) return; /* Lua never saw it */
    lua_State *L = h->L;
    if (h->hooks[NH_HOOK_CLOSED] != LUA_NOREF) {
        lua_rawgeti(L, LUA_REGISTRYINDEX, h->hooks[NH_HOOK_CLOSED]);
        nh_lua_push_session(L, s);
        char what[64];
        snprintf(what, sizeof what, "session %llu closed hook", (unsigned long long)s->id);
        nh_host_call_lua(h, 1, 0, what);
    }
    nh_lua_session_detach(L, s);
}

void nh_lua_dispatch_install(nh_host_t *h) {
    h->events_ud = h;
    h->events.handshake = h->hooks[NH_HOOK_HANDSHAKE] != LUA_NOREF ? on_handshake : NULL;
    h->events.message = h->hooks[NH_HOOK_DISPATCH] != LUA_NOREF ? on_message : NULL;
    h->events.closed = on_closed; /* also detaches the userdata when there is no closed hook */
}
