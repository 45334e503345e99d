#include "sqlite_db.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <sqlite3.h>

enum { JOB_OPEN, JOB_EXEC, JOB_CLOSE };

typedef struct job {
    uv_work_t work;
    struct job *next;
    nh_sqlite_t *db;
    int kind;
    char *sql;
    size_t sql_len;
    nh_sql_value_t *params;
    int nparams;
    nh_sql_result_t res;
    size_t rows_cap;
    char errbuf[512];
    nh_sqlite_cb cb;
    void *ud;
} job_t;

typedef struct cached {
    char *sql;
    size_t len;
    sqlite3_stmt *st;
    uint64_t used;
} cached_t;

struct nh_sqlite {
    uv_loop_t *loop;
    sqlite3 *conn;
    char *path;
    nh_sqlite_opts_t o;
    job_t *head, *tail; /* queued, not started */
    job_t *running;
    int closing;
    int pending;
    cached_t *cache;
    int ncache;
    uint64_t tick;
    void (*done)(void *ud);
    void *done_ud;
};

/* ---- values and results ---- */

static void free_values(nh_sql_value_t *v, size_t n) {
    for (size_t i = 0; i < n; i++)
        free(v[i].s);
}

static void free_result(nh_sql_result_t *r) {
    if (r->vals) free_values(r->vals, r->nrows * (size_t)r->ncols);
    free(r->vals);
    for (int i = 0; i < r->ncols; i++)
        free(r->cols[i]);
    free(r->cols);
    memset(r, 0, sizeof *r);
}

static void free_job(job_t *j) {
    free_result(&j->res);
    if (j->params) free_values(j->params, (size_t)j->nparams);
    free(j->params);
    free(j->sql);
    free(j);
}

static char *copy_bytes(const void *p, size_t n) {
    char *s = malloc(n + 1);
    if (!s) return NULL;
    if (n) memcpy(s, p, n);
    s[n] = '\0';
    return s;
}

/* ---- on the pool thread ---- */

static int job_fail(job_t *j, const char *fmt, const char *arg) {
    snprintf(j->errbuf, sizeof j->errbuf, fmt, arg);
    j->res.error = j->errbuf;
    return -1;
}

static int sql_fail(job_t *j) {
    return job_fail(j, "%s", sqlite3_errmsg(j->db->conn));
}

static void do_open(job_t *j) {
    nh_sqlite_t *db = j->db;
    int flags = db->o.readonly ? SQLITE_OPEN_READONLY : SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE;
    flags |= SQLITE_OPEN_NOMUTEX; /* one job at a time: the handle's own ordering is the lock */
    if (sqlite3_open_v2(db->path, &db->conn, flags, NULL) != SQLITE_OK) {
        job_fail(j, "%s", db->conn ? sqlite3_errmsg(db->conn) : "out of memory");
        sqlite3_close_v2(db->conn);
        db->conn = NULL;
        return;
    }
    sqlite3_extended_result_codes(db->conn, 1);
    sqlite3_busy_timeout(db->conn, db->o.busy_timeout_ms > 0 ? db->o.busy_timeout_ms : 5000);
    const char *setup = strcmp(db->path, ":memory:") == 0 || db->o.readonly
                            ? "PRAGMA foreign_keys=ON;"
                            : "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL; "
                              "PRAGMA foreign_keys=ON;";
    char *msg = NULL;
    if (sqlite3_exec(db->conn, setup, NULL, NULL, &msg) != SQLITE_OK) {
        job_fail(j, "%s", msg ? msg : "setup failed");
        sqlite3_free(msg);
    }
}

/* A prepared statement for the SQL, from the cache when it is there. *tail: the rest of the text
 * (a second statement); only whole single statements are cached. NULL with *tail NULL on an
 * error, NULL with *tail set when only whitespace or comments were left. */
