#include "conn.h"

#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <unistd.h>
#ifdef __GLIBC__
#include <malloc.h>
#endif

#include "host.h"
#include "io_batch.h"
#include "log.h"

/* A connection's uv handle carries this address as its data: nh_conn_close_all finds the
 * connections among the loop's handles without a list of its own (nothing per connection). */
static const char conn_tag = 'c';

/* ---- addresses ---- */

static int parse_addr(const char *addr, struct sockaddr_storage *ss) {
    char host[128];
    const char *colon = strrchr(addr, ':');
    if (!colon) return UV_EINVAL;
    size_t hlen = (size_t)(colon - addr);
    if (hlen >= sizeof host) return UV_EINVAL;
    memcpy(host, addr, hlen);
    host[hlen] = '\0';
    char *end;
    long port = strtol(colon + 1, &end, 10);
    if (*end || port < 0 || port > 65535 || colon[1] == '\0') return UV_EINVAL;
    if (host[0] == '[') { /* [v6]:port */
        size_t n = strlen(host);
        if (n < 2 || host[n - 1] != ']') return UV_EINVAL;
        host[n - 1] = '\0';
        return uv_ip6_addr(host + 1, (int)port, (struct sockaddr_in6 *)ss);
    }
    if (host[0] == '\0') strcpy(host, "0.0.0.0");
    if (strcmp(host, "localhost") == 0) strcpy(host, "127.0.0.1");
    return uv_ip4_addr(host, (int)port, (struct sockaddr_in *)ss);
}

int nh_parse_addr(const char *addr, struct sockaddr_storage *ss) {
    return parse_addr(addr, ss);
}

int nh_format_addr(const struct sockaddr *sa, char *out, size_t len) {
    char ip[64];
    if (sa->sa_family == AF_INET6) {
        const struct sockaddr_in6 *s6 = (const struct sockaddr_in6 *)sa;
        uv_ip6_name(s6, ip, sizeof ip);
        snprintf(out, len, "[%s]:%d", ip, ntohs(s6->sin6_port));
    } else {
        const struct sockaddr_in *s4 = (const struct sockaddr_in *)sa;
        uv_ip4_name(s4, ip, sizeof ip);
        snprintf(out, len, "%s:%d", ip, ntohs(s4->sin_port));
    }
    return 0;
}

int nh_conn_peer(const nh_conn_t *c, char *out, size_t len) {
    struct sockaddr_storage ss;
    socklen_t n = sizeof ss;
    if (c->fd < 0) return UV_EBADF;
    if (getpeername(c->fd, (struct sockaddr *)&ss, &n) != 0) return -errno;
    return nh_format_addr((struct sockaddr *)&ss, out, len);
}

const char *nh_conn_describe(const nh_conn_t *c, char *out, size_t len) {
    char peer[80] = "?";
    nh_conn_peer(c, peer, sizeof peer);
    uint64_t id = c->listener->transport->log_id ? c->listener->transport->log_id(c) : 0;
    snprintf(out, len, "%s %s session %llu", c->listener->transport->name, peer,
             (unsigned long long)id);
    return out;
}

