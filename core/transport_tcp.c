/* transport_tcp — the raw TCP transport: the socket carries the packet stream as it is (pomelo's
 * and nano's TCP clients). A session from accept on; conn's reports go to it. Also the link over
 * a connection that the transports share (transport.h). */
#include "host.h"
#include "transport.h"

/* ---- the session's link over a connection ---- */

int nh_transport_link_send(void *ctx, const uint8_t *head, size_t head_len, nh_buf_t *shared,
                           const uint8_t *body, size_t body_len) {
    return nh_conn_send(ctx, head, head_len, shared, body, body_len);
}

void nh_transport_link_close(void *ctx, int after_flush, int reason, const char *why) {
    nh_conn_t *c = ctx;
    if (reason) nh_conn_set_close_reason(c, reason);
    if (after_flush)
        nh_conn_close_after_flush(c);
    else
        nh_conn_close(c, why);
}

int nh_transport_link_peer(const void *ctx, char *out, size_t len) {
    return nh_conn_peer(ctx, out, len);
}

/* ---- raw TCP ---- */

static const nh_session_link_t tcp_link = {
    .name = "tcp",
    .send = nh_transport_link_send,
    .close = nh_transport_link_close,
    .peer = nh_transport_link_peer,
};

static int tcp_open(nh_conn_t *c) {
    c->tstate = nh_session_open(c->host, &tcp_link, c);
    return c->tstate ? 0 : UV_ENOMEM;
}

static int tcp_read(nh_conn_t *c, uint8_t *data, size_t len) {
    return nh_session_on_bytes(c->tstate, data, len);
}

/* (no session when opening it failed) */
static void tcp_draining(nh_conn_t *c) {
    if (c->tstate) nh_session_on_conn_draining(c->tstate);
}

static void tcp_closing(nh_conn_t *c, int may_send) {
    (void)may_send;
    if (c->tstate) nh_session_on_conn_closing(c->tstate);
}

static void tcp_gone(nh_conn_t *c) {
    if (c->tstate) nh_session_on_conn_gone(c->tstate);
    c->tstate = NULL;
}

static uint64_t tcp_log_id(const nh_conn_t *c) {
    const nh_session_t *s = c->tstate;
    return s ? s->id : 0;
}

const nh_transport_t nh_transport_tcp = {
    .name = "tcp",
    .on_open = tcp_open,
    .on_read = tcp_read,
    .on_draining = tcp_draining,
    .on_closing = tcp_closing,
    .on_gone = tcp_gone,
    .log_id = tcp_log_id,
};
