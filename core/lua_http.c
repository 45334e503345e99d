/* `nano.http_core`: outgoing HTTP for Lua (http_client.c), under lua/nano/http.lua.
 *
 *   request({ method=, url=, headers={ name = value }, body=, timeout=secs, redirects=bool|n,
 *             max_response=bytes, proxy=, insecure=bool }, fn(res | nil, err)) -> id | nil, err
 *     res = { status = 200, headers = { ["content-type"] = "..." } (names lower-cased, repeats
 *             joined with ", "), body = "..." }
 *   cancel(id)    in_flight() -> n    close()   (every pending request dropped: no callback)
 *
 * One client per host (its connections are reused across requests), made on first use. Each
 * pending request holds a registry ref to its callback, released when it ends or is cancelled. */
#include <ctype.h>
#include <stdlib.h>
#include <string.h>

#include <lauxlib.h>

#include "host.h"
#include "http_client.h"
#include "lua_binding.h"

typedef struct pending {
    nh_host_t *h;
    int fn_ref;
    uint64_t id;
    struct pending *next;
} pending_t;

/* Per Lua state (the host's): the client and the pending callbacks. */
typedef struct state {
    nh_http_t *client;
    pending_t *pending;
} state_t;

static const char state_key = 's';

static state_t *get_state(lua_State *L) {
    lua_pushlightuserdata(L, (void *)&state_key);
    lua_rawget(L, LUA_REGISTRYINDEX);
    state_t *st = lua_touserdata(L, -1);
    lua_pop(L, 1);
    if (st) return st;
    st = lua_newuserdata(L, sizeof *st); /* lives as long as the Lua state */
    memset(st, 0, sizeof *st);
    lua_pushlightuserdata(L, (void *)&state_key);
    lua_insert(L, -2);
    lua_rawset(L, LUA_REGISTRYINDEX);
    return st;
}

static void drop_pending(lua_State *L, state_t *st, pending_t *p) {
    for (pending_t **q = &st->pending; *q; q = &(*q)->next) {
        if (*q == p) {
            *q = p->next;
            break;
        }
    }
    luaL_unref(L, LUA_REGISTRYINDEX, p->fn_ref);
    free(p);
}

/* "Name: value\r\n" lines into a table keyed by the lower-cased name. */
static void push_headers(lua_State *L, const char *h, size_t len) {
    lua_newtable(L);
    const char *end = h + len;
    while (h < end) {
        const char *eol = memchr(h, '\n', (size_t)(end - h));
        if (!eol) eol = end;
        const char *colon = memchr(h, ':', (size_t)(eol - h));
        if (colon && colon > h) {
            char name[256];
            size_t nl = (size_t)(colon - h);
            if (nl < sizeof name) {
                for (size_t i = 0; i < nl; i++)
                    name[i] = (char)tolower((unsigned char)h[i]);
                const char *v = colon + 1, *ve = eol;
                while (v < ve && (*v == ' ' || *v == '\t'))
                    v++;
                while (ve > v && (ve[-1] == '\r' || ve[-1] == ' ' || ve[-1] == '\t'))
                    ve--;
                lua_pushlstring(L, name, nl);
                lua_pushvalue(L, -1);
                lua_rawget(L, -3);
                if (lua_isstring(L, -1)) { /* a repeated header: joined, as HTTP allows */
                    lua_pushliteral(L, ", ");
                    lua_pushlstring(L, v, (size_t)(ve - v));
                    lua_concat(L, 3);
                } else {
                    lua_pop(L, 1);
                    lua_pushlstring(L, v, (size_t)(ve - v));
                }
                lua_rawset(L, -3);
            }
        }
        h = eol + 1;
    }
}

static void on_done(void *ud, const nh_http_result_t *r) {
    pending_t *p = ud;
    nh_host_t *h = p->h;
    lua_State *L = h->L;
    state_t *st = get_state(L);
    lua_rawgeti(L, LUA_REGISTRYINDEX, p->fn_ref);
    drop_pending(L, st, p);
    if (r->error) {
        lua_pushnil(L);
        lua_pushstring(L, r->error);
    } else {
        lua_createtable(L, 0, 3);
        lua_pushnumber(L, (lua_Number)r->status);
        lua_setfield(L, -2, "status");
        push_headers(L, r->headers, r->headers_len);
        lua_setfield(L, -2, "headers");
        lua_pushlstring(L, r->body, r->body_len);
        lua_setfield(L, -2, "body");
        lua_pushnil(L);
    }
    nh_host_call_lua(h, 2, 0, "nano.http callback");
}

static const char *opt_string(lua_State *L, const char *k) {
    lua_getfield(L, 1, k);
    const char *s = NULL;
    if (!lua_isnil(L, -1)) {
        if (lua_type(L, -1) != LUA_TSTRING) luaL_error(L, "nano.http: %s must be a string", k);
        s = lua_tostring(L, -1);
    }
    lua_pop(L, 1); /* the string stays alive: the options table holds it */
    return s;
}

