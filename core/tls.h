/* tls — TLS on memory buffers, with no socket, no libuv and no Lua (OpenSSL underneath).
 *
 * The connection layer feeds it the bytes that arrived from the socket (ciphertext) and reads
 * back plaintext for the transport above (the packet stream, or WebSocket's HTTP + frames); the
 * transport's output goes in as plaintext and comes out as ciphertext for the socket. So every
 * transport, limit and batching rule works the same over TLS: TLS sits under them.
 *
 * Contexts hold the certificate, key and settings of one listener. A context is refcounted: each
 * connection holds a reference to the one it was accepted with, so a listener can swap in a new
 * context (certificates rotated by a reload) while live connections keep theirs.
 *
 * Errors: functions that fail return NULL or a negative NH_TLS_* value; nh_tls_error() and the
 * err buffers carry text that names the file and OpenSSL's reason, for the log and for Lua.
 */
#ifndef NH_TLS_H
#define NH_TLS_H

#include <stddef.h>
#include <stdint.h>

typedef struct nh_tls_ctx nh_tls_ctx_t;
typedef struct nh_tls nh_tls_t;

typedef struct nh_tls_opts {
    const char *cert;        /* PEM: the certificate (chain) the server presents */
    const char *key;         /* PEM: its private key */
    const char *ca;          /* PEM: when set, clients must present a certificate signed by these */
    const char *ciphers;     /* OpenSSL cipher list for TLS 1.2 (NULL: OpenSSL's defaults) */
    const char *min_version; /* "1.2" (NULL: the default) or "1.3" */
    int alpn_http11;         /* answer ALPN "http/1.1" (WebSocket listeners) */
} nh_tls_opts_t;

/* A server context. NULL on error, with the reason (naming the file) in err. */
nh_tls_ctx_t *nh_tls_ctx_server(const nh_tls_opts_t *o, char *err, size_t errlen);
/* A client context: verify != 0 checks the server's certificate against `ca` (NULL: the system's
 * store) and the host name given to nh_tls_new; verify == 0 accepts any (tests, self-signed). */
nh_tls_ctx_t *nh_tls_ctx_client(const char *ca, int verify, char *err, size_t errlen);
void nh_tls_ctx_ref(nh_tls_ctx_t *ctx);
void nh_tls_ctx_unref(nh_tls_ctx_t *ctx);

/* A connection's TLS state; takes a reference to ctx. For a client, server_name is sent as SNI
 * and verified when the context verifies; a client starts its handshake at once (its first
 * records wait in the output). NULL when out of memory. */
nh_tls_t *nh_tls_new(nh_tls_ctx_t *ctx, const char *server_name);
void nh_tls_free(nh_tls_t *t);

enum {
    NH_TLS_OK = 0,
    NH_TLS_ERROR = -1,  /* handshake failure, a bad record, renegotiation: close the connection */
    NH_TLS_CLOSED = -2, /* the peer sent close_notify */
};

/* Ciphertext from the peer (any split). Advances the handshake. NH_TLS_OK or NH_TLS_ERROR. */
int nh_tls_feed(nh_tls_t *t, const uint8_t *data, size_t len);
/* Decrypted bytes, up to cap: > 0 bytes, 0 when nothing more can be read now, NH_TLS_CLOSED, or
 * NH_TLS_ERROR. Call after each feed until it returns <= 0. */
long nh_tls_read(nh_tls_t *t, uint8_t *out, size_t cap);
/* Encrypts len bytes into the output. Only after the handshake (NH_TLS_ERROR before it).
 * NH_TLS_OK or NH_TLS_ERROR. */
int nh_tls_write(nh_tls_t *t, const uint8_t *data, size_t len);
/* Ciphertext waiting to be sent (handshake records, encrypted data, alerts). */
size_t nh_tls_out_pending(const nh_tls_t *t);
/* Moves up to cap bytes of it into out; returns the count. When the output is empty afterwards,
 * its buffer is given back (idle connections hold no output memory). */
size_t nh_tls_out_take(nh_tls_t *t, uint8_t *out, size_t cap);
int nh_tls_handshake_done(const nh_tls_t *t);
/* Queues close_notify (once). */
void nh_tls_shutdown(nh_tls_t *t);
/* Why the last call failed ("" if none). */
const char *nh_tls_error(const nh_tls_t *t);
/* The negotiated protocol ("TLSv1.3"), for logs and tests. */
const char *nh_tls_version(const nh_tls_t *t);
/* The protocol chosen by ALPN ("http/1.1", or "" when none) into out; returns out. */
const char *nh_tls_alpn(const nh_tls_t *t, char *out, size_t len);

#endif
