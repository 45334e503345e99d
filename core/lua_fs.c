/* File system watching and listing for hot reload; the contract is in lua_fs.h. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include <lauxlib.h>

#include "host.h"
#include "lua_binding.h"
#include "lua_fs.h"

#define WATCH_MT "nano.core.watcher"

typedef struct watch {
    uv_fs_event_t ev;
    nh_host_t *h;
    int fn_ref;
    int self_ref;
} watch_t;

/* The userdata only points at the watch: the uv handle must outlive a collected userdata until
 * libuv has run its close callback. */
typedef struct lwatch {
    watch_t *w;
} lwatch_t;

static void on_watch_closed(uv_handle_t *hd) {
    free(hd->data);
}

static void watch_close(lua_State *L, lwatch_t *u) {
    watch_t *w = u->w;
    if (!w) return;
    u->w = NULL;
    luaL_unref(L, LUA_REGISTRYINDEX, w->fn_ref);
    luaL_unref(L, LUA_REGISTRYINDEX, w->self_ref);
    uv_close((uv_handle_t *)&w->ev, on_watch_closed);
}

static void on_watch_event(uv_fs_event_t *ev, const char *name, int events, int status) {
    watch_t *w = ev->data;
    lua_State *L = w->h->L;
    int self_ref = w->self_ref;
    /* Hold the userdata while fn runs: fn may close the watcher (releasing self_ref). */
    lua_rawgeti(L, LUA_REGISTRYINDEX, self_ref);
    lua_rawgeti(L, LUA_REGISTRYINDEX, w->fn_ref);
    int nargs = 2;
    if (status < 0) {
        lua_pushnil(L);
        lua_pushliteral(L, "error");
        lua_pushstring(L, uv_strerror(status));
        nargs = 3;
    } else {
        if (name)
            lua_pushstring(L, name);
        else
            lua_pushnil(L);
        /* A rename may also have changed the content; the caller treats both as a change. */
        if (events & UV_RENAME)
            lua_pushliteral(L, "rename");
        else
            lua_pushliteral(L, "change");
    }
    nh_host_call_lua(w->h, nargs, 0, "watch callback");
    lua_pop(L, 1);
}

/* watch(path, fn) -> watcher | nil, err */
static int c_watch(lua_State *L) {
    nh_host_t *h = nh_host_from_lua(L);
    if (!h) return luaL_error(L, "nano.core: no host in this Lua state");
    const char *path = luaL_checkstring(L, 1);
    luaL_checktype(L, 2, LUA_TFUNCTION);
    /* The userdata first: once the handle is open, nothing below raises before __gc owns it. */
    lwatch_t *u = lua_newuserdata(L, sizeof *u);
    u->w = NULL;
    luaL_getmetatable(L, WATCH_MT);
    lua_setmetatable(L, -2);
    watch_t *w = calloc(1, sizeof *w);
    if (!w) return luaL_error(L, "out of memory");
    w->h = h;
    w->fn_ref = w->self_ref = LUA_NOREF;
    int r = uv_fs_event_init(h->loop, &w->ev);
    if (r == 0) {
        w->ev.data = w;
        r = uv_fs_event_start(&w->ev, on_watch_event, path, 0);
        if (r != 0) uv_close((uv_handle_t *)&w->ev, on_watch_closed); /* frees w */
    } else {
        free(w);
    }
    if (r != 0) {
        lua_pushnil(L);
        lua_pushfstring(L, "watch %s: %s", path, uv_strerror(r));
        return 2;
    }
    uv_unref((uv_handle_t *)&w->ev);
    u->w = w;
    lua_pushvalue(L, 2);
    w->fn_ref = luaL_ref(L, LUA_REGISTRYINDEX);
    lua_pushvalue(L, -1);
    w->self_ref = luaL_ref(L, LUA_REGISTRYINDEX);
    return 1;
}

static int watcher_close(lua_State *L) {
    watch_close(L, luaL_checkudata(L, 1, WATCH_MT));
    return 0;
}

static int watcher_path(lua_State *L) {
    lwatch_t *u = luaL_checkudata(L, 1, WATCH_MT);
    char buf[4096];
    size_t len = sizeof buf;
    if (!u->w || uv_fs_event_getpath(&u->w->ev, buf, &len) != 0) {
        lua_pushnil(L);
        return 1;
    }
    lua_pushlstring(L, buf, len);
    return 1;
}

static int watcher_tostring(lua_State *L) {
    lwatch_t *u = luaL_checkudata(L, 1, WATCH_MT);
    lua_pushfstring(L, "watcher (%s)", u->w ? "open" : "closed");
    return 1;
}

/* What an entry is, following symbolic links (d_type alone says "link" or, on some file
 * systems, nothing). */
static const char *entry_type(uv_loop_t *loop, const char *dir, const uv_dirent_t *e) {
    if (e->type == UV_DIRENT_FILE) return "file";
    if (e->type == UV_DIRENT_DIR) return "dir";
    if (e->type != UV_DIRENT_LINK && e->type != UV_DIRENT_UNKNOWN) return "other";
    size_t n = strlen(dir) + strlen(e->name) + 2;
    char *full = malloc(n);
    if (!full) return "other";
    snprintf(full, n, "%s/%s", dir, e->name);
    uv_fs_t req;
    const char *t = "other";
    if (uv_fs_stat(loop, &req, full, NULL) == 0) {
        if (S_ISDIR(req.statbuf.st_mode))
            t = "dir";
        else if (S_ISREG(req.statbuf.st_mode))
            t = "file";
    }
    uv_fs_req_cleanup(&req);
    free(full);
    return t;
}

/* scandir(path) -> { [name] = "file" | "dir" | "other" } | nil, err */
static int c_scandir(lua_State *L) {
    nh_host_t *h = nh_host_from_lua(L);
    if (!h) return luaL_error(L, "nano.core: no host in this Lua state");
    const char *path = luaL_checkstring(L, 1);
    uv_fs_t req;
    int r = uv_fs_scandir(h->loop, &req, path, 0, NULL);
    if (r < 0) {
        uv_fs_req_cleanup(&req);
        lua_pushnil(L);
        lua_pushfstring(L, "scandir %s: %s", path, uv_strerror(r));
        return 2;
    }
    lua_createtable(L, 0, r);
    uv_dirent_t e;
    while (uv_fs_scandir_next(&req, &e) == 0) {
        lua_pushstring(L, entry_type(h->loop, path, &e));
        lua_setfield(L, -2, e.name);
    }
    uv_fs_req_cleanup(&req);
    return 1;
}

void nh_lua_open_fs(lua_State *L) {
    static const luaL_Reg fns[] = {{"watch", c_watch}, {"scandir", c_scandir}, {NULL, NULL}};
    static const luaL_Reg methods[] = {
        {"close", watcher_close}, {"path", watcher_path}, {NULL, NULL}};
    static const luaL_Reg meta[] = {
        {"__gc", watcher_close}, {"__tostring", watcher_tostring}, {NULL, NULL}};
    nh_lua_class(L, WATCH_MT, methods, meta);
    luaL_register(L, NULL, fns);
}
