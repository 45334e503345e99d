#include "metrics_http.h"

#include <http_parser.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "conn.h"
#include "log.h"

#define MAX_CLIENTS 64
#define MAX_HEAD 8192
#define IDLE_MS 30000
#define LAG_PERIOD_MS 100
#define MAX_BODY (1024 * 1024) /* a route's request body; more is 413 */

typedef struct client client_t;

struct nh_metrics_http {
    uv_tcp_t tcp;
    uv_timer_t lag, drain;
    nh_metrics_t *m;
    nh_metrics_http_t **owner; /* cleared when closing starts */
    nh_metrics_collect_fn collect;
    void *ud;
    uint64_t drain_ms;
    uint64_t lag_due_ns; /* when the lag timer should fire next (uv_hrtime) */
    client_t *clients;
    int nclients;
    int handles; /* open handles (listener, timers, clients); freed at zero */
    nh_metrics_http_route_fn route;
    void *route_ud;
    uint64_t next_req;
    uv_timer_t pump; /* goes on with requests that waited behind a route's answer */
    int stopping, closing;
    char bound[128];
};

struct client {
    uv_tcp_t tcp;
    uv_timer_t idle;
    nh_metrics_http_t *svc;
    client_t *prev, *next;
    http_parser parser;
    char url[1024];
    size_t url_len, head_bytes;
    int url_too_long, head_too_big, has_body, closing, handles;
    int writes; /* uv_writes in flight */
    int close_when_written;
    /* a request for a Lua route: its headers ("name\0value\0", names lower-cased) and body; while
     * it waits for its answer (req_id), the parser is paused and later bytes wait in `pending` */
    char *hdrs, *body, *pending;
    size_t hdrs_len, body_len, pending_len;
    int in_value, body_too_big;
    uint64_t req_id;
    int keep, head_only;
    char remote[64];
};

typedef struct {
    uv_write_t req;
    client_t *c;
    char *data;
} write_req_t;

static void svc_handle_closed(uv_handle_t *h) {
    nh_metrics_http_t *s = h->data;
    if (--s->handles == 0) free(s);
}

static void close_svc_handle(uv_handle_t *h) {
    if (!uv_is_closing(h)) uv_close(h, svc_handle_closed);
}

/* ---- clients ---- */

static void client_handle_closed(uv_handle_t *h) {
    client_t *c = h->data;
    if (--c->handles > 0) return;
    nh_metrics_http_t *s = c->svc;
    free(c->hdrs);
    free(c->body);
    free(c->pending);
    free(c);
    if (--s->handles == 0) free(s);
}

static void client_close(client_t *c) {
    if (c->closing) return;
    c->closing = 1;
    nh_metrics_http_t *s = c->svc;
    if (c->prev)
        c->prev->next = c->next;
    else
        s->clients = c->next;
    if (c->next) c->next->prev = c->prev;
    s->nclients--;
    uv_close((uv_handle_t *)&c->idle, client_handle_closed);
    uv_close((uv_handle_t *)&c->tcp, client_handle_closed);
}

static void on_written(uv_write_t *req, int status) {
    write_req_t *w = (write_req_t *)req;
    client_t *c = w->c;
    free(w->data);
    free(w);
    c->writes--;
    if (status < 0 || (c->close_when_written && c->writes == 0)) client_close(c);
}

/* Queues one response; the body is copied into the same buffer as the head. */
static void respond(client_t *c, int status, const char *reason, const char *type, const char *body,
                    size_t body_len, int head_only, int keep_alive) {
    if (c->closing) return;
    char headbuf[256];
    int n = snprintf(headbuf, sizeof headbuf,
                     "HTTP/1.1 %d %s\r\nContent-Type: %s\r\nContent-Length: %zu\r\n"
                     "Cache-Control: no-store\r\n%s\r\n",
                     status, reason, type, body_len, keep_alive ? "" : "Connection: close\r\n");
    write_req_t *w = malloc(sizeof *w);
    size_t total = (size_t)n + (head_only ? 0 : body_len);
    char *data = w ? malloc(total) : NULL;
    if (!data) {
        free(w);
        client_close(c);
        return;
    }
    memcpy(data, headbuf, (size_t)n);
    if (!head_only && body_len) memcpy(data + n, body, body_len);
    w->c = c;
    w->data = data;
    uv_buf_t buf = uv_buf_init(data, (unsigned)total);
    if (uv_write(&w->req, (uv_stream_t *)&c->tcp, &buf, 1, on_written) != 0) {
        free(data);
        free(w);
        client_close(c);
        return;
    }
    c->writes++;
    if (!keep_alive) {
        c->close_when_written = 1;
        uv_read_stop((uv_stream_t *)&c->tcp);
    }
}

