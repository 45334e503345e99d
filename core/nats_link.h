/* nats_link — one NATS connection (cnats) whose messages and events arrive on the loop thread.
 *
 * cnats runs its own threads: the socket reader, and per-subscription delivery threads that call
 * message handlers. None of them may touch Lua or the host, so their callbacks only copy what
 * arrived into a queue (a mutex and a list) and wake the loop with uv_async_send. The loop
 * thread drains the queue in order and calls the owner's callbacks (on_msg, on_event) there.
 *
 * Publishing from the loop thread never blocks: natsConnection_Publish buffers, and while the
 * server is away cnats keeps what is published in its reconnect buffer (bounded; past it,
 * publish fails and the caller is told).
 *
 * Connecting: nh_nats_open returns at once. If the server is not there yet, cnats retries in the
 * background (and reconnects for ever after a disconnect, every reconnect_wait); each change is
 * an event: NH_NATS_CONNECTED, NH_NATS_DISCONNECTED, NH_NATS_RECONNECTED, NH_NATS_CLOSED, and
 * NH_NATS_ERROR for asynchronous errors such as a slow consumer (the text says which).
 * A loop thread that does not drain (a stuck handler) must not make the queue grow without
 * bound: past max_queued bytes, messages are dropped, counted as slow-consumer drops, and one
 * NH_NATS_ERROR event per episode says so.
 *
 * Ownership: nh_nats_close() stops delivery at once (nothing is called after it returns),
 * closes the connection and frees everything once the async handle's close callback has run.
 */
#ifndef NH_NATS_LINK_H
#define NH_NATS_LINK_H

#include <stddef.h>
#include <stdint.h>
#include <uv.h>

typedef struct nh_nats nh_nats_t;

enum nh_nats_event {
    NH_NATS_CONNECTED = 1,
    NH_NATS_DISCONNECTED,
    NH_NATS_RECONNECTED,
    NH_NATS_CLOSED,
    NH_NATS_ERROR,
};

typedef struct nh_nats_callbacks {
    /* A message for subscription sub_id. subject and reply are NUL-terminated (reply NULL when
     * none); data is valid only during the call. */
    void (*on_msg)(void *ud, uint64_t sub_id, const char *subject, const char *reply,
                   const uint8_t *data, size_t len);
    void (*on_event)(void *ud, int event, const char *text);
    void *ud;
} nh_nats_callbacks_t;

typedef struct nh_nats_opts {
    const char *url;       /* "nats://127.0.0.1:4222" (a comma-separated list is accepted) */
    const char *name;      /* shown by the server (connz) */
    int reconnect_wait_ms; /* between attempts (default 250) */
    int ping_ms;           /* how often the client pings the server (default 2000) */
    int max_pending_msgs;  /* per subscription before the slow-consumer error (default 65536) */
    size_t max_queued;     /* bytes waiting for the loop thread (default 64 MiB); past it
                            * messages are dropped and counted as a slow consumer */
} nh_nats_opts_t;

/* Starts connecting. 0, or -1 with the reason in err (a bad URL, out of memory). */
int nh_nats_open(uv_loop_t *loop, const nh_nats_opts_t *o, const nh_nats_callbacks_t *cb,
                 nh_nats_t **out, char *err, size_t errlen);

/* 0, or -1 with the reason in err (not connected and the reconnect buffer full, closed...). */
int nh_nats_publish(nh_nats_t *n, const char *subject, const char *reply, const void *data,
                    size_t len, char *err, size_t errlen);
/* Subscribes (with a queue group when queue is not NULL: one member of the group gets each
 * message). *sub_id names it in on_msg. 0 or -1 with err. */
int nh_nats_subscribe(nh_nats_t *n, const char *subject, const char *queue, uint64_t *sub_id,
                      char *err, size_t errlen);
/* No more messages for sub_id are delivered (even ones already queued). */
void nh_nats_unsubscribe(nh_nats_t *n, uint64_t sub_id);
/* Whether the connection is up now. */
int nh_nats_connected(const nh_nats_t *n);
/* Counters: messages delivered to the loop, slow-consumer errors seen. */
void nh_nats_counts(const nh_nats_t *n, uint64_t *delivered, uint64_t *slow);
void nh_nats_close(nh_nats_t *n);

#endif
