/* test_codec — packets and messages against PROTOCOL.md's byte examples, pomelo-protocol's own
 * encodings (argv[1], written by spec/e2e/vectors.js), every malformed input the codec must
 * refuse, and encode→decode round trips. */
#include "check.h"
#include "codec.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- helpers ---- */

#define NELEM(a) (sizeof(a) / sizeof((a)[0]))

typedef struct {
    int type;
    size_t len;
    uint8_t *body;        /* a copy */
    const uint8_t *where; /* the pointer the decoder handed out */
} got_t;

/* Records every packet the decoder delivers; optionally stops at the `stop_at`-th one. */
typedef struct {
    got_t *pkts;
    size_t n, cap;
    size_t stop_at; /* 1-based; 0 = never stop */
    int stop_rc;
} collector_t;

static int collect(void *ud, int type, const uint8_t *body, size_t len) {
    collector_t *c = ud;
    if (c->n == c->cap) {
        c->cap = c->cap ? c->cap * 2 : 16;
        c->pkts = realloc(c->pkts, c->cap * sizeof *c->pkts);
        if (!c->pkts) abort();
    }
    got_t *g = &c->pkts[c->n++];
    g->type = type;
    g->len = len;
    g->where = body;
    g->body = malloc(len ? len : 1);
    if (!g->body) abort();
    if (len) memcpy(g->body, body, len);
    if (c->stop_at && c->n == c->stop_at) return c->stop_rc;
    return 0;
}

static void collector_reset(collector_t *c) {
    for (size_t i = 0; i < c->n; i++)
        free(c->pkts[i].body);
    c->n = 0;
}

static void collector_free(collector_t *c) {
    collector_reset(c);
    free(c->pkts);
    memset(c, 0, sizeof *c);
}

static int never_called(void *ud, int type, const uint8_t *body, size_t len) {
    (void)type, (void)body, (void)len;
    (*(int *)ud)++;
    return 0;
}

/* A packet as the test expects it. */
typedef struct {
    int type;
    const uint8_t *body;
    size_t len;
} want_t;

static int same_packets(const collector_t *c, const want_t *want, size_t n) {
    if (c->n != n) return 0;
    for (size_t i = 0; i < n; i++) {
        if (c->pkts[i].type != want[i].type || c->pkts[i].len != want[i].len) return 0;
        if (want[i].len && memcmp(c->pkts[i].body, want[i].body, want[i].len) != 0) return 0;
    }
    return 1;
}

/* Feeds `stream` cut at the given ascending offsets; returns the last non-zero feed result. */
static int feed_cuts(nh_pkt_decoder_t *d, const uint8_t *stream, size_t len, const size_t *cuts,
                     size_t ncuts, collector_t *c) {
    size_t from = 0;
    for (size_t i = 0; i <= ncuts; i++) {
        size_t to = i < ncuts ? cuts[i] : len;
        int rc = nh_pkt_decoder_feed(d, stream + from, to - from, collect, c);
        if (rc) return rc;
        from = to;
    }
    return 0;
}

static uint64_t rng_next(uint64_t *s) {
    /* xorshift64: deterministic splits, no global state */
    *s ^= *s << 13;
    *s ^= *s >> 7;
    *s ^= *s << 17;
    return *s;
}

static int hexval(int ch) {
    if (ch >= '0' && ch <= '9') return ch - '0';
    if (ch >= 'a' && ch <= 'f') return ch - 'a' + 10;
    if (ch >= 'A' && ch <= 'F') return ch - 'A' + 10;
    return -1;
}

/* Parses lowercase/uppercase hex ("-" = empty) into a malloc'd buffer. Returns 0 on success. */
static int parse_hex(const char *s, uint8_t **out, size_t *len) {
    size_t n = strcmp(s, "-") == 0 ? 0 : strlen(s);
    if (n % 2) return -1;
    *out = malloc(n / 2 + 1);
    if (!*out) abort();
    for (size_t i = 0; i < n / 2; i++) {
        int hi = hexval(s[2 * i]), lo = hexval(s[2 * i + 1]);
        if (hi < 0 || lo < 0) {
            free(*out);
            return -1;
        }
        (*out)[i] = (uint8_t)(hi << 4 | lo);
    }
    *len = n / 2;
    return 0;
}

/* Builds packet header + message header + payload for `m`; returns the total length. */
static size_t build_packet(uint8_t *out, const nh_msg_t *m) {
    int h = nh_msg_write_header(out + NH_PKT_HEADER_LEN, m);
    if (h < 0) return 0;
    if (m->payload_len) memcpy(out + NH_PKT_HEADER_LEN + h, m->payload, m->payload_len);
    size_t body = (size_t)h + m->payload_len;
    nh_pkt_write_header(out, NH_PKT_DATA, body);
    return NH_PKT_HEADER_LEN + body;
}

/* ---- PROTOCOL.md "Byte examples" ---- */

static const uint8_t ex_ack[] = {0x02, 0x00, 0x00, 0x00};
static const uint8_t ex_heartbeat[] = {0x03, 0x00, 0x00, 0x00};
static const uint8_t ex_kick[] = {0x05, 0x00, 0x00, 0x00};
static const uint8_t ex_req[] = {0x04, 0x00, 0x00, 0x14, 0x00, 0x01, 0x0A, 0x42,
                                 0x65, 0x6E, 0x63, 0x68, 0x2E, 0x70, 0x69, 0x6E,
                                 0x67, 0x7B, 0x22, 0x6E, 0x22, 0x3A, 0x31, 0x7D};
static const uint8_t ex_req_compressed[] = {0x04, 0x00, 0x00, 0x0B, 0x01, 0x01, 0x00, 0x01,
                                            0x7B, 0x22, 0x6E, 0x22, 0x3A, 0x31, 0x7D};
static const uint8_t ex_resp[] = {0x04, 0x00, 0x00, 0x05, 0x04, 0xAC, 0x02, 0x7B, 0x7D};
static const uint8_t ex_push[] = {0x04, 0x00, 0x00, 0x0A, 0x06, 0x06, 0x6F,
                                  0x6E, 0x4E, 0x6F, 0x74, 0x65, 0x7B, 0x7D};

static const char ping_payload[] = "{\"n\":1}";

