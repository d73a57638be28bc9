/*
 * clock.h - monotonic time, sleeping and jitter.
 */
#ifndef ABILITYSYNC_CLOCK_H
#define ABILITYSYNC_CLOCK_H

#include <stdint.h>

/* Milliseconds on the monotonic clock: for deadlines and durations, never for display. */
int64_t clock_mono_ms(void);

/* Microseconds on the monotonic clock. */
int64_t clock_mono_us(void);

/* Milliseconds since the Unix epoch. */
int64_t clock_wall_ms(void);

/* Sleeps, resuming after signals, for the command-line tools (never in the event loop). */
void clock_sleep_ms(int64_t ms);

/* A uniformly random number of milliseconds in [0, max], for backoff jitter. */
uint32_t clock_jitter_ms(uint32_t max);

#endif
