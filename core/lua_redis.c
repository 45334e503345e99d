/* `nano.redis_core`: one Redis connection (redis_client.c) as a Lua userdata, for
 * lua/nano/redis.lua, which adds URLs, AUTH/SELECT, waiting, timeouts and reconnects.
 *
 *   local c, err = rc.connect(host, port, unix_path_or_nil, function(event, a, b, c) end)
 *     ("connect", ok, err)        the TCP connection is up, or failed (then "gone" follows)
 *     ("reply", id, value, err)   the reply to command id; an error reply is nil and Redis's
 *                                 message; no reply (connection lost) is nil, "redis: ..."
 *     ("push", value)             a pub/sub message array
 *     ("gone", reason)            the last event: the connection is closed and freed
 *   c:command(id, arg1, ...) -> true | nil, err      (args: strings; numbers are sent as text)
 *   c:subscribe(arg1, ...)   -> true | nil, err      (replies arrive as "push")
 *   c:close()                pending commands get no reply event; "gone" follows
 *   rc.count()               connections not yet freed (leak checks)
 *
 * Replies: status and string → string, integer → number (exact up to 2^53), nil → nil at the top
 * and the null value (lightuserdata NULL, the same as nano.json.null) inside arrays, array →
 * table, an error inside an array → { err = message }.
 *
 * Events come only from the loop (hiredis's callbacks run from poll callbacks; after c:close()
 * only "gone", from a close callback), never inside a call from Lua. */
#include <stdlib.h>
#include <string.h>

#include <lauxlib.h>

#include "host.h"
#include "lua_binding.h"
#include "redis_client.h"

#define REDIS_MT "nano.redis.conn"
#define MAX_ARGS 1024

typedef struct rconn {
    nh_redis_t *c; /* NULL once gone */
    nh_host_t *h;
    int cb_ref;
    int self_ref;
} rconn_t;

typedef struct urconn {
    rconn_t *rc; /* NULL once freed */
} urconn_t;

static const char count_key = 'r';

static void count_add(lua_State *L, int d) {
    nh_lua_count_add(L, &count_key, d);
}

/* Pushes a reply; at depth > 0 nil is the null value and an error a table { err = msg }. */
static void push_reply(lua_State *L, const redisReply *r, int depth) {
    luaL_checkstack(L, 4, "redis reply nested too deeply");
    switch (r->type) {
    case REDIS_REPLY_STRING:
    case REDIS_REPLY_STATUS:
        lua_pushlstring(L, r->str, r->len);
        break;
    case REDIS_REPLY_INTEGER:
        lua_pushnumber(L, (lua_Number)r->integer);
        break;
    case REDIS_REPLY_ARRAY:
        lua_createtable(L, (int)r->elements, 0);
        for (size_t i = 0; i < r->elements; i++) {
            push_reply(L, r->element[i], depth + 1);
            lua_rawseti(L, -2, (int)i + 1);
        }
        break;
    case REDIS_REPLY_ERROR:
        lua_createtable(L, 0, 1);
        lua_pushlstring(L, r->str, r->len);
        lua_setfield(L, -2, "err");
        break;
    default: /* REDIS_REPLY_NIL */
        if (depth == 0)
            lua_pushnil(L);
        else
            lua_pushlightuserdata(L, NULL);
    }
}

/* Pushes the callback and the event name; returns 0 when there is no callback any more. */
static int begin_event(rconn_t *rc, const char *event) {
    lua_State *L = rc->h->L;
    if (rc->cb_ref == LUA_NOREF) return 0;
    lua_rawgeti(L, LUA_REGISTRYINDEX, rc->cb_ref);
    lua_pushstring(L, event);
    return 1;
}

static void ev_connect(nh_redis_t *c, void *data, int ok, const char *err) {
    (void)c;
    rconn_t *rc = data;
    if (!begin_event(rc, "connect")) return;
    lua_State *L = rc->h->L;
    lua_pushboolean(L, ok);
    if (err)
        lua_pushstring(L, err);
    else
        lua_pushnil(L);
    nh_host_call_lua(rc->h, 3, 0, "nano.redis connect");
}

