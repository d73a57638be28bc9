#include "common.h"

#include "text.h"

#include <stdarg.h>
#include <stdio.h>

static void err_vset(struct errbuf *e, bool usage, const char *fmt, va_list ap) PRINTF_LIKE(3, 0);

static void err_vset(struct errbuf *e, bool usage, const char *fmt, va_list ap)
{
	vsnprintf(e->msg, sizeof(e->msg), fmt, ap);
	e->usage = usage;
	/* Messages quote files, replies and jansson's context, cut anywhere: they go into JSON logs and answers. */
	utf8_scrub(e->msg);
}

void err_set(struct errbuf *e, const char *fmt, ...)
{
	va_list ap;

	if (!e)
		return;
	va_start(ap, fmt);
	err_vset(e, false, fmt, ap);
	va_end(ap);
}

void err_usage(struct errbuf *e, const char *fmt, ...)
{
	va_list ap;

	if (!e)
		return;
	va_start(ap, fmt);
	err_vset(e, true, fmt, ap);
	va_end(ap);
}
