/* metrics — the host's counters and their Prometheus text rendering (format 0.0.4). Pure C: no
 * libuv, no Lua. The core bumps a counter where an event happens (one line at each place, through
 * the inline functions below); metrics_http.c serves nh_metrics_render() on GET /metrics.
 *
 * Label sets are bounded by construction, so that a hostile client cannot grow them:
 *  - transports, message types and close reasons are fixed enums;
 *  - request series are per *registered* route (nh_metrics_route_add, from nano.register); any
 *    other route is counted under route="unknown"; at most NH_METRICS_MAX_ROUTES routes;
 *  - error outcomes per route: the first NH_METRICS_MAX_CODES distinct codes, then "other";
 *  - Lua's own families (nh_metrics_family_add) hold at most NH_METRICS_MAX_SERIES series each:
 *    one more is refused (the Lua side raises), not silently dropped.
 *
 * Ownership: nh_metrics_t lives in the host struct; nh_metrics_init() zeroes it, nh_metrics_free()
 * frees the route table and Lua's families. Functions returning int give 0 or a negative uv-style
 * error (-ENOMEM, -EINVAL, -ENOSPC).
 */
#ifndef NH_METRICS_H
#define NH_METRICS_H

#include <math.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <time.h>

#if defined(__x86_64__) || defined(__i386__)
#include <x86intrin.h>
#define NH_METRICS_HAVE_TSC 1
#else
#define NH_METRICS_HAVE_TSC 0
#endif

#include "codec.h"

enum nh_metrics_transport { NH_MT_TCP, NH_MT_WS, NH_MT_COUNT };
enum nh_metrics_dir { NH_MD_IN, NH_MD_OUT, NH_MD_COUNT };

/* Why a connection closed. nh_metrics_reason_of() maps the reason strings the core passes to
 * nh_conn_close (conn.c, session.c, host.c) onto these; a string it does not know is "error". */
enum nh_metrics_close_reason {
    NH_CLOSE_UNSET = 0,
    NH_CLOSE_CLIENT,            /* the peer closed (EOF, reset, WebSocket close) */
    NH_CLOSE_KICK,              /* session:kick() or close() from Lua */
    NH_CLOSE_HEARTBEAT_TIMEOUT, /* silent for 2.5 heartbeat intervals */
    NH_CLOSE_HANDSHAKE_TIMEOUT, /* no handshake ack in time */
    NH_CLOSE_SEND_LIMIT,        /* its output queue passed send_limit */
    NH_CLOSE_BAD_INPUT,         /* protocol violation */
    NH_CLOSE_SHUTDOWN,          /* the server stopped */
    NH_CLOSE_HTTP,              /* an HTTP reply (static file, refused upgrade) was sent */
    NH_CLOSE_ERROR,             /* socket errors, out of memory, anything else */
    NH_CLOSE_COUNT
};
int nh_metrics_reason_of(const char *reason);

/* A cumulative histogram over fixed upper bounds (seconds), +Inf implied. */
#define NH_METRICS_MAX_BUCKETS 16
typedef struct nh_histogram {
    const double *bounds;
    int nbounds;
    uint64_t counts[NH_METRICS_MAX_BUCKETS + 1]; /* per bucket, not cumulative; last is +Inf */
    uint64_t count;
    double sum;
} nh_histogram_t;
void nh_histogram_init(nh_histogram_t *hg, const double *bounds, int nbounds);
static inline void nh_histogram_observe(nh_histogram_t *hg, double v) {
    if (isnan(v)) return;
    int i = 0;
    while (i < hg->nbounds && v > hg->bounds[i])
        i++;
    hg->counts[i]++;
    hg->count++;
    hg->sum += v;
}

#define NH_METRICS_MAX_ROUTES 4096
#define NH_METRICS_MAX_CODES 8
#define NH_METRICS_ROUTE_LEN 128

typedef struct nh_metrics_route {
    char name[NH_METRICS_ROUTE_LEN];
    size_t len;
    uint64_t ok;
    struct {
        int code;
        uint64_t n;
    } codes[NH_METRICS_MAX_CODES];
    int ncodes;
    uint64_t other_errors;
    nh_histogram_t latency;
} nh_metrics_route_t;

typedef struct nh_metrics_family nh_metrics_family_t;

