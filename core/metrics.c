#include "metrics.h"

#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

/* Handler latency and loop lag: from half a millisecond (a plain handler) to seconds (a stalled
 * loop); Prometheus' default buckets with 0.5 ms and 1 ms added at the low end. */
static const double latency_bounds[] = {0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05,
                                        0.1,    0.25,  0.5,    1,     2.5,  5,     10};
static const double reload_bounds[] = {0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1, 5};
#define NBOUNDS(a) ((int)(sizeof a / sizeof a[0]))

static const char *const close_names[NH_CLOSE_COUNT] = {"unset",
                                                        "client",
                                                        "kick",
                                                        "heartbeat_timeout",
                                                        "handshake_timeout",
                                                        "send_limit",
                                                        "bad_input",
                                                        "shutdown",
                                                        "http",
                                                        "error"};
static const char *const transport_names[NH_MT_COUNT] = {"tcp", "ws"};
static const char *const dir_names[NH_MD_COUNT] = {"in", "out"};
static const char *const msg_names[4] = {"request", "notify", "response", "push"};

int nh_metrics_reason_of(const char *reason) {
    static const struct {
        const char *text;
        int reason;
    } known[] = {
        {"peer closed", NH_CLOSE_CLIENT},
        {"connection reset by peer", NH_CLOSE_CLIENT},
        {"broken pipe", NH_CLOSE_CLIENT},
        {"server shutdown", NH_CLOSE_SHUTDOWN},
        {"heartbeat timeout", NH_CLOSE_HEARTBEAT_TIMEOUT},
        {"handshake timeout", NH_CLOSE_HANDSHAKE_TIMEOUT},
        {"send buffer limit", NH_CLOSE_SEND_LIMIT},
        {"bad input", NH_CLOSE_BAD_INPUT},
        {"tls", NH_CLOSE_BAD_INPUT}, /* a failed TLS handshake or record (conn.c) */
        {"peer did not read its last packets", NH_CLOSE_SEND_LIMIT},
    };
    if (!reason) return NH_CLOSE_UNSET;
    for (size_t i = 0; i < sizeof known / sizeof known[0]; i++)
        if (strcmp(reason, known[i].text) == 0) return known[i].reason;
    return NH_CLOSE_ERROR;
}

void nh_histogram_init(nh_histogram_t *hg, const double *bounds, int nbounds) {
    memset(hg, 0, sizeof *hg);
    hg->bounds = bounds;
    hg->nbounds = nbounds > NH_METRICS_MAX_BUCKETS ? NH_METRICS_MAX_BUCKETS : nbounds;
}

/* ---- routes ---- */

static uint32_t hash(const char *s, size_t len) {
    uint32_t h = 2166136261u; /* FNV-1a */
    for (size_t i = 0; i < len; i++)
        h = (h ^ (uint8_t)s[i]) * 16777619u;
    return h;
}

int nh_metrics_tsc_trusted(const char *clocksource, const char *cpu_flags) {
    if (strcmp(clocksource, "tsc") == 0) return 1;
    if (strcmp(clocksource, "kvm-clock") != 0 || !cpu_flags) return 0;
    int constant = 0, nonstop = 0;
    for (const char *p = cpu_flags; *p;) {
        while (*p == ' ' || *p == '\t')
            p++;
        size_t n = strcspn(p, " \t\n");
        if (n == 12 && memcmp(p, "constant_tsc", 12) == 0) constant = 1;
        if (n == 11 && memcmp(p, "nonstop_tsc", 11) == 0) nonstop = 1;
        p += n;
        if (*p == '\n') break;
    }
    return constant && nonstop;
}

/* Whether the TSC may time requests (nh_metrics_tsc_trusted), read off this system. */
static int tsc_usable(void) {
#if NH_METRICS_HAVE_TSC
    FILE *f = fopen("/sys/devices/system/clocksource/clocksource0/current_clocksource", "r");
    if (!f) return 0;
    char name[32] = "";
    if (!fgets(name, sizeof name, f)) name[0] = '\0';
    fclose(f);
    name[strcspn(name, "\n")] = '\0';
    if (strcmp(name, "kvm-clock") != 0) return nh_metrics_tsc_trusted(name, NULL);
    /* the first processor's flags line: the kernel lists the same for every core */
    f = fopen("/proc/cpuinfo", "r");
    if (!f) return 0;
    char line[8192];
    int ok = 0;
    while (fgets(line, sizeof line, f)) {
        if (strncmp(line, "flags", 5) != 0) continue;
        const char *colon = strchr(line, ':');
        ok = colon && nh_metrics_tsc_trusted(name, colon + 1);
        break;
    }
    fclose(f);
    return ok;
#else
    return 0;
#endif
}

