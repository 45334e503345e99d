/* `nano.protobuf_codec`: protocol buffers for Lua on core/protobuf.c (the serializer
 * lua/nano/protobuf.lua is built on it).
 *
 *   local pbc = require "nano.protobuf_codec"
 *   local schema = assert(pbc.load(descriptor_set_bytes))   -- protoc --descriptor_set_out
 *   schema:encode("pkg.Msg", t) -> bytes          raises on a value the schema cannot take
 *   schema:decode("pkg.Msg", bytes [, enums_as_numbers]) -> t | nil, err
 *   schema:has("Msg") -> boolean                    full or unambiguous short name
 *   schema:codec("pkg.Msg") -> encode(t), decode(bytes [, enums_as_numbers])   for one type
 *   pbc.build(messages, "pomelo") -> schema          a schema made by hand (see l_build)
 *
 * Lua values (docs/api.md, "Protobuf"): messages are tables keyed by the .proto field names;
 * repeated fields are sequences, maps are tables; enums decode to their value names (numbers when
 * enums_as_numbers, or for a number the enum does not name) and encode from names or numbers;
 * 64-bit integers decode to numbers up to 2^53 in magnitude and to decimal strings beyond (so no
 * value is rounded), and encode from numbers, decimal strings or LuaJIT int64/uint64 cdata;
 * bytes and string are Lua strings. Decoded tables hold the fields present on the wire only (no
 * defaults filled in). Keys of a table that are not fields of its message are ignored.
 */
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include <lauxlib.h>

#include "lua_binding.h"
#include "protobuf.h"

#define SCHEMA_MT "nano.protobuf_codec.schema"
#define LUA_TCDATA_TYPE 10 /* LuaJIT's type tag for FFI cdata (not in lua.h) */
#define TWO_53 9007199254740992.0

typedef struct lschema {
    nh_pb_schema_t *s;
    nh_pb_buf_t out; /* reused by every encode: one allocation that stays warm */
} lschema_t;

/* A reused output buffer above this is freed rather than kept: one huge message does not pin it. */
#define BUF_KEEP (1u << 20)

/* Empties a reused output buffer for the next message (freed instead when one grew it huge). */
static void buf_restart(nh_pb_buf_t *b) {
    if (b->cap > BUF_KEEP) nh_pb_buf_free(b);
    b->len = 0;
    b->failed = 0;
}

/* The userdata's environment table caches message types by name, and holds each field's name
 * as a Lua string at [field index + 1] (make_names): a field's key is pushed with one
 * lua_rawgeti from it, where interning the C string cost ~65 instructions a field each way
 * (docs/benchmarks.md). The codec keeps that table on the stack while it works: names is its
 * index. */
static inline void push_name(lua_State *L, int names, const nh_pb_field_t *f) {
    lua_rawgeti(L, names, (int)f->index + 1);
}

/* The methods hold the metatable as their upvalue: comparing with it is cheaper than
 * luaL_checkudata's registry lookup by name, on a path taken once per message. */
static lschema_t *check_schema(lua_State *L) {
    lschema_t *ls = lua_touserdata(L, 1);
    if (!ls || !lua_getmetatable(L, 1) || !lua_rawequal(L, -1, lua_upvalueindex(1)))
        luaL_typerror(L, 1, SCHEMA_MT);
    lua_pop(L, 1);
    if (!ls->s) luaL_error(L, "protobuf schema already freed");
    return ls;
}

/* The message type named by the string at idx, through a per-schema cache (the userdata's
 * environment table), so a lookup is a table get after the first. */
static const nh_pb_message_t *find_message(lua_State *L, lschema_t *ls, int idx, int raise) {
    const char *name = luaL_checkstring(L, idx);
    lua_getfenv(L, 1);
    lua_pushvalue(L, idx);
    lua_rawget(L, -2);
    const nh_pb_message_t *m = lua_touserdata(L, -1);
    lua_pop(L, 1);
    if (!m) {
        m = nh_pb_schema_message(ls->s, name);
        if (m) {
            lua_pushvalue(L, idx);
            lua_pushlightuserdata(L, (void *)m);
            lua_rawset(L, -3);
        }
    }
    lua_pop(L, 1);
    if (!m && raise) luaL_error(L, "protobuf: no message type '%s' in the schema", name);
    return m;
}

/* ---- decoding: the visitor builds tables on the Lua stack (top: the message being filled) ---- */

typedef struct decode_ctx {
    lua_State *L;
    int enums_as_numbers;
    int names; /* stack index of the names (push_name) */
} decode_ctx_t;

static void push_i64(lua_State *L, int64_t v) {
    if (v >= -(int64_t)TWO_53 && v <= (int64_t)TWO_53) {
        lua_pushnumber(L, (lua_Number)v);
    } else {
        char buf[24];
        snprintf(buf, sizeof buf, "%lld", (long long)v);
        lua_pushstring(L, buf);
    }
}

static void push_u64(lua_State *L, uint64_t v) {
    if (v <= (uint64_t)TWO_53) {
        lua_pushnumber(L, (lua_Number)v);
    } else {
        char buf[24];
        snprintf(buf, sizeof buf, "%llu", (unsigned long long)v);
        lua_pushstring(L, buf);
    }
}

static void push_scalar(decode_ctx_t *c, const nh_pb_field_t *f, nh_pb_scalar_t v) {
    lua_State *L = c->L;
    switch (f->type) {
    case NH_PB_DOUBLE:
    case NH_PB_FLOAT:
        lua_pushnumber(L, v.d);
        break;
    case NH_PB_BOOL:
        lua_pushboolean(L, v.b);
        break;
    case NH_PB_ENUM: {
        const nh_pb_enum_value_t *ev =
            c->enums_as_numbers ? NULL : nh_pb_enum_by_number(f->enumt, (int32_t)v.i);
        if (ev)
            lua_pushstring(L, ev->name);
        else
            lua_pushnumber(L, (lua_Number)v.i);
        break;
    }
    case NH_PB_UINT32:
    case NH_PB_FIXED32:
    case NH_PB_UINT64:
    case NH_PB_FIXED64:
        push_u64(L, v.u);
        break;
    default:
        push_i64(L, v.i);
        break;
    }
}

