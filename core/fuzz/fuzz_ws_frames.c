/* fuzz_ws_frames — the frame parser over random split points.
 *
 * Input: byte 0 picks max_frame, whether on_ping stops the parser and whether text frames are
 * refused (as the host does), bytes 1-2 seed the split points, the rest is the client byte stream.
 * The stream is parsed twice, whole and split; both must give the same callbacks (as one
 * transcript, so chunk boundaries do not matter) and the same result. Callback arguments are
 * checked against the contract on the way.
 */
#include "ws.h"

#include <stdlib.h>
#include <string.h>

typedef struct run {
    uint64_t hash; /* FNV-1a over the transcript */
    uint64_t data_bytes;
    int stop_on_ping;
    int in_message; /* on_data seen since the last fin */
    const nh_ws_parser_t *parser;
} run_t;

static void mix(run_t *r, const uint8_t *p, size_t n) {
    for (size_t i = 0; i < n; i++)
        r->hash = (r->hash ^ p[i]) * 0x100000001b3ull;
}

static void tag(run_t *r, uint8_t t) {
    mix(r, &t, 1);
}

static int on_data(void *ud, const uint8_t *data, size_t len, int fin) {
    run_t *r = ud;
    if (len == 0 && !fin) abort(); /* empty chunks only to carry fin */
    /* a refused text message never delivers a byte */
    if (r->parser->refuse_text && r->parser->msg_opcode == NH_WS_TEXT) abort();
    mix(r, data, len);
    r->data_bytes += len;
    r->in_message = !fin;
    if (fin) tag(r, 'F');
    return 0;
}

static int control(run_t *r, uint8_t t, const uint8_t *data, size_t len) {
    if (len > 125) abort();
    tag(r, t);
    uint8_t n = (uint8_t)len;
    mix(r, &n, 1);
    mix(r, data, len);
    return 0;
}

static int on_ping(void *ud, const uint8_t *data, size_t len) {
    run_t *r = ud;
    control(r, 'P', data, len);
    return r->stop_on_ping;
}

static int on_pong(void *ud, const uint8_t *data, size_t len) {
    return control(ud, 'O', data, len);
}

/* RFC 6455 7.4: the statuses a peer may send (1005 stands for "no status"). */
static int close_code_allowed(int code) {
    return (code >= 1000 && code <= 1003) || (code >= 1007 && code <= 1014) ||
           (code >= 3000 && code <= 4999) || code == 1005;
}

static int utf8_ok(const uint8_t *s, size_t n) {
    for (size_t i = 0; i < n;) {
        uint8_t c = s[i];
        size_t more = c < 0x80                 ? 0
                      : c >= 0xC2 && c <= 0xDF ? 1
                      : c >= 0xE0 && c <= 0xEF ? 2
                      : c >= 0xF0 && c <= 0xF4 ? 3
                                               : 9;
        if (more == 9 || n - i - 1 < more) return 0;
        for (size_t k = 1; k <= more; k++)
            if ((s[i + k] & 0xC0) != 0x80) return 0;
        if ((c == 0xE0 && s[i + 1] < 0xA0) || (c == 0xED && s[i + 1] > 0x9F) ||
            (c == 0xF0 && s[i + 1] < 0x90) || (c == 0xF4 && s[i + 1] > 0x8F))
            return 0;
        i += more + 1;
    }
    return 1;
}

static int on_close(void *ud, int code, const uint8_t *reason, size_t len) {
    if (!close_code_allowed(code) || len > 123) abort();
    if (code == 1005 && len != 0) abort();
    if (!utf8_ok(reason, len)) abort(); /* checked independently of ws.c's validator */
    uint8_t c[2] = {(uint8_t)(code >> 8), (uint8_t)code};
    control(ud, 'C', c, 2);
    mix(ud, reason, len);
    return 0;
}

static const nh_ws_callbacks_t cbs = {on_data, on_ping, on_pong, on_close};

static uint32_t next_rand(uint32_t *s) {
    *s ^= *s << 13;
    *s ^= *s >> 17;
    *s ^= *s << 5;
    return *s;
}

int LLVMFuzzerTestOneInput(const uint8_t *in, size_t size) {
    if (size < 3) return 0;
    static const uint64_t limits[4] = {0, 10, 300, UINT64_MAX};
    uint64_t max_frame = limits[in[0] & 3];
    int stop = (in[0] & 4) ? 7 : 0;
    int refuse_text = (in[0] & 8) != 0;
    uint32_t seed = (uint32_t)in[1] << 8 | in[2] | 0x10000u;
    in += 3;
    size -= 3;

    uint8_t *whole = malloc(size ? size : 1);
    uint8_t *split = malloc(size ? size : 1);
    memcpy(whole, in, size);
    memcpy(split, in, size);

    run_t a = {.hash = 0xcbf29ce484222325ull, .stop_on_ping = stop};
    run_t b = a;
    nh_ws_parser_t pa, pb;
    nh_ws_parser_init(&pa, max_frame);
    nh_ws_parser_init(&pb, max_frame);
    pa.refuse_text = pb.refuse_text = refuse_text;
    a.parser = &pa;
    b.parser = &pb;

    int rca = nh_ws_parser_feed(&pa, whole, size, &cbs, &a);

    int rcb = 0;
    size_t off = 0;
    while (rcb == 0 && off < size) {
        size_t left = size - off;
        uint32_t r = next_rand(&seed);
        /* mostly short pieces, sometimes empty, sometimes the rest */
        size_t n = (r & 7) == 0 ? left : (r >> 3) % 20;
        if (n > left) n = left;
        rcb = nh_ws_parser_feed(&pb, split + off, n, &cbs, &b);
        off += n;
    }

    if (rca != rcb || a.hash != b.hash || a.data_bytes != b.data_bytes) abort();
    if (a.data_bytes > size) abort();
    /* frame errors run from NH_EWS_UNMASKED down to NH_EWS_TEXT */
    if (rca != 0 && rca != stop && !(rca <= NH_EWS_UNMASKED && rca >= NH_EWS_TEXT)) abort();
    if (rca == NH_EWS_TEXT && (!pa.refuse_text || nh_ws_error_close_code(rca) != 1003)) abort();
    if (rca < 0 && nh_ws_error_close_code(rca) == 1011) abort();
    /* unmasking in place must agree too, up to where both stopped */
    if (rca == 0 && memcmp(whole, split, size) != 0) abort();

    nh_ws_parser_release(&pa);
    nh_ws_parser_release(&pb);
    free(whole);
    free(split);
    return 0;
}
