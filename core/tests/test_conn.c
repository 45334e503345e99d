/* conn.c under a transport of the test's own, with no session and no Lua: a real listener on
 * loopback, a libuv client, a host with no Lua state attached, virtual time for
 * the sweep. conn reports opened, bytes, draining, closing and gone to its transport, frames
 * through its frame_header, closes after flush once drained, enforces the close deadline of a
 * peer that does not read in its own sweep, cuts a connection off past the send limit, closes
 * every connection at the host's stop (nh_conn_close_all), reads a burst bigger than its read
 * buffer whole, waits for a full socket to drain (reading meanwhile), drops what a peer sends
 * while its connection drains to close (so that the close is a FIN, not a reset), closes on a
 * peer's FIN or RST, writes what a read produced within that read's loop turn, writes the
 * turn's dirty connections oldest first, and drops the input of a connection that a read made
 * in the same turn closes. All of it twice: with the turn's flush batched into one
 * system call (io_uring, where the kernel has it), and one send at a time. */
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "check.h"
#include "conn.h"
#include "host.h"
#include "io_batch.h"
#include "log.h"
#include "metrics.h"

static uv_loop_t loop;
static nh_host_t host;

/* ---- the test's transport: it records what conn reports ---- */

enum { EV_OPEN = 1, EV_DRAINING, EV_CLOSING, EV_CLOSING_CUT, EV_GONE };

static nh_conn_t *conn; /* the accepted connection, NULL once gone */
static int events[16], nevents;
static char got[64]; /* bytes the transport read: the first ones, and how many in all */
static size_t got_len;
static uint64_t got_total;

static void note(int ev) {
    if (nevents < 16) events[nevents++] = ev;
}

static int t_open(nh_conn_t *c) {
    conn = c;
    note(EV_OPEN);
    return 0;
}

static int echo_reads; /* the transport answers each read with its bytes (a request's reply) */

/* two connections, each of which closes the other when it reads (a handler kicking a player) */
static nh_conn_t *kickers[2];
static int kicker_reads[2];

static int t_read(nh_conn_t *c, uint8_t *data, size_t len) {
    for (int k = 0; k < 2; k++) {
        if (c != kickers[k]) continue;
        kicker_reads[k]++;
        nh_conn_t *other = kickers[1 - k];
        if (other && !(other->flags & NH_CONN_CLOSING)) nh_conn_close(other, "kicked");
    }
    if (echo_reads && nh_conn_send(c, NULL, 0, NULL, data, len) != 0) return -1;
    size_t keep = len < sizeof got - got_len ? len : sizeof got - got_len;
    memcpy(got + got_len, data, keep);
    got_len += keep;
    got_total += len;
    return 0;
}

static size_t t_frame(nh_conn_t *c, uint8_t *out, size_t len) {
    (void)c;
    out[0] = '<';
    out[1] = (uint8_t)('0' + len % 10);
    return 2;
}

static void t_draining(nh_conn_t *c) {
    (void)c;
    note(EV_DRAINING);
}

static void t_closing(nh_conn_t *c, int may_send) {
    (void)c;
    note(may_send ? EV_CLOSING : EV_CLOSING_CUT);
}

static void t_gone(nh_conn_t *c) {
    for (int k = 0; k < 2; k++)
        if (kickers[k] == c) kickers[k] = NULL;
    conn = NULL;
    note(EV_GONE);
}

static nh_transport_t test_transport = {
    /* not const: a test takes its frames away */
    .name = "test",          .on_open = t_open,         .on_read = t_read,
    .frame_header = t_frame, .on_draining = t_draining, .on_closing = t_closing,
    .on_gone = t_gone,
};

/* ---- a client on loopback ---- */

typedef struct client {
    uv_tcp_t tcp;
    uv_connect_t req;
    int connected, reading, closed, end; /* end: the read's last status (UV_EOF, a reset) */
    char buf[65536];
    size_t have;
    uint64_t bytes; /* everything read, kept or not */
} client_t;

static client_t cl;

static void on_cl_alloc(uv_handle_t *h, size_t size, uv_buf_t *b) {
    (void)h, (void)size;
    static char scratch[65536];
    *b = uv_buf_init(scratch, sizeof scratch);
}

