/* lua_watchdog — notices a Lua call that does not return (an endless loop in a handler) and a Lua
 * heap over its limit, from a thread of its own, and stops them where LuaJIT allows.
 *
 * The loop thread marks every entry into Lua and every return (nh_host_call_lua does it, and each
 * loop turn), which moves a counter. The watchdog thread wakes a few times per stall period; when
 * the counter has not moved for `stall_ms` while the loop is inside a Lua call, it logs which call
 * ("session 7 Room.spin", "timer", ...) and for how long, and again after 2, 4, 8, ... stall
 * periods while the call goes on.
 *
 * Aborting: for calls made from the running loop (handlers, timers, hooks — not the main script
 * or lifecycle hooks, which run before it) the watchdog installs a Lua hook with lua_sethook. That
 * rewrites LuaJIT's dispatch table, which the loop thread also does when a trace starts or stops
 * recording, so it is never called from the watchdog thread: that thread sends a real-time signal
 * (SIGRTMIN, SA_RESTART) to the loop thread, whose handler calls lua_sethook there, the one
 * asynchronous use LuaJIT supports (luajit.c does the same for SIGINT). The handler takes no lock
 * and allocates nothing. nh_watchdog_start installs it and nh_watchdog_stop restores the previous
 * action; one watchdog per process owns the signal (a second one logs that it aborts only through
 * nh_watchdog_check). The hook runs on the loop thread at the next instruction the interpreter
 * executes and raises an error in the stuck call: the handler fails like any handler error
 * (error response, log line with route and session). A hook never runs inside JIT-compiled code
 * (traces do not check hooks, and LuaJIT 2.1 compiles loops that call C functions too, by trace
 * stitching), so nano's own C functions check for a pending abort as well (nh_watchdog_check).
 * A compiled loop that calls none of them is only logged; with `exit_ms` set the watchdog then
 * ends the process (exit status 70) so that a supervisor can restart it. See docs/hardening.md.
 *
 * Lua memory limit: LuaJIT's allocator cannot be replaced safely here, so the heap size
 * (collectgarbage("count")) is checked at safe points: by the watchdog thread every few
 * milliseconds while a call runs (over the limit: the same hook, which collects garbage first and
 * raises "Lua memory limit exceeded" only if that did not help), and after each outermost call
 * returns (a full collection when over the limit, at most every 50 ms, and a warning if live data
 * stays over it).
 *
 * Threads: the watchdog thread never runs Lua and never changes the Lua state. The loop thread
 * publishes the counter and the call in progress without a lock (atomics, a seqlock: every
 * message passes here twice); the watchdog thread takes a consistent copy, and reads the call's
 * strings only while a flag tells nh_watchdog_leave to wait for it (lua_watchdog.c: `seq`). The
 * rest (configuration, pending requests, stats) is under a mutex. The heap size is read without
 * one: a benign racy read of one counter (LuaJIT's gc.total, an aligned word) that is at worst a
 * little stale. It asks for an abort with the signal. All functions here, nh_watchdog_start and
 * nh_watchdog_stop included, are called on the loop thread: the one that runs Lua and receives the
 * signal.
 */
#ifndef NH_WATCHDOG_H
#define NH_WATCHDOG_H

#include <stddef.h>
#include <stdint.h>

/* the Lua state, opaque here (lua.h names the same struct) */
typedef struct lua_State lua_State;

typedef struct nh_watchdog nh_watchdog_t;

typedef struct nh_watchdog_config {
    uint64_t stall_ms;   /* a call running this long is reported; 0 turns the watchdog off */
    int abort;           /* abort stuck calls made from the loop (where the hook can run) */
    uint64_t exit_ms;    /* a stuck call still running after this long ends the process; 0 never */
    size_t memory_limit; /* Lua heap bytes; 0 no limit */
} nh_watchdog_config_t;

/* Exit status when the watchdog ends the process (EX_SOFTWARE). */
#define NH_WATCHDOG_EXIT 70

