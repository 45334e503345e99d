/* session — one client's protocol state on top of a connection: handshake, ack, heartbeats,
 * message decoding, and sending packets and messages. What a session receives goes up to the
 * layer above through the host's events (nh_session_events_t below), never to Lua directly: the
 * Lua binding implements them (lua_dispatch.c), a C test can install its own.
 *
 * A session is created by its transport once the byte stream starts (TCP: at accept; WebSocket:
 * after the upgrade). It lives until its connection is gone; then the layer above is told
 * (events.closed) and the struct is freed. Lua sees a session as a userdata (lua_session.c) whose
 * pointer is cleared when the connection goes, so a Lua reference that outlives the connection
 * is harmless.
 */
#ifndef NH_SESSION_H
#define NH_SESSION_H

#include <stdint.h>

#include "buffer.h"
#include "codec.h"
#include "conn.h"

enum nh_session_state {
    NH_SS_HANDSHAKE, /* waiting for the client's handshake */
    NH_SS_ACK,       /* handshake answered, waiting for the ack */
    NH_SS_WORKING,   /* data flows */
    NH_SS_CLOSED,    /* connection gone or going */
};

struct nh_session {
    uint64_t id;
    int64_t uid;
    uint64_t last_mid;     /* id of the last request received */
    uint64_t answered_mid; /* id of the last response sent (core.respond) */
    uint64_t created_ms, last_recv_ms, next_heartbeat_ms;
    /* when the first byte of the packet still incomplete arrived (0: none is): a packet must
     * complete within handshake_timeout, or a client trickling bytes would stay for ever */
    uint64_t partial_since_ms;
    uint64_t packets_in; /* packets received (tells a new partial packet from the same one) */
    nh_host_t *host;
    nh_conn_t *conn;           /* NULL once closed */
    nh_session_t *prev, *next; /* host->sessions */
    nh_pkt_decoder_t dec;
    /* the layer above's handle for this session (the Lua binding: a registry reference to the
     * userdata); 0 until the layer above first sees the session, and again once it let go */
    int binding_ref;
    uint8_t state;
    /* Why the session itself closed the connection, as a WebSocket close status: 1002 protocol
     * error, 1008 policy, 1009 too big, 1011 server error; 0 for a normal close (1000). */
    uint16_t close_code;
};

/* What a session tells the layer above (set on the host: h->events, with h->events_ud passed
 * back as `ud`; the Lua binding fills in the members whose Lua hook is set). Every member may be
 * NULL: the session then does what is said below. The calls run on the loop thread, from inside
 * nh_session_on_bytes (handshake, message), from the close of the connection (closed) or from a
 * transport (check_origin). A callback may close or kick the session; the session checks its state
 * after each call.
 */
typedef struct nh_session_handshake {
    const uint8_t *reply; /* the handshake packet's body to send (the implementation's memory,
                             valid until its next call) */
    size_t reply_len;
    int accepted; /* 0: send the reply, then close (the handshake was refused) */
} nh_session_handshake_t;

typedef struct nh_session_events {
    /* The client's handshake packet (body: its JSON). Returns 0 with *out filled, or -1 when it
     * failed (logged): the session then closes with status 1011. NULL: every handshake is
     * accepted with {"code":200,"sys":{"heartbeat":<interval>}}. */
    int (*handshake)(void *ud, nh_session_t *s, const uint8_t *body, size_t len,
                     nh_session_handshake_t *out);
    /* A request or notify, decoded (its route, payload point into the read: copy what must
     * outlive the call). Returns 0, or -1 when the layer above failed to handle it (logged): a
     * request not answered yet then gets a 500 error response from the session. NULL: messages
     * are dropped. */
    int (*message)(void *ud, nh_session_t *s, const nh_msg_t *m);
    /* The connection is gone; s is freed when this returns. Called for every session. */
    void (*closed)(void *ud, nh_session_t *s);
    /* A WebSocket upgrade on a listener that checks origins: nonzero lets it in. NULL: all in. */
    int (*check_origin)(void *ud, int listener_id, const char *origin);
} nh_session_events_t;

/* Creates the session of a connection (c->session). Returns 0 or UV_ENOMEM. */
int nh_session_open(nh_conn_t *c);
/* Bytes of the packet stream. Returns 0, or negative when the connection must close
 * (already logged). */
int nh_session_on_bytes(nh_session_t *s, const uint8_t *data, size_t len);
/* The connection is closing: no more sends. */
void nh_session_on_conn_closing(nh_session_t *s);
/* The connection is gone: tell the layer above (events.closed), free the session. */
void nh_session_on_conn_gone(nh_session_t *s);

/* Sends a packet with this body (handshake, heartbeat, kick). 0 or a negative uv error. */
int nh_session_send_packet(nh_session_t *s, int type, const uint8_t *body, size_t len);
/* Sends a message (response or push). payload is copied. 0 or a negative error. */
int nh_session_send_msg(nh_session_t *s, const nh_msg_t *m);
/* Sends a message already encoded (header + payload) in `msg`, by reference: used to encode a
 * broadcast once. */
int nh_session_send_shared(nh_session_t *s, nh_buf_t *msg);

/* Sends the kick packet (body: the serialized reason; nano's and pomelo's browser clients parse
 * it as JSON, so it should not be empty) and closes once it has left. */
void nh_session_kick(nh_session_t *s, const uint8_t *body, size_t len);
/* Closes the connection (queued output gets one try to leave first). */
void nh_session_close(nh_session_t *s, const char *reason);

/* Called by the host's sweep: heartbeats and timeouts for every session. */
void nh_session_sweep(nh_host_t *h, uint64_t now);

/* For transports: asks the layer above whether a WebSocket upgrade from `origin` may go on
 * (events.check_origin). 1 when it may. */
int nh_session_check_origin(nh_host_t *h, int listener_id, const char *origin);

#endif
