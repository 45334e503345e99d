/* lua_alloc — see lua_alloc.h. */
#include "lua_alloc.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define CLASS_SHIFT 4 /* 16-byte classes (LuaJIT needs 8-byte alignment; 16 suits any C type) */
#define NCLASSES (NH_LALLOC_SMALL >> CLASS_SHIFT)

/* A slab's first 16 bytes link it to the previous one (kept 16 so that blocks stay aligned). */
typedef struct slab {
    struct slab *next;
    void *pad;
} slab_t;

/* A big block's header: every big block is on the allocator's list, so that what Lua holds stays
 * reachable from it even when the process exits without lua_close (watchdog_exit): LuaJIT keeps
 * some buffers only through pointers biased outside them, which valgrind would report as lost.
 * 16 bytes, so the block after it stays aligned. */
typedef struct big {
    struct big *prev, *next;
} big_t;

typedef struct lalloc {
    void *free[NCLASSES + 1]; /* class c: blocks of c * 16 bytes, linked through their first
                                 bytes */
    char *cur, *end;          /* what is left of the newest slab */
    slab_t *slabs;
    big_t bigs; /* the list's head (a ring) */
    size_t slab_bytes, small_bytes;
} lalloc_t;

static size_t class_of(size_t n) {
    return (n + (1u << CLASS_SHIFT) - 1) >> CLASS_SHIFT;
}

static void push_free(lalloc_t *a, size_t c, void *p) {
    memcpy(p, &a->free[c], sizeof(void *));
    a->free[c] = p;
}

static void *small_alloc(lalloc_t *a, size_t c) {
    void *p = a->free[c];
    size_t size = c << CLASS_SHIFT;
    if (p) {
        memcpy(&a->free[c], p, sizeof(void *));
    } else {
        if ((size_t)(a->end - a->cur) < size) {
            slab_t *s = malloc(NH_LALLOC_SLAB);
            if (!s) return NULL;
            /* the old slab's tail (a multiple of 16, under NH_LALLOC_SMALL) is one free block */
            size_t left = (size_t)(a->end - a->cur);
            if (left) push_free(a, left >> CLASS_SHIFT, a->cur);
            s->next = a->slabs;
            a->slabs = s;
            a->slab_bytes += NH_LALLOC_SLAB;
            a->cur = (char *)(s + 1);
            a->end = (char *)s + NH_LALLOC_SLAB;
        }
        p = a->cur;
        a->cur += size;
    }
    a->small_bytes += size;
    return p;
}

static void big_link(lalloc_t *a, big_t *b) {
    b->prev = &a->bigs;
    b->next = a->bigs.next;
    b->next->prev = b;
    a->bigs.next = b;
}

static void big_unlink(big_t *b) {
    b->prev->next = b->next;
    b->next->prev = b->prev;
}

static void *big_alloc(lalloc_t *a, size_t n) {
    if (n > SIZE_MAX - sizeof(big_t)) return NULL;
    big_t *b = malloc(sizeof *b + n);
    if (!b) return NULL;
    big_link(a, b);
    return b + 1;
}

static void *big_realloc(lalloc_t *a, void *p, size_t n) {
    if (n > SIZE_MAX - sizeof(big_t)) return NULL;
    big_t *b = (big_t *)p - 1;
    big_unlink(b);
    big_t *nb = realloc(b, sizeof *nb + n);
    if (!nb) { /* the old block is still Lua's */
        big_link(a, b);
        return NULL;
    }
    big_link(a, nb);
    return nb + 1;
}

static void *acquire(lalloc_t *a, size_t n) {
    return n <= NH_LALLOC_SMALL ? small_alloc(a, class_of(n)) : big_alloc(a, n);
}

static void release(lalloc_t *a, void *p, size_t n) {
    if (n > NH_LALLOC_SMALL) {
        big_t *b = (big_t *)p - 1;
        big_unlink(b);
        free(b);
        return;
    }
    size_t c = class_of(n);
    a->small_bytes -= c << CLASS_SHIFT;
    push_free(a, c, p);
}

