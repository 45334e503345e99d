/* loadgen — the benchmark client: N pomelo connections over raw TCP or WebSocket from one libuv
 * process, bounded in time and count, loopback only.
 *
 * Modes:
 *   pingpong  closed loop: each connection sends a request, waits for its response, sends the next
 *             (with --rate R: no sooner than one interval after its previous one, R/s in all)
 *   push      closed loop of notify + push: a notify whose handler pushes the payload back
 *   idle      handshake and hold (for memory); prints "ready N" once every connection is up
 *   bcast     every connection joins one group (request), then connection 0 asks for broadcasts
 *             (request) with a window of W in flight; a broadcast is complete when every member
 *             has received it; pushes delivered per second is the figure
 *
 * --paired 1 (pingpong, push, bcast): the run is measured in segments another process switches
 * on and off, SIGUSR1 to start one and SIGUSR2 to end it: between segments nothing is sent, and a
 * segment ends once its last answer is in (a line "segment N ended" then says so, with the
 * segment's own answers, seconds and server CPU: a pair of turns compared by itself). The figures
 * are the segments' only (their time, answers, latencies, server CPU), and SIGTERM ends the run.
 * scripts/bench runs two servers so, one load generator each, taking turns of a second or less:
 * this machine's speed swings over tens of seconds, and the turns put both under the same swings.
 *
 * --tls: every connection runs TLS (core/tls.c as a client, certificate not verified) under
 * either transport, so the same figures can be read over TLS.
 *
 * Every response is checked (id and payload equal to what was sent; a push's route and sequence).
 * Server heartbeats are answered one interval late, as pomelo's clients do, never at once.
 * The result is one line of key=value pairs on stdout, starting with "result".
 */
#include <dirent.h>
#include <errno.h>
#include <inttypes.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <unistd.h>
#include <uv.h>

#include "tls.h"

enum { M_PINGPONG, M_PUSH, M_IDLE, M_BCAST };
enum { S_CONNECTING, S_HTTP, S_HANDSHAKE, S_JOIN, S_WORKING, S_CLOSED };
enum { P_CONNECT, P_WARMUP, P_RUN, P_DRAIN, P_DONE };

#define MAX_LAT_US 2000000u /* latencies over 2 s land in the last bucket (max is exact) */
#define BCAST_RING 64

typedef struct conn conn_t;

typedef struct opts {
    const char *host;
    int port;
    const char *ws_path; /* NULL: raw TCP */
    int conns;
    double warmup, duration, drain;
    int mode;
    const char *route;      /* request / notify route */
    const char *push_route; /* push mode: the route pushed back */
    const char *join_route, *bcast_route;
    int window;          /* bcast: broadcasts in flight */
    int connect_batch;   /* connects in flight at once */
    double connect_secs; /* give up connecting after this */
    double rate;         /* pingpong/push: requests per second over all connections; 0: no pacing */
    int protobuf;        /* payloads are protobuf { uint32 n = 1 } instead of JSON {"n":N} */
} opts_t;

struct conn {
    uv_tcp_t tcp;
    uv_connect_t creq;
    int idx;
    int state;
    uint8_t *pend; /* unparsed bytes (transport level) */
    size_t pend_len, pend_cap;
    uint8_t *pkt; /* ws: unparsed packet-stream bytes from frame payloads */
    size_t pkt_len, pkt_cap;
    uint32_t next_id, want_id;
    int outstanding;
    uint64_t sent_ns;
    char payload[48];
    size_t payload_len;
    uint64_t hb_due_ns; /* 0: no heartbeat owed */
    uint64_t hb_interval_ns;
    uint64_t bcast_next; /* next broadcast sequence this member expects */
    uint32_t mask;
    nh_tls_t *tls;   /* --tls */
    int proto_begun; /* --tls: the HTTP upgrade or handshake was sent (after the TLS handshake) */
    uint64_t next_ns; /* --rate: the earliest time of this connection's next request */
    int waiting;      /* --rate: the answer came before next_ns; the pacer sends */
};

typedef struct stats {
    uint64_t responses, pushes, errors, closed, sent;
    uint32_t *hist; /* 1 us buckets */
    uint64_t max_us;
} stats_t;

static opts_t O;
static uv_loop_t *loop;
static conn_t *conns;
static int phase = P_CONNECT;
static int started, finished_connect, handshaken, connect_failed, live;
static uint64_t t_phase_ns, t_run_start, t_run_end;
static stats_t st;
static uv_timer_t tick, pacer;
static uint64_t pace_ns; /* --rate: the interval between two requests of one connection */
static uv_signal_t sigint_h, sigterm_h;
static uint8_t readbuf[65536];
static uint64_t bcast_sent, bcast_done;
static uint32_t bcast_count[BCAST_RING];
static char first_error[160];
static int server_pid; /* --server-pid: its CPU time over the run and its RSS are measured */
static double srv_cpu0, srv_cpu1, own_cpu0, own_cpu1;
static int srv_cpu_ticks; /* proc_cpu's source for the server: 1, clock ticks */
static long rss0_kb, rss_up_kb;
static double hup_at = -1; /* --hup-at: SIGHUP to the server this many seconds into the run */
static int hup_sent;
static nh_tls_ctx_t *tls_ctx; /* --tls */
static int passive; /* --passive: bcast members only; another load generator drives */
static int any_reply; /* --any-reply: pingpong's answers need not echo the request's payload */
static int paired;    /* --paired: measured in segments (SIGUSR1 starts one, SIGUSR2 ends it) */
static int paused;    /* --paired: no request is sent; a segment still open ends when drained */
static int seg_open, resume_owed, segments;
static uint64_t seg_t0, seg_ns; /* the open segment's start; the closed segments' time in all */
static uint64_t seg_count0;     /* answers (pushes in bcast) when the open segment started */
static double seg_srv0, seg_own0, seg_srv, seg_own; /* the same for the server's and own CPU */
static uv_signal_t sigusr1_h, sigusr2_h;

