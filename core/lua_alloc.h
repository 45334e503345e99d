/* lua_alloc — the allocator of the host's Lua state.
 *
 * LuaJIT's own allocator (a dlmalloc) spends ~105 instructions freeing a small block and ~47
 * allocating one. A request's decoded payload alone is two such blocks (a table and its hash
 * part) that the GC's sweep frees later: ~310 of a JSON ping-pong's ~5,700 user-space
 * instructions (docs/benchmarks.md). Here a block of up to NH_LALLOC_SMALL bytes comes from a size
 * class (multiples of 16 bytes): freeing it pushes it on its class's list, allocating pops one or
 * carves it from the current slab (NH_LALLOC_SLAB bytes from malloc). Bigger blocks are malloc's,
 * each on a list of the allocator's (a 16-byte header), so that all Lua holds stays reachable even
 * when the process exits without closing the state (watchdog_exit; valgrind checks at exit).
 * Lua gives the size of every block it frees or resizes (lua_Alloc's osize), so blocks carry no
 * header, and every block is 16-byte aligned (LuaJIT needs 8).
 *
 * The price: a small block freed stays with the state for reuse (it never goes back to malloc
 * until the state closes), so the state's high-water mark of small objects stays resident. The
 * Lua heap's size as Lua counts it (collectgarbage("count"), the watchdog's memory limit) is
 * unchanged; nh_lua_alloc_stats() says what the allocator itself holds.
 *
 * Like every other use of a Lua state here, only the loop thread calls it. */
#ifndef NH_LUA_ALLOC_H
#define NH_LUA_ALLOC_H
#include <stddef.h>

#include <lua.h>

#define NH_LALLOC_SMALL 512
#define NH_LALLOC_SLAB (64 * 1024)

/* A new Lua state on this allocator, with luaL_newstate's panic function; NULL when out of
 * memory. Close it with nh_lua_close_state (lua_close alone would leave the slabs). */
lua_State *nh_lua_new_state(void);
void nh_lua_close_state(lua_State *L);

typedef struct nh_lua_alloc_stats {
    size_t slab_bytes;  /* the slabs malloc'd for small blocks */
    size_t small_bytes; /* of them, in small blocks Lua holds now (the rest waits for reuse) */
} nh_lua_alloc_stats_t;

/* What the allocator of L holds; zeros when L is not on this allocator. */
nh_lua_alloc_stats_t nh_lua_alloc_stats(lua_State *L);

#endif
