/* redis_client.c and pg_client.c without a database server: the paths that must end cleanly
 * whatever the other side does. A port where nothing listens (connect fails: on_connect(0), then
 * on_gone), a loopback listener that accepts and hangs up at once (a pending Redis command gets
 * no reply and an error; PostgreSQL's startup fails), a close right after connect (no callback
 * but on_gone), a host name that does not resolve, a close while the name is being looked up,
 * refused arguments (no callback at all). Each case runs the loop until it is
 * empty and checks that uv_loop_close succeeds: every handle closed. The talk with real servers
 * is in spec/redis_spec.lua and spec/pg_spec.lua. */
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "pg_client.h"
#include "redis_client.h"

typedef struct record {
    int connects, connect_ok, replies, replies_failed, gone;
    char last_err[256];
} record_t;

static void note_err(record_t *r, const char *err) {
    if (err) snprintf(r->last_err, sizeof r->last_err, "%s", err);
}

/* ---- a loopback listener that accepts and closes at once ---------------------------------- */

static uv_tcp_t listener;
static int listener_port;

static void on_peer_closed(uv_handle_t *h) {
    free(h);
}

static void on_accept(uv_stream_t *server, int status) {
    if (status < 0) return;
    uv_tcp_t *peer = malloc(sizeof *peer);
    uv_tcp_init(server->loop, peer);
    uv_accept(server, (uv_stream_t *)peer); /* accepted or not, it goes at once */
    uv_close((uv_handle_t *)peer, on_peer_closed);
}

static void listen_and_hang_up(uv_loop_t *loop) {
    struct sockaddr_in a;
    uv_ip4_addr("127.0.0.1", 0, &a);
    uv_tcp_init(loop, &listener);
    uv_tcp_bind(&listener, (struct sockaddr *)&a, 0);
    uv_listen((uv_stream_t *)&listener, 16, on_accept);
    struct sockaddr_in bound;
    int len = sizeof bound;
    uv_tcp_getsockname(&listener, (struct sockaddr *)&bound, &len);
    listener_port = ntohs(bound.sin_port);
}

/* A port nothing listens on: bound, read, released. */
static int closed_port(uv_loop_t *loop) {
    uv_tcp_t t;
    struct sockaddr_in a, bound;
    int len = sizeof bound;
    uv_ip4_addr("127.0.0.1", 0, &a);
    uv_tcp_init(loop, &t);
    uv_tcp_bind(&t, (struct sockaddr *)&a, 0);
    uv_tcp_getsockname(&t, (struct sockaddr *)&bound, &len);
    uv_close((uv_handle_t *)&t, NULL);
    uv_run(loop, UV_RUN_DEFAULT);
    return ntohs(bound.sin_port);
}

static int run_until_empty(uv_loop_t *loop) {
    uv_run(loop, UV_RUN_DEFAULT);
    return uv_loop_close(loop) == 0;
}

/* ---- redis ----------------------------------------------------------------------------------- */

static void r_connect(nh_redis_t *c, void *data, int ok, const char *err) {
    (void)c;
    record_t *r = data;
    r->connects++;
    r->connect_ok += ok;
    note_err(r, err);
}

static void r_reply(nh_redis_t *c, void *data, uint64_t id, const redisReply *reply,
                    const char *err) {
    (void)c;
    (void)id;
    record_t *r = data;
    r->replies++;
    if (!reply) r->replies_failed++;
    note_err(r, err);
}

static void r_push(nh_redis_t *c, void *data, const redisReply *reply) {
    (void)c;
    (void)data;
    (void)reply;
}

static void r_gone(nh_redis_t *c, void *data, const char *reason) {
    (void)c;
    (void)reason;
    ((record_t *)data)->gone++;
}

static const nh_redis_events_t rev = {r_connect, r_reply, r_push, r_gone};

static void test_redis_refused(void) {
    uv_loop_t loop;
    uv_loop_init(&loop);
    record_t r = {0};
    nh_redis_t *c;
    char err[200];
    CHECK(nh_redis_connect(&loop, "127.0.0.1", closed_port(&loop), NULL, &rev, &r, &c, err,
                           sizeof err) == 0);
    CHECK(run_until_empty(&loop));
    CHECK(r.connects == 1 && r.connect_ok == 0);
    CHECK(strstr(r.last_err, "refused") != NULL);
    CHECK(r.gone == 1);
}

