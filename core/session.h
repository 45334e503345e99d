/* session — one player as the game sees it, and the protocol that serves a client connected here.
 *
 * A session is an interface, not a socket. What the game does to a player (respond, push, a
 * broadcast's shared push, kick, close, ask its address) goes through the session's ops
 * (nh_session_ops_t); who implements them decides where the bytes go:
 *
 *   - a client connected to this process (session.c, the only kind today): the protocol state
 *     machine below — handshake, ack, heartbeats and timeouts, decoding, dispatch — over a
 *     transport (transport_tcp.c, transport_ws.c; TLS sits under either) reached through the
 *     link (nh_session_link_t): bytes down, closing and gone reported back up by the transport;
 *   - a player connected elsewhere (a backend's proxy for a player on a gate, which
 *     lua/nano/cluster.lua does in Lua today): its own ops that forward messages, and no link.
 *
 * Callers (lua_session.c, lua_host.c, the host) use nh_session_send_msg() & co., which only
 * dispatch through the ops, and read nothing past the common part of the struct.
 *
 * Dependencies run one way: the Lua binding → session → transport → conn. session.c never sees
 * a connection: it knows its transport's link only. What a client session receives goes up to
 * the layer above through the host's events (nh_session_events_t below), never to Lua directly:
 * the Lua binding implements them (lua_dispatch.c), a C test installs its own.
 *
 * Life: a transport creates the session when its byte stream starts (TCP: at accept; WebSocket:
 * at accept too, so that the handshake timeout covers the upgrade) and reports to it: bytes
 * (nh_session_on_bytes), any sign of life (nh_session_heard), draining (the transport closes
 * once what is queued has left), closing (nothing more is sent), gone (the connection is freed:
 * the closed event goes up, then the struct is freed). Lua sees a session as a userdata
 * (lua_session.c) whose pointer is cleared when it is gone, so a Lua reference that outlives the
 * connection is harmless.
 *
 * Errors: sending returns 0 or a negative uv error — UV_EPIPE when the session is closed or
 * closing, UV_ENOBUFS when the transport's send limit was exceeded (it is then being closed),
 * UV_E2BIG for a message over the packet format's limit.
 */
#ifndef NH_SESSION_H
#define NH_SESSION_H

#include <stddef.h>
#include <stdint.h>

#include "buffer.h"
#include "codec.h"
#include "wheel.h"

typedef struct nh_host nh_host_t;
typedef struct nh_session nh_session_t;

enum nh_session_state {
    NH_SS_HANDSHAKE, /* waiting for the client's handshake */
    NH_SS_ACK,       /* handshake answered, waiting for the ack */
    NH_SS_WORKING,   /* data flows */
    NH_SS_CLOSED,    /* connection gone or going */
};

/* What can be done to a session. Every function is called on the loop thread with a session
 * that is not yet gone; each must accept a session that is already closing (sends then return
 * UV_EPIPE, kick and close do nothing). */
typedef struct nh_session_ops {
    /* A response or a push; the payload is copied. */
    int (*send_msg)(nh_session_t *s, const nh_msg_t *m);
    /* A push already encoded as a whole data packet (packet header, message header, payload)
     * in pkt, which the session may reference rather than copy: a broadcast encodes once for all
     * its members, and a member's queue then holds a reference, not a copy. */
    int (*send_shared)(nh_session_t *s, nh_buf_t *pkt);
    /* The kick packet (body: the serialized reason), then close once it has left. */
    void (*kick)(nh_session_t *s, const uint8_t *body, size_t len);
    /* Closes now; queued output gets one try to leave. reason: why, for the close metrics
     * (enum nh_metrics_close_reason; 0: derived from `why`); why: logged at debug level. */
    void (*close)(nh_session_t *s, int reason, const char *why);
    /* "ip:port" of the player into out: 0, or a negative uv error when it is not known. */
    int (*peer)(const nh_session_t *s, char *out, size_t len);
    /* "tcp", "ws", ...: how the player is connected; NULL once gone. */
    const char *(*transport)(const nh_session_t *s);
} nh_session_ops_t;

/* What a client session needs from the transport under it. ctx is the transport's (its
 * connection). Implemented by transport_tcp.c and transport_ws.c. */
typedef struct nh_session_link {
    const char *name; /* "tcp", "ws": log lines, session:transport() */
    /* Queues one packet: head (packet header [+ message header], copied) then body (copied, or
     * referenced from `shared` when not NULL). The transport frames it. Errors as above. */
    int (*send)(void *ctx, const uint8_t *head, size_t head_len, nh_buf_t *shared,
                const uint8_t *body, size_t body_len);
    /* Closes now (after_flush 0) or once what is queued has left (1; the transport bounds how
     * long a peer that does not read may take). reason: as in nh_session_ops_t.close. */
    void (*close)(void *ctx, int after_flush, int reason, const char *why);
    int (*peer)(const void *ctx, char *out, size_t len);
} nh_session_link_t;