int nh_metrics_init(nh_metrics_t *m) {
    memset(m, 0, sizeof *m);
    nh_histogram_init(&m->reload_seconds, reload_bounds, NBOUNDS(reload_bounds));
    nh_histogram_init(&m->loop_lag, latency_bounds, NBOUNDS(latency_bounds));
    m->cap_routes = 16;
    m->routes = calloc(m->cap_routes, sizeof *m->routes);
    m->index_size = 64;
    m->route_index = malloc(m->index_size * sizeof *m->route_index);
    if (!m->routes || !m->route_index) {
        nh_metrics_free(m);
        return -ENOMEM;
    }
    for (uint32_t i = 0; i < m->index_size; i++)
        m->route_index[i] = -1;
    strcpy(m->routes[0].name, "unknown");
    m->routes[0].len = 7;
    m->tsc_ok = tsc_usable();
    nh_histogram_init(&m->routes[0].latency, latency_bounds, NBOUNDS(latency_bounds));
    m->nroutes = 1;
    return 0;
}

struct nh_metrics_family {
    nh_metrics_family_t *next;
    char *name, *help;
    int kind;
    char *labels[NH_METRICS_MAX_LABELS];
    int nlabels;
    double *bounds;
    int nbounds;
    struct series {
        char **values;
        double v;
        nh_histogram_t hg;
    } * series;
    int nseries, cap;
};

static void family_free(nh_metrics_family_t *f) {
    for (int i = 0; i < f->nseries; i++) {
        for (int k = 0; k < f->nlabels; k++)
            free(f->series[i].values[k]);
        free(f->series[i].values);
    }
    for (int k = 0; k < f->nlabels; k++)
        free(f->labels[k]);
    free(f->series);
    free(f->bounds);
    free(f->name);
    free(f->help);
    free(f);
}

void nh_metrics_free(nh_metrics_t *m) {
    free(m->route_of_code);
    m->route_of_code = NULL;
    free(m->routes);
    free(m->route_index);
    m->routes = NULL;
    m->route_index = NULL;
    m->nroutes = m->cap_routes = m->index_size = 0;
    while (m->families) {
        nh_metrics_family_t *f = m->families;
        m->families = f->next;
        family_free(f);
    }
}

uint32_t nh_metrics_route_find(const nh_metrics_t *m, const char *name, size_t len) {
    if (!m->index_size || len >= NH_METRICS_ROUTE_LEN) return 0;
    uint32_t mask = m->index_size - 1;
    for (uint32_t i = hash(name, len) & mask;; i = (i + 1) & mask) {
        int32_t r = m->route_index[i];
        if (r < 0) return 0;
        if (strncmp(m->routes[r].name, name, len) == 0 && m->routes[r].name[len] == '\0')
            return (uint32_t)r;
    }
}

static void index_insert(int32_t *index, uint32_t size, const char *name, uint32_t r) {
    uint32_t mask = size - 1;
    uint32_t i = hash(name, strlen(name)) & mask;
    while (index[i] >= 0)
        i = (i + 1) & mask;
    index[i] = (int32_t)r;
}

uint32_t nh_metrics_route_add(nh_metrics_t *m, const char *name, size_t len) {
    uint32_t r = nh_metrics_route_find(m, name, len);
    if (r || len == 0 || len >= NH_METRICS_ROUTE_LEN || memchr(name, '\0', len)) return r;
    if (m->nroutes >= NH_METRICS_MAX_ROUTES) return 0;
    if (m->nroutes == m->cap_routes) {
        nh_metrics_route_t *nr = realloc(m->routes, 2 * m->cap_routes * sizeof *nr);
        if (!nr) return 0;
        m->routes = nr;
        m->cap_routes *= 2;
    }
    if (2 * (m->nroutes + 1) > m->index_size) { /* keep the index at most half full */
        uint32_t size = m->index_size * 2;
        int32_t *idx = malloc(size * sizeof *idx);
        if (!idx) return 0;
        for (uint32_t i = 0; i < size; i++)
            idx[i] = -1;
        for (uint32_t k = 1; k < m->nroutes; k++)
            index_insert(idx, size, m->routes[k].name, k);
        free(m->route_index);
        m->route_index = idx;
        m->index_size = size;
    }
    r = m->nroutes++;
    nh_metrics_route_t *rt = &m->routes[r];
    memset(rt, 0, sizeof *rt);
    memcpy(rt->name, name, len);
    rt->name[len] = '\0';
    rt->len = len;
    nh_histogram_init(&rt->latency, latency_bounds, NBOUNDS(latency_bounds));
    index_insert(m->route_index, m->index_size, rt->name, r);
    return r;
}

