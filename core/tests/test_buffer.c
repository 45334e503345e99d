/* test_buffer — the output queue and its shared arena: what queues hand to writev is exactly what
 * was queued, in order, whatever the interleaving between connections; bytes in flight stay put
 * while more is appended; the arena is reused once nothing points into it, left to its segments
 * when it fills while still referenced; idle queues hold nothing; chunks go back to the pool; a
 * detached (stalled) queue holds only its own bytes; truncating keeps what is in flight. */
#include "buffer.h"
#include "check.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Concatenates what nh_outq_iov hands out (skipping `skip` bytes) into out; returns its length. */
static size_t gather(const nh_outq_t *q, size_t skip, uint8_t *out, size_t cap) {
    uv_buf_t iov[64];
    unsigned n = nh_outq_iov(q, skip, iov, 64);
    size_t len = 0;
    for (unsigned i = 0; i < n; i++) {
        if (len + iov[i].len > cap) return (size_t)-1;
        memcpy(out + len, iov[i].base, iov[i].len);
        len += iov[i].len;
    }
    return len;
}

static int queued_equals(const nh_outq_t *q, const char *want) {
    static uint8_t buf[32768];
    size_t n = gather(q, 0, buf, sizeof buf);
    return n == strlen(want) && memcmp(buf, want, n) == 0 && q->bytes == n;
}

static void interleaved_queues_keep_their_own_bytes_in_order(void) {
    nh_chunk_pool_t pool;
    CHECK(nh_chunk_pool_init(&pool, 8) == 0);
    nh_outq_t a, b;
    nh_outq_init(&a, &pool);
    nh_outq_init(&b, &pool);
    CHECK(nh_outq_copy(&a, "one ", 4) == 0);
    CHECK(nh_outq_copy(&a, "two ", 4) == 0); /* contiguous: extends the segment */
    CHECK(nh_outq_copy(&b, "ALPHA ", 6) == 0);
    CHECK(nh_outq_copy(&a, "three", 5) == 0); /* after b's bytes: a second segment */
    CHECK(nh_outq_copy(&b, "BETA", 4) == 0);
    CHECK(queued_equals(&a, "one two three"));
    CHECK(queued_equals(&b, "ALPHA BETA"));
    CHECK(a.n == 2);
    CHECK(a.segs[a.head].buf == pool.arena && b.segs[b.head].buf == pool.arena);
    nh_outq_free(&a);
    nh_outq_free(&b);
    nh_chunk_pool_free(&pool);
}

static void arena_is_reused_once_everything_is_written(void) {
    nh_chunk_pool_t pool;
    CHECK(nh_chunk_pool_init(&pool, 8) == 0);
    nh_outq_t a, b;
    nh_outq_init(&a, &pool);
    nh_outq_init(&b, &pool);
    nh_outq_copy(&a, "hello", 5);
    nh_outq_copy(&b, "world", 5);
    nh_buf_t *arena = pool.arena;
    CHECK(arena && arena->len == 10 && arena->refs == 3);
    nh_outq_consume(&a, 5);
    CHECK(a.bytes == 0 && a.n == 0);
    nh_outq_copy(&a, "again", 5); /* b still points into the arena: append after its bytes */
    CHECK(pool.arena == arena && a.segs[a.head].off == 10);
    nh_outq_consume(&a, 5);
    nh_outq_consume(&b, 5);
    CHECK(arena->refs == 1); /* only the pool's own reference is left */
    nh_outq_copy(&b, "xy", 2);
    CHECK(pool.arena == arena && b.segs[b.head].off == 0 && arena->len == 2);
    CHECK(queued_equals(&b, "xy"));
    nh_outq_free(&a);
    nh_outq_free(&b);
    nh_chunk_pool_free(&pool);
}