typedef struct nh_metrics {
    uint64_t accepted[NH_MT_COUNT];
    uint64_t closed[NH_CLOSE_COUNT];
    uint64_t messages[NH_MD_COUNT][4]; /* by nh_msg_type: request, notify, response, push */
    uint64_t bytes[NH_MD_COUNT];
    uint64_t send_overflows;
    uint64_t heartbeats[NH_MD_COUNT];
    uint64_t reloads_ok, reloads_failed;
    nh_histogram_t reload_seconds;
    nh_histogram_t loop_lag;
    /* routes[0] is "unknown"; the rest are registered routes, found through an open-addressing
     * index of twice the capacity. */
    nh_metrics_route_t *routes;
    uint32_t nroutes, cap_routes;
    int32_t *route_index;
    uint32_t index_size;
    uint32_t last_route; /* the route the last request named: most requests repeat a few routes */
    uint16_t *route_of_code;       /* dictionary code -> route index (65536 entries), or NULL */
    nh_metrics_family_t *families; /* Lua's own, in registration order */
    /* Per-request accounting (on once nano.listen_metrics is called): session.c brackets the
     * dispatch of a request; an error response to that very request (lua_host.c respond) leaves
     * its code here. */
    int requests_on;
    uint64_t dispatch_sid, dispatch_mid;
    int dispatch_code;
    /* the dispatch's start (nh_metrics_dispatch_begin's reading), kept here rather than by the
     * caller: a value live across the handler's call is a register saved and restored */
    uint64_t dispatch_t0;
    /* The request timer's clock. Where the TSC is trusted (nh_metrics_tsc_trusted: x86),
     * requests are timed by the TSC (one instruction, where clock_gettime is two dozen and a
     * function call, twice a request) once ns_per_tick is known: measured against
     * CLOCK_MONOTONIC over the first NH_METRICS_CALIBRATE_NS of requests, timed by clock_gettime
     * meanwhile, then again every NH_METRICS_RECALIBRATE_NS (nh_metrics_recalibrate: a VM moved
     * to a host whose TSC runs at another rate). 0: not (yet). */
    double ns_per_tick;
    double ns_per_tick_next; /* set between begin and end; used from the next request */
    int tsc_ok;
    uint64_t tsc0, ns0;
    uint64_t recal_tsc, recal_ns; /* nh_metrics_recalibrate's last reading */
    uint64_t recal_seconds;       /* and how many rates it measured */
} nh_metrics_t;

#define NH_METRICS_CALIBRATE_NS 100000000u
#define NH_METRICS_RECALIBRATE_NS 1000000000u
#define NH_METRICS_RECALIBRATE_PAIR_NS 50000.0

/* Whether the TSC may time requests, from the kernel's clocksource and the processor's flags
 * (/proc/cpuinfo's, space-separated; may be NULL): the kernel keeps time by the TSC itself ("tsc":
 * it checked that it is constant, does not stop and agrees across cores), or a KVM guest's
 * kvm-clock runs on an invariant TSC (constant_tsc and nonstop_tsc). The second overrides the
 * kernel's own choice: a guest on an invariant TSC gets kvm-clock when the TSC was declared or
 * found unstable (tsc=unstable on the kernel's command line, as on these VMs; a skew its
 * watchdog saw).
 * For the kernel's time that matters across a VM's pause and move; for a request's few
 * microseconds it does not, and kvm-clock is itself computed from the TSC. What would matter (a
 * jump, a new rate, cores out of step) nh_metrics_recalibrate checks every second. */
int nh_metrics_tsc_trusted(const char *clocksource, const char *cpu_flags);
/* Measures the TSC's rate against CLOCK_MONOTONIC again, once NH_METRICS_RECALIBRATE_NS have
 * passed since the last time (the host's sweep calls it at least once a second), from a clock
 * read between two TSC reads at most NH_METRICS_RECALIBRATE_PAIR_NS apart. A rate more than
 * 10 % off the last (50 % for the first, which corrects the first 100 ms') gives the TSC up:
 * requests are timed by CLOCK_MONOTONIC from then on, and it returns 1 (once) for the caller to
 * log. No request is being timed while it runs: it is called between loop callbacks, and a request
 * is timed within one. */
int nh_metrics_recalibrate(nh_metrics_t *m);

/* Values the core reads when a scrape renders (sessions, Lua memory, watchdog): the caller fills
 * them in just before nh_metrics_render. */
typedef struct nh_metrics_gauges {
    uint64_t sessions[NH_MT_COUNT]; /* past the handshake */
    uint64_t connections;
    double lua_bytes;
    uint64_t watchdog_aborts, watchdog_stalls;
    int shutting_down;
} nh_metrics_gauges_t;

