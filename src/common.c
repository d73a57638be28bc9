#include "common.h"

#include "text.h"

#include <stdarg.h>
#include <stdio.h>

void err_set(struct errbuf *e, const char *fmt, ...)
{
	va_list ap;

	if (!e)
		return;
	va_start(ap, fmt);
	vsnprintf(e->msg, sizeof(e->msg), fmt, ap);
	va_end(ap);
	/* Messages quote files, replies and jansson's context, cut anywhere: they go into JSON logs and answers. */
	utf8_scrub(e->msg);
}