static void bytes_in_flight_stay_valid_while_the_arena_moves_on(void) {
    nh_chunk_pool_t pool;
    CHECK(nh_chunk_pool_init(&pool, 8) == 0);
    nh_outq_t a, b;
    nh_outq_init(&a, &pool);
    nh_outq_init(&b, &pool);
    /* a's bytes are "in flight": handed out by iov, not consumed yet */
    nh_outq_copy(&a, "inflight", 8);
    uv_buf_t iov[4];
    CHECK(nh_outq_iov(&a, 0, iov, 4) == 1);
    nh_buf_t *first = pool.arena;
    /* b fills the arena past its end many times over */
    char block[1000];
    memset(block, 'b', sizeof block);
    size_t total = 0;
    for (int i = 0; i < 40; i++) {
        CHECK(nh_outq_copy(&b, block, sizeof block) == 0);
        total += sizeof block;
    }
    CHECK(pool.arena != first); /* a full arena still referenced was left behind */
    CHECK(iov[0].len == 8 && memcmp(iov[0].base, "inflight", 8) == 0);
    CHECK(b.bytes == total);
    static uint8_t got[64 * 1024];
    CHECK(gather(&b, 0, got, sizeof got) == total);
    int all_b = 1;
    for (size_t i = 0; i < total; i++)
        all_b &= got[i] == 'b';
    CHECK(all_b);
    /* partial consume inside a segment, then the rest */
    nh_outq_consume(&b, 1500);
    CHECK(b.bytes == total - 1500);
    CHECK(gather(&b, 0, got, sizeof got) == total - 1500);
    nh_outq_consume(&b, b.bytes);
    nh_outq_consume(&a, 8);
    CHECK(a.bytes == 0 && b.bytes == 0 && a.n == 0 && b.n == 0);
    /* the chunks b filled went back to the pool, not to free() */
    CHECK(pool.n >= 2);
    nh_outq_free(&a);
    nh_outq_free(&b);
    nh_chunk_pool_free(&pool);
}

static void big_copies_and_shared_buffers_are_segments_of_their_own(void) {
    nh_chunk_pool_t pool;
    CHECK(nh_chunk_pool_init(&pool, 8) == 0);
    nh_outq_t q;
    nh_outq_init(&q, &pool);
    static char big[NH_CHUNK_SIZE];
    memset(big, 'x', sizeof big);
    CHECK(nh_outq_copy(&q, "hd", 2) == 0);
    CHECK(nh_outq_copy(&q, big, sizeof big) == 0);
    CHECK(q.n == 2 && q.segs[q.head + 1].buf != pool.arena);
    nh_buf_t *shared = nh_buf_new(300);
    memset(shared->data, 's', 300);
    shared->len = 300;
    CHECK(nh_outq_share(&q, shared, 0, 300) == 0);
    CHECK(shared->refs == 2);
    CHECK(q.bytes == 2 + sizeof big + 300);
    nh_outq_consume(&q, q.bytes);
    CHECK(shared->refs == 1);
    nh_buf_unref(shared);
    nh_outq_free(&q);
    nh_chunk_pool_free(&pool);
}

static void closing_a_queue_with_bytes_left_releases_them(void) {
    nh_chunk_pool_t pool;
    CHECK(nh_chunk_pool_init(&pool, 8) == 0);
    nh_outq_t a, b;
    nh_outq_init(&a, &pool);
    nh_outq_init(&b, &pool);
    nh_outq_copy(&a, "left behind", 11);
    nh_outq_copy(&b, "kept", 4);
    nh_outq_free(&a); /* connection closed with output queued */
    CHECK(pool.arena->refs == 2);
    CHECK(queued_equals(&b, "kept"));
    nh_outq_free(&b);
    CHECK(pool.arena->refs == 1);
    /* the pool outliving no queue: freeing it frees the arena (ASan checks the leak) */
    nh_chunk_pool_free(&pool);
    CHECK(pool.arena == NULL);
}

static void a_queue_without_a_pool_still_works(void) {
    nh_outq_t q;
    nh_outq_init(&q, NULL);
    CHECK(nh_outq_copy(&q, "abc", 3) == 0);
    CHECK(nh_outq_copy(&q, "def", 3) == 0);
    CHECK(queued_equals(&q, "abcdef"));
    nh_outq_consume(&q, 4);
    CHECK(queued_equals(&q, "ef"));
    nh_outq_free(&q);
}

/* Distinct buffers a queue's segments reference: the memory it keeps alive. */
static unsigned buffers_pinned(const nh_outq_t *q) {
    unsigned n = 0;
    for (uint32_t i = 0; i < q->n; i++) {
        const nh_buf_t *b = q->segs[q->head + i].buf;
        int seen = 0;
        for (uint32_t j = 0; j < i && !seen; j++)
            seen = q->segs[q->head + j].buf == b;
        n += !seen;
    }
    return n;
}

