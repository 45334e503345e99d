/* lua_call — the one way the core calls into Lua, and the Lua state's link to its host.
 *
 * Everything here is the Lua side of host.h: nh_host_call_lua / nh_host_call_handler (a protected
 * call with a traceback, under the watchdog), the threads messages run on
 * (nh_host_handler_thread / nh_host_resume_handler / nh_host_release_thread), the host of a Lua
 * state (nh_host_from_lua), and nh_lua_host_attach / detach, which tie a host and a Lua state
 * together: registry entries, hooks, the watchdog (lua_watchdog.c), and the host's per-turn and
 * configuration callbacks that reach it. host.c itself knows nothing of Lua. */
#include <stdlib.h>

#include <lauxlib.h>

#include "host.h"
#include "log.h"
#include "lua_binding.h"
#include "lua_strcache.h"

static const char host_key = 'h'; /* registry key: its address is unique */

/* The host of the process's only Lua state, when there is one (always, outside some tests):
 * every nano.core function asks for its host, and the registry lookup below costs ~200
 * instructions a call. With two hosts with Lua at once, the lookup decides. */
static nh_host_t *sole_host;
static int lua_hosts;

nh_host_t *nh_host_sole(void) {
    return sole_host;
}

nh_host_t *nh_host_from_lua(lua_State *L) {
    if (sole_host) return sole_host;
    lua_pushlightuserdata(L, (void *)&host_key);
    lua_rawget(L, LUA_REGISTRYINDEX);
    nh_host_t *h = lua_touserdata(L, -1);
    lua_pop(L, 1);
    return h;
}

static int traceback(lua_State *L) {
    const char *msg = lua_tostring(L, 1);
    if (!msg) {
        if (luaL_callmeta(L, 1, "__tostring") && lua_type(L, -1) == LUA_TSTRING) return 1;
        msg = lua_pushfstring(L, "(error object is a %s value)", luaL_typename(L, 1));
    }
    lua_getglobal(L, "debug");
    lua_getfield(L, -1, "traceback");
    lua_pushstring(L, msg);
    lua_pushinteger(L, 2);
    lua_call(L, 2, 1);
    return 1;
}

int nh_host_call_handler(nh_host_t *h, int nargs, int nres, const char *what, uint64_t session,
                         const char *route, size_t route_len) {
    lua_State *L = h->L;
    int base = lua_gettop(L) - nargs; /* the function's index */
    lua_rawgeti(L, LUA_REGISTRYINDEX, h->traceback_ref);
    lua_insert(L, base);
    nh_watchdog_mark_t mark;
    nh_watchdog_enter(h->watchdog, &mark, what, session, route, route_len);
    int r = lua_pcall(L, nargs, nres, base);
    nh_watchdog_leave(h->watchdog, &mark);
    if (r != 0) {
        const char *err = lua_tostring(L, -1);
        nh_log(NH_LOG_ERROR, "%s: %s", what, err ? err : "(no message)");
        lua_settop(L, base - 1);
        return -1;
    }
    lua_remove(L, base);
    return 0;
}

/* Keeps a thread whose function has returned for the next message; 0 when the idle list is full
 * (or cannot grow): the caller forgets the thread then. */
static int keep_idle(nh_host_t *h, lua_State *T) {
    if (h->nidle_threads == h->idle_cap) {
        if (h->idle_cap == NH_IDLE_THREADS) return 0;
        int cap = h->idle_cap ? h->idle_cap * 2 : 64;
        lua_State **a = realloc(h->idle_threads, (size_t)cap * sizeof *a);
        if (!a) return 0;
        h->idle_threads = a;
        h->idle_cap = cap;
    }
    lua_settop(T, 0);
    h->idle_threads[h->nidle_threads++] = T;
    return 1;
}

lua_State *nh_host_handler_thread(nh_host_t *h) {
    if (h->nidle_threads) return h->idle_threads[--h->nidle_threads];
    lua_State *L = h->L;
    if (!lua_checkstack(L, 3)) return NULL;
    lua_rawgeti(L, LUA_REGISTRYINDEX, h->threads_ref);
    lua_State *T = lua_newthread(L);
    lua_pushboolean(L, 1);
    lua_rawset(L, -3); /* threads[T] = true: Lua's GC keeps it while the core may resume it */
    lua_pop(L, 1);
    return T;
}

void nh_host_release_thread(nh_host_t *h, lua_State *T, int reusable) {
    if (reusable && lua_status(T) == 0 && keep_idle(h, T)) return;
    lua_State *L = h->L;
    lua_rawgeti(L, LUA_REGISTRYINDEX, h->threads_ref);
    lua_pushthread(T);
    lua_xmove(T, L, 1);
    lua_pushnil(L);
    lua_rawset(L, -3);
    lua_pop(L, 1);
}

