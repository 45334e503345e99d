/* `nano.sqlite_core`: SQLite handles (sqlite_db.c) for Lua, under lua/nano/sqlite.lua.
 *
 *   local db = core.open(path, { busy_timeout = secs, readonly = bool, max_rows = n }, fn)
 *     fn(true) once open, or fn(nil, err)
 *   db:exec(sql, params, n, fn) -> true | nil, err     fn(result | nil, err)
 *     params[1..n]: nil, boolean, number (an integer when integral), string (a blob when it holds
 *     a NUL byte); result: rows (arrays of { column = value }: NULL columns are
 *     absent; integers beyond 2^53 come back as strings) or { changes =, last_insert_id = }
 *   db:close([fn])   db:pending() -> jobs queued or running
 *
 * Every job holds a registry ref to its callback until it has run. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include <lauxlib.h>

#include "host.h"
#include "lua_binding.h"
#include "sqlite_db.h"

#define SQLITE_MT "nano.sqlite.db"

typedef struct udb {
    nh_sqlite_t *db; /* NULL once closing */
    nh_host_t *h;
} udb_t;

typedef struct cbref {
    nh_host_t *h;
    int ref;
} cbref_t;

static cbref_t *take_fn(lua_State *L, int idx) {
    cbref_t *c = malloc(sizeof *c);
    if (!c) luaL_error(L, "out of memory");
    c->h = nh_host_from_lua(L);
    lua_pushvalue(L, idx);
    c->ref = luaL_ref(L, LUA_REGISTRYINDEX);
    return c;
}

/* Pushes the callback a job held and lets go of it; returns its host. */
static nh_host_t *push_fn(cbref_t *c) {
    nh_host_t *h = c->h;
    lua_rawgeti(h->L, LUA_REGISTRYINDEX, c->ref);
    luaL_unref(h->L, LUA_REGISTRYINDEX, c->ref);
    free(c);
    return h;
}

static void push_value(lua_State *L, const nh_sql_value_t *v) {
    switch (v->type) {
    case NH_SQL_INT:
        if (v->i >= -9007199254740992LL && v->i <= 9007199254740992LL) {
            lua_pushnumber(L, (lua_Number)v->i);
        } else { /* a Lua number would round it: the exact digits instead */
            char buf[32];
            snprintf(buf, sizeof buf, "%lld", (long long)v->i);
            lua_pushstring(L, buf);
        }
        break;
    case NH_SQL_FLOAT:
        lua_pushnumber(L, v->d);
        break;
    case NH_SQL_TEXT:
    case NH_SQL_BLOB:
        lua_pushlstring(L, v->s, v->n);
        break;
    default:
        lua_pushnil(L);
        break;
    }
}

static void on_result(void *ud, const nh_sql_result_t *r) {
    nh_host_t *h = push_fn(ud);
    lua_State *L = h->L;
    if (r->error) {
        lua_pushnil(L);
        lua_pushstring(L, r->error);
    } else if (r->is_query) {
        lua_createtable(L, (int)r->nrows, 0);
        for (size_t i = 0; i < r->nrows; i++) {
            lua_createtable(L, 0, r->ncols);
            const nh_sql_value_t *row = r->vals + i * (size_t)r->ncols;
            for (int k = 0; k < r->ncols; k++) {
                if (row[k].type == NH_SQL_NULL) continue;
                push_value(L, &row[k]);
                lua_setfield(L, -2, r->cols[k]);
            }
            lua_rawseti(L, -2, (int)i + 1);
        }
        lua_pushnil(L);
    } else {
        lua_createtable(L, 0, 2);
        lua_pushnumber(L, (lua_Number)r->changes);
        lua_setfield(L, -2, "changes");
        lua_pushnumber(L, (lua_Number)r->last_insert_id);
        lua_setfield(L, -2, "last_insert_id");
        lua_pushnil(L);
    }
    nh_host_call_lua(h, 2, 0, "nano.sqlite callback");
}

static void on_open(void *ud, const nh_sql_result_t *r) {
    nh_host_t *h = push_fn(ud);
    lua_State *L = h->L;
    if (r->error) {
        lua_pushnil(L);
        lua_pushstring(L, r->error);
    } else {
        lua_pushboolean(L, 1);
        lua_pushnil(L);
    }
    nh_host_call_lua(h, 2, 0, "nano.sqlite open");
}

