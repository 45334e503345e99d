/* session.c with no Lua state and no socket: a host with no Lua state attached
 * and a transport in memory under the session's link, which decodes what the session sends with
 * the real packet decoder and reports closing and gone back as conn's transports do. Time is
 * virtual (nh_timers_advance drives the host's sweep), and the events that go up (handshake,
 * message, closed) are the test's own. One behaviour per test: the handshake and its ack, the
 * events, heartbeats on schedule, the heartbeat and handshake timeouts, bad input closing with
 * its close code, a kick, and sends after closing. */
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "codec.h"
#include "host.h"
#include "log.h"
#include "metrics.h"
#include "session.h"

static uv_loop_t loop;
static nh_host_t host;

/* ---- a transport in memory ---- */

#define MAX_PKTS 16

typedef struct pkt {
    int type;
    char body[256];
    size_t len;
} pkt_t;

typedef struct mem {
    nh_session_t *s;
    nh_pkt_decoder_t dec; /* what the session sent, as a client would decode it */
    pkt_t pkts[MAX_PKTS];
    int npkts;
    int closing, draining, gone;
    int close_reason;
    char close_why[64];
} mem_t;

static int on_sent(void *ud, int type, const uint8_t *body, size_t len) {
    mem_t *m = ud;
    if (m->npkts == MAX_PKTS) return -1;
    pkt_t *p = &m->pkts[m->npkts++];
    p->type = type;
    p->len = len < sizeof p->body ? len : sizeof p->body;
    memcpy(p->body, body, p->len);
    return 0;
}

static int mem_send(void *ctx, const uint8_t *head, size_t head_len, nh_buf_t *shared,
                    const uint8_t *body, size_t body_len) {
    (void)shared;
    mem_t *m = ctx;
    if (m->closing || m->draining) return UV_EPIPE; /* as conn does once closing has started */
    uint8_t buf[1024];
    if (head_len + body_len > sizeof buf) return UV_ENOBUFS;
    if (head_len) memcpy(buf, head, head_len);
    if (body_len) memcpy(buf + head_len, body, body_len);
    return nh_pkt_decoder_feed(&m->dec, buf, head_len + body_len, on_sent, m) < 0 ? UV_EINVAL : 0;
}

static void mem_close(void *ctx, int after_flush, int reason, const char *why) {
    mem_t *m = ctx;
    if (m->closing) return;
    if (!m->close_reason) m->close_reason = reason ? reason : nh_metrics_reason_of(why);
    if (why) snprintf(m->close_why, sizeof m->close_why, "%s", why);
    if (after_flush && !m->draining) {
        m->draining = 1;
        nh_session_on_conn_draining(m->s);
        return;
    }
    m->closing = 1;
    nh_session_on_conn_closing(m->s);
}

static int mem_peer(const void *ctx, char *out, size_t len) {
    (void)ctx;
    snprintf(out, len, "memory");
    return 0;
}

static const nh_session_link_t mem_link = {
    .name = "mem",
    .send = mem_send,
    .close = mem_close,
    .peer = mem_peer,
};

static mem_t *mem_open(void) {
    mem_t *m = calloc(1, sizeof *m);
    nh_pkt_decoder_init(&m->dec, NH_PKT_MAX_BODY);
    m->s = nh_session_open(&host, &mem_link, m);
    return m;
}

/* The connection is gone (conn's close callback): the session is freed. */
static void mem_free(mem_t *m) {
    if (!m->gone) nh_session_on_conn_gone(m->s);
    nh_pkt_decoder_free(&m->dec);
    free(m);
}

/* What a client sends: one packet. */
static int client_send(mem_t *m, int type, const void *body, size_t len) {
    uint8_t buf[1024];
    nh_pkt_write_header(buf, type, len);
    if (len) memcpy(buf + NH_PKT_HEADER_LEN, body, len);
    return nh_session_on_bytes(m->s, buf, NH_PKT_HEADER_LEN + len);
}