/* The attack: a slow queue gets a few hundred bytes at a time while busy queues fill the arena
 * between them, so each of its messages kept a whole 16 KiB chunk alive. Detached, it holds its
 * own bytes only. (Messages over NH_GATHER_MAX: smaller ones a queue with a backlog gathers into
 * blocks of its own anyway, gathering_small_messages_makes_one_segment.) */
#define SLOW_MSG (NH_GATHER_MAX + 44)

/* Messages from..to-1 to the slow queue (and to want), each followed by two chunks' worth of a
 * busy queue's bytes that are written at once. */
static void slow_and_busy(nh_outq_t *slow, nh_outq_t *busy, int from, int to, char *want,
                          size_t *wl) {
    static uint8_t fill[8000];
    for (int i = from; i < to; i++) {
        char msg[SLOW_MSG];
        memset(msg, 'a' + i % 26, SLOW_MSG);
        char tag[16];
        snprintf(tag, sizeof tag, "m%07d.", i);
        memcpy(msg, tag, 9);
        CHECK(nh_outq_copy(slow, msg, SLOW_MSG) == 0);
        memcpy(want + *wl, msg, SLOW_MSG);
        *wl += SLOW_MSG;
        CHECK(nh_outq_copy(busy, fill, sizeof fill) == 0);
        CHECK(nh_outq_copy(busy, fill, sizeof fill) == 0);
        nh_outq_consume(busy, busy->bytes);
    }
    want[*wl] = '\0';
}

static void a_detached_queue_pins_only_its_own_bytes(void) {
    nh_chunk_pool_t pool;
    CHECK(nh_chunk_pool_init(&pool, 512) == 0);
    nh_outq_t slow, busy;
    nh_outq_init(&slow, &pool);
    nh_outq_init(&busy, &pool);
    static char want[90 * SLOW_MSG + 1];
    size_t wl = 0;
    slow_and_busy(&slow, &busy, 0, 45, want, &wl);
    CHECK(buffers_pinned(&slow) >= 40); /* 13 KiB keeping 700 KiB of chunks alive */
    CHECK(nh_outq_detach(&slow) == 0);
    CHECK(queued_equals(&slow, want));
    CHECK(buffers_pinned(&slow) == 1);
    /* later copies stay out of the arena, however they interleave with other queues */
    slow_and_busy(&slow, &busy, 45, 90, want, &wl);
    CHECK(queued_equals(&slow, want));
    CHECK(buffers_pinned(&slow) == 2); /* 27 KiB: its own two chunks */
    CHECK(slow.segs[slow.head].buf != pool.arena);
    /* drained, it goes back to the shared arena */
    nh_outq_consume(&slow, slow.bytes);
    CHECK(slow.own == NULL && !slow.detached);
    CHECK(nh_outq_copy(&slow, "x", 1) == 0);
    CHECK(slow.segs[slow.head].buf == pool.arena);
    nh_outq_free(&slow);
    nh_outq_free(&busy);
    nh_chunk_pool_free(&pool);
}

static void truncate_keeps_what_is_in_flight(void) {
    nh_chunk_pool_t pool;
    CHECK(nh_chunk_pool_init(&pool, 8) == 0);
    nh_outq_t q, other;
    nh_outq_init(&q, &pool);
    nh_outq_init(&other, &pool);
    nh_outq_copy(&q, "in flight|", 10);
    nh_outq_copy(&other, "#", 1); /* splits q into two segments */
    nh_outq_copy(&q, "queued", 6);
    nh_buf_t *big = nh_buf_new(10000);
    memset(big->data, 'b', 10000);
    big->len = 10000;
    nh_outq_share(&q, big, 0, 10000);
    CHECK(big->refs == 2);
    nh_outq_truncate(&q, 6); /* the cut falls inside the first segment */
    CHECK(queued_equals(&q, "in fli"));
    CHECK(big->refs == 1); /* the dropped reference is released */
    nh_outq_truncate(&q, 0);
    CHECK(q.bytes == 0 && q.n == 0);
    nh_buf_unref(big);
    nh_outq_free(&q);
    nh_outq_free(&other);
    nh_chunk_pool_free(&pool);
}