static int l_open(lua_State *L) {
    nh_host_t *h = nh_host_from_lua(L);
    const char *path = luaL_checkstring(L, 1);
    luaL_checktype(L, 3, LUA_TFUNCTION);
    nh_sqlite_opts_t o = {0};
    if (lua_istable(L, 2)) {
        lua_getfield(L, 2, "busy_timeout");
        if (lua_isnumber(L, -1)) o.busy_timeout_ms = (int)(lua_tonumber(L, -1) * 1000);
        lua_getfield(L, 2, "readonly");
        o.readonly = lua_toboolean(L, -1);
        lua_getfield(L, 2, "max_rows");
        if (lua_isnumber(L, -1) && lua_tonumber(L, -1) >= 1)
            o.max_rows = (size_t)lua_tonumber(L, -1);
        lua_pop(L, 3);
    }
    udb_t *u = lua_newuserdata(L, sizeof *u);
    u->h = h;
    u->db = NULL;
    luaL_getmetatable(L, SQLITE_MT);
    lua_setmetatable(L, -2);
    cbref_t *c = take_fn(L, 3);
    u->db = nh_sqlite_open(h->loop, path, &o, on_open, c);
    if (!u->db) {
        luaL_unref(L, LUA_REGISTRYINDEX, c->ref);
        free(c);
        return luaL_error(L, "nano.sqlite: out of memory");
    }
    return 1;
}

/* Lua value at idx into v (strings point into Lua: the job copies them); raises on a type that
 * cannot be bound. */
static void to_value(lua_State *L, int idx, int i, nh_sql_value_t *v) {
    memset(v, 0, sizeof *v);
    switch (lua_type(L, idx)) {
    case LUA_TNIL:
        v->type = NH_SQL_NULL;
        break;
    case LUA_TBOOLEAN:
        v->type = NH_SQL_INT;
        v->i = lua_toboolean(L, idx);
        break;
    case LUA_TNUMBER: {
        double d = lua_tonumber(L, idx);
        if (d == floor(d) && d >= -9223372036854775808.0 && d < 9223372036854775808.0) {
            v->type = NH_SQL_INT;
            v->i = (int64_t)d;
        } else {
            v->type = NH_SQL_FLOAT; /* also inf and nan: SQLite stores what it can */
            v->d = d;
        }
        break;
    }
    case LUA_TSTRING: {
        size_t n;
        const char *s = lua_tolstring(L, idx, &n);
        v->type = memchr(s, '\0', n) ? NH_SQL_BLOB : NH_SQL_TEXT;
        v->s = (char *)s;
        v->n = n;
        break;
    }
    default:
        luaL_error(L, "parameter %d: cannot bind a %s (nil, boolean, number or string)", i,
                   luaL_typename(L, idx));
    }
}

static udb_t *check_db(lua_State *L) {
    return luaL_checkudata(L, 1, SQLITE_MT);
}

static int m_exec(lua_State *L) {
    udb_t *u = check_db(L);
    size_t len;
    const char *sql = luaL_checklstring(L, 2, &len);
    int n = (int)luaL_optinteger(L, 4, 0);
    luaL_checktype(L, 5, LUA_TFUNCTION);
    if (!u->db) {
        lua_pushnil(L);
        lua_pushliteral(L, "database closed");
        return 2;
    }
    if (n < 0 || n > 999) return luaL_error(L, "nano.sqlite: 0 to 999 parameters");
    nh_sql_value_t params[64], *pv = params;
    if (n > 64) pv = lua_newuserdata(L, (size_t)n * sizeof *pv); /* freed by the GC */
    for (int i = 1; i <= n; i++) {
        lua_rawgeti(L, 3, i);
        to_value(L, lua_gettop(L), i, &pv[i - 1]);
        lua_pop(L, 1); /* the params table keeps strings alive */
    }
    cbref_t *c = take_fn(L, 5);
    if (nh_sqlite_exec(u->db, sql, len, pv, n, on_result, c) != 0) {
        luaL_unref(L, LUA_REGISTRYINDEX, c->ref);
        free(c);
        lua_pushnil(L);
        lua_pushliteral(L, "database closed");
        return 2;
    }
    lua_pushboolean(L, 1);
    return 1;
}

static void on_closed(void *ud) {
    if (!ud) return;
    nh_host_call_lua(push_fn(ud), 0, 0, "nano.sqlite close");
}

static int m_close(lua_State *L) {
    udb_t *u = check_db(L);
    if (!u->db) return 0;
    cbref_t *c = lua_isfunction(L, 2) ? take_fn(L, 2) : NULL;
    nh_sqlite_close(u->db, on_closed, c);
    u->db = NULL;
    return 0;
}

static int m_pending(lua_State *L) {
    udb_t *u = check_db(L);
    lua_pushinteger(L, u->db ? nh_sqlite_pending(u->db) : 0);
    return 1;
}

/* A handle the script dropped: closed (its jobs still end with their callbacks). */
static int m_gc(lua_State *L) {
    udb_t *u = check_db(L);
    if (u->db) nh_sqlite_close(u->db, NULL, NULL);
    u->db = NULL;
    return 0;
}

int nh_lua_open_sqlite(lua_State *L) {
    static const luaL_Reg methods[] = {
        {"exec", m_exec}, {"close", m_close}, {"pending", m_pending}, {NULL, NULL}};
    static const luaL_Reg fns[] = {{"open", l_open}, {NULL, NULL}};
    static const luaL_Reg meta[] = {{"__gc", m_gc}, {NULL, NULL}};
    return nh_lua_class_module(L, SQLITE_MT, methods, meta, fns);
}
