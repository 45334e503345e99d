/* lua_metrics — `nano.metrics_core`: the Lua side of metrics.h and metrics_http.h.
 *
 *   listen(addr, drain_secs) -> bound   starts the /metrics + /healthz listener (one per host;
 *                                       the same addr again, as hot reload does, returns it)
 *   route(name)                         registers a route for per-route series
 *   route_code(code, name)              the dictionary's code for a route (compressed routes)
 *   reload(ok, seconds)                 one hot reload
 *   family(name, help, kind, labels, bounds) -> handle   Lua's own counter/gauge/histogram
 *   update(handle, set, value, label values...)          nil, err past the series limit
 *   core_family(...) -> handle          as family, for the core's nano_* series kept in Lua
 *                                       (cluster, storage, HTTP client: lua/nano/metrics.lua)
 *   series(handle, label values...) -> index | nil (past the series limit)
 *   bump(handle, index, value)          adds to / observes the series at index
 *   clock() -> seconds                  uv_hrtime, for record's t0
 *   record(counter, ci, histogram, hi, t0)  counts one and observes clock() - t0
 *   http_router(fn | nil)               fn(id, method, target, headers, body, remote, via) for
 *                                       paths other than /metrics and /healthz on the metrics
 *                                       listener (via nil), and for plain requests on WebSocket
 *                                       listeners (via "ws": fn returns false when no route has
 *                                       the path, and the listener goes on to its static files)
 *                                       (lua/nano/http_server.lua)
 *   http_respond(id, status, header_lines, body, via) -> true | nil, err
 *
 * The collect callback fills what a scrape reads from the host: sessions past the handshake by
 * transport, connections, the Lua heap, the watchdog's counts, whether the host is stopping.
 */
#include <errno.h>
#include <string.h>

#include <lauxlib.h>
#include <lua.h>

#include "host.h"
#include "lua_binding.h"
#include "metrics.h"
#include "metrics_http.h"
#include "session.h"
#include "transport_ws.h"

static void collect(void *ud, nh_metrics_gauges_t *g) {
    nh_host_t *h = ud;
    for (nh_session_t *s = h->sessions.head; s; s = s->next)
        if (s->state == NH_SS_WORKING && nh_session_transport(s))
            g->sessions[nh_metrics_transport_of(nh_session_transport(s))]++;
    g->connections = h->nconns;
    g->lua_bytes = (double)lua_gc(h->L, LUA_GCCOUNT, 0) * 1024.0 + lua_gc(h->L, LUA_GCCOUNTB, 0);
    nh_watchdog_stats_t ws;
    memset(&ws, 0, sizeof ws);
    if (h->watchdog) nh_watchdog_get_stats(h->watchdog, &ws);
    g->watchdog_aborts = ws.aborts;
    g->watchdog_stalls = ws.stalls;
    g->shutting_down = h->stopping;
}

static int router_ref = LUA_NOREF; /* http_router's function */
static void on_http_request(void *ud, const nh_http_request_t *req);

/* The address listen() was last asked for, so that a reload's second call is recognised. */
static char listen_addr[128];

static int l_listen(lua_State *L) {
    nh_host_t *h = nh_host_from_lua(L);
    const char *addr = luaL_checkstring(L, 1);
    lua_Number drain = luaL_optnumber(L, 2, 0);
    if (!(drain >= 0 && drain <= 3600)) return luaL_argerror(L, 2, "drain: 0 to 3600 seconds");
    if (h->metrics_http) {
        if (strcmp(addr, listen_addr) == 0) {
            lua_pushstring(L, nh_metrics_http_bound(h->metrics_http));
            return 1;
        }
        return luaL_error(L, "listen_metrics: already listening on %s",
                          nh_metrics_http_bound(h->metrics_http));
    }
    if (h->stopping) return luaL_error(L, "listen_metrics: the server is shutting down");
    char bound[128];
    int r =
        nh_metrics_http_start(h->loop, addr, &h->metrics, collect, h, (uint64_t)(drain * 1000.0),
                              &h->metrics_http, bound, sizeof bound);
    if (r) return luaL_error(L, "listen_metrics %s: %s", addr, uv_strerror(r));
    snprintf(listen_addr, sizeof listen_addr, "%s", addr);
    h->metrics.requests_on = 1; /* session.c times requests, lua_host.c notes error codes */
    if (router_ref != LUA_NOREF) nh_metrics_http_set_router(h->metrics_http, on_http_request, h);
    lua_pushstring(L, bound);
    return 1;
}