typedef struct {
    const uint8_t *bytes;
    size_t len;
    int pkt_type;
    int has_msg;
    nh_msg_t msg; /* what the body decodes to (payload/route compared by content) */
} example_t;

static size_t examples(example_t *ex) {
    size_t n = 0;
    ex[n++] = (example_t){ex_ack, sizeof ex_ack, NH_PKT_HANDSHAKE_ACK, 0, {0}};
    ex[n++] = (example_t){ex_heartbeat, sizeof ex_heartbeat, NH_PKT_HEARTBEAT, 0, {0}};
    ex[n++] = (example_t){ex_kick, sizeof ex_kick, NH_PKT_KICK, 0, {0}};
    ex[n++] = (example_t){ex_req,
                          sizeof ex_req,
                          NH_PKT_DATA,
                          1,
                          {.type = NH_MSG_REQUEST,
                           .id = 1,
                           .route = "Bench.ping",
                           .route_len = 10,
                           .payload = (const uint8_t *)ping_payload,
                           .payload_len = 7}};
    ex[n++] = (example_t){ex_req_compressed,
                          sizeof ex_req_compressed,
                          NH_PKT_DATA,
                          1,
                          {.type = NH_MSG_REQUEST,
                           .flags = NH_MSG_FLAG_ROUTE_COMPRESSED,
                           .id = 1,
                           .route_compressed = 1,
                           .route_code = 1,
                           .payload = (const uint8_t *)ping_payload,
                           .payload_len = 7}};
    ex[n++] = (example_t){ex_resp,
                          sizeof ex_resp,
                          NH_PKT_DATA,
                          1,
                          {.type = NH_MSG_RESPONSE,
                           .flags = 0x04,
                           .id = 300,
                           .payload = (const uint8_t *)"{}",
                           .payload_len = 2}};
    ex[n++] = (example_t){ex_push,
                          sizeof ex_push,
                          NH_PKT_DATA,
                          1,
                          {.type = NH_MSG_PUSH,
                           .flags = 0x06,
                           .route = "onNote",
                           .route_len = 6,
                           .payload = (const uint8_t *)"{}",
                           .payload_len = 2}};
    return n;
}

static int same_msg(const nh_msg_t *a, const nh_msg_t *b) {
    if (a->type != b->type || a->id != b->id || a->route_compressed != b->route_compressed)
        return 0;
    if (a->route_compressed && a->type != NH_MSG_RESPONSE && a->route_code != b->route_code)
        return 0;
    if (!a->route_compressed && a->type != NH_MSG_RESPONSE) {
        if (a->route_len != b->route_len) return 0;
        if (a->route_len && memcmp(a->route, b->route, a->route_len) != 0) return 0;
    }
    if (a->payload_len != b->payload_len) return 0;
    return a->payload_len == 0 || memcmp(a->payload, b->payload, a->payload_len) == 0;
}

static void test_examples_decode_one_by_one(void) {
    example_t ex[8];
    size_t n = examples(ex);
    for (size_t i = 0; i < n; i++) {
        nh_pkt_decoder_t d;
        collector_t c = {0};
        nh_pkt_decoder_init(&d, 64 * 1024);
        CHECK(nh_pkt_decoder_feed(&d, ex[i].bytes, ex[i].len, collect, &c) == 0);
        CHECK(c.n == 1);
        CHECK(c.pkts[0].type == ex[i].pkt_type);
        CHECK(c.pkts[0].len == ex[i].len - NH_PKT_HEADER_LEN);
        CHECK(c.pkts[0].where == ex[i].bytes + NH_PKT_HEADER_LEN); /* zero-copy */
        if (ex[i].has_msg) {
            nh_msg_t m;
            CHECK(nh_msg_decode(c.pkts[0].body, c.pkts[0].len, &m) == 0);
            CHECK(same_msg(&m, &ex[i].msg));
            CHECK((m.flags & 0x0F) == (ex[i].bytes[NH_PKT_HEADER_LEN] & 0x0F));
        }
        collector_free(&c);
        nh_pkt_decoder_free(&d);
    }
}

static void test_examples_encode(void) {
    example_t ex[8];
    size_t n = examples(ex);
    for (size_t i = 0; i < n; i++) {
        uint8_t out[NH_PKT_HEADER_LEN + NH_MSG_MAX_HEADER + 64];
        size_t len;
        if (ex[i].has_msg) {
            len = build_packet(out, &ex[i].msg);
        } else {
            nh_pkt_write_header(out, ex[i].pkt_type, 0);
            len = NH_PKT_HEADER_LEN;
        }
        CHECK(len == ex[i].len);
        CHECK(memcmp(out, ex[i].bytes, ex[i].len) == 0);
    }
}

/* All examples as one stream, cut at every single and every pair of offsets, and byte by byte. */
static void test_examples_stream_every_split(void) {
    example_t ex[8];
    size_t n = examples(ex);
    uint8_t stream[256];
    want_t want[8];
    size_t len = 0;
    for (size_t i = 0; i < n; i++) {
        memcpy(stream + len, ex[i].bytes, ex[i].len);
        want[i] = (want_t){ex[i].pkt_type, ex[i].bytes + NH_PKT_HEADER_LEN,
                           ex[i].len - NH_PKT_HEADER_LEN};
        len += ex[i].len;
    }

    int bad_single = 0, bad_pair = 0;
    collector_t c = {0};
    for (size_t a = 0; a <= len; a++) {
        nh_pkt_decoder_t d;
        nh_pkt_decoder_init(&d, 64 * 1024);
        size_t cuts[1] = {a};
        if (feed_cuts(&d, stream, len, cuts, 1, &c) != 0 || !same_packets(&c, want, n) ||
            d.body != NULL)
            bad_single++;
        collector_reset(&c);
        nh_pkt_decoder_free(&d);
        for (size_t b = a; b <= len; b++) {
            nh_pkt_decoder_init(&d, 64 * 1024);
            size_t cuts2[2] = {a, b};
            if (feed_cuts(&d, stream, len, cuts2, 2, &c) != 0 || !same_packets(&c, want, n) ||
                d.body != NULL)
                bad_pair++;
            collector_reset(&c);
            nh_pkt_decoder_free(&d);
        }
    }
    CHECK(bad_single == 0);
    CHECK(bad_pair == 0);

    nh_pkt_decoder_t d;
    nh_pkt_decoder_init(&d, 64 * 1024);
    int rc = 0;
    for (size_t i = 0; i < len && rc == 0; i++)
        rc = nh_pkt_decoder_feed(&d, stream + i, 1, collect, &c);
    CHECK(rc == 0);
    CHECK(same_packets(&c, want, n));
    CHECK(d.body == NULL);
    collector_free(&c);
    nh_pkt_decoder_free(&d);
}

