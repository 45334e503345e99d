/* redis_client — see redis_client.h for the contract. */
#include "redis_client.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <hiredis/async.h>

#include "resolve.h"

struct nh_redis {
    uv_poll_t poll; /* embedded: its close callback frees the connection */
    uv_loop_t *loop;
    nh_resolve_t *resolve; /* the host name's lookup, while it runs */
    int port;
    char host[256];
    redisAsyncContext *ac;
    nh_redis_events_t ev;
    void *data;
    int events;      /* UV_READABLE | UV_WRITABLE hiredis wants */
    int poll_inited; /* the poll handle exists and must be closed */
    int closing;     /* nh_redis_close() was called: no callbacks but on_gone */
    int connected;   /* on_connect(ok) came */
    int pending;     /* commands waiting for their reply */
    char reason[400];
};

/* ---- the event-library glue hiredis calls (ac->ev) ------------------------------------------ */

static void on_poll(uv_poll_t *p, int status, int events) {
    nh_redis_t *c = p->data;
    if (!c->ac) return;
    /* A poll error (the socket went bad) is handed to hiredis as readiness: its read or write
     * then fails and it disconnects with the reason, instead of the connection hanging. */
    if (status < 0) events = UV_READABLE | UV_WRITABLE;
    if (c->ac && (events & UV_READABLE)) redisAsyncHandleRead(c->ac);
    if (c->ac && (events & UV_WRITABLE)) redisAsyncHandleWrite(c->ac);
}

static void set_events(nh_redis_t *c, int events) {
    c->events = events;
    if (!c->poll_inited || uv_is_closing((uv_handle_t *)&c->poll)) return;
    if (events)
        uv_poll_start(&c->poll, events, on_poll);
    else
        uv_poll_stop(&c->poll);
}

/* The connection keeps the loop alive only while it works (connecting, replies awaited): an
 * idle client does not hold nano-host up at shutdown, so it can be closed after the shutdown
 * hooks, which may still use it. */
static void update_ref(nh_redis_t *c) {
    if (!c->poll_inited || uv_is_closing((uv_handle_t *)&c->poll)) return;
    if (c->pending > 0 || !c->connected)
        uv_ref((uv_handle_t *)&c->poll);
    else
        uv_unref((uv_handle_t *)&c->poll);
}

static void add_read(void *d) {
    set_events(d, ((nh_redis_t *)d)->events | UV_READABLE);
}
static void del_read(void *d) {
    set_events(d, ((nh_redis_t *)d)->events & ~UV_READABLE);
}
static void add_write(void *d) {
    set_events(d, ((nh_redis_t *)d)->events | UV_WRITABLE);
}
static void del_write(void *d) {
    set_events(d, ((nh_redis_t *)d)->events & ~UV_WRITABLE);
}

static void on_poll_closed(uv_handle_t *hd) {
    nh_redis_t *c = hd->data;
    c->ev.on_gone(c, c->data, c->reason);
    free(c);
}

/* hiredis is freeing the context (after failing every pending callback): remember why, drop the
 * context and close the handle; on_gone runs from its close callback. */
static void cleanup(void *d) {
    nh_redis_t *c = d;
    if (!c->reason[0]) {
        const char *why = c->closing   ? "closed by the client"
                          : c->ac->err ? c->ac->errstr
                                       : "connection closed";
        snprintf(c->reason, sizeof c->reason, "%s", why);
    }
    c->ac = NULL;
    uv_close((uv_handle_t *)&c->poll, on_poll_closed);
}

/* ---- hiredis callbacks ---------------------------------------------------------------------- */

static void on_connected(const redisAsyncContext *ac, int status) {
    nh_redis_t *c = ac->data;
    if (c->closing) return;
    if (status != REDIS_OK) {
        snprintf(c->reason, sizeof c->reason, "connect: %s", ac->errstr);
        c->ev.on_connect(c, c->data, 0, c->reason);
        return;
    }
    c->connected = 1;
    update_ref(c);
    c->ev.on_connect(c, c->data, 1, NULL);
}

static void on_disconnected(const redisAsyncContext *ac, int status) {
    (void)ac;
    (void)status; /* cleanup() has already recorded the reason */
}

static void on_reply(redisAsyncContext *ac, void *reply, void *privdata) {
    nh_redis_t *c = ac->data;
    c->pending--;
    update_ref(c);
    if (c->closing) return;
    const char *err = NULL;
    if (!reply) err = ac->err ? ac->errstr : "connection closed before the reply";
    c->ev.on_reply(c, c->data, (uint64_t)(uintptr_t)privdata, reply, err);
}

static void on_sub(redisAsyncContext *ac, void *reply, void *privdata) {
    (void)privdata;
    nh_redis_t *c = ac->data;
    if (c->closing || !reply) return;
    c->ev.on_push(c, c->data, reply);
}

/* ---- the API -------------------------------------------------------------------------------- */

