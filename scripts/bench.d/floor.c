/* floor — the least a server speaking the pomelo protocol can do on this machine: one thread,
 * bare epoll, no Lua, no JSON. It answers the handshake, accepts the ack, echoes every request's
 * payload as its response, pushes a notify's payload back on "onNote", and for the broadcast
 * figure keeps one group ("Bench.join") and pushes "onBcast" to every member ("Bench.bcast").
 * Raw TCP and WebSocket (RFC 6455, binary frames) listeners on ephemeral loopback ports.
 *
 * It prints "listening tcp://127.0.0.1:PORT" and "listening ws://127.0.0.1:PORT/nano" on stderr,
 * like nano-host, and runs until SIGTERM/SIGINT. Benchmark scaffolding, not a server to copy:
 * no timeouts, no limits beyond what keeps it correct for the load generator.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <openssl/evp.h>
#include <openssl/sha.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

typedef struct fconn {
    int fd;
    int dirty;    /* on the dirty list: pushes queued in out, written after this epoll batch */
    int want_out; /* EPOLLOUT armed: the kernel took only part of out */
    int ws;       /* listener kind */
    int upgraded; /* ws: past the HTTP upgrade */
    int in_group;
    uint8_t *in; /* unparsed bytes */
    size_t in_len, in_cap;
    uint8_t *out; /* unwritten bytes */
    size_t out_len, out_cap;
    uint8_t *pkt; /* ws: packet-stream bytes not yet a whole packet */
    size_t pkt_len, pkt_cap;
} fconn_t;

static int ep, tcp_lfd, ws_lfd;
static volatile sig_atomic_t stop;
static uint8_t rbuf[65536];
static fconn_t **group;
static size_t group_n, group_cap;
/* connections with broadcast pushes queued: written once per epoll batch, so that the pushes of
 * several broadcasts to one member leave in one send (nano-host's per-turn flush does the same) */
static fconn_t **dirty;
static size_t dirty_n, dirty_cap;
/* what one read's answers add up to; written once per read, like a per-turn flush */
static uint8_t wbuf[1 << 20];
static size_t wlen;

static void on_stop(int sig) {
    (void)sig;
    stop = 1;
}

static int grow(uint8_t **b, size_t *cap, size_t need) {
    if (need <= *cap) return 0;
    size_t nc = *cap ? *cap : 512;
    while (nc < need)
        nc *= 2;
    uint8_t *n = realloc(*b, nc);
    if (!n) return -1;
    *b = n;
    *cap = nc;
    return 0;
}

static int listen_on(void) {
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
    int one = 1;
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    if (bind(fd, (struct sockaddr *)&a, sizeof a) || listen(fd, 4096)) {
        perror("floor: listen");
        exit(1);
    }
    return fd;
}

static int port_of(int fd) {
    struct sockaddr_in a;
    socklen_t n = sizeof a;
    getsockname(fd, (struct sockaddr *)&a, &n);
    return ntohs(a.sin_port);
}

static void conn_free(fconn_t *c) {
    if (c->dirty)
        for (size_t i = 0; i < dirty_n; i++)
            if (dirty[i] == c) {
                dirty[i] = dirty[--dirty_n];
                break;
            }
    epoll_ctl(ep, EPOLL_CTL_DEL, c->fd, NULL);
    close(c->fd);
    if (c->in_group)
        for (size_t i = 0; i < group_n; i++)
            if (group[i] == c) {
                group[i] = group[--group_n];
                break;
            }
    free(c->in);
    free(c->out);
    free(c->pkt);
    free(c);
}

static void want_out(fconn_t *c, int on) {
    if (c->want_out == on) return;
    c->want_out = on;
    struct epoll_event ev = {.events = on ? EPOLLIN | EPOLLOUT : EPOLLIN, .data.ptr = c};
    epoll_ctl(ep, EPOLL_CTL_MOD, c->fd, &ev);
}

/* Writes bytes now, or keeps them and waits for EPOLLOUT. Returns -1 when the peer is gone. */
static int conn_write(fconn_t *c, const uint8_t *d, size_t n) {
    if (c->out_len == 0) {
        ssize_t w = send(c->fd, d, n, MSG_NOSIGNAL);
        if (w < 0 && errno != EAGAIN) return -1;
        if (w < 0) w = 0;
        if ((size_t)w == n) return 0;
        d += w;
        n -= (size_t)w;
        want_out(c, 1);
    }
    if (grow(&c->out, &c->out_cap, c->out_len + n)) return -1;
    memcpy(c->out + c->out_len, d, n);
    c->out_len += n;
    return 0;
}

