#include "nats_link.h"

#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <nats/nats.h>

/* Something that arrived on a cnats thread, waiting for the loop thread. */
typedef struct item {
    struct item *next;
    uint64_t sub_id; /* 0: an event */
    int event;
    char *subject, *reply; /* point into data's allocation */
    size_t len;
    uint8_t data[]; /* the payload, then subject\0, then reply\0 (or the event's text\0) */
} item_t;

/* A subscription's closure: lives until the link is freed (cnats may still be inside a handler
 * when a subscription is destroyed). */
typedef struct sub {
    struct sub *next;
    nh_nats_t *n;
    natsSubscription *s; /* NULL once unsubscribed */
    uint64_t id;
} sub_t;

struct nh_nats {
    uv_async_t async; /* first: the handle's address is the link's */
    nh_nats_callbacks_t cb;
    natsConnection *nc;
    natsOptions *opts;
    uv_mutex_t mu; /* guards the queue and `closing`, taken by cnats' threads */
    item_t *head, *tail;
    int closing;
    size_t queued, max_queued; /* bytes in the queue, and the bound */
    int dropping;              /* an episode of drops is under way (one event for it) */
    sub_t *subs;
    uint64_t next_sub;
    _Atomic int connected;
    _Atomic uint64_t delivered, slow;
    /* The link is freed when both the loop side (async handle closed) and cnats (closed
     * callback) have let go of it. */
    _Atomic int refs;
};

static void release(nh_nats_t *n) {
    if (atomic_fetch_sub(&n->refs, 1) != 1) return;
    for (item_t *it = n->head, *next; it; it = next) {
        next = it->next;
        free(it);
    }
    for (sub_t *s = n->subs, *next; s; s = next) {
        next = s->next;
        free(s);
    }
    uv_mutex_destroy(&n->mu);
    free(n);
}

/* cnats threads: copy and queue, then wake the loop. */
static void queue_event(nh_nats_t *n, int event, const char *text);

static void enqueue(nh_nats_t *n, item_t *it) {
    uv_mutex_lock(&n->mu);
    if (n->closing) {
        uv_mutex_unlock(&n->mu);
        free(it);
        return;
    }
    if (it->sub_id && n->queued + it->len > n->max_queued) { /* the loop is not draining */
        int first = !n->dropping;
        n->dropping = 1;
        uv_mutex_unlock(&n->mu);
        free(it);
        atomic_fetch_add(&n->slow, 1);
        if (first)
            queue_event(n, NH_NATS_ERROR,
                        "Slow Consumer: the loop thread is not draining "
                        "messages; dropping them");
        return;
    }
    n->queued += it->len;
    if (n->tail)
        n->tail->next = it;
    else
        n->head = it;
    n->tail = it;
    uv_mutex_unlock(&n->mu);
    uv_async_send(&n->async); /* the one libuv call that is safe from another thread */
}

static void queue_event(nh_nats_t *n, int event, const char *text) {
    size_t tl = strlen(text);
    item_t *it = calloc(1, sizeof *it + tl + 1);
    if (!it) return;
    it->event = event;
    memcpy(it->data, text, tl + 1);
    enqueue(n, it);
}

static void on_nats_msg(natsConnection *nc, natsSubscription *s, natsMsg *msg, void *closure) {
    (void)nc, (void)s;
    sub_t *sub = closure;
    const char *subject = natsMsg_GetSubject(msg), *reply = natsMsg_GetReply(msg);
    size_t len = (size_t)natsMsg_GetDataLength(msg);
    size_t sl = strlen(subject), rl = reply ? strlen(reply) : 0;
    item_t *it = malloc(sizeof *it + len + sl + 1 + rl + 1);
    if (it) {
        it->next = NULL;
        it->sub_id = sub->id;
        it->event = 0;
        it->len = len;
        memcpy(it->data, natsMsg_GetData(msg), len);
        it->subject = (char *)it->data + len;
        memcpy(it->subject, subject, sl + 1);
        it->reply = NULL;
        if (reply) {
            it->reply = it->subject + sl + 1;
            memcpy(it->reply, reply, rl + 1);
        }
        enqueue(sub->n, it);
    }
    natsMsg_Destroy(msg);
}

static void on_connected(natsConnection *nc, void *closure) {
    (void)nc;
    nh_nats_t *n = closure;
    atomic_store(&n->connected, 1);
    queue_event(n, NH_NATS_CONNECTED, "connected");
}

