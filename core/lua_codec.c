/* `nano.codec`: the C wire codec for Lua code that speaks the protocol as a client (nano.client,
 * bots, tests). Strings in, strings out. */
#include <math.h>
#include <string.h>

#include <lauxlib.h>

#include "codec.h"
#include "lua_binding.h"

/* encode_packet(type, body) -> string */
static int l_encode_packet(lua_State *L) {
    int type = (int)luaL_checkinteger(L, 1);
    size_t len = 0;
    const char *body = luaL_optlstring(L, 2, "", &len);
    luaL_argcheck(L, type >= NH_PKT_HANDSHAKE && type <= NH_PKT_KICK, 1, "bad packet type");
    luaL_argcheck(L, len <= NH_PKT_MAX_BODY, 2, "body too big");
    uint8_t hdr[NH_PKT_HEADER_LEN];
    nh_pkt_write_header(hdr, type, len);
    luaL_Buffer b;
    luaL_buffinit(L, &b);
    luaL_addlstring(&b, (const char *)hdr, sizeof hdr);
    luaL_addlstring(&b, body, len);
    luaL_pushresult(&b);
    return 1;
}

static int collect_packet(void *ud, int type, const uint8_t *body, size_t len) {
    lua_State *L = ud;
    lua_createtable(L, 0, 2);
    lua_pushinteger(L, type);
    lua_setfield(L, -2, "type");
    lua_pushlstring(L, (const char *)body, len);
    lua_setfield(L, -2, "body");
    lua_rawseti(L, -2, (int)lua_objlen(L, -2) + 1);
    return 0;
}

/* decode_packets(bytes [, max_body]) -> {{type=, body=}, ...}, rest | nil, err
 * Complete packets in bytes, and the bytes of an incomplete last one (feed them again with more).
 */
static int l_decode_packets(lua_State *L) {
    size_t len;
    const char *data = luaL_checklstring(L, 1, &len);
    uint32_t max_body = (uint32_t)luaL_optinteger(L, 2, NH_PKT_MAX_BODY);
    /* Only hand whole packets to the decoder, so no state survives the call. */
    size_t off = 0;
    while (len - off >= NH_PKT_HEADER_LEN) {
        const uint8_t *p = (const uint8_t *)data + off;
        size_t blen = ((size_t)p[1] << 16) | ((size_t)p[2] << 8) | p[3];
        if (len - off - NH_PKT_HEADER_LEN < blen) break;
        off += NH_PKT_HEADER_LEN + blen;
    }
    nh_pkt_decoder_t d;
    nh_pkt_decoder_init(&d, max_body);
    lua_newtable(L);
    int r = nh_pkt_decoder_feed(&d, (const uint8_t *)data, off, collect_packet, L);
    if (r == 0 && len - off >= NH_PKT_HEADER_LEN) {
        /* Validate the incomplete packet's header now, like the server does. */
        r = nh_pkt_decoder_feed(&d, (const uint8_t *)data + off, NH_PKT_HEADER_LEN, collect_packet,
                                L);
    }
    nh_pkt_decoder_free(&d);
    if (r < 0) {
        lua_pushnil(L);
        lua_pushstring(L, nh_codec_strerror(r));
        return 2;
    }
    lua_pushlstring(L, data + off, len - off);
    return 2;
}

uint64_t nh_lua_check_msg_id(lua_State *L, int idx) {
    lua_Number id = luaL_optnumber(L, idx, 0);
    /* Ids arrive as doubles: one over 2^53 may have rounded up to 2^64, which no cast may take
     * (undefined behaviour, found by fuzz_session). */
    luaL_argcheck(L, id >= 0 && id < 18446744073709551616.0 && id == floor(id), idx,
                  "message id out of range");
    return (uint64_t)id;
}

void nh_lua_check_route(lua_State *L, int idx, nh_msg_t *m) {
    if (lua_type(L, idx) == LUA_TNUMBER) {
        lua_Number code = lua_tonumber(L, idx);
        luaL_argcheck(L, code >= 0 && code <= 0xFFFF && code == floor(code), idx,
                      "route code out of range");
        m->route_compressed = 1;
        m->route_code = (uint16_t)code;
    } else {
        m->route = luaL_checklstring(L, idx, &m->route_len);
    }
}

