/* pg_client — see pg_client.h for the contract. */
#include "pg_client.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "resolve.h"

enum { PG_CONNECTING, PG_READY, PG_BUSY, PG_CLOSING };

/* libpq may replace the socket while connecting (another host of a list, an SSL retry), so a
 * poll handle belongs to one socket and lives in its own allocation; the connection is freed
 * when the last one has closed. */
typedef struct pg_poll {
    uv_poll_t poll;
    nh_pg_t *c;
} pg_poll_t;

struct nh_pg {
    uv_loop_t *loop;
    PGconn *conn;
    pg_poll_t *p; /* the current socket's poll; NULL when none */
    int fd;
    int polls_open;
    int state;
    int user_closed;
    nh_pg_events_t ev;
    void *data;
    PGresult *result;       /* the result kept for on_result while a query drains */
    nh_resolve_t *resolve;  /* the host name's lookup, while it runs */
    PQconninfoOption *opts; /* the parsed conninfo, kept for the lookup */
    char reason[256];
};

static void on_poll(uv_poll_t *hd, int status, int events);

/* libpq's messages span lines ("...unexpectedly\n\tThis probably means...\n"); ours are one
 * line, for logs. */
static void copy_msg(char *dst, size_t n, const char *prefix, const char *msg) {
    snprintf(dst, n, "%s%s", prefix, msg && *msg ? msg : "unknown error");
    size_t len = strlen(dst), w = 0;
    while (len > 0 && (dst[len - 1] == '\n' || dst[len - 1] == ' '))
        dst[--len] = '\0';
    for (size_t r = 0; r < len; r++) {
        if (dst[r] != '\n' && dst[r] != '\t')
            dst[w++] = dst[r];
        else if (w > 0 && dst[w - 1] != ' ')
            dst[w++] = ' ';
    }
    dst[w] = '\0';
}

static void maybe_gone(nh_pg_t *c) {
    if (c->state != PG_CLOSING || c->polls_open > 0 || c->resolve) return;
    if (c->conn) PQfinish(c->conn);
    c->conn = NULL;
    if (c->result) PQclear(c->result);
    c->ev.on_gone(c, c->data, c->reason);
    free(c);
}

static void on_poll_closed(uv_handle_t *hd) {
    pg_poll_t *p = hd->data;
    nh_pg_t *c = p->c;
    free(p);
    c->polls_open--;
    maybe_gone(c);
}

static void close_poll(nh_pg_t *c) {
    if (!c->p) return;
    uv_close((uv_handle_t *)&c->p->poll, on_poll_closed);
    c->p = NULL;
}

/* Ends the connection with a reason; a query in flight is told (unless the owner closed). */
static void fail(nh_pg_t *c, const char *prefix, const char *msg) {
    if (c->state == PG_CLOSING) return;
    int was = c->state;
    c->state = PG_CLOSING;
    copy_msg(c->reason, sizeof c->reason, prefix, msg);
    /* The poll goes first: libpq may already have closed the socket, and a callback may open a
     * new connection at once, which can get the same descriptor number. */
    close_poll(c);
    if (was == PG_CONNECTING && !c->user_closed) c->ev.on_connect(c, c->data, 0, c->reason);
    if (was == PG_BUSY && !c->user_closed) c->ev.on_result(c, c->data, NULL, c->reason);
    maybe_gone(c);
}

/* The connection keeps the loop alive only while it works (connecting, a query running): an
 * idle pooled connection does not hold nano-host up at shutdown. */
static void update_ref(nh_pg_t *c) {
    if (!c->p) return;
    if (c->state == PG_READY)
        uv_unref((uv_handle_t *)&c->p->poll);
    else
        uv_ref((uv_handle_t *)&c->p->poll);
}

/* Watches the connection's current socket for `events`, opening a poll for a new socket. */
static int watch(nh_pg_t *c, int events) {
    int fd = PQsocket(c->conn);
    if (fd < 0) return -1;
    if (c->p && fd != c->fd) close_poll(c);
    if (!c->p) {
        pg_poll_t *p = calloc(1, sizeof *p);
        if (!p) return -1;
        if (uv_poll_init(c->loop, &p->poll, fd) < 0) {
            free(p);
            return -1;
        }
        p->c = c;
        p->poll.data = p;
        c->p = p;
        c->fd = fd;
        c->polls_open++;
    }
    if (uv_poll_start(&c->p->poll, events, on_poll) < 0) return -1;
    update_ref(c);
    return 0;
}

/* libpq prints notices (WARNING: ..., NOTICE: ...) on stderr by default; a server's notices are
 * not errors of the query, so they are dropped. */
static void drop_notice(void *arg, const char *message) {
    (void)arg;
    (void)message;
}

