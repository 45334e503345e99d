/* `nano.tcp`: an outgoing TCP byte stream on the host's loop, for Lua code that is a client of a
 * server (nano.client: tests, bots, load scripts). Mechanism only: bytes in, bytes out, events
 * into one Lua callback. The protocol (packets, handshake, heartbeats) is Lua's, on nano.codec.
 *
 *   local s = tcp.connect(host, port, function(s, event, arg) end [, tls])
 *     tls: nil (plain), or { ca = "file.pem", verify = true|false, server_name = "name" }: TLS
 *          over the stream (verify defaults to true; false accepts any certificate: tests)
 *     event "connect": connected (over TLS: once the handshake is done; a failed connect or
 *                      handshake is only a "close" event with the reason)
 *     event "data":    arg is the bytes received
 *     event "close":   arg is the reason (nil when closed by s:close()); always the last event
 *   s:write(bytes) -> true | nil, err      s:close()      s:state()
 *   s:local_addr(), s:remote_addr() -> "ip:port" | nil      s:queued() -> bytes not yet written
 *   tcp.count() -> streams not yet fully closed (leak checks in nano.test)
 *
 * Ownership: the stream struct is malloc'd and freed in the handle's close callback (never
 * before a pending getaddrinfo has called back). While it is open, a registry ref keeps its
 * userdata alive, so a stream the script forgot is never collected half-open; the userdata's
 * pointer is cleared when the struct goes, so a Lua reference that outlives it is harmless.
 * Streams are referenced loop handles: an open stream keeps nano-host running (a bot script
 * runs until its clients close). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <lauxlib.h>

#include "conn.h"
#include "host.h"
#include "lua_binding.h"
#include "tls.h"

#define TCP_MT "nano.tcp.stream"

enum { ST_RESOLVING, ST_CONNECTING, ST_OPEN, ST_CLOSING, ST_CLOSED };
static const char *const state_names[] = {"resolving", "connecting", "open", "closing", "closed"};

typedef struct stream {
    uv_tcp_t tcp; /* first: handle -> stream by cast */
    uv_connect_t creq;
    uv_getaddrinfo_t gai;
    nh_host_t *h;
    int self_ref;    /* the userdata, while the handle is open */
    int cb_ref;      /* the event callback */
    int state;       /* ST_* */
    int gai_pending; /* getaddrinfo has not called back yet: keep the struct */
    int handle_gone; /* close callback ran */
    int port;
    nh_tls_t *tls;    /* NULL: plain */
    char reason[128]; /* why it closed; empty: closed by s:close() */
} stream_t;

typedef struct ustream {
    stream_t *st; /* NULL once the stream is freed */
} ustream_t;

/* Streams not yet freed, per Lua state (registry), for tcp.count(). */
static const char count_key = 'c';

static void count_add(lua_State *L, int d) {
    nh_lua_count_add(L, &count_key, d);
}

/* Calls the stream's callback with (stream, event, arg); arg NULL pushes nil. */
static void emit(stream_t *st, const char *event, const char *arg, size_t len) {
    nh_host_t *h = st->h;
    lua_State *L = h->L;
    if (st->cb_ref == LUA_NOREF || st->self_ref == LUA_NOREF) return;
    lua_rawgeti(L, LUA_REGISTRYINDEX, st->cb_ref);
    lua_rawgeti(L, LUA_REGISTRYINDEX, st->self_ref);
    lua_pushstring(L, event);
    if (arg)
        lua_pushlstring(L, arg, len);
    else
        lua_pushnil(L);
    nh_host_call_lua(h, 3, 0, "nano.tcp callback");
}

static void maybe_free(stream_t *st) {
    if (!st->handle_gone || st->gai_pending) return;
    nh_tls_free(st->tls);
    free(st);
}

static void on_closed(uv_handle_t *hd) {
    stream_t *st = (stream_t *)hd;
    lua_State *L = st->h->L;
    st->state = ST_CLOSED;
    emit(st, "close", st->reason[0] ? st->reason : NULL, strlen(st->reason));
    if (st->self_ref != LUA_NOREF) {
        lua_rawgeti(L, LUA_REGISTRYINDEX, st->self_ref);
        ustream_t *u = lua_touserdata(L, -1);
        if (u) u->st = NULL;
        lua_pop(L, 1);
    }
    luaL_unref(L, LUA_REGISTRYINDEX, st->self_ref);
    luaL_unref(L, LUA_REGISTRYINDEX, st->cb_ref);
    st->self_ref = st->cb_ref = LUA_NOREF;
    count_add(L, -1);
    st->handle_gone = 1;
    maybe_free(st);
}