/* The fields a message touches come first, in 104 bytes (session.c asserts at most 112): two cache
 * lines, where they were spread over the struct's three or four. A session's next message comes
 * some 200 ms later, by when the lines it touched have left the cache, and each one read again
 * costs more than the rest of the C side of a message (docs/benchmarks.md, sixteenth pass). "Every
 * session": the ops' callers read these; "a client": session.c's own. */
struct nh_session {
    /* ---- touched by every message ---- */
    const nh_session_ops_t *ops; /* every session */
    nh_host_t *host;             /* every session */
    uint64_t last_mid;           /* every session: id of the last request received */
    uint64_t answered_mid;       /* every session: id of the last response sent (core.respond) */
    /* every session: the layer above's handle for this session (the Lua binding: a registry
     * reference to the userdata); 0 until the layer above first sees the session, and again
     * once it let go */
    int binding_ref;
    uint8_t state;    /* every session */
    uint8_t draining; /* a client: the transport closes once its queue has left: no timeouts */
    /* every session: why the session itself closed the connection, as a WebSocket close status:
     * 1002 protocol error, 1008 policy, 1009 too big, 1011 server error; 0 for a normal close
     * (1000). */
    uint16_t close_code;
    const nh_session_link_t *link; /* a client */
    void *link_ctx;                /* a client: NULL once gone */
    uint64_t last_recv_ms;         /* a client */
    /* a client: when the first byte of the packet still incomplete arrived (0: none is): a
     * packet must complete within handshake_timeout, or a client trickling bytes would stay for
     * ever */
    uint64_t partial_since_ms;
    nh_pkt_decoder_t dec; /* a client */

    /* ---- the rest ---- */
    uint64_t id;               /* every session */
    int64_t uid;               /* every session */
    nh_session_t *prev, *next; /* every session: host->sessions */
    /* a client. One field for two times that are never needed together: created_ms until the
     * handshake is acked (the handshake timeout counts from it), next_heartbeat_ms from then
     * on. */
    union {
        uint64_t created_ms;
        uint64_t next_heartbeat_ms;
    };
    nh_wheel_entry_t due; /* a client: in host->session_wheel at the next of the deadlines */
};

/* ---- what the game does to any session: through its ops ---- */

static inline int nh_session_send_msg(nh_session_t *s, const nh_msg_t *m) {
    return s->ops->send_msg(s, m);
}
static inline int nh_session_send_shared(nh_session_t *s, nh_buf_t *pkt) {
    return s->ops->send_shared(s, pkt);
}
/* The body should not be empty: nano's and pomelo's browser clients parse it as JSON. */
static inline void nh_session_kick(nh_session_t *s, const uint8_t *body, size_t len) {
    s->ops->kick(s, body, len);
}
static inline void nh_session_close(nh_session_t *s, int reason, const char *why) {
    s->ops->close(s, reason, why);
}
static inline int nh_session_peer(const nh_session_t *s, char *out, size_t len) {
    return s->ops->peer(s, out, len);
}
static inline const char *nh_session_transport(const nh_session_t *s) {
    return s->ops->transport(s);
}

/* What a session tells the layer above (set on the host: h->events, with h->events_ud passed
 * back as `ud`; the Lua binding fills in the members whose Lua hook is set). Every member may be
 * NULL: the session then does what is said below. The calls run on the loop thread, from inside
 * nh_session_on_bytes (handshake, message) or from the close of the connection (closed). A
 * callback may close or kick the session; the session checks its state after each call.
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
} nh_session_events_t;

/* ---- a client connected here: what its transport calls ---- */

/* Creates the session of a transport's connection, linked into the host. Returns it, or NULL
 * when out of memory. */
nh_session_t *nh_session_open(nh_host_t *h, const nh_session_link_t *link, void *ctx);
/* Bytes of the packet stream. Returns 0, or negative when the connection must close
 * (already logged, and the close has started). */
int nh_session_on_bytes(nh_session_t *s, const uint8_t *data, size_t len);
/* The transport heard from the peer (anything, control frames included): life for the
 * heartbeat. */
void nh_session_heard(nh_session_t *s);
/* The connection closes once what is queued has left: the session's timeouts stop. */
void nh_session_on_conn_draining(nh_session_t *s);
/* The connection is closing: no more sends. */
void nh_session_on_conn_closing(nh_session_t *s);
/* The connection is gone: the closed event goes up, the session is freed. */
void nh_session_on_conn_gone(nh_session_t *s);

/* Called by the host's sweep: heartbeats and timeouts of the sessions they are due for. Each
 * session waits in the host's session_wheel for its next deadline (handshake timeout, packet
 * timeout, heartbeat timeout, next heartbeat), so a sweep costs what is due, not every session. */
void nh_session_sweep(nh_host_t *h, uint64_t now);
/* (Re)builds the wheel for the host's sweep period and timeouts (host->sweep_period, cfg) and
 * places every session in it. Returns 0 or -ENOMEM (the old wheel is kept). */
int nh_session_sweep_configure(nh_host_t *h);

#endif
