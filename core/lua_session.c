/* Session userdata, and member lists of them (below: a group's members as core.push_many walks
 * them). The userdata outlives the session safely: its pointer is cleared when the
 * connection is gone (nh_lua_session_detach). Key/value state lives in the userdata's
 * environment table, so it stays readable after close (e.g. in on_session_closed). The table is
 * made by the first set: most sessions of a big server never have state, and an empty table per
 * idle connection is memory for nothing. */
#include <stdio.h>
#include <stdlib.h>

#include <lauxlib.h>

#include "host.h"
#include "lua_binding.h"

#define SESSION_MT NH_LUA_SESSION_MT

/* 24 bytes (every idle connection has one: docs/benchmarks.md, "Connection scale"; with
 * LuaJIT's header the block is one 16-byte class of the Lua allocator bigger than when this was
 * 16: +14 bytes a connection at 19,000, sixteenth pass). While the session lives, ref is its
 * pointer (bit 0 clear: it is aligned) and id and uid are read from it; once it is gone, ref holds
 * id << 1 | 1 and uid the uid it had, so both stay readable. busy and waiting are the dispatcher's
 * (lua/nano/init.lua, state_of, which declares this layout to the FFI as nh_lsession_t): the number
 * of the task running the session's in-order messages (0: none) and how many wait behind it. */
typedef struct lsession {
    uintptr_t ref;
    lua_Number uid; /* detached only */
    int32_t busy;
    int32_t waiting;
} lsession_t;

#if UINTPTR_MAX == UINT64_MAX
_Static_assert(sizeof(lsession_t) == 24, "the session userdata grew");
#endif

static nh_session_t *sess(const lsession_t *u) {
    return (u->ref & 1) ? NULL : (nh_session_t *)u->ref;
}

static lua_Number sess_id(const lsession_t *u) {
    const nh_session_t *s = sess(u);
    return s ? (lua_Number)s->id : (lua_Number)(u->ref >> 1);
}

static lua_Number sess_uid(const lsession_t *u) {
    const nh_session_t *s = sess(u);
    return s ? (lua_Number)s->uid : u->uid;
}

static int sess_closed(const lsession_t *u) {
    const nh_session_t *s = sess(u);
    return !s || s->state == NH_SS_CLOSED;
}

/* The session metatable of the Lua state that registered it last: comparing a userdata's
 * metatable with it is a pointer compare, where luaL_checkudata looks the name up in the
 * registry (~150 instructions on every session method, so on every message). Another state's
 * sessions (two states in one process: tests) take the slow path. */
static const void *session_mt;

static lsession_t *check(lua_State *L, int idx) {
    nh_watchdog_check(L); /* every session method: a compiled loop calling one is stopped here */
    lsession_t *u = lua_touserdata(L, idx);
    if (u && lua_getmetatable(L, idx)) {
        int ours = lua_topointer(L, -1) == session_mt;
        lua_pop(L, 1);
        if (ours) return u;
    }
    return (lsession_t *)luaL_checkudata(L, idx, SESSION_MT);
}

nh_session_t *nh_lua_to_session(lua_State *L, int idx) {
    return sess(check(L, idx));
}

nh_session_t *nh_lua_session_of(const void *udata) {
    return sess(udata);
}

/* s:id(), s:uid() and s:is_closed() through the FFI (lua_host.c: core_ffi): what the methods
 * return, or -1 while the watchdog asks for an abort (the methods raise it: check()). */
double nh_lua_ffi_session_id(const void *udata) {
    return nh_watchdog_pending() ? -1 : sess_id(udata);
}

double nh_lua_ffi_session_uid(const void *udata) {
    return nh_watchdog_pending() ? -1 : sess_uid(udata);
}

int nh_lua_ffi_session_closed(const void *udata) {
    return nh_watchdog_pending() ? -1 : sess_closed(udata);
}

uint64_t nh_lua_session_id(lua_State *L, int idx) {
    return (uint64_t)sess_id(check(L, idx));
}

/* The pointer compare first, as in check(): a broadcast asks this once per member, and the
 * registry lookup by name was a third of a push's instructions (docs/benchmarks.md). */
static lsession_t *test_udata(lua_State *L, int idx) {
    lsession_t *u = lua_touserdata(L, idx);
    if (!u || !lua_getmetatable(L, idx)) return NULL;
    int same = lua_topointer(L, -1) == session_mt;
    if (!same) {
        luaL_getmetatable(L, SESSION_MT);
        same = lua_rawequal(L, -1, -2);
        lua_pop(L, 1);
    }
    lua_pop(L, 1);
    return same ? u : NULL;
}

