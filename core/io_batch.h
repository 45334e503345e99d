/* io_batch — many non-blocking socket calls (sends and receives, to and from as many sockets) in
 * one system call (io_uring).
 *
 * Why: a turn reads each readable connection once and writes each dirty one once. On the virtual
 * machines this runs on, entering and leaving the kernel is most of a small call's cost: a
 * getppid takes ~1 µs, a 24-byte send on loopback ~4 µs, and 1,000 such sends made as one
 * io_uring batch take ~60 % of the time of 1,000 sendmsg calls (docs/benchmarks.md, twenty-fifth
 * pass). liburing (Debian's liburing-dev) sets up the ring.
 *
 * Contract:
 * - The loop thread only; one batch per host, made on first use (a forked worker makes its own).
 * - nh_io_batch_next gives room for the next send's buffers and nh_io_batch_send adds the send
 *   (MSG_NOSIGNAL | MSG_DONTWAIT); nh_io_batch_recv adds a receive into one buffer
 *   (MSG_DONTWAIT). nh_io_batch_run makes them all and waits for their results, which are the
 *   kernel's at once: none of them blocks (a socket takes or gives what it can, or says EAGAIN).
 *   The kernel uses the buffers during nh_io_batch_run only: they must stay valid until it
 *   returns, and are the caller's again afterwards. A batch of one call is made as a plain
 *   system call, which costs less than the ring for one.
 * - A result is the bytes sent or received (0 received: the peer's end of the stream), or a
 *   negative errno (-EAGAIN: nothing now). A call that the kernel never got, because the ring
 *   itself failed, gets -ECANCELED; the batch is then broken for good (nh_io_batch_ok says 0) and
 *   the caller makes its calls one by one from then on.
 * - nh_io_batch_new returns NULL where io_uring is missing or refused (an old kernel, a
 *   container's seccomp profile, kernel.io_uring_disabled): *err says why.
 */
#ifndef NH_IO_BATCH_H
#define NH_IO_BATCH_H

#include <stdint.h>
#include <sys/uio.h>

/* calls in one batch; the sends' buffers, all sends together */
#define NH_IO_BATCH_MAX 512
#define NH_IO_BATCH_IOVS 4096

typedef struct nh_io_batch nh_io_batch_t;

nh_io_batch_t *nh_io_batch_new(int *err);
void nh_io_batch_free(nh_io_batch_t *b);

/* Room for the next send's buffers: a pointer to *room iovecs (at most max), *room 0 when the
 * batch is full (run it first). */
struct iovec *nh_io_batch_next(nh_io_batch_t *b, unsigned max, unsigned *room);
/* Adds a send to fd of the first n (1 or more) iovecs nh_io_batch_next gave; returns its
 * index in the batch (the results' order). */
unsigned nh_io_batch_send(nh_io_batch_t *b, int fd, unsigned n);
/* Adds a receive from fd into buf (up to len bytes); returns its index. The batch must have room
 * (nh_io_batch_count below NH_IO_BATCH_MAX). */
unsigned nh_io_batch_recv(nh_io_batch_t *b, int fd, void *buf, size_t len);
/* Calls added since the last run. */
unsigned nh_io_batch_count(const nh_io_batch_t *b);
/* Makes the added calls, each one's result in res[index]; the batch is then empty. Returns 0, or
 * a negative errno when the ring failed (the calls it never got have -ECANCELED). */
int nh_io_batch_run(nh_io_batch_t *b, int32_t *res);
/* The same calls made alone, as plain system calls (no ring): what a batch of one does, and what
 * conn.c does where there is no batch. The bytes sent or received, or a negative errno. */
int32_t nh_io_send_now(int fd, const struct iovec *iov, unsigned n);
int32_t nh_io_recv_now(int fd, void *buf, size_t len);
/* 1 while the ring works; 0 once it has failed. */
int nh_io_batch_ok(const nh_io_batch_t *b);

#endif
