/* nano-host: the command line. Loads the main script into a fresh Lua state, runs the loop, and
 * shuts down cleanly on SIGINT/SIGTERM. `nano-host test` runs busted in-process instead. */
#include <errno.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <unistd.h>

#include <lauxlib.h>
#include <lualib.h>

#include "console.h"
#include "host.h"
#include "log.h"
#include "lua_binding.h"
#include "workers.h"

static void usage(FILE *out) {
    fprintf(out,
            "usage: nano-host [options] script.lua [script args...]\n"
            "       nano-host test [busted args...]   run specs (see docs/testing.md)\n"
            "       nano-host test --init [--force]   write .busted (plain `busted` runs the\n"
            "                                         specs under nano-host) and a first spec\n"
            "       nano-host new NAME                create a project in NAME/\n"
            "       nano-host console [PID|SOCKET]    the admin console of a running host\n"
            "\n"
            "options:\n"
            "  --log-level L   debug, info (default), warn, error, off\n"
            "  --debug         log every message in and out; error text goes to clients\n"
            "  --watch         reload scripts when a .lua file in the script's folder changes\n"
            "                  (not in spec/, specs/, test/, tests/: see nano.watch)\n"
            "  --workers N     run N processes sharing the listening ports (SO_REUSEPORT);\n"
            "                  SIGHUP/SIGTERM to this one reach all (docs/cluster.md)\n"
            "  --help          this text\n"
            "  --version       print the version\n");
}

/* Game servers hold many sockets; the soft limit is often 1024. */
static void raise_nofile(void) {
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
        rl.rlim_cur = rl.rlim_max;
        if (setrlimit(RLIMIT_NOFILE, &rl) != 0)
            nh_log(NH_LOG_WARN, "could not raise the open-file limit");
    }
}

/* Where lua/nano/ lives: $NANO_HOST_LUA, next to an installed binary, the source tree (a binary in
 * its build tree must not pick up an older installed copy), or the configured install folder. */
static const char *lua_dir(char *buf, size_t len) {
    const char *env = getenv("NANO_HOST_LUA");
    if (env && *env) return env;
    char exe[PATH_MAX];
    ssize_t n = readlink("/proc/self/exe", exe, sizeof exe - 1);
    if (n > 0) {
        exe[n] = '\0';
        char *slash = strrchr(exe, '/');
        if (slash) {
            *slash = '\0';
            if ((size_t)snprintf(buf, len, "%.*s/../share/nano-host/lua", (int)(len - 32), exe) >=
                len)
                return NH_LUA_SOURCE_DIR;
            char probe[PATH_MAX + 64];
            snprintf(probe, sizeof probe, "%s/nano/init.lua", buf);
            if (access(probe, R_OK) == 0) return buf;
        }
    }
    if (access(NH_LUA_SOURCE_DIR "/nano/init.lua", R_OK) == 0) return NH_LUA_SOURCE_DIR;
    if (access(NH_LUA_INSTALL_DIR "/nano/init.lua", R_OK) == 0) return NH_LUA_INSTALL_DIR;
    return NH_LUA_SOURCE_DIR;
}

static void set_paths(lua_State *L, const char *script_dir) {
    char buf[PATH_MAX];
    const char *ld = lua_dir(buf, sizeof buf);
    lua_getglobal(L, "package");
    lua_getfield(L, -1, "path");
    const char *old = lua_tostring(L, -1);
    lua_pushfstring(L, "%s/?.lua;%s/?/init.lua;%s/?.lua;%s/?/init.lua;%s", script_dir, script_dir,
                    ld, ld, old ? old : "");
    lua_setfield(L, -3, "path");
    lua_pop(L, 1);
    lua_pushstring(L, ld);
    lua_setfield(L, -2, "nano_lua_dir");
    lua_pop(L, 1);
}

/* `--workers N` anywhere before the script: this process supervises N copies of itself,
 * started with the same arguments less that option (workers.c). */
static int run_workers(int argc, char **argv) {
    int n = 0;
    char **child = calloc((size_t)argc + 1, sizeof *child);
    if (!child) return 1;
    int c = 0;
    for (int k = 0; k < argc; k++) {
        if (n == 0 && strcmp(argv[k], "--workers") == 0 && k + 1 < argc) {
            n = atoi(argv[++k]);
            if (n < 1) {
                fprintf(stderr, "nano-host: --workers: expected a number of processes\n");
                free(child);
                return 2;
            }
            continue;
        }
        child[c++] = argv[k];
    }
    int status = nh_workers_run(n, child);
    free(child);
    return status;
}

