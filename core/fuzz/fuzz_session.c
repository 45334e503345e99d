/* fuzz_session — one client connection, from its bytes to the Lua handlers and back.
 *
 * The other targets fuzz the parsers alone; this one runs what glues them together: the real
 * host, connection, both transports (HTTP upgrade, static files, frames), the session state
 * machine (handshake, ack, data before ack, ...), the HTTP side of a WebSocket port (routes,
 * keep-alive, pipelining, bodies), nano's Lua side (handshake validator, dispatch,
 * errors, pushes, kicks, closes from inside a handler, groups, nano.invoke) and the close paths.
 * There is no network: the connection's socket is one end of a socketpair whose other end is
 * drained and dropped.
 *
 * Input: byte 0 chooses the transport (bit 0: WebSocket), whether virtual time jumps forward
 * at the end (bit 1: heartbeat and handshake timeouts) and seeds the read sizes (bits 2-7);
 * the rest is what the client sends, delivered in reads of 1..~4 KiB with a loop turn between
 * reads, the way the loop would deliver them.
 *
 * NH_FUZZ_LUA=dir takes nano's Lua side from dir instead of the source tree's lua/.
 * NH_FUZZ_LOG=debug|info|... sets the log level (default off: logging is slow and noisy; run
 * with NH_FUZZ_LOG=debug and libFuzzer's -close_fd_mask=2 to exercise the log formatting too).
 */
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <lauxlib.h>
#include <lualib.h>

#include "conn.h"
#include "host.h"
#include "log.h"
#include "lua_binding.h"
#include "session.h"
#include "transport.h"

#ifndef NH_SOURCE_DIR
#define NH_SOURCE_DIR "."
#endif

/* The game script: every kind of thing a handler can do to its own session. */
static const char script[] =
    "local nano = require 'nano'\n"
    "local core = require 'nano.core'\n"
    "local all = nano.new_group and nano.new_group('all')\n"
    /* Load what handlers load lazily (the JSON modules) now: memory they own lives in Lua's heap,
     * which LeakSanitizer does not scan, so allocating it during an input reads as a leak. */
    "local json = require 'nano.json'\n"
    "json.unmarshal(json.marshal({ warm = { 1 } }))\n"
    "local Room = {}\n"
    "function Room:ping(s, msg) return msg end\n"
    "function Room:boom(s, msg) error('boom') end\n"
    "function Room:deny(s, msg) error({ code = 403, msg = 'no' }) end\n"
    "function Room:push(s, msg) s:push('onPush', msg) end\n"
    "function Room:kick(s, msg) s:kick(); s:push('onPush', 1) end\n"
    "function Room:close(s, msg) s:close(); return { closed = true } end\n"
    "function Room:bind(s, msg)\n"
    "  if type(msg) == 'table' and type(msg.uid) == 'number' then return { s:bind(msg.uid) } end\n"
    "end\n"
    "function Room:later(s, msg) s:response(msg); s:response(msg) end\n"
    "function Room:mid(s, msg)\n"
    "  local mid = type(msg) == 'table' and tonumber(msg.mid) or s:last_mid()\n"
    "  return { s:response_mid(mid, msg) }\n"
    "end\n"
    "function Room:state(s, msg)\n"
    "  if type(msg) == 'table' then for k, v in pairs(msg) do s:set(k, v) end end\n"
    "  return s:state()\n"
    "end\n"
    "function Room:join(s, msg)\n"
    "  if all then all:add(s); all:broadcast('onJoin', { id = s:id(), n = all:count() }) end\n"
    "end\n"
    "function Room:leave(s, msg) if all then all:leave(s) end end\n"
    "function Room:after(s, msg) nano.invoke(function() s:push('onLater', msg) end) end\n"
    "function Room:many(s, msg) return { core.push_many({ s, s, s }, 'onMany', 'x') } end\n"
    "function Room:info(s, msg)\n"
    "  return { s:remote_addr(), s:transport(), s:uid(), s:is_closed(), tostring(s) }\n"
    "end\n"
    "local Raw = {}\n"
    "function Raw:echo(s, msg) return { len = #msg } end\n"
    "nano.register(Room, { name = 'Room' })\n"
    "nano.register(Raw, { name = 'Raw', raw = true })\n"
    "nano.set_dictionary({ ['Room.ping'] = 1, ['Room.push'] = 2, onPush = 3, onJoin = 4 })\n"
    "nano.set_handshake_validator(function(s, hs)\n"
    "  if type(hs.user) == 'table' and hs.user.deny then return false, 'denied' end\n"
    "  return true\n"
    "end)\n"
    "nano.set_check_origin(function(origin) return origin ~= 'http://evil' end)\n"
    /* HTTP routes on the WebSocket listener: answered now, later (a task that waits), or not */
    "nano.http.route('GET', '/r', function(req) return req.query.x or 'r' end)\n"
    "nano.http.route('POST', '/j', function(req) return { status = 201, body = req.json } end)\n"
    "nano.http.route('GET', '/later', function(req) nano.sleep(0.01); return 'later' end)\n"
    "nano.http.route('GET', '/err', function(req) error('route error') end)\n"
    "nano.configure({ heartbeat = 5, handshake_timeout = 10, max_packet = 4096,\n"
    "                 max_ws_frame = 8192, send_limit = 65536 })\n"
    /* Real listeners (bound to ephemeral loopback ports, never connected to): the fuzzer hands
     * its connections their settings, as accept would. */
    "nano.listen('127.0.0.1:0')\n"
    "nano.listen('127.0.0.1:0', { websocket = true, path = '/nano',\n"
    "                             static = { ['/web/'] = FUZZ_STATIC_DIR } })\n";

