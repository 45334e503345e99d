#include "timer.h"

#include <stdlib.h>

uint64_t nh_timers_now(const nh_timers_t *ts) {
    return uv_now(ts->uv.loop) + ts->skew;
}

static int before(const nh_timer_t *a, const nh_timer_t *b) {
    return a->due < b->due || (a->due == b->due && a->seq < b->seq);
}

static void heap_set(nh_timers_t *ts, uint32_t i, nh_timer_t *t) {
    ts->heap[i] = t;
    t->slot = i + 1;
}

static void sift_up(nh_timers_t *ts, uint32_t i) {
    nh_timer_t *t = ts->heap[i];
    while (i > 0) {
        uint32_t parent = (i - 1) / 2;
        if (!before(t, ts->heap[parent])) break;
        heap_set(ts, i, ts->heap[parent]);
        i = parent;
    }
    heap_set(ts, i, t);
}

static void sift_down(nh_timers_t *ts, uint32_t i) {
    nh_timer_t *t = ts->heap[i];
    for (;;) {
        uint32_t l = 2 * i + 1, r = l + 1, m = i;
        const nh_timer_t *best = t;
        if (l < ts->n && before(ts->heap[l], best)) m = l, best = ts->heap[l];
        if (r < ts->n && before(ts->heap[r], best)) m = r;
        if (m == i) break;
        heap_set(ts, i, ts->heap[m]);
        i = m;
    }
    heap_set(ts, i, t);
}

static void heap_remove(nh_timers_t *ts, nh_timer_t *t) {
    uint32_t i = t->slot - 1;
    t->slot = 0;
    nh_timer_t *last = ts->heap[--ts->n];
    if (i == ts->n) return;
    heap_set(ts, i, last);
    if (i > 0 && before(last, ts->heap[(i - 1) / 2]))
        sift_up(ts, i);
    else
        sift_down(ts, i);
}

static void rearm(nh_timers_t *ts);

static void run_due(nh_timers_t *ts) {
    uint64_t now = nh_timers_now(ts);
    /* Timers started by a callback at this instant wait for the next turn, so a callback that
     * restarts itself with delay 0 cannot spin this loop forever. */
    uint64_t seq_limit = ts->seq;
    while (ts->n && ts->heap[0]->due <= now && ts->heap[0]->seq < seq_limit) {
        nh_timer_t *t = ts->heap[0];
        heap_remove(ts, t);
        if (t->repeat) {
            t->due += t->repeat;
            if (t->due <= now) t->due = now + t->repeat; /* fell behind: skip, don't burst */
            t->seq = ts->seq++;
            /* the slot it just left is free, so this cannot need to grow the heap */
            heap_set(ts, ts->n++, t);
            sift_up(ts, ts->n - 1);
        }
        t->cb(t); /* may stop/restart t or any other timer */
    }
    rearm(ts);
}

static void on_uv_timer(uv_timer_t *h) {
    run_due((nh_timers_t *)h);
}

static void rearm(nh_timers_t *ts) {
    if (ts->closing) return;
    if (ts->n == 0) {
        uv_timer_stop(&ts->uv);
        return;
    }
    uint64_t now = nh_timers_now(ts), due = ts->heap[0]->due;
    uv_timer_start(&ts->uv, on_uv_timer, due > now ? due - now : 0, 0);
}

int nh_timers_init(nh_timers_t *ts, uv_loop_t *loop) {
    ts->heap = NULL;
    ts->n = ts->cap = 0;
    ts->skew = 0;
    ts->seq = 0;
    ts->closing = 0;
    return uv_timer_init(loop, &ts->uv);
}

void nh_timers_close(nh_timers_t *ts, uv_close_cb cb) {
    ts->closing = 1;
    for (uint32_t i = 0; i < ts->n; i++)
        ts->heap[i]->slot = 0;
    ts->n = 0;
    free(ts->heap);
    ts->heap = NULL;
    ts->cap = 0;
    if (!uv_is_closing((uv_handle_t *)&ts->uv)) uv_close((uv_handle_t *)&ts->uv, cb);
}

int nh_timer_start(nh_timers_t *ts, nh_timer_t *t, uint64_t delay, uint64_t repeat) {
    if (ts->closing) return UV_EINVAL;
    if (t->slot) heap_remove(ts, t);
    if (ts->n == ts->cap) {
        uint32_t cap = ts->cap ? ts->cap * 2 : 16;
        nh_timer_t **h = realloc(ts->heap, cap * sizeof *h);
        if (!h) return UV_ENOMEM;
        ts->heap = h;
        ts->cap = cap;
    }
    t->due = nh_timers_now(ts) + delay;
    t->repeat = repeat;
    t->seq = ts->seq++;
    heap_set(ts, ts->n++, t);
    sift_up(ts, ts->n - 1);
    rearm(ts);
    return 0;
}

void nh_timer_stop(nh_timers_t *ts, nh_timer_t *t) {
    if (!t->slot) return;
    heap_remove(ts, t);
    rearm(ts);
}

void nh_timers_advance(nh_timers_t *ts, uint64_t ms) {
    /* Step through due times so each timer sees the virtual clock at its own due time, as it
     * would have in real time (a repeating timer fires once per interval, not once in total). */
    uint64_t target = nh_timers_now(ts) + ms;
    while (ts->n && ts->heap[0]->due <= target) {
        uint64_t now = nh_timers_now(ts);
        if (ts->heap[0]->due > now) ts->skew += ts->heap[0]->due - now;
        run_due(ts);
    }
    uint64_t now = nh_timers_now(ts);
    if (target > now) ts->skew += target - now;
    rearm(ts);
}
