/* fuzz_codec — libFuzzer target for the packet decoder and message decoder.
 *
 * The input is a raw wire stream (the seeds in corpus/codec/ are valid packets). It is fed three
 * ways — whole, in pseudo-random chunks, a byte at a time — and all three must deliver the same
 * packets and end the same way. Every data packet body is decoded as a message; a message that
 * decodes is re-encoded and decoded again and must come back the same.
 *
 *   clang -g -O1 -fsanitize=fuzzer,address,undefined -Icore core/codec.c core/fuzz/fuzz_codec.c
 */
#include "codec.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

typedef struct {
    uint64_t hash;
    size_t packets;
    size_t stop_at; /* stop with 1 at this packet (1-based), 0 = never */
} trace_t;

static uint64_t fnv(uint64_t h, const uint8_t *p, size_t n) {
    for (size_t i = 0; i < n; i++)
        h = (h ^ p[i]) * 0x100000001B3u;
    return h;
}

static int same_msg(const nh_msg_t *a, const nh_msg_t *b) {
    if (a->type != b->type || a->flags != b->flags || a->id != b->id ||
        a->route_compressed != b->route_compressed || a->route_code != b->route_code ||
        a->route_len != b->route_len || a->payload_len != b->payload_len)
        return 0;
    if (a->route_len && memcmp(a->route, b->route, a->route_len) != 0) return 0;
    return a->payload_len == 0 || memcmp(a->payload, b->payload, a->payload_len) == 0;
}

static void check_message(const uint8_t *body, size_t len) {
    nh_msg_t m;
    if (nh_msg_decode(body, len, &m) != 0) return;

    /* everything it points at lies inside the body */
    if (m.payload < body || m.payload + m.payload_len != body + len) __builtin_trap();
    if (m.route &&
        ((const uint8_t *)m.route < body || (const uint8_t *)m.route + m.route_len > m.payload))
        __builtin_trap();

    uint8_t *buf = malloc(NH_MSG_MAX_HEADER + m.payload_len + 1);
    if (!buf) return;
    int h = nh_msg_write_header(buf, &m);
    if (h < 0 || h > NH_MSG_MAX_HEADER) __builtin_trap();
    /* non-minimal varints re-encode shorter, never longer */
    if ((size_t)h > len - m.payload_len) __builtin_trap();
    if (m.payload_len) memcpy(buf + h, m.payload, m.payload_len);

    nh_msg_t back;
    if (nh_msg_decode(buf, (size_t)h + m.payload_len, &back) != 0) __builtin_trap();
    if (!same_msg(&m, &back)) __builtin_trap();
    free(buf);
}

static int on_packet(void *ud, int type, const uint8_t *body, size_t len) {
    trace_t *t = ud;
    uint8_t head[NH_PKT_HEADER_LEN];
    nh_pkt_write_header(head, type, len);
    t->hash = fnv(t->hash, head, sizeof head);
    t->hash = fnv(t->hash, body, len); /* reads every byte: ASan checks the body's bounds */
    t->packets++;
    if (type == NH_PKT_DATA) check_message(body, len);
    return t->stop_at && t->packets == t->stop_at ? 1 : 0;
}

static uint64_t rng_next(uint64_t *s) {
    *s ^= *s << 13;
    *s ^= *s >> 7;
    *s ^= *s << 17;
    return *s;
}

/* chunk_max 0: one feed; otherwise chunks of 1..chunk_max bytes. */
static int run(const uint8_t *data, size_t size, uint32_t max_body, size_t chunk_max, uint64_t seed,
               trace_t *t) {
    nh_pkt_decoder_t d;
    nh_pkt_decoder_init(&d, max_body);
    int rc = 0;
    if (chunk_max == 0) {
        rc = nh_pkt_decoder_feed(&d, data, size, on_packet, t);
    } else {
        for (size_t off = 0; off < size && rc == 0;) {
            size_t n = 1 + (size_t)(rng_next(&seed) % chunk_max);
            if (n > size - off) n = size - off;
            rc = nh_pkt_decoder_feed(&d, data + off, n, on_packet, t);
            off += n;
        }
    }
    /* the buffer exists only while a body is part-way in */
    if (rc == 0 && (d.body != NULL) != (d.body_have > 0)) __builtin_trap();
    nh_pkt_decoder_free(&d);
    return rc;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    /* Everything but the stream itself comes from a hash of it, so the seeds stay plain wire
     * bytes while any mutation still changes the splits and limits. */
    uint64_t seed = fnv(0xCBF29CE484222325u, data, size) | 1;
    static const uint32_t limits[] = {64 * 1024, NH_PKT_MAX_BODY, 16, 0};
    uint32_t max_body = limits[seed % 4];
    size_t stop_at = (seed >> 8) % 4 == 0 ? (size_t)((seed >> 16) % 8) + 1 : 0;
    size_t chunk_max = (size_t)((seed >> 24) % 32) + 1;

    trace_t whole = {.hash = 1, .stop_at = stop_at};
    int rc_whole = run(data, size, max_body, 0, seed, &whole);

    trace_t chunks = {.hash = 1, .stop_at = stop_at};
    int rc_chunks = run(data, size, max_body, chunk_max, seed, &chunks);

    trace_t bytes = {.hash = 1, .stop_at = stop_at};
    int rc_bytes = run(data, size, max_body, 1, seed, &bytes);

    if (rc_whole != rc_chunks || whole.hash != chunks.hash || whole.packets != chunks.packets)
        __builtin_trap();
    if (rc_whole != rc_bytes || whole.hash != bytes.hash || whole.packets != bytes.packets)
        __builtin_trap();
    if (rc_whole > 0 && rc_whole != 1) __builtin_trap();
    return 0;
}
