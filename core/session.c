#include "session.h"

#include <errno.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "host.h"
#include "log.h"

/* A line about this session: "<transport> <peer> session <id>: <message>". */
static void slog(const nh_session_t *s, int level, const char *fmt, ...) NH_LOG_PRINTF(3, 4);
static void slog(const nh_session_t *s, int level, const char *fmt, ...) {
    if (!nh_log_enabled(level)) return; /* getpeername only for a line that is kept */
    char peer[80], msg[512];
    if (!s->link_ctx || s->link->peer(s->link_ctx, peer, sizeof peer) != 0)
        snprintf(peer, sizeof peer, "?");
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    nh_log(level, "%s %s session %llu: %s", s->link->name, peer, (unsigned long long)s->id, msg);
}

/* The transport closes the connection (it reports closing and gone back). */
static void close_link(nh_session_t *s, int after_flush, int reason, const char *why) {
    if (s->link_ctx) s->link->close(s->link_ctx, after_flush, reason, why);
}

/* WebSocket close statuses (RFC 6455 7.4.1) for the reasons a session closes itself. */
enum {
    CLOSE_PROTOCOL = 1002, /* a packet or message the protocol does not allow */
    CLOSE_POLICY = 1008,   /* allowed by the protocol, refused by this server */
    CLOSE_TOO_BIG = 1009,  /* a packet over max_packet */
    CLOSE_INTERNAL = 1011, /* the server failed (a handshake hook) */
};

/* Logs why a session is being closed for bad input, then closes it with that WebSocket status
 * (TCP clients see the connection close). Returns -1. */
static int reject_with(nh_session_t *s, int close_code, const char *why) {
    s->close_code = (uint16_t)close_code;
    slog(s, NH_LOG_WARN, "%s; closing", why);
    close_link(s, 0, NH_CLOSE_BAD_INPUT, why);
    return -1;
}

static int reject(nh_session_t *s, const char *why) {
    return reject_with(s, CLOSE_PROTOCOL, why);
}

static const nh_session_ops_t client_ops;

/* Every idle connection holds one (docs/benchmarks.md, "Connection scale"): on 64-bit glibc a
 * malloc of up to 168 bytes takes a 176-byte chunk, the next size class 192. */
#if UINTPTR_MAX == UINT64_MAX
_Static_assert(sizeof(nh_session_t) <= 168, "nh_session_t grew past 168 bytes (a malloc class)");
_Static_assert(offsetof(nh_session_t, dec) + sizeof(nh_pkt_decoder_t) <= 112,
               "a message's fields of nh_session_t are past its first 112 bytes (session.h)");
#endif

/* ---- the session's next deadline in host->session_wheel ---- */

/* When the sweep must next look at s: the earliest of its deadlines as they stand. A deadline
 * that moves later (a packet received) leaves the entry where it is: the sweep looks, finds
 * nothing due and places it again. */
static uint64_t next_due(const nh_session_t *s) {
    const nh_config_t *cfg = &s->host->cfg;
    if (s->state != NH_SS_WORKING) return s->created_ms + cfg->handshake_timeout_ms;
    uint64_t hb = cfg->heartbeat_ms;
    uint64_t due = s->last_recv_ms + 2 * hb + hb / 2 + 1; /* silent for more than 2.5x */
    if (s->next_heartbeat_ms < due) due = s->next_heartbeat_ms;
    if (s->partial_since_ms && s->partial_since_ms + cfg->handshake_timeout_ms < due)
        due = s->partial_since_ms + cfg->handshake_timeout_ms;
    return due;
}

static void schedule(nh_session_t *s) {
    nh_host_t *h = s->host;
    if (!s->link_ctx || s->draining || s->state == NH_SS_CLOSED || !h->session_wheel.slots) {
        nh_wheel_remove(&h->session_wheel, &s->due);
        return;
    }
    nh_wheel_set(&h->session_wheel, &s->due, next_due(s));
}

