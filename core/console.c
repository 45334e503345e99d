#include "console.h"

#include <dirent.h>
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include "log.h"

typedef struct client client_t;

struct nh_console {
    uv_pipe_t pipe;
    uv_timer_t pump; /* answers lines that waited behind a reply, outside the reply's call */
    nh_console_line_fn on_line;
    void *ud;
    nh_console_t **owner;
    client_t *clients;
    int nclients, handles, closing;
    uint64_t next_id;
    char path[256];
};

struct client {
    uv_pipe_t pipe;
    nh_console_t *con;
    client_t *next;
    uint64_t id;
    char *buf; /* bytes read and not yet handed over */
    size_t len, cap;
    int busy; /* a line is with Lua, not answered yet */
    int closing;
    int writes, close_when_written; /* an error that ends the connection is sent first */
};

typedef struct {
    uv_write_t req;
    client_t *cl;
    char *data;
} wreq_t;

static void con_handle_closed(uv_handle_t *h) {
    nh_console_t *c = h->data;
    if (--c->handles == 0) free(c);
}

static void client_closed(uv_handle_t *h) {
    client_t *cl = h->data;
    nh_console_t *c = cl->con;
    free(cl->buf);
    free(cl);
    if (--c->handles == 0) free(c);
}

static void client_close(client_t *cl) {
    if (cl->closing) return;
    cl->closing = 1;
    nh_console_t *c = cl->con;
    for (client_t **p = &c->clients; *p; p = &(*p)->next)
        if (*p == cl) {
            *p = cl->next;
            break;
        }
    c->nclients--;
    uv_close((uv_handle_t *)&cl->pipe, client_closed);
}

static void on_written(uv_write_t *req, int status) {
    wreq_t *w = (wreq_t *)req;
    client_t *cl = w->cl;
    free(w->data);
    free(w);
    cl->writes--;
    if (status < 0 || (cl->close_when_written && cl->writes == 0)) client_close(cl);
}

static void send_frame(client_t *cl, int ok, const char *text, size_t len) {
    if (len > NH_CONSOLE_MAX_REPLY) len = NH_CONSOLE_MAX_REPLY;
    char head[32];
    int n = snprintf(head, sizeof head, "%s %zu\n", ok ? "ok" : "error", len);
    wreq_t *w = malloc(sizeof *w);
    char *data = w ? malloc((size_t)n + len) : NULL;
    if (!data) {
        free(w);
        client_close(cl);
        return;
    }
    memcpy(data, head, (size_t)n);
    if (len) memcpy(data + n, text, len);
    w->data = data;
    w->cl = cl;
    uv_buf_t b = uv_buf_init(data, (unsigned)((size_t)n + len));
    if (uv_write(&w->req, (uv_stream_t *)&cl->pipe, &b, 1, on_written) != 0) {
        free(data);
        free(w);
        client_close(cl);
        return;
    }
    cl->writes++;
}

/* Sends a last error, then closes once it is written. */
static void fail_client(client_t *cl, const char *msg) {
    send_frame(cl, 0, msg, strlen(msg));
    if (cl->closing) return;
    cl->close_when_written = 1;
    cl->busy = 1; /* nothing more is handed to Lua */
    uv_read_stop((uv_stream_t *)&cl->pipe);
}

/* Hands the client's next complete line to Lua, if it is not waiting for an answer. */
static void next_line(client_t *cl) {
    if (cl->busy || cl->closing) return;
    char *nl = cl->len ? memchr(cl->buf, '\n', cl->len) : NULL;
    if (!nl) {
        if (cl->len > NH_CONSOLE_MAX_LINE) fail_client(cl, "line too long");
        return;
    }
    size_t n = (size_t)(nl - cl->buf);
    size_t linelen = n > 0 && cl->buf[n - 1] == '\r' ? n - 1 : n;
    if (linelen > NH_CONSOLE_MAX_LINE) {
        fail_client(cl, "line too long");
        return;
    }
    char *line = malloc(linelen + 1);
    if (!line) {
        client_close(cl);
        return;
    }
    memcpy(line, cl->buf, linelen);
    line[linelen] = '\0';
    memmove(cl->buf, nl + 1, cl->len - n - 1);
    cl->len -= n + 1;
    cl->busy = 1;
    nh_console_t *c = cl->con;
    c->on_line(c->ud, cl->id, line, linelen); /* may answer at once (nh_console_reply) */
    free(line);
}

static void on_pump(uv_timer_t *t) {
    nh_console_t *c = t->data;
    client_t *cl = c->clients;
    while (cl) {
        client_t *next = cl->next; /* next_line may close cl */
        next_line(cl);
        cl = next;
    }
}

int nh_console_reply(nh_console_t *c, uint64_t client, int ok, const char *text, size_t len) {
    if (!c) return UV_ENOENT;
    for (client_t *cl = c->clients; cl; cl = cl->next) {
        if (cl->id != client) continue;
        if (!cl->busy) return UV_EINVAL;
        send_frame(cl, ok, text, len);
        cl->busy = 0;
        if (cl->len) uv_timer_start(&c->pump, on_pump, 0, 0);
        return 0;
    }
    return UV_ENOENT;
}

static void on_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf) {
    (void)suggested;
    client_t *cl = h->data;
    if (cl->cap - cl->len < 4096) {
        size_t cap = cl->cap ? cl->cap * 2 : 8192;
        char *b = cap <= 2 * NH_CONSOLE_MAX_LINE + 8192 ? realloc(cl->buf, cap) : NULL;
        if (!b) {
            *buf = uv_buf_init(NULL, 0); /* UV_ENOBUFS: the read callback closes */
            return;
        }
        cl->buf = b;
        cl->cap = cap;
    }
    *buf = uv_buf_init(cl->buf + cl->len, (unsigned)(cl->cap - cl->len));
}

