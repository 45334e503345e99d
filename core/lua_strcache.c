/* lua_strcache — see lua_strcache.h. */
#include "lua_strcache.h"

#include <stdint.h>
#include <string.h>

#include <lauxlib.h>

void nh_strcache_init(nh_strcache_t *c) {
    memset(c, 0, sizeof *c);
}

void nh_strcache_free(nh_strcache_t *c, lua_State *L) {
    for (int i = 0; i < NH_STRCACHE_SIZE; i++) {
        if (c->e[i].ref > 0) luaL_unref(L, LUA_REGISTRYINDEX, c->e[i].ref);
        c->e[i].ref = 0;
    }
    c->refs = 0;
}

int nh_strcache_push_slow(nh_strcache_t *c, lua_State *L, const char *s, size_t len) {
    if (!c || len > NH_STRCACHE_MAX) {
        lua_pushlstring(L, s, len);
        return -1;
    }
    uint64_t a, b;
    nh_strcache_ends_(s, len, &a, &b);
    unsigned slot = nh_strcache_slot_(a, b, len);
    nh_strcache_entry_t *e = &c->e[slot];
    if (e->ref > 0 && e->len == len && e->a == a && e->b == b &&
        (len <= 16 || memcmp(e->middle, s + 8, len - 16) == 0)) {
        lua_rawgeti(L, LUA_REGISTRYINDEX, e->ref);
        return (int)slot;
    }
    lua_pushlstring(L, s, len);
    lua_pushvalue(L, -1);
    if (e->ref > 0) {
        lua_rawseti(L, LUA_REGISTRYINDEX, e->ref);
    } else {
        e->ref = luaL_ref(L, LUA_REGISTRYINDEX); /* > 0: the value is a string */
        c->refs++;
    }
    e->len = (unsigned char)len;
    e->a = a;
    e->b = b;
    if (len > 16) memcpy(e->middle, s + 8, len - 16);
    return (int)slot;
}