/* Another member of the same oneof was set before: only the last one stays. */
static void clear_oneof(lua_State *L, int names, const nh_pb_message_t *m, const nh_pb_field_t *f,
                        int t) {
    for (size_t i = 0; i < m->nfields; i++) {
        const nh_pb_field_t *o = &m->fields[i];
        if (o != f && o->oneof == f->oneof) {
            push_name(L, names, o);
            lua_pushnil(L);
            lua_rawset(L, t);
        }
    }
}

/* The message type of each table on the stack (a field does not know its message; a oneof
 * needs its siblings). */
typedef struct frame {
    const nh_pb_message_t *m;
} frame_t;

typedef struct decode_state {
    decode_ctx_t c;
    frame_t frames[NH_PB_MAX_DEPTH + 2];
    int depth;
} decode_state_t;

/* The tables the decoder makes have no metatable: raw gets and sets are what lua_getfield and
 * lua_setfield would do. */

/* Pushes the sequence of repeated field f in the table at t, made when it is not there yet. */
static void push_sequence(decode_state_t *d, const nh_pb_field_t *f, int t) {
    lua_State *L = d->c.L;
    push_name(L, d->c.names, f);
    lua_rawget(L, t);
    if (!lua_istable(L, -1)) {
        lua_pop(L, 1);
        lua_newtable(L);
        push_name(L, d->c.names, f);
        lua_pushvalue(L, -2);
        lua_rawset(L, t);
    }
}

/* Stores the value on top of the stack as element of repeated field f of the table below it,
 * and pops it. */
static void store_element(decode_state_t *d, const nh_pb_field_t *f) {
    lua_State *L = d->c.L;
    push_sequence(d, f, lua_gettop(L) - 1);
    lua_insert(L, -2); /* t ... arr value */
    lua_rawseti(L, -2, (int)lua_objlen(L, -2) + 1);
    lua_pop(L, 1);
}

/* A field that is not repeated: its name is pushed before its value, for one lua_rawset. */
static void begin_single(decode_state_t *d, const nh_pb_field_t *f) {
    lua_State *L = d->c.L;
    if (f->oneof >= 0) clear_oneof(L, d->c.names, d->frames[d->depth].m, f, lua_gettop(L));
    push_name(L, d->c.names, f);
}

static int on_scalar(void *ud, const nh_pb_field_t *f, nh_pb_scalar_t v) {
    decode_state_t *d = ud;
    if (f->repeated) {
        push_scalar(&d->c, f, v);
        store_element(d, f);
        return 0;
    }
    begin_single(d, f);
    push_scalar(&d->c, f, v);
    lua_rawset(d->c.L, -3);
    return 0;
}

static int on_bytes(void *ud, const nh_pb_field_t *f, const uint8_t *p, size_t len) {
    decode_state_t *d = ud;
    if (f->repeated) {
        lua_pushlstring(d->c.L, (const char *)p, len);
        store_element(d, f);
        return 0;
    }
    begin_single(d, f);
    lua_pushlstring(d->c.L, (const char *)p, len);
    lua_rawset(d->c.L, -3);
    return 0;
}

static int is_map(const nh_pb_field_t *f) {
    return f->repeated && f->type == NH_PB_MESSAGE && f->message->map_entry;
}

static int on_begin(void *ud, const nh_pb_field_t *f) {
    decode_state_t *d = ud;
    lua_State *L = d->c.L;
    if (!lua_checkstack(L, 8)) return 1;
    int t = lua_gettop(L);
    if (is_map(f) || f->repeated) {
        /* a map's entry is collected, then moved into the map at the end */
        lua_createtable(L, 0, f->message->nfields < 16 ? (int)f->message->nfields : 16);
    } else {
        /* a message field seen twice is merged, as protobuf says */
        push_name(L, d->c.names, f);
        lua_rawget(L, t);
        if (!lua_istable(L, -1)) {
            lua_pop(L, 1);
            if (f->oneof >= 0) clear_oneof(L, d->c.names, d->frames[d->depth].m, f, t);
            lua_createtable(L, 0, f->message->nfields < 16 ? (int)f->message->nfields : 16);
            push_name(L, d->c.names, f);
            lua_pushvalue(L, -2);
            lua_rawset(L, t);
        }
    }
    d->frames[++d->depth].m = f->message;
    return 0;
}

/* The value a map entry without one on the wire gets: the type's zero. */
static void push_default(lua_State *L, const nh_pb_field_t *f, int enums_as_numbers) {
    switch (f->type) {
    case NH_PB_STRING:
    case NH_PB_BYTES:
        lua_pushliteral(L, "");
        break;
    case NH_PB_BOOL:
        lua_pushboolean(L, 0);
        break;
    case NH_PB_MESSAGE:
        lua_newtable(L);
        break;
    case NH_PB_ENUM:
        if (enums_as_numbers)
            lua_pushnumber(L, f->enumt->values[0].number);
        else
            lua_pushstring(L, f->enumt->values[0].name);
        break;
    default:
        lua_pushnumber(L, 0);
        break;
    }
}

static int on_end(void *ud, const nh_pb_field_t *f) {
    decode_state_t *d = ud;
    lua_State *L = d->c.L;
    d->depth--;
    if (is_map(f)) {
        int entry = lua_gettop(L), t = entry - 1;
        const nh_pb_field_t *kf = nh_pb_field_by_number(f->message, 1);
        const nh_pb_field_t *vf = nh_pb_field_by_number(f->message, 2);
        if (!kf || !vf) return 1;
        push_sequence(d, f, t); /* the map */
        push_name(L, d->c.names, kf);
        lua_rawget(L, entry);
        if (lua_isnil(L, -1)) {
            lua_pop(L, 1);
            push_default(L, kf, d->c.enums_as_numbers);
        }
        push_name(L, d->c.names, vf);
        lua_rawget(L, entry);
        if (lua_isnil(L, -1)) {
            lua_pop(L, 1);
            push_default(L, vf, d->c.enums_as_numbers);
        }
        lua_rawset(L, -3);
        lua_pop(L, 2); /* map, entry */
        return 0;
    }
    if (f->repeated) {
        store_element(d, f);
        return 0;
    }
    lua_pop(L, 1);
    return 0;
}

