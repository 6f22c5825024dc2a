/* fmt.h - numbers into text without printf, for the per-request paths
 * (printf's format parsing showed in the warm path's profile). Each writes
 * at @p, which must have room, and returns the end; nothing is
 * NUL-terminated. */
#ifndef EMBER_COMMON_FMT_H
#define EMBER_COMMON_FMT_H

#include <stdint.h>
#include <string.h>

/** @n bytes of @s, as they are. */
static inline char *fmt_bytes(char *p, const char *s, size_t n)
{
    memcpy(p, s, n);
    return p + n;
}

/** A string literal, without its terminator. */
#define FMT_LIT(p, lit) fmt_bytes((p), (lit), sizeof(lit) - 1)

/** Decimal, at most 20 characters. */
static inline char *fmt_u64(char *p, uint64_t v)
{
    char tmp[20];
    int n = 0;
    do {
        tmp[n++] = (char)('0' + v % 10);
        v /= 10;
    } while (v);
    while (n)
        *p++ = tmp[--n];
    return p;
}

/** Lower-case hex, zero-padded to @width digits (0: no padding); at most
 *  16 characters. */
static inline char *fmt_hex64(char *p, uint64_t v, int width)
{
    char tmp[16];
    int n = 0;
    do {
        tmp[n++] = "0123456789abcdef"[v & 15];
        v >>= 4;
    } while (v);
    while (n < width && n < 16)
        tmp[n++] = '0';
    while (n)
        *p++ = tmp[--n];
    return p;
}

/** Nanoseconds as milliseconds with three decimals ("1.234"), rounded to
 *  the microsecond; at most 20 characters. */
static inline char *fmt_ms3(char *p, uint64_t ns)
{
    uint64_t us = (ns + 500) / 1000;
    p = fmt_u64(p, us / 1000);
    *p++ = '.';
    uint64_t frac = us % 1000;
    *p++ = (char)('0' + frac / 100);
    *p++ = (char)('0' + frac / 10 % 10);
    *p++ = (char)('0' + frac % 10);
    return p;
}

#endif
