#include "lua_watchdog.h"

#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <lauxlib.h>

#include "log.h"

enum { WD_NONE, WD_STALL, WD_MEMORY };

struct nh_watchdog {
    lua_State *L;
    pthread_t thread;
    pthread_t loop_thread;       /* runs L; the hook is installed there, by the signal handler */
    int signal_owner;            /* this watchdog installed the handler (one per process) */
    struct sigaction old_action; /* what it replaced, restored by nh_watchdog_stop */
    uint64_t last_leave_gc_ms;   /* loop thread only, like last_gc_warn_ms */
    /* What the loop thread publishes about its calls, without a lock: every message passes
     * here twice, and a mutex round trip each time was ~90 instructions of a ping-pong's ~8,000
     * (docs/benchmarks.md). The loop thread is the only writer; the watchdog thread takes a
     * consistent copy (seqlock: seq is odd while the fields change, see snapshot()). The call's
     * strings are pointers into its caller's memory, valid while that call runs: a reader that
     * is about to read them sets `reading`, and nh_watchdog_leave, after it publishes that the
     * call ended, waits on mu when it sees `reading` set, so that the strings outlive the read
     * (a store then a load on each side, both sequentially consistent: one of the two sees the
     * other's store). */
    _Atomic uint64_t seq; /* moves at every enter, leave and loop turn; odd while writing */
    _Atomic int depth;    /* Lua calls in progress since the loop (or the program) started */
    _Atomic int in_loop;  /* the running loop made these calls: they may be aborted */
    struct {
        _Atomic(const char *) what, route;
        _Atomic uint64_t session;
        _Atomic size_t route_len;
    } call;              /* the innermost call */
    _Atomic int reading; /* the watchdog thread reads the call's strings */
    pthread_mutex_t mu;  /* everything below, and the slow paths above (slice, loop begin/end) */
    pthread_cond_t cond;
    nh_watchdog_config_t cfg;
    int stop;
    char slice_route[256]; /* nh_watchdog_slice's copy: written and read under mu */
    int pending;           /* WD_STALL or WD_MEMORY: the hook is installed for this */
    uint64_t pending_seq;
    nh_watchdog_stats_t stats;
    uint64_t last_gc_warn_ms;
    uint64_t last_memory_request_ms;
    uint64_t memory_error_seq; /* the call that last failed for memory, and its heap then */
    size_t memory_error_used;
    int answering; /* nh_watchdog_answering: a failed call is being answered */
};

static const char registry_key = 'w'; /* the hook finds its watchdog here */

/* "Some watchdog wants an abort": a process-wide hint so that nh_watchdog_check costs one load.
 * The decision itself (which call, is it still running) is made under the watchdog's mutex. */
static atomic_int abort_hint;

/* lua_sethook rewrites LuaJIT's dispatch table, as the loop thread itself does when a trace starts
 * or stops recording, so it must not be called from the watchdog thread. LuaJIT supports it
 * asynchronously only from a signal handler on the thread that runs Lua (luajit.c's SIGINT): the
 * watchdog thread sends this signal to the loop thread, and the handler installs the hook there. */
#define WD_SIGNAL SIGRTMIN
/* The state the handler hooks: set while a watchdog owns the handler, NULL otherwise. A lock-free
 * atomic, so that reading it in the handler is async-signal-safe. */
static _Atomic(lua_State *) signal_L;
_Static_assert(ATOMIC_POINTER_LOCK_FREE == 2 && ATOMIC_INT_LOCK_FREE == 2,
               "the signal handler reads atomics");

static uint64_t now_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

static size_t heap_bytes(lua_State *L) {
    return (size_t)lua_gc(L, LUA_GCCOUNT, 0) * 1024u + (size_t)lua_gc(L, LUA_GCCOUNTB, 0);
}

/* ---- publishing the call in progress (loop thread) and reading it (either thread) ---- */

#define RELAXED memory_order_relaxed

static nh_watchdog_call_t call_of(nh_watchdog_t *w) {
    return (nh_watchdog_call_t){atomic_load_explicit(&w->call.what, RELAXED),
                                atomic_load_explicit(&w->call.route, RELAXED),
                                atomic_load_explicit(&w->call.session, RELAXED),
                                atomic_load_explicit(&w->call.route_len, RELAXED)};
}

