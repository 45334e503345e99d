/* pg_client — one PostgreSQL connection on the host's libuv loop, through libpq's asynchronous
 * API (PQconnectStart/PQconnectPoll, PQsendQueryParams, PQconsumeInput/PQisBusy/PQgetResult)
 * on a uv_poll of the connection's socket. Nothing here blocks the loop.
 *
 * Mechanism only, no Lua (lua_pg.c maps results to Lua; lua/nano/pg.lua pools connections,
 * waits, times out and reconnects). One query at a time per connection: the pool is above.
 *
 * Life: nh_pg_connect() → on_connect(ok) → nh_pg_query() → on_result(res) per query →
 * the connection ends (server gone, connect failed, nh_pg_close()) → a query in flight gets
 * on_result(NULL, reason) (not after nh_pg_close) → every poll handle closes → on_gone(reason),
 * the last call, after which the struct is freed. Callbacks run only from the loop's poll
 * callbacks, never inside an API call.
 *
 * The poll handle keeps the loop alive only while connecting or running a query: an idle
 * connection does not hold a stopping nano-host up.
 *
 * Host names: a single `host` name (without `hostaddr`) is resolved on libuv's pool first
 * (resolve.c) and given to libpq as `hostaddr`: libpq would call a blocking getaddrinfo. A host
 * list is left to libpq. A failed lookup is reported like a failed connect.
 *
 * Cancelling: libpq's PQcancel opens a new connection to the server and waits for it, so it
 * blocks; nh_pg_cancel runs it on libuv's thread pool (the work item owns its PGcancel and
 * touches nothing else), and the query then ends with the server's "canceling statement" error.
 */
#ifndef NH_PG_CLIENT_H
#define NH_PG_CLIENT_H

#include <stddef.h>
#include <uv.h>

#include <libpq-fe.h>

typedef struct nh_pg nh_pg_t;

typedef struct nh_pg_events {
    /* Connected and ready (ok = 1), or the connection attempt failed (ok = 0; on_gone follows). */
    void (*on_connect)(nh_pg_t *c, void *data, int ok, const char *err);
    /* The query ended: res is its last result (the first error result if one failed), owned by
     * the module and cleared after the call; res NULL: the connection was lost, err says why. */
    void (*on_result)(nh_pg_t *c, void *data, const PGresult *res, const char *err);
    /* The last call: every handle is closed, the struct is freed when it returns. */
    void (*on_gone)(nh_pg_t *c, void *data, const char *reason);
} nh_pg_events_t;

/* Starts connecting (conninfo: "host=... port=... dbname=..." or a postgresql:// URI).
 * 0 and *out set, or -1 with err filled (no callbacks). */
int nh_pg_connect(uv_loop_t *loop, const char *conninfo, const nh_pg_events_t *events, void *data,
                  nh_pg_t **out, char *err, size_t errlen);

/* Sends one statement with nparams text parameters ($1..$n; values[i] NULL is SQL NULL).
 * 0, or -1 with err filled when not connected, already busy, or libpq refused it. */
int nh_pg_query(nh_pg_t *c, const char *sql, int nparams, const char *const *values, char *err,
                size_t errlen);

/* Asks the server to cancel the query in flight (no-op when idle). 0 or -1. */
int nh_pg_cancel(nh_pg_t *c);

/* Closes now (idempotent): no on_result for a query in flight; on_gone follows. */
void nh_pg_close(nh_pg_t *c);

#endif