static void test_redis_hang_up_fails_pending(void) {
    uv_loop_t loop;
    uv_loop_init(&loop);
    listen_and_hang_up(&loop);
    record_t r = {0};
    nh_redis_t *c;
    char err[200];
    CHECK(nh_redis_connect(&loop, "127.0.0.1", listener_port, NULL, &rev, &r, &c, err,
                           sizeof err) == 0);
    const char *argv[] = {"PING"};
    size_t lens[] = {4};
    CHECK(nh_redis_command(c, 1, argv, lens, 7, err, sizeof err) == 0);
    while (r.gone == 0)
        uv_run(&loop, UV_RUN_ONCE);
    uv_close((uv_handle_t *)&listener, NULL);
    CHECK(run_until_empty(&loop));
    CHECK(r.connect_ok == 1);
    CHECK(r.replies == 1 && r.replies_failed == 1); /* failed, not forgotten */
    CHECK(strstr(r.last_err, "closed") != NULL);
    CHECK(r.gone == 1);
}

static void test_redis_close_at_once(void) {
    uv_loop_t loop;
    uv_loop_init(&loop);
    listen_and_hang_up(&loop);
    record_t r = {0};
    nh_redis_t *c;
    char err[200];
    CHECK(nh_redis_connect(&loop, "127.0.0.1", listener_port, NULL, &rev, &r, &c, err,
                           sizeof err) == 0);
    const char *argv[] = {"GET", "k"};
    size_t lens[] = {3, 1};
    CHECK(nh_redis_command(c, 2, argv, lens, 1, err, sizeof err) == 0);
    nh_redis_close(c);
    nh_redis_close(c);  /* idempotent */
    CHECK(r.gone == 0); /* never inside the call */
    uv_close((uv_handle_t *)&listener, NULL);
    CHECK(run_until_empty(&loop));
    CHECK(r.connects == 0 && r.replies == 0); /* no callback after close but on_gone */
    CHECK(r.gone == 1);
}

static void test_redis_unresolvable_name(void) {
    uv_loop_t loop;
    uv_loop_init(&loop);
    record_t r = {0};
    nh_redis_t *c = NULL;
    char err[200];
    CHECK(nh_redis_connect(&loop, "no-such-host.invalid", 6379, NULL, &rev, &r, &c, err,
                           sizeof err) == 0);
    const char *argv[] = {"PING"};
    size_t lens[] = {4};
    CHECK(nh_redis_command(c, 1, argv, lens, 1, err, sizeof err) < 0); /* not before the lookup */
    CHECK(strcmp(err, "not connected yet") == 0);
    CHECK(r.gone == 0); /* the lookup runs off the loop thread */
    CHECK(run_until_empty(&loop));
    CHECK(r.connects == 1 && r.connect_ok == 0);
    CHECK(strstr(r.last_err, "cannot resolve no-such-host.invalid") != NULL);
    CHECK(r.gone == 1);
}

static void test_redis_close_while_resolving(void) {
    uv_loop_t loop;
    uv_loop_init(&loop);
    record_t r = {0};
    nh_redis_t *c = NULL;
    char err[200];
    CHECK(nh_redis_connect(&loop, "localhost", closed_port(&loop), NULL, &rev, &r, &c, err,
                           sizeof err) == 0);
    nh_redis_close(c);
    CHECK(r.gone == 0);
    CHECK(run_until_empty(&loop));
    CHECK(r.connects == 0 && r.gone == 1);
}

/* ---- postgres -------------------------------------------------------------------------------- */

static void p_connect(nh_pg_t *c, void *data, int ok, const char *err) {
    (void)c;
    record_t *r = data;
    r->connects++;
    r->connect_ok += ok;
    note_err(r, err);
}

static void p_result(nh_pg_t *c, void *data, const PGresult *res, const char *err) {
    (void)c;
    record_t *r = data;
    r->replies++;
    if (!res) r->replies_failed++;
    note_err(r, err);
}

static void p_gone(nh_pg_t *c, void *data, const char *reason) {
    (void)c;
    (void)reason;
    ((record_t *)data)->gone++;
}

static const nh_pg_events_t pev = {p_connect, p_result, p_gone};

