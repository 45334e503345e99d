/* The session events (session.h) implemented by Lua: the hooks lua/nano/init.lua sets with
 * core.set_hook ("dispatch", "handshake", "closed", "origin") are called from here, each through
 * nh_host_call_lua / nh_host_call_handler (protected, with a traceback, logged). session.c and the
 * transports know only nh_session_events_t; this file is where they meet the Lua stack. */
#include <stdio.h>

#include "host.h"
#include "log.h"
#include "lua_binding.h"

/* registry key of the last handshake reply: the string stays alive (and its bytes valid) until
 * the next handshake, as nh_session_handshake_t promises */
static const char reply_key = 'r';

static int on_handshake(void *ud, nh_session_t *s, const uint8_t *body, size_t len,
                        nh_session_handshake_t *out) {
    nh_host_t *h = s->host;
    (void)ud;
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

/* The runner (lua/nano/task.lua, task._new_runner): a coroutine the dispatch hook runs in, resumed
 * from here with each message, so that a handler can wait and a message costs one lua_resume
 * (no pcall, no coroutine.resume from Lua, no task bookkeeping). Resumed with (hook, message...),
 * it yields the DONE marker when the hook returned; a new coroutine (the next runner) when the
 * handler waits, keeping this one for the waiting task. Kept per Lua state (a userdata under a
 * registry key; the coroutine and the marker in its environment table, so no luaL_ref outlives
 * the host); without nano.task (a script on nano.core alone) the hook is called by pcall. */
typedef struct runner {
    nh_host_t *h;
    lua_State *co;    /* NULL: none yet (or the last one raised) */
    const void *done; /* the DONE marker's address (NULL: not known yet) */
    int unavailable;  /* nano.task has no runner: pcall the hook */
} runner_t;

static const char runner_key = 'R';

static runner_t *runner_of(lua_State *L) {
    lua_pushlightuserdata(L, (void *)&runner_key);
    lua_rawget(L, LUA_REGISTRYINDEX);
    runner_t *r = lua_touserdata(L, -1);
    lua_pop(L, 1);
    if (r) return r;
    r = lua_newuserdata(L, sizeof *r); /* lives as long as the Lua state */
    *r = (runner_t){0};
    lua_createtable(L, 2, 0); /* [1] the runner coroutine, [2] the DONE marker: kept alive */
    lua_setfenv(L, -2);
    lua_pushlightuserdata(L, (void *)&runner_key);
    lua_insert(L, -2);
    lua_rawset(L, LUA_REGISTRYINDEX);
    return r;
}

/* Keeps the value at idx (a thread, or nil) as the runner. */
static void runner_set(lua_State *L, runner_t *r, int idx) {
    idx = idx < 0 ? lua_gettop(L) + idx + 1 : idx;
    lua_pushlightuserdata(L, (void *)&runner_key);
    lua_rawget(L, LUA_REGISTRYINDEX);
    lua_getfenv(L, -1);
    lua_pushvalue(L, idx);
    lua_rawseti(L, -2, 1);
    lua_pop(L, 2);
    r->co = lua_tothread(L, idx);
}

static void runner_drop(lua_State *L, runner_t *r) {
    lua_pushnil(L);
    runner_set(L, r, -1);
    lua_pop(L, 1);
}

/* A runner from nano.task (package.loaded["nano.task"]._new_runner), or NULL. */
static lua_State *runner_get(nh_host_t *h, runner_t *r) {
    if (r->co || r->unavailable) return r->co;
    lua_State *L = h->L;
    int top = lua_gettop(L);
    lua_getfield(L, LUA_REGISTRYINDEX, "_LOADED");
    if (lua_istable(L, -1)) lua_getfield(L, -1, "nano.task");
    if (lua_istable(L, -1)) lua_getfield(L, -1, "_new_runner");
    if (!lua_isfunction(L, -1)) {
        lua_settop(L, top); /* not loaded (yet): ask again next time */
        return NULL;
    }
    if (nh_host_call_lua(h, 0, 2, "dispatch runner") != 0 || !lua_isthread(L, -2)) {
        r->unavailable = 1;
        lua_settop(L, top);
        return NULL;
    }
    if (!r->done) {
        r->done = lua_topointer(L, -1);
        lua_pushlightuserdata(L, (void *)&runner_key);
        lua_rawget(L, LUA_REGISTRYINDEX);
        lua_getfenv(L, -1);
        lua_pushvalue(L, -3);
        lua_rawseti(L, -2, 2);
        lua_pop(L, 2);
    }
    runner_set(L, r, -2);
    lua_settop(L, top);
    return r->co;
}

static void push_message(lua_State *L, nh_host_t *h, nh_session_t *s, const nh_msg_t *m) {
    lua_rawgeti(L, LUA_REGISTRYINDEX, h->hooks[NH_HOOK_DISPATCH]);
    nh_lua_push_session(L, s);
    lua_pushinteger(L, m->type);
    lua_pushnumber(L, (lua_Number)m->id);
    if (m->route_compressed)
        lua_pushinteger(L, m->route_code);
    else
        lua_pushlstring(L, m->route, m->route_len);
    lua_pushlstring(L, (const char *)m->payload, m->payload_len);
    lua_pushinteger(L, m->flags);
}

/* The message through the runner: 0, or -1 when the hook raised (logged). */
static int run_message(nh_host_t *h, runner_t *r, lua_State *co, nh_session_t *s, const nh_msg_t *m,
                       const char *route, size_t route_len) {
    lua_State *L = h->L;
    push_message(co, h, s, m);
    nh_watchdog_mark_t mark;
    nh_watchdog_enter(h->watchdog, &mark, "dispatch", s->id, route, route_len);
    int st = lua_resume(co, 7);
    nh_watchdog_leave(h->watchdog, &mark);
    if (st == LUA_YIELD) {
        int n = lua_gettop(co);
        if (n >= 1 && lua_topointer(co, 1) == r->done) {
            /* the usual: the hook returned */
        } else if (n >= 1 && lua_isthread(co, 1)) { /* a handler waits: the next runner */
            lua_xmove(co, L, 1);
            runner_set(L, r, -1);
            lua_pop(L, 1);
        } else { /* yielded by other means: that coroutine is not ours to resume */
            runner_drop(L, r);
        }
        lua_settop(co, 0);
        return 0;
    }
    /* the hook raised (outside a handler's protection) or returned from the runner's loop */
    if (st != 0) {
        const char *err = lua_tostring(co, -1);
        luaL_traceback(L, co, err ? err : "(no message)", 0);
        nh_log(NH_LOG_ERROR, "dispatch: %s", lua_tostring(L, -1));
        lua_pop(L, 1);
    }
    runner_drop(L, r);
    return st != 0 ? -1 : 0;
}

static int on_message(void *ud, nh_session_t *s, const nh_msg_t *m) {
    nh_host_t *h = s->host;
    lua_State *L = h->L;
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
    runner_t *r = ud;
    lua_State *co = runner_get(h, r);
    if (co) return run_message(h, r, co, s, m, route, route_len);
    push_message(L, h, s, m);
    return nh_host_call_handler(h, 6, 0, "dispatch", s->id, route, route_len);
}

static void on_closed(void *ud, nh_session_t *s) {
    nh_host_t *h = s->host;
    (void)ud;
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

static int on_check_origin(void *ud, int listener_id, const char *origin) {
    nh_host_t *h = ((runner_t *)ud)->h;
    lua_State *L = h->L;
    lua_rawgeti(L, LUA_REGISTRYINDEX, h->hooks[NH_HOOK_ORIGIN]);
    lua_pushinteger(L, listener_id);
    lua_pushstring(L, origin);
    if (nh_host_call_lua(h, 2, 1, "check_origin") != 0) return 0;
    int ok = lua_toboolean(L, -1);
    lua_pop(L, 1);
    return ok;
}

void nh_lua_dispatch_install(nh_host_t *h) {
    runner_t *r = runner_of(h->L);
    r->h = h;
    h->events_ud = r;
    h->events.handshake = h->hooks[NH_HOOK_HANDSHAKE] != LUA_NOREF ? on_handshake : NULL;
    h->events.message = h->hooks[NH_HOOK_DISPATCH] != LUA_NOREF ? on_message : NULL;
    h->events.closed = on_closed; /* also detaches the userdata when there is no closed hook */
    h->events.check_origin = h->hooks[NH_HOOK_ORIGIN] != LUA_NOREF ? on_check_origin : NULL;
}
