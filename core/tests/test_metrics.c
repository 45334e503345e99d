/* metrics.c: bounded label sets, the text format's escaping and cumulative buckets, Lua
 * families' validation and series limit, close-reason mapping. */
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

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
    nh_metrics_dispatch_begin(&m, 1, 3);
    CHECK(m.dispatch_t0 != 0);
    nh_metrics_dispatch_end(&m, &msg, 0);
    nh_metrics_dispatch_begin(&m, 1, 4);      /* the same route again: the cached lookup */
    nh_metrics_error_response(&m, 2, 4, 403); /* another session's error: not this request's */
    nh_metrics_error_response(&m, 1, 4, 403);
    msg.id = 4;
    nh_metrics_dispatch_end(&m, &msg, 0);
    nh_msg_t coded = {.type = NH_MSG_REQUEST, .id = 5, .route_compressed = 1, .route_code = 7};
    nh_metrics_dispatch_begin(&m, 1, 5);
    nh_metrics_dispatch_end(&m, &coded, 1); /* failed: 500 */
    nh_msg_t other = {.type = NH_MSG_REQUEST, .id = 6, .route = "M.pong", .route_len = 6};
    nh_metrics_dispatch_begin(&m, 1, 6);
    nh_metrics_dispatch_end(&m, &other, 0);
    nh_metrics_dispatch_begin(&m, 1, 7);
    nh_metrics_error_response(&m, 1, 7, 0); /* an error response without a code */
    nh_metrics_dispatch_end(&m, &msg, 0);
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

/* Requests to routes that differ in one byte, one after the other, each counted under its own
 * route: the last route's cached compare (whole words for 8 to 16 bytes, memcmp otherwise). */
static void test_routes_told_apart(void) {
    static const char *const names[] = {"R.a",
                                        "R.b",
                                        "Room.joinA",
                                        "Room.joinB",
                                        "Room.join.abcdefA",
                                        "Room.join.abcdefB",
                                        "Room.join.abcdefgh",
                                        "Room.join.abcdefgi"};
    const int n = (int)(sizeof names / sizeof names[0]);
    nh_metrics_t m;
    CHECK(nh_metrics_init(&m) == 0);
    uint32_t id[8];
    for (int i = 0; i < n; i++)
        id[i] = nh_metrics_route_add(&m, names[i], strlen(names[i]));
    for (int round = 0; round < 3; round++)
        for (int i = 0; i < n; i++) {
            /* the route's bytes in a buffer of their own, as they come in a packet */
            char buf[32];
            memcpy(buf, names[i], strlen(names[i]));
            nh_msg_t msg = {
                .type = NH_MSG_REQUEST, .id = 1, .route = buf, .route_len = strlen(names[i])};
            for (int k = 0; k <= i % 2; k++) { /* and the same route twice in a row */
                nh_metrics_dispatch_begin(&m, 1, 1);
                nh_metrics_dispatch_end(&m, &msg, 0);
            }
        }
    for (int i = 0; i < n; i++)
        CHECK(m.routes[id[i]].ok == (uint64_t)(3 * (1 + i % 2)));
    CHECK(m.routes[0].ok == 0);
    nh_metrics_free(&m);
}

/* Where the kernel keeps time by the TSC, requests are timed by it once it is calibrated against
 * CLOCK_MONOTONIC (after NH_METRICS_CALIBRATE_NS of requests): a request that takes 5 ms is
 * observed as 5 ms before and after. Real time, as the clocks are what is tested (bounded). */
static double timed_request(nh_metrics_t *m, const nh_msg_t *msg, long ns) {
    double before = m->routes[0].latency.sum;
    nh_metrics_dispatch_begin(m, 1, 1);
    if (ns) nanosleep(&(struct timespec){.tv_nsec = ns}, NULL);
    nh_metrics_dispatch_end(m, msg, 0);
    return m->routes[0].latency.sum - before;
}

static void test_request_clock(void) {
    nh_metrics_t m;
    CHECK(nh_metrics_init(&m) == 0);
    nh_msg_t msg = {.type = NH_MSG_REQUEST, .id = 1, .route = "X.y", .route_len = 3};
    double took = timed_request(&m, &msg, 5000000);
    CHECK(took >= 0.005 && took < 0.5);
    if (!m.tsc_ok) { /* another clocksource: clock_gettime all along */
        printf("# test_request_clock: the TSC is not this system's clocksource\n");
        nh_metrics_free(&m);
        return;
    }
    struct timespec a, b;
    clock_gettime(CLOCK_MONOTONIC, &a);
    do {
        timed_request(&m, &msg, 0);
        clock_gettime(CLOCK_MONOTONIC, &b);
    } while (!(m.ns_per_tick > 0) && b.tv_sec - a.tv_sec < 3);
    CHECK(m.ns_per_tick > 0);
    took = timed_request(&m, &msg, 5000000);
    CHECK(took >= 0.005 && took < 0.5);
    nh_metrics_free(&m);
}

