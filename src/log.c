#include "log.h"

#include "buf.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static struct {
	enum log_format format;
	enum log_level min_level;
} logger = {LOG_TEXT, LL_INFO};

static const char *const level_text[] = {"DEBUG", "INFO ", "WARN ", "ERROR"};
static const char *const level_json[] = {"debug", "info", "warn", "error"};

void log_setup(enum log_format format, enum log_level min_level)
{
	logger.format = format;
	logger.min_level = min_level;
}

bool log_enabled(enum log_level level)
{
	return level >= logger.min_level;
}

void log_timestamp(char out[LOG_TIMESTAMP_LEN])
{
	struct timespec ts;
	struct tm tm;
	size_t n;

	clock_gettime(CLOCK_REALTIME, &ts);
	gmtime_r(&ts.tv_sec, &tm);
	n = strftime(out, LOG_TIMESTAMP_LEN, "%Y-%m-%dT%H:%M:%S", &tm);
	snprintf(out + n, LOG_TIMESTAMP_LEN - n, ".%03uZ", (unsigned)(ts.tv_nsec / 1000000) % 1000u);
}

static void write_all(int fd, const char *p, size_t n)
{
	while (n > 0) {
		ssize_t w = write(fd, p, n);

		if (w < 0 && errno == EINTR)
			continue;
		if (w <= 0)
			return; /* nowhere left to report it */
		p += w;
		n -= (size_t)w;
	}
}

void log_vmsg(enum log_level level, const char *component, const char *fmt, va_list ap)
{
	struct buf line = BUF_INIT, msg = BUF_INIT;
	char ts[LOG_TIMESTAMP_LEN];

	if (!log_enabled(level))
		return;
	log_timestamp(ts);
	buf_vprintf(&msg, fmt, ap);
	while (msg.len && msg.data[msg.len - 1] == '\n')
		msg.data[--msg.len] = '\0';

	if (logger.format == LOG_JSON) {
		buf_printf(&line, "{\"ts\":\"%s\",\"level\":\"%s\",\"component\":", ts, level_json[level]);
		buf_json_str(&line, component, strlen(component));
		buf_puts(&line, ",\"msg\":");
		buf_json_str(&line, msg.data, msg.len);
		buf_puts(&line, "}\n");
	} else {
		buf_printf(&line, "%s %s %s: %s\n", ts, level_text[level], component, msg.data);
	}
	write_all(STDERR_FILENO, line.data, line.len);
	buf_free(&line);
	buf_free(&msg);
}

void log_msg(enum log_level level, const char *component, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	log_vmsg(level, component, fmt, ap);
	va_end(ap);
}
