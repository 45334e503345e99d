/* lua_main — the application on its Lua state (lua_main.c), for main.c: the command line is
 * parsed there, everything with Lua happens here. No Lua types in this header. */
#ifndef NH_LUA_MAIN_H
#define NH_LUA_MAIN_H

/* What main.c hands over: the command line (argv[first] is the script, or the first argument
 * after the command), the script and its folder, a command run without a script (`test`,
 * `new`; NULL: run the script), --watch and --debug. */
typedef struct nh_lua_main {
    int argc;
    char **argv;
    int first;
    const char *script;
    const char *script_dir;
    const char *command;
    int watch, debug;
} nh_lua_main_t;
/* Runs it (lua_main.c); returns the process's exit status. */
int nh_lua_main(const nh_lua_main_t *m);

#endif