/* A queue that drains gives its segment array to the pool, the next queue that needs one takes
 * it (no malloc/free per message); the cache is bounded, grown arrays are freed, and the pool
 * frees what it holds. Run under ASan/valgrind, a lost or doubly freed array shows. */
static void drained_segment_arrays_are_reused_through_the_pool(void) {
    nh_chunk_pool_t pool;
    CHECK(nh_chunk_pool_init(&pool, 8) == 0);
    nh_outq_t a, b;
    nh_outq_init(&a, &pool);
    nh_outq_init(&b, &pool);
    CHECK(nh_outq_copy(&a, "one", 3) == 0);
    nh_outseg_t *first = a.segs;
    CHECK(first != NULL && a.cap == NH_SEG_FIRST);
    nh_outq_consume(&a, 3); /* drained: the array goes to the pool */
    CHECK(a.segs == NULL && a.cap == 0 && pool.nseg_arrays == 1);
    CHECK(nh_outq_copy(&b, "two", 3) == 0); /* another queue takes that same array */
    CHECK(b.segs == first && pool.nseg_arrays == 0);
    CHECK(queued_equals(&b, "two"));
    /* grown past the first size: freed when drained, not cached (segments too big to gather) */
    nh_buf_t *big = nh_buf_new(NH_GATHER_MAX + 1);
    big->len = NH_GATHER_MAX + 1;
    for (int i = 0; i < 6; i++)
        CHECK(nh_outq_share(&b, big, 0, NH_GATHER_MAX + 1) == 0);
    CHECK(b.cap > NH_SEG_FIRST);
    nh_outq_consume(&b, b.bytes);
    CHECK(b.segs == NULL && pool.nseg_arrays == 0);
    /* the cache is bounded */
    static nh_outq_t many[NH_SEG_CACHE + 8];
    for (int i = 0; i < NH_SEG_CACHE + 8; i++) {
        nh_outq_init(&many[i], &pool);
        CHECK(nh_outq_share(&many[i], big, 0, 1) == 0);
    }
    for (int i = 0; i < NH_SEG_CACHE + 8; i++)
        nh_outq_consume(&many[i], 1);
    CHECK(pool.nseg_arrays == NH_SEG_CACHE);
    /* a queue freed with an array (not drained) gives it back too */
    CHECK(nh_outq_copy(&a, "x", 1) == 0);
    CHECK(pool.nseg_arrays == NH_SEG_CACHE - 1);
    nh_outq_free(&a);
    CHECK(pool.nseg_arrays == NH_SEG_CACHE);
    /* a burst's arrays go back to malloc past NH_SEG_KEEP (the host's sweep); a second shrink
     * keeps what the first kept */
    nh_chunk_pool_shrink(&pool);
    CHECK(pool.nseg_arrays == NH_SEG_KEEP);
    nh_chunk_pool_shrink(&pool);
    CHECK(pool.nseg_arrays == NH_SEG_KEEP);
    for (int i = 0; i < NH_SEG_KEEP; i++) /* and the kept ones are still a list */
        CHECK(nh_outq_share(&many[i], big, 0, 1) == 0 && many[i].cap == NH_SEG_FIRST);
    CHECK(pool.nseg_arrays == 0 && pool.seg_arrays == NULL);
    for (int i = 0; i < NH_SEG_KEEP; i++)
        nh_outq_consume(&many[i], 1);
    nh_buf_unref(big);
    nh_outq_free(&b);
    nh_chunk_pool_free(&pool); /* frees the cached arrays */
    CHECK(pool.nseg_arrays == 0 && pool.seg_arrays == NULL);
    /* a queue that outlives its pool frees its array itself */
    CHECK(nh_chunk_pool_init(&pool, 8) == 0);
    nh_outq_init(&a, &pool);
    CHECK(nh_outq_copy(&a, "late", 4) == 0);
    nh_chunk_pool_free(&pool);
    nh_outq_free(&a);
}

/* nh_outq_copy2: a header and its body queued as one copy, contiguous in the arena (one segment,
 * extending the last when it ends there), in one block of their own when big, in a detached
 * queue's own chunk when detached, and on their own without a pool. */