static void respond_text(client_t *c, int status, const char *reason, const char *text,
                         int keep_alive) {
    respond(c, status, reason, "text/plain; charset=utf-8", text, strlen(text),
            c->parser.method == HTTP_HEAD, keep_alive);
}

static client_t *client_of(http_parser *p) {
    return p->data;
}

/* Appends to a buffer of at most `max` bytes; -1 past it or out of memory. */
static int append(char **buf, size_t *len, const char *data, size_t n, size_t max) {
    if (*len + n > max) return -1;
    char *b = realloc(*buf, *len + n + 1);
    if (!b) return -1;
    memcpy(b + *len, data, n);
    *len += n;
    b[*len] = '\0';
    *buf = b;
    return 0;
}

static int on_message_begin(http_parser *p) {
    client_t *c = client_of(p);
    c->hdrs_len = c->body_len = 0;
    c->in_value = c->body_too_big = 0;
    c->url_len = 0;
    c->head_bytes = 0;
    c->url_too_long = 0;
    c->has_body = 0;
    return 0;
}

/* Counts the request head (target and headers); past MAX_HEAD parsing stops (431). */
static int head_grows(client_t *c, size_t n) {
    c->head_bytes += n;
    if (c->head_bytes <= MAX_HEAD) return 0;
    c->head_too_big = 1;
    return 1;
}

static int on_header_field(http_parser *p, const char *at, size_t n) {
    client_t *c = client_of(p);
    if (head_grows(c, n)) return 1;
    if (c->in_value && append(&c->hdrs, &c->hdrs_len, "", 1, MAX_HEAD * 2)) return 1;
    c->in_value = 0;
    size_t start = c->hdrs_len;
    if (append(&c->hdrs, &c->hdrs_len, at, n, MAX_HEAD * 2)) return 1;
    for (size_t i = start; i < c->hdrs_len; i++)
        if (c->hdrs[i] >= 'A' && c->hdrs[i] <= 'Z') c->hdrs[i] = (char)(c->hdrs[i] + 32);
    return 0;
}

static int on_header_value(http_parser *p, const char *at, size_t n) {
    client_t *c = client_of(p);
    if (head_grows(c, n)) return 1;
    if (!c->in_value && append(&c->hdrs, &c->hdrs_len, "", 1, MAX_HEAD * 2)) return 1;
    c->in_value = 1;
    return append(&c->hdrs, &c->hdrs_len, at, n, MAX_HEAD * 2) ? 1 : 0;
}

static int on_url(http_parser *p, const char *at, size_t n) {
    client_t *c = client_of(p);
    if (head_grows(c, n)) return 1;
    if (c->url_len + n >= sizeof c->url) {
        c->url_too_long = 1;
        return 0;
    }
    memcpy(c->url + c->url_len, at, n);
    c->url_len += n;
    return 0;
}

static int on_body(http_parser *p, const char *at, size_t n) {
    client_t *c = client_of(p);
    c->has_body = 1;
    if (append(&c->body, &c->body_len, at, n, MAX_BODY)) {
        c->body_too_big = 1;
        return 1;
    }
    return 0;
}

/* /metrics and /healthz are the core's; any other path goes to Lua's routes when there are any. */
static int core_path(const client_t *c) {
    size_t n = 0;
    while (n < c->url_len && c->url[n] != '?')
        n++;
    return (n == 8 && memcmp(c->url, "/metrics", 8) == 0) ||
           (n == 8 && memcmp(c->url, "/healthz", 8) == 0);
}

static int on_headers_complete(http_parser *p) {
    client_t *c = client_of(p);
    if (c->in_value) append(&c->hdrs, &c->hdrs_len, "", 1, MAX_HEAD * 2 + 1);
    c->in_value = 0;
    if (c->svc->route && !core_path(c)) {
        if (p->content_length != ULLONG_MAX && p->content_length > MAX_BODY) {
            respond_text(c, 413, "Payload Too Large", "request body over 1 MiB\n", 0);
            return 2;
        }
        return 0;
    }
    if (p->content_length > 0 && p->content_length != ULLONG_MAX) c->has_body = 1;
    if (c->has_body || (p->flags & F_CHUNKED)) {
        /* Nothing here takes a body: refuse without reading it. */
        respond_text(c, 413, "Payload Too Large", "this endpoint takes no request body\n", 0);
        return 2; /* http-parser: skip the body; we close after the reply anyway */
    }
    return 0;
}