/* Turning a reply into Lua values allocates, and an allocation can raise: the conversion runs
 * inside the protected call (deliver is the function nh_host_call_lua calls), never bare. */
typedef struct delivery {
    int cb_ref;
    int is_reply; /* "reply" (id, value, err) or "push" (value) */
    uint64_t id;
    const redisReply *reply;
    const char *err;
} delivery_t;

static int deliver(lua_State *L) {
    const delivery_t *d = lua_touserdata(L, 1);
    lua_rawgeti(L, LUA_REGISTRYINDEX, d->cb_ref);
    if (!d->is_reply) {
        lua_pushliteral(L, "push");
        push_reply(L, d->reply, 0);
        lua_call(L, 2, 0);
        return 0;
    }
    lua_pushliteral(L, "reply");
    lua_pushnumber(L, (lua_Number)d->id);
    if (!d->reply) {
        lua_pushnil(L);
        lua_pushfstring(L, "redis: connection lost: %s", d->err);
    } else if (d->reply->type == REDIS_REPLY_ERROR) {
        lua_pushnil(L);
        lua_pushlstring(L, d->reply->str, d->reply->len);
    } else {
        push_reply(L, d->reply, 0);
        lua_pushnil(L);
    }
    lua_call(L, 4, 0);
    return 0;
}

static void emit_delivery(rconn_t *rc, const delivery_t *d, const char *what) {
    lua_State *L = rc->h->L;
    if (rc->cb_ref == LUA_NOREF) return;
    lua_pushcfunction(L, deliver);
    lua_pushlightuserdata(L, (void *)d);
    nh_host_call_lua(rc->h, 1, 0, what);
}

static void ev_reply(nh_redis_t *c, void *data, uint64_t id, const redisReply *reply,
                     const char *err) {
    (void)c;
    rconn_t *rc = data;
    delivery_t d = {rc->cb_ref, 1, id, reply, err};
    emit_delivery(rc, &d, "nano.redis reply");
}

static void ev_push(nh_redis_t *c, void *data, const redisReply *reply) {
    (void)c;
    rconn_t *rc = data;
    delivery_t d = {rc->cb_ref, 0, 0, reply, NULL};
    emit_delivery(rc, &d, "nano.redis message");
}

static void ev_gone(nh_redis_t *c, void *data, const char *reason) {
    (void)c;
    rconn_t *rc = data;
    lua_State *L = rc->h->L;
    rc->c = NULL;
    if (begin_event(rc, "gone")) {
        lua_pushstring(L, reason);
        nh_host_call_lua(rc->h, 2, 0, "nano.redis closed");
    }
    lua_rawgeti(L, LUA_REGISTRYINDEX, rc->self_ref);
    urconn_t *u = lua_touserdata(L, -1);
    if (u) u->rc = NULL;
    lua_pop(L, 1);
    luaL_unref(L, LUA_REGISTRYINDEX, rc->self_ref);
    luaL_unref(L, LUA_REGISTRYINDEX, rc->cb_ref);
    count_add(L, -1);
    free(rc);
}

static const nh_redis_events_t events = {ev_connect, ev_reply, ev_push, ev_gone};

/* connect(host, port, path|nil, on_event) -> conn | nil, err */
static int l_connect(lua_State *L) {
    nh_host_t *h = nh_host_from_lua(L);
    if (!h) return luaL_error(L, "nano.redis: no host in this Lua state");
    const char *host = luaL_checkstring(L, 1);
    lua_Integer port = luaL_checkinteger(L, 2);
    const char *path = luaL_optstring(L, 3, NULL);
    luaL_checktype(L, 4, LUA_TFUNCTION);
    if (!path) luaL_argcheck(L, port > 0 && port <= 65535, 2, "port out of range");

    rconn_t *rc = calloc(1, sizeof *rc);
    if (!rc) return luaL_error(L, "out of memory");
    rc->h = h;
    rc->cb_ref = rc->self_ref = LUA_NOREF;
    char err[200];
    if (nh_redis_connect(h->loop, host, (int)port, path, &events, rc, &rc->c, err, sizeof err) <
        0) {
        free(rc);
        lua_pushnil(L);
        lua_pushstring(L, err);
        return 2;
    }
    urconn_t *u = lua_newuserdata(L, sizeof *u);
    u->rc = rc;
    luaL_getmetatable(L, REDIS_MT);
    lua_setmetatable(L, -2);
    lua_pushvalue(L, 4);
    rc->cb_ref = luaL_ref(L, LUA_REGISTRYINDEX);
    lua_pushvalue(L, -1);
    rc->self_ref = luaL_ref(L, LUA_REGISTRYINDEX);
    count_add(L, 1);
    return 1;
}