static const nh_pb_visitor_t to_lua = {on_scalar, on_bytes, on_begin, on_end};

/* Decodes len bytes as m into a new table: pushes it and returns 0, or an nh_pb error with the
 * stack as it was. names: the stack index of its schema's names (push_name). Raises only when
 * out of memory. */
static int decode_bytes(lua_State *L, int names, const nh_pb_message_t *m, const uint8_t *data,
                        size_t len, int enums_as_numbers) {
    decode_state_t d; /* not zeroed whole: frames are written as the decoder goes down */
    d.c.L = L;
    d.c.enums_as_numbers = enums_as_numbers;
    d.c.names = names;
    d.frames[0].m = m;
    d.depth = 0;
    int top = lua_gettop(L);
    /* sized for the fields most messages carry: no rehash while it fills */
    lua_createtable(L, 0, m->nfields < 16 ? (int)m->nfields : 16);
    int e = nh_pb_decode(m, data, len, &to_lua, &d);
    lua_settop(L, e ? top : top + 1);
    return e;
}

/* Decodes the string at idx as m (a type of the schema at ud) into a new table: pushes the
 * table, or nil and the error. */
static int decode_at(lua_State *L, int ud, const nh_pb_message_t *m, int idx,
                     int enums_as_numbers) {
    size_t len;
    const char *data = luaL_checklstring(L, idx, &len);
    lua_getfenv(L, ud);
    int e = decode_bytes(L, lua_gettop(L), m, (const uint8_t *)data, len, enums_as_numbers);
    if (e) {
        lua_pushnil(L);
        lua_pushfstring(L, "%s: %s", m->full_name, nh_pb_strerror(e));
        return 2;
    }
    return 1;
}

/* schema:decode(type, bytes [, enums_as_numbers]) -> table | nil, err */
static int l_decode(lua_State *L) {
    lschema_t *ls = check_schema(L);
    const nh_pb_message_t *m = find_message(L, ls, 2, 1);
    return decode_at(L, 1, m, 3, lua_toboolean(L, 4));
}

/* ---- encoding: a table walked by the schema's fields, in field-number order ---- */

typedef struct encode_ctx {
    lua_State *L;
    nh_pb_buf_t *b;
    const nh_pb_message_t *m; /* whose field is being written (for errors) */
    int names;                /* stack index of the names (push_name) */
    /* soft: where the encoder would raise (a value the schema cannot take, nesting too deep, no
     * Lua stack left) or would call Lua (an int64 cdata's tostring), it gives up instead: sets
     * gave_up and returns, the output and the Lua stack above the value unfinished. The core
     * encodes a response that way without lua_pcall first (nh_lua_pb_core_encode). */
    int soft, gave_up;
} encode_ctx_t;

/* Soft mode's stop: marks the encode given up; returns 0. */
static int give_up(encode_ctx_t *c) {
    c->gave_up = 1;
    return 0;
}

/* Raises, or in soft mode gives up and returns 0. */
static int fail(encode_ctx_t *c, const char *fmt, ...) {
    if (c->soft) return give_up(c);
    va_list ap;
    va_start(ap, fmt);
    lua_pushvfstring(c->L, fmt, ap);
    va_end(ap);
    return lua_error(c->L);
}

/* Raises (never returns), or in soft mode gives up and returns 0. */
static int bad_value(encode_ctx_t *c, const nh_pb_field_t *f, int idx, const char *want) {
    if (c->soft) return give_up(c);
    lua_State *L = c->L;
    const char *got = luaL_typename(L, idx);
    if (lua_type(L, idx) == LUA_TNUMBER || lua_type(L, idx) == LUA_TSTRING)
        return luaL_error(L, "protobuf: %s.%s: expected %s, got %s '%s'", c->m->full_name, f->name,
                          want, got, lua_tostring(L, idx));
    return luaL_error(L, "protobuf: %s.%s: expected %s, got %s", c->m->full_name, f->name, want,
                      got);
}

/* The scalar a Lua number gives a field of a numeric type (not bool, string, bytes or message):
 * 0 with *v set, or -1 when it does not fit (not integral, or out of the type's range). The
 * encoder and the flat writer (below) both read numbers through it. */
static int scalar_of_number(int type, double d, nh_pb_scalar_t *v) {
    v->u = 0;
    switch (type) {
    case NH_PB_DOUBLE:
    case NH_PB_FLOAT:
        v->d = d;
        return 0;
    case NH_PB_BOOL:
    case NH_PB_STRING:
    case NH_PB_BYTES:
    case NH_PB_MESSAGE:
    case NH_PB_GROUP:
        return -1;
    default:
        break;
    }
    /* in range first (NaN is not), then integral: converted and back, without floor()'s call */
    switch (type) {
    case NH_PB_UINT32:
    case NH_PB_FIXED32:
        if (!(d >= 0 && d <= 4294967295.0)) return -1;
        v->u = (uint64_t)d;
        return (double)v->u == d ? 0 : -1;
    case NH_PB_UINT64:
    case NH_PB_FIXED64:
        if (!(d >= 0 && d < 18446744073709551616.0)) return -1;
        v->u = (uint64_t)d;
        return (double)v->u == d ? 0 : -1;
    case NH_PB_INT64:
    case NH_PB_SINT64:
    case NH_PB_SFIXED64:
        if (!(d >= -9223372036854775808.0 && d < 9223372036854775808.0)) return -1;
        v->i = (int64_t)d;
        return (double)v->i == d ? 0 : -1;
    default: /* int32, sint32, sfixed32, enum */
        if (!(d >= -2147483648.0 && d <= 2147483647.0)) return -1;
        v->i = (int64_t)d;
        if ((double)v->i != d) return -1;
        if (type == NH_PB_SFIXED32) v->u = (uint32_t)(int32_t)v->i;
        return 0;
    }
}

/* What a field of a numeric type takes, for the error when a value does not fit. */
static const char *number_wanted(int type) {
    switch (type) {
    case NH_PB_UINT32:
    case NH_PB_FIXED32:
        return "an unsigned 32-bit integer";
    case NH_PB_UINT64:
    case NH_PB_FIXED64:
        return "an unsigned 64-bit integer";
    case NH_PB_INT64:
    case NH_PB_SINT64:
    case NH_PB_SFIXED64:
        return "a 64-bit integer";
    default:
        return "a 32-bit integer";
    }
}