nh_session_t *nh_lua_test_session(lua_State *L, int idx) {
    lsession_t *u = test_udata(L, idx);
    return u ? sess(u) : NULL;
}

void nh_lua_push_session(lua_State *L, nh_session_t *s) {
    if (s->binding_ref) {
        lua_rawgeti(L, LUA_REGISTRYINDEX, s->binding_ref);
        return;
    }
    lsession_t *u = lua_newuserdata(L, sizeof *u);
    u->ref = (uintptr_t)s;
    u->uid = 0;
    u->busy = u->waiting = 0;
    luaL_getmetatable(L, SESSION_MT);
    lua_setmetatable(L, -2);
    lua_pushvalue(L, LUA_GLOBALSINDEX); /* no state yet (push_state) */
    lua_setfenv(L, -2);
    lua_pushvalue(L, -1);
    s->binding_ref = luaL_ref(L, LUA_REGISTRYINDEX); /* never 0: luaL_ref counts from 1 */
    nh_lua_dispatch_install(s->host);                /* its closed event now detaches it */
}

void nh_lua_session_detach(lua_State *L, nh_session_t *s) {
    if (!s->binding_ref) return;
    lua_rawgeti(L, LUA_REGISTRYINDEX, s->binding_ref);
    lsession_t *u = lua_touserdata(L, -1);
    if (u) {
        u->uid = (lua_Number)s->uid;
        u->ref = (uintptr_t)s->id << 1 | 1;
    }
    lua_pop(L, 1);
    luaL_unref(L, LUA_REGISTRYINDEX, s->binding_ref);
    s->binding_ref = 0;
}

static int s_id(lua_State *L) {
    lua_pushnumber(L, sess_id(check(L, 1)));
    return 1;
}

static int s_uid(lua_State *L) {
    lua_pushnumber(L, sess_uid(check(L, 1)));
    return 1;
}

/* bind(uid): uid must be a positive integer, as in nano (ErrIllegalUID). */
static int s_bind(lua_State *L) {
    lsession_t *u = check(L, 1);
    lua_Number uid = luaL_checknumber(L, 2);
    /* Range first: casting a double outside int64's range is undefined (found by fuzz_session). */
    if (!(uid > 0 && uid <= 9007199254740992.0) || uid != (lua_Number)(int64_t)uid) {
        lua_pushnil(L);
        lua_pushliteral(L, "illegal uid: must be a positive integer");
        return 2;
    }
    if (!sess(u)) {
        lua_pushnil(L);
        lua_pushliteral(L, "session closed");
        return 2;
    }
    sess(u)->uid = (int64_t)uid;
    lua_pushboolean(L, 1);
    return 1;
}

static int s_last_mid(lua_State *L) {
    lsession_t *u = check(L, 1);
    lua_pushnumber(L, sess(u) ? (lua_Number)sess(u)->last_mid : 0);
    return 1;
}

static int s_remote_addr(lua_State *L) {
    lsession_t *u = check(L, 1);
    char buf[80];
    if (!sess(u) || nh_session_peer(sess(u), buf, sizeof buf) != 0) {
        lua_pushnil(L);
        return 1;
    }
    lua_pushstring(L, buf);
    return 1;
}

static int s_transport(lua_State *L) {
    lsession_t *u = check(L, 1);
    const char *name = sess(u) ? nh_session_transport(sess(u)) : NULL;
    if (!name)
        lua_pushnil(L);
    else
        lua_pushstring(L, name);
    return 1;
}

static int s_is_closed(lua_State *L) {
    lua_pushboolean(L, sess_closed(check(L, 1)));
    return 1;
}

static int s_close(lua_State *L) {
    lsession_t *u = check(L, 1);
    if (!sess(u) || sess(u)->state == NH_SS_CLOSED) {
        lua_pushnil(L);
        lua_pushliteral(L, "session already closed");
        return 2;
    }
    nh_session_close(sess(u), NH_CLOSE_KICK, "closed by the server");
    lua_pushboolean(L, 1);
    return 1;
}

/* kick([body]): body is the kick packet's body as serialized by the Lua side (nano.kick wraps
 * this with the serializer). */
static int s_kick(lua_State *L) {
    lsession_t *u = check(L, 1);
    size_t len = 0;
    const char *body = luaL_optlstring(L, 2, "", &len);
    if (!sess(u) || sess(u)->state == NH_SS_CLOSED) {
        lua_pushnil(L);
        lua_pushliteral(L, "session already closed");
        return 2;
    }
    nh_session_kick(sess(u), (const uint8_t *)body, len);
    lua_pushboolean(L, 1);
    return 1;
}

/* ---- key/value state ---- */

