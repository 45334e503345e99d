/* tls.c on memory only: a client and a server context talk through byte arrays, in every split;
 * bad files, a mismatched key, garbage and plain text where a ClientHello belongs, close_notify,
 * a minimum version the client cannot meet, and output memory given back after a burst. The
 * certificates are made here with OpenSSL's API, in a temporary folder. */
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509.h>

#include <openssl/ssl.h>

#include "check.h"
#include "tls.h"

static char dir[] = "/tmp/nh-test-tls-XXXXXX";
static char cert_a[256], key_a[256], key_b[256], missing[256];

static EVP_PKEY *new_key(void) {
    return EVP_EC_gen("P-256");
}

static void write_key(EVP_PKEY *k, const char *path) {
    FILE *f = fopen(path, "w");
    PEM_write_PrivateKey(f, k, NULL, NULL, 0, NULL, NULL);
    fclose(f);
}

static void write_cert(EVP_PKEY *k, const char *path) {
    X509 *x = X509_new();
    ASN1_INTEGER_set(X509_get_serialNumber(x), 1);
    X509_gmtime_adj(X509_getm_notBefore(x), -60);
    X509_gmtime_adj(X509_getm_notAfter(x), 3600);
    X509_set_pubkey(x, k);
    X509_NAME *name = X509_get_subject_name(x);
    X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_ASC, (const unsigned char *)"localhost", -1, -1,
                               0);
    X509_set_issuer_name(x, name);
    X509_sign(x, k, EVP_sha256());
    FILE *f = fopen(path, "w");
    PEM_write_X509(f, x);
    fclose(f);
    X509_free(x);
}

static void make_files(void) {
    if (!mkdtemp(dir)) abort();
    snprintf(cert_a, sizeof cert_a, "%s/a.crt", dir);
    snprintf(key_a, sizeof key_a, "%s/a.key", dir);
    snprintf(key_b, sizeof key_b, "%s/b.key", dir);
    snprintf(missing, sizeof missing, "%s/none.pem", dir);
    EVP_PKEY *a = new_key(), *b = new_key();
    write_key(a, key_a);
    write_cert(a, cert_a);
    write_key(b, key_b);
    EVP_PKEY_free(a);
    EVP_PKEY_free(b);
}

static void remove_files(void) {
    unlink(cert_a);
    unlink(key_a);
    unlink(key_b);
    rmdir(dir);
}

/* Moves what `from` has to send into `to`, `step` bytes per feed. Returns the feed result. */
static int pump(nh_tls_t *from, nh_tls_t *to, size_t step) {
    uint8_t buf[65536];
    size_t n;
    int r = NH_TLS_OK;
    while ((n = nh_tls_out_take(from, buf, sizeof buf)) > 0) {
        for (size_t off = 0; off < n && r == NH_TLS_OK; off += step) {
            size_t k = n - off < step ? n - off : step;
            r = nh_tls_feed(to, buf + off, k);
        }
    }
    return r;
}

/* Reads everything `t` has decrypted into out; returns the count, or a negative NH_TLS_*. */
static long drain(nh_tls_t *t, uint8_t *out, size_t cap) {
    long total = 0, n;
    while ((n = nh_tls_read(t, out + total, cap - (size_t)total)) > 0)
        total += n;
    return n < 0 ? n : total;
}

static void connect_pair(nh_tls_ctx_t *sctx, nh_tls_ctx_t *cctx, nh_tls_t **s, nh_tls_t **c,
                         size_t step) {
    *s = nh_tls_new(sctx, NULL);
    *c = nh_tls_new(cctx, "localhost");
    for (int i = 0; i < 10 && !(nh_tls_handshake_done(*s) && nh_tls_handshake_done(*c)); i++) {
        CHECK(pump(*c, *s, step) == NH_TLS_OK);
        CHECK(pump(*s, *c, step) == NH_TLS_OK);
        uint8_t none[16];
        drain(*s, none, sizeof none);
        drain(*c, none, sizeof none);
    }
}

static nh_tls_ctx_t *server_ctx(const char *cert, const char *key, const char *min, char *err) {
    nh_tls_opts_t o = {.cert = cert, .key = key, .min_version = min, .alpn_http11 = 1};
    return nh_tls_ctx_server(&o, err, 300);
}

