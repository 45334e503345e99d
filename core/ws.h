/* ws — WebSocket (RFC 6455) server-side protocol logic, without I/O.
 *
 * Four pieces, each incremental and allocation-free after init (but for a plain request's headers,
 * kept when the caller asks, and a control frame split across feeds, collected until whole):
 *  - nh_http_req_*: parses an HTTP/1.1 request head (http-parser underneath), keeping only what
 *    the server needs: method, path, the upgrade headers; for a plain request (an HTTP route) the
 *    target, the body's length and, on request, every header.
 *  - nh_ws_accept_key: Sec-WebSocket-Accept from the client key (SHA-1 + base64, libcrypto).
 *  - nh_ws_parser_*: the client→server frame parser. Unmasks payload in place and hands it out in
 *    chunks as it arrives, so a frame never has to be buffered whole.
 *  - nh_ws_frame_header: server→client frame header (FIN, no mask).
 *
 * Why not wslay: its frame context embeds a 4 KiB input buffer per connection and copies every
 * queued message; we need a few hundred bytes per idle connection and one shared buffer per
 * broadcast. The frame format is small; this parser is fuzzed.
 *
 * Errors are negative NH_EWS_* values; nh_ws_strerror() names them and
 * nh_ws_error_close_code() gives the close status to send (1002 protocol error, 1009 too big, ...).
 */
#ifndef NH_WS_H
#define NH_WS_H

#include <stddef.h>
#include <stdint.h>

#include <http_parser.h>

enum {
    NH_EWS_HTTP = -4001,         /* malformed HTTP request */
    NH_EWS_HTTP_TOO_BIG = -4002, /* request head over NH_HTTP_MAX_HEAD bytes */
    NH_EWS_UNMASKED = -4003,     /* client frame without mask */
    NH_EWS_RSV = -4004,          /* reserved bits set (no extensions negotiated) */
    NH_EWS_OPCODE = -4005,       /* reserved opcode */
    NH_EWS_TOO_BIG = -4006,      /* frame payload over max_frame */
    NH_EWS_CONTROL = -4007,      /* control frame fragmented or over 125 bytes */
    NH_EWS_CONTINUATION = -4008, /* continuation without start, or new data frame mid-message */
    NH_EWS_CLOSE_CODE = -4009,   /* close payload of 1 byte or an invalid status code */
    NH_EWS_CLOSE_UTF8 = -4010,   /* close reason not valid UTF-8 */
    NH_EWS_LENGTH = -4011,       /* 64-bit payload length with the most significant bit set */
    NH_EWS_TEXT = -4012,         /* a text frame where refuse_text is set (close 1003) */
    NH_EWS_NOMEM = -4013,        /* out of memory collecting a split control frame (1011) */
};

const char *nh_ws_strerror(int err);
int nh_ws_error_close_code(int err);

/* ---- HTTP request head ---- */

#define NH_HTTP_MAX_HEAD 8192
#define NH_HTTP_MAX_PATH 256
#define NH_HTTP_MAX_ORIGIN 256

typedef struct nh_http_req {
    http_parser parser;
    size_t head_bytes;
    int complete;                    /* 1 once the head is complete */
    int method;                      /* enum http_method */
    char path[NH_HTTP_MAX_PATH];     /* URL path only (no query), NUL-terminated; "" if too long */
    char origin[NH_HTTP_MAX_ORIGIN]; /* Origin header or "" */
    char key[64];                    /* Sec-WebSocket-Key or "" */
    int version;                     /* Sec-WebSocket-Version, 0 if absent, -1 if not a number */
    int upgrade_websocket;           /* Upgrade: websocket (case-insensitive) */
    int connection_upgrade; /* Connection header lists "upgrade" (case-insensitive token) */
    int hosts;              /* Host headers seen (RFC 7230 5.4: exactly one, or 400) */
    int bad_header;         /* Origin, key or version repeated or too long: never a valid upgrade */
    /* For a plain request (an HTTP route): the target as sent (path and query; target_len >=
     * sizeof target: too long, truncated), how the body comes (content_length UINT64_MAX: none
     * given) and, when the caller set keep_headers after init, every header as "name\0value\0"
     * pairs with names lower-cased, in a buffer that grows as they come (at most the head's size;
     * freed by nh_http_req_release). */
    char target[1024];
    size_t target_len;
    int keep_headers;
    char *headers; /* NULL until a header arrives (or out of memory: then headers_len is 0) */
    size_t headers_len, headers_cap;
    uint64_t content_length;
    int chunked;
    int hdr_state; /* scratch: 0 before the first header, 1 in a name, 2 in a value */
    /* parser scratch: which header is being read, partial values. A *len counts every byte
     * offered, so a length >= the buffer's size means the text was too long (and truncated). */
    int cur_header;
    int seen_headers; /* bit per single-valued header already read */
    char hbuf[32];
    size_t hlen;
    char vbuf[NH_HTTP_MAX_ORIGIN];
    size_t vlen;
    int value_in_progress;
    char urlbuf[NH_HTTP_MAX_PATH * 2]; /* request target up to the first '?' or '#' */
    size_t urllen;
    int url_done;
} nh_http_req_t;

void nh_http_req_init(nh_http_req_t *r);
/* Frees what keep_headers kept; the request may then be initialised again. */
void nh_http_req_release(nh_http_req_t *r);

/* Feeds bytes. Stops at the end of the head; *consumed tells how many bytes belonged to it
 * (bytes after it are the first WebSocket frames and must be given to the frame parser).
 * While 0 is returned *consumed == len; once complete, further calls return 1 and consume 0.
 * Any request body (Content-Length) is not read: it is left with the bytes after the head.
 * Returns 1 when the head is complete, 0 when more bytes are needed, or a negative NH_EWS_*. */