int nh_metrics_init(nh_metrics_t *m);
void nh_metrics_free(nh_metrics_t *m);

static inline int nh_metrics_transport_of(const char *name) {
    return name[0] == 'w' ? NH_MT_WS : NH_MT_TCP;
}
static inline void nh_metrics_accepted(nh_metrics_t *m, const char *transport) {
    m->accepted[nh_metrics_transport_of(transport)]++;
}
static inline void nh_metrics_closed(nh_metrics_t *m, int reason) {
    m->closed[reason > NH_CLOSE_UNSET && reason < NH_CLOSE_COUNT ? reason : NH_CLOSE_ERROR]++;
}
static inline void nh_metrics_message(nh_metrics_t *m, int dir, int type) {
    if (type >= 0 && type < 4) m->messages[dir][type]++;
}

/* Registers a route for per-route series; adding one twice is fine. Returns its index (> 0), or
 * 0 ("unknown") when the table is full or the name too long. */
uint32_t nh_metrics_route_add(nh_metrics_t *m, const char *name, size_t len);
/* The index of a registered route, 0 when it is not one. */
uint32_t nh_metrics_route_find(const nh_metrics_t *m, const char *name, size_t len);
/* One request handled: code 0 is "ok", anything else an error code (< 0: an error response
 * without a code, shown as "error"). */
void nh_metrics_request(nh_metrics_t *m, uint32_t route, int code, double seconds);
/* The dictionary maps `code` to the route at index `route` (compressed routes are counted by
 * name). Returns 0 or -ENOMEM. */
int nh_metrics_route_code(nh_metrics_t *m, uint16_t code, uint32_t route);

/* session.c around the dispatch of request message `msg` of session `sid`: begin returns a
 * start time (ns, never 0) to hand to end; `failed`: the dispatcher itself failed (500). */
uint64_t nh_metrics_clock_ns(nh_metrics_t *m); /* CLOCK_MONOTONIC (and the TSC's calibration) */
static inline uint64_t nh_metrics_now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}
static inline uint64_t nh_metrics_ticks(void) {
#if NH_METRICS_HAVE_TSC
    return __rdtsc();
#else
    return 0;
#endif
}
/* The start of a request's dispatch: its session and id (for nh_metrics_error_response) and
 * the time, kept in m until nh_metrics_dispatch_end. */
static inline void nh_metrics_dispatch_begin(nh_metrics_t *m, uint64_t sid, uint64_t mid) {
    m->dispatch_sid = sid;
    m->dispatch_mid = mid;
    m->dispatch_code = 0;
    uint64_t t = m->ns_per_tick > 0 ? nh_metrics_ticks()
                 : m->tsc_ok        ? nh_metrics_clock_ns(m) /* calibrating the TSC */
                                    : nh_metrics_now_ns();
    m->dispatch_t0 = t ? t : 1;
}
void nh_metrics_dispatch_end_slow(nh_metrics_t *m, const nh_msg_t *msg, int failed);
/* Seconds since t0, a TSC reading (m->ns_per_tick known). Times 1e-9 rather than over 1e9: the
 * same to a rounding, without a division's dozen cycles of latency in every request. */
static inline double nh_metrics_tsc_seconds(const nh_metrics_t *m, uint64_t t0) {
    uint64_t t = nh_metrics_ticks();
    return t > t0 ? (double)(t - t0) * m->ns_per_tick * 1e-9 : 0.0;
}
/* Seconds since t0, a CLOCK_MONOTONIC reading (nh_metrics_now_ns) */
static inline double nh_metrics_clock_seconds(uint64_t t0) {
    uint64_t t = nh_metrics_now_ns();
    return t > t0 ? (double)(t - t0) / 1e9 : 0.0;
}
/* Whether route text a (a registered name) is the n bytes at b: the last request's route, so
 * nearly always. Routes of 8 to 16 bytes (most: "Room.join") are two pairs of 8-byte words, not
 * a memcmp call (the compare was a fifth of the per-request cost). */