/* utime + stime of a process, in seconds (from /proc/PID/stat: clock ticks), or -1 */
static double proc_cpu_ticks(int pid) {
    char path[64], buf[1024];
    snprintf(path, sizeof path, "/proc/%d/stat", pid);
    FILE *f = fopen(path, "r");
    if (!f) return -1;
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    fclose(f);
    buf[n] = 0;
    char *p = strrchr(buf, ')');
    if (!p) return -1;
    unsigned long ut = 0, stt = 0;
    /* after ")": state(3) ppid pgrp session tty tpgid flags minflt cminflt majflt cmajflt
     * utime(14) stime(15) */
    if (sscanf(p + 2, "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %lu %lu", &ut, &stt) != 2)
        return -1;
    return (double)(ut + stt) / (double)sysconf(_SC_CLK_TCK);
}

/* A process's CPU time in seconds: the sum of its threads' time on a CPU from their schedstat
 * (nanoseconds), or, where the kernel has no schedstat, utime + stime (clock ticks: 10 ms, which
 * is 3 % of a server's CPU over a 4 s window at 5,000 requests/s). *ticks becomes 1 when it fell
 * back, and the caller passes it again for the window's other end, so that both ends are read
 * alike. -1 when the process is gone. Threads that ended within the window are not counted: the
 * servers' threads live as long as they do. */
static double proc_cpu(int pid, int *ticks) {
    if (*ticks) return proc_cpu_ticks(pid); /* the window's start was read so: its end too */
    char path[64];
    snprintf(path, sizeof path, "/proc/%d/task", pid);
    DIR *d = opendir(path);
    if (!d) return -1;
    unsigned long long sum = 0;
    int threads = 0, ok = 1;
    struct dirent *e;
    while ((e = readdir(d)) && ok) {
        if (e->d_name[0] < '0' || e->d_name[0] > '9') continue;
        char tpath[300];
        snprintf(tpath, sizeof tpath, "/proc/%d/task/%s/schedstat", pid, e->d_name);
        FILE *f = fopen(tpath, "r");
        if (!f) {
            if (errno != ENOENT && errno != ESRCH) ok = 0; /* no schedstat: ticks for all */
            continue;                                      /* else the thread just ended */
        }
        unsigned long long ns;
        if (fscanf(f, "%llu", &ns) == 1) {
            sum += ns;
            threads++;
        } else {
            ok = 0;
        }
        fclose(f);
    }
    closedir(d);
    if (!ok || !threads) {
        *ticks = 1;
        return proc_cpu_ticks(pid);
    }
    return (double)sum / 1e9;
}

static long proc_rss_kb(int pid) {
    char path[64], line[256];
    snprintf(path, sizeof path, "/proc/%d/status", pid);
    FILE *f = fopen(path, "r");
    if (!f) return -1;
    long kb = -1;
    while (fgets(line, sizeof line, f))
        if (sscanf(line, "VmRSS: %ld", &kb) == 1) break;
    fclose(f);
    return kb;
}

static double own_cpu(void) {
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return (double)ru.ru_utime.tv_sec + (double)ru.ru_utime.tv_usec / 1e6 +
           (double)ru.ru_stime.tv_sec + (double)ru.ru_stime.tv_usec / 1e6;
}

static void error_note(conn_t *c, const char *why) {
    st.errors++;
    if (!first_error[0])
        snprintf(first_error, sizeof first_error, "conn %d: %s", c ? c->idx : -1, why);
}

/* ---- writing ---- */

typedef struct wreq {
    uv_write_t req;
    size_t len;
    uint8_t data[];
} wreq_t;

static void on_written(uv_write_t *req, int status) {
    (void)status;
    free(req);
}

static void send_wire(conn_t *c, const uint8_t *data, size_t len);

/* Sends what the TLS layer has for the server. */
static void send_tls_output(conn_t *c) {
    uint8_t buf[16384];
    size_t n;
    while ((n = nh_tls_out_take(c->tls, buf, sizeof buf)) > 0)
        send_wire(c, buf, n);
}

static void send_bytes(conn_t *c, const uint8_t *data, size_t len) {
    if (c->state == S_CLOSED) return;
    if (c->tls) {
        if (nh_tls_write(c->tls, data, len) < 0) return; /* the read side reports the close */
        send_tls_output(c);
        return;
    }
    send_wire(c, data, len);
}

static void send_wire(conn_t *c, const uint8_t *data, size_t len) {
    uv_buf_t b = uv_buf_init((char *)data, (unsigned)len);
    int r = uv_try_write((uv_stream_t *)&c->tcp, &b, 1);
    if (r == (int)len) return;
    if (r < 0 && r != UV_EAGAIN) return; /* the read side reports the close */
    size_t done = r > 0 ? (size_t)r : 0;
    wreq_t *w = malloc(sizeof *w + len - done);
    if (!w) abort();
    w->len = len - done;
    memcpy(w->data, data + done, len - done);
    b = uv_buf_init((char *)w->data, (unsigned)w->len);
    if (uv_write(&w->req, (uv_stream_t *)&c->tcp, &b, 1, on_written) != 0) free(w);
}

/* Sends one packet, framed for the transport (a masked binary frame over WebSocket). */
static void send_packet(conn_t *c, int type, const uint8_t *body, size_t len) {
    uint8_t buf[512];
    size_t n = 0, plen = 4 + len;
    if (plen + 14 > sizeof buf) abort();
    if (O.ws_path) {
        buf[n++] = 0x82;
        if (plen < 126) {
            buf[n++] = (uint8_t)(0x80 | plen);
        } else {
            buf[n++] = 0x80 | 126;
            buf[n++] = (uint8_t)(plen >> 8);
            buf[n++] = (uint8_t)plen;
        }
        memcpy(buf + n, &c->mask, 4);
        n += 4;
    }
    size_t start = n;
    buf[n++] = (uint8_t)type;
    buf[n++] = (uint8_t)(len >> 16);
    buf[n++] = (uint8_t)(len >> 8);
    buf[n++] = (uint8_t)len;
    if (len) memcpy(buf + n, body, len);
    n += len;
    if (O.ws_path) {
        const uint8_t *m = (const uint8_t *)&c->mask;
        for (size_t i = start; i < n; i++)
            buf[i] ^= m[(i - start) & 3];
    }
    send_bytes(c, buf, n);
}

