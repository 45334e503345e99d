/* stop_signal — see stop_signal.h. */
#define _POSIX_C_SOURCE 200809L
#include "stop_signal.h"

#include <errno.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "log.h"

static atomic_int stop_signals;
_Static_assert(ATOMIC_INT_LOCK_FREE == 2, "the signal handler counts with a lock-free atomic");

/* The handlers that were installed before ours (libuv's), called for the first signal. Written
 * before our handler is installed, only read afterwards. */
static struct sigaction chained_int, chained_term;

static void call_chained(const struct sigaction *sa, int signum, siginfo_t *info, void *ctx) {
    if (sa->sa_flags & SA_SIGINFO) {
        if (sa->sa_sigaction) sa->sa_sigaction(signum, info, ctx);
    } else if (sa->sa_handler != SIG_DFL && sa->sa_handler != SIG_IGN && sa->sa_handler) {
        sa->sa_handler(signum);
    }
}

static void on_stop_signal(int signum, siginfo_t *info, void *ctx) {
    int saved_errno = errno;
    if (atomic_fetch_add(&stop_signals, 1) >= 1) {
        static const char msg[] = "nano-host: second stop signal (SIGINT/SIGTERM): exiting now\n";
        ssize_t w = write(STDERR_FILENO, msg, sizeof msg - 1);
        (void)w;
        _exit(NH_STOP_SIGNAL_EXIT(signum));
    }
    call_chained(signum == SIGINT ? &chained_int : &chained_term, signum, info, ctx);
    errno = saved_errno;
}

int nh_stop_signal_install(void) {
    static const int nums[2] = {SIGINT, SIGTERM};
    struct sigaction *chained[2] = {&chained_int, &chained_term};
    for (int i = 0; i < 2; i++) {
        if (sigaction(nums[i], NULL, chained[i]) != 0) return -errno;
        struct sigaction sa;
        memset(&sa, 0, sizeof sa);
        sa.sa_sigaction = on_stop_signal;
        sa.sa_flags = SA_SIGINFO | SA_RESTART;
        /* SIGINT and SIGTERM never interrupt each other's handler: the count and the chained
         * call see one signal at a time */
        sigemptyset(&sa.sa_mask);
        sigaddset(&sa.sa_mask, SIGINT);
        sigaddset(&sa.sa_mask, SIGTERM);
        if (sigaction(nums[i], &sa, NULL) != 0) return -errno;
    }
    return 0;
}

int nh_stop_signal_count(void) {
    return atomic_load(&stop_signals);
}

_Noreturn void nh_stop_signal_exit(int signum) {
    nh_log(NH_LOG_WARN, "%s while stopping: exiting now", strsignal(signum));
    fflush(stderr);
    _exit(NH_STOP_SIGNAL_EXIT(signum));
}