/* Starts closing (idempotent); the first reason given is the one reported. */
static void stream_close(stream_t *st, const char *reason) {
    if (st->state >= ST_CLOSING) return;
    st->state = ST_CLOSING;
    if (reason) { /* cut to the buffer: a longer reason (an error text) loses its end */
        size_t n = strnlen(reason, sizeof st->reason - 1);
        memcpy(st->reason, reason, n);
        st->reason[n] = '\0';
    }
    if (st->gai_pending) uv_cancel((uv_req_t *)&st->gai);
    if (!uv_is_closing((uv_handle_t *)&st->tcp)) uv_close((uv_handle_t *)&st->tcp, on_closed);
}

typedef struct wreq {
    uv_write_t req;
    char data[];
} wreq_t;

static void on_write(uv_write_t *req, int status) {
    stream_t *st = (stream_t *)req->handle;
    free(req);
    if (status < 0 && status != UV_ECANCELED) stream_close(st, uv_strerror(status));
}

/* Writes len bytes (copied). 0 or a negative uv error. */
static int write_copy(stream_t *st, const void *data, size_t len) {
    wreq_t *w = malloc(sizeof *w + (len ? len : 1));
    if (!w) return UV_ENOMEM;
    memcpy(w->data, data, len);
    uv_buf_t b = uv_buf_init(w->data, (unsigned)len);
    int r = uv_write(&w->req, (uv_stream_t *)&st->tcp, &b, 1, on_write);
    if (r < 0) free(w);
    return r;
}

/* Sends what the TLS layer has for the server (handshake records, encrypted data). */
static int tls_flush(stream_t *st) {
    uint8_t buf[16384];
    size_t n;
    while ((n = nh_tls_out_take(st->tls, buf, sizeof buf)) > 0) {
        int r = write_copy(st, buf, n);
        if (r < 0) return r;
    }
    return 0;
}

/* Ciphertext from the server: the handshake first ("connect" when it is done), then data. */
static void tls_on_read(stream_t *st, const uint8_t *data, size_t len) {
    char why[160];
    uint8_t plain[16384];
    if (nh_tls_feed(st->tls, data, len) < 0) goto failed;
    long n;
    while (st->state < ST_CLOSING && (n = nh_tls_read(st->tls, plain, sizeof plain)) != 0) {
        if (n == NH_TLS_CLOSED) {
            stream_close(st, "closed by the server");
            return;
        }
        if (n < 0) goto failed;
        if (st->state == ST_OPEN) emit(st, "data", (const char *)plain, (size_t)n);
    }
    if (st->state == ST_CONNECTING && nh_tls_handshake_done(st->tls)) {
        st->state = ST_OPEN;
        emit(st, "connect", NULL, 0);
    }
    if (st->state < ST_CLOSING && tls_flush(st) < 0) stream_close(st, "write failed");
    return;
failed:
    snprintf(why, sizeof why, "tls: %s", nh_tls_error(st->tls));
    stream_close(st, why);
}

static void on_alloc(uv_handle_t *hd, size_t suggested, uv_buf_t *buf) {
    (void)hd;
    buf->base = malloc(suggested);
    buf->len = buf->base ? suggested : 0;
}

static void on_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf) {
    stream_t *st = (stream_t *)s;
    if (nread > 0 && st->tls && st->state < ST_CLOSING)
        tls_on_read(st, (const uint8_t *)buf->base, (size_t)nread);
    else if (nread > 0 && st->state == ST_OPEN)
        emit(st, "data", buf->base, (size_t)nread);
    free(buf->base);
    if (nread < 0) stream_close(st, nread == UV_EOF ? "closed by the server" : uv_strerror(nread));
}

static void on_connect(uv_connect_t *req, int status) {
    stream_t *st = req->data;
    if (st->state != ST_CONNECTING) return; /* closed meanwhile */
    if (status < 0) {
        char why[128];
        snprintf(why, sizeof why, "connect: %s", uv_strerror(status));
        stream_close(st, why);
        return;
    }
    uv_tcp_nodelay(&st->tcp, 1);
    int r = uv_read_start((uv_stream_t *)&st->tcp, on_alloc, on_read);
    if (!r && st->tls) r = tls_flush(st); /* the ClientHello; "connect" when the handshake ends */
    if (r < 0) {
        stream_close(st, uv_strerror(r));
        return;
    }
    if (st->tls) return;
    st->state = ST_OPEN;
    emit(st, "connect", NULL, 0);
}