static inline void count_request(nh_metrics_t *m, uint32_t route, int code, double seconds) {
    if (route >= m->nroutes) route = 0;
    nh_metrics_route_t *rt = &m->routes[route];
    nh_histogram_observe(&rt->latency, seconds);
    if (code == 0) {
        rt->ok++;
        return;
    }
    for (int i = 0; i < rt->ncodes; i++)
        if (rt->codes[i].code == code) {
            rt->codes[i].n++;
            return;
        }
    if (rt->ncodes < NH_METRICS_MAX_CODES) {
        rt->codes[rt->ncodes].code = code;
        rt->codes[rt->ncodes++].n = 1;
    } else {
        rt->other_errors++;
    }
}

void nh_metrics_request(nh_metrics_t *m, uint32_t route, int code, double seconds) {
    count_request(m, route, code, seconds);
}

int nh_metrics_route_code(nh_metrics_t *m, uint16_t code, uint32_t route) {
    if (!m->route_of_code && !(m->route_of_code = calloc(65536, sizeof *m->route_of_code)))
        return -ENOMEM;
    m->route_of_code[code] = (uint16_t)(route < m->nroutes ? route : 0);
    return 0;
}

uint64_t nh_metrics_clock_ns(nh_metrics_t *m) {
    uint64_t ns = nh_metrics_now_ns();
    if (m->tsc_ok && !m->ns_per_tick_next) {
        if (!m->ns0) {
            m->ns0 = ns;
            m->tsc0 = nh_metrics_ticks();
        } else if (ns - m->ns0 >= NH_METRICS_CALIBRATE_NS) {
            uint64_t ticks = nh_metrics_ticks() - m->tsc0;
            if (ticks > 0) m->ns_per_tick_next = (double)(ns - m->ns0) / (double)ticks;
        }
    }
    return ns;
}

int nh_metrics_recalibrate(nh_metrics_t *m) {
    if (!(m->ns_per_tick > 0)) return 0; /* the first calibration is the requests' (clock_ns) */
    if (m->recal_ns && nh_metrics_now_ns() - m->recal_ns < NH_METRICS_RECALIBRATE_NS) return 0;
    /* the clock read between two TSC reads: a pair that took long (the thread preempted, the
     * VM's CPU taken away) says little, and the next call reads again */
    uint64_t t1 = nh_metrics_ticks(), ns = nh_metrics_now_ns(), t2 = nh_metrics_ticks();
    if (t2 < t1 || (double)(t2 - t1) * m->ns_per_tick > NH_METRICS_RECALIBRATE_PAIR_NS) return 0;
    uint64_t ticks = t1 + (t2 - t1) / 2;
    if (m->recal_ns) {
        double rate = ticks > m->recal_tsc && ns > m->recal_ns
                          ? (double)(ns - m->recal_ns) / (double)(ticks - m->recal_tsc)
                          : 0.0;
        /* the first second corrects the first 100 ms' calibration (within half); after it
         * an invariant TSC keeps its rate: a tenth off is not that */
        double off = m->recal_seconds ? 0.1 : 0.5;
        if (!(rate > m->ns_per_tick * (1 - off) && rate < m->ns_per_tick * (1 + off))) {
            /* The TSC and the clock disagree over a second: a jump (the VM stopped and resumed
             * elsewhere), another rate (a host whose TSC runs at another), or cores out of step.
             * Whichever it is, the TSC no longer times requests: CLOCK_MONOTONIC from here on. */
            m->tsc_ok = 0;
            m->ns_per_tick = m->ns_per_tick_next = 0;
            m->recal_ns = m->recal_tsc = m->recal_seconds = 0;
            return 1;
        }
        m->ns_per_tick = rate;
        m->recal_seconds++;
    }
    m->recal_ns = ns;
    m->recal_tsc = ticks;
    return 0;
}