static int conn_flush_out(fconn_t *c) {
    ssize_t w = send(c->fd, c->out, c->out_len, MSG_NOSIGNAL);
    if (w < 0 && errno != EAGAIN) return -1;
    if (w < 0) w = 0;
    memmove(c->out, c->out + w, c->out_len - (size_t)w);
    c->out_len -= (size_t)w;
    want_out(c, c->out_len > 0);
    return 0;
}

/* Frames one packet (type + body in two parts) into dst. */
static size_t frame(const fconn_t *c, uint8_t *dst, int type, const uint8_t *a, size_t alen,
                    const uint8_t *b, size_t blen) {
    size_t n = 0, body = alen + blen, plen = 4 + body;
    if (c->ws) {
        dst[n++] = 0x82;
        if (plen < 126) {
            dst[n++] = (uint8_t)plen;
        } else {
            dst[n++] = 126;
            dst[n++] = (uint8_t)(plen >> 8);
            dst[n++] = (uint8_t)plen;
        }
    }
    dst[n++] = (uint8_t)type;
    dst[n++] = (uint8_t)(body >> 16);
    dst[n++] = (uint8_t)(body >> 8);
    dst[n++] = (uint8_t)body;
    memcpy(dst + n, a, alen);
    n += alen;
    if (blen) memcpy(dst + n, b, blen);
    return n + blen;
}

static void queue(const fconn_t *c, int type, const uint8_t *a, size_t alen, const uint8_t *b,
                  size_t blen) {
    if (wlen + alen + blen + 16 > sizeof wbuf) return; /* bounded: the load generator is */
    wlen += frame(c, wbuf + wlen, type, a, alen, b, blen);
}

static void broadcast(const uint8_t *payload, size_t plen) {
    uint8_t msg[300], out[400];
    size_t mn = 0;
    msg[mn++] = 3 << 1; /* push, string route */
    msg[mn++] = 7;
    memcpy(msg + mn, "onBcast", 7);
    mn += 7;
    for (size_t i = 0; i < group_n; i++) {
        fconn_t *m = group[i];
        size_t n = frame(m, out, 4, msg, mn, payload, plen);
        if (grow(&m->out, &m->out_cap, m->out_len + n)) continue;
        memcpy(m->out + m->out_len, out, n);
        m->out_len += n;
        if (!m->dirty) {
            if (dirty_n == dirty_cap) {
                dirty_cap = dirty_cap ? dirty_cap * 2 : 1024;
                dirty = realloc(dirty, dirty_cap * sizeof *dirty);
            }
            dirty[dirty_n++] = m;
            m->dirty = 1;
        }
    }
}

/* After each epoll batch: write what broadcasts queued. */
static void flush_dirty(void) {
    while (dirty_n) {
        fconn_t *c = dirty[--dirty_n];
        c->dirty = 0;
        if (c->out_len && conn_flush_out(c) < 0) conn_free(c);
    }
}

/* One packet from the stream. Returns -1 to close. */
static int on_packet(fconn_t *c, int type, const uint8_t *b, size_t len) {
    static const char hs[] = "{\"code\":200,\"sys\":{\"heartbeat\":10}}";
    if (type == 1) {
        queue(c, 1, (const uint8_t *)hs, sizeof hs - 1, NULL, 0);
        return 0;
    }
    if (type == 2 || type == 3) return 0;
    if (type != 4 || len < 1) return -1;
    int mtype = (b[0] >> 1) & 7;
    size_t i = 1, id_start = 1;
    if (mtype == 0)
        while (i < len && (b[i++] & 0x80))
            ;
    size_t id_len = i - id_start;
    if (b[0] & 1) {
        i += 2;
    } else {
        if (i >= len) return -1;
        i += 1 + b[i];
    }
    if (i > len) return -1;
    const uint8_t *route = b[0] & 1 ? NULL : b + id_start + id_len + 1;
    size_t rl = route ? route[-1] : 0;
    const uint8_t *payload = b + i;
    size_t plen = len - i;
    if (mtype == 0) {
        uint8_t head[16];
        head[0] = 2 << 1; /* response */
        memcpy(head + 1, b + id_start, id_len);
        if (route && rl == 10 && memcmp(route, "Bench.join", 10) == 0) {
            if (!c->in_group) {
                if (group_n == group_cap) {
                    group_cap = group_cap ? group_cap * 2 : 1024;
                    group = realloc(group, group_cap * sizeof *group);
                }
                group[group_n++] = c;
                c->in_group = 1;
            }
        } else if (route && rl == 11 && memcmp(route, "Bench.bcast", 11) == 0) {
            broadcast(payload, plen);
        }
        queue(c, 4, head, 1 + id_len, payload, plen);
    } else if (mtype == 1) {
        uint8_t head[8] = {3 << 1, 6, 'o', 'n', 'N', 'o', 't', 'e'};
        queue(c, 4, head, sizeof head, payload, plen);
    }
    return 0;
}

