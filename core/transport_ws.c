/* transport_ws — WebSocket on a TCP connection (transport_ws.h): the HTTP side (the upgrade, Lua's
 * routes, static files, errors), then binary frames whose payloads are the packet stream.
 * Protocol logic is in ws.c, files in static_files.c; this file connects them to conn (bytes,
 * writes) and, after the upgrade, to a session (packets). */
#include "transport_ws.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

#include "host.h"
#include "log.h"
#include "session.h"
#include "transport.h"
#include "ws.h"

/* A static file is queued in chunks of this size at most, each once the queue has room. */
#define HTTP_CHUNK (64 * 1024)

typedef struct ws_http ws_http_t;

/* A connection's state while it is in its HTTP phase or a frame is in progress. Between frames
 * an upgraded connection keeps none: c->tstate is then its session (NH_CONN_WS_IDLE), and the
 * state goes back to the host's spares until the next read takes one (ws_wake / ws_idle). An
 * idle WebSocket connection so costs what a TCP one does (docs/benchmarks.md, "Connection
 * scale"); a message costs a spare taken and given back, not a malloc. */
typedef struct ws_state {
    /* the HTTP phase until the upgrade; from then on the session, until the connection is gone
     * (NULL when it could not be made): read through http_of and ws_session */
    union {
        ws_http_t *http;
        nh_session_t *session;
    } u;
    nh_ws_parser_t parser;
    uint8_t upgraded;
} ws_state_t;

#define NH_WS_SPARE 256 /* spare states a host keeps */

#if UINTPTR_MAX == UINT64_MAX
_Static_assert(sizeof(ws_state_t) <= 72, "ws_state_t grew past 72 bytes (a malloc class)");
#endif

/* The connection's state; NULL while it is idle between frames (or gone). */
static ws_state_t *state_of(const nh_conn_t *c) {
    return (c->flags & NH_CONN_WS_IDLE) ? NULL : c->tstate;
}

static nh_session_t *ws_session(const nh_conn_t *c) {
    if (c->flags & NH_CONN_WS_IDLE) return c->tstate;
    const ws_state_t *w = c->tstate;
    return w && w->upgraded ? w->u.session : NULL;
}

static ws_http_t *http_of(const ws_state_t *w) {
    return w && !w->upgraded ? w->u.http : NULL;
}

static void parser_init(nh_conn_t *c, ws_state_t *w) {
    nh_ws_parser_init(&w->parser, c->host->cfg.max_ws_frame);
    w->parser.refuse_text = 1; /* binary protocol: text frames close with 1003 (hardening.md) */
}

/* An idle connection's state again, for the bytes that came (a spare, else a new one). NULL:
 * out of memory. */
static ws_state_t *ws_wake(nh_conn_t *c) {
    nh_host_t *h = c->host;
    ws_state_t *w;
    if (h->ws_spare) {
        /* its parser is as ws_idle left it, between frames with nothing held, as a new one is:
         * only the limit may have changed since */
        w = h->ws_spare;
        memcpy(&h->ws_spare, w, sizeof(void *));
        h->nws_spare--;
        w->parser.max_frame = h->cfg.max_ws_frame;
    } else if (!(w = malloc(sizeof *w))) {
        return NULL;
    } else {
        parser_init(c, w);
    }
    w->u.session = c->tstate;
    w->upgraded = 1;
    c->tstate = w;
    c->flags &= (uint16_t)~NH_CONN_WS_IDLE;
    return w;
}

static void spare_put(nh_host_t *h, ws_state_t *w) {
    if (h->nws_spare >= NH_WS_SPARE) {
        free(w);
        return;
    }
    memcpy(w, &h->ws_spare, sizeof(void *));
    h->ws_spare = w;
    h->nws_spare++;
}

