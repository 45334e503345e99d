/* lua_console — `nano.console_core`: the admin console's socket (console.h) for Lua.
 *
 *   start(path, fn) -> path     listens; fn(client_id, line) is called for each command line
 *   reply(client_id, ok, text)  answers that client's line (now or later) -> true | nil, err
 *   close()                     stops listening, drops every client, releases fn
 *   default_path() -> path      where start puts the socket by default (console.h)
 *
 * The commands are lua/nano/console.lua. fn runs through nh_host_call_lua: protected, and the
 * watchdog applies.
 */
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include <lauxlib.h>
#include <lua.h>

#include "console.h"
#include "host.h"
#include "lua_binding.h"

static int handler_ref = LUA_NOREF;

static void on_line(void *ud, uint64_t client, const char *line, size_t len) {
    nh_host_t *h = ud;
    lua_State *L = h->L;
    if (handler_ref == LUA_NOREF) {
        static const char msg[] = "console not ready";
        nh_console_reply(h->console, client, 0, msg, sizeof msg - 1);
        return;
    }
    lua_rawgeti(L, LUA_REGISTRYINDEX, handler_ref);
    lua_pushnumber(L, (lua_Number)client);
    lua_pushlstring(L, line, len);
    if (nh_host_call_lua(h, 2, 0, "console command") != 0) {
        static const char msg[] = "internal error (see the server log)";
        nh_console_reply(h->console, client, 0, msg, sizeof msg - 1);
    }
}

static void release(lua_State *L) {
    luaL_unref(L, LUA_REGISTRYINDEX, handler_ref);
    handler_ref = LUA_NOREF;
}

static int l_start(lua_State *L) {
    nh_host_t *h = nh_host_from_lua(L);
    const char *path = luaL_checkstring(L, 1);
    luaL_checktype(L, 2, LUA_TFUNCTION);
    if (h->console)
        return luaL_error(L, "console: already listening on %s", nh_console_path(h->console));
    if (h->stopping) return luaL_error(L, "console: the server is shutting down");
    char def[256];
    nh_console_default_path((int)getpid(), def, sizeof def);
    if (strcmp(path, def) == 0) { /* the shared run folder: clear what killed hosts left */
        *strrchr(def, '/') = '\0';
        nh_console_sweep(def);
    }
    int r = nh_console_start(h->loop, path, on_line, h, &h->console);
    if (r) {
        lua_pushnil(L);
        lua_pushfstring(L, "console %s: %s", path, uv_strerror(r));
        return 2;
    }
    release(L);
    lua_pushvalue(L, 2);
    handler_ref = luaL_ref(L, LUA_REGISTRYINDEX);
    lua_pushstring(L, path);
    return 1;
}

static int l_reply(lua_State *L) {
    nh_host_t *h = nh_host_from_lua(L);
    lua_Number id = luaL_checknumber(L, 1);
    int ok = lua_toboolean(L, 2);
    size_t len;
    const char *text = luaL_optlstring(L, 3, "", &len);
    if (!(id >= 1 && id < 9007199254740992.0)) return luaL_argerror(L, 1, "a console client id");
    int r = nh_console_reply(h->console, (uint64_t)id, ok, text, len);
    if (r) {
        lua_pushnil(L);
        lua_pushstring(L, r == UV_ENOENT ? "console client gone" : "no command to answer");
        return 2;
    }
    lua_pushboolean(L, 1);
    return 1;
}

static int l_close(lua_State *L) {
    nh_host_t *h = nh_host_from_lua(L);
    nh_console_close(h->console);
    release(L);
    return 0;
}

static int l_default_path(lua_State *L) {
    char path[256];
    nh_console_default_path((int)getpid(), path, sizeof path);
    lua_pushstring(L, path);
    return 1;
}

int nh_lua_open_console(lua_State *L) {
    static const luaL_Reg fns[] = {{"start", l_start},
                                   {"reply", l_reply},
                                   {"close", l_close},
                                   {"default_path", l_default_path},
                                   {NULL, NULL}};
    lua_newtable(L);
    luaL_register(L, NULL, fns);
    return 1;
}