/* ---- packet decoder behaviour ---- */

static void test_many_packets_in_one_feed_are_zero_copy(void) {
    enum { N = 1000 };
    uint8_t *stream = malloc(N * 16);
    size_t len = 0;
    for (int i = 0; i < N; i++) {
        int blen = i % 12;
        nh_pkt_write_header(stream + len, i % 2 ? NH_PKT_HEARTBEAT : NH_PKT_DATA, (size_t)blen);
        len += NH_PKT_HEADER_LEN;
        for (int j = 0; j < blen; j++)
            stream[len++] = (uint8_t)(i + j);
    }
    nh_pkt_decoder_t d;
    collector_t c = {0};
    nh_pkt_decoder_init(&d, 64 * 1024);
    CHECK(nh_pkt_decoder_feed(&d, stream, len, collect, &c) == 0);
    CHECK(c.n == N);
    int bad = 0;
    size_t off = 0;
    for (size_t i = 0; i < c.n; i++) {
        off += NH_PKT_HEADER_LEN;
        if (c.pkts[i].where != stream + off || c.pkts[i].len != i % 12 ||
            c.pkts[i].type != (i % 2 ? NH_PKT_HEARTBEAT : NH_PKT_DATA))
            bad++;
        off += c.pkts[i].len;
    }
    CHECK(bad == 0);
    CHECK(d.body == NULL);
    collector_free(&c);
    nh_pkt_decoder_free(&d);
    free(stream);
}

static void test_split_body_is_buffered_then_freed(void) {
    nh_pkt_decoder_t d;
    collector_t c = {0};
    nh_pkt_decoder_init(&d, 64 * 1024);

    /* Header alone: nothing allocated yet. */
    CHECK(nh_pkt_decoder_feed(&d, ex_req, NH_PKT_HEADER_LEN, collect, &c) == 0);
    CHECK(d.body == NULL);
    CHECK(c.n == 0);
    /* Rest of the body in one feed: still zero-copy. */
    CHECK(nh_pkt_decoder_feed(&d, ex_req + 4, sizeof ex_req - 4, collect, &c) == 0);
    CHECK(c.n == 1 && c.pkts[0].where == ex_req + 4);
    CHECK(d.body == NULL);

    /* Body split: buffered, then freed as soon as the packet completes. */
    uint8_t two[2 * sizeof ex_req];
    memcpy(two, ex_req, sizeof ex_req);
    memcpy(two + sizeof ex_req, ex_req, sizeof ex_req);
    CHECK(nh_pkt_decoder_feed(&d, two, 10, collect, &c) == 0);
    CHECK(d.body != NULL);
    CHECK(d.body_have == 6);
    CHECK(c.n == 1);
    /* the rest of the body plus the next packet's header */
    CHECK(nh_pkt_decoder_feed(&d, two + 10, 18, collect, &c) == 0);
    CHECK(c.n == 2);
    CHECK(c.pkts[1].where < two || c.pkts[1].where >= two + sizeof two); /* a copy */
    CHECK(c.pkts[1].len == 20 && memcmp(c.pkts[1].body, ex_req + 4, 20) == 0);
    CHECK(d.body == NULL);
    CHECK(d.header_have == 4);
    /* header known, whole body in the next feed: zero-copy again */
    CHECK(nh_pkt_decoder_feed(&d, two + 28, 20, collect, &c) == 0);
    CHECK(c.n == 3 && c.pkts[2].len == 20 && c.pkts[2].where == two + 28);
    CHECK(d.body == NULL);

    /* Freeing mid-packet releases the partial body (ASan/valgrind see a leak otherwise). */
    CHECK(nh_pkt_decoder_feed(&d, ex_req, 7, collect, &c) == 0);
    CHECK(d.body != NULL);
    nh_pkt_decoder_free(&d);
    CHECK(d.body == NULL);
    collector_free(&c);
}

static void test_empty_feed_does_nothing(void) {
    nh_pkt_decoder_t d;
    int calls = 0;
    nh_pkt_decoder_init(&d, 16);
    CHECK(nh_pkt_decoder_feed(&d, ex_ack, 0, never_called, &calls) == 0);
    CHECK(calls == 0 && d.header_have == 0);
    nh_pkt_decoder_free(&d);
}

static void test_bad_packet_types_fail(void) {
    static const uint8_t types[] = {0, 6, 7, 0x40, 0x84, 0xFF};
    for (size_t i = 0; i < NELEM(types); i++) {
        uint8_t pkt[8] = {types[i], 0, 0, 1, 0x42};
        nh_pkt_decoder_t d;
        int calls = 0;

        nh_pkt_decoder_init(&d, 64 * 1024);
        CHECK(nh_pkt_decoder_feed(&d, pkt, 5, never_called, &calls) == NH_ECODEC_PKT_TYPE);
        CHECK(calls == 0 && d.body == NULL);
        nh_pkt_decoder_free(&d);

        /* byte by byte: refused on the 4th header byte, before the body */
        nh_pkt_decoder_init(&d, 64 * 1024);
        int rc[5];
        for (int j = 0; j < 4; j++)
            rc[j] = nh_pkt_decoder_feed(&d, pkt + j, 1, never_called, &calls);
        CHECK(rc[0] == 0 && rc[1] == 0 && rc[2] == 0 && rc[3] == NH_ECODEC_PKT_TYPE);
        CHECK(calls == 0 && d.body == NULL);
        nh_pkt_decoder_free(&d);

        /* after a good packet in the same feed: the good one is delivered first */
        uint8_t two[12];
        memcpy(two, ex_heartbeat, 4);
        memcpy(two + 4, pkt, 5);
        collector_t c = {0};
        nh_pkt_decoder_init(&d, 64 * 1024);
        CHECK(nh_pkt_decoder_feed(&d, two, 9, collect, &c) == NH_ECODEC_PKT_TYPE);
        CHECK(c.n == 1 && c.pkts[0].type == NH_PKT_HEARTBEAT);
        collector_free(&c);
        nh_pkt_decoder_free(&d);
    }
    /* every valid type passes */
    for (int t = 1; t <= 5; t++) {
        uint8_t pkt[4];
        nh_pkt_decoder_t d;
        int calls = 0;
        nh_pkt_write_header(pkt, t, 0);
        nh_pkt_decoder_init(&d, 0);
        CHECK(nh_pkt_decoder_feed(&d, pkt, 4, never_called, &calls) == 0 && calls == 1);
        nh_pkt_decoder_free(&d);
    }
}