/* After a read: an upgraded connection with nothing in progress gives its state back. */
static void ws_idle(nh_conn_t *c) {
    ws_state_t *w = state_of(c);
    if (!w || !w->upgraded || !w->u.session || (c->flags & NH_CONN_CLOSING) ||
        c->close_after_flush || !nh_ws_parser_between_frames(&w->parser))
        return;
    c->tstate = w->u.session;
    c->flags |= NH_CONN_WS_IDLE;
    spare_put(c->host, w); /* between frames: its parser holds no control frame buffer */
}

void nh_ws_spare_free(nh_host_t *h) {
    while (h->ws_spare) {
        void *w = h->ws_spare;
        memcpy(&h->ws_spare, w, sizeof(void *));
        free(w);
    }
    h->nws_spare = 0;
}

enum http_phase {
    PH_HEAD,  /* reading a request head */
    PH_BODY,  /* reading its body (Content-Length) */
    PH_ROUTE, /* a Lua route has it: waiting for nh_ws_http_respond */
    PH_FILE,  /* streaming a static file */
};

struct ws_http {
    nh_conn_t *c;
    int phase;
    int keep;       /* keep-alive after this answer */
    int head_only;  /* HEAD: no body in the answer */
    int on_ws_path; /* a plain request on a WebSocket path: 400 when nothing else answers */
    int answered;   /* requests answered on this connection */
    char *body;     /* the request body (PH_BODY) */
    size_t body_len, body_need;
    /* bytes that arrived while an answer was pending (pipelining), parsed after it */
    uint8_t *pending;
    size_t pending_len;
    /* the HTTP phase's deadline: a request (and a file's progress) within handshake_timeout */
    nh_timer_t timer;
    nh_timer_t pump; /* parses `pending` on the next turn after a later answer */
    uint64_t id;     /* PH_ROUTE: the request id; linked in host->http_waiting */
    ws_http_t *wprev, *wnext;
    nh_static_file_t *file; /* PH_FILE */
    const char *file_type;
    uint64_t file_left; /* bytes still to queue */
    nh_http_req_t req;
};

/* The link the session sends through: packets framed by ws_frame_header. */
static const nh_session_link_t ws_link = {
    .name = "ws",
    .send = nh_transport_link_send,
    .close = nh_transport_link_close,
    .peer = nh_transport_link_peer,
};

static const nh_ws_options_t *opts_of(const nh_conn_t *c) {
    return c->listener->opts;
}

void nh_ws_options_free(void *opts) {
    nh_ws_options_t *o = opts;
    if (!o) return;
    free(o->statics);
    free(o);
}

/* ---- the HTTP phase's state ---- */

static void unwait(nh_host_t *h, ws_http_t *x) {
    if (!x->id) return;
    if (x->wprev)
        x->wprev->wnext = x->wnext;
    else if (h->http_waiting == x)
        h->http_waiting = x->wnext;
    if (x->wnext) x->wnext->wprev = x->wprev;
    x->wprev = x->wnext = NULL;
    x->id = 0;
}

static void http_free(nh_host_t *h, ws_http_t *x) {
    if (!x) return;
    nh_timer_stop(&h->timers, &x->timer);
    nh_timer_stop(&h->timers, &x->pump);
    unwait(h, x);
    nh_static_file_close(x->file);
    nh_http_req_release(&x->req);
    free(x->body);
    free(x->pending);
    munmap(x, sizeof *x); /* mmap'd: ws_open */
}

static void http_deadline(ws_http_t *x) {
    nh_host_t *h = x->c->host;
    nh_timer_start(&h->timers, &x->timer, h->cfg.handshake_timeout_ms, 0);
}

static int http_input(nh_conn_t *c, uint8_t *data, size_t len);

static void on_http_timeout(nh_timer_t *t) {
    nh_conn_t *c = t->data;
    ws_http_t *x = http_of(state_of(c));
    double secs = (double)c->host->cfg.handshake_timeout_ms / 1000.0;
    char who[160];
    if (!x->answered && x->phase <= PH_BODY) /* the upgrade (or a first request) never came */
        nh_log(NH_LOG_INFO, "%s: no handshake within %.1f s; closing (HTTP request incomplete)",
               nh_conn_describe(c, who, sizeof who), secs);
    else if (nh_log_enabled(NH_LOG_DEBUG))
        nh_log(NH_LOG_DEBUG, "%s: HTTP connection idle (or its answer stalled) for %.1f s; closing",
               nh_conn_describe(c, who, sizeof who), secs);
    nh_conn_set_close_reason(c, NH_CLOSE_HTTP);
    nh_conn_close(c, "HTTP timeout");
}