int nh_session_sweep_configure(nh_host_t *h) {
    uint64_t period = h->sweep_period ? h->sweep_period : 1000;
    if (h->session_wheel.slots && h->session_wheel.period == period &&
        h->session_wheel_cfg[0] == h->cfg.heartbeat_ms &&
        h->session_wheel_cfg[1] == h->cfg.handshake_timeout_ms)
        return 0; /* built for these already */
    uint64_t span = h->cfg.heartbeat_ms;
    if (h->cfg.handshake_timeout_ms > span) span = h->cfg.handshake_timeout_ms;
    nh_wheel_t w;
    if (nh_wheel_init(&w, period, span, nh_timers_now(&h->timers))) return -ENOMEM;
    nh_wheel_free(&h->session_wheel); /* every session's entry is out of it now */
    h->session_wheel = w;
    h->session_wheel_cfg[0] = h->cfg.heartbeat_ms;
    h->session_wheel_cfg[1] = h->cfg.handshake_timeout_ms;
    for (nh_session_t *s = h->sessions.head; s; s = s->next)
        schedule(s);
    return 0;
}

nh_session_t *nh_session_open(nh_host_t *h, const nh_session_link_t *link, void *ctx) {
    nh_session_t *s = calloc(1, sizeof *s);
    if (!s) return NULL;
    s->ops = &client_ops;
    s->id = ++h->next_session_id;
    s->host = h;
    s->link = link;
    s->link_ctx = ctx;
    s->state = NH_SS_HANDSHAKE;
    s->created_ms = s->last_recv_ms = nh_timers_now(&h->timers);
    nh_pkt_decoder_init(&s->dec, h->cfg.max_packet);
    s->next = h->sessions.head;
    if (s->next) s->next->prev = s;
    h->sessions.head = s;
    h->sessions.count++;
    if (!h->session_wheel.slots) nh_session_sweep_configure(h);
    schedule(s);
    return s;
}

void nh_session_heard(nh_session_t *s) {
    s->last_recv_ms = nh_timers_now(&s->host->timers);
}

void nh_session_on_conn_draining(nh_session_t *s) {
    s->draining = 1;
    nh_wheel_remove(&s->host->session_wheel, &s->due);
}

void nh_session_on_conn_closing(nh_session_t *s) {
    s->state = NH_SS_CLOSED;
    nh_wheel_remove(&s->host->session_wheel, &s->due);
}

void nh_session_on_conn_gone(nh_session_t *s) {
    nh_host_t *h = s->host;
    if (s->prev)
        s->prev->next = s->next;
    else
        h->sessions.head = s->next;
    if (s->next) s->next->prev = s->prev;
    h->sessions.count--;
    nh_wheel_remove(&h->session_wheel, &s->due);
    s->link_ctx = NULL;
    s->state = NH_SS_CLOSED;
    nh_pkt_decoder_free(&s->dec);
    if (h->events.closed) h->events.closed(h->events_ud, s);
    free(s);
}

/* ---- sending: the ops of a client session ---- */

static int send_packet(nh_session_t *s, int type, const uint8_t *body, size_t len) {
    if (!s->link_ctx || s->state == NH_SS_CLOSED) return UV_EPIPE;
    uint8_t hdr[NH_PKT_HEADER_LEN];
    nh_pkt_write_header(hdr, type, len);
    return s->link->send(s->link_ctx, hdr, sizeof hdr, NULL, body, len);
}

static int client_send_msg(nh_session_t *s, const nh_msg_t *m) {
    if (!s->link_ctx || s->state == NH_SS_CLOSED) return UV_EPIPE;
    uint8_t head[NH_PKT_HEADER_LEN + NH_MSG_MAX_HEADER];
    int n = nh_msg_write_header(head + NH_PKT_HEADER_LEN, m);
    if (n < 0) return n;
    size_t body = (size_t)n + m->payload_len;
    if (body > NH_PKT_MAX_BODY) return UV_E2BIG;
    nh_pkt_write_header(head, NH_PKT_DATA, body);
    nh_metrics_message(&s->host->metrics, NH_MD_OUT, m->type);
    return s->link->send(s->link_ctx, head, NH_PKT_HEADER_LEN + (size_t)n, NULL, m->payload,
                         m->payload_len);
}

