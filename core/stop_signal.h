/* stop_signal — the second SIGINT/SIGTERM ends the process at once, whatever the loop thread does.
 *
 * The first stop signal starts a graceful shutdown, but that runs on the loop thread: libuv's
 * handler only writes to a pipe the loop reads. While Lua holds the loop thread (a JIT-compiled
 * endless loop the watchdog cannot abort, a long before_shutdown hook), no signal is ever looked
 * at. So a real handler is installed over libuv's for SIGINT and SIGTERM: it counts both signals
 * together; the first is passed on to libuv's handler (graceful shutdown, as before); the second
 * writes one line to stderr and calls _exit(128 + signal number) — 130 for SIGINT, 143 for
 * SIGTERM, the status a shell reports for a process ended by that signal. Only async-signal-safe
 * calls (an atomic counter, write, _exit): no atexit handlers, no flushing, no Lua.
 *
 * Install after libuv has installed its own handlers (uv_signal_start), which are chained. If
 * libuv later removes its handler (the signal watchers closed at exit), the default action —
 * ending the process — applies again.
 */
#ifndef NH_STOP_SIGNAL_H
#define NH_STOP_SIGNAL_H

/* Status of an exit forced by a second stop signal. */
#define NH_STOP_SIGNAL_EXIT(signum) (128 + (signum))

/* Installs the counting handler for SIGINT and SIGTERM over the current ones. 0 or -errno. */
int nh_stop_signal_install(void);

/* Stop signals received so far (for tests and logs). */
int nh_stop_signal_count(void);

/* A stop signal that arrived while a stop begun otherwise (nano.shutdown()) is under way: ends
 * the process now, as a second signal does, after logging it. Does not return. */
_Noreturn void nh_stop_signal_exit(int signum);

#endif