/* A session without state has the environment a new userdata gets, the globals table (never
 * read or written through the session); its state is a table of its own. */
static int has_state(lua_State *L) {
    lua_getfenv(L, 1);
    int own = !lua_rawequal(L, -1, LUA_GLOBALSINDEX);
    lua_pop(L, 1);
    return own;
}

/* Pushes the state table; with `make` 0 and no state yet, pushes nothing and returns 0. */
static int push_state(lua_State *L, int make) {
    check(L, 1);
    if (!has_state(L)) {
        if (!make) return 0;
        lua_createtable(L, 0, 0);
        lua_setfenv(L, 1);
    }
    lua_getfenv(L, 1);
    return 1;
}

/* Drops the state table (the environment goes back to the globals). */
static void drop_state(lua_State *L) {
    lua_pushvalue(L, LUA_GLOBALSINDEX);
    lua_setfenv(L, 1);
}

static int s_set(lua_State *L) {
    luaL_checkany(L, 2);
    lua_settop(L, 3);
    /* setting nil where there is no state: nothing to do (a nil key still raises, as before) */
    if (!push_state(L, !lua_isnil(L, 3) || lua_isnil(L, 2))) return 0;
    lua_pushvalue(L, 2);
    lua_pushvalue(L, 3);
    lua_rawset(L, -3);
    return 0;
}

static int s_get(lua_State *L) {
    luaL_checkany(L, 2);
    if (!push_state(L, 0)) {
        lua_pushnil(L);
        return 1;
    }
    lua_pushvalue(L, 2);
    lua_rawget(L, -2);
    return 1;
}

static int s_has(lua_State *L) {
    luaL_checkany(L, 2);
    if (!push_state(L, 0)) {
        lua_pushboolean(L, 0);
        return 1;
    }
    lua_pushvalue(L, 2);
    lua_rawget(L, -2);
    lua_pushboolean(L, !lua_isnil(L, -1));
    return 1;
}

static int s_remove(lua_State *L) {
    luaL_checkany(L, 2);
    if (!push_state(L, 0)) return 0;
    lua_pushvalue(L, 2);
    lua_pushnil(L);
    lua_rawset(L, -3);
    return 0;
}

static int s_clear(lua_State *L) {
    check(L, 1);
    drop_state(L);
    return 0;
}

/* state(): a copy of the key/value state. */
static int s_state(lua_State *L) {
    if (!push_state(L, 0)) {
        lua_newtable(L);
        return 1;
    }
    lua_newtable(L);
    lua_pushnil(L);
    while (lua_next(L, -3)) {
        lua_pushvalue(L, -2);
        lua_insert(L, -2);
        lua_rawset(L, -4);
    }
    return 1;
}

/* restore(t): replaces the state with a copy of t. */
static int s_restore(lua_State *L) {
    check(L, 1);
    luaL_checktype(L, 2, LUA_TTABLE);
    lua_newtable(L);
    lua_pushnil(L);
    while (lua_next(L, 2)) {
        lua_pushvalue(L, -2);
        lua_insert(L, -2);
        lua_rawset(L, -4);
    }
    lua_setfenv(L, 1);
    return 0;
}

static int s_tostring(lua_State *L) {
    lsession_t *u = check(L, 1);
    lua_pushfstring(L, "session %f (uid %f%s)", sess_id(u), sess_uid(u), sess(u) ? "" : ", closed");
    return 1;
}

/* ---- member lists: a group's members, for core.push_many ----
 *
 * A broadcast sends one packet to thousands of sessions. Reading them one by one out of a Lua
 * table (lua_rawgeti, the metatable check, the pops) cost ~200 instructions a member, a third of
 * a push delivered (docs/benchmarks.md). A member list keeps the members twice: in its
 * environment table, an array that holds them (and so keeps their userdata where they are: the
 * collector does not move objects), and as those userdata's addresses in a C array, which
 * push_many walks. Only members_add and members_remove change them, both the same way, so the
 * two always agree; a member that is not a session of this state (a cluster's remote session)
 * has NULL in the C array. */
#define MEMBERS_MT "nano.core.members"

typedef struct members {
    const lsession_t **at;
    uint32_t n, cap;
} members_t;

static members_t *check_members(lua_State *L, int idx) {
    return luaL_checkudata(L, idx, MEMBERS_MT);
}

static int members_gc(lua_State *L) {
    members_t *m = check_members(L, 1);
    free(m->at);
    m->at = NULL;
    m->n = m->cap = 0;
    return 0;
}

/* members_new() -> list: an empty member list */
static int c_members_new(lua_State *L) {
    members_t *m = lua_newuserdata(L, sizeof *m);
    *m = (members_t){0};
    luaL_getmetatable(L, MEMBERS_MT);
    lua_setmetatable(L, -2);
    lua_newtable(L);
    lua_setfenv(L, -2);
    return 1;
}

