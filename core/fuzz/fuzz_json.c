/* fuzz_json — the JSON codec (core/lua_json.c) against lua-cjson, on untrusted text.
 *
 * The input is JSON text from a client. nano-host's decoder either declines (lua-cjson then
 * answers) or returns a value, and then lua-cjson must accept the same text and make the same
 * value. Every value decoded is encoded again: both encoders must accept or refuse it alike, and
 * nano-host's text must read back as the very same value (numbers are not rounded to 14 digits
 * as lua-cjson's are, so the bytes may differ there). The dispatcher's decode, whose object keys
 * go through a cache of strings (lua_strcache.h), must make the same value, twice. Any
 * disagreement aborts.
 *
 *   cmake -DNH_FUZZ=ON -DCMAKE_C_COMPILER=clang ... ; see cmake/fuzz.cmake and scripts/fuzz
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

#include <lauxlib.h>
#include <lualib.h>

#include "lua_binding.h"
#include "lua_strcache.h"

static const char check_lua[] =
    "local fast, decode_cached = ...\n"
    "local cjson = require('cjson').new()\n"
    "cjson.encode_sparse_array(true); cjson.encode_max_depth(128); cjson.decode_max_depth(128)\n"
    "local function same(a, b)\n"
    "  if type(a) ~= type(b) then return false end\n"
    "  if type(a) == 'number' then\n"
    "    if a ~= a then return b ~= b end\n"
    "    return a == b and (a ~= 0 or 1 / a == 1 / b)\n"
    "  end\n"
    "  if type(a) ~= 'table' then return a == b end\n"
    "  for k, v in pairs(a) do if not same(v, b[k]) then return false end end\n"
    "  for k in pairs(b) do if a[k] == nil then return false end end\n"
    "  return true\n"
    "end\n"
    "return function(s)\n"
    "  local ok, v = fast.decode(s)\n"
    "  local cok, cv = pcall(cjson.decode, s)\n"
    "  if ok then\n"
    "    assert(cok, 'decoded what lua-cjson refuses')\n"
    "    for _ = 1, 2 do\n" /* the second time its keys come from the cache */
    "      local kok, kv = decode_cached(s)\n"
    "      assert(kok and same(kv, v), 'decoding with the key cache made another value')\n"
    "    end\n"
    "    assert(same(v, cv), 'decoded a different value')\n"
    "  end\n"
    "  if cok then\n"
    "    local eok = pcall(cjson.encode, cv)\n"
    "    local fok, f = pcall(fast.encode, cv)\n"
    "    assert(eok == fok, 'one encoder refused')\n"
    "    assert(not fok or same(cjson.decode(f), cv), 'encoded text reads back differently')\n"
    "  end\n"
    "end\n";

/* The dispatcher's decode (nh_lua_json_decode with the host's key cache, lua_strcache.h):
 * decode_cached(text) -> true, value | false. */
static nh_strcache_t keys;
static int decode_cached(lua_State *L) {
    size_t len;
    const char *s = luaL_checklstring(L, 1, &len);
    if (!nh_lua_json_decode(L, s, len, &keys)) {
        lua_pushboolean(L, 0);
        return 1;
    }
    lua_pushboolean(L, 1);
    lua_insert(L, -2);
    return 2;
}

/* A fresh Lua state per input: inputs stay independent, and everything (lua-cjson's buffers
 * included, which LeakSanitizer cannot see through LuaJIT's own allocator) is freed. */
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    lua_State *L = luaL_newstate();
    if (!L) abort();
    luaL_openlibs(L);
    if (luaL_loadbuffer(L, check_lua, sizeof check_lua - 1, "fuzz_json") != 0) abort();
    nh_lua_open_json(L);
    nh_strcache_init(&keys); /* its references go with the state */
    lua_pushcfunction(L, decode_cached);
    if (lua_pcall(L, 2, 1, 0) != 0) {
        fprintf(stderr, "fuzz_json: %s\n", lua_tostring(L, -1));
        abort();
    }
    lua_pushlstring(L, (const char *)data, size);
    if (lua_pcall(L, 1, 0, 0) != 0) {
        fprintf(stderr, "fuzz_json: %s\n", lua_tostring(L, -1));
        abort();
    }
    lua_close(L);
    return 0;
}
