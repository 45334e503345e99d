/* host — the one struct that holds a running server: the loop, the Lua state, configuration,
 * listeners, sessions, timers and the per-turn flush. Everything mutable lives here.
 *
 * Life: nh_host_init() → Lua script registers and listens → the loop runs (lua/nano/host.lua,
 * through nano.core) → (signal or nano.shutdown) nh_host_stop() → the loop ends when every
 * handle is closed → nh_host_free(). Tests (nano.test) drive the same loop one turn at a time.
 */
#ifndef NH_HOST_H
#define NH_HOST_H

#include <stdint.h>
#include <uv.h>

/* the Lua state, opaque here: only lua_*.c include lua.h */
typedef struct lua_State lua_State;

#include "buffer.h"
#include "console.h"
#include "lua_watchdog.h"
#include "metrics.h"
#include "metrics_http.h"
#include "session.h"
#include "timer.h"
#include "wheel.h"

/* host.h names conn's types without including conn.h: the layers above the transports
 * (session.c) see no connection. */
typedef struct nh_host nh_host_t;
typedef struct nh_conn nh_conn_t;
typedef struct nh_drain nh_drain_t;
typedef struct nh_listener nh_listener_t;

typedef struct nh_config {
    uint64_t heartbeat_ms;         /* server heartbeat interval; silent > 2.5x this: closed */
    uint64_t handshake_timeout_ms; /* from accept to handshake ack */
    uint32_t max_packet;           /* largest packet body accepted */
    uint64_t max_ws_frame;         /* largest WebSocket frame payload accepted */
    size_t send_limit;             /* bytes queued per connection before it is cut off */
    uint32_t max_conns;            /* connections beyond this are refused (closed at accept) */
    int debug;                     /* log every message; error text to clients */
    nh_watchdog_config_t watchdog; /* stuck calls and the Lua memory limit (lua_watchdog.h) */
} nh_config_t;

/* Lua functions the core calls (registry refs; LUA_NOREF when unset). See lua_host.c. */
enum nh_hook {
    NH_HOOK_DISPATCH,  /* (session, type, id, route, payload, flags, thread, decoded [, true]) */
    NH_HOOK_HANDSHAKE, /* (session, body) -> response_json, accepted */
    NH_HOOK_CLOSED,    /* (session) */
    NH_HOOK_ORIGIN,    /* (listener_id, origin) -> bool */
    NH_HOOK_SIGNAL,    /* ("shutdown" | "reload") */
    NH_HOOK_FAILED,    /* (thread, error, traceback) -> handled: a dispatch thread's error */
    NH_HOOK_UNSENT,    /* (session, id, value, route, size): set with the dispatch hook */
    NH_HOOK_COUNT
};

typedef struct nh_session nh_session_t;

/* What a signal asks of the host's owner (nh_host_watch_signals). */
enum nh_host_signal {
    NH_SIGNAL_SHUTDOWN, /* SIGINT, SIGTERM */
    NH_SIGNAL_RELOAD,   /* SIGHUP */
};
typedef void (*nh_host_signal_cb)(nh_host_t *h, int what);

typedef struct nh_session_list {
    nh_session_t *head;
    uint32_t count;
} nh_session_list_t;

#define NH_READ_BUF_SIZE 65536
/* Idle dispatcher threads kept for reuse (about 1 KiB each): as many as handlers wait at once
 * in a busy server, so a burst of waiting handlers does not make threads for the GC. */
#define NH_IDLE_THREADS 8192

