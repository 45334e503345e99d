/* codec — the pomelo/nano wire format: packets and messages.
 *
 * Pure functions over caller-owned memory; no I/O, no libuv, no Lua.
 * A packet is: 1-byte type, 3-byte big-endian body length, body.
 * A data packet's body is a message: flag byte, varint id (request/response),
 * route (1-byte length + bytes, or 2-byte code when compressed; request/notify/push), payload.
 *
 * Errors are negative NH_ECODEC_* values; nh_codec_strerror() names them.
 * The packet decoder owns only its partial-body buffer (freed by nh_pkt_decoder_free and as
 * soon as a partial packet completes, so an idle connection holds no body memory).
 */
#ifndef NH_CODEC_H
#define NH_CODEC_H

#include <stddef.h>
#include <stdint.h>

enum nh_pkt_type {
    NH_PKT_HANDSHAKE = 1,
    NH_PKT_HANDSHAKE_ACK = 2,
    NH_PKT_HEARTBEAT = 3,
    NH_PKT_DATA = 4,
    NH_PKT_KICK = 5,
};

#define NH_PKT_HEADER_LEN 4
#define NH_PKT_MAX_BODY 0xFFFFFFu /* what 3 length bytes can say */

enum nh_msg_type {
    NH_MSG_REQUEST = 0,
    NH_MSG_NOTIFY = 1,
    NH_MSG_RESPONSE = 2,
    NH_MSG_PUSH = 3,
};

#define NH_MSG_FLAG_ROUTE_COMPRESSED 0x01
#define NH_MSG_FLAG_GZIP 0x10
#define NH_MSG_FLAG_ERROR 0x20

/* flag + 10-byte varint + route length byte + 255 route bytes */
#define NH_MSG_MAX_HEADER (1 + 10 + 1 + 255)

enum {
    NH_ECODEC_PKT_TYPE = -3001,       /* packet type not in 1..5 */
    NH_ECODEC_PKT_TOO_BIG = -3002,    /* declared body length over the decoder's limit */
    NH_ECODEC_MSG_EMPTY = -3003,      /* data packet with no flag byte */
    NH_ECODEC_MSG_TYPE = -3004,       /* message type 4..7 */
    NH_ECODEC_MSG_VARINT = -3005,     /* id varint truncated, over 10 bytes or over 64 bits */
    NH_ECODEC_MSG_ROUTE = -3006,      /* route truncated (length or code past the end) */
    NH_ECODEC_ROUTE_TOO_LONG = -3007, /* encode: string route over 255 bytes */
    NH_ECODEC_NOMEM = -3008,
};

const char *nh_codec_strerror(int err);

/* ---- packets ---- */

/* Writes the 4-byte header for a packet of `type` with a body of `body_len` bytes
 * (body_len <= NH_PKT_MAX_BODY; caller checks). */
void nh_pkt_write_header(uint8_t out[NH_PKT_HEADER_LEN], int type, size_t body_len);

/* Called once per complete packet. `body` is valid only during the call (never NULL; not to be
 * read when len is 0). Return 0 to go on; any non-zero value stops decoding and is returned by
 * feed. The decoder is idle again before each call, so a callback may free it (and the struct
 * that holds it) as long as it then returns non-zero. */
typedef int (*nh_pkt_cb)(void *ud, int type, const uint8_t *body, size_t len);

typedef struct nh_pkt_decoder {
    uint8_t header[NH_PKT_HEADER_LEN];
    uint8_t header_have; /* header bytes buffered so far (4 while a body is in progress) */
    uint8_t type;
    uint32_t body_len;  /* of the packet in progress */
    uint32_t body_have; /* bytes of it buffered in body */
    uint8_t *body;      /* malloc'd only while a packet is split across feeds */
    uint32_t max_body;
} nh_pkt_decoder_t;

/* max_body is the largest body accepted (nano: 64 KiB); values over NH_PKT_MAX_BODY are clamped. */
void nh_pkt_decoder_init(nh_pkt_decoder_t *d, uint32_t max_body);
void nh_pkt_decoder_free(nh_pkt_decoder_t *d);

/* Feeds bytes of the stream (any split: a byte at a time or many packets at once).
 * Packets wholly inside `data` are delivered zero-copy. The type and declared length are
 * checked as soon as the 4 header bytes are known, before any body byte is buffered.
 * Returns 0, a negative NH_ECODEC_* error (the stream is then unusable), or the callback's
 * non-zero stop value. */
int nh_pkt_decoder_feed(nh_pkt_decoder_t *d, const uint8_t *data, size_t len, nh_pkt_cb cb,
                        void *ud);

/* ---- messages ---- */

typedef struct nh_msg {
    int type;      /* enum nh_msg_type */
    uint8_t flags; /* the raw flag byte as received / to send (type bits are set from `type`) */
    uint64_t id;   /* request/response only */
    int route_compressed;
    uint16_t route_code; /* when route_compressed */
    const char *route;   /* when not compressed; not NUL-terminated; NULL when compressed */
    size_t route_len;
    const uint8_t *payload;
    size_t payload_len;
} nh_msg_t;

/* Decodes a data packet body. Pointers in `out` point into `body`.
 * Returns 0 or a negative NH_ECODEC_* error. */
int nh_msg_decode(const uint8_t *body, size_t len, nh_msg_t *out);

/* Writes flag, id and route of `m` (not the payload) into `out`
 * (at least NH_MSG_MAX_HEADER bytes). Flag = (m->flags & ~0x0E & ~0x01) | type<<1 | compressed.
 * Returns the byte count, NH_ECODEC_ROUTE_TOO_LONG, or NH_ECODEC_MSG_TYPE (type not 0..3). */
int nh_msg_write_header(uint8_t *out, const nh_msg_t *m);

/* Varint helpers (base-128, least significant group first). */
int nh_varint_write(uint8_t *out, uint64_t v); /* returns bytes written (1..10) */
/* Returns bytes consumed (1..10) or NH_ECODEC_MSG_VARINT (no end within len or 10 bytes, or a
 * 10th byte over 1, i.e. a value over 64 bits). */
int nh_varint_read(const uint8_t *in, size_t len, uint64_t *v);

#endif