static rconn_t *check_conn(lua_State *L) {
    return ((urconn_t *)luaL_checkudata(L, 1, REDIS_MT))->rc;
}

/* Collects args first..top as strings; returns argc, or -1 with a message pushed. */
static int collect(lua_State *L, int first, const char **argv, size_t *lens) {
    int argc = lua_gettop(L) - first + 1;
    if (argc < 1) {
        lua_pushstring(L, "expected a command name");
        return -1;
    }
    if (argc > MAX_ARGS) {
        lua_pushfstring(L, "too many arguments (%d; at most %d per call)", argc, MAX_ARGS);
        return -1;
    }
    for (int i = 0; i < argc; i++) {
        int t = lua_type(L, first + i);
        if (t != LUA_TSTRING && t != LUA_TNUMBER) {
            lua_pushfstring(L, "argument %d is a %s (expected a string or a number)", i + 1,
                            lua_typename(L, t));
            return -1;
        }
        argv[i] = lua_tolstring(L, first + i, &lens[i]);
    }
    return argc;
}

static int send_common(lua_State *L, int sub) {
    rconn_t *rc = check_conn(L);
    int first = sub ? 2 : 3;
    uint64_t id = 0;
    if (!sub) {
        lua_Number n = luaL_checknumber(L, 2);
        luaL_argcheck(L, n >= 0 && n < 9007199254740992.0, 2, "id out of range");
        id = (uint64_t)n;
    }
    if (!rc || !rc->c) {
        lua_pushnil(L);
        lua_pushliteral(L, "connection closed");
        return 2;
    }
    const char *argv[MAX_ARGS];
    size_t lens[MAX_ARGS];
    int argc = collect(L, first, argv, lens);
    if (argc < 0) {
        lua_pushnil(L);
        lua_insert(L, -2);
        return 2;
    }
    char err[200];
    int r = sub ? nh_redis_subscribe(rc->c, argc, argv, lens, err, sizeof err)
                : nh_redis_command(rc->c, argc, argv, lens, id, err, sizeof err);
    if (r < 0) {
        lua_pushnil(L);
        lua_pushstring(L, err);
        return 2;
    }
    lua_pushboolean(L, 1);
    return 1;
}

static int c_command(lua_State *L) {
    return send_common(L, 0);
}
static int c_subscribe(lua_State *L) {
    return send_common(L, 1);
}

static int c_close(lua_State *L) {
    rconn_t *rc = check_conn(L);
    if (rc && rc->c) nh_redis_close(rc->c);
    return 0;
}

static int c_tostring(lua_State *L) {
    rconn_t *rc = check_conn(L);
    lua_pushstring(L, rc && rc->c ? "nano.redis connection" : "nano.redis connection (closed)");
    return 1;
}

static int l_count(lua_State *L) {
    return nh_lua_count_push(L, &count_key);
}

int nh_lua_open_redis(lua_State *L) {
    static const luaL_Reg methods[] = {
        {"command", c_command},
        {"subscribe", c_subscribe},
        {"close", c_close},
        {NULL, NULL},
    };
    static const luaL_Reg fns[] = {{"connect", l_connect}, {"count", l_count}, {NULL, NULL}};
    static const luaL_Reg meta[] = {{"__tostring", c_tostring}, {NULL, NULL}};
    return nh_lua_class_module(L, REDIS_MT, methods, meta, fns);
}