void nh_metrics_dispatch_end_slow(nh_metrics_t *m, const nh_msg_t *msg, int failed) {
    uint64_t t0 = m->dispatch_t0;
    double seconds;
    if (m->ns_per_tick > 0) {
        seconds = nh_metrics_tsc_seconds(m, t0);
    } else {
        seconds = nh_metrics_clock_seconds(t0); /* begin's clock: ns_per_tick changes only below */
        if (m->ns_per_tick_next > 0) m->ns_per_tick = m->ns_per_tick_next;
    }
    uint32_t route;
    const nh_metrics_route_t *last = &m->routes[m->last_route];
    if (msg->route_compressed) {
        route = m->route_of_code ? m->route_of_code[msg->route_code] : 0;
    } else if (m->last_route && last->len == msg->route_len &&
               nh_metrics_same_route(last->name, msg->route, msg->route_len)) {
        route = m->last_route; /* measured: the lookup was half of this function's cost */
    } else {
        route = nh_metrics_route_find(m, msg->route, msg->route_len);
        m->last_route = route;
    }
    int code = m->dispatch_code;
    if (failed && code == 0) code = 500; /* session.c answers for the failed dispatcher */
    count_request(m, route, code, seconds);
    m->dispatch_sid = m->dispatch_mid = 0;
}

/* ---- Lua's families ---- */

static int valid_name(const char *s, int label) {
    if (!s || !*s) return 0;
    if (label && s[0] == '_' && s[1] == '_') return 0;
    for (const char *p = s; *p; p++) {
        char c = *p;
        int ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_' ||
                 (!label && c == ':') || (p > s && c >= '0' && c <= '9');
        if (!ok) return 0;
    }
    return 1;
}

int nh_metrics_family_kind(const nh_metrics_family_t *f) {
    return f->kind;
}
int nh_metrics_family_nlabels(const nh_metrics_family_t *f) {
    return f->nlabels;
}

static int same_shape(const nh_metrics_family_t *f, int kind, const char *const *labels,
                      int nlabels, const double *bounds, int nbounds) {
    if (f->kind != kind || f->nlabels != nlabels) return 0;
    for (int i = 0; i < nlabels; i++)
        if (strcmp(f->labels[i], labels[i]) != 0) return 0;
    if (kind == NH_KIND_HISTOGRAM) {
        if (f->nbounds != nbounds) return 0;
        for (int i = 0; i < nbounds; i++)
            if (f->bounds[i] != bounds[i]) return 0;
    }
    return 1;
}

static int family_add(nh_metrics_t *m, int core, const char *name, const char *help, int kind,
                      const char *const *labels, int nlabels, const double *bounds, int nbounds,
                      nh_metrics_family_t **out) {
    if (!valid_name(name, 0) || nlabels < 0 || nlabels > NH_METRICS_MAX_LABELS) return -EINVAL;
    for (int i = 0; i < nlabels; i++) {
        if (!valid_name(labels[i], 1)) return -EINVAL;
        if (kind == NH_KIND_HISTOGRAM && strcmp(labels[i], "le") == 0) return -EINVAL;
        for (int k = 0; k < i; k++)
            if (strcmp(labels[i], labels[k]) == 0) return -EINVAL;
    }
    if (kind == NH_KIND_HISTOGRAM) {
        if (nbounds < 1 || nbounds > NH_METRICS_MAX_BUCKETS) return -EINVAL;
        for (int i = 0; i < nbounds; i++)
            if (!isfinite(bounds[i]) || (i && bounds[i] <= bounds[i - 1])) return -EINVAL;
    }
    if ((strncmp(name, "nano_", 5) == 0) != core) return -EEXIST; /* the core's own prefix */
    nh_metrics_family_t **tail = &m->families;
    for (nh_metrics_family_t *f = m->families; f; f = f->next) {
        if (strcmp(f->name, name) == 0) {
            if (!same_shape(f, kind, labels, nlabels, bounds, nbounds)) return -EEXIST;
            *out = f;
            return 0;
        }
        tail = &f->next;
    }
    nh_metrics_family_t *f = calloc(1, sizeof *f);
    if (!f) return -ENOMEM;
    f->name = strdup(name);
    f->help = strdup(help ? help : "");
    f->kind = kind;
    int failed = !f->name || !f->help;
    for (int i = 0; i < nlabels && !failed; i++) {
        f->labels[i] = strdup(labels[i]);
        if (!f->labels[i])
            failed = 1;
        else
            f->nlabels = i + 1;
    }
    if (!failed && kind == NH_KIND_HISTOGRAM) {
        f->bounds = malloc((size_t)nbounds * sizeof *f->bounds);
        if (!f->bounds)
            failed = 1;
        else {
            memcpy(f->bounds, bounds, (size_t)nbounds * sizeof *bounds);
            f->nbounds = nbounds;
        }
    }
    if (failed) {
        family_free(f);
        return -ENOMEM;
    }
    *tail = f;
    *out = f;
    return 0;
}

