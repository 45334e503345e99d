#include "buffer.h"

#include <stdlib.h>
#include <string.h>

nh_buf_t *nh_buf_new(size_t cap) {
    nh_buf_t *b = malloc(sizeof *b + cap);
    if (!b) return NULL;
    b->refs = 1;
    b->len = 0;
    b->cap = (uint32_t)cap;
    b->arena = 0;
    return b;
}

void nh_buf_unref(nh_buf_t *b) {
    if (b && --b->refs == 0) free(b);
}

int nh_chunk_pool_init(nh_chunk_pool_t *p, uint32_t max) {
    p->free = calloc(max ? max : 1, sizeof *p->free);
    p->n = 0;
    p->max = max;
    p->arena = NULL;
    p->seg_arrays = NULL;
    p->nseg_arrays = 0;
    p->gather_blocks = NULL;
    p->ngather_blocks = 0;
    return p->free ? 0 : UV_ENOMEM;
}

void nh_chunk_pool_free(nh_chunk_pool_t *p) {
    for (uint32_t i = 0; i < p->n; i++)
        free(p->free[i]);
    free(p->free);
    p->free = NULL;
    p->n = 0;
    nh_buf_unref(p->arena); /* queues still holding it free it with their last segment */
    p->arena = NULL;
    while (p->seg_arrays) {
        void *a = p->seg_arrays;
        memcpy(&p->seg_arrays, a, sizeof(void *));
        free(a);
    }
    p->nseg_arrays = 0;
    while (p->gather_blocks) {
        void *b = p->gather_blocks;
        memcpy(&p->gather_blocks, b, sizeof(void *));
        free(b);
    }
    p->ngather_blocks = 0;
}

void nh_chunk_pool_shrink(nh_chunk_pool_t *p) {
    while (p->nseg_arrays > NH_SEG_KEEP) {
        void *a = p->seg_arrays;
        memcpy(&p->seg_arrays, a, sizeof(void *));
        free(a);
        p->nseg_arrays--;
    }
    while (p->ngather_blocks > NH_GATHER_KEEP) {
        void *b = p->gather_blocks;
        memcpy(&p->gather_blocks, b, sizeof(void *));
        free(b);
        p->ngather_blocks--;
    }
}

/* A drained queue's segment array: kept by the pool (while it lives: p->free is cleared when it
 * is freed) if it is of the first size and the cache has room, else freed. */
static void segs_release(nh_chunk_pool_t *p, nh_outseg_t *segs, uint32_t cap) {
    if (p && p->free && cap == NH_SEG_FIRST && p->nseg_arrays < NH_SEG_CACHE) {
        memcpy(segs, &p->seg_arrays, sizeof(void *));
        p->seg_arrays = segs;
        p->nseg_arrays++;
        return;
    }
    free(segs);
}

static nh_buf_t *chunk_get(nh_chunk_pool_t *p) {
    if (p && p->n) {
        nh_buf_t *b = p->free[--p->n];
        b->refs = 1;
        b->len = 0;
        b->arena = 0;
        return b;
    }
    return nh_buf_new(NH_CHUNK_SIZE);
}

static nh_buf_t *gather_block_get(nh_chunk_pool_t *p) {
    if (!p->gather_blocks) return nh_buf_new(NH_GATHER_BLOCK);
    nh_buf_t *b = p->gather_blocks;
    memcpy(&p->gather_blocks, b, sizeof(void *));
    p->ngather_blocks--;
    b->refs = 1;
    b->len = 0;
    b->cap = NH_GATHER_BLOCK;
    b->arena = 0;
    return b;
}

/* Drops one reference; a chunk nobody references any more goes back to the pool's free list
 * (while it has room) instead of to free(). */
static void buf_release(nh_chunk_pool_t *p, nh_buf_t *b) {
    if (--b->refs) return;
    if (p && p->free && p->n < p->max && b->cap == NH_CHUNK_SIZE) {
        p->free[p->n++] = b;
        return;
    }
    if (p && p->free && p->ngather_blocks < NH_GATHER_CACHE && b->cap == NH_GATHER_BLOCK) {
        memcpy(b, &p->gather_blocks, sizeof(void *));
        p->gather_blocks = b;
        p->ngather_blocks++;
        return;
    }
    free(b);
}

void nh_outq_init(nh_outq_t *q, nh_chunk_pool_t *pool) {
    memset(q, 0, sizeof *q);
    q->pool = pool;
}

static void drop_own(nh_outq_t *q) {
    if (q->own) buf_release(q->pool, q->own);
    q->own = NULL;
    q->detached = 0;
}