/* encode_message(type, id, route_or_code, payload [, flags]) -> body string */
static int l_encode_message(lua_State *L) {
    nh_msg_t m = {0};
    m.type = (int)luaL_checkinteger(L, 1);
    luaL_argcheck(L, m.type >= 0 && m.type <= 3, 1, "bad message type");
    m.id = nh_lua_check_msg_id(L, 2);
    if (!lua_isnil(L, 3)) nh_lua_check_route(L, 3, &m);
    m.payload = (const uint8_t *)luaL_optlstring(L, 4, "", &m.payload_len);
    m.flags = (uint8_t)luaL_optinteger(L, 5, 0);
    uint8_t head[NH_MSG_MAX_HEADER];
    int n = nh_msg_write_header(head, &m);
    if (n < 0) return luaL_error(L, "encode_message: %s", nh_codec_strerror(n));
    luaL_Buffer b;
    luaL_buffinit(L, &b);
    luaL_addlstring(&b, (const char *)head, (size_t)n);
    luaL_addlstring(&b, (const char *)m.payload, m.payload_len);
    luaL_pushresult(&b);
    return 1;
}

/* decode_message(body) -> {type=, id=, route= | code=, payload=, flags=, error=} | nil, err */
static int l_decode_message(lua_State *L) {
    size_t len;
    const char *body = luaL_checklstring(L, 1, &len);
    nh_msg_t m;
    int r = nh_msg_decode((const uint8_t *)body, len, &m);
    if (r < 0) {
        lua_pushnil(L);
        lua_pushstring(L, nh_codec_strerror(r));
        return 2;
    }
    lua_createtable(L, 0, 6);
    lua_pushinteger(L, m.type);
    lua_setfield(L, -2, "type");
    lua_pushnumber(L, (lua_Number)m.id);
    lua_setfield(L, -2, "id");
    if (m.route_compressed) {
        lua_pushinteger(L, m.route_code);
        lua_setfield(L, -2, "code");
    } else if (m.type != NH_MSG_RESPONSE) {
        lua_pushlstring(L, m.route, m.route_len);
        lua_setfield(L, -2, "route");
    }
    lua_pushlstring(L, (const char *)m.payload, m.payload_len);
    lua_setfield(L, -2, "payload");
    lua_pushinteger(L, m.flags);
    lua_setfield(L, -2, "flags");
    lua_pushboolean(L, (m.flags & NH_MSG_FLAG_ERROR) != 0);
    lua_setfield(L, -2, "error");
    return 1;
}

int nh_lua_open_codec(lua_State *L) {
    static const luaL_Reg fns[] = {
        {"encode_packet", l_encode_packet},
        {"decode_packets", l_decode_packets},
        {"encode_message", l_encode_message},
        {"decode_message", l_decode_message},
        {NULL, NULL},
    };
    lua_newtable(L);
    luaL_register(L, NULL, fns);
    static const struct {
        const char *name;
        int value;
    } consts[] = {
        {"HANDSHAKE", NH_PKT_HANDSHAKE}, {"HANDSHAKE_ACK", NH_PKT_HANDSHAKE_ACK},
        {"HEARTBEAT", NH_PKT_HEARTBEAT}, {"DATA", NH_PKT_DATA},
        {"KICK", NH_PKT_KICK},           {"REQUEST", NH_MSG_REQUEST},
        {"NOTIFY", NH_MSG_NOTIFY},       {"RESPONSE", NH_MSG_RESPONSE},
        {"PUSH", NH_MSG_PUSH},           {"FLAG_ERROR", NH_MSG_FLAG_ERROR},
    };
    for (size_t i = 0; i < sizeof consts / sizeof consts[0]; i++) {
        lua_pushinteger(L, consts[i].value);
        lua_setfield(L, -2, consts[i].name);
    }
    return 1;
}
