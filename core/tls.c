#include "tls.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/err.h>
#include <openssl/ssl.h>

/* An nh_tls_ctx_t is an SSL_CTX: OpenSSL counts its references, and each SSL made from it holds
 * one, which is exactly "live connections keep the context they were accepted with". */
static SSL_CTX *sslctx(nh_tls_ctx_t *c) {
    return (SSL_CTX *)c;
}

struct nh_tls {
    SSL *ssl;
    BIO *rbio, *wbio; /* owned by ssl */
    int done;         /* handshake finished */
    int renegotiating;
    int shut;
    char err[200];
};

/* A memory BIO whose buffer grew past this is replaced once empty: an idle connection should not
 * keep the largest burst it ever sent. */
#define NH_TLS_KEEP_BIO 16384

/* OpenSSL's most specific reason for the last failure, and the queue emptied. */
static void openssl_reason(char *out, size_t len) {
    unsigned long e, last = 0;
    while ((e = ERR_get_error()) != 0)
        last = e;
    if (last) {
        const char *r = ERR_reason_error_string(last);
        snprintf(out, len, "%s", r ? r : "unknown OpenSSL error");
    } else {
        snprintf(out, len, "%s", errno ? strerror(errno) : "unknown error");
    }
}

static int readable(const char *what, const char *path, char *err, size_t errlen) {
    FILE *f = fopen(path, "rb");
    if (!f) {
        snprintf(err, errlen, "%s %s: %s", what, path, strerror(errno));
        return 0;
    }
    fclose(f);
    return 1;
}

static int select_alpn(SSL *ssl, const unsigned char **out, unsigned char *outlen,
                       const unsigned char *in, unsigned inlen, void *arg) {
    (void)ssl;
    (void)arg;
    static const unsigned char http11[] = "\x08http/1.1";
    unsigned char *o;
    if (SSL_select_next_proto(&o, outlen, http11, sizeof http11 - 1, in, inlen) ==
        OPENSSL_NPN_NEGOTIATED) {
        *out = o;
        return SSL_TLSEXT_ERR_OK;
    }
    return SSL_TLSEXT_ERR_NOACK; /* go on without ALPN rather than fail the handshake */
}

/* A handshake that starts again on an established connection is a renegotiation: refused. */
static void on_info(const SSL *ssl, int where, int ret) {
    (void)ret;
    if (!(where & SSL_CB_HANDSHAKE_START)) return;
    nh_tls_t *t = SSL_get_app_data(ssl);
    if (t && t->done && SSL_version(ssl) < TLS1_3_VERSION) t->renegotiating = 1;
}

static int set_min_version(SSL_CTX *ctx, const char *v, char *err, size_t errlen) {
    int ver = TLS1_2_VERSION;
    if (v && strcmp(v, "1.3") == 0)
        ver = TLS1_3_VERSION;
    else if (v && strcmp(v, "1.2") != 0) {
        snprintf(err, errlen, "min_version must be \"1.2\" or \"1.3\", not \"%s\"", v);
        return 0;
    }
    SSL_CTX_set_min_proto_version(ctx, ver);
    return 1;
}

