/* lua_listen — `nano.core`'s listeners: listen, unlisten, listener_tls (the TCP and WebSocket
 * listeners of the host, their options and TLS contexts), and transport_ws's origin check, which
 * calls the origin hook. Part of the module lua_host.c opens (lua_core.h). */
#include <stdlib.h>
#include <string.h>

#include <lauxlib.h>

#include "conn.h"
#include "host.h"
#include "log.h"
#include "lua_binding.h"
#include "lua_core.h"
#include "transport.h"
#include "transport_ws.h"

static int field_bool(lua_State *L, int t, const char *k) {
    lua_getfield(L, t, k);
    int v = lua_toboolean(L, -1);
    lua_pop(L, 1);
    return v;
}

static const char *field_str(lua_State *L, int t, const char *k) {
    lua_getfield(L, t, k);
    const char *v = lua_type(L, -1) == LUA_TSTRING ? lua_tostring(L, -1) : NULL;
    lua_pop(L, 1); /* the string stays alive: t holds it */
    return v;
}

/* A server TLS context from {cert=, key=, ca=, ciphers=, min_version=} at index t; NULL with
 * the reason (naming the file) in err. */
static nh_tls_ctx_t *tls_ctx_from(lua_State *L, int t, int websocket, char *err, size_t errlen) {
    nh_tls_opts_t o = {
        .cert = field_str(L, t, "cert"),
        .key = field_str(L, t, "key"),
        .ca = field_str(L, t, "ca"),
        .ciphers = field_str(L, t, "ciphers"),
        .min_version = field_str(L, t, "min_version"),
        .alpn_http11 = websocket,
    };
    return nh_tls_ctx_server(&o, err, errlen);
}

/* listener_tls(id, {cert=, key=, ...}) -> true | nil, err: new connections get the new
 * certificate; live ones keep theirs. On error the listener keeps its old one. */
static int c_listener_tls(lua_State *L) {
    nh_host_t *h = nh_lua_core_host(L);
    int id = (int)luaL_checkinteger(L, 1);
    luaL_checktype(L, 2, LUA_TTABLE);
    for (nh_listener_t *l = h->listeners; l; l = l->next) {
        if (l->id != id) continue;
        char err[512];
        nh_tls_ctx_t *ctx = tls_ctx_from(L, 2, l->transport == &nh_transport_ws, err, sizeof err);
        if (!ctx) {
            lua_pushnil(L);
            lua_pushstring(L, err);
            return 2;
        }
        nh_tls_ctx_unref(l->tls);
        l->tls = ctx;
        lua_pushboolean(L, 1);
        return 1;
    }
    lua_pushnil(L);
    lua_pushstring(L, "no such listener");
    return 2;
}

/* A listener that never started: its options with it. */
static void listener_free_unstarted(nh_listener_t *l) {
    if (l->opts_free) l->opts_free(l->opts);
    free(l);
}

/* transport_ws's origin check: the origin hook in Lua (init.lua: the listener's check_origin or
 * the default one). */
static int ws_check_origin(void *ud, int listener_id, const char *origin) {
    nh_host_t *h = ud;
    if (h->hooks[NH_HOOK_ORIGIN] == LUA_NOREF) return 1;
    lua_State *L = h->L;
    lua_rawgeti(L, LUA_REGISTRYINDEX, h->hooks[NH_HOOK_ORIGIN]);
    lua_pushinteger(L, listener_id);
    lua_pushstring(L, origin);
    if (nh_host_call_lua(h, 2, 1, "check_origin") != 0) return 0;
    int ok = lua_toboolean(L, -1);
    lua_pop(L, 1);
    return ok;
}

/* listen(addr, {websocket=, path=, check_origin=bool, static={{prefix=, dir=}, ...},
 *               tls={cert=, key=, ca=, ciphers=, min_version=}}) -> id, bound_address | nil, err */