static void on_pump(nh_timer_t *t) {
    nh_conn_t *c = t->data;
    ws_http_t *x = http_of(state_of(c));
    if (!x || x->phase != PH_HEAD || (c->flags & NH_CONN_CLOSING) || c->close_after_flush) return;
    uint8_t *data = x->pending;
    size_t len = x->pending_len;
    x->pending = NULL;
    x->pending_len = 0;
    if (len && http_input(c, data, len) < 0) nh_conn_close(c, "bad input");
    free(data);
}

/* ---- what conn reports ---- */

static int ws_open(nh_conn_t *c) {
    ws_state_t *w = calloc(1, sizeof *w);
    if (!w) return UV_ENOMEM;
    /* The HTTP phase's ~2.6 KiB (a parser and its buffers) lives until the upgrade, while the
     * connection's lasting allocations (conn, session) are made: from malloc, each freed one
     * left a hole that those split, and after 19,000 handshakes ~40 bytes a connection of
     * free heap stayed resident (docs/benchmarks.md, "Connection scale"). Its own pages go back
     * to the system whole; an mmap and a munmap per connection is the price. */
    ws_http_t *x =
        mmap(NULL, sizeof *x, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (x == MAP_FAILED) {
        free(w);
        return UV_ENOMEM;
    }
    x->c = c;
    nh_http_req_init(&x->req);
    x->req.keep_headers = 1;
    x->timer.cb = on_http_timeout;
    x->pump.cb = on_pump;
    x->timer.data = x->pump.data = c;
    w->u.http = x;
    parser_init(c, w);
    c->tstate = w;
    /* No session yet: a page load or a route request is not a game session (no id taken, not
     * counted). The HTTP phase has its own deadline instead of the handshake timeout. */
    http_deadline(x);
    return 0;
}

static void ws_gone(nh_conn_t *c) {
    nh_session_t *s = ws_session(c);
    ws_state_t *w = state_of(c);
    if (s) nh_session_on_conn_gone(s);
    if (w) {
        http_free(c->host, http_of(w));
        nh_ws_parser_release(&w->parser);
        free(w);
    }
    c->tstate = NULL;
    c->flags &= (uint16_t)~NH_CONN_WS_IDLE;
}

static void send_control(nh_conn_t *c, int opcode, const uint8_t *payload, size_t len) {
    uint8_t frame[10 + 125];
    if (len > 125) len = 125;
    size_t n = nh_ws_frame_header(frame, opcode, len);
    if (len) memcpy(frame + n, payload, len);
    nh_conn_send_raw(c, frame, n + len);
}

static void send_close(nh_conn_t *c, int code) {
    const ws_state_t *w = state_of(c);
    int upgraded = (c->flags & NH_CONN_WS_IDLE) || (w && w->upgraded);
    if (!upgraded || (c->flags & NH_CONN_WS_CLOSE_SENT)) return;
    c->flags |= NH_CONN_WS_CLOSE_SENT;
    uint8_t p[2] = {(uint8_t)(code >> 8), (uint8_t)code};
    send_control(c, NH_WS_CLOSE, p, code == 1005 ? 0 : 2);
}

static void ws_draining(nh_conn_t *c) {
    nh_session_t *s = ws_session(c);
    if (s) nh_session_on_conn_draining(s);
}

static void ws_closing(nh_conn_t *c, int may_send) {
    if (!c->tstate) return;
    nh_session_t *s = ws_session(c);
    if (s) nh_session_on_conn_closing(s);
    if (!may_send) return;
    /* Server-initiated close (kick, timeout, shutdown, a protocol error found by the session):
     * say so, and why, in the protocol first. */
    int code = c->host->stopping ? 1001 : 1000;
    if (s && s->close_code) code = s->close_code;
    send_close(c, code);
}

static uint64_t ws_log_id(const nh_conn_t *c) {
    const nh_session_t *s = ws_session(c);
    return s ? s->id : 0;
}

static size_t ws_frame_header(nh_conn_t *c, uint8_t *out, size_t len) {
    (void)c;
    return nh_ws_frame_header(out, NH_WS_BINARY, len);
}

/* ---- frames ---- */

static int on_ws_data(void *ud, const uint8_t *data, size_t len, int fin) {
    (void)fin; /* packets may span frames: the packet decoder does the joining */
    nh_conn_t *c = ud;
    nh_session_t *s = ws_session(c);
    if (!len || !s) return 0;
    return nh_session_on_bytes(s, data, len) < 0 ? -1 : 0;
}

static int on_ws_ping(void *ud, const uint8_t *data, size_t len) {
    send_control(ud, NH_WS_PONG, data, len);
    return 0;
}

static int on_ws_pong(void *ud, const uint8_t *data, size_t len) {
    (void)ud, (void)data, (void)len;
    return 0;
}

static int on_ws_close(void *ud, int code, const uint8_t *reason, size_t len) {
    nh_conn_t *c = ud;
    if (nh_log_enabled(NH_LOG_DEBUG)) { /* the client chose the reason: escaped */
        char who[160], why[NH_LOG_ESCAPED_MAX];
        nh_log(NH_LOG_DEBUG, "%s: close %d '%s' from the client",
               nh_conn_describe(c, who, sizeof who), code,
               nh_log_escape(why, sizeof why, reason, len));
    }
    send_close(c, code); /* echo the status, as RFC 6455 5.5.1 asks */
    if (!c->close_reason) c->close_reason = NH_CLOSE_CLIENT;
    nh_conn_close_after_flush(c);
    return 1;
}

static const nh_ws_callbacks_t ws_callbacks = {on_ws_data, on_ws_ping, on_ws_pong, on_ws_close};

static int feed_frames(nh_conn_t *c, uint8_t *data, size_t len) {
    ws_state_t *w = state_of(c);
    if (!w && !(w = ws_wake(c))) {
        nh_conn_close(c, "out of memory");
        return 0;
    }
    int r = nh_ws_parser_feed(&w->parser, data, len, &ws_callbacks, c);
    if (r >= 0 || r == -1) return r < 0 ? -1 : 0; /* -1: the session already closed it */
    char who[160];
    nh_log(NH_LOG_WARN, "%s: %s; closing", nh_conn_describe(c, who, sizeof who), nh_ws_strerror(r));
    send_close(c, nh_ws_error_close_code(r));
    if (!c->close_reason) c->close_reason = NH_CLOSE_BAD_INPUT;
    nh_conn_close_after_flush(c);
    return 0;
}

/* ---- HTTP answers ---- */

static void send_head(nh_conn_t *c, ws_http_t *x, int status, const char *type, uint64_t len,
                      const char *extra_headers) {
    char head[1024];
    int n =
        snprintf(head, sizeof head, "HTTP/1.1 %d %s\r\n%s%s%sContent-Length: %llu\r\n%s%s\r\n",
                 status, http_status_str((enum http_status)status), type ? "Content-Type: " : "",
                 type ? type : "", type ? "\r\n" : "", (unsigned long long)len,
                 extra_headers ? extra_headers : "", x->keep ? "" : "Connection: close\r\n");
    if (n > 0) nh_conn_send_raw(c, head, (size_t)n < sizeof head ? (size_t)n : sizeof head - 1);
}

/* The answer to the request is queued whole: on to the next request, or close. */
static void request_done(nh_conn_t *c, ws_http_t *x) {
    x->answered++;
    free(x->body);
    x->body = NULL;
    x->body_len = x->body_need = 0;
    x->phase = PH_HEAD;
    if (!x->keep) {
        nh_conn_set_close_reason(c, NH_CLOSE_HTTP);
        nh_conn_close_after_flush(c);
        return;
    }
    nh_http_req_release(&x->req);
    nh_http_req_init(&x->req);
    x->req.keep_headers = 1;
    http_deadline(x);
    if (x->pending_len) nh_timer_start(&c->host->timers, &x->pump, 0, 0);
}

static void http_reply(nh_conn_t *c, ws_http_t *x, int status, const char *type, const char *body,
                       size_t len, const char *extra_headers) {
    send_head(c, x, status, type, len, extra_headers);
    if (!x->head_only && len) nh_conn_send_raw(c, body, len);
    request_done(c, x);
}

/* A short text answer; close: the connection is not kept (the request could not be read). */
static void http_error(nh_conn_t *c, ws_http_t *x, int status, const char *text,
                       const char *extra_headers, int close) {
    char body[512];
    int n = text ? snprintf(body, sizeof body, "%s", text)
                 : snprintf(body, sizeof body, "%d %s\n", status,
                            http_status_str((enum http_status)status));
    if (n < 0) n = 0;
    if ((size_t)n >= sizeof body) n = sizeof body - 1;
    if (close) x->keep = 0;
    http_reply(c, x, status, "text/plain; charset=utf-8", body, (size_t)n, extra_headers);
}

/* Nothing answers this request: 404, or on a WebSocket path a 400 that says what the path is. */
static void not_found(nh_conn_t *c, ws_http_t *x) {
    if (!x->on_ws_path) {
        http_error(c, x, 404, NULL, NULL, 0);
        return;
    }
    char text[512], path[NH_LOG_ESCAPED_MAX];
    snprintf(text, sizeof text,
             "400 Bad Request: %s is a WebSocket endpoint: connect with a WebSocket client "
             "(Upgrade: websocket); no page or route is mapped here\n",
             nh_log_escape(path, sizeof path, x->req.path, strlen(x->req.path)));
    http_error(c, x, 400, text, NULL, 0);
}

int nh_ws_http_respond(nh_host_t *h, uint64_t id, int status, const char *headers,
                       size_t headers_len, const char *body, size_t body_len) {
    ws_http_t *x = h->http_waiting;
    while (x && x->id != id)
        x = x->wnext;
    if (!x || !id) return UV_ENOENT;
    unwait(h, x);
    nh_conn_t *c = x->c;
    if ((c->flags & NH_CONN_CLOSING) || x->phase != PH_ROUTE) return UV_ENOENT;
    char head[160];
    int n = snprintf(head, sizeof head, "HTTP/1.1 %d %s\r\nContent-Length: %zu\r\n%s", status,
                     http_status_str((enum http_status)status), body_len,
                     x->keep ? "" : "Connection: close\r\n");
    nh_conn_send_raw(c, head, (size_t)n);
    if (headers_len) nh_conn_send_raw(c, headers, headers_len);
    nh_conn_send_raw(c, "\r\n", 2);
    if (!x->head_only && body_len) nh_conn_send_raw(c, body, body_len);
    request_done(c, x);
    return 0;
}

/* ---- static files ---- */

static void file_next(nh_conn_t *c, ws_http_t *x) {
    if (x->file_left == 0) {
        nh_static_file_close(x->file);
        x->file = NULL;
        request_done(c, x);
        return;
    }
    /* Bounded by the send limit: a chunk is read only when the queue has room for it, so the
     * file is never queued whole; the rest waits for the queue to drain (ws_drained). */
    size_t limit = c->host->cfg.send_limit,
           queued = c->out.bytes + (nh_conn_wire(c) ? nh_conn_wire(c)->bytes : 0);
    size_t chunk = HTTP_CHUNK;
    if (chunk > limit / 2) chunk = limit / 2;
    if (chunk < 256) chunk = 256;
    if (chunk > x->file_left) chunk = (size_t)x->file_left;
    if (queued && queued + chunk > limit) return;
    int r = nh_static_file_read(x->file, chunk);
    if (r < 0 && r != UV_EBUSY) nh_conn_close(c, "static file: read failed");
}

static void file_opened(void *ud, int status, uint64_t size) {
    nh_conn_t *c = ud;
    ws_http_t *x = http_of(state_of(c));
    if (status < 0) { /* missing, a folder, unreadable */
        nh_static_file_close(x->file);
        x->file = NULL;
        not_found(c, x);
        return;
    }
    send_head(c, x, 200, x->file_type, size, NULL);
    x->file_left = x->head_only ? 0 : size;
    file_next(c, x);
}

static void file_chunk(void *ud, int status, nh_buf_t *chunk) {
    nh_conn_t *c = ud;
    ws_http_t *x = http_of(state_of(c));
    if (status < 0 || chunk->len == 0) { /* the length was promised: the answer cannot end well */
        nh_conn_close(c, "static file: read failed or the file shrank");
        return;
    }
    size_t n = chunk->len < x->file_left ? chunk->len : (size_t)x->file_left;
    x->file_left -= n;
    if (nh_conn_send_raw_shared(c, chunk, 0, n) != 0) return; /* cut off or closing */
    http_deadline(x);                                         /* progress */
    file_next(c, x);
}

static const nh_static_file_events_t file_events = {file_opened, file_chunk};

static void ws_drained(nh_conn_t *c) {
    ws_http_t *x = http_of(state_of(c));
    if (x && x->phase == PH_FILE && x->file && x->file_left) file_next(c, x);
}

/* ---- plain requests: a route, a file, or an error ---- */

static void serve_plain(nh_conn_t *c, ws_http_t *x) {
    const nh_ws_options_t *o = opts_of(c);
    nh_host_t *h = c->host;
    nh_http_req_t *req = &x->req;
    if (o->route) {
        char remote[80] = "";
        nh_conn_peer(c, remote, sizeof remote);
        x->id = ++h->http_last_id;
        x->phase = PH_ROUTE;
        x->wprev = NULL;
        x->wnext = h->http_waiting;
        if (x->wnext) x->wnext->wprev = x;
        h->http_waiting = x;
        nh_timer_stop(&h->timers, &x->timer); /* the handler may wait: its own business */
        nh_http_request_t r = {
            .id = x->id,
            .method = http_method_str((enum http_method)req->method),
            .target = req->target,
            .target_len = req->target_len,
            .headers = req->headers ? req->headers : "",
            .headers_len = req->headers_len,
            .body = x->body ? x->body : "",
            .body_len = x->body_len,
            .remote = remote,
        };
        uint64_t id = x->id;
        if (o->route(o->ud, &r)) return; /* answered now or later */
        if (x->id == id) unwait(h, x);
        x->phase = PH_HEAD;
        http_deadline(x);
    }
    if ((req->method == HTTP_GET || req->method == HTTP_HEAD) && o->nstatics) {
        char file[1400];
        const char *to = NULL;
        switch (nh_static_resolve(o->statics, o->nstatics, req->path, file, sizeof file, &to)) {
        case NH_STATIC_REDIRECT: { /* "/web" → "/web/" so relative links resolve */
            char loc[256];
            snprintf(loc, sizeof loc, "Location: %s\r\n", to);
            http_reply(c, x, 301, NULL, NULL, 0, loc);
            return;
        }
        case NH_STATIC_REFUSED:
            http_error(c, x, 404, NULL, NULL, 0);
            return;
        case NH_STATIC_FILE:
            x->phase = PH_FILE;
            x->file_type = nh_static_content_type(file);
            if (nh_static_file_open(h->loop, file, &file_events, c, &x->file) != 0) {
                x->phase = PH_HEAD;
                not_found(c, x);
            }
            return;
        default:
            break;
        }
    }
    not_found(c, x);
}

/* Is this one of the listener's WebSocket paths? A single trailing slash does not count:
 * "/nano/" is "/nano". */
static int has_path(const nh_ws_options_t *o, const char *path) {
    size_t n = strlen(path);
    if (n > 1 && path[n - 1] == '/') n--;
    for (int i = 0; i < o->npaths; i++) {
        size_t m = strlen(o->paths[i]);
        if (m > 1 && o->paths[i][m - 1] == '/') m--;
        if (m == n && strncmp(o->paths[i], path, n) == 0) return 1;
    }
    return 0;
}

/* Does the head ask for a header's token (case-insensitive value)? */
static int header_is(const nh_http_req_t *r, const char *name, const char *value) {
    for (size_t off = 0; off < r->headers_len;) {
        const char *k = r->headers + off;
        size_t kl = strnlen(k, r->headers_len - off);
        if (off + kl + 1 >= r->headers_len) break;
        const char *v = k + kl + 1;
        size_t vl = strnlen(v, r->headers_len - off - kl - 1);
        if (strcmp(k, name) == 0 && strncasecmp(v, value, strlen(value)) == 0) return 1;
        off += kl + 1 + vl + 1;
    }
    return 0;
}

/* The upgrade: 1 when it happened (the frames start), 0 when it was refused (answered). */
static int upgrade(nh_conn_t *c, ws_http_t *x) {
    const nh_ws_options_t *o = opts_of(c);
    nh_http_req_t *req = &x->req;
    int check = nh_http_req_check_upgrade(req);
    if (check != NH_UPGRADE_OK) {
        char peer[80] = "?", path[NH_LOG_ESCAPED_MAX];
        nh_conn_peer(c, peer, sizeof peer);
        nh_log(NH_LOG_INFO, "ws %s: upgrade of '%s' refused: %s", peer,
               nh_log_escape(path, sizeof path, req->path, strlen(req->path)),
               nh_http_upgrade_strerror(check));
        /* RFC 6455 4.2.2: a version refusal names the version this server speaks */
        http_error(c, x, 400, NULL,
                   check == NH_UPGRADE_VERSION ? "Sec-WebSocket-Version: 13\r\n" : NULL, 1);
        return 0;
    }
    if (o->check_origin && o->origin && !o->origin(o->ud, c->listener->id, req->origin)) {
        char peer[80] = "?", origin[NH_LOG_ESCAPED_MAX];
        nh_conn_peer(c, peer, sizeof peer);
        nh_log(NH_LOG_INFO, "ws %s: origin '%s' refused", peer,
               nh_log_escape(origin, sizeof origin, req->origin, strlen(req->origin)));
        http_error(c, x, 403, NULL, NULL, 1);
        return 0;
    }
    char accept[29];
    if (nh_ws_accept_key(req->key, accept) != 0) {
        http_error(c, x, 400, NULL, NULL, 1);
        return 0;
    }
    ws_state_t *w = c->tstate;
    nh_session_t *s = nh_session_open(c->host, &ws_link, c);
    if (!s) {
        nh_conn_close(c, "out of memory");
        return 0;
    }
    char head[256];
    int n = snprintf(head, sizeof head,
                     "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
                     "Connection: Upgrade\r\nSec-WebSocket-Accept: %s\r\n\r\n",
                     accept);
    nh_conn_send_raw(c, head, (size_t)n);
    http_free(c->host, x);
    w->u.session = s;
    w->upgraded = 1;
    return 1;
}

/* A head is complete: 1 when the connection upgraded, else 0 (answered, or a body to read). */
static int on_head(nh_conn_t *c, ws_http_t *x) {
    nh_http_req_t *req = &x->req;
    x->keep = http_should_keep_alive(&req->parser);
    x->head_only = req->method == HTTP_HEAD;
    x->on_ws_path = has_path(opts_of(c), req->path);
    /* A WebSocket path is never a file, even under a static prefix such as "/", when the
     * request asks for the upgrade; a plain GET there may be a page (see serve_plain). */
    if (x->on_ws_path && (req->upgrade_websocket || req->key[0] || req->version))
        return upgrade(c, x);
    if (req->target_len >= sizeof req->target || !req->path[0]) { /* too long, or "*" */
        http_error(c, x, req->target_len && req->target[0] == '/' ? 414 : 400, NULL, NULL, 1);
        return 0;
    }
    if (req->chunked) {
        http_error(c, x, 411, "411 Length Required: send the body with a Content-Length\n", NULL,
                   1);
        return 0;
    }
    if (req->content_length != UINT64_MAX && req->content_length > 0) {
        if (req->content_length > NH_WS_HTTP_MAX_BODY) {
            http_error(c, x, 413, "413 Payload Too Large: the body is over 1 MiB\n", NULL, 1);
            return 0;
        }
        x->body = malloc((size_t)req->content_length);
        if (!x->body) {
            nh_conn_close(c, "out of memory");
            return 0;
        }
        x->body_need = (size_t)req->content_length;
        x->phase = PH_BODY;
        if (header_is(req, "expect", "100-continue"))
            nh_conn_send_raw(c, "HTTP/1.1 100 Continue\r\n\r\n", 25);
        return 0;
    }
    serve_plain(c, x);
    return 0;
}

/* Bytes of the HTTP phase (any split, any number of pipelined requests). Returns 0 (negative
 * only from the frames that follow an upgrade). */
static int http_input(nh_conn_t *c, uint8_t *data, size_t len) {
    ws_state_t *w = state_of(c);
    while (len && http_of(w) && !(c->flags & NH_CONN_CLOSING) && !c->close_after_flush) {
        ws_http_t *x = http_of(w);
        if (x->phase == PH_ROUTE || x->phase == PH_FILE) { /* after the pending answer */
            if (x->pending_len + len > NH_HTTP_MAX_HEAD + NH_WS_HTTP_MAX_BODY) {
                nh_conn_set_close_reason(c, NH_CLOSE_BAD_INPUT);
                nh_conn_close(c, "too much pipelined while an answer was pending");
                return 0;
            }
            uint8_t *p = realloc(x->pending, x->pending_len + len);
            if (!p) {
                nh_conn_close(c, "out of memory");
                return 0;
            }
            memcpy(p + x->pending_len, data, len);
            x->pending = p;
            x->pending_len += len;
            return 0;
        }
        if (x->phase == PH_BODY) {
            size_t n = x->body_need - x->body_len;
            if (n > len) n = len;
            memcpy(x->body + x->body_len, data, n);
            x->body_len += n;
            data += n;
            len -= n;
            if (x->body_len == x->body_need) serve_plain(c, x);
            continue;
        }
        size_t consumed = 0;
        int r = nh_http_req_feed(&x->req, (const char *)data, len, &consumed);
        if (r < 0) {
            char peer[80] = "?";
            nh_conn_peer(c, peer, sizeof peer);
            nh_log(NH_LOG_WARN, "ws %s: %s; closing", peer, nh_ws_strerror(r));
            if (r == NH_EWS_HTTP_TOO_BIG)
                http_error(c, x, 431,
                           "431 Request Header Fields Too Large: the head is over 8 KiB\n", NULL,
                           1);
            else
                http_error(c, x, 400, NULL, NULL, 1);
            return 0;
        }
        data += consumed;
        len -= consumed;
        if (r == 0) return 0;
        if (on_head(c, x)) return len ? feed_frames(c, data, len) : 0;
    }
    return 0;
}

static int ws_read(nh_conn_t *c, uint8_t *data, size_t len) {
    if (c->close_after_flush) return 0; /* answered already; ignore what else the peer sends */
    const ws_state_t *w = state_of(c);
    int r;
    if (!w || w->upgraded) {
        nh_session_t *s = ws_session(c);
        if (s) nh_session_heard(s);
        r = feed_frames(c, data, len);
    } else {
        r = http_input(c, data, len);
    }
    ws_idle(c);
    return r;
}

const nh_transport_t nh_transport_ws = {
    .name = "ws",
    .on_open = ws_open,
    .on_read = ws_read,
    .frame_header = ws_frame_header,
    .on_draining = ws_draining,
    .on_closing = ws_closing,
    .on_gone = ws_gone,
    .on_drained = ws_drained,
    .log_id = ws_log_id,
};
