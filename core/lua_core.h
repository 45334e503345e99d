/* lua_core — the parts of the `nano.core` module, one file per object:
 *
 *   lua_host.c    the app: configure/config, set_hook, respond/push/push_many, resume,
 *                 release_thread, run/stop/restart, stats, running, sessions, log/log_level; it
 *                 opens the module (nh_lua_open) and adds the parts below to it
 *   lua_listen.c  listen, unlisten, listener_tls; transport_ws's origin check
 *   lua_timer.c   now, hrtime, advance, timer (class `nano.core.timer`), stop_timers
 *   lua_fs.c      watch, scandir (class `nano.core.watcher`; lua_fs.h)
 *   lua_session.c members_new, members_add, members_remove (class `nano.core.members`: a
 *                 group's members for push_many), and the session userdata
 *
 * Naming, in these files: c_<name> is the module function <name>; <class>_<method> is a method
 * of a class (timer_stop); nh_lua_core_<part>(L) adds a part's functions to the module table on
 * top of the stack. Classes are registered with nh_lua_class (lua_class.c).
 */
#ifndef NH_LUA_CORE_H
#define NH_LUA_CORE_H

#include <lauxlib.h>
#include <lua.h>

#include "host.h"

/* The host of this Lua state, for every nano.core function; raises if there is none. It checks
 * for a watchdog abort first: a compiled loop calling nano.core is stopped here. */
static inline nh_host_t *nh_lua_core_host(lua_State *L) {
    nh_watchdog_check(L);
    nh_host_t *h = nh_host_from_lua(L);
    if (!h) luaL_error(L, "nano.core: no host in this Lua state");
    return h;
}

void nh_lua_core_listen(lua_State *L); /* lua_listen.c */
void nh_lua_core_timers(lua_State *L); /* lua_timer.c: also registers the timer class */

/* The Lua timers (core.timer) on the host's heap: core.stats().timers. */
int nh_lua_core_timer_count(nh_host_t *h);

#endif