/* Loop thread: opens a write (seq odd), then publish_end closes it (seq even again). */
static inline uint64_t publish_begin(nh_watchdog_t *w) {
    uint64_t s = atomic_load_explicit(&w->seq, RELAXED);
    atomic_store_explicit(&w->seq, s + 1, RELAXED);
    atomic_thread_fence(memory_order_release); /* the odd seq before any field */
    return s;
}
static inline void publish_end(nh_watchdog_t *w, uint64_t s) {
    atomic_store_explicit(&w->seq, s + 2, memory_order_release); /* the fields before it */
}
static inline void set_call(nh_watchdog_t *w, const nh_watchdog_call_t *c) {
    atomic_store_explicit(&w->call.what, c->what, RELAXED);
    atomic_store_explicit(&w->call.route, c->route, RELAXED);
    atomic_store_explicit(&w->call.session, c->session, RELAXED);
    atomic_store_explicit(&w->call.route_len, c->route_len, RELAXED);
}

typedef struct snap {
    uint64_t seq;
    int depth, in_loop;
    nh_watchdog_call_t call;
} snap_t;

/* Watchdog thread: a consistent copy of what the loop thread published; 0 if the loop thread
 * was writing it all the few times it tried (then it is busy, not stuck). */
static int snapshot(nh_watchdog_t *w, snap_t *out) {
    for (int tries = 0; tries < 4; tries++) {
        uint64_t s = atomic_load_explicit(&w->seq, memory_order_acquire);
        if (s & 1) continue;
        out->depth = atomic_load_explicit(&w->depth, RELAXED);
        out->in_loop = atomic_load_explicit(&w->in_loop, RELAXED);
        out->call = call_of(w);
        atomic_thread_fence(memory_order_acquire); /* the fields before seq's second look */
        if (atomic_load_explicit(&w->seq, RELAXED) != s) continue;
        out->seq = s;
        return 1;
    }
    return 0;
}

/* "session 7 Room.spin" or "timer". */
static void describe(const nh_watchdog_call_t *c, char *out, size_t len) {
    const char *what = c->what ? c->what : "Lua";
    if (c->session && c->route) { /* the client chose the route: escaped */
        char route[NH_LOG_ESCAPED_MAX];
        snprintf(out, len, "session %llu %s", (unsigned long long)c->session,
                 nh_log_escape(route, sizeof route, c->route, c->route_len));
    } else if (c->session)
        snprintf(out, len, "session %llu %s", (unsigned long long)c->session, what);
    else
        snprintf(out, len, "%s", what);
}

/* ---- the hook: runs on the loop thread, inside the Lua call ---- */

static void guard_hook(lua_State *L, lua_Debug *ar) {
    (void)ar;
    lua_pushlightuserdata(L, (void *)&registry_key);
    lua_rawget(L, LUA_REGISTRYINDEX);
    nh_watchdog_t *w = lua_touserdata(L, -1);
    lua_pop(L, 1);
    if (!w) {
        lua_sethook(L, NULL, 0, 0);
        return;
    }
    pthread_mutex_lock(&w->mu);
    lua_sethook(L, NULL, 0, 0); /* one shot */
    int reason = w->pending;
    uint64_t seq = atomic_load_explicit(&w->seq, RELAXED); /* the loop thread's own */
    int current = w->pending_seq == seq;
    int abortable =
        atomic_load_explicit(&w->in_loop, RELAXED) && atomic_load_explicit(&w->depth, RELAXED) > 0;
    size_t limit = w->cfg.memory_limit;
    char what[400];
    nh_watchdog_call_t call = call_of(w);
    describe(&call, what, sizeof what);
    w->pending = WD_NONE;
    atomic_store_explicit(&abort_hint, 0, memory_order_relaxed);
    pthread_mutex_unlock(&w->mu);
    if (!abortable) return; /* the call it was meant for returned already */
    if (reason == WD_STALL && current) {
        pthread_mutex_lock(&w->mu);
        w->stats.aborts++;
        pthread_mutex_unlock(&w->mu);
        luaL_error(L, "aborted by the watchdog: %s ran longer than %.1f s (endless loop?)", what,
                   (double)w->cfg.stall_ms / 1000.0);
    }
    if (reason == WD_MEMORY && limit) {
        if (heap_bytes(L) <= limit) return;
        lua_gc(L, LUA_GCCOLLECT, 0); /* garbage is not a reason to fail a call */
        size_t used = heap_bytes(L);
        if (used <= limit) return;
        /* Once per call: after the error, the failed handler's data stays reachable from dead
         * stack slots until nano's dispatcher returns (LuaJIT marks whole frames), so the heap is
         * still over the limit while the dispatcher answers; failing that too would leave the
         * client without its error response. The same call fails again only if it grows a
         * quarter past where it failed (a handler that catches the error and goes on). */
        pthread_mutex_lock(&w->mu);
        int again =
            (w->memory_error_seq == seq || w->answering) && used < w->memory_error_used / 4 * 5;
        if (!again) {
            w->stats.memory_errors++;
            w->memory_error_seq = seq;
            w->memory_error_used = used;
        }
        pthread_mutex_unlock(&w->mu);
        if (again) return;
        luaL_error(L, "Lua memory limit exceeded: %d KB in use, the limit is %d KB (%s)",
                   (int)(used / 1024), (int)(limit / 1024), what);
    }
}