/* A line about this connection: "<transport> <peer> session <id>: <message>". */
static void conn_log(const nh_conn_t *c, int level, const char *fmt, ...) NH_LOG_PRINTF(3, 4);
static void conn_log(const nh_conn_t *c, int level, const char *fmt, ...) {
    if (!nh_log_enabled(level)) return; /* getpeername only for a line that is kept */
    char who[160], msg[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    nh_log(level, "%s: %s", nh_conn_describe(c, who, sizeof who), msg);
}

/* ---- readiness ---- */

static void on_io(uv_poll_t *handle, int status, int events);

/* Asks libuv for what the connection waits for now: readability until it closes (while it
 * drains to close, what arrives is read and dropped, until the peer's end of the stream),
 * writability while the kernel's send buffer is full. Changes are rare (a stall, its end,
 * closing), which is as well: uv_poll_start takes the descriptor out of epoll and puts it back.
 * Nothing on a closing handle: uv_close has stopped it for good. */
static void watch(nh_conn_t *c) {
    if (uv_is_closing((uv_handle_t *)&c->poll)) return;
    int want = 0, now = 0;
    if (!(c->flags & (NH_CONN_CLOSING | NH_CONN_PEER_DONE))) want |= UV_READABLE;
    if (c->flags & NH_CONN_WRITING) want |= UV_WRITABLE;
    if (c->flags & NH_CONN_POLL_READ) now |= UV_READABLE;
    if (c->flags & NH_CONN_POLL_WRITE) now |= UV_WRITABLE;
    if (want == now) return;
    c->flags &= (uint16_t) ~(NH_CONN_POLL_READ | NH_CONN_POLL_WRITE);
    if (want & UV_READABLE) c->flags |= NH_CONN_POLL_READ;
    if (want & UV_WRITABLE) c->flags |= NH_CONN_POLL_WRITE;
    /* Neither fails on a handle of ours that is not closing (UV_EEXIST: another watcher) */
    if (want)
        (void)uv_poll_start(&c->poll, want, on_io);
    else
        (void)uv_poll_stop(&c->poll);
}

/* ---- closing ---- */

static void listener_release(nh_listener_t *l);

/* Every idle connection holds one (docs/benchmarks.md, "Connection scale"): with libuv's
 * uv_poll_t (160 bytes on 64-bit Linux) it is 280 bytes, the most a 288-byte malloc chunk holds. */
#if UINTPTR_MAX == UINT64_MAX
_Static_assert(sizeof(nh_conn_t) - sizeof(uv_poll_t) <= 120, "nh_conn_t grew (a malloc class)");
#endif

static void on_conn_closed(uv_handle_t *handle) {
    nh_conn_t *c = (nh_conn_t *)handle;
    nh_host_t *h = c->host;
    const nh_transport_t *t = c->listener->transport; /* the listener may go with this release */
    listener_release(c->listener);
    if (c->flags & NH_CONN_COUNTED) h->nconns--;
    if (c->flags & NH_CONN_COUNTED) nh_metrics_closed(&h->metrics, c->close_reason);
    if (t->on_gone) t->on_gone(c);
    if ((c->flags & NH_CONN_BIG) ||
        c->out.bytes + (nh_conn_wire(c) ? nh_conn_wire(c)->bytes : 0) >= NH_TRIM_AFTER)
        h->trim_pending = 1;
    nh_outq_free(&c->out);
    if (nh_conn_wire(c)) nh_outq_free(nh_conn_wire(c));
    nh_tls_free(c->tls);
    free(c);
}

static void unlink_dirty(nh_conn_t *c) {
    if (!(c->flags & NH_CONN_DIRTY)) return;
    for (nh_conn_t **p = &c->host->dirty; *p; p = &(*p)->dirty_next) {
        if (*p == c) {
            *p = c->dirty_next;
            if (!c->dirty_next) c->host->dirty_tail = p;
            break;
        }
    }
    c->flags &= (uint16_t)~NH_CONN_DIRTY;
}

/* A connection closing once its queue has left, in host->draining. */
struct nh_drain {
    nh_conn_t *c;
    nh_drain_t *prev, *next;
    uint64_t deadline_ms; /* closed at this time (nh_timers_now) if the queue has not left */
};

static void unlink_draining(nh_conn_t *c) {
    nh_drain_t *d = c->drain;
    if (!d) return;
    if (d->prev)
        d->prev->next = d->next;
    else if (c->host->draining == d)
        c->host->draining = d->next;
    if (d->next) d->next->prev = d->prev;
    free(d);
    c->drain = NULL;
}

/* A closing connection leaves the turn's read queue: its entry is emptied, not removed, as
 * nh_conn_read_queued may be walking the queue (a handler it ran closed this one). */
static void unqueue_read(nh_conn_t *c) {
    if (!(c->flags & NH_CONN_READ_QUEUED)) return;
    nh_host_t *h = c->host;
    for (uint32_t i = 0; i < h->nreadable; i++)
        if (h->readable[i] == c) h->readable[i] = NULL;
    c->flags &= (uint16_t)~NH_CONN_READ_QUEUED;
}

static void conn_close_now(nh_conn_t *c) {
    unlink_dirty(c);
    unlink_draining(c);
    unqueue_read(c);
    if (uv_is_closing((uv_handle_t *)&c->poll)) return;
    /* Cut off: SO_LINGER 0, so the kernel drops its send buffer too and the peer gets a RST. */
    if (c->flags & NH_CONN_CUT) {
        struct linger lg = {.l_onoff = 1, .l_linger = 0};
        (void)setsockopt(c->fd, SOL_SOCKET, SO_LINGER, &lg, sizeof lg);
    }
    /* The handle first: uv_close takes the descriptor out of epoll (and out of the turn's pending
     * events), so the number can be reused at once. */
    uv_close((uv_handle_t *)&c->poll, on_conn_closed);
    close(c->fd);
    c->fd = -1;
}

static void flush(nh_conn_t *c);

/* Bytes a connection holds for its peer: the transport's queue and, over TLS, the ciphertext. */
static size_t queued(const nh_conn_t *c) {
    return c->out.bytes + (nh_conn_wire(c) ? nh_conn_wire(c)->bytes : 0);
}

/* The queue the socket is written from. */
static nh_outq_t *wire_queue(nh_conn_t *c) {
    return c->tls ? nh_conn_wire(c) : &c->out;
}

void nh_conn_close(nh_conn_t *c, const char *reason) {
    if (c->flags & NH_CONN_CLOSING) return;
    c->flags |= NH_CONN_CLOSING;
    if (!c->close_reason) c->close_reason = (uint8_t)nh_metrics_reason_of(reason);
    if (reason && nh_log_enabled(NH_LOG_DEBUG)) { /* getpeername only for a line that is kept */
        char who[160];
        nh_log(NH_LOG_DEBUG, "%s closed: %s", nh_conn_describe(c, who, sizeof who), reason);
    }
    if (c->listener->transport->on_closing)
        c->listener->transport->on_closing(c, !(c->flags & NH_CONN_CUT));
    if (!(c->flags & NH_CONN_CUT)) {
        if (c->tls) nh_tls_shutdown(c->tls); /* close_notify after the transport's last frame */
        /* One last non-blocking try for what is queued (a kick, a close frame, an HTTP error): a
         * client that stops reading must not keep a closed connection alive. */
        if (!(c->flags & NH_CONN_WRITING)) flush(c);
    }
    conn_close_now(c);
}

void nh_conn_close_after_flush(nh_conn_t *c) {
    if (c->flags & NH_CONN_CLOSING) return;
    /* A peer that stops reading must not keep a closing connection (and its queue and its
     * max_conns slot) forever: the sweep closes it after this. */
    uint64_t deadline = nh_timers_now(&c->host->timers) + c->host->cfg.handshake_timeout_ms;
    if (c->drain) c->drain->deadline_ms = deadline;
    if (!c->close_after_flush) {
        nh_drain_t *d = malloc(sizeof *d);
        if (!d) {
            nh_conn_close(c, "out of memory");
            return;
        }
        d->c = c;
        d->prev = NULL;
        d->next = c->host->draining;
        d->deadline_ms = deadline;
        if (d->next) d->next->prev = d;
        c->host->draining = d;
        c->drain = d;
        c->close_after_flush = 1;
        if (c->listener->transport->on_draining) c->listener->transport->on_draining(c);
    }
    if (queued(c) == 0) nh_conn_close(c, NULL);
}

void nh_conn_set_close_reason(nh_conn_t *c, int reason) {
    if (!c->close_reason) c->close_reason = (uint8_t)reason;
}

static void close_if_conn(uv_handle_t *handle, void *reason) {
    if (handle->type == UV_POLL && handle->data == &conn_tag && !uv_is_closing(handle))
        nh_conn_close((nh_conn_t *)handle, reason);
}

void nh_conn_close_all(nh_host_t *h, const char *reason) {
    uv_walk(h->loop, close_if_conn, (void *)reason);
}

void nh_conn_sweep(nh_host_t *h, uint64_t now) {
    nh_drain_t *next;
    for (nh_drain_t *d = h->draining; d; d = next) {
        next = d->next; /* closing unlinks (and frees) d, and nothing else */
        if (now >= d->deadline_ms) nh_conn_close(d->c, "peer did not read its last packets");
    }
}

/* ---- writing ---- */

static void mark_dirty(nh_conn_t *c) {
    /* waiting for the socket: on_io flushes the rest when it is writable */
    if (c->flags & (NH_CONN_DIRTY | NH_CONN_WRITING)) return;
    c->flags |= NH_CONN_DIRTY;
    /* oldest first: the turn's flush answers the connections in the order their reads were
     * handled, so the first request of a turn does not wait for every other one's write */
    nh_host_t *h = c->host;
    if (!h->dirty) h->dirty_tail = &h->dirty;
    c->dirty_next = NULL;
    *h->dirty_tail = c;
    h->dirty_tail = &c->dirty_next;
}

/* The queue is empty: the per-burst bookkeeping starts over; a big queue's memory may go back
 * to the system. */
static void drained(nh_conn_t *c) {
    c->stalled_turn = 0;
    c->early_flush_at = 0;
    c->big_msg = 0;
    if (c->flags & NH_CONN_BIG) c->host->trim_pending = 1;
    c->flags &= (uint16_t)~NH_CONN_BIG;
    if (c->listener->transport->on_drained && !(c->flags & NH_CONN_CLOSING))
        c->listener->transport->on_drained(c);
}

#define NH_MAX_IOV 64

/* Moves the TLS layer's output (handshake records, alerts, encrypted data) to the wire queue. */
static int take_tls_output(nh_conn_t *c) {
    size_t pending;
    while ((pending = nh_tls_out_pending(c->tls)) > 0) {
        nh_buf_t *b = nh_buf_new(pending);
        if (!b) return UV_ENOMEM;
        b->len = (uint32_t)nh_tls_out_take(c->tls, b->data, pending);
        int r = b->len ? nh_outq_share(nh_conn_wire(c), b, 0, b->len) : 0;
        nh_buf_unref(b);
        if (r) return r;
    }
    return 0;
}

/* TLS: encrypts what the transport queued (once the handshake is done; until then it waits),
 * small segments gathered so that a turn's messages make few records. 0, or negative when the
 * connection must close (the reason is in nh_tls_error or out of memory). */
static int seal(nh_conn_t *c) {
    if (nh_tls_handshake_done(c->tls)) {
        uint8_t *stage = c->host->sealbuf;
        size_t staged = 0;
        while (c->out.bytes) {
            uv_buf_t iov[NH_MAX_IOV];
            unsigned n = nh_outq_iov(&c->out, 0, iov, NH_MAX_IOV);
            size_t done = 0;
            for (unsigned i = 0; i < n; i++) {
                const uint8_t *p = (const uint8_t *)iov[i].base;
                size_t len = iov[i].len;
                if (staged && staged + len > sizeof c->host->sealbuf) {
                    if (nh_tls_write(c->tls, stage, staged) < 0) return -1;
                    staged = 0;
                }
                if (len >= sizeof c->host->sealbuf) {
                    if (nh_tls_write(c->tls, p, len) < 0) return -1;
                } else {
                    memcpy(stage + staged, p, len);
                    staged += len;
                }
                done += len;
            }
            nh_outq_consume(&c->out, done);
        }
        if (staged && nh_tls_write(c->tls, stage, staged) < 0) return -1;
    }
    return take_tls_output(c);
}

/* A send's result as the flush takes it: the bytes taken, UV_EAGAIN when the socket took none
 * (full, or the kernel short of buffers), or a negative uv error (libuv's are negated errno
 * values on Unix). */
static int send_result(int32_t r) {
    if (r == -EAGAIN || r == -EWOULDBLOCK || r == -ENOBUFS) return UV_EAGAIN;
    return r; /* what a queue holds fits an int, as for uv_try_write */
}

/* A non-blocking send (io_batch.h's plain call). uv_buf_t is struct iovec's layout on Unix
 * (uv.h). */
static int try_write(nh_conn_t *c, const uv_buf_t *iov, unsigned n) {
    return send_result(nh_io_send_now(c->fd, (const struct iovec *)iov, n));
}

/* Drops every queued byte (the peer is gone, or cut off: nothing more is sent). */
static void drop_queued(nh_conn_t *c) {
    nh_outq_consume(&c->out, c->out.bytes);
    if (nh_conn_wire(c)) nh_outq_consume(nh_conn_wire(c), nh_conn_wire(c)->bytes);
}

/* A write failed: the peer is gone, and nothing more is sent. */
static void write_failed(nh_conn_t *c, int err) {
    drop_queued(c);
    if (!(c->flags & NH_CONN_CLOSING)) nh_conn_close(c, uv_strerror(err));
}

/* The kernel buffer is full: wait for the socket (on_io writes the rest). The queue may wait
 * long: its bytes leave the shared arena so that it pins only its own. */
static void wait_writable(nh_conn_t *c, nh_outq_t *q) {
    if (!c->stalled_turn) c->stalled_turn = c->host->flush_turns;
    nh_outq_detach(q); /* out of memory: stays in the arena, still correct */
    c->flags |= NH_CONN_WRITING;
    watch(c);
}

/* Everything queued has left. */
static void all_written(nh_conn_t *c) {
    drained(c);
    if (c->close_after_flush && !(c->flags & NH_CONN_CLOSING)) nh_conn_close(c, NULL);
}

/* Writes what the kernel takes now. `wait`: when the kernel takes no more, wait for the socket to
 * be writable (the turn's flush); otherwise leave the rest queued (a try while a handler's output
 * grows). */
static void flush_ex(nh_conn_t *c, int wait) {
    if (c->tls && seal(c) < 0) {
        nh_outq_consume(&c->out, c->out.bytes);
        if (!(c->flags & NH_CONN_CLOSING)) nh_conn_close(c, "tls: cannot encrypt");
        return;
    }
    nh_outq_t *q = wire_queue(c);
    while (q->bytes && !(c->flags & NH_CONN_WRITING)) {
        uv_buf_t iov[NH_MAX_IOV];
        unsigned n = nh_outq_iov(q, 0, iov, NH_MAX_IOV);
        size_t total = 0;
        for (unsigned i = 0; i < n; i++)
            total += iov[i].len;
        int r = try_write(c, iov, n);
        if (r == UV_EAGAIN) r = 0;
        if (r < 0) {
            write_failed(c, r);
            return;
        }
        nh_outq_consume(q, (size_t)r);
        if ((size_t)r == total) continue;       /* more segments than one sendmsg took */
        if (c->flags & NH_CONN_CLOSING) return; /* no waiting on a closing socket */
        if (!wait) break;
        wait_writable(c, q);
        return;
    }
    if (!queued(c)) all_written(c);
}

static void flush(nh_conn_t *c) {
    flush_ex(c, 1);
}

/* Reads queued in a turn at most (more are read at once), reads in one batch, and the bytes a
 * batched read takes: a game's messages are smaller, and a socket that fills it is read on at
 * once, into the host's big read buffer. */
#define NH_READ_QUEUE 4096
#define NH_READ_BATCH 128
#define NH_READ_SLOT 4096
_Static_assert(NH_READ_BATCH <= NH_IO_BATCH_MAX, "a read batch fits in an io_batch");

void nh_conn_io_free(nh_host_t *h) {
    nh_io_batch_free(h->io_batch);
    free(h->readable);
    free(h->read_slots);
    h->io_batch = NULL;
    h->readable = NULL;
    h->read_slots = NULL;
    h->nreadable = 0;
}

/* The batch a turn's reads and flush go through, made on first use with the read queue and its
 * buffers; NULL: one system call each. */
static nh_io_batch_t *io_batch(nh_host_t *h) {
    if (h->io_batch_tried) return h->io_batch;
    h->io_batch_tried = 1;
    const char *env = getenv("NANO_HOST_IO_URING");
    if (env && strcmp(env, "0") == 0) return NULL;
    int err = 0;
    h->io_batch = nh_io_batch_new(&err);
    if (h->io_batch) {
        h->readable = malloc(NH_READ_QUEUE * sizeof *h->readable);
        h->read_slots = malloc((size_t)NH_READ_BATCH * NH_READ_SLOT);
        if (!h->readable || !h->read_slots) {
            nh_conn_io_free(h);
            err = ENOMEM;
        }
    }
    if (!h->io_batch)
        nh_log(NH_LOG_INFO, "io_uring: %s; reads and writes go one system call each",
               strerror(err));
    return h->io_batch;
}

/* What a batched send's result leaves to do for its connection, once every result of the batch
 * is in (see flush_batched): what flush_ex does after its send. */
static void after_batched(nh_conn_t *c, int32_t res, size_t sent) {
    if (c->flags & NH_CONN_CLOSING) return; /* an earlier one's follow-up closed it */
    if (res == -ECANCELED) { /* the ring failed before this send: one by one, from the start */
        mark_dirty(c);
        return;
    }
    int r = send_result(res);
    if (r == UV_EAGAIN) r = 0;
    if (r < 0) {
        write_failed(c, r);
    } else if ((size_t)r < sent) {
        wait_writable(c, &c->out);
    } else if (queued(c)) { /* more segments than one send took, or a follow-up queued more */
        mark_dirty(c);
    } else {
        all_written(c);
    }
}

/* The turn's flush in as few system calls as the batch allows (io_batch.h): every dirty
 * connection's send is made at once, then each result is applied. Results are applied to the
 * queues first, then acted on: acting may run Lua (a close's callbacks), which may queue to, or
 * close, a connection whose send went out in the same batch, and a close writes what is left
 * of its queue, which must by then no longer hold what the batch sent. TLS connections (their
 * records are sealed first) go one at a time. */
static void flush_batched(nh_host_t *h, nh_io_batch_t *b) {
    nh_conn_t *conns[NH_IO_BATCH_MAX];
    size_t sent[NH_IO_BATCH_MAX];
    int32_t res[NH_IO_BATCH_MAX];
    while (h->dirty && nh_io_batch_ok(b)) {
        unsigned n = 0;
        while (h->dirty) {
            nh_conn_t *c = h->dirty;
            unsigned room;
            uv_buf_t *iov = (uv_buf_t *)nh_io_batch_next(b, NH_MAX_IOV, &room);
            if (!room) break;
            if (c->tls || !c->out.bytes || (c->flags & (NH_CONN_WRITING | NH_CONN_CLOSING))) {
                /* one at a time, and never while a batch waits: what it runs (a close's
                 * callbacks) must not write or close a connection whose send is in the batch */
                if (n) break;
                h->dirty = c->dirty_next;
                c->flags &= (uint16_t)~NH_CONN_DIRTY;
                flush(c);
                continue;
            }
            h->dirty = c->dirty_next;
            c->flags &= (uint16_t)~NH_CONN_DIRTY;
            unsigned k = nh_outq_iov(&c->out, 0, iov, room);
            size_t total = 0;
            for (unsigned i = 0; i < k; i++)
                total += iov[i].len;
            conns[n] = c;
            sent[n] = total;
            n = nh_io_batch_send(b, c->fd, k) + 1;
        }
        if (!n) continue;
        nh_io_batch_run(b, res);
        for (unsigned i = 0; i < n; i++)
            if (res[i] > 0) nh_outq_consume(&conns[i]->out, (size_t)res[i]);
        for (unsigned i = 0; i < n; i++)
            after_batched(conns[i], res[i], sent[i]);
    }
}

void nh_conn_flush_all(nh_host_t *h) {
    if (++h->flush_turns == 0) h->flush_turns = 1; /* 0: a connection that has not stalled */
    nh_io_batch_t *b = h->dirty ? io_batch(h) : NULL;
    if (b) flush_batched(h, b);
    while (h->dirty) {
        nh_conn_t *c = h->dirty;
        h->dirty = c->dirty_next;
        c->flags &= (uint16_t)~NH_CONN_DIRTY;
        flush(c);
    }
    if (h->trim_pending) {
        uint64_t now = uv_now(h->loop);
        if (now - h->trimmed_ms >= 1000) {
            h->trim_pending = 0;
            h->trimmed_ms = now;
#ifdef __GLIBC__
            /* glibc keeps freed memory in its arenas (and raises its mmap threshold after big
             * frees); a queue of a few MiB that drained or closed would stay in RSS for good. */
            malloc_trim(0);
#endif
        }
    }
}

/* after_queue's work when the queue may need it: see there. */
static int after_queue_slow(nh_conn_t *c, size_t added) {
    if (c->flags & NH_CONN_CLOSING) return 0; /* a last close frame: already going */
    size_t limit = c->host->cfg.send_limit;
    /* One message bigger than the limit by itself is not a slow reader: it gets room of its own
     * (it is bounded by the packet format). */
    if (added > limit && added > c->big_msg)
        c->big_msg = added < UINT32_MAX ? (uint32_t)added : UINT32_MAX;
    if (queued(c) >= NH_TRIM_AFTER) c->flags |= NH_CONN_BIG;
    /* A handler producing a lot: let a reading client drain it meanwhile (the kernel takes what
     * it can; nothing waits), instead of holding it all until the turn ends. */
    if (queued(c) >= c->early_flush_at + NH_EARLY_FLUSH && !(c->flags & NH_CONN_WRITING)) {
        flush_ex(c, 0);
        if (c->flags & NH_CONN_CLOSING) return 1;
        c->early_flush_at = queued(c);
    }
    if (queued(c) <= limit + c->big_msg) return 0;
    if (c->stalled_turn && c->stalled_turn != c->host->flush_turns)
        conn_log(c, NH_LOG_WARN, "send buffer over %zu bytes (client not reading); closing", limit);
    else /* the socket took everything until this turn: the burst itself is too big */
        conn_log(c, NH_LOG_WARN,
                 "send buffer over %zu bytes within one handler call or loop turn (%zu bytes "
                 "queued faster than the socket took them); closing",
                 limit, queued(c));
    drop_queued(c);
    c->flags |= NH_CONN_CUT;
    c->host->metrics.send_overflows++;
    nh_conn_close(c, "send buffer limit");
    return 1;
}

/* After `added` bytes were queued: tries to write while a burst grows, then enforces the send
 * limit. Returns 1 when the connection was cut off. Inline, the common case (a queue under all
 * three thresholds) costs a broadcast's push a few compares rather than a call. */
static inline int after_queue(nh_conn_t *c, size_t added) {
    size_t q = queued(c);
    if (q <= c->host->cfg.send_limit && q < NH_TRIM_AFTER && q < c->early_flush_at + NH_EARLY_FLUSH)
        return 0;
    return after_queue_slow(c, added);
}

/* Bodies at least this big are referenced rather than copied when the caller shares them (a
 * smaller one only when nothing goes before it and the queue is not detached: see below). */
#define NH_SHARE_MIN 256

static inline __attribute__((always_inline)) int send_queued(nh_conn_t *c, size_t len) {
    c->host->metrics.bytes[NH_MD_OUT] += len;
    mark_dirty(c);
    return after_queue(c, len) ? UV_ENOBUFS : 0;
}

/* Any message: the transport's frame header, then the head, then the body (referenced or
 * copied). */
static __attribute__((noinline)) int send_any(nh_conn_t *c, const uint8_t *head, size_t head_len,
                                              nh_buf_t *shared, const uint8_t *body,
                                              size_t body_len) {
    uint8_t pre[16 + NH_PKT_HEADER_LEN + NH_MSG_MAX_HEADER];
    size_t n = 0;
    if (c->listener->transport->frame_header)
        n = c->listener->transport->frame_header(c, pre, head_len + body_len);
    if (head_len > sizeof pre - n) return UV_EINVAL;
    if (head_len) memcpy(pre + n, head, head_len);
    n += head_len;
    /* a framed push (WebSocket) to a gathering queue: header and packet appended together */
    if (n && !head_len && nh_outq_gather2(&c->out, pre, n, body, body_len))
        return send_queued(c, n + body_len);
    int r;
    /* A shared body is referenced when it is big, or when nothing goes before it (a broadcast's
     * whole packet over raw TCP): one segment either way, and no copy. Not into a detached
     * (stalled) queue: small references there would each pin a buffer and a segment, more than
     * the bytes the send limit counts. */
    if (shared && (body_len >= NH_SHARE_MIN || (n == 0 && !c->out.detached))) {
        r = n ? nh_outq_copy(&c->out, pre, n) : 0;
        if (!r) r = nh_outq_share(&c->out, shared, (size_t)(body - shared->data), body_len);
    } else {
        r = nh_outq_copy2(&c->out, pre, n, body, body_len);
    }
    if (r) {
        nh_conn_close(c, "out of memory");
        return r;
    }
    return send_queued(c, n + body_len);
}

int nh_conn_send(nh_conn_t *c, const uint8_t *head, size_t head_len, nh_buf_t *shared,
                 const uint8_t *body, size_t body_len) {
    if ((c->flags & NH_CONN_CLOSING) || c->close_after_flush) return UV_EPIPE;
    /* A broadcast's push to a member whose pushes pile up between two writes: the packet
     * appended to the queue's gather block, ~80 instructions a push less than send_any
     * (docs/benchmarks.md, twelfth pass). Raw TCP only, so that this path calls nothing before
     * it knows it is taken; a framed packet is gathered in send_any. */
    if (!head_len && !c->listener->transport->frame_header &&
        nh_outq_gather(&c->out, body, body_len))
        return send_queued(c, body_len);
    return send_any(c, head, head_len, shared, body, body_len);
}

int nh_conn_send_raw_shared(nh_conn_t *c, nh_buf_t *b, size_t off, size_t len) {
    if (uv_is_closing((uv_handle_t *)&c->poll)) return UV_EPIPE;
    int r = nh_outq_share(&c->out, b, off, len);
    return r ? r : send_queued(c, len);
}

int nh_conn_send_raw(nh_conn_t *c, const void *data, size_t len) {
    if (uv_is_closing((uv_handle_t *)&c->poll)) return UV_EPIPE;
    int r = nh_outq_copy(&c->out, data, len);
    return r ? r : send_queued(c, len);
}

/* ---- reading ---- */

static void tls_failed(nh_conn_t *c, const char *what) {
    conn_log(c, NH_LOG_INFO, "tls: %s; closing", what);
    nh_conn_close(c, "tls");
}

/* Ciphertext from the socket: into the TLS layer, and what it decrypts to the transport. The
 * host's read buffer is free again once fed (the TLS layer copied it), so plaintext goes there. */
static void tls_read(nh_conn_t *c, const uint8_t *data, size_t len) {
    if (nh_tls_feed(c->tls, data, len) < 0) {
        tls_failed(c, nh_tls_error(c->tls));
        return;
    }
    long n;
    while (!(c->flags & NH_CONN_CLOSING) &&
           (n = nh_tls_read(c->tls, c->host->readbuf, sizeof c->host->readbuf)) != 0) {
        if (n == NH_TLS_CLOSED) {
            nh_conn_close(c, "peer closed (close_notify)");
            return;
        }
        if (n < 0) {
            tls_failed(c, nh_tls_error(c->tls));
            return;
        }
        if (c->listener->transport->on_read(c, c->host->readbuf, (size_t)n) < 0) {
            nh_conn_close(c, "bad input");
            return;
        }
    }
}

/* Bytes the socket gave: decrypted (TLS) and handed to the transport. What they produced (the
 * responses, queued) leaves with the turn's flush, once every ready connection has been read and
 * handled (host.c's check callback), in the order the reads were handled: the handling of all of
 * them and the writes of all of them each run back to back, their code and data warm, where a
 * write after each read had the kernel's send path and nano-host's own take turns in the caches
 * (CPU per request 2-3 % lower flat out, 4-7 % at 5,000 requests/s; docs/benchmarks.md, 21st
 * pass). */
static void on_bytes(nh_conn_t *c, uint8_t *data, size_t len) {
    c->host->metrics.bytes[NH_MD_IN] += len;
    if (c->tls) {
        tls_read(c, data, len);
        /* what the TLS layer wrote by itself (handshake records, alerts) leaves with the rest */
        if (!(c->flags & NH_CONN_CLOSING) && nh_tls_out_pending(c->tls)) mark_dirty(c);
    } else if (c->listener->transport->on_read(c, data, len) < 0) {
        nh_conn_close(c, "bad input");
    }
}

/* Reads a full buffer at most this many times a turn: a peer that sends faster than the host
 * handles waits for the next turn, with every other connection. */
#define NH_READS_PER_TURN 16

/* Reading until the connection closes or drains to close. */
static inline int reading(const nh_conn_t *c) {
    return !(c->flags & NH_CONN_CLOSING) && !c->close_after_flush;
}

/* One recv (not read(2), whose file layer costs more; docs/benchmarks.md, fifteenth pass) into
 * the host's one read buffer, which each read's handling consumes (decoded, or copied into a
 * partial packet's buffer) before the next. Returns the bytes, or a negative errno. */
static int32_t recv_socket(nh_conn_t *c) {
    return nh_io_recv_now(c->fd, c->host->readbuf, sizeof c->host->readbuf);
}

/* What one receive into buf (cap bytes) got, for a reading connection, handed on: the peer's end
 * or an error closes. Returns 1 when the socket may hold more (the receive filled buf). */
static int received(nh_conn_t *c, int32_t r, uint8_t *buf, size_t cap) {
    if (r < 0) {
        if (r != -EAGAIN && r != -EWOULDBLOCK) nh_conn_close(c, uv_strerror(r));
        return 0;
    }
    if (r == 0) {
        nh_conn_close(c, "peer closed");
        return 0;
    }
    on_bytes(c, buf, (size_t)r);
    return reading(c) && (size_t)r == cap;
}

/* The socket is readable: what it holds goes to the transport. */
static void read_socket(nh_conn_t *c) {
    for (int i = 0; i < NH_READS_PER_TURN; i++)
        if (!received(c, recv_socket(c), c->host->readbuf, sizeof c->host->readbuf)) return;
}

/* The turn's reads, queued by on_io: for a connection still reading, queues it and returns 1;
 * 0 when it must be read now (no batch, or the queue is full). */
static int queue_read(nh_conn_t *c) {
    nh_host_t *h = c->host;
    if (c->flags & NH_CONN_READ_QUEUED) return 1; /* a second poll in the same turn */
    if (h->nreadable == NH_READ_QUEUE || !io_batch(h) || !nh_io_batch_ok(h->io_batch)) return 0;
    h->readable[h->nreadable++] = c;
    c->flags |= NH_CONN_READ_QUEUED;
    return 1;
}

static void drop_input(nh_conn_t *c);

/* A batched read's result, for a connection that was reading when the batch was made. */
static void after_read(nh_conn_t *c, int32_t r, uint8_t *buf) {
    if (r == -ECANCELED) { /* the ring failed before this read */
        if (reading(c)) read_socket(c);
        return;
    }
    if (!reading(c)) { /* what ran before it closed it, or made it drain: its input is dropped */
        if (r > 0) c->host->metrics.bytes[NH_MD_IN] += (uint64_t)r;
        if (c->flags & NH_CONN_CLOSING) return;
        if (r >= 0) {
            /* draining: reads on to the end, then stops watching for input */
            if (!(c->flags & NH_CONN_PEER_DONE)) drop_input(c);
        } else if (r != -EAGAIN && r != -EWOULDBLOCK) {
            nh_conn_close(c, uv_strerror(r));
        }
        return;
    }
    if (received(c, r, buf, NH_READ_SLOT)) read_socket(c); /* the socket may hold more */
}

void nh_conn_read_queued(nh_host_t *h) {
    nh_io_batch_t *b = h->io_batch;
    int32_t res[NH_READ_BATCH];
    int idx[NH_READ_BATCH];
    /* Nothing is queued meanwhile: on_io runs in the poll, and this after it. */
    uint32_t total = h->nreadable;
    for (uint32_t start = 0; start < total; start += NH_READ_BATCH) {
        nh_conn_t **q = h->readable + start;
        uint32_t n = total - start < NH_READ_BATCH ? total - start : NH_READ_BATCH;
        for (uint32_t i = 0; i < n; i++) {
            idx[i] = -1;
            if (q[i] && reading(q[i]) && nh_io_batch_ok(b))
                idx[i] = (int)nh_io_batch_recv(b, q[i]->fd, h->read_slots + i * NH_READ_SLOT,
                                               NH_READ_SLOT);
        }
        if (nh_io_batch_count(b)) nh_io_batch_run(b, res);
        /* Each result is handled in turn, and what a handler does may close a connection
         * further on (its entry is then NULL: its bytes, read already, are dropped). */
        for (uint32_t i = 0; i < n; i++) {
            nh_conn_t *c = q[i];
            if (!c) continue;
            q[i] = NULL;
            c->flags &= (uint16_t)~NH_CONN_READ_QUEUED;
            if (idx[i] >= 0)
                after_read(c, res[idx[i]], h->read_slots + i * NH_READ_SLOT);
            else if (reading(c))
                read_socket(c);
        }
    }
    h->nreadable = 0;
}

/* Closing once the queue has left: what the peer still sends is read and dropped (counted, not
 * handled), so that the socket holds no unread input when it closes. The kernel answers a close
 * with unread input by a RST, which also drops what the peer has not read yet: the last packets
 * (a kick, a WebSocket close frame, an HTTP reply) the drain was for. The peer's end of the stream
 * stops it (the peer may still read); an error closes now (nothing can be delivered). */
static void drop_input(nh_conn_t *c) {
    for (int i = 0; i < NH_READS_PER_TURN; i++) {
        int32_t n = recv_socket(c);
        if (n > 0) {
            c->host->metrics.bytes[NH_MD_IN] += (uint64_t)n;
            if ((size_t)n < sizeof c->host->readbuf) return;
            continue;
        }
        if (n == -EAGAIN || n == -EWOULDBLOCK) return;
        if (n < 0) {
            nh_conn_close(c, uv_strerror(n));
            return;
        }
        c->flags |= NH_CONN_PEER_DONE;
        watch(c);
        return;
    }
}

/* Asks for the memory handling this event will touch: the connection's own fields and the first
 * two cache lines of the transport's state (a session's per-message fields: session.h). A
 * connection's next message comes long after its last (a player's few a second, among thousands),
 * by when these lines have left the cache; asked for together, before the recv, their loads
 * overlap each other and the system call instead of stalling one after another once it has
 * returned (docs/benchmarks.md, sixteenth pass). */
static inline void prefetch_for_io(const nh_conn_t *c) {
    const char *f = (const char *)&c->host; /* the fields after the poll handle */
    __builtin_prefetch(f);
    __builtin_prefetch(f + 64);
    __builtin_prefetch((const char *)(c + 1) - 1);
    const char *t = c->tstate;
    if (t) {
        __builtin_prefetch(t);
        __builtin_prefetch(t + 64);
    }
}

static void on_io(uv_poll_t *handle, int status, int events) {
    nh_conn_t *c = (nh_conn_t *)handle;
    prefetch_for_io(c);
    if (status < 0) {
        /* An error on the socket (POLLERR: a reset, usually); libuv has stopped watching it.
         * What the peer sent before is still read, then the read says what happened. */
        c->flags &= (uint16_t) ~(NH_CONN_POLL_READ | NH_CONN_POLL_WRITE);
        if (reading(c)) read_socket(c);
        if (!(c->flags & NH_CONN_CLOSING)) {
            int err = 0;
            socklen_t len = sizeof err;
            if (getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &err, &len) != 0 || err == 0) err = EIO;
            nh_conn_close(c, uv_strerror(-err));
        }
        return;
    }
    if (events & UV_WRITABLE) {
        c->flags &= (uint16_t)~NH_CONN_WRITING;
        flush(c); /* waits again when the kernel takes only part */
        if (c->flags & NH_CONN_CLOSING) return;
        watch(c);
    }
    /* a hang-up alone comes without UV_READABLE: the read finds the end */
    if (!(events & UV_READABLE) && (events & UV_WRITABLE)) return;
    if (reading(c)) {
        if (!queue_read(c)) read_socket(c);
    } else if (!(c->flags & (NH_CONN_CLOSING | NH_CONN_PEER_DONE))) {
        drop_input(c);
    }
}

