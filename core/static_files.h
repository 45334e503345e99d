/* static_files — files below a listener's static folders: which file a URL path names (safely),
 * its content type, and reading it without blocking the loop.
 *
 * Mapping (nh_static_resolve) is pure: a URL path under a folder's prefix names a file below the
 * folder; "%XX" escapes are decoded, and a path that could leave the folder ("..", ".", an encoded
 * slash or NUL, a backslash) names nothing. A folder's prefix without its slash ("/web") is a
 * redirect to it ("/web/"), so relative links resolve; a path ending in "/" names index.html.
 * Symbolic links inside a folder are followed (the folder is the operator's).
 *
 * Reading (nh_static_file_*) runs on libuv's fs requests (the thread pool): open + fstat, then
 * one chunk per nh_static_file_read, each in a fresh refcounted buffer that the caller may queue
 * by reference. The caller decides when to read the next chunk (when its output queue has room),
 * so a big file never sits in memory whole. The object owns itself: nh_static_file_close may be
 * called at any time, even while a request is in flight; no callback comes after it, and the
 * memory and descriptor go when the last request has finished.
 */
#ifndef NH_STATIC_FILES_H
#define NH_STATIC_FILES_H

#include <stddef.h>
#include <stdint.h>
#include <uv.h>

#include "buffer.h"

typedef struct nh_static_dir {
    char prefix[128]; /* URL prefix, e.g. "/web/" */
    char dir[1024];   /* filesystem folder */
} nh_static_dir_t;

enum nh_static_match {
    NH_STATIC_NONE,     /* under no folder's prefix */
    NH_STATIC_REDIRECT, /* the prefix without its slash: *redirect is where to (the prefix) */
    NH_STATIC_REFUSED,  /* under a prefix, but a bad escape or a way out of the folder */
    NH_STATIC_FILE,     /* `file` holds the path to open (it may not exist) */
};

/* Maps url_path (no query) to a file below one of the n folders (the first prefix that matches).
 * Returns an enum nh_static_match. */
int nh_static_resolve(const nh_static_dir_t *dirs, int n, const char *url_path, char *file,
                      size_t file_len, const char **redirect);

/* The Content-Type for a file name, by extension ("application/octet-stream" when unknown). */
const char *nh_static_content_type(const char *path);

typedef struct nh_static_file nh_static_file_t;

typedef struct nh_static_file_events {
    /* The file is open: status 0 and its size, or a negative uv error (missing, not a regular
     * file, unreadable); after an error only nh_static_file_close is allowed. */
    void (*on_open)(void *ud, int status, uint64_t size);
    /* A chunk (status 0, chunk->len bytes; 0 bytes at the end of the file) or a read error
     * (status < 0, chunk NULL). The chunk is released after the call: take a reference to keep
     * it. */
    void (*on_chunk)(void *ud, int status, nh_buf_t *chunk);
} nh_static_file_events_t;

/* Starts opening `path`: on_open follows, from the loop. Returns 0 and the file in *out, or a
 * negative uv error (out of memory; nothing started, no callback). */
int nh_static_file_open(uv_loop_t *loop, const char *path, const nh_static_file_events_t *ev,
                        void *ud, nh_static_file_t **out);
/* Reads the next chunk of at most `max` bytes. 0, UV_EBUSY while a request is in flight,
 * UV_EOF past the end, or another negative uv error. */
int nh_static_file_read(nh_static_file_t *f, size_t max);
/* No more callbacks; frees itself (closing the descriptor) once nothing is in flight. */
void nh_static_file_close(nh_static_file_t *f);

#endif