/* A 64-bit value from a decimal string or an int64/uint64 cdata (whose tostring is "123LL" /
 * "123ULL"); numbers are read by scalar_of_number. */
static nh_pb_scalar_t to_64(encode_ctx_t *c, const nh_pb_field_t *f, int idx, int is_unsigned) {
    lua_State *L = c->L;
    nh_pb_scalar_t v = {.u = 0};
    int t = lua_type(L, idx);
    size_t len = 0;
    const char *s = NULL;
    if (t == LUA_TSTRING) {
        s = lua_tolstring(L, idx, &len);
    } else if (t == LUA_TCDATA_TYPE) {
        if (c->soft) { /* its text takes a call into Lua */
            give_up(c);
            return v;
        }
        lua_getglobal(L, "tostring");
        lua_pushvalue(L, idx);
        lua_call(L, 1, 1);
        s = lua_tolstring(L, -1, &len);
        while (s && len && (s[len - 1] == 'L' || s[len - 1] == 'U'))
            len--;
        lua_replace(L, idx); /* keep the string alive in the value's slot */
    }
    if (!s || nh_pb_parse_int64(s, len, is_unsigned, &v))
        bad_value(c, f, idx, number_wanted(f->type));
    return v;
}

static nh_pb_scalar_t to_scalar(encode_ctx_t *c, const nh_pb_field_t *f, int idx) {
    lua_State *L = c->L;
    nh_pb_scalar_t v;
    v.u = 0;
    int t = lua_type(L, idx);
    if (t == LUA_TNUMBER && f->type != NH_PB_BOOL) {
        if (scalar_of_number(f->type, lua_tonumber(L, idx), &v) != 0)
            bad_value(c, f, idx, number_wanted(f->type));
        return v;
    }
    switch (f->type) {
    case NH_PB_BOOL:
        if (t != LUA_TBOOLEAN) bad_value(c, f, idx, "a boolean");
        v.b = lua_toboolean(L, idx);
        break;
    case NH_PB_DOUBLE:
    case NH_PB_FLOAT:
        bad_value(c, f, idx, "a number");
        break;
    case NH_PB_ENUM:
        if (t == LUA_TSTRING) {
            size_t len;
            const char *s = lua_tolstring(L, idx, &len);
            const nh_pb_enum_value_t *ev = nh_pb_enum_by_name(f->enumt, s, len);
            if (ev)
                v.i = ev->number;
            else
                bad_value(c, f, idx, "a value name of the enum");
            break;
        }
        bad_value(c, f, idx, "an enum value name or number");
        break;
    case NH_PB_INT32:
    case NH_PB_SINT32:
    case NH_PB_SFIXED32:
    case NH_PB_UINT32:
    case NH_PB_FIXED32:
        bad_value(c, f, idx, number_wanted(f->type));
        break;
    case NH_PB_UINT64:
    case NH_PB_FIXED64:
        v = to_64(c, f, idx, 1);
        break;
    default:
        v = to_64(c, f, idx, 0);
        break; /* int64, sint64, sfixed64 */
    }
    return v;
}

static int scalar_is_zero(int type, nh_pb_scalar_t v) {
    switch (type) {
    case NH_PB_DOUBLE:
    case NH_PB_FLOAT:
        return v.d == 0 && !signbit(v.d); /* -0.0 is written, as protobuf-go does */
    case NH_PB_BOOL:
        return !v.b;
    default:
        return v.u == 0;
    }
}

/* A field of a numeric type (its tag, then the value). skip_zero: a proto3 field without
 * presence, whose zero value is not written. */
static void put_scalar_field(nh_pb_buf_t *b, uint32_t number, int type, nh_pb_scalar_t v,
                             int skip_zero) {
    if (skip_zero && scalar_is_zero(type, v)) return;
    nh_pb_put_tag(b, number, nh_pb_wire_of(type));
    nh_pb_put_scalar(b, type, v);
}

/* A string or bytes field (its tag, the length, the bytes); skip_zero as above. */
static void put_string_field(nh_pb_buf_t *b, uint32_t number, const char *s, size_t len,
                             int skip_zero) {
    if (skip_zero && len == 0) return;
    nh_pb_put_tag(b, number, NH_PB_LEN);
    nh_pb_put_bytes(b, s, len);
}

static void encode_message(encode_ctx_t *c, const nh_pb_message_t *m, int t, int depth);

/* Writes the value at idx as (one element of) field f. skip_zero: a proto3 field without
 * presence, whose zero value is not written. */
static void put_value(encode_ctx_t *c, const nh_pb_field_t *f, int idx, int skip_zero, int depth) {
    lua_State *L = c->L;
    nh_pb_buf_t *b = c->b;
    if (f->type == NH_PB_MESSAGE) {
        if (!lua_istable(L, idx) && !bad_value(c, f, idx, "a table")) return;
        nh_pb_put_tag(b, f->number, NH_PB_LEN);
        size_t mark = nh_pb_begin_len(b);
        const nh_pb_message_t *outer = c->m;
        encode_message(c, f->message, idx, depth + 1);
        c->m = outer;
        nh_pb_end_len(b, mark);
        return;
    }
    if (f->type == NH_PB_STRING || f->type == NH_PB_BYTES) {
        if (lua_type(L, idx) != LUA_TSTRING && !bad_value(c, f, idx, "a string")) return;
        size_t len;
        const char *s = lua_tolstring(L, idx, &len);
        put_string_field(b, f->number, s, len, skip_zero);
        return;
    }
    nh_pb_scalar_t v = to_scalar(c, f, idx);
    if (!c->gave_up) put_scalar_field(b, f->number, f->type, v, skip_zero);
}

