#include "http_client.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <curl/curl.h>

typedef struct growbuf {
    char *data;
    size_t len, cap;
} growbuf_t;

typedef struct sock_ctx {
    uv_poll_t poll; /* first: handle -> ctx */
    curl_socket_t fd;
    struct nh_http *c;
    struct sock_ctx *next, *prev; /* the client's open poll handles */
} sock_ctx_t;

typedef struct req {
    struct req *next, *prev;
    uint64_t id;
    CURL *easy;
    struct nh_http *c;
    nh_http_cb cb;
    void *ud;
    struct curl_slist *hdrs;
    char *body;
    growbuf_t resp_headers, resp_body;
    size_t max_response;
    int too_big;
    char errbuf[CURL_ERROR_SIZE];
} req_t;

struct nh_http {
    uv_timer_t timer; /* first: handle -> client */
    uv_loop_t *loop;
    CURLM *multi;
    req_t *reqs;
    sock_ctx_t *socks;
    int in_flight, max_in_flight;
    uint64_t next_id;
    int closing;
};

static int grow_append(growbuf_t *b, const char *p, size_t n) {
    if (b->len + n + 1 > b->cap) {
        size_t cap = b->cap ? b->cap : 1024;
        while (cap < b->len + n + 1)
            cap *= 2;
        char *d = realloc(b->data, cap);
        if (!d) return -1;
        b->data = d;
        b->cap = cap;
    }
    memcpy(b->data + b->len, p, n);
    b->len += n;
    b->data[b->len] = '\0';
    return 0;
}

static void req_free(req_t *r) {
    if (r->easy) curl_easy_cleanup(r->easy);
    curl_slist_free_all(r->hdrs);
    free(r->body);
    free(r->resp_headers.data);
    free(r->resp_body.data);
    free(r);
}

static void unlink_req(nh_http_t *c, req_t *r) {
    if (r->prev)
        r->prev->next = r->next;
    else
        c->reqs = r->next;
    if (r->next) r->next->prev = r->prev;
    c->in_flight--;
}

/* Transfers that ended: each request's one callback. */
static void check_done(nh_http_t *c) {
    CURLMsg *m;
    int left;
    while ((m = curl_multi_info_read(c->multi, &left))) {
        if (m->msg != CURLMSG_DONE) continue;
        req_t *r = NULL;
        curl_easy_getinfo(m->easy_handle, CURLINFO_PRIVATE, (char **)&r);
        CURLcode code = m->data.result;
        curl_multi_remove_handle(c->multi, m->easy_handle);
        unlink_req(c, r);
        nh_http_result_t res = {0};
        char why[CURL_ERROR_SIZE + 64];
        if (code == CURLE_OK) {
            curl_easy_getinfo(r->easy, CURLINFO_RESPONSE_CODE, &res.status);
            res.headers = r->resp_headers.data ? r->resp_headers.data : "";
            res.headers_len = r->resp_headers.len;
            res.body = r->resp_body.data ? r->resp_body.data : "";
            res.body_len = r->resp_body.len;
        } else if (r->too_big) {
            snprintf(why, sizeof why, "response larger than %zu bytes", r->max_response);
            res.error = why;
        } else {
            snprintf(why, sizeof why, "%s", r->errbuf[0] ? r->errbuf : curl_easy_strerror(code));
            res.error = why;
        }
        if (!c->closing) r->cb(r->ud, &res);
        req_free(r);
    }
}

static void on_poll(uv_poll_t *p, int status, int events) {
    sock_ctx_t *sc = (sock_ctx_t *)p;
    nh_http_t *c = sc->c;
    int flags = 0, running;
    if (status < 0) flags = CURL_CSELECT_ERR;
    if (events & UV_READABLE) flags |= CURL_CSELECT_IN;
    if (events & UV_WRITABLE) flags |= CURL_CSELECT_OUT;
    curl_multi_socket_action(c->multi, sc->fd, flags, &running);
    check_done(c);
}

static void on_timeout(uv_timer_t *t) {
    nh_http_t *c = (nh_http_t *)t;
    int running;
    curl_multi_socket_action(c->multi, CURL_SOCKET_TIMEOUT, 0, &running);
    check_done(c);
}

static void free_sock(uv_handle_t *h) {
    free(h);
}

static void close_sock(nh_http_t *c, sock_ctx_t *sc) {
    if (sc->prev)
        sc->prev->next = sc->next;
    else
        c->socks = sc->next;
    if (sc->next) sc->next->prev = sc->prev;
    uv_poll_stop(&sc->poll);
    uv_close((uv_handle_t *)&sc->poll, free_sock);
}

