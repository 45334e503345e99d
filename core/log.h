/* log — timestamped, levelled lines on stderr.
 * The level is process-wide (set once by the host from --log-level / --debug).
 *
 * Bytes a client chose (routes, handshake fields, HTTP paths and headers, close reasons) never
 * reach the log raw: a line break could forge a whole log entry, an ESC sequence drives the
 * operator's terminal, a NUL cuts the text short. Two layers:
 *  - call sites that log client bytes format them with nh_log_escape(): one line, every control
 *    byte visible (\n, \r, \t, \e, \0, \xHH), invalid UTF-8 as \xHH, a backslash as \\, and a
 *    length cap marked "...";
 *  - every line written (nh_log, nh_log_text) is passed through a safety net: control bytes other
 *    than newline and tab become escapes, and each newline is followed by NH_LOG_CONT, so a
 *    continuation line (a Lua traceback, a game's multi-line message, client text inside a Lua
 *    error) can never look like a new entry: every entry starts with a timestamp at column 0.
 */
#ifndef NH_LOG_H
#define NH_LOG_H

#include <stddef.h>

enum nh_log_level { NH_LOG_DEBUG = 0, NH_LOG_INFO, NH_LOG_WARN, NH_LOG_ERROR, NH_LOG_OFF };

/* Prefix of every continuation line of a multi-line entry. */
#define NH_LOG_CONT "    | "
/* Longest message text written for one entry (after escaping); the rest is cut, marked. */
#define NH_LOG_MAX_LINE 16384
/* A good buffer size for nh_log_escape(): a route or header shown in at most this much. */
#define NH_LOG_ESCAPED_MAX 256

void nh_log_set_level(int level);
int nh_log_get_level(void);
/* Parses "debug", "info", "warn", "error", "off"; returns -1 if unknown. */
int nh_log_parse_level(const char *name);

/* NH_COLD: a function that runs off a request's usual path (logging, closing a connection). The
 * compiler predicts the branches that call it as not taken and moves their code out of the
 * function around them (gcc's "cold", into .text.unlikely), so the code a request runs stays
 * dense in the instruction cache; the function itself is optimized for size. Layout only, never
 * behaviour: a close that is common (an HTTP reply without keep-alive) is one per connection,
 * not one per message. docs/benchmarks.md, thirteenth pass.
 * NH_LOG_PRINTF: printf-style argument checks on a logging function of ours (fmt: the format's
 * position, args: the first argument's), which is also cold. */
#if defined(__GNUC__)
#define NH_COLD __attribute__((cold))
#define NH_LOG_PRINTF(fmt, args) __attribute__((format(printf, fmt, args))) NH_COLD
#else
#define NH_COLD
#define NH_LOG_PRINTF(fmt, args)
#endif

void nh_log(int level, const char *fmt, ...) NH_LOG_PRINTF(2, 3);

/* Writes the `len` bytes of `msg` (NULs included, shown as \0) as one entry at `level`; used by
 * the Lua logger. Newlines start continuation lines (see above). */
void nh_log_text(int level, const char *msg, size_t len) NH_COLD;

/* Writes `msg` as one entry at `level`. */
void nh_log_line(int level, const char *msg) NH_COLD;

/* Formats untrusted bytes for a log line, NUL-terminated in out[cap] (cap >= 8): printable ASCII
 * and well-formed UTF-8 (except C1 controls) as they are, everything else escaped as described
 * above. If the escaped text does not fit, it is cut at a character boundary and ends in "...".
 * Returns out, so it can be used as a printf argument. */
const char *nh_log_escape(char *out, size_t cap, const void *data, size_t len) NH_COLD;

#define nh_log_enabled(level) ((level) >= nh_log_get_level())

#endif