int nh_metrics_family_add(nh_metrics_t *m, const char *name, const char *help, int kind,
                          const char *const *labels, int nlabels, const double *bounds, int nbounds,
                          nh_metrics_family_t **out) {
    return family_add(m, 0, name, help, kind, labels, nlabels, bounds, nbounds, out);
}

int nh_metrics_core_family_add(nh_metrics_t *m, const char *name, const char *help, int kind,
                               const char *const *labels, int nlabels, const double *bounds,
                               int nbounds, nh_metrics_family_t **out) {
    return family_add(m, 1, name, help, kind, labels, nlabels, bounds, nbounds, out);
}

int nh_metrics_family_series(nh_metrics_family_t *f, const char *const *values) {
    for (int i = 0; i < f->nseries; i++) {
        int k = 0;
        while (k < f->nlabels && strcmp(f->series[i].values[k], values[k]) == 0)
            k++;
        if (k == f->nlabels) return i;
    }
    if (f->nseries >= NH_METRICS_MAX_SERIES) return -ENOSPC;
    if (f->nseries == f->cap) {
        int cap = f->cap ? 2 * f->cap : 4;
        struct series *ns = realloc(f->series, (size_t)cap * sizeof *ns);
        if (!ns) return -ENOMEM;
        f->series = ns;
        f->cap = cap;
    }
    char **vals = calloc((size_t)(f->nlabels ? f->nlabels : 1), sizeof *vals);
    if (!vals) return -ENOMEM;
    for (int k = 0; k < f->nlabels; k++) {
        vals[k] = strdup(values[k]);
        if (!vals[k]) {
            while (k--)
                free(vals[k]);
            free(vals);
            return -ENOMEM;
        }
    }
    struct series *s = &f->series[f->nseries++];
    memset(s, 0, sizeof *s);
    s->values = vals;
    if (f->kind == NH_KIND_HISTOGRAM) nh_histogram_init(&s->hg, f->bounds, f->nbounds);
    return f->nseries - 1;
}

void nh_metrics_family_bump(nh_metrics_family_t *f, int i, double v) {
    if (i < 0 || i >= f->nseries) return;
    struct series *s = &f->series[i];
    if (f->kind == NH_KIND_HISTOGRAM)
        nh_histogram_observe(&s->hg, v);
    else
        s->v += v;
}

int nh_metrics_family_update(nh_metrics_family_t *f, const char *const *values, int set, double v) {
    int i = nh_metrics_family_series(f, values);
    if (i < 0) return i;
    struct series *s = &f->series[i];
    if (f->kind == NH_KIND_HISTOGRAM)
        nh_histogram_observe(&s->hg, v);
    else if (set)
        s->v = v;
    else
        s->v += v;
    return 0;
}

/* ---- rendering ---- */

/* Room for n more bytes and the NUL after them; 0 when out of memory (b->failed set). */
static int reserve(nh_strbuf_t *b, size_t n) {
    if (b->data && b->len + n < b->cap) return 1;
    size_t cap = b->cap ? b->cap : 4096;
    while (cap <= b->len + n)
        cap *= 2;
    char *d = realloc(b->data, cap);
    if (!d) {
        b->failed = 1;
        return 0;
    }
    b->data = d;
    b->cap = cap;
    return 1;
}

/* A scrape writes a few hundred samples: the common pieces are copied, not printf'd (a printf is
 * ~1,500 instructions; a scrape was ~850,000: docs/benchmarks.md, "The cost of metrics"). */
void nh_strbuf_put(nh_strbuf_t *b, const char *s, size_t n) {
    if (b->failed || !reserve(b, n)) return;
    memcpy(b->data + b->len, s, n);
    b->len += n;
    b->data[b->len] = '\0'; /* as printf leaves it: label texts are used as C strings */
}

static void put_str(nh_strbuf_t *b, const char *s) {
    nh_strbuf_put(b, s, strlen(s));
}