static void test_oversized_length_fails_before_body(void) {
    const uint32_t max = 64 * 1024;
    /* header says max+1, followed by plenty of body bytes */
    uint8_t *buf = calloc(1, max + 16);
    nh_pkt_write_header(buf, NH_PKT_DATA, max + 1);
    nh_pkt_decoder_t d;
    int calls = 0;

    nh_pkt_decoder_init(&d, max);
    CHECK(nh_pkt_decoder_feed(&d, buf, max + 5, never_called, &calls) == NH_ECODEC_PKT_TOO_BIG);
    CHECK(calls == 0);
    CHECK(d.body == NULL && d.body_have == 0);
    nh_pkt_decoder_free(&d);

    /* header byte by byte: the 4th byte fails, nothing was buffered */
    nh_pkt_decoder_init(&d, max);
    CHECK(nh_pkt_decoder_feed(&d, buf, 1, never_called, &calls) == 0);
    CHECK(nh_pkt_decoder_feed(&d, buf + 1, 2, never_called, &calls) == 0);
    CHECK(nh_pkt_decoder_feed(&d, buf + 3, 2, never_called, &calls) == NH_ECODEC_PKT_TOO_BIG);
    CHECK(calls == 0 && d.body == NULL);
    nh_pkt_decoder_free(&d);

    /* the largest 3-byte length against a small limit */
    uint8_t huge[5] = {NH_PKT_DATA, 0xFF, 0xFF, 0xFF, 0};
    nh_pkt_decoder_init(&d, 100);
    CHECK(nh_pkt_decoder_feed(&d, huge, 5, never_called, &calls) == NH_ECODEC_PKT_TOO_BIG);
    CHECK(calls == 0 && d.body == NULL);
    nh_pkt_decoder_free(&d);

    /* exactly the limit is fine, split or whole */
    collector_t c = {0};
    nh_pkt_write_header(buf, NH_PKT_DATA, max);
    nh_pkt_decoder_init(&d, max);
    CHECK(nh_pkt_decoder_feed(&d, buf, max + 4, collect, &c) == 0);
    CHECK(nh_pkt_decoder_feed(&d, buf, 1000, collect, &c) == 0);
    CHECK(d.body != NULL);
    CHECK(nh_pkt_decoder_feed(&d, buf + 1000, max + 4 - 1000, collect, &c) == 0);
    CHECK(c.n == 2 && c.pkts[0].len == max && c.pkts[1].len == max);
    CHECK(d.body == NULL);
    collector_free(&c);
    nh_pkt_decoder_free(&d);

    /* a zero limit allows only empty bodies */
    nh_pkt_decoder_init(&d, 0);
    CHECK(nh_pkt_decoder_feed(&d, ex_heartbeat, 4, never_called, &calls) == 0 && calls == 1);
    CHECK(nh_pkt_decoder_feed(&d, ex_resp, 4, never_called, &calls) == NH_ECODEC_PKT_TOO_BIG);
    nh_pkt_decoder_free(&d);

    /* a limit over what 3 bytes can say is clamped */
    nh_pkt_decoder_init(&d, UINT32_MAX);
    CHECK(d.max_body == NH_PKT_MAX_BODY);
    nh_pkt_decoder_free(&d);
    free(buf);
}

static void test_callback_stop_value_propagates(void) {
    uint8_t stream[3 * sizeof ex_resp];
    for (int i = 0; i < 3; i++)
        memcpy(stream + i * sizeof ex_resp, ex_resp, sizeof ex_resp);

    /* whole feed: stops at the 2nd packet, the 3rd is not delivered */
    nh_pkt_decoder_t d;
    collector_t c = {.stop_at = 2, .stop_rc = 7};
    nh_pkt_decoder_init(&d, 64);
    CHECK(nh_pkt_decoder_feed(&d, stream, sizeof stream, collect, &c) == 7);
    CHECK(c.n == 2);
    nh_pkt_decoder_free(&d);
    collector_reset(&c);

    /* stop on a buffered (split) packet: the buffer is still freed */
    c.stop_at = 1;
    c.stop_rc = -1;
    nh_pkt_decoder_init(&d, 64);
    CHECK(nh_pkt_decoder_feed(&d, stream, 6, collect, &c) == 0);
    CHECK(d.body != NULL);
    CHECK(nh_pkt_decoder_feed(&d, stream + 6, sizeof stream - 6, collect, &c) == -1);
    CHECK(c.n == 1 && d.body == NULL);
    nh_pkt_decoder_free(&d);
    collector_free(&c);
}

/* A callback that destroys the decoder's owner, as a session closing on a kick would. */
typedef struct {
    nh_pkt_decoder_t dec;
    int calls;
} owner_t;

static int destroy_owner(void *ud, int type, const uint8_t *body, size_t len) {
    owner_t *o = ud;
    (void)type, (void)body, (void)len;
    nh_pkt_decoder_free(&o->dec);
    free(o);
    return 1;
}

static void test_callback_may_free_decoder_when_stopping(void) {
    uint8_t stream[2 * sizeof ex_resp];
    memcpy(stream, ex_resp, sizeof ex_resp);
    memcpy(stream + sizeof ex_resp, ex_resp, sizeof ex_resp);
    for (size_t cut = 0; cut <= sizeof stream; cut++) {
        owner_t *o = calloc(1, sizeof *o);
        nh_pkt_decoder_init(&o->dec, 64);
        nh_pkt_decoder_t *d = &o->dec;
        int rc = nh_pkt_decoder_feed(d, stream, cut, destroy_owner, o);
        if (cut < sizeof ex_resp) {
            CHECK(rc == 0);
            rc = nh_pkt_decoder_feed(d, stream + cut, sizeof stream - cut, destroy_owner, o);
        }
        CHECK(rc == 1); /* and ASan/valgrind see no use after free */
    }
}