/* ---- accepting ---- */

/* Out of descriptors, the pending connections cannot be accepted, and the listener would stay
 * readable (a busy loop): free the reserve descriptor, accept and close them (the clients see
 * the connection closed at once), take the reserve again. Returns the connections shed. */
static uint64_t shed_pending(nh_host_t *h, nh_listener_t *l) {
    if (h->reserve_fd >= 0) close(h->reserve_fd);
    h->reserve_fd = -1;
    uint64_t n = 0;
    for (int i = 0; i < 1024; i++) { /* bounded: a flood is shed over several loop turns */
        int fd = accept(l->fd, NULL, NULL);
        if (fd < 0) break;
        close(fd);
        n++;
    }
    h->reserve_fd = open("/dev/null", O_RDONLY | O_CLOEXEC);
    return n;
}

static void accept_failed(nh_listener_t *l, int status) {
    nh_host_t *h = l->host;
    uint64_t n = 1;
    if (status == UV_EMFILE || status == UV_ENFILE) {
        n = shed_pending(h, l);
        if (!n) return; /* nothing was pending any more (or no reserve to shed with) */
    }
    h->accept_failed += n;
    h->accept_failed_unlogged += n;
    /* A flood must not flood the log as well: one line, then at most one a second. */
    uint64_t now = uv_now(h->loop);
    if (h->accept_failed_logged_ms && now - h->accept_failed_logged_ms < 1000) return;
    nh_log(NH_LOG_WARN, "accept on %s://%s: %s; %llu connection(s) dropped (%llu in all)%s",
           l->transport->name, l->bound, uv_strerror(status),
           (unsigned long long)h->accept_failed_unlogged, (unsigned long long)h->accept_failed,
           status == UV_EMFILE || status == UV_ENFILE
               ? ": out of file descriptors (raise ulimit -n, or lower max_conns)"
               : "");
    h->accept_failed_unlogged = 0;
    h->accept_failed_logged_ms = now ? now : 1;
}

