/* transport_ws — WebSocket on a TCP connection: the HTTP upgrade (or a static file, or an HTTP
 * error), then binary frames whose payloads are the packet stream. Protocol logic is in ws.c;
 * this file connects it to conn (bytes, writes) and session (packets). */
#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "conn.h"
#include "host.h"
#include "log.h"
#include "session.h"
#include "ws.h"

typedef struct ws_state {
    nh_http_req_t *req; /* only until the head is complete */
    nh_ws_parser_t parser;
    int upgraded;
    int close_sent;
} ws_state_t;

static int ws_open(nh_conn_t *c) {
    ws_state_t *w = calloc(1, sizeof *w);
    if (!w) return UV_ENOMEM;
    w->req = malloc(sizeof *w->req);
    if (!w->req) {
        free(w);
        return UV_ENOMEM;
    }
    nh_http_req_init(w->req);
    nh_ws_parser_init(&w->parser, c->host->cfg.max_ws_frame);
    w->parser.refuse_text = 1; /* binary protocol: text frames close with 1003 (hardening.md) */
    c->tstate = w;
    /* The session exists from accept so that the handshake timeout covers the upgrade too. */
    return nh_session_open(c);
}

static void ws_free(nh_conn_t *c) {
    ws_state_t *w = c->tstate;
    if (!w) return;
    free(w->req);
    free(w);
    c->tstate = NULL;
}

static void send_control(nh_conn_t *c, int opcode, const uint8_t *payload, size_t len) {
    uint8_t frame[10 + 125];
    if (len > 125) len = 125;
    size_t n = nh_ws_frame_header(frame, opcode, len);
    if (len) memcpy(frame + n, payload, len);
    nh_conn_send_raw(c, frame, n + len);
}

static void send_close(nh_conn_t *c, int code) {
    ws_state_t *w = c->tstate;
    if (!w || !w->upgraded || w->close_sent) return;
    w->close_sent = 1;
    uint8_t p[2] = {(uint8_t)(code >> 8), (uint8_t)code};
    send_control(c, NH_WS_CLOSE, p, code == 1005 ? 0 : 2);
}

static void ws_closing(nh_conn_t *c) {
    /* Server-initiated close (kick, timeout, shutdown, a protocol error found by the session):
     * say so, and why, in the protocol first. */
    int code = c->host->stopping ? 1001 : 1000;
    if (c->session && c->session->close_code) code = c->session->close_code;
    send_close(c, code);
}

static size_t ws_frame_header(nh_conn_t *c, uint8_t *out, size_t len) {
    (void)c;
    return nh_ws_frame_header(out, NH_WS_BINARY, len);
}

/* ---- HTTP replies ---- */

/* body NULL: a HEAD reply (the length of what GET would send, no bytes). shared: the body is
 * queued by reference from this buffer instead of copied. */
static void http_reply(nh_conn_t *c, int status, const char *reason, const char *type,
                       const void *body, size_t len, nh_buf_t *shared, const char *extra_headers) {
    char head[512];
    int n = snprintf(head, sizeof head,
                     "HTTP/1.1 %d %s\r\nContent-Type: %s\r\nContent-Length: %zu\r\n"
                     "%sConnection: close\r\n\r\n",
                     status, reason, type, len, extra_headers ? extra_headers : "");
    nh_conn_send_raw(c, head, (size_t)n);
    if (body && len) {
        if (shared)
            nh_conn_send_raw_shared(c, shared, (size_t)((const uint8_t *)body - shared->data), len);
        else
            nh_conn_send_raw(c, body, len);
    }
    if (!c->close_reason) c->close_reason = NH_CLOSE_HTTP;
    nh_conn_close_after_flush(c);
}

/* extra_headers: NULL, or header lines each ending in CRLF. */
static void http_error_with(nh_conn_t *c, int status, const char *reason,
                            const char *extra_headers) {
    char body[128];
    int n = snprintf(body, sizeof body, "%d %s\n", status, reason);
    http_reply(c, status, reason, "text/plain; charset=utf-8", body, (size_t)n, NULL,
               extra_headers);
}