static void connect_step(nh_pg_t *c) {
    switch (PQconnectPoll(c->conn)) {
    case PGRES_POLLING_READING:
        if (watch(c, UV_READABLE) < 0) fail(c, "connect: ", "cannot watch the socket");
        return;
    case PGRES_POLLING_WRITING:
        if (watch(c, UV_WRITABLE) < 0) fail(c, "connect: ", "cannot watch the socket");
        return;
    case PGRES_POLLING_OK:
        if (PQsetnonblocking(c->conn, 1) != 0 || watch(c, UV_READABLE) < 0) {
            fail(c, "connect: ", PQerrorMessage(c->conn));
            return;
        }
        c->state = PG_READY;
        update_ref(c);
        c->ev.on_connect(c, c->data, 1, NULL);
        return;
    default:
        fail(c, "connect: ", PQerrorMessage(c->conn));
    }
}

/* Reads what arrived; when the query's results are all in, hands them over. */
static void read_step(nh_pg_t *c) {
    if (!PQconsumeInput(c->conn)) {
        fail(c, "connection lost: ", PQerrorMessage(c->conn));
        return;
    }
    PGnotify *n;
    while ((n = PQnotifies(c->conn)) != NULL)
        PQfreemem(n); /* LISTEN is not offered */
    if (c->state == PG_READY) {
        if (PQstatus(c->conn) == CONNECTION_BAD)
            fail(c, "connection lost: ", PQerrorMessage(c->conn));
        return;
    }
    while (c->state == PG_BUSY && !PQisBusy(c->conn)) {
        PGresult *r = PQgetResult(c->conn);
        if (!r) {
            PGresult *res = c->result;
            c->result = NULL;
            c->state = PG_READY;
            update_ref(c);
            c->ev.on_result(c, c->data, res, res ? NULL : "no result");
            if (res) PQclear(res);
            return;
        }
        /* Keep the first error, else the last result. */
        if (c->result && PQresultStatus(c->result) == PGRES_FATAL_ERROR) {
            PQclear(r);
        } else {
            if (c->result) PQclear(c->result);
            c->result = r;
        }
        if (PQresultStatus(r) == PGRES_COPY_IN || PQresultStatus(r) == PGRES_COPY_OUT) {
            fail(c, "", "COPY is not supported by nano.pg");
            return;
        }
    }
    if (PQstatus(c->conn) == CONNECTION_BAD) fail(c, "connection lost: ", PQerrorMessage(c->conn));
}

static void flush_step(nh_pg_t *c) {
    int r = PQflush(c->conn);
    if (r < 0)
        fail(c, "connection lost: ", PQerrorMessage(c->conn));
    else if (watch(c, r == 1 ? UV_READABLE | UV_WRITABLE : UV_READABLE) < 0)
        fail(c, "", "cannot watch the socket");
}

static void on_poll(uv_poll_t *hd, int status, int events) {
    nh_pg_t *c = ((pg_poll_t *)hd->data)->c;
    if (c->state == PG_CLOSING || hd->data != c->p) return;
    if (status < 0) events = UV_READABLE | UV_WRITABLE; /* let libpq meet the error */
    if (c->state == PG_CONNECTING) {
        connect_step(c);
        return;
    }
    if (events & UV_WRITABLE) flush_step(c);
    if (c->state != PG_CLOSING && (events & UV_READABLE)) read_step(c);
}

static void gone_unseen(nh_pg_t *c, void *data, const char *reason) {
    (void)c;
    (void)data;
    (void)reason;
}

/* Starts libpq on conninfo, or on the parsed options plus hostaddr=ip once a name is resolved.
 * 0, or -1 with err filled. */
static int start_libpq(nh_pg_t *c, const char *conninfo, PQconninfoOption *opts, const char *ip,
                       char *err, size_t errlen) {
    if (opts) {
        const char *keys[64], *vals[64];
        int n = 0;
        for (PQconninfoOption *o = opts; o->keyword && n < 62; o++) {
            if (!o->val || strcmp(o->keyword, "hostaddr") == 0) continue;
            keys[n] = o->keyword;
            vals[n++] = o->val;
        }
        keys[n] = "hostaddr";
        vals[n++] = ip;
        keys[n] = vals[n] = NULL;
        c->conn = PQconnectStartParams(keys, vals, 0);
    } else {
        c->conn = PQconnectStart(conninfo);
    }
    if (c->conn) PQsetNoticeProcessor(c->conn, drop_notice, NULL);
    if (!c->conn || PQstatus(c->conn) == CONNECTION_BAD || watch(c, UV_WRITABLE) < 0) {
        copy_msg(err, errlen, "connect: ", c->conn ? PQerrorMessage(c->conn) : "out of memory");
        return -1;
    }
    return 0;
}

/* A host name that libpq would resolve itself, blocking: one name (not a list, a socket folder
 * or an abstract socket) and no hostaddr given. Returns the name, or NULL. */
