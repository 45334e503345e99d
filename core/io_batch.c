#include "io_batch.h"

#include <errno.h>
#include <liburing.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <unistd.h>

/* The kernel fills a batched receive's buffer behind valgrind's back (it sees the io_uring_enter,
 * not what the ring's calls wrote): the bytes received are marked as written, so that memcheck
 * does not take them for uninitialised. A few instructions when not under valgrind. */
#if defined(__has_include)
#if __has_include(<valgrind/memcheck.h>)
#include <valgrind/memcheck.h>
#define RECEIVED(buf, len) VALGRIND_MAKE_MEM_DEFINED(buf, len)
#endif
#endif
#ifndef RECEIVED
#define RECEIVED(buf, len) ((void)(buf), (void)(len))
#endif

/* A call as added: a send of n iovecs from iov, or a receive (n 0) into buf. The ring's entries
 * are filled at the run, so that a batch of one can be a plain system call instead. */
typedef struct op {
    int fd;
    unsigned n;
    struct iovec *iov;
    struct iovec buf;
} op_t;

struct nh_io_batch {
    struct io_uring ring;
    int broken;
    unsigned count;    /* calls added since the last run */
    unsigned iov_used; /* of iovs, by the sends among them */
    op_t ops[NH_IO_BATCH_MAX];
    struct msghdr msgs[NH_IO_BATCH_MAX];
    struct iovec iovs[NH_IO_BATCH_IOVS];
};

nh_io_batch_t *nh_io_batch_new(int *err) {
    nh_io_batch_t *b = calloc(1, sizeof *b);
    if (!b) {
        *err = ENOMEM;
        return NULL;
    }
    /* SUBMIT_ALL: a send that fails (a closed descriptor) does not stop the ones after it;
     * SINGLE_ISSUER, COOP_TASKRUN: only this thread submits, and nothing needs interrupting it.
     * Kernels before 6.0 refuse the last two (EINVAL): then without them, then without any. */
    static const unsigned flags[] = {IORING_SETUP_SUBMIT_ALL | IORING_SETUP_SINGLE_ISSUER |
                                         IORING_SETUP_COOP_TASKRUN,
                                     IORING_SETUP_SUBMIT_ALL, 0};
    int r = -EINVAL;
    for (size_t i = 0; i < sizeof flags / sizeof flags[0] && r == -EINVAL; i++) {
        struct io_uring_params p;
        memset(&p, 0, sizeof p);
        p.flags = flags[i];
        r = io_uring_queue_init_params(NH_IO_BATCH_MAX, &b->ring, &p);
    }
    if (r < 0) {
        free(b);
        *err = -r;
        return NULL;
    }
    return b;
}

void nh_io_batch_free(nh_io_batch_t *b) {
    if (!b) return;
    io_uring_queue_exit(&b->ring);
    free(b);
}

struct iovec *nh_io_batch_next(nh_io_batch_t *b, unsigned max, unsigned *room) {
    unsigned left = NH_IO_BATCH_IOVS - b->iov_used;
    *room = b->count == NH_IO_BATCH_MAX ? 0 : left < max ? left : max;
    return b->iovs + b->iov_used;
}

unsigned nh_io_batch_send(nh_io_batch_t *b, int fd, unsigned n) {
    unsigned i = b->count++;
    b->ops[i] = (op_t){.fd = fd, .n = n, .iov = b->iovs + b->iov_used};
    b->iov_used += n;
    return i;
}

unsigned nh_io_batch_recv(nh_io_batch_t *b, int fd, void *buf, size_t len) {
    unsigned i = b->count++;
    b->ops[i] = (op_t){.fd = fd, .buf = {buf, len}};
    return i;
}

/* DONTWAIT: a full or empty socket says EAGAIN at once, rather than the ring waiting for it. */
#define SEND_FLAGS (MSG_NOSIGNAL | MSG_DONTWAIT)

static void prep(nh_io_batch_t *b, unsigned i) {
    const op_t *o = &b->ops[i];
    /* never NULL: the ring has NH_IO_BATCH_MAX entries and each run empties it */
    struct io_uring_sqe *sqe = io_uring_get_sqe(&b->ring);
    if (!o->n) {
        io_uring_prep_recv(sqe, o->fd, o->buf.iov_base, o->buf.iov_len, MSG_DONTWAIT);
    } else if (o->n == 1) { /* no msghdr for the kernel to copy in (a read's responses, usually) */
        io_uring_prep_send(sqe, o->fd, o->iov->iov_base, o->iov->iov_len, SEND_FLAGS);
    } else {
        b->msgs[i] = (struct msghdr){.msg_iov = o->iov, .msg_iovlen = o->n};
        io_uring_prep_sendmsg(sqe, o->fd, &b->msgs[i], (unsigned)SEND_FLAGS);
    }
    io_uring_sqe_set_data64(sqe, i);
}

