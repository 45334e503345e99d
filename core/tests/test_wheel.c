/* wheel.c on virtual time (the `now` each advance is given): an entry is handed over at the first
 * advance that reaches its tick and not before; an advance looks only at what is due (the sweep's
 * cost with thousands of idle sessions); lazy re-arming from the callback; set_earlier; removal of
 * a pending entry from a callback; an advance late by more than a turn; deadlines beyond the span;
 * and random operations against a plain reference. */
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "wheel.h"

typedef struct item {
    nh_wheel_entry_t e;
    int handed;        /* times handed over */
    uint64_t at;       /* the `now` of the advance that handed it over */
    uint64_t rearm;    /* the callback sets it again at this time (0: no) */
    struct item *kill; /* the callback removes this one */
} item_t;

static uint64_t now_ms;
static nh_wheel_t *cur;

static void on_due(nh_wheel_entry_t *e, void *arg) {
    (void)arg;
    item_t *it = (item_t *)e;
    it->handed++;
    it->at = now_ms;
    if (it->kill) nh_wheel_remove(cur, &it->kill->e);
    if (it->rearm) {
        uint64_t r = it->rearm;
        it->rearm = 0;
        nh_wheel_set(cur, &it->e, r);
    }
}

static size_t advance(nh_wheel_t *w, uint64_t now) {
    now_ms = now;
    cur = w;
    return nh_wheel_advance(w, now, on_due, NULL);
}

static void test_due_not_before(void) {
    nh_wheel_t w;
    CHECK(nh_wheel_init(&w, 100, 1000, 0) == 0);
    item_t a = {0}, b = {0};
    nh_wheel_set(&w, &a.e, 250); /* tick 2: handed over once now reaches 200 */
    nh_wheel_set(&w, &b.e, 700);
    CHECK(w.count == 2 && nh_wheel_linked(&a.e));
    CHECK(advance(&w, 199) == 0 && a.handed == 0);
    CHECK(advance(&w, 230) == 1 && a.handed == 1 && a.at == 230);
    CHECK(!nh_wheel_linked(&a.e) && w.count == 1);
    CHECK(advance(&w, 699) == 0 && b.handed == 0);
    CHECK(advance(&w, 700) == 1 && b.handed == 1);
    CHECK(w.count == 0);
    /* a deadline already passed: the next tick, never the one just handed over */
    nh_wheel_set(&w, &a.e, 10);
    CHECK(advance(&w, 799) == 0);
    CHECK(advance(&w, 800) == 1 && a.handed == 2);
    nh_wheel_free(&w);
}

/* 10,000 idle entries due between 60 s and 70 s: advancing through the first minute one
 * 250 ms tick at a time looks at none of them; the next ten seconds look at each exactly once, at
 * the advance that reaches its deadline's tick (the owner checks its own deadline then). */
static void test_idle_costs_nothing(void) {
    enum { N = 10000 };
    nh_wheel_t w;
    CHECK(nh_wheel_init(&w, 250, 75000, 0) == 0);
    item_t *items = calloc(N, sizeof *items);
    for (int i = 0; i < N; i++)
        nh_wheel_set(&w, &items[i].e, 60000 + (uint64_t)i);
    size_t handed = 0;
    for (uint64_t t = 250; t < 60000; t += 250)
        handed += advance(&w, t);
    CHECK(handed == 0);
    CHECK(w.looked == 0);
    for (uint64_t t = 60000; t <= 70000; t += 250)
        handed += advance(&w, t);
    CHECK(handed == N);
    CHECK(w.looked == N);
    int ok = 1;
    for (int i = 0; i < N; i++)
        ok &= items[i].handed == 1 && items[i].at == (60000 + (uint64_t)i) / 250 * 250;
    CHECK(ok);
    free(items);
    nh_wheel_free(&w);
}

static void test_rearm_and_remove_from_callback(void) {
    nh_wheel_t w;
    CHECK(nh_wheel_init(&w, 10, 1000, 0) == 0);
    item_t a = {0}, b = {0}, c = {0};
    nh_wheel_set(&w, &a.e, 50);
    nh_wheel_set(&w, &b.e, 55); /* same bucket as a */
    nh_wheel_set(&w, &c.e, 52);
    a.rearm = 300; /* the deadline moved: set back */
    a.kill = &b;   /* and b goes (whichever of them the bucket hands over first) */
    b.kill = &a;
    advance(&w, 60);
    CHECK(a.handed + b.handed == 1); /* the first one handed over removed the other */
    CHECK(c.handed == 1);
    if (a.handed) {
        CHECK(nh_wheel_linked(&a.e) && a.e.tick == 30); /* re-armed */
        CHECK(!nh_wheel_linked(&b.e));
        CHECK(advance(&w, 299) == 0);
        CHECK(advance(&w, 300) == 1 && a.handed == 2);
    } else {
        CHECK(!nh_wheel_linked(&a.e));
    }
    CHECK(w.count == 0);
    nh_wheel_free(&w);
}

