/* wheel — deadlines in buckets by tick (a hashed timing wheel), for many deadlines that are
 * mostly moved, rarely due: the sessions' heartbeats and timeouts.
 *
 * Time is cut into ticks of `period` ms; an entry due at `due` ms sits in the bucket of tick
 * floor(due / period), and nh_wheel_advance() hands over the entries of every tick up to now's,
 * so an advance costs the ticks it passes plus the entries that are due: nothing per entry that
 * is not. An owner whose deadline moved later need not tell the wheel: when the old deadline comes
 * it looks again and puts the entry back (lazy re-arming). A deadline that moves earlier must be
 * set again (nh_wheel_set_earlier).
 *
 * The wheel has enough buckets for `span` ms; an entry further away shares a bucket with nearer
 * ones and stays there when that bucket's tick passes (it costs a look per turn of the wheel).
 * Entries are embedded by their owners, who remove them before freeing them. No allocation but
 * the bucket array; not thread-safe (the loop thread). */
#ifndef NH_WHEEL_H
#define NH_WHEEL_H

#include <stddef.h>
#include <stdint.h>

typedef struct nh_wheel_entry nh_wheel_entry_t;
struct nh_wheel_entry {
    nh_wheel_entry_t *next;
    nh_wheel_entry_t **pprev; /* NULL: not in the wheel */
    uint64_t tick;
};

typedef struct nh_wheel {
    nh_wheel_entry_t **slots;
    uint32_t mask;   /* buckets - 1 (a power of two) */
    uint64_t period; /* ms per tick */
    uint64_t done;   /* the last tick handed over */
    size_t count;    /* entries in the wheel */
    uint64_t looked; /* entries looked at by advances, due or not (what an advance cost) */
} nh_wheel_t;

/* Buckets for `span` ms at `period` ms per tick; ticks up to now's count as passed. Returns 0 or
 * UV_ENOMEM-like -12 (ENOMEM) when the bucket array cannot be allocated. */
int nh_wheel_init(nh_wheel_t *w, uint64_t period, uint64_t span, uint64_t now);
/* Frees the buckets; the entries still in it are dropped (each left marked as not in the wheel). */
void nh_wheel_free(nh_wheel_t *w);

static inline int nh_wheel_linked(const nh_wheel_entry_t *e) {
    return e->pprev != NULL;
}
/* (Re)places e at `due` ms; a due time already passed means the next tick. */
void nh_wheel_set(nh_wheel_t *w, nh_wheel_entry_t *e, uint64_t due);
/* The same, unless e is in the wheel already at that tick or an earlier one. */
void nh_wheel_set_earlier(nh_wheel_t *w, nh_wheel_entry_t *e, uint64_t due);
/* Takes e out (nothing when it is not in). */
void nh_wheel_remove(nh_wheel_t *w, nh_wheel_entry_t *e);

/* Hands every entry whose tick has come by `now` to cb, taken out of the wheel first (cb may set
 * it again, or set or remove any other entry). Returns how many were handed over. */
size_t nh_wheel_advance(nh_wheel_t *w, uint64_t now, void (*cb)(nh_wheel_entry_t *e, void *arg),
                        void *arg);

#endif
