/* hist.c - a log-linear histogram of nanosecond values.
 *
 * Bucket layout, with M = 2^HIST_SUB_BITS:
 *   v < M             index v (exact)
 *   v in [2^k, 2^k+1) shift = k - SUB_BITS, index = shift * M + (v >> shift)
 * v >> shift lies in [M, 2M), so consecutive powers of two get consecutive
 * runs of M buckets and the index grows with v: recording is a clz, a shift
 * and an increment; a percentile is one walk over the counts.
 */
#include "bench/bench.h"

#include <stdlib.h>
#include <string.h>

static unsigned bucket_of(uint64_t v)
{
    if (v < HIST_SUB)
        return (unsigned)v;
    unsigned k = 63u - (unsigned)__builtin_clzll(v);
    unsigned shift = k - HIST_SUB_BITS;
    return shift * HIST_SUB + (unsigned)(v >> shift);
}

/* [lo, hi] of the values that land in bucket @i. */
static void bucket_range(unsigned i, uint64_t *lo, uint64_t *hi)
{
    if (i < HIST_SUB) {
        *lo = *hi = i;
        return;
    }
    unsigned shift = i / HIST_SUB - 1;
    uint64_t mantissa = i - (uint64_t)shift * HIST_SUB;
    *lo = mantissa << shift;
    *hi = *lo + ((1ull << shift) - 1);
}

struct hist *hist_new(void)
{
    struct hist *h = calloc(1, sizeof(*h));
    if (h)
        h->min = UINT64_MAX;
    return h;
}

void hist_reset(struct hist *h)
{
    memset(h, 0, sizeof(*h));
    h->min = UINT64_MAX;
}

void hist_record(struct hist *h, uint64_t value)
{
    h->counts[bucket_of(value)]++;
    h->total++;
    h->sum += value;
    if (value < h->min)
        h->min = value;
    if (value > h->max)
        h->max = value;
}

void hist_merge(struct hist *dst, const struct hist *src)
{
    if (!src->total)
        return;
    for (unsigned i = 0; i < HIST_BUCKETS; i++)
        dst->counts[i] += src->counts[i];
    dst->total += src->total;
    dst->sum += src->sum;
    if (src->min < dst->min)
        dst->min = src->min;
    if (src->max > dst->max)
        dst->max = src->max;
}

uint64_t hist_percentile(const struct hist *h, double p)
{
    if (!h->total)
        return 0;
    if (p >= 100.0)
        return h->max;
    if (p <= 0.0)
        return h->min;
    /* The rank of the sample at p, counted from 1 (nearest-rank method). */
    uint64_t rank = (uint64_t)((p / 100.0) * (double)h->total + 0.999999999);
    if (rank < 1)
        rank = 1;
    uint64_t seen = 0;
    for (unsigned i = 0; i < HIST_BUCKETS; i++) {
        seen += h->counts[i];
        if (seen >= rank) {
            uint64_t lo, hi;
            bucket_range(i, &lo, &hi);
            uint64_t v = lo + (hi - lo) / 2;
            if (v < h->min)
                v = h->min;
            if (v > h->max)
                v = h->max;
            return v;
        }
    }
    return h->max;
}

double hist_mean(const struct hist *h)
{
    return h->total ? (double)(h->sum / h->total) : 0.0;
}