/* Without the TSC (tsc_ok 0: not trusted on this system), a request to the route before it is timed
 * by CLOCK_MONOTONIC inline (nh_metrics_dispatch_end's usual end), not only in the slow path. */
static void test_request_clock_without_tsc(void) {
    nh_metrics_t m;
    CHECK(nh_metrics_init(&m) == 0);
    m.tsc_ok = 0;
    uint32_t r = nh_metrics_route_add(&m, "Room.join", 9);
    nh_msg_t msg = {.type = NH_MSG_REQUEST, .id = 1, .route = "Room.join", .route_len = 9};
    nh_metrics_dispatch_begin(&m, 1, 1);
    nh_metrics_dispatch_end(&m, &msg, 0); /* sets last_route */
    CHECK(m.last_route == r);
    /* a TSC rate the slow end would start using (it takes ns_per_tick_next): the inline end,
     * which has no TSC to switch to here, leaves it */
    m.ns_per_tick_next = 1.0;
    nh_metrics_dispatch_begin(&m, 1, 2);
    nanosleep(&(struct timespec){.tv_nsec = 5000000}, NULL);
    nh_metrics_dispatch_end(&m, &msg, 0);
    CHECK(m.routes[r].ok == 2 && m.routes[r].latency.count == 2);
    CHECK(m.routes[r].latency.sum >= 0.005 && m.routes[r].latency.sum < 0.5);
    CHECK(!(m.ns_per_tick > 0)); /* timed inline: the slow end would have switched clocks */
    nh_metrics_free(&m);
}

/* The TSC times requests under the kernel's "tsc", or under kvm-clock on an invariant TSC (both
 * flags); never under another clocksource, whatever the flags. */
static void test_tsc_trusted(void) {
    const char *both = " fpu vme constant_tsc rep_good nopl nonstop_tsc cpuid\n";
    CHECK(nh_metrics_tsc_trusted("tsc", NULL) == 1);
    CHECK(nh_metrics_tsc_trusted("kvm-clock", both) == 1);
    CHECK(nh_metrics_tsc_trusted("kvm-clock", "constant_tsc nonstop_tsc") == 1);
    CHECK(nh_metrics_tsc_trusted("kvm-clock", " fpu constant_tsc rep_good\n") == 0);
    CHECK(nh_metrics_tsc_trusted("kvm-clock", " fpu nonstop_tsc\n") == 0);
    /* a flag's name inside another's is not the flag */
    CHECK(nh_metrics_tsc_trusted("kvm-clock", " xconstant_tsc nonstop_tsc_x\n") == 0);
    CHECK(nh_metrics_tsc_trusted("kvm-clock", NULL) == 0);
    CHECK(nh_metrics_tsc_trusted("hpet", both) == 0);
    CHECK(nh_metrics_tsc_trusted("acpi_pm", both) == 0);
    CHECK(nh_metrics_tsc_trusted("", both) == 0);
}

/* Recalibration: nothing before the first calibration, nor within a second of the last reading;
 * the first second's rate replaces one up to half off; later, a tenth off gives the TSC up (the
 * clock times requests from then on), either way; a rate near the last one is taken. */
#if NH_METRICS_HAVE_TSC
/* nh_metrics_recalibrate until it took a reading (it skips one whose clock read was preempted:
 * a loaded machine, valgrind); its last result */
static int recalibrated(nh_metrics_t *m) {
    uint64_t before = m->recal_ns;
    int r = 0;
    for (int i = 0; i < 100 && m->recal_ns == before; i++)
        if ((r = nh_metrics_recalibrate(m)) != 0) break;
    return r;
}
#endif