static void on_cl_read(uv_stream_t *s, ssize_t n, const uv_buf_t *b) {
    (void)s;
    if (n < 0) {
        cl.closed = 1;
        cl.end = (int)n;
        uv_read_stop((uv_stream_t *)&cl.tcp);
        return;
    }
    size_t take = (size_t)n < sizeof cl.buf - cl.have ? (size_t)n : sizeof cl.buf - cl.have;
    memcpy(cl.buf + cl.have, b->base, take);
    cl.have += take;
    cl.bytes += (uint64_t)n;
}

static void on_cl_connect(uv_connect_t *req, int status) {
    (void)req;
    cl.connected = status == 0 ? 1 : -1;
}

static void run_until(int *flag) {
    for (int i = 0; i < 2000 && !*flag; i++)
        uv_run(&loop, UV_RUN_ONCE);
}

static void turns(int n) {
    for (int i = 0; i < n; i++)
        uv_run(&loop, UV_RUN_NOWAIT);
}

static int accepted;

/* A listener with the test's transport, a client connected to it, and the connection accepted. */
static nh_listener_t *listener;

static void start_listener(void) {
    listener = calloc(1, sizeof *listener);
    listener->transport = &test_transport;
    CHECK(nh_listener_start(&host, listener, "127.0.0.1:0") == 0);
}

static void connect_client(int reading) {
    memset(&cl, 0, sizeof cl);
    nevents = 0;
    got_len = 0;
    got_total = 0;
    conn = NULL;
    struct sockaddr_storage ss;
    CHECK(nh_parse_addr(listener->bound, &ss) == 0);
    uv_tcp_init(&loop, &cl.tcp);
    uv_tcp_connect(&cl.req, &cl.tcp, (struct sockaddr *)&ss, on_cl_connect);
    run_until(&cl.connected);
    for (int i = 0; i < 2000 && !conn; i++)
        uv_run(&loop, UV_RUN_ONCE);
    accepted = conn != NULL;
    cl.reading = reading;
    if (reading) uv_read_start((uv_stream_t *)&cl.tcp, on_cl_alloc, on_cl_read);
}

static int cl_handle_closed;

static void on_cl_closed(uv_handle_t *h) {
    (void)h;
    cl_handle_closed = 1;
}

/* The client's handle is closed before the next test reuses it. */
static void close_client(void) {
    cl_handle_closed = 0;
    uv_close((uv_handle_t *)&cl.tcp, on_cl_closed);
    run_until(&cl_handle_closed);
}

static int gone(void) {
    return conn == NULL;
}

static void wait_gone(void) {
    for (int i = 0; i < 2000 && conn; i++)
        uv_run(&loop, UV_RUN_ONCE);
}

/* ---- tests ---- */

static void test_bytes_reach_the_transport(void) {
    connect_client(1);
    CHECK(accepted && nevents == 1 && events[0] == EV_OPEN);
    uv_buf_t b = uv_buf_init("hello", 5);
    CHECK(uv_try_write((uv_stream_t *)&cl.tcp, &b, 1) == 5);
    for (int i = 0; i < 2000 && got_len < 5; i++)
        uv_run(&loop, UV_RUN_ONCE);
    CHECK(got_len == 5 && memcmp(got, "hello", 5) == 0);
    nh_conn_close(conn, "test done");
    wait_gone();
    CHECK(gone() && nevents == 3 && events[1] == EV_CLOSING && events[2] == EV_GONE);
    close_client();
}

static void test_packets_framed_by_the_transport(void) {
    connect_client(1);
    CHECK(nh_conn_send(conn, (const uint8_t *)"ab", 2, NULL, (const uint8_t *)"cde", 3) == 0);
    CHECK(nh_conn_send_raw(conn, "!", 1) == 0); /* raw: no frame */
    for (int i = 0; i < 2000 && cl.have < 8; i++)
        uv_run(&loop, UV_RUN_ONCE); /* the turn's flush writes it */
    CHECK(cl.have == 8 && memcmp(cl.buf, "<5abcde!", 8) == 0);
    nh_conn_close(conn, "test done");
    wait_gone();
    close_client();
}

/* 20 pushes of a shared packet in one turn, as a broadcast's members get them with another
 * queue's bytes in the arena in between: gathered into the connection's own block (from the
 * second push unframed, inline from the third; framed, header and packet together), counted, and
 * on the wire in order, each framed as the transport frames it. */
