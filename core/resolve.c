/* resolve — see resolve.h for the contract. */
#include "resolve.h"

#include <stdlib.h>
#include <string.h>

struct nh_resolve {
    uv_getaddrinfo_t req;
    nh_resolve_cb cb;
    void *data;
};

int nh_resolve_is_numeric(const char *host) {
    struct sockaddr_in a4;
    struct sockaddr_in6 a6;
    return uv_ip4_addr(host, 0, &a4) == 0 || uv_ip6_addr(host, 0, &a6) == 0;
}

static void on_resolved(uv_getaddrinfo_t *req, int status, struct addrinfo *res) {
    nh_resolve_t *r = req->data;
    char ip[64] = "";
    if (status == 0) {
        /* The first IPv4 address, else the first one: "localhost" often lists ::1 first, and
         * servers started for loopback commonly bind 127.0.0.1 only. */
        struct addrinfo *pick = res;
        for (struct addrinfo *a = res; a; a = a->ai_next) {
            if (a->ai_family == AF_INET) {
                pick = a;
                break;
            }
        }
        if (pick->ai_family == AF_INET6)
            status = uv_ip6_name((struct sockaddr_in6 *)pick->ai_addr, ip, sizeof ip);
        else
            status = uv_ip4_name((struct sockaddr_in *)pick->ai_addr, ip, sizeof ip);
    }
    uv_freeaddrinfo(res);
    r->cb(r->data, status, status == 0 ? ip : NULL);
    free(r);
}

int nh_resolve_start(uv_loop_t *loop, const char *host, nh_resolve_cb cb, void *data,
                     nh_resolve_t **out) {
    nh_resolve_t *r = calloc(1, sizeof *r);
    if (!r) return UV_ENOMEM;
    r->cb = cb;
    r->data = data;
    r->req.data = r;
    struct addrinfo hints;
    memset(&hints, 0, sizeof hints);
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    int rc = uv_getaddrinfo(loop, &r->req, on_resolved, host, NULL, &hints);
    if (rc < 0) {
        free(r);
        return rc;
    }
    *out = r;
    return 0;
}

void nh_resolve_cancel(nh_resolve_t *r) {
    uv_cancel((uv_req_t *)&r->req);
}