void nh_conn_release_reserve(nh_host_t *h) {
    if (h->reserve_fd >= 0) close(h->reserve_fd);
    h->reserve_fd = -1;
}

/* A socket accepted on l: refused (stopping, max_conns), or a connection that reads. */
static void on_accepted(nh_listener_t *l, int fd) {
    nh_host_t *h = l->host;
    if (h->stopping || (h->cfg.max_conns && h->nconns >= h->cfg.max_conns)) {
        /* A flood of connections at the limit must not flood the log as well: one line, then at
         * most one a second with the count since. */
        uint64_t now = uv_now(h->loop);
        if (!h->stopping && ++h->refused && now - h->refused_logged_ms >= 1000) {
            nh_log(NH_LOG_WARN, "%s://%s: %u connections (max_conns); refused %llu new one(s)",
                   l->transport->name, l->bound, h->nconns, (unsigned long long)h->refused);
            h->refused = 0;
            h->refused_logged_ms = now;
        }
        close(fd);
        return;
    }
    /* Over TLS the wire queue follows the struct; a plain connection has none. */
    nh_conn_t *c = calloc(1, sizeof *c + (l->tls ? sizeof(nh_outq_t) : 0));
    int r = c ? uv_poll_init(h->loop, &c->poll, fd) : UV_ENOMEM;
    if (r) { /* no handle: nothing to close but the socket */
        nh_log(NH_LOG_ERROR, "accept: %s", uv_strerror(r));
        close(fd);
        free(c);
        return;
    }
    c->poll.data = (void *)&conn_tag;
    c->fd = fd;
    c->host = h;
    c->listener = l;
    l->conns++;
    nh_outq_init(&c->out, &h->pool);
    if (l->tls) {
        c->flags |= NH_CONN_WIRE;
        nh_outq_init(nh_conn_wire(c), &h->pool);
    }
    h->nconns++;
    c->flags |= NH_CONN_COUNTED;
    nh_metrics_accepted(&h->metrics, c->listener->transport->name);
    int one = 1;
    (void)setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    if (l->tls && !(c->tls = nh_tls_new(l->tls, NULL))) {
        nh_conn_close(c, "out of memory");
        return;
    }
    if (c->listener->transport->on_open(c) < 0) {
        nh_conn_close(c, "open failed");
        return;
    }
    watch(c); /* nothing when on_open closed it */
}

