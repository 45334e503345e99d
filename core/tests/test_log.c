/* test_log — escaping of client-chosen bytes (nh_log_escape) and the safety net every log entry
 * goes through: no byte sequence can start a second entry, reach the terminal as a control
 * sequence, or cut the text short. */
#include "log.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "check.h"

static const char *esc(const void *data, size_t len, size_t cap) {
    static char out[1024];
    return nh_log_escape(out, cap, data, len);
}

#define ESC(lit) esc(lit, sizeof(lit) - 1, 256)

static void test_escape(void) {
    CHECK(strcmp(ESC("Room.join"), "Room.join") == 0);
    /* a route that would write a fake entry */
    CHECK(strcmp(ESC("a\n2026-01-01T00:00:00.000Z error x"),
                 "a\\n2026-01-01T00:00:00.000Z error x") == 0);
    CHECK(strcmp(ESC("a\rb\tc"), "a\\rb\\tc") == 0);
    CHECK(strcmp(ESC("\x1b[2J\x1b]0;x\x07"), "\\e[2J\\e]0;x\\x07") == 0);
    /* a NUL does not cut the text */
    CHECK(strcmp(ESC("abc\0def"), "abc\\0def") == 0);
    CHECK(strcmp(ESC("\x7f\x01"), "\\x7f\\x01") == 0);
    /* a backslash is doubled, so an escape in the output always means a byte in the input */
    CHECK(strcmp(ESC("a\\nb"), "a\\\\nb") == 0);
    /* well-formed UTF-8 is kept; invalid bytes, overlongs, surrogates and C1 controls are not */
    CHECK(strcmp(ESC("caf\xc3\xa9 \xe2\x82\xac \xf0\x9f\x98\x80"),
                 "caf\xc3\xa9 \xe2\x82\xac \xf0\x9f\x98\x80") == 0);
    CHECK(strcmp(ESC("\xff\xfe"), "\\xff\\xfe") == 0);
    CHECK(strcmp(ESC("\xc0\xaf"), "\\xc0\\xaf") == 0);
    CHECK(strcmp(ESC("\xed\xa0\x80"), "\\xed\\xa0\\x80") == 0);
    CHECK(strcmp(ESC("\xc2\x9b"
                     "2J"),
                 "\\xc2\\x9b2J") == 0);
    CHECK(strcmp(ESC("\xe2\x82"), "\\xe2\\x82") == 0); /* truncated sequence */
}

static void test_cap(void) {
    char big[5000];
    memset(big, 'r', sizeof big);
    const char *o = esc(big, sizeof big, 64);
    CHECK(strlen(o) == 63);
    CHECK(strcmp(o + 60, "...") == 0);
    /* exactly fitting text is not marked */
    o = esc(big, 63, 64);
    CHECK(strlen(o) == 63 && o[62] == 'r');
    /* an escape is never cut in half */
    char nl[100];
    memset(nl, '\n', sizeof nl);
    o = esc(nl, sizeof nl, 16);
    CHECK(strcmp(o, "\\n\\n\\n\\n\\n\\n...") == 0);
    /* nor a UTF-8 character */
    o = esc("ab\xe2\x82\xac\xe2\x82\xacx", 9, 9);
    CHECK(strcmp(o, "ab\xe2\x82\xac...") == 0);
    o = esc("abc", 3, 1);
    CHECK(o[0] == '\0');
}

/* Entries written to stderr, captured through a temporary file. */
static char *capture(void (*write_fn)(void)) {
    fflush(stderr);
    int saved = dup(2);
    FILE *tmp = tmpfile();
    if (saved < 0 || !tmp) abort();
    dup2(fileno(tmp), 2);
    write_fn();
    fflush(stderr);
    dup2(saved, 2);
    close(saved);
    long n = ftell(tmp);
    char *text = calloc(1, (size_t)n + 1);
    rewind(tmp);
    if (!text || fread(text, 1, (size_t)n, tmp) != (size_t)n) abort();
    fclose(tmp);
    return text;
}

static void write_forged(void) {
    static const char msg[] =
        "handler not found: x\n2026-01-01T00:00:00.000Z error FORGED\x1b[31m\0tail";
    nh_log_text(NH_LOG_WARN, msg, sizeof msg - 1);
    nh_log(NH_LOG_WARN, "route=%s", "y\r\n2026-01-01T00:00:00.000Z error FORGED2");
}

static void test_safety_net(void) {
    char *out = capture(write_forged);
    /* two entries, each starting with a timestamp; every other line is a marked continuation */
    int entries = 0, lines = 0;
    for (char *line = strtok(out, "\n"); line; line = strtok(NULL, "\n")) {
        lines++;
        if (strncmp(line, NH_LOG_CONT, strlen(NH_LOG_CONT)) == 0) continue;
        entries++;
        CHECK(line[4] == '-' && line[10] == 'T' && strstr(line, " warn  ") == line + 24);
    }
    CHECK(entries == 2);
    CHECK(lines == 4);
    free(out);
    out = capture(write_forged);
    CHECK(strchr(out, '\x1b') == NULL);
    CHECK(strchr(out, '\r') == NULL);
    CHECK(strstr(out, "FORGED\\e[31m\\0tail") != NULL); /* the NUL did not cut the entry */
    free(out);
}

int main(void) {
    test_escape();
    test_cap();
    test_safety_net();
    return check_done();
}