nh_tls_ctx_t *nh_tls_ctx_server(const nh_tls_opts_t *o, char *err, size_t errlen) {
    char why[160];
    ERR_clear_error();
    if (!o->cert || !o->key) {
        snprintf(err, errlen, "tls needs both cert and key (PEM files)");
        return NULL;
    }
    if (!readable("certificate", o->cert, err, errlen) || !readable("key", o->key, err, errlen))
        return NULL;
    if (o->ca && !readable("ca", o->ca, err, errlen)) return NULL;
    SSL_CTX *ctx = SSL_CTX_new(TLS_server_method());
    if (!ctx) {
        openssl_reason(why, sizeof why);
        snprintf(err, errlen, "TLS context: %s", why);
        return NULL;
    }
    if (!set_min_version(ctx, o->min_version, err, errlen)) goto fail;
    SSL_CTX_set_options(ctx, SSL_OP_NO_RENEGOTIATION | SSL_OP_NO_COMPRESSION |
                                 SSL_OP_CIPHER_SERVER_PREFERENCE);
    /* Record buffers are freed while a connection is idle: ten thousand idle players should not
     * hold 34 KiB of buffers each. */
    SSL_CTX_set_mode(ctx, SSL_MODE_RELEASE_BUFFERS);
    SSL_CTX_set_info_callback(ctx, on_info);
    if (SSL_CTX_use_certificate_chain_file(ctx, o->cert) != 1) {
        openssl_reason(why, sizeof why);
        snprintf(err, errlen, "certificate %s: %s", o->cert, why);
        goto fail;
    }
    if (SSL_CTX_use_PrivateKey_file(ctx, o->key, SSL_FILETYPE_PEM) != 1) {
        openssl_reason(why, sizeof why);
        if (strstr(why, "mismatch")) /* OpenSSL checks the pair while loading the key */
            snprintf(err, errlen, "key %s does not match certificate %s: %s", o->key, o->cert, why);
        else
            snprintf(err, errlen, "key %s: %s", o->key, why);
        goto fail;
    }
    if (SSL_CTX_check_private_key(ctx) != 1) {
        openssl_reason(why, sizeof why);
        snprintf(err, errlen, "key %s does not match certificate %s: %s", o->key, o->cert, why);
        goto fail;
    }
    if (o->ciphers && SSL_CTX_set_cipher_list(ctx, o->ciphers) != 1) {
        openssl_reason(why, sizeof why);
        snprintf(err, errlen, "ciphers \"%s\": %s", o->ciphers, why);
        goto fail;
    }
    if (o->ca) {
        STACK_OF(X509_NAME) *names = SSL_load_client_CA_file(o->ca);
        if (!names || SSL_CTX_load_verify_locations(ctx, o->ca, NULL) != 1) {
            if (names) sk_X509_NAME_pop_free(names, X509_NAME_free);
            openssl_reason(why, sizeof why);
            snprintf(err, errlen, "ca %s: %s", o->ca, why);
            goto fail;
        }
        SSL_CTX_set_client_CA_list(ctx, names);
        SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER | SSL_VERIFY_FAIL_IF_NO_PEER_CERT, NULL);
    }
    if (o->alpn_http11) SSL_CTX_set_alpn_select_cb(ctx, select_alpn, NULL);
    return (nh_tls_ctx_t *)ctx;
fail:
    SSL_CTX_free(ctx);
    ERR_clear_error();
    return NULL;
}

nh_tls_ctx_t *nh_tls_ctx_client(const char *ca, int verify, char *err, size_t errlen) {
    char why[160];
    ERR_clear_error();
    SSL_CTX *ctx = SSL_CTX_new(TLS_client_method());
    if (!ctx) {
        openssl_reason(why, sizeof why);
        snprintf(err, errlen, "TLS context: %s", why);
        return NULL;
    }
    SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION);
    SSL_CTX_set_mode(ctx, SSL_MODE_RELEASE_BUFFERS);
    if (verify) {
        int ok = ca ? SSL_CTX_load_verify_locations(ctx, ca, NULL)
                    : SSL_CTX_set_default_verify_paths(ctx);
        if (ok != 1) {
            openssl_reason(why, sizeof why);
            snprintf(err, errlen, "ca %s: %s", ca ? ca : "(system store)", why);
            SSL_CTX_free(ctx);
            return NULL;
        }
        SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, NULL);
    }
    return (nh_tls_ctx_t *)ctx;
}

void nh_tls_ctx_ref(nh_tls_ctx_t *ctx) {
    SSL_CTX_up_ref(sslctx(ctx));
}

void nh_tls_ctx_unref(nh_tls_ctx_t *ctx) {
    if (ctx) SSL_CTX_free(sslctx(ctx));
}

static int fail(nh_tls_t *t, const char *what) {
    char why[160];
    openssl_reason(why, sizeof why);
    snprintf(t->err, sizeof t->err, "%s: %s", what, why);
    return NH_TLS_ERROR;
}

/* Advances the handshake; NH_TLS_OK while it goes on or once it is done. */
static int handshake(nh_tls_t *t) {
    if (t->done) return NH_TLS_OK;
    ERR_clear_error();
    int r = SSL_do_handshake(t->ssl);
    if (r == 1) {
        t->done = 1;
        return NH_TLS_OK;
    }
    int e = SSL_get_error(t->ssl, r);
    if (e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE) return NH_TLS_OK;
    return fail(t, "handshake");
}