static int l_route(lua_State *L) {
    size_t len;
    const char *name = luaL_checklstring(L, 1, &len);
    lua_pushinteger(L, nh_metrics_route_add(&nh_host_from_lua(L)->metrics, name, len));
    return 1;
}

static int l_route_code(lua_State *L) {
    nh_metrics_t *m = &nh_host_from_lua(L)->metrics;
    lua_Integer code = luaL_checkinteger(L, 1);
    size_t len;
    const char *name = luaL_checklstring(L, 2, &len);
    if (code < 1 || code > 65535) return luaL_argerror(L, 1, "a dictionary code, 1..65535");
    if (nh_metrics_route_code(m, (uint16_t)code, nh_metrics_route_find(m, name, len)) != 0)
        return luaL_error(L, "metrics: out of memory");
    return 0;
}

static int l_reload(lua_State *L) {
    nh_metrics_t *m = &nh_host_from_lua(L)->metrics;
    if (lua_toboolean(L, 1))
        m->reloads_ok++;
    else
        m->reloads_failed++;
    nh_histogram_observe(&m->reload_seconds, luaL_optnumber(L, 2, 0));
    return 0;
}

static int family(lua_State *L, int core) {
    nh_metrics_t *m = &nh_host_from_lua(L)->metrics;
    const char *name = luaL_checkstring(L, 1);
    const char *help = luaL_checkstring(L, 2);
    const char *kind = luaL_checkstring(L, 3);
    int k = strcmp(kind, "counter") == 0     ? NH_KIND_COUNTER
            : strcmp(kind, "gauge") == 0     ? NH_KIND_GAUGE
            : strcmp(kind, "histogram") == 0 ? NH_KIND_HISTOGRAM
                                             : -1;
    if (k < 0) return luaL_argerror(L, 3, "counter, gauge or histogram");
    const char *labels[NH_METRICS_MAX_LABELS];
    int nlabels = 0;
    if (!lua_isnoneornil(L, 4)) {
        luaL_checktype(L, 4, LUA_TTABLE);
        nlabels = (int)lua_objlen(L, 4);
        if (nlabels > NH_METRICS_MAX_LABELS) return luaL_argerror(L, 4, "at most 8 labels");
        for (int i = 0; i < nlabels; i++) {
            lua_rawgeti(L, 4, i + 1);
            if (lua_type(L, -1) != LUA_TSTRING) return luaL_argerror(L, 4, "label names: strings");
            labels[i] = lua_tostring(L, -1); /* kept alive by the table */
            lua_pop(L, 1);
        }
    }
    double bounds[NH_METRICS_MAX_BUCKETS];
    int nbounds = 0;
    if (k == NH_KIND_HISTOGRAM) {
        luaL_checktype(L, 5, LUA_TTABLE);
        nbounds = (int)lua_objlen(L, 5);
        if (nbounds < 1 || nbounds > NH_METRICS_MAX_BUCKETS)
            return luaL_argerror(L, 5, "1 to 16 bucket bounds");
        for (int i = 0; i < nbounds; i++) {
            lua_rawgeti(L, 5, i + 1);
            if (lua_type(L, -1) != LUA_TNUMBER) return luaL_argerror(L, 5, "bounds: numbers");
            bounds[i] = lua_tonumber(L, -1);
            lua_pop(L, 1);
        }
    }
    nh_metrics_family_t *f;
    int r = core
                ? nh_metrics_core_family_add(m, name, help, k, labels, nlabels, bounds, nbounds, &f)
                : nh_metrics_family_add(m, name, help, k, labels, nlabels, bounds, nbounds, &f);
    if (r == -EINVAL)
        return luaL_error(L,
                          "metric '%s': bad name, label names or bucket bounds (names are "
                          "[a-zA-Z_:][a-zA-Z0-9_:]*, bounds increase)",
                          name);
    if (r == -EEXIST)
        return luaL_error(L,
                          "metric '%s' exists with another type, labels or buckets (or uses "
                          "the reserved nano_ prefix)",
                          name);
    if (r) return luaL_error(L, "metric '%s': out of memory", name);
    lua_pushlightuserdata(L, f);
    return 1;
}

