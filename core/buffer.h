/* buffer — refcounted byte buffers and the per-connection output queue.
 *
 * nh_buf_t: a fixed-capacity block with a reference count. The creator holds one reference;
 * whoever queues it for writing takes another. It is freed when the last reference goes.
 * A broadcast encodes its message once into one nh_buf_t and every member's queue references it.
 *
 * nh_outq_t: what a connection still has to write, as a list of (buffer, offset, length) segments.
 * Small writes are copied into the pool's arena: one chunk that the queues of every connection
 * append to, each queued segment holding a reference. Consecutive copies for one connection extend
 * one segment, so one loop turn's messages leave in one system call. Chunks never move or grow, so
 * bytes already handed to the kernel (in flight) stay valid while more are appended; once no
 * segment references the arena (everything written) it is reused from its start. A full arena still
 * referenced is left to its segments and a fresh chunk becomes the arena.
 * Why one arena rather than a chunk per connection: a turn that answers a thousand connections
 * would take (and, past the pool's bound, malloc and free) a thousand 16 KiB chunks for a few
 * dozen bytes each; the arena touches a few cache-warm chunks instead. An idle connection holds
 * no chunk at all.
 * A queue that cannot drain (its connection's kernel buffer is full) must not keep arena chunks
 * alive that other connections filled: nh_outq_detach copies its bytes out of the arena into
 * chunks of its own, and its later copies go there too (until it is empty again), so what a
 * stalled queue holds is its own bytes plus at most one partly filled chunk: the send limit,
 * which counts bytes, then bounds memory.
 */
#ifndef NH_BUFFER_H
#define NH_BUFFER_H

#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <uv.h>

typedef struct nh_buf {
    uint32_t refs;
    uint32_t len; /* bytes used */
    uint32_t cap;
    uint32_t arena; /* 1: a pool arena chunk, which other queues' bytes may share */
    uint8_t data[];
} nh_buf_t;

/* Returns a buffer with one reference, len 0, or NULL when out of memory. */
nh_buf_t *nh_buf_new(size_t cap);
static inline nh_buf_t *nh_buf_ref(nh_buf_t *b) {
    b->refs++;
    return b;
}
void nh_buf_unref(nh_buf_t *b);

#define NH_CHUNK_SIZE 16384

/* A bounded free list of NH_CHUNK_SIZE chunks shared by all queues of one loop, and the arena
 * (the chunk small copies go into; the pool holds one reference to it, NULL until first used).
 * Also the segment arrays of queues that drained (NH_SEG_FIRST segments each, at most
 * NH_SEG_CACHE of them, linked through their first bytes): an idle queue keeps no array, and a
 * queue that sends one message and drains, which is every connection answering a request, would
 * otherwise malloc and free one per message.
 * The caches are sized for a broadcast's members: each member's queue takes an array and a
 * gather block for the turn and gives them back when written. With caches smaller than the
 * group, the rest went to malloc and free every turn, ~60 of a push's ~320 instructions
 * (docs/benchmarks.md, ninth pass). What a burst left in them beyond NH_SEG_KEEP arrays and
 * NH_GATHER_KEEP blocks goes back to malloc with nh_chunk_pool_shrink (the host's sweep, at
 * least once a second), so the pool holds at most 512 KiB of arrays and 4 MiB of blocks, and
 * that only while broadcasts keep using them. */
#define NH_SEG_FIRST 4
#define NH_SEG_CACHE 8192
#define NH_SEG_KEEP 256
/* A queue holding NH_GATHER_AFTER segments copies messages of up to NH_GATHER_MAX bytes into
 * blocks of its own (NH_GATHER_BLOCK bytes of data: 512 with the header) until it is empty
 * again: buffer.c's gathering(). A shared message (nh_outq_share: a broadcast's packet, a small
 * TLS record, a static file's small last piece) starts that from the second segment,
 * NH_GATHER_SHARED_AFTER: a copy goes on extending the arena's segment while the arena's next
 * bytes are its own, a shared message never does. The pool keeps up to
 * NH_GATHER_CACHE blocks that were given back, linked through their first bytes. */
#define NH_GATHER_AFTER 2
#define NH_GATHER_SHARED_AFTER 1
#define NH_GATHER_MAX 256
#define NH_GATHER_BLOCK (512 - 16)
#define NH_GATHER_CACHE 8192
#define NH_GATHER_KEEP 1024
typedef struct nh_chunk_pool {
    nh_buf_t **free;
    uint32_t n, max;
    nh_buf_t *arena;
    void *seg_arrays;
    uint32_t nseg_arrays;
    void *gather_blocks;
    uint32_t ngather_blocks;
} nh_chunk_pool_t;