static void two_part_copies_land_as_one(void) {
    nh_chunk_pool_t pool;
    CHECK(nh_chunk_pool_init(&pool, 8) == 0);
    nh_outq_t a, b;
    nh_outq_init(&a, &pool);
    nh_outq_init(&b, &pool);
    CHECK(nh_outq_copy2(&a, "head:", 5, "body ", 5) == 0);
    CHECK(nh_outq_copy2(&a, "h2:", 3, "b2", 2) == 0); /* contiguous: extends the segment */
    CHECK(a.n == 1 && queued_equals(&a, "head:body h2:b2"));
    CHECK(nh_outq_copy2(&a, NULL, 0, NULL, 0) == 0 && a.n == 1);
    CHECK(nh_outq_copy2(&b, "only-a", 6, NULL, 0) == 0 && queued_equals(&b, "only-a"));
    CHECK(nh_outq_copy2(&b, NULL, 0, "+b", 2) == 0 && queued_equals(&b, "only-a+b"));
    /* big: one block holding both parts */
    static char big[NH_CHUNK_SIZE];
    memset(big, 'x', sizeof big);
    nh_outq_t c;
    nh_outq_init(&c, &pool);
    CHECK(nh_outq_copy2(&c, "HDR", 3, big, sizeof big) == 0);
    CHECK(c.n == 1 && c.bytes == 3 + sizeof big && c.segs[c.head].buf != pool.arena);
    CHECK(memcmp(c.segs[c.head].buf->data, "HDRxx", 5) == 0);
    /* detached: both parts in the queue's own chunk */
    CHECK(nh_outq_detach(&b) == 0 && b.detached);
    CHECK(nh_outq_copy2(&b, "|d1", 3, "|d2", 3) == 0);
    CHECK(queued_equals(&b, "only-a+b|d1|d2"));
    /* no pool */
    nh_outq_t d;
    nh_outq_init(&d, NULL);
    CHECK(nh_outq_copy2(&d, "no ", 3, "pool", 4) == 0 && d.n == 1 && queued_equals(&d, "no pool"));
    nh_outq_free(&a);
    nh_outq_free(&b);
    nh_outq_free(&c);
    nh_outq_free(&d);
    nh_chunk_pool_free(&pool);
}

/* A detached (stalled) queue copies small shared segments into its own chunk (a broadcast's
 * packets would otherwise each pin a buffer and a segment) and keeps big ones by reference. */
static void detaching_copies_small_shared_bytes(void) {
    nh_chunk_pool_t pool;
    CHECK(nh_chunk_pool_init(&pool, 8) == 0);
    nh_outq_t q;
    nh_outq_init(&q, &pool);
    nh_buf_t *small = nh_buf_new(8), *big = nh_buf_new(1000);
    memcpy(small->data, "packet!!", 8);
    small->len = 8;
    memset(big->data, 'B', 1000);
    big->len = 1000;
    for (int i = 0; i < 3; i++)
        CHECK(nh_outq_share(&q, small, 0, 8) == 0);
    CHECK(nh_outq_share(&q, big, 0, 1000) == 0);
    /* one reference, then the next ones are gathered (copies in the queue's own block) */
    CHECK(small->refs == 1 + NH_GATHER_SHARED_AFTER && big->refs == 2 && q.own != NULL);
    CHECK(nh_outq_detach(&q) == 0);
    CHECK(small->refs == 1 && big->refs == 2); /* small copied, big still referenced */
    CHECK(q.bytes == 3 * 8 + 1000 && q.n == 2);
    nh_outq_free(&q);
    nh_buf_unref(small);
    nh_buf_unref(big);
    nh_chunk_pool_free(&pool);
}

/* A broadcast's small packet ("packet!!"), and a message just too big to gather (all 'B') */
static nh_buf_t *packet_buf(void) {
    nh_buf_t *b = nh_buf_new(8);
    if (!b) abort();
    memcpy(b->data, "packet!!", 8);
    b->len = 8;
    return b;
}

static nh_buf_t *big_buf(void) {
    nh_buf_t *b = nh_buf_new(NH_GATHER_MAX + 1);
    if (!b) abort();
    memset(b->data, 'B', NH_GATHER_MAX + 1);
    b->len = NH_GATHER_MAX + 1;
    return b;
}

