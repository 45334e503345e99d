/* test_watchdog — the watchdog on its own: stuck calls are reported and aborted (interpreted code
 * through the hook, compiled code through nh_watchdog_check in a C function), only calls made from
 * the loop are aborted, a request never outlives its call, and the Lua memory limit fails a call
 * that keeps live data over it but not one that only makes garbage. The hook is installed by a
 * signal handler on the thread that runs Lua, owned by one watchdog, and removed when it stops.
 *
 * One behaviour per case, each on a fresh Lua state and watchdog. `test_watchdog NAME` runs one
 * case (CTest has an entry per case: unit_test_watchdog.NAME, found through the NH_CASE lines);
 * with no name every case runs, each reported by name. */
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

/* Code stuck in an interpreted loop (jit.off: the hook sees it), and one compiled that calls a C
 * function checking for an abort. */
#define STUCK_INTERPRETED "local function f() while true do end end jit.off(f) f()"
#define STUCK_COMPILED "local n = 0 while true do n = n + tick() end"
/* Busy for secs seconds, interpreted, then returns. */
#define BUSY(secs)                                                                                 \
    "local t = os.clock() local function f() while os.clock() - t < " secs " do end end "          \
    "jit.off(f) f()"

/* A case's fixture: a Lua state with tick(), a watchdog on it (stall 50 ms, aborting). */
typedef struct {
    lua_State *L;
    nh_watchdog_t *w;
    nh_watchdog_config_t cfg;
} fixture_t;

static int setup(fixture_t *f) {
    f->L = luaL_newstate();
    luaL_openlibs(f->L);
    lua_register(f->L, "tick", c_tick);
    f->cfg = (nh_watchdog_config_t){.stall_ms = 50, .abort = 1};
    f->w = nh_watchdog_start(f->L, &f->cfg);
    return f->w != NULL;
}

static void teardown(fixture_t *f) {
    if (f->w) nh_watchdog_stop(f->w);
    lua_close(f->L);
}

static nh_watchdog_stats_t stats(fixture_t *f) {
    nh_watchdog_stats_t st;
    nh_watchdog_get_stats(f->w, &st);
    return st;
}

/* Starting installs the signal handler that asks for the hook (the runner saw the default action
 * before the fixture started the watchdog); stopping puts the previous action back. */
static void case_signal_handler_installed_and_restored(fixture_t *f) {
    CHECK(!signal_is_default());
    nh_watchdog_stop(f->w);
    f->w = NULL;
    CHECK(signal_is_default());
}

/* An interpreted endless loop, called from the loop: aborted after the stall time, with the
 * call's name in the error. */
static void case_aborts_interpreted_loop(fixture_t *f) {
    double t0 = now_s();
    CHECK(call(f->L, f->w, 1, STUCK_INTERPRETED) != 0);
    CHECK(now_s() - t0 >= 0.045);
    CHECK(strstr(err, "aborted by the watchdog: session 7 Test.spin") != NULL);
    nh_watchdog_stats_t st = stats(f);
    CHECK(st.aborts == 1 && st.stalls >= 1);
}

/* A compiled endless loop calling a C function that checks: aborted there. */
static void case_aborts_compiled_loop_at_c_check(fixture_t *f) {
    CHECK(call(f->L, f->w, 1, STUCK_COMPILED) != 0);
    CHECK(strstr(err, "aborted by the watchdog") != NULL);
    CHECK(stats(f).aborts == 1);
}

/* A second watchdog (another Lua state) does not take the signal over, and stopping it leaves the
 * first one's handler in place: the first still aborts an interpreted loop. */
static void case_second_watchdog_leaves_first_in_place(fixture_t *f) {
    lua_State *L2 = luaL_newstate();
    nh_watchdog_t *w2 = nh_watchdog_start(L2, &f->cfg);
    CHECK(w2 != NULL);
    nh_watchdog_stop(w2);
    lua_close(L2);
    CHECK(!signal_is_default());
    CHECK(call(f->L, f->w, 1, STUCK_INTERPRETED) != 0);
    CHECK(strstr(err, "aborted by the watchdog") != NULL);
    CHECK(stats(f).aborts == 1);
}