static void pushes_in_one_turn(int framed) {
    nh_outq_t other; /* another member's queue */
    nh_outq_init(&other, &host.pool);
    nh_buf_t *pkt = nh_buf_new(16);
    if (!pkt) {
        CHECK(!"out of memory");
        return;
    }
    memcpy(pkt->data, "push#", 5);
    pkt->len = 5;
    uint64_t out0 = host.metrics.bytes[NH_MD_OUT];
    char want[256];
    size_t wl = 0;
    for (int i = 0; i < 20; i++) {
        CHECK(nh_conn_send(conn, NULL, 0, pkt, pkt->data, pkt->len) == 0);
        CHECK(nh_outq_copy(&other, "zz", 2) == 0);
        if (framed) {
            memcpy(want + wl, "<5", 2);
            wl += 2;
        }
        memcpy(want + wl, "push#", 5);
        wl += 5;
    }
    CHECK(conn->out.own != NULL && conn->out.n <= 3 && conn->out.bytes == wl);
    CHECK(host.metrics.bytes[NH_MD_OUT] - out0 == wl);
    for (int i = 0; i < 2000 && cl.have < wl; i++)
        uv_run(&loop, UV_RUN_ONCE); /* the turn's flush writes it */
    CHECK(cl.have == wl && memcmp(cl.buf, want, wl) == 0);
    CHECK(conn->out.n == 0 && conn->out.own == NULL && pkt->refs == 1);
    cl.have = 0;
    nh_outq_free(&other);
    nh_buf_unref(pkt);
}

static void test_shared_pushes_gathered_in_one_turn(void) {
    connect_client(1);
    pushes_in_one_turn(1);
    test_transport.frame_header = NULL; /* raw TCP's way, for the same connection */
    pushes_in_one_turn(0);
    test_transport.frame_header = t_frame;
    nh_conn_close(conn, "test done");
    wait_gone();
    close_client();
}

static void test_close_after_flush_closes_once_drained(void) {
    connect_client(1);
    CHECK(nh_conn_send(conn, (const uint8_t *)"bye", 3, NULL, NULL, 0) == 0);
    nh_conn_close_after_flush(conn);
    CHECK(nevents == 2 && events[1] == EV_DRAINING && conn->drain && host.draining == conn->drain);
    CHECK(nh_conn_send(conn, (const uint8_t *)"x", 1, NULL, NULL, 0) == UV_EPIPE);
    wait_gone();
    CHECK(gone() && nevents == 4 && events[2] == EV_CLOSING && events[3] == EV_GONE);
    CHECK(host.draining == NULL);
    run_until(&cl.closed);
    CHECK(cl.have == 5 && memcmp(cl.buf, "<3bye", 5) == 0 && cl.closed);
    close_client();
}

/* 16 MiB queued for a client that does not read, more than the kernel's buffers take, and the
 * turns' flushes: the queue is left waiting for the socket. Returns the bytes the client gets
 * once it reads (each packet framed by the transport). */
static uint64_t fill_past_the_kernel(void) {
    static uint8_t chunk[65536];
    int failed = 0;
    for (int i = 0; i < 256; i++)
        failed += nh_conn_send(conn, chunk, 1, NULL, chunk, sizeof chunk) != 0;
    CHECK(failed == 0);
    turns(3);
    return 256 * (2 + 1 + sizeof chunk); /* the frame header, the head, the body */
}

static void test_close_deadline_for_a_peer_that_does_not_read(void) {
    host.cfg.heartbeat_ms = 1000; /* the sweep every 250 ms of virtual time */
    host.cfg.handshake_timeout_ms = 2000;
    host.cfg.send_limit = 64u << 20;
    nh_host_config_changed(&host);
    connect_client(0);
    fill_past_the_kernel();
    CHECK(!gone() && conn->out.bytes > 0);
    nh_conn_close_after_flush(conn);
    uint64_t before = host.metrics.closed[NH_CLOSE_SEND_LIMIT];
    nh_timers_advance(&host.timers, 1750);
    turns(3);
    CHECK(!gone()); /* not yet: 2 s from the close_after_flush */
    nh_timers_advance(&host.timers, 500);
    CHECK(conn == NULL || (conn->flags & NH_CONN_CLOSING));
    wait_gone();
    CHECK(gone() && events[nevents - 2] == EV_CLOSING && events[nevents - 1] == EV_GONE);
    CHECK(host.metrics.closed[NH_CLOSE_SEND_LIMIT] == before + 1);
    CHECK(host.draining == NULL);
    close_client();
}

