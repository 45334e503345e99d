/* metrics.c: bounded label sets, the text format's escaping and cumulative buckets, Lua
 * families' validation and series limit, close-reason mapping. */
#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "check.h"
#include "metrics.h"

static char *render(nh_metrics_t *m, nh_strbuf_t *b) {
    nh_metrics_gauges_t g;
    memset(&g, 0, sizeof g);
    nh_strbuf_free(b);
    nh_metrics_render(m, &g, b);
    return b->failed ? "" : b->data;
}

static void test_routes_bounded(void) {
    nh_metrics_t m;
    CHECK(nh_metrics_init(&m) == 0);
    char name[64];
    uint32_t first = nh_metrics_route_add(&m, "Room.join", 9);
    CHECK(first > 0);
    CHECK(nh_metrics_route_add(&m, "Room.join", 9) == first); /* twice: the same */
    CHECK(nh_metrics_route_find(&m, "Room.join", 9) == first);
    CHECK(nh_metrics_route_find(&m, "Room.joi", 8) == 0);
    int zero = 0;
    for (int i = 0; i < NH_METRICS_MAX_ROUTES + 100; i++) {
        int n = snprintf(name, sizeof name, "C%d.h", i);
        if (nh_metrics_route_add(&m, name, (size_t)n) == 0) zero++;
    }
    CHECK(m.nroutes == NH_METRICS_MAX_ROUTES);
    CHECK(zero == 102); /* "unknown" and Room.join hold two slots; the rest are "unknown" */
    CHECK(nh_metrics_route_find(&m, "C17.h", 5) > 0);
    /* error outcomes: the first 8 codes, then "other" */
    for (int code = 1; code <= 20; code++)
        nh_metrics_request(&m, first, code, 0.001);
    nh_metrics_request(&m, first, 0, 0.001);
    nh_metrics_request(&m, 999999, 0, 0.001); /* an out-of-range route id is "unknown" */
    CHECK(m.routes[first].ncodes == NH_METRICS_MAX_CODES);
    CHECK(m.routes[first].other_errors == 12);
    CHECK(m.routes[first].ok == 1);
    CHECK(m.routes[first].latency.count == 21);
    CHECK(m.routes[0].ok == 1);
    nh_metrics_free(&m);
}

static void test_histogram_and_escaping(void) {
    nh_metrics_t m;
    CHECK(nh_metrics_init(&m) == 0);
    static const double bounds[] = {1, 2};
    const char *labels[] = {"who"};
    nh_metrics_family_t *f;
    CHECK(nh_metrics_family_add(&m, "game_x_seconds", "a \\ help\nline", NH_KIND_HISTOGRAM, labels,
                                1, bounds, 2, &f) == 0);
    const char *v[] = {"a\"b\\c\nd"};
    nh_metrics_family_update(f, v, 0, 0.5);
    nh_metrics_family_update(f, v, 0, 1.5);
    nh_metrics_family_update(f, v, 0, 7);
    nh_strbuf_t b = {0};
    const char *t = render(&m, &b);
    CHECK(strstr(t, "# HELP game_x_seconds a \\\\ help\\nline\n") != NULL);
    CHECK(strstr(t, "game_x_seconds_bucket{who=\"a\\\"b\\\\c\\nd\",le=\"1\"} 1\n") != NULL);
    CHECK(strstr(t, "game_x_seconds_bucket{who=\"a\\\"b\\\\c\\nd\",le=\"2\"} 2\n") != NULL);
    CHECK(strstr(t, "game_x_seconds_bucket{who=\"a\\\"b\\\\c\\nd\",le=\"+Inf\"} 3\n") != NULL);
    CHECK(strstr(t, "game_x_seconds_sum{who=\"a\\\"b\\\\c\\nd\"} 9\n") != NULL);
    CHECK(strstr(t, "game_x_seconds_count{who=\"a\\\"b\\\\c\\nd\"} 3\n") != NULL);
    CHECK(strstr(t, "nano_requests_total{route=\"unknown\",outcome=\"ok\"} 0\n") != NULL);
    nh_strbuf_free(&b);
    nh_metrics_free(&m);
}

