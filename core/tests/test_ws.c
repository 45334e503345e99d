/* test_ws — HTTP upgrade head, accept key, frame parser and frame header. */
#include "ws.h"

#include <stddef.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/evp.h>
#include <openssl/sha.h>

#include "check.h"

/* ---- frame helpers ---- */

/* Every callback appends to one transcript, so any split of the input must give the same text:
 * data bytes as they come, "|" at the end of a message, "<ping:..>", "<pong:..>", "<close:..>". */
typedef struct rec {
    size_t len;
    int data_calls;
    int zero_fin_calls; /* on_data calls with len 0 (must carry fin) */
    int bad_zero;       /* an on_data call with len 0 and fin 0 */
    int msg_opcode;     /* msg_opcode seen at the last on_data */
    int close_code;
    int stop_on_ping; /* on_ping returns this */
    const nh_ws_parser_t *parser;
    char log[1 << 18]; /* last, so rec_reset need not clear it */
} rec_t;

static void rec_reset(rec_t *r) {
    memset(r, 0, offsetof(rec_t, log));
}

static void rec_add(rec_t *r, const void *p, size_t n) {
    if (r->len + n > sizeof(r->log)) abort();
    memcpy(r->log + r->len, p, n);
    r->len += n;
}

static void rec_str(rec_t *r, const char *s) {
    rec_add(r, s, strlen(s));
}

static int on_data(void *ud, const uint8_t *data, size_t len, int fin) {
    rec_t *r = ud;
    r->data_calls++;
    if (len == 0 && !fin) r->bad_zero++;
    if (len == 0 && fin) r->zero_fin_calls++;
    if (r->parser) r->msg_opcode = r->parser->msg_opcode;
    rec_add(r, data, len);
    if (fin) rec_str(r, "|");
    return 0;
}

static int on_ping(void *ud, const uint8_t *data, size_t len) {
    rec_t *r = ud;
    rec_str(r, "<ping:");
    rec_add(r, data, len);
    rec_str(r, ">");
    return r->stop_on_ping;
}

static int on_pong(void *ud, const uint8_t *data, size_t len) {
    rec_t *r = ud;
    rec_str(r, "<pong:");
    rec_add(r, data, len);
    rec_str(r, ">");
    return 0;
}

static int on_close(void *ud, int code, const uint8_t *reason, size_t len) {
    rec_t *r = ud;
    char buf[32];
    snprintf(buf, sizeof(buf), "<close:%d:", code);
    r->close_code = code;
    rec_str(r, buf);
    rec_add(r, reason, len);
    rec_str(r, ">");
    return 0;
}

static const nh_ws_callbacks_t cbs = {on_data, on_ping, on_pong, on_close};

static int rec_is(const rec_t *r, const char *s) {
    return r->len == strlen(s) && memcmp(r->log, s, r->len) == 0;
}

enum { LEN_MIN, LEN_16, LEN_64 };

/* Writes a masked client frame; b0 is FIN/RSV/opcode as sent. Returns its size. */
static size_t frame(uint8_t *out, uint8_t b0, const void *payload, size_t len, int form) {
    static const uint8_t mask[4] = {0x37, 0xfa, 0x21, 0x3d};
    size_t n = 0;
    out[n++] = b0;
    if (form == LEN_MIN && len < 126) {
        out[n++] = (uint8_t)(0x80 | len);
    } else if (form != LEN_64 && len <= 0xFFFF) {
        out[n++] = 0x80 | 126;
        out[n++] = (uint8_t)(len >> 8);
        out[n++] = (uint8_t)len;
    } else {
        out[n++] = 0x80 | 127;
        for (int i = 0; i < 8; i++)
            out[n++] = (uint8_t)((uint64_t)len >> (56 - 8 * i));
    }
    memcpy(out + n, mask, 4);
    n += 4;
    for (size_t i = 0; i < len; i++)
        out[n + i] = ((const uint8_t *)payload)[i] ^ mask[i & 3];
    return n + len;
}

/* Parses a copy of buf in one go; returns the feed result and leaves the transcript in r. */
static int parse_all(const uint8_t *buf, size_t len, uint64_t max_frame, rec_t *r) {
    uint8_t *copy = malloc(len ? len : 1);
    memcpy(copy, buf, len);
    nh_ws_parser_t p;
    nh_ws_parser_init(&p, max_frame);
    r->parser = &p;
    int rc = nh_ws_parser_feed(&p, copy, len, &cbs, r);
    r->parser = NULL;
    free(copy);
    return rc;
}

static int parse_error(const uint8_t *buf, size_t len) {
    static rec_t r;
    rec_reset(&r);
    return parse_all(buf, len, 1 << 20, &r);
}

/* ---- frame tests ---- */

static void test_rfc_single_frame_masked_hello(void) {
    static const uint8_t f[] = {0x81, 0x85, 0x37, 0xfa, 0x21, 0x3d, 0x7f, 0x9f, 0x4d, 0x51, 0x58};
    static rec_t r;
    rec_reset(&r);
    CHECK(parse_all(f, sizeof(f), 1024, &r) == 0);
    CHECK(rec_is(&r, "Hello|"));
    CHECK(r.msg_opcode == NH_WS_TEXT);
}

static void test_rfc_unmasked_frames_are_rejected(void) {
    static const uint8_t hello[] = {0x81, 0x05, 0x48, 0x65, 0x6c, 0x6c, 0x6f};
    static const uint8_t ping[] = {0x89, 0x05, 0x48, 0x65, 0x6c, 0x6c, 0x6f};
    CHECK(parse_error(hello, sizeof(hello)) == NH_EWS_UNMASKED);
    CHECK(parse_error(ping, sizeof(ping)) == NH_EWS_UNMASKED);
}

static void test_rfc_fragmented_hello(void) {
    uint8_t buf[64];
    size_t n = frame(buf, 0x01, "Hel", 3, LEN_MIN);
    n += frame(buf + n, 0x80, "lo", 2, LEN_MIN);
    static rec_t r;
    rec_reset(&r);
    CHECK(parse_all(buf, n, 1024, &r) == 0);
    CHECK(rec_is(&r, "Hello|"));
    CHECK(r.msg_opcode == NH_WS_TEXT);
}

static void test_rfc_ping_and_masked_pong(void) {
    static const uint8_t pong[] = {0x8a, 0x85, 0x37, 0xfa, 0x21, 0x3d,
                                   0x7f, 0x9f, 0x4d, 0x51, 0x58};
    uint8_t buf[64];
    size_t n = frame(buf, 0x89, "Hello", 5, LEN_MIN);
    memcpy(buf + n, pong, sizeof(pong));
    n += sizeof(pong);
    static rec_t r;
    rec_reset(&r);
    CHECK(parse_all(buf, n, 1024, &r) == 0);
    CHECK(rec_is(&r, "<ping:Hello><pong:Hello>"));
    CHECK(r.data_calls == 0);
}

