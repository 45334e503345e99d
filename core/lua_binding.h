/* lua_binding — the C↔Lua boundary, in one place.
 *
 * lua_host.c    the `nano.core` module: configure, send, loop control, hooks, stats, log; with
 *               lua_listen.c (listeners) and lua_timer.c (time, timers): see lua_core.h.
 * lua_session.c session userdata (methods in C; the Lua side adds push/response on top), and
 *               member lists (a group's sessions for core.push_many).
 * lua_codec.c   the wire codec for Lua (nano.client, tests): Lua never re-implements it.
 * lua_tcp.c     `nano.tcp`: outgoing TCP streams on the host's loop (nano.client).
 * lua_json.c    `nano.json_codec`: the JSON serializer's codec (lua-cjson's output, faster).
 * lua_nats.c    `nano.nats_core`: a NATS connection for the cluster (lua/nano/cluster.lua).
 * lua_sqlite.c  `nano.sqlite_core`: SQLite handles whose statements run on libuv's pool.
 * lua_http.c    `nano.http_core`: outgoing HTTP on libcurl's multi interface (lua/nano/http.lua).
 * lua_redis.c   `nano.redis_core`: one Redis connection (redis_client.c), under nano.redis.
 * lua_pg.c      `nano.pg_core`: one PostgreSQL connection (pg_client.c), under nano.pg.
 * lua_protobuf.c `nano.protobuf_codec`: protocol buffers (core/protobuf.c) for the protobuf
 *               serializers.
 * lua_signal.c  the host's signals (SIGINT/SIGTERM/SIGHUP) into the `signal` hook.
 * lua_dispatch.c the session events (session.h) as calls of the Lua hooks: handshake, dispatch,
 *               closed.
 *
 * Every call from C into Lua goes through nh_host_call_lua() (host.c): pcall + traceback + log.
 */
#ifndef NH_LUA_BINDING_H
#define NH_LUA_BINDING_H

#include <lauxlib.h>
#include <lua.h>

#include "host.h"
#include "session.h"

/* Registers `nano.core`, `nano.codec`, `nano.tcp`, `nano.json_codec`, `nano.redis_core` and
 * `nano.pg_core` in package.preload. */
void nh_lua_open(lua_State *L);

/* The host's signal callback (nh_host_watch_signals): calls the `signal` hook with "shutdown"
 * or "reload"; a shutdown without a hook, or whose hook failed, stops the host. */
void nh_lua_on_signal(nh_host_t *h, int what);

/* transport_ws's route callback (nh_ws_route_fn; ud: the host): hands a plain HTTP request on a
 * WebSocket listener to nano.http.route's router (lua_metrics.c). 1 when a route takes it. */
int nh_lua_ws_http_route(void *ud, const nh_http_request_t *req);
/* Ties a Lua state to a host made by nh_host_init (lua_call.c): the registry entries, hooks
 * (unset), the dispatcher threads, the watchdog; 0. nh_lua_host_detach undoes it after
 * nh_host_free (whose close callbacks may still call Lua), before lua_close. */
int nh_lua_host_attach(nh_host_t *h, lua_State *L);
void nh_lua_host_detach(nh_host_t *h);

/* Points the host's session events (h->events) at the Lua hooks that are set (h->hooks): called
 * when a hook changes and when Lua first sees a session (whose closed event must then detach
 * the userdata). */
void nh_lua_dispatch_install(nh_host_t *h);

/* Pushes the session's userdata, creating it (and its registry ref) on first use. */
void nh_lua_push_session(lua_State *L, nh_session_t *s);
/* The session is gone: its userdata now answers "session closed"; the registry ref is dropped. */
void nh_lua_session_detach(lua_State *L, nh_session_t *s);
/* The session behind the userdata at idx (raises a Lua error if idx is not a session);
 * NULL when the session is closed. */
nh_session_t *nh_lua_to_session(lua_State *L, int idx);
/* The same for the memory of a userdata Lua code has checked is a session (its metatable is
 * core.session_metatable) and hands over through the FFI; never raises. */