/* Creates the hiredis context for an address (or unix socket) and attaches the glue. */
static int attach(nh_redis_t *c, uv_loop_t *loop, const char *ip, const char *path, char *err,
                  size_t errlen) {
    redisAsyncContext *ac = path ? redisAsyncConnectUnix(path) : redisAsyncConnect(ip, c->port);
    if (!ac || ac->err) {
        snprintf(err, errlen, "connect: %s", ac ? ac->errstr : "out of memory");
        if (ac) redisAsyncFree(ac);
        return -1;
    }
    int r = uv_poll_init(loop, &c->poll, ac->c.fd);
    if (r < 0) {
        snprintf(err, errlen, "connect: %s", uv_strerror(r));
        redisAsyncFree(ac);
        return -1;
    }
    c->poll.data = c;
    c->poll_inited = 1;
    c->ac = ac;
    ac->data = c;
    ac->ev.data = c;
    ac->ev.addRead = add_read;
    ac->ev.delRead = del_read;
    ac->ev.addWrite = add_write;
    ac->ev.delWrite = del_write;
    ac->ev.cleanup = cleanup;
    redisAsyncSetConnectCallback(ac, on_connected);
    redisAsyncSetDisconnectCallback(ac, on_disconnected);
    /* hiredis asked for write readiness (connect in progress) before the glue was attached. */
    add_write(c);
    return 0;
}

/* The connection never got a socket: the last call, then the struct goes. */
static void end_unattached(nh_redis_t *c, const char *reason) {
    if (c->reason != reason) snprintf(c->reason, sizeof c->reason, "%.300s", reason);
    c->ev.on_gone(c, c->data, c->reason);
    free(c);
}

static void on_host(void *data, int status, const char *ip) {
    nh_redis_t *c = data;
    c->resolve = NULL;
    if (c->closing) {
        end_unattached(c, "closed by the client");
        return;
    }
    char err[400];
    if (status < 0)
        snprintf(err, sizeof err, "connect: cannot resolve %.255s: %.100s", c->host,
                 uv_strerror(status));
    if (status < 0 || attach(c, c->loop, ip, NULL, err, sizeof err) < 0) {
        c->ev.on_connect(c, c->data, 0, err);
        end_unattached(c, err);
    }
}

int nh_redis_connect(uv_loop_t *loop, const char *host, int port, const char *path,
                     const nh_redis_events_t *events, void *data, nh_redis_t **out, char *err,
                     size_t errlen) {
    if (!path && strlen(host) >= sizeof((nh_redis_t *)0)->host) {
        snprintf(err, errlen, "host name too long");
        return -1;
    }
    nh_redis_t *c = calloc(1, sizeof *c);
    if (!c) {
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    c->loop = loop;
    c->port = port;
    c->ev = *events;
    c->data = data;
    if (!path) snprintf(c->host, sizeof c->host, "%s", host);
    if (path || nh_resolve_is_numeric(host)) {
        if (attach(c, loop, host, path, err, errlen) < 0) {
            free(c);
            return -1;
        }
    } else {
        int r = nh_resolve_start(loop, host, on_host, c, &c->resolve);
        if (r < 0) {
            snprintf(err, errlen, "connect: cannot resolve %s: %s", host, uv_strerror(r));
            free(c);
            return -1;
        }
    }
    *out = c;
    return 0;
}

static int queue_command(nh_redis_t *c, redisCallbackFn *fn, void *privdata, int argc,
                         const char **argv, const size_t *lens, char *err, size_t errlen) {
    if (!c->ac || c->closing) {
        snprintf(err, errlen, "%s",
                 c->resolve && !c->closing ? "not connected yet" : "connection closed");
        return -1;
    }
    if (redisAsyncCommandArgv(c->ac, fn, privdata, argc, argv, lens) != REDIS_OK) {
        snprintf(err, errlen, "%s", c->ac->err ? c->ac->errstr : "connection is closing");
        return -1;
    }
    return 0;
}

int nh_redis_command(nh_redis_t *c, int argc, const char **argv, const size_t *lens, uint64_t id,
                     char *err, size_t errlen) {
    if (queue_command(c, on_reply, (void *)(uintptr_t)id, argc, argv, lens, err, errlen) < 0)
        return -1;
    c->pending++;
    update_ref(c);
    return 0;
}

int nh_redis_subscribe(nh_redis_t *c, int argc, const char **argv, const size_t *lens, char *err,
                       size_t errlen) {
    return queue_command(c, on_sub, NULL, argc, argv, lens, err, errlen);
}

void nh_redis_close(nh_redis_t *c) {
    if (c->closing) return;
    c->closing = 1;
    if (c->resolve) { /* no socket yet: on_host ends it, from the loop */
        nh_resolve_cancel(c->resolve);
        return;
    }
    /* Inside a hiredis callback this only marks the context; hiredis frees it (and so calls
     * cleanup) when the callback returns. */
    if (c->ac) redisAsyncFree(c->ac);
}
