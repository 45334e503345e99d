/* fuzz_http — the upgrade request parser over random split points.
 *
 * Input: bytes 0-1 seed the split points, the rest is what a client sent. It is parsed whole and
 * split; both must agree on the result, the bytes consumed, every extracted field and the reason
 * an upgrade is refused (Host count, version). Strings
 * must stay NUL-terminated inside their arrays, and a valid upgrade must give an accept key.
 */
#include "ws.h"

#include <stdlib.h>
#include <string.h>

static uint32_t next_rand(uint32_t *s) {
    *s ^= *s << 13;
    *s ^= *s >> 17;
    *s ^= *s << 5;
    return *s;
}

static void check_terminated(const char *s, size_t cap) {
    if (memchr(s, '\0', cap) == NULL) abort();
}

static int same_fields(const nh_http_req_t *a, const nh_http_req_t *b) {
    return a->complete == b->complete && a->method == b->method && strcmp(a->path, b->path) == 0 &&
           strcmp(a->origin, b->origin) == 0 && strcmp(a->key, b->key) == 0 &&
           a->version == b->version && a->upgrade_websocket == b->upgrade_websocket &&
           a->connection_upgrade == b->connection_upgrade && a->bad_header == b->bad_header &&
           a->hosts == b->hosts && nh_http_req_check_upgrade(a) == nh_http_req_check_upgrade(b) &&
           nh_http_req_is_upgrade(a) == nh_http_req_is_upgrade(b);
}

int LLVMFuzzerTestOneInput(const uint8_t *in, size_t size) {
    if (size < 2) return 0;
    uint32_t seed = (uint32_t)in[0] << 8 | in[1] | 0x10000u;
    const char *data = (const char *)in + 2;
    size -= 2;

    static nh_http_req_t a, b;
    size_t ca;
    nh_http_req_init(&a);
    int rca = nh_http_req_feed(&a, data, size, &ca);

    nh_http_req_init(&b);
    int rcb = 0;
    size_t off = 0, cb = 0;
    while (rcb == 0 && off < size) {
        size_t left = size - off;
        uint32_t r = next_rand(&seed);
        size_t n = (r & 7) == 0 ? left : (r >> 3) % 40;
        if (n > left) n = left;
        size_t c;
        rcb = nh_http_req_feed(&b, data + off, n, &c);
        if (c > n || (rcb == 0 && c != n)) abort();
        cb += c;
        off += n;
    }

    if (rca != rcb || rca > 1 || (rca < 0 && rca != NH_EWS_HTTP && rca != NH_EWS_HTTP_TOO_BIG))
        abort();
    if (rca == 0 && (ca != size || cb != size)) abort();
    if (rca == 1 && (ca != cb || ca > NH_HTTP_MAX_HEAD || ca == 0)) abort();
    check_terminated(a.path, sizeof(a.path));
    check_terminated(a.origin, sizeof(a.origin));
    check_terminated(a.key, sizeof(a.key));
    check_terminated(b.path, sizeof(b.path));
    if (rca == 1 && !same_fields(&a, &b)) abort();

    int check = nh_http_req_check_upgrade(&a);
    if (check < NH_UPGRADE_OK || check > NH_UPGRADE_KEY) abort();
    if ((check == NH_UPGRADE_OK) != nh_http_req_is_upgrade(&a)) abort();
    if (rca == 1 && check == NH_UPGRADE_INCOMPLETE) abort();
    /* RFC 7230 5.4: never an upgrade without exactly one Host; version 13 only */
    if (check == NH_UPGRADE_OK && (a.hosts != 1 || a.version != 13)) abort();
    if (nh_http_req_is_upgrade(&a)) {
        char accept[29];
        if (nh_ws_accept_key(a.key, accept) != 0 || strlen(accept) != 28) abort();
    }
    return 0;
}