static void test_cut_off_past_the_send_limit(void) {
    host.cfg.send_limit = 256 * 1024;
    connect_client(0);
    static uint8_t chunk[65536];
    int r = 0;
    for (int i = 0; i < 1024 && r == 0; i++) /* bounded: 64 MiB at most */
        r = nh_conn_send(conn, chunk, 1, NULL, chunk, sizeof chunk);
    CHECK(r == UV_ENOBUFS);
    CHECK(conn && (conn->flags & NH_CONN_CUT) && events[nevents - 1] == EV_CLOSING_CUT);
    wait_gone();
    CHECK(gone() && events[nevents - 1] == EV_GONE);
    close_client();
}

static void test_close_all_closes_connections_without_a_session(void) {
    connect_client(1);
    uint64_t before = host.metrics.closed[NH_CLOSE_SHUTDOWN];
    nh_conn_close_all(&host, "server shutdown");
    wait_gone();
    CHECK(gone() && nevents == 3 && events[1] == EV_CLOSING && events[2] == EV_GONE);
    CHECK(host.metrics.closed[NH_CLOSE_SHUTDOWN] == before + 1);
    run_until(&cl.closed);
    CHECK(cl.closed);
    close_client();
}

/* More than the host's read buffer in one burst: read in several recv calls, all of it. */
static void test_a_burst_bigger_than_the_read_buffer_is_read_whole(void) {
    connect_client(1);
    static char big[3 * NH_READ_BUF_SIZE + 100];
    memset(big, 'b', sizeof big);
    uv_buf_t b = uv_buf_init(big, sizeof big);
    int n = uv_try_write((uv_stream_t *)&cl.tcp, &b, 1);
    CHECK(n > NH_READ_BUF_SIZE);
    for (int i = 0; i < 2000 && got_total < (uint64_t)n; i++)
        uv_run(&loop, UV_RUN_ONCE);
    CHECK(got_total == (uint64_t)n && got[0] == 'b');
    nh_conn_close(conn, "test done");
    wait_gone();
    close_client();
}

/* A peer that does not read: the queue waits for the socket to be writable (and reading goes on
 * meanwhile); once the peer reads, all of it arrives and the connection waits for reads only. */
static void test_a_stalled_queue_leaves_when_the_peer_reads(void) {
    host.cfg.send_limit = 64u << 20;
    connect_client(0);
    uint64_t want = fill_past_the_kernel();
    CHECK(conn->out.bytes > 0 && (conn->flags & NH_CONN_WRITING));
    CHECK((conn->flags & NH_CONN_POLL_WRITE) && (conn->flags & NH_CONN_POLL_READ));
    uv_buf_t b = uv_buf_init("still", 5); /* read while the queue waits */
    CHECK(uv_try_write((uv_stream_t *)&cl.tcp, &b, 1) == 5);
    for (int i = 0; i < 2000 && got_len < 5; i++)
        uv_run(&loop, UV_RUN_ONCE);
    CHECK(got_len == 5 && memcmp(got, "still", 5) == 0);
    cl.reading = 1;
    uv_read_start((uv_stream_t *)&cl.tcp, on_cl_alloc, on_cl_read);
    for (int i = 0; i < 20000 && cl.bytes < want; i++)
        uv_run(&loop, UV_RUN_ONCE);
    CHECK(cl.bytes == want);
    CHECK(conn && conn->out.bytes == 0 && !(conn->flags & NH_CONN_WRITING));
    CHECK(conn && !(conn->flags & NH_CONN_POLL_WRITE) && (conn->flags & NH_CONN_POLL_READ));
    nh_conn_close(conn, "test done");
    wait_gone();
    close_client();
}

/* Closing after a flush with a full socket while the peer still sends: what it sends is read and
 * dropped (the transport sees none of it), so that the socket closes with a FIN once the queue has
 * left, and the peer gets all of it (a close with unread input would be a RST, which drops what
 * the peer has not read yet). */