/* Runs on the loop thread, interrupting whatever it does: two atomic loads and lua_sethook,
 * nothing else (no lock, no allocation). The hook itself runs later, outside the handler. */
static void on_signal(int sig) {
    (void)sig;
    int saved = errno;
    lua_State *L = atomic_load(&signal_L);
    /* Count 1: at the very next instruction the interpreter runs. */
    if (L && atomic_load(&abort_hint)) lua_sethook(L, guard_hook, LUA_MASKCOUNT, 1);
    errno = saved;
}

/* Called with mu held, on the watchdog thread; seq: the stuck call's (its snapshot). */
static void request(nh_watchdog_t *w, int reason, uint64_t seq) {
    w->pending = reason;
    w->pending_seq = seq;
    atomic_store(&abort_hint, 1); /* before the signal: the handler checks it */
    if (w->signal_owner) (void)pthread_kill(w->loop_thread, WD_SIGNAL);
}

static void signal_install(nh_watchdog_t *w) {
    lua_State *none = NULL;
    if (!atomic_compare_exchange_strong(&signal_L, &none, w->L)) {
        nh_log(NH_LOG_WARN, "watchdog: another watchdog owns the signal; stuck calls in this Lua "
                            "state are aborted only where nano's C functions check");
        return;
    }
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_signal;
    sigemptyset(&sa.sa_mask);
    sa.sa_flags = SA_RESTART; /* libuv retries what is interrupted anyway */
    if (sigaction(WD_SIGNAL, &sa, &w->old_action) != 0) {
        nh_log(NH_LOG_WARN, "watchdog: cannot install its signal handler: %s", strerror(errno));
        atomic_store(&signal_L, NULL);
        return;
    }
    w->signal_owner = 1;
}

/* On the loop thread, once the watchdog thread has been joined (it sends no more signals). */
static void signal_remove(nh_watchdog_t *w) {
    if (!w->signal_owner) return;
    atomic_store(&signal_L, NULL); /* a signal still on its way finds nothing to do */
    /* One the loop thread has not taken yet must not meet the old action (SIG_DFL ends the
     * process): take it here, with the signal blocked, before restoring. */
    sigset_t set, old;
    sigemptyset(&set);
    sigaddset(&set, WD_SIGNAL);
    pthread_sigmask(SIG_BLOCK, &set, &old);
    struct timespec zero = {0, 0};
    while (sigtimedwait(&set, NULL, &zero) == WD_SIGNAL) {
    }
    sigaction(WD_SIGNAL, &w->old_action, NULL);
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    w->signal_owner = 0;
}

void nh_watchdog_answering(nh_watchdog_t *w, const nh_watchdog_mark_t *failed) {
    if (!w) return;
    pthread_mutex_lock(&w->mu); /* the hook reads it with the rest, under mu */
    /* stats.memory_errors is written on this (the loop) thread only, by the hook */
    w->answering = failed && w->stats.memory_errors != failed->memory_errors;
    pthread_mutex_unlock(&w->mu);
}

void nh_watchdog_check(lua_State *L) {
    if (atomic_load_explicit(&abort_hint, memory_order_relaxed)) guard_hook(L, NULL);
}

