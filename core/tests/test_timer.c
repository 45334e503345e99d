/* timer.c on virtual time (nh_timers_advance), no sleeping: order by due time and by start order
 * at the same millisecond, repeats, stop and restart from inside a callback (its own timer and
 * another), a heap of many timers against a sorted reference, and the uv_timer closing. */
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "timer.h"

static nh_timers_t ts;
static int fired[64], nfired;
static nh_timer_t *stop_other; /* a callback that stops this timer */
static nh_timer_t *restart_self;

static void record(nh_timer_t *t) {
    if (nfired < 64) fired[nfired++] = (int)(intptr_t)t->data;
    if (stop_other) {
        nh_timer_stop(&ts, stop_other);
        stop_other = NULL;
    }
    if (restart_self == t) {
        restart_self = NULL;
        nh_timer_start(&ts, t, 5, 0);
    }
}

static void reset(void) {
    nfired = 0;
    memset(fired, 0, sizeof fired);
}

static void init_timer(nh_timer_t *t, int tag) {
    memset(t, 0, sizeof *t);
    t->cb = record;
    t->data = (void *)(intptr_t)tag;
}

static void test_order(void) {
    nh_timer_t a, b, c, d;
    init_timer(&a, 1);
    init_timer(&b, 2);
    init_timer(&c, 3);
    init_timer(&d, 4);
    reset();
    nh_timer_start(&ts, &c, 30, 0);
    nh_timer_start(&ts, &a, 10, 0);
    nh_timer_start(&ts, &b, 10, 0); /* same ms as a: after a (started later) */
    nh_timer_start(&ts, &d, 20, 0);
    nh_timers_advance(&ts, 9);
    CHECK(nfired == 0);
    nh_timers_advance(&ts, 1);
    CHECK(nfired == 2 && fired[0] == 1 && fired[1] == 2);
    nh_timers_advance(&ts, 20);
    CHECK(nfired == 4 && fired[2] == 4 && fired[3] == 3);
    CHECK(!nh_timer_active(&a) && !nh_timer_active(&c));
}

static void test_repeat_and_stop(void) {
    nh_timer_t r;
    init_timer(&r, 7);
    reset();
    nh_timer_start(&ts, &r, 5, 10); /* at 5, 15, 25, ... */
    nh_timers_advance(&ts, 26);
    CHECK(nfired == 3);
    CHECK(nh_timer_active(&r));
    nh_timer_stop(&ts, &r);
    nh_timers_advance(&ts, 100);
    CHECK(nfired == 3 && !nh_timer_active(&r));
}

static void test_stop_from_callback(void) {
    nh_timer_t a, b;
    init_timer(&a, 1);
    init_timer(&b, 2);
    reset();
    nh_timer_start(&ts, &a, 10, 0);
    nh_timer_start(&ts, &b, 10, 0); /* due with a, but a's callback stops it */
    stop_other = &b;
    nh_timers_advance(&ts, 10);
    CHECK(nfired == 1 && fired[0] == 1);
    CHECK(!nh_timer_active(&b));
}

static void test_restart_self(void) {
    nh_timer_t a;
    init_timer(&a, 9);
    reset();
    nh_timer_start(&ts, &a, 10,
                   100); /* repeating, but its callback restarts it as a 5 ms one-shot */
    restart_self = &a;
    nh_timers_advance(&ts, 10);
    CHECK(nfired == 1 && nh_timer_active(&a));
    nh_timers_advance(&ts, 5);
    CHECK(nfired == 2 && !nh_timer_active(&a));
    nh_timers_advance(&ts, 200);
    CHECK(nfired == 2);
}

/* Many timers with pseudo-random delays fire in (due, start order) order. */
static int seen_last_due, in_order;
static uint64_t last_due, last_seq;
static void check_order(nh_timer_t *t) {
    if (seen_last_due && (t->due < last_due || (t->due == last_due && t->seq < last_seq)))
        in_order = 0;
    seen_last_due = 1;
    last_due = t->due;
    last_seq = t->seq;
    nfired++;
}

static void test_heap(void) {
    enum { N = 5000 };
    nh_timer_t *ts_arr = calloc(N, sizeof *ts_arr);
    uint32_t x = 12345;
    reset();
    in_order = 1;
    seen_last_due = 0;
    for (int i = 0; i < N; i++) {
        x ^= x << 13, x ^= x >> 17, x ^= x << 5;
        ts_arr[i].cb = check_order;
        nh_timer_start(&ts, &ts_arr[i], x % 1000, 0);
    }
    /* stop every third one: the rest still come out in order */
    for (int i = 0; i < N; i += 3)
        nh_timer_stop(&ts, &ts_arr[i]);
    nh_timers_advance(&ts, 1000);
    CHECK(in_order);
    CHECK(nfired == N - (N + 2) / 3);
    CHECK(ts.n == 0);
    free(ts_arr);
}

static void on_closed(uv_handle_t *h) {
    (void)h;
    nfired = -1;
}

int main(void) {
    uv_loop_t loop;
    uv_loop_init(&loop);
    CHECK(nh_timers_init(&ts, &loop) == 0);
    uint64_t t0 = nh_timers_now(&ts);
    test_order();
    test_repeat_and_stop();
    test_stop_from_callback();
    test_restart_self();
    test_heap();
    CHECK(nh_timers_now(&ts) - t0 >= 30 + 26 + 100 + 10 + 215 + 1000); /* virtual time moved */
    nh_timers_close(&ts, on_closed);
    uv_run(&loop, UV_RUN_DEFAULT);
    CHECK(nfired == -1);
    CHECK(uv_loop_close(&loop) == 0);
    return check_done();
}