int main(int argc, char **argv) {
    /* `nano-host console`: a client of a running host (console_client.c), no Lua of its own. */
    if (argc > 1 && strcmp(argv[1], "console") == 0)
        return nh_console_client_main(argc - 1, argv + 1);
    for (int k = 1; k < argc && argv[k][0] == '-'; k++) {
        if (strcmp(argv[k], "--workers") == 0) return run_workers(argc, argv);
        if (strcmp(argv[k], "--log-level") == 0) k++;
    }
    int debug = 0, watch = 0, test = 0, i = 1;
    const char *command = "test"; /* a subcommand run by nano.host without a script */
    for (; i < argc; i++) {
        const char *a = argv[i];
        if (strcmp(a, "--help") == 0 || strcmp(a, "-h") == 0) {
            usage(stdout);
            return 0;
        } else if (strcmp(a, "--version") == 0) {
            printf("nano-host %s\n", NH_VERSION);
            return 0;
        } else if (strcmp(a, "--debug") == 0) {
            debug = 1;
        } else if (strcmp(a, "--watch") == 0) {
            watch = 1;
        } else if (strcmp(a, "--log-level") == 0 && i + 1 < argc) {
            int l = nh_log_parse_level(argv[++i]);
            if (l < 0) {
                fprintf(stderr, "nano-host: unknown log level '%s'\n", argv[i]);
                return 2;
            }
            nh_log_set_level(l);
        } else if (strcmp(a, "test") == 0 || strcmp(a, "new") == 0) {
            test = 1;
            command = a;
            i++;
            break;
        } else if (a[0] == '-' && a[1] == '-') {
            fprintf(stderr, "nano-host: unknown option '%s'\n", a);
            usage(stderr);
            return 2;
        } else {
            break;
        }
    }
    if (!test && i >= argc) {
        usage(stderr);
        return 2;
    }
    if (debug) nh_log_set_level(NH_LOG_DEBUG);
    raise_nofile();
    /* A write to a connection the peer has reset must fail with EPIPE, not kill the host with
     * SIGPIPE (libuv leaves the signal alone). Found by the soak test. */
    signal(SIGPIPE, SIG_IGN);

    const char *script = test ? NULL : argv[i];
    char script_dir[PATH_MAX] = ".";
    if (script) {
        char real[PATH_MAX];
        if (!realpath(script, real)) {
            fprintf(stderr, "nano-host: cannot open %s: %s\n", script, strerror(errno));
            return 1;
        }
        snprintf(script_dir, sizeof script_dir, "%s", real);
        char *slash = strrchr(script_dir, '/');
        if (slash) *slash = '\0';
    } else if (!getcwd(script_dir, sizeof script_dir)) {
        strcpy(script_dir, ".");
    }

    lua_State *L = luaL_newstate();
    if (!L) {
        fprintf(stderr, "nano-host: cannot create a Lua state\n");
        return 1;
    }
    luaL_openlibs(L);
    nh_lua_open(L);
    set_paths(L, script_dir);

    uv_loop_t loop;
    int r = uv_loop_init(&loop);
    if (r != 0) {
        fprintf(stderr, "nano-host: cannot initialise the event loop: %s\n", uv_strerror(r));
        return 1;
    }
    nh_host_t *h = malloc(sizeof *h);
    if (!h || (r = nh_host_init(h, &loop, L)) != 0) {
        fprintf(stderr, "nano-host: cannot initialise the host: %s\n",
                h ? uv_strerror(r) : "out of memory");
        return 1;
    }
    h->cfg.debug = debug;
    if (!test && (r = nh_host_watch_signals(h, nh_lua_on_signal)) != 0)
        nh_log(NH_LOG_WARN, "cannot watch signals: %s", uv_strerror(r));

    /* Lua's global `arg`, as the standalone interpreter sets it. */
    lua_createtable(L, argc, 1);
    for (int k = 0; k < argc; k++) {
        lua_pushstring(L, argv[k]);
        lua_rawseti(L, -2, k - i);
    }
    lua_setglobal(L, "arg");

    /* The host itself is Lua: lua/nano/host.lua runs the script (or busted), the loop and the
     * lifecycle, through nano.core. */
    int status = 1;
    lua_getglobal(L, "require");
    lua_pushliteral(L, "nano.host");
    if (nh_host_call_lua(h, 1, 1, "loading nano.host") == 0) {
        lua_getfield(L, -1, test ? command : "main");
        lua_remove(L, -2);
        lua_newtable(L);
        if (script) {
            lua_pushstring(L, script);
            lua_setfield(L, -2, "script");
        }
        lua_pushstring(L, script_dir);
        lua_setfield(L, -2, "script_dir");
        lua_pushboolean(L, watch);
        lua_setfield(L, -2, "watch");
        lua_newtable(L);
        for (int k = i + (script ? 1 : 0), n = 1; k < argc; k++) {
            lua_pushstring(L, argv[k]);
            lua_rawseti(L, -2, n++);
        }
        lua_setfield(L, -2, "args");
        if (nh_host_call_lua(h, 1, 1, script ? script : command) == 0) {
            status = lua_isnumber(L, -1) ? (int)lua_tointeger(L, -1) : 0;
            lua_pop(L, 1);
        }
    }
    nh_host_stop(h);
    uv_run(&loop, UV_RUN_DEFAULT); /* finish closing connections; Lua still sees closed hooks */
    nh_host_free(h);
    /* Everything that took a registry reference (sessions, timers, hooks) has released it by now;
     * one still held is a leak that lua_close would hide. */
    int refs = nh_lua_registry_refs(L);
    if (refs) nh_log(NH_LOG_WARN, "%d Lua registry reference(s) still held at exit", refs);
    lua_close(L);
    if (uv_loop_close(&loop) != 0) nh_log(NH_LOG_WARN, "loop closed with handles still open");
    free(h);
    return status;
}
