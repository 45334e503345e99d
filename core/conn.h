/* conn — listening sockets and client connections, with batched writes.
 *
 * A listener accepts connections and gives each the listener's transport (transport_tcp.c: the
 * raw packet stream; transport_ws.c: WebSocket). conn is the socket, the output queue, the
 * limits and closing, shared by all transports; it knows nothing of what the bytes mean. It
 * reports to its transport (nh_transport_t): opened, bytes read, draining, closing, gone. The
 * transport owns what sits above it (the session) and frames outgoing packets.
 *
 * Sockets: libuv only says when a socket is ready (a uv_poll_t on each); conn accepts, reads
 * (recv) and writes (send, sendmsg) itself. libuv's streams read with read(2), the file layer's
 * longer path, and cost more per read and more per connection (docs/benchmarks.md, fifteenth
 * pass). A connection waits for readability while it reads, and for writability only while the
 * kernel's send buffer is full.
 *
 * Writes never go straight to the socket: they are queued, and every dirty connection's queue is
 * written once per loop turn, after the I/O callbacks (every ready socket read and handled: the
 * responses, pushes and broadcasts they produced) and before the loop blocks, oldest first, so
 * the messages of one turn leave in one sendmsg per connection. While a handler's
 * output grows past NH_EARLY_FLUSH bytes the queue is also tried (non-blocking) every further
 * NH_EARLY_FLUSH bytes, so a reading client drains a burst while it is being produced.
 *
 * Send limit: every byte queued counts (packets, pongs, close frames, HTTP replies, kicks). A
 * queue may hold send_limit bytes, plus one message that is bigger than the limit by itself (so
 * it can be sent; it is bounded by the packet limit). Past that the connection is cut off at
 * once: what is queued is dropped, not drained, and the socket is reset (RST), so neither the
 * queue nor the kernel's send buffer is held for a peer that does not read. A queue the kernel
 * stopped taking is detached from the shared arena (buffer.h), so the bytes counted are the
 * memory held.
 *
 * TLS (a listener with a context) sits under every transport: what arrives is decrypted before
 * the transport sees it, and the transport's queue is encrypted when it is flushed, so limits,
 * batching and closing work the same (the send limit counts both queues).
 *
 * Close deadlines: a connection closing once its queue has left (nh_conn_close_after_flush)
 * is closed anyway after handshake_timeout by nh_conn_sweep (the host's sweep calls it), so a
 * peer that stops reading cannot keep it (and its queue and its max_conns slot) for ever.
 *
 * Ownership: the host owns listeners and connections. nh_conn_close() is idempotent; the memory
 * is freed in the uv close callback, after the transport has been told (on_gone).
 */
#ifndef NH_CONN_H
#define NH_CONN_H

#include <stddef.h>
#include <stdint.h>
#include <uv.h>

#include "buffer.h"
#include "log.h"
#include "tls.h"

typedef struct nh_host nh_host_t;
typedef struct nh_conn nh_conn_t;
typedef struct nh_drain nh_drain_t;
typedef struct nh_listener nh_listener_t;

/* What a connection reports to its transport, and asks of it. Every callback but on_open may be
 * NULL. */
typedef struct nh_transport {
    const char *name; /* "tcp", "ws": also the URL scheme in log lines */
    /* After accept. Returns 0 or a negative error (the connection is closed). */
    int (*on_open)(nh_conn_t *c);
    /* Bytes from the socket; data may be modified in place. Returns 0, or negative to close. */
    int (*on_read)(nh_conn_t *c, uint8_t *data, size_t len);
    /* Writes the bytes that must precede a packet of `len` bytes into out (<= 16 bytes);
     * returns their count. NULL when packets go out bare. */
    size_t (*frame_header)(nh_conn_t *c, uint8_t *out, size_t len);
    /* nh_conn_close_after_flush started: nothing more reaches the transport (what the peer
     * still sends is read and dropped, so that the close is not a reset); what is queued leaves,
     * then the connection closes (on_closing follows). */
    void (*on_draining)(nh_conn_t *c);
    /* Called once when closing starts: nothing more is read. may_send: the transport may queue
     * a last frame (WebSocket close); 0 when the connection was cut off. */
    void (*on_closing)(nh_conn_t *c, int may_send);
    /* The connection is gone (its close callback): the transport tells what sits above and
     * frees its state. */
    void (*on_gone)(nh_conn_t *c);
    /* The queue has drained (everything queued was written): a transport streaming a reply
     * (a static file) queues its next part. Not called once closing has started. */
    void (*on_drained)(nh_conn_t *c);
    /* The id log lines name for this connection (its session's), 0 when there is none. */
    uint64_t (*log_id)(const nh_conn_t *c);
} nh_transport_t;