/* A stream with every kind of frame; built once, parsed under many splits. */
static size_t multi_frame_stream(uint8_t *buf, char *expect) {
    uint8_t big[300];
    for (size_t i = 0; i < sizeof(big); i++)
        big[i] = (uint8_t)('a' + i % 26);
    size_t n = 0;
    n += frame(buf + n, 0x01, "Hel", 3, LEN_MIN);         /* text, not final */
    n += frame(buf + n, 0x89, "p1", 2, LEN_MIN);          /* ping mid-message */
    n += frame(buf + n, 0x00, "", 0, LEN_MIN);            /* empty continuation */
    n += frame(buf + n, 0x8A, "", 0, LEN_MIN);            /* empty pong mid-message */
    n += frame(buf + n, 0x80, "lo", 2, LEN_16);           /* final, non-minimal length */
    n += frame(buf + n, 0x82, big, sizeof(big), LEN_MIN); /* 16-bit length */
    n += frame(buf + n, 0x82, "", 0, LEN_MIN);            /* empty message */
    n += frame(buf + n, 0x02, "x", 1, LEN_64);            /* 64-bit length, not final */
    n += frame(buf + n, 0x80, "y", 1, LEN_MIN);           /* final */
    n += frame(buf + n, 0x88,
               "\x03\xe8"
               "bye",
               5, LEN_MIN); /* close 1000 "bye" */

    strcpy(expect, "Hel<ping:p1><pong:>lo|");
    size_t e = strlen(expect);
    memcpy(expect + e, big, sizeof(big));
    expect[e + sizeof(big)] = '\0';
    strcat(expect, "||xy|<close:1000:bye>");
    return n;
}

static void test_multi_frame_stream_every_split_point(void) {
    static uint8_t buf[1024];
    static char expect[1024];
    size_t n = multi_frame_stream(buf, expect);
    static rec_t r;
    int all_ok = 1;
    for (size_t a = 0; a <= n; a++) {
        for (size_t b = a; b <= n; b++) {
            static uint8_t copy[1024];
            memcpy(copy, buf, n);
            rec_reset(&r);
            nh_ws_parser_t p;
            nh_ws_parser_init(&p, 1024);
            int rc = nh_ws_parser_feed(&p, copy, a, &cbs, &r);
            rc |= nh_ws_parser_feed(&p, copy + a, b - a, &cbs, &r);
            rc |= nh_ws_parser_feed(&p, copy + b, n - b, &cbs, &r);
            if (rc != 0 || !rec_is(&r, expect) || r.bad_zero != 0 || r.zero_fin_calls < 1)
                all_ok = 0;
        }
    }
    CHECK(all_ok);
}

static void test_multi_frame_stream_byte_at_a_time(void) {
    static uint8_t buf[1024];
    static char expect[1024];
    size_t n = multi_frame_stream(buf, expect);
    static rec_t r;
    rec_reset(&r);
    nh_ws_parser_t p;
    nh_ws_parser_init(&p, 1024);
    int rc = 0;
    for (size_t i = 0; i < n; i++)
        rc |= nh_ws_parser_feed(&p, buf + i, 1, &cbs, &r);
    CHECK(rc == 0);
    CHECK(rec_is(&r, expect));
    CHECK(r.bad_zero == 0);
    CHECK(r.zero_fin_calls == 1); /* the empty binary message */
    CHECK(p.in_message == 0);
}

static void test_payload_is_delivered_as_it_arrives(void) {
    uint8_t buf[64];
    size_t n = frame(buf, 0x82, "abcdef", 6, LEN_MIN);
    static rec_t r;
    rec_reset(&r);
    nh_ws_parser_t p;
    nh_ws_parser_init(&p, 1024);
    CHECK(nh_ws_parser_feed(&p, buf, n - 3, &cbs, &r) == 0);
    CHECK(rec_is(&r, "abc")); /* not held back until the frame is whole */
    CHECK(nh_ws_parser_feed(&p, buf + n - 3, 3, &cbs, &r) == 0);
    CHECK(rec_is(&r, "abcdef|"));
    CHECK(r.data_calls == 2);
}

static void test_control_frames_between_fragments(void) {
    uint8_t buf[128];
    size_t n = frame(buf, 0x02, "ab", 2, LEN_MIN);
    n += frame(buf + n, 0x89, "x", 1, LEN_MIN);
    n += frame(buf + n, 0x00, "cd", 2, LEN_MIN);
    n += frame(buf + n, 0x8A, "y", 1, LEN_MIN);
    n += frame(buf + n, 0x89, "", 0, LEN_MIN);
    n += frame(buf + n, 0x80, "ef", 2, LEN_MIN);
    static rec_t r;
    rec_reset(&r);
    CHECK(parse_all(buf, n, 1024, &r) == 0);
    CHECK(rec_is(&r, "ab<ping:x>cd<pong:y><ping:>ef|"));
    CHECK(r.msg_opcode == NH_WS_BINARY);
}

static void test_empty_final_frame_delivers_fin(void) {
    uint8_t buf[64];
    size_t n = frame(buf, 0x01, "abc", 3, LEN_MIN);
    n += frame(buf + n, 0x80, "", 0, LEN_MIN);
    static rec_t r;
    rec_reset(&r);
    CHECK(parse_all(buf, n, 1024, &r) == 0);
    CHECK(rec_is(&r, "abc|"));
    CHECK(r.zero_fin_calls == 1);

    rec_reset(&r);
    n = frame(buf, 0x81, "", 0, LEN_MIN);
    CHECK(parse_all(buf, n, 1024, &r) == 0);
    CHECK(rec_is(&r, "|"));
    CHECK(r.data_calls == 1);
}

/* Small final binary frames (the parser's whole-frame path): every length a 7-bit length field
 * holds, two back to back in one feed, unmasked at every length of tail after the 8-byte steps;
 * the same bytes one at a time (the state machine) give the same transcript. */
static void test_small_binary_frames_every_length(void) {
    static uint8_t payload[125], buf[2 * 131];
    static rec_t r, slow;
    static char expect[2 * 126 + 1];
    int all_ok = 1;
    for (size_t i = 0; i < sizeof payload; i++)
        payload[i] = (uint8_t)(i * 13 + 5);
    for (size_t len = 0; len <= sizeof payload; len++) {
        size_t n = frame(buf, 0x82, payload, len, LEN_MIN);
        n += frame(buf + n, 0x82, payload, len, LEN_MIN);
        memcpy(expect, payload, len);
        expect[len] = '|';
        memcpy(expect + len + 1, payload, len);
        expect[2 * len + 1] = '|';
        rec_reset(&r);
        if (parse_all(buf, n, 1024, &r) != 0 || r.len != 2 * len + 2 ||
            memcmp(r.log, expect, r.len) != 0 || r.msg_opcode != 2)
            all_ok = 0;
        rec_reset(&slow);
        nh_ws_parser_t p;
        nh_ws_parser_init(&p, 1024);
        for (size_t i = 0; i < n; i++)
            if (nh_ws_parser_feed(&p, buf + i, 1, &cbs, &slow) != 0) all_ok = 0;
        if (slow.len != r.len || memcmp(slow.log, r.log, r.len) != 0) all_ok = 0;
    }
    CHECK(all_ok);
    /* over the frame limit, or inside a fragmented message: refused as the state machine does */
    size_t n = frame(buf, 0x82, payload, 100, LEN_MIN);
    CHECK(parse_all(buf, n, 99, &r) == NH_EWS_TOO_BIG);
    n = frame(buf, 0x02, payload, 3, LEN_MIN);
    n += frame(buf + n, 0x82, payload, 3, LEN_MIN);
    CHECK(parse_all(buf, n, 1024, &r) == NH_EWS_CONTINUATION);
}

