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

/* The first and last (up to) 8 bytes of s: with the length they are s when len <= 16 */
static void ends_of(const char *s, size_t len, uint64_t *a, uint64_t *b) {
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
static unsigned slot_of(uint64_t a, uint64_t b, size_t len) {
    uint64_t h = (a ^ (b * 0x9E3779B97F4A7C15ull) ^ len) * 0xFF51AFD7ED558CCDull;
    return (unsigned)(h >> (64 - NH_STRCACHE_BITS));
}

int nh_strcache_push(nh_strcache_t *c, lua_State *L, const char *s, size_t len) {
    if (!c || len > NH_STRCACHE_MAX) {
        lua_pushlstring(L, s, len);
        return -1;
    }
    uint64_t a, b;
    ends_of(s, len, &a, &b);
    unsigned slot = slot_of(a, b, len);
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
