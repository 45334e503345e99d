/* lua_fs — the file system for hot reload (lua/nano/reload.lua), as functions of `nano.core`:
 *
 *   core.watch(path, fn) -> watcher | nil, err
 *       fn(name, kind) on every change libuv reports for path (a directory: one of its entries;
 *       not recursive, Linux inotify has no recursive mode). name is the entry's name (nil when
 *       the system did not say); kind is "change" (content or attributes) or "rename" (created,
 *       deleted, moved in or out: what editors that save through a rename produce). On a watch
 *       error fn(nil, "error", message). fn runs through nh_host_call_lua like every callback.
 *   watcher:close()   stops watching; idempotent. watcher:path() -> the watched path.
 *   core.scandir(path) -> { [name] = "file" | "dir" | "other" } | nil, err
 *       The entries of a directory, symbolic links followed. Synchronous: it blocks the loop for
 *       one directory read, which is why only reload setup and debounced rescans call it.
 *
 * Ownership. A watcher's uv_fs_event_t is malloc'd apart from its userdata and freed only in its
 * close callback. While open, the watcher holds a registry ref to itself (it keeps watching when
 * Lua drops it) and to fn; close() releases both. Watchers do not keep the loop alive (they are
 * unreferenced, like the host's timers): whoever starts one closes it before the host stops
 * (nano._stopped calls nano.unwatch); one still open when the Lua state closes is closed
 * by __gc, but its memory is freed only if the loop runs again.
 */
#ifndef NH_LUA_FS_H
#define NH_LUA_FS_H

#include <lua.h>

/* Adds watch and scandir to the table on top of the stack (the `nano.core` module) and creates
 * the watcher metatable. */
void nh_lua_open_fs(lua_State *L);

#endif