/* Accepts at most this many connections a turn (the rest on the next: the listener stays
 * readable), so that a flood of them takes turns with the connections already open. */
#define NH_ACCEPTS_PER_TURN 128

static void on_listener_io(uv_poll_t *handle, int status, int events) {
    nh_listener_t *l = (nh_listener_t *)handle;
    (void)events;
    if (status < 0) { /* POLLERR on a listening socket; libuv has stopped watching it */
        nh_log(NH_LOG_ERROR, "%s://%s: error on the listening socket; no longer accepting",
               l->transport->name, l->bound);
        return;
    }
    for (int i = 0; i < NH_ACCEPTS_PER_TURN && !uv_is_closing((uv_handle_t *)handle); i++) {
        int fd = accept4(l->fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd < 0) {
            if (errno == EAGAIN || errno == EWOULDBLOCK) return;
            if (errno == EINTR || errno == ECONNABORTED) continue; /* that one is gone: the next */
            accept_failed(l, -errno);
            return;
        }
        on_accepted(l, fd);
    }
}

static void listener_free(nh_listener_t *l) {
    nh_tls_ctx_unref(l->tls);
    if (l->opts_free) l->opts_free(l->opts);
    free(l);
}

static void listener_release(nh_listener_t *l) {
    if (--l->conns == 0 && l->handle_closed) listener_free(l);
}