nh_session_t *nh_lua_session_of(const void *udata);
/* s:id(), s:uid() and s:is_closed() (1 or 0) for the FFI, from such a userdata's memory; -1 while
 * the watchdog asks for an abort, which only the methods can raise. */
double nh_lua_ffi_session_id(const void *udata);
double nh_lua_ffi_session_uid(const void *udata);
int nh_lua_ffi_session_closed(const void *udata);
/* core.now() for the FFI (lua_timer.c): the same seconds, or -1 where only core.now can answer:
 * no sole host (nh_host_sole), or the watchdog asks for an abort, which core.now raises. */
double nh_lua_ffi_now(void);
/* The name of the sessions' metatable in the registry. */
#define NH_LUA_SESSION_MT "nano.session"
/* The dispatch hook's returned response (core.set_hook's on_unsent, lua_host.c): T's results
 * (value, empty_array, route) sent as the response to request id of s, nothing for a nil value;
 * the value is JSON, or protobuf when the second is a core types table (nh_lua_pb_core_encode);
 * or the text is written already: (json_codec.flat_mark, value, route), nh_lua_json_flat_take,
 * or the protobuf bytes: (protobuf_codec.flat_mark, value, route), nh_lua_pb_flat_take.
 * One that does not encode or is too big goes to the hook's on_unsent. 0, or -1 when it was not
 * answered (on_unsent failed, or there is none): the caller answers 500. */
int nh_lua_send_returned(nh_host_t *h, lua_State *T, nh_session_t *s, uint64_t id);
/* The same, but never raises: NULL also when idx is not a session. For loops that hold C
 * resources a Lua error would leak (core.push_many). */
nh_session_t *nh_lua_test_session(lua_State *L, int idx);
/* Member lists (lua_session.c): nh_lua_core_members adds members_new, members_add and
 * members_remove to the module table on top of the stack. nh_lua_is_members: whether idx is one.
 * nh_lua_members_send_shared: sends packet b (session.h's send_shared) to every member of the
 * list at idx, appends those it did not reach (closed, over their send limit, not a session of
 * this state) to the table at failed_idx, counting them in *failed; the number reached. Never
 * raises. */
void nh_lua_core_members(lua_State *L);
int nh_lua_is_members(lua_State *L, int idx);
int nh_lua_members_send_shared(lua_State *L, int idx, nh_buf_t *b, int failed_idx, int *failed);
/* The id of the session userdata at idx, closed or not (raises if idx is not a session). */
uint64_t nh_lua_session_id(lua_State *L, int idx);

/* Argument checks shared by nano.core and nano.codec (raise on a bad value): a message id
 * (0..2^64, integral; nil is 0) and a route (a string, or a 16-bit dictionary code). */
uint64_t nh_lua_check_msg_id(lua_State *L, int idx);
void nh_lua_check_route(lua_State *L, int idx, nh_msg_t *m);

int nh_lua_open_session(lua_State *L); /* leaves the methods table on the stack */
int nh_lua_open_codec(lua_State *L);   /* leaves the module table on the stack */
int nh_lua_open_tcp(lua_State *L);     /* leaves the module table on the stack */
int nh_lua_open_json(lua_State *L);    /* `nano.json_codec` (lua_json.c): the module table */
/* The JSON text nano.json_codec's encode writes for the value at idx (empty: the empty-array
 * marker or NULL), in a buffer of lua_json.c's valid until the next call; NULL where encode
 * would raise an error. Never raises. */
const char *nh_lua_json_encode(lua_State *L, int idx, const char *empty, size_t empty_len,
                               size_t *len);
/* Pushes the value nano.json_codec's decode reads from the text and returns 1; 0, with nothing
 * pushed, where decode declines (not plain JSON: lua-cjson's business). Raises only when out of
 * memory. keys: the cache object keys are pushed through (lua_strcache.h), or NULL. */
struct nh_strcache;
int nh_lua_json_decode(lua_State *L, const char *s, size_t len, struct nh_strcache *keys);
/* The flat writer's text (lua_json.c; nano's Lua writes it through the FFI and hands the core
 * json_codec.flat_mark in the value's place): the text when mark is the writer's and a finished
 * text is there, which is then taken (a second take gets NULL); NULL otherwise. Valid until nano
 * writes the next. nh_lua_json_is_flat_mark: whether p is the mark, taken or not. */
