#include "workers.h"

#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "log.h"

#define NH_MAX_WORKERS 256

static volatile sig_atomic_t got_term, got_hup, got_alarm;

static void on_signal(int sig) {
    if (sig == SIGHUP)
        got_hup = 1;
    else if (sig == SIGALRM)
        got_alarm = 1;
    else if (sig != SIGCHLD)
        got_term++;
}

static pid_t start_worker(int i, int n, char **argv) {
    pid_t pid = fork();
    if (pid != 0) return pid; /* the parent, or -1 */
    char v[16];
    snprintf(v, sizeof v, "%d", i);
    setenv("NANO_WORKER", v, 1);
    snprintf(v, sizeof v, "%d", n);
    setenv("NANO_WORKERS", v, 1);
    sigset_t none;
    sigemptyset(&none);
    sigprocmask(SIG_SETMASK, &none, NULL);
    execv("/proc/self/exe", argv);
    fprintf(stderr, "nano-host: worker %d: cannot start: %s\n", i, strerror(errno));
    _exit(127);
}

static void signal_all(const pid_t *pids, int n, int sig) {
    for (int i = 0; i < n; i++)
        if (pids[i] > 0) kill(pids[i], sig);
}

int nh_workers_run(int n, char **argv) {
    if (n < 1 || n > NH_MAX_WORKERS) {
        fprintf(stderr, "nano-host: --workers: 1 to %d\n", NH_MAX_WORKERS);
        return 2;
    }
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_signal;
    sigemptyset(&sa.sa_mask);
    int sigs[] = {SIGTERM, SIGINT, SIGHUP, SIGCHLD, SIGALRM};
    sigset_t block, old;
    sigemptyset(&block);
    for (size_t k = 0; k < sizeof sigs / sizeof sigs[0]; k++) {
        sigaction(sigs[k], &sa, NULL);
        sigaddset(&block, sigs[k]);
    }
    /* Signals are blocked except inside sigsuspend: none is lost between a check and the wait. */
    sigprocmask(SIG_BLOCK, &block, &old);

    pid_t pids[NH_MAX_WORKERS] = {0};
    int restart[NH_MAX_WORKERS] = {0};
    time_t since[NH_MAX_WORKERS] = {0};
    int failed = 0, alive = 0, passed_terms = 0;
    for (int i = 0; i < n; i++) {
        pids[i] = start_worker(i + 1, n, argv);
        since[i] = time(NULL);
        if (pids[i] > 0) alive++;
    }
    nh_log(NH_LOG_INFO, "workers: %d started (pid %d supervises)", alive, (int)getpid());
    for (;;) {
        sigsuspend(&old);
        if (got_term > passed_terms) { /* each SIGTERM/SIGINT is passed on, the second too */
            passed_terms = got_term;
            signal_all(pids, n, SIGTERM);
        }
        if (got_hup) {
            got_hup = 0;
            nh_log(NH_LOG_INFO, "workers: reload (SIGHUP) passed to %d worker(s)", alive);
            signal_all(pids, n, SIGHUP);
        }
        int status;
        pid_t pid;
        while ((pid = waitpid(-1, &status, WNOHANG)) > 0) {
            for (int i = 0; i < n; i++) {
                if (pids[i] != pid) continue;
                pids[i] = 0;
                alive--;
                int clean = WIFEXITED(status) && WEXITSTATUS(status) == 0;
                if (got_term) { /* the exit status is the workers' at shutdown */
                    if (!clean) failed = 1;
                    break;
                }
                if (WIFEXITED(status) && time(NULL) - since[i] < 2) {
                    /* it exited by itself right after starting (a script error): no loop */
                    nh_log(NH_LOG_ERROR,
                           "workers: worker %d (pid %d) failed at start; not restarted", i + 1,
                           (int)pid);
                    continue;
                }
                nh_log(NH_LOG_WARN, "workers: worker %d (pid %d) %s %d; starting it again in 1 s",
                       i + 1, (int)pid, WIFSIGNALED(status) ? "killed by signal" : "exited with",
                       WIFSIGNALED(status) ? WTERMSIG(status) : WEXITSTATUS(status));
                restart[i] = 1;
                alarm(1);
            }
        }
        if (got_alarm && !got_term) {
            got_alarm = 0;
            for (int i = 0; i < n; i++) {
                if (!restart[i]) continue;
                restart[i] = 0;
                pids[i] = start_worker(i + 1, n, argv);
                since[i] = time(NULL);
                if (pids[i] > 0) alive++;
            }
        }
        int pending = 0;
        for (int i = 0; i < n; i++)
            pending |= restart[i];
        if (alive == 0 && (got_term || !pending)) break;
    }
    sigprocmask(SIG_SETMASK, &old, NULL);
    nh_log(NH_LOG_INFO, "workers: all stopped");
    return failed ? 1 : 0;
}