static void test_bad_files(void) {
    char err[300];
    CHECK(server_ctx(missing, key_a, NULL, err) == NULL);
    CHECK(strstr(err, "certificate") && strstr(err, missing) && strstr(err, "No such file"));
    CHECK(server_ctx(cert_a, missing, NULL, err) == NULL);
    CHECK(strstr(err, "key") && strstr(err, missing));
    CHECK(server_ctx(cert_a, key_b, NULL, err) == NULL);
    CHECK(strstr(err, "does not match") && strstr(err, key_b));
    CHECK(server_ctx(key_a, key_a, NULL, err) == NULL); /* a key where the certificate belongs */
    CHECK(strstr(err, "certificate") && strstr(err, key_a));
    CHECK(server_ctx(cert_a, key_a, "1.1", err) == NULL);
    CHECK(strstr(err, "min_version"));
}

static void test_round_trip(size_t step) {
    char err[300];
    nh_tls_ctx_t *sctx = server_ctx(cert_a, key_a, NULL, err);
    nh_tls_ctx_t *cctx = nh_tls_ctx_client(NULL, 0, err, sizeof err);
    CHECK(sctx && cctx);
    nh_tls_t *s, *c;
    connect_pair(sctx, cctx, &s, &c, step);
    CHECK(nh_tls_handshake_done(s) && nh_tls_handshake_done(c));
    CHECK(strcmp(nh_tls_version(s), "TLSv1.3") == 0);
    /* client -> server, then a larger reply the other way */
    static uint8_t big[100000], got[100000];
    for (size_t i = 0; i < sizeof big; i++)
        big[i] = (uint8_t)(i * 7);
    CHECK(nh_tls_write(c, (const uint8_t *)"\x01\x00\x00\x02{}", 6) == NH_TLS_OK);
    CHECK(pump(c, s, step) == NH_TLS_OK);
    CHECK(drain(s, got, sizeof got) == 6 && memcmp(got, "\x01\x00\x00\x02{}", 6) == 0);
    CHECK(nh_tls_write(s, big, sizeof big) == NH_TLS_OK);
    CHECK(pump(s, c, step > 1 ? step : 4096) == NH_TLS_OK); /* 1-byte steps of 100 kB: slow */
    CHECK(drain(c, got, sizeof got) == (long)sizeof big && memcmp(got, big, sizeof big) == 0);
    /* close_notify: the server's next read says closed */
    nh_tls_shutdown(c);
    CHECK(pump(c, s, step) == NH_TLS_OK);
    CHECK(nh_tls_read(s, got, sizeof got) == NH_TLS_CLOSED);
    nh_tls_free(s);
    nh_tls_free(c);
    nh_tls_ctx_unref(sctx);
    nh_tls_ctx_unref(cctx);
}

static void test_not_tls(const char *bytes, size_t len) {
    char err[300];
    nh_tls_ctx_t *sctx = server_ctx(cert_a, key_a, NULL, err);
    nh_tls_t *s = nh_tls_new(sctx, NULL);
    int r = nh_tls_feed(s, (const uint8_t *)bytes, len);
    uint8_t buf[64];
    if (r == NH_TLS_OK) r = (int)nh_tls_read(s, buf, sizeof buf);
    CHECK(r == NH_TLS_ERROR);
    CHECK(strstr(nh_tls_error(s), "handshake") != NULL);
    nh_tls_free(s);
    nh_tls_ctx_unref(sctx);
}

static void test_truncated_hello(void) {
    char err[300];
    nh_tls_ctx_t *sctx = server_ctx(cert_a, key_a, NULL, err);
    nh_tls_ctx_t *cctx = nh_tls_ctx_client(NULL, 0, err, sizeof err);
    nh_tls_t *s = nh_tls_new(sctx, NULL), *c = nh_tls_new(cctx, NULL);
    uint8_t hello[4096];
    size_t n = nh_tls_out_take(c, hello, sizeof hello);
    CHECK(n > 20);
    /* half a ClientHello: no error and no progress; the connection's deadline ends it */
    CHECK(nh_tls_feed(s, hello, n / 2) == NH_TLS_OK);
    CHECK(!nh_tls_handshake_done(s));
    CHECK(nh_tls_out_pending(s) == 0);
    nh_tls_free(s);
    nh_tls_free(c);
    nh_tls_ctx_unref(sctx);
    nh_tls_ctx_unref(cctx);
}