int nh_host_resume_handler(nh_host_t *h, lua_State *T, int nargs, const char *what,
                           uint64_t session, const char *route, size_t route_len,
                           nh_returned_fn returned, void *ctx) {
    nh_watchdog_mark_t mark;
    nh_watchdog_enter(h->watchdog, &mark, what, session, route, route_len);
    int r = lua_resume(T, nargs);
    nh_watchdog_leave(h->watchdog, &mark);
    if (r == 0) {
        int rr = returned && lua_gettop(T) > 0 ? returned(h, T, ctx) : 0;
        nh_host_release_thread(h, T, 1); /* idle again (or forgotten when the list is full) */
        return rr;
    }
    if (r == LUA_YIELD) return 0; /* Lua resumes it and releases it (task.lua) */
    /* The error's traceback, from the dead thread's frames (kept after the error). */
    lua_State *L = h->L;
    lua_getglobal(L, "debug");
    if (!lua_istable(L, -1)) { /* no debug library: the error alone is logged */
        lua_pop(L, 1);
        lua_newtable(L);
    }
    lua_getfield(L, -1, "traceback");
    lua_pushthread(T);
    lua_xmove(T, L, 1);
    lua_pushvalue(T, -1); /* the error (the thread went to L) */
    lua_xmove(T, L, 1);
    lua_pushinteger(L, 0);
    const char *err = NULL;
    if (lua_pcall(L, 3, 1, 0) == 0) err = lua_tostring(L, -1);
    if (!err) err = lua_tostring(T, -1);
    /* The failed hook answers a handler's error (handlers run unprotected on these threads:
     * nano's dispatcher, lua/nano/init.lua); anything else is logged here. */
    int handled = 0;
    if (h->hooks[NH_HOOK_FAILED] != LUA_NOREF) {
        lua_rawgeti(L, LUA_REGISTRYINDEX, h->hooks[NH_HOOK_FAILED]);
        lua_pushthread(T);
        lua_xmove(T, L, 1);
        lua_pushvalue(T, -1); /* the error object itself (a table for error({code=})) */
        lua_xmove(T, L, 1);
        if (err)
            lua_pushstring(L, err);
        else
            lua_pushnil(L);
        /* T's dead frames hold the failed handler's data until it is released below: a
         * handler that failed for memory is answered all the same */
        nh_watchdog_answering(h->watchdog, &mark);
        if (nh_host_call_lua(h, 3, 1, "failed hook") == 0) {
            handled = lua_toboolean(L, -1);
            lua_pop(L, 1);
        }
        nh_watchdog_answering(h->watchdog, NULL);
    }
    if (!handled) nh_log(NH_LOG_ERROR, "%s: %s", what, err ? err : "(no message)");
    lua_pop(L, 2);
    nh_host_release_thread(h, T, 0);
    return handled ? 0 : -1;
}

int nh_host_call_lua(nh_host_t *h, int nargs, int nres, const char *what) {
    return nh_host_call_handler(h, nargs, nres, what, 0, NULL, 0);
}

/* The loop turned: the watchdog sees the loop is alive (host.c's on_turn). */
static void on_turn(nh_host_t *h) {
    nh_watchdog_tick(h->watchdog);
}

static void on_config_changed(nh_host_t *h) {
    nh_watchdog_configure(h->watchdog, &h->cfg.watchdog);
}

int nh_lua_host_attach(nh_host_t *h, lua_State *L) {
    h->L = L;
    for (int i = 0; i < NH_HOOK_COUNT; i++)
        h->hooks[i] = LUA_NOREF;
    h->predecode_pb_ref = h->predecode_pb_names_ref = LUA_NOREF;
    lua_pushlightuserdata(L, (void *)&host_key);
    lua_pushlightuserdata(L, h);
    lua_rawset(L, LUA_REGISTRYINDEX);
    sole_host = lua_hosts++ == 0 ? h : NULL;
    lua_pushcfunction(L, traceback);
    h->traceback_ref = luaL_ref(L, LUA_REGISTRYINDEX);
    lua_newtable(L);
    h->threads_ref = luaL_ref(L, LUA_REGISTRYINDEX);
    h->watchdog = nh_watchdog_start(L, &h->cfg.watchdog); /* NULL: runs without (logged) */
    h->strings = malloc(sizeof *h->strings);              /* NULL: strings pushed as they come */
    if (h->strings) nh_strcache_init(h->strings);
    h->on_turn = on_turn;
    h->on_config_changed = on_config_changed;
    return 0;
}

void nh_lua_host_detach(nh_host_t *h) {
    if (!h->L) return;
    if (--lua_hosts == 0 || sole_host == h) sole_host = NULL;
    luaL_unref(h->L, LUA_REGISTRYINDEX, h->traceback_ref);
    luaL_unref(h->L, LUA_REGISTRYINDEX, h->threads_ref);
    if (h->strings) nh_strcache_free(h->strings, h->L);
    free(h->strings);
    h->strings = NULL;
    free(h->idle_threads);
    h->idle_threads = NULL;
    h->nidle_threads = h->idle_cap = 0;
    for (int i = 0; i < NH_HOOK_COUNT; i++)
        luaL_unref(h->L, LUA_REGISTRYINDEX, h->hooks[i]);
    h->on_turn = NULL;
    h->on_config_changed = NULL;
    nh_watchdog_stop(h->watchdog); /* before the caller closes the Lua state it watches */
    h->watchdog = NULL;
    h->L = NULL;
}
