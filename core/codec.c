/* codec — the pomelo/nano wire format. See codec.h for the contract. */
#include "codec.h"

#include <stdlib.h>
#include <string.h>

#define MSG_TYPE_MASK 0x0E
#define VARINT_MAX_BYTES 10

const char *nh_codec_strerror(int err) {
    switch (err) {
    case NH_ECODEC_PKT_TYPE:
        return "codec: packet type not in 1..5";
    case NH_ECODEC_PKT_TOO_BIG:
        return "codec: packet size exceed";
    case NH_ECODEC_MSG_EMPTY:
        return "codec: data packet with an empty message";
    case NH_ECODEC_MSG_TYPE:
        return "codec: message type not in 0..3";
    case NH_ECODEC_MSG_VARINT:
        return "codec: message id varint truncated or too long";
    case NH_ECODEC_MSG_ROUTE:
        return "codec: message route truncated";
    case NH_ECODEC_ROUTE_TOO_LONG:
        return "codec: route longer than 255 bytes";
    case NH_ECODEC_NOMEM:
        return "codec: out of memory";
    default:
        return "codec: unknown error";
    }
}

/* ---- packets ---- */

void nh_pkt_write_header(uint8_t out[NH_PKT_HEADER_LEN], int type, size_t body_len) {
    out[0] = (uint8_t)type;
    out[1] = (uint8_t)(body_len >> 16);
    out[2] = (uint8_t)(body_len >> 8);
    out[3] = (uint8_t)body_len;
}

void nh_pkt_decoder_init(nh_pkt_decoder_t *d, uint32_t max_body) {
    memset(d, 0, sizeof *d);
    d->max_body = max_body > NH_PKT_MAX_BODY ? NH_PKT_MAX_BODY : max_body;
}

void nh_pkt_decoder_free(nh_pkt_decoder_t *d) {
    free(d->body);
    d->body = NULL;
    d->header_have = 0;
    d->body_have = 0;
}

/* Called when the 4th header byte arrives: the only place a packet is judged, so a bad type or
 * an oversized length is refused before a single body byte is looked at or buffered. */
static int header_complete(nh_pkt_decoder_t *d) {
    uint8_t type = d->header[0];
    uint32_t len = (uint32_t)d->header[1] << 16 | (uint32_t)d->header[2] << 8 | d->header[3];
    if (type < NH_PKT_HANDSHAKE || type > NH_PKT_KICK) return NH_ECODEC_PKT_TYPE;
    if (len > d->max_body) return NH_ECODEC_PKT_TOO_BIG;
    d->type = type;
    d->body_len = len;
    d->body_have = 0;
    return 0;
}

/* The decoder is reset before every callback, so a callback that stops decoding (and perhaps
 * frees the struct that holds the decoder) leaves nothing half-done behind. */
int nh_pkt_decoder_feed(nh_pkt_decoder_t *d, const uint8_t *data, size_t len, nh_pkt_cb cb,
                        void *ud) {
    size_t off = 0;
    while (off < len) {
        if (d->header_have < NH_PKT_HEADER_LEN) {
            if (d->header_have == 0 && len - off >= NH_PKT_HEADER_LEN) { /* the common case */
                memcpy(d->header, data + off, NH_PKT_HEADER_LEN);
                d->header_have = NH_PKT_HEADER_LEN;
                off += NH_PKT_HEADER_LEN;
            }
            while (d->header_have < NH_PKT_HEADER_LEN && off < len)
                d->header[d->header_have++] = data[off++];
            if (d->header_have < NH_PKT_HEADER_LEN) return 0;
            int err = header_complete(d);
            if (err) return err;
            /* An empty body completes here; any other waits for its first byte, so a feed that
             * ends right after a header allocates nothing. */
            if (off == len && d->body_len > 0) return 0;
        }

        int type = d->type;
        uint32_t body_len = d->body_len;
        size_t avail = len - off;

        if (d->body_have == 0 && avail >= body_len) {
            /* Whole body in this feed (or empty): hand it out where it lies. */
            const uint8_t *body = data + off;
            off += body_len;
            d->header_have = 0;
            int rc = cb(ud, type, body, body_len);
            if (rc) return rc;
            continue;
        }

        /* Split across feeds: buffer it (d->body is non-NULL exactly while body_have > 0). */
        if (!d->body) {
            d->body = malloc(body_len);
            if (!d->body) return NH_ECODEC_NOMEM;
        }
        size_t want = body_len - d->body_have;
        size_t n = avail < want ? avail : want;
        memcpy(d->body + d->body_have, data + off, n);
        d->body_have += (uint32_t)n;
        off += n;
        if (d->body_have < body_len) return 0;

        uint8_t *body = d->body;
        d->body = NULL;
        d->body_have = 0;
        d->header_have = 0;
        int rc = cb(ud, type, body, body_len);
        free(body);
        if (rc) return rc;
    }
    return 0;
}

