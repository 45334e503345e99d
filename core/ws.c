/* ws — WebSocket handshake and frame parsing (see ws.h). */
#include "ws.h"

#include <ctype.h>
#include <stdlib.h>
#include <string.h>

const char *nh_ws_strerror(int err) {
    switch (err) {
    case NH_EWS_HTTP:
        return "malformed HTTP request";
    case NH_EWS_HTTP_TOO_BIG:
        return "HTTP request head too big";
    case NH_EWS_UNMASKED:
        return "client frame not masked";
    case NH_EWS_RSV:
        return "reserved frame bits set";
    case NH_EWS_OPCODE:
        return "reserved frame opcode";
    case NH_EWS_TOO_BIG:
        return "frame too big";
    case NH_EWS_CONTROL:
        return "control frame fragmented or over 125 bytes";
    case NH_EWS_CONTINUATION:
        return "unexpected continuation or data frame";
    case NH_EWS_CLOSE_CODE:
        return "invalid close status code";
    case NH_EWS_CLOSE_UTF8:
        return "close reason not valid UTF-8";
    case NH_EWS_LENGTH:
        return "invalid frame payload length";
    case NH_EWS_TEXT:
        return "text frame (the protocol is binary)";
    case NH_EWS_NOMEM:
        return "out of memory";
    default:
        return "unknown WebSocket error";
    }
}

int nh_ws_error_close_code(int err) {
    switch (err) {
    case NH_EWS_TOO_BIG:
        return 1009; /* message too big */
    case NH_EWS_CLOSE_UTF8:
        return 1007; /* invalid payload data */
    case NH_EWS_TEXT:
        return 1003; /* cannot accept this data type */
    case NH_EWS_NOMEM:
        return 1011; /* internal error */
    case NH_EWS_HTTP:
    case NH_EWS_HTTP_TOO_BIG:
    case NH_EWS_UNMASKED:
    case NH_EWS_RSV:
    case NH_EWS_OPCODE:
    case NH_EWS_CONTROL:
    case NH_EWS_CONTINUATION:
    case NH_EWS_CLOSE_CODE:
    case NH_EWS_LENGTH:
        return 1002; /* protocol error */
    default:
        return 1011; /* not ours (a callback's stop value): internal error */
    }
}

/* ---- small text helpers (ASCII only: header names and tokens are not locale text) ---- */

static int lower(int c) {
    return c >= 'A' && c <= 'Z' ? c + ('a' - 'A') : c;
}

static int ieq(const char *a, size_t alen, const char *b) {
    size_t blen = strlen(b);
    if (alen != blen) return 0;
    for (size_t i = 0; i < alen; i++) {
        if (lower((unsigned char)a[i]) != lower((unsigned char)b[i])) return 0;
    }
    return 1;
}

static int is_ows(char c) {
    return c == ' ' || c == '\t';
}

/* Does the comma-separated list contain `token` (case-insensitive, optional whitespace)? */
static int list_has_token(const char *s, size_t len, const char *token) {
    size_t i = 0;
    while (i < len) {
        size_t start = i;
        while (i < len && s[i] != ',')
            i++;
        size_t end = i;
        while (start < end && is_ows(s[start]))
            start++;
        while (end > start && is_ows(s[end - 1]))
            end--;
        if (ieq(s + start, end - start, token)) return 1;
        i++; /* skip the comma */
    }
    return 0;
}

/* Appends to a bounded buffer. *len counts every byte offered, so *len >= cap afterwards means
 * the text did not fit; what fits is kept so the buffer is always a valid prefix. */
static void append(char *buf, size_t cap, size_t *len, const char *at, size_t n) {
    if (*len < cap - 1) {
        size_t room = cap - 1 - *len;
        memcpy(buf + *len, at, n < room ? n : room);
    }
    *len += n;
}

/* ---- HTTP request head ---- */

enum {
    HDR_OTHER,
    HDR_ORIGIN,
    HDR_KEY,
    HDR_VERSION,
    HDR_UPGRADE,
    HDR_CONNECTION,
    HDR_HOST,
};

static nh_http_req_t *req_of(http_parser *hp) {
    return hp->data;
}