static sqlite3_stmt *prepare(nh_sqlite_t *db, const char *sql, size_t len, const char **tail,
                             int *cached) {
    *cached = 0;
    for (int i = 0; i < db->ncache; i++) {
        cached_t *c = &db->cache[i];
        if (c->len == len && memcmp(c->sql, sql, len) == 0) {
            c->used = ++db->tick;
            *tail = sql + len;
            *cached = 1;
            return c->st;
        }
    }
    sqlite3_stmt *st = NULL;
    if (sqlite3_prepare_v3(db->conn, sql, (int)len, SQLITE_PREPARE_PERSISTENT, &st, tail) !=
        SQLITE_OK) {
        *tail = NULL;
        return NULL;
    }
    if (!st) return NULL; /* whitespace or a comment */
    size_t used = (size_t)(*tail - sql);
    int single = 1;
    for (const char *p = *tail; p < sql + len; p++)
        if (*p != ' ' && *p != '\n' && *p != '\r' && *p != '\t' && *p != ';') single = 0;
    int max = db->o.cache_size > 0 ? db->o.cache_size : 32;
    if (!single || used == 0) return st;
    if (db->ncache == max) { /* the least recently used goes */
        int lru = 0;
        for (int i = 1; i < db->ncache; i++)
            if (db->cache[i].used < db->cache[lru].used) lru = i;
        sqlite3_finalize(db->cache[lru].st);
        free(db->cache[lru].sql);
        db->cache[lru] = db->cache[--db->ncache];
    }
    if (!db->cache) db->cache = calloc((size_t)max, sizeof *db->cache);
    char *key = db->cache ? copy_bytes(sql, len) : NULL;
    if (!key) return st;
    db->cache[db->ncache++] = (cached_t){key, len, st, ++db->tick};
    *cached = 1;
    *tail = sql + len;
    return st;
}

static int bind_params(job_t *j, sqlite3_stmt *st) {
    int want = sqlite3_bind_parameter_count(st);
    if (want != j->nparams) {
        snprintf(j->errbuf, sizeof j->errbuf, "the statement has %d parameter(s), %d given", want,
                 j->nparams);
        j->res.error = j->errbuf;
        return -1;
    }
    for (int i = 0; i < j->nparams; i++) {
        const nh_sql_value_t *v = &j->params[i];
        int r;
        switch (v->type) {
        case NH_SQL_INT:
            r = sqlite3_bind_int64(st, i + 1, v->i);
            break;
        case NH_SQL_FLOAT:
            r = sqlite3_bind_double(st, i + 1, v->d);
            break;
        case NH_SQL_TEXT:
            r = sqlite3_bind_text(st, i + 1, v->s, (int)v->n, SQLITE_STATIC);
            break;
        case NH_SQL_BLOB:
            r = sqlite3_bind_blob(st, i + 1, v->s, (int)v->n, SQLITE_STATIC);
            break;
        default:
            r = sqlite3_bind_null(st, i + 1);
            break;
        }
        if (r != SQLITE_OK) return sql_fail(j);
    }
    return 0;
}

static int add_row(job_t *j, sqlite3_stmt *st) {
    nh_sql_result_t *r = &j->res;
    size_t max = j->db->o.max_rows ? j->db->o.max_rows : 1000000;
    if (r->nrows == max) {
        snprintf(j->errbuf, sizeof j->errbuf, "the query returned more than %zu rows", max);
        r->error = j->errbuf;
        return -1;
    }
    size_t nc = (size_t)r->ncols;
    if (r->nrows == j->rows_cap) {
        size_t cap = j->rows_cap ? j->rows_cap * 2 : 16;
        nh_sql_value_t *v = realloc(r->vals, cap * nc * sizeof *v);
        if (!v) return job_fail(j, "%s", "out of memory");
        r->vals = v;
        j->rows_cap = cap;
    }
    nh_sql_value_t *row = r->vals + r->nrows * nc;
    memset(row, 0, nc * sizeof *row);
    r->nrows++;
    for (size_t c = 0; c < nc; c++) {
        nh_sql_value_t *v = &row[c];
        switch (sqlite3_column_type(st, (int)c)) {
        case SQLITE_INTEGER:
            v->type = NH_SQL_INT;
            v->i = sqlite3_column_int64(st, (int)c);
            break;
        case SQLITE_FLOAT:
            v->type = NH_SQL_FLOAT;
            v->d = sqlite3_column_double(st, (int)c);
            break;
        case SQLITE_TEXT:
        case SQLITE_BLOB: {
            int blob = sqlite3_column_type(st, (int)c) == SQLITE_BLOB;
            const void *p =
                blob ? sqlite3_column_blob(st, (int)c) : sqlite3_column_text(st, (int)c);
            v->n = (size_t)sqlite3_column_bytes(st, (int)c);
            v->type = blob ? NH_SQL_BLOB : NH_SQL_TEXT;
            v->s = copy_bytes(p, v->n);
            if (!v->s) return job_fail(j, "%s", "out of memory");
            break;
        }
        default:
            v->type = NH_SQL_NULL;
            break;
        }
    }
    return 0;
}