static size_t put_varint(uint8_t *out, uint64_t v) {
    size_t n = 0;
    do {
        uint8_t b = v & 0x7F;
        v >>= 7;
        out[n++] = (uint8_t)(b | (v ? 0x80 : 0));
    } while (v);
    return n;
}

/* type 0 request (with id) or 1 notify; string route */
static void send_msg(conn_t *c, int mtype, uint32_t id, const char *route, const char *payload,
                     size_t plen) {
    uint8_t body[400];
    size_t n = 0, rl = strlen(route);
    body[n++] = (uint8_t)(mtype << 1);
    if (mtype == 0) n += put_varint(body + n, id);
    body[n++] = (uint8_t)rl;
    memcpy(body + n, route, rl);
    n += rl;
    memcpy(body + n, payload, plen);
    n += plen;
    send_packet(c, 4, body, n);
}

/* A request's payload: {"n":N} as JSON, or with --payload protobuf the protobuf message
 * { uint32 n = 1 } (field 1, varint; the bench server's Ping). */
static size_t make_payload(char *out, size_t cap, uint32_t n) {
    if (!O.protobuf) return (size_t)snprintf(out, cap, "{\"n\":%u}", n);
    size_t i = 0;
    out[i++] = 0x08;
    do {
        uint8_t b = n & 0x7f;
        n >>= 7;
        out[i++] = (char)(n ? b | 0x80 : b);
    } while (n);
    return i;
}

static void send_next(conn_t *c) {
    if (c->state != S_WORKING || c->outstanding || paused) return;
    if (phase != P_WARMUP && phase != P_RUN) return;
    if (pace_ns) {
        /* Paced: one request per interval per connection, never two at once; a connection whose
         * answer came late sends at once (the closed loop again, when the server can't keep up). */
        uint64_t now = uv_hrtime();
        if (now < c->next_ns) {
            c->waiting = 1;
            return;
        }
        c->waiting = 0;
        c->next_ns = c->next_ns + pace_ns > now ? c->next_ns + pace_ns : now;
    }
    if (O.mode == M_PINGPONG) {
        c->want_id = ++c->next_id;
        c->payload_len = make_payload(c->payload, sizeof c->payload, c->want_id);
        c->outstanding = 1;
        c->sent_ns = uv_hrtime();
        send_msg(c, 0, c->want_id, O.route, c->payload, c->payload_len);
        st.sent++;
    } else if (O.mode == M_PUSH) {
        ++c->next_id;
        c->payload_len = make_payload(c->payload, sizeof c->payload, c->next_id);
        c->outstanding = 1;
        c->sent_ns = uv_hrtime();
        send_msg(c, 1, 0, O.route, c->payload, c->payload_len);
        st.sent++;
    }
}

/* bcast: connection 0 keeps `window` broadcasts in flight */
static void bcast_pump(void) {
    if (passive || paused) return;
    conn_t *c = &conns[0];
    if (c->state != S_WORKING) return;
    if (phase != P_WARMUP && phase != P_RUN) return;
    while (bcast_sent - bcast_done < (uint64_t)O.window) {
        uint64_t seq = ++bcast_sent;
        bcast_count[seq % BCAST_RING] = 0;
        char p[48];
        int n = snprintf(p, sizeof p, "{\"seq\":%" PRIu64 "}", seq);
        c->want_id = ++c->next_id; /* responses to broadcast requests are only counted */
        send_msg(c, 0, c->want_id, O.bcast_route, p, (size_t)n);
        st.sent++;
    }
}

/* ---- closing ---- */

static void on_closed(uv_handle_t *h) {
    conn_t *c = (conn_t *)h;
    nh_tls_free(c->tls);
    c->tls = NULL;
    free(c->pend);
    free(c->pkt);
    c->pend = c->pkt = NULL;
}

static void check_all_handshaken(void);

static void conn_close(conn_t *c, const char *why) {
    if (c->state == S_CLOSED) return;
    int working = c->state == S_WORKING, in_group = working || c->state == S_JOIN;
    if (phase != P_DONE && why) {
        if (working && phase != P_DRAIN) {
            st.closed++;
            error_note(c, why);
        } else if (!working) {
            connect_failed++;
            if (!first_error[0]) snprintf(first_error, sizeof first_error, "connect: %s", why);
        }
    }
    if (!working) finished_connect++;
    if (in_group) live--;
    c->state = S_CLOSED;
    if (!uv_is_closing((uv_handle_t *)&c->tcp)) uv_close((uv_handle_t *)&c->tcp, on_closed);
    check_all_handshaken();
}

/* ---- receiving ---- */

static void lat_record(uint64_t ns) {
    uint64_t us = ns / 1000;
    if (us > st.max_us) st.max_us = us;
    st.hist[us < MAX_LAT_US ? us : MAX_LAT_US - 1]++;
}

static void start_connects(void);

static void on_handshake(conn_t *c, const uint8_t *body, size_t len) {
    char js[512];
    size_t n = len < sizeof js - 1 ? len : sizeof js - 1;
    memcpy(js, body, n);
    js[n] = 0;
    if (!strstr(js, "\"code\":200")) {
        conn_close(c, "handshake refused");
        return;
    }
    const char *hb = strstr(js, "\"heartbeat\":");
    double secs = hb ? strtod(hb + 12, NULL) : 0;
    c->hb_interval_ns = (uint64_t)(secs * 1e9);
    send_packet(c, 2, NULL, 0);
    if (O.mode == M_BCAST) {
        c->state = S_JOIN;
        live++;
        c->want_id = ++c->next_id;
        send_msg(c, 0, c->want_id, O.join_route, "{}", 2);
        return;
    }
    c->state = S_WORKING;
    live++;
    handshaken++;
    finished_connect++;
    check_all_handshaken();
}