void nh_outq_free(nh_outq_t *q) {
    for (uint32_t i = 0; i < q->n; i++) {
        buf_release(q->pool, q->segs[q->head + i].buf);
    }
    drop_own(q);
    if (q->segs) segs_release(q->pool, q->segs, q->cap);
    nh_chunk_pool_t *pool = q->pool;
    memset(q, 0, sizeof *q);
    q->pool = pool;
}

static int seg_push(nh_outq_t *q, nh_buf_t *b, size_t off, size_t len) {
    if (q->head + q->n == q->cap) {
        if (q->head > 0) {
            memmove(q->segs, q->segs + q->head, q->n * sizeof *q->segs);
            q->head = 0;
        } else if (!q->cap && q->pool && q->pool->seg_arrays) {
            nh_chunk_pool_t *p = q->pool;
            q->segs = p->seg_arrays;
            memcpy(&p->seg_arrays, q->segs, sizeof(void *));
            p->nseg_arrays--;
            q->cap = NH_SEG_FIRST;
        } else {
            /* x4: a queue past its first array is one that pushes pile up in between writes
             * (a broadcast's members, several broadcasts a turn); x2 made it three reallocs a
             * write at 16 pushes a turn, ~90 instructions a push (docs/benchmarks.md) */
            uint32_t cap = q->cap ? q->cap * 4 : NH_SEG_FIRST;
            nh_outseg_t *s = realloc(q->segs, cap * sizeof *s);
            if (!s) return UV_ENOMEM;
            q->segs = s;
            q->cap = cap;
        }
    }
    q->segs[q->head + q->n++] = (nh_outseg_t){nh_buf_ref(b), (uint32_t)off, (uint32_t)len};
    q->bytes += len;
    return 0;
}

/* A block of its own for one copy of two parts (big messages, or no pool). */
static int copy_own(nh_outq_t *q, const void *a_data, size_t a_len, const void *b_data,
                    size_t b_len) {
    size_t len = a_len + b_len;
    nh_buf_t *b = nh_buf_new(len);
    if (!b) return UV_ENOMEM;
    if (a_len) memcpy(b->data, a_data, a_len);
    if (b_len) memcpy(b->data + a_len, b_data, b_len);
    b->len = (uint32_t)len;
    int r = nh_outq_share(q, b, 0, len);
    nh_buf_unref(b);
    return r;
}

/* Appends to the queue's own block, taking a fresh one when it is full; bytes may straddle two
 * blocks. The block is a pool chunk for a detached queue, a small one for a gathering queue
 * (gathering()). */
static int copy_own_block(nh_outq_t *q, const void *data, size_t len) {
    const uint8_t *p = data;
    while (len) {
        nh_buf_t *o = q->own;
        if (o && o->refs == 1) o->len = 0; /* nothing queued points into it: start over */
        if (!o || o->len == o->cap) {
            nh_buf_t *c = q->detached ? chunk_get(q->pool) : gather_block_get(q->pool);
            if (!c) return UV_ENOMEM;
            if (o) buf_release(q->pool, o);
            q->own = o = c;
        }
        size_t n = o->cap - o->len;
        if (n > len) n = len;
        uint32_t at = o->len;
        memcpy(o->data + at, p, n);
        o->len += (uint32_t)n;
        nh_outseg_t *last = q->n ? &q->segs[q->head + q->n - 1] : NULL;
        if (last && last->buf == o && last->off + last->len == at) {
            last->len += (uint32_t)n;
            q->bytes += n;
        } else if (seg_push(q, o, at, n) != 0) {
            o->len = at;
            return UV_ENOMEM;
        }
        p += n;
        len -= n;
    }
    return 0;
}

/* Small messages to a queue that already holds `after` segments (NH_GATHER_AFTER for copies,
 * NH_GATHER_SHARED_AFTER for shared messages: buffer.h), or its own block (a burst piling up
 * between two writes: a broadcast's pushes, several broadcasts a turn) are copied into a small
 * block of the queue's own, each copy extending one segment, rather than each taking a segment of
 * its own (a reference to the broadcast's packet, or a piece of the arena that other
 * connections' bytes interleave with): per push, a copy of a few dozen bytes instead of a
 * segment to add, list for the system call and release, and the segment array's growth; and one
 * iovec for the kernel where there were dozens (docs/benchmarks.md). Once started, a burst goes on
 * there until the queue is empty. */
static int gathering(const nh_outq_t *q, size_t len, uint32_t after) {
    return q->pool && len <= NH_GATHER_MAX && (q->own || q->n >= after);
}

int nh_outq_copy(nh_outq_t *q, const void *data, size_t len) {
    return nh_outq_copy2(q, data, len, NULL, 0);
}