int nh_watchdog_pending(void) {
    return atomic_load_explicit(&abort_hint, memory_order_relaxed) != 0;
}

/* ---- the watchdog thread ---- */

static uint64_t period(const nh_watchdog_config_t *c) {
    uint64_t p = 0;
    if (c->stall_ms) {
        p = c->stall_ms / 8;
        if (p < 10) p = 10;
        if (p > 250) p = 250;
    }
    if (c->memory_limit && (!p || p > 10)) p = 10; /* the heap can grow fast */
    return p;
}

static void *run(void *arg) {
    nh_watchdog_t *w = arg;
    pthread_mutex_lock(&w->mu);
    uint64_t last_seq = atomic_load(&w->seq), since = now_ms();
    unsigned reported = 0;
    while (!w->stop) {
        uint64_t p = period(&w->cfg);
        if (!p) {
            pthread_cond_wait(&w->cond, &w->mu); /* nothing to watch until reconfigured */
            since = now_ms();
            continue;
        }
        struct timespec until;
        clock_gettime(CLOCK_REALTIME, &until);
        until.tv_sec += (time_t)(p / 1000);
        until.tv_nsec += (long)(p % 1000) * 1000000L;
        if (until.tv_nsec >= 1000000000L) {
            until.tv_sec++;
            until.tv_nsec -= 1000000000L;
        }
        int r = pthread_cond_timedwait(&w->cond, &w->mu, &until);
        if (w->stop) break;
        if (r != 0 && r != ETIMEDOUT) continue;
        uint64_t t = now_ms();
        /* From here to the unlock, the call's strings may be read: see `reading` */
        atomic_store_explicit(&w->reading, 1, RELAXED);
        atomic_thread_fence(memory_order_seq_cst); /* before the snapshot's loads */
        snap_t sn;
        if (!snapshot(w, &sn)) { /* being written at every look: moving, not stuck */
            atomic_store_explicit(&w->reading, 0, memory_order_release);
            since = t;
            reported = 0;
            continue;
        }
        if (sn.seq != last_seq) { /* the loop moved */
            last_seq = sn.seq;
            since = t;
            reported = 0;
        }
        if (sn.depth == 0) { /* waiting for events, not stuck */
            atomic_store_explicit(&w->reading, 0, memory_order_release);
            continue;
        }
        uint64_t stuck = t - since;
        int can_abort = w->cfg.abort && sn.in_loop;

        /* Over the limit: the hook collects and fails the call only if that did not help. At most
         * every 50 ms, so that live data near the limit cannot keep the loop in full collections.
         */
        if (w->cfg.memory_limit && sn.in_loop && w->pending == WD_NONE &&
            t - w->last_memory_request_ms >= 50 &&
            heap_bytes(w->L) > w->cfg.memory_limit) { /* a benign racy read: see the header */
            w->last_memory_request_ms = t;
            request(w, WD_MEMORY, sn.seq);
        }

        char msg[600] = "";
        int level = NH_LOG_WARN, exiting = 0;
        /* Reported at 1, 2, 4, 8, ... stall periods: a stuck call is news, not a log flood. */
        if (w->cfg.stall_ms && reported < 32 && stuck >= w->cfg.stall_ms << reported) {
            char what[400];
            describe(&sn.call, what, sizeof what);
            w->stats.stalls++;
            if (can_abort && reported == 0) {
                request(w, WD_STALL, sn.seq);
                snprintf(msg, sizeof msg,
                         "watchdog: %s has run for %.1f s without returning; aborting it", what,
                         (double)stuck / 1000.0);
            } else if (can_abort) {
                level = NH_LOG_ERROR;
                snprintf(msg, sizeof msg,
                         "watchdog: %s has run for %.1f s and cannot be aborted: JIT-compiled code "
                         "never runs the hook (see docs/hardening.md)",
                         what, (double)stuck / 1000.0);
            } else {
                snprintf(msg, sizeof msg, "watchdog: %s has run for %.1f s without returning%s",
                         what, (double)stuck / 1000.0,
                         sn.in_loop ? "" : " (before the loop runs: not aborted)");
            }
            reported++;
        }
        char exit_msg[600] = "";
        if (w->cfg.exit_ms && stuck >= w->cfg.exit_ms) {
            char what[400];
            describe(&sn.call, what, sizeof what);
            snprintf(
                exit_msg, sizeof exit_msg, "watchdog: %s has been stuck for %.1f s%s: exiting (%d)",
                what, (double)stuck / 1000.0,
                can_abort ? " and cannot be aborted (JIT-compiled code never runs the hook)" : "",
                NH_WATCHDOG_EXIT);
            exiting = 1;
        }
        atomic_store_explicit(&w->reading, 0, memory_order_release); /* the texts are copied */
        pthread_mutex_unlock(&w->mu);
        /* Log with the lock released: stderr may block, and the loop thread must not wait. */
        if (msg[0]) nh_log(level, "%s", msg);
        if (exiting) {
            nh_log(NH_LOG_ERROR, "%s", exit_msg);
            fflush(stderr);
            _exit(NH_WATCHDOG_EXIT); /* the loop thread is stuck: nothing can shut down cleanly */
        }
        pthread_mutex_lock(&w->mu);
    }
    pthread_mutex_unlock(&w->mu);
    return NULL;
}

