/* test_fmt.c - common/fmt.h against printf, which it replaces on the
 * per-request paths (Server-Timing, invocation ids, Content-Length). */
#include <criterion/criterion.h>
#include <inttypes.h>
#include <stdio.h>
#include <string.h>

#include "common/fmt.h"

static const uint64_t samples[] = {
    0,    1,      9,      10,      15,        16,         999,        1000,           4095,
    4096, 999499, 999500, 1000000, 123456789, UINT32_MAX, 1ull << 53, UINT64_MAX - 1, UINT64_MAX};

Test(fmt, decimal_and_hex_match_printf)
{
    for (size_t i = 0; i < sizeof(samples) / sizeof(samples[0]); i++) {
        uint64_t v = samples[i];
        char got[32], want[32];
        *fmt_u64(got, v) = '\0';
        snprintf(want, sizeof(want), "%" PRIu64, v);
        cr_expect_str_eq(got, want);
        *fmt_hex64(got, v, 0) = '\0';
        snprintf(want, sizeof(want), "%" PRIx64, v);
        cr_expect_str_eq(got, want);
        *fmt_hex64(got, v, 16) = '\0';
        snprintf(want, sizeof(want), "%016" PRIx64, v);
        cr_expect_str_eq(got, want);
    }
}

Test(fmt, milliseconds_with_three_decimals)
{
    for (size_t i = 0; i < sizeof(samples) / sizeof(samples[0]); i++) {
        uint64_t ns = samples[i] > UINT64_MAX - 500 ? UINT64_MAX - 500 : samples[i];
        char got[32], want[32];
        *fmt_ms3(got, ns) = '\0';
        uint64_t us = (ns + 500) / 1000;
        snprintf(want, sizeof(want), "%" PRIu64 ".%03" PRIu64, us / 1000, us % 1000);
        cr_expect_str_eq(got, want);
    }
    char buf[32];
    *fmt_ms3(buf, 1234567) = '\0';
    cr_expect_str_eq(buf, "1.235");
    *fmt_ms3(buf, 499) = '\0';
    cr_expect_str_eq(buf, "0.000");
    *fmt_ms3(buf, 42000) = '\0';
    cr_expect_str_eq(buf, "0.042");
}

Test(fmt, bytes_and_literals_join)
{
    char buf[32];
    char *p = FMT_LIT(buf, "run;dur=");
    p = fmt_ms3(p, 1500000);
    p = fmt_bytes(p, ", x", 3);
    *p = '\0';
    cr_expect_str_eq(buf, "run;dur=1.500, x");
}
