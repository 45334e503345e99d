#include "host.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <lauxlib.h>

#include "conn.h"
#include "log.h"
#include "session.h"
#include "stop_signal.h"

static const char host_key = 'h'; /* registry key: its address is unique */

nh_host_t *nh_host_from_lua(lua_State *L) {
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

int nh_host_call_lua(nh_host_t *h, int nargs, int nres, const char *what) {
    return nh_host_call_handler(h, nargs, nres, what, 0, NULL, 0);
}

/* Flush what the previous callbacks queued: before the loop blocks (prepare) and after I/O
 * callbacks (check). One writev per connection per turn, however many messages it got. */
static void on_prepare(uv_prepare_t *p) {
    nh_host_t *h = p->data;
    nh_conn_flush_all(h);
    nh_watchdog_tick(h->watchdog); /* the loop turns */
}
static void on_check(uv_check_t *c) {
    nh_host_t *h = c->data;
    nh_conn_flush_all(h);
    nh_watchdog_tick(h->watchdog);
}

static void on_sweep(nh_timer_t *t) {
    nh_host_t *h = t->data;
    uint64_t now = nh_timers_now(&h->timers);
    nh_conn_sweep(h, now);
    nh_session_sweep(h, now);
}

static uint64_t sweep_period(const nh_host_t *h) {
    /* Fine enough that timeouts land within a few percent of 2.5x the interval, coarse enough
     * that 10k idle sessions cost nothing: a quarter interval, at most once a second. */
    uint64_t p = h->cfg.heartbeat_ms / 4;
    if (p > 1000) p = 1000;
    if (p < 10) p = 10;
    return p;
}

void nh_host_config_changed(nh_host_t *h) {
    nh_watchdog_configure(h->watchdog, &h->cfg.watchdog);
    uint64_t p = sweep_period(h);
    if (p != h->sweep_period || !nh_timer_active(&h->sweep)) {
        h->sweep_period = p;
        if (!h->stopping) nh_timer_start(&h->timers, &h->sweep, p, p);
    }
    nh_session_sweep_configure(h); /* sessions' deadlines for the new period and timeouts */
}

int nh_host_init(nh_host_t *h, uv_loop_t *loop, lua_State *L) {
    memset(h, 0, sizeof *h);
    h->loop = loop;
    h->L = L;
    h->cfg = (nh_config_t){
        .heartbeat_ms = 30000,
        .handshake_timeout_ms = 10000,
        .max_packet = 64 * 1024,
        .max_ws_frame = 256 * 1024,
        .send_limit = 1024 * 1024,
        .max_conns = 100000,
        .debug = 0,
        /* On by default: a stuck handler stalls every player; 5 s is long for a game. */
        .watchdog = {.stall_ms = 5000, .abort = 1},
    };
    for (int i = 0; i < NH_HOOK_COUNT; i++)
        h->hooks[i] = LUA_NOREF;
    h->reserve_fd = -1;
    int r = nh_chunk_pool_init(&h->pool, 256);
    if (r) return r;
    if ((r = nh_metrics_init(&h->metrics))) goto no_metrics;
    if ((r = nh_timers_init(&h->timers, loop))) goto no_timers;
    h->sweep.cb = on_sweep;
    h->sweep.data = h;
    if ((r = uv_prepare_init(loop, &h->prepare))) goto no_prepare;
    h->prepare.data = h;
    if ((r = uv_check_init(loop, &h->check))) goto no_check;
    h->check.data = h;
    if ((r = uv_prepare_start(&h->prepare, on_prepare)) ||
        (r = uv_check_start(&h->check, on_check)))
        goto not_started;
    uv_unref((uv_handle_t *)&h->prepare); /* flushing alone is no reason to keep the loop alive */
    uv_unref((uv_handle_t *)&h->check);
    nh_host_config_changed(h);
    uv_unref((uv_handle_t *)&h->timers.uv); /* sessions and listeners keep the loop alive */
    if (!L) return 0; /* a host without Lua (C unit tests): no hooks, no watchdog */

    lua_pushlightuserdata(L, (void *)&host_key);
    lua_pushlightuserdata(L, h);
    lua_rawset(L, LUA_REGISTRYINDEX);
    lua_pushcfunction(L, traceback);
    h->traceback_ref = luaL_ref(L, LUA_REGISTRYINDEX);
    h->watchdog = nh_watchdog_start(L, &h->cfg.watchdog); /* NULL: runs without (logged) */
    return 0;

    /* What was set up is closed again (its close callbacks run with the loop's next turn). */
not_started:
    uv_close((uv_handle_t *)&h->check, NULL);
no_check:
    uv_close((uv_handle_t *)&h->prepare, NULL);
no_prepare:
    nh_timers_close(&h->timers, NULL);
no_timers:
    nh_metrics_free(&h->metrics);
no_metrics:
    nh_chunk_pool_free(&h->pool);
    return r;
}

static void on_signal(uv_signal_t *s, int signum) {
    nh_host_t *h = s->data;
    if (signum == SIGHUP) {
        nh_log(NH_LOG_INFO, "SIGHUP: reloading scripts");
        h->on_signal(h, NH_SIGNAL_RELOAD);
        return;
    }
    /* a stop begun otherwise (nano.shutdown()), then a signal: as a second signal would */
    if (h->stopping) nh_stop_signal_exit(signum);
    nh_log(NH_LOG_INFO, "%s: shutting down", strsignal(signum));
    h->on_signal(h, NH_SIGNAL_SHUTDOWN);
}

int nh_host_watch_signals(nh_host_t *h, nh_host_signal_cb cb) {
    uv_signal_t *sigs[] = {&h->sigint, &h->sigterm, &h->sighup};
    int nums[] = {SIGINT, SIGTERM, SIGHUP};
    h->on_signal = cb;
    for (int i = 0; i < 3; i++) {
        int r = uv_signal_init(h->loop, sigs[i]);
        if (!r) {
            sigs[i]->data = h;
            r = uv_signal_start(sigs[i], on_signal, nums[i]);
            if (r) uv_close((uv_handle_t *)sigs[i], NULL);
        }
        if (r) {
            while (i-- > 0)
                uv_close((uv_handle_t *)sigs[i], NULL);
            return r;
        }
        uv_unref((uv_handle_t *)sigs[i]);
    }
    h->signals_on = 1;
    /* over libuv's handlers, now installed: a second stop signal ends the process even while
     * Lua holds this thread (stop_signal.h) */
    int r = nh_stop_signal_install();
    if (r != 0) nh_log(NH_LOG_WARN, "cannot install the stop signal handler: %s", strerror(-r));
    return 0;
}

void nh_host_stop(nh_host_t *h) {
    if (h->stopping) return;
    h->stopping = 1;
    nh_metrics_http_stopping(h->metrics_http); /* /healthz 503, closes after its drain time */
    nh_console_close(h->console);
    while (h->listeners)
        nh_listener_close(h->listeners);
    nh_timer_stop(&h->timers, &h->sweep);
    for (nh_session_t *s = h->sessions.head; s; s = s->next)
        nh_session_close(s, 0, "server shutdown");
    /* Every connection has a session from accept on, so none is left open. The loop now ends
     * once the close callbacks have run: the host's own handles are unreferenced. */
}

static void close_if_open(uv_handle_t *hd) {
    if (!uv_is_closing(hd)) uv_close(hd, NULL);
}

void nh_host_free(nh_host_t *h) {
    nh_conn_flush_all(h);
    nh_timers_close(&h->timers, NULL);
    close_if_open((uv_handle_t *)&h->prepare);
    close_if_open((uv_handle_t *)&h->check);
    nh_metrics_http_close(h->metrics_http);
    nh_console_close(h->console);
    if (h->signals_on) {
        close_if_open((uv_handle_t *)&h->sigint);
        close_if_open((uv_handle_t *)&h->sigterm);
        close_if_open((uv_handle_t *)&h->sighup);
    }
    uv_run(h->loop, UV_RUN_DEFAULT); /* runs the close callbacks */
    nh_conn_release_reserve(h);
    nh_wheel_free(&h->session_wheel);
    nh_chunk_pool_free(&h->pool);
    nh_metrics_free(&h->metrics);
    if (!h->L) return;
    luaL_unref(h->L, LUA_REGISTRYINDEX, h->traceback_ref);
    for (int i = 0; i < NH_HOOK_COUNT; i++)
        luaL_unref(h->L, LUA_REGISTRYINDEX, h->hooks[i]);
    nh_watchdog_stop(h->watchdog); /* before the caller closes the Lua state it watches */
    h->watchdog = NULL;
}