struct nh_host {
    uv_loop_t *loop;
    lua_State *L;
    nh_config_t cfg;
    nh_timers_t timers;
    nh_timer_t sweep; /* heartbeats, heartbeat and handshake timeouts */
    uv_prepare_t prepare;
    uv_check_t check;
    uv_signal_t sigint, sigterm, sighup;
    nh_chunk_pool_t pool;
    /* WebSocket connections' states given back between frames, for the next read (transport_ws.c:
     * linked through their first bytes, at most NH_WS_SPARE; freed by nh_ws_spare_free) */
    void *ws_spare;
    uint32_t nws_spare;
    /* connections with output queued since the last flush, oldest first (conn.c's mark_dirty):
     * dirty_tail is the link the next one goes into, valid while dirty is not NULL */
    nh_conn_t *dirty, **dirty_tail;
    nh_drain_t *draining; /* connections closing once their queue has left (conn.c's sweep) */
    nh_listener_t *listeners;
    nh_session_list_t sessions;
    /* the sessions' next heartbeat or timeout, by tick of the sweep (session.c) */
    nh_wheel_t session_wheel;
    uint64_t session_wheel_cfg[2]; /* the heartbeat_ms and handshake_timeout_ms it was built for */
    uint32_t nconns;
    uint64_t next_session_id;
    int next_listener_id;
    int hooks[NH_HOOK_COUNT];
    /* what sessions report upward (session.h); the Lua binding points it at the hooks above
     * (lua_dispatch.c), a C test may set its own */
    nh_session_events_t events;
    void *events_ud;
    int traceback_ref;
    /* The threads (coroutines) the dispatcher runs on (nh_host_handler_thread): all are kept in
     * a Lua table (registry ref); the idle ones also here, to be taken without touching Lua. */
    int threads_ref;
    /* core.set_predecode: JSON payloads are decoded in C before the dispatcher gets them, and
     * the dispatcher then gets false for the bytes: core.message_bytes(thread) makes their string
     * while that thread runs the message's dispatch and has not yielded (lua_dispatch.c) */
    int predecode_json;
    /* or, with a protobuf serializer, a request's payload decoded with the message type its route
     * has in this core types table (registry ref, LUA_NOREF: none; lua_protobuf.c), whose field
     * names are at predecode_pb_names_ref; the routes' types looked up there are cached in
     * pb_routes (lua_dispatch.c; emptied when the table changes) */
    int predecode_pb_ref, predecode_pb_names_ref;
    struct nh_pb_route_slot {
        const void *type; /* NULL: the route has no type (JSON) */
        uint8_t len;      /* the route's length; 0: an empty slot */
        char route[55];
    } pb_routes[16];
    /* the strings each message brings again, its route and its payload's keys (lua_strcache.h);
     * NULL without Lua, or when it could not be allocated */
    struct nh_strcache *strings;
    lua_State *msg_thread;
    const uint8_t *msg_bytes;
    size_t msg_len;
    int nidle_threads, idle_cap;
    lua_State **idle_threads; /* grows to the most handlers ever waiting at once, to a cap */
    int stopping;
    int signals_on;
    nh_host_signal_cb on_signal;
    uint64_t sweep_period;
    nh_watchdog_t *watchdog; /* NULL if its thread could not start */
    /* Set by the Lua side (lua_call.c) when a Lua state is attached: each loop turn, and after
     * the configuration changed (the watchdog's). NULL without Lua. */
    void (*on_turn)(nh_host_t *h);
    void (*on_config_changed)(nh_host_t *h);
    nh_metrics_t metrics;            /* counters for /metrics (metrics.h) */
    nh_metrics_http_t *metrics_http; /* nano.listen_metrics' listener, or NULL */
    nh_console_t *console;           /* the admin console's socket (console.h), or NULL */
    /* HTTP requests on WebSocket listeners waiting for a Lua route's answer (transport_ws.c),
     * and the last id given to one */
    void *http_waiting;
    uint64_t http_last_id;
    /* max_conns refusals since the last log line about them, and when that was (loop ms) */
    uint64_t refused, refused_logged_ms;
    /* accepts that failed (out of file descriptors, ...): in all, since the last log line about
     * them, and when that was (loop ms) */
    uint64_t accept_failed, accept_failed_unlogged, accept_failed_logged_ms;
    int reserve_fd; /* kept open to shed connections when out of descriptors (conn.c); -1 */
    /* a big queue was freed: give memory back to the system (at most once a second) */
    int trim_pending;
    uint64_t trimmed_ms;
    uint32_t flush_turns; /* nh_conn_flush_all calls, never 0: "within one turn" (send limit) */
    /* the turn's reads and writes in few system calls (io_batch.h), made at first use; NULL
     * while not tried, and where io_uring is missing or NANO_HOST_IO_URING=0 (io_batch_tried) */
    struct nh_io_batch *io_batch;
    int io_batch_tried;
    /* connections found readable this turn, read together after the poll (conn.c's
     * nh_conn_read_queued); an entry is NULL once its connection closed meanwhile. read_slots:
     * a buffer for each read of one batch. Both made with io_batch. */
    nh_conn_t **readable;
    uint32_t nreadable;
    uint8_t *read_slots;
    uint8_t readbuf[NH_READ_BUF_SIZE];
    uint8_t sealbuf[16384]; /* TLS: a flush's small segments gathered into one record */
};

