#include "buffer.h"

#include <stdlib.h>
#include <string.h>

nh_buf_t *nh_buf_new(size_t cap) {
    nh_buf_t *b = malloc(sizeof *b + cap);
    if (!b) return NULL;
    b->refs = 1;
    b->len = 0;
    b->cap = (uint32_t)cap;
    return b;
}

void nh_buf_unref(nh_buf_t *b) {
    if (b && --b->refs == 0) free(b);
}

int nh_chunk_pool_init(nh_chunk_pool_t *p, uint32_t max) {
    p->free = calloc(max ? max : 1, sizeof *p->free);
    p->n = 0;
    p->max = max;
    return p->free ? 0 : UV_ENOMEM;
}

void nh_chunk_pool_free(nh_chunk_pool_t *p) {
    for (uint32_t i = 0; i < p->n; i++)
        free(p->free[i]);
    free(p->free);
    p->free = NULL;
    p->n = 0;
}

static nh_buf_t *chunk_get(nh_chunk_pool_t *p) {
    if (p && p->n) {
        nh_buf_t *b = p->free[--p->n];
        b->refs = 1;
        b->len = 0;
        return b;
    }
    return nh_buf_new(NH_CHUNK_SIZE);
}

/* Drops the queue's own reference to a chunk; a chunk nobody else references goes back to the
 * pool instead of to free(). */
static void chunk_release(nh_chunk_pool_t *p, nh_buf_t *b) {
    if (b->refs == 1 && p && p->n < p->max && b->cap == NH_CHUNK_SIZE) {
        p->free[p->n++] = b;
        return;
    }
    nh_buf_unref(b);
}

void nh_outq_init(nh_outq_t *q, nh_chunk_pool_t *pool) {
    memset(q, 0, sizeof *q);
    q->pool = pool;
}

void nh_outq_free(nh_outq_t *q) {
    for (uint32_t i = 0; i < q->n; i++) {
        nh_buf_unref(q->segs[q->head + i].buf);
    }
    if (q->tail) chunk_release(q->pool, q->tail);
    free(q->segs);
    memset(q, 0, sizeof *q);
}

static int seg_push(nh_outq_t *q, nh_buf_t *b, size_t off, size_t len) {
    if (q->head + q->n == q->cap) {
        if (q->head > 0) {
            memmove(q->segs, q->segs + q->head, q->n * sizeof *q->segs);
            q->head = 0;
        } else {
            uint32_t cap = q->cap ? q->cap * 2 : 4;
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

int nh_outq_copy(nh_outq_t *q, const void *data, size_t len) {
    if (len == 0) return 0;
    if (len > NH_CHUNK_SIZE / 2) {
        /* Big messages get a block of their own rather than wasting most of a chunk. */
        nh_buf_t *b = nh_buf_new(len);
        if (!b) return UV_ENOMEM;
        memcpy(b->data, data, len);
        b->len = (uint32_t)len;
        int r = nh_outq_share(q, b, 0, len);
        nh_buf_unref(b);
        return r;
    }
    if (!q->tail || q->tail->cap - q->tail->len < len) {
        nh_buf_t *c = chunk_get(q->pool);
        if (!c) return UV_ENOMEM;
        if (q->tail) chunk_release(q->pool, q->tail);
        q->tail = c;
    }
    nh_buf_t *t = q->tail;
    uint32_t at = t->len;
    memcpy(t->data + at, data, len);
    t->len += (uint32_t)len;
    if (q->n) {
        nh_outseg_t *last = &q->segs[q->head + q->n - 1];
        if (last->buf == t && last->off + last->len == at) {
            last->len += (uint32_t)len;
            q->bytes += len;
            return 0;
        }
    }
    return seg_push(q, t, at, len);
}

int nh_outq_share(nh_outq_t *q, nh_buf_t *b, size_t off, size_t len) {
    if (len == 0) return 0;
    return seg_push(q, b, off, len);
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
        nh_buf_unref(s->buf); /* never the last reference to the tail: the queue holds one */
        q->head++;
        q->n--;
    }
    if (q->n == 0) {
        q->head = 0;
        /* Nothing left to write: give the chunk back so an idle connection holds none. */
        if (q->tail) {
            chunk_release(q->pool, q->tail);
            q->tail = NULL;
        }
        if (q->cap > 16) {
            free(q->segs);
            q->segs = NULL;
            q->cap = 0;
        }
    }
}
