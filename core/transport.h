/* transport — what the transports (transport_tcp.c, transport_ws.c) are, and what they share.
 *
 * A transport sits between a connection (conn.h) and its session (session.h): it implements
 * conn's nh_transport_t (conn reports bytes, draining, closing, gone to it) and the session's
 * link (nh_session_link_t: the session sends packets and closes through it). It owns the
 * session: it opens it when the byte stream starts and passes conn's reports on. A later
 * transport (TLS of its own, ...) adds a file beside these two and is chosen by the listener;
 * neither conn nor session changes.
 */
#ifndef NH_TRANSPORT_H
#define NH_TRANSPORT_H

#include "conn.h"
#include "session.h"

extern const nh_transport_t nh_transport_tcp; /* the raw packet stream */
extern const nh_transport_t nh_transport_ws;  /* WebSocket: HTTP upgrade, then binary frames */

/* The session's link over a connection (ctx: the nh_conn_t), for the transports whose packets
 * go out through nh_conn_send, framed by their frame_header: send, close (reason, when not 0,
 * is the close metrics' reason), peer. */
int nh_transport_link_send(void *ctx, const uint8_t *head, size_t head_len, nh_buf_t *shared,
                           const uint8_t *body, size_t body_len);
void nh_transport_link_close(void *ctx, int after_flush, int reason, const char *why);
int nh_transport_link_peer(const void *ctx, char *out, size_t len);

#endif
