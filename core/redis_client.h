/* redis_client — one Redis connection on the host's libuv loop (hiredis 0.14 async API).
 *
 * Mechanism only: connect, send a command, hand each reply to the owner, tell the owner when the
 * connection is gone. No Lua here (lua_redis.c maps replies to Lua; lua/nano/redis.lua does
 * reconnects, timeouts and waiting). Pipelining is hiredis's: commands sent while earlier ones
 * wait are written behind them and their replies come back in order.
 *
 * Why our own uv_poll glue and not hiredis/adapters/libuv.h: the 0.14.1 adapter ignores a poll
 * error (the connection would hang instead of failing), leaks its struct when uv_poll_init fails,
 * and frees its handle where we cannot tell when. Here the poll handle is embedded in the
 * connection, so one close callback ends both.
 *
 * Life: nh_redis_connect() → events.on_connect(ok) → on_reply()/on_push() → the connection ends
 * (server gone, connect failed, or nh_redis_close()) → every pending command gets on_reply with
 * reply NULL and the reason → the poll handle closes → events.on_gone(reason) is the last call,
 * from the loop, and the struct is freed right after it returns. After nh_redis_close() no
 * callback but on_gone runs (the owner fails its pending calls itself), so close may be called
 * from anywhere, including inside a callback.
 *
 * The poll handle keeps the loop alive only while the connection is connecting or awaits
 * replies: an idle client (or a subscriber) does not hold a stopping nano-host up.
 *
 * Host names are resolved first on libuv's pool (resolve.c): hiredis would call a blocking
 * getaddrinfo on the loop thread. A failed lookup is reported like a failed connect. Commands are
 * refused ("not connected yet") until the lookup is done: send them after on_connect.
 */
#ifndef NH_REDIS_CLIENT_H
#define NH_REDIS_CLIENT_H

#include <stddef.h>
#include <stdint.h>
#include <uv.h>

#include <hiredis/hiredis.h>

typedef struct nh_redis nh_redis_t;

typedef struct nh_redis_events {
    /* The TCP connection is up (ok = 1) or failed (ok = 0, err says why; on_gone follows). */
    void (*on_connect)(nh_redis_t *c, void *data, int ok, const char *err);
    /* The reply to command `id`; reply NULL: no reply will come, err says why. The reply is
     * hiredis's and valid only during the call. */
    void (*on_reply)(nh_redis_t *c, void *data, uint64_t id, const redisReply *reply,
                     const char *err);
    /* A message on a subscription (pub/sub arrays: "subscribe"/"message"/...). */
    void (*on_push)(nh_redis_t *c, void *data, const redisReply *reply);
    /* The last call: the connection is closed and the struct about to be freed. */
    void (*on_gone)(nh_redis_t *c, void *data, const char *reason);
} nh_redis_events_t;

/* Starts connecting to host:port, or to the unix socket `path` when path is not NULL. 0 and *out
 * set, or -1 with err filled (nothing to free, no callback will run). */
int nh_redis_connect(uv_loop_t *loop, const char *host, int port, const char *path,
                     const nh_redis_events_t *events, void *data, nh_redis_t **out, char *err,
                     size_t errlen);

/* Queues a command (argv of argc binary-safe strings); its reply goes to on_reply with `id`.
 * May be called before on_connect once the host is resolved (hiredis buffers it). 0, or -1 with err
 * filled when the connection is closing (no callback will run for it). */
int nh_redis_command(nh_redis_t *c, int argc, const char **argv, const size_t *lens, uint64_t id,
                     char *err, size_t errlen);

/* SUBSCRIBE/PSUBSCRIBE/UNSUBSCRIBE...: every reply and message goes to on_push. 0 or -1. */
int nh_redis_subscribe(nh_redis_t *c, int argc, const char **argv, const size_t *lens, char *err,
                       size_t errlen);

/* Closes now (idempotent): pending commands are dropped without callbacks, on_gone follows. */
void nh_redis_close(nh_redis_t *c);

#endif
