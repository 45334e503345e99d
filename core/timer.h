/* timer — every timer of a host (heartbeat sweep, Lua timers) on one min-heap and one uv_timer.
 *
 * Time is the loop's millisecond clock plus a skew that tests move forward with
 * nh_timers_advance(), so timer behaviour can be tested without sleeping.
 * nh_timer_t is embedded by its owner, who must stop it before freeing it. A callback may stop or
 * restart any timer, its own included; a timer stopped inside its own callback never fires again.
 */
#ifndef NH_TIMER_H
#define NH_TIMER_H

#include <stdint.h>
#include <uv.h>

typedef struct nh_timer nh_timer_t;
typedef void (*nh_timer_cb)(nh_timer_t *t);

struct nh_timer {
    uint64_t due;    /* absolute, in nh_timers_now() ms */
    uint64_t repeat; /* 0: once */
    uint64_t seq;  /* start order: timers due at the same ms fire in the order they were started */
    uint32_t slot; /* index in the heap + 1; 0 when not running */
    nh_timer_cb cb;
    void *data; /* owner's */
};

typedef struct nh_timers {
    uv_timer_t uv;
    nh_timer_t **heap;
    uint32_t n, cap;
    uint64_t skew;
    uint64_t seq;
    int closing;
} nh_timers_t;

int nh_timers_init(nh_timers_t *ts, uv_loop_t *loop);
/* Closes the uv_timer; running timers are forgotten (their owners free them). `cb` is the uv close
 * callback for &ts->uv (may be NULL when ts outlives the loop run). */
void nh_timers_close(nh_timers_t *ts, uv_close_cb cb);

uint64_t nh_timers_now(const nh_timers_t *ts);
/* Starts (or restarts) t: first call after `delay` ms, then every `repeat` ms if repeat > 0. */
int nh_timer_start(nh_timers_t *ts, nh_timer_t *t, uint64_t delay, uint64_t repeat);
void nh_timer_stop(nh_timers_t *ts, nh_timer_t *t);
static inline int nh_timer_active(const nh_timer_t *t) {
    return t->slot != 0;
}

/* Moves virtual time forward by ms and runs every timer that became due, in order. */
void nh_timers_advance(nh_timers_t *ts, uint64_t ms);

#endif