static int client_send_shared(nh_session_t *s, nh_buf_t *pkt) {
    if (!s->link_ctx || s->state == NH_SS_CLOSED) return UV_EPIPE;
    if (pkt->len > NH_PKT_HEADER_LEN + NH_PKT_MAX_BODY) return UV_E2BIG;
    nh_metrics_message(&s->host->metrics, NH_MD_OUT, NH_MSG_PUSH);
    return s->link->send(s->link_ctx, NULL, 0, pkt, pkt->data, pkt->len);
}

static void client_kick(nh_session_t *s, const uint8_t *body, size_t len) {
    if (!s->link_ctx || s->state == NH_SS_CLOSED) return;
    send_packet(s, NH_PKT_KICK, body, len);
    close_link(s, 1, NH_CLOSE_KICK, NULL);
    s->state = NH_SS_CLOSED;
}

static void client_close(nh_session_t *s, int reason, const char *why) {
    close_link(s, 0, reason, why);
}

static int client_peer(const nh_session_t *s, char *out, size_t len) {
    return s->link_ctx ? s->link->peer(s->link_ctx, out, len) : UV_ENOTCONN;
}

static const char *client_transport(const nh_session_t *s) {
    return s->link_ctx ? s->link->name : NULL;
}

static const nh_session_ops_t client_ops = {
    .send_msg = client_send_msg,
    .send_shared = client_send_shared,
    .kick = client_kick,
    .close = client_close,
    .peer = client_peer,
    .transport = client_transport,
};

/* ---- receiving ---- */

static int on_handshake(nh_session_t *s, const uint8_t *body, size_t len) {
    nh_host_t *h = s->host;
    if (s->state != NH_SS_HANDSHAKE) return reject(s, "second handshake");
    if (!h->events.handshake) {
        char resp[128];
        int n = snprintf(resp, sizeof resp, "{\"code\":200,\"sys\":{\"heartbeat\":%g}}",
                         (double)h->cfg.heartbeat_ms / 1000.0);
        s->state = NH_SS_ACK;
        return send_packet(s, NH_PKT_HANDSHAKE, (const uint8_t *)resp, (size_t)n) < 0 ? -1 : 0;
    }
    nh_session_handshake_t out = {0};
    if (h->events.handshake(h->events_ud, s, body, len, &out) != 0)
        return reject_with(s, CLOSE_INTERNAL, "handshake hook failed");
    if (!out.reply) return reject_with(s, CLOSE_INTERNAL, "handshake hook returned no response");
    if (s->state == NH_SS_CLOSED) return -1; /* the hook closed it */
    if (send_packet(s, NH_PKT_HANDSHAKE, out.reply, out.reply_len) < 0) return -1;
    int accepted = out.accepted;
    if (!accepted) {
        slog(s, NH_LOG_INFO, "handshake refused");
        s->close_code = CLOSE_POLICY;
        close_link(s, 1, 0, NULL);
        s->state = NH_SS_CLOSED;
        return -1;
    }
    s->state = NH_SS_ACK;
    return 0;
}

static void log_message(nh_session_t *s, const nh_msg_t *m) {
    static const char *const names[] = {"request", "notify", "response", "push"};
    char route[NH_LOG_ESCAPED_MAX], payload[NH_LOG_ESCAPED_MAX];
    if (m->route_compressed)
        snprintf(route, sizeof route, "#%u", m->route_code);
    else
        nh_log_escape(route, sizeof route, m->route, m->route_len);
    nh_log(NH_LOG_DEBUG, "session %llu <- %s id=%llu route=%s payload=%s",
           (unsigned long long)s->id, names[m->type], (unsigned long long)m->id, route,
           nh_log_escape(payload, sizeof payload, m->payload, m->payload_len));
}

/* A request dispatched while metrics count requests: timed, and counted under its route. Inline:
 * out of line it saved and restored six registers around the handler's call, ~25 instructions of
 * the ~110 that metrics add to a request; the start time is kept in h->metrics, so on_data holds
 * nothing more across the dispatch when metrics are off (+2 instructions there). */
