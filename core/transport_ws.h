/* transport_ws — the WebSocket listener's options and its HTTP side.
 *
 * A WebSocket listener speaks HTTP/1.1 until a request upgrades: the upgrade on one of its paths,
 * and beside it plain requests, answered by Lua's routes (nano.http.route), by a static folder,
 * or with an error. Plain requests are not sessions: no session is opened (no id taken, nothing
 * in the session counts) until a connection upgrades. Keep-alive; a request head over
 * NH_HTTP_MAX_HEAD bytes is 431, a body over NH_WS_HTTP_MAX_BODY 413 (a chunked one 411), a
 * connection silent for handshake_timeout in the HTTP phase is closed. A plain GET on a
 * WebSocket path is served by a route or a static file mapped there, or answered 400 with a
 * body that says the path is a WebSocket endpoint.
 *
 * The options belong to the listener (nh_listener_t.opts, freed by nh_ws_options_free). The
 * origin check and the routes are callbacks the layer above (the Lua binding) implements, so
 * this transport calls no Lua.
 */
#ifndef NH_TRANSPORT_WS_H
#define NH_TRANSPORT_WS_H

#include <stddef.h>
#include <stdint.h>

#include "conn.h"
#include "metrics_http.h"
#include "static_files.h"

#define NH_WS_MAX_PATHS 8
#define NH_WS_HTTP_MAX_BODY (1024 * 1024)

/* Accept a WebSocket upgrade from this Origin ("" when none was sent)? 1 yes, 0 no. */
typedef int (*nh_ws_origin_fn)(void *ud, int listener_id, const char *origin);
/* A plain request (not an upgrade), head and body complete. Returns 1 when a route takes it
 * (its answer comes through nh_ws_http_respond, now or later), 0 when no route has its path
 * (the transport goes on to the static folders). */
typedef int (*nh_ws_route_fn)(void *ud, const nh_http_request_t *req);

typedef struct nh_ws_options {
    char paths[NH_WS_MAX_PATHS][128]; /* WebSocket paths (pomelo's web client can only use "/") */
    int npaths;
    int check_origin; /* call `origin` for each upgrade */
    nh_static_dir_t *statics;
    int nstatics;
    nh_ws_origin_fn origin;
    nh_ws_route_fn route; /* NULL: no routes */
    void *ud;             /* for both */
} nh_ws_options_t;

/* Frees the host's spare WebSocket states (host.h: ws_spare). */
void nh_ws_spare_free(nh_host_t *h);

/* nh_listener_t.opts_free for these options. */
void nh_ws_options_free(void *opts);

/* Answers route request `id`: `headers` are complete "Name: value\r\n" lines (Content-Length
 * and, when the connection closes after it, Connection are added). 0, or UV_ENOENT when the
 * request's connection is gone. */
int nh_ws_http_respond(nh_host_t *h, uint64_t id, int status, const char *headers,
                       size_t headers_len, const char *body, size_t body_len);

#endif
