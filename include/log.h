/*
 * log.h - one line per event on stderr: timestamp, level, component, message.
 *
 *   2026-11-23T08:30:00.123Z INFO  migrate: applied 0001_sync_schema (9 statements, 14 ms)
 *
 * With LOG_FORMAT=json every line is one JSON object with the keys ts, level,
 * component and msg. Each line goes out in a single write(2), so lines from
 * several processes sharing a terminal or a pipe never interleave.
 *
 * The format and level are set once by main() before anything else runs and
 * are the only process-wide state this module keeps.
 */
#ifndef ABILITYSYNC_LOG_H
#define ABILITYSYNC_LOG_H

#include "common.h"

#include <stdarg.h>

enum log_level { LL_DEBUG, LL_INFO, LL_WARN, LL_ERROR };
enum log_format { LOG_TEXT, LOG_JSON };

void log_setup(enum log_format format, enum log_level min_level);
bool log_enabled(enum log_level level);

void log_msg(enum log_level level, const char *component, const char *fmt, ...) PRINTF_LIKE(3, 4);
void log_vmsg(enum log_level level, const char *component, const char *fmt, va_list ap) PRINTF_LIKE(3, 0);

#define log_debug(comp, ...) do { if (log_enabled(LL_DEBUG)) log_msg(LL_DEBUG, comp, __VA_ARGS__); } while (0)
#define log_info(comp, ...) log_msg(LL_INFO, comp, __VA_ARGS__)
#define log_warn(comp, ...) log_msg(LL_WARN, comp, __VA_ARGS__)
#define log_error(comp, ...) log_msg(LL_ERROR, comp, __VA_ARGS__)

#define LOG_TIMESTAMP_LEN 32

/* Formats the current UTC time as 2026-11-23T08:30:00.123Z. */
void log_timestamp(char out[LOG_TIMESTAMP_LEN]);

#endif