static void on_disconnected(natsConnection *nc, void *closure) {
    (void)nc;
    nh_nats_t *n = closure;
    atomic_store(&n->connected, 0);
    queue_event(n, NH_NATS_DISCONNECTED, "disconnected");
}

static void on_reconnected(natsConnection *nc, void *closure) {
    (void)nc;
    nh_nats_t *n = closure;
    atomic_store(&n->connected, 1);
    queue_event(n, NH_NATS_RECONNECTED, "reconnected");
}

static void on_closed(natsConnection *nc, void *closure) {
    (void)nc;
    nh_nats_t *n = closure;
    atomic_store(&n->connected, 0);
    queue_event(n, NH_NATS_CLOSED, "closed");
    release(n); /* cnats' reference */
}

static void on_error(natsConnection *nc, natsSubscription *s, natsStatus err, void *closure) {
    (void)nc, (void)s;
    nh_nats_t *n = closure;
    if (err == NATS_SLOW_CONSUMER) atomic_fetch_add(&n->slow, 1);
    char text[160];
    snprintf(text, sizeof text, "%s", natsStatus_GetText(err));
    queue_event(n, NH_NATS_ERROR, text);
}

/* The loop thread: everything queued so far, in order. */
static void on_async(uv_async_t *a) {
    nh_nats_t *n = (nh_nats_t *)a;
    uv_mutex_lock(&n->mu);
    item_t *it = n->head;
    n->head = n->tail = NULL;
    n->queued = 0;
    n->dropping = 0;
    uv_mutex_unlock(&n->mu);
    while (it) {
        item_t *next = it->next;
        int closing;
        uv_mutex_lock(&n->mu);
        closing = n->closing;
        uv_mutex_unlock(&n->mu);
        if (!closing) {
            if (it->event) {
                n->cb.on_event(n->cb.ud, it->event, (const char *)it->data);
            } else {
                int live = 0;
                for (sub_t *s = n->subs; s; s = s->next)
                    if (s->id == it->sub_id) live = s->s != NULL;
                if (live) {
                    atomic_fetch_add(&n->delivered, 1);
                    n->cb.on_msg(n->cb.ud, it->sub_id, it->subject, it->reply, it->data, it->len);
                }
            }
        }
        free(it);
        it = next;
    }
}

static void fail(char *err, size_t errlen, const char *what, natsStatus s) {
    snprintf(err, errlen, "%s: %s", what, natsStatus_GetText(s));
}

