#include "wheel.h"

#include <errno.h>
#include <stdlib.h>

int nh_wheel_init(nh_wheel_t *w, uint64_t period, uint64_t span, uint64_t now) {
    if (period == 0) period = 1;
    uint64_t want = span / period + 2, n = 8;
    while (n < want && n < (1u << 20))
        n <<= 1;
    w->slots = calloc((size_t)n, sizeof *w->slots);
    if (!w->slots) return -ENOMEM;
    w->mask = (uint32_t)(n - 1);
    w->period = period;
    w->done = now / period;
    w->count = 0;
    w->looked = 0;
    return 0;
}

void nh_wheel_free(nh_wheel_t *w) {
    if (!w->slots) return;
    for (uint64_t i = 0; i <= w->mask; i++) {
        nh_wheel_entry_t *e = w->slots[i], *next;
        for (; e; e = next) {
            next = e->next;
            e->next = NULL;
            e->pprev = NULL;
        }
    }
    free(w->slots);
    w->slots = NULL;
    w->count = 0;
}

static void unlink_entry(nh_wheel_entry_t *e) {
    *e->pprev = e->next;
    if (e->next) e->next->pprev = e->pprev;
    e->next = NULL;
    e->pprev = NULL;
}

static void link_entry(nh_wheel_entry_t **head, nh_wheel_entry_t *e) {
    e->next = *head;
    if (e->next) e->next->pprev = &e->next;
    *head = e;
    e->pprev = head;
}

static uint64_t tick_of(const nh_wheel_t *w, uint64_t due) {
    uint64_t t = due / w->period;
    return t > w->done ? t : w->done + 1;
}

void nh_wheel_set(nh_wheel_t *w, nh_wheel_entry_t *e, uint64_t due) {
    if (e->pprev)
        unlink_entry(e);
    else
        w->count++;
    e->tick = tick_of(w, due);
    link_entry(&w->slots[e->tick & w->mask], e);
}

void nh_wheel_set_earlier(nh_wheel_t *w, nh_wheel_entry_t *e, uint64_t due) {
    if (e->pprev && e->tick <= tick_of(w, due)) return;
    nh_wheel_set(w, e, due);
}

void nh_wheel_remove(nh_wheel_t *w, nh_wheel_entry_t *e) {
    if (!e->pprev) return;
    unlink_entry(e);
    w->count--;
}

size_t nh_wheel_advance(nh_wheel_t *w, uint64_t now, void (*cb)(nh_wheel_entry_t *e, void *arg),
                        void *arg) {
    uint64_t target = now / w->period;
    if (target <= w->done) return 0;
    uint64_t t = w->done + 1;
    /* Late by a whole turn or more: each bucket once holds everything that came due. */
    if (target - t > w->mask) t = target - w->mask;
    w->done = target; /* entries set from here on go to later ticks */
    size_t handed = 0;
    for (; t <= target; t++) {
        nh_wheel_entry_t **slot = &w->slots[t & w->mask];
        /* Move the bucket to a list of its own: cb may set entries back into this bucket (a
         * later turn) or remove ones not yet looked at, which that list's links allow. */
        nh_wheel_entry_t *pending = NULL;
        if (*slot) {
            pending = *slot;
            pending->pprev = &pending;
            *slot = NULL;
        }
        while (pending) {
            nh_wheel_entry_t *e = pending;
            unlink_entry(e);
            w->looked++;
            if (e->tick > target) { /* a later turn's */
                link_entry(slot, e);
                continue;
            }
            w->count--;
            handed++;
            cb(e, arg);
        }
    }
    return handed;
}