enum { PG_REFUSED, PG_HANG_UP };

static void pg_case(int peer, int close_at_once, record_t *r) {
    uv_loop_t loop;
    uv_loop_init(&loop);
    int port;
    if (peer == PG_HANG_UP) {
        listen_and_hang_up(&loop);
        port = listener_port;
    } else {
        port = closed_port(&loop);
    }
    char info[128], err[300];
    snprintf(info, sizeof info, "host=127.0.0.1 port=%d dbname=x user=x connect_timeout=5", port);
    nh_pg_t *c;
    CHECK(nh_pg_connect(&loop, info, &pev, r, &c, err, sizeof err) == 0);
    CHECK(nh_pg_query(c, "SELECT 1", 0, NULL, err, sizeof err) < 0); /* not connected yet */
    CHECK(strstr(err, "not connected") != NULL);
    if (close_at_once) nh_pg_close(c);
    while (r->gone == 0)
        uv_run(&loop, UV_RUN_ONCE);
    if (listener_port == port) uv_close((uv_handle_t *)&listener, NULL);
    listener_port = 0;
    CHECK(run_until_empty(&loop));
}

static void test_pg_refused(void) {
    record_t r = {0};
    pg_case(PG_REFUSED, 0, &r);
    CHECK(r.connects == 1 && r.connect_ok == 0);
    CHECK(strstr(r.last_err, "refused") != NULL);
    CHECK(r.gone == 1);
}

static void test_pg_hang_up(void) {
    record_t r = {0};
    pg_case(PG_HANG_UP, 0, &r);
    CHECK(r.connects == 1 && r.connect_ok == 0);
    CHECK(strncmp(r.last_err, "connect: ", 9) == 0);
    CHECK(strchr(r.last_err, '\n') == NULL); /* one line */
    CHECK(r.gone == 1);
}

static void test_pg_close_at_once(void) {
    record_t r = {0};
    pg_case(PG_HANG_UP, 1, &r);
    CHECK(r.connects == 0 && r.replies == 0);
    CHECK(r.gone == 1);
}

static void test_pg_unresolvable_name(void) {
    uv_loop_t loop;
    uv_loop_init(&loop);
    record_t r = {0};
    nh_pg_t *c = NULL;
    char err[300];
    CHECK(nh_pg_connect(&loop, "host=no-such-host.invalid dbname=x", &pev, &r, &c, err,
                        sizeof err) == 0);
    CHECK(r.gone == 0); /* the lookup runs off the loop thread */
    CHECK(run_until_empty(&loop));
    CHECK(r.connects == 1 && r.connect_ok == 0);
    CHECK(strstr(r.last_err, "connect: cannot resolve no-such-host.invalid") != NULL);
    CHECK(r.gone == 1);
}

static void test_pg_close_while_resolving(void) {
    uv_loop_t loop;
    uv_loop_init(&loop);
    record_t r = {0};
    nh_pg_t *c = NULL;
    char err[300], info[128];
    snprintf(info, sizeof info, "host=localhost port=%d dbname=x", closed_port(&loop));
    CHECK(nh_pg_connect(&loop, info, &pev, &r, &c, err, sizeof err) == 0);
    nh_pg_close(c);
    CHECK(r.gone == 0);
    CHECK(run_until_empty(&loop));
    CHECK(r.connects == 0 && r.gone == 1);
}

static void test_pg_bad_conninfo(void) {
    uv_loop_t loop;
    uv_loop_init(&loop);
    record_t r = {0};
    nh_pg_t *c = NULL;
    char err[300];
    CHECK(nh_pg_connect(&loop, "nonsense", &pev, &r, &c, err, sizeof err) < 0);
    CHECK(strstr(err, "missing \"=\"") != NULL);
    CHECK(run_until_empty(&loop));
    CHECK(r.gone == 0 && r.connects == 0);
}

int main(void) {
    test_redis_refused();
    test_redis_hang_up_fails_pending();
    test_redis_close_at_once();
    test_redis_unresolvable_name();
    test_redis_close_while_resolving();
    test_pg_refused();
    test_pg_hang_up();
    test_pg_close_at_once();
    test_pg_bad_conninfo();
    test_pg_unresolvable_name();
    test_pg_close_while_resolving();
    return check_done();
}