static uv_loop_t loop;
static nh_host_t host;
static nh_listener_t *listener_tcp, *listener_ws;

static void die(const char *what) {
    fprintf(stderr, "fuzz_session: %s\n", what);
    abort();
}

/* At exit, the host's shutdown as main.c does it, so LeakSanitizer sees everything freed. */
static void shutdown_host(void) {
    lua_State *L = host.L;
    nh_host_stop(&host);
    uv_run(&loop, UV_RUN_DEFAULT);
    nh_host_free(&host);
    nh_lua_host_detach(&host);
    lua_close(L);
    if (uv_loop_close(&loop) != 0) die("loop closed with handles still open");
}

static void init_once(void) {
    nh_log_set_level(NH_LOG_ERROR); /* a failing script says why */
    if (uv_loop_init(&loop) != 0) die("uv_loop_init");
    lua_State *L = luaL_newstate();
    if (!L) die("luaL_newstate");
    luaL_openlibs(L);
    nh_lua_open(L);
    if (nh_host_init(&host, &loop) != 0) die("nh_host_init");
    nh_lua_host_attach(&host, L);
    const char *lua_dir = getenv("NH_FUZZ_LUA"); /* e.g. lua/ of another checkout */
    if (!lua_dir) lua_dir = NH_SOURCE_DIR "/lua";
    lua_getglobal(L, "package");
    lua_pushfstring(L, "%s/?.lua;%s/?/init.lua", lua_dir, lua_dir);
    lua_setfield(L, -2, "path");
    lua_pop(L, 1);
    lua_pushstring(L, NH_SOURCE_DIR "/core/fuzz/corpus/http"); /* a few small files to serve */
    lua_setglobal(L, "FUZZ_STATIC_DIR");
    if (luaL_loadbuffer(L, script, sizeof script - 1, "fuzz_session") != 0 ||
        nh_host_call_lua(&host, 0, 0, "fuzz_session script") != 0)
        die("the game script failed");

    for (nh_listener_t *l = host.listeners; l; l = l->next) {
        if (l->transport == &nh_transport_ws)
            listener_ws = l;
        else
            listener_tcp = l;
    }
    if (!listener_tcp || !listener_ws) die("the game script did not listen");
    atexit(shutdown_host);
    const char *lvl = getenv("NH_FUZZ_LOG");
    int level = lvl ? nh_log_parse_level(lvl) : NH_LOG_OFF;
    nh_log_set_level(level < 0 ? NH_LOG_DEBUG : level);
}

static void drain(int fd) {
    char buf[65536];
    while (read(fd, buf, sizeof buf) > 0) {
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    static int ready;
    if (!ready) {
        init_once();
        ready = 1;
    }
    if (size < 1) return 0;
    int ws = data[0] & 1, advance = data[0] & 2;
    uint32_t seed = (uint32_t)data[0] * 2654435761u | 1;
    data++;
    size--;

    int sv[2];
    if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0, sv) != 0)
        die("socketpair");
    nh_conn_t *c = calloc(1, sizeof *c);
    if (!c) die("out of memory");
    c->host = &host;
    c->listener = ws ? listener_ws : listener_tcp;
    nh_outq_init(&c->out, &host.pool);
    if (uv_poll_init(&loop, &c->poll, sv[0]) != 0) die("uv_poll_init");
    c->fd = sv[0]; /* closed with the connection */
    host.nconns++;
    c->flags |= NH_CONN_COUNTED; /* as at accept: the close callback uncounts and frees it */
    if (c->listener->transport->on_open(c) < 0) nh_conn_close(c, "open failed");

    /* The conn is freed by its close callback, inside uv_run (it is the only connection, so
     * host.nconns says whether it still exists); once closing has started it is not fed again. */
    size_t off = 0;
    while (off < size && host.nconns && !(c->flags & NH_CONN_CLOSING) && !c->close_after_flush) {
        seed ^= seed << 13;
        seed ^= seed >> 17;
        seed ^= seed << 5;
        size_t n = 1 + seed % ((seed >> 8) & 1 ? 16 : 4096);
        if (n > size - off) n = size - off;
        if (n > sizeof host.readbuf) n = sizeof host.readbuf;
        memcpy(host.readbuf, data + off, n); /* transports may change the bytes in place */
        off += n;
        if (c->listener->transport->on_read(c, host.readbuf, n) < 0) nh_conn_close(c, "bad input");
        uv_run(&loop, UV_RUN_NOWAIT);
        drain(sv[1]);
    }
    if (host.nconns && advance) {
        /* Far past the heartbeat and handshake timeouts: the sweep closes what is left. */
        nh_timers_advance(&host.timers, 60000);
        nh_conn_flush_all(&host);
        uv_run(&loop, UV_RUN_NOWAIT);
        drain(sv[1]);
    }
    if (host.nconns) {
        /* still open (it is the only connection, and its close callback frees it): close it as
         * a peer would */
        nh_conn_close(c, "fuzz input ended");
    }
    for (int i = 0; i < 100 && (host.nconns || host.sessions.count); i++) {
        uv_run(&loop, UV_RUN_NOWAIT);
        drain(sv[1]);
    }
    if (host.nconns || host.sessions.count) die("connection not freed after closing");
    /* Lua timers the handlers left (nano.invoke) run now, against a closed session. */
    nh_timers_advance(&host.timers, 1);
    uv_run(&loop, UV_RUN_NOWAIT);
    close(sv[1]);
    return 0;
}
