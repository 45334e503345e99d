/* `nano.nats_core`: a NATS connection (nats_link.c) for Lua, under lua/nano/cluster.lua.
 * Mechanism only: publish, subscribe, and two callbacks on the loop thread.
 *
 *   local link = nats.connect(url, name, on_msg, on_event [, max_queued]) -> link | nil, err
 *     on_msg(sub_id, subject, reply_or_nil, data)     on_event(name, text)
 *     name: "connected" | "disconnected" | "reconnected" | "closed" | "error"
 *   link:publish(subject, data [, reply]) -> true | nil, err
 *   link:subscribe(subject [, queue]) -> sub_id | nil, err      link:unsubscribe(sub_id)
 *   link:connected() -> bool      link:counts() -> delivered, slow_consumer_errors
 *   link:close()                  (no callback runs after it)
 *
 * The callbacks are registry refs held by the link until close (or until the host is reset, when
 * nano.test closes every link it knows of through the Lua side). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <lauxlib.h>

#include "host.h"
#include "lua_binding.h"
#include "nats_link.h"

#define NATS_MT "nano.nats.link"

typedef struct ulink {
    nh_nats_t *n; /* NULL once closed */
    nh_host_t *h;
    int msg_ref, event_ref;
} ulink_t;

static void on_msg(void *ud, uint64_t sub_id, const char *subject, const char *reply,
                   const uint8_t *data, size_t len) {
    ulink_t *u = ud;
    lua_State *L = u->h->L;
    lua_rawgeti(L, LUA_REGISTRYINDEX, u->msg_ref);
    lua_pushnumber(L, (lua_Number)sub_id);
    lua_pushstring(L, subject);
    if (reply)
        lua_pushstring(L, reply);
    else
        lua_pushnil(L);
    lua_pushlstring(L, (const char *)data, len);
    nh_host_call_lua(u->h, 4, 0, "cluster message");
}

static void on_event(void *ud, int event, const char *text) {
    static const char *const names[] = {"",       "connected", "disconnected", "reconnected",
                                        "closed", "error"};
    ulink_t *u = ud;
    lua_State *L = u->h->L;
    lua_rawgeti(L, LUA_REGISTRYINDEX, u->event_ref);
    lua_pushstring(L, names[event]);
    lua_pushstring(L, text);
    nh_host_call_lua(u->h, 2, 0, "cluster event");
}

static int l_connect(lua_State *L) {
    nh_host_t *h = nh_host_from_lua(L);
    const char *url = luaL_checkstring(L, 1);
    const char *name = luaL_optstring(L, 2, NULL);
    luaL_checktype(L, 3, LUA_TFUNCTION);
    luaL_checktype(L, 4, LUA_TFUNCTION);
    ulink_t *u = lua_newuserdata(L, sizeof *u);
    memset(u, 0, sizeof *u);
    u->h = h;
    u->msg_ref = u->event_ref = LUA_NOREF;
    luaL_getmetatable(L, NATS_MT);
    lua_setmetatable(L, -2);
    nh_nats_opts_t o = {.url = url, .name = name, .max_queued = (size_t)luaL_optnumber(L, 5, 0)};
    nh_nats_callbacks_t cb = {.on_msg = on_msg, .on_event = on_event, .ud = u};
    char err[256];
    if (nh_nats_open(h->loop, &o, &cb, &u->n, err, sizeof err) != 0) {
        lua_pushnil(L);
        lua_pushstring(L, err);
        return 2;
    }
    lua_pushvalue(L, 3);
    u->msg_ref = luaL_ref(L, LUA_REGISTRYINDEX);
    lua_pushvalue(L, 4);
    u->event_ref = luaL_ref(L, LUA_REGISTRYINDEX);
    return 1;
}

static ulink_t *check_open(lua_State *L) {
    ulink_t *u = luaL_checkudata(L, 1, NATS_MT);
    if (!u->n) luaL_error(L, "nats: the connection is closed");
    return u;
}

static int m_publish(lua_State *L) {
    ulink_t *u = check_open(L);
    const char *subject = luaL_checkstring(L, 2);
    size_t len;
    const char *data = luaL_checklstring(L, 3, &len);
    const char *reply = luaL_optstring(L, 4, NULL);
    char err[256];
    if (nh_nats_publish(u->n, subject, reply, data, len, err, sizeof err) != 0) {
        lua_pushnil(L);
        lua_pushstring(L, err);
        return 2;
    }
    lua_pushboolean(L, 1);
    return 1;
}

static int m_subscribe(lua_State *L) {
    ulink_t *u = check_open(L);
    const char *subject = luaL_checkstring(L, 2);
    const char *queue = luaL_optstring(L, 3, NULL);
    uint64_t id;
    char err[256];
    if (nh_nats_subscribe(u->n, subject, queue, &id, err, sizeof err) != 0) {
        lua_pushnil(L);
        lua_pushstring(L, err);
        return 2;
    }
    lua_pushnumber(L, (lua_Number)id);
    return 1;
}

static int m_unsubscribe(lua_State *L) {
    ulink_t *u = check_open(L);
    nh_nats_unsubscribe(u->n, (uint64_t)luaL_checknumber(L, 2));
    return 0;
}

static int m_connected(lua_State *L) {
    ulink_t *u = luaL_checkudata(L, 1, NATS_MT);
    lua_pushboolean(L, u->n && nh_nats_connected(u->n));
    return 1;
}

static int m_counts(lua_State *L) {
    ulink_t *u = luaL_checkudata(L, 1, NATS_MT);
    uint64_t delivered = 0, slow = 0;
    if (u->n) nh_nats_counts(u->n, &delivered, &slow);
    lua_pushnumber(L, (lua_Number)delivered);
    lua_pushnumber(L, (lua_Number)slow);
    return 2;
}

static void link_close(lua_State *L, ulink_t *u) {
    if (u->n) nh_nats_close(u->n);
    u->n = NULL;
    luaL_unref(L, LUA_REGISTRYINDEX, u->msg_ref);
    luaL_unref(L, LUA_REGISTRYINDEX, u->event_ref);
    u->msg_ref = u->event_ref = LUA_NOREF;
}

static int m_close(lua_State *L) {
    link_close(L, luaL_checkudata(L, 1, NATS_MT));
    return 0;
}

/* A link the script dropped without closing: closed when collected (its refs pin the callbacks,
 * not the userdata, so this does run). */
static int m_gc(lua_State *L) {
    link_close(L, luaL_checkudata(L, 1, NATS_MT));
    return 0;
}

int nh_lua_open_nats(lua_State *L) {
    static const luaL_Reg methods[] = {
        {"publish", m_publish},
        {"subscribe", m_subscribe},
        {"unsubscribe", m_unsubscribe},
        {"connected", m_connected},
        {"counts", m_counts},
        {"close", m_close},
        {NULL, NULL},
    };
    static const luaL_Reg fns[] = {{"connect", l_connect}, {NULL, NULL}};
    static const luaL_Reg meta[] = {{"__gc", m_gc}, {NULL, NULL}};
    return nh_lua_class_module(L, NATS_MT, methods, meta, fns);
}