static void test_min_version(void) {
    char err[300];
    nh_tls_ctx_t *sctx = server_ctx(cert_a, key_a, "1.3", err);
    nh_tls_ctx_t *cctx = nh_tls_ctx_client(NULL, 0, err, sizeof err);
    CHECK(sctx && cctx);
    nh_tls_t *s = nh_tls_new(sctx, NULL), *c = nh_tls_new(cctx, NULL);
    /* the same client limited to TLS 1.2 is refused */
    SSL_CTX_set_max_proto_version((SSL_CTX *)cctx, TLS1_2_VERSION);
    nh_tls_free(c);
    c = nh_tls_new(cctx, NULL);
    int r = pump(c, s, 1 << 20);
    uint8_t buf[16];
    if (r == NH_TLS_OK) r = (int)nh_tls_read(s, buf, sizeof buf);
    CHECK(r == NH_TLS_ERROR);
    nh_tls_free(s);
    nh_tls_free(c);
    nh_tls_ctx_unref(sctx);
    nh_tls_ctx_unref(cctx);
}

static void test_verify(void) {
    char err[300];
    nh_tls_ctx_t *sctx = server_ctx(cert_a, key_a, NULL, err);
    /* trusting the self-signed certificate: the name matches */
    nh_tls_ctx_t *ok = nh_tls_ctx_client(cert_a, 1, err, sizeof err);
    nh_tls_t *s, *c;
    connect_pair(sctx, ok, &s, &c, 1 << 20);
    CHECK(nh_tls_handshake_done(c));
    nh_tls_free(s);
    nh_tls_free(c);
    /* the same certificate for another name is refused by the client */
    s = nh_tls_new(sctx, NULL);
    c = nh_tls_new(ok, "example.org");
    int r = NH_TLS_OK;
    for (int i = 0; i < 5 && r == NH_TLS_OK; i++) {
        pump(c, s, 1 << 20);
        uint8_t buf[16];
        drain(s, buf, sizeof buf);
        r = pump(s, c, 1 << 20);
        if (r == NH_TLS_OK && nh_tls_read(c, buf, sizeof buf) < 0) r = NH_TLS_ERROR;
    }
    CHECK(r == NH_TLS_ERROR && !nh_tls_handshake_done(c));
    nh_tls_free(s);
    nh_tls_free(c);
    nh_tls_ctx_unref(ok);
    nh_tls_ctx_unref(sctx);
}

/* A context dropped by its listener lives on in the connections made from it. */
static void test_ctx_outlives_listener(void) {
    char err[300];
    nh_tls_ctx_t *sctx = server_ctx(cert_a, key_a, NULL, err);
    nh_tls_ctx_t *cctx = nh_tls_ctx_client(NULL, 0, err, sizeof err);
    nh_tls_t *s, *c;
    connect_pair(sctx, cctx, &s, &c, 1 << 20);
    nh_tls_ctx_unref(sctx); /* rotated away */
    uint8_t got[8];
    CHECK(nh_tls_write(c, (const uint8_t *)"ping", 4) == NH_TLS_OK);
    CHECK(pump(c, s, 1 << 20) == NH_TLS_OK);
    CHECK(drain(s, got, sizeof got) == 4);
    nh_tls_free(s);
    nh_tls_free(c);
    nh_tls_ctx_unref(cctx);
}

int main(void) {
    make_files();
    test_bad_files();
    test_round_trip(1 << 20);
    test_round_trip(1);
    test_round_trip(7);
    test_not_tls("GET / HTTP/1.1\r\nHost: x\r\n\r\n", 27);
    test_not_tls("\x16\x03\x01\x00\x05garbage-garbage", 20);
    test_truncated_hello();
    test_min_version();
    test_verify();
    test_ctx_outlives_listener();
    remove_files();
    return check_done();
}