/* ---- varints ---- */

static void test_varint(void) {
    static const struct {
        uint64_t v;
        int len;
        uint8_t bytes[10];
    } cases[] = {
        {0, 1, {0x00}},
        {1, 1, {0x01}},
        {127, 1, {0x7F}},
        {128, 2, {0x80, 0x01}},
        {300, 2, {0xAC, 0x02}},
        {16383, 2, {0xFF, 0x7F}},
        {16384, 3, {0x80, 0x80, 0x01}},
        {1u << 21, 4, {0x80, 0x80, 0x80, 0x01}},
        {UINT32_MAX, 5, {0xFF, 0xFF, 0xFF, 0xFF, 0x0F}},
        {UINT64_C(1) << 63, 10, {0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x01}},
        {UINT64_MAX, 10, {0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0x01}},
    };
    for (size_t i = 0; i < NELEM(cases); i++) {
        uint8_t out[10];
        uint64_t v = 12345;
        CHECK(nh_varint_write(out, cases[i].v) == cases[i].len);
        CHECK(memcmp(out, cases[i].bytes, (size_t)cases[i].len) == 0);
        CHECK(nh_varint_read(cases[i].bytes, (size_t)cases[i].len, &v) == cases[i].len);
        CHECK(v == cases[i].v);
        /* trailing bytes are not consumed */
        uint8_t more[12] = {0};
        memcpy(more, cases[i].bytes, (size_t)cases[i].len);
        more[cases[i].len] = 0x7F;
        CHECK(nh_varint_read(more, sizeof more, &v) == cases[i].len && v == cases[i].v);
        /* any truncation fails */
        int bad = 0;
        for (int n = 0; n < cases[i].len; n++)
            if (nh_varint_read(cases[i].bytes, (size_t)n, &v) != NH_ECODEC_MSG_VARINT) bad++;
        CHECK(bad == 0);
    }

    uint64_t v;
    /* 11 bytes: 10 continuation bytes then an end byte */
    uint8_t eleven[11];
    memset(eleven, 0x80, 10);
    eleven[10] = 0x01;
    CHECK(nh_varint_read(eleven, sizeof eleven, &v) == NH_ECODEC_MSG_VARINT);
    /* a 10th byte over 1 would need more than 64 bits */
    uint8_t overflow[10] = {0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0x02};
    CHECK(nh_varint_read(overflow, sizeof overflow, &v) == NH_ECODEC_MSG_VARINT);
    /* non-minimal but in range: accepted */
    uint8_t padded[3] = {0x81, 0x80, 0x00};
    CHECK(nh_varint_read(padded, 3, &v) == 3 && v == 1);
}

/* ---- message decoding: malformed ---- */

static void test_malformed_messages(void) {
    nh_msg_t m;
    static const uint8_t one[1] = {0};
    CHECK(nh_msg_decode(one, 0, &m) == NH_ECODEC_MSG_EMPTY);

    /* types 4..7, with and without other flag bits */
    for (int t = 4; t <= 7; t++) {
        uint8_t b[8] = {(uint8_t)(t << 1), 0x01, 0x01, 'a', 'x'};
        CHECK(nh_msg_decode(b, 5, &m) == NH_ECODEC_MSG_TYPE);
        b[0] |= NH_MSG_FLAG_ROUTE_COMPRESSED | NH_MSG_FLAG_GZIP | NH_MSG_FLAG_ERROR | 0xC0;
        CHECK(nh_msg_decode(b, 5, &m) == NH_ECODEC_MSG_TYPE);
        CHECK(nh_msg_decode(b, 1, &m) == NH_ECODEC_MSG_TYPE);
    }

    /* id: missing, truncated, 11 bytes, for request and response */
    for (int t = 0; t <= 2; t += 2) {
        uint8_t flag = (uint8_t)(t << 1);
        uint8_t only_flag[1] = {flag};
        CHECK(nh_msg_decode(only_flag, 1, &m) == NH_ECODEC_MSG_VARINT);
        uint8_t trunc[3] = {flag, 0x80, 0xFF};
        CHECK(nh_msg_decode(trunc, 3, &m) == NH_ECODEC_MSG_VARINT);
        uint8_t eleven[16] = {flag};
        memset(eleven + 1, 0x80, 10);
        eleven[11] = 0x01;
        eleven[12] = 0x00; /* a route length byte that would make it valid */
        CHECK(nh_msg_decode(eleven, 13, &m) == NH_ECODEC_MSG_VARINT);
        uint8_t ten[16] = {flag};
        memset(ten + 1, 0x80, 9);
        ten[10] = 0x01;
        ten[11] = 0x00;
        CHECK(nh_msg_decode(ten, 12, &m) == 0 && m.id == UINT64_C(1) << 63);
    }

    /* string route: no length byte, length past the end (by one and by a lot) */
    uint8_t req_nolen[2] = {0x00, 0x01};
    CHECK(nh_msg_decode(req_nolen, 2, &m) == NH_ECODEC_MSG_ROUTE);
    uint8_t notify_nolen[1] = {0x02};
    CHECK(nh_msg_decode(notify_nolen, 1, &m) == NH_ECODEC_MSG_ROUTE);
    uint8_t push_nolen[1] = {0x06};
    CHECK(nh_msg_decode(push_nolen, 1, &m) == NH_ECODEC_MSG_ROUTE);
    uint8_t past1[5] = {0x00, 0x01, 0x03, 'a', 'b'};
    CHECK(nh_msg_decode(past1, 5, &m) == NH_ECODEC_MSG_ROUTE);
    uint8_t past_far[4] = {0x02, 0xFF, 'a', 'b'};
    CHECK(nh_msg_decode(past_far, 4, &m) == NH_ECODEC_MSG_ROUTE);
    CHECK(nh_msg_decode(past1, 4, &m) == NH_ECODEC_MSG_ROUTE);
    /* a route ending exactly at the end is fine: empty payload */
    uint8_t exact[5] = {0x00, 0x01, 0x02, 'a', 'b'};
    CHECK(nh_msg_decode(exact, 5, &m) == 0 && m.route_len == 2 && m.payload_len == 0);

    /* compressed route with 0 or 1 code bytes */
    uint8_t c1[4] = {0x01, 0x01, 0x00};
    CHECK(nh_msg_decode(c1, 3, &m) == NH_ECODEC_MSG_ROUTE);
    CHECK(nh_msg_decode(c1, 2, &m) == NH_ECODEC_MSG_ROUTE);
    uint8_t c1n[2] = {0x03, 0x00};
    CHECK(nh_msg_decode(c1n, 2, &m) == NH_ECODEC_MSG_ROUTE);
    CHECK(nh_msg_decode(c1n, 1, &m) == NH_ECODEC_MSG_ROUTE);
    uint8_t c1p[2] = {0x07, 0x00};
    CHECK(nh_msg_decode(c1p, 2, &m) == NH_ECODEC_MSG_ROUTE);
}