static int c_listen(lua_State *L) {
    nh_host_t *h = nh_lua_core_host(L);
    const char *addr = luaL_checkstring(L, 1);
    int ws = lua_istable(L, 2) && field_bool(L, 2, "websocket");
    nh_listener_t *l = calloc(1, sizeof *l);
    nh_ws_options_t *o = ws ? calloc(1, sizeof *o) : NULL;
    if (!l || (ws && !o)) {
        free(l);
        free(o);
        return luaL_error(L, "out of memory");
    }
    if (o) {
        l->opts = o;
        l->opts_free = nh_ws_options_free;
        strcpy(o->paths[0], "/");
        o->npaths = 1;
        o->origin = ws_check_origin;
        o->route = nh_lua_ws_http_route;
        o->ud = h;
    }
    if (o) {
        o->check_origin = field_bool(L, 2, "check_origin");
        lua_getfield(L, 2, "path"); /* a string, or a list of them */
        int n = lua_istable(L, -1) ? (int)lua_objlen(L, -1) : lua_isstring(L, -1) ? 1 : 0;
        if (n > NH_WS_MAX_PATHS || (lua_istable(L, -1) && n == 0)) {
            listener_free_unstarted(l);
            return luaL_error(L, "listen: path: one to %d paths", NH_WS_MAX_PATHS);
        }
        if (n) o->npaths = 0;
        for (int i = 1; i <= n; i++) {
            if (lua_istable(L, -1))
                lua_rawgeti(L, -1, i);
            else
                lua_pushvalue(L, -1);
            const char *p = lua_tostring(L, -1);
            if (!p || p[0] != '/' || strlen(p) >= sizeof o->paths[0]) {
                listener_free_unstarted(l);
                return luaL_error(L, "listen: a path must start with '/' and be under 128 bytes");
            }
            strcpy(o->paths[o->npaths++], p);
            lua_pop(L, 1);
        }
        lua_pop(L, 1);
        lua_getfield(L, 2, "static");
        if (lua_istable(L, -1)) {
            int n = (int)lua_objlen(L, -1);
            o->statics = calloc((size_t)(n ? n : 1), sizeof *o->statics);
            if (!o->statics) {
                listener_free_unstarted(l);
                return luaL_error(L, "out of memory");
            }
            for (int i = 1; i <= n; i++) {
                lua_rawgeti(L, -1, i);
                lua_getfield(L, -1, "prefix");
                lua_getfield(L, -2, "dir");
                const char *prefix = lua_tostring(L, -2), *dir = lua_tostring(L, -1);
                if (!prefix || !dir || prefix[0] != '/' ||
                    strlen(prefix) >= sizeof o->statics[0].prefix ||
                    strlen(dir) >= sizeof o->statics[0].dir) {
                    listener_free_unstarted(l);
                    return luaL_error(L,
                                      "listen: static: a prefix starts with '/' (under %d "
                                      "bytes) and names a folder (under %d bytes)",
                                      (int)sizeof o->statics[0].prefix,
                                      (int)sizeof o->statics[0].dir);
                }
                nh_static_dir_t *sd = &o->statics[o->nstatics++];
                strcpy(sd->prefix, prefix);
                strcpy(sd->dir, dir);
                lua_pop(L, 3);
            }
        }
        lua_pop(L, 1);
    }
    l->transport = ws ? &nh_transport_ws : &nh_transport_tcp;
    if (lua_istable(L, 2)) {
        lua_getfield(L, 2, "tls");
        if (lua_istable(L, -1)) {
            char err[512];
            l->tls = tls_ctx_from(L, lua_gettop(L), ws, err, sizeof err);
            if (!l->tls) {
                listener_free_unstarted(l);
                lua_pushnil(L);
                lua_pushfstring(L, "listen %s: tls: %s", addr, err);
                return 2;
            }
        }
        lua_pop(L, 1);
    }
    int r = nh_listener_start(h, l, addr); /* frees l on failure */
    if (r) {
        lua_pushnil(L);
        lua_pushfstring(L, "listen %s: %s", addr, uv_strerror(r));
        return 2;
    }
    if (ws) {
        char also[NH_WS_MAX_PATHS * 130] = "";
        for (int i = 1; i < o->npaths; i++) {
            size_t at = strlen(also);
            snprintf(also + at, sizeof also - at, "%s%s%s", i == 1 ? " (also " : ", ", o->paths[i],
                     i == o->npaths - 1 ? ")" : "");
        }
        nh_log(NH_LOG_INFO, "listening %s://%s%s%s", l->tls ? "wss" : "ws", l->bound, o->paths[0],
               also);
    } else {
        nh_log(NH_LOG_INFO, "listening %s://%s", l->tls ? "tls" : "tcp", l->bound);
    }
    lua_pushinteger(L, l->id);
    lua_pushstring(L, l->bound);
    return 2;
}

static int c_unlisten(lua_State *L) {
    nh_host_t *h = nh_lua_core_host(L);
    int id = (int)luaL_checkinteger(L, 1);
    for (nh_listener_t *l = h->listeners; l; l = l->next) {
        if (l->id == id) {
            nh_listener_close(l);
            lua_pushboolean(L, 1);
            return 1;
        }
    }
    lua_pushboolean(L, 0);
    return 1;
}

void nh_lua_core_listen(lua_State *L) {
    static const luaL_Reg fns[] = {
        {"listen", c_listen},
        {"unlisten", c_unlisten},
        {"listener_tls", c_listener_tls},
        {NULL, NULL},
    };
    luaL_register(L, NULL, fns);
}