static void test_lengths_16_and_64_bit(void) {
    static uint8_t payload[70000];
    static uint8_t buf[70100];
    static rec_t r;
    for (size_t i = 0; i < sizeof(payload); i++)
        payload[i] = (uint8_t)(i * 7);

    size_t sizes[] = {125, 126, 127, 65535, 65536, 70000};
    for (size_t s = 0; s < sizeof(sizes) / sizeof(sizes[0]); s++) {
        size_t n = frame(buf, 0x82, payload, sizes[s], LEN_MIN);
        size_t hdr = sizes[s] < 126 ? 6 : sizes[s] <= 0xFFFF ? 8 : 14;
        CHECK(n == hdr + sizes[s]);
        rec_reset(&r);
        CHECK(parse_all(buf, n, 1 << 20, &r) == 0);
        CHECK(r.len == sizes[s] + 1 && memcmp(r.log, payload, sizes[s]) == 0);
    }
    /* non-minimal encodings are accepted */
    size_t n = frame(buf, 0x82, "hi", 2, LEN_64);
    rec_reset(&r);
    CHECK(parse_all(buf, n, 1024, &r) == 0);
    CHECK(rec_is(&r, "hi|"));
}

static void test_64_bit_length_with_msb_is_rejected(void) {
    uint8_t f[14] = {0x82, 0xFF, 0x80, 0, 0, 0, 0, 0, 0, 1, 1, 2, 3, 4};
    CHECK(parse_error(f, sizeof(f)) == NH_EWS_LENGTH);
    CHECK(nh_ws_error_close_code(NH_EWS_LENGTH) == 1002);
}

static void test_max_frame_boundary(void) {
    static uint8_t payload[1000];
    static uint8_t buf[1100];
    static rec_t r;
    memset(payload, 'z', sizeof(payload));
    size_t n = frame(buf, 0x82, payload, 1000, LEN_MIN);
    rec_reset(&r);
    CHECK(parse_all(buf, n, 1000, &r) == 0);
    CHECK(r.len == 1001);

    /* over the limit: refused from the header alone, before any payload is delivered */
    rec_reset(&r);
    nh_ws_parser_t p;
    nh_ws_parser_init(&p, 999);
    CHECK(nh_ws_parser_feed(&p, buf, 8, &cbs, &r) == NH_EWS_TOO_BIG);
    CHECK(r.data_calls == 0);
    CHECK(nh_ws_error_close_code(NH_EWS_TOO_BIG) == 1009);

    /* a continuation frame is held to the same limit */
    n = frame(buf, 0x02, "a", 1, LEN_MIN);
    n += frame(buf + n, 0x80, payload, 1000, LEN_MIN);
    rec_reset(&r);
    CHECK(parse_all(buf, n, 999, &r) == NH_EWS_TOO_BIG);
    CHECK(rec_is(&r, "a"));

    /* max_frame does not apply to control frames (125 bytes at most anyway) */
    n = frame(buf, 0x89, payload, 125, LEN_MIN);
    rec_reset(&r);
    CHECK(parse_all(buf, n, 10, &r) == 0);
    CHECK(r.len == 125 + 7);
}

static void test_reserved_bits_are_rejected(void) {
    uint8_t buf[32];
    for (int bit = 0x10; bit <= 0x40; bit <<= 1) {
        frame(buf, (uint8_t)(0x81 | bit), "a", 1, LEN_MIN);
        CHECK(parse_error(buf, 7) == NH_EWS_RSV);
    }
    /* rejected with only the first two bytes in */
    static rec_t r;
    rec_reset(&r);
    nh_ws_parser_t p;
    nh_ws_parser_init(&p, 1024);
    frame(buf, 0xC1, "a", 1, LEN_MIN);
    CHECK(nh_ws_parser_feed(&p, buf, 2, &cbs, &r) == NH_EWS_RSV);
    CHECK(nh_ws_error_close_code(NH_EWS_RSV) == 1002);
}

static void test_reserved_opcodes_are_rejected(void) {
    uint8_t buf[32];
    static const int reserved[] = {3, 4, 5, 6, 7, 0xB, 0xC, 0xD, 0xE, 0xF};
    for (size_t i = 0; i < sizeof(reserved) / sizeof(reserved[0]); i++) {
        size_t n = frame(buf, (uint8_t)(0x80 | reserved[i]), "", 0, LEN_MIN);
        CHECK(parse_error(buf, n) == NH_EWS_OPCODE);
    }
}

static void test_bad_control_frames_are_rejected(void) {
    static uint8_t payload[126];
    static uint8_t buf[256];
    memset(payload, 'p', sizeof(payload));
    size_t n = frame(buf, 0x09, "a", 1, LEN_MIN); /* ping without FIN */
    CHECK(parse_error(buf, n) == NH_EWS_CONTROL);
    n = frame(buf, 0x89, payload, 126, LEN_MIN); /* over 125 */
    CHECK(parse_error(buf, n) == NH_EWS_CONTROL);
    n = frame(buf, 0x8A, payload, 126, LEN_MIN);
    CHECK(parse_error(buf, n) == NH_EWS_CONTROL);
    n = frame(buf, 0x88, "\x03\xe8", 2, LEN_64); /* 125 or less, but in a 64-bit length */
    CHECK(parse_error(buf, n) == NH_EWS_CONTROL);
    n = frame(buf, 0x89, payload, 125, LEN_MIN); /* exactly 125 is fine */
    CHECK(parse_error(buf, n) == 0);
    CHECK(nh_ws_error_close_code(NH_EWS_CONTROL) == 1002);
}

static void test_continuation_errors(void) {
    uint8_t buf[64];
    size_t n = frame(buf, 0x80, "a", 1, LEN_MIN); /* continuation with nothing to continue */
    CHECK(parse_error(buf, n) == NH_EWS_CONTINUATION);
    n = frame(buf, 0x00, "a", 1, LEN_MIN);
    CHECK(parse_error(buf, n) == NH_EWS_CONTINUATION);

    n = frame(buf, 0x01, "a", 1, LEN_MIN); /* text mid-message */
    n += frame(buf + n, 0x81, "b", 1, LEN_MIN);
    CHECK(parse_error(buf, n) == NH_EWS_CONTINUATION);

    n = frame(buf, 0x02, "a", 1, LEN_MIN); /* binary mid-message, after a ping */
    n += frame(buf + n, 0x89, "", 0, LEN_MIN);
    n += frame(buf + n, 0x02, "b", 1, LEN_MIN);
    CHECK(parse_error(buf, n) == NH_EWS_CONTINUATION);

    n = frame(buf, 0x81, "a", 1, LEN_MIN); /* a finished message cannot be continued */
    n += frame(buf + n, 0x80, "b", 1, LEN_MIN);
    CHECK(parse_error(buf, n) == NH_EWS_CONTINUATION);
    CHECK(nh_ws_error_close_code(NH_EWS_CONTINUATION) == 1002);
}