static void serve(client_t *c) {
    nh_metrics_http_t *s = c->svc;
    http_parser *p = &c->parser;
    int keep = http_should_keep_alive(p);
    if (c->url_too_long) {
        respond_text(c, 414, "URI Too Long", "request target too long\n", 0);
        return;
    }
    c->url[c->url_len] = '\0';
    char *q = strchr(c->url, '?');
    if (q) *q = '\0';
    int is_metrics = strcmp(c->url, "/metrics") == 0;
    int is_health = strcmp(c->url, "/healthz") == 0;
    if (!is_metrics && !is_health) {
        respond_text(c, 404, "Not Found", "not found: try /metrics or /healthz\n", keep);
        return;
    }
    if (p->method != HTTP_GET && p->method != HTTP_HEAD) {
        respond_text(c, 405, "Method Not Allowed", "only GET and HEAD\n", keep);
        return;
    }
    nh_metrics_gauges_t g;
    memset(&g, 0, sizeof g);
    if (s->collect) s->collect(s->ud, &g);
    if (s->stopping) g.shutting_down = 1;
    if (is_health) {
        if (g.shutting_down)
            respond_text(c, 503, "Service Unavailable", "shutting down\n", keep);
        else
            respond_text(c, 200, "OK", "ok\n", keep);
        return;
    }
    nh_strbuf_t b = {0};
    nh_metrics_render(s->m, &g, &b);
    if (b.failed) {
        respond_text(c, 500, "Internal Server Error", "out of memory\n", 0);
    } else {
        respond(c, 200, "OK", "text/plain; version=0.0.4; charset=utf-8", b.data, b.len,
                p->method == HTTP_HEAD, keep);
    }
    nh_strbuf_free(&b);
}

static int on_message_complete(http_parser *p) {
    client_t *c = client_of(p);
    if (c->close_when_written) return 0;
    nh_metrics_http_t *s = c->svc;
    if (!s->route || core_path(c)) {
        serve(c);
        return 0;
    }
    if (c->url_too_long) {
        respond_text(c, 414, "URI Too Long", "request target too long\n", 0);
        return 0;
    }
    /* Lua answers, perhaps later (a handler that waits): nothing more is parsed until then. */
    c->req_id = ++s->next_req;
    c->keep = http_should_keep_alive(p);
    c->head_only = p->method == HTTP_HEAD;
    http_parser_pause(p, 1);
    nh_http_request_t req = {
        .id = c->req_id,
        .method = http_method_str((enum http_method)p->method),
        .target = c->url,
        .target_len = c->url_len,
        .headers = c->hdrs ? c->hdrs : "",
        .headers_len = c->hdrs_len,
        .body = c->body ? c->body : "",
        .body_len = c->body_len,
        .remote = c->remote,
    };
    s->route(s->route_ud, &req);
    return 0;
}

static const http_parser_settings settings = {
    .on_message_begin = on_message_begin,
    .on_url = on_url,
    .on_header_field = on_header_field,
    .on_header_value = on_header_value,
    .on_headers_complete = on_headers_complete,
    .on_body = on_body,
    .on_message_complete = on_message_complete,
};

static void on_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf) {
    (void)h;
    (void)suggested;
    static char readbuf[4096]; /* one loop thread; each read is parsed before the next */
    *buf = uv_buf_init(readbuf, sizeof readbuf);
}

static void feed(client_t *c, const char *data, size_t len) {
    if (c->close_when_written || c->closing) return;
    size_t done = http_parser_execute(&c->parser, &settings, data, len);
    if (c->close_when_written || c->closing) return;
    if (c->req_id && HTTP_PARSER_ERRNO(&c->parser) == HPE_PAUSED) {
        /* waiting for Lua's answer: keep the rest (a pipelined request) for later */
        if (done < len && append(&c->pending, &c->pending_len, data + done, len - done,
                                 MAX_HEAD + MAX_BODY) != 0) {
            client_close(c);
            return;
        }
        uv_read_stop((uv_stream_t *)&c->tcp);
        return;
    }
    if (c->head_too_big)
        respond_text(c, 431, "Request Header Fields Too Large", "request head too large\n", 0);
    else if (c->body_too_big)
        respond_text(c, 413, "Payload Too Large", "request body over 1 MiB\n", 0);
    else if (HTTP_PARSER_ERRNO(&c->parser) != HPE_OK || done != len)
        respond_text(c, 400, "Bad Request", "malformed HTTP request\n", 0);
}