int nh_http_req_feed(nh_http_req_t *r, const char *data, size_t len, size_t *consumed);

/* Why a complete head is not a valid WebSocket upgrade (each answered 400; NH_UPGRADE_VERSION
 * with "Sec-WebSocket-Version: 13", as RFC 6455 4.2.2 asks). */
enum nh_upgrade_check {
    NH_UPGRADE_OK = 0,
    NH_UPGRADE_INCOMPLETE,    /* head not complete */
    NH_UPGRADE_NOT_GET,       /* method other than GET, or before HTTP/1.1 */
    NH_UPGRADE_HOST,          /* no Host header, or more than one (RFC 7230 5.4) */
    NH_UPGRADE_BAD_HEADER,    /* Origin, key or version repeated or too long */
    NH_UPGRADE_NOT_WEBSOCKET, /* no Upgrade: websocket or no Connection: upgrade */
    NH_UPGRADE_VERSION,       /* Sec-WebSocket-Version absent or not 13 */
    NH_UPGRADE_KEY,           /* Sec-WebSocket-Key not 16 bytes in base64 */
};

/* Checks, in the order above: returns NH_UPGRADE_OK or the first reason the upgrade fails. */
int nh_http_req_check_upgrade(const nh_http_req_t *r);
const char *nh_http_upgrade_strerror(int check);

/* Is this a valid WebSocket upgrade (complete head, GET, HTTP/1.1 or later, exactly one Host,
 * Upgrade: websocket, Connection: upgrade, version 13, a 16-byte base64 key, no repeated or
 * overlong Origin, key or version)? Returns 1 or 0. */
int nh_http_req_is_upgrade(const nh_http_req_t *r);

/* out receives 28 base64 chars + NUL. Returns 0 or NH_EWS_HTTP. */
int nh_ws_accept_key(const char *client_key, char out[29]);

/* ---- frames ---- */

enum nh_ws_opcode {
    NH_WS_CONT = 0x0,
    NH_WS_TEXT = 0x1,
    NH_WS_BINARY = 0x2,
    NH_WS_CLOSE = 0x8,
    NH_WS_PING = 0x9,
    NH_WS_PONG = 0xA,
};

typedef struct nh_ws_callbacks {
    /* payload bytes of a data message (text, binary and their continuations), unmasked,
     * in order; `fin` is 1 on the last chunk of the last frame of the message. */
    int (*on_data)(void *ud, const uint8_t *data, size_t len, int fin);
    /* complete control frames (payload <= 125 bytes, unmasked) */
    int (*on_ping)(void *ud, const uint8_t *data, size_t len);
    int (*on_pong)(void *ud, const uint8_t *data, size_t len);
    /* code is 1005 when the close frame had no status; reason not NUL-terminated */
    int (*on_close)(void *ud, int code, const uint8_t *reason, size_t len);
} nh_ws_callbacks_t;

typedef struct nh_ws_parser {
    uint64_t remaining; /* payload bytes left in the current frame */
    uint64_t max_frame;
    /* A control frame's payload (at most 125 bytes) that did not arrive in one feed, collected
     * here until whole: malloc'd when such a frame starts, freed when it is delivered (or by
     * nh_ws_parser_release). NULL otherwise: a control frame that arrives whole is handed out
     * where it lies, so an idle connection holds no buffer for it. */
    uint8_t *ctl;
    uint8_t ctl_len;
    uint8_t state;
    uint8_t hdr[14];
    uint8_t hdr_have, hdr_need;
    uint8_t opcode; /* of the frame in progress */
    uint8_t fin;
    uint8_t in_message; /* a fragmented data message is in progress */
    uint8_t msg_opcode; /* NH_WS_TEXT or NH_WS_BINARY of the current message (read in on_data) */
    uint8_t mask[8];    /* the frame's 4-byte key twice: the 4 bytes of it from any phase */
    uint8_t mask_off;   /* payload offset mod 4, for the mask index */
    /* Set by the caller after init: a text message is refused (NH_EWS_TEXT, close 1003 "cannot
     * accept this data type"). nano's protocol is binary; RFC 6455 8.1 would otherwise ask for
     * UTF-8 validation of text, which no client of this protocol needs. */
    uint8_t refuse_text;
} nh_ws_parser_t;

/* max_frame limits the payload of each data frame (not of a whole fragmented message: the
 * caller counts what on_data delivers). Control frames are limited to 125 bytes by RFC 6455. */
void nh_ws_parser_init(nh_ws_parser_t *p, uint64_t max_frame);
/* 1 when the parser holds nothing across feeds: no frame or fragmented message in progress, so
 * that it may be dropped and initialised again for the next bytes (transport_ws.c does, to keep
 * no parser for an idle connection). */
int nh_ws_parser_between_frames(const nh_ws_parser_t *p);
/* Frees a split control frame's buffer, if one is being collected. The parser may then be
 * initialised again (it must not be fed without that). */
void nh_ws_parser_release(nh_ws_parser_t *p);

/* Unmasks `data` in place. Callbacks returning non-zero stop parsing; that value is returned.
 * Any callback may be NULL. Returns 0, a callback's stop value, or a negative NH_EWS_* error;
 * after a non-zero return the rest of `data` was not parsed and the parser must not be fed
 * again. Text payload is not checked for UTF-8: set refuse_text, or check it using msg_opcode. */
int nh_ws_parser_feed(nh_ws_parser_t *p, uint8_t *data, size_t len, const nh_ws_callbacks_t *cb,
                      void *ud);

/* Header of an unmasked, final server frame. out needs 10 bytes. Returns its length (2, 4 or 10).
 */
size_t nh_ws_frame_header(uint8_t out[10], int opcode, uint64_t payload_len);

#endif