static void http_error(nh_conn_t *c, int status, const char *reason) {
    http_error_with(c, status, reason, NULL);
}

static const char *content_type(const char *path) {
    static const char *const types[][2] = {
        {".html", "text/html; charset=utf-8"},
        {".htm", "text/html; charset=utf-8"},
        {".js", "text/javascript; charset=utf-8"},
        {".mjs", "text/javascript; charset=utf-8"},
        {".css", "text/css; charset=utf-8"},
        {".json", "application/json"},
        {".png", "image/png"},
        {".jpg", "image/jpeg"},
        {".jpeg", "image/jpeg"},
        {".gif", "image/gif"},
        {".svg", "image/svg+xml"},
        {".ico", "image/x-icon"},
        {".txt", "text/plain; charset=utf-8"},
        {".wasm", "application/wasm"},
    };
    const char *dot = strrchr(path, '.');
    if (dot && !strchr(dot, '/'))
        for (size_t i = 0; i < sizeof types / sizeof types[0]; i++)
            if (strcasecmp(dot, types[i][0]) == 0) return types[i][1];
    return "application/octet-stream";
}

/* Decodes %XX in place; returns -1 on a bad escape or an encoded NUL or slash. */
static int percent_decode(char *s) {
    char *o = s;
    for (char *p = s; *p; p++) {
        if (*p != '%') {
            *o++ = *p;
            continue;
        }
        if (!isxdigit((unsigned char)p[1]) || !isxdigit((unsigned char)p[2])) return -1;
        char hex[3] = {p[1], p[2], 0};
        long v = strtol(hex, NULL, 16);
        if (v == 0 || v == '/' || v == '\\') return -1;
        *o++ = (char)v;
        p += 2;
    }
    *o = '\0';
    return 0;
}

/* Rejects anything that could leave the folder: "..", backslashes, empty segments are fine. */
static int safe_relative(const char *rel) {
    if (strchr(rel, '\\')) return 0;
    for (const char *p = rel; *p;) {
        const char *seg = p;
        while (*p && *p != '/')
            p++;
        size_t n = (size_t)(p - seg);
        if ((n == 2 && seg[0] == '.' && seg[1] == '.') || (n == 1 && seg[0] == '.')) return 0;
        if (*p == '/') p++;
    }
    return 1;
}

#define NH_STATIC_MAX_FILE (8u << 20)

/* Serves a file below a static folder. Small files of a demo page are read synchronously: this
 * is a convenience for examples and tools, not a CDN (docs/deployment.md). */
