/* http_client — outgoing HTTP(S) requests on the loop, never blocking it: libcurl's multi-socket
 * interface driven by libuv (a uv_poll per socket curl opens, one uv_timer for curl's timeouts).
 * No Lua here; lua_http.c turns it into nano.http.
 *
 * curl does DNS (its threaded resolver: off the loop thread, and curl's threads touch only curl),
 * TLS (OpenSSL), proxies (the usual environment variables, or a proxy given per request),
 * redirects (off unless asked), and keeps connections alive for reuse.
 *
 * Limits: at most max_in_flight requests at once (nh_http_request fails past it, with a clear
 * error) and at most max_per_host connections to one host (more requests wait in curl); a response
 * larger than its max_response fails with "response larger than N bytes".
 *
 * Every request ends with exactly one call of its callback, on the loop thread, unless cancelled
 * first (nh_http_cancel) or the client is closed (nh_http_close: pending callbacks are not
 * called). Ownership: poll handles are freed in their close callbacks; the client when its timer's
 * close callback has run.
 */
#ifndef NH_HTTP_CLIENT_H
#define NH_HTTP_CLIENT_H

#include <stddef.h>
#include <stdint.h>
#include <uv.h>

typedef struct nh_http nh_http_t;

typedef struct nh_http_opts {
    const char *method;         /* "GET" (default), "POST", "PUT", "DELETE", "HEAD", ... */
    const char *url;            /* http:// or https:// */
    const char *const *headers; /* "Name: value" strings, NULL-terminated (or NULL) */
    const void *body;
    size_t body_len;
    long timeout_ms;      /* the whole request (0: 30 s) */
    int follow_redirects; /* 0: a 3xx is the response */
    long max_redirects;   /* when following (0: 5) */
    size_t max_response;  /* body bytes (0: 16 MiB) */
    const char *proxy;    /* NULL: curl's default (the environment) */
    int insecure;         /* 1: do not verify the server's certificate (tests) */
} nh_http_opts_t;

typedef struct nh_http_result {
    long status;         /* 0 when the request failed */
    const char *headers; /* the final response's header block ("Name: value\r\n"...) */
    size_t headers_len;
    const char *body;
    size_t body_len;
    const char *error; /* NULL on success */
} nh_http_result_t;

typedef void (*nh_http_cb)(void *ud, const nh_http_result_t *r);

int nh_http_open(uv_loop_t *loop, int max_in_flight, int max_per_host, nh_http_t **out);
/* Starts a request. 0 with *id set, or -1 with the reason in err (bad arguments, too many in
 * flight, out of memory). cb is called later, never from inside this call. */
int nh_http_request(nh_http_t *c, const nh_http_opts_t *o, nh_http_cb cb, void *ud, uint64_t *id,
                    char *err, size_t errlen);
/* The request's callback will not be called (its transfer is dropped). */
void nh_http_cancel(nh_http_t *c, uint64_t id);
int nh_http_in_flight(const nh_http_t *c);
/* Drops every request (no callbacks) and frees the client once its handles have closed. */
void nh_http_close(nh_http_t *c);

#endif