int nh_chunk_pool_init(nh_chunk_pool_t *p, uint32_t max);
void nh_chunk_pool_free(nh_chunk_pool_t *p);
/* Frees the cached segment arrays and gather blocks beyond NH_SEG_KEEP and NH_GATHER_KEEP. */
void nh_chunk_pool_shrink(nh_chunk_pool_t *p);

typedef struct nh_outseg {
    nh_buf_t *buf;
    uint32_t off, len;
} nh_outseg_t;

typedef struct nh_outq {
    nh_outseg_t *segs; /* ring would be overkill: segments are consumed from the front, compacted */
    uint32_t head, n, cap; /* live segments are segs[head .. head+n) */
    int detached;          /* set by nh_outq_detach, cleared when the queue is empty */
    size_t bytes;          /* total queued, including in flight */
    nh_chunk_pool_t *pool; /* arena and free chunks; NULL: every copy gets a block of its own */
    nh_buf_t *own; /* the queue's own block small copies go into (one ref): detached, a chunk;
                      gathering (NH_GATHER_AFTER, NH_GATHER_SHARED_AFTER), a small block */
} nh_outq_t;

void nh_outq_init(nh_outq_t *q, nh_chunk_pool_t *pool);
void nh_outq_free(nh_outq_t *q);

/* Copies len bytes to the end of the queue. Returns 0 or UV_ENOMEM. */
int nh_outq_copy(nh_outq_t *q, const void *data, size_t len);
/* The same for a_len bytes then b_len bytes, as one copy of both (a header and its body without
 * staging them together first). Returns 0 or UV_ENOMEM. */
int nh_outq_copy2(nh_outq_t *q, const void *a_data, size_t a_len, const void *b_data, size_t b_len);
/* Queues b->data[off, off+len) by reference (or, small and into a queue that gathers, as a copy).
 * Returns 0 or UV_ENOMEM. */
int nh_outq_share(nh_outq_t *q, nh_buf_t *b, size_t off, size_t len);

/* The common case of a gathering queue's copy, inline for a broadcast's pushes (a call per
 * member): a_len then b_len bytes fit in the queue's own block right after the bytes its last
 * segment ends with, and are appended there. Returns 1 when done; 0 when not that case (nothing
 * changed): the caller goes on with nh_outq_copy or nh_outq_share. */
static inline int nh_outq_gather2(nh_outq_t *q, const void *a_data, size_t a_len,
                                  const void *b_data, size_t b_len) {
    nh_buf_t *o = q->own;
    size_t len = a_len + b_len;
    if (!o || q->detached || len > NH_GATHER_MAX || o->cap - o->len < len || !q->n) return 0;
    nh_outseg_t *last = &q->segs[q->head + q->n - 1];
    if (last->buf != o || last->off + last->len != o->len) return 0;
    if (a_len) memcpy(o->data + o->len, a_data, a_len);
    if (b_len) memcpy(o->data + o->len + a_len, b_data, b_len);
    o->len += (uint32_t)len;
    last->len += (uint32_t)len;
    q->bytes += len;
    return 1;
}
static inline int nh_outq_gather(nh_outq_t *q, const void *data, size_t len) {
    return nh_outq_gather2(q, NULL, 0, data, len);
}

/* Moves every queued byte that lies in a shared arena chunk into chunks of the queue's own and
 * sends later copies there too, until the queue is next empty. Call it only while nothing of the
 * queue is in flight (it moves bytes). Returns 0 or UV_ENOMEM (the queue is then unchanged). */
int nh_outq_detach(nh_outq_t *q);

/* Fills iov with up to max segments starting `skip` bytes into the queue (skip must fall on a
 * segment boundary or inside one). Returns the number of entries filled. */
unsigned nh_outq_iov(const nh_outq_t *q, size_t skip, uv_buf_t *iov, unsigned max);
/* Drops n bytes from the front (written by the kernel). */
void nh_outq_consume(nh_outq_t *q, size_t n);
/* Drops everything after the first `keep` bytes (what is in flight stays). */
void nh_outq_truncate(nh_outq_t *q, size_t keep);

#endif
