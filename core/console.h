/* console — the admin console's server side: a Unix socket the host listens on, owner only.
 *
 * Access: the socket is created with mode 0600 (under umask 0177, then chmod), so only its owner
 * (and root) can connect; each peer's credentials (SO_PEERCRED) are checked as well, and a peer
 * that is neither the host's user nor root is closed with a log line.
 *
 * Wire (nano-host console speaks it): the client sends lines ("stats\n"); for each line the
 * server answers one frame, "ok <n>\n" or "error <n>\n" followed by n bytes of text. Lines are at
 * most NH_CONSOLE_MAX_LINE bytes (a longer one is answered with an error and the connection
 * closed); commands are answered in order, one at a time (a command that waits, such as an eval
 * that sleeps, holds the next one back). Replies over NH_CONSOLE_MAX_REPLY are cut.
 *
 * The commands themselves are policy, in Lua (lua/nano/console.lua): the server hands each line
 * to on_line and the answer comes back through nh_console_reply, perhaps later.
 *
 * Ownership: nh_console_start allocates; nh_console_close closes every handle, unlinks the
 * socket file and frees in the last close callback; `*out` is set to NULL when closing starts.
 * Errors: negative uv codes.
 */
#ifndef NH_CONSOLE_H
#define NH_CONSOLE_H

#include <stddef.h>
#include <stdint.h>
#include <uv.h>

#define NH_CONSOLE_MAX_LINE 65536
#define NH_CONSOLE_MAX_REPLY (1024 * 1024)
#define NH_CONSOLE_MAX_CLIENTS 16

typedef struct nh_console nh_console_t;

/* A line arrived from client `client` (its id); answer with nh_console_reply. */
typedef void (*nh_console_line_fn)(void *ud, uint64_t client, const char *line, size_t len);

int nh_console_start(uv_loop_t *loop, const char *path, nh_console_line_fn on_line, void *ud,
                     nh_console_t **out);
/* Answers the client's current line. Returns 0, or UV_ENOENT when the client is gone. */
int nh_console_reply(nh_console_t *c, uint64_t client, int ok, const char *text, size_t len);
void nh_console_close(nh_console_t *c); /* NULL: nothing */
const char *nh_console_path(const nh_console_t *c);

/* The default socket path for a host process: $NANO_HOST_RUN_DIR or $XDG_RUNTIME_DIR or /tmp,
 * then "/nano-host-<pid>.sock". The client uses the same rule to find a host by pid. */
void nh_console_default_path(int pid, char *out, size_t len);

/* The pid in a default socket name ("nano-host-<pid>.sock"), or -1 for any other name. */
int nh_console_name_pid(const char *name);
/* Whether that host process is alive (a host killed with SIGKILL leaves its socket behind). */
int nh_console_pid_alive(int pid);
/* Removes sockets of this user left in `dir` by hosts that are gone; returns how many. */
int nh_console_sweep(const char *dir);

/* `nano-host console [PID|SOCKET]` (console_client.c): the client; returns the exit status. */
int nh_console_client_main(int argc, char **argv);

#endif
