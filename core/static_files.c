#include "static_files.h"

#include <ctype.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>

/* ---- mapping ---- */

const char *nh_static_content_type(const char *path) {
    static const char *const types[][2] = {
        {".html", "text/html; charset=utf-8"},
        {".htm", "text/html; charset=utf-8"},
        {".js", "text/javascript; charset=utf-8"},
        {".mjs", "text/javascript; charset=utf-8"},
        {".css", "text/css; charset=utf-8"},
        {".json", "application/json"},
        {".png", "image/png"},
        {".jpg", "image/jpeg"},
        {".jpeg", "image/jpeg"},
        {".gif", "image/gif"},
        {".svg", "image/svg+xml"},
        {".ico", "image/x-icon"},
        {".txt", "text/plain; charset=utf-8"},
        {".wasm", "application/wasm"},
    };
    const char *dot = strrchr(path, '.');
    if (dot && !strchr(dot, '/'))
        for (size_t i = 0; i < sizeof types / sizeof types[0]; i++)
            if (strcasecmp(dot, types[i][0]) == 0) return types[i][1];
    return "application/octet-stream";
}

/* Decodes %XX in place; returns -1 on a bad escape or an encoded NUL or slash. */
static int percent_decode(char *s) {
    char *o = s;
    for (char *p = s; *p; p++) {
        if (*p != '%') {
            *o++ = *p;
            continue;
        }
        if (!isxdigit((unsigned char)p[1]) || !isxdigit((unsigned char)p[2])) return -1;
        char hex[3] = {p[1], p[2], 0};
        long v = strtol(hex, NULL, 16);
        if (v == 0 || v == '/' || v == '\\') return -1;
        *o++ = (char)v;
        p += 2;
    }
    *o = '\0';
    return 0;
}

/* Rejects anything that could leave the folder: "." and ".." segments, backslashes. */
static int safe_relative(const char *rel) {
    if (strchr(rel, '\\')) return 0;
    for (const char *p = rel; *p;) {
        const char *seg = p;
        while (*p && *p != '/')
            p++;
        size_t n = (size_t)(p - seg);
        if ((n == 2 && seg[0] == '.' && seg[1] == '.') || (n == 1 && seg[0] == '.')) return 0;
        if (*p == '/') p++;
    }
    return 1;
}

int nh_static_resolve(const nh_static_dir_t *dirs, int n, const char *url_path, char *file,
                      size_t file_len, const char **redirect) {
    size_t ulen = strlen(url_path);
    for (int i = 0; i < n; i++) {
        const nh_static_dir_t *sd = &dirs[i];
        size_t plen = strlen(sd->prefix);
        if (plen > 1 && ulen == plen - 1 && strncmp(url_path, sd->prefix, plen - 1) == 0) {
            *redirect = sd->prefix; /* "/web" → "/web/" */
            return NH_STATIC_REDIRECT;
        }
        if (strncmp(url_path, sd->prefix, plen) != 0) continue;
        char rel[512];
        if (ulen - plen >= sizeof rel) return NH_STATIC_REFUSED;
        memcpy(rel, url_path + plen, ulen - plen + 1);
        if (percent_decode(rel) != 0 || !safe_relative(rel)) return NH_STATIC_REFUSED;
        size_t rl = strlen(rel);
        int w = snprintf(file, file_len, "%s/%s%s", sd->dir, rel,
                         (rl == 0 || rel[rl - 1] == '/') ? "index.html" : "");
        if (w < 0 || (size_t)w >= file_len) return NH_STATIC_REFUSED;
        return NH_STATIC_FILE;
    }
    return NH_STATIC_NONE;
}

/* ---- reading ---- */

struct nh_static_file {
    uv_fs_t req;
    uv_loop_t *loop;
    const nh_static_file_events_t *ev;
    void *ud;
    uv_file fd; /* -1 until open */
    uint64_t size, off;
    nh_buf_t *chunk; /* being read */
    int busy;        /* a request is in flight */
    int closed;      /* the owner let go */
    int eof;
    char path[];
};