/* Starts the thread. Returns NULL when out of memory or when the thread cannot start (logged);
 * the host then runs without a watchdog. */
nh_watchdog_t *nh_watchdog_start(lua_State *L, const nh_watchdog_config_t *cfg);
/* Applies a new configuration (takes effect at the next wake-up). */
void nh_watchdog_configure(nh_watchdog_t *w, const nh_watchdog_config_t *cfg);
/* Stops and joins the thread, removes the hook, frees w. NULL is fine. */
void nh_watchdog_stop(nh_watchdog_t *w);

/* Around a call into Lua. `what` names it in the log; session/route (route_len bytes, NULL when
 * none) say which handler it is. The strings are not copied: they must stay valid until
 * nh_watchdog_leave (the caller's own, for the length of the call). `mark` keeps what
 * nh_watchdog_leave needs to restore the outer call. */
/* The call in progress, as the log names it. */
typedef struct nh_watchdog_call {
    const char *what, *route;
    uint64_t session;
    size_t route_len;
} nh_watchdog_call_t;
typedef struct nh_watchdog_mark {
    int depth, in_loop;
    nh_watchdog_call_t call;
    uint64_t memory_errors; /* the count when the call began (nh_watchdog_answering) */
} nh_watchdog_mark_t;
void nh_watchdog_enter(nh_watchdog_t *w, nh_watchdog_mark_t *mark, const char *what,
                       uint64_t session, const char *route, size_t route_len);
void nh_watchdog_leave(nh_watchdog_t *w, const nh_watchdog_mark_t *mark);

/* The loop runs (core.run from the main script): until nh_watchdog_loop_end, time spent waiting
 * for events is not a stuck call, and calls made from the loop may be aborted. */
void nh_watchdog_loop_begin(nh_watchdog_t *w, nh_watchdog_mark_t *mark);
void nh_watchdog_loop_end(nh_watchdog_t *w, const nh_watchdog_mark_t *mark);

/* Called at the top of the C functions Lua code calls most (nano.core, session methods): raises
 * the abort error there when the watchdog asked for one. JIT-compiled code calls C functions
 * without passing through the interpreter, so this is how a compiled loop that calls nano's API
 * (s:push, nano.now(), ...) is stopped. Costs one relaxed atomic load when nothing is pending.
 * Call it before the function allocates anything (it may not return). */
void nh_watchdog_check(lua_State *L);
/* Whether nh_watchdog_check would raise now (the same load). For functions Lua calls through the
 * FFI, which must not raise: they decline, and the caller takes the C function that checks. */
int nh_watchdog_pending(void);

/* A new slice of work starts inside the current call (task.lua resumes a task that waited): the
 * counter moves, so the slice gets a stall budget of its own, and until the next slice or the
 * end of the call the log names it "session <session> <route>" ("task" without them). The route
 * is copied (at most 256 bytes). */
void nh_watchdog_slice(nh_watchdog_t *w, uint64_t session, const char *route, size_t route_len);

/* failed: the mark of a call (entered and left) whose thread an error ended; the loop thread now
 * answers it (nano's failed hook) while that call's data is still reachable from the thread's
 * dead frames. If the call failed for memory, the heap may be over the limit for it alone: calls
 * made meanwhile are not failed for memory unless the heap grows a quarter past where that call
 * failed (as within the failed call itself). NULL: the answer is given, as before. */
void nh_watchdog_answering(nh_watchdog_t *w, const nh_watchdog_mark_t *failed);

/* One loop turn: moves the counter. */
void nh_watchdog_tick(nh_watchdog_t *w);

/* For tests and stats: how many stalls were reported, calls aborted, memory-limit errors. */
typedef struct nh_watchdog_stats {
    uint64_t stalls, aborts, memory_errors;
} nh_watchdog_stats_t;
void nh_watchdog_get_stats(nh_watchdog_t *w, nh_watchdog_stats_t *out);

#endif