static int serve_static(nh_conn_t *c, const char *url_path, int head_only) {
    const nh_listener_t *l = c->listener;
    for (int i = 0; i < l->nstatics; i++) {
        const nh_static_dir_t *sd = &l->statics[i];
        size_t plen = strlen(sd->prefix);
        int exact_dir = plen > 1 && strlen(url_path) == plen - 1 &&
                        strncmp(url_path, sd->prefix, plen - 1) == 0;
        if (!exact_dir && strncmp(url_path, sd->prefix, plen) != 0) continue;
        if (exact_dir) { /* "/web" → "/web/" so relative links resolve */
            char head[512];
            int n = snprintf(head, sizeof head,
                             "HTTP/1.1 301 Moved Permanently\r\nLocation: %s\r\n"
                             "Content-Length: 0\r\nConnection: close\r\n\r\n",
                             sd->prefix);
            nh_conn_send_raw(c, head, (size_t)n);
            if (!c->close_reason) c->close_reason = NH_CLOSE_HTTP;
            nh_conn_close_after_flush(c);
            return 1;
        }
        char rel[NH_HTTP_MAX_PATH];
        snprintf(rel, sizeof rel, "%s", url_path + plen);
        if (percent_decode(rel) != 0 || !safe_relative(rel)) {
            http_error(c, 404, "Not Found");
            return 1;
        }
        char file[1400];
        size_t rl = strlen(rel);
        snprintf(file, sizeof file, "%s/%s%s", sd->dir, rel,
                 (rl == 0 || rel[rl - 1] == '/') ? "index.html" : "");
        FILE *f = fopen(file, "rb");
        if (!f) {
            http_error(c, 404, "Not Found");
            return 1;
        }
        /* Read into one refcounted buffer that the queue references: no second copy. A file
         * bigger than the send limit would be a way around it, so it is not served. */
        nh_buf_t *data = NULL;
        long size = -1;
        if (fseek(f, 0, SEEK_END) == 0) size = ftell(f);
        if (size >= 0 && (unsigned long)size <= NH_STATIC_MAX_FILE &&
            (size_t)size <= c->host->cfg.send_limit && fseek(f, 0, SEEK_SET) == 0) {
            data = nh_buf_new((size_t)size);
            if (data && fread(data->data, 1, (size_t)size, f) != (size_t)size) {
                nh_buf_unref(data);
                data = NULL;
            }
        }
        fclose(f);
        if (!data) { /* a directory, unreadable, or too big */
            http_error(c, 404, "Not Found");
            return 1;
        }
        data->len = (uint32_t)size;
        http_reply(c, 200, "OK", content_type(file), head_only ? NULL : data->data, (size_t)size,
                   data, NULL);
        nh_buf_unref(data);
        return 1;
    }
    return 0;
}

/* ---- frames ---- */

static int on_ws_data(void *ud, const uint8_t *data, size_t len, int fin) {
    (void)fin; /* packets may span frames: the packet decoder does the joining */
    nh_conn_t *c = ud;
    if (!len || !c->session) return 0;
    return nh_session_on_bytes(c->session, data, len) < 0 ? -1 : 0;
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
        char peer[80] = "?", why[NH_LOG_ESCAPED_MAX];
        nh_conn_peer(c, peer, sizeof peer);
        nh_log(NH_LOG_DEBUG, "ws %s session %llu: close %d '%s' from the client", peer,
               c->session ? (unsigned long long)c->session->id : 0ULL, code,
               nh_log_escape(why, sizeof why, reason, len));
    }
    send_close(c, code); /* echo the status, as RFC 6455 5.5.1 asks */
    if (!c->close_reason) c->close_reason = NH_CLOSE_CLIENT;
    nh_conn_close_after_flush(c);
    return 1;
}

static const nh_ws_callbacks_t ws_callbacks = {on_ws_data, on_ws_ping, on_ws_pong, on_ws_close};

static int feed_frames(nh_conn_t *c, uint8_t *data, size_t len) {
    ws_state_t *w = c->tstate;
    int r = nh_ws_parser_feed(&w->parser, data, len, &ws_callbacks, c);
    if (r >= 0 || r == -1) return r < 0 ? -1 : 0; /* -1: the session already closed it */
    char peer[80] = "?";
    nh_conn_peer(c, peer, sizeof peer);
    nh_log(NH_LOG_WARN, "ws %s session %llu: %s; closing", peer,
           c->session ? (unsigned long long)c->session->id : 0ULL, nh_ws_strerror(r));
    send_close(c, nh_ws_error_close_code(r));
    if (!c->close_reason) c->close_reason = NH_CLOSE_BAD_INPUT;
    nh_conn_close_after_flush(c);
    return 0;
}

static int check_origin(nh_conn_t *c, const char *origin) {
    nh_host_t *h = c->host;
    if (!c->listener->check_origin) return 1;
    return nh_session_check_origin(h, c->listener->id, origin);
}

/* Is this one of the listener's WebSocket paths? A single trailing slash does not count:
 * "/nano/" is "/nano". */