static void on_listener_closed(uv_handle_t *handle) {
    nh_listener_t *l = (nh_listener_t *)handle;
    l->handle_closed = 1;
    if (l->conns == 0) listener_free(l);
}

/* The listening socket: bound (SO_REUSEADDR, as libuv binds) and listening. Returns the
 * descriptor or a negative uv error. */
static int listen_socket(const struct sockaddr_storage *ss) {
    int fd = socket(ss->ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) return -errno;
    int one = 1;
    (void)setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    if (ss->ss_family == AF_INET6) { /* "[::]:port" takes IPv4 too, whatever the system default */
        int zero = 0;
        (void)setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &zero, sizeof zero);
    }
    /* Several workers (nano-host --workers N) on one port: the kernel spreads connections. */
    const char *workers = getenv("NANO_WORKERS");
    if (workers && atoi(workers) > 1)
        (void)setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof one);
    socklen_t len =
        ss->ss_family == AF_INET6 ? sizeof(struct sockaddr_in6) : sizeof(struct sockaddr_in);
    if (bind(fd, (const struct sockaddr *)ss, len) != 0 || listen(fd, 1024) != 0) {
        int err = -errno;
        close(fd);
        return err;
    }
    return fd;
}

int nh_listener_start(nh_host_t *h, nh_listener_t *l, const char *addr) {
    struct sockaddr_storage ss;
    memset(&ss, 0, sizeof ss);
    int r = parse_addr(addr, &ss);
    int fd = r ? r : listen_socket(&ss);
    r = fd < 0 ? fd : uv_poll_init(h->loop, &l->poll, fd);
    if (r) { /* no handle: nothing to close but the socket */
        if (fd >= 0) close(fd);
        listener_free(l);
        return r;
    }
    l->fd = fd;
    l->host = h;
    snprintf(l->addr, sizeof l->addr, "%s", addr);
    (void)uv_poll_start(&l->poll, UV_READABLE, on_listener_io);
    /* kept to shed connections when out of descriptors (shed_pending) */
    if (h->reserve_fd < 0) h->reserve_fd = open("/dev/null", O_RDONLY | O_CLOEXEC);
    socklen_t n = sizeof ss;
    if (getsockname(fd, (struct sockaddr *)&ss, &n) == 0)
        nh_format_addr((struct sockaddr *)&ss, l->bound, sizeof l->bound);
    l->id = ++h->next_listener_id;
    l->next = h->listeners;
    h->listeners = l;
    return 0;
}

void nh_listener_close(nh_listener_t *l) {
    nh_host_t *h = l->host;
    for (nh_listener_t **p = &h->listeners; *p; p = &(*p)->next) {
        if (*p == l) {
            *p = l->next;
            break;
        }
    }
    if (uv_is_closing((uv_handle_t *)&l->poll)) return;
    uv_close((uv_handle_t *)&l->poll, on_listener_closed); /* out of epoll, then closed */
    close(l->fd);
    l->fd = -1;
}