static void test_minimal_messages(void) {
    nh_msg_t m;
    /* notify with an empty route and no payload */
    uint8_t notify[2] = {0x02, 0x00};
    CHECK(nh_msg_decode(notify, 2, &m) == 0);
    CHECK(m.type == NH_MSG_NOTIFY && m.id == 0 && m.route_len == 0 &&
          m.route == (char *)notify + 2);
    CHECK(m.payload_len == 0 && m.payload == notify + 2);
    /* response: id only */
    uint8_t resp[2] = {0x04, 0x05};
    CHECK(nh_msg_decode(resp, 2, &m) == 0);
    CHECK(m.type == NH_MSG_RESPONSE && m.id == 5 && m.route == NULL && m.payload_len == 0);
    /* response: bytes after the id are payload, never a route */
    uint8_t resp2[4] = {0x04, 0x05, 0x02, 'x'};
    CHECK(nh_msg_decode(resp2, 4, &m) == 0 && m.payload == resp2 + 2 && m.payload_len == 2);
    /* compressed push with code 0xFFFF, flag bits kept raw */
    uint8_t push[4] = {0x37, 0xFF, 0xFF, 'p'};
    CHECK(nh_msg_decode(push, 4, &m) == 0);
    CHECK(m.type == NH_MSG_PUSH && m.route_compressed && m.route_code == 0xFFFF);
    CHECK(m.flags == 0x37 && m.route == NULL && m.payload_len == 1 && m.payload[0] == 'p');
}

/* ---- message encoding ---- */

static void test_write_header(void) {
    uint8_t out[NH_MSG_MAX_HEADER];
    char route[256];
    memset(route, 'r', sizeof route);
    nh_msg_t m = {.type = NH_MSG_NOTIFY, .route = route, .route_len = 256};
    CHECK(nh_msg_write_header(out, &m) == NH_ECODEC_ROUTE_TOO_LONG);
    m.route_len = 255;
    CHECK(nh_msg_write_header(out, &m) == 257 && out[1] == 255);
    /* the longest header fits NH_MSG_MAX_HEADER */
    m.type = NH_MSG_REQUEST;
    m.id = UINT64_MAX;
    CHECK(nh_msg_write_header(out, &m) == NH_MSG_MAX_HEADER);
    /* a long route on a response is not written, so not an error */
    m.type = NH_MSG_RESPONSE;
    m.route_len = 256;
    CHECK(nh_msg_write_header(out, &m) == 11);
    /* nor when compressed */
    m.type = NH_MSG_PUSH;
    m.route_compressed = 1;
    m.route_code = 0xBEEF;
    CHECK(nh_msg_write_header(out, &m) == 3 && out[0] == 0x07 && out[1] == 0xBE && out[2] == 0xEF);

    /* type out of range */
    nh_msg_t bad = {.type = 4};
    CHECK(nh_msg_write_header(out, &bad) == NH_ECODEC_MSG_TYPE);
    bad.type = -1;
    CHECK(nh_msg_write_header(out, &bad) == NH_ECODEC_MSG_TYPE);

    /* flag: other bits kept, type and compressed bits taken from the fields */
    nh_msg_t f = {
        .type = NH_MSG_RESPONSE, .flags = NH_MSG_FLAG_ERROR | NH_MSG_FLAG_GZIP | 0x0F, .id = 3};
    CHECK(nh_msg_write_header(out, &f) == 2 && out[0] == 0x34 && out[1] == 0x03);
    f.type = NH_MSG_NOTIFY;
    f.flags = 0xFF;
    f.route = "";
    CHECK(nh_msg_write_header(out, &f) == 2 && out[0] == 0xF2 && out[1] == 0x00);
}

static void test_pkt_write_header(void) {
    uint8_t h[4];
    nh_pkt_write_header(h, NH_PKT_HANDSHAKE, 0x123456);
    CHECK(h[0] == 1 && h[1] == 0x12 && h[2] == 0x34 && h[3] == 0x56);
    nh_pkt_write_header(h, NH_PKT_DATA, NH_PKT_MAX_BODY);
    CHECK(h[0] == 4 && h[1] == 0xFF && h[2] == 0xFF && h[3] == 0xFF);
    nh_pkt_write_header(h, NH_PKT_KICK, 0);
    CHECK(memcmp(h, ex_kick, 4) == 0);
}

/* ---- round trips ---- */

/* Encodes `m` as a data packet, feeds it cut at a random point, decodes the delivered body. */
static int round_trip_one(const nh_msg_t *m, uint64_t *rng, collector_t *c) {
    uint8_t pkt[NH_PKT_HEADER_LEN + NH_MSG_MAX_HEADER + 64];
    size_t len = build_packet(pkt, m);
    if (len == 0) return 0;

    nh_pkt_decoder_t d;
    nh_pkt_decoder_init(&d, 64 * 1024);
    size_t cut[1] = {(size_t)(rng_next(rng) % (len + 1))};
    nh_msg_t back;
    int ok = feed_cuts(&d, pkt, len, cut, 1, c) == 0 && c->n == 1 &&
             c->pkts[0].type == NH_PKT_DATA &&
             nh_msg_decode(c->pkts[0].body, c->pkts[0].len, &back) == 0 && same_msg(&back, m) &&
             back.flags == pkt[NH_PKT_HEADER_LEN] &&
             (back.flags & (NH_MSG_FLAG_GZIP | NH_MSG_FLAG_ERROR)) == m->flags;
    collector_reset(c);
    nh_pkt_decoder_free(&d);
    return ok;
}

