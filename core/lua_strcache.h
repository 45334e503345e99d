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
 * not go through the cache (c NULL, or longer than NH_STRCACHE_MAX). */
int nh_strcache_push(nh_strcache_t *c, lua_State *L, const char *s, size_t len);

#endif