static void on_read(uv_stream_t *st, ssize_t nread, const uv_buf_t *buf) {
    client_t *c = (client_t *)st;
    if (nread == 0) return;
    if (nread < 0) {
        client_close(c);
        return;
    }
    uv_timer_again(&c->idle);
    feed(c, buf->base, (size_t)nread);
}

/* After an answer: the client's kept bytes are parsed, then it reads again. */
static void on_pump(uv_timer_t *t) {
    nh_metrics_http_t *s = t->data;
    client_t *c = s->clients;
    while (c) {
        client_t *next = c->next; /* feed may close c */
        if (!c->req_id && !c->closing && !c->close_when_written) {
            char *data = c->pending;
            size_t len = c->pending_len;
            c->pending = NULL;
            c->pending_len = 0;
            if (len) feed(c, data, len);
            free(data);
            if (!c->req_id && !c->closing && !c->close_when_written)
                uv_read_start((uv_stream_t *)&c->tcp, on_alloc, on_read);
        }
        c = next;
    }
}

void nh_metrics_http_set_router(nh_metrics_http_t *s, nh_metrics_http_route_fn fn, void *ud) {
    if (!s) return;
    s->route = fn;
    s->route_ud = ud;
}

int nh_metrics_http_respond(nh_metrics_http_t *s, uint64_t id, int status, const char *headers,
                            size_t headers_len, const char *body, size_t body_len) {
    if (!s) return UV_ENOENT;
    client_t *c = s->clients;
    while (c && c->req_id != id)
        c = c->next;
    if (!c || !id) return UV_ENOENT;
    c->req_id = 0;
    char head[256];
    int n = snprintf(head, sizeof head, "HTTP/1.1 %d %s\r\nContent-Length: %zu\r\n%s", status,
                     http_status_str((enum http_status)status), body_len,
                     c->keep ? "" : "Connection: close\r\n");
    write_req_t *w = malloc(sizeof *w);
    size_t total = (size_t)n + headers_len + 2 + (c->head_only ? 0 : body_len);
    char *data = w ? malloc(total) : NULL;
    if (!data) {
        free(w);
        client_close(c);
        return UV_ENOMEM;
    }
    memcpy(data, head, (size_t)n);
    memcpy(data + n, headers, headers_len);
    memcpy(data + n + headers_len, "\r\n", 2);
    if (!c->head_only) memcpy(data + n + headers_len + 2, body, body_len);
    w->c = c;
    w->data = data;
    uv_buf_t b = uv_buf_init(data, (unsigned)total);
    if (uv_write(&w->req, (uv_stream_t *)&c->tcp, &b, 1, on_written) != 0) {
        free(data);
        free(w);
        client_close(c);
        return UV_EPIPE;
    }
    c->writes++;
    http_parser_pause(&c->parser, 0);
    if (!c->keep) {
        c->close_when_written = 1;
        return 0;
    }
    uv_timer_start(&s->pump, on_pump, 0, 0);
    return 0;
}

static void on_idle(uv_timer_t *t) {
    client_close(t->data);
}

static void on_connection(uv_stream_t *server, int status) {
    nh_metrics_http_t *s = server->data;
    if (status < 0 || s->closing) return;
    client_t *c = calloc(1, sizeof *c);
    if (!c) return;
    c->svc = s;
    uv_tcp_init(server->loop, &c->tcp);
    uv_timer_init(server->loop, &c->idle);
    c->tcp.data = c->idle.data = c;
    c->handles = 2;
    s->handles++;
    c->next = s->clients;
    if (c->next) c->next->prev = c;
    s->clients = c;
    s->nclients++;
    if (uv_accept(server, (uv_stream_t *)&c->tcp) != 0 || s->nclients > MAX_CLIENTS) {
        client_close(c);
        return;
    }
    http_parser_init(&c->parser, HTTP_REQUEST);
    c->parser.data = c;
    struct sockaddr_storage peer;
    int plen = sizeof peer;
    if (uv_tcp_getpeername(&c->tcp, (struct sockaddr *)&peer, &plen) == 0)
        nh_format_addr((const struct sockaddr *)&peer, c->remote, sizeof c->remote);
    uv_timer_start(&c->idle, on_idle, IDLE_MS, IDLE_MS);
    if (uv_read_start((uv_stream_t *)&c->tcp, on_alloc, on_read) != 0) client_close(c);
}