static int l_family(lua_State *L) {
    return family(L, 0);
}
static int l_core_family(lua_State *L) {
    return family(L, 1);
}

static int l_series(lua_State *L) {
    luaL_checktype(L, 1, LUA_TLIGHTUSERDATA);
    nh_metrics_family_t *f = lua_touserdata(L, 1);
    int n = nh_metrics_family_nlabels(f);
    const char *values[NH_METRICS_MAX_LABELS];
    for (int i = 0; i < n; i++)
        values[i] = luaL_checkstring(L, 2 + i);
    int r = nh_metrics_family_series(f, values);
    if (r == -ENOMEM) return luaL_error(L, "metric series: out of memory");
    if (r < 0) return 0; /* past the series limit: nothing to bump */
    lua_pushinteger(L, r);
    return 1;
}

/* The hot path of the core's Lua-kept series: no strings, no lookup. */
static int l_bump(lua_State *L) {
    nh_metrics_family_t *f = lua_touserdata(L, 1);
    if (f) nh_metrics_family_bump(f, (int)lua_tointeger(L, 2), lua_tonumber(L, 3));
    return 0;
}

/* record(counter, ci, histogram, hi, t0): one call done; counts 1 in the counter's series ci and
 * observes now - t0 (seconds of clock(), uv_hrtime) in the histogram's series hi. One C call at
 * the end of a query or an RPC instead of a clock read and two bumps. */
static int l_record(lua_State *L) {
    double now = (double)uv_hrtime() / 1e9;
    nh_metrics_family_t *c = lua_touserdata(L, 1);
    nh_metrics_family_t *h = lua_touserdata(L, 3);
    if (c) nh_metrics_family_bump(c, (int)lua_tointeger(L, 2), 1);
    double dt = now - lua_tonumber(L, 5);
    if (h) nh_metrics_family_bump(h, (int)lua_tointeger(L, 4), dt > 0 ? dt : 0);
    return 0;
}

static int l_clock(lua_State *L) {
    lua_pushnumber(L, (lua_Number)uv_hrtime() / 1e9);
    return 1;
}

static int l_update(lua_State *L) {
    luaL_checktype(L, 1, LUA_TLIGHTUSERDATA);
    nh_metrics_family_t *f = lua_touserdata(L, 1);
    int set = lua_toboolean(L, 2);
    double v = luaL_checknumber(L, 3);
    int n = nh_metrics_family_nlabels(f);
    const char *values[NH_METRICS_MAX_LABELS];
    for (int i = 0; i < n; i++)
        values[i] = luaL_checkstring(L, 4 + i);
    int r = nh_metrics_family_update(f, values, set, v);
    if (r == -ENOSPC) {
        lua_pushnil(L);
        lua_pushliteral(L, "too many series (label value combinations) in this metric");
        return 2;
    }
    if (r) return luaL_error(L, "metric update: out of memory");
    lua_pushboolean(L, 1);
    return 1;
}

/* Pushes the router and its arguments but `via`. */
static void push_http_request(lua_State *L, const nh_http_request_t *req) {
    lua_rawgeti(L, LUA_REGISTRYINDEX, router_ref);
    lua_pushnumber(L, (lua_Number)req->id);
    lua_pushstring(L, req->method);
    lua_pushlstring(L, req->target, req->target_len);
    lua_newtable(L);
    for (size_t off = 0; off < req->headers_len;) {
        const char *name = req->headers + off;
        size_t nlen = strlen(name);
        if (off + nlen + 1 >= req->headers_len) break;
        const char *value = name + nlen + 1;
        size_t vlen = strlen(value);
        lua_getfield(L, -1, name); /* a repeated header: values joined with ", " */
        if (lua_isstring(L, -1)) {
            lua_pushliteral(L, ", ");
            lua_pushlstring(L, value, vlen);
            lua_concat(L, 3);
        } else {
            lua_pop(L, 1);
            lua_pushlstring(L, value, vlen);
        }
        lua_setfield(L, -2, name);
        off += nlen + 1 + vlen + 1;
    }
    lua_pushlstring(L, req->body, req->body_len);
    lua_pushstring(L, req->remote);
}