/* Parses whole packets from d; returns bytes used or -1. */
static long packets(fconn_t *c, const uint8_t *d, size_t n) {
    size_t off = 0;
    while (n - off >= 4) {
        size_t blen = (size_t)d[off + 1] << 16 | (size_t)d[off + 2] << 8 | d[off + 3];
        if (blen > 65536) return -1;
        if (n - off < 4 + blen) break;
        if (on_packet(c, d[off], d + off + 4, blen) < 0) return -1;
        off += 4 + blen;
    }
    return (long)off;
}

static int ws_payload(fconn_t *c, const uint8_t *d, size_t n) {
    if (c->pkt_len == 0) {
        long used = packets(c, d, n);
        if (used < 0) return -1;
        d += used;
        n -= (size_t)used;
        if (!n) return 0;
    }
    if (grow(&c->pkt, &c->pkt_cap, c->pkt_len + n)) return -1;
    memcpy(c->pkt + c->pkt_len, d, n);
    c->pkt_len += n;
    long used = packets(c, c->pkt, c->pkt_len);
    if (used < 0) return -1;
    memmove(c->pkt, c->pkt + used, c->pkt_len - (size_t)used);
    c->pkt_len -= (size_t)used;
    return 0;
}

/* Whole frames from d (unmasked in place); returns bytes used or -1. */
static long frames(fconn_t *c, uint8_t *d, size_t n) {
    size_t off = 0;
    while (n - off >= 2) {
        uint8_t *p = d + off;
        int op = p[0] & 0x0F;
        if (!(p[1] & 0x80)) return -1;
        size_t plen = p[1] & 0x7F, h = 2;
        if (plen == 126) {
            if (n - off < 4) break;
            plen = (size_t)p[2] << 8 | p[3];
            h = 4;
        } else if (plen == 127) {
            return -1;
        }
        if (n - off < h + 4 + plen) break;
        const uint8_t *mask = p + h;
        uint8_t *pl = p + h + 4;
        for (size_t k = 0; k < plen; k++)
            pl[k] ^= mask[k & 3];
        if (op == 8) return -1;
        if (op == 2 || op == 0)
            if (ws_payload(c, pl, plen) < 0) return -1;
        off += h + 4 + plen;
    }
    return (long)off;
}

static long upgrade(fconn_t *c, uint8_t *d, size_t n) {
    uint8_t *end = memmem(d, n, "\r\n\r\n", 4);
    if (!end) return n > 8192 ? -1 : 0;
    *end = 0;
    char *k = strcasestr((char *)d, "\r\nSec-WebSocket-Key:");
    if (!k) return -1;
    k += 20;
    while (*k == ' ')
        k++;
    char key[128];
    size_t kl = strcspn(k, "\r\n ");
    if (kl > 64) return -1;
    memcpy(key, k, kl);
    memcpy(key + kl, "258EAFA5-E914-47DA-95CA-C5AB0DC85B11", 36);
    uint8_t sha[SHA_DIGEST_LENGTH];
    SHA1((const uint8_t *)key, kl + 36, sha);
    char acc[64];
    EVP_EncodeBlock((uint8_t *)acc, sha, SHA_DIGEST_LENGTH);
    char resp[256];
    int rn = snprintf(resp, sizeof resp,
                      "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
                      "Connection: Upgrade\r\nSec-WebSocket-Accept: %s\r\n\r\n",
                      acc);
    memcpy(wbuf + wlen, resp, (size_t)rn);
    wlen += (size_t)rn;
    c->upgraded = 1;
    size_t hl = (size_t)(end + 4 - d);
    long used = frames(c, d + hl, n - hl);
    return used < 0 ? -1 : (long)hl + used;
}

