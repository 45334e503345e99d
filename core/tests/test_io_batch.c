/* io_batch.c against real sockets (Unix stream pairs): a batch's sends reach their sockets, one
 * buffer or several, with each result at its call's index; receives in the same batch get what
 * their socket holds, -EAGAIN when it holds nothing and 0 at the peer's end of the stream; a full
 * socket says -EAGAIN for its own send only; a closed descriptor and a peer that has gone fail
 * their own send only (no SIGPIPE); a batch holds NH_IO_BATCH_MAX calls and NH_IO_BATCH_IOVS
 * buffers, then asks to be run; it is empty and usable again after a run; a batch of one call
 * (a plain system call) gives what the ring would. Where the kernel refuses
 * io_uring the test is skipped (exit 77): nano-host then reads and sends one by one, which
 * test_conn covers. */
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "check.h"
#include "io_batch.h"

static nh_io_batch_t *b;

static void pair(int sv[2]) {
    CHECK(socketpair(AF_UNIX, SOCK_STREAM, 0, sv) == 0);
    CHECK(fcntl(sv[0], F_SETFL, O_NONBLOCK) == 0 && fcntl(sv[1], F_SETFL, O_NONBLOCK) == 0);
}

static unsigned add(int fd, const char *const *parts, unsigned n) {
    unsigned room;
    struct iovec *iov = nh_io_batch_next(b, 64, &room);
    CHECK(room >= n);
    for (unsigned i = 0; i < n; i++)
        iov[i] = (struct iovec){(void *)parts[i], strlen(parts[i])};
    return nh_io_batch_send(b, fd, n);
}

static int received(int fd, const char *want) {
    char buf[256];
    ssize_t n = read(fd, buf, sizeof buf);
    return n == (ssize_t)strlen(want) && memcmp(buf, want, (size_t)n) == 0;
}

static void test_sends_reach_their_sockets_in_order_of_results(void) {
    int a[2], c[2];
    pair(a);
    pair(c);
    const char *one[] = {"hello"}, *three[] = {"a", "bc", "def"};
    CHECK(add(a[0], one, 1) == 0);
    CHECK(add(c[0], three, 3) == 1);
    CHECK(nh_io_batch_count(b) == 2);
    int32_t res[2];
    CHECK(nh_io_batch_run(b, res) == 0);
    CHECK(res[0] == 5 && res[1] == 6);
    CHECK(received(a[1], "hello") && received(c[1], "abcdef"));
    CHECK(nh_io_batch_count(b) == 0 && nh_io_batch_ok(b));
    close(a[0]), close(a[1]), close(c[0]), close(c[1]);
}

static void test_a_full_socket_says_eagain_for_its_send_only(void) {
    int full[2], ok[2];
    pair(full);
    pair(ok);
    static char junk[4096];
    while (write(full[0], junk, sizeof junk) > 0)
        ;
    CHECK(errno == EAGAIN);
    const char *x[] = {"x"}, *y[] = {"y"};
    add(full[0], x, 1);
    add(ok[0], y, 1);
    int32_t res[2];
    CHECK(nh_io_batch_run(b, res) == 0);
    CHECK(res[0] == -EAGAIN && res[1] == 1 && received(ok[1], "y"));
    CHECK(nh_io_batch_ok(b));
    close(full[0]), close(full[1]), close(ok[0]), close(ok[1]);
}

static void test_a_bad_descriptor_or_a_gone_peer_fails_its_send_only(void) {
    int gone[2], ok[2];
    pair(gone);
    pair(ok);
    close(gone[1]); /* the peer has gone: EPIPE, and no SIGPIPE (MSG_NOSIGNAL) */
    int closed = dup(ok[0]);
    close(closed); /* a descriptor that is not open */
    const char *p[] = {"p"}, *q[] = {"q"}, *r[] = {"r"};
    add(closed, p, 1);
    add(gone[0], q, 1);
    add(ok[0], r, 1);
    int32_t res[3];
    CHECK(nh_io_batch_run(b, res) == 0);
    CHECK(res[0] == -EBADF && res[1] == -EPIPE && res[2] == 1 && received(ok[1], "r"));
    CHECK(nh_io_batch_ok(b));
    close(gone[0]), close(ok[0]), close(ok[1]);
}

