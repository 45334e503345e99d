/* lua_strcache — short Lua strings by their bytes, for the strings every message brings again:
 * its route, its payload's object keys.
 *
 * lua_pushlstring interns: it hashes the bytes and probes LuaJIT's string table, ~100-130
 * instructions for a route or a one-letter key (docs/benchmarks.md). A string this cache has seen
 * is pushed with a cheaper hash, a compare of two words (and, over 16 bytes, of the rest) and one
 * lua_rawgeti. The value pushed is the same interned string lua_pushlstring would push: Lua code
 * cannot tell.
 *
 * NH_STRCACHE_SIZE entries, direct-mapped: a miss interns as before and takes the entry over, so
 * a client sending ever new keys costs a registry store per key and no memory beyond the entries.
 * Each entry keeps its string alive through a registry reference, released by nh_strcache_free. */
#ifndef NH_LUA_STRCACHE_H
#define NH_LUA_STRCACHE_H
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <lua.h>

#define NH_STRCACHE_BITS 8
#define NH_STRCACHE_SIZE (1 << NH_STRCACHE_BITS)
#define NH_STRCACHE_MAX 31 /* longer strings are pushed as lua_pushlstring pushes them */

/* A string of len bytes: its first and last (up to) 8 bytes in a and b, the bytes between them
 * (of a string over 16 bytes) in middle. */
typedef struct nh_strcache_entry {
    uint64_t a, b;
    int ref; /* registry reference of the string; 0: empty */
    unsigned char len;
    char middle[NH_STRCACHE_MAX - 16];
} nh_strcache_entry_t;

typedef struct nh_strcache {
    int refs; /* entries holding a string (their registry references are not leaks) */
    nh_strcache_entry_t e[NH_STRCACHE_SIZE];
} nh_strcache_t;

void nh_strcache_init(nh_strcache_t *c);
/* Releases the entries' registry references (L: the state they were taken in). */
void nh_strcache_free(nh_strcache_t *c, lua_State *L);
/* lua_pushlstring(L, s, len), through the cache; c may be NULL (then exactly lua_pushlstring). L
 * is any thread of the state the cache belongs to. Returns the string's entry (0 ..
 * NH_STRCACHE_SIZE - 1: equal strings have the same one, a hash of their bytes), or -1 when it did
 * not go through the cache (c NULL, or longer than NH_STRCACHE_MAX).
 * Inline for its usual case, a string of up to 16 bytes the cache holds (a route, a key): as a
 * call it saved and restored five registers for the rest: ~30 instructions a call, and a
 * request makes two (docs/benchmarks.md, thirteenth pass). */
static inline int nh_strcache_push(nh_strcache_t *c, lua_State *L, const char *s, size_t len);
int nh_strcache_push_slow(nh_strcache_t *c, lua_State *L, const char *s, size_t len);

/* The first and last (up to) 8 bytes of s: with the length they are s when len <= 16 */
static inline void nh_strcache_ends_(const char *s, size_t len, uint64_t *a, uint64_t *b) {
    if (len >= 8) {
        memcpy(a, s, 8);
        memcpy(b, s + len - 8, 8);
    } else if (len >= 4) {
        uint32_t x, y;
        memcpy(&x, s, 4);
        memcpy(&y, s + len - 4, 4);
        *a = x;
        *b = y;
    } else {
        *a = len ? (uint64_t)(unsigned char)s[0] | (uint64_t)(unsigned char)s[len / 2] << 8 |
                       (uint64_t)(unsigned char)s[len - 1] << 16
                 : 0;
        *b = 0;
    }
}

/* A multiplicative hash of the ends and the length, its top bits an entry: a few instructions,
 * where hashing byte by byte cost more than the interning it saves */
static inline unsigned nh_strcache_slot_(uint64_t a, uint64_t b, size_t len) {
    uint64_t h = (a ^ (b * 0x9E3779B97F4A7C15ull) ^ len) * 0xFF51AFD7ED558CCDull;
    return (unsigned)(h >> (64 - NH_STRCACHE_BITS));
}

static inline int nh_strcache_push(nh_strcache_t *c, lua_State *L, const char *s, size_t len) {
    if (c && len <= 16) {
        uint64_t a, b;
        nh_strcache_ends_(s, len, &a, &b);
        unsigned slot = nh_strcache_slot_(a, b, len);
        const nh_strcache_entry_t *e = &c->e[slot];
        if (e->ref > 0 && e->len == len && e->a == a && e->b == b) {
            lua_rawgeti(L, LUA_REGISTRYINDEX, e->ref);
            return (int)slot;
        }
    }
    return nh_strcache_push_slow(c, L, s, len);
}

#endif