static int close_result(const void *payload, size_t len, int *code) {
    uint8_t buf[256];
    size_t n = frame(buf, 0x88, payload, len, LEN_MIN);
    static rec_t r;
    rec_reset(&r);
    r.close_code = -1;
    int rc = parse_all(buf, n, 1024, &r);
    if (code) *code = r.close_code;
    return rc;
}

static void test_close_without_status_is_1005(void) {
    int code;
    CHECK(close_result("", 0, &code) == 0);
    CHECK(code == 1005);
}

static void test_close_with_one_byte_is_rejected(void) {
    int code;
    CHECK(close_result("\x03", 1, &code) == NH_EWS_CLOSE_CODE);
    CHECK(code == -1);
    CHECK(nh_ws_error_close_code(NH_EWS_CLOSE_CODE) == 1002);
}

static void test_close_codes(void) {
    static const int valid[] = {1000, 1001, 1002, 1003, 1007, 1008, 1009,
                                1010, 1011, 1012, 1013, 1014, 3000, 4999};
    static const int invalid[] = {0, 999, 1004, 1005, 1006, 1015, 1016, 2000, 2999, 5000, 65535};
    int all_valid = 1, all_invalid = 1;
    for (size_t i = 0; i < sizeof(valid) / sizeof(valid[0]); i++) {
        uint8_t p[2] = {(uint8_t)(valid[i] >> 8), (uint8_t)valid[i]};
        int code;
        if (close_result(p, 2, &code) != 0 || code != valid[i]) all_valid = 0;
    }
    for (size_t i = 0; i < sizeof(invalid) / sizeof(invalid[0]); i++) {
        uint8_t p[2] = {(uint8_t)(invalid[i] >> 8), (uint8_t)invalid[i]};
        if (close_result(p, 2, NULL) != NH_EWS_CLOSE_CODE) all_invalid = 0;
    }
    CHECK(all_valid);
    CHECK(all_invalid);
}

static void test_close_reason_utf8(void) {
    static rec_t r;
    uint8_t buf[256];
    /* "\xe2\x82\xac" is the euro sign, "\xf0\x9f\x98\x80" an emoji */
    static const char good[] = "\x03\xe8"
                               "caf\xc3\xa9 \xe2\x82\xac \xf0\x9f\x98\x80 \xf4\x8f\xbf\xbf";
    size_t n = frame(buf, 0x88, good, sizeof(good) - 1, LEN_MIN);
    rec_reset(&r);
    CHECK(parse_all(buf, n, 1024, &r) == 0);
    CHECK(r.close_code == 1000);

    static const char *bad[] = {
        "\x03\xe8\xc0\x80",         /* overlong NUL */
        "\x03\xe8\xe0\x80\xaf",     /* overlong '/' */
        "\x03\xe8\xed\xa0\x80",     /* surrogate */
        "\x03\xe8\xf4\x90\x80\x80", /* above U+10FFFF */
        "\x03\xe8\xf5\x80\x80\x80", /* never valid lead byte */
        "\x03\xe8\xff",             /* never valid */
        "\x03\xe8\x80",             /* lone continuation */
        "\x03\xe8\xe2\x82",         /* truncated */
        "\x03\xe8\xce\xba\xe1\xbd", /* truncated after a valid character */
        "\x03\xe8\xc3\x28",         /* bad continuation */
    };
    int all_bad = 1;
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        if (close_result(bad[i], strlen(bad[i]), NULL) != NH_EWS_CLOSE_UTF8) all_bad = 0;
    }
    CHECK(all_bad);
    CHECK(nh_ws_error_close_code(NH_EWS_CLOSE_UTF8) == 1007);
}

static void test_callback_stop_value_is_returned(void) {
    uint8_t buf[64];
    size_t n = frame(buf, 0x89, "a", 1, LEN_MIN);
    n += frame(buf + n, 0x81, "b", 1, LEN_MIN);
    static rec_t r;
    rec_reset(&r);
    r.stop_on_ping = 42;
    CHECK(parse_all(buf, n, 1024, &r) == 42);
    CHECK(rec_is(&r, "<ping:a>")); /* nothing after the stop */
}

static void test_null_callbacks_are_skipped(void) {
    uint8_t buf[64];
    size_t n = frame(buf, 0x89, "a", 1, LEN_MIN);
    n += frame(buf + n, 0x81, "b", 1, LEN_MIN);
    n += frame(buf + n, 0x88, "", 0, LEN_MIN);
    static const nh_ws_callbacks_t none = {0};
    nh_ws_parser_t p;
    nh_ws_parser_init(&p, 1024);
    CHECK(nh_ws_parser_feed(&p, buf, n, &none, NULL) == 0);
}

static void test_frame_header_encoding(void) {
    uint8_t h[10];
    CHECK(nh_ws_frame_header(h, NH_WS_BINARY, 0) == 2);
    CHECK(h[0] == 0x82 && h[1] == 0);
    CHECK(nh_ws_frame_header(h, NH_WS_TEXT, 125) == 2);
    CHECK(h[0] == 0x81 && h[1] == 125);
    CHECK(nh_ws_frame_header(h, NH_WS_BINARY, 126) == 4);
    CHECK(h[1] == 126 && h[2] == 0 && h[3] == 126);
    CHECK(nh_ws_frame_header(h, NH_WS_BINARY, 65535) == 4);
    CHECK(h[1] == 126 && h[2] == 0xFF && h[3] == 0xFF);
    CHECK(nh_ws_frame_header(h, NH_WS_CLOSE, 65536) == 10);
    static const uint8_t big[10] = {0x88, 127, 0, 0, 0, 0, 0, 1, 0, 0};
    CHECK(memcmp(h, big, 10) == 0);
    CHECK(nh_ws_frame_header(h, NH_WS_PONG, 0x0102030405060708ull) == 10);
    static const uint8_t huge[10] = {0x8A, 127, 1, 2, 3, 4, 5, 6, 7, 8};
    CHECK(memcmp(h, huge, 10) == 0);
}

/* A control frame split across feeds is collected and handed out whole; one that arrives whole
 * is handed out where it lies. Either way the parser holds no buffer once it is delivered: an
 * idle connection's parser owns no memory (docs/benchmarks.md, "Connection scale"). */
static void test_split_control_frame_is_collected_then_freed(void) {
    uint8_t buf[64];
    size_t n = frame(buf, 0x89, "Hello", 5, LEN_MIN);
    n += frame(buf + n, 0x82, "ab", 2, LEN_MIN);
    for (size_t cut = 1; cut < n; cut++) {
        uint8_t copy[64];
        memcpy(copy, buf, n);
        static rec_t r;
        rec_reset(&r);
        nh_ws_parser_t p;
        nh_ws_parser_init(&p, 1024);
        CHECK(p.ctl == NULL);
        CHECK(nh_ws_parser_feed(&p, copy, cut, &cbs, &r) == 0);
        /* collecting exactly while the ping's payload (bytes 6..10) is cut */
        CHECK((p.ctl != NULL) == (cut > 6 && cut < 11));
        CHECK(nh_ws_parser_feed(&p, copy + cut, n - cut, &cbs, &r) == 0);
        CHECK(rec_is(&r, "<ping:Hello>ab|"));
        CHECK(p.ctl == NULL);
        nh_ws_parser_release(&p);
    }
}