/* syscall(): glibc's wrappers are thread cancellation points, whose enabling and disabling cost
 * ~30 instructions a call; syscall() is plain. send and sendmsg go to the socket directly, where
 * writev goes through the file layer first (docs/benchmarks.md, ninth pass); one buffer goes
 * by send, without a msghdr for the kernel to copy in. */
int32_t nh_io_send_now(int fd, const struct iovec *iov, unsigned n) {
    struct msghdr m = {.msg_iov = (struct iovec *)iov, .msg_iovlen = n};
    long r;
    do
        r = n == 1 ? syscall(SYS_sendto, fd, iov->iov_base, iov->iov_len, SEND_FLAGS, NULL, 0)
                   : syscall(SYS_sendmsg, fd, &m, SEND_FLAGS);
    while (r < 0 && errno == EINTR);
    return r < 0 ? -errno : (int32_t)r;
}

int32_t nh_io_recv_now(int fd, void *buf, size_t len) {
    long r;
    do
        r = syscall(SYS_recvfrom, fd, buf, len, MSG_DONTWAIT, NULL, NULL);
    while (r < 0 && errno == EINTR);
    return r < 0 ? -errno : (int32_t)r;
}

/* One call alone: a plain system call costs less than a ring's entry and its submission (the
 * usual case when the load generator, not the server, is the bottleneck: a request a turn). */
static int32_t call_alone(const op_t *o) {
    return o->n ? nh_io_send_now(o->fd, o->iov, o->n)
                : nh_io_recv_now(o->fd, o->buf.iov_base, o->buf.iov_len);
}

unsigned nh_io_batch_count(const nh_io_batch_t *b) {
    return b->count;
}

int nh_io_batch_ok(const nh_io_batch_t *b) {
    return !b->broken;
}

static unsigned reap(nh_io_batch_t *b, int32_t *res) {
    struct io_uring_cqe *cqe;
    unsigned head, got = 0;
    io_uring_for_each_cqe(&b->ring, head, cqe) {
        uint64_t i = io_uring_cqe_get_data64(cqe);
        if (i < b->count) {
            res[i] = cqe->res;
            if (cqe->res > 0 && !b->ops[i].n) RECEIVED(b->ops[i].buf.iov_base, (size_t)cqe->res);
        }
        got++;
    }
    io_uring_cq_advance(&b->ring, got);
    return got;
}

int nh_io_batch_run(nh_io_batch_t *b, int32_t *res) {
    unsigned n = b->count, submitted = 0, done = 0;
    int err = 0, stuck = 0;
    if (n == 1) {
        res[0] = call_alone(&b->ops[0]);
        b->count = 0;
        b->iov_used = 0;
        return 0;
    }
    for (unsigned i = 0; i < n; i++) {
        res[i] = -ECANCELED;
        prep(b, i);
    }
    /* Each call is made during the submit itself (non-blocking), so its result is there when
     * the submit returns; waiting is for a kernel that chose otherwise. */
    while (done < n && !err) {
        if (submitted < n) {
            int s = io_uring_submit(&b->ring);
            if (s > 0) submitted += (unsigned)s;
            if (s < 0 && s != -EINTR && s != -EAGAIN && s != -EBUSY) err = s;
            if (s <= 0 && s != -EINTR && ++stuck > 8) err = s < 0 ? s : -EIO;
        }
        unsigned got = reap(b, res);
        done += got;
        if (!got && done < submitted) { /* some still in the kernel: wait for one */
            struct io_uring_cqe *cqe;
            int w = io_uring_wait_cqe(&b->ring, &cqe);
            if (w < 0 && w != -EINTR && w != -EAGAIN) err = w;
        }
    }
    /* On a failure, the calls the kernel has taken still use their buffers until they end. */
    while (err && done < submitted) {
        struct io_uring_cqe *cqe;
        int w = io_uring_wait_cqe(&b->ring, &cqe);
        if (w < 0 && w != -EINTR) break;
        done += reap(b, res);
    }
    if (err) b->broken = 1;
    b->count = 0;
    b->iov_used = 0;
    return err;
}
