/* test_stop_signal — the first SIGINT/SIGTERM goes on to the handler installed before (libuv's in
 * nano-host), the second ends the process with 128 + its number from the handler itself. Each case
 * runs in a child process. (The same with Lua holding the loop thread: hardening-conformance.) */
#define _POSIX_C_SOURCE 200809L
#include "stop_signal.h"

#include <signal.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <sys/wait.h>
#include <unistd.h>

#include "check.h"

static atomic_int chained_calls;
static void chained(int sig) {
    (void)sig;
    atomic_fetch_add(&chained_calls, 1);
}

/* In the child: a handler of its own (standing in for libuv's), then ours over it. */
static void child_setup(void) {
    struct sigaction sa = {0};
    sa.sa_handler = chained;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
    if (nh_stop_signal_install() != 0) _exit(90);
}

/* Runs fn in a child; returns its wait status. */
static int in_child(void (*fn)(void)) {
    pid_t pid = fork();
    if (pid == 0) {
        child_setup();
        fn();
        _exit(0);
    }
    int status = 0;
    waitpid(pid, &status, 0);
    return status;
}

static void first_is_chained(void) {
    raise(SIGTERM);
    /* the child goes on: the first signal only reached the chained handler */
    _exit(atomic_load(&chained_calls) == 1 && nh_stop_signal_count() == 1 ? 0 : 91);
}

static void second_exits(void) {
    raise(SIGTERM);
    raise(SIGINT); /* kinds count together */
    _exit(92);     /* not reached */
}

int main(void) {
    int st = in_child(first_is_chained);
    CHECK(WIFEXITED(st) && WEXITSTATUS(st) == 0);
    st = in_child(second_exits);
    CHECK(WIFEXITED(st) && WEXITSTATUS(st) == NH_STOP_SIGNAL_EXIT(SIGINT));
    CHECK(NH_STOP_SIGNAL_EXIT(SIGINT) == 130 && NH_STOP_SIGNAL_EXIT(SIGTERM) == 143);
    return check_done();
}