static void test_families(void) {
    nh_metrics_t m;
    CHECK(nh_metrics_init(&m) == 0);
    nh_metrics_family_t *f, *g;
    const char *labels[] = {"a", "b"};
    CHECK(nh_metrics_family_add(&m, "game_c", "", NH_KIND_COUNTER, labels, 2, NULL, 0, &f) == 0);
    CHECK(nh_metrics_family_add(&m, "game_c", "", NH_KIND_COUNTER, labels, 2, NULL, 0, &g) == 0);
    CHECK(f == g); /* defined again (hot reload): the same family */
    CHECK(nh_metrics_family_add(&m, "game_c", "", NH_KIND_GAUGE, labels, 2, NULL, 0, &g) ==
          -EEXIST);
    CHECK(nh_metrics_family_add(&m, "game_c", "", NH_KIND_COUNTER, labels, 1, NULL, 0, &g) ==
          -EEXIST);
    CHECK(nh_metrics_family_add(&m, "nano_mine", "", NH_KIND_COUNTER, NULL, 0, NULL, 0, &g) ==
          -EEXIST);
    CHECK(nh_metrics_family_add(&m, "9bad", "", NH_KIND_COUNTER, NULL, 0, NULL, 0, &g) == -EINVAL);
    CHECK(nh_metrics_family_add(&m, "bad-name", "", NH_KIND_COUNTER, NULL, 0, NULL, 0, &g) ==
          -EINVAL);
    const char *dup[] = {"x", "x"};
    CHECK(nh_metrics_family_add(&m, "game_d", "", NH_KIND_COUNTER, dup, 2, NULL, 0, &g) == -EINVAL);
    const char *le[] = {"le"};
    static const double down[] = {2, 1};
    static const double up[] = {1, 2};
    CHECK(nh_metrics_family_add(&m, "game_h", "", NH_KIND_HISTOGRAM, le, 1, up, 2, &g) == -EINVAL);
    CHECK(nh_metrics_family_add(&m, "game_h", "", NH_KIND_HISTOGRAM, NULL, 0, down, 2, &g) ==
          -EINVAL);
    char va[16];
    int r = 0, i = 0;
    for (; i < NH_METRICS_MAX_SERIES + 5 && r == 0; i++) {
        snprintf(va, sizeof va, "%d", i);
        const char *vals[] = {va, "b"};
        r = nh_metrics_family_update(f, vals, 0, 1);
    }
    CHECK(r == -ENOSPC);
    CHECK(i == NH_METRICS_MAX_SERIES + 1);
    const char *again[] = {"3", "b"};
    CHECK(nh_metrics_family_update(f, again, 0, 2) == 0); /* an existing series still moves */
    nh_strbuf_t b = {0};
    CHECK(strstr(render(&m, &b), "game_c{a=\"3\",b=\"b\"} 3\n") != NULL);
    nh_strbuf_free(&b);
    nh_metrics_free(&m);
}

static void test_close_reasons(void) {
    CHECK(nh_metrics_reason_of("peer closed") == NH_CLOSE_CLIENT);
    CHECK(nh_metrics_reason_of("heartbeat timeout") == NH_CLOSE_HEARTBEAT_TIMEOUT);
    CHECK(nh_metrics_reason_of("send buffer limit") == NH_CLOSE_SEND_LIMIT);
    CHECK(nh_metrics_reason_of("server shutdown") == NH_CLOSE_SHUTDOWN);
    CHECK(nh_metrics_reason_of("something new") == NH_CLOSE_ERROR);
    CHECK(nh_metrics_reason_of(NULL) == NH_CLOSE_UNSET);
    nh_metrics_t m;
    CHECK(nh_metrics_init(&m) == 0);
    nh_metrics_closed(&m, NH_CLOSE_UNSET); /* never set: counted as an error, not lost */
    nh_metrics_closed(&m, 77);
    CHECK(m.closed[NH_CLOSE_ERROR] == 2);
    nh_metrics_free(&m);
}