/* ---- the loop-lag probe ---- */

static void on_lag(uv_timer_t *t) {
    nh_metrics_http_t *s = t->data;
    uint64_t now = uv_hrtime();
    double late = now > s->lag_due_ns ? (double)(now - s->lag_due_ns) / 1e9 : 0.0;
    nh_histogram_observe(&s->m->loop_lag, late);
    s->lag_due_ns = now + (uint64_t)LAG_PERIOD_MS * 1000000u;
    /* uv_now is the turn's start, so the timer fires late by exactly the lag it measures: the
     * next one is due LAG_PERIOD_MS after it ran, not after it was due. */
    uv_update_time(t->loop);
    uv_timer_start(t, on_lag, LAG_PERIOD_MS, 0);
}

/* ---- life ---- */

int nh_metrics_http_start(uv_loop_t *loop, const char *addr, nh_metrics_t *m,
                          nh_metrics_collect_fn collect, void *ud, uint64_t drain_ms,
                          nh_metrics_http_t **out, char *bound, size_t bound_len) {
    struct sockaddr_storage ss;
    int r = nh_parse_addr(addr, &ss);
    if (r) return r;
    nh_metrics_http_t *s = calloc(1, sizeof *s);
    if (!s) return UV_ENOMEM;
    s->m = m;
    s->collect = collect;
    s->ud = ud;
    s->drain_ms = drain_ms;
    uv_tcp_init(loop, &s->tcp);
    s->tcp.data = s;
    s->handles = 1;
    if ((r = uv_tcp_bind(&s->tcp, (const struct sockaddr *)&ss, 0)) == 0)
        r = uv_listen((uv_stream_t *)&s->tcp, 64, on_connection);
    if (r) {
        uv_close((uv_handle_t *)&s->tcp, svc_handle_closed);
        return r;
    }
    struct sockaddr_storage name;
    int len = sizeof name;
    uv_tcp_getsockname(&s->tcp, (struct sockaddr *)&name, &len);
    nh_format_addr((const struct sockaddr *)&name, s->bound, sizeof s->bound);
    if (bound) snprintf(bound, bound_len, "%s", s->bound);
    uv_timer_init(loop, &s->lag);
    uv_timer_init(loop, &s->drain);
    uv_timer_init(loop, &s->pump);
    s->lag.data = s->drain.data = s->pump.data = s;
    s->handles += 3;
    uv_unref((uv_handle_t *)&s->pump);
    uv_unref((uv_handle_t *)&s->lag); /* the probe alone keeps nothing alive */
    s->lag_due_ns = uv_hrtime() + (uint64_t)LAG_PERIOD_MS * 1000000u;
    uv_timer_start(&s->lag, on_lag, LAG_PERIOD_MS, 0);
    *out = s;
    s->owner = out;
    nh_log(NH_LOG_INFO, "metrics on http://%s/metrics (health: /healthz)", s->bound);
    return 0;
}

const char *nh_metrics_http_bound(const nh_metrics_http_t *s) {
    return s && !s->closing ? s->bound : "";
}

void nh_metrics_http_close(nh_metrics_http_t *s) {
    if (!s || s->closing) return;
    s->closing = 1;
    s->stopping = 1;
    if (s->owner && *s->owner == s) *s->owner = NULL;
    s->bound[0] = '\0';
    while (s->clients)
        client_close(s->clients);
    close_svc_handle((uv_handle_t *)&s->lag);
    close_svc_handle((uv_handle_t *)&s->drain);
    close_svc_handle((uv_handle_t *)&s->pump);
    close_svc_handle((uv_handle_t *)&s->tcp);
}

static void on_drained(uv_timer_t *t) {
    nh_metrics_http_close(t->data);
}

void nh_metrics_http_stopping(nh_metrics_http_t *s) {
    if (!s || s->stopping) return;
    s->stopping = 1;
    if (s->drain_ms == 0) {
        nh_metrics_http_close(s);
        return;
    }
    nh_log(NH_LOG_INFO, "metrics: /healthz says 503; closing in %.1f s", (double)s->drain_ms / 1e3);
    uv_timer_start(&s->drain, on_drained, s->drain_ms, 0);
}