int nh_outq_copy2(nh_outq_t *q, const void *a_data, size_t a_len, const void *b_data,
                  size_t b_len) {
    size_t len = a_len + b_len;
    if (len == 0) return 0;
    nh_chunk_pool_t *p = q->pool;
    /* Big messages get a block of their own rather than crowding the arena. */
    if (!p || len > NH_CHUNK_SIZE / 2) return copy_own(q, a_data, a_len, b_data, b_len);
    if (q->detached || gathering(q, len, NH_GATHER_AFTER)) {
        int r = copy_own_block(q, a_data, a_len);
        return r ? r : copy_own_block(q, b_data, b_len);
    }
    nh_buf_t *a = p->arena;
    if (a && a->refs == 1) a->len = 0; /* nothing queued anywhere points into it: start over */
    if (!a || a->cap - a->len < len) {
        nh_buf_t *c = chunk_get(p);
        if (!c) return UV_ENOMEM;
        if (a) buf_release(p, a); /* its segments keep it until they are written */
        p->arena = a = c;
        a->arena = 1;
    }
    uint32_t at = a->len;
    if (a_len) memcpy(a->data + at, a_data, a_len);
    if (b_len) memcpy(a->data + at + a_len, b_data, b_len);
    a->len += (uint32_t)len;
    if (q->n) {
        nh_outseg_t *last = &q->segs[q->head + q->n - 1];
        if (last->buf == a && last->off + last->len == at) {
            last->len += (uint32_t)len;
            q->bytes += len;
            return 0;
        }
    }
    return seg_push(q, a, at, len);
}

int nh_outq_share(nh_outq_t *q, nh_buf_t *b, size_t off, size_t len) {
    if (len == 0) return 0;
    if (gathering(q, len, NH_GATHER_SHARED_AFTER)) {
        if (nh_outq_gather(q, b->data + off, len)) return 0;
        return copy_own_block(q, b->data + off, len);
    }
    return seg_push(q, b, off, len);
}

#define NH_DETACH_COPY_MAX 256

int nh_outq_detach(nh_outq_t *q) {
    if (q->detached || !q->pool) return 0; /* nothing of the arena was queued since */
    nh_outq_t d;
    nh_outq_init(&d, q->pool);
    d.detached = 1;
    for (uint32_t i = 0; i < q->n; i++) {
        const nh_outseg_t *s = &q->segs[q->head + i];
        /* arena bytes, and small shared ones (a broadcast's packets: a segment and a whole
         * buffer each if kept by reference), are copied into the queue's own chunks */
        int r = s->buf->arena || s->len < NH_DETACH_COPY_MAX
                    ? copy_own_block(&d, s->buf->data + s->off, s->len)
                    : seg_push(&d, s->buf, s->off, s->len);
        if (r) {
            nh_outq_free(&d);
            return r;
        }
    }
    nh_outq_free(q); /* drops the arena references (the moved bytes have their copies) */
    *q = d;
    return 0;
}

unsigned nh_outq_iov(const nh_outq_t *q, size_t skip, uv_buf_t *iov, unsigned max) {
    unsigned k = 0;
    for (uint32_t i = 0; i < q->n && k < max; i++) {
        const nh_outseg_t *s = &q->segs[q->head + i];
        if (skip >= s->len) {
            skip -= s->len;
            continue;
        }
        iov[k++] = uv_buf_init((char *)s->buf->data + s->off + skip, (unsigned)(s->len - skip));
        skip = 0;
    }
    return k;
}

void nh_outq_consume(nh_outq_t *q, size_t n) {
    q->bytes -= n;
    while (n && q->n) {
        nh_outseg_t *s = &q->segs[q->head];
        if (n < s->len) {
            s->off += (uint32_t)n;
            s->len -= (uint32_t)n;
            return;
        }
        n -= s->len;
        buf_release(q->pool, s->buf);
        q->head++;
        q->n--;
    }
    if (q->n == 0) {
        q->head = 0;
        drop_own(q);  /* drained: back to the shared arena */
        if (q->cap) { /* an idle connection keeps no segment array (thousands of them) */
            segs_release(q->pool, q->segs, q->cap);
            q->segs = NULL;
            q->cap = 0;
        }
    }
}

void nh_outq_truncate(nh_outq_t *q, size_t keep) {
    if (keep >= q->bytes) return;
    if (keep == 0) {
        nh_outq_consume(q, q->bytes);
        return;
    }
    size_t at = 0;
    uint32_t i = 0;
    while (i < q->n && at + q->segs[q->head + i].len <= keep)
        at += q->segs[q->head + i++].len;
    if (at < keep) { /* segment i straddles the cut: keep its front */
        q->segs[q->head + i].len = (uint32_t)(keep - at);
        i++;
    }
    for (uint32_t j = i; j < q->n; j++)
        buf_release(q->pool, q->segs[q->head + j].buf);
    q->n = i;
    q->bytes = keep;
}