static int start_connect(stream_t *st, const struct sockaddr *sa) {
    st->state = ST_CONNECTING;
    st->creq.data = st;
    return uv_tcp_connect(&st->creq, &st->tcp, sa, on_connect);
}

static void on_resolved(uv_getaddrinfo_t *req, int status, struct addrinfo *res) {
    stream_t *st = req->data;
    st->gai_pending = 0;
    if (st->state != ST_RESOLVING) { /* closed meanwhile */
        uv_freeaddrinfo(res);
        maybe_free(st);
        return;
    }
    int r = status;
    if (r == 0) {
        struct sockaddr_storage ss;
        memcpy(&ss, res->ai_addr, res->ai_addrlen);
        ((struct sockaddr_in *)&ss)->sin_port = htons((uint16_t)st->port); /* same offset in v6 */
        r = start_connect(st, (struct sockaddr *)&ss);
    }
    uv_freeaddrinfo(res);
    if (r < 0) {
        char why[128];
        snprintf(why, sizeof why, "%s: %s", status < 0 ? "resolve" : "connect", uv_strerror(r));
        stream_close(st, why);
    }
}

/* connect(host, port, cb) -> stream. Failures to connect arrive as events; bad arguments raise. */
static int l_connect(lua_State *L) {
    nh_host_t *h = nh_host_from_lua(L);
    if (!h) return luaL_error(L, "nano.tcp: no host in this Lua state");
    const char *host = luaL_checkstring(L, 1);
    lua_Integer port = luaL_checkinteger(L, 2);
    luaL_argcheck(L, port > 0 && port <= 65535, 2, "port out of range");
    luaL_checktype(L, 3, LUA_TFUNCTION);
    nh_tls_t *tls = NULL;
    if (lua_istable(L, 4)) {
        lua_getfield(L, 4, "ca");
        lua_getfield(L, 4, "verify");
        lua_getfield(L, 4, "server_name");
        const char *ca = lua_tostring(L, -3), *name = lua_tostring(L, -1);
        int verify = lua_isnil(L, -2) || lua_toboolean(L, -2);
        char err[512];
        nh_tls_ctx_t *ctx = nh_tls_ctx_client(ca, verify, err, sizeof err);
        if (!ctx) return luaL_error(L, "nano.tcp: tls: %s", err);
        tls = nh_tls_new(ctx, name ? name : host); /* holds its own reference to ctx */
        nh_tls_ctx_unref(ctx);
        lua_pop(L, 3);
        if (!tls) return luaL_error(L, "out of memory");
    }
    if (strcmp(host, "localhost") == 0) host = "127.0.0.1";

    stream_t *st = calloc(1, sizeof *st);
    if (!st) {
        nh_tls_free(tls);
        return luaL_error(L, "out of memory");
    }
    st->tls = tls;
    st->h = h;
    st->port = (int)port;
    st->self_ref = st->cb_ref = LUA_NOREF;
    int r = uv_tcp_init(h->loop, &st->tcp);
    if (r < 0) {
        nh_tls_free(st->tls);
        free(st);
        return luaL_error(L, "nano.tcp: %s", uv_strerror(r));
    }
    ustream_t *u = lua_newuserdata(L, sizeof *u);
    u->st = st;
    luaL_getmetatable(L, TCP_MT);
    lua_setmetatable(L, -2);
    lua_pushvalue(L, 3);
    st->cb_ref = luaL_ref(L, LUA_REGISTRYINDEX);
    lua_pushvalue(L, -1);
    st->self_ref = luaL_ref(L, LUA_REGISTRYINDEX);
    count_add(L, 1);

    struct sockaddr_storage ss;
    memset(&ss, 0, sizeof ss);
    if (uv_ip4_addr(host, (int)port, (struct sockaddr_in *)&ss) == 0 ||
        uv_ip6_addr(host, (int)port, (struct sockaddr_in6 *)&ss) == 0) {
        r = start_connect(st, (struct sockaddr *)&ss);
    } else {
        /* A name: resolve off the loop thread (libuv's pool), connect when it answers. */
        struct addrinfo hints;
        memset(&hints, 0, sizeof hints);
        hints.ai_family = AF_UNSPEC;
        hints.ai_socktype = SOCK_STREAM;
        st->state = ST_RESOLVING;
        st->gai.data = st;
        st->gai_pending = 1;
        r = uv_getaddrinfo(h->loop, &st->gai, on_resolved, host, NULL, &hints);
        if (r < 0) st->gai_pending = 0;
    }
    if (r < 0) {
        /* Reported like any failed connect, as a "close" event from the loop: callers have one
         * path, and the callback never runs inside this call. */
        snprintf(st->reason, sizeof st->reason, "connect: %s", uv_strerror(r));
        st->state = ST_CLOSING;
        uv_close((uv_handle_t *)&st->tcp, on_closed);
    }
    return 1;
}