static const char internal_error[] = "internal error\n";
static const char text_type[] = "Content-Type: text/plain; charset=utf-8\r\n";

int nh_lua_ws_http_route(void *ud, const nh_http_request_t *req) {
    nh_host_t *h = ud;
    if (router_ref == LUA_NOREF) return 0;
    lua_State *L = h->L;
    push_http_request(L, req);
    lua_pushliteral(L, "ws");
    if (nh_host_call_lua(h, 7, 1, "http route") != 0) {
        nh_ws_http_respond(h, req->id, 500, text_type, sizeof text_type - 1, internal_error,
                           sizeof internal_error - 1);
        return 1;
    }
    int taken = lua_toboolean(L, -1);
    lua_pop(L, 1);
    return taken;
}

static void on_http_request(void *ud, const nh_http_request_t *req) {
    nh_host_t *h = ud;
    lua_State *L = h->L;
    push_http_request(L, req);
    if (nh_host_call_lua(h, 6, 0, "http route") != 0) {
        static const char msg[] = "internal error\n";
        static const char hdr[] = "Content-Type: text/plain; charset=utf-8\r\n";
        nh_metrics_http_respond(h->metrics_http, req->id, 500, hdr, sizeof hdr - 1, msg,
                                sizeof msg - 1);
    }
}

static int l_http_router(lua_State *L) {
    nh_host_t *h = nh_host_from_lua(L);
    luaL_unref(L, LUA_REGISTRYINDEX, router_ref);
    router_ref = LUA_NOREF;
    if (lua_isfunction(L, 1)) {
        lua_pushvalue(L, 1);
        router_ref = luaL_ref(L, LUA_REGISTRYINDEX);
    }
    nh_metrics_http_set_router(h->metrics_http, router_ref == LUA_NOREF ? NULL : on_http_request,
                               h);
    return 0;
}

static int l_http_respond(lua_State *L) {
    nh_host_t *h = nh_host_from_lua(L);
    lua_Number id = luaL_checknumber(L, 1);
    lua_Integer status = luaL_checkinteger(L, 2);
    size_t hlen, blen;
    const char *headers = luaL_checklstring(L, 3, &hlen);
    const char *body = luaL_checklstring(L, 4, &blen);
    if (status < 100 || status > 599) return luaL_argerror(L, 2, "an HTTP status, 100..599");
    if (!(id >= 1 && id < 9007199254740992.0)) return luaL_argerror(L, 1, "a request id");
    int ws = lua_isstring(L, 5) && strcmp(lua_tostring(L, 5), "ws") == 0;
    int r = ws ? nh_ws_http_respond(h, (uint64_t)id, (int)status, headers, hlen, body, blen)
               : nh_metrics_http_respond(h->metrics_http, (uint64_t)id, (int)status, headers, hlen,
                                         body, blen);
    if (r) {
        lua_pushnil(L);
        lua_pushstring(L, "the client is gone");
        return 2;
    }
    lua_pushboolean(L, 1);
    return 1;
}

int nh_lua_open_metrics(lua_State *L) {
    static const luaL_Reg fns[] = {{"listen", l_listen},
                                   {"route", l_route},
                                   {"route_code", l_route_code},
                                   {"reload", l_reload},
                                   {"family", l_family},
                                   {"update", l_update},
                                   {"core_family", l_core_family},
                                   {"series", l_series},
                                   {"bump", l_bump},
                                   {"record", l_record},
                                   {"clock", l_clock},
                                   {"http_router", l_http_router},
                                   {"http_respond", l_http_respond},
                                   {NULL, NULL}};
    lua_newtable(L);
    luaL_register(L, NULL, fns);
    return 1;
}