struct nh_listener {
    uv_poll_t poll; /* first: the handle's address is the listener's */
    int fd;         /* the listening socket; -1 once closed */
    nh_host_t *host;
    const nh_transport_t *transport;
    nh_listener_t *next;
    int id;
    char addr[128];  /* as given to nh_listener_start, e.g. "127.0.0.1:3250" */
    char bound[128]; /* the address actually bound (port 0 resolved) */
    /* The transport's options (transport_ws.h: paths, static folders, origin check), owned by
     * the listener: freed with opts_free when the listener is freed. NULL: none. */
    void *opts;
    void (*opts_free)(void *opts);
    /* Connections accepted here that are still open, and whether the handle has closed: the
     * listener is freed when both are done, because a connection still reads the transport's
     * options until it has upgraded (nh_listener_close may come first). */
    uint32_t conns;
    int handle_closed;
    /* TLS under the transport (NULL: plain). Swapped by a reload; each connection holds a
     * reference to the one it was accepted with. */
    nh_tls_ctx_t *tls;
};

enum nh_conn_flags {
    NH_CONN_CLOSING = 1,
    NH_CONN_DIRTY = 2,
    NH_CONN_WRITING = 4, /* the kernel's send buffer is full: waiting for it to take more */
    NH_CONN_COUNTED = 8, /* counted in host->nconns */
    NH_CONN_CUT = 16,    /* over the send limit: queue dropped, socket reset, nothing more sent */
    NH_CONN_BIG = 32,    /* the queue reached NH_TRIM_AFTER since it was last empty */
    NH_CONN_WIRE = 64,   /* a TLS ciphertext queue follows the struct (nh_conn_wire) */
    /* transport_ws.c: tstate is the session itself (the WebSocket state was given back between
     * frames: an idle connection keeps none), and the close frame has been sent */
    NH_CONN_WS_IDLE = 128,
    NH_CONN_WS_CLOSE_SENT = 256,
    /* what the poll handle waits for (conn.c's watch) */
    NH_CONN_POLL_READ = 512,
    NH_CONN_POLL_WRITE = 1024,
    /* closing after a flush, the peer's end of the stream (or an error) was read: nothing more
     * to read and drop */
    NH_CONN_PEER_DONE = 2048,
    NH_CONN_READ_QUEUED = 4096, /* in host->readable: read with the turn's other reads */
};

/* Queue growth between two non-blocking write attempts while a handler produces output. */
#define NH_EARLY_FLUSH (64 * 1024)
/* A queue that grew this big is followed by a malloc_trim once it has drained or closed. */
#define NH_TRIM_AFTER (1024 * 1024)

/* Every idle connection holds one (docs/benchmarks.md, "Connection scale"): what is needed only
 * sometimes lives elsewhere — the TLS ciphertext queue after the struct on TLS connections, the
 * drain list's node while closing after a flush. The transport is the listener's
 * (c->listener->transport: the listener outlives its connections). */
struct nh_conn {
    uv_poll_t poll; /* first: uv handle → conn by cast */
    nh_host_t *host;
    nh_listener_t *listener;
    void *tstate;  /* the transport's state: its first 128 bytes are prefetched on each event */
    nh_outq_t out; /* what the transport queued; over TLS, plaintext not yet encrypted */
    nh_tls_t *tls; /* NULL on a plain connection */
    nh_conn_t *dirty_next;
    /* in host->draining while closing once the queue has left (close_after_flush), for
     * nh_conn_sweep: links and deadline, malloc'd then */
    nh_drain_t *drain;
    int fd;                    /* the socket; -1 once closed */
    uint16_t flags;            /* enum nh_conn_flags */
    uint8_t close_after_flush; /* close once everything queued is written (kick, HTTP replies) */
    uint8_t close_reason;      /* enum nh_metrics_close_reason: the first reason given wins */
    /* largest single message over the send limit queued since the queue was last empty: 32 bits
     * are enough, a message is a packet (at most 16 MiB) or a Lua string (under 2 GiB) */
    uint32_t big_msg;
    uint32_t stalled_turn; /* flush turn since which the kernel has not taken everything; 0 */
    size_t early_flush_at; /* queue size at which the next non-blocking write is tried */
};