static void test_round_trips(void) {
    static const uint64_t ids[] = {0, 1, 127, 128, 300, 1u << 21, UINT32_MAX, UINT64_MAX};
    static const char *const routes[] = {"", "a", "Bench.ping", "chat.Room.join"};
    static const uint16_t codes[] = {0, 1, 255, 256, 0xFFFF};
    static const char *const payloads[] = {"", "{}", "{\"n\":1}"};
    static const uint8_t extra_flags[] = {0, NH_MSG_FLAG_GZIP, NH_MSG_FLAG_ERROR};
    const size_t nroutes = NELEM(routes) + NELEM(codes); /* string routes, then codes */
    uint64_t rng = 0x9E3779B97F4A7C15u;
    int bad = 0, total = 0;
    collector_t c = {0};

    for (int type = 0; type <= 3; type++) {
        int has_id = type == NH_MSG_REQUEST || type == NH_MSG_RESPONSE;
        for (size_t ii = 0; ii < NELEM(ids); ii++) {
            for (size_t ri = 0; ri < nroutes; ri++) {
                for (size_t pi = 0; pi < NELEM(payloads) * NELEM(extra_flags); pi++) {
                    const char *payload = payloads[pi % NELEM(payloads)];
                    nh_msg_t m = {.type = type,
                                  .flags = extra_flags[pi / NELEM(payloads)],
                                  .id = has_id ? ids[ii] : 0,
                                  .payload = (const uint8_t *)payload,
                                  .payload_len = strlen(payload)};
                    if (ri < NELEM(routes)) {
                        m.route = routes[ri];
                        m.route_len = strlen(routes[ri]);
                    } else {
                        m.route_compressed = 1;
                        m.route_code = codes[ri - NELEM(routes)];
                    }
                    total++;
                    if (!round_trip_one(&m, &rng, &c)) bad++;
                }
            }
        }
    }
    CHECK(total == 4 * 8 * 9 * 3 * 3);
    CHECK(bad == 0);
    collector_free(&c);
}

/* ---- error strings ---- */

static void test_strerror(void) {
    static const int codes[] = {
        NH_ECODEC_PKT_TYPE,   NH_ECODEC_PKT_TOO_BIG, NH_ECODEC_MSG_EMPTY,      NH_ECODEC_MSG_TYPE,
        NH_ECODEC_MSG_VARINT, NH_ECODEC_MSG_ROUTE,   NH_ECODEC_ROUTE_TOO_LONG, NH_ECODEC_NOMEM};
    const char *unknown = nh_codec_strerror(-1);
    CHECK(unknown != NULL && *unknown != '\0');
    for (size_t i = 0; i < NELEM(codes); i++) {
        const char *s = nh_codec_strerror(codes[i]);
        CHECK(s != NULL && *s != '\0' && strcmp(s, unknown) != 0);
        for (size_t j = 0; j < i; j++)
            CHECK(strcmp(s, nh_codec_strerror(codes[j])) != 0);
    }
    /* nano's own wording for the size limit, as logged by nano servers */
    CHECK(strstr(nh_codec_strerror(NH_ECODEC_PKT_TOO_BIG), "packet size exceed") != NULL);
}

/* ---- pomelo-protocol vectors ---- */

typedef struct {
    int msgs, pkts, big_ids, malformed_lines;
    uint8_t *stream; /* every pkt vector, concatenated */
    size_t stream_len, stream_cap;
    want_t *want;
    size_t nwant, want_cap;
} vecstate_t;

static void check_msg_vector(char **f, vecstate_t *vs) {
    /* msg <type> <id> <compressed> <gzip> <route> <payload> <encoded> */
    int type = atoi(f[1]);
    uint64_t id = strtoull(f[2], NULL, 10);
    int compressed = atoi(f[3]), gzip = atoi(f[4]);
    uint8_t *route = NULL, *payload = NULL, *enc = NULL;
    size_t route_len = 0, payload_len = 0, enc_len = 0;
    if (parse_hex(f[6], &payload, &payload_len) || parse_hex(f[7], &enc, &enc_len) ||
        (!compressed && parse_hex(f[5], &route, &route_len))) {
        vs->malformed_lines++;
        free(payload);
        free(enc);
        return;
    }
    if (id >= UINT64_C(1) << 31) vs->big_ids++;

    nh_msg_t want = {.type = type,
                     .flags = gzip ? NH_MSG_FLAG_GZIP : 0,
                     .id = id,
                     .route_compressed = compressed,
                     .route = (const char *)route,
                     .route_len = route_len,
                     .payload = payload,
                     .payload_len = payload_len};
    if (compressed && type != NH_MSG_RESPONSE) want.route_code = (uint16_t)atoi(f[5]);

    nh_msg_t got;
    int rc = nh_msg_decode(enc, enc_len, &got);
    CHECK(rc == 0);
    if (rc == 0) {
        CHECK(same_msg(&got, &want));
        CHECK(!!(got.flags & NH_MSG_FLAG_GZIP) == gzip);
    }

    uint8_t *out = malloc(NH_MSG_MAX_HEADER + payload_len);
    int h = nh_msg_write_header(out, &want);
    CHECK(h > 0);
    if (h > 0) {
        if (payload_len) memcpy(out + h, payload, payload_len);
        CHECK((size_t)h + payload_len == enc_len && memcmp(out, enc, enc_len) == 0);
    }
    if (rc != 0 || h <= 0 || (size_t)h + payload_len != enc_len || memcmp(out, enc, enc_len))
        fprintf(stderr, "  vector: msg %s %s %s %s ...\n", f[1], f[2], f[3], f[4]);
    vs->msgs++;
    free(out);
    free(route);
    free(payload);
    free(enc);
}

