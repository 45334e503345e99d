/* `nano.json_codec`: the JSON serializer's codec (lua/nano/json.lua), lua-cjson's behaviour but
 * faster, and with numbers that keep their value.
 *
 * encode(value [, empty_array]) -> JSON text: what the serializer's lua-cjson instance (sparse
 * arrays converted, depth 128) writes, byte for byte, except numbers: lua-cjson writes "%.14g",
 * which changes any number of more than 14 significant digits (a microsecond timestamp, a 16-digit
 * uid). Here every number is written as JavaScript's JSON.stringify writes it (format_double):
 * integers up to 2^53 as plain digits, any other double in the fewest digits that read back as the
 * same double, so that a number survives a round trip to a browser and back. json.lua's
 * fallback encoder (no C module) writes the same text; spec/json_codec_spec.lua and
 * spec/e2e/json_numbers.test.js (against node) check both.
 *
 * Why C: lua-cjson formats every number with snprintf, glibc's exact multi-precision path (a
 * ping-pong with one integer in its payload spent a fifth of nano-host's own instructions there),
 * and its decoder allocates and frees a buffer per call (docs/benchmarks.md). Integers are written
 * here directly; other numbers need one to three snprintf + strtod.
 *
 * try_encoder([empty_array]) -> function(value) -> what encode(value, empty_array) returns, ""
 * for nil (the serializer's marshal), or nil where encode raises an error.
 *
 * format_number(x) -> the text encode writes for the number x.
 *
 * flat_writer, flat_mark, flat_taken(): the flat object writer nano's own Lua calls through the
 * FFI (below, "the flat object writer"); flat_taken() counts the texts the core took, for specs.
 *
 * Rules (lua-cjson 2.1.0's): a table whose keys are all integers >= 1 is an array up to its
 * largest key (holes are null) unless it is excessively sparse (largest key over 10 and over
 * twice the key count), which makes it an object; every other table is an object, keys strings or
 * numbers (written as strings), in lua_next order; an empty table is {}. Strings are escaped as
 * lua-cjson does ('/' and DEL too). nil and the null lightuserdata are null. NaN, Inf, other types
 * and nesting deeper than 128 raise an error. Metatables are ignored (raw access).
 * `empty_array` (optional): a string value equal to it is written as [] (json.empty_array).
 *
 * decode(text) -> true, value | false: the same values lua-cjson's decode makes (objects and
 * arrays as tables, null as the NULL lightuserdata cjson.null, numbers as strtod reads them) for
 * text that is plain RFC 8259 JSON nested at most 128 deep; for anything else (malformed or
 * lenient input, lone surrogates, deeper nesting) it returns false and the caller asks lua-cjson,
 * so errors and leniency stay exactly lua-cjson's. Client payloads are untrusted: this parser
 * allocates nothing of its own but a string buffer for escapes, checks every bound, and is
 * fuzzed (core/fuzz/fuzz_json.c).
 */
#include <float.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <lauxlib.h>

#include "lua_strcache.h"

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
    int quiet;  /* try_encode: an error is not raised, only remembered */
    int failed; /* quiet, and an error happened: the output is to be dropped */
} enc_t;

/* An error: raised by encode; remembered by try_encode, whose caller answers nil and leaves the
 * message to encode. Callers return at once after it (and after a put_value that failed). */
#define ENC_FAIL(e, ...)                                                                           \
    do {                                                                                           \
        if (!(e)->quiet) luaL_error((e)->L, __VA_ARGS__);                                          \
        (e)->failed = 1;                                                                           \
    } while (0)

static int grow(enc_t *e, size_t need) {
    jbuf_t *b = e->b;
    size_t cap = b->cap ? b->cap : 256;
    while (cap - b->len < need)
        cap *= 2;
    char *d = realloc(b->data, cap);
    if (!d) {
        ENC_FAIL(e, "json encode: out of memory");
        return 0;
    }
    b->data = d;
    b->cap = cap;
    return 1;
}

static inline void put(enc_t *e, const char *s, size_t n) {
    if (e->b->cap - e->b->len < n && !grow(e, n)) return;
    memcpy(e->b->data + e->b->len, s, n);
    e->b->len += n;
}