static void put_map(encode_ctx_t *c, const nh_pb_field_t *f, int t, int depth) {
    lua_State *L = c->L;
    const nh_pb_message_t *entry = f->message, *outer = c->m;
    const nh_pb_field_t *kf = nh_pb_field_by_number(entry, 1);
    const nh_pb_field_t *vf = nh_pb_field_by_number(entry, 2);
    if (!kf || !vf) {
        fail(c, "protobuf: %s: a map entry without key or value", entry->full_name);
        return;
    }
    if (depth >= NH_PB_MAX_DEPTH) {
        fail(c, "protobuf: tables nested too deep (a cycle?)");
        return;
    }
    lua_pushnil(L);
    while (lua_next(L, t)) {
        int k = lua_gettop(L) - 1, v = k + 1;
        lua_pushvalue(L, k); /* to_64 may replace a cdata key in place; lua_next needs the key */
        k = v + 1;
        nh_pb_put_tag(c->b, f->number, NH_PB_LEN);
        size_t mark = nh_pb_begin_len(c->b);
        c->m = entry;
        put_value(c, kf, k, 0, depth + 1);
        if (!c->gave_up) put_value(c, vf, v, 0, depth + 1);
        if (c->gave_up) return;
        c->m = outer;
        nh_pb_end_len(c->b, mark);
        lua_pop(L, 2);
    }
}

static void encode_message(encode_ctx_t *c, const nh_pb_message_t *m, int t, int depth) {
    lua_State *L = c->L;
    if (depth >= NH_PB_MAX_DEPTH) {
        fail(c, "protobuf: tables nested too deep (a cycle?)");
        return;
    }
    if (!lua_checkstack(L, 8)) {
        fail(c, "protobuf: Lua stack exhausted");
        return;
    }
    for (size_t i = 0; i < m->nfields; i++) {
        const nh_pb_field_t *f = &m->fields[i];
        c->m = m;
        push_name(L, c->names, f);
        lua_rawget(L, t);
        int v = lua_gettop(L);
        if (lua_isnil(L, v)) {
            lua_pop(L, 1);
            continue;
        }
        if (!f->repeated) {
            put_value(c, f, v, !f->presence, depth);
        } else if (!lua_istable(L, v)) {
            bad_value(c, f, v, is_map(f) ? "a table (map)" : "a table (sequence)");
            return;
        } else if (is_map(f)) {
            put_map(c, f, v, depth);
        } else if (f->packed) {
            int n = (int)lua_objlen(L, v);
            if (n > 0 && f->count_prefixed) {
                nh_pb_put_tag(c->b, f->number, nh_pb_wire_of(f->type));
                nh_pb_put_varint(c->b, (uint64_t)n);
                for (int j = 1; j <= n; j++) {
                    lua_rawgeti(L, v, j);
                    nh_pb_scalar_t x = to_scalar(c, f, v + 1);
                    if (c->gave_up) return;
                    nh_pb_put_scalar(c->b, f->type, x);
                    lua_pop(L, 1);
                }
            } else if (n > 0) {
                nh_pb_put_tag(c->b, f->number, NH_PB_LEN);
                size_t mark = nh_pb_begin_len(c->b);
                for (int j = 1; j <= n; j++) {
                    lua_rawgeti(L, v, j);
                    nh_pb_scalar_t x = to_scalar(c, f, v + 1);
                    if (c->gave_up) return;
                    nh_pb_put_scalar(c->b, f->type, x);
                    lua_pop(L, 1);
                }
                nh_pb_end_len(c->b, mark);
            }
        } else {
            int n = (int)lua_objlen(L, v);
            for (int j = 1; j <= n; j++) {
                lua_rawgeti(L, v, j);
                put_value(c, f, v + 1, 0, depth);
                if (c->gave_up) return;
                lua_pop(L, 1);
            }
        }
        if (c->gave_up) return;
        lua_settop(L, v - 1);
    }
}

/* Encodes the table at idx (the top of the stack) as m and pushes the bytes. */
static int encode_at(lua_State *L, lschema_t *ls, int ud, const nh_pb_message_t *m, int idx) {
    luaL_checktype(L, idx, LUA_TTABLE);
    lua_settop(L, idx);
    lua_getfenv(L, ud); /* idx + 1: the names */
    buf_restart(&ls->out);
    encode_ctx_t c = {L, &ls->out, m, idx + 1, 0, 0};
    encode_message(&c, m, idx, 0);
    if (ls->out.failed) return luaL_error(L, "protobuf: out of memory");
    lua_pushlstring(L, (const char *)ls->out.data, ls->out.len);
    /* a one-off huge message does not pin its buffer */
    if (ls->out.cap > BUF_KEEP) nh_pb_buf_free(&ls->out);
    return 1;
}

/* schema:encode(type, table) -> bytes; raises on a value the schema cannot take. */
static int l_encode(lua_State *L) {
    lschema_t *ls = check_schema(L);
    return encode_at(L, ls, 1, find_message(L, ls, 2, 1), 3);
}

/* The closures of schema:codec(type): upvalue 1 the schema (kept alive), 2 the message type.
 * No argument check of the schema nor lookup of the type per message. */
static lschema_t *codec_schema(lua_State *L) {
    lschema_t *ls = lua_touserdata(L, lua_upvalueindex(1));
    if (!ls->s) luaL_error(L, "protobuf schema already freed");
    return ls;
}

static int c_encode(lua_State *L) {
    lschema_t *ls = codec_schema(L);
    return encode_at(L, ls, lua_upvalueindex(1), lua_touserdata(L, lua_upvalueindex(2)), 1);
}

static int c_decode(lua_State *L) {
    codec_schema(L);
    return decode_at(L, lua_upvalueindex(1), lua_touserdata(L, lua_upvalueindex(2)), 1,
                     lua_toboolean(L, 2));
}

/* schema:codec(type) -> encode(table) -> bytes, decode(bytes [, enums_as_numbers]) -> t | nil, err
 * for one message type: what a serializer holds per route. */
static int l_codec(lua_State *L) {
    lschema_t *ls = check_schema(L);
    const nh_pb_message_t *m = find_message(L, ls, 2, 1);
    lua_pushvalue(L, 1);
    lua_pushlightuserdata(L, (void *)m);
    lua_pushcclosure(L, c_encode, 2);
    lua_pushvalue(L, 1);
    lua_pushlightuserdata(L, (void *)m);
    lua_pushcclosure(L, c_decode, 2);
    return 2;
}

