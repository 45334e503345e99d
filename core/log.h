/* log — timestamped, levelled lines on stderr.
 * The level is process-wide (set once by the host from --log-level / --debug). */
#ifndef NH_LOG_H
#define NH_LOG_H

enum nh_log_level { NH_LOG_DEBUG = 0, NH_LOG_INFO, NH_LOG_WARN, NH_LOG_ERROR, NH_LOG_OFF };

void nh_log_set_level(int level);
int nh_log_get_level(void);
/* Parses "debug", "info", "warn", "error", "off"; returns -1 if unknown. */
int nh_log_parse_level(const char *name);
const char *nh_log_level_name(int level);

#if defined(__GNUC__)
__attribute__((format(printf, 2, 3)))
#endif
void nh_log(int level, const char *fmt, ...);

/* Writes `msg` as one line at `level` (used by the Lua logger). */
void nh_log_line(int level, const char *msg);

#define nh_log_enabled(level) ((level) >= nh_log_get_level())

#endif