const char *nh_lua_json_flat_take(const void *mark, size_t *len);
int nh_lua_json_is_flat_mark(const void *p);
const void *nh_lua_json_flat_mark(void); /* json_codec.flat_mark */

int nh_lua_open_nats(lua_State *L);    /* `nano.nats_core` (lua_nats.c): the module table */
int nh_lua_open_sqlite(lua_State *L);  /* `nano.sqlite_core` (lua_sqlite.c): the module table */
int nh_lua_open_http(lua_State *L);    /* `nano.http_core` (lua_http.c): the module table */
int nh_lua_open_redis(lua_State *L);   /* `nano.redis_core` (lua_redis.c): the module table */
int nh_lua_open_pg(lua_State *L);      /* `nano.pg_core` (lua_pg.c): the module table */
int nh_lua_open_metrics(lua_State *L); /* `nano.metrics_core` (lua_metrics.c): the module table */
int nh_lua_open_console(lua_State *L); /* `nano.console_core` (lua_console.c): the module table */

/* `nano.protobuf_codec` (lua_protobuf.c): leaves the module table on the stack (also registered
 * in package.preload by nh_lua_open) */
int nh_lua_open_protobuf(lua_State *L);
/* With a core types table (schema:core_types: routes to message types) at `types`: the message
 * type it has for the route at `route`, an opaque handle valid while the table lives; NULL when it
 * has none (a route code, a route without one). Never raises. */
const void *nh_lua_pb_core_type(lua_State *L, int types, int route);
/* Pushes the field names of the core types table at `types`, which nh_lua_pb_core_decode reads. */
void nh_lua_pb_push_names(lua_State *L, int types);
/* Pushes the table `type` (nh_lua_pb_core_type) decodes from the bytes and returns 1; 0, with
 * nothing pushed, when the bytes do not decode (the serializer's own decode then says why) or the
 * schema is gone. names: the stack index of that table's names. Raises only when out of memory. */
int nh_lua_pb_core_decode(lua_State *L, int names, const void *type, const uint8_t *data,
                          size_t len);
/* The bytes of the value at idx as that type, in a buffer of the schema's valid until its next
 * encode; NULL when there is no type or the value does not fit it (the serializer's marshal then
 * says why). Never raises. */
const uint8_t *nh_lua_pb_core_encode(lua_State *L, int types, int route, int idx, size_t *len);
/* The flat writer's bytes (lua_protobuf.c; as nh_lua_json_flat_take for JSON): the message when
 * mark is protobuf_codec.flat_mark and a finished one is there, which is then taken; NULL
 * otherwise. nh_lua_pb_is_flat_mark: whether p is the mark, taken or not. */
const uint8_t *nh_lua_pb_flat_take(const void *mark, size_t *len);
int nh_lua_pb_is_flat_mark(const void *p);

/* A class: registers the metatable `mt` (methods as __index, then the metamethods in `meta`, e.g.
 * {"__gc", fn}; NULL for none) unless it exists. The stack is left as it was. */
void nh_lua_class(lua_State *L, const char *mt, const luaL_Reg *methods, const luaL_Reg *meta);

/* A module with a class: registers the metatable `mt` (methods as __index, then the metamethods
 * in `meta`, e.g. {"__gc", fn}; NULL for none) unless it exists, and leaves a new table of the
 * module functions `fns` on the stack. Returns 1, what a module's open function returns. */
int nh_lua_class_module(lua_State *L, const char *mt, const luaL_Reg *methods, const luaL_Reg *meta,
                        const luaL_Reg *fns);

/* Objects of a class not yet freed, per Lua state, under a registry key the class owns (the
 * address of a static): add d to the count, or push it (returns 1: a Lua function's result). */
void nh_lua_count_add(lua_State *L, const void *key, int d);
int nh_lua_count_push(lua_State *L, const void *key);

/* Registry references in use (luaL_ref), for leak checks: core.stats().lua_refs, and main.c at
 * exit, where anything above zero is logged. */
int nh_lua_registry_refs(lua_State *L);

#endif