static int on_url(http_parser *hp, const char *at, size_t n) {
    nh_http_req_t *r = req_of(hp);
    append(r->target, sizeof(r->target), &r->target_len, at, n);
    if (r->url_done) return 0;
    /* the query and fragment are never needed: stop at them so a long query cannot make the
     * path look too long */
    for (size_t i = 0; i < n; i++) {
        if (at[i] == '?' || at[i] == '#') {
            n = i;
            r->url_done = 1;
            break;
        }
    }
    append(r->urlbuf, sizeof(r->urlbuf), &r->urllen, at, n);
    return 0;
}

static int classify_header(const nh_http_req_t *r) {
    if (r->hlen >= sizeof(r->hbuf)) return HDR_OTHER;
    if (ieq(r->hbuf, r->hlen, "origin")) return HDR_ORIGIN;
    if (ieq(r->hbuf, r->hlen, "sec-websocket-key")) return HDR_KEY;
    if (ieq(r->hbuf, r->hlen, "sec-websocket-version")) return HDR_VERSION;
    if (ieq(r->hbuf, r->hlen, "upgrade")) return HDR_UPGRADE;
    if (ieq(r->hbuf, r->hlen, "connection")) return HDR_CONNECTION;
    if (ieq(r->hbuf, r->hlen, "host")) return HDR_HOST;
    return HDR_OTHER;
}

/* Copies a single-valued header into dst; a repeated or overlong one poisons the upgrade. */
static void store_single(nh_http_req_t *r, char *dst, size_t cap, const char *v, size_t n,
                         size_t offered) {
    int bit = 1 << r->cur_header;
    if ((r->seen_headers & bit) || offered >= sizeof(r->vbuf) || n >= cap) {
        r->bad_header = 1;
        dst[0] = '\0';
    } else {
        memcpy(dst, v, n);
        dst[n] = '\0';
    }
    r->seen_headers |= bit;
}

static int parse_version(const char *v, size_t n) {
    int version = 0;
    if (n == 0 || n > 3) return -1;
    for (size_t i = 0; i < n; i++) {
        if (v[i] < '0' || v[i] > '9') return -1;
        version = version * 10 + (v[i] - '0');
    }
    return version;
}

/* A header's value is complete: keep what the server needs. */
static void finish_header(nh_http_req_t *r) {
    size_t offered = r->vlen;
    size_t n = offered < sizeof(r->vbuf) ? offered : sizeof(r->vbuf) - 1;
    const char *v = r->vbuf;
    while (n > 0 && is_ows(v[0])) {
        v++;
        n--;
    }
    while (n > 0 && is_ows(v[n - 1]))
        n--;

    switch (r->cur_header) {
    case HDR_ORIGIN:
        store_single(r, r->origin, sizeof(r->origin), v, n, offered);
        break;
    case HDR_KEY:
        store_single(r, r->key, sizeof(r->key), v, n, offered);
        break;
    case HDR_VERSION:
        if ((r->seen_headers & (1 << HDR_VERSION)) || offered >= sizeof(r->vbuf)) r->bad_header = 1;
        r->seen_headers |= 1 << HDR_VERSION;
        r->version = parse_version(v, n);
        break;
    case HDR_UPGRADE:
        /* a truncated list may have lost the token: treated as absent */
        if (offered < sizeof(r->vbuf) && list_has_token(v, n, "websocket"))
            r->upgrade_websocket = 1;
        break;
    case HDR_CONNECTION:
        if (offered < sizeof(r->vbuf) && list_has_token(v, n, "upgrade")) r->connection_upgrade = 1;
        break;
    case HDR_HOST:
        r->hosts++; /* its value is not used: only that there is exactly one */
        break;
    default:
        break;
    }
    r->value_in_progress = 0;
    r->hlen = 0;
    r->vlen = 0;
}

/* Appends to the kept headers, growing the buffer (bounded: the head is at most NH_HTTP_MAX_HEAD
 * bytes, and a pair's two NULs take less room than its ": " and CRLF). Out of memory: the
 * headers are dropped, the request goes on. */