/* ---- messages ---- */

int nh_varint_write(uint8_t *out, uint64_t v) {
    int n = 0;
    while (v >= 0x80) {
        out[n++] = (uint8_t)(v | 0x80);
        v >>= 7;
    }
    out[n++] = (uint8_t)v;
    return n;
}

int nh_varint_read(const uint8_t *in, size_t len, uint64_t *v) {
    uint64_t x = 0;
    size_t max = len < VARINT_MAX_BYTES ? len : VARINT_MAX_BYTES;
    for (size_t i = 0; i < max; i++) {
        uint8_t b = in[i];
        /* The 10th byte holds bit 63 only; anything more does not fit 64 bits. */
        if (i == VARINT_MAX_BYTES - 1 && b > 1) return NH_ECODEC_MSG_VARINT;
        x |= (uint64_t)(b & 0x7F) << (7 * i);
        if (b < 0x80) {
            *v = x;
            return (int)i + 1;
        }
    }
    return NH_ECODEC_MSG_VARINT;
}

static int msg_has_id(int type) {
    return type == NH_MSG_REQUEST || type == NH_MSG_RESPONSE;
}

static int msg_has_route(int type) {
    return type != NH_MSG_RESPONSE;
}

int nh_msg_decode(const uint8_t *body, size_t len, nh_msg_t *out) {
    memset(out, 0, sizeof *out);
    if (len == 0) return NH_ECODEC_MSG_EMPTY;

    uint8_t flag = body[0];
    int type = (flag & MSG_TYPE_MASK) >> 1;
    if (type > NH_MSG_PUSH) return NH_ECODEC_MSG_TYPE;
    out->type = type;
    out->flags = flag;
    out->route_compressed = flag & NH_MSG_FLAG_ROUTE_COMPRESSED;
    size_t off = 1;

    if (msg_has_id(type)) {
        int n = nh_varint_read(body + off, len - off, &out->id);
        if (n < 0) return n;
        off += (size_t)n;
    }

    if (msg_has_route(type)) {
        if (out->route_compressed) {
            if (len - off < 2) return NH_ECODEC_MSG_ROUTE;
            out->route_code = (uint16_t)(body[off] << 8 | body[off + 1]);
            off += 2;
        } else {
            if (len - off < 1) return NH_ECODEC_MSG_ROUTE;
            size_t rlen = body[off++];
            if (rlen > len - off) return NH_ECODEC_MSG_ROUTE;
            out->route = (const char *)(body + off);
            out->route_len = rlen;
            off += rlen;
        }
    }

    out->payload = body + off;
    out->payload_len = len - off;
    return 0;
}

int nh_msg_write_header(uint8_t *out, const nh_msg_t *m) {
    if (m->type < NH_MSG_REQUEST || m->type > NH_MSG_PUSH) return NH_ECODEC_MSG_TYPE;
    int compressed = m->route_compressed ? 1 : 0;
    if (msg_has_route(m->type) && !compressed && m->route_len > 255)
        return NH_ECODEC_ROUTE_TOO_LONG;

    int n = 0;
    out[n++] = (uint8_t)((m->flags & ~(MSG_TYPE_MASK | NH_MSG_FLAG_ROUTE_COMPRESSED)) |
                         m->type << 1 | compressed);
    if (msg_has_id(m->type)) n += nh_varint_write(out + n, m->id);
    if (msg_has_route(m->type)) {
        if (compressed) {
            out[n++] = (uint8_t)(m->route_code >> 8);
            out[n++] = (uint8_t)m->route_code;
        } else {
            out[n++] = (uint8_t)m->route_len;
            if (m->route_len) memcpy(out + n, m->route, m->route_len);
            n += (int)m->route_len;
        }
    }
    return n;
}