static const char handshake[] = "{\"sys\":{\"type\":\"c\",\"version\":\"1\"},\"user\":{}}";

/* A session past the handshake and its ack. */
static mem_t *mem_working(void) {
    mem_t *m = mem_open();
    client_send(m, NH_PKT_HANDSHAKE, handshake, sizeof handshake - 1);
    client_send(m, NH_PKT_HANDSHAKE_ACK, NULL, 0);
    m->npkts = 0;
    return m;
}

static int count(const mem_t *m, int type) {
    int n = 0;
    for (int i = 0; i < m->npkts; i++)
        n += m->pkts[i].type == type;
    return n;
}

/* ---- the layer above: events of the test's own ---- */

static int ev_accept = 1, ev_fail_handshake, ev_fail_message;
static int ev_messages, ev_closed;
static nh_msg_t ev_last;
static char ev_route[32], ev_payload[32];

static int ev_handshake(void *ud, nh_session_t *s, const uint8_t *body, size_t len,
                        nh_session_handshake_t *out) {
    (void)ud, (void)s, (void)body, (void)len;
    if (ev_fail_handshake) return -1;
    static const char reply[] = "{\"code\":200,\"sys\":{\"heartbeat\":1}}";
    out->reply = (const uint8_t *)reply;
    out->reply_len = sizeof reply - 1;
    out->accepted = ev_accept;
    return 0;
}

static int ev_message(void *ud, nh_session_t *s, const nh_msg_t *m) {
    (void)ud, (void)s;
    ev_messages++;
    ev_last = *m;
    snprintf(ev_route, sizeof ev_route, "%.*s", (int)m->route_len, m->route ? m->route : "");
    snprintf(ev_payload, sizeof ev_payload, "%.*s", (int)m->payload_len, (const char *)m->payload);
    return ev_fail_message ? -1 : 0;
}

static void ev_on_closed(void *ud, nh_session_t *s) {
    (void)ud, (void)s;
    ev_closed++;
}

static void events_on(void) {
    host.events = (nh_session_events_t){
        .handshake = ev_handshake, .message = ev_message, .closed = ev_on_closed};
    ev_accept = 1;
    ev_fail_handshake = ev_fail_message = 0;
    ev_messages = ev_closed = 0;
}

static void events_off(void) {
    memset(&host.events, 0, sizeof host.events);
}

static int send_request(mem_t *m, int type, uint64_t id, const char *route, const char *payload) {
    uint8_t msg[256];
    nh_msg_t req = {.type = type, .id = id, .route = route, .route_len = strlen(route)};
    int n = nh_msg_write_header(msg, &req);
    memcpy(msg + n, payload, strlen(payload));
    return client_send(m, NH_PKT_DATA, msg, (size_t)n + strlen(payload));
}

/* ---- tests ---- */

static void test_handshake_answered_then_ack_starts_work(void) {
    host.cfg.heartbeat_ms = 20000;
    mem_t *m = mem_open();
    CHECK(m->s && m->s->state == NH_SS_HANDSHAKE && host.sessions.count == 1);
    CHECK(client_send(m, NH_PKT_HANDSHAKE, handshake, sizeof handshake - 1) == 0);
    CHECK(m->npkts == 1 && m->pkts[0].type == NH_PKT_HANDSHAKE);
    /* without a handshake event: the default answer, with the heartbeat in seconds */
    CHECK(m->pkts[0].len > 0 && strstr(m->pkts[0].body, "\"code\":200") &&
          strstr(m->pkts[0].body, "\"heartbeat\":20"));
    CHECK(m->s->state == NH_SS_ACK);
    CHECK(client_send(m, NH_PKT_HANDSHAKE_ACK, NULL, 0) == 0);
    CHECK(m->s->state == NH_SS_WORKING && !m->closing);
    mem_free(m);
    CHECK(host.sessions.count == 0);
}