static int payload_seq(const uint8_t *p, size_t len, uint64_t *seq) {
    char s[64];
    if (len >= sizeof s) return -1;
    memcpy(s, p, len);
    s[len] = 0;
    const char *k = strstr(s, "\"seq\":");
    if (!k) return -1;
    *seq = strtoull(k + 6, NULL, 10);
    return 0;
}

static int outstanding(void);

/* --paired: answers count inside a segment (also those that drain it), never between two */
static int counting(void) { return phase == P_RUN && (!paired || seg_open); }

/* --paired: ends the open segment once its last answer is in; a start asked for meanwhile
 * follows. */
static void segment_begin(void);
/* what the run counts: answers, or in bcast the pushes delivered (the result's count) */
static uint64_t answers(void) { return O.mode == M_BCAST ? st.pushes : st.responses; }
static void segment_close(uint64_t now, double own, double srv) {
    seg_ns += now - seg_t0;
    seg_own += own - seg_own0;
    if (server_pid) seg_srv += srv - seg_srv0;
    seg_open = 0;
    segments++;
}
static void segment_end(void) {
    if (outstanding()) return;
    if (seg_open) {
        uint64_t now = uv_hrtime();
        double srv = server_pid ? proc_cpu(server_pid, &srv_cpu_ticks) : 0;
        segment_close(now, own_cpu(), srv);
        /* for the caller, before it starts another; the segment's own figures with it (the
         * turns' per-pair ratios, scripts/bench): segment_close leaves the segment's start */
        printf("segment %d ended count=%" PRIu64 " secs=%.4f srv_cpu=%.6f\n", segments,
               answers() - seg_count0, (double)(now - seg_t0) / 1e9,
               server_pid ? srv - seg_srv0 : 0.0);
        fflush(stdout);
    }
    if (resume_owed) segment_begin();
}

static void segment_begin(void) {
    if (phase != P_RUN || !paused) return;
    if (seg_open || outstanding()) { /* the last segment (or the warm-up) still draining */
        resume_owed = 1;
        return;
    }
    resume_owed = paused = 0;
    seg_open = 1;
    seg_t0 = uv_hrtime();
    seg_count0 = answers();
    seg_own0 = own_cpu();
    if (server_pid) seg_srv0 = proc_cpu(server_pid, &srv_cpu_ticks);
    if (O.mode == M_BCAST) bcast_pump();
    for (int i = 0; i < O.conns && O.mode != M_BCAST; i++) {
        if (pace_ns) /* paced: the first requests spread over one interval again, no burst */
            conns[i].next_ns = seg_t0 + pace_ns * (uint64_t)i / (uint64_t)O.conns;
        send_next(&conns[i]);
    }
}

static void on_data(conn_t *c, const uint8_t *b, size_t len) {
    if (len < 1) {
        error_note(c, "empty message");
        return;
    }
    int type = (b[0] >> 1) & 7;
    size_t i = 1;
    uint64_t now = uv_hrtime();
    if (type == 2) { /* response */
        uint64_t id = 0;
        int shift = 0;
        while (i < len) {
            uint8_t x = b[i++];
            id |= (uint64_t)(x & 0x7F) << shift;
            shift += 7;
            if (!(x & 0x80)) break;
        }
        if (b[0] & 0x20) {
            error_note(c, "error response");
            return;
        }
        if (c->state == S_JOIN) {
            if (id != c->want_id) error_note(c, "join response id");
            c->state = S_WORKING;
            c->bcast_next = passive ? 0 : bcast_sent + 1; /* passive: from the first one seen */
            handshaken++;
            finished_connect++;
            check_all_handshaken();
            return;
        }
        if (O.mode == M_BCAST) {
            if (counting()) st.responses++;
            return;
        }
        if (!c->outstanding || id != c->want_id) {
            error_note(c, "unexpected response id");
            return;
        }
        if (!any_reply &&
            (len - i != c->payload_len || memcmp(b + i, c->payload, c->payload_len) != 0)) {
            error_note(c, "response payload differs from the request");
        }
        c->outstanding = 0;
        if (counting()) { /* answers during the drain are waited for, not counted */
            st.responses++;
            lat_record(now - c->sent_ns);
        }
        send_next(c);
        if (paused) segment_end();
        return;
    }
    if (type != 3) {
        error_note(c, "server sent a request or notify");
        return;
    }
    /* push: route then payload */
    const char *route;
    size_t rl;
    char code[8];
    if (b[0] & 1) {
        if (len < i + 2) return error_note(c, "truncated route");
        rl = (size_t)snprintf(code, sizeof code, "#%u", (unsigned)(b[i] << 8 | b[i + 1]));
        route = code;
        i += 2;
    } else {
        if (len < i + 1 || len < i + 1 + b[i]) return error_note(c, "truncated route");
        rl = b[i];
        route = (const char *)b + i + 1;
        i += 1 + rl;
    }
    if (O.mode == M_PUSH) {
        if (rl != strlen(O.push_route) || memcmp(route, O.push_route, rl) != 0)
            return error_note(c, "push on an unexpected route");
        if (!c->outstanding) return error_note(c, "push without a notify");
        if (len - i != c->payload_len || memcmp(b + i, c->payload, c->payload_len) != 0)
            error_note(c, "push payload differs from the notify");
        c->outstanding = 0;
        if (counting()) { /* answers during the drain are waited for, not counted */
            st.responses++;
            lat_record(now - c->sent_ns);
        }
        send_next(c);
        if (paused) segment_end();
        return;
    }
    if (O.mode == M_BCAST) {
        uint64_t seq;
        if (payload_seq(b + i, len - i, &seq) != 0) return error_note(c, "broadcast payload");
        if (c->bcast_next == 0) c->bcast_next = seq;
        if (seq != c->bcast_next) {
            char why[80];
            snprintf(why, sizeof why, "broadcast %" PRIu64 " where %" PRIu64 " was due", seq,
                     c->bcast_next);
            error_note(c, why);
        }
        c->bcast_next = seq + 1;
        if (counting()) st.pushes++;
        if (++bcast_count[seq % BCAST_RING] == (uint32_t)live) {
            while (bcast_done < bcast_sent &&
                   bcast_count[(bcast_done + 1) % BCAST_RING] >= (uint32_t)live)
                bcast_done++;
            bcast_pump();
            if (paused) segment_end();
        }
        return;
    }
    error_note(c, "unexpected push");
}

