/* test_lua_strcache — the cache of short strings (lua_strcache.h): what it pushes is the very
 * string lua_pushlstring pushes, for every length up to the limit and past it, with NUL bytes, for
 * strings that share their first and last 8 bytes, and for strings that take each other's entry;
 * a string seen before comes from its entry; freeing releases every registry reference. */
#include "check.h"
#include "lua_binding.h"
#include "lua_strcache.h"

#include <string.h>

#include <lauxlib.h>
#include <lualib.h>

/* Pushes s through the cache and checks it is the string lua_pushlstring makes. */
static int same_as_interned(nh_strcache_t *c, lua_State *L, const char *s, size_t len) {
    nh_strcache_push(c, L, s, len);
    lua_pushlstring(L, s, len);
    int same = lua_type(L, -2) == LUA_TSTRING && lua_rawequal(L, -1, -2);
    lua_pop(L, 2);
    return same;
}

static void every_length_comes_back_as_itself(void) {
    lua_State *L = luaL_newstate();
    nh_strcache_t c;
    nh_strcache_init(&c);
    char s[64];
    for (size_t i = 0; i < sizeof s; i++)
        s[i] = (char)('a' + i % 26);
    s[5] = '\0';                            /* a NUL inside */
    for (int round = 0; round < 2; round++) /* the second round from the cache */
        for (size_t len = 0; len <= NH_STRCACHE_MAX + 2; len++)
            CHECK(same_as_interned(&c, L, s, len));
    nh_strcache_free(&c, L);
    lua_close(L);
}

static void strings_alike_at_their_ends_stay_apart(void) {
    lua_State *L = luaL_newstate();
    nh_strcache_t c;
    nh_strcache_init(&c);
    /* 20 bytes: the same first 8 and last 8, another middle */
    const char *x = "ABCDEFGH1234IJKLMNOP", *y = "ABCDEFGH5678IJKLMNOP";
    for (int i = 0; i < 3; i++) {
        CHECK(same_as_interned(&c, L, x, 20));
        CHECK(same_as_interned(&c, L, y, 20));
    }
    /* a prefix of another: the length tells them apart */
    CHECK(same_as_interned(&c, L, "Room.join", 9));
    CHECK(same_as_interned(&c, L, "Room.joinX", 10));
    CHECK(same_as_interned(&c, L, "Room.join", 9));
    nh_strcache_free(&c, L);
    lua_close(L);
}

static void entries_taken_over_keep_every_string_right(void) {
    lua_State *L = luaL_newstate();
    nh_strcache_t c;
    nh_strcache_init(&c);
    /* four times as many strings as entries, twice over: entries change hands all the time */
    char key[16];
    for (int round = 0; round < 2; round++)
        for (int i = 0; i < 4 * NH_STRCACHE_SIZE; i++) {
            int n = snprintf(key, sizeof key, "k%d", i);
            CHECK(same_as_interned(&c, L, key, (size_t)n));
        }
    int refs = nh_lua_registry_refs(L); /* no host here: the cache's count too */
    CHECK(refs > 0 && refs <= NH_STRCACHE_SIZE && refs == c.refs);
    nh_strcache_free(&c, L);
    CHECK(nh_lua_registry_refs(L) == 0);
    lua_close(L);
}

/* White box: a hit pushes what the entry holds (so it did not intern the bytes again). */
static void a_string_seen_before_comes_from_its_entry(void) {
    lua_State *L = luaL_newstate();
    nh_strcache_t c;
    nh_strcache_init(&c);
    int slot = nh_strcache_push(&c, L, "Bench.ping", 10);
    lua_pop(L, 1);
    CHECK(slot >= 0 && slot < NH_STRCACHE_SIZE);
    int ref = c.e[slot].ref; /* the entry returned is the one that holds it */
    CHECK(ref > 0);
    lua_pushliteral(L, "the entry's");
    lua_rawseti(L, LUA_REGISTRYINDEX, ref);
    CHECK(nh_strcache_push(&c, L, "Bench.ping", 10) == slot);
    CHECK(strcmp(lua_tostring(L, -1), "the entry's") == 0);
    lua_pop(L, 1);
    /* a NULL cache pushes as lua_pushlstring does, and names no entry; so does a long string */
    CHECK(same_as_interned(NULL, L, "plain", 5));
    CHECK(nh_strcache_push(NULL, L, "plain", 5) == -1);
    lua_pop(L, 1);
    char longer[NH_STRCACHE_MAX + 1];
    memset(longer, 'x', sizeof longer);
    CHECK(nh_strcache_push(&c, L, longer, sizeof longer) == -1);
    lua_pop(L, 1);
    nh_strcache_free(&c, L);
    lua_close(L);
}

int main(void) {
    every_length_comes_back_as_itself();
    strings_alike_at_their_ends_stay_apart();
    entries_taken_over_keep_every_string_right();
    a_string_seen_before_comes_from_its_entry();
    return check_done();
}