/* The stream behind the userdata (NULL once freed). */
static stream_t *check_stream(lua_State *L) {
    return ((ustream_t *)luaL_checkudata(L, 1, TCP_MT))->st;
}

static int s_write(lua_State *L) {
    stream_t *st = check_stream(L);
    size_t len;
    const char *data = luaL_checklstring(L, 2, &len);
    if (!st || st->state != ST_OPEN) {
        lua_pushnil(L);
        lua_pushstring(L, st && st->state < ST_OPEN ? "not connected yet" : "stream closed");
        return 2;
    }
    int r;
    if (st->tls) {
        r = nh_tls_write(st->tls, (const uint8_t *)data, len) < 0 ? UV_EPROTO : tls_flush(st);
    } else {
        r = write_copy(st, data, len);
    }
    if (r < 0) {
        lua_pushnil(L);
        lua_pushstring(L, r == UV_EPROTO ? nh_tls_error(st->tls) : uv_strerror(r));
        return 2;
    }
    lua_pushboolean(L, 1);
    return 1;
}

static int s_close(lua_State *L) {
    stream_t *st = check_stream(L);
    if (st) stream_close(st, NULL);
    return 0;
}

static int s_state(lua_State *L) {
    stream_t *st = check_stream(L);
    lua_pushstring(L, state_names[st ? st->state : ST_CLOSED]);
    return 1;
}

static int push_addr(lua_State *L, const struct sockaddr_storage *ss, int r) {
    char addr[96];
    if (r != 0) {
        lua_pushnil(L);
        return 1;
    }
    nh_format_addr((const struct sockaddr *)ss, addr, sizeof addr);
    lua_pushstring(L, addr);
    return 1;
}

static int s_local_addr(lua_State *L) {
    stream_t *st = check_stream(L);
    struct sockaddr_storage ss;
    int n = sizeof ss;
    if (!st || st->state != ST_OPEN) return push_addr(L, &ss, -1);
    return push_addr(L, &ss, uv_tcp_getsockname(&st->tcp, (struct sockaddr *)&ss, &n));
}

static int s_remote_addr(lua_State *L) {
    stream_t *st = check_stream(L);
    struct sockaddr_storage ss;
    int n = sizeof ss;
    if (!st || st->state != ST_OPEN) return push_addr(L, &ss, -1);
    return push_addr(L, &ss, uv_tcp_getpeername(&st->tcp, (struct sockaddr *)&ss, &n));
}

static int s_queued(lua_State *L) {
    stream_t *st = check_stream(L);
    lua_pushnumber(L, st ? (lua_Number)uv_stream_get_write_queue_size((uv_stream_t *)&st->tcp) : 0);
    return 1;
}

static int s_tostring(lua_State *L) {
    stream_t *st = check_stream(L);
    lua_pushfstring(L, "nano.tcp stream (%s)", state_names[st ? st->state : ST_CLOSED]);
    return 1;
}

static int l_count(lua_State *L) {
    return nh_lua_count_push(L, &count_key);
}

int nh_lua_open_tcp(lua_State *L) {
    static const luaL_Reg methods[] = {
        {"write", s_write},
        {"close", s_close},
        {"state", s_state},
        {"local_addr", s_local_addr},
        {"remote_addr", s_remote_addr},
        {"queued", s_queued},
        {NULL, NULL},
    };
    static const luaL_Reg fns[] = {{"connect", l_connect}, {"count", l_count}, {NULL, NULL}};
    static const luaL_Reg meta[] = {{"__tostring", s_tostring}, {NULL, NULL}};
    return nh_lua_class_module(L, TCP_MT, methods, meta, fns);
}