static void headers_append(nh_http_req_t *r, const char *at, size_t n, int lower) {
    if (r->headers_len + n + 1 > r->headers_cap) {
        size_t cap = r->headers_cap ? r->headers_cap * 2 : 512;
        while (cap < r->headers_len + n + 1)
            cap *= 2;
        char *b = realloc(r->headers, cap);
        if (!b) {
            r->headers_len = 0;
            return;
        }
        r->headers = b;
        r->headers_cap = cap;
    }
    for (size_t i = 0; i < n; i++)
        r->headers[r->headers_len + i] = lower ? (char)tolower((unsigned char)at[i]) : at[i];
    r->headers_len += n;
    r->headers[r->headers_len] = '\0';
}

/* Keeps a header's bytes (state 1: its name, 2: its value) when the caller asked for them. */
static void keep_header(nh_http_req_t *r, int state, const char *at, size_t n) {
    if (!r->keep_headers) return;
    if (r->hdr_state != state && r->hdr_state != 0) headers_append(r, "", 1, 0);
    r->hdr_state = state;
    headers_append(r, at, n, state == 1);
}

static int on_header_field(http_parser *hp, const char *at, size_t n) {
    nh_http_req_t *r = req_of(hp);
    keep_header(r, 1, at, n);
    if (r->value_in_progress) finish_header(r);
    append(r->hbuf, sizeof(r->hbuf), &r->hlen, at, n);
    return 0;
}

static int on_header_value(http_parser *hp, const char *at, size_t n) {
    nh_http_req_t *r = req_of(hp);
    keep_header(r, 2, at, n);
    if (!r->value_in_progress) {
        r->value_in_progress = 1;
        r->cur_header = classify_header(r);
        r->vlen = 0;
    }
    if (r->cur_header != HDR_OTHER) append(r->vbuf, sizeof(r->vbuf), &r->vlen, at, n);
    return 0;
}

static void finish_path(nh_http_req_t *r) {
    r->path[0] = '\0';
    if (r->urllen >= sizeof(r->urlbuf)) return;
    r->urlbuf[r->urllen] = '\0';
    const char *path = r->urlbuf;
    size_t n = r->urllen;
    if (path[0] != '/') {
        /* absolute-form ("http://host/path"): the path starts after the authority */
        struct http_parser_url u;
        http_parser_url_init(&u);
        if (n == 0 || http_parser_parse_url(r->urlbuf, n, 0, &u) != 0) return;
        if (u.field_set & (1 << UF_PATH)) {
            path = r->urlbuf + u.field_data[UF_PATH].off;
            n = u.field_data[UF_PATH].len;
        } else {
            path = "/";
            n = 1;
        }
    }
    if (n >= sizeof(r->path)) return;
    memcpy(r->path, path, n);
    r->path[n] = '\0';
}

static int on_headers_complete(http_parser *hp) {
    nh_http_req_t *r = req_of(hp);
    if (r->value_in_progress) finish_header(r);
    if (r->keep_headers && r->hdr_state == 2) headers_append(r, "", 1, 0);
    r->content_length = hp->content_length;
    r->chunked = (hp->flags & F_CHUNKED) != 0;
    r->method = hp->method;
    finish_path(r);
    return 1; /* never read a body: the head is all this module parses */
}

static int on_message_complete(http_parser *hp) {
    nh_http_req_t *r = req_of(hp);
    r->complete = 1;
    /* http-parser would go on to a pipelined request; pausing makes it return with the byte
     * count up to and including the head's final LF */
    http_parser_pause(hp, 1);
    return 0;
}

static const http_parser_settings req_settings = {
    .on_url = on_url,
    .on_header_field = on_header_field,
    .on_header_value = on_header_value,
    .on_headers_complete = on_headers_complete,
    .on_message_complete = on_message_complete,
};

void nh_http_req_release(nh_http_req_t *r) {
    free(r->headers);
    r->headers = NULL;
    r->headers_len = r->headers_cap = 0;
}

void nh_http_req_init(nh_http_req_t *r) {
    memset(r, 0, sizeof(*r));
    http_parser_init(&r->parser, HTTP_REQUEST);
    r->parser.data = r;
    r->method = -1;
}

