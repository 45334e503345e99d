/* `nano.json_encoder`: encode(value [, empty_array]) -> JSON text, byte for byte what the JSON
 * serializer's lua-cjson instance (lua/nano/json.lua: sparse arrays converted, depth 128) writes,
 * only faster. Decoding stays with lua-cjson.
 *
 * Why: lua-cjson formats every number with snprintf("%.14g"), glibc's exact multi-precision path;
 * a ping-pong with one integer in its payload spent a fifth of nano-host's own instructions there
 * (docs/benchmarks.md). Integers below 1e14 — what "%.14g" prints as plain digits — are written
 * here directly; every other number still goes through "%.14g", so the text never differs.
 * spec/json_encoder_spec.lua compares the two on every byte value and shape that matters.
 *
 * Rules (lua-cjson 2.1.0's): a table whose keys are all integers >= 1 is an array up to its
 * largest key (holes are null) unless it is excessively sparse (largest key over 10 and over
 * twice the key count), which makes it an object; every other table is an object, keys strings or
 * numbers (written as strings), in lua_next order; an empty table is {}. Strings are escaped as
 * lua-cjson does ('/' and DEL too). nil and the null lightuserdata are null. NaN, Inf, other types
 * and nesting deeper than 128 raise an error. Metatables are ignored (raw access).
 * `empty_array` (optional): a string value equal to it is written as [] (json.empty_array).
 */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <lauxlib.h>

#include "lua_binding.h"

#define JSON_MAX_DEPTH 128
#define SPARSE_RATIO 2
#define SPARSE_SAFE 10

typedef struct jbuf {
    char *data;
    size_t len, cap;
} jbuf_t;

typedef struct enc {
    lua_State *L;
    jbuf_t *b;
    const char *empty; /* the empty-array marker, or NULL */
    size_t empty_len;
} enc_t;

static void grow(enc_t *e, size_t need) {
    jbuf_t *b = e->b;
    size_t cap = b->cap ? b->cap : 256;
    while (cap - b->len < need)
        cap *= 2;
    char *d = realloc(b->data, cap);
    if (!d) luaL_error(e->L, "json encode: out of memory");
    b->data = d;
    b->cap = cap;
}

static inline void put(enc_t *e, const char *s, size_t n) {
    if (e->b->cap - e->b->len < n) grow(e, n);
    memcpy(e->b->data + e->b->len, s, n);
    e->b->len += n;
}

static inline void putc_(enc_t *e, char c) {
    if (e->b->cap == e->b->len) grow(e, 1);
    e->b->data[e->b->len++] = c;
}

/* lua-cjson's escapes: control characters, '"', '\\', '/' and DEL. */
static const char *escape_of(unsigned char c, char tmp[8]) {
    switch (c) {
    case '"':
        return "\\\"";
    case '\\':
        return "\\\\";
    case '/':
        return "\\/";
    case '\b':
        return "\\b";
    case '\t':
        return "\\t";
    case '\n':
        return "\\n";
    case '\f':
        return "\\f";
    case '\r':
        return "\\r";
    default:
        if (c < 0x20 || c == 0x7f) {
            snprintf(tmp, 8, "\\u%04x", c);
            return tmp;
        }
        return NULL;
    }
}

/* 1 for the bytes written as they are; filled from escape_of when the module opens. */
static unsigned char plain[256];

static void put_string(enc_t *e, const char *s, size_t n) {
    /* worst case every byte becomes \u00XX */
    if (e->b->cap - e->b->len < n * 6 + 2) grow(e, n * 6 + 2);
    char *o = e->b->data + e->b->len;
    *o++ = '"';
    size_t run = 0;
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if (plain[c]) continue;
        memcpy(o, s + run, i - run);
        o += i - run;
        char tmp[8];
        const char *esc = escape_of(c, tmp);
        size_t el = strlen(esc);
        memcpy(o, esc, el);
        o += el;
        run = i + 1;
    }
    memcpy(o, s + run, n - run);
    o += n - run;
    *o++ = '"';
    e->b->len = (size_t)(o - e->b->data);
}

/* What "%.14g" writes, with integers below 1e14 (plain digits there) written directly. */
static void put_number(enc_t *e, lua_Number x, int idx) {
    if (isnan(x) || isinf(x)) {
        luaL_error(e->L, "Cannot serialise %s: must not be NaN or Inf",
                   lua_typename(e->L, lua_type(e->L, idx)));
    }
    if (e->b->cap - e->b->len < 32) grow(e, 32);
    char *o = e->b->data + e->b->len;
    if (x > -1e14 && x < 1e14 && x == (lua_Number)(int64_t)x && !(x == 0 && signbit(x))) {
        int64_t v = (int64_t)x;
        char digits[20];
        int n = 0;
        uint64_t u = v < 0 ? (uint64_t)(-v) : (uint64_t)v;
        do {
            digits[n++] = (char)('0' + u % 10);
            u /= 10;
        } while (u);
        if (v < 0) *o++ = '-';
        while (n)
            *o++ = digits[--n];
        e->b->len = (size_t)(o - e->b->data);
        return;
    }
    e->b->len += (size_t)snprintf(o, 32, "%.14g", x);
}