static void test_tsc_recalibrate(void) {
#if NH_METRICS_HAVE_TSC
    nh_metrics_t m;
    CHECK(nh_metrics_init(&m) == 0);
    CHECK(nh_metrics_recalibrate(&m) == 0);
    CHECK(!(m.ns_per_tick > 0) && m.recal_ns == 0); /* not calibrated yet: left to the requests */
    uint64_t ns0 = nh_metrics_now_ns(), t0 = nh_metrics_ticks();
    nanosleep(&(struct timespec){.tv_nsec = 20000000}, NULL);
    double real = (double)(nh_metrics_now_ns() - ns0) / (double)(nh_metrics_ticks() - t0);
    uint64_t second = (uint64_t)(NH_METRICS_RECALIBRATE_NS / real); /* ticks in a second */
    m.tsc_ok = 1;
    m.ns_per_tick = real * 1.4;                      /* the first calibration 40 % off */
    CHECK(recalibrated(&m) == 0 && m.recal_ns != 0); /* the first reading */
    CHECK(nh_metrics_recalibrate(&m) == 0 && m.ns_per_tick == real * 1.4); /* within a second */
    /* a second later, by the clock and the TSC alike: the real rate replaces the first */
    m.recal_ns -= NH_METRICS_RECALIBRATE_NS;
    m.recal_tsc -= second;
    CHECK(recalibrated(&m) == 0);
    CHECK(m.ns_per_tick > real * 0.97 && m.ns_per_tick < real * 1.03 && m.recal_seconds == 1);
    /* again, 5 % slower: taken */
    m.recal_ns -= NH_METRICS_RECALIBRATE_NS;
    m.recal_tsc -= (uint64_t)((double)second / 1.05);
    CHECK(recalibrated(&m) == 0 && m.tsc_ok && m.ns_per_tick > real * 1.02);
    /* a second by the clock that is 1.2 s by the TSC (a rate a sixth off): the TSC is given up */
    m.recal_ns -= NH_METRICS_RECALIBRATE_NS;
    m.recal_tsc -= (uint64_t)((double)second * 1.2);
    CHECK(recalibrated(&m) == 1);
    CHECK(!m.tsc_ok && !(m.ns_per_tick > 0) && m.recal_ns == 0);
    CHECK(nh_metrics_recalibrate(&m) == 0); /* once */
    /* and requests are timed by the clock again */
    nh_msg_t msg = {.type = NH_MSG_REQUEST, .id = 1, .route = "X.y", .route_len = 3};
    double took = timed_request(&m, &msg, 5000000);
    CHECK(took >= 0.005 && took < 0.5 && !(m.ns_per_tick > 0));
    /* the other way: the TSC's second shorter than the clock's, by half: given up too */
    nh_metrics_t n;
    CHECK(nh_metrics_init(&n) == 0);
    n.tsc_ok = 1;
    n.ns_per_tick = real;
    CHECK(recalibrated(&n) == 0);
    n.recal_seconds = 1; /* past the first second */
    n.recal_ns -= NH_METRICS_RECALIBRATE_NS;
    n.recal_tsc -= second / 2;
    CHECK(recalibrated(&n) == 1 && !n.tsc_ok);
    nh_metrics_free(&n);
    nh_metrics_free(&m);
#endif
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

/* Sample values as %.15g (or more digits when it does not read back) writes them, also the second
 * time (put_double keeps the texts of the values it wrote). */
static void test_number_texts(void) {
    static const struct {
        double v;
        const char *txt;
    } cases[] = {
        {123, "123"},
        {-5, "-5"},
        {0, "0"},
        {-0.0, "-0"},
        {0.0005, "0.0005"},
        {1e-7, "1e-07"},
        {2.5e-5, "2.5e-05"},
        {1e15, "1e+15"},
        {999999999999999, "999999999999999"},
        {-123456.75, "-123456.75"},
        {0.1 + 0.2, "0.30000000000000004"},
        {1.0 / 0.0, "+Inf"},
        {-1.0 / 0.0, "-Inf"},
    };
    const int n = (int)(sizeof cases / sizeof cases[0]);
    nh_metrics_t m;
    CHECK(nh_metrics_init(&m) == 0);
    const char *labels[] = {"i"};
    nh_metrics_family_t *f;
    CHECK(nh_metrics_family_add(&m, "game_v", "values", NH_KIND_GAUGE, labels, 1, NULL, 0, &f) ==
          0);
    for (int i = 0; i < n; i++) {
        char name[8];
        snprintf(name, sizeof name, "%d", i);
        const char *v[] = {name};
        nh_metrics_family_update(f, v, 1, cases[i].v);
    }
    for (int round = 0; round < 2; round++) {
        nh_strbuf_t b = {0};
        const char *t = render(&m, &b);
        for (int i = 0; i < n; i++) {
            char want[64];
            snprintf(want, sizeof want, "game_v{i=\"%d\"} %s\n", i, cases[i].txt);
            CHECK(strstr(t, want) != NULL);
        }
        nh_strbuf_free(&b);
    }
    nh_metrics_free(&m);
}

int main(void) {
    test_number_texts();
    test_routes_bounded();
    test_histogram_and_escaping();
    test_families();
    test_close_reasons();
    test_dispatch_accounting();
    test_routes_told_apart();
    test_request_clock();
    test_request_clock_without_tsc();
    test_tsc_trusted();
    test_tsc_recalibrate();
    test_core_families_by_index();
    return check_done();
}