/* ---- the loop thread's side ---- */

nh_watchdog_t *nh_watchdog_start(lua_State *L, const nh_watchdog_config_t *cfg) {
    nh_watchdog_t *w = calloc(1, sizeof *w);
    if (!w) return NULL;
    w->L = L;
    w->loop_thread = pthread_self(); /* called on the loop thread (watchdog.h) */
    w->cfg = *cfg;
    pthread_mutex_init(&w->mu, NULL);
    pthread_cond_init(&w->cond, NULL);
    lua_pushlightuserdata(L, (void *)&registry_key);
    lua_pushlightuserdata(L, w);
    lua_rawset(L, LUA_REGISTRYINDEX);
    signal_install(w); /* before the thread that sends it */
    int r = pthread_create(&w->thread, NULL, run, w);
    if (r != 0) {
        nh_log(NH_LOG_ERROR, "watchdog: cannot start its thread: %s", strerror(r));
        signal_remove(w);
        lua_pushlightuserdata(L, (void *)&registry_key);
        lua_pushnil(L);
        lua_rawset(L, LUA_REGISTRYINDEX);
        pthread_cond_destroy(&w->cond);
        pthread_mutex_destroy(&w->mu);
        free(w);
        return NULL;
    }
    return w;
}

void nh_watchdog_configure(nh_watchdog_t *w, const nh_watchdog_config_t *cfg) {
    if (!w) return;
    pthread_mutex_lock(&w->mu);
    w->cfg = *cfg;
    pthread_cond_signal(&w->cond);
    pthread_mutex_unlock(&w->mu);
}

void nh_watchdog_stop(nh_watchdog_t *w) {
    if (!w) return;
    pthread_mutex_lock(&w->mu);
    w->stop = 1;
    pthread_cond_signal(&w->cond);
    pthread_mutex_unlock(&w->mu);
    pthread_join(w->thread, NULL);
    signal_remove(w);
    lua_State *L = w->L;
    lua_sethook(L, NULL, 0, 0);
    lua_pushlightuserdata(L, (void *)&registry_key);
    lua_pushnil(L);
    lua_rawset(L, LUA_REGISTRYINDEX);
    pthread_cond_destroy(&w->cond);
    pthread_mutex_destroy(&w->mu);
    free(w);
}

void nh_watchdog_enter(nh_watchdog_t *w, nh_watchdog_mark_t *mark, const char *what,
                       uint64_t session, const char *route, size_t route_len) {
    if (!w) return;
    /* Every request passes here: no lock, no formatting and no copies (see `seq`). */
    mark->depth = atomic_load_explicit(&w->depth, RELAXED);
    mark->call = call_of(w);
    mark->memory_errors = w->stats.memory_errors; /* written on this thread only (the hook) */
    uint64_t s = publish_begin(w);
    set_call(w, &(nh_watchdog_call_t){what, route, session, route_len});
    atomic_store_explicit(&w->depth, mark->depth + 1, RELAXED);
    publish_end(w, s);
}