/* Calls that return in time are never touched, before or after an abort. */
static void case_calls_in_time_untouched(fixture_t *f) {
    for (int i = 0; i < 100; i++)
        CHECK(call(f->L, f->w, 1, "local s = 0 for i = 1, 1000 do s = s + tick() end") == 0);
    CHECK(call(f->L, f->w, 1, STUCK_INTERPRETED) != 0);
    for (int i = 0; i < 100; i++)
        CHECK(call(f->L, f->w, 1, "local s = 0 for i = 1, 1000 do s = s + tick() end") == 0);
    CHECK(stats(f).aborts == 1);
}

/* Not from the loop (the main script, lifecycle hooks): a stuck call is reported, never aborted. */
static void case_outside_loop_reported_not_aborted(fixture_t *f) {
    CHECK(call(f->L, f->w, 0, BUSY("0.2")) == 0);
    nh_watchdog_stats_t st = stats(f);
    CHECK(st.stalls >= 1 && st.aborts == 0);
}

/* Nested calls: the inner one stuck is aborted, the outer one goes on. */
static void case_nested_inner_aborted_outer_goes_on(fixture_t *f) {
    CHECK(call(f->L, f->w, 1,
               "local ok, e = pcall(function() " STUCK_INTERPRETED " end) "
               "assert(not ok and e:find('aborted')) tick()") == 0);
    CHECK(stats(f).aborts == 1);
}

/* Turned off (stall 0): nothing is reported. */
static void case_turned_off_reports_nothing(fixture_t *f) {
    f->cfg.stall_ms = 0;
    nh_watchdog_configure(f->w, &f->cfg);
    CHECK(call(f->L, f->w, 1, BUSY("0.15")) == 0);
    nh_watchdog_stats_t st = stats(f);
    CHECK(st.stalls == 0 && st.aborts == 0);
}

static void set_memory_limit(fixture_t *f) {
    f->cfg.stall_ms = 5000;
    f->cfg.memory_limit = 16u << 20;
    nh_watchdog_configure(f->w, &f->cfg);
}

/* The memory limit: live data over it fails the call, and what it held can be collected. */
static void case_memory_limit_fails_live_data(fixture_t *f) {
    set_memory_limit(f);
    CHECK(call(f->L, f->w, 1,
               "local t = {} local function f() for i = 1, 2000 do t[i] = string.rep('x', 1048000) "
               ".. i end end jit.off(f) f()") != 0);
    CHECK(strstr(err, "Lua memory limit exceeded") != NULL);
    CHECK(stats(f).memory_errors == 1);
    lua_gc(f->L, LUA_GCCOLLECT, 0);
    CHECK((size_t)lua_gc(f->L, LUA_GCCOUNT, 0) * 1024 < f->cfg.memory_limit);
}

/* ...garbage over it does not: 200 MiB allocated, never more than 1 MiB of it live. */
static void case_memory_limit_allows_garbage(fixture_t *f) {
    set_memory_limit(f);
    CHECK(call(f->L, f->w, 1,
               "local function f() for i = 1, 200 do local s = string.rep('y', 1048000) .. i end "
               "end jit.off(f) f()") == 0);
    CHECK(stats(f).memory_errors == 0);
}

/* While a call that failed for memory is answered (nh_watchdog_answering), the heap it left over
 * the limit (here kept in a global, as a dead thread's frames keep it) fails no other call; once
 * answered, it does again; and a call that failed for another reason gets no such grace. Each
 * call runs an interpreted loop for 0.3 s: the watchdog looks every 10 ms. */