/* ---- the core's own use: a serializer's message types by route, read and written in C ----
 * A "core types" table maps each route to its core_route_t (a userdata: the message type, its
 * schema and whether enums decode as numbers, read with one lookup) and holds the schema (which
 * keeps the types alive) at [1], the encoder's protected half at [2] and the schema's field names
 * (push_name) at [3] (integer keys, as light userdata keys cost an interning each time they are
 * pushed, and a C function pushed anew an allocation; routes are strings). The core's dispatch
 * decodes a request's payload with one (core.set_predecode) and encodes the response a handler
 * returned with one (the dispatcher returns it: lua_host.c), without a Lua string of the bytes or
 * a call from Lua (each one a JIT trace exit: docs/benchmarks.md). */
typedef struct core_route {
    const nh_pb_message_t *m;
    lschema_t *ls; /* the userdata at [1] */
    int enums_as_numbers;
} core_route_t;
enum { CORE_SCHEMA = 1, CORE_ENCODER = 2, CORE_NAMES = 3 };
static int core_encode_protected(lua_State *L);

/* schema:core_types({ [route] = type name }, enums_as_numbers) -> the core types table */
static int l_core_types(lua_State *L) {
    lschema_t *ls = check_schema(L);
    luaL_checktype(L, 2, LUA_TTABLE);
    int enums = lua_toboolean(L, 3);
    lua_settop(L, 2);
    lua_newtable(L); /* 3 */
    lua_pushnil(L);
    while (lua_next(L, 2)) {
        if (lua_type(L, -2) == LUA_TSTRING && lua_type(L, -1) == LUA_TSTRING) {
            const nh_pb_message_t *m = find_message(L, ls, lua_gettop(L), 1);
            lua_pushvalue(L, -2);
            core_route_t *cr = lua_newuserdata(L, sizeof *cr);
            *cr = (core_route_t){m, ls, enums};
            lua_rawset(L, 3);
        }
        lua_pop(L, 1);
    }
    lua_pushvalue(L, 1);
    lua_rawseti(L, 3, CORE_SCHEMA);
    lua_pushcfunction(L, core_encode_protected);
    lua_rawseti(L, 3, CORE_ENCODER);
    lua_getfenv(L, 1);
    lua_rawseti(L, 3, CORE_NAMES);
    return 1;
}

/* What the core types table at t gives the route at r; NULL when it has none (or a route
 * code: the serializer's path). The userdata stays valid while the table holds it. */
static const core_route_t *core_route(lua_State *L, int t, int r) {
    if (lua_type(L, r) != LUA_TSTRING) return NULL;
    lua_pushvalue(L, r);
    lua_rawget(L, t);
    const core_route_t *cr = lua_touserdata(L, -1);
    lua_pop(L, 1);
    return cr && cr->ls->s ? cr : NULL;
}

const void *nh_lua_pb_core_type(lua_State *L, int types, int route) {
    return core_route(L, types, route);
}

void nh_lua_pb_push_names(lua_State *L, int types) {
    lua_rawgeti(L, types, CORE_NAMES);
}

int nh_lua_pb_core_decode(lua_State *L, int names, const void *type, const uint8_t *data,
                          size_t len) {
    const core_route_t *cr = type;
    if (!cr->ls->s) return 0; /* the schema was freed */
    return decode_bytes(L, names, cr->m, data, len, cr->enums_as_numbers) == 0;
}

/* What core_encode_protected writes: set just before the call (the loop thread's alone; the
 * encoder calls no Lua code that could encode meanwhile). */
static struct core_encode {
    lschema_t *ls;
    const nh_pb_message_t *m;
} core_encoding;

/* (value, names) under lua_pcall: encode_message raises on a value that does not fit */
static int core_encode_protected(lua_State *L) {
    const struct core_encode e0 = core_encoding, *e = &e0; /* a copy: safe from a nested one */
    if (!lua_istable(L, 1)) return luaL_error(L, "protobuf: not a table");
    encode_ctx_t c = {L, &e->ls->out, e->m, 2, 0, 0};
    encode_message(&c, e->m, 1, 0);
    if (e->ls->out.failed) return luaL_error(L, "protobuf: out of memory");
    return 0;
}

const uint8_t *nh_lua_pb_core_encode(lua_State *L, int types, int route, int idx, size_t *len) {
    const core_route_t *cr = core_route(L, types, route);
    if (!cr || !lua_checkstack(L, 4)) return NULL;
    struct core_encode e = {cr->ls, cr->m};
    nh_pb_buf_t *out = &e.ls->out;
    buf_restart(out);
    if (lua_istable(L, idx)) {
        /* Without lua_pcall first (~250 instructions a response): the soft encoder gives up
         * where it would raise or call Lua, and only then the protected one runs, which raises
         * with the reason (or encodes an int64 cdata). */
        int top = lua_gettop(L);
        lua_rawgeti(L, types, CORE_NAMES);
        encode_ctx_t c = {L, out, e.m, top + 1, 1, 0};
        encode_message(&c, e.m, idx, 0);
        lua_settop(L, top);
        if (!c.gave_up && !out->failed) {
            *len = out->len;
            return out->len ? out->data : (const uint8_t *)"";
        }
        buf_restart(out); /* for the protected encoder */
    }
    core_encoding = e;
    lua_rawgeti(L, types, CORE_ENCODER);
    lua_pushvalue(L, idx);
    lua_rawgeti(L, types, CORE_NAMES);
    if (lua_pcall(L, 2, 0, 0) != 0) {
        lua_pop(L, 1);
        return NULL;
    }
    *len = out->len;
    return out->len ? out->data : (const uint8_t *)"";
}

/* ---- the flat writer: nano's dispatcher writes a response of scalar fields through the FFI ----
 * As for JSON (lua_json.c's flat writer): a response whose type has only single scalar, string,
 * bytes and enum fields is written by a function generated per type (lua/nano/protobuf.lua,
 * flat_writer), which reads each field with a raw get and calls these through the FFI. The JIT
 * compiles those calls into the dispatcher's trace, where the core's encoder above reads the
 * table through the C API: the route's type looked up, each field's name pushed, its value
 * fetched and typed (docs/benchmarks.md, nineteenth pass). Each call writes one field as
 * put_value does, through the same functions, so the bytes are the encoder's; a value the
 * encoder would refuse returns 0, and the generated function leaves the table to the encoder,
 * which says why. A finished message stays in flat_buf until the next flat_begin; the dispatcher
 * returns protobuf_codec.flat_mark in the value's place, and the core takes the bytes once
 * (nh_lua_pb_flat_take). */