static inline int nh_metrics_same_route(const char *a, const char *b, size_t n) {
    if (n >= 8 && n <= 16) {
        uint64_t a1, a2, b1, b2;
        memcpy(&a1, a, 8);
        memcpy(&b1, b, 8);
        memcpy(&a2, a + n - 8, 8);
        memcpy(&b2, b + n - 8, 8);
        return a1 == b1 && a2 == b2;
    }
    return memcmp(a, b, n) == 0;
}
/* The usual end, inline (out of line it was a fifth of the metrics' cost per request): a request
 * that succeeded, to the same named route as the one before, timed by the TSC or, where the TSC
 * is not trusted (tsc_ok 0: nh_metrics_tsc_trusted), by CLOCK_MONOTONIC; the rest
 * (the first requests, errors, other routes, route codes, the requests that calibrate the TSC)
 * in nh_metrics_dispatch_end_slow. */
static inline void nh_metrics_dispatch_end(nh_metrics_t *m, const nh_msg_t *msg, int failed) {
    nh_metrics_route_t *rt = &m->routes[m->last_route];
    int tsc = m->ns_per_tick > 0;
    if (failed || m->dispatch_code || (!tsc && m->tsc_ok) || msg->route_compressed ||
        !m->last_route || rt->len != msg->route_len ||
        !nh_metrics_same_route(rt->name, msg->route, msg->route_len)) {
        nh_metrics_dispatch_end_slow(m, msg, failed);
        return;
    }
    uint64_t t0 = m->dispatch_t0;
    nh_histogram_observe(&rt->latency,
                         tsc ? nh_metrics_tsc_seconds(m, t0) : nh_metrics_clock_seconds(t0));
    rt->ok++;
    m->dispatch_sid = m->dispatch_mid = 0;
}
/* lua_host.c: an error response to message `mid` of session `sid`, with its code (< 0: none). */
static inline void nh_metrics_error_response(nh_metrics_t *m, uint64_t sid, uint64_t mid,
                                             int code) {
    if (sid == m->dispatch_sid && mid == m->dispatch_mid) m->dispatch_code = code ? code : -1;
}

/* ---- Lua's own families (nano.metrics.counter / gauge / histogram) ---- */
enum nh_metrics_kind { NH_KIND_COUNTER, NH_KIND_GAUGE, NH_KIND_HISTOGRAM };
#define NH_METRICS_MAX_LABELS 8
#define NH_METRICS_MAX_SERIES 1000

/* Defines a family. Name and labels must match [a-zA-Z_:][a-zA-Z0-9_:]* (labels without ':' and
 * not starting "__"); bounds (histograms) must increase. The same name again with the same kind
 * and labels returns the existing family (hot reload runs definitions twice); a clash is -EEXIST,
 * a bad name -EINVAL. */
int nh_metrics_family_add(nh_metrics_t *m, const char *name, const char *help, int kind,
                          const char *const *labels, int nlabels, const double *bounds, int nbounds,
                          nh_metrics_family_t **out);
int nh_metrics_family_kind(const nh_metrics_family_t *f);
int nh_metrics_family_nlabels(const nh_metrics_family_t *f);
/* Adds to (counter, gauge), sets (gauge) or observes (histogram) the series with these label
 * values (nlabels of them). -ENOSPC past NH_METRICS_MAX_SERIES series. */
int nh_metrics_family_update(nh_metrics_family_t *f, const char *const *values, int set, double v);

/* The core's own families kept by Lua modules (cluster RPCs, storage queries, the HTTP client):
 * as nh_metrics_family_add, but the name must start with nano_. */
int nh_metrics_core_family_add(nh_metrics_t *m, const char *name, const char *help, int kind,
                               const char *const *labels, int nlabels, const double *bounds,
                               int nbounds, nh_metrics_family_t **out);
/* The index of the series with these label values, created when new (a negative error as
 * nh_metrics_family_update). An index stays valid for the family's life, so a hot path looks its
 * series up once and then bumps by index: adds v (counter, gauge) or observes it (histogram). An
 * index out of range is ignored. */
int nh_metrics_family_series(nh_metrics_family_t *f, const char *const *values);
void nh_metrics_family_bump(nh_metrics_family_t *f, int i, double v);

/* ---- rendering ---- */
typedef struct nh_strbuf {
    char *data;
    size_t len, cap;
    int failed; /* out of memory: data is incomplete */
} nh_strbuf_t;
void nh_strbuf_printf(nh_strbuf_t *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
void nh_strbuf_put(nh_strbuf_t *b, const char *s, size_t n); /* n bytes as they are */
void nh_strbuf_free(nh_strbuf_t *b);

/* Appends every family in the text format 0.0.4 (HELP, TYPE, samples). */
void nh_metrics_render(const nh_metrics_t *m, const nh_metrics_gauges_t *g, nh_strbuf_t *out);

#endif