/* The parser let go while a control frame is being collected: release frees its buffer (ASan
 * would report it otherwise). */
static void test_release_mid_control_frame(void) {
    uint8_t buf[64];
    size_t n = frame(buf, 0x8a, "pong!", 5, LEN_MIN);
    static rec_t r;
    rec_reset(&r);
    nh_ws_parser_t p;
    nh_ws_parser_init(&p, 1024);
    CHECK(nh_ws_parser_feed(&p, buf, n - 2, &cbs, &r) == 0);
    CHECK(p.ctl != NULL && r.len == 0);
    nh_ws_parser_release(&p);
    CHECK(p.ctl == NULL);
}

static void test_strerror_names_every_error(void) {
    for (int e = NH_EWS_NOMEM; e <= NH_EWS_HTTP; e++)
        CHECK(strcmp(nh_ws_strerror(e), nh_ws_strerror(1)) != 0);
    CHECK(nh_ws_error_close_code(NH_EWS_UNMASKED) == 1002);
    CHECK(nh_ws_error_close_code(NH_EWS_OPCODE) == 1002);
}

/* A text message is refused before any of its payload is delivered when refuse_text is set (the
 * host sets it: close 1003); binary messages and control frames between them are unaffected. */
static void test_text_frames_refused_when_asked(void) {
    /* binary "Hi", ping, text "Hello" (RFC 6455 5.7's masked frame) */
    static const uint8_t stream[] = {0x82, 0x82, 0,    0,    0,    0,    'H',  'i',  0x89,
                                     0x80, 0,    0,    0,    0,    0x81, 0x85, 0x37, 0xfa,
                                     0x21, 0x3d, 0x7f, 0x9f, 0x4d, 0x51, 0x58};
    static rec_t r;
    rec_reset(&r);
    uint8_t copy[sizeof stream];
    memcpy(copy, stream, sizeof stream);
    nh_ws_parser_t p;
    nh_ws_parser_init(&p, 1024);
    p.refuse_text = 1;
    CHECK(nh_ws_parser_feed(&p, copy, sizeof copy, &cbs, &r) == NH_EWS_TEXT);
    CHECK(rec_is(&r, "Hi|<ping:>"));
    CHECK(nh_ws_error_close_code(NH_EWS_TEXT) == 1003);
    /* a text frame split after its first byte is refused as soon as the length byte arrives */
    nh_ws_parser_init(&p, 1024);
    p.refuse_text = 1;
    rec_reset(&r);
    memcpy(copy, stream, sizeof stream);
    CHECK(nh_ws_parser_feed(&p, copy, 15, &cbs, &r) == 0);
    CHECK(nh_ws_parser_feed(&p, copy + 15, 1, &cbs, &r) == NH_EWS_TEXT);
    /* without the flag, text is delivered as before */
    rec_reset(&r);
    CHECK(parse_all(stream, sizeof stream, 1024, &r) == 0);
    CHECK(rec_is(&r, "Hi|<ping:>Hello|"));
}

/* ---- HTTP ---- */

static const char chrome_request[] =
    "GET /nano?uid=42 HTTP/1.1\r\n"
    "Host: localhost:3250\r\n"
    "Connection: Upgrade\r\n"
    "Pragma: no-cache\r\n"
    "Cache-Control: no-cache\r\n"
    "User-Agent: Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/124.0.0.0 Safari/537.36\r\n"
    "Upgrade: websocket\r\n"
    "Origin: http://localhost:8080\r\n"
    "Sec-WebSocket-Version: 13\r\n"
    "Accept-Encoding: gzip, deflate, br, zstd\r\n"
    "Accept-Language: en-US,en;q=0.9\r\n"
    "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
    "Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits\r\n"
    "\r\n";

static void check_chrome_fields(const nh_http_req_t *r) {
    CHECK(r->complete == 1);
    CHECK(r->method == HTTP_GET);
    CHECK(strcmp(r->path, "/nano") == 0);
    CHECK(strcmp(r->origin, "http://localhost:8080") == 0);
    CHECK(strcmp(r->key, "dGhlIHNhbXBsZSBub25jZQ==") == 0);
    CHECK(r->version == 13);
    CHECK(r->upgrade_websocket == 1);
    CHECK(r->connection_upgrade == 1);
    CHECK(nh_http_req_is_upgrade(r) == 1);
}

/* Feeds a whole request in one call; returns the result and sets *consumed. */
static int http_feed_all(nh_http_req_t *r, const char *s, size_t len, size_t *consumed) {
    nh_http_req_init(r);
    return nh_http_req_feed(r, s, len, consumed);
}

static void test_http_chrome_upgrade_request(void) {
    static nh_http_req_t r;
    size_t consumed;
    CHECK(http_feed_all(&r, chrome_request, strlen(chrome_request), &consumed) == 1);
    CHECK(consumed == strlen(chrome_request));
    check_chrome_fields(&r);
}

static void test_http_byte_at_a_time(void) {
    static nh_http_req_t r;
    nh_http_req_init(&r);
    size_t len = strlen(chrome_request), total = 0;
    int rc = 0, zero_steps_ok = 1;
    for (size_t i = 0; i < len && rc == 0; i++) {
        size_t consumed;
        rc = nh_http_req_feed(&r, chrome_request + i, 1, &consumed);
        total += consumed;
        if (rc == 0 && consumed != 1) zero_steps_ok = 0;
    }
    CHECK(rc == 1);
    CHECK(total == len);
    CHECK(zero_steps_ok);
    check_chrome_fields(&r);
}

static void test_http_every_two_way_split(void) {
    static nh_http_req_t r;
    size_t len = strlen(chrome_request);
    int all_ok = 1;
    for (size_t a = 0; a <= len; a++) {
        size_t c1, c2;
        nh_http_req_init(&r);
        int rc1 = nh_http_req_feed(&r, chrome_request, a, &c1);
        int rc2 = nh_http_req_feed(&r, chrome_request + a, len - a, &c2);
        if (rc1 != (a == len) || rc2 != 1 || c1 + c2 != len || !nh_http_req_is_upgrade(&r) ||
            strcmp(r.key, "dGhlIHNhbXBsZSBub25jZQ==") != 0 || strcmp(r.path, "/nano") != 0)
            all_ok = 0;
    }
    CHECK(all_ok);
}

/* A plain request keeps what a route needs: the target as sent, every header (names
 * lower-cased, in order, as "name\0value\0"), the body's length; split anywhere. */