static void on_closed(uv_fs_t *req) {
    nh_static_file_t *f = req->data;
    uv_fs_req_cleanup(req);
    free(f);
}

/* The owner let go and nothing is in flight: close the descriptor, then free. */
static void finish(nh_static_file_t *f) {
    if (f->fd >= 0) {
        f->busy = 1;
        if (uv_fs_close(f->loop, &f->req, f->fd, on_closed) == 0) return;
    }
    free(f);
}

static void on_stat(uv_fs_t *req) {
    nh_static_file_t *f = req->data;
    int status = (int)req->result;
    uint64_t size = req->statbuf.st_size;
    int regular = S_ISREG(req->statbuf.st_mode);
    uv_fs_req_cleanup(req);
    f->busy = 0;
    if (f->closed) {
        finish(f);
        return;
    }
    if (status >= 0 && !regular) status = UV_EISDIR; /* a folder or a device: not served */
    f->size = size;
    f->ev->on_open(f->ud, status < 0 ? status : 0, status < 0 ? 0 : size);
}

static void on_open(uv_fs_t *req) {
    nh_static_file_t *f = req->data;
    int r = (int)req->result;
    uv_fs_req_cleanup(req);
    if (r >= 0) f->fd = r;
    if (f->closed) {
        f->busy = 0;
        finish(f);
        return;
    }
    if (r >= 0) r = uv_fs_fstat(f->loop, &f->req, f->fd, on_stat);
    if (r < 0) {
        f->busy = 0;
        f->ev->on_open(f->ud, r, 0);
    }
}

int nh_static_file_open(uv_loop_t *loop, const char *path, const nh_static_file_events_t *ev,
                        void *ud, nh_static_file_t **out) {
    *out = NULL;
    size_t n = strlen(path);
    nh_static_file_t *f = calloc(1, sizeof *f + n + 1);
    if (!f) return UV_ENOMEM;
    memcpy(f->path, path, n + 1);
    f->loop = loop;
    f->ev = ev;
    f->ud = ud;
    f->fd = -1;
    f->req.data = f;
    f->busy = 1;
    int r = uv_fs_open(loop, &f->req, f->path, O_RDONLY | O_CLOEXEC, 0, on_open);
    if (r < 0) {
        uv_fs_req_cleanup(&f->req);
        free(f);
        return r;
    }
    *out = f;
    return 0;
}

static void on_read(uv_fs_t *req) {
    nh_static_file_t *f = req->data;
    ssize_t r = req->result;
    uv_fs_req_cleanup(req);
    f->busy = 0;
    nh_buf_t *b = f->chunk;
    f->chunk = NULL;
    if (f->closed) {
        nh_buf_unref(b);
        finish(f);
        return;
    }
    if (r < 0) {
        nh_buf_unref(b);
        f->ev->on_chunk(f->ud, (int)r, NULL);
        return;
    }
    b->len = (uint32_t)r;
    f->off += (uint64_t)r;
    if (r == 0) f->eof = 1;
    f->ev->on_chunk(f->ud, 0, b);
    nh_buf_unref(b);
}

int nh_static_file_read(nh_static_file_t *f, size_t max) {
    if (f->busy) return UV_EBUSY;
    if (f->eof || f->fd < 0) return UV_EOF;
    if (max == 0) max = 1;
    nh_buf_t *b = nh_buf_new(max);
    if (!b) return UV_ENOMEM;
    f->chunk = b;
    uv_buf_t iov = uv_buf_init((char *)b->data, (unsigned)max);
    f->busy = 1;
    int r = uv_fs_read(f->loop, &f->req, f->fd, &iov, 1, (int64_t)f->off, on_read);
    if (r < 0) {
        f->busy = 0;
        f->chunk = NULL;
        nh_buf_unref(b);
    }
    return r < 0 ? r : 0;
}

void nh_static_file_close(nh_static_file_t *f) {
    if (!f || f->closed) return;
    f->closed = 1;
    if (!f->busy) finish(f);
}