static void run_one(job_t *j, sqlite3_stmt *st) {
    nh_sqlite_t *db = j->db;
    nh_sql_result_t *r = &j->res;
    int ncols = sqlite3_column_count(st);
    if (ncols > 0) {
        free_result(r); /* of an earlier statement of the same text */
        j->rows_cap = 0;
        r->is_query = 1;
        r->ncols = ncols;
        r->cols = calloc((size_t)ncols, sizeof *r->cols);
        if (!r->cols) {
            job_fail(j, "%s", "out of memory");
            return;
        }
        for (int c = 0; c < ncols; c++) {
            const char *name = sqlite3_column_name(st, c);
            r->cols[c] = copy_bytes(name ? name : "", name ? strlen(name) : 0);
        }
    }
    int rc;
    while ((rc = sqlite3_step(st)) == SQLITE_ROW)
        if (add_row(j, st) != 0) return;
    if (rc != SQLITE_DONE) {
        sql_fail(j);
        return;
    }
    r->changes = sqlite3_changes64(db->conn);
    r->last_insert_id = sqlite3_last_insert_rowid(db->conn);
}

static void do_exec(job_t *j) {
    nh_sqlite_t *db = j->db;
    if (!db->conn) {
        job_fail(j, "%s", "the database is not open");
        return;
    }
    const char *sql = j->sql, *end = j->sql + j->sql_len;
    int first = 1;
    while (sql < end && !j->res.error) {
        const char *tail = NULL;
        int cached;
        sqlite3_stmt *st = prepare(db, sql, (size_t)(end - sql), &tail, &cached);
        if (!st) {
            if (!tail) sql_fail(j);
            break;
        }
        /* parameters go to the first statement; further ones (a script) take none */
        if (first ? bind_params(j, st) == 0 : 1) run_one(j, st);
        first = 0;
        sqlite3_reset(st);
        sqlite3_clear_bindings(st);
        if (!cached) sqlite3_finalize(st);
        sql = tail;
    }
}

static void do_close(nh_sqlite_t *db) {
    for (int i = 0; i < db->ncache; i++) {
        sqlite3_finalize(db->cache[i].st);
        free(db->cache[i].sql);
    }
    db->ncache = 0;
    if (db->conn) sqlite3_close_v2(db->conn);
    db->conn = NULL;
}

/* A batch: the jobs queued when the pool took the first, run in order in one trip to the pool
 * (one handoff between threads for many statements: under load the queue is long). */
#define NH_SQLITE_BATCH 64

static void work_cb(uv_work_t *w) {
    for (job_t *j = w->data; j; j = j->next) {
        if (j->kind == JOB_OPEN)
            do_open(j);
        else if (j->kind == JOB_EXEC)
            do_exec(j);
        else
            do_close(j->db);
    }
}

/* ---- on the loop thread ---- */

static void start_next(nh_sqlite_t *db);