static void test_http_plain_request_keeps_target_headers_and_length(void) {
    static const char req[] = "POST /login?next=%2Fhome&x=1 HTTP/1.1\r\nHost: a\r\n"
                              "Content-Type: application/json\r\nX-Two: b\r\n"
                              "Content-Length: 7\r\n\r\n{\"a\":1}";
    static const char pairs[] = "host\0a\0content-type\0application/json\0x-two\0b\0"
                                "content-length\0"
                                "7";
    static nh_http_req_t r;
    size_t head = strlen(req) - 7;
    int all_ok = 1;
    for (size_t a = 0; a <= head; a++) {
        size_t c1, c2;
        nh_http_req_init(&r);
        r.keep_headers = 1;
        int rc1 = nh_http_req_feed(&r, req, a, &c1);
        int rc2 = nh_http_req_feed(&r, req + c1, strlen(req) - c1, &c2);
        if (rc2 != 1 || rc1 < 0 || c1 + c2 != head || r.method != HTTP_POST ||
            r.target_len != strlen("/login?next=%2Fhome&x=1") ||
            memcmp(r.target, "/login?next=%2Fhome&x=1", r.target_len) != 0 ||
            strcmp(r.path, "/login") != 0 || r.headers_len != sizeof pairs ||
            memcmp(r.headers, pairs, sizeof pairs) != 0 || r.content_length != 7 || r.chunked)
            all_ok = 0;
        nh_http_req_release(&r);
    }
    CHECK(all_ok);
    static const char chunked[] =
        "POST /x HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n";
    size_t consumed;
    CHECK(http_feed_all(&r, chunked, strlen(chunked), &consumed) == 1);
    CHECK(r.chunked == 1);
    CHECK(r.headers == NULL && r.headers_len == 0); /* not kept unless asked */
    static const char none[] = "GET /x HTTP/1.1\r\nHost: a\r\n\r\n";
    CHECK(http_feed_all(&r, none, strlen(none), &consumed) == 1);
    CHECK(r.content_length == UINT64_MAX);
}

static void test_http_head_followed_by_frames(void) {
    static const uint8_t hello[] = {0x81, 0x85, 0x37, 0xfa, 0x21, 0x3d,
                                    0x7f, 0x9f, 0x4d, 0x51, 0x58};
    static char buf[2048];
    size_t hlen = strlen(chrome_request);
    memcpy(buf, chrome_request, hlen);
    memcpy(buf + hlen, hello, sizeof(hello));

    static nh_http_req_t r;
    size_t consumed;
    CHECK(http_feed_all(&r, buf, hlen + sizeof(hello), &consumed) == 1);
    CHECK(consumed == hlen);
    CHECK(nh_http_req_is_upgrade(&r));

    /* more bytes after completion are not taken */
    CHECK(nh_http_req_feed(&r, buf + consumed, sizeof(hello), &consumed) == 1);
    CHECK(consumed == 0);

    static rec_t rec;
    rec_reset(&rec);
    CHECK(parse_all((uint8_t *)buf + hlen, sizeof(hello), 1024, &rec) == 0);
    CHECK(rec_is(&rec, "Hello|"));

    /* the head's last byte and the first frame byte in one call, after a split */
    nh_http_req_init(&r);
    CHECK(nh_http_req_feed(&r, buf, hlen - 1, &consumed) == 0);
    CHECK(consumed == hlen - 1);
    CHECK(nh_http_req_feed(&r, buf + hlen - 1, 1 + sizeof(hello), &consumed) == 1);
    CHECK(consumed == 1);
}

static void test_http_firefox_connection_list(void) {
    static const char req[] = "GET / HTTP/1.1\r\n"
                              "host: example.com\r\n"
                              "CONNECTION: keep-alive, Upgrade\r\n"
                              "upgrade: WebSocket\r\n"
                              "sec-websocket-version: 13\r\n"
                              "SEC-WEBSOCKET-KEY:   x3JJHMbDL1EzLkh9GBhXDw==  \r\n"
                              "origin: https://example.com\r\n"
                              "\r\n";
    static nh_http_req_t r;
    size_t consumed;
    CHECK(http_feed_all(&r, req, strlen(req), &consumed) == 1);
    CHECK(r.connection_upgrade == 1);
    CHECK(r.upgrade_websocket == 1);
    CHECK(strcmp(r.key, "x3JJHMbDL1EzLkh9GBhXDw==") == 0);
    CHECK(strcmp(r.path, "/") == 0);
    CHECK(strcmp(r.origin, "https://example.com") == 0);
    CHECK(nh_http_req_is_upgrade(&r) == 1);

    char accept[29];
    CHECK(nh_ws_accept_key(r.key, accept) == 0);
    CHECK(strcmp(accept, "HSmrc0sMlYUkAGmm5OPpG2HaGWk=") == 0);
}

static void test_http_connection_token_must_be_whole(void) {
    static const char req[] = "GET / HTTP/1.1\r\n"
                              "Connection: keep-alive, upgrades\r\n"
                              "Upgrade: websocket2\r\n"
                              "Sec-WebSocket-Version: 13\r\n"
                              "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
                              "\r\n";
    static nh_http_req_t r;
    size_t consumed;
    CHECK(http_feed_all(&r, req, strlen(req), &consumed) == 1);
    CHECK(r.connection_upgrade == 0);
    CHECK(r.upgrade_websocket == 0);
    CHECK(nh_http_req_is_upgrade(&r) == 0);
}

static void test_http_oversize_head(void) {
    static char big[NH_HTTP_MAX_HEAD + 200];
    static nh_http_req_t r;
    size_t consumed;
    const char *start = "GET / HTTP/1.1\r\nX-Pad: ";
    size_t n = strlen(start);
    memcpy(big, start, n);
    memset(big + n, 'a', sizeof(big) - n);
    CHECK(http_feed_all(&r, big, sizeof(big), &consumed) == NH_EWS_HTTP_TOO_BIG);
    CHECK(nh_http_req_feed(&r, "\r\n\r\n", 4, &consumed) == NH_EWS_HTTP_TOO_BIG);

    /* fed in small pieces, too */
    nh_http_req_init(&r);
    int rc = 0;
    size_t off = 0;
    while (rc == 0 && off < sizeof(big)) {
        rc = nh_http_req_feed(&r, big + off, 100, &consumed);
        off += 100;
    }
    CHECK(rc == NH_EWS_HTTP_TOO_BIG);
    CHECK(off <= NH_HTTP_MAX_HEAD + 100);

    /* a head of exactly the limit is fine; one byte more is not */
    const char *end = "\r\n\r\n";
    memset(big + n, 'a', NH_HTTP_MAX_HEAD - n - 4);
    memcpy(big + NH_HTTP_MAX_HEAD - 4, end, 4);
    CHECK(http_feed_all(&r, big, NH_HTTP_MAX_HEAD, &consumed) == 1);
    CHECK(consumed == NH_HTTP_MAX_HEAD);
    memset(big + n, 'a', NH_HTTP_MAX_HEAD - n - 3);
    memcpy(big + NH_HTTP_MAX_HEAD - 3, end, 4);
    CHECK(http_feed_all(&r, big, NH_HTTP_MAX_HEAD + 1, &consumed) == NH_EWS_HTTP_TOO_BIG);
}