static void put_u64(nh_strbuf_t *b, uint64_t v) {
    char t[20];
    int i = (int)sizeof t;
    do {
        t[--i] = (char)('0' + v % 10);
        v /= 10;
    } while (v);
    nh_strbuf_put(b, t + i, sizeof t - (size_t)i);
}

void nh_strbuf_printf(nh_strbuf_t *b, const char *fmt, ...) {
    if (b->failed) return;
    for (;;) {
        va_list ap;
        va_start(ap, fmt);
        int n =
            vsnprintf(b->data ? b->data + b->len : NULL, b->data ? b->cap - b->len : 0, fmt, ap);
        va_end(ap);
        if (n < 0) {
            b->failed = 1;
            return;
        }
        if (b->data && b->len + (size_t)n < b->cap) {
            b->len += (size_t)n;
            return;
        }
        if (!reserve(b, (size_t)n)) return;
    }
}

void nh_strbuf_free(nh_strbuf_t *b) {
    free(b->data);
    memset(b, 0, sizeof *b);
}

/* Label values and HELP text: backslash, newline (and for values the double quote) escaped. */
static void put_escaped(nh_strbuf_t *b, const char *s, int quote) {
    size_t plain = strcspn(s, quote ? "\\\n\"" : "\\\n");
    if (!s[plain]) { /* nothing to escape: the usual case */
        nh_strbuf_put(b, s, plain);
        return;
    }
    const char *start = s;
    for (; *s; s++) {
        const char *esc = *s == '\\'             ? "\\\\"
                          : *s == '\n'           ? "\\n"
                          : (quote && *s == '"') ? "\\\""
                                                 : NULL;
        if (!esc) continue;
        nh_strbuf_printf(b, "%.*s%s", (int)(s - start), start, esc);
        start = s + 1;
    }
    nh_strbuf_printf(b, "%s", start);
}

static void head(nh_strbuf_t *b, const char *name, const char *type, const char *help) {
    put_str(b, "# HELP ");
    put_str(b, name);
    put_str(b, " ");
    put_escaped(b, help, 0);
    put_str(b, "\n# TYPE ");
    put_str(b, name);
    put_str(b, " ");
    put_str(b, type);
    put_str(b, "\n");
}

/* The texts put_double wrote last, by value: histogram bounds come back at every scrape, and
 * each costs a printf and a strtod or more. Per thread (the render has no lock). */
static _Thread_local struct {
    double v;
    uint8_t len;
    char txt[31];
} double_texts[64];

static void put_double(nh_strbuf_t *b, double v) {
    if (isnan(v)) {
        put_str(b, "NaN");
    } else if (isinf(v)) {
        put_str(b, v > 0 ? "+Inf" : "-Inf");
    } else if (v > -1e15 && v < 1e15 && v == (double)(int64_t)v && (v != 0 || !signbit(v))) {
        /* an integer: the digits %.15g would write */
        if (v < 0) put_str(b, "-");
        put_u64(b, v < 0 ? (uint64_t) - (int64_t)v : (uint64_t)(int64_t)v);
    } else {
        uint64_t bits;
        memcpy(&bits, &v, sizeof bits);
        unsigned slot = (unsigned)((bits * 0x9E3779B97F4A7C15u) >> 58);
        if (double_texts[slot].len && double_texts[slot].v == v) {
            nh_strbuf_put(b, double_texts[slot].txt, double_texts[slot].len);
            return;
        }
        /* short text that reads back as the same double: %.15g is exact for most values */
        char txt[32];
        int n = 0;
        for (int prec = 15; prec <= 17; prec++) {
            n = snprintf(txt, sizeof txt, "%.*g", prec, v);
            if (strtod(txt, NULL) == v) break;
        }
        if (n > 0 && n < (int)sizeof double_texts[slot].txt) {
            double_texts[slot].v = v;
            double_texts[slot].len = (uint8_t)n;
            memcpy(double_texts[slot].txt, txt, (size_t)n);
        }
        put_str(b, txt);
    }
}

