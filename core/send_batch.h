/* send_batch — many non-blocking sends, to as many sockets, in one system call (io_uring).
 *
 * Why: a turn's flush writes one send per dirty connection, and a broadcast one per member. On
 * the virtual machines this runs on, entering and leaving the kernel is most of a small send's
 * cost: a getppid takes ~1 µs, a 24-byte send on loopback ~4 µs, and 1,000 such sends made as one
 * io_uring batch take ~60 % of the time of 1,000 sendmsg calls (docs/benchmarks.md, twenty-fifth
 * pass). liburing (Debian's liburing-dev) sets up the ring.
 *
 * Contract:
 * - The loop thread only; one batch per host, made on first use (a forked worker makes its own).
 * - nh_send_batch_next gives room for the next send's buffers; nh_send_batch_add adds the send
 *   (MSG_NOSIGNAL | MSG_DONTWAIT, never blocking); nh_send_batch_run makes them all and waits for
 *   their results, which are the kernel's at once (a socket takes what it can or says EAGAIN).
 *   The buffers and their bytes are read by the kernel during nh_send_batch_run only: they must
 *   stay valid until it returns, and may change afterwards.
 * - A send's result is the bytes the socket took, or a negative errno (-EAGAIN: none). A send
 *   that the kernel never got, because the ring itself failed, gets -ECANCELED; the batch is then
 *   broken for good (nh_send_batch_ok says 0) and the caller sends one by one from then on.
 * - nh_send_batch_new returns NULL where io_uring is missing or refused (an old kernel, a
 *   container's seccomp profile, kernel.io_uring_disabled, valgrind): *err says why.
 */
#ifndef NH_SEND_BATCH_H
#define NH_SEND_BATCH_H

#include <stdint.h>
#include <sys/uio.h>

/* sends in one batch; their buffers, all sends together */
#define NH_SEND_BATCH_MAX 512
#define NH_SEND_BATCH_IOVS 4096

typedef struct nh_send_batch nh_send_batch_t;

nh_send_batch_t *nh_send_batch_new(int *err);
void nh_send_batch_free(nh_send_batch_t *b);

/* Room for the next send's buffers: a pointer to *room iovecs (at most max), *room 0 when the
 * batch is full (run it first). */
struct iovec *nh_send_batch_next(nh_send_batch_t *b, unsigned max, unsigned *room);
/* Adds a send to fd of the first n (1 or more) iovecs nh_send_batch_next gave; returns its
 * index in the batch (the results' order). */
unsigned nh_send_batch_add(nh_send_batch_t *b, int fd, unsigned n);
/* Sends added since the last run. */
unsigned nh_send_batch_count(const nh_send_batch_t *b);
/* Makes the added sends, each one's result in res[index]; the batch is then empty. Returns 0, or
 * a negative errno when the ring failed (the sends it never got have -ECANCELED). */
int nh_send_batch_run(nh_send_batch_t *b, int32_t *res);
/* 1 while the ring works; 0 once it has failed. */
int nh_send_batch_ok(const nh_send_batch_t *b);

#endif