static inline int dispatch_timed(nh_host_t *h, nh_session_t *s, const nh_msg_t *m) {
    nh_metrics_dispatch_begin(&h->metrics, s->id, m->id);
    int failed = h->events.message(h->events_ud, s, m) != 0;
    nh_metrics_dispatch_end(&h->metrics, m, failed);
    return failed;
}

static int on_data(nh_session_t *s, const uint8_t *body, size_t len) {
    nh_host_t *h = s->host;
    if (s->state != NH_SS_WORKING) return reject(s, "data before handshake ack");
    nh_msg_t m;
    int r = nh_msg_decode(body, len, &m);
    if (r < 0) return reject(s, nh_codec_strerror(r));
    if (m.type != NH_MSG_REQUEST && m.type != NH_MSG_NOTIFY)
        return reject(s, "client sent a response or push message");
    /* Lua sees ids as doubles: one over 2^53 could only be answered with a different id. */
    if (m.type == NH_MSG_REQUEST && m.id > ((uint64_t)1 << 53))
        return reject_with(s, CLOSE_POLICY, "request id over 2^53");
    if (m.type == NH_MSG_REQUEST) s->last_mid = m.id;
    nh_metrics_message(&h->metrics, NH_MD_IN, m.type);
    if (h->cfg.debug) log_message(s, &m);
    if (!h->events.message) return 0;
    int failed = h->metrics.requests_on && m.type == NH_MSG_REQUEST
                     ? dispatch_timed(h, s, &m)
                     : h->events.message(h->events_ud, s, &m) != 0;
    /* The dispatcher itself failed (the watchdog and the Lua memory limit can strike outside a
     * handler's protection): a request still gets an error response rather than none. JSON, as
     * the serializer may be what failed. */
    if (failed && m.type == NH_MSG_REQUEST && s->answered_mid != m.id) {
        static const char body[] = "{\"code\":500,\"msg\":\"internal error\"}";
        nh_msg_t r = {.type = NH_MSG_RESPONSE, .flags = NH_MSG_FLAG_ERROR, .id = m.id};
        r.payload = (const uint8_t *)body;
        r.payload_len = sizeof body - 1;
        client_send_msg(s, &r);
    }
    return s->state == NH_SS_CLOSED ? 1 : 0;
}

static int on_packet(void *ud, int type, const uint8_t *body, size_t len) {
    nh_session_t *s = ud;
    switch (type) {
    case NH_PKT_HANDSHAKE:
        return on_handshake(s, body, len);
    case NH_PKT_HANDSHAKE_ACK:
        if (s->state != NH_SS_ACK) return reject(s, "handshake ack out of order");
        s->state = NH_SS_WORKING;
        s->next_heartbeat_ms = s->last_recv_ms + s->host->cfg.heartbeat_ms;
        schedule(s); /* from the handshake's deadline to the heartbeat's */
        return 0;
    case NH_PKT_HEARTBEAT:
        s->host->metrics.heartbeats[NH_MD_IN]++;
        return 0; /* receiving anything refreshed the deadline; nano-host sends its own */
    case NH_PKT_DATA:
        return on_data(s, body, len);
    default:
        return reject(s, "client sent a kick packet");
    }
}

int nh_session_on_bytes(nh_session_t *s, const uint8_t *data, size_t len) {
    if (s->state == NH_SS_CLOSED || !s->link_ctx) return 0;
    uint64_t now = s->last_recv_ms = nh_timers_now(&s->host->timers);
    /* The bytes of the incomplete packet before and after: all of this read went into the same
     * packet exactly when they grew by len (a packet that completed takes its bytes out). */
    size_t held = (size_t)s->dec.header_have + s->dec.body_have;
    int r = nh_pkt_decoder_feed(&s->dec, data, len, on_packet, s);
    if (s->dec.header_have == 0)
        s->partial_since_ms = 0;
    else if (!s->partial_since_ms || (size_t)s->dec.header_have + s->dec.body_have != held + len) {
        s->partial_since_ms = now; /* a packet started in this read */
        if (s->state == NH_SS_WORKING && s->link_ctx && !s->draining && nh_wheel_linked(&s->due))
            nh_wheel_set_earlier(&s->host->session_wheel, &s->due,
                                 now + s->host->cfg.handshake_timeout_ms);
    }
    if (r < 0 && r != -1 && s->link_ctx && s->state != NH_SS_CLOSED) {
        if (r == NH_ECODEC_PKT_TOO_BIG) {
            char why[96];
            snprintf(why, sizeof why, "packet over the %u-byte limit", s->host->cfg.max_packet);
            return reject_with(s, CLOSE_TOO_BIG, why);
        }
        return reject(s, nh_codec_strerror(r));
    }
    return 0;
}

