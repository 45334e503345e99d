/* lua_main — the application: a fresh Lua state with nano's paths, a host attached to it, and
 * lua/nano/host.lua run on them (a script, or a command such as `test`), then the shutdown in
 * order. main.c parses the command line and calls nh_lua_main; this file is where the process's
 * Lua state is made and closed. */
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <lauxlib.h>
#include <lualib.h>

#include "host.h"
#include "log.h"
#include "lua_alloc.h"
#include "lua_binding.h"
#include "lua_main.h"

/* Where lua/nano/ lives: $NANO_HOST_LUA, next to an installed binary, the source tree (a binary in
 * its build tree must not pick up an older installed copy), or the configured install folder. */
static const char *lua_dir(char *buf, size_t len) {
    const char *env = getenv("NANO_HOST_LUA");
    if (env && *env) return env;
    char exe[PATH_MAX];
    ssize_t n = readlink("/proc/self/exe", exe, sizeof exe - 1);
    if (n > 0) {
        exe[n] = '\0';
        char *slash = strrchr(exe, '/');
        if (slash) {
            *slash = '\0';
            if ((size_t)snprintf(buf, len, "%.*s/../share/nano-host/lua", (int)(len - 32), exe) >=
                len)
                return NH_LUA_SOURCE_DIR;
            char probe[PATH_MAX + 64];
            snprintf(probe, sizeof probe, "%s/nano/init.lua", buf);
            if (access(probe, R_OK) == 0) return buf;
        }
    }
    if (access(NH_LUA_SOURCE_DIR "/nano/init.lua", R_OK) == 0) return NH_LUA_SOURCE_DIR;
    if (access(NH_LUA_INSTALL_DIR "/nano/init.lua", R_OK) == 0) return NH_LUA_INSTALL_DIR;
    return NH_LUA_SOURCE_DIR;
}

static void set_paths(lua_State *L, const char *script_dir) {
    char buf[PATH_MAX];
    const char *ld = lua_dir(buf, sizeof buf);
    lua_getglobal(L, "package");
    lua_getfield(L, -1, "path");
    const char *old = lua_tostring(L, -1);
    lua_pushfstring(L, "%s/?.lua;%s/?/init.lua;%s/?.lua;%s/?/init.lua;%s", script_dir, script_dir,
                    ld, ld, old ? old : "");
    lua_setfield(L, -3, "path");
    lua_pop(L, 1);
    lua_pushstring(L, ld);
    lua_setfield(L, -2, "nano_lua_dir");
    lua_pop(L, 1);
}

int nh_lua_main(const nh_lua_main_t *m) {
    lua_State *L = nh_lua_new_state(); /* lua_alloc.h: why not LuaJIT's own allocator */
    if (!L) {
        fprintf(stderr, "nano-host: cannot create a Lua state\n");
        return 1;
    }
    luaL_openlibs(L);
    nh_lua_open(L);
    set_paths(L, m->script_dir);

    uv_loop_t loop;
    int r = uv_loop_init(&loop);
    if (r != 0) {
        fprintf(stderr, "nano-host: cannot initialise the event loop: %s\n", uv_strerror(r));
        return 1;
    }
    nh_host_t *h = malloc(sizeof *h);
    if (!h || (r = nh_host_init(h, &loop)) != 0) {
        fprintf(stderr, "nano-host: cannot initialise the host: %s\n",
                h ? uv_strerror(r) : "out of memory");
        return 1;
    }
    nh_lua_host_attach(h, L);
    h->cfg.debug = m->debug;
    if (!m->command && (r = nh_host_watch_signals(h, nh_lua_on_signal)) != 0)
        nh_log(NH_LOG_WARN, "cannot watch signals: %s", uv_strerror(r));

    /* Lua's global `arg`, as the standalone interpreter sets it. */
    lua_createtable(L, m->argc, 1);
    for (int k = 0; k < m->argc; k++) {
        lua_pushstring(L, m->argv[k]);
        lua_rawseti(L, -2, k - m->first);
    }
    lua_setglobal(L, "arg");

    /* The host itself is Lua: lua/nano/host.lua runs the script (or busted), the loop and the
     * lifecycle, through nano.core. */
    int status = 1;
    lua_getglobal(L, "require");
    lua_pushliteral(L, "nano.host");
    if (nh_host_call_lua(h, 1, 1, "loading nano.host") == 0) {
        lua_getfield(L, -1, m->command ? m->command : "main");
        lua_remove(L, -2);
        lua_newtable(L);
        if (m->script) {
            lua_pushstring(L, m->script);
            lua_setfield(L, -2, "script");
        }
        lua_pushstring(L, m->script_dir);
        lua_setfield(L, -2, "script_dir");
        lua_pushboolean(L, m->watch);
        lua_setfield(L, -2, "watch");
        lua_newtable(L);
        for (int k = m->first + (m->script ? 1 : 0), n = 1; k < m->argc; k++) {
            lua_pushstring(L, m->argv[k]);
            lua_rawseti(L, -2, n++);
        }
        lua_setfield(L, -2, "args");
        if (nh_host_call_lua(h, 1, 1, m->script ? m->script : m->command) == 0) {
            status = lua_isnumber(L, -1) ? (int)lua_tointeger(L, -1) : 0;
            lua_pop(L, 1);
        }
    }
    nh_host_stop(h);
    uv_run(&loop, UV_RUN_DEFAULT); /* finish closing connections; Lua still sees closed hooks */
    nh_host_free(h);
    nh_lua_host_detach(h);
    /* Everything that took a registry reference (sessions, timers, hooks) has released it by now;
     * one still held is a leak that lua_close would hide. */
    int refs = nh_lua_registry_refs(L);
    if (refs) nh_log(NH_LOG_WARN, "%d Lua registry reference(s) still held at exit", refs);
    nh_lua_close_state(L);
    if (uv_loop_close(&loop) != 0) nh_log(NH_LOG_WARN, "loop closed with handles still open");
    free(h);
    return status;
}
