/* `nano-host console [PID|SOCKET]`: the admin console's client (the server side is console.c).
 *
 * Connects to a running host's console socket: by pid (its default path, console.h), by path,
 * or, with no argument, the only nano-host-*.sock in the run folder. In a terminal it reads
 * commands with libedit (line editing, history); otherwise it reads lines from stdin, prints each
 * answer, and exits 1 if any command failed (scripts: `echo stats | nano-host console 1234`).
 * Blocking I/O is fine here: this is a separate process, not the host's loop.
 */
#include <dirent.h>
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <editline/readline.h>

#include "console.h"

static int all_digits(const char *s) {
    if (!*s) return 0;
    for (; *s; s++)
        if (*s < '0' || *s > '9') return 0;
    return 1;
}

/* The only nano-host-<pid>.sock in the run folder, or an error saying what was found. */
static int find_only(char *out, size_t len) {
    char probe[256];
    nh_console_default_path(0, probe, sizeof probe);
    char *slash = strrchr(probe, '/');
    *slash = '\0';
    DIR *d = opendir(probe);
    int found = 0;
    if (d) {
        struct dirent *e;
        while ((e = readdir(d)) != NULL) {
            if (nh_console_pid_alive(nh_console_name_pid(e->d_name))) {
                if (found++ == 0 &&
                    (size_t)snprintf(out, len, "%.200s/%.50s", probe, e->d_name) >= len)
                    found = 2; /* cannot name it: ask for the pid */
            }
        }
        closedir(d);
    }
    if (found == 1) return 0;
    if (found)
        fprintf(stderr, "nano-host console: %d hosts in %s; name one: nano-host console PID\n",
                found, probe);
    else
        fprintf(stderr, "nano-host console: no running host found in %s\n", probe);
    return -1;
}

static int connect_to(const char *path) {
    struct sockaddr_un sa;
    memset(&sa, 0, sizeof sa);
    sa.sun_family = AF_UNIX;
    if (strlen(path) >= sizeof sa.sun_path) {
        fprintf(stderr, "nano-host console: socket path too long: %s\n", path);
        return -1;
    }
    strcpy(sa.sun_path, path);
    /* In a shared folder such as /tmp anyone can make a file by that name: talk only to a socket
     * of our own user (or root's), or the commands (and eval's code) would go to a stranger. */
    struct stat st;
    if (lstat(path, &st) == 0 &&
        (!S_ISSOCK(st.st_mode) || (st.st_uid != geteuid() && st.st_uid != 0))) {
        fprintf(
            stderr,
            "nano-host console: %s is not a socket of this user (owner uid %u); not connecting\n",
            path, (unsigned)st.st_uid);
        return -1;
    }
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0 || connect(fd, (struct sockaddr *)&sa, sizeof sa) != 0) {
        int err = errno;
        fprintf(stderr, "nano-host console: cannot connect to %s: %s%s\n", path, strerror(err),
                err == EACCES ? " (the console is for the host's own user)" : "");
        if (fd >= 0) close(fd);
        return -1;
    }
    return fd;
}

static int write_all(int fd, const char *p, size_t n) {
    while (n) {
        ssize_t w = write(fd, p, n);
        if (w < 0 && errno == EINTR) continue;
        if (w <= 0) return -1;
        p += w;
        n -= (size_t)w;
    }
    return 0;
}

static int read_byte(int fd, char *c) {
    for (;;) {
        ssize_t r = read(fd, c, 1);
        if (r < 0 && errno == EINTR) continue;
        return r == 1 ? 0 : -1;
    }
}

/* Sends one command and prints its answer; 1 ok, 0 error answer, -1 connection lost. */
static int command(int fd, const char *line, size_t n) {
    /* A host that refuses the line (too long) answers and hangs up while it is being sent:
     * read its answer even when the write failed. */
    int sent = write_all(fd, line, n) == 0 && write_all(fd, "\n", 1) == 0;
    char head[40];
    size_t h = 0;
    char c;
    while (h < sizeof head - 1) {
        if (read_byte(fd, &c)) return -1;
        if (c == '\n') break;
        head[h++] = c;
    }
    head[h] = '\0';
    char status[8];
    size_t len;
    if (sscanf(head, "%7s %zu", status, &len) != 2 || len > NH_CONSOLE_MAX_REPLY) return -1;
    int ok = sent && strcmp(status, "ok") == 0;
    char *body = malloc(len + 1);
    if (!body) return -1;
    size_t got = 0;
    while (got < len) {
        ssize_t r = read(fd, body + got, len - got);
        if (r < 0 && errno == EINTR) continue;
        if (r <= 0) {
            free(body);
            return -1;
        }
        got += (size_t)r;
    }
    FILE *out = ok ? stdout : stderr;
    if (!ok) fputs("error: ", out);
    fwrite(body, 1, len, out);
    if (len == 0 || body[len - 1] != '\n') fputc('\n', out);
    fflush(out);
    free(body);
    return ok;
}

static int blank(const char *s, size_t n) {
    for (size_t i = 0; i < n; i++)
        if (s[i] != ' ' && s[i] != '\t' && s[i] != '\r' && s[i] != '\n') return 0;
    return 1;
}

int nh_console_client_main(int argc, char **argv) {
    char path[256];
    if (argc > 1 && (strcmp(argv[1], "-h") == 0 || strcmp(argv[1], "--help") == 0)) {
        printf("usage: nano-host console [PID|SOCKET]\n"
               "Connects to a running nano-host's admin console; `help` lists the commands.\n");
        return 0;
    }
    if (argc > 2) {
        fprintf(stderr, "usage: nano-host console [PID|SOCKET]\n");
        return 2;
    }
    if (argc == 2 && all_digits(argv[1]))
        nh_console_default_path(atoi(argv[1]), path, sizeof path);
    else if (argc == 2)
        snprintf(path, sizeof path, "%s", argv[1]);
    else if (find_only(path, sizeof path) != 0)
        return 1;
    int fd = connect_to(path);
    if (fd < 0) return 1;
    signal(SIGPIPE, SIG_IGN); /* a host that hangs up is reported, not a silent death */
    int tty = isatty(0) && isatty(1);
    int failed = 0;
    if (tty) {
        printf("nano-host console on %s: `help` for commands, Ctrl-D to leave\n", path);
        using_history();
    }
    for (;;) {
        char *line = NULL;
        size_t len;
        if (tty) {
            line = readline("nano> ");
            if (!line) break;
            len = strlen(line);
            if (!blank(line, len)) add_history(line);
        } else { /* getline's length: a line may hold a NUL byte, sent as it is */
            size_t cap = 0;
            ssize_t n = getline(&line, &cap, stdin);
            if (n < 0) {
                free(line);
                break;
            }
            if (n > 0 && line[n - 1] == '\n') line[--n] = '\0';
            len = (size_t)n;
        }
        if (blank(line, len)) {
            free(line);
            continue;
        }
        if (strcmp(line, "quit") == 0 || strcmp(line, "exit") == 0) {
            free(line);
            break;
        }
        int r = command(fd, line, len);
        free(line);
        if (r < 0) {
            fprintf(stderr, "nano-host console: the host closed the connection\n");
            failed = 1;
            break;
        }
        if (r == 0) failed = 1;
    }
    close(fd);
    return tty ? 0 : failed;
}
