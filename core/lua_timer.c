/* lua_timer — `nano.core`'s time and timers: now, hrtime, advance (virtual time for tests),
 * timer (the `nano.core.timer` class: stop, active) and stop_timers. A timer is an nh_timer_t on
 * the host's heap inside its userdata; while it runs it holds a registry ref to itself and to its
 * callback, released when it stops or, once, after its last call. Part of the module lua_host.c
 * opens (lua_core.h). */
#include <math.h>
#include <string.h>

#include <lauxlib.h>

#include "conn.h"
#include "host.h"
#include "lua_binding.h"
#include "lua_core.h"

static uint64_t secs_to_ms(lua_State *L, int idx, double min_secs) {
    double s = luaL_checknumber(L, idx);
    if (!(s >= min_secs) || s > 1e9) luaL_argerror(L, idx, "duration out of range");
    return (uint64_t)llround(s * 1000.0);
}

static int c_now(lua_State *L) {
    lua_pushnumber(L, (lua_Number)nh_timers_now(&nh_lua_core_host(L)->timers) / 1000.0);
    return 1;
}

double nh_lua_ffi_now(void) {
    nh_host_t *h = nh_host_sole();
    if (!h || nh_watchdog_pending()) return -1;
    return (double)nh_timers_now(&h->timers) / 1000.0;
}

/* hrtime() -> seconds of a monotonic real clock (not moved by advance): bounded waits in tests. */
static int c_hrtime(lua_State *L) {
    lua_pushnumber(L, (lua_Number)uv_hrtime() / 1e9);
    return 1;
}

static int c_advance(lua_State *L) {
    nh_host_t *h = nh_lua_core_host(L);
    nh_timers_advance(&h->timers, secs_to_ms(L, 1, 0));
    nh_conn_flush_all(h);
    return 0;
}

#define TIMER_MT "nano.core.timer"

typedef struct ltimer {
    nh_timer_t t;
    nh_host_t *h;
    int fn_ref;   /* the callback */
    int self_ref; /* keeps the userdata alive while the timer runs */
} ltimer_t;

static void timer_release(lua_State *L, ltimer_t *lt) {
    luaL_unref(L, LUA_REGISTRYINDEX, lt->self_ref);
    luaL_unref(L, LUA_REGISTRYINDEX, lt->fn_ref);
    lt->self_ref = lt->fn_ref = LUA_NOREF;
}

static void on_timer(nh_timer_t *t) {
    ltimer_t *lt = t->data;
    nh_host_t *h = lt->h;
    lua_State *L = h->L;
    int fn_ref = lt->fn_ref, self_ref = lt->self_ref;
    /* Hold the userdata on the stack: the callback may stop (and so release) it. */
    lua_rawgeti(L, LUA_REGISTRYINDEX, self_ref);
    lua_rawgeti(L, LUA_REGISTRYINDEX, fn_ref);
    lua_pushvalue(L, -2);
    nh_host_call_lua(h, 1, 0, "timer");
    if (!nh_timer_active(&lt->t) && lt->self_ref == self_ref) timer_release(L, lt);
    lua_pop(L, 1);
}

/* timer(delay, repeat, fn) -> timer; fn(timer) runs after delay, then every repeat (0: once) */
static int c_timer(lua_State *L) {
    nh_host_t *h = nh_lua_core_host(L);
    uint64_t delay = secs_to_ms(L, 1, 0);
    uint64_t repeat = secs_to_ms(L, 2, 0);
    luaL_checktype(L, 3, LUA_TFUNCTION);
    ltimer_t *lt = lua_newuserdata(L, sizeof *lt);
    memset(lt, 0, sizeof *lt);
    lt->h = h;
    lt->t.cb = on_timer;
    lt->t.data = lt;
    luaL_getmetatable(L, TIMER_MT);
    lua_setmetatable(L, -2);
    lua_pushvalue(L, 3);
    lt->fn_ref = luaL_ref(L, LUA_REGISTRYINDEX);
    lua_pushvalue(L, -1);
    lt->self_ref = luaL_ref(L, LUA_REGISTRYINDEX);
    int r = nh_timer_start(&h->timers, &lt->t, delay, repeat);
    if (r) {
        timer_release(L, lt);
        return luaL_error(L, "timer: %s", uv_strerror(r));
    }
    return 1;
}

static int timer_stop(lua_State *L) {
    ltimer_t *lt = luaL_checkudata(L, 1, TIMER_MT);
    nh_timer_stop(&lt->h->timers, &lt->t);
    timer_release(L, lt);
    return 0;
}

/* The Lua timers (core.timer) on the host's heap; the sweep is the host's own. */
int nh_lua_core_timer_count(nh_host_t *h) {
    int n = 0;
    for (uint32_t i = 0; i < h->timers.n; i++)
        if (h->timers.heap[i]->cb == on_timer) n++;
    return n;
}

/* stop_timers() -> count: stops every Lua timer, so that nano.test can start the next spec with
 * none left from the last. */
static int c_stop_timers(lua_State *L) {
    nh_host_t *h = nh_lua_core_host(L);
    int n = 0;
    /* Stopping reorders the heap: take the first Lua timer found each time. */
    for (;;) {
        ltimer_t *lt = NULL;
        for (uint32_t i = 0; i < h->timers.n && !lt; i++)
            if (h->timers.heap[i]->cb == on_timer) lt = h->timers.heap[i]->data;
        if (!lt) break;
        nh_timer_stop(&h->timers, &lt->t);
        timer_release(L, lt);
        n++;
    }
    lua_pushinteger(L, n);
    return 1;
}

static int timer_active(lua_State *L) {
    ltimer_t *lt = luaL_checkudata(L, 1, TIMER_MT);
    lua_pushboolean(L, nh_timer_active(&lt->t));
    return 1;
}

void nh_lua_core_timers(lua_State *L) {
    static const luaL_Reg fns[] = {
        {"now", c_now},     {"hrtime", c_hrtime},           {"advance", c_advance},
        {"timer", c_timer}, {"stop_timers", c_stop_timers}, {NULL, NULL},
    };
    static const luaL_Reg methods[] = {
        {"stop", timer_stop}, {"active", timer_active}, {NULL, NULL}};
    nh_lua_class(L, TIMER_MT, methods, NULL);
    luaL_register(L, NULL, fns);
}
