#include "host.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "conn.h"
#include "log.h"
#include "session.h"
#include "stop_signal.h"
#include "transport_ws.h"

/* Flush what the previous callbacks queued, before the loop blocks (prepare) and after I/O
 * callbacks (check): one sendmsg per connection per turn, however many messages it got. The
 * check's flush writes what the I/O callbacks queued: the responses to every read of the turn
 * (conn.c's on_bytes leaves them here), a broadcast, a push, a handler resumed by a database's
 * reply. Without it they would wait for the closing callbacks and the due timers (Lua's, a
 * game's tick) before the next prepare. It does only that, and only when a connection is dirty:
 * the watchdog's tick once a turn is enough (a full second flush and tick cost ~70 instructions
 * a turn, a request's turn at a low load). */
static void on_prepare(uv_prepare_t *p) {
    nh_host_t *h = p->data;
    nh_conn_flush_all(h);
    if (h->on_turn) h->on_turn(h); /* the loop turns (the watchdog, lua_call.c) */
}
static void on_check(uv_check_t *c) {
    nh_host_t *h = c->data;
    if (h->nreadable) nh_conn_read_queued(h);
    if (h->dirty) nh_conn_flush_all(h);
}

static void on_sweep(nh_timer_t *t) {
    nh_host_t *h = t->data;
    uint64_t now = nh_timers_now(&h->timers);
    nh_conn_sweep(h, now);
    nh_session_sweep(h, now);
    nh_chunk_pool_shrink(&h->pool); /* a broadcast's blocks, once it has passed */
    if (nh_metrics_recalibrate(&h->metrics))
        nh_log(NH_LOG_WARN, "metrics: the TSC no longer agrees with CLOCK_MONOTONIC (a paused or "
                            "moved VM?): requests are timed by clock_gettime from now on");
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
    if (h->on_config_changed) h->on_config_changed(h);
    uint64_t p = sweep_period(h);
    if (p != h->sweep_period || !nh_timer_active(&h->sweep)) {
        h->sweep_period = p;
        if (!h->stopping) nh_timer_start(&h->timers, &h->sweep, p, p);
    }
    nh_session_sweep_configure(h); /* sessions' deadlines for the new period and timeouts */
}

int nh_host_init(nh_host_t *h, uv_loop_t *loop) {
    memset(h, 0, sizeof *h);
    h->loop = loop;
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
    /* then the connections with no session (plain HTTP on a WebSocket listener). The loop now
     * ends once the close callbacks have run: the host's own handles are unreferenced. */
    nh_conn_close_all(h, "server shutdown");
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
    nh_ws_spare_free(h);
    nh_metrics_free(&h->metrics);
    nh_conn_io_free(h);
}
