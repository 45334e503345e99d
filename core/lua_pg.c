/* `nano.pg_core`: one PostgreSQL connection (pg_client.c) as a Lua userdata, for
 * lua/nano/pg.lua, which adds the pool, waiting, timeouts, transactions and reconnects.
 *
 *   local c, err = pc.connect(conninfo, function(event, a, b) end)
 *     ("connect", ok, err)     ready, or the attempt failed (then "gone" follows)
 *     ("result", value, err, lost)   the query's result (below), or nil and the error; lost:
 *                              the connection is gone ("gone" follows)
 *     ("gone", reason)         the last event: the connection is closed and freed
 *   c:query(sql, n, p1, ..., pn) -> true | nil, err    parameters $1..$n (n given, so nil can be
 *       one): nil or the null value → SQL NULL, boolean, number, string (text; no NUL bytes)
 *   c:cancel() -> true | nil, err   asks the server to cancel the query in flight (off the loop)
 *   c:close()   no "result" for a query in flight; "gone" follows
 *   pc.count()  connections not yet freed (leak checks)
 *
 * Results: a row set is an array of rows keyed by column name; int2/int4/oid/float4/float8 are
 * numbers, int8 a number when within ±2^53 (exact) and its decimal text beyond, bool a boolean,
 * NULL an absent key (nil), every other type its text form. A command is { changes = n }. An
 * error is nil, "<message> (SQLSTATE xxxxx)".
 *
 * Events come only from the loop, never inside a call from Lua. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <lauxlib.h>

#include "host.h"
#include "lua_binding.h"
#include "pg_client.h"

#define PG_MT "nano.pg.conn"
#define MAX_PARAMS 65535 /* the protocol's limit */

/* Type OIDs (pg_type.dat): stable across versions. */
enum {
    OID_BOOL = 16,
    OID_INT8 = 20,
    OID_INT2 = 21,
    OID_INT4 = 23,
    OID_OID = 26,
    OID_FLOAT4 = 700,
    OID_FLOAT8 = 701
};

typedef struct pconn {
    nh_pg_t *c; /* NULL once gone */
    nh_host_t *h;
    int cb_ref;
    int self_ref;
} pconn_t;

typedef struct upconn {
    pconn_t *pc;
} upconn_t;

static const char count_key = 'p';

static void count_add(lua_State *L, int d) {
    nh_lua_count_add(L, &count_key, d);
}

static void push_value(lua_State *L, Oid type, const char *v, int len) {
    switch (type) {
    case OID_BOOL:
        lua_pushboolean(L, v[0] == 't');
        return;
    case OID_INT2:
    case OID_INT4:
    case OID_OID:
    case OID_FLOAT4:
    case OID_FLOAT8:
        lua_pushnumber(L, strtod(v, NULL)); /* also "NaN", "Infinity", "-Infinity" */
        return;
    case OID_INT8: {
        long long i = strtoll(v, NULL, 10);
        if (i <= 9007199254740992LL && i >= -9007199254740992LL) {
            lua_pushnumber(L, (lua_Number)i);
            return;
        }
        break; /* beyond 2^53 a double would change the value: its text */
    }
    default:
        break;
    }
    lua_pushlstring(L, v, (size_t)len);
}

/* Pushes a result's value: rows, { changes = n }, or nil + message (2 values). */
static int push_result(lua_State *L, const PGresult *res) {
    switch (PQresultStatus(res)) {
    case PGRES_TUPLES_OK: {
        int nrows = PQntuples(res), ncols = PQnfields(res);
        lua_createtable(L, nrows, 0);
        for (int r = 0; r < nrows; r++) {
            lua_createtable(L, 0, ncols);
            for (int f = 0; f < ncols; f++) {
                if (PQgetisnull(res, r, f)) continue;
                push_value(L, PQftype(res, f), PQgetvalue(res, r, f), PQgetlength(res, r, f));
                lua_setfield(L, -2, PQfname(res, f));
            }
            lua_rawseti(L, -2, r + 1);
        }
        lua_pushnil(L);
        return 2;
    }
    case PGRES_COMMAND_OK:
    case PGRES_EMPTY_QUERY: {
        const char *n = PQcmdTuples((PGresult *)res);
        lua_createtable(L, 0, 1);
        lua_pushnumber(L, n && *n ? strtod(n, NULL) : 0);
        lua_setfield(L, -2, "changes");
        lua_pushnil(L);
        return 2;
    }
    default: {
        const char *msg = PQresultErrorField(res, PG_DIAG_MESSAGE_PRIMARY);
        const char *state = PQresultErrorField(res, PG_DIAG_SQLSTATE);
        lua_pushnil(L);
        if (msg && state)
            lua_pushfstring(L, "%s (SQLSTATE %s)", msg, state);
        else
            lua_pushstring(L, PQresultErrorMessage(res));
        return 2;
    }
    }
}