/* curl says which sockets to watch for what. */
static int on_socket(CURL *e, curl_socket_t s, int what, void *userp, void *socketp) {
    (void)e;
    nh_http_t *c = userp;
    sock_ctx_t *sc = socketp;
    if (what == CURL_POLL_REMOVE) {
        if (sc) {
            curl_multi_assign(c->multi, s, NULL);
            close_sock(c, sc);
        }
        return 0;
    }
    if (!sc) {
        sc = calloc(1, sizeof *sc);
        if (!sc) return -1;
        if (uv_poll_init_socket(c->loop, &sc->poll, s) != 0) {
            free(sc);
            return -1;
        }
        uv_unref(
            (uv_handle_t *)&sc->poll); /* an idle kept-alive connection keeps nothing running */
        sc->fd = s;
        sc->c = c;
        sc->next = c->socks;
        if (c->socks) c->socks->prev = sc;
        c->socks = sc;
        curl_multi_assign(c->multi, s, sc);
    }
    int events = 0;
    if (what & CURL_POLL_IN) events |= UV_READABLE;
    if (what & CURL_POLL_OUT) events |= UV_WRITABLE;
    uv_poll_start(&sc->poll, events, on_poll);
    return 0;
}

/* curl asks for one timer; it must not be driven from inside this call, hence the loop timer. */
static int on_timer(CURLM *m, long timeout_ms, void *userp) {
    (void)m;
    nh_http_t *c = userp;
    if (timeout_ms < 0)
        uv_timer_stop(&c->timer);
    else
        uv_timer_start(&c->timer, on_timeout, (uint64_t)timeout_ms, 0);
    return 0;
}

static size_t on_body(char *p, size_t size, size_t n, void *ud) {
    req_t *r = ud;
    size_t len = size * n;
    if (r->resp_body.len + len > r->max_response) {
        r->too_big = 1;
        return 0; /* curl fails the transfer: CURLE_WRITE_ERROR */
    }
    return grow_append(&r->resp_body, p, len) == 0 ? len : 0;
}

static size_t on_header(char *p, size_t size, size_t n, void *ud) {
    req_t *r = ud;
    size_t len = size * n;
    if (len >= 5 && memcmp(p, "HTTP/", 5) == 0) r->resp_headers.len = 0; /* a new response */
    if (r->resp_headers.len + len > 256 * 1024) return 0;                /* headers: bounded too */
    return grow_append(&r->resp_headers, p, len) == 0 ? len : 0;
}

int nh_http_open(uv_loop_t *loop, int max_in_flight, int max_per_host, nh_http_t **out) {
    static int global_done;
    if (!global_done) {
        if (curl_global_init(CURL_GLOBAL_DEFAULT) != 0) return -1;
        global_done = 1;
    }
    nh_http_t *c = calloc(1, sizeof *c);
    if (!c) return -1;
    c->loop = loop;
    c->max_in_flight = max_in_flight > 0 ? max_in_flight : 1024;
    c->multi = curl_multi_init();
    if (!c->multi || uv_timer_init(loop, &c->timer) != 0) {
        if (c->multi) curl_multi_cleanup(c->multi);
        free(c);
        return -1;
    }
    uv_unref((uv_handle_t *)&c->timer);
    curl_multi_setopt(c->multi, CURLMOPT_SOCKETFUNCTION, on_socket);
    curl_multi_setopt(c->multi, CURLMOPT_SOCKETDATA, c);
    curl_multi_setopt(c->multi, CURLMOPT_TIMERFUNCTION, on_timer);
    curl_multi_setopt(c->multi, CURLMOPT_TIMERDATA, c);
    curl_multi_setopt(c->multi, CURLMOPT_MAX_HOST_CONNECTIONS,
                      (long)(max_per_host > 0 ? max_per_host : 32));
    *out = c;
    return 0;
}

static int fail(char *err, size_t errlen, const char *msg) {
    snprintf(err, errlen, "%s", msg);
    return -1;
}