nh_tls_t *nh_tls_new(nh_tls_ctx_t *ctx, const char *server_name) {
    nh_tls_t *t = calloc(1, sizeof *t);
    if (!t) return NULL;
    t->ssl = SSL_new(sslctx(ctx));
    t->rbio = BIO_new(BIO_s_mem());
    t->wbio = BIO_new(BIO_s_mem());
    if (!t->ssl || !t->rbio || !t->wbio) {
        if (t->ssl) SSL_free(t->ssl);
        BIO_free(t->rbio);
        BIO_free(t->wbio);
        free(t);
        ERR_clear_error();
        return NULL;
    }
    SSL_set_bio(t->ssl, t->rbio, t->wbio);
    SSL_set_app_data(t->ssl, t);
    if (SSL_is_server(t->ssl)) {
        SSL_set_accept_state(t->ssl);
    } else {
        if (server_name) {
            SSL_set_tlsext_host_name(t->ssl, server_name);
            if (SSL_CTX_get_verify_mode(sslctx(ctx)) & SSL_VERIFY_PEER)
                SSL_set1_host(t->ssl, server_name);
        }
        SSL_set_connect_state(t->ssl);
        handshake(t); /* the ClientHello, waiting in the output */
    }
    return t;
}

void nh_tls_free(nh_tls_t *t) {
    if (!t) return;
    SSL_free(t->ssl); /* frees both BIOs */
    free(t);
}

/* Gives an emptied memory BIO's buffer back when it grew large. */
static void trim(nh_tls_t *t, int read_side) {
    BIO *b = read_side ? t->rbio : t->wbio;
    if (BIO_ctrl_pending(b) != 0) return;
    BUF_MEM *bm = NULL;
    BIO_get_mem_ptr(b, &bm);
    if (!bm || bm->max <= NH_TLS_KEEP_BIO) return;
    BIO *fresh = BIO_new(BIO_s_mem());
    if (!fresh) return;
    if (read_side) {
        SSL_set0_rbio(t->ssl, fresh);
        t->rbio = fresh;
    } else {
        SSL_set0_wbio(t->ssl, fresh);
        t->wbio = fresh;
    }
}

int nh_tls_feed(nh_tls_t *t, const uint8_t *data, size_t len) {
    t->err[0] = '\0';
    while (len > 0) {
        size_t n = 0;
        if (BIO_write_ex(t->rbio, data, len, &n) != 1 || n == 0) {
            snprintf(t->err, sizeof t->err, "out of memory");
            return NH_TLS_ERROR;
        }
        data += n;
        len -= n;
    }
    return handshake(t);
}

long nh_tls_read(nh_tls_t *t, uint8_t *out, size_t cap) {
    if (handshake(t) < 0) return NH_TLS_ERROR;
    if (!t->done || cap == 0) return 0;
    ERR_clear_error();
    size_t n = 0;
    int r = SSL_read_ex(t->ssl, out, cap, &n);
    if (t->renegotiating) {
        snprintf(t->err, sizeof t->err, "renegotiation refused");
        return NH_TLS_ERROR;
    }
    if (r == 1) return (long)n;
    int e = SSL_get_error(t->ssl, r);
    if (e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE) {
        trim(t, 1);
        return 0;
    }
    if (e == SSL_ERROR_ZERO_RETURN) return NH_TLS_CLOSED;
    return fail(t, "read");
}

int nh_tls_write(nh_tls_t *t, const uint8_t *data, size_t len) {
    if (!t->done) {
        snprintf(t->err, sizeof t->err, "write before the handshake finished");
        return NH_TLS_ERROR;
    }
    ERR_clear_error();
    while (len > 0) {
        size_t n = 0;
        if (SSL_write_ex(t->ssl, data, len, &n) != 1) return fail(t, "write");
        data += n;
        len -= n;
    }
    return NH_TLS_OK;
}

size_t nh_tls_out_pending(const nh_tls_t *t) {
    return BIO_ctrl_pending(t->wbio);
}

size_t nh_tls_out_take(nh_tls_t *t, uint8_t *out, size_t cap) {
    size_t n = 0;
    if (cap == 0 || BIO_read_ex(t->wbio, out, cap, &n) != 1) n = 0;
    trim(t, 0);
    return n;
}

int nh_tls_handshake_done(const nh_tls_t *t) {
    return t->done;
}

void nh_tls_shutdown(nh_tls_t *t) {
    if (t->shut || !t->done) return;
    t->shut = 1;
    ERR_clear_error();
    SSL_shutdown(t->ssl); /* queues close_notify; the peer's answer is not awaited */
    ERR_clear_error();
}

const char *nh_tls_error(const nh_tls_t *t) {
    return t->err;
}

const char *nh_tls_version(const nh_tls_t *t) {
    return SSL_get_version(t->ssl);
}

const char *nh_tls_alpn(const nh_tls_t *t, char *out, size_t len) {
    const unsigned char *p = NULL;
    unsigned n = 0;
    SSL_get0_alpn_selected(t->ssl, &p, &n);
    snprintf(out, len, "%.*s", (int)n, p ? (const char *)p : "");
    return out;
}