/* One histogram's samples; `labels` is the series' label text without braces ("" for none). */
static void put_histogram(nh_strbuf_t *b, const char *name, const char *labels,
                          const nh_histogram_t *hg) {
    uint64_t cum = 0;
    const char *sep = *labels ? "," : "";
    for (int i = 0; i <= hg->nbounds; i++) {
        cum += hg->counts[i];
        put_str(b, name);
        put_str(b, "_bucket{");
        put_str(b, labels);
        put_str(b, sep);
        put_str(b, "le=\"");
        if (i < hg->nbounds)
            put_double(b, hg->bounds[i]);
        else
            put_str(b, "+Inf");
        put_str(b, "\"} ");
        put_u64(b, cum);
        put_str(b, "\n");
    }
    const char *open = *labels ? "{" : "", *close = *labels ? "}" : "";
    nh_strbuf_printf(b, "%s_sum%s%s%s ", name, open, labels, close);
    put_double(b, hg->sum);
    nh_strbuf_printf(b, "\n%s_count%s%s%s %llu\n", name, open, labels, close,
                     (unsigned long long)hg->count);
}

/* name{label="value"} v, or name v without a label */
static void put_sample(nh_strbuf_t *b, const char *name, const char *label, const char *value,
                       uint64_t v) {
    put_str(b, name);
    if (label) {
        put_str(b, "{");
        put_str(b, label);
        put_str(b, "=\"");
        put_str(b, value);
        put_str(b, "\"}");
    }
    put_str(b, " ");
    put_u64(b, v);
    put_str(b, "\n");
}

static void render_core(const nh_metrics_t *m, const nh_metrics_gauges_t *g, nh_strbuf_t *b) {
    head(b, "nano_up", "gauge", "1 while serving, 0 while shutting down (as /healthz).");
    nh_strbuf_printf(b, "nano_up %d\n", g->shutting_down ? 0 : 1);

    head(b, "nano_sessions", "gauge", "Sessions past the handshake, by transport.");
    for (int t = 0; t < NH_MT_COUNT; t++)
        put_sample(b, "nano_sessions", "transport", transport_names[t], g->sessions[t]);
    head(b, "nano_connections", "gauge",
         "Open client connections (including ones not through the handshake and HTTP requests).");
    put_sample(b, "nano_connections", NULL, NULL, g->connections);

    head(b, "nano_connections_accepted_total", "counter", "Connections accepted, by transport.");
    for (int t = 0; t < NH_MT_COUNT; t++)
        put_sample(b, "nano_connections_accepted_total", "transport", transport_names[t],
                   m->accepted[t]);
    head(b, "nano_connections_closed_total", "counter", "Connections closed, by reason.");
    for (int r = NH_CLOSE_UNSET + 1; r < NH_CLOSE_COUNT; r++)
        put_sample(b, "nano_connections_closed_total", "reason", close_names[r], m->closed[r]);

    head(b, "nano_messages_total", "counter",
         "Protocol messages, by direction (in: from clients) and type.");
    for (int d = 0; d < NH_MD_COUNT; d++)
        for (int t = 0; t < 4; t++) {
            if ((d == NH_MD_IN) != (t < 2)) continue; /* clients send requests and notifies */
            nh_strbuf_printf(b, "nano_messages_total{direction=\"%s\",type=\"%s\"} %llu\n",
                             dir_names[d], msg_names[t], (unsigned long long)m->messages[d][t]);
        }
    head(b, "nano_bytes_total", "counter",
         "Bytes read from and queued to client sockets (framing included), by direction.");
    for (int d = 0; d < NH_MD_COUNT; d++)
        put_sample(b, "nano_bytes_total", "direction", dir_names[d], m->bytes[d]);
    head(b, "nano_send_buffer_overflows_total", "counter",
         "Connections cut off because their output queue passed send_limit.");
    put_sample(b, "nano_send_buffer_overflows_total", NULL, NULL, m->send_overflows);
    head(b, "nano_heartbeats_total", "counter", "Heartbeat packets, by direction.");
    for (int d = 0; d < NH_MD_COUNT; d++)
        put_sample(b, "nano_heartbeats_total", "direction", dir_names[d], m->heartbeats[d]);

    head(b, "nano_requests_total", "counter",
         "Requests handled, by route (registered routes; any other is \"unknown\") and outcome "
         "(ok, the error response's code, error when it had none, or other).");
    for (uint32_t r = 0; r < m->nroutes; r++) {
        const nh_metrics_route_t *rt = &m->routes[r];
        put_str(b, "nano_requests_total{route=\"");
        put_escaped(b, rt->name, 1);
        put_str(b, "\",outcome=\"ok\"} ");
        put_u64(b, rt->ok);
        put_str(b, "\n");
        for (int i = 0; i < rt->ncodes; i++) {
            nh_strbuf_printf(b, "nano_requests_total{route=\"");
            put_escaped(b, rt->name, 1);
            if (rt->codes[i].code < 0)
                nh_strbuf_printf(b, "\",outcome=\"error\"} %llu\n",
                                 (unsigned long long)rt->codes[i].n);
            else
                nh_strbuf_printf(b, "\",outcome=\"%d\"} %llu\n", rt->codes[i].code,
                                 (unsigned long long)rt->codes[i].n);
        }
        if (rt->other_errors) {
            nh_strbuf_printf(b, "nano_requests_total{route=\"");
            put_escaped(b, rt->name, 1);
            nh_strbuf_printf(b, "\",outcome=\"other\"} %llu\n",
                             (unsigned long long)rt->other_errors);
        }
    }
    head(b, "nano_request_duration_seconds", "histogram",
         "Time in the dispatcher and handler (its first slice when it waits), by route.");
    for (uint32_t r = 0; r < m->nroutes; r++) {
        nh_strbuf_t lb = {0};
        put_str(&lb, "route=\"");
        put_escaped(&lb, m->routes[r].name, 1);
        put_str(&lb, "\"");
        if (lb.failed) {
            b->failed = 1;
        } else {
            put_histogram(b, "nano_request_duration_seconds", lb.data, &m->routes[r].latency);
        }
        nh_strbuf_free(&lb);
    }

    head(b, "nano_lua_memory_bytes", "gauge", "Memory in use by the Lua heap.");
    nh_strbuf_printf(b, "nano_lua_memory_bytes ");
    put_double(b, g->lua_bytes);
    nh_strbuf_printf(b, "\n");
    head(b, "nano_loop_lag_seconds", "histogram",
         "How late a 100 ms loop timer fires: time the loop spent on other work.");
    put_histogram(b, "nano_loop_lag_seconds", "", &m->loop_lag);
    head(b, "nano_reloads_total", "counter", "Hot reloads, by result.");
    nh_strbuf_printf(b, "nano_reloads_total{result=\"ok\"} %llu\n",
                     (unsigned long long)m->reloads_ok);
    nh_strbuf_printf(b, "nano_reloads_total{result=\"error\"} %llu\n",
                     (unsigned long long)m->reloads_failed);
    head(b, "nano_reload_duration_seconds", "histogram", "How long hot reloads took.");
    put_histogram(b, "nano_reload_duration_seconds", "", &m->reload_seconds);
    head(b, "nano_watchdog_aborts_total", "counter",
         "Lua calls aborted by the watchdog (endless loops).");
    nh_strbuf_printf(b, "nano_watchdog_aborts_total %llu\n",
                     (unsigned long long)g->watchdog_aborts);
    head(b, "nano_watchdog_stalls_total", "counter",
         "Lua calls the watchdog reported as running too long.");
    nh_strbuf_printf(b, "nano_watchdog_stalls_total %llu\n",
                     (unsigned long long)g->watchdog_stalls);
}

