/* clock.h - monotonic and wall time in the units ember reports. */
#ifndef EMBER_COMMON_CLOCK_H
#define EMBER_COMMON_CLOCK_H

#include <stdint.h>
#include <time.h>

/** Monotonic nanoseconds (CLOCK_MONOTONIC). */
static inline uint64_t ember_now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

/** Wall-clock milliseconds since the Unix epoch. */
static inline int64_t ember_wall_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

#endif