static nh_pb_buf_t flat_buf;
/* 1 from a finished message (flat_end) until it is taken or another begun */
static int flat_ready;
static double flat_taken; /* messages the core took (protobuf_codec.flat_taken(): for specs) */

static void flat_begin(void) {
    buf_restart(&flat_buf);
    flat_ready = 0;
}

/* A Lua number as field `number` of a numeric type (an enum's value name is looked up in Lua);
 * presence: written even when zero. */
static int flat_num(uint32_t number, int type, int presence, double x) {
    nh_pb_scalar_t v;
    if (scalar_of_number(type, x, &v) != 0) return 0;
    put_scalar_field(&flat_buf, number, type, v, !presence);
    return !flat_buf.failed;
}

static int flat_bool(uint32_t number, int presence, int b) {
    nh_pb_scalar_t v = {.u = 0};
    v.b = b;
    put_scalar_field(&flat_buf, number, NH_PB_BOOL, v, !presence);
    return !flat_buf.failed;
}

static int flat_str(uint32_t number, int presence, const char *s, size_t len) {
    put_string_field(&flat_buf, number, s, len, !presence);
    return !flat_buf.failed;
}

static int flat_end(void) {
    flat_ready = !flat_buf.failed;
    return flat_ready;
}

/* The functions as lua/nano/protobuf.lua declares them (ffi.cdef "struct nh_pb_flat"): keep the
 * two in step. */
static const struct nh_pb_flat {
    void (*begin)(void);
    int (*num)(uint32_t number, int type, int presence, double x);
    int (*boolean)(uint32_t number, int presence, int b);
    int (*str)(uint32_t number, int presence, const char *s, size_t len);
    int (*finish)(void);
} flat_fns = {flat_begin, flat_num, flat_bool, flat_str, flat_end};

int nh_lua_pb_is_flat_mark(const void *p) {
    return p == &flat_buf;
}

const uint8_t *nh_lua_pb_flat_take(const void *mark, size_t *len) {
    if (mark != &flat_buf || !flat_ready) return NULL;
    flat_ready = 0;
    flat_taken++;
    *len = flat_buf.len;
    return flat_buf.len ? flat_buf.data : (const uint8_t *)"";
}

static int l_flat_taken(lua_State *L) {
    lua_pushnumber(L, flat_taken);
    return 1;
}

/* flat_take() -> the finished message's bytes, taken as the core takes them; nil when none (for
 * specs: what the core would send) */
static int l_flat_take(lua_State *L) {
    size_t len;
    const uint8_t *p = nh_lua_pb_flat_take(&flat_buf, &len);
    if (!p) return 0;
    lua_pushlstring(L, (const char *)p, len);
    return 1;
}

/* The fields a flat writer may write at most (each is a few lines of the generated function,
 * compiled into the dispatcher's trace). */
#define FLAT_FIELDS 16

/* schema:flat_fields(type) -> { { name =, number =, type =, presence =, enum = { [name] = number }
 * }, ... } in field-number order, or nil when the type has a field the flat writer does not write
 * (a message, a map, a repeated field) or more than FLAT_FIELDS. */
static int l_flat_fields(lua_State *L) {
    lschema_t *ls = check_schema(L);
    const nh_pb_message_t *m = find_message(L, ls, 2, 1);
    if (m->nfields > FLAT_FIELDS) return 0;
    for (size_t i = 0; i < m->nfields; i++)
        if (m->fields[i].repeated || m->fields[i].type == NH_PB_MESSAGE ||
            m->fields[i].type == NH_PB_GROUP)
            return 0;
    lua_createtable(L, (int)m->nfields, 0);
    for (size_t i = 0; i < m->nfields; i++) {
        const nh_pb_field_t *f = &m->fields[i];
        lua_createtable(L, 0, 5);
        lua_pushstring(L, f->name);
        lua_setfield(L, -2, "name");
        lua_pushnumber(L, f->number);
        lua_setfield(L, -2, "number");
        lua_pushinteger(L, f->type);
        lua_setfield(L, -2, "type");
        lua_pushboolean(L, f->presence);
        lua_setfield(L, -2, "presence");
        if (f->type == NH_PB_ENUM) {
            lua_createtable(L, 0, (int)f->enumt->nvalues);
            for (size_t j = 0; j < f->enumt->nvalues; j++) {
                lua_pushnumber(L, f->enumt->values[j].number);
                lua_setfield(L, -2, f->enumt->values[j].name);
            }
            lua_setfield(L, -2, "enum");
        }
        lua_rawseti(L, -2, (int)i + 1);
    }
    return 1;
}

/* schema:has(type) -> boolean */
static int l_has(lua_State *L) {
    lschema_t *ls = check_schema(L);
    lua_pushboolean(L, find_message(L, ls, 2, 0) != NULL);
    return 1;
}

/* schema:messages() -> { full name, ... } */
static int l_messages(lua_State *L) {
    lschema_t *ls = check_schema(L);
    size_t n = nh_pb_schema_message_count(ls->s);
    lua_createtable(L, (int)n, 0);
    for (size_t i = 0; i < n; i++) {
        lua_pushstring(L, nh_pb_schema_message_at(ls->s, i)->full_name);
        lua_rawseti(L, -2, (int)i + 1);
    }
    return 1;
}

static int l_gc(lua_State *L) {
    lschema_t *ls = luaL_checkudata(L, 1, SCHEMA_MT);
    nh_pb_schema_free(ls->s);
    ls->s = NULL;
    nh_pb_buf_free(&ls->out);
    return 0;
}

/* The schema just loaded or built (the userdata on top): its fields' names into its
 * environment table (push_name). */