/* Parses packets from buf; returns bytes consumed, or -1 after closing the connection. */
static long parse_packets(conn_t *c, const uint8_t *buf, size_t len) {
    size_t off = 0;
    while (len - off >= 4) {
        const uint8_t *p = buf + off;
        size_t blen = (size_t)p[1] << 16 | (size_t)p[2] << 8 | p[3];
        if (len - off < 4 + blen) break;
        const uint8_t *body = p + 4;
        switch (p[0]) {
        case 1:
            if (c->state != S_HANDSHAKE) {
                conn_close(c, "second handshake");
                return -1;
            }
            on_handshake(c, body, blen);
            break;
        case 3:
            if (c->hb_interval_ns && !c->hb_due_ns) c->hb_due_ns = uv_hrtime() + c->hb_interval_ns;
            break;
        case 4:
            on_data(c, body, blen);
            break;
        case 5:
            conn_close(c, "kicked");
            return -1;
        default:
            conn_close(c, "bad packet type");
            return -1;
        }
        if (c->state == S_CLOSED) return -1;
        off += 4 + blen;
    }
    return (long)off;
}

static int append(uint8_t **buf, size_t *len, size_t *cap, const uint8_t *data, size_t n) {
    if (*len + n > *cap) {
        size_t nc = *cap ? *cap * 2 : 1024;
        while (nc < *len + n)
            nc *= 2;
        uint8_t *b = realloc(*buf, nc);
        if (!b) return -1;
        *buf = b;
        *cap = nc;
    }
    memcpy(*buf + *len, data, n);
    *len += n;
    return 0;
}

/* Packet-stream bytes: parsed straight from `data` when nothing is pending. */
static int feed_stream(conn_t *c, uint8_t **pbuf, size_t *plen, size_t *pcap, const uint8_t *data,
                       size_t n, long (*parse)(conn_t *, const uint8_t *, size_t)) {
    if (*plen == 0) {
        long used = parse(c, data, n);
        if (used < 0) return -1;
        if ((size_t)used < n) append(pbuf, plen, pcap, data + used, n - (size_t)used);
        return 0;
    }
    append(pbuf, plen, pcap, data, n);
    long used = parse(c, *pbuf, *plen);
    if (used < 0) return -1;
    memmove(*pbuf, *pbuf + used, *plen - (size_t)used);
    *plen -= (size_t)used;
    return 0;
}

static long parse_frames(conn_t *c, const uint8_t *buf, size_t len) {
    size_t off = 0;
    while (len - off >= 2) {
        const uint8_t *p = buf + off;
        int op = p[0] & 0x0F;
        if (p[1] & 0x80) {
            conn_close(c, "masked server frame");
            return -1;
        }
        size_t plen = p[1] & 0x7F, h = 2;
        if (plen == 126) {
            if (len - off < 4) break;
            plen = (size_t)p[2] << 8 | p[3];
            h = 4;
        } else if (plen == 127) {
            if (len - off < 10) break;
            plen = 0;
            for (int k = 0; k < 8; k++)
                plen = plen << 8 | p[2 + k];
            h = 10;
        }
        if (len - off < h + plen) break;
        if (op == 2 || op == 0) {
            if (feed_stream(c, &c->pkt, &c->pkt_len, &c->pkt_cap, p + h, plen, parse_packets) < 0)
                return -1;
        } else if (op == 8) {
            conn_close(c, "websocket close from the server");
            return -1;
        } else if (op != 9 && op != 10) {
            conn_close(c, "unexpected websocket opcode");
            return -1;
        }
        off += h + plen;
    }
    return (long)off;
}

static const char ws_key[] = "dGhlIHNhbXBsZSBub25jZQ==";
static const char ws_accept[] = "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="; /* RFC 6455's example pair */

static long parse_http(conn_t *c, const uint8_t *buf, size_t len) {
    const uint8_t *end = NULL;
    for (size_t i = 0; i + 3 < len; i++)
        if (buf[i] == '\r' && buf[i + 1] == '\n' && buf[i + 2] == '\r' && buf[i + 3] == '\n') {
            end = buf + i + 4;
            break;
        }
    if (!end) return 0;
    size_t hl = (size_t)(end - buf);
    char head[1024];
    size_t n = hl < sizeof head - 1 ? hl : sizeof head - 1;
    memcpy(head, buf, n);
    head[n] = 0;
    if (strncmp(head, "HTTP/1.1 101", 12) != 0 || !strstr(head, ws_accept)) {
        conn_close(c, "websocket upgrade refused");
        return -1;
    }
    c->state = S_HANDSHAKE;
    static const char hs[] = "{\"sys\":{\"type\":\"nh-loadgen\",\"version\":\"0.0.1\",\"rsa\":{}},"
                             "\"user\":{}}";
    send_packet(c, 1, (const uint8_t *)hs, sizeof hs - 1);
    if (hl < len) {
        long used = parse_frames(c, end, len - hl);
        if (used < 0) return -1;
        /* leftover partial frame bytes stay pending below */
        return (long)hl + used;
    }
    return (long)hl;
}

static long parse_transport(conn_t *c, const uint8_t *buf, size_t len) {
    if (c->state == S_HTTP) return parse_http(c, buf, len);
    return O.ws_path ? parse_frames(c, buf, len) : parse_packets(c, buf, len);
}

