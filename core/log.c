#include "log.h"

#include <stdarg.h>
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

const char *nh_log_level_name(int level) {
    return level >= 0 && level <= NH_LOG_OFF ? level_names[level] : "?";
}

static void log_write(int level, const char *msg) {
    struct timeval tv;
    struct tm tm;
    char ts[32];
    gettimeofday(&tv, NULL);
    gmtime_r(&tv.tv_sec, &tm);
    strftime(ts, sizeof ts, "%Y-%m-%dT%H:%M:%S", &tm);
    /* One fprintf per line so that lines from a crash handler or another process don't interleave
     * mid-line. */
    fprintf(stderr, "%s.%03dZ %-5s %s\n", ts, (int)(tv.tv_usec / 1000), level_names[level], msg);
}

void nh_log_line(int level, const char *msg) {
    if (level < log_level || level >= NH_LOG_OFF) return;
    log_write(level, msg);
}

void nh_log(int level, const char *fmt, ...) {
    if (level < log_level || level >= NH_LOG_OFF) return;
    char buf[2048];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(buf, sizeof buf, fmt, ap);
    va_end(ap);
    log_write(level, buf);
}