/* members_add(list, value) -> its position: value (a session, or any other value) goes last */
static int c_members_add(lua_State *L) {
    members_t *m = check_members(L, 1);
    luaL_checkany(L, 2);
    if (m->n == m->cap) {
        uint32_t cap = m->cap ? m->cap * 2 : 8;
        const lsession_t **at = realloc(m->at, cap * sizeof *at);
        if (!at) return luaL_error(L, "not enough memory");
        m->at = at;
        m->cap = cap;
    }
    lua_getfenv(L, 1);
    lua_pushvalue(L, 2);
    lua_rawseti(L, -2, (int)m->n + 1);
    m->at[m->n++] = test_udata(L, 2);
    lua_pushinteger(L, m->n);
    return 1;
}

/* members_remove(list, i) -> the member that moved into position i (the last one), or nothing
 * when i was the last: the member at i leaves, in O(1) */
static int c_members_remove(lua_State *L) {
    members_t *m = check_members(L, 1);
    lua_Integer i = luaL_checkinteger(L, 2);
    if (i < 1 || i > (lua_Integer)m->n) return luaL_argerror(L, 2, "no member at that position");
    lua_getfenv(L, 1);
    int last = (int)m->n, moved = i < last;
    if (moved) {
        lua_rawgeti(L, -1, last);
        lua_pushvalue(L, -1);
        lua_rawseti(L, -3, (int)i);
        m->at[i - 1] = m->at[last - 1];
    }
    lua_pushnil(L);
    lua_rawseti(L, moved ? -3 : -2, last);
    m->n--;
    return moved;
}

int nh_lua_members_send_shared(lua_State *L, int idx, nh_buf_t *b, int failed_idx, int *failed) {
    members_t *m = lua_touserdata(L, idx);
    int delivered = 0, have_list = 0;
    /* m->n and m->at read each time: nothing here should change them, but a change must not
     * read past the array */
    for (uint32_t i = 0; i < m->n; i++) {
        const lsession_t *u = m->at[i];
        nh_session_t *s = u ? sess(u) : NULL;
        if (s && nh_session_send_shared(s, b) == 0) {
            delivered++;
            continue;
        }
        if (!have_list) {
            lua_getfenv(L, idx);
            have_list = lua_gettop(L);
        }
        lua_rawgeti(L, have_list, (int)i + 1);
        lua_rawseti(L, failed_idx, ++*failed);
    }
    if (have_list) lua_remove(L, have_list);
    return delivered;
}

int nh_lua_is_members(lua_State *L, int idx) {
    if (!lua_touserdata(L, idx) || !lua_getmetatable(L, idx)) return 0;
    luaL_getmetatable(L, MEMBERS_MT);
    int same = lua_rawequal(L, -1, -2);
    lua_pop(L, 2);
    return same;
}

void nh_lua_core_members(lua_State *L) {
    static const luaL_Reg meta[] = {{"__gc", members_gc}, {NULL, NULL}};
    static const luaL_Reg fns[] = {
        {"members_new", c_members_new},
        {"members_add", c_members_add},
        {"members_remove", c_members_remove},
        {NULL, NULL},
    };
    static const luaL_Reg none[] = {{NULL, NULL}}; /* no methods: the module's functions */
    nh_lua_class(L, MEMBERS_MT, none, meta);
    luaL_register(L, NULL, fns);
}

int nh_lua_open_session(lua_State *L) {
    static const luaL_Reg methods[] = {
        {"id", s_id},
        {"uid", s_uid},
        {"bind", s_bind},
        {"last_mid", s_last_mid},
        {"remote_addr", s_remote_addr},
        {"transport", s_transport},
        {"is_closed", s_is_closed},
        {"close", s_close},
        {"kick", s_kick},
        {"set", s_set},
        {"get", s_get},
        {"value", s_get},
        {"has", s_has},
        {"has_key", s_has},
        {"remove", s_remove},
        {"clear", s_clear},
        {"state", s_state},
        {"restore", s_restore},
        {NULL, NULL},
    };
    luaL_newmetatable(L, SESSION_MT);
    session_mt = lua_topointer(L, -1);
    lua_newtable(L);
    luaL_register(L, NULL, methods);
    lua_pushvalue(L, -1);
    lua_setfield(L, -3, "__index");
    lua_pushcfunction(L, s_tostring);
    lua_setfield(L, -3, "__tostring");
    lua_remove(L, -2); /* leave the methods table: the Lua side adds push/response to it */
    return 1;
}