static int has_path(const nh_listener_t *l, const char *path) {
    size_t n = strlen(path);
    if (n > 1 && path[n - 1] == '/') n--;
    for (int i = 0; i < l->npaths; i++) {
        size_t m = strlen(l->paths[i]);
        if (m > 1 && l->paths[i][m - 1] == '/') m--;
        if (m == n && strncmp(l->paths[i], path, n) == 0) return 1;
    }
    return 0;
}

static int upgrade(nh_conn_t *c, uint8_t *rest, size_t rest_len) {
    ws_state_t *w = c->tstate;
    nh_http_req_t *req = w->req;
    /* A WebSocket path is never a file, even under a static prefix such as "/". */
    if (!has_path(c->listener, req->path)) {
        if ((req->method == HTTP_GET || req->method == HTTP_HEAD) &&
            serve_static(c, req->path, req->method == HTTP_HEAD))
            return 0;
        http_error(c, 404, "Not Found");
        return 0;
    }
    int check = nh_http_req_check_upgrade(req);
    if (check != NH_UPGRADE_OK) {
        char peer[80] = "?", path[NH_LOG_ESCAPED_MAX];
        nh_conn_peer(c, peer, sizeof peer);
        nh_log(NH_LOG_INFO, "ws %s: upgrade of '%s' refused: %s", peer,
               nh_log_escape(path, sizeof path, req->path, strlen(req->path)),
               nh_http_upgrade_strerror(check));
        /* RFC 6455 4.2.2: a version refusal names the version this server speaks */
        http_error_with(c, 400, "Bad Request",
                        check == NH_UPGRADE_VERSION ? "Sec-WebSocket-Version: 13\r\n" : NULL);
        return 0;
    }
    if (!check_origin(c, req->origin)) {
        char peer[80] = "?";
        nh_conn_peer(c, peer, sizeof peer);
        char origin[NH_LOG_ESCAPED_MAX];
        nh_log(NH_LOG_INFO, "ws %s: origin '%s' refused", peer,
               nh_log_escape(origin, sizeof origin, req->origin, strlen(req->origin)));
        http_error(c, 403, "Forbidden");
        return 0;
    }
    char accept[29];
    if (nh_ws_accept_key(req->key, accept) != 0) {
        http_error(c, 400, "Bad Request");
        return 0;
    }
    char head[256];
    int n = snprintf(head, sizeof head,
                     "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
                     "Connection: Upgrade\r\nSec-WebSocket-Accept: %s\r\n\r\n",
                     accept);
    nh_conn_send_raw(c, head, (size_t)n);
    free(w->req);
    w->req = NULL;
    w->upgraded = 1;
    return rest_len ? feed_frames(c, rest, rest_len) : 0;
}

static int ws_read(nh_conn_t *c, uint8_t *data, size_t len) {
    ws_state_t *w = c->tstate;
    if (c->close_after_flush) return 0; /* answered already; ignore what else the peer sends */
    if (w->upgraded) {
        if (c->session) c->session->last_recv_ms = nh_timers_now(&c->host->timers);
        return feed_frames(c, data, len);
    }
    size_t consumed = 0;
    int r = nh_http_req_feed(w->req, (const char *)data, len, &consumed);
    if (r < 0) {
        char peer[80] = "?";
        nh_conn_peer(c, peer, sizeof peer);
        nh_log(NH_LOG_WARN, "ws %s: %s; closing", peer, nh_ws_strerror(r));
        http_error(c, r == NH_EWS_HTTP_TOO_BIG ? 431 : 400,
                   r == NH_EWS_HTTP_TOO_BIG ? "Request Header Fields Too Large" : "Bad Request");
        return 0;
    }
    if (r == 0) return 0;
    return upgrade(c, data + consumed, len - consumed);
}

const nh_transport_t nh_transport_ws = {
    .name = "ws",
    .on_open = ws_open,
    .on_read = ws_read,
    .frame_header = ws_frame_header,
    .on_closing = ws_closing,
    .on_free = ws_free,
};