static void check_pkt_vector(char **f, vecstate_t *vs) {
    /* pkt <type> <body> <encoded> */
    int type = atoi(f[1]);
    uint8_t *body = NULL, *enc = NULL;
    size_t body_len = 0, enc_len = 0;
    if (parse_hex(f[2], &body, &body_len) || parse_hex(f[3], &enc, &enc_len)) {
        vs->malformed_lines++;
        free(body);
        return;
    }

    uint8_t h[NH_PKT_HEADER_LEN];
    nh_pkt_write_header(h, type, body_len);
    CHECK(enc_len == NH_PKT_HEADER_LEN + body_len);
    CHECK(enc_len == NH_PKT_HEADER_LEN + body_len && memcmp(h, enc, NH_PKT_HEADER_LEN) == 0 &&
          (body_len == 0 || memcmp(body, enc + NH_PKT_HEADER_LEN, body_len) == 0));

    nh_pkt_decoder_t d;
    collector_t c = {0};
    nh_pkt_decoder_init(&d, NH_PKT_MAX_BODY);
    CHECK(nh_pkt_decoder_feed(&d, enc, enc_len, collect, &c) == 0);
    want_t w = {type, body, body_len};
    CHECK(same_packets(&c, &w, 1));
    collector_free(&c);
    nh_pkt_decoder_free(&d);

    /* remember it for the whole-stream checks */
    if (vs->stream_len + enc_len > vs->stream_cap) {
        vs->stream_cap = (vs->stream_len + enc_len) * 2;
        vs->stream = realloc(vs->stream, vs->stream_cap);
        if (!vs->stream) abort();
    }
    memcpy(vs->stream + vs->stream_len, enc, enc_len);
    if (vs->nwant == vs->want_cap) {
        vs->want_cap = vs->want_cap ? vs->want_cap * 2 : 64;
        vs->want = realloc(vs->want, vs->want_cap * sizeof *vs->want);
        if (!vs->want) abort();
    }
    vs->want[vs->nwant++] = (want_t){type, NULL, body_len};
    vs->stream_len += enc_len;
    vs->pkts++;
    free(body);
    free(enc);
}

/* All pomelo packets as one stream: byte by byte and in random chunks. */
static void check_vector_stream(vecstate_t *vs) {
    size_t off = 0;
    for (size_t i = 0; i < vs->nwant; i++) {
        vs->want[i].body = vs->stream + off + NH_PKT_HEADER_LEN;
        off += NH_PKT_HEADER_LEN + vs->want[i].len;
    }

    nh_pkt_decoder_t d;
    collector_t c = {0};
    int rc = 0;
    nh_pkt_decoder_init(&d, NH_PKT_MAX_BODY);
    for (size_t i = 0; i < vs->stream_len && rc == 0; i++)
        rc = nh_pkt_decoder_feed(&d, vs->stream + i, 1, collect, &c);
    CHECK(rc == 0);
    CHECK(same_packets(&c, vs->want, vs->nwant));
    CHECK(d.body == NULL);
    nh_pkt_decoder_free(&d);
    collector_reset(&c);

    uint64_t rng = 42;
    int bad = 0;
    for (int round = 0; round < 50; round++) {
        nh_pkt_decoder_init(&d, NH_PKT_MAX_BODY);
        rc = 0;
        for (size_t from = 0; from < vs->stream_len && rc == 0;) {
            size_t n = 1 + rng_next(&rng) % (round < 25 ? 16 : 100000);
            if (n > vs->stream_len - from) n = vs->stream_len - from;
            rc = nh_pkt_decoder_feed(&d, vs->stream + from, n, collect, &c);
            from += n;
        }
        if (rc != 0 || !same_packets(&c, vs->want, vs->nwant) || d.body != NULL) bad++;
        nh_pkt_decoder_free(&d);
        collector_reset(&c);
    }
    CHECK(bad == 0);
    collector_free(&c);
}

static void test_pomelo_vectors(const char *path) {
    FILE *fp = fopen(path, "r");
    if (!fp) {
        fprintf(stderr,
                "test_codec: pomelo-protocol vector file %s is missing; generate it with\n"
                "  node spec/e2e/vectors.js %s\n",
                path, path);
        CHECK(fp != NULL);
        return;
    }
    vecstate_t vs = {0};
    char *line = NULL;
    size_t cap = 0;
    ssize_t n;
    while ((n = getline(&line, &cap, fp)) > 0) {
        if (line[n - 1] == '\n') line[--n] = '\0';
        if (n == 0 || line[0] == '#') continue;
        char *f[9];
        int nf = 0;
        for (char *save = NULL, *t = strtok_r(line, " ", &save); t && nf < 9;
             t = strtok_r(NULL, " ", &save))
            f[nf++] = t;
        if (nf == 8 && strcmp(f[0], "msg") == 0)
            check_msg_vector(f, &vs);
        else if (nf == 4 && strcmp(f[0], "pkt") == 0)
            check_pkt_vector(f, &vs);
        else
            vs.malformed_lines++;
    }
    free(line);
    fclose(fp);

    check_vector_stream(&vs);
    printf("pomelo-protocol vectors: %d messages, %d packets\n", vs.msgs, vs.pkts);
    CHECK(vs.malformed_lines == 0);
    CHECK(vs.msgs >= 90);
    CHECK(vs.pkts >= 100);
    CHECK(vs.big_ids >= 6); /* ids 2^31 and 2^32-1 made it through */
    free(vs.stream);
    free(vs.want);
}

int main(int argc, char **argv) {
    test_examples_decode_one_by_one();
    test_examples_encode();
    test_examples_stream_every_split();
    test_many_packets_in_one_feed_are_zero_copy();
    test_split_body_is_buffered_then_freed();
    test_empty_feed_does_nothing();
    test_bad_packet_types_fail();
    test_oversized_length_fails_before_body();
    test_callback_stop_value_propagates();
    test_callback_may_free_decoder_when_stopping();
    test_varint();
    test_malformed_messages();
    test_minimal_messages();
    test_write_header();
    test_pkt_write_header();
    test_round_trips();
    test_strerror();
    if (argc > 1)
        test_pomelo_vectors(argv[1]);
    else
        printf("no vector file given: pomelo-protocol vectors skipped\n");
    return check_done();
}