/* Fills defaults and opens the loop handles. The host knows nothing of Lua: nh_lua_host_attach
 * (lua_binding.h) ties a Lua state to it afterwards; without one (C unit tests, which set
 * h->events themselves) there are no hooks and no watchdog. Returns 0, or a negative uv error
 * with nothing left open (close callbacks may still be pending: run the loop before closing it). */
int nh_host_init(nh_host_t *h, uv_loop_t *loop);
/* Watches SIGINT/SIGTERM (cb gets NH_SIGNAL_SHUTDOWN) and SIGHUP (NH_SIGNAL_RELOAD), each
 * logged first; a stop signal while the host is stopping already ends the process
 * (stop_signal.h). The host binary does, in-process tests don't. Returns 0 or a negative uv
 * error (nothing is watched then). */
int nh_host_watch_signals(nh_host_t *h, nh_host_signal_cb cb);
/* Applies cfg.heartbeat_ms to the sweep timer (call after changing it). */
void nh_host_config_changed(nh_host_t *h);
/* Stops accepting, closes every connection and the host's own handles; the loop then ends. */
void nh_host_stop(nh_host_t *h);
/* After the loop ended: frees what is left. */
void nh_host_free(nh_host_t *h);

/* Calls the function on top of the Lua stack with nargs arguments below it, protected, with a
 * traceback; on error logs "<what>: <error>" and returns -1 (stack balanced), else 0 with nres
 * results on the stack. The one path by which the core calls Lua. */
int nh_host_call_lua(nh_host_t *h, int nargs, int nres, const char *what);
/* The same for a handler: the watchdog names the session and route (route_len bytes) if the
 * call gets stuck. */
int nh_host_call_handler(nh_host_t *h, int nargs, int nres, const char *what, uint64_t session,
                         const char *route, size_t route_len);

/* Messages run on threads (Lua coroutines) the core resumes itself, so that a handler may wait
 * (yield) at no cost to those that do not: the Lua side needs no coroutine.resume per message.
 *
 * nh_host_handler_thread() returns an idle thread (a new one when none is idle), or NULL when
 * out of memory. The caller pushes a function and its nargs arguments onto that thread and calls
 * nh_host_resume_handler(), which resumes it (protected; the watchdog names session and route):
 *   - the function returned: returned(h, T, ctx) is called with its results on T's stack, when
 *     given, and the thread is idle again (its stack emptied); what returned() returned (0 with
 *     none): -1 says it could not do what the results asked (the caller answers for it).
 *   - it yielded (a handler waits): the thread now belongs to that wait; Lua resumes it later
 *     itself and hands it back with core.release_thread(thread, reusable) once it has finished
 *     or failed (task.lua); 0.
 *   - it raised: logged as "<what>: <error>" with the thread's traceback, the thread is
 *     dropped; -1. */
lua_State *nh_host_handler_thread(nh_host_t *h);
typedef int (*nh_returned_fn)(nh_host_t *h, lua_State *T, void *ctx);
int nh_host_resume_handler(nh_host_t *h, lua_State *T, int nargs, const char *what,
                           uint64_t session, const char *route, size_t route_len,
                           nh_returned_fn returned, void *ctx);
/* Gives a thread that finished after a wait back to the idle ones (reusable), or forgets it. */
void nh_host_release_thread(nh_host_t *h, lua_State *T, int reusable);

/* nh_host_t from the Lua state (stored in the registry at init). */
nh_host_t *nh_host_from_lua(lua_State *L);
/* The host of the process's only Lua state with a host, or NULL (none, or more than one): what
 * nh_host_from_lua answers first, for functions called without a lua_State (the FFI). */
nh_host_t *nh_host_sole(void);

#endif