static void put_value(enc_t *e, int depth);

/* lua-cjson's lua_array_length: the largest key when every key is an integer >= 1 and the
 * array is not excessively sparse; -1 for an object. Table on top of the stack. */
static double array_length(lua_State *L) {
    double max = 0, items = 0;
    lua_pushnil(L);
    while (lua_next(L, -2)) {
        double k;
        if (lua_type(L, -2) == LUA_TNUMBER && (k = lua_tonumber(L, -2)) != 0 && floor(k) == k &&
            k >= 1) {
            if (k > max) max = k;
            items++;
            lua_pop(L, 1);
            continue;
        }
        lua_pop(L, 2);
        return -1;
    }
    if (max > items * SPARSE_RATIO && max > SPARSE_SAFE) return -1; /* converted to an object */
    return max;
}

static void put_table(enc_t *e, int depth) {
    lua_State *L = e->L;
    if (depth > JSON_MAX_DEPTH || !lua_checkstack(L, 4))
        luaL_error(L, "Cannot serialise, excessive nesting (%d)", depth);
    double len = array_length(L);
    if (len > 0) {
        putc_(e, '[');
        for (double i = 1; i <= len; i++) {
            if (i > 1) putc_(e, ',');
            lua_rawgeti(L, -1, (int)i);
            put_value(e, depth);
            lua_pop(L, 1);
        }
        putc_(e, ']');
        return;
    }
    putc_(e, '{');
    int comma = 0;
    lua_pushnil(L);
    while (lua_next(L, -2)) {
        if (comma) putc_(e, ',');
        comma = 1;
        int kt = lua_type(L, -2);
        if (kt == LUA_TSTRING) {
            size_t kl;
            const char *k = lua_tolstring(L, -2, &kl);
            put_string(e, k, kl);
            putc_(e, ':');
        } else if (kt == LUA_TNUMBER) {
            putc_(e, '"');
            put_number(e, lua_tonumber(L, -2), -2);
            put(e, "\":", 2);
        } else {
            luaL_error(L, "Cannot serialise %s: table key must be a number or string",
                       lua_typename(L, kt));
        }
        put_value(e, depth);
        lua_pop(L, 1);
    }
    putc_(e, '}');
}

/* The value on top of the stack (left there). */
static void put_value(enc_t *e, int depth) {
    lua_State *L = e->L;
    switch (lua_type(L, -1)) {
    case LUA_TSTRING: {
        size_t n;
        const char *s = lua_tolstring(L, -1, &n);
        if (e->empty && n == e->empty_len && memcmp(s, e->empty, n) == 0)
            put(e, "[]", 2);
        else
            put_string(e, s, n);
        break;
    }
    case LUA_TNUMBER:
        put_number(e, lua_tonumber(L, -1), -1);
        break;
    case LUA_TBOOLEAN:
        if (lua_toboolean(L, -1))
            put(e, "true", 4);
        else
            put(e, "false", 5);
        break;
    case LUA_TTABLE:
        put_table(e, depth + 1);
        break;
    case LUA_TNIL:
        put(e, "null", 4);
        break;
    case LUA_TLIGHTUSERDATA:
        if (lua_touserdata(L, -1) == NULL) {
            put(e, "null", 4);
            break;
        }
        /* fall through */
    default:
        luaL_error(L, "Cannot serialise %s: type not supported", luaL_typename(L, -1));
    }
}

#define JBUF_MT "nano.json_encoder.buffer"
#define JBUF_KEEP (64 * 1024) /* a buffer grown past this by one big message is not kept */

static int jbuf_gc(lua_State *L) {
    jbuf_t *b = luaL_checkudata(L, 1, JBUF_MT);
    free(b->data);
    b->data = NULL;
    b->cap = b->len = 0;
    return 0;
}

/* encode(value [, empty_array]) -> string */
static int l_encode(lua_State *L) {
    luaL_checkany(L, 1);
    enc_t e = {L, lua_touserdata(L, lua_upvalueindex(1)), NULL, 0};
    if (lua_type(L, 2) == LUA_TSTRING) e.empty = lua_tolstring(L, 2, &e.empty_len);
    lua_settop(L, 1);
    e.b->len = 0; /* an error mid-way leaves garbage here, never a leak: the buffer is kept */
    put_value(&e, 0);
    lua_pushlstring(L, e.b->data, e.b->len);
    if (e.b->cap > JBUF_KEEP) {
        free(e.b->data);
        e.b->data = NULL;
        e.b->cap = 0;
    }
    return 1;
}

int nh_lua_open_json(lua_State *L) {
    for (int c = 0; c < 256; c++) {
        char tmp[8];
        plain[c] = escape_of((unsigned char)c, tmp) == NULL;
    }
    lua_newtable(L);
    jbuf_t *b = lua_newuserdata(L, sizeof *b);
    memset(b, 0, sizeof *b);
    luaL_newmetatable(L, JBUF_MT);
    lua_pushcfunction(L, jbuf_gc);
    lua_setfield(L, -2, "__gc");
    lua_setmetatable(L, -2);
    lua_pushcclosure(L, l_encode, 1);
    lua_setfield(L, -2, "encode");
    return 1;
}
