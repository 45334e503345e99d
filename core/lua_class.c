/* lua_class — the one way the bindings register a userdata class and their module table, and
 * count the objects of a class still alive (nano.test's leak checks). */
#include <lauxlib.h>

#include "lua_binding.h"

void nh_lua_class(lua_State *L, const char *mt, const luaL_Reg *methods, const luaL_Reg *meta) {
    if (luaL_newmetatable(L, mt)) {
        lua_newtable(L);
        luaL_register(L, NULL, methods);
        lua_setfield(L, -2, "__index");
        for (const luaL_Reg *r = meta; r && r->name; r++) {
            lua_pushcfunction(L, r->func);
            lua_setfield(L, -2, r->name);
        }
    }
    lua_pop(L, 1);
}

int nh_lua_class_module(lua_State *L, const char *mt, const luaL_Reg *methods, const luaL_Reg *meta,
                        const luaL_Reg *fns) {
    nh_lua_class(L, mt, methods, meta);
    lua_newtable(L);
    luaL_register(L, NULL, fns);
    return 1;
}

void nh_lua_count_add(lua_State *L, const void *key, int d) {
    lua_pushlightuserdata(L, (void *)key);
    lua_rawget(L, LUA_REGISTRYINDEX);
    lua_Integer n = lua_tointeger(L, -1) + d;
    lua_pop(L, 1);
    lua_pushlightuserdata(L, (void *)key);
    lua_pushinteger(L, n);
    lua_rawset(L, LUA_REGISTRYINDEX);
}

int nh_lua_count_push(lua_State *L, const void *key) {
    lua_pushlightuserdata(L, (void *)key);
    lua_rawget(L, LUA_REGISTRYINDEX);
    lua_pushinteger(L, lua_tointeger(L, -1));
    lua_remove(L, -2);
    return 1;
}