static int begin_event(pconn_t *pc, const char *event) {
    lua_State *L = pc->h->L;
    if (pc->cb_ref == LUA_NOREF) return 0;
    lua_rawgeti(L, LUA_REGISTRYINDEX, pc->cb_ref);
    lua_pushstring(L, event);
    return 1;
}

static void ev_connect(nh_pg_t *c, void *data, int ok, const char *err) {
    (void)c;
    pconn_t *pc = data;
    if (!begin_event(pc, "connect")) return;
    lua_State *L = pc->h->L;
    lua_pushboolean(L, ok);
    if (err)
        lua_pushstring(L, err);
    else
        lua_pushnil(L);
    nh_host_call_lua(pc->h, 3, 0, "nano.pg connect");
}

/* Rows become Lua tables inside the protected call (an allocation can raise): deliver is the
 * function nh_host_call_lua calls. */
typedef struct delivery {
    int cb_ref;
    const PGresult *res;
    const char *err;
} delivery_t;

static int deliver(lua_State *L) {
    const delivery_t *d = lua_touserdata(L, 1);
    lua_rawgeti(L, LUA_REGISTRYINDEX, d->cb_ref);
    lua_pushliteral(L, "result");
    if (d->res) {
        push_result(L, d->res);
    } else {
        lua_pushnil(L);
        lua_pushstring(L, d->err);
    }
    lua_pushboolean(L, d->res == NULL);
    lua_call(L, 4, 0);
    return 0;
}

static void ev_result(nh_pg_t *c, void *data, const PGresult *res, const char *err) {
    (void)c;
    pconn_t *pc = data;
    if (pc->cb_ref == LUA_NOREF) return;
    delivery_t d = {pc->cb_ref, res, err};
    lua_State *L = pc->h->L;
    lua_pushcfunction(L, deliver);
    lua_pushlightuserdata(L, &d);
    nh_host_call_lua(pc->h, 1, 0, "nano.pg result");
}

static void ev_gone(nh_pg_t *c, void *data, const char *reason) {
    (void)c;
    pconn_t *pc = data;
    lua_State *L = pc->h->L;
    pc->c = NULL;
    if (begin_event(pc, "gone")) {
        lua_pushstring(L, reason);
        nh_host_call_lua(pc->h, 2, 0, "nano.pg closed");
    }
    lua_rawgeti(L, LUA_REGISTRYINDEX, pc->self_ref);
    upconn_t *u = lua_touserdata(L, -1);
    if (u) u->pc = NULL;
    lua_pop(L, 1);
    luaL_unref(L, LUA_REGISTRYINDEX, pc->self_ref);
    luaL_unref(L, LUA_REGISTRYINDEX, pc->cb_ref);
    count_add(L, -1);
    free(pc);
}

static const nh_pg_events_t events = {ev_connect, ev_result, ev_gone};

static int l_connect(lua_State *L) {
    nh_host_t *h = nh_host_from_lua(L);
    if (!h) return luaL_error(L, "nano.pg: no host in this Lua state");
    const char *conninfo = luaL_checkstring(L, 1);
    luaL_checktype(L, 2, LUA_TFUNCTION);
    pconn_t *pc = calloc(1, sizeof *pc);
    if (!pc) return luaL_error(L, "out of memory");
    pc->h = h;
    pc->cb_ref = pc->self_ref = LUA_NOREF;
    char err[300];
    if (nh_pg_connect(h->loop, conninfo, &events, pc, &pc->c, err, sizeof err) < 0) {
        free(pc);
        lua_pushnil(L);
        lua_pushstring(L, err);
        return 2;
    }
    upconn_t *u = lua_newuserdata(L, sizeof *u);
    u->pc = pc;
    luaL_getmetatable(L, PG_MT);
    lua_setmetatable(L, -2);
    lua_pushvalue(L, 2);
    pc->cb_ref = luaL_ref(L, LUA_REGISTRYINDEX);
    lua_pushvalue(L, -1);
    pc->self_ref = luaL_ref(L, LUA_REGISTRYINDEX);
    count_add(L, 1);
    return 1;
}