static void test_http_garbage(void) {
    static nh_http_req_t r;
    size_t consumed;
    static const char *garbage[] = {
        "\x16\x03\x01\x02", /* a TLS ClientHello (up to its first NUL) */
        "HELLO WORLD\r\n\r\n",
        "GET / HTTP/a.1\r\n\r\n",
        "GET / HTTP/1.1\r\nBad Header\r\n\r\n",
        "\x01", /* a nano handshake packet on the wrong port (up to its first NUL) */
    };
    for (size_t i = 0; i < sizeof(garbage) / sizeof(garbage[0]); i++) {
        CHECK(http_feed_all(&r, garbage[i], strlen(garbage[i]), &consumed) == NH_EWS_HTTP);
        CHECK(nh_http_req_feed(&r, "GET", 3, &consumed) == NH_EWS_HTTP); /* stays failed */
    }
    CHECK(nh_ws_error_close_code(NH_EWS_HTTP) == 1002);
}

static int last_check; /* nh_http_req_check_upgrade() of upgrade_with()'s request */

/* Chrome's request with one header line (matched by prefix) removed or replaced. */
static int upgrade_with(const char *drop, const char *add) {
    static char buf[4096];
    static nh_http_req_t r;
    const char *line = chrome_request;
    size_t n = 0;
    while (*line) {
        const char *eol = strstr(line, "\r\n") + 2;
        if (eol - line == 2 && add) { /* the blank line: insert before it */
            memcpy(buf + n, add, strlen(add));
            n += strlen(add);
        }
        if (!(drop && strncmp(line, drop, strlen(drop)) == 0)) {
            memcpy(buf + n, line, (size_t)(eol - line));
            n += (size_t)(eol - line);
        }
        line = eol;
    }
    size_t consumed;
    if (http_feed_all(&r, buf, n, &consumed) != 1 || consumed != n) return -1;
    last_check = nh_http_req_check_upgrade(&r);
    return nh_http_req_is_upgrade(&r);
}

/* RFC 7230 5.4: exactly one Host header. */
static void test_http_host_is_required(void) {
    CHECK(upgrade_with(NULL, NULL) == 1 && last_check == NH_UPGRADE_OK);
    CHECK(upgrade_with("Host:", NULL) == 0 && last_check == NH_UPGRADE_HOST);
    CHECK(upgrade_with(NULL, "Host: evil.example\r\n") == 0 && last_check == NH_UPGRADE_HOST);
    CHECK(upgrade_with("Host:", "hOsT: localhost\r\n") == 1); /* names are case-insensitive */
    CHECK(upgrade_with("Host:", "Host:\r\n") == 1);           /* empty is allowed (no authority) */
    CHECK(strstr(nh_http_upgrade_strerror(NH_UPGRADE_HOST), "Host") != NULL);
}

/* The refusal of an unsupported version is told apart, so the reply can carry the version this
 * server speaks (RFC 6455 4.2.2). */
static void test_http_version_refusal_is_told_apart(void) {
    CHECK(upgrade_with("Sec-WebSocket-Version:", "Sec-WebSocket-Version: 8\r\n") == 0);
    CHECK(last_check == NH_UPGRADE_VERSION);
    CHECK(upgrade_with("Sec-WebSocket-Version:", NULL) == 0 && last_check == NH_UPGRADE_VERSION);
    CHECK(upgrade_with("Sec-WebSocket-Key:", NULL) == 0 && last_check == NH_UPGRADE_KEY);
    CHECK(upgrade_with("Upgrade:", NULL) == 0 && last_check == NH_UPGRADE_NOT_WEBSOCKET);
    CHECK(upgrade_with(NULL, "Origin: http://evil.example\r\n") == 0 &&
          last_check == NH_UPGRADE_BAD_HEADER);
    for (int c = NH_UPGRADE_OK; c <= NH_UPGRADE_KEY; c++)
        CHECK(strcmp(nh_http_upgrade_strerror(c), "?") != 0);
}

static void test_http_upgrade_requirements(void) {
    CHECK(upgrade_with(NULL, NULL) == 1);
    CHECK(upgrade_with("Sec-WebSocket-Key:", NULL) == 0);
    CHECK(upgrade_with("Sec-WebSocket-Version:", NULL) == 0);
    CHECK(upgrade_with("Upgrade:", NULL) == 0);
    CHECK(upgrade_with("Connection:", NULL) == 0);
    CHECK(upgrade_with("Origin:", NULL) == 1); /* non-browser clients send none */
    CHECK(upgrade_with("Sec-WebSocket-Version:", "Sec-WebSocket-Version: 8\r\n") == 0);
    CHECK(upgrade_with("Sec-WebSocket-Version:", "Sec-WebSocket-Version: 13x\r\n") == 0);
    CHECK(upgrade_with("Sec-WebSocket-Key:", "Sec-WebSocket-Key: c2hvcnQ=\r\n") == 0);
    CHECK(upgrade_with("Sec-WebSocket-Key:", "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25j!Q==\r\n") ==
          0);
    /* repeated single-valued headers make the request ambiguous */
    CHECK(upgrade_with(NULL, "Sec-WebSocket-Key: x3JJHMbDL1EzLkh9GBhXDw==\r\n") == 0);
    CHECK(upgrade_with(NULL, "Origin: http://evil.example\r\n") == 0);
    CHECK(upgrade_with(NULL, "Sec-WebSocket-Version: 13\r\n") == 0);
    /* repeated list headers are merged */
    CHECK(upgrade_with("Connection:", "Connection: keep-alive\r\nConnection: upgrade\r\n") == 1);
}

static void test_http_overlong_values(void) {
    static char origin[600], add[700];
    memset(origin, 'o', sizeof(origin) - 1);
    origin[sizeof(origin) - 1] = '\0';
    snprintf(add, sizeof(add), "Origin: http://%s\r\n", origin);
    CHECK(upgrade_with("Origin:", add) == 0);
    snprintf(add, sizeof(add), "Sec-WebSocket-Key: %s\r\n", origin);
    CHECK(upgrade_with("Sec-WebSocket-Key:", add) == 0);
    snprintf(add, sizeof(add), "Sec-WebSocket-Version: 13%s\r\n", origin);
    CHECK(upgrade_with("Sec-WebSocket-Version:", add) == 0);
    /* "upgrade" cut off by truncation is not seen */
    snprintf(add, sizeof(add), "Connection: %s, upgrade\r\n", origin);
    CHECK(upgrade_with("Connection:", add) == 0);
    /* long headers the server does not read are fine */
    snprintf(add, sizeof(add), "X-Whatever-Header-With-A-Long-Name-Longer-Than-32: %s\r\n", origin);
    CHECK(upgrade_with(NULL, add) == 1);
    /* the longest allowed origin */
    memset(origin, 'o', NH_HTTP_MAX_ORIGIN - 1 - 7);
    origin[NH_HTTP_MAX_ORIGIN - 1 - 7] = '\0';
    snprintf(add, sizeof(add), "Origin: http://%s\r\n", origin);
    CHECK(upgrade_with("Origin:", add) == 1);
}