/* A queue with a backlog (a broadcast's pushes piling up between two writes) copies small
 * messages into a block of its own, one segment for all of them, in order with everything else
 * it holds, and drops the block when it is empty. */
static void gathering_small_messages_makes_one_segment(void) {
    nh_chunk_pool_t pool;
    CHECK(nh_chunk_pool_init(&pool, 8) == 0);
    nh_outq_t q, other;
    nh_outq_init(&q, &pool);
    nh_outq_init(&other, &pool);
    nh_buf_t *pkt = packet_buf(), *big = big_buf();
    static char want[4096];
    size_t wl = 0;
    for (int i = 0; i < 20; i++) { /* another queue's bytes in between, as a broadcast's are */
        CHECK(nh_outq_share(&q, pkt, 0, 8) == 0);
        CHECK(nh_outq_copy(&other, "zz", 2) == 0);
        memcpy(want + wl, "packet!!", 8);
        wl += 8;
    }
    CHECK(nh_outq_copy(&q, "tail", 4) == 0); /* a copy joins the gathered bytes too */
    memcpy(want + wl, "tail", 4);
    wl += 4;
    want[wl] = '\0';
    CHECK(q.n == NH_GATHER_SHARED_AFTER + 1 && pkt->refs == 1 + NH_GATHER_SHARED_AFTER);
    CHECK(queued_equals(&q, want));
    /* a big message is still referenced, and what follows it is gathered after it */
    CHECK(nh_outq_share(&q, big, 0, NH_GATHER_MAX + 1) == 0 && big->refs == 2);
    CHECK(nh_outq_share(&q, pkt, 0, 8) == 0);
    CHECK(q.n == NH_GATHER_SHARED_AFTER + 3);
    memset(want + wl, 'B', NH_GATHER_MAX + 1);
    wl += NH_GATHER_MAX + 1;
    memcpy(want + wl, "packet!!", 8);
    wl += 8;
    want[wl] = '\0';
    CHECK(queued_equals(&q, want));
    /* past a block's end: the next block, in order */
    for (int i = 0; i < 200; i++) {
        CHECK(nh_outq_share(&q, pkt, 0, 8) == 0);
        memcpy(want + wl, "packet!!", 8);
        wl += 8;
    }
    want[wl] = '\0';
    CHECK(queued_equals(&q, want));
    CHECK(q.bytes == wl);
    /* written: the blocks go, the next message takes the arena again */
    nh_outq_consume(&q, q.bytes);
    CHECK(q.own == NULL && q.n == 0 && pkt->refs == 1 && big->refs == 1);
    CHECK(pool.ngather_blocks == 4); /* 1,604 bytes took four blocks: kept for the next burst */
    for (int i = 0; i < 3; i++)
        CHECK(nh_outq_share(&q, pkt, 0, 8) == 0);
    CHECK(pool.ngather_blocks == 3 && q.own != NULL);
    nh_chunk_pool_shrink(&pool); /* under NH_GATHER_KEEP: all kept */
    CHECK(pool.ngather_blocks == 3);
    nh_outq_consume(&q, q.bytes);
    CHECK(nh_outq_copy(&q, "x", 1) == 0 && q.segs[q.head].buf == pool.arena);
    nh_outq_free(&q);
    nh_outq_free(&other);
    nh_buf_unref(pkt);
    nh_buf_unref(big);
    nh_chunk_pool_free(&pool);
}

/* nh_outq_gather, the inline append a broadcast's push tries first: only when the queue's own
 * block ends its last segment and has room; otherwise nothing changes and the caller goes the
 * long way (which then also keeps the bytes in order). */