static long consume(fconn_t *c, uint8_t *d, size_t n) {
    if (!c->ws) return packets(c, d, n);
    if (!c->upgraded) return upgrade(c, d, n);
    return frames(c, d, n);
}

static void on_readable(fconn_t *c) {
    ssize_t r = recv(c->fd, rbuf, sizeof rbuf, 0);
    if (r == 0 || (r < 0 && errno != EAGAIN)) {
        conn_free(c);
        return;
    }
    if (r < 0) return;
    wlen = 0;
    long used;
    if (c->in_len == 0) {
        used = consume(c, rbuf, (size_t)r);
        if (used >= 0 && (size_t)used < (size_t)r) {
            if (grow(&c->in, &c->in_cap, (size_t)r - (size_t)used)) used = -1;
            if (used >= 0) {
                memcpy(c->in, rbuf + used, (size_t)r - (size_t)used);
                c->in_len = (size_t)r - (size_t)used;
            }
        }
    } else {
        if (grow(&c->in, &c->in_cap, c->in_len + (size_t)r)) {
            conn_free(c);
            return;
        }
        memcpy(c->in + c->in_len, rbuf, (size_t)r);
        c->in_len += (size_t)r;
        used = consume(c, c->in, c->in_len);
        if (used >= 0) {
            memmove(c->in, c->in + used, c->in_len - (size_t)used);
            c->in_len -= (size_t)used;
        }
    }
    if (used < 0 || (wlen && conn_write(c, wbuf, wlen) < 0)) {
        conn_free(c);
        return;
    }
    if (c->in_len == 0 && c->in_cap) { /* an idle connection keeps no input buffer */
        free(c->in);
        c->in = NULL;
        c->in_cap = 0;
    }
}

static void on_accept(int lfd, int ws) {
    for (;;) {
        int fd = accept4(lfd, NULL, NULL, SOCK_NONBLOCK);
        if (fd < 0) return;
        int one = 1;
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
        fconn_t *c = calloc(1, sizeof *c);
        c->fd = fd;
        c->ws = ws;
        struct epoll_event ev = {.events = EPOLLIN, .data.ptr = c};
        epoll_ctl(ep, EPOLL_CTL_ADD, fd, &ev);
    }
}

int main(void) {
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0) {
        rl.rlim_cur = rl.rlim_max;
        setrlimit(RLIMIT_NOFILE, &rl);
    }
    signal(SIGPIPE, SIG_IGN);
    struct sigaction sa = {.sa_handler = on_stop};
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);
    ep = epoll_create1(0);
    tcp_lfd = listen_on();
    ws_lfd = listen_on();
    static int tcp_tag, ws_tag;
    struct epoll_event ev = {.events = EPOLLIN, .data.ptr = &tcp_tag};
    epoll_ctl(ep, EPOLL_CTL_ADD, tcp_lfd, &ev);
    ev.data.ptr = &ws_tag;
    epoll_ctl(ep, EPOLL_CTL_ADD, ws_lfd, &ev);
    fprintf(stderr, "floor: listening tcp://127.0.0.1:%d\n", port_of(tcp_lfd));
    fprintf(stderr, "floor: listening ws://127.0.0.1:%d/nano\n", port_of(ws_lfd));
    struct epoll_event evs[512];
    while (!stop) {
        int n = epoll_wait(ep, evs, 512, 1000);
        for (int i = 0; i < n; i++) {
            void *p = evs[i].data.ptr;
            if (p == &tcp_tag) {
                on_accept(tcp_lfd, 0);
            } else if (p == &ws_tag) {
                on_accept(ws_lfd, 1);
            } else {
                fconn_t *c = p;
                if (evs[i].events & EPOLLOUT) {
                    if (conn_flush_out(c) < 0) {
                        conn_free(c);
                        continue;
                    }
                }
                if (evs[i].events & (EPOLLIN | EPOLLHUP | EPOLLERR)) on_readable(c);
            }
        }
        flush_dirty();
    }
    return 0;
}
