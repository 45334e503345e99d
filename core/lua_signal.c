/* The host's signals (host.c watches them) into Lua: the `signal` hook (core.set_hook) gets
 * "shutdown" or "reload". Without a hook, or when the hook fails, a shutdown still stops the
 * host. */
#include <lauxlib.h>

#include "host.h"
#include "lua_binding.h"

void nh_lua_on_signal(nh_host_t *h, int what) {
    int shutdown = what == NH_SIGNAL_SHUTDOWN;
    const char *name = shutdown ? "shutdown" : "reload";
    if (h->hooks[NH_HOOK_SIGNAL] == LUA_NOREF) {
        if (shutdown) nh_host_stop(h);
        return;
    }
    lua_rawgeti(h->L, LUA_REGISTRYINDEX, h->hooks[NH_HOOK_SIGNAL]);
    lua_pushstring(h->L, name);
    if (nh_host_call_lua(h, 1, 0, name) != 0 && shutdown) nh_host_stop(h);
}