static void on_alloc(uv_handle_t *h, size_t sz, uv_buf_t *b) {
    (void)h, (void)sz;
    *b = uv_buf_init((char *)readbuf, sizeof readbuf);
}

static void begin_protocol(conn_t *c);

/* --tls: ciphertext in; the protocol starts once the TLS handshake is done; plaintext goes on to
 * the transport parser. */
static void tls_read(conn_t *c, const uint8_t *data, size_t len) {
    static uint8_t plain[65536];
    if (nh_tls_feed(c->tls, data, len) < 0) {
        conn_close(c, nh_tls_error(c->tls));
        return;
    }
    long n;
    while (c->state != S_CLOSED && (n = nh_tls_read(c->tls, plain, sizeof plain)) != 0) {
        if (n < 0) {
            conn_close(c, n == NH_TLS_CLOSED ? "server closed the connection" : nh_tls_error(c->tls));
            return;
        }
        feed_stream(c, &c->pend, &c->pend_len, &c->pend_cap, plain, (size_t)n, parse_transport);
    }
    if (c->state == S_CLOSED) return;
    if (!c->proto_begun && nh_tls_handshake_done(c->tls)) begin_protocol(c);
    send_tls_output(c);
}

static void on_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *b) {
    conn_t *c = (conn_t *)s;
    if (nread == 0) return;
    if (nread < 0) {
        conn_close(c, nread == UV_EOF ? "server closed the connection" : uv_strerror((int)nread));
        return;
    }
    if (c->tls) {
        tls_read(c, (const uint8_t *)b->base, (size_t)nread);
        return;
    }
    feed_stream(c, &c->pend, &c->pend_len, &c->pend_cap, (const uint8_t *)b->base, (size_t)nread,
                parse_transport);
}

/* ---- connecting ---- */

static void on_connect(uv_connect_t *req, int status) {
    conn_t *c = req->data;
    if (status < 0) {
        c->state = S_HANDSHAKE; /* counted as a failed connect */
        conn_close(c, uv_strerror(status));
        start_connects();
        return;
    }
    uv_tcp_nodelay(&c->tcp, 1);
    uv_read_start((uv_stream_t *)&c->tcp, on_alloc, on_read);
    if (tls_ctx) {
        c->tls = nh_tls_new(tls_ctx, NULL);
        if (!c->tls) abort();
        c->state = S_HANDSHAKE; /* a failed TLS handshake counts as a failed connect */
        send_tls_output(c);     /* the ClientHello */
        return;
    }
    begin_protocol(c);
}

/* The WebSocket upgrade or the pomelo handshake: right after connect, or after TLS's handshake. */
static void begin_protocol(conn_t *c) {
    c->proto_begun = 1;
    if (O.ws_path) {
        c->state = S_HTTP;
        char req_s[512];
        int n = snprintf(req_s, sizeof req_s,
                         "GET %s HTTP/1.1\r\nHost: %s:%d\r\nUpgrade: websocket\r\n"
                         "Connection: Upgrade\r\nSec-WebSocket-Key: %s\r\n"
                         "Sec-WebSocket-Version: 13\r\n\r\n",
                         O.ws_path, O.host, O.port, ws_key);
        send_bytes(c, (const uint8_t *)req_s, (size_t)n);
    } else {
        c->state = S_HANDSHAKE;
        static const char hs[] = "{\"sys\":{\"type\":\"nh-loadgen\",\"version\":\"0.0.1\","
                                 "\"rsa\":{}},\"user\":{}}";
        send_packet(c, 1, (const uint8_t *)hs, sizeof hs - 1);
    }
}

static void start_connects(void) {
    struct sockaddr_in sa;
    uv_ip4_addr(O.host, O.port, &sa);
    while (started < O.conns && started - finished_connect < O.connect_batch) {
        conn_t *c = &conns[started];
        c->idx = started++;
        c->state = S_CONNECTING;
        c->mask = 0x5a3c9e17u ^ (uint32_t)c->idx * 2654435761u;
        uv_tcp_init(loop, &c->tcp);
        c->creq.data = c;
        int r = uv_tcp_connect(&c->creq, &c->tcp, (const struct sockaddr *)&sa, on_connect);
        if (r) {
            c->state = S_HANDSHAKE;
            conn_close(c, uv_strerror(r));
        }
    }
}

/* ---- phases ---- */

static void on_pace(uv_timer_t *t) {
    (void)t;
    uint64_t now = uv_hrtime();
    for (int i = 0; i < O.conns; i++)
        if (conns[i].waiting && now >= conns[i].next_ns) send_next(&conns[i]);
}

static void set_phase(int p) {
    phase = p;
    t_phase_ns = uv_hrtime();
    if (p == P_WARMUP) {
        fprintf(stderr, "loadgen: %d connections up (%d failed); warming up\n", handshaken,
                connect_failed);
        if (O.mode == M_IDLE) {
            printf("ready %d\n", handshaken);
            fflush(stdout);
        }
        if (pace_ns) { /* spread the connections' first requests over one interval */
            for (int i = 0; i < O.conns; i++)
                conns[i].next_ns = t_phase_ns + pace_ns * (uint64_t)i / (uint64_t)O.conns;
            uv_timer_start(&pacer, on_pace, 1, 1);
        }
        for (int i = 0; i < O.conns; i++)
            send_next(&conns[i]);
        if (O.mode == M_BCAST) bcast_pump();
    } else if (p == P_RUN) {
        paused = paired; /* --paired: nothing is sent until the first segment starts */
        st.responses = st.pushes = 0;
        memset(st.hist, 0, MAX_LAT_US * sizeof *st.hist);
        st.max_us = 0;
        t_run_start = t_phase_ns;
        own_cpu0 = own_cpu();
        if (server_pid) {
            srv_cpu0 = proc_cpu(server_pid, &srv_cpu_ticks);
            rss_up_kb = proc_rss_kb(server_pid);
        }
    } else if (p == P_DRAIN) {
        t_run_end = t_phase_ns;
        own_cpu1 = own_cpu();
        if (server_pid) srv_cpu1 = proc_cpu(server_pid, &srv_cpu_ticks);
    }
}