static void test_set_earlier(void) {
    nh_wheel_t w;
    CHECK(nh_wheel_init(&w, 10, 1000, 0) == 0);
    item_t a = {0};
    nh_wheel_set(&w, &a.e, 500);
    nh_wheel_set_earlier(&w, &a.e, 800); /* later: stays at 500 */
    CHECK(a.e.tick == 50);
    nh_wheel_set_earlier(&w, &a.e, 120);
    CHECK(a.e.tick == 12 && w.count == 1);
    CHECK(advance(&w, 119) == 0);
    CHECK(advance(&w, 120) == 1);
    nh_wheel_remove(&w, &a.e);
    nh_wheel_remove(&w, &a.e); /* not in: nothing */
    CHECK(w.count == 0);
    nh_wheel_free(&w);
}

/* The loop was blocked for many turns of the wheel: every entry that came due is handed over
 * once, one due later stays; an entry beyond the span waits through the turns in between. */
static void test_late_and_beyond_span(void) {
    nh_wheel_t w;
    CHECK(nh_wheel_init(&w, 10, 50, 0) == 0); /* 8 buckets: 80 ms a turn */
    item_t a = {0}, b = {0}, far = {0}, later = {0};
    nh_wheel_set(&w, &a.e, 30);
    nh_wheel_set(&w, &b.e, 75);
    nh_wheel_set(&w, &far.e, 1000); /* beyond a turn: shares bucket 1000/10 & 7 with nearer ticks */
    nh_wheel_set(&w, &later.e, 990);
    CHECK(advance(&w, 500) == 2 && a.handed == 1 && b.handed == 1);
    CHECK(far.handed == 0 && later.handed == 0 && w.count == 2);
    CHECK(advance(&w, 989) == 0);
    CHECK(advance(&w, 995) == 1 && later.handed == 1);
    CHECK(advance(&w, 1000) == 1 && far.handed == 1);
    nh_wheel_free(&w);
}

/* Random sets, removals and advances against a reference: each entry is handed over at the first
 * advance whose tick reaches its deadline's tick (or the tick after the last advance). */
static void test_random_against_reference(void) {
    enum { N = 200 };
    nh_wheel_t w;
    CHECK(nh_wheel_init(&w, 7, 300, 0) == 0);
    item_t items[N];
    uint64_t want_tick[N]; /* 0: not in the wheel */
    memset(items, 0, sizeof items);
    memset(want_tick, 0, sizeof want_tick);
    srand(18);
    uint64_t now = 0, done = 0;
    int bad = 0;
    for (int step = 0; step < 20000; step++) {
        int i = rand() % N, op = rand() % 10;
        if (op < 5) {
            uint64_t due = now + (uint64_t)(rand() % 600); /* up to twice the span */
            nh_wheel_set(&w, &items[i].e, due);
            uint64_t t = due / 7;
            want_tick[i] = t > done ? t : done + 1;
        } else if (op < 6) {
            nh_wheel_remove(&w, &items[i].e);
            want_tick[i] = 0;
        } else {
            now += (uint64_t)(rand() % 40);
            int before[N];
            for (int k = 0; k < N; k++)
                before[k] = items[k].handed;
            advance(&w, now);
            uint64_t target = now / 7;
            if (target > done) done = target;
            for (int k = 0; k < N; k++) {
                int should = want_tick[k] && want_tick[k] <= done;
                if ((items[k].handed - before[k]) != should) bad++;
                if (should) want_tick[k] = 0;
            }
        }
        size_t in = 0;
        for (int k = 0; k < N; k++)
            in += want_tick[k] != 0;
        if (in != w.count) bad++;
    }
    CHECK(bad == 0);
    nh_wheel_free(&w);
    for (int k = 0; k < N; k++)
        CHECK(!nh_wheel_linked(&items[k].e)); /* free leaves every entry marked out */
}

int main(void) {
    test_due_not_before();
    test_idle_costs_nothing();
    test_rearm_and_remove_from_callback();
    test_set_earlier();
    test_late_and_beyond_span();
    test_random_against_reference();
    return check_done();
}