static inline void putc_(enc_t *e, char c) {
    if (e->b->cap == e->b->len && !grow(e, 1)) return;
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
    if (e->b->cap - e->b->len < n * 6 + 2 && !grow(e, n * 6 + 2)) return;
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

/* "00".."99", for writing integers two digits at a time */
static const char digit_pairs[] =
    "00010203040506070809101112131415161718192021222324252627282930313233"
    "34353637383940414243444546474849505152535455565758596061626364656667"
    "6869707172737475767778798081828384858687888990919293949596979899";

/* Writes x as JavaScript's Number.prototype.toString does: the fewest significant digits that read
 * back as x (strtod), nearest x among those, laid out as JS lays them out (plain digits up to 1e21,
 * "0.000001", then "1e-7", "1.5e+300"). -0 stays "-0" (JS writes "0") so that every double reads
 * back as itself. out holds at least 32 bytes; returns the length. */
static size_t format_other(double x, char *out);
static inline size_t format_double(double x, char *out) {
    char *o = out;
    if (x == 0) {
        if (signbit(x)) *o++ = '-';
        *o++ = '0';
        return (size_t)(o - out);
    }
    if (x >= -9007199254740992.0 && x <= 9007199254740992.0 && x == (double)(int64_t)x) {
        /* integers up to 2^53, the common case, without printf (inlined: a call was a fifth of
         * a small integer's cost) */
        int64_t v = (int64_t)x;
        uint64_t u = v < 0 ? (uint64_t)(-v) : (uint64_t)v;
        if (v < 0) *o++ = '-';
        /* written from the last digit back, two at a time (a division per digit was ~70
         * instructions of a ping-pong's six-digit number) */
        int n = 1;
        for (uint64_t p = 10; n < 16 && u >= p; p *= 10) /* u <= 2^53 < 10^16 */
            n++;
        char *w = o + n;
        while (u >= 100) {
            unsigned r = (unsigned)(u % 100);
            u /= 100;
            w -= 2;
            memcpy(w, digit_pairs + 2 * r, 2);
        }
        if (u >= 10)
            memcpy(w - 2, digit_pairs + 2 * u, 2);
        else
            w[-1] = (char)('0' + u);
        return (size_t)(o + n - out);
    }
    return format_other(x, out);
}

/* format_double's numbers that are not integers up to 2^53 (nor 0) */
static size_t format_other(double x, char *out) {
    char *o = out;
    /* Any decimal of at most 15 significant digits survives decimal -> double -> decimal
     * (DBL_DIG), so when 15 digits read back, the shortest form is those digits with trailing
     * zeros dropped; else 16 digits may do; 17 always do. Subnormals hold fewer digits: all
     * precisions are tried. */
    char sci[40];
    for (int prec = fabs(x) < DBL_MIN ? 1 : 15; prec <= 17; prec++) {
        snprintf(sci, sizeof sci, "%.*e", prec - 1, x);
        if (prec == 17 || strtod(sci, NULL) == x) break;
    }
    /* sci is "-d.ddddde-XX": collect the digits and the decimal exponent */
    const char *p = sci;
    if (*p == '-') {
        *o++ = '-';
        p++;
    }
    char d[20];
    int k = 0;
    for (; *p && *p != 'e'; p++)
        if (*p != '.') d[k++] = *p;
    int n = atoi(p + 1) + 1; /* x = 0.d1d2...dk * 10^n */
    while (k > 1 && d[k - 1] == '0')
        k--;
    if (k <= n && n <= 21) { /* an integer: digits then zeros */
        memcpy(o, d, (size_t)k);
        o += k;
        for (int i = k; i < n; i++)
            *o++ = '0';
    } else if (0 < n && n <= 21) { /* point inside the digits */
        memcpy(o, d, (size_t)n);
        o += n;
        *o++ = '.';
        memcpy(o, d + n, (size_t)(k - n));
        o += k - n;
    } else if (-6 < n && n <= 0) { /* 0.000ddd */
        *o++ = '0';
        *o++ = '.';
        for (int i = n; i < 0; i++)
            *o++ = '0';
        memcpy(o, d, (size_t)k);
        o += k;
    } else { /* d.ddde+X */
        *o++ = d[0];
        if (k > 1) {
            *o++ = '.';
            memcpy(o, d + 1, (size_t)(k - 1));
            o += k - 1;
        }
        o += sprintf(o, "e%c%d", n - 1 < 0 ? '-' : '+', abs(n - 1));
    }
    return (size_t)(o - out);
}

static void put_number(enc_t *e, lua_Number x, int idx) {
    if (!isfinite(x)) {
        ENC_FAIL(e, "Cannot serialise %s: must not be NaN or Inf",
                 lua_typename(e->L, lua_type(e->L, idx)));
        return;
    }
    if (e->b->cap - e->b->len < 32 && !grow(e, 32)) return;
    e->b->len += format_double(x, e->b->data + e->b->len);
}

/* The encoder works on absolute stack indices: a value is read where it is, not pushed again,
 * and a table's traversal puts its key and value at top + 1 and top + 2, top being the stack's
 * height when the table was reached (kept here, not asked of Lua: each C API call is ~20
 * instructions of a small response's ~300). */
static void put_value(enc_t *e, int idx, int top, int depth);

/* lua-cjson's lua_array_length: the largest key when every key is an integer >= 1 and the
 * array is not excessively sparse; -1 for an object. The table is at t, the stack at top. */
static double array_length(lua_State *L, int t, int top) {
    double max = 0, items = 0;
    lua_pushnil(L);
    while (lua_next(L, t)) {
        double k;
        if (lua_type(L, top + 1) == LUA_TNUMBER && (k = lua_tonumber(L, top + 1)) != 0 &&
            floor(k) == k && k >= 1) {
            if (k > max) max = k;
            items++;
            lua_settop(L, top + 1);
            continue;
        }
        lua_settop(L, top);
        return -1;
    }
    if (max > items * SPARSE_RATIO && max > SPARSE_SAFE) return -1; /* converted to an object */
    return max;
}

/* The table at t; the stack's height is top. Each level pushes two values: the stack is grown
 * every eighth level, by enough for eight. */
static void put_table(enc_t *e, int t, int top, int depth) {
    lua_State *L = e->L;
    if (depth > JSON_MAX_DEPTH || ((depth & 7) == 1 && !lua_checkstack(L, 2 * 8 + 2))) {
        ENC_FAIL(e, "Cannot serialise, excessive nesting (%d)", depth);
        return;
    }
    /* A string key makes it an object: found by the first lua_next, which the object's loop
     * then goes on from (array_length's pass would read that key once more) */
    lua_pushnil(L);
    int first = lua_next(L, t);
    int kt = first ? lua_type(L, top + 1) : LUA_TNIL;
    double len = 0;
    if (first && kt != LUA_TSTRING) {
        lua_settop(L, top);
        first = 0;
        len = array_length(L, t, top);
        if (len < 0) {
            lua_pushnil(L);
            first = lua_next(L, t);
            kt = first ? lua_type(L, top + 1) : LUA_TNIL;
        }
    }
    if (len > 0) {
        putc_(e, '[');
        for (double i = 1; i <= len; i++) {
            if (i > 1) putc_(e, ',');
            lua_rawgeti(L, t, (int)i);
            put_value(e, top + 1, top + 1, depth);
            if (e->failed) return;
            lua_settop(L, top);
        }
        putc_(e, ']');
        return;
    }
    putc_(e, '{');
    for (int more = first, comma = 0; more; comma = 1) {
        if (comma) putc_(e, ',');
        if (kt == LUA_TSTRING) {
            size_t kl;
            const char *k = lua_tolstring(L, top + 1, &kl);
            put_string(e, k, kl);
            putc_(e, ':');
        } else if (kt == LUA_TNUMBER) {
            putc_(e, '"');
            put_number(e, lua_tonumber(L, top + 1), top + 1);
            put(e, "\":", 2);
        } else {
            ENC_FAIL(e, "Cannot serialise %s: table key must be a number or string",
                     lua_typename(L, kt));
            return;
        }
        /* a number, the usual member of a game's message, without put_value's call */
        if (lua_type(L, top + 2) == LUA_TNUMBER)
            put_number(e, lua_tonumber(L, top + 2), top + 2);
        else
            put_value(e, top + 2, top + 2, depth);
        if (e->failed) return;
        lua_settop(L, top + 1);
        if ((more = lua_next(L, t))) kt = lua_type(L, top + 1);
    }
    putc_(e, '}');
}

/* The value at idx (left there); the stack's height is top. */
static void put_value(enc_t *e, int idx, int top, int depth) {
    lua_State *L = e->L;
    switch (lua_type(L, idx)) {
    case LUA_TSTRING: {
        size_t n;
        const char *s = lua_tolstring(L, idx, &n);
        if (e->empty && n == e->empty_len && memcmp(s, e->empty, n) == 0)
            put(e, "[]", 2);
        else
            put_string(e, s, n);
        break;
    }
    case LUA_TNUMBER:
        put_number(e, lua_tonumber(L, idx), idx);
        break;
    case LUA_TBOOLEAN:
        if (lua_toboolean(L, idx))
            put(e, "true", 4);
        else
            put(e, "false", 5);
        break;
    case LUA_TTABLE:
        put_table(e, idx, top, depth + 1);
        break;
    case LUA_TNIL:
        put(e, "null", 4);
        break;
    case LUA_TLIGHTUSERDATA:
        if (lua_touserdata(L, idx) == NULL) {
            put(e, "null", 4);
            break;
        }
        /* fall through */
    default:
        ENC_FAIL(e, "Cannot serialise %s: type not supported", luaL_typename(L, idx));
    }
}

#define JBUF_MT "nano.json_codec.buffer"
#define JBUF_KEEP (64 * 1024) /* a buffer grown past this by one big message is not kept */

/* ---- the flat object writer: nano's dispatcher writes a reply's members through the FFI ----
 *
 * Most replies a game returns are one table of string keys and number, string or boolean values,
 * or of such tables one level down.
 * nano (lua/nano/init.lua: write_flat, for the replies its dispatcher returns to the core, for a
 * reply after a wait and for s:push) walks such a table itself, in Lua the JIT compiles, with
 * `next`, and hands each member to these functions through the FFI, which the trace calls
 * directly: no trace exit, and none of the ~20 instructions a C API call costs
 * (put_table pays one for each lua_next, lua_type, lua_tolstring and lua_tonumber of a member).
 * The text is encode's, byte for byte: the same put_string and put_number, members in `next`
 * order (lua_next's), '{' before the first and ',' between them, '}' after ("{}" for none).
 * An object one level down is written between flat_open and flat_close. Anything else (a table
 * two levels down, an array, a key that is not a string, NaN or Inf, the empty-array marker) nano
 * leaves to encode. A finished text stays in flat_buf until the next flat_begin; nano hands
 * the core flat_buf's address (json_codec.flat_mark) in the value's place, and the core takes the
 * text once with nh_lua_json_flat_take. */
static jbuf_t flat_buf;
static enc_t flat_enc = {NULL, &flat_buf, NULL, 0, 1, 0}; /* quiet: never raises (no lua_State) */
/* 1 from a finished text (flat_end) until it is taken or a new one begun: a text half written (a
 * member the writer gave up on) or taken already is never sent */
static int flat_ready;

static void flat_begin(void) {
    if (flat_buf.cap > JBUF_KEEP) { /* one big reply does not keep its buffer */
        free(flat_buf.data);
        flat_buf.data = NULL;
        flat_buf.cap = 0;
    }
    flat_buf.len = 0;
    flat_enc.failed = 0;
    flat_ready = 0;
}

static void flat_key(int first, const char *k, size_t kl) {
    putc_(&flat_enc, first ? '{' : ',');
    put_string(&flat_enc, k, kl);
    putc_(&flat_enc, ':');
}

static int flat_num(int first, const char *k, size_t kl, double x) {
    if (!isfinite(x)) return 0; /* encode's error to raise */
    flat_key(first, k, kl);
    put_number(&flat_enc, x, 0);
    return !flat_enc.failed;
}

static int flat_str(int first, const char *k, size_t kl, const char *s, size_t sl) {
    flat_key(first, k, kl);
    put_string(&flat_enc, s, sl);
    return !flat_enc.failed;
}

static int flat_bool(int first, const char *k, size_t kl, int b) {
    flat_key(first, k, kl);
    if (b)
        put(&flat_enc, "true", 4);
    else
        put(&flat_enc, "false", 5);
    return !flat_enc.failed;
}

/* A member whose value is an object one level down: its key here, its members then through the
 * functions above (the first with first = 1 writes its '{'), flat_close after them. */
static int flat_open(int first, const char *k, size_t kl) {
    flat_key(first, k, kl);
    return !flat_enc.failed;
}

static int flat_close(int none) {
    if (none) putc_(&flat_enc, '{');
    putc_(&flat_enc, '}');
    return !flat_enc.failed;
}

static int flat_end(int none) {
    flat_ready = flat_close(none);
    return flat_ready;
}

/* The functions as lua/nano/init.lua declares them (ffi.cdef "struct nh_json_flat"): keep the
 * two in step. */
static const struct nh_json_flat {
    void (*begin)(void);
    int (*num)(int first, const char *k, size_t kl, double x);
    int (*str)(int first, const char *k, size_t kl, const char *s, size_t sl);
    int (*boolean)(int first, const char *k, size_t kl, int b);
    int (*open)(int first, const char *k, size_t kl);
    int (*close)(int none);
    int (*finish)(int none);
} flat_fns = {flat_begin, flat_num, flat_str, flat_bool, flat_open, flat_close, flat_end};

static double flat_taken; /* texts the core took (json_codec.flat_taken(): for specs) */

int nh_lua_json_is_flat_mark(const void *p) {
    return p == &flat_buf;
}

const void *nh_lua_json_flat_mark(void) {
    return &flat_buf;
}

const char *nh_lua_json_flat_take(const void *mark, size_t *len) {
    if (mark != &flat_buf || !flat_ready) return NULL;
    flat_ready = 0;
    flat_taken++;
    *len = flat_buf.len;
    return flat_buf.data;
}

static int l_flat_taken(lua_State *L) {
    lua_pushnumber(L, flat_taken);
    return 1;
}

static int jbuf_gc(lua_State *L) {
    jbuf_t *b = luaL_checkudata(L, 1, JBUF_MT);
    free(b->data);
    b->data = NULL;
    b->cap = b->len = 0;
    return 0;
}

static int encode(lua_State *L, int quiet, int empty_idx) {
    luaL_checkany(L, 1);
    enc_t e = {L, lua_touserdata(L, lua_upvalueindex(1)), NULL, 0, quiet, 0};
    if (lua_type(L, empty_idx) == LUA_TSTRING) e.empty = lua_tolstring(L, empty_idx, &e.empty_len);
    lua_settop(L, 1);
    e.b->len = 0; /* an error mid-way leaves garbage here, never a leak: the buffer is kept */
    put_value(&e, 1, 1, 0);
    lua_settop(L, 1); /* a quiet failure may leave keys and values behind */
    if (e.failed)
        lua_pushnil(L);
    else
        lua_pushlstring(L, e.b->data, e.b->len);
    if (e.b->cap > JBUF_KEEP) {
        free(e.b->data);
        e.b->data = NULL;
        e.b->cap = 0;
    }
    return 1;
}

/* The C callers' buffer (lua_binding.h: nh_lua_json_encode): the text stays in it until the next
 * call, which shrinks it first if one big message grew it. */
static jbuf_t c_buf;

const char *nh_lua_json_encode(lua_State *L, int idx, const char *empty, size_t empty_len,
                               size_t *len) {
    if (c_buf.cap > JBUF_KEEP) {
        free(c_buf.data);
        c_buf.data = NULL;
        c_buf.cap = 0;
    }
    int top = lua_gettop(L);
    enc_t e = {L, &c_buf, empty, empty_len, 1, 0};
    c_buf.len = 0;
    if (idx < 0) idx = top + 1 + idx; /* the traversal pushes: a relative index would move */
    put_value(&e, idx, top, 0);       /* leaves the stack as it was, but where it failed */
    if (e.failed) {
        lua_settop(L, top);
        return NULL;
    }
    *len = c_buf.len;
    return c_buf.len ? c_buf.data : "";
}

/* encode(value [, empty_array]) -> string */
static int l_encode(lua_State *L) {
    return encode(L, 0, 2);
}

/* A try_encoder's function: (value) -> string | "" for nil | nil where encode raises. */
static int l_try_encode(lua_State *L) {
    if (lua_isnoneornil(L, 1)) {
        lua_pushliteral(L, "");
        return 1;
    }
    return encode(L, 1, lua_upvalueindex(2));
}

/* try_encoder([empty_array]) -> function(value): encode with that marker, without raising. For a
 * caller that must not run it under pcall: LuaJIT does not compile the return from a function a
 * pcall called after it called C, so nano's dispatcher calls this directly (lua/nano/json.lua). */
static int l_try_encoder(lua_State *L) {
    lua_settop(L, 1);
    lua_pushvalue(L, lua_upvalueindex(1)); /* the encoders' buffer */
    lua_insert(L, 1);
    lua_pushcclosure(L, l_try_encode, 2);
    return 1;
}

/* format_number(x) -> string */
static int l_format_number(lua_State *L) {
    lua_Number x = luaL_checknumber(L, 1);
    if (isnan(x) || isinf(x))
        return luaL_error(L, "Cannot serialise number: must not be NaN or Inf");
    char buf[32];
    lua_pushlstring(L, buf, format_double(x, buf));
    return 1;
}

/* ---- decoding ---- */

typedef struct dec {
    lua_State *L;
    const unsigned char *p, *end;
    jbuf_t *b; /* unescaped strings */
    int depth;
    nh_strcache_t *keys; /* object keys pushed through it (NULL: as lua_pushlstring does) */
    int key_slot;        /* the last key's entry in keys; -1: it did not go through the cache */
} dec_t;

static inline void skip_ws(dec_t *d) {
    /* Nearly always none: every byte that may follow is above the space, one compare. */
    if (d->p < d->end && (unsigned)*d->p > 0x20) return;
    while (d->p < d->end && (*d->p == ' ' || *d->p == '\n' || *d->p == '\r' || *d->p == '\t'))
        d->p++;
}

static int hex4(const unsigned char *p, unsigned *out) {
    unsigned v = 0;
    for (int i = 0; i < 4; i++) {
        unsigned c = p[i], x;
        if (c >= '0' && c <= '9')
            x = c - '0';
        else if (c >= 'a' && c <= 'f')
            x = c - 'a' + 10;
        else if (c >= 'A' && c <= 'F')
            x = c - 'A' + 10;
        else
            return -1;
        v = v << 4 | x;
    }
    *out = v;
    return 0;
}

static size_t utf8_put(char *o, unsigned cp) {
    if (cp < 0x80) {
        o[0] = (char)cp;
        return 1;
    }
    if (cp < 0x800) {
        o[0] = (char)(0xC0 | cp >> 6);
        o[1] = (char)(0x80 | (cp & 0x3F));
        return 2;
    }
    if (cp < 0x10000) {
        o[0] = (char)(0xE0 | cp >> 12);
        o[1] = (char)(0x80 | (cp >> 6 & 0x3F));
        o[2] = (char)(0x80 | (cp & 0x3F));
        return 3;
    }
    o[0] = (char)(0xF0 | cp >> 18);
    o[1] = (char)(0x80 | (cp >> 12 & 0x3F));
    o[2] = (char)(0x80 | (cp >> 6 & 0x3F));
    o[3] = (char)(0x80 | (cp & 0x3F));
    return 4;
}

/* A string (d->p at the opening quote) pushed onto the stack; an object's key (key: 1) through
 * the key cache, values as they are (they repeat less, and would only churn it). */
static int d_string(dec_t *d, int key) {
    const unsigned char *s = ++d->p, *p = s;
    while (p < d->end && *p != '"' && *p != '\\' && *p >= 0x20)
        p++;
    if (p >= d->end || *p < 0x20) return -1;
    if (*p == '"') { /* no escapes: the common case */
        d->key_slot =
            nh_strcache_push(key ? d->keys : NULL, d->L, (const char *)s, (size_t)(p - s));
        d->p = p + 1;
        return 0;
    }
    /* escapes: unescaped text is never longer than the escaped one */
    jbuf_t *b = d->b;
    size_t room = (size_t)(d->end - s);
    if (b->cap < room) {
        char *n = realloc(b->data, room);
        if (!n) return -1;
        b->data = n;
        b->cap = room;
    }
    char *o = b->data;
    memcpy(o, s, (size_t)(p - s));
    o += p - s;
    for (;;) {
        if (p >= d->end || *p < 0x20) return -1;
        unsigned char c = *p++;
        if (c == '"') break;
        if (c != '\\') {
            *o++ = (char)c;
            continue;
        }
        if (p >= d->end) return -1;
        c = *p++;
        switch (c) {
        case '"':
        case '\\':
        case '/':
            *o++ = (char)c;
            break;
        case 'b':
            *o++ = '\b';
            break;
        case 'f':
            *o++ = '\f';
            break;
        case 'n':
            *o++ = '\n';
            break;
        case 'r':
            *o++ = '\r';
            break;
        case 't':
            *o++ = '\t';
            break;
        case 'u': {
            unsigned cp, lo;
            if (d->end - p < 4 || hex4(p, &cp)) return -1;
            p += 4;
            if (cp >= 0xDC00 && cp <= 0xDFFF) return -1; /* lone low surrogate */
            if (cp >= 0xD800 && cp <= 0xDBFF) {
                if (d->end - p < 6 || p[0] != '\\' || p[1] != 'u' || hex4(p + 2, &lo) ||
                    lo < 0xDC00 || lo > 0xDFFF)
                    return -1;
                p += 6;
                cp = 0x10000 + ((cp - 0xD800) << 10) + (lo - 0xDC00);
            }
            /* at most 4 bytes for at least 6 read: stays within room */
            o += utf8_put(o, cp);
            break;
        }
        default:
            return -1;
        }
    }
    d->key_slot = nh_strcache_push(key ? d->keys : NULL, d->L, b->data, (size_t)(o - b->data));
    d->p = p;
    return 0;
}

/* RFC 8259 number; integers of up to 15 digits exactly, the rest as strtod reads them. */
static int d_number(dec_t *d) {
    const unsigned char *s = d->p, *p = s;
    int neg = 0;
    if (p < d->end && *p == '-') {
        neg = 1;
        p++;
    }
    if (p >= d->end || *p < '0' || *p > '9') return -1;
    const unsigned char *digits = p;
    /* the integer part, read as it is scanned (it wraps past 19 digits: unused then) */
    uint64_t v = 0;
    if (*p == '0') {
        p++;
    } else {
        unsigned dgt;
        while (p < d->end && (dgt = (unsigned)*p - '0') <= 9) {
            v = v * 10 + dgt;
            p++;
        }
    }
    size_t ndigits = (size_t)(p - digits);
    int plain_int = 1;
    if (p < d->end && *p == '.') {
        plain_int = 0;
        p++;
        if (p >= d->end || *p < '0' || *p > '9') return -1;
        while (p < d->end && *p >= '0' && *p <= '9')
            p++;
    }
    if (p < d->end && (*p == 'e' || *p == 'E')) {
        plain_int = 0;
        p++;
        if (p < d->end && (*p == '+' || *p == '-')) p++;
        if (p >= d->end || *p < '0' || *p > '9') return -1;
        while (p < d->end && *p >= '0' && *p <= '9')
            p++;
    }
    if (p < d->end && *p >= '0' && *p <= '9') return -1; /* "01" */
    /* up to 15 digits, v is exact in a double */
    if (plain_int && ndigits <= 15) {
        lua_pushnumber(d->L, neg ? (v ? -(lua_Number)v : -0.0) : (lua_Number)v);
    } else {
        char tmp[64];
        size_t n = (size_t)(p - s);
        if (n >= sizeof tmp) return -1; /* lua-cjson reads it */
        memcpy(tmp, s, n);
        tmp[n] = '\0';
        lua_pushnumber(d->L, strtod(tmp, NULL));
    }
    d->p = p;
    return 0;
}

static int d_literal(dec_t *d, const char *word, size_t n) {
    if ((size_t)(d->end - d->p) < n || memcmp(d->p, word, n) != 0) return -1;
    d->p += n;
    return 0;
}

static int d_value(dec_t *d);

/* Objects and arrays are built from their first DEC_BATCH members held on the stack, in a table
 * created at that size: filling an empty table rehashes it as it grows (the hash part 0 -> 1 -> 2
 * -> 4: lua_rawset on a one-key object cost ~420 instructions, most of a small payload's decode).
 * Members past the batch go into the table as they come (it grows as before). */
#define DEC_BATCH 16

/* A table with room for nrec keys, made of the n key/value pairs above index base + 1, in order
 * (a key given twice keeps its last value, as lua-cjson's); it takes the place held for it at
 * base + 1 (a slot the caller pushed first, so that nothing above moves), which is returned, and
 * replaces the pairs. distinct: no key is given twice, so the pairs are set from the top, as
 * lua_rawset pops them, with no copies (the last pair first: only a key given twice could tell). */
static int object_of_pairs(lua_State *L, int base, int n, int nrec, int distinct) {
    int t = base + 1;
    lua_createtable(L, 0, nrec);
    lua_replace(L, t);
    if (distinct) {
        for (int i = 0; i < n; i++)
            lua_rawset(L, t);
        return t;
    }
    for (int i = 0; i < n; i++) {
        lua_pushvalue(L, t + 1 + 2 * i);
        lua_pushvalue(L, t + 2 + 2 * i);
        lua_rawset(L, t);
    }
    lua_settop(L, t);
    return t;
}

/* 1 when the key d_string just read is not one of the object's keys before it, as far as the
 * set of their string cache entries tells (seen: 256 bits, one per entry; equal keys share an
 * entry); 0 when it may be, or did not go through the cache. A few instructions a key, where two
 * lua_pushvalue were ~46 (object_of_pairs). */
_Static_assert(NH_STRCACHE_SIZE % 64 == 0, "key_is_new's set is whole 64-bit words");
static int key_is_new(const dec_t *d, uint64_t seen[NH_STRCACHE_SIZE / 64]) {
    if (d->key_slot < 0) return 0;
    unsigned h = (unsigned)d->key_slot;
    uint64_t bit = 1ull << (h & 63);
    if (seen[h >> 6] & bit) return 0;
    seen[h >> 6] |= bit;
    return 1;
}

/* The same for an array of the n values above base + 1, with room for narr. */
static int array_of_values(lua_State *L, int base, int n, int narr) {
    int t = base + 1;
    lua_createtable(L, narr, 0);
    lua_replace(L, t);
    for (int k = n; k >= 1; k--) /* pops from the top: the last element first */
        lua_rawseti(L, t, k);
    return t;
}

static int d_object(dec_t *d) {
    lua_State *L = d->L;
    d->p++;
    skip_ws(d);
    if (d->p < d->end && *d->p == '}') {
        d->p++;
        lua_createtable(L, 0, 0);
        return 0;
    }
    /* t: the table's index once created (0 until the first batch is full or the object ends) */
    int base = lua_gettop(L), t = 0, n = 0, distinct = 1;
    uint64_t seen[NH_STRCACHE_SIZE / 64] = {0};
    if (!lua_checkstack(L, 2 * DEC_BATCH + 4)) return -1;
    lua_pushnil(L); /* the table's place */
    for (;;) {
        skip_ws(d);
        if (d->p >= d->end || *d->p != '"' || d_string(d, 1)) return -1;
        if (distinct && !t) distinct = key_is_new(d, seen);
        skip_ws(d);
        if (d->p >= d->end || *d->p != ':') return -1;
        d->p++;
        skip_ws(d);
        if (d_value(d)) return -1;
        if (t) {
            lua_rawset(L, t);
        } else if (++n == DEC_BATCH) {
            t = object_of_pairs(L, base, n, 2 * DEC_BATCH, distinct);
        }
        skip_ws(d);
        if (d->p >= d->end) return -1;
        if (*d->p == ',') {
            d->p++;
            continue;
        }
        if (*d->p != '}') return -1;
        d->p++;
        if (!t) object_of_pairs(L, base, n, n, distinct);
        return 0;
    }
}

static int d_array(dec_t *d) {
    lua_State *L = d->L;
    d->p++;
    skip_ws(d);
    if (d->p < d->end && *d->p == ']') {
        d->p++;
        lua_createtable(L, 0, 0);
        return 0;
    }
    int base = lua_gettop(L), t = 0, n = 0;
    if (!lua_checkstack(L, DEC_BATCH + 4)) return -1;
    lua_pushnil(L); /* the table's place */
    for (int i = 1;; i++) {
        skip_ws(d);
        if (d_value(d)) return -1;
        if (t) {
            lua_rawseti(L, t, i);
        } else if (++n == DEC_BATCH) {
            t = array_of_values(L, base, n, 2 * DEC_BATCH);
        }
        skip_ws(d);
        if (d->p >= d->end) return -1;
        if (*d->p == ',') {
            d->p++;
            continue;
        }
        if (*d->p != ']') return -1;
        d->p++;
        if (!t) array_of_values(L, base, n, n);
        return 0;
    }
}

/* One value at d->p (no leading whitespace) pushed; -1: not plain JSON (stack left to caller). */
static int d_value(dec_t *d) {
    if (d->p >= d->end) return -1;
    switch (*d->p) {
    case '{':
    case '[': {
        if (++d->depth > JSON_MAX_DEPTH) return -1;
        int r = *d->p == '{' ? d_object(d) : d_array(d);
        d->depth--;
        return r;
    }
    case '"':
        return d_string(d, 0);
    case 't':
        if (d_literal(d, "true", 4)) return -1;
        lua_pushboolean(d->L, 1);
        return 0;
    case 'f':
        if (d_literal(d, "false", 5)) return -1;
        lua_pushboolean(d->L, 0);
        return 0;
    case 'n':
        if (d_literal(d, "null", 4)) return -1;
        lua_pushlightuserdata(d->L, NULL); /* cjson.null */
        return 0;
    default:
        return d_number(d);
    }
}

/* Pushes the value of the text and returns 1; 0, with nothing pushed, when it is not plain JSON.
 * b: the buffer for unescaped strings. */
static int decode_into(lua_State *L, const char *s, size_t len, jbuf_t *b, nh_strcache_t *keys) {
    int top = lua_gettop(L);
    dec_t d = {L, (const unsigned char *)s, (const unsigned char *)s + len, b, 0, keys, -1};
    skip_ws(&d);
    int r = d_value(&d);
    if (r == 0) {
        skip_ws(&d);
        if (d.p != d.end) r = -1;
    }
    if (b->cap > JBUF_KEEP) {
        free(b->data);
        b->data = NULL;
        b->cap = 0;
    }
    if (r != 0) {
        lua_settop(L, top);
        return 0;
    }
    return 1;
}

/* decode(text) -> true, value | false (not plain JSON: ask lua-cjson) */
static int l_decode(lua_State *L) {
    size_t len;
    const char *s = luaL_checklstring(L, 1, &len);
    lua_settop(L, 1);
    if (!decode_into(L, s, len, lua_touserdata(L, lua_upvalueindex(1)), NULL)) {
        lua_pushboolean(L, 0);
        return 1;
    }
    lua_pushboolean(L, 1);
    lua_insert(L, -2);
    return 2;
}

static jbuf_t c_dec_buf; /* nh_lua_json_decode's */

int nh_lua_json_decode(lua_State *L, const char *s, size_t len, nh_strcache_t *keys) {
    return decode_into(L, s, len, &c_dec_buf, keys);
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
    lua_pushvalue(L, -1);
    lua_pushcclosure(L, l_encode, 1);
    lua_setfield(L, -3, "encode");
    lua_pushcclosure(L, l_try_encoder, 1); /* the same buffer: neither runs inside the other */
    lua_setfield(L, -2, "try_encoder");
    lua_pushcfunction(L, l_format_number);
    lua_setfield(L, -2, "format_number");
    b = lua_newuserdata(L, sizeof *b);
    memset(b, 0, sizeof *b);
    luaL_getmetatable(L, JBUF_MT);
    lua_setmetatable(L, -2);
    lua_pushcclosure(L, l_decode, 1);
    lua_setfield(L, -2, "decode");
    /* the flat writer (above): its functions, and the mark the dispatcher returns for its text */
    lua_pushlightuserdata(L, (void *)&flat_fns);
    lua_setfield(L, -2, "flat_writer");
    /* its size: nano uses it only where its own declaration has the same (a Lua tree of another
     * version than the binary would call the wrong functions) */
    lua_pushinteger(L, (lua_Integer)sizeof flat_fns);
    lua_setfield(L, -2, "flat_writer_size");
    lua_pushlightuserdata(L, (void *)&flat_buf);
    lua_setfield(L, -2, "flat_mark");
    lua_pushcfunction(L, l_flat_taken);
    lua_setfield(L, -2, "flat_taken");
    return 1;
}
