/* static_files: URL paths mapped safely below a folder, content types, and files read on a real
 * loop in chunks (a missing file, a folder, closing while a read is in flight). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "../static_files.h"
#include "check.h"

static const nh_static_dir_t dirs[] = {{"/web/", "/srv/web"}, {"/", "/srv/root"}};

static int resolve(const char *url, char *file, size_t len, const char **to) {
    return nh_static_resolve(dirs, 2, url, file, len, to);
}

static void test_paths_map_below_the_first_matching_prefix(void) {
    char file[256];
    const char *to = NULL;
    CHECK(resolve("/web/app.js", file, sizeof file, &to) == NH_STATIC_FILE);
    CHECK(strcmp(file, "/srv/web/app.js") == 0);
    CHECK(resolve("/web/", file, sizeof file, &to) == NH_STATIC_FILE);
    CHECK(strcmp(file, "/srv/web/index.html") == 0);
    CHECK(resolve("/a/b/", file, sizeof file, &to) == NH_STATIC_FILE);
    CHECK(strcmp(file, "/srv/root/a/b/index.html") == 0);
    CHECK(resolve("/sp%20ace.txt", file, sizeof file, &to) == NH_STATIC_FILE);
    CHECK(strcmp(file, "/srv/root/sp ace.txt") == 0);
    CHECK(resolve("/web", file, sizeof file, &to) == NH_STATIC_REDIRECT);
    CHECK(to && strcmp(to, "/web/") == 0);
    CHECK(nh_static_resolve(dirs, 1, "/other", file, sizeof file, &to) == NH_STATIC_NONE);
}

static void test_ways_out_of_the_folder_are_refused(void) {
    static const char *const bad[] = {
        "/../etc/passwd", "/%2e%2e/main.lua", "/..%2fmain.lua", "/web/../main.lua",
        "/web/.%2e/x",    "/a/./b",           "/a\\b",          "/%00",
        "/%zz",           "/web/%5c..%5cx"};
    char file[256];
    const char *to = NULL;
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        int r = resolve(bad[i], file, sizeof file, &to);
        if (r != NH_STATIC_REFUSED) fprintf(stderr, "not refused: %s\n", bad[i]);
        CHECK(r == NH_STATIC_REFUSED);
    }
    char tiny[12];
    CHECK(resolve("/long-name.txt", tiny, sizeof tiny, &to) == NH_STATIC_REFUSED);
}

static void test_content_types(void) {
    CHECK(strcmp(nh_static_content_type("/x/index.HTML"), "text/html; charset=utf-8") == 0);
    CHECK(strcmp(nh_static_content_type("a.js"), "text/javascript; charset=utf-8") == 0);
    CHECK(strcmp(nh_static_content_type("a.wasm"), "application/wasm") == 0);
    CHECK(strcmp(nh_static_content_type("a.d/noext"), "application/octet-stream") == 0);
}

/* ---- reading on a loop ---- */

typedef struct {
    nh_static_file_t *f;
    int opened, status, chunks, errors, close_after_first;
    uint64_t size;
    char got[70000];
    size_t got_len;
} reader_t;

static void on_open(void *ud, int status, uint64_t size) {
    reader_t *r = ud;
    r->opened++;
    r->status = status;
    r->size = size;
    if (status == 0) nh_static_file_read(r->f, 1000);
}

static void on_chunk(void *ud, int status, nh_buf_t *chunk) {
    reader_t *r = ud;
    if (status < 0) {
        r->errors++;
        return;
    }
    r->chunks++;
    if (chunk->len == 0) return; /* the end */
    if (r->got_len + chunk->len <= sizeof r->got)
        memcpy(r->got + r->got_len, chunk->data, chunk->len);
    r->got_len += chunk->len;
    if (r->close_after_first) {
        nh_static_file_read(r->f, 1000);
        nh_static_file_close(r->f); /* a read in flight: no callback may follow */
        return;
    }
    nh_static_file_read(r->f, 1000);
}

static const nh_static_file_events_t events = {on_open, on_chunk};

static void run(const char *path, reader_t *r) {
    uv_loop_t loop;
    uv_loop_init(&loop);
    CHECK(nh_static_file_open(&loop, path, &events, r, &r->f) == 0);
    CHECK(r->f != NULL);
    uv_run(&loop, UV_RUN_DEFAULT);
    if (!r->close_after_first) nh_static_file_close(r->f);
    uv_run(&loop, UV_RUN_DEFAULT); /* the descriptor's close */
    CHECK(uv_loop_close(&loop) == 0);
}

static void test_a_file_is_read_in_chunks(void) {
    char path[] = "/tmp/nh-static-XXXXXX";
    int fd = mkstemp(path);
    CHECK(fd >= 0);
    static char data[65000];
    for (size_t i = 0; i < sizeof data; i++)
        data[i] = (char)('a' + i % 26);
    CHECK(write(fd, data, sizeof data) == (ssize_t)sizeof data);
    close(fd);
    static reader_t r;
    memset(&r, 0, sizeof r);
    run(path, &r);
    CHECK(r.opened == 1 && r.status == 0 && r.size == sizeof data);
    CHECK(r.got_len == sizeof data && memcmp(r.got, data, sizeof data) == 0);
    CHECK(r.chunks == 66); /* 65 of up to 1000 bytes, then the empty end */
    CHECK(r.errors == 0);
    memset(&r, 0, sizeof r);
    r.close_after_first = 1;
    run(path, &r);
    CHECK(r.chunks == 1 && r.got_len == 1000);
    unlink(path);
}

static void test_missing_files_and_folders_are_not_opened(void) {
    static reader_t r;
    memset(&r, 0, sizeof r);
    run("/nonexistent/nh-static", &r);
    CHECK(r.opened == 1 && r.status == UV_ENOENT && r.chunks == 0);
    memset(&r, 0, sizeof r);
    run("/tmp", &r);
    CHECK(r.opened == 1 && r.status == UV_EISDIR && r.chunks == 0);
}

int main(void) {
    test_paths_map_below_the_first_matching_prefix();
    test_ways_out_of_the_folder_are_refused();
    test_content_types();
    test_a_file_is_read_in_chunks();
    test_missing_files_and_folders_are_not_opened();
    return check_done();
}