static void case_memory_limit_spares_the_answer(fixture_t *f) {
    set_memory_limit(f);
    nh_watchdog_mark_t failed = {0};
    failed.memory_errors = stats(f).memory_errors; /* as nh_watchdog_enter keeps it */
    CHECK(call(f->L, f->w, 1,
               "held = {} local function f() for i = 1, 2000 do held[i] = string.rep('x', "
               "1048000) .. i end end jit.off(f) f()") != 0);
    CHECK(stats(f).memory_errors == 1);
    /* 2 MiB more held (outside the loop: not failed), so that the heap stays over the limit once
     * the failed call's temporaries are garbage, and under a quarter past where it failed */
    CHECK(call(f->L, f->w, 0,
               "for i = #held + 1, #held + 2 do held[i] = string.rep('z', 1048000) .. i end") == 0);
    static const char busy[] = "local function f() local t0, n = os.clock(), 0 "
                               "while os.clock() - t0 < 0.3 do n = n + #tostring(n) end end "
                               "jit.off(f) f()";
    nh_watchdog_answering(f->w, &failed);
    CHECK(call(f->L, f->w, 1, busy) == 0);
    nh_watchdog_answering(f->w, NULL);
    CHECK(stats(f).memory_errors == 1);
    nh_watchdog_mark_t other = {0}; /* a call that failed, but not for memory */
    other.memory_errors = stats(f).memory_errors;
    nh_watchdog_answering(f->w, &other);
    CHECK(call(f->L, f->w, 1, busy) != 0);
    CHECK(strstr(err, "Lua memory limit exceeded") != NULL);
    nh_watchdog_answering(f->w, NULL);
    CHECK(call(f->L, f->w, 1, busy) != 0);
    CHECK(strstr(err, "Lua memory limit exceeded") != NULL);
    lua_pushnil(f->L);
    lua_setglobal(f->L, "held");
}

/* The cases. CMake reads the NH_CASE lines to make one CTest entry per case. */
#define NH_CASE(name)                                                                              \
    { #name, case_##name }
typedef struct {
    const char *name;
    void (*fn)(fixture_t *f);
} test_case_t;

static const test_case_t cases[] = {
    NH_CASE(signal_handler_installed_and_restored),
    NH_CASE(aborts_interpreted_loop),
    NH_CASE(aborts_compiled_loop_at_c_check),
    NH_CASE(second_watchdog_leaves_first_in_place),
    NH_CASE(calls_in_time_untouched),
    NH_CASE(outside_loop_reported_not_aborted),
    NH_CASE(nested_inner_aborted_outer_goes_on),
    NH_CASE(turned_off_reports_nothing),
    NH_CASE(memory_limit_fails_live_data),
    NH_CASE(memory_limit_allows_garbage),
    NH_CASE(memory_limit_spares_the_answer),
};
#define NCASES (sizeof cases / sizeof cases[0])

/* Runs one case by name, on a fixture of its own; returns 0 when it passed. */
static int run_case(const char *name) {
    for (size_t i = 0; i < NCASES; i++) {
        if (strcmp(cases[i].name, name) != 0) continue;
        int failed_before = check_failed;
        CHECK(signal_is_default()); /* no watchdog left a handler behind */
        fixture_t f;
        if (setup(&f))
            cases[i].fn(&f);
        else
            CHECK(!"nh_watchdog_start");
        teardown(&f);
        int failed = check_failed != failed_before;
        printf("%s %s\n", failed ? "FAIL" : "ok  ", name);
        return failed;
    }
    fprintf(stderr, "test_watchdog: no case named %s\n", name);
    check_failed++;
    return 1;
}

int main(int argc, char **argv) {
    nh_log_set_level(NH_LOG_OFF);
    /* CTest passes the codec's vectors file to every unit test: a path is not a case name */
    if (argc > 1 && strchr(argv[1], '/') == NULL) {
        for (int i = 1; i < argc; i++)
            run_case(argv[i]);
        return check_done();
    }
    for (size_t i = 0; i < NCASES; i++)
        run_case(cases[i].name);
    return check_done();
}