static void test_data_before_ack_closes_with_protocol_error(void) {
    mem_t *m = mem_open();
    client_send(m, NH_PKT_HANDSHAKE, handshake, sizeof handshake - 1);
    uint8_t msg[64];
    nh_msg_t req = {.type = NH_MSG_NOTIFY, .route = "a.b", .route_len = 3};
    int n = nh_msg_write_header(msg, &req);
    client_send(m, NH_PKT_DATA, msg, (size_t)n);
    CHECK(m->closing && m->s->close_code == 1002 && m->close_reason == NH_CLOSE_BAD_INPUT);
    CHECK(m->s->state == NH_SS_CLOSED);
    mem_free(m);
}

static void test_bad_packets_close_with_their_codes(void) {
    mem_t *m = mem_working(); /* a client may not kick the server */
    client_send(m, NH_PKT_KICK, "{}", 2);
    CHECK(m->closing && m->s->close_code == 1002);
    mem_free(m);

    m = mem_working(); /* a second handshake */
    client_send(m, NH_PKT_HANDSHAKE, handshake, sizeof handshake - 1);
    CHECK(m->closing && m->s->close_code == 1002);
    mem_free(m);

    m = mem_working(); /* a packet over max_packet: refused from its header on */
    uint8_t hdr[NH_PKT_HEADER_LEN];
    nh_pkt_write_header(hdr, NH_PKT_DATA, host.cfg.max_packet + 1);
    CHECK(nh_session_on_bytes(m->s, hdr, sizeof hdr) < 0);
    CHECK(m->closing && m->s->close_code == 1009 && m->close_reason == NH_CLOSE_BAD_INPUT);
    mem_free(m);

    m = mem_working(); /* a request id Lua could not answer exactly */
    uint8_t msg[64];
    nh_msg_t req = {
        .type = NH_MSG_REQUEST, .id = ((uint64_t)1 << 53) + 1, .route = "a.b", .route_len = 3};
    int n = nh_msg_write_header(msg, &req);
    client_send(m, NH_PKT_DATA, msg, (size_t)n);
    CHECK(m->closing && m->s->close_code == 1008);
    mem_free(m);
}

static void test_heartbeats_on_schedule(void) {
    host.cfg.heartbeat_ms = 1000;
    nh_host_config_changed(&host);
    mem_t *m = mem_working();
    nh_timers_advance(&host.timers, 999);
    CHECK(count(m, NH_PKT_HEARTBEAT) == 0);
    nh_timers_advance(&host.timers, 1);
    CHECK(count(m, NH_PKT_HEARTBEAT) == 1);
    client_send(m, NH_PKT_HEARTBEAT, NULL, 0); /* the client answers: it stays */
    nh_timers_advance(&host.timers, 1000);
    CHECK(count(m, NH_PKT_HEARTBEAT) == 2 && !m->closing);
    mem_free(m);
}

static void test_silent_session_closed_after_two_and_a_half_intervals(void) {
    host.cfg.heartbeat_ms = 1000;
    nh_host_config_changed(&host);
    mem_t *m = mem_working();
    nh_timers_advance(&host.timers, 2500); /* 2.5 intervals: not yet */
    CHECK(!m->closing);
    nh_timers_advance(&host.timers, 250); /* the next sweep past 2.5 intervals */
    CHECK(m->closing && m->close_reason == NH_CLOSE_HEARTBEAT_TIMEOUT);
    CHECK(strcmp(m->close_why, "heartbeat timeout") == 0);
    mem_free(m);
}

static void test_no_handshake_closed_after_handshake_timeout(void) {
    host.cfg.heartbeat_ms = 1000;
    host.cfg.handshake_timeout_ms = 3000;
    nh_host_config_changed(&host);
    mem_t *m = mem_open();
    nh_timers_advance(&host.timers, 2999);
    CHECK(!m->closing);
    nh_timers_advance(&host.timers, 250);
    CHECK(m->closing && m->close_reason == NH_CLOSE_HANDSHAKE_TIMEOUT);
    mem_free(m);
}

