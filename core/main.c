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

#include "console.h"
#include "host.h"
#include "log.h"
#include "lua_main.h"
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

    nh_lua_main_t m = {.argc = argc,
                       .argv = argv,
                       .first = i,
                       .script = script,
                       .script_dir = script_dir,
                       .command = test ? command : NULL,
                       .watch = watch,
                       .debug = debug};
    return nh_lua_main(&m);
}