int nh_http_req_feed(nh_http_req_t *r, const char *data, size_t len, size_t *consumed) {
    *consumed = 0;
    if (r->complete) return 1;
    if (r->head_bytes >= NH_HTTP_MAX_HEAD) return NH_EWS_HTTP_TOO_BIG;
    if (HTTP_PARSER_ERRNO(&r->parser) != HPE_OK) return NH_EWS_HTTP;
    if (len == 0) return 0; /* http-parser reads a zero length as end of stream */

    size_t room = NH_HTTP_MAX_HEAD - r->head_bytes;
    size_t n = len < room ? len : room;
    size_t done = http_parser_execute(&r->parser, &req_settings, data, n);
    *consumed = done;
    r->head_bytes += done;
    if (r->complete) return 1;
    if (HTTP_PARSER_ERRNO(&r->parser) != HPE_OK || done != n) return NH_EWS_HTTP;
    if (r->head_bytes >= NH_HTTP_MAX_HEAD) return NH_EWS_HTTP_TOO_BIG;
    return 0;
}

static int is_base64_char(char c) {
    return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '+' ||
           c == '/';
}

int nh_http_req_check_upgrade(const nh_http_req_t *r) {
    if (!r->complete) return NH_UPGRADE_INCOMPLETE;
    const http_parser *hp = &r->parser;
    if (r->method != HTTP_GET || hp->http_major < 1 || (hp->http_major == 1 && hp->http_minor < 1))
        return NH_UPGRADE_NOT_GET;
    if (r->hosts != 1) return NH_UPGRADE_HOST;
    if (r->bad_header) return NH_UPGRADE_BAD_HEADER;
    if (!r->upgrade_websocket || !r->connection_upgrade) return NH_UPGRADE_NOT_WEBSOCKET;
    if (r->version != 13) return NH_UPGRADE_VERSION;
    /* 16 bytes in base64: 22 characters and "==" */
    if (strlen(r->key) != 24 || r->key[22] != '=' || r->key[23] != '=') return NH_UPGRADE_KEY;
    for (int i = 0; i < 22; i++) {
        if (!is_base64_char(r->key[i])) return NH_UPGRADE_KEY;
    }
    return NH_UPGRADE_OK;
}

const char *nh_http_upgrade_strerror(int check) {
    switch (check) {
    case NH_UPGRADE_OK:
        return "valid upgrade";
    case NH_UPGRADE_INCOMPLETE:
        return "request head incomplete";
    case NH_UPGRADE_NOT_GET:
        return "not a GET over HTTP/1.1";
    case NH_UPGRADE_HOST:
        return "no Host header, or more than one";
    case NH_UPGRADE_BAD_HEADER:
        return "Origin, Sec-WebSocket-Key or Sec-WebSocket-Version repeated or too long";
    case NH_UPGRADE_NOT_WEBSOCKET:
        return "not a WebSocket upgrade (Upgrade: websocket, Connection: upgrade)";
    case NH_UPGRADE_VERSION:
        return "Sec-WebSocket-Version is not 13";
    case NH_UPGRADE_KEY:
        return "Sec-WebSocket-Key is not 16 bytes in base64";
    default:
        return "?";
    }
}

int nh_http_req_is_upgrade(const nh_http_req_t *r) {
    return nh_http_req_check_upgrade(r) == NH_UPGRADE_OK;
}

/* SHA-1 (FIPS 180-4) and base64 for the accept key, here rather than libcrypto's: OpenSSL 3's
 * SHA1() fetches the digest from its provider, and the first fetch touches ~2 MB of the
 * library's pages (resident for the process's life) for one 20-byte hash per upgrade.
 * Not a security use: RFC 6455 only proves that the server read the key. */
static uint32_t rol32(uint32_t x, int n) {
    return x << n | x >> (32 - n);
}

