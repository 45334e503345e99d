/* fuzz_protobuf — the protobuf codec (core/protobuf.c, core/lua_protobuf.c) on untrusted bytes.
 *
 * The first input byte picks what the rest is: a payload decoded as one message type of the
 * fixture schema (core/fuzz/protobuf_kinds.pb: protoc of spec/fixtures/protobuf/kinds.proto and
 * legacy.proto), (0xFE) a payload of a pomelo-flavoured schema, or (0xFF) a FileDescriptorSet. A
 * payload that decodes must encode, and decode(encode(...)) must be a fixed point after one round
 * (the first round may only drop what proto3 does not keep: zeros sent explicitly). Bad bytes must
 * only ever give an error. Any crash, sanitizer report or assertion aborts.
 *
 *   cmake -DNH_FUZZ=ON -DCMAKE_C_COMPILER=clang ... ; see cmake/fuzz.cmake and scripts/fuzz
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

#include <lauxlib.h>
#include <lualib.h>

#include "lua_binding.h"
#include "protobuf.h"

#ifndef NH_SOURCE_DIR
#define NH_SOURCE_DIR "."
#endif

static const char check_lua[] =
    "local pbc, set = ...\n"
    "local schema = assert(pbc.load(set))\n"
    "local types = schema:messages()\n"
    "local pomelo = assert(pbc.build({ { name = 'p', fields = {\n"
    "  { name = 'u', number = 1, type = 13, repeated = true },\n"
    "  { name = 'z', number = 2, type = 17, repeated = true },\n"
    "  { name = 'd', number = 3, type = 1, repeated = true },\n"
    "  { name = 's', number = 4, type = 9 },\n"
    "  { name = 'm', number = 5, type = 11, repeated = true, type_name = 'p' } } } }, 'pomelo'))\n"
    "local function same(a, b)\n"
    "  if type(a) ~= type(b) then return false end\n"
    "  if type(a) == 'number' then\n"
    "    if a ~= a then return b ~= b end\n"
    "    return a == b\n"
    "  end\n"
    "  if type(a) ~= 'table' then return a == b end\n"
    "  for k, v in pairs(a) do if not same(v, b[k]) then return false end end\n"
    "  for k in pairs(b) do if a[k] == nil then return false end end\n"
    "  return true\n"
    "end\n"
    "return function(which, bytes)\n"
    "  if which == 255 then\n"
    "    local s = pbc.load(bytes)\n"
    "    if s then for _, n in ipairs(s:messages()) do s:decode(n, bytes) end end\n"
    "    return\n"
    "  end\n"
    "  local sc, names = schema, types\n"
    "  if which == 254 then sc, names = pomelo, { 'p' } end\n"
    "  local name = names[which % #names + 1]\n"
    "  local v = sc:decode(name, bytes)\n"
    "  if not v then return end\n"
    "  local v2 = assert(sc:decode(name, sc:encode(name, v)))\n"
    "  local v3 = assert(sc:decode(name, sc:encode(name, v2)))\n"
    "  assert(same(v2, v3), 'decode(encode(v)) is not a fixed point')\n"
    "end\n";

static char *kinds_set;
static size_t kinds_len;

static void load_kinds(void) {
    FILE *f = fopen(NH_SOURCE_DIR "/core/fuzz/protobuf_kinds.pb", "rb");
    if (!f) {
        fprintf(stderr, "fuzz_protobuf: cannot open %s/core/fuzz/protobuf_kinds.pb\n",
                NH_SOURCE_DIR);
        abort();
    }
    kinds_set = malloc(65536);
    if (!kinds_set) abort();
    kinds_len = fread(kinds_set, 1, 65536, f);
    fclose(f);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (size < 1) return 0;
    if (!kinds_set) load_kinds();
    lua_State *L = luaL_newstate();
    if (!L) abort();
    luaL_openlibs(L);
    if (luaL_loadbuffer(L, check_lua, sizeof check_lua - 1, "fuzz_protobuf") != 0) abort();
    nh_lua_open_protobuf(L);
    lua_pushlstring(L, kinds_set, kinds_len);
    if (lua_pcall(L, 2, 1, 0) != 0) {
        fprintf(stderr, "fuzz_protobuf: %s\n", lua_tostring(L, -1));
        abort();
    }
    lua_pushinteger(L, data[0]);
    lua_pushlstring(L, (const char *)data + 1, size - 1);
    if (lua_pcall(L, 2, 0, 0) != 0) {
        fprintf(stderr, "fuzz_protobuf: %s\n", lua_tostring(L, -1));
        abort();
    }
    lua_close(L);
    return 0;
}
