/* sqlite_db — an SQLite database whose statements run off the loop thread.
 *
 * A handle is one SQLite connection. Its work (open, each statement, close) runs on libuv's thread
 * pool, one job at a time and in the order given, so the connection is only ever used by one
 * thread at once and a handle's statements never reorder. The pool threads touch only SQLite and
 * the plain C data of the job; the result goes back to the loop thread (uv_queue_work's after
 * callback), where the caller's callback runs. No Lua here: lua_sqlite.c converts.
 *
 * The connection is opened in WAL mode (except ":memory:"), with a busy timeout and a cache of
 * prepared statements (keyed by SQL text). Parameters are bound, never spliced into the SQL.
 *
 * Every job ends with exactly one callback. nh_sqlite_close refuses new statements, lets the ones
 * already queued run (a write made just before shutdown is not lost), then closes the connection
 * on the pool and frees the handle.
 */
#ifndef NH_SQLITE_DB_H
#define NH_SQLITE_DB_H

#include <stddef.h>
#include <stdint.h>
#include <uv.h>

enum nh_sql_type { NH_SQL_NULL, NH_SQL_INT, NH_SQL_FLOAT, NH_SQL_TEXT, NH_SQL_BLOB };

typedef struct nh_sql_value {
    int type;
    int64_t i;
    double d;
    char *s; /* TEXT/BLOB: owned (malloc'd), NUL-terminated for convenience */
    size_t n;
} nh_sql_value_t;

typedef struct nh_sql_result {
    const char *error; /* NULL on success */
    int is_query;      /* the statement returned columns: rows below */
    int ncols;
    char **cols; /* column names */
    size_t nrows;
    nh_sql_value_t *vals; /* nrows * ncols, row by row */
    int64_t changes, last_insert_id;
} nh_sql_result_t;

typedef struct nh_sqlite nh_sqlite_t;
typedef void (*nh_sqlite_cb)(void *ud, const nh_sql_result_t *r);

typedef struct nh_sqlite_opts {
    int busy_timeout_ms; /* 0: 5000 */
    int readonly;
    int cache_size;  /* prepared statements kept (0: 32) */
    size_t max_rows; /* a query returning more fails (0: 1,000,000) */
} nh_sqlite_opts_t;

/* Returns the handle at once; the open itself runs on the pool and its outcome is the first
 * job's: cb(ud, result) with result->error when the file cannot be opened. */
nh_sqlite_t *nh_sqlite_open(uv_loop_t *loop, const char *path, const nh_sqlite_opts_t *o,
                            nh_sqlite_cb cb, void *ud);
/* Queues one statement with its parameters (copied; the caller keeps its own). 0, or -1 when the
 * handle is closing (then no callback). */
int nh_sqlite_exec(nh_sqlite_t *db, const char *sql, size_t sql_len, const nh_sql_value_t *params,
                   int nparams, nh_sqlite_cb cb, void *ud);
/* Closes (idempotent) after the queued statements; done(ud) once freed (may be NULL). */
void nh_sqlite_close(nh_sqlite_t *db, void (*done)(void *ud), void *ud);
/* Jobs queued or running. */
int nh_sqlite_pending(const nh_sqlite_t *db);

#endif