static void check_all_handshaken(void) {
    if (phase == P_CONNECT && finished_connect >= O.conns) set_phase(P_WARMUP);
    if (phase == P_CONNECT) start_connects();
}

static int outstanding(void) {
    if (O.mode == M_BCAST) return passive ? 0 : bcast_done < bcast_sent;
    int n = 0;
    for (int i = 0; i < O.conns; i++)
        if (conns[i].state == S_WORKING && conns[i].outstanding) n++;
    return n;
}

static void finish(void);

static void on_tick(uv_timer_t *t) {
    (void)t;
    uint64_t now = uv_hrtime();
    double in_phase = (double)(now - t_phase_ns) / 1e9;
    for (int i = 0; i < started; i++) {
        conn_t *c = &conns[i];
        if (c->state != S_CLOSED && c->hb_due_ns && now >= c->hb_due_ns) {
            c->hb_due_ns = 0;
            send_packet(c, 3, NULL, 0);
        }
    }
    switch (phase) {
    case P_CONNECT:
        if (in_phase > O.connect_secs) {
            fprintf(stderr, "loadgen: only %d of %d connections up after %.0f s\n", handshaken,
                    O.conns, O.connect_secs);
            for (int i = 0; i < started; i++)
                if (conns[i].state < S_WORKING && conns[i].state != S_CLOSED)
                    conn_close(&conns[i], "connect timeout");
            connect_failed += O.conns - started;
            finished_connect += O.conns - started;
            started = O.conns;
            set_phase(P_WARMUP);
        }
        break;
    case P_WARMUP:
        if (in_phase >= O.warmup) set_phase(P_RUN);
        break;
    case P_RUN:
        if (hup_at >= 0 && !hup_sent && server_pid && in_phase >= hup_at) {
            hup_sent = 1;
            fprintf(stderr, "loadgen: SIGHUP to %d\n", server_pid);
            kill(server_pid, SIGHUP);
        }
        if (in_phase >= O.duration) set_phase(P_DRAIN);
        break;
    case P_DRAIN:
        if (outstanding() == 0 || in_phase >= O.drain) finish();
        break;
    }
    if (paused && phase == P_RUN) segment_end(); /* --paired: a connection closed meanwhile */
}

static uint64_t percentile(double q) {
    uint64_t total = 0;
    for (uint32_t i = 0; i < MAX_LAT_US; i++)
        total += st.hist[i];
    if (!total) return 0;
    uint64_t want = (uint64_t)((double)total * q), acc = 0;
    if (want >= total) want = total - 1;
    for (uint32_t i = 0; i < MAX_LAT_US; i++) {
        acc += st.hist[i];
        if (acc > want) return i;
    }
    return MAX_LAT_US;
}

static void close_walk(uv_handle_t *h, void *arg) {
    (void)arg;
    if (!uv_is_closing(h)) uv_close(h, NULL);
}

static void finish(void) {
    if (phase == P_DONE) return;
    int lost = outstanding();
    if (phase != P_DRAIN) {
        t_run_end = uv_hrtime();
        own_cpu1 = own_cpu();
        if (server_pid) srv_cpu1 = proc_cpu(server_pid, &srv_cpu_ticks);
    }
    phase = P_DONE;
    double secs = (double)(t_run_end - t_run_start) / 1e9;
    if (t_run_start == 0) secs = 0;
    if (paired) { /* the segments' figures only; one still open ends here */
        if (seg_open) segment_close(t_run_end, own_cpu1, srv_cpu1);
        secs = (double)seg_ns / 1e9;
        own_cpu0 = srv_cpu0 = 0;
        own_cpu1 = seg_own;
        srv_cpu1 = seg_srv;
    }
    static const char *const names[] = {"pingpong", "push", "idle", "bcast"};
    uint64_t count = answers();
    printf("result transport=%s mode=%s conns=%d up=%d connect_failed=%d secs=%.2f "
           "count=%" PRIu64 " rate=%.1f p50_us=%" PRIu64 " p99_us=%" PRIu64 " max_us=%" PRIu64
           " errors=%" PRIu64 " closed=%" PRIu64 " unanswered=%d bcasts=%" PRIu64
           " lg_cpu=%.4f srv_cpu=%.4f rss0_kb=%ld rss_up_kb=%ld segments=%d\n",
           O.ws_path ? (tls_ctx ? "wss" : "ws") : (tls_ctx ? "tls" : "tcp"), names[O.mode], O.conns, handshaken, connect_failed, secs,
           count, secs > 0 ? (double)count / secs : 0.0, percentile(0.50), percentile(0.99),
           st.max_us, st.errors, st.closed, lost, bcast_done, own_cpu1 - own_cpu0,
           server_pid ? srv_cpu1 - srv_cpu0 : 0.0, rss0_kb, rss_up_kb, segments);
    if (first_error[0]) printf("first_error %s\n", first_error);
    fflush(stdout);
    uv_walk(loop, close_walk, NULL);
}

static void on_signal(uv_signal_t *s, int signum) {
    (void)s;
    if (signum == SIGUSR1)
        segment_begin();
    else if (signum == SIGUSR2) {
        paused = 1;
        resume_owed = 0;
        segment_end();
    } else
        finish();
}

static void usage(void) {
    fprintf(stderr,
            "usage: loadgen --port P [--host 127.0.0.1] [--ws /path] [-c conns] [-w warmup_s]\n"
            "               [-d secs] [--drain secs] [--mode pingpong|push|idle|bcast]\n"
            "               [--route R] [--push-route R] [--join-route R] [--bcast-route R]\n"
            "               [--window W] [--connect-batch N] [--connect-timeout secs]\n"
            "               [--server-pid PID]   report its CPU time over the run and its RSS\n"
            "               [--hup-at secs]      SIGHUP the server that far into the run\n"
            "               [--rate R]           pace pingpong/push at R requests/s in all\n"
            "               [--tls 1]            TLS under the transport (not verified)\n"
            "               [--passive 1]        bcast: members only (another process drives)\n"
            "               [--paired 1]         pingpong/push/bcast: measured in segments, SIGUSR1\n"
            "                                    starts one, SIGUSR2 ends it, SIGTERM the run\n"
            "               [--any-reply 1]      pingpong: answers need not echo the payload\n"
            "               [--payload json|protobuf]  the payload's encoding (default json)\n");
    exit(2);
}

