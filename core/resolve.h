/* resolve — a host name to one numeric address, off the loop thread (uv_getaddrinfo on libuv's
 * pool), for the database clients: hiredis and libpq would call a blocking getaddrinfo on the
 * loop thread when given a name.
 *
 * The address given is the first IPv4 one, else the first IPv6 one.
 * nh_resolve_start() either fails at once (returns a negative uv error; no callback) or calls
 * cb exactly once, later, from the loop: status 0 and the address as text, or a negative uv
 * error (UV_ECANCELED after nh_resolve_cancel). The request frees itself after the callback.
 */
#ifndef NH_RESOLVE_H
#define NH_RESOLVE_H

#include <uv.h>

typedef struct nh_resolve nh_resolve_t;
typedef void (*nh_resolve_cb)(void *data, int status, const char *ip);

/* 1 if host is already a numeric IPv4 or IPv6 address. */
int nh_resolve_is_numeric(const char *host);

int nh_resolve_start(uv_loop_t *loop, const char *host, nh_resolve_cb cb, void *data,
                     nh_resolve_t **out);

/* Asks libuv to drop the lookup if it has not started; the callback still runs (once). */
void nh_resolve_cancel(nh_resolve_t *r);

#endif