int nh_http_request(nh_http_t *c, const nh_http_opts_t *o, nh_http_cb cb, void *ud, uint64_t *id,
                    char *err, size_t errlen) {
    if (c->closing) return fail(err, errlen, "the HTTP client is closed");
    if (!o->url || (strncmp(o->url, "http://", 7) != 0 && strncmp(o->url, "https://", 8) != 0))
        return fail(err, errlen, "url must start with http:// or https://");
    if (c->in_flight >= c->max_in_flight) {
        snprintf(err, errlen, "too many HTTP requests in flight (%d)", c->max_in_flight);
        return -1;
    }
    req_t *r = calloc(1, sizeof *r);
    if (!r || !(r->easy = curl_easy_init())) {
        free(r);
        return fail(err, errlen, "out of memory");
    }
    r->c = c;
    r->cb = cb;
    r->ud = ud;
    r->max_response = o->max_response ? o->max_response : 16u << 20;
    CURL *e = r->easy;
    curl_easy_setopt(e, CURLOPT_URL, o->url);
    curl_easy_setopt(e, CURLOPT_PRIVATE, r);
    curl_easy_setopt(e, CURLOPT_ERRORBUFFER, r->errbuf);
    curl_easy_setopt(e, CURLOPT_NOSIGNAL, 1L);
    /* only the web: never file://, ftp:// ... not even through a redirect */
    curl_easy_setopt(e, CURLOPT_PROTOCOLS_STR, "http,https");
    curl_easy_setopt(e, CURLOPT_REDIR_PROTOCOLS_STR, "http,https");
    curl_easy_setopt(e, CURLOPT_WRITEFUNCTION, on_body);
    curl_easy_setopt(e, CURLOPT_WRITEDATA, r);
    curl_easy_setopt(e, CURLOPT_HEADERFUNCTION, on_header);
    curl_easy_setopt(e, CURLOPT_HEADERDATA, r);
    curl_easy_setopt(e, CURLOPT_ACCEPT_ENCODING, ""); /* gzip/deflate if the server offers */
    curl_easy_setopt(e, CURLOPT_TIMEOUT_MS, o->timeout_ms > 0 ? o->timeout_ms : 30000L);
    curl_easy_setopt(e, CURLOPT_FOLLOWLOCATION, o->follow_redirects ? 1L : 0L);
    curl_easy_setopt(e, CURLOPT_MAXREDIRS, o->max_redirects > 0 ? o->max_redirects : 5L);
    if (o->proxy) curl_easy_setopt(e, CURLOPT_PROXY, o->proxy);
    if (o->insecure) {
        curl_easy_setopt(e, CURLOPT_SSL_VERIFYPEER, 0L);
        curl_easy_setopt(e, CURLOPT_SSL_VERIFYHOST, 0L);
    }
    const char *method = o->method ? o->method : "GET";
    if (strcmp(method, "HEAD") == 0) {
        curl_easy_setopt(e, CURLOPT_NOBODY, 1L);
    } else if (strcmp(method, "GET") != 0) {
        curl_easy_setopt(e, CURLOPT_CUSTOMREQUEST, method);
    }
    if (o->body && o->body_len) {
        r->body = malloc(o->body_len);
        if (!r->body) {
            req_free(r);
            return fail(err, errlen, "out of memory");
        }
        memcpy(r->body, o->body, o->body_len);
        curl_easy_setopt(e, CURLOPT_POSTFIELDS, r->body);
        curl_easy_setopt(e, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)o->body_len);
    } else if (strcmp(method, "POST") == 0 || strcmp(method, "PUT") == 0) {
        curl_easy_setopt(e, CURLOPT_POSTFIELDS, "");
        curl_easy_setopt(e, CURLOPT_POSTFIELDSIZE, 0L);
    }
    for (const char *const *h = o->headers; h && *h; h++) {
        struct curl_slist *l = curl_slist_append(r->hdrs, *h);
        if (!l) {
            req_free(r);
            return fail(err, errlen, "out of memory");
        }
        r->hdrs = l;
    }
    if (r->hdrs) curl_easy_setopt(e, CURLOPT_HTTPHEADER, r->hdrs);
    CURLMcode mc = curl_multi_add_handle(c->multi, e);
    if (mc != CURLM_OK) {
        req_free(r);
        return fail(err, errlen, curl_multi_strerror(mc));
    }
    r->id = ++c->next_id;
    r->next = c->reqs;
    if (c->reqs) c->reqs->prev = r;
    c->reqs = r;
    c->in_flight++;
    *id = r->id;
    return 0;
}

void nh_http_cancel(nh_http_t *c, uint64_t id) {
    for (req_t *r = c->reqs; r; r = r->next) {
        if (r->id != id) continue;
        curl_multi_remove_handle(c->multi, r->easy);
        unlink_req(c, r);
        req_free(r);
        return;
    }
}

int nh_http_in_flight(const nh_http_t *c) {
    return c->in_flight;
}

static void on_client_closed(uv_handle_t *h) {
    free(h);
}

void nh_http_close(nh_http_t *c) {
    if (c->closing) return;
    c->closing = 1;
    while (c->reqs) {
        req_t *r = c->reqs;
        curl_multi_remove_handle(c->multi, r->easy);
        unlink_req(c, r);
        req_free(r);
    }
    curl_multi_cleanup(c->multi); /* closes kept-alive connections (their sockets: REMOVE) */
    c->multi = NULL;
    while (c->socks)
        close_sock(c, c->socks);
    uv_timer_stop(&c->timer);
    uv_close((uv_handle_t *)&c->timer, on_client_closed);
}