/* Everything but the two common cases below: resizes, big blocks, an empty free list. Kept out
 * of line so that lalloc's fast paths save no registers. */
__attribute__((noinline)) static void *lalloc_slow(lalloc_t *a, void *ptr, size_t osize,
                                                   size_t nsize) {
    if (nsize == 0) {
        if (ptr) release(a, ptr, osize);
        return NULL;
    }
    if (!ptr) return acquire(a, nsize);
    if (osize <= NH_LALLOC_SMALL && nsize <= NH_LALLOC_SMALL) {
        if (class_of(osize) == class_of(nsize)) return ptr;
    } else if (osize > NH_LALLOC_SMALL && nsize > NH_LALLOC_SMALL) {
        return big_realloc(a, ptr, nsize);
    }
    void *p = acquire(a, nsize);
    if (!p) {
        if (nsize > osize) return NULL; /* LuaJIT raises its memory error; ptr stays valid */
        /* A shrink must not fail (LuaJIT shrinks stacks and buffers in the GC): the block stays
         * where it is, counted at its new size. Its later free, with that size, puts it on the
         * list of a class it is at least as big as (a big block stays on the list of bigs
         * until the state closes). */
        if (osize <= NH_LALLOC_SMALL) a->small_bytes -= class_of(osize) << CLASS_SHIFT;
        a->small_bytes += class_of(nsize) << CLASS_SHIFT;
        return ptr;
    }
    memcpy(p, ptr, osize < nsize ? osize : nsize);
    release(a, ptr, osize);
    return p;
}

/* lua_Alloc: osize is the size the block was given (0 with ptr NULL). A small block freed, or
 * taken from its class's free list, in a few instructions; the rest in lalloc_slow. */
static void *lalloc(void *ud, void *ptr, size_t osize, size_t nsize) {
    lalloc_t *a = ud;
    if (nsize == 0) {
        if (ptr && osize <= NH_LALLOC_SMALL) {
            size_t c = class_of(osize);
            a->small_bytes -= c << CLASS_SHIFT;
            push_free(a, c, ptr);
            return NULL;
        }
    } else if (!ptr && nsize <= NH_LALLOC_SMALL) {
        size_t c = class_of(nsize);
        void *p = a->free[c];
        if (p) {
            memcpy(&a->free[c], p, sizeof(void *));
            a->small_bytes += c << CLASS_SHIFT;
            return p;
        }
    }
    return lalloc_slow(a, ptr, osize, nsize);
}

static int panic(lua_State *L) {
    const char *msg = lua_tostring(L, -1);
    fprintf(stderr, "PANIC: unprotected error in call to Lua API (%s)\n",
            msg ? msg : "error object is not a string");
    fflush(stderr);
    return 0;
}

lua_State *nh_lua_new_state(void) {
    lalloc_t *a = calloc(1, sizeof *a);
    if (!a) return NULL;
    a->bigs.prev = a->bigs.next = &a->bigs;
    lua_State *L = lua_newstate(lalloc, a);
    if (!L) {
        free(a);
        return NULL;
    }
    lua_atpanic(L, panic);
    return L;
}

static lalloc_t *ours(lua_State *L) {
    void *ud = NULL;
    return lua_getallocf(L, &ud) == lalloc ? ud : NULL;
}

void nh_lua_close_state(lua_State *L) {
    lalloc_t *a = ours(L);
    lua_close(L);
    if (!a) return;
    while (a->bigs.next != &a->bigs) { /* none: lua_close frees every block; in case */
        big_t *b = a->bigs.next;
        big_unlink(b);
        free(b);
    }
    while (a->slabs) {
        slab_t *next = a->slabs->next;
        free(a->slabs);
        a->slabs = next;
    }
    free(a);
}

nh_lua_alloc_stats_t nh_lua_alloc_stats(lua_State *L) {
    lalloc_t *a = ours(L);
    nh_lua_alloc_stats_t st = {0, 0};
    if (a) {
        st.slab_bytes = a->slab_bytes;
        st.small_bytes = a->small_bytes;
    }
    return st;
}
