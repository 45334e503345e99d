/* test_lua_alloc — the Lua state's allocator (lua_alloc.h): a state on it runs Lua whose objects
 * cross every size class and the small/big boundary (strings, tables that grow and shrink,
 * closures, coroutines) with the values intact; small blocks freed are reused (the slabs stop
 * growing once a workload's high-water mark is reached); resizes across classes and across the
 * small/big boundary keep the bytes; a state not on it reports nothing; closing frees everything
 * (this test runs under ASan/valgrind in CI). */
#include "check.h"
#include "lua_alloc.h"

#include <stdint.h>
#include <string.h>

#include <lauxlib.h>
#include <lualib.h>

static int run(lua_State *L, const char *code) {
    if (luaL_dostring(L, code) != 0) {
        fprintf(stderr, "lua: %s\n", lua_tostring(L, -1));
        lua_pop(L, 1);
        return 0;
    }
    return 1;
}

/* Objects of every size from 0 to well past NH_LALLOC_SMALL (tables grown past it), read back. */
static const char churn[] =
    "local keep = {}\n"
    "for round = 1, 3 do\n"
    "  for n = 0, 1200, 7 do\n"
    "    local s = string.rep('x', n) .. round\n"
    "    local t = {}\n"
    "    for i = 1, n % 97 do t[i] = i end\n"
    "    for i = 1, n % 13 do t['k' .. i] = s end\n"
    "    keep[#keep + 1] = { s = s, t = t, f = function() return n end }\n"
    "  end\n"
    "  for i = 1, #keep, 2 do keep[i] = false end\n"
    "  collectgarbage()\n"
    "end\n"
    "local grow = {}\n"
    "for i = 1, 5000 do grow[i] = i end\n"
    "for i = 5000, 2, -1 do grow[i] = nil end\n"
    "local co = coroutine.wrap(function(a) local b = coroutine.yield(a + 1) "
    "return b * 2 end)\n"
    "assert(co(1) == 2 and co(5) == 10)\n"
    "for i, v in ipairs(keep) do\n"
    "  if v then\n"
    "    local n = v.f()\n"
    "    assert(#v.s == n + 1, 'string ' .. i)\n"
    "    assert(#v.t == n % 97, 'array ' .. i)\n"
    "    if n % 13 > 0 then assert(v.t.k1 == v.s, 'hash ' .. i) end\n"
    "  end\n"
    "end\n"
    "assert(grow[1] == 1 and grow[2] == nil)\n";

static void objects_of_every_size_keep_their_values(void) {
    lua_State *L = nh_lua_new_state();
    CHECK(L != NULL);
    luaL_openlibs(L);
    CHECK(run(L, churn));
    nh_lua_alloc_stats_t st = nh_lua_alloc_stats(L);
    CHECK(st.slab_bytes >= NH_LALLOC_SLAB && st.small_bytes > 0 && st.small_bytes <= st.slab_bytes);
    nh_lua_close_state(L);
}

static void freed_small_blocks_are_reused(void) {
    lua_State *L = nh_lua_new_state();
    luaL_openlibs(L);
    const char *work = "local t = {}\n"
                       "for i = 1, 20000 do t[i] = { i, tostring(i) } end\n"
                       "t = nil\n"
                       "collectgarbage()\n";
    CHECK(run(L, work));
    nh_lua_alloc_stats_t first = nh_lua_alloc_stats(L);
    for (int i = 0; i < 5; i++)
        CHECK(run(L, work));
    nh_lua_alloc_stats_t later = nh_lua_alloc_stats(L);
    /* the same workload again needs no more slabs: its blocks come from the free lists */
    CHECK(later.slab_bytes == first.slab_bytes);
    CHECK(later.small_bytes <= first.small_bytes + 4096);
    nh_lua_close_state(L);
}

/* The lua_Alloc itself, as LuaJIT calls it: blocks resized within a class stay put, across
 * classes and across the small/big boundary both ways they move with their bytes, and what the
 * allocator counts follows; a state not on it reports nothing. */
static void resizes_keep_the_bytes_both_ways(void) {
    lua_State *L = nh_lua_new_state();
    void *ud = NULL;
    lua_Alloc f = lua_getallocf(L, &ud);
    size_t base = nh_lua_alloc_stats(L).small_bytes;
    unsigned char *p = f(ud, NULL, 0, 100);
    CHECK(p != NULL && ((uintptr_t)p & 15) == 0);
    for (int i = 0; i < 100; i++)
        p[i] = (unsigned char)i;
    CHECK(nh_lua_alloc_stats(L).small_bytes == base + 112);
    CHECK(f(ud, p, 100, 110) == p);        /* same class */
    unsigned char *q = f(ud, p, 110, 600); /* small -> big */
    CHECK(q != NULL && nh_lua_alloc_stats(L).small_bytes == base);
    for (int i = 0; i < 600; i++)
        q[i] = (unsigned char)(i < 100 ? i : 0xAB);
    unsigned char *r = f(ud, q, 600, 2000); /* big -> big */
    CHECK(r != NULL);
    unsigned char *t = f(ud, r, 2000, 40); /* big -> small */
    CHECK(t != NULL && ((uintptr_t)t & 15) == 0 && nh_lua_alloc_stats(L).small_bytes == base + 48);
    int same = 1;
    for (int i = 0; i < 40; i++)
        same &= t[i] == (unsigned char)i;
    CHECK(same);
    unsigned char *u = f(ud, t, 40, 500); /* small -> small, another class */
    CHECK(u != NULL && u[39] == 39 && nh_lua_alloc_stats(L).small_bytes == base + 512);
    CHECK(f(ud, u, 500, 0) == NULL && nh_lua_alloc_stats(L).small_bytes == base);
    lua_State *theirs = luaL_newstate();
    nh_lua_alloc_stats_t st = nh_lua_alloc_stats(theirs);
    CHECK(st.slab_bytes == 0 && st.small_bytes == 0);
    nh_lua_close_state(theirs); /* not ours: a plain lua_close */
    nh_lua_close_state(L);
}

int main(void) {
    objects_of_every_size_keep_their_values();
    freed_small_blocks_are_reused();
    resizes_keep_the_bytes_both_ways();
    return check_done();
}