/* ---- timeouts and heartbeats ---- */

/* The sweep's look at one session whose deadline came (it is out of the wheel): closes it, sends
 * its heartbeat or finds nothing due yet; a session still open goes back into the wheel. */
static void sweep_one(nh_wheel_entry_t *e, void *arg) {
    static const uint8_t heartbeat[NH_PKT_HEADER_LEN] = {NH_PKT_HEARTBEAT, 0, 0, 0};
    nh_session_t *s = (nh_session_t *)((char *)e - offsetof(nh_session_t, due));
    nh_host_t *h = s->host;
    uint64_t now = *(const uint64_t *)arg;
    uint64_t hb = h->cfg.heartbeat_ms;
    /* closing only starts here; the session is freed in a later phase. A draining connection's
     * deadline is its transport's (conn.c's sweep). */
    if (!s->link_ctx || s->draining || s->state == NH_SS_CLOSED) return;
    if (s->state != NH_SS_WORKING) {
        if (now - s->created_ms >= h->cfg.handshake_timeout_ms) {
            slog(s, NH_LOG_INFO, "no handshake within %.1f s; closing",
                 (double)h->cfg.handshake_timeout_ms / 1000.0);
            close_link(s, 0, 0, "handshake timeout");
        }
        schedule(s);
        return;
    }
    /* Each byte counts as life for the heartbeat; a packet that never completes does not.
     * (Before the ack the handshake timeout bounds the whole handshake instead.) */
    if (s->partial_since_ms && now - s->partial_since_ms >= h->cfg.handshake_timeout_ms) {
        slog(s, NH_LOG_WARN,
             "a packet still incomplete after %.1f s (%u bytes of it received); closing",
             (double)(now - s->partial_since_ms) / 1000.0,
             (unsigned)s->dec.header_have + s->dec.body_have);
        close_link(s, 0, 0, "packet timeout");
        schedule(s);
        return;
    }
    /* Clients answer our heartbeat one interval late, so a settled client is silent for up to
     * 2x the interval (also between the ack and its first heartbeat). A session silent for
     * more than 2.5x is closed: nano closes between 2x and 3x (it checks on its heartbeat
     * ticks); half an interval of slack keeps a late client timer (a throttled browser tab, a
     * GC pause) from costing the player the session. */
    if (now - s->last_recv_ms > 2 * hb + hb / 2) {
        slog(s, NH_LOG_INFO, "nothing received for %.1f s; closing",
             (double)(now - s->last_recv_ms) / 1000.0);
        close_link(s, 0, 0, "heartbeat timeout");
        schedule(s);
        return;
    }
    if (now >= s->next_heartbeat_ms) {
        s->link->send(s->link_ctx, heartbeat, sizeof heartbeat, NULL, NULL, 0);
        h->metrics.heartbeats[NH_MD_OUT]++;
        /* Keep the schedule rather than restarting it from a sweep that ran late, or the
         * interval would drift by up to one sweep period each time. */
        s->next_heartbeat_ms += hb;
        if (s->next_heartbeat_ms <= now) s->next_heartbeat_ms = now + hb;
    }
    schedule(s);
}

void nh_session_sweep(nh_host_t *h, uint64_t now) {
    if (!h->session_wheel.slots) return;
    nh_wheel_advance(&h->session_wheel, now, sweep_one, &now);
}