static void test_receives_with_sends_in_one_batch(void) {
    int full[2], empty[2], ended[2], out[2];
    pair(full);
    pair(empty);
    pair(ended);
    pair(out);
    CHECK(write(full[1], "ping", 4) == 4);
    close(ended[1]); /* the peer's end of the stream: 0 */
    char a[16], e[16], z[16];
    const char *pong[] = {"pong"};
    CHECK(nh_io_batch_recv(b, full[0], a, sizeof a) == 0);
    CHECK(add(out[0], pong, 1) == 1);
    CHECK(nh_io_batch_recv(b, empty[0], e, sizeof e) == 2);
    CHECK(nh_io_batch_recv(b, ended[0], z, sizeof z) == 3);
    int32_t res[4];
    CHECK(nh_io_batch_run(b, res) == 0);
    CHECK(res[0] == 4 && memcmp(a, "ping", 4) == 0);
    CHECK(res[1] == 4 && received(out[1], "pong"));
    CHECK(res[2] == -EAGAIN && res[3] == 0);
    close(full[0]), close(full[1]), close(empty[0]), close(empty[1]), close(ended[0]);
    close(out[0]), close(out[1]);
}

/* A batch of one call is made as a plain system call, with the same results. */
static void test_a_batch_of_one_gives_the_same_results(void) {
    int s[2];
    pair(s);
    char buf[16];
    int32_t res[1];
    CHECK(nh_io_batch_recv(b, s[0], buf, sizeof buf) == 0);
    CHECK(nh_io_batch_run(b, res) == 0 && res[0] == -EAGAIN);
    const char *one[] = {"one"}, *two[] = {"t", "wo"};
    add(s[0], one, 1);
    CHECK(nh_io_batch_run(b, res) == 0 && res[0] == 3 && received(s[1], "one"));
    add(s[0], two, 2);
    CHECK(nh_io_batch_run(b, res) == 0 && res[0] == 3 && received(s[1], "two"));
    CHECK(write(s[1], "back", 4) == 4);
    CHECK(nh_io_batch_recv(b, s[0], buf, sizeof buf) == 0);
    CHECK(nh_io_batch_run(b, res) == 0 && res[0] == 4 && memcmp(buf, "back", 4) == 0);
    close(s[1]);
    CHECK(nh_io_batch_recv(b, s[0], buf, sizeof buf) == 0);
    CHECK(nh_io_batch_run(b, res) == 0 && res[0] == 0);
    const char *late[] = {"late"};
    add(s[0], late, 1);
    CHECK(nh_io_batch_run(b, res) == 0 && res[0] == -EPIPE);
    close(s[0]);
}

static void test_a_batch_fills_then_runs_and_is_usable_again(void) {
    int s[2];
    pair(s);
    int sz = 1 << 20;
    setsockopt(s[0], SOL_SOCKET, SO_SNDBUF, &sz, sizeof sz);
    const char *one[] = {"1"};
    unsigned room, added = 0;
    for (;;) {
        nh_io_batch_next(b, 1, &room);
        if (!room) break;
        add(s[0], one, 1);
        added++;
    }
    CHECK(added == NH_IO_BATCH_MAX);
    static int32_t res[NH_IO_BATCH_MAX];
    CHECK(nh_io_batch_run(b, res) == 0);
    int all = 1;
    for (unsigned i = 0; i < added; i++)
        all &= res[i] == 1;
    CHECK(all);
    static char buf[NH_IO_BATCH_MAX * 2];
    CHECK(read(s[1], buf, sizeof buf) == NH_IO_BATCH_MAX);
    /* the buffers run out before the sends: room shrinks, then is none */
    static const char *many[64];
    for (int i = 0; i < 64; i++)
        many[i] = "m";
    unsigned sends = 0;
    for (;;) {
        nh_io_batch_next(b, 64, &room);
        if (!room) break;
        CHECK(room <= 64);
        add(s[0], many, room);
        sends++;
    }
    CHECK(sends == NH_IO_BATCH_IOVS / 64);
    CHECK(nh_io_batch_run(b, res) == 0 && res[0] == 64 && res[sends - 1] == 64);
    CHECK(read(s[1], buf, sizeof buf) > 0);
    close(s[0]), close(s[1]);
}

int main(void) {
    signal(SIGPIPE, SIG_DFL); /* a send that raised it would end the test */
    int err = 0;
    b = nh_io_batch_new(&err);
    if (!b) {
        printf("io_uring unavailable here (%s): skipped\n", strerror(err));
        return 77;
    }
    test_sends_reach_their_sockets_in_order_of_results();
    test_a_full_socket_says_eagain_for_its_send_only();
    test_a_bad_descriptor_or_a_gone_peer_fails_its_send_only();
    test_receives_with_sends_in_one_batch();
    test_a_batch_of_one_gives_the_same_results();
    test_a_batch_fills_then_runs_and_is_usable_again();
    nh_io_batch_free(b);
    return check_done();
}