/* TLS only (NULL on a plain connection): ciphertext waiting for the socket. */
static inline nh_outq_t *nh_conn_wire(const nh_conn_t *c) {
    return (c->flags & NH_CONN_WIRE) ? (nh_outq_t *)(void *)((nh_conn_t *)c + 1) : NULL;
}

/* Parses "host:port", ":port", "[v6]:port" and binds + listens. `l` is malloc'd by the caller
 * (zeroed, transport and its options filled in); from here on the host owns it: on success it is
 * linked into the host, on failure it is freed. Returns 0 or a negative uv error. */
int nh_listener_start(nh_host_t *h, nh_listener_t *l, const char *addr);
void nh_listener_close(nh_listener_t *l);

/* Queues one packet: head (copied) followed by body (copied, or referenced from `shared` when it
 * is not NULL and the body is large enough to be worth sharing). Returns 0, UV_EPIPE when the
 * connection is closing, or UV_ENOBUFS when the send limit was exceeded (the connection is then
 * being closed). */
int nh_conn_send(nh_conn_t *c, const uint8_t *head, size_t head_len, nh_buf_t *shared,
                 const uint8_t *body, size_t body_len);
/* Queues raw bytes with no framing (HTTP responses, WebSocket control frames). They count
 * against the send limit like packets: UV_ENOBUFS when it was exceeded (cut off), UV_EPIPE when
 * the connection is already closed. */
int nh_conn_send_raw(nh_conn_t *c, const void *data, size_t len);
/* The same by reference: b->data[off, off+len) is queued, b gets a reference. */
int nh_conn_send_raw_shared(nh_conn_t *c, nh_buf_t *b, size_t off, size_t len);

/* Starts closing: the transport may queue a last frame, what is queued gets one last try to
 * leave, then the socket closes. `reason` is logged at debug level (NULL: nothing). */
void nh_conn_close(nh_conn_t *c, const char *reason) NH_COLD;
/* Close once the queue has drained (or right away if it is empty), or after handshake_timeout
 * if the peer does not read it (nh_conn_sweep enforces that). */
void nh_conn_close_after_flush(nh_conn_t *c) NH_COLD;
/* Why the connection closes, for the close metrics (enum nh_metrics_close_reason), unless a
 * reason was given already: the first one wins. */
void nh_conn_set_close_reason(nh_conn_t *c, int reason);
/* Closes every connection of the host (nh_conn_close with this reason): the host's stop, for
 * connections that have no session (a WebSocket listener's plain HTTP requests). */
void nh_conn_close_all(nh_host_t *h, const char *reason);
/* Called by the host's sweep: closes the draining connections past their deadline. */
void nh_conn_sweep(nh_host_t *h, uint64_t now);

/* Closes the descriptor kept in reserve for shedding connections when out of descriptors. */
void nh_conn_release_reserve(nh_host_t *h);

/* Reads the connections the poll found readable this turn, in one batch (io_batch.h), and hands
 * what each got to its transport (called by the host after the poll, before the flush). */
void nh_conn_read_queued(nh_host_t *h);
/* Frees the host's I/O batch, read queue and read buffers (made at its first I/O): at the host's
 * end, once every connection has closed. */
void nh_conn_io_free(nh_host_t *h);
/* Flushes every dirty connection of the host (called by the host each loop turn). */
void nh_conn_flush_all(nh_host_t *h);

/* "host:port", ":port" (every interface), "[v6]:port" into ss; 0 or UV_EINVAL. */
int nh_parse_addr(const char *addr, struct sockaddr_storage *ss);
/* "ip:port" or "[ip6]:port" of an address into out; returns 0. */
int nh_format_addr(const struct sockaddr *sa, char *out, size_t len);

/* "ip:port" of the peer into out; returns 0 or a negative uv error. */
int nh_conn_peer(const nh_conn_t *c, char *out, size_t len);
/* "<transport> <peer> session <id>", the way log lines name a connection, into out. */
const char *nh_conn_describe(const nh_conn_t *c, char *out, size_t len);

#endif