void nh_watchdog_leave(nh_watchdog_t *w, const nh_watchdog_mark_t *mark) {
    if (!w) return;
    uint64_t s = publish_begin(w);
    atomic_store_explicit(&w->depth, mark->depth, RELAXED);
    set_call(w, &mark->call); /* the outer call's again */
    publish_end(w, s);
    /* The call's strings end when this returns: not while the watchdog thread reads them. It
     * sets `reading` before it looks at seq, this published seq before it looks at `reading`. */
    atomic_thread_fence(memory_order_seq_cst);
    if (atomic_load_explicit(&w->reading, RELAXED)) {
        pthread_mutex_lock(&w->mu); /* it reads under mu: wait for it to finish */
        pthread_mutex_unlock(&w->mu);
    }
    size_t limit = w->cfg.memory_limit; /* cfg: written on this thread only */
    int outermost = mark->depth == 0 && atomic_load_explicit(&w->in_loop, RELAXED);
    if (!limit || !outermost) return;
    /* After each call from the loop: garbage over the limit is collected now rather than when
     * the collector gets round to it; live data over it is worth a warning. */
    if (heap_bytes(w->L) <= limit) return;
    /* At most every 50 ms, as the watchdog thread's requests: with live data over the limit, a
     * full collection after every message would cost every message one. */
    uint64_t t = now_ms();
    if (t - w->last_leave_gc_ms < 50) return;
    w->last_leave_gc_ms = t;
    lua_gc(w->L, LUA_GCCOLLECT, 0);
    size_t used = heap_bytes(w->L);
    if (used > limit && t - w->last_gc_warn_ms >= 10000) {
        w->last_gc_warn_ms = t;
        nh_log(NH_LOG_WARN,
               "Lua heap at %d KB after a full collection: live data is over lua_memory_limit "
               "(%d KB), so every handler that allocates will fail",
               (int)(used / 1024), (int)(limit / 1024));
    }
}

/* The rare writes take mu as well: the watchdog thread reads slice_route under it, and the
 * strings the loop's begin and end restore are not the ones a leave waits for. */
void nh_watchdog_loop_begin(nh_watchdog_t *w, nh_watchdog_mark_t *mark) {
    if (!w) return;
    pthread_mutex_lock(&w->mu);
    mark->depth = atomic_load_explicit(&w->depth, RELAXED);
    mark->in_loop = atomic_load_explicit(&w->in_loop, RELAXED);
    mark->call = call_of(w);
    uint64_t s = publish_begin(w);
    atomic_store_explicit(&w->depth, 0, RELAXED);
    atomic_store_explicit(&w->in_loop, 1, RELAXED);
    publish_end(w, s);
    pthread_mutex_unlock(&w->mu);
}

void nh_watchdog_loop_end(nh_watchdog_t *w, const nh_watchdog_mark_t *mark) {
    if (!w) return;
    pthread_mutex_lock(&w->mu);
    uint64_t s = publish_begin(w);
    atomic_store_explicit(&w->depth, mark->depth, RELAXED);
    atomic_store_explicit(&w->in_loop, mark->in_loop, RELAXED);
    set_call(w, &mark->call);
    publish_end(w, s);
    pthread_mutex_unlock(&w->mu);
}

void nh_watchdog_slice(nh_watchdog_t *w, uint64_t session, const char *route, size_t route_len) {
    if (!w) return;
    pthread_mutex_lock(&w->mu);
    uint64_t s = publish_begin(w);
    if (atomic_load_explicit(&w->depth, RELAXED) > 0) { /* its leave restores the outer name */
        if (route_len > sizeof w->slice_route) route_len = sizeof w->slice_route;
        if (route) memcpy(w->slice_route, route, route_len);
        set_call(w,
                 &(nh_watchdog_call_t){"task", route ? w->slice_route : NULL, session, route_len});
    }
    publish_end(w, s);
    pthread_mutex_unlock(&w->mu);
}

void nh_watchdog_tick(nh_watchdog_t *w) {
    if (!w) return;
    uint64_t s = atomic_load_explicit(&w->seq, RELAXED);
    atomic_store_explicit(&w->seq, s + 2, memory_order_release); /* nothing else changes */
}

void nh_watchdog_get_stats(nh_watchdog_t *w, nh_watchdog_stats_t *out) {
    memset(out, 0, sizeof *out);
    if (!w) return;
    pthread_mutex_lock(&w->mu);
    *out = w->stats;
    pthread_mutex_unlock(&w->mu);
}
