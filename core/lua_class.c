/* lua_class — the one way the bindings register a userdata class and their module table. */
#include <lauxlib.h>

#include "lua_binding.h"

int nh_lua_class_module(lua_State *L, const char *mt, const luaL_Reg *methods, const luaL_Reg *meta,
                        const luaL_Reg *fns) {
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
    lua_newtable(L);
    luaL_register(L, NULL, fns);
    return 1;
}