static void sha1_block(uint32_t h[5], const uint8_t *b) {
    uint32_t w[80];
    for (int i = 0; i < 16; i++)
        w[i] = (uint32_t)b[4 * i] << 24 | (uint32_t)b[4 * i + 1] << 16 |
               (uint32_t)b[4 * i + 2] << 8 | b[4 * i + 3];
    for (int i = 16; i < 80; i++)
        w[i] = rol32(w[i - 3] ^ w[i - 8] ^ w[i - 14] ^ w[i - 16], 1);
    uint32_t a = h[0], bb = h[1], c = h[2], d = h[3], e = h[4];
    for (int i = 0; i < 80; i++) {
        uint32_t f, k;
        if (i < 20)
            f = (bb & c) | (~bb & d), k = 0x5A827999;
        else if (i < 40)
            f = bb ^ c ^ d, k = 0x6ED9EBA1;
        else if (i < 60)
            f = (bb & c) | (bb & d) | (c & d), k = 0x8F1BBCDC;
        else
            f = bb ^ c ^ d, k = 0xCA62C1D6;
        uint32_t t = rol32(a, 5) + f + e + k + w[i];
        e = d;
        d = c;
        c = rol32(bb, 30);
        bb = a;
        a = t;
    }
    h[0] += a, h[1] += bb, h[2] += c, h[3] += d, h[4] += e;
}

static void sha1(const uint8_t *msg, size_t len, uint8_t out[20]) {
    uint32_t h[5] = {0x67452301, 0xEFCDAB89, 0x98BADCFE, 0x10325476, 0xC3D2E1F0};
    size_t off = 0;
    for (; len - off >= 64; off += 64)
        sha1_block(h, msg + off);
    /* the rest, 0x80, zeros, the length in bits (64-bit big-endian): one or two blocks */
    uint8_t last[128] = {0};
    size_t rest = len - off, n = rest + 9 <= 64 ? 64 : 128;
    memcpy(last, msg + off, rest);
    last[rest] = 0x80;
    uint64_t bits = (uint64_t)len * 8;
    for (int i = 0; i < 8; i++)
        last[n - 1 - i] = (uint8_t)(bits >> (8 * i));
    for (size_t i = 0; i < n; i += 64)
        sha1_block(h, last + i);
    for (int i = 0; i < 5; i++) {
        out[4 * i] = (uint8_t)(h[i] >> 24);
        out[4 * i + 1] = (uint8_t)(h[i] >> 16);
        out[4 * i + 2] = (uint8_t)(h[i] >> 8);
        out[4 * i + 3] = (uint8_t)h[i];
    }
}

