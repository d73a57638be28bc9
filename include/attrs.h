/*
 * attrs.h - compiler attributes and ARRAY_LEN (header only: the bottom layer,
 * which even common.c's own dependencies may include).
 */
#ifndef ABILITYSYNC_ATTRS_H
#define ABILITYSYNC_ATTRS_H

#define MUSTCHECK __attribute__((warn_unused_result))
#define PRINTF_LIKE(fmt, first) __attribute__((format(printf, fmt, first)))
#define NORETURN __attribute__((noreturn))
#define ARRAY_LEN(a) (sizeof(a) / sizeof((a)[0]))

#endif