static void render_family(const nh_metrics_family_t *f, nh_strbuf_t *b) {
    static const char *const kinds[] = {"counter", "gauge", "histogram"};
    head(b, f->name, kinds[f->kind], f->help);
    for (int i = 0; i < f->nseries; i++) {
        const struct series *s = &f->series[i];
        nh_strbuf_t lb = {0};
        nh_strbuf_printf(&lb, "%s", "");
        for (int k = 0; k < f->nlabels; k++) {
            nh_strbuf_printf(&lb, "%s%s=\"", k ? "," : "", f->labels[k]);
            put_escaped(&lb, s->values[k], 1);
            nh_strbuf_printf(&lb, "\"");
        }
        if (lb.failed) {
            b->failed = 1;
        } else if (f->kind == NH_KIND_HISTOGRAM) {
            put_histogram(b, f->name, lb.data, &s->hg);
        } else {
            nh_strbuf_printf(b, "%s%s%s%s ", f->name, lb.len ? "{" : "", lb.data,
                             lb.len ? "}" : "");
            put_double(b, s->v);
            nh_strbuf_printf(b, "\n");
        }
        nh_strbuf_free(&lb);
    }
}

void nh_metrics_render(const nh_metrics_t *m, const nh_metrics_gauges_t *g, nh_strbuf_t *out) {
    render_core(m, g, out);
    for (const nh_metrics_family_t *f = m->families; f; f = f->next)
        render_family(f, out);
}