int nh_ws_accept_key(const char *client_key, char out[29]) {
    static const char guid[] = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";
    static const char b64[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    char buf[64 + sizeof(guid)];
    size_t klen = strlen(client_key);
    if (klen == 0 || klen > 64) {
        out[0] = '\0';
        return NH_EWS_HTTP;
    }
    memcpy(buf, client_key, klen);
    memcpy(buf + klen, guid, sizeof(guid) - 1);

    uint8_t d[21] = {0}; /* the 20-byte digest, and a zero byte to make 7 groups of 3 */
    sha1((const uint8_t *)buf, klen + sizeof(guid) - 1, d);
    /* 20 bytes encode to exactly 28 characters: 6 groups of 3 and one of 2 (one '=') */
    for (int g = 0; g < 7; g++) {
        uint32_t v = (uint32_t)d[3 * g] << 16 | (uint32_t)d[3 * g + 1] << 8 | d[3 * g + 2];
        out[4 * g] = b64[v >> 18 & 63];
        out[4 * g + 1] = b64[v >> 12 & 63];
        out[4 * g + 2] = b64[v >> 6 & 63];
        out[4 * g + 3] = b64[v & 63];
    }
    out[27] = '=';
    out[28] = '\0';
    return 0;
}

/* ---- frames ---- */

enum {
    ST_HEADER,  /* collecting the 2..14 header bytes */
    ST_PAYLOAD, /* data frame payload: handed out as it arrives */
    ST_CONTROL, /* control frame payload: collected whole in ctl[] */
};

static int is_control(int opcode) {
    return opcode & 0x8;
}

int nh_ws_parser_between_frames(const nh_ws_parser_t *p) {
    return p->state == ST_HEADER && p->hdr_have == 0 && !p->in_message && !p->ctl;
}

void nh_ws_parser_init(nh_ws_parser_t *p, uint64_t max_frame) {
    memset(p, 0, sizeof(*p));
    p->state = ST_HEADER;
    p->hdr_need = 2;
    p->max_frame = max_frame;
}

void nh_ws_parser_release(nh_ws_parser_t *p) {
    free(p->ctl);
    p->ctl = NULL;
    p->ctl_len = 0;
}

/* RFC 3629 well-formed UTF-8: no overlongs, surrogates or code points above U+10FFFF. */
static int utf8_valid(const uint8_t *s, size_t len) {
    size_t i = 0;
    while (i < len) {
        uint8_t c = s[i];
        size_t more;
        uint8_t lo = 0x80, hi = 0xBF; /* allowed range of the first continuation byte */
        if (c < 0x80) {
            i++;
            continue;
        } else if (c >= 0xC2 && c <= 0xDF) {
            more = 1;
        } else if (c >= 0xE0 && c <= 0xEF) {
            more = 2;
            if (c == 0xE0)
                lo = 0xA0; /* overlong */
            else if (c == 0xED)
                hi = 0x9F; /* surrogates */
        } else if (c >= 0xF0 && c <= 0xF4) {
            more = 3;
            if (c == 0xF0)
                lo = 0x90; /* overlong */
            else if (c == 0xF4)
                hi = 0x8F; /* above U+10FFFF */
        } else {
            return 0;
        }
        if (len - i - 1 < more) return 0;
        if (s[i + 1] < lo || s[i + 1] > hi) return 0;
        for (size_t k = 2; k <= more; k++) {
            if ((s[i + k] & 0xC0) != 0x80) return 0;
        }
        i += more + 1;
    }
    return 1;
}

/* RFC 6455 7.4: codes a peer may send. 1004-1006 and 1015 are reserved and never sent;
 * 1012-1014 are IANA-registered (service restart, try again later, bad gateway). */
static int close_code_valid(int code) {
    if (code >= 1000 && code <= 1003) return 1;
    if (code >= 1007 && code <= 1014) return 1;
    return code >= 3000 && code <= 4999;
}

/* XORs data with the 4-byte key repeating from key[0]: eight bytes at a time, then four, then
 * the rest (at most three, so only key[0..3] is read). Every payload byte of every client frame
 * passes here. */
static void xor_key(uint8_t *data, size_t n, const uint8_t *key) {
    uint32_t m4;
    memcpy(&m4, key, sizeof m4);
    size_t i = 0;
    if (n >= 8) {
        uint64_t m = (uint64_t)m4 << 32 | m4; /* the same four bytes twice: either byte order */
        for (; i + 8 <= n; i += 8) {
            uint64_t v;
            memcpy(&v, data + i, sizeof v);
            v ^= m;
            memcpy(data + i, &v, sizeof v);
        }
    }
    if (i + 4 <= n) {
        uint32_t v;
        memcpy(&v, data + i, sizeof v);
        v ^= m4;
        memcpy(data + i, &v, sizeof v);
        i += 4;
    }
    for (size_t k = 0; i < n; i++, k++)
        data[i] ^= key[k];
}

/* The frame's key is stored twice over, so that the four bytes of it from any phase lie in a row
 * (key[k] applies to data[k] while the phase is mask_off). */
static void unmask(nh_ws_parser_t *p, uint8_t *data, size_t n) {
    unsigned off = p->mask_off;
    xor_key(data, n, p->mask + off);
    p->mask_off = (uint8_t)((off + n) & 3);
}

static void next_frame(nh_ws_parser_t *p) {
    p->state = ST_HEADER;
    p->hdr_have = 0;
    p->hdr_need = 2;
}

/* The first two header bytes are in: validate what they say and size the rest of the header. */
static int check_first_two(nh_ws_parser_t *p) {
    uint8_t b0 = p->hdr[0], b1 = p->hdr[1];
    int opcode = b0 & 0x0F;
    int fin = b0 >> 7;
    int len7 = b1 & 0x7F;

    if (b0 & 0x70) return NH_EWS_RSV;
    if (!(opcode <= NH_WS_BINARY || (opcode >= NH_WS_CLOSE && opcode <= NH_WS_PONG)))
        return NH_EWS_OPCODE;
    if (is_control(opcode) && (!fin || len7 > 125)) return NH_EWS_CONTROL;
    if (!(b1 & 0x80)) return NH_EWS_UNMASKED;
    if (opcode == NH_WS_CONT && !p->in_message) return NH_EWS_CONTINUATION;
    if ((opcode == NH_WS_TEXT || opcode == NH_WS_BINARY) && p->in_message)
        return NH_EWS_CONTINUATION;
    if (opcode == NH_WS_TEXT && p->refuse_text) return NH_EWS_TEXT;

    p->opcode = (uint8_t)opcode;
    p->fin = (uint8_t)fin;
    p->hdr_need = (uint8_t)(2 + (len7 == 126 ? 2 : len7 == 127 ? 8 : 0) + 4);
    return 0;
}

/* The whole header is in: start the payload. */
static int start_payload(nh_ws_parser_t *p, uint8_t *at, const nh_ws_callbacks_t *cb, void *ud) {
    int len7 = p->hdr[1] & 0x7F;
    uint64_t len;
    int off = 2;
    if (len7 == 126) {
        len = (uint64_t)p->hdr[2] << 8 | p->hdr[3];
        off = 4;
    } else if (len7 == 127) {
        if (p->hdr[2] & 0x80) return NH_EWS_LENGTH;
        len = 0;
        for (int i = 2; i < 10; i++)
            len = len << 8 | p->hdr[i];
        off = 10;
    } else {
        len = (uint64_t)len7;
    }
    memcpy(p->mask, p->hdr + off, 4);
    memcpy(p->mask + 4, p->mask, 4);
    p->mask_off = 0;
    p->remaining = len;

    if (is_control(p->opcode)) {
        p->ctl_len = 0;
        p->state = ST_CONTROL;
        return 0;
    }
    if (len > p->max_frame) return NH_EWS_TOO_BIG;
    if (p->opcode != NH_WS_CONT) p->msg_opcode = p->opcode;
    p->in_message = !p->fin;
    if (len == 0) {
        next_frame(p);
        /* an empty final frame still ends the message */
        if (p->fin && cb->on_data) return cb->on_data(ud, at, 0, 1);
        return 0;
    }
    p->state = ST_PAYLOAD;
    return 0;
}

/* A whole control frame's payload (unmasked), where it lies or as collected. */
static int deliver_control(nh_ws_parser_t *p, const uint8_t *payload, size_t len,
                           const nh_ws_callbacks_t *cb, void *ud) {
    next_frame(p);
    switch (p->opcode) {
    case NH_WS_PING:
        return cb->on_ping ? cb->on_ping(ud, payload, len) : 0;
    case NH_WS_PONG:
        return cb->on_pong ? cb->on_pong(ud, payload, len) : 0;
    default: /* NH_WS_CLOSE */
        break;
    }
    if (len == 0) return cb->on_close ? cb->on_close(ud, 1005, payload, 0) : 0;
    if (len == 1) return NH_EWS_CLOSE_CODE;
    int code = payload[0] << 8 | payload[1];
    if (!close_code_valid(code)) return NH_EWS_CLOSE_CODE;
    if (!utf8_valid(payload + 2, len - 2u)) return NH_EWS_CLOSE_UTF8;
    return cb->on_close ? cb->on_close(ud, code, payload + 2, len - 2u) : 0;
}

/* A collected control frame is whole: hand it out, then free its buffer (the callback may stop
 * the parser, but the buffer is the parser's until then). */
static int deliver_collected(nh_ws_parser_t *p, const nh_ws_callbacks_t *cb, void *ud) {
    uint8_t *buf = p->ctl;
    size_t len = p->ctl_len;
    p->ctl = NULL;
    p->ctl_len = 0;
    int rc = deliver_control(p, buf, len, cb, ud);
    free(buf);
    return rc;
}

int nh_ws_parser_feed(nh_ws_parser_t *p, uint8_t *data, size_t len, const nh_ws_callbacks_t *cb,
                      void *ud) {
    size_t i = 0;
    int rc;
    while (i < len) {
        size_t avail = len - i;
        switch (p->state) {
        case ST_HEADER: {
            const uint8_t *h = data + i;
            size_t small = avail >= 6 ? h[1] & 0x7F : 126;
            if (p->hdr_have == 0 && small < 126 && h[0] == (0x80 | NH_WS_BINARY) && (h[1] & 0x80) &&
                small <= avail - 6 && small <= p->max_frame && !p->in_message) {
                /* The usual frame: a small, final, masked binary one, whole here (what
                 * check_first_two and start_payload would find, and the payload after): read
                 * where it lies, without the header's copy or the states. */
                uint8_t *payload = data + i + 6;
                xor_key(payload, small, h + 2);
                i += 6 + small;
                p->opcode = p->msg_opcode = NH_WS_BINARY;
                p->fin = 1;
                if (cb->on_data && (rc = cb->on_data(ud, payload, small, 1)) != 0) return rc;
                break;
            }
            size_t want = (size_t)(p->hdr_need - p->hdr_have);
            size_t n = avail < want ? avail : want;
            memcpy(p->hdr + p->hdr_have, data + i, n);
            p->hdr_have = (uint8_t)(p->hdr_have + n);
            i += n;
            if (p->hdr_have < p->hdr_need) break;
            if (p->hdr_have == 2) {
                if ((rc = check_first_two(p)) != 0) return rc;
                break; /* hdr_need now covers the extended length and mask */
            }
            if ((rc = start_payload(p, data + i, cb, ud)) != 0) return rc;
            break;
        }
        case ST_PAYLOAD: {
            size_t n = avail < p->remaining ? avail : (size_t)p->remaining;
            uint8_t *chunk = data + i;
            unmask(p, chunk, n);
            p->remaining -= n;
            i += n;
            int fin = p->remaining == 0 && p->fin;
            if (p->remaining == 0) next_frame(p);
            if (cb->on_data && (rc = cb->on_data(ud, chunk, n, fin)) != 0) return rc;
            break;
        }
        case ST_CONTROL: {
            if (!p->ctl && avail >= p->remaining) { /* whole in this feed: where it lies */
                uint8_t *payload = data + i;
                size_t n = (size_t)p->remaining;
                unmask(p, payload, n);
                p->remaining = 0;
                i += n;
                if ((rc = deliver_control(p, payload, n, cb, ud)) != 0) return rc;
                break;
            }
            if (!p->ctl && !(p->ctl = malloc((size_t)p->remaining))) return NH_EWS_NOMEM;
            size_t n = avail < p->remaining ? avail : (size_t)p->remaining;
            unmask(p, data + i, n); /* in place, as every payload byte is */
            memcpy(p->ctl + p->ctl_len, data + i, n);
            p->ctl_len = (uint8_t)(p->ctl_len + n);
            p->remaining -= n;
            i += n;
            if (p->remaining == 0 && (rc = deliver_collected(p, cb, ud)) != 0) return rc;
            break;
        }
        }
        /* also reached with no bytes left: an empty control frame whose header just arrived */
        if (p->state == ST_CONTROL && p->remaining == 0 && !p->ctl) {
            if ((rc = deliver_control(p, data + i, 0, cb, ud)) != 0) return rc;
        }
    }
    return 0;
}

size_t nh_ws_frame_header(uint8_t out[10], int opcode, uint64_t payload_len) {
    out[0] = (uint8_t)(0x80 | (opcode & 0x0F));
    if (payload_len < 126) {
        out[1] = (uint8_t)payload_len;
        return 2;
    }
    if (payload_len <= 0xFFFF) {
        out[1] = 126;
        out[2] = (uint8_t)(payload_len >> 8);
        out[3] = (uint8_t)payload_len;
        return 4;
    }
    out[1] = 127;
    for (int i = 0; i < 8; i++)
        out[2 + i] = (uint8_t)(payload_len >> (56 - 8 * i));
    return 10;
}