static void on_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf) {
    (void)buf;
    client_t *cl = s->data;
    if (nread == 0) return;
    if (nread < 0) {
        if (nread == UV_ENOBUFS)
            fail_client(cl, "too much input waiting");
        else
            client_close(cl);
        return;
    }
    cl->len += (size_t)nread;
    next_line(cl);
}

/* Only the host's own user (and root) may use the console, whatever the file mode says. */
static int peer_allowed(uv_pipe_t *p) {
    uv_os_fd_t fd;
    if (uv_fileno((uv_handle_t *)p, &fd) != 0) return 0;
    struct ucred cred;
    socklen_t len = sizeof cred;
    if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &len) != 0) return 0;
    if (cred.uid == geteuid() || cred.uid == 0) return 1;
    nh_log(NH_LOG_WARN, "console: refused a connection from uid %u (pid %d)", (unsigned)cred.uid,
           (int)cred.pid);
    return 0;
}

static void on_connection(uv_stream_t *server, int status) {
    nh_console_t *c = server->data;
    if (status < 0 || c->closing) return;
    client_t *cl = calloc(1, sizeof *cl);
    if (!cl) return;
    cl->con = c;
    cl->id = ++c->next_id;
    uv_pipe_init(server->loop, &cl->pipe, 0);
    cl->pipe.data = cl;
    c->handles++;
    cl->next = c->clients;
    c->clients = cl;
    c->nclients++;
    if (uv_accept(server, (uv_stream_t *)&cl->pipe) != 0 || !peer_allowed(&cl->pipe)) {
        client_close(cl);
        return;
    }
    if (c->nclients > NH_CONSOLE_MAX_CLIENTS) {
        fail_client(cl, "too many console clients");
        return;
    }
    if (uv_read_start((uv_stream_t *)&cl->pipe, on_alloc, on_read) != 0) client_close(cl);
}

void nh_console_default_path(int pid, char *out, size_t len) {
    const char *dir = getenv("NANO_HOST_RUN_DIR");
    if (!dir || !*dir) dir = getenv("XDG_RUNTIME_DIR");
    if (!dir || !*dir) dir = "/tmp";
    snprintf(out, len, "%s/nano-host-%d.sock", dir, pid);
}

int nh_console_name_pid(const char *name) {
    int pid, n = 0;
    if (sscanf(name, "nano-host-%d.sock%n", &pid, &n) != 1 || n == 0 || name[n] != '\0' || pid <= 0)
        return -1;
    return pid;
}

int nh_console_pid_alive(int pid) {
    return pid > 0 && (kill(pid, 0) == 0 || errno == EPERM);
}

int nh_console_sweep(const char *dir) {
    DIR *d = opendir(dir);
    if (!d) return 0;
    int removed = 0;
    struct dirent *e;
    while ((e = readdir(d)) != NULL) {
        int pid = nh_console_name_pid(e->d_name);
        if (pid < 0 || nh_console_pid_alive(pid)) continue;
        char path[512];
        struct stat st;
        snprintf(path, sizeof path, "%s/%s", dir, e->d_name);
        if (lstat(path, &st) == 0 && S_ISSOCK(st.st_mode) && st.st_uid == geteuid() &&
            unlink(path) == 0)
            removed++;
    }
    closedir(d);
    return removed;
}

int nh_console_start(uv_loop_t *loop, const char *path, nh_console_line_fn on_line, void *ud,
                     nh_console_t **out) {
    if (strlen(path) >= sizeof((nh_console_t *)0)->path) return UV_ENAMETOOLONG;
    nh_console_t *c = calloc(1, sizeof *c);
    if (!c) return UV_ENOMEM;
    snprintf(c->path, sizeof c->path, "%s", path);
    c->on_line = on_line;
    c->ud = ud;
    uv_pipe_init(loop, &c->pipe, 0);
    c->pipe.data = c;
    c->handles = 1;
    /* A socket left by an earlier process of ours (same pid after a reboot, a crash): only a
     * socket we own is removed, never another file. */
    struct stat st;
    if (lstat(path, &st) == 0 && S_ISSOCK(st.st_mode) && st.st_uid == geteuid()) unlink(path);
    mode_t old = umask(0177); /* the socket is born 0600: no window before the chmod */
    int r = uv_pipe_bind(&c->pipe, path);
    umask(old);
    if (r == 0 && chmod(path, 0600) != 0) r = -errno;
    if (r == 0) r = uv_listen((uv_stream_t *)&c->pipe, 8, on_connection);
    if (r) {
        c->path[0] = '\0';
        uv_close((uv_handle_t *)&c->pipe, con_handle_closed);
        return r;
    }
    uv_timer_init(loop, &c->pump);
    c->pump.data = c;
    c->handles++;
    /* The console is no reason to keep running: the loop ends when the game's handles do. */
    uv_unref((uv_handle_t *)&c->pipe);
    uv_unref((uv_handle_t *)&c->pump);
    c->owner = out;
    *out = c;
    nh_log(NH_LOG_INFO, "console on %s (nano-host console %d)", path, (int)getpid());
    return 0;
}

const char *nh_console_path(const nh_console_t *c) {
    return c ? c->path : "";
}

void nh_console_close(nh_console_t *c) {
    if (!c || c->closing) return;
    c->closing = 1;
    if (c->owner && *c->owner == c) *c->owner = NULL;
    while (c->clients)
        client_close(c->clients);
    if (c->path[0]) unlink(c->path);
    uv_close((uv_handle_t *)&c->pump, con_handle_closed);
    uv_close((uv_handle_t *)&c->pipe, con_handle_closed);
}
