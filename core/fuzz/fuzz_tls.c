/* fuzz_tls — the TLS layer as the connection uses it.
 *
 * Input byte 0 chooses the mode, byte 1 seeds the split points:
 *   even: the rest is what a client sent before any handshake (garbage, a cut ClientHello, plain
 *         text). It is fed to a server in random pieces: no crash, no plaintext ever comes out,
 *         and an error is sticky.
 *   odd:  a real client and server handshake in memory, then the client sends the rest as
 *         application data written in random pieces. The server decrypts in random pieces and
 *         feeds the packet decoder, which must see exactly the packets it sees when fed the
 *         plaintext directly: TLS records never change the stream the codec gets.
 * The certificate is made once, in memory, with OpenSSL's API (written to a temporary folder).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509.h>

#include "codec.h"
#include "tls.h"

static nh_tls_ctx_t *server_ctx, *client_ctx;

static void make_ctx(void) {
    char dir[] = "/tmp/nh-fuzz-tls-XXXXXX", cert[64], key[64], err[300];
    if (!mkdtemp(dir)) abort();
    snprintf(cert, sizeof cert, "%s/c.pem", dir);
    snprintf(key, sizeof key, "%s/k.pem", dir);
    EVP_PKEY *k = EVP_EC_gen("P-256");
    X509 *x = X509_new();
    ASN1_INTEGER_set(X509_get_serialNumber(x), 1);
    X509_gmtime_adj(X509_getm_notBefore(x), -60);
    X509_gmtime_adj(X509_getm_notAfter(x), 86400);
    X509_set_pubkey(x, k);
    X509_set_issuer_name(x, X509_get_subject_name(x));
    X509_sign(x, k, EVP_sha256());
    FILE *f = fopen(key, "w");
    PEM_write_PrivateKey(f, k, NULL, NULL, 0, NULL, NULL);
    fclose(f);
    f = fopen(cert, "w");
    PEM_write_X509(f, x);
    fclose(f);
    X509_free(x);
    EVP_PKEY_free(k);
    nh_tls_opts_t o = {.cert = cert, .key = key};
    server_ctx = nh_tls_ctx_server(&o, err, sizeof err);
    client_ctx = nh_tls_ctx_client(NULL, 0, err, sizeof err);
    unlink(cert);
    unlink(key);
    rmdir(dir);
    if (!server_ctx || !client_ctx) abort();
}

static uint32_t next_rand(uint32_t *s) {
    *s ^= *s << 13;
    *s ^= *s >> 17;
    *s ^= *s << 5;
    return *s;
}

typedef struct {
    uint64_t hash;
    size_t packets;
} trace_t;

static int on_packet(void *ud, int type, const uint8_t *body, size_t len) {
    trace_t *t = ud;
    t->hash = (t->hash ^ (uint64_t)type) * 0x100000001B3u;
    for (size_t i = 0; i < len; i++)
        t->hash = (t->hash ^ body[i]) * 0x100000001B3u;
    t->packets++;
    return 0;
}

static void move_all(nh_tls_t *from, nh_tls_t *to, uint32_t *seed) {
    uint8_t buf[65536];
    size_t n;
    while ((n = nh_tls_out_take(from, buf, sizeof buf)) > 0) {
        for (size_t off = 0; off < n;) {
            size_t k = 1 + next_rand(seed) % 4096;
            if (k > n - off) k = n - off;
            if (nh_tls_feed(to, buf + off, k) < 0) return;
            off += k;
        }
    }
}

static void garbage(const uint8_t *data, size_t size, uint32_t seed) {
    nh_tls_t *s = nh_tls_new(server_ctx, NULL);
    uint8_t out[4096];
    int failed = 0;
    for (size_t off = 0; off < size;) {
        size_t k = 1 + next_rand(&seed) % 64;
        if (k > size - off) k = size - off;
        int r = nh_tls_feed(s, data + off, k);
        long n = r < 0 ? r : nh_tls_read(s, out, sizeof out);
        if (n > 0) abort(); /* no plaintext without a handshake */
        if (n < 0) failed = 1;
        if (failed && nh_tls_read(s, out, sizeof out) > 0) abort();
        off += k;
        nh_tls_out_take(s, out, sizeof out); /* alerts and ServerHellos go nowhere */
    }
    nh_tls_free(s);
}

static void records(const uint8_t *data, size_t size, uint32_t seed) {
    nh_tls_t *s = nh_tls_new(server_ctx, NULL), *c = nh_tls_new(client_ctx, NULL);
    uint8_t plain[4096];
    for (int i = 0; i < 8 && !(nh_tls_handshake_done(s) && nh_tls_handshake_done(c)); i++) {
        move_all(c, s, &seed);
        nh_tls_read(s, plain, sizeof plain);
        move_all(s, c, &seed);
        nh_tls_read(c, plain, sizeof plain);
    }
    if (!nh_tls_handshake_done(s) || !nh_tls_handshake_done(c)) abort();

    /* the reference: the plaintext straight into a decoder */
    trace_t want = {0xcbf29ce484222325u, 0}, got = want;
    nh_pkt_decoder_t d;
    nh_pkt_decoder_init(&d, 65536);
    int want_r = nh_pkt_decoder_feed(&d, data, size, on_packet, &want);
    nh_pkt_decoder_free(&d);

    for (size_t off = 0; off < size;) {
        size_t k = 1 + next_rand(&seed) % 3000;
        if (k > size - off) k = size - off;
        if (nh_tls_write(c, data + off, k) < 0) abort();
        off += k;
    }
    move_all(c, s, &seed);
    nh_pkt_decoder_init(&d, 65536);
    int got_r = 0;
    size_t total = 0;
    long n;
    while ((n = nh_tls_read(s, plain, 1 + next_rand(&seed) % sizeof plain)) > 0) {
        total += (size_t)n;
        if (got_r == 0) got_r = nh_pkt_decoder_feed(&d, plain, (size_t)n, on_packet, &got);
    }
    nh_pkt_decoder_free(&d);
    if (n < 0 || total != size) abort();
    if (got_r != want_r || got.packets != want.packets || got.hash != want.hash) abort();
    nh_tls_free(s);
    nh_tls_free(c);
}

int LLVMFuzzerTestOneInput(const uint8_t *in, size_t size) {
    if (!server_ctx) make_ctx();
    if (size < 2) return 0;
    uint32_t seed = (uint32_t)in[1] | 0x100u;
    if (in[0] & 1)
        records(in + 2, size - 2, seed);
    else
        garbage(in + 2, size - 2, seed);
    return 0;
}