static void after_cb(uv_work_t *w, int status) {
    job_t *j = w->data;
    nh_sqlite_t *db = j->db;
    db->running = NULL;
    int closed = 0;
    while (j) {
        job_t *next = j->next;
        db->pending--;
        if (status == UV_ECANCELED && !j->res.error) job_fail(j, "%s", "database closed");
        if (j->kind == JOB_CLOSE)
            closed = 1; /* always a batch's last */
        else if (j->cb)
            j->cb(j->ud, &j->res);
        free_job(j);
        j = next;
    }
    if (closed) {
        void (*done)(void *) = db->done;
        void *ud = db->done_ud;
        free(db->cache);
        free(db->path);
        free(db);
        if (done) done(ud);
        return;
    }
    start_next(db);
}

static void start_next(nh_sqlite_t *db) {
    if (db->running || !db->head) return;
    job_t *j = db->head, *last = j;
    for (int n = 1; n < NH_SQLITE_BATCH && last->next && last->kind != JOB_CLOSE; n++)
        last = last->next;
    db->head = last->next;
    if (!db->head) db->tail = NULL;
    last->next = NULL;
    db->running = j;
    j->work.data = j;
    if (uv_queue_work(db->loop, &j->work, work_cb, after_cb) != 0) {
        /* cannot happen with a valid loop; fail the job the same way, later */
        j->res.error = "cannot queue work";
    }
}

static job_t *new_job(nh_sqlite_t *db, int kind, nh_sqlite_cb cb, void *ud) {
    job_t *j = calloc(1, sizeof *j);
    if (!j) return NULL;
    j->db = db;
    j->kind = kind;
    j->cb = cb;
    j->ud = ud;
    return j;
}

static void enqueue(nh_sqlite_t *db, job_t *j) {
    if (db->tail)
        db->tail->next = j;
    else
        db->head = j;
    db->tail = j;
    db->pending++;
    start_next(db);
}

nh_sqlite_t *nh_sqlite_open(uv_loop_t *loop, const char *path, const nh_sqlite_opts_t *o,
                            nh_sqlite_cb cb, void *ud) {
    nh_sqlite_t *db = calloc(1, sizeof *db);
    if (!db) return NULL;
    db->loop = loop;
    db->path = copy_bytes(path, strlen(path));
    if (o) db->o = *o;
    job_t *j = new_job(db, JOB_OPEN, cb, ud);
    if (!db->path || !j) {
        free(db->path);
        free(db);
        free(j);
        return NULL;
    }
    enqueue(db, j);
    return db;
}

int nh_sqlite_exec(nh_sqlite_t *db, const char *sql, size_t sql_len, const nh_sql_value_t *params,
                   int nparams, nh_sqlite_cb cb, void *ud) {
    if (db->closing) return -1;
    job_t *j = new_job(db, JOB_EXEC, cb, ud);
    if (!j) return -1;
    j->sql = copy_bytes(sql, sql_len);
    j->sql_len = sql_len;
    if (nparams > 0) j->params = calloc((size_t)nparams, sizeof *j->params);
    if (!j->sql || (nparams > 0 && !j->params)) {
        free_job(j);
        return -1;
    }
    j->nparams = nparams;
    for (int i = 0; i < nparams; i++) {
        j->params[i] = params[i];
        j->params[i].s = NULL;
        if (params[i].type == NH_SQL_TEXT || params[i].type == NH_SQL_BLOB) {
            j->params[i].s = copy_bytes(params[i].s, params[i].n);
            if (!j->params[i].s) {
                free_job(j);
                return -1;
            }
        }
    }
    enqueue(db, j);
    return 0;
}

void nh_sqlite_close(nh_sqlite_t *db, void (*done)(void *ud), void *ud) {
    if (db->closing) return;
    db->closing = 1; /* no new statements; the queued ones still run (no write is lost) */
    db->done = done;
    db->done_ud = ud;
    job_t *j = new_job(db, JOB_CLOSE, NULL, NULL);
    if (!j) return; /* out of memory: the handle leaks rather than being used after free */
    enqueue(db, j);
}

int nh_sqlite_pending(const nh_sqlite_t *db) {
    return db->pending;
}