static double opt_number(lua_State *L, const char *k, double def) {
    lua_getfield(L, 1, k);
    double v = def;
    if (!lua_isnil(L, -1)) {
        if (lua_type(L, -1) != LUA_TNUMBER) luaL_error(L, "nano.http: %s must be a number", k);
        v = lua_tonumber(L, -1);
        if (!(v >= 0 && v < 1e12)) luaL_error(L, "nano.http: %s out of range", k);
    }
    lua_pop(L, 1);
    return v;
}

static int l_request(lua_State *L) {
    nh_host_t *h = nh_host_from_lua(L);
    luaL_checktype(L, 1, LUA_TTABLE);
    luaL_checktype(L, 2, LUA_TFUNCTION);
    nh_http_opts_t o = {0};
    o.url = opt_string(L, "url");
    if (!o.url) return luaL_error(L, "nano.http: url is required");
    o.method = opt_string(L, "method");
    o.proxy = opt_string(L, "proxy");
    o.timeout_ms = (long)(opt_number(L, "timeout", 30) * 1000);
    o.max_response = (size_t)opt_number(L, "max_response", 0);
    lua_getfield(L, 1, "insecure");
    o.insecure = lua_toboolean(L, -1);
    lua_pop(L, 1);
    lua_getfield(L, 1, "redirects"); /* true, or the most to follow */
    if (lua_isnumber(L, -1)) {
        o.follow_redirects = lua_tonumber(L, -1) > 0;
        o.max_redirects = (long)lua_tonumber(L, -1);
    } else {
        o.follow_redirects = lua_toboolean(L, -1);
    }
    lua_pop(L, 1);
    size_t blen = 0;
    lua_getfield(L, 1, "body");
    if (!lua_isnil(L, -1)) {
        if (lua_type(L, -1) != LUA_TSTRING)
            return luaL_error(L, "nano.http: body must be a string");
        o.body = lua_tolstring(L, -1, &blen);
        o.body_len = blen;
    }
    lua_pop(L, 1);
    /* headers: { name = value } into "name: value" strings kept on the stack until the call */
    const char *hdrs[65];
    int nh = 0;
    int base = lua_gettop(L);
    lua_getfield(L, 1, "headers");
    if (lua_istable(L, -1)) {
        int t = lua_gettop(L);
        lua_pushnil(L);
        while (lua_next(L, t)) {
            if (nh == 64) return luaL_error(L, "nano.http: at most 64 headers");
            if (lua_type(L, -2) != LUA_TSTRING || !lua_isstring(L, -1))
                return luaL_error(L, "nano.http: headers are { name = \"value\" }");
            const char *k = lua_tostring(L, -2), *v = lua_tostring(L, -1);
            if (strpbrk(k, "\r\n:") || strpbrk(v, "\r\n"))
                return luaL_error(L, "nano.http: a header name or value with a line break");
            lua_pushfstring(L, "%s: %s", k, v);
            hdrs[nh++] = lua_tostring(L, -1);
            lua_insert(L, base + 1); /* kept below the iteration */
            t++;
            lua_pop(L, 1);
        }
    }
    hdrs[nh] = NULL;
    o.headers = hdrs;

    state_t *st = get_state(L);
    if (!st->client && nh_http_open(h->loop, 1024, 32, &st->client) != 0) {
        st->client = NULL;
        lua_pushnil(L);
        lua_pushliteral(L, "nano.http: cannot start the HTTP client");
        return 2;
    }
    pending_t *p = calloc(1, sizeof *p);
    if (!p) return luaL_error(L, "out of memory");
    p->h = h;
    char err[256];
    if (nh_http_request(st->client, &o, on_done, p, &p->id, err, sizeof err) != 0) {
        free(p);
        lua_pushnil(L);
        lua_pushstring(L, err);
        return 2;
    }
    lua_pushvalue(L, 2);
    p->fn_ref = luaL_ref(L, LUA_REGISTRYINDEX);
    p->next = st->pending;
    st->pending = p;
    lua_pushnumber(L, (lua_Number)p->id);
    return 1;
}

static int l_cancel(lua_State *L) {
    state_t *st = get_state(L);
    uint64_t id = (uint64_t)luaL_checknumber(L, 1);
    for (pending_t *p = st->pending; p; p = p->next) {
        if (p->id == id) {
            nh_http_cancel(st->client, id);
            drop_pending(L, st, p);
            break;
        }
    }
    return 0;
}

static int l_in_flight(lua_State *L) {
    state_t *st = get_state(L);
    lua_pushinteger(L, st->client ? nh_http_in_flight(st->client) : 0);
    return 1;
}

static int l_close(lua_State *L) {
    state_t *st = get_state(L);
    while (st->pending)
        drop_pending(L, st, st->pending);
    if (st->client) nh_http_close(st->client);
    st->client = NULL;
    return 0;
}

int nh_lua_open_http(lua_State *L) {
    static const luaL_Reg fns[] = {
        {"request", l_request}, {"cancel", l_cancel}, {"in_flight", l_in_flight},
        {"close", l_close},     {NULL, NULL},
    };
    lua_newtable(L);
    luaL_register(L, NULL, fns);
    return 1;
}
