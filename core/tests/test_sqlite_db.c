/* sqlite_db.c with no Lua: statements on libuv's pool come back on the loop in order, with their
 * values; errors carry SQLite's message; a handle closed with work queued runs that work, then
 * frees itself. */
#include <string.h>

#include "check.h"
#include "sqlite_db.h"

static int calls, order_ok = 1, last_seq, closed;
static char last_error[256];
static nh_sql_result_t copy; /* what the last query returned (shallow: checked in the callback) */
static int rows_seen;
static int64_t sum;

static void on_any(void *ud, const nh_sql_result_t *r) {
    int seq = (int)(intptr_t)ud;
    if (seq && seq != last_seq + 1) order_ok = 0;
    if (seq) last_seq = seq;
    calls++;
    snprintf(last_error, sizeof last_error, "%s", r->error ? r->error : "");
    if (r->is_query && r->ncols == 2 && r->nrows > 0) {
        rows_seen = (int)r->nrows;
        const nh_sql_value_t *v = r->vals;
        CHECK(strcmp(r->cols[0], "a") == 0 && strcmp(r->cols[1], "b") == 0);
        CHECK(v[0].type == NH_SQL_INT && v[1].type == NH_SQL_TEXT && strcmp(v[1].s, "x") == 0);
        sum = 0;
        for (size_t i = 0; i < r->nrows; i++)
            sum += r->vals[i * 2].i;
    }
    copy = *r;
}

static void on_closed(void *ud) {
    (void)ud;
    closed = 1;
}

int main(void) {
    uv_loop_t loop;
    uv_loop_init(&loop);
    nh_sqlite_t *db = nh_sqlite_open(&loop, ":memory:", NULL, on_any, NULL);
    CHECK(db != NULL);
    const char *create = "CREATE TABLE t (a INTEGER, b TEXT)";
    CHECK(nh_sqlite_exec(db, create, strlen(create), NULL, 0, on_any, (void *)1) == 0);
    const char *ins = "INSERT INTO t VALUES (?, ?)";
    for (int i = 0; i < 100; i++) {
        nh_sql_value_t p[2] = {{.type = NH_SQL_INT, .i = i},
                               {.type = NH_SQL_TEXT, .s = "x", .n = 1}};
        CHECK(nh_sqlite_exec(db, ins, strlen(ins), p, 2, on_any, (void *)(intptr_t)(i + 2)) == 0);
    }
    const char *sel = "SELECT a, b FROM t";
    CHECK(nh_sqlite_exec(db, sel, strlen(sel), NULL, 0, on_any, (void *)102) == 0);
    CHECK(nh_sqlite_pending(db) == 103); /* the open, the create, 100 inserts, the select */
    uv_run(&loop, UV_RUN_DEFAULT);
    CHECK(calls == 103 && order_ok && last_seq == 102);
    CHECK(rows_seen == 100 && sum == 4950);

    const char *bad = "SELEKT 1";
    calls = 0;
    CHECK(nh_sqlite_exec(db, bad, strlen(bad), NULL, 0, on_any, NULL) == 0);
    uv_run(&loop, UV_RUN_DEFAULT);
    CHECK(calls == 1 && strstr(last_error, "syntax error") != NULL);

    /* closed with statements queued: they still run (nothing lost), then the handle is freed */
    calls = 0;
    for (int i = 0; i < 5; i++)
        CHECK(nh_sqlite_exec(db, sel, strlen(sel), NULL, 0, on_any, NULL) == 0);
    nh_sqlite_close(db, on_closed, NULL);
    CHECK(nh_sqlite_exec(db, sel, strlen(sel), NULL, 0, on_any, NULL) == -1);
    uv_run(&loop, UV_RUN_DEFAULT);
    CHECK(calls == 5 && closed);
    CHECK(strcmp(last_error, "") == 0);
    CHECK(uv_loop_close(&loop) == 0);
    return check_done();
}