static const char *name_to_resolve(PQconninfoOption *opts) {
    const char *host = NULL, *hostaddr = NULL;
    for (PQconninfoOption *o = opts; o->keyword; o++) {
        if (strcmp(o->keyword, "host") == 0) host = o->val;
        if (strcmp(o->keyword, "hostaddr") == 0) hostaddr = o->val;
    }
    if (!host || !*host || (hostaddr && *hostaddr)) return NULL;
    if (host[0] == '/' || host[0] == '@' || strchr(host, ',') || nh_resolve_is_numeric(host))
        return NULL;
    return host;
}

static void on_host(void *data, int status, const char *ip) {
    nh_pg_t *c = data;
    c->resolve = NULL;
    PQconninfoOption *opts = c->opts;
    c->opts = NULL;
    if (c->state == PG_CLOSING) { /* closed while resolving */
        PQconninfoFree(opts);
        maybe_gone(c);
        return;
    }
    char err[300];
    if (status < 0) {
        const char *host = name_to_resolve(opts);
        snprintf(err, sizeof err, "cannot resolve %.200s: %s", host ? host : "?",
                 uv_strerror(status));
        PQconninfoFree(opts);
        fail(c, "connect: ", err);
        return;
    }
    int r = start_libpq(c, NULL, opts, ip, err, sizeof err);
    PQconninfoFree(opts);
    if (r < 0) fail(c, "", err);
}

int nh_pg_connect(uv_loop_t *loop, const char *conninfo, const nh_pg_events_t *events, void *data,
                  nh_pg_t **out, char *err, size_t errlen) {
    char *perr = NULL;
    PQconninfoOption *opts = PQconninfoParse(conninfo, &perr);
    if (!opts) {
        copy_msg(err, errlen, "connect: ", perr ? perr : "out of memory");
        if (perr) PQfreemem(perr);
        return -1;
    }
    nh_pg_t *c = calloc(1, sizeof *c);
    if (!c) {
        PQconninfoFree(opts);
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    c->loop = loop;
    c->ev = *events;
    c->data = data;
    c->fd = -1;
    const char *host = name_to_resolve(opts);
    if (host) {
        /* libpq would resolve it with a blocking getaddrinfo: resolve it on libuv's pool, then
         * connect with hostaddr (host still names the server for TLS and .pgpass). */
        c->opts = opts;
        int r = nh_resolve_start(loop, host, on_host, c, &c->resolve);
        if (r < 0) {
            snprintf(err, errlen, "connect: cannot resolve %s: %s", host, uv_strerror(r));
            PQconninfoFree(opts);
            free(c);
            return -1;
        }
        *out = c;
        return 0;
    }
    PQconninfoFree(opts);
    if (start_libpq(c, conninfo, NULL, NULL, err, errlen) < 0) {
        /* The caller never sees this connection: a poll handle already open closes without
         * telling anyone (on_gone would reach an owner that has given up on it). */
        c->ev.on_gone = gone_unseen;
        c->user_closed = 1;
        c->state = PG_CLOSING;
        close_poll(c);
        maybe_gone(c);
        return -1;
    }
    *out = c;
    return 0;
}

int nh_pg_query(nh_pg_t *c, const char *sql, int nparams, const char *const *values, char *err,
                size_t errlen) {
    if (c->state != PG_READY) {
        snprintf(err, errlen, "%s",
                 c->state == PG_BUSY         ? "connection busy with another query"
                 : c->state == PG_CONNECTING ? "not connected yet"
                                             : "connection closed");
        return -1;
    }
    if (!PQsendQueryParams(c->conn, sql, nparams, NULL, values, NULL, NULL, 0)) {
        copy_msg(err, errlen, "", PQerrorMessage(c->conn));
        return -1;
    }
    c->state = PG_BUSY;
    flush_step(c);
    return 0;
}

typedef struct cancel_work {
    uv_work_t req;
    PGcancel *cancel;
} cancel_work_t;

static void cancel_run(uv_work_t *req) {
    cancel_work_t *w = (cancel_work_t *)req;
    char buf[256];
    PQcancel(w->cancel, buf, sizeof buf); /* failing is fine: the query then ends by itself */
}

static void cancel_done(uv_work_t *req, int status) {
    (void)status;
    cancel_work_t *w = (cancel_work_t *)req;
    PQfreeCancel(w->cancel);
    free(w);
}

int nh_pg_cancel(nh_pg_t *c) {
    if (c->state != PG_BUSY) return 0;
    cancel_work_t *w = calloc(1, sizeof *w);
    if (!w) return -1;
    w->cancel = PQgetCancel(c->conn);
    if (!w->cancel || uv_queue_work(c->loop, &w->req, cancel_run, cancel_done) < 0) {
        if (w->cancel) PQfreeCancel(w->cancel);
        free(w);
        return -1;
    }
    return 0;
}

void nh_pg_close(nh_pg_t *c) {
    if (c->state == PG_CLOSING) return;
    c->user_closed = 1;
    if (c->resolve) nh_resolve_cancel(c->resolve); /* on_host ends it, from the loop */
    fail(c, "", "closed by the client");
}