static void test_http_plain_get_for_a_static_file(void) {
    static const char req[] = "GET /static/js/app.js?v=3#frag HTTP/1.1\r\n"
                              "Host: localhost\r\n"
                              "Accept: */*\r\n"
                              "\r\n";
    static nh_http_req_t r;
    size_t consumed;
    CHECK(http_feed_all(&r, req, strlen(req), &consumed) == 1);
    CHECK(consumed == strlen(req));
    CHECK(r.method == HTTP_GET);
    CHECK(strcmp(r.path, "/static/js/app.js") == 0);
    CHECK(r.key[0] == '\0' && r.origin[0] == '\0' && r.version == 0);
    CHECK(nh_http_req_is_upgrade(&r) == 0);

    /* a pipelined second request is left unread */
    static char two[512];
    snprintf(two, sizeof(two), "%s%s", req, req);
    CHECK(http_feed_all(&r, two, strlen(two), &consumed) == 1);
    CHECK(consumed == strlen(req));

    /* a body is not read either */
    static const char post[] = "POST /x HTTP/1.1\r\nContent-Length: 5\r\n\r\nhello";
    CHECK(http_feed_all(&r, post, strlen(post), &consumed) == 1);
    CHECK(consumed == strlen(post) - 5);
    CHECK(r.method == HTTP_POST);
    CHECK(strcmp(r.path, "/x") == 0);
}

static void test_http_paths(void) {
    static nh_http_req_t r;
    size_t consumed;
    static char req[2048], path[600];

    const char *abs = "GET http://example.com:80/a/b?c HTTP/1.1\r\n\r\n";
    CHECK(http_feed_all(&r, abs, strlen(abs), &consumed) == 1);
    CHECK(strcmp(r.path, "/a/b") == 0);

    const char *pct = "GET /a%20b/%2e%2e HTTP/1.1\r\n\r\n"; /* not decoded here */
    CHECK(http_feed_all(&r, pct, strlen(pct), &consumed) == 1);
    CHECK(strcmp(r.path, "/a%20b/%2e%2e") == 0);

    /* longest path that fits, one too long, and a long query after a short path */
    memset(path, 'p', sizeof(path));
    path[0] = '/';
    path[NH_HTTP_MAX_PATH - 1] = '\0';
    snprintf(req, sizeof(req), "GET %s HTTP/1.1\r\n\r\n", path);
    CHECK(http_feed_all(&r, req, strlen(req), &consumed) == 1);
    CHECK(strlen(r.path) == NH_HTTP_MAX_PATH - 1);
    path[NH_HTTP_MAX_PATH - 1] = 'p';
    path[NH_HTTP_MAX_PATH] = '\0';
    snprintf(req, sizeof(req), "GET %s HTTP/1.1\r\n\r\n", path);
    CHECK(http_feed_all(&r, req, strlen(req), &consumed) == 1);
    CHECK(r.path[0] == '\0');
    path[sizeof(path) - 1] = '\0';
    snprintf(req, sizeof(req), "GET /ws?%s HTTP/1.1\r\n\r\n", path + 1);
    CHECK(http_feed_all(&r, req, strlen(req), &consumed) == 1);
    CHECK(strcmp(r.path, "/ws") == 0);
}

static void test_http_method_and_version_requirements(void) {
    static nh_http_req_t r;
    size_t consumed;
    static const char post[] = "POST / HTTP/1.1\r\n"
                               "Connection: Upgrade\r\n"
                               "Upgrade: websocket\r\n"
                               "Sec-WebSocket-Version: 13\r\n"
                               "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
                               "\r\n";
    CHECK(http_feed_all(&r, post, strlen(post), &consumed) == 1);
    CHECK(nh_http_req_is_upgrade(&r) == 0);
    static const char http10[] = "GET / HTTP/1.0\r\n"
                                 "Connection: Upgrade\r\n"
                                 "Upgrade: websocket\r\n"
                                 "Sec-WebSocket-Version: 13\r\n"
                                 "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
                                 "\r\n";
    CHECK(http_feed_all(&r, http10, strlen(http10), &consumed) == 1);
    CHECK(nh_http_req_is_upgrade(&r) == 0);
    /* incomplete heads are never upgrades */
    nh_http_req_init(&r);
    CHECK(nh_http_req_feed(&r, chrome_request, 40, &consumed) == 0);
    CHECK(nh_http_req_feed(&r, chrome_request, 0, &consumed) == 0 && consumed == 0);
    CHECK(nh_http_req_is_upgrade(&r) == 0);
}

/* The accept key against libcrypto's SHA-1 and base64 for every key length the server takes
 * (ws.c computes it itself; OpenSSL is the reference here). */
static void test_accept_key_matches_libcrypto(void) {
    static const char guid[] = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";
    for (size_t klen = 1; klen <= 64; klen++) {
        char key[65], cat[64 + sizeof guid];
        for (size_t i = 0; i < klen; i++)
            key[i] = (char)('!' + (i * 7 + klen) % 90);
        key[klen] = '\0';
        memcpy(cat, key, klen);
        memcpy(cat + klen, guid, sizeof guid - 1);
        unsigned char digest[SHA_DIGEST_LENGTH];
        SHA1((const unsigned char *)cat, klen + sizeof guid - 1, digest);
        char want[32], got[29];
        EVP_EncodeBlock((unsigned char *)want, digest, SHA_DIGEST_LENGTH);
        CHECK(nh_ws_accept_key(key, got) == 0);
        CHECK(strcmp(got, want) == 0);
    }
}

static void test_accept_key_rfc_example(void) {
    char out[29];
    CHECK(nh_ws_accept_key("dGhlIHNhbXBsZSBub25jZQ==", out) == 0);
    CHECK(strcmp(out, "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=") == 0);
    CHECK(nh_ws_accept_key("", out) == NH_EWS_HTTP);
}

int main(void) {
    test_rfc_single_frame_masked_hello();
    test_rfc_unmasked_frames_are_rejected();
    test_rfc_fragmented_hello();
    test_rfc_ping_and_masked_pong();
    test_split_control_frame_is_collected_then_freed();
    test_release_mid_control_frame();
    test_multi_frame_stream_every_split_point();
    test_multi_frame_stream_byte_at_a_time();
    test_payload_is_delivered_as_it_arrives();
    test_control_frames_between_fragments();
    test_empty_final_frame_delivers_fin();
    test_small_binary_frames_every_length();
    test_lengths_16_and_64_bit();
    test_64_bit_length_with_msb_is_rejected();
    test_max_frame_boundary();
    test_reserved_bits_are_rejected();
    test_reserved_opcodes_are_rejected();
    test_bad_control_frames_are_rejected();
    test_continuation_errors();
    test_close_without_status_is_1005();
    test_close_with_one_byte_is_rejected();
    test_close_codes();
    test_close_reason_utf8();
    test_callback_stop_value_is_returned();
    test_null_callbacks_are_skipped();
    test_frame_header_encoding();
    test_strerror_names_every_error();
    test_text_frames_refused_when_asked();

    test_http_chrome_upgrade_request();
    test_http_byte_at_a_time();
    test_http_every_two_way_split();
    test_http_head_followed_by_frames();
    test_http_plain_request_keeps_target_headers_and_length();
    test_http_firefox_connection_list();
    test_http_connection_token_must_be_whole();
    test_http_oversize_head();
    test_http_garbage();
    test_http_upgrade_requirements();
    test_http_host_is_required();
    test_http_version_refusal_is_told_apart();
    test_http_overlong_values();
    test_http_plain_get_for_a_static_file();
    test_http_paths();
    test_http_method_and_version_requirements();
    test_accept_key_rfc_example();
    test_accept_key_matches_libcrypto();
    return check_done();
}