static void test_kick_sends_its_packet_then_closes_after_flush(void) {
    mem_t *m = mem_working();
    nh_session_kick(m->s, (const uint8_t *)"\"bye\"", 5);
    CHECK(m->npkts == 1 && m->pkts[0].type == NH_PKT_KICK && m->pkts[0].len == 5 &&
          memcmp(m->pkts[0].body, "\"bye\"", 5) == 0);
    CHECK(m->draining && !m->closing && m->close_reason == NH_CLOSE_KICK);
    CHECK(m->s->state == NH_SS_CLOSED);
    /* nothing more leaves, and a second kick is nothing */
    nh_msg_t push = {.type = NH_MSG_PUSH, .route = "on", .route_len = 2};
    CHECK(nh_session_send_msg(m->s, &push) == UV_EPIPE);
    nh_session_kick(m->s, (const uint8_t *)"{}", 2);
    CHECK(m->npkts == 1);
    mem_free(m);
}

static void test_draining_session_has_no_timeouts(void) {
    host.cfg.heartbeat_ms = 1000;
    nh_host_config_changed(&host);
    mem_t *m = mem_working();
    nh_session_on_conn_draining(m->s); /* e.g. a WebSocket close from the client */
    m->draining = 1;
    nh_timers_advance(&host.timers, 10000);
    CHECK(!m->closing && count(m, NH_PKT_HEARTBEAT) == 0);
    mem_free(m);
}

static void test_sends_through_the_ops(void) {
    mem_t *m = mem_working();
    nh_msg_t resp = {
        .type = NH_MSG_RESPONSE, .id = 7, .payload = (const uint8_t *)"{}", .payload_len = 2};
    CHECK(nh_session_send_msg(m->s, &resp) == 0);
    /* send_shared takes a whole packet, its header included (a broadcast's) */
    nh_buf_t *b = nh_buf_new(32);
    nh_msg_t push = {.type = NH_MSG_PUSH, .route = "on", .route_len = 2};
    int n = nh_msg_write_header(b->data + NH_PKT_HEADER_LEN, &push);
    CHECK(n > 0 && NH_PKT_HEADER_LEN + n + 3 <= 32);
    if (n <= 0 || NH_PKT_HEADER_LEN + n + 3 > 32) { /* (a failed write is not copied past) */
        nh_buf_unref(b);
        mem_free(m);
        return;
    }
    memcpy(b->data + NH_PKT_HEADER_LEN + n, "[1]", 3);
    nh_pkt_write_header(b->data, NH_PKT_DATA, (size_t)n + 3);
    b->len = NH_PKT_HEADER_LEN + (uint32_t)n + 3;
    CHECK(nh_session_send_shared(m->s, b) == 0);
    nh_buf_unref(b);
    CHECK(m->npkts == 2 && count(m, NH_PKT_DATA) == 2);
    nh_msg_t got;
    CHECK(nh_msg_decode((const uint8_t *)m->pkts[0].body, m->pkts[0].len, &got) == 0 &&
          got.type == NH_MSG_RESPONSE && got.id == 7 && got.payload_len == 2);
    CHECK(nh_msg_decode((const uint8_t *)m->pkts[1].body, m->pkts[1].len, &got) == 0 &&
          got.type == NH_MSG_PUSH && got.route_len == 2 && got.payload_len == 3);
    char peer[32];
    CHECK(nh_session_peer(m->s, peer, sizeof peer) == 0 && strcmp(peer, "memory") == 0);
    CHECK(strcmp(nh_session_transport(m->s), "mem") == 0);
    nh_session_close(m->s, NH_CLOSE_KICK, "closed by the server");
    CHECK(m->closing && m->close_reason == NH_CLOSE_KICK);
    CHECK(nh_session_send_msg(m->s, &resp) == UV_EPIPE);
    mem_free(m);
}