int nh_nats_open(uv_loop_t *loop, const nh_nats_opts_t *o, const nh_nats_callbacks_t *cb,
                 nh_nats_t **out, char *err, size_t errlen) {
    *out = NULL;
    nh_nats_t *n = calloc(1, sizeof *n);
    if (!n) {
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    n->cb = *cb;
    n->refs = 1;
    n->max_queued = o->max_queued ? o->max_queued : 64u << 20;
    if (uv_mutex_init(&n->mu) != 0) {
        free(n);
        snprintf(err, errlen, "mutex");
        return -1;
    }
    natsStatus s = natsOptions_Create(&n->opts);
    if (s == NATS_OK) s = natsOptions_SetURL(n->opts, o->url);
    if (s == NATS_OK && o->name) s = natsOptions_SetName(n->opts, o->name);
    if (s == NATS_OK) s = natsOptions_SetMaxReconnect(n->opts, -1); /* for ever */
    if (s == NATS_OK)
        s = natsOptions_SetReconnectWait(n->opts,
                                         o->reconnect_wait_ms > 0 ? o->reconnect_wait_ms : 250);
    if (s == NATS_OK) s = natsOptions_SetPingInterval(n->opts, o->ping_ms > 0 ? o->ping_ms : 2000);
    if (s == NATS_OK) s = natsOptions_SetMaxPingsOut(n->opts, 2);
    if (s == NATS_OK) s = natsOptions_SetTimeout(n->opts, 2000);
    if (s == NATS_OK) s = natsOptions_SetRetryOnFailedConnect(n->opts, true, on_connected, n);
    if (s == NATS_OK) s = natsOptions_SetDisconnectedCB(n->opts, on_disconnected, n);
    if (s == NATS_OK) s = natsOptions_SetReconnectedCB(n->opts, on_reconnected, n);
    if (s == NATS_OK) s = natsOptions_SetClosedCB(n->opts, on_closed, n);
    if (s == NATS_OK) s = natsOptions_SetErrorHandler(n->opts, on_error, n);
    if (s == NATS_OK)
        s = natsOptions_SetMaxPendingMsgs(n->opts,
                                          o->max_pending_msgs > 0 ? o->max_pending_msgs : 65536);
    if (s != NATS_OK) {
        fail(err, errlen, "options", s);
        natsOptions_Destroy(n->opts);
        uv_mutex_destroy(&n->mu);
        free(n);
        return -1;
    }
    if (uv_async_init(loop, &n->async, on_async) != 0) {
        snprintf(err, errlen, "async handle");
        natsOptions_Destroy(n->opts);
        uv_mutex_destroy(&n->mu);
        free(n);
        return -1;
    }
    /* The handle stays referenced: a backend with no listener runs for as long as it is in the
     * cluster (nh_nats_close lets the loop end). */
    n->refs = 2; /* the loop's, and cnats' until its closed callback */
    s = natsConnection_Connect(&n->nc, n->opts);
    if (s == NATS_OK) {
        atomic_store(&n->connected, 1);
        queue_event(n, NH_NATS_CONNECTED, "connected");
    } else if (s != NATS_NOT_YET_CONNECTED) {
        fail(err, errlen, o->url, s);
        n->refs = 1; /* no connection: cnats holds nothing */
        nh_nats_close(n);
        return -1;
    }
    *out = n;
    return 0;
}

int nh_nats_publish(nh_nats_t *n, const char *subject, const char *reply, const void *data,
                    size_t len, char *err, size_t errlen) {
    natsStatus s = reply ? natsConnection_PublishRequest(n->nc, subject, reply, data, (int)len)
                         : natsConnection_Publish(n->nc, subject, data, (int)len);
    if (s == NATS_OK) return 0;
    fail(err, errlen, "publish", s);
    return -1;
}

int nh_nats_subscribe(nh_nats_t *n, const char *subject, const char *queue, uint64_t *sub_id,
                      char *err, size_t errlen) {
    sub_t *sub = calloc(1, sizeof *sub);
    if (!sub) {
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    sub->n = n;
    sub->id = ++n->next_sub;
    natsStatus s =
        queue ? natsConnection_QueueSubscribe(&sub->s, n->nc, subject, queue, on_nats_msg, sub)
              : natsConnection_Subscribe(&sub->s, n->nc, subject, on_nats_msg, sub);
    if (s != NATS_OK) {
        fail(err, errlen, subject, s);
        free(sub);
        return -1;
    }
    sub->next = n->subs;
    n->subs = sub;
    *sub_id = sub->id;
    return 0;
}

void nh_nats_unsubscribe(nh_nats_t *n, uint64_t sub_id) {
    for (sub_t *s = n->subs; s; s = s->next) {
        if (s->id == sub_id && s->s) {
            natsSubscription_Unsubscribe(s->s);
            natsSubscription_Destroy(s->s);
            s->s = NULL;
        }
    }
}

int nh_nats_connected(const nh_nats_t *n) {
    return atomic_load(&((nh_nats_t *)n)->connected);
}

void nh_nats_counts(const nh_nats_t *n, uint64_t *delivered, uint64_t *slow) {
    nh_nats_t *m = (nh_nats_t *)n;
    *delivered = atomic_load(&m->delivered);
    *slow = atomic_load(&m->slow);
}

static void on_async_closed(uv_handle_t *h) {
    release((nh_nats_t *)h);
}

void nh_nats_close(nh_nats_t *n) {
    uv_mutex_lock(&n->mu);
    int was = n->closing;
    n->closing = 1;
    uv_mutex_unlock(&n->mu);
    if (was) return;
    for (sub_t *s = n->subs; s; s = s->next) {
        if (s->s) {
            natsSubscription_Unsubscribe(s->s);
            natsSubscription_Destroy(s->s);
            s->s = NULL;
        }
    }
    if (n->nc) {
        natsConnection_Close(n->nc); /* its closed callback releases cnats' reference */
        natsConnection_Destroy(n->nc);
        n->nc = NULL;
    }
    natsOptions_Destroy(n->opts);
    n->opts = NULL;
    uv_close((uv_handle_t *)&n->async, on_async_closed);
}