/* session.c's bracket around a request, with lua_host.c's error code in between. */
static void test_dispatch_accounting(void) {
    nh_metrics_t m;
    CHECK(nh_metrics_init(&m) == 0);
    uint32_t ping = nh_metrics_route_add(&m, "M.ping", 6);
    CHECK(nh_metrics_route_code(&m, 7, ping) == 0);
    nh_msg_t msg = {.type = NH_MSG_REQUEST, .id = 3, .route = "M.ping", .route_len = 6};
    uint64_t t0 = nh_metrics_dispatch_begin(&m, 1, 3);
    CHECK(t0 != 0);
    nh_metrics_dispatch_end(&m, &msg, t0, 0);
    t0 = nh_metrics_dispatch_begin(&m, 1, 4); /* the same route again: the cached lookup */
    nh_metrics_error_response(&m, 2, 4, 403); /* another session's error: not this request's */
    nh_metrics_error_response(&m, 1, 4, 403);
    msg.id = 4;
    nh_metrics_dispatch_end(&m, &msg, t0, 0);
    nh_msg_t coded = {.type = NH_MSG_REQUEST, .id = 5, .route_compressed = 1, .route_code = 7};
    nh_metrics_dispatch_end(&m, &coded, nh_metrics_dispatch_begin(&m, 1, 5), 1); /* failed: 500 */
    nh_msg_t other = {.type = NH_MSG_REQUEST, .id = 6, .route = "M.pong", .route_len = 6};
    nh_metrics_dispatch_end(&m, &other, nh_metrics_dispatch_begin(&m, 1, 6), 0);
    t0 = nh_metrics_dispatch_begin(&m, 1, 7);
    nh_metrics_error_response(&m, 1, 7, 0); /* an error response without a code */
    nh_metrics_dispatch_end(&m, &msg, t0, 0);
    CHECK(m.routes[ping].ok == 1);
    CHECK(m.routes[ping].latency.count == 4);
    CHECK(m.routes[ping].ncodes == 3);
    CHECK(m.routes[ping].codes[0].code == 403 && m.routes[ping].codes[0].n == 1);
    CHECK(m.routes[ping].codes[1].code == 500 && m.routes[ping].codes[1].n == 1);
    CHECK(m.routes[ping].codes[2].code == -1);
    CHECK(m.routes[0].ok == 1); /* M.pong is not registered: "unknown" */
    nh_strbuf_t b = {0};
    CHECK(strstr(render(&m, &b), "nano_requests_total{route=\"M.ping\",outcome=\"error\"} 1\n") !=
          NULL);
    nh_strbuf_free(&b);
    nh_metrics_free(&m);
}

/* The core's families kept in Lua: only nano_ names; a series' index stays valid while more
 * series are added (the array grows); bumping by index counts and observes; a bad index is
 * ignored. */
static void test_core_families_by_index(void) {
    nh_metrics_t m;
    CHECK(nh_metrics_init(&m) == 0);
    const char *labels[] = {"client", "outcome"};
    static const double bounds[] = {0.1, 1};
    nh_metrics_family_t *c, *h, *g;
    CHECK(nh_metrics_core_family_add(&m, "game_q_total", "", NH_KIND_COUNTER, labels, 2, NULL, 0,
                                     &g) == -EEXIST);
    CHECK(nh_metrics_core_family_add(&m, "nano_q_total", "Queries.", NH_KIND_COUNTER, labels, 2,
                                     NULL, 0, &c) == 0);
    CHECK(nh_metrics_family_add(&m, "nano_q_total", "", NH_KIND_COUNTER, labels, 2, NULL, 0, &g) ==
          -EEXIST); /* still refused to scripts */
    CHECK(nh_metrics_core_family_add(&m, "nano_q_seconds", "Latency.", NH_KIND_HISTOGRAM, labels, 1,
                                     bounds, 2, &h) == 0);
    const char *ok[] = {"pg", "ok"}, *err[] = {"pg", "error"};
    int iok = nh_metrics_family_series(c, ok);
    int ierr = nh_metrics_family_series(c, err);
    CHECK(iok == 0 && ierr == 1);
    CHECK(nh_metrics_family_series(c, ok) == iok); /* found again, not added */
    char name[16];
    for (int i = 0; i < 20; i++) { /* the series array moves */
        snprintf(name, sizeof name, "c%d", i);
        const char *v[] = {name, "ok"};
        CHECK(nh_metrics_family_series(c, v) == 2 + i);
    }
    nh_metrics_family_bump(c, iok, 1);
    nh_metrics_family_bump(c, iok, 1);
    nh_metrics_family_bump(c, ierr, 1);
    nh_metrics_family_bump(c, 99, 1); /* out of range: nothing */
    nh_metrics_family_bump(c, -1, 1);
    int ih = nh_metrics_family_series(h, ok);
    nh_metrics_family_bump(h, ih, 0.05);
    nh_metrics_family_bump(h, ih, 2);
    nh_strbuf_t b = {0};
    const char *t = render(&m, &b);
    CHECK(strstr(t, "# TYPE nano_q_total counter\n") != NULL);
    CHECK(strstr(t, "nano_q_total{client=\"pg\",outcome=\"ok\"} 2\n") != NULL);
    CHECK(strstr(t, "nano_q_total{client=\"pg\",outcome=\"error\"} 1\n") != NULL);
    CHECK(strstr(t, "nano_q_total{client=\"c19\",outcome=\"ok\"} 0\n") != NULL);
    CHECK(strstr(t, "nano_q_seconds_bucket{client=\"pg\",le=\"0.1\"} 1\n") != NULL);
    CHECK(strstr(t, "nano_q_seconds_count{client=\"pg\"} 2\n") != NULL);
    nh_strbuf_free(&b);
    nh_metrics_free(&m);
}

int main(void) {
    test_routes_bounded();
    test_histogram_and_escaping();
    test_families();
    test_close_reasons();
    test_dispatch_accounting();
    test_core_families_by_index();
    return check_done();
}
