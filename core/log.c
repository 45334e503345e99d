#include "log.h"

#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/time.h>
#include <time.h>

static int log_level = NH_LOG_INFO;
static const char *const level_names[] = {"debug", "info", "warn", "error", "off"};

void nh_log_set_level(int level) {
    log_level = level;
}
int nh_log_get_level(void) {
    return log_level;
}

int nh_log_parse_level(const char *name) {
    for (int i = 0; i <= NH_LOG_OFF; i++)
        if (strcmp(name, level_names[i]) == 0) return i;
    return -1;
}

/* ---- escaping ---- */

/* Length of the well-formed UTF-8 sequence (2..4 bytes) at s, or 0. C1 controls (U+0080..U+009F,
 * encoded C2 80..C2 9F) count as not well-formed here: terminals act on them like ESC [. */
static size_t utf8_seq(const uint8_t *s, size_t n) {
    uint8_t c = s[0];
    size_t more;
    uint8_t lo = 0x80, hi = 0xBF;
    if (c >= 0xC2 && c <= 0xDF) {
        more = 1;
        if (c == 0xC2) lo = 0xA0;
    } else if (c >= 0xE0 && c <= 0xEF) {
        more = 2;
        if (c == 0xE0) lo = 0xA0;
        if (c == 0xED) hi = 0x9F;
    } else if (c >= 0xF0 && c <= 0xF4) {
        more = 3;
        if (c == 0xF0) lo = 0x90;
        if (c == 0xF4) hi = 0x8F;
    } else {
        return 0;
    }
    if (n < more + 1 || s[1] < lo || s[1] > hi) return 0;
    for (size_t k = 2; k <= more; k++)
        if ((s[k] & 0xC0) != 0x80) return 0;
    return more + 1;
}

enum { ESC_ONE_LINE, ESC_KEEP_LINES };

typedef struct piece {
    char buf[8];
    const char *src;
    size_t len; /* bytes of output */
    size_t adv; /* bytes of input */
} piece_t;

/* The output for the character at s[0] (s has n >= 1 bytes). */
static void next_piece(const uint8_t *s, size_t n, int mode, piece_t *p) {
    static const char hex[] = "0123456789abcdef";
    static const char cont[] = "\n" NH_LOG_CONT;
    uint8_t c = s[0];
    p->src = p->buf;
    p->adv = 1;
    if (c >= 0x20 && c < 0x7F && c != '\\') {
        p->buf[0] = (char)c;
        p->len = 1;
    } else if (c == '\\') {
        p->src = mode == ESC_ONE_LINE ? "\\\\" : "\\";
        p->len = strlen(p->src);
    } else if (c == '\n' && mode == ESC_KEEP_LINES) {
        p->src = cont;
        p->len = sizeof cont - 1;
    } else if (c == '\t' && mode == ESC_KEEP_LINES) {
        p->buf[0] = '\t';
        p->len = 1;
    } else if (c == '\n' || c == '\r' || c == '\t' || c == 0 || c == 0x1B) {
        p->buf[0] = '\\';
        p->buf[1] = c == '\n' ? 'n' : c == '\r' ? 'r' : c == '\t' ? 't' : c == 0 ? '0' : 'e';
        p->len = 2;
    } else if (c >= 0x80 && (p->adv = utf8_seq(s, n)) != 0) {
        p->src = (const char *)s;
        p->len = p->adv;
    } else {
        p->adv = 1;
        p->buf[0] = '\\';
        p->buf[1] = 'x';
        p->buf[2] = hex[c >> 4];
        p->buf[3] = hex[c & 15];
        p->len = 4;
    }
}

/* Writes the escaped form of s into out (cap bytes, NUL-terminated); returns its length. Text
 * that does not fit is cut after a whole character and marked "...". */
static size_t escape(char *out, size_t cap, const uint8_t *s, size_t len, int mode) {
    piece_t p;
    if (cap == 0) return 0;
    size_t total = 0;
    for (size_t i = 0; i < len && total <= cap - 1; i += p.adv) {
        next_piece(s + i, len - i, mode, &p);
        total += p.len;
    }
    size_t limit = total <= cap - 1 ? cap - 1 : cap - 1 < 3 ? 0 : cap - 1 - 3;
    size_t o = 0;
    for (size_t i = 0; i < len; i += p.adv) {
        next_piece(s + i, len - i, mode, &p);
        if (o + p.len > limit) break;
        memcpy(out + o, p.src, p.len);
        o += p.len;
    }
    if (total > cap - 1 && cap - 1 >= 3) {
        memcpy(out + o, "...", 3);
        o += 3;
    }
    out[o] = '\0';
    return o;
}

const char *nh_log_escape(char *out, size_t cap, const void *data, size_t len) {
    escape(out, cap, data, len, ESC_ONE_LINE);
    return out;
}

/* ---- writing ---- */

static void log_write(int level, const char *msg, size_t len) {
    char text[NH_LOG_MAX_LINE];
    escape(text, sizeof text, (const uint8_t *)msg, len, ESC_KEEP_LINES);
    struct timeval tv;
    struct tm tm;
    char ts[32];
    gettimeofday(&tv, NULL);
    gmtime_r(&tv.tv_sec, &tm);
    strftime(ts, sizeof ts, "%Y-%m-%dT%H:%M:%S", &tm);
    /* One fprintf per line so that lines from a crash handler or another process don't interleave
     * mid-line. */
    fprintf(stderr, "%s.%03dZ %-5s %s\n", ts, (int)(tv.tv_usec / 1000), level_names[level], text);
}

void nh_log_text(int level, const char *msg, size_t len) {
    if (level < log_level || level >= NH_LOG_OFF) return;
    log_write(level, msg, len);
}

void nh_log_line(int level, const char *msg) {
    if (level < log_level || level >= NH_LOG_OFF) return;
    log_write(level, msg, strlen(msg));
}

void nh_log(int level, const char *fmt, ...) {
    if (level < log_level || level >= NH_LOG_OFF) return;
    char buf[2048];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(buf, sizeof buf, fmt, ap);
    va_end(ap);
    if (n < 0) n = 0;
    log_write(level, buf, (size_t)n < sizeof buf ? (size_t)n : sizeof buf - 1);
}