static void the_inline_gather_appends_only_where_it_may(void) {
    nh_chunk_pool_t pool;
    CHECK(nh_chunk_pool_init(&pool, 8) == 0);
    nh_outq_t q;
    nh_outq_init(&q, &pool);
    nh_buf_t *pkt = packet_buf(), *big = big_buf();
    CHECK(nh_outq_gather(&q, "ab", 2) == 0 && q.n == 0 && q.bytes == 0); /* empty: no block */
    CHECK(nh_outq_share(&q, pkt, 0, 8) == 0);
    CHECK(nh_outq_gather(&q, "ab", 2) == 0 && q.n == 1 && q.bytes == 8); /* a reference last */
    CHECK(nh_outq_share(&q, pkt, 0, 8) == 0 && q.own != NULL);           /* the block starts */
    CHECK(nh_outq_gather(&q, "ab", 2) == 1 && q.n == 2 && q.bytes == 18);
    char over[NH_GATHER_MAX + 1] = {0};
    CHECK(nh_outq_gather(&q, over, sizeof over) == 0 && q.bytes == 18); /* too big to gather */
    CHECK(nh_outq_share(&q, big, 0, NH_GATHER_MAX + 1) == 0);
    CHECK(nh_outq_gather(&q, "cd", 2) == 0 && q.n == 3);  /* the big reference ends the queue */
    CHECK(nh_outq_share(&q, pkt, 0, 8) == 0 && q.n == 4); /* the long way: the block again */
    CHECK(nh_outq_gather(&q, "cd", 2) == 1 && q.n == 4);
    for (int i = 0; i < 100 && q.own->cap - q.own->len >= 8; i++) /* fill the block */
        CHECK(nh_outq_gather(&q, "packet!!", 8) == 1);
    CHECK(q.own->cap - q.own->len < 8);
    size_t before = q.bytes;
    CHECK(nh_outq_gather(&q, "packet!!", 8) == 0 && q.bytes == before); /* no room: long way */
    CHECK(nh_outq_share(&q, pkt, 0, 8) == 0 && q.bytes == before + 8);
    char want[1024] = "packet!!packet!!ab";
    size_t wl = 18;
    memset(want + wl, 'B', NH_GATHER_MAX + 1);
    wl += NH_GATHER_MAX + 1;
    memcpy(want + wl, "packet!!cd", 10);
    wl += 10;
    while (wl < q.bytes) {
        memcpy(want + wl, "packet!!", 8);
        wl += 8;
    }
    want[wl] = '\0';
    CHECK(queued_equals(&q, want));
    /* cut inside the block (bytes in flight kept, the rest dropped): the block's end is no
     * longer the last segment's, so the next bytes go after what was dropped, as a new segment */
    nh_outq_consume(&q, q.bytes);
    CHECK(nh_outq_share(&q, pkt, 0, 8) == 0 && nh_outq_share(&q, pkt, 0, 8) == 0);
    CHECK(nh_outq_gather(&q, "ab", 2) == 1 && q.n == 2);
    nh_outq_truncate(&q, 12);
    CHECK(nh_outq_gather(&q, "cd", 2) == 0 && q.n == 2 && q.bytes == 12);
    CHECK(nh_outq_share(&q, pkt, 0, 8) == 0 && q.n == 3 &&
          queued_equals(&q, "packet!!packpacket!!"));
    /* a detached queue's block is a chunk for its stalled bytes: never the inline way */
    nh_outq_consume(&q, q.bytes);
    CHECK(nh_outq_copy(&q, "x", 1) == 0 && nh_outq_detach(&q) == 0);
    CHECK(nh_outq_copy(&q, "y", 1) == 0 && q.own != NULL);
    CHECK(nh_outq_gather(&q, "z", 1) == 0 && q.bytes == 2);
    nh_outq_free(&q);
    nh_buf_unref(pkt);
    nh_buf_unref(big);
    nh_chunk_pool_free(&pool);
}

int main(void) {
    a_detached_queue_pins_only_its_own_bytes();
    truncate_keeps_what_is_in_flight();
    interleaved_queues_keep_their_own_bytes_in_order();
    arena_is_reused_once_everything_is_written();
    bytes_in_flight_stay_valid_while_the_arena_moves_on();
    big_copies_and_shared_buffers_are_segments_of_their_own();
    closing_a_queue_with_bytes_left_releases_them();
    a_queue_without_a_pool_still_works();
    drained_segment_arrays_are_reused_through_the_pool();
    two_part_copies_land_as_one();
    detaching_copies_small_shared_bytes();
    gathering_small_messages_makes_one_segment();
    the_inline_gather_appends_only_where_it_may();
    return check_done();
}