int main(int argc, char **argv) {
    O = (opts_t){.host = "127.0.0.1",
                 .conns = 100,
                 .warmup = 2,
                 .duration = 5,
                 .drain = 3,
                 .mode = M_PINGPONG,
                 .route = NULL,
                 .push_route = "onNote",
                 .join_route = "Bench.join",
                 .bcast_route = "Bench.bcast",
                 .window = 4,
                 .connect_batch = 256,
                 .connect_secs = 60};
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!v) usage();
        i++;
        if (!strcmp(a, "--host"))
            O.host = v;
        else if (!strcmp(a, "--port"))
            O.port = atoi(v);
        else if (!strcmp(a, "--ws"))
            O.ws_path = v;
        else if (!strcmp(a, "-c"))
            O.conns = atoi(v);
        else if (!strcmp(a, "-w"))
            O.warmup = atof(v);
        else if (!strcmp(a, "-d"))
            O.duration = atof(v);
        else if (!strcmp(a, "--drain"))
            O.drain = atof(v);
        else if (!strcmp(a, "--route"))
            O.route = v;
        else if (!strcmp(a, "--payload")) {
            if (strcmp(v, "json") && strcmp(v, "protobuf")) usage();
            O.protobuf = !strcmp(v, "protobuf");
        }
        else if (!strcmp(a, "--push-route"))
            O.push_route = v;
        else if (!strcmp(a, "--join-route"))
            O.join_route = v;
        else if (!strcmp(a, "--bcast-route"))
            O.bcast_route = v;
        else if (!strcmp(a, "--window"))
            O.window = atoi(v);
        else if (!strcmp(a, "--connect-batch"))
            O.connect_batch = atoi(v);
        else if (!strcmp(a, "--rate"))
            O.rate = atof(v);
        else if (!strcmp(a, "--hup-at"))
            hup_at = atof(v);
        else if (!strcmp(a, "--server-pid"))
            server_pid = atoi(v);
        else if (!strcmp(a, "--any-reply"))
            any_reply = atoi(v);
        else if (!strcmp(a, "--paired"))
            paired = atoi(v);
        else if (!strcmp(a, "--passive"))
            passive = atoi(v);
        else if (!strcmp(a, "--tls")) {
            char err[300];
            tls_ctx = atoi(v) ? nh_tls_ctx_client(NULL, 0, err, sizeof err) : NULL;
            if (atoi(v) && !tls_ctx) {
                fprintf(stderr, "loadgen: %s\n", err);
                return 2;
            }
        } else if (!strcmp(a, "--connect-timeout"))
            O.connect_secs = atof(v);
        else if (!strcmp(a, "--mode")) {
            if (!strcmp(v, "pingpong"))
                O.mode = M_PINGPONG;
            else if (!strcmp(v, "push"))
                O.mode = M_PUSH;
            else if (!strcmp(v, "idle"))
                O.mode = M_IDLE;
            else if (!strcmp(v, "bcast"))
                O.mode = M_BCAST;
            else
                usage();
        } else
            usage();
    }
    if (O.port <= 0 || O.conns <= 0 || O.conns > 60000 || O.duration <= 0 || O.window < 1 ||
        O.window >= BCAST_RING)
        usage();
    if (strncmp(O.host, "127.", 4) != 0 && strcmp(O.host, "localhost") != 0) {
        fprintf(stderr, "loadgen: loopback addresses only\n");
        return 2;
    }
    if (!strcmp(O.host, "localhost")) O.host = "127.0.0.1";
    if (!O.route) O.route = O.mode == M_PUSH ? "Bench.note" : "Bench.ping";
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
        rl.rlim_cur = rl.rlim_max;
        setrlimit(RLIMIT_NOFILE, &rl);
    }
    signal(SIGPIPE, SIG_IGN);
    conns = calloc((size_t)O.conns, sizeof *conns);
    st.hist = calloc(MAX_LAT_US, sizeof *st.hist);
    if (!conns || !st.hist) return 1;
    loop = uv_default_loop();
    uv_timer_init(loop, &tick);
    uv_timer_start(&tick, on_tick, 50, 50);
    uv_timer_init(loop, &pacer);
    if (O.rate > 0 && (O.mode == M_PINGPONG || O.mode == M_PUSH))
        pace_ns = (uint64_t)(1e9 * O.conns / O.rate);
    uv_signal_init(loop, &sigint_h);
    uv_signal_start(&sigint_h, on_signal, SIGINT);
    uv_signal_init(loop, &sigterm_h);
    uv_signal_start(&sigterm_h, on_signal, SIGTERM);
    if (paired && O.mode != M_IDLE && !passive) {
        uv_signal_init(loop, &sigusr1_h);
        uv_signal_start(&sigusr1_h, on_signal, SIGUSR1);
        uv_signal_init(loop, &sigusr2_h);
        uv_signal_start(&sigusr2_h, on_signal, SIGUSR2);
    } else if (paired) {
        fprintf(stderr, "loadgen: --paired is for pingpong, push and bcast (not passive)\n");
        return 2;
    }
    if (server_pid) rss0_kb = proc_rss_kb(server_pid);
    t_phase_ns = uv_hrtime();
    start_connects();
    uv_run(loop, UV_RUN_DEFAULT);
    uv_loop_close(loop);
    free(st.hist);
    free(conns);
    nh_tls_ctx_unref(tls_ctx);
    return st.errors || st.closed ? 1 : 0;
}