static pconn_t *check_conn(lua_State *L) {
    return ((upconn_t *)luaL_checkudata(L, 1, PG_MT))->pc;
}

static int fail2(lua_State *L, const char *msg) {
    lua_pushnil(L);
    lua_pushstring(L, msg);
    return 2;
}

/* query(sql, n, ...) */
static int c_query(lua_State *L) {
    pconn_t *pc = check_conn(L);
    const char *sql = luaL_checkstring(L, 2);
    lua_Integer n = luaL_checkinteger(L, 3);
    if (n < 0 || n > MAX_PARAMS) return fail2(L, "too many parameters (at most 65535)");
    if (!pc || !pc->c) return fail2(L, "connection closed");
    const char **values = n ? malloc((size_t)n * sizeof *values) : NULL;
    char *nums = n ? malloc((size_t)n * 32) : NULL;
    if (n && (!values || !nums)) {
        free(values);
        free(nums);
        return luaL_error(L, "out of memory");
    }
    for (int i = 0; i < n; i++) {
        int idx = 4 + i;
        char *num = nums + (size_t)i * 32;
        switch (lua_type(L, idx)) {
        case LUA_TNIL:
        case LUA_TNONE:
            values[i] = NULL;
            break;
        case LUA_TLIGHTUSERDATA:
            if (lua_touserdata(L, idx) == NULL) { /* the null value */
                values[i] = NULL;
                break;
            }
            goto bad;
        case LUA_TBOOLEAN:
            values[i] = lua_toboolean(L, idx) ? "true" : "false";
            break;
        case LUA_TNUMBER: {
            double d = lua_tonumber(L, idx);
            if (d != d || isinf(d)) {
                snprintf(num, 32, "%s", d != d ? "NaN" : d > 0 ? "Infinity" : "-Infinity");
            } else if (d == floor(d) && fabs(d) < 9007199254740992.0) {
                snprintf(num, 32, "%lld", (long long)d);
            } else {
                snprintf(num, 32, "%.17g", d);
            }
            values[i] = num;
            break;
        }
        case LUA_TSTRING: {
            size_t len;
            const char *s = lua_tolstring(L, idx, &len);
            if (strlen(s) != len) {
                free(values);
                free(nums);
                lua_pushnil(L);
                lua_pushfstring(L, "parameter $%d holds a NUL byte (text parameters cannot)",
                                i + 1);
                return 2;
            }
            values[i] = s;
            break;
        }
        default:
        bad:
            free(values);
            free(nums);
            lua_pushnil(L);
            lua_pushfstring(
                L,
                "parameter $%d is a %s (expected nil, nano.pg.null, a boolean, a number "
                "or a string)",
                i + 1, luaL_typename(L, idx));
            return 2;
        }
    }
    char err[300];
    int r = nh_pg_query(pc->c, sql, (int)n, values, err, sizeof err);
    free(values);
    free(nums);
    if (r < 0) return fail2(L, err);
    lua_pushboolean(L, 1);
    return 1;
}

static int c_cancel(lua_State *L) {
    pconn_t *pc = check_conn(L);
    if (!pc || !pc->c) return fail2(L, "connection closed");
    if (nh_pg_cancel(pc->c) < 0) return fail2(L, "cannot start the cancel request");
    lua_pushboolean(L, 1);
    return 1;
}

static int c_close(lua_State *L) {
    pconn_t *pc = check_conn(L);
    if (pc && pc->c) nh_pg_close(pc->c);
    return 0;
}

static int c_tostring(lua_State *L) {
    pconn_t *pc = check_conn(L);
    lua_pushstring(L, pc && pc->c ? "nano.pg connection" : "nano.pg connection (closed)");
    return 1;
}

static int l_count(lua_State *L) {
    return nh_lua_count_push(L, &count_key);
}

int nh_lua_open_pg(lua_State *L) {
    static const luaL_Reg methods[] = {
        {"query", c_query},
        {"cancel", c_cancel},
        {"close", c_close},
        {NULL, NULL},
    };
    static const luaL_Reg fns[] = {{"connect", l_connect}, {"count", l_count}, {NULL, NULL}};
    static const luaL_Reg meta[] = {{"__tostring", c_tostring}, {NULL, NULL}};
    return nh_lua_class_module(L, PG_MT, methods, meta, fns);
}