static void test_a_draining_connection_drops_input_and_closes_cleanly(void) {
    host.cfg.send_limit = 64u << 20;
    host.cfg.handshake_timeout_ms = 60000; /* the close deadline: not what this tests */
    connect_client(0);
    uint64_t want = fill_past_the_kernel();
    CHECK(conn->out.bytes > 0 && (conn->flags & NH_CONN_WRITING));
    nh_conn_close_after_flush(conn);
    uint64_t in0 = host.metrics.bytes[NH_MD_IN];
    uv_buf_t b = uv_buf_init("ignored", 7);
    CHECK(uv_try_write((uv_stream_t *)&cl.tcp, &b, 1) == 7);
    for (int i = 0; i < 2000 && host.metrics.bytes[NH_MD_IN] < in0 + 7; i++)
        uv_run(&loop, UV_RUN_ONCE);
    CHECK(host.metrics.bytes[NH_MD_IN] == in0 + 7 && got_total == 0 && !gone());
    cl.reading = 1;
    uv_read_start((uv_stream_t *)&cl.tcp, on_cl_alloc, on_cl_read);
    for (int i = 0; i < 20000 && !cl.closed; i++)
        uv_run(&loop, UV_RUN_ONCE);
    CHECK(cl.closed && cl.end == UV_EOF && cl.bytes == want);
    wait_gone();
    CHECK(gone());
    close_client();
}

/* The peer closes (a FIN: the read's end) or resets (a RST: an error on the socket): the
 * connection closes, counted as the peer's doing. */
static void peer_goes(int reset) {
    connect_client(1);
    uint64_t before = host.metrics.closed[NH_CLOSE_CLIENT];
    if (reset) {
        uv_os_fd_t fd;
        struct linger lg = {.l_onoff = 1, .l_linger = 0};
        CHECK(uv_fileno((uv_handle_t *)&cl.tcp, &fd) == 0);
        CHECK(setsockopt(fd, SOL_SOCKET, SO_LINGER, &lg, sizeof lg) == 0);
    }
    close_client();
    wait_gone();
    CHECK(gone() && events[nevents - 2] == EV_CLOSING && events[nevents - 1] == EV_GONE);
    CHECK(host.metrics.closed[NH_CLOSE_CLIENT] == before + 1);
}

static void test_a_peer_that_closes_is_closed(void) {
    peer_goes(0);
}

static void test_a_peer_that_resets_is_closed(void) {
    peer_goes(1);
}

/* What handling a read queued (its replies) is written in the loop turn that read it, by the
 * turn's flush after the I/O callbacks, not a turn later. */
static void test_a_reads_replies_leave_in_its_turn(void) {
    connect_client(1);
    echo_reads = 1;
    uv_buf_t b = uv_buf_init("hello", 5);
    CHECK(uv_try_write((uv_stream_t *)&cl.tcp, &b, 1) == 5);
    for (int i = 0; i < 2000 && got_len < 5; i++)
        uv_run(&loop, UV_RUN_ONCE);
    CHECK(got_len == 5);
    CHECK(host.dirty == NULL && conn->out.bytes == 0); /* on the socket when that turn ended */
    echo_reads = 0;
    for (int i = 0; i < 2000 && cl.have < 7; i++)
        uv_run(&loop, UV_RUN_ONCE);
    CHECK(cl.have == 7 && memcmp(cl.buf, "<5hello", 7) == 0);
    nh_conn_close(conn, "test done");
    wait_gone();
    close_client();
}

/* The turn's flush takes the dirty connections in the order they first queued something: the
 * first request of a turn is not answered after every other one. A connection that closes leaves
 * the list wherever it is (here the first), and the next one queued still goes last. */
static void test_the_turns_flush_goes_oldest_first(void) {
    connect_client(1);
    nh_conn_t *a = conn;
    struct sockaddr_storage ss;
    CHECK(nh_parse_addr(listener->bound, &ss) == 0);
    int fd = socket(AF_INET, SOCK_STREAM, 0); /* a second peer, blocking: the backlog takes it */
    CHECK(fd >= 0 && connect(fd, (struct sockaddr *)&ss, sizeof(struct sockaddr_in)) == 0);
    for (int i = 0; i < 2000 && conn == a; i++)
        uv_run(&loop, UV_RUN_ONCE);
    nh_conn_t *b = conn;
    CHECK(b != NULL && b != a);
    CHECK(nh_conn_send_raw(b, "1", 1) == 0 && nh_conn_send_raw(a, "2", 1) == 0 &&
          nh_conn_send_raw(b, "3", 1) == 0);
    CHECK(host.dirty == b && b->dirty_next == a && a->dirty_next == NULL);
    nh_conn_close(b, "test done");
    CHECK(host.dirty == a && host.dirty_tail == &a->dirty_next);
    CHECK(nh_conn_send_raw(a, "4", 1) == 0 && host.dirty == a && a->dirty_next == NULL);
    for (int i = 0; i < 2000 && cl.have < 2; i++)
        uv_run(&loop, UV_RUN_ONCE);
    CHECK(cl.have == 2 && memcmp(cl.buf, "24", 2) == 0);
    close(fd);
    wait_gone(); /* b */
    conn = a;
    nh_conn_close(a, "test done");
    wait_gone();
    close_client();
}

