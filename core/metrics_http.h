/* metrics_http — the operator's HTTP listener: GET /metrics (nh_metrics_render, text format
 * 0.0.4) and GET /healthz (200 "ok" while serving, 503 while shutting down), on libuv with
 * http-parser. It also runs the loop-lag probe: a 100 ms timer whose lateness feeds
 * nano_loop_lag_seconds.
 *
 * Not a game listener: its connections are not sessions, not counted in nano.stats() nor against
 * max_conns. Limits: a request head over 8 KiB gets 431, a body 413, a method other than GET/HEAD
 * 405, another path 404; at most 64 connections at once (more are closed at accept), each closed
 * after 30 s of silence. Keep-alive as HTTP/1.1 says.
 *
 * Shutting down: nh_metrics_http_stopping() turns /healthz to 503 and keeps the listener up for
 * `drain_ms` more (so a load balancer sees the 503), then closes it; nh_metrics_http_close()
 * closes at once. The struct is freed when its last handle has closed; `*out` (given to start,
 * e.g. a field of the host) is set to NULL when closing starts, so the owner never holds a
 * pointer to a closed service. Errors: negative uv codes.
 */
#ifndef NH_METRICS_HTTP_H
#define NH_METRICS_HTTP_H

#include <stddef.h>
#include <stdint.h>
#include <uv.h>

#include "metrics.h"

typedef struct nh_metrics_http nh_metrics_http_t;

/* A request for a path other than /metrics and /healthz, handed to Lua's routes (lua_metrics.c).
 * Pointers are valid during the call only. */
typedef struct nh_http_request {
    uint64_t id; /* for nh_metrics_http_respond */
    const char *method;
    const char *target; /* path and query as sent */
    size_t target_len;
    const char *headers; /* "name\0value\0" pairs, names lower-cased */
    size_t headers_len;
    const char *body;
    size_t body_len;
    const char *remote; /* "ip:port" */
} nh_http_request_t;
typedef void (*nh_metrics_http_route_fn)(void *ud, const nh_http_request_t *req);

/* Fills the gauges a scrape shows (sessions, Lua memory, watchdog) just before rendering. */
typedef void (*nh_metrics_collect_fn)(void *ud, nh_metrics_gauges_t *g);

/* Binds addr ("host:port", ":port", "[v6]:port"; port 0 for a free one) and starts serving;
 * the bound address goes to `bound`. Returns 0 or a negative uv error. */
int nh_metrics_http_start(uv_loop_t *loop, const char *addr, nh_metrics_t *m,
                          nh_metrics_collect_fn collect, void *ud, uint64_t drain_ms,
                          nh_metrics_http_t **out, char *bound, size_t bound_len);
void nh_metrics_http_stopping(nh_metrics_http_t *s); /* NULL: nothing */
void nh_metrics_http_close(nh_metrics_http_t *s);    /* NULL: nothing */
/* Routes other paths to fn (NULL: 404 as before). Until the answer, that connection reads
 * nothing more (pipelined requests wait); a request body is taken up to 1 MiB (more: 413). */
void nh_metrics_http_set_router(nh_metrics_http_t *s, nh_metrics_http_route_fn fn, void *ud);
/* Answers request `id`: `headers` are complete "Name: value\r\n" lines (Content-Length and
 * Connection are added). UV_ENOENT when its connection is gone. */
int nh_metrics_http_respond(nh_metrics_http_t *s, uint64_t id, int status, const char *headers,
                            size_t headers_len, const char *body, size_t body_len);
/* The address it listens on ("" once closing). */
const char *nh_metrics_http_bound(const nh_metrics_http_t *s);

#endif
