/* workers — `nano-host --workers N main.lua`: every core of a machine.
 *
 * The parent runs no game: it starts N nano-host processes with the same arguments (less
 * --workers) and NANO_WORKER=1..N, NANO_WORKERS=N in their environment, and supervises them:
 *   SIGHUP            is passed to every worker (each reloads its scripts)
 *   SIGTERM, SIGINT   are passed to every worker; the parent exits when all have, with status 0
 *                     if every worker exited 0, else 1; a second one is passed on as well
 *   a worker that dies otherwise is started again after a second (logged), so a crash costs
 *   that worker's players their connection, never the others'.
 * Workers share their listening ports: with NANO_WORKERS set, listeners bind with SO_REUSEPORT
 * and the kernel spreads new connections over them. State is per process: workers meet through
 * the cluster (nano.cluster on a NATS server the script names).
 */
#ifndef NH_WORKERS_H
#define NH_WORKERS_H

/* Runs the supervisor; argv is the child's command line (argv[0] is ignored: the running binary
 * is started again). Returns the exit status. */
int nh_workers_run(int n, char **argv);

#endif