static int io_uring_here(void) {
    int err;
    nh_io_batch_t *b = nh_io_batch_new(&err);
    nh_io_batch_free(b);
    return b != NULL;
}

/* Two connections readable in the same turn, and what the first one read does closes the other
 * (a handler kicking a player): the other is closed, and none of its bytes reaches its transport,
 * whether the turn's reads were batched (its bytes came in with the first's, and are dropped)
 * or made one at a time (it is closed before its read). */
static void test_a_read_that_closes_a_connection_readable_in_the_same_turn(void) {
    connect_client(1);
    nh_conn_t *a = conn;
    struct sockaddr_storage ss;
    CHECK(nh_parse_addr(listener->bound, &ss) == 0);
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    CHECK(fd >= 0 && connect(fd, (struct sockaddr *)&ss, sizeof(struct sockaddr_in)) == 0);
    for (int i = 0; i < 2000 && conn == a; i++)
        uv_run(&loop, UV_RUN_ONCE);
    nh_conn_t *b = conn;
    CHECK(b != NULL && b != a);
    kickers[0] = a;
    kickers[1] = b;
    kicker_reads[0] = kicker_reads[1] = 0;
    uv_buf_t m = uv_buf_init("from a", 6);
    CHECK(uv_try_write((uv_stream_t *)&cl.tcp, &m, 1) == 6);
    CHECK(write(fd, "from b", 6) == 6); /* both in their sockets before the next poll */
    for (int i = 0; i < 2000 && kicker_reads[0] + kicker_reads[1] == 0; i++)
        uv_run(&loop, UV_RUN_ONCE);
    turns(4);
    CHECK(kicker_reads[0] + kicker_reads[1] == 1 && got_total == 6);
    CHECK((kickers[0] == NULL) != (kickers[1] == NULL)); /* the one kicked is gone, only it */
    nh_conn_t *left = kickers[0] ? kickers[0] : kickers[1];
    kickers[0] = kickers[1] = NULL;
    close(fd);
    if (left) {
        conn = left;
        nh_conn_close(left, "test done");
        wait_gone();
    }
    close_client();
}

/* The suite, on a host of its own: with the turn's flush batched (io_batch.h) where the kernel
 * has io_uring, or one send at a time (NANO_HOST_IO_URING=0, and kernels without it). */
static int suite(int batched) {
    if (!batched) setenv("NANO_HOST_IO_URING", "0", 1);
    if (uv_loop_init(&loop) != 0 || nh_host_init(&host, &loop) != 0) return 2;
    start_listener();
    test_bytes_reach_the_transport();
    test_packets_framed_by_the_transport();
    /* a flush has run: it took the batch when asked to and the kernel has io_uring */
    CHECK(host.io_batch_tried &&
          (batched ? (host.io_batch != NULL) == io_uring_here() : host.io_batch == NULL));
    test_shared_pushes_gathered_in_one_turn();
    test_close_after_flush_closes_once_drained();
    test_close_deadline_for_a_peer_that_does_not_read();
    test_cut_off_past_the_send_limit();
    test_a_burst_bigger_than_the_read_buffer_is_read_whole();
    test_a_stalled_queue_leaves_when_the_peer_reads();
    test_a_draining_connection_drops_input_and_closes_cleanly();
    test_a_peer_that_closes_is_closed();
    test_a_peer_that_resets_is_closed();
    test_a_reads_replies_leave_in_its_turn();
    test_the_turns_flush_goes_oldest_first();
    test_a_read_that_closes_a_connection_readable_in_the_same_turn();
    test_close_all_closes_connections_without_a_session();
    nh_host_stop(&host); /* closes the listener */
    nh_host_free(&host);
    CHECK(uv_loop_close(&loop) == 0);
    return 0;
}

int main(void) {
    nh_log_set_level(NH_LOG_ERROR); /* the send limit logs a warning by design */
    if (suite(1) || suite(0)) return 2;
    return check_done();
}
