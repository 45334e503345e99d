/* test_watchdog — the watchdog on its own: stuck calls are reported and aborted (interpreted code
 * through the hook, compiled code through nh_watchdog_check in a C function), only calls made from
 * the loop are aborted, a request never outlives its call, and the Lua memory limit fails a call
 * that keeps live data over it but not one that only makes garbage. The hook is installed by a
 * signal handler on the thread that runs Lua, owned by one watchdog, and removed when it stops. */
#include "lua_watchdog.h"

#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include <lauxlib.h>
#include <lualib.h>

#include "check.h"
#include "log.h"

static char err[1024];

/* A C function as nano's are: it checks for a pending abort first. */
static int c_tick(lua_State *L) {
    nh_watchdog_check(L);
    lua_pushinteger(L, 1);
    return 1;
}

/* Runs code as one call into Lua named session 7 Test.spin, from the loop or not. Returns the
 * lua_pcall status; err holds the message. */
static int call(lua_State *L, nh_watchdog_t *w, int from_loop, const char *code) {
    nh_watchdog_mark_t loop, mark;
    if (from_loop) nh_watchdog_loop_begin(w, &loop);
    err[0] = '\0';
    int r = luaL_loadstring(L, code);
    if (r == 0) {
        nh_watchdog_enter(w, &mark, "dispatch", 7, "Test.spin", 9);
        r = lua_pcall(L, 0, 0, 0);
        nh_watchdog_leave(w, &mark);
    }
    if (r) {
        snprintf(err, sizeof err, "%s", lua_tostring(L, -1) ? lua_tostring(L, -1) : "?");
        lua_pop(L, 1);
    }
    if (from_loop) nh_watchdog_loop_end(w, &loop);
    return r;
}

static int signal_is_default(void) {
    struct sigaction sa;
    sigaction(SIGRTMIN, NULL, &sa);
    return sa.sa_handler == SIG_DFL;
}

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

int main(void) {
    nh_log_set_level(NH_LOG_OFF);
    lua_State *L = luaL_newstate();
    luaL_openlibs(L);
    lua_register(L, "tick", c_tick);
    nh_watchdog_config_t cfg = {.stall_ms = 50, .abort = 1};
    CHECK(signal_is_default());
    nh_watchdog_t *w = nh_watchdog_start(L, &cfg);
    CHECK(w != NULL);
    CHECK(!signal_is_default()); /* the watchdog's handler asks for the hook on this thread */
    nh_watchdog_stats_t st;

    /* an interpreted endless loop, from the loop: aborted after the stall time */
    double t0 = now_s();
    CHECK(call(L, w, 1, "local function f() while true do end end jit.off(f) f()") != 0);
    CHECK(now_s() - t0 >= 0.045);
    CHECK(strstr(err, "aborted by the watchdog: session 7 Test.spin") != NULL);
    nh_watchdog_get_stats(w, &st);
    CHECK(st.aborts == 1 && st.stalls >= 1);

    /* a compiled endless loop calling a C function that checks: aborted there */
    CHECK(call(L, w, 1, "local n = 0 while true do n = n + tick() end") != 0);
    CHECK(strstr(err, "aborted by the watchdog") != NULL);
    nh_watchdog_get_stats(w, &st);
    CHECK(st.aborts == 2);

    /* a second watchdog (another Lua state) does not take the signal over, and stopping it leaves
     * the first one's handler in place: the first still aborts an interpreted loop */
    lua_State *L2 = luaL_newstate();
    nh_watchdog_t *w2 = nh_watchdog_start(L2, &cfg);
    CHECK(w2 != NULL);
    nh_watchdog_stop(w2);
    lua_close(L2);
    CHECK(!signal_is_default());
    CHECK(call(L, w, 1, "local function f() while true do end end jit.off(f) f()") != 0);
    CHECK(strstr(err, "aborted by the watchdog") != NULL);
    nh_watchdog_get_stats(w, &st);
    CHECK(st.aborts == 3);

    /* calls that return in time are never touched, before or after an abort */
    for (int i = 0; i < 100; i++)
        CHECK(call(L, w, 1, "local s = 0 for i = 1, 1000 do s = s + tick() end") == 0);

    /* not from the loop (the main script, lifecycle hooks): reported, never aborted */
    nh_watchdog_get_stats(w, &st);
    uint64_t stalls = st.stalls;
    CHECK(call(L, w, 0,
               "local t = os.clock() local function f() while os.clock() - t < 0.2 do end end "
               "jit.off(f) f()") == 0);
    nh_watchdog_get_stats(w, &st);
    CHECK(st.stalls > stalls && st.aborts == 3);

    /* nested calls: the inner one stuck is aborted, the outer one goes on */
    CHECK(call(L, w, 1,
               "local ok, e = pcall(function() local function f() while true do end end "
               "jit.off(f) f() end) assert(not ok and e:find('aborted')) tick()") == 0);

    /* turned off: nothing is reported */
    cfg.stall_ms = 0;
    nh_watchdog_configure(w, &cfg);
    nh_watchdog_get_stats(w, &st);
    stalls = st.stalls;
    CHECK(call(L, w, 1,
               "local t = os.clock() local function f() while os.clock() - t < 0.15 do end end "
               "jit.off(f) f()") == 0);
    nh_watchdog_get_stats(w, &st);
    CHECK(st.stalls == stalls);

    /* the memory limit: live data over it fails the call... */
    cfg.stall_ms = 5000;
    cfg.memory_limit = 16u << 20;
    nh_watchdog_configure(w, &cfg);
    CHECK(call(L, w, 1,
               "local t = {} local function f() for i = 1, 2000 do t[i] = string.rep('x', 1048000) "
               ".. i end end jit.off(f) f()") != 0);
    CHECK(strstr(err, "Lua memory limit exceeded") != NULL);
    nh_watchdog_get_stats(w, &st);
    CHECK(st.memory_errors == 1);
    lua_gc(L, LUA_GCCOLLECT, 0);
    CHECK((size_t)lua_gc(L, LUA_GCCOUNT, 0) * 1024 < cfg.memory_limit);

    /* ...garbage over it does not: 200 MiB allocated, never more than 1 MiB of it live */
    CHECK(call(L, w, 1,
               "local function f() for i = 1, 200 do local s = string.rep('y', 1048000) .. i end "
               "end jit.off(f) f()") == 0);
    nh_watchdog_get_stats(w, &st);
    CHECK(st.memory_errors == 1);

    nh_watchdog_stop(w);
    CHECK(signal_is_default()); /* the previous action is back */
    lua_close(L);
    return check_done();
}