static void test_messages_go_up_through_the_events(void) {
    events_on();
    mem_t *m = mem_working();
    CHECK(send_request(m, NH_MSG_REQUEST, 3, "room.join", "{\"a\":1}") == 0);
    CHECK(ev_messages == 1 && ev_last.type == NH_MSG_REQUEST && ev_last.id == 3);
    CHECK(strcmp(ev_route, "room.join") == 0 && strcmp(ev_payload, "{\"a\":1}") == 0);
    CHECK(m->s->last_mid == 3 && m->npkts == 0); /* the answer is the layer above's business */
    CHECK(send_request(m, NH_MSG_NOTIFY, 0, "room.say", "hi") == 0);
    CHECK(ev_messages == 2 && ev_last.type == NH_MSG_NOTIFY && strcmp(ev_payload, "hi") == 0);
    mem_free(m);
    CHECK(ev_closed == 1); /* the closed event, once, when the connection is gone */
    events_off();
}

static void test_failed_message_event_answers_500(void) {
    events_on();
    mem_t *m = mem_working();
    ev_fail_message = 1;
    send_request(m, NH_MSG_REQUEST, 9, "room.join", "{}");
    nh_msg_t got;
    CHECK(m->npkts == 1 && m->pkts[0].type == NH_PKT_DATA);
    CHECK(nh_msg_decode((const uint8_t *)m->pkts[0].body, m->pkts[0].len, &got) == 0 &&
          got.type == NH_MSG_RESPONSE && got.id == 9 && (got.flags & NH_MSG_FLAG_ERROR) &&
          got.payload_len > 0 && memmem(got.payload, got.payload_len, "500", 3));
    send_request(m, NH_MSG_NOTIFY, 0, "room.say", "{}"); /* a notify gets no answer */
    CHECK(m->npkts == 1 && !m->closing);
    mem_free(m);
    events_off();
}

static void test_refused_handshake_replies_then_closes_with_policy(void) {
    events_on();
    ev_accept = 0;
    mem_t *m = mem_open();
    client_send(m, NH_PKT_HANDSHAKE, handshake, sizeof handshake - 1);
    CHECK(m->npkts == 1 && m->pkts[0].type == NH_PKT_HANDSHAKE);
    CHECK(m->draining && !m->closing && m->s->close_code == 1008);
    CHECK(m->s->state == NH_SS_CLOSED);
    mem_free(m);
    events_off();
}

static void test_failed_handshake_event_closes_with_server_error(void) {
    events_on();
    ev_fail_handshake = 1;
    mem_t *m = mem_open();
    client_send(m, NH_PKT_HANDSHAKE, handshake, sizeof handshake - 1);
    CHECK(m->npkts == 0 && m->closing && m->s->close_code == 1011);
    mem_free(m);
    events_off();
}

int main(void) {
    nh_log_set_level(NH_LOG_ERROR); /* the closes above log warnings by design */
    if (uv_loop_init(&loop) != 0 || nh_host_init(&host, &loop) != 0) return 2;
    test_handshake_answered_then_ack_starts_work();
    test_data_before_ack_closes_with_protocol_error();
    test_bad_packets_close_with_their_codes();
    test_heartbeats_on_schedule();
    test_silent_session_closed_after_two_and_a_half_intervals();
    test_no_handshake_closed_after_handshake_timeout();
    test_kick_sends_its_packet_then_closes_after_flush();
    test_draining_session_has_no_timeouts();
    test_sends_through_the_ops();
    test_messages_go_up_through_the_events();
    test_failed_message_event_answers_500();
    test_refused_handshake_replies_then_closes_with_policy();
    test_failed_handshake_event_closes_with_server_error();
    nh_host_stop(&host);
    nh_host_free(&host);
    CHECK(uv_loop_close(&loop) == 0);
    return check_done();
}