static void make_names(lua_State *L, lschema_t *ls) {
    lua_getfenv(L, -1);
    for (size_t i = 0; i < nh_pb_schema_message_count(ls->s); i++) {
        const nh_pb_message_t *m = nh_pb_schema_message_at(ls->s, i);
        for (size_t j = 0; j < m->nfields; j++) {
            lua_pushstring(L, m->fields[j].name);
            lua_rawseti(L, -2, (int)m->fields[j].index + 1);
        }
    }
    lua_pop(L, 1);
}

/* load(descriptor_set_bytes) -> schema | nil, err */
static int l_load(lua_State *L) {
    size_t len;
    const char *set = luaL_checklstring(L, 1, &len);
    lschema_t *ls = lua_newuserdata(L, sizeof *ls);
    memset(ls, 0, sizeof *ls);
    luaL_getmetatable(L, SCHEMA_MT);
    lua_setmetatable(L, -2);
    lua_newtable(L);
    lua_setfenv(L, -2);
    char err[256];
    if (nh_pb_schema_load(&ls->s, (const uint8_t *)set, len, err, sizeof err)) {
        lua_pushnil(L);
        lua_pushstring(L, err);
        return 2;
    }
    make_names(L, ls);
    return 1;
}

/* build({ { name = full_name, fields = { { name=, number=, type=, repeated=, type_name= }, ... } },
 *         ... }, "pomelo" | nil) -> schema | nil, err
 * A schema made by hand: pomelo-protobuf's JSON schemas (lua/nano/pomelo_protobuf.lua). type is
 * a FieldDescriptorProto type number; "pomelo" is that codec's wire flavour (protobuf.h). */
static int l_build(lua_State *L) {
    luaL_checktype(L, 1, LUA_TTABLE);
    int pomelo = lua_isstring(L, 2) && strcmp(lua_tostring(L, 2), "pomelo") == 0;
    lua_settop(L, 1);
    lschema_t *ls = lua_newuserdata(L, sizeof *ls); /* 2 */
    memset(ls, 0, sizeof *ls);
    luaL_getmetatable(L, SCHEMA_MT);
    lua_setmetatable(L, 2);
    lua_newtable(L);
    lua_setfenv(L, 2);
    if (nh_pb_schema_new(&ls->s)) return luaL_error(L, "protobuf: out of memory");
    int nmsgs = (int)lua_objlen(L, 1), e = 0;
    for (int i = 1; i <= nmsgs && !e; i++) {
        lua_rawgeti(L, 1, i); /* 3: message */
        lua_getfield(L, 3, "name");
        if (!lua_isstring(L, -1)) return luaL_error(L, "build: message %d without a name", i);
        int m = nh_pb_schema_add_message(ls->s, lua_tostring(L, -1));
        lua_pop(L, 1);
        if (m < 0) return luaL_error(L, "protobuf: out of memory");
        lua_getfield(L, 3, "fields"); /* 4 */
        int nf = lua_istable(L, 4) ? (int)lua_objlen(L, 4) : 0;
        for (int j = 1; j <= nf && !e; j++) {
            lua_rawgeti(L, 4, j); /* 5 */
            lua_getfield(L, 5, "name");
            lua_getfield(L, 5, "number");
            lua_getfield(L, 5, "type");
            lua_getfield(L, 5, "repeated");
            lua_getfield(L, 5, "type_name");
            if (!lua_isstring(L, 6) || !lua_isnumber(L, 7) || !lua_isnumber(L, 8))
                return luaL_error(L, "build: field %d of message %d needs name, number, type", j,
                                  i);
            double num = lua_tonumber(L, 7);
            e = nh_pb_schema_add_field(ls->s, m, lua_tostring(L, 6),
                                       num >= 1 && num <= 0x1FFFFFFF ? (uint32_t)num : 0,
                                       (int)lua_tonumber(L, 8), lua_toboolean(L, 9),
                                       lua_isstring(L, 10) ? lua_tostring(L, 10) : NULL);
            lua_settop(L, 4);
        }
        lua_settop(L, 2);
    }
    char err[256];
    if (!e)
        e = nh_pb_schema_finish(ls->s, pomelo ? NH_PB_POMELO : NH_PB_PROTO2, err, sizeof err);
    else
        snprintf(err, sizeof err, "%s", nh_pb_strerror(e));
    if (e) {
        lua_pushnil(L);
        lua_pushstring(L, err);
        return 2; /* the userdata's __gc frees what was built */
    }
    make_names(L, ls);
    return 1;
}

int nh_lua_open_protobuf(lua_State *L) {
    static const luaL_Reg methods[] = {{"encode", l_encode},
                                       {"decode", l_decode},
                                       {"codec", l_codec},
                                       {"has", l_has},
                                       {"messages", l_messages},
                                       {"core_types", l_core_types},
                                       {"flat_fields", l_flat_fields},
                                       {NULL, NULL}};
    if (luaL_newmetatable(L, SCHEMA_MT)) {
        lua_newtable(L);
        for (const luaL_Reg *r = methods; r->name; r++) {
            lua_pushvalue(L, -2); /* the metatable, check_schema's upvalue */
            lua_pushcclosure(L, r->func, 1);
            lua_setfield(L, -2, r->name);
        }
        lua_setfield(L, -2, "__index");
        lua_pushcfunction(L, l_gc);
        lua_setfield(L, -2, "__gc");
    }
    lua_pop(L, 1);
    lua_newtable(L);
    lua_pushcfunction(L, l_load);
    lua_setfield(L, -2, "load");
    lua_pushcfunction(L, l_build);
    lua_setfield(L, -2, "build");
    lua_pushinteger(L, NH_PB_MAX_DEPTH);
    lua_setfield(L, -2, "max_depth");
    /* the flat writer (above): its functions, and the mark the dispatcher returns for its bytes */
    lua_pushlightuserdata(L, (void *)&flat_fns);
    lua_setfield(L, -2, "flat_writer");
    lua_pushinteger(L, (lua_Integer)sizeof flat_fns);
    lua_setfield(L, -2, "flat_writer_size");
    lua_pushlightuserdata(L, (void *)&flat_buf);
    lua_setfield(L, -2, "flat_mark");
    lua_pushcfunction(L, l_flat_taken);
    lua_setfield(L, -2, "flat_taken");
    lua_pushcfunction(L, l_flat_take);
    lua_setfield(L, -2, "flat_take");
    return 1;
}
