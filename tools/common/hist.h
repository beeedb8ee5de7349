/*
 * A log-linear latency histogram (HDR style), in microseconds, shared by
 * eddy-load (tools/load) and eddy-demo (apps/demo): the static library
 * eddy_hist, which depends on nothing but libc and libm.
 *
 * Values below 2 * HIST_SUB are counted exactly (1 µs buckets).  Above,
 * each power-of-two range [2^e, 2^(e+1)) is split into HIST_SUB linear
 * buckets of width 2^(e - HIST_SUB_BITS), so a bucket is never wider than
 * 1/32 of its lower bound.  The range ends at 2^32 µs (71 minutes); larger
 * values land in the last bucket (the exact minimum and maximum are kept
 * apart).  Fixed size (7 KiB), no allocation, O(1) record.  Not
 * thread-safe: one writer, or the caller's lock.
 */
#ifndef EDDY_HIST_H
#define EDDY_HIST_H

#include <stdint.h>

#define HIST_SUB_BITS 5
#define HIST_SUB (1u << HIST_SUB_BITS)
#define HIST_MAX_EXP 32 /* values < 2^HIST_MAX_EXP are placed exactly */
#define HIST_BUCKETS (2 * HIST_SUB + (HIST_MAX_EXP - HIST_SUB_BITS - 1) * HIST_SUB)

struct hist {
    uint64_t counts[HIST_BUCKETS];
    uint64_t n;        /* values recorded */
    uint64_t sum;      /* their sum (for the mean) */
    uint64_t min, max; /* exact */
};

/* Empties h (a zeroed struct hist is empty too). */
void hist_init(struct hist *h);
/* The bounds [low, low + width) of bucket i. */
void hist_bounds(unsigned i, uint64_t *low, uint64_t *width);

/* The bucket of v.  Inline with hist_record: a server records every
 * request's latency on its hot path (eddy-demo's routes). */
static inline unsigned hist_index(uint64_t v)
{
    if (v < 2 * HIST_SUB)
        return (unsigned)v;
    if (v >> HIST_MAX_EXP)
        return HIST_BUCKETS - 1;
    unsigned e = 63u - (unsigned)__builtin_clzll(v); /* >= HIST_SUB_BITS + 1 */
    unsigned shift = e - HIST_SUB_BITS;
    unsigned sub = (unsigned)(v >> shift); /* HIST_SUB .. 2 * HIST_SUB - 1 */
    return 2 * HIST_SUB + (e - HIST_SUB_BITS - 1) * HIST_SUB + (sub - HIST_SUB);
}

/* Counts v. */
static inline void hist_record(struct hist *h, uint64_t v)
{
    h->counts[hist_index(v)]++;
    if (h->n == 0 || v < h->min)
        h->min = v;
    if (v > h->max)
        h->max = v;
    h->n++;
    h->sum += v;
}
/*
 * The value at percentile p (0 < p <= 100), both readings taking the
 * ceil(p% * n)-th smallest value; p >= 100 gives max, an empty histogram 0.
 *
 * hist_percentile: the midpoint of that value's bucket, clamped to
 * [min, max]: within 1/64 (1.6 %) of a value actually recorded.
 *
 * hist_percentile_interp: interpolated linearly among the c values of the
 * bucket, spread evenly over the bucket's range narrowed to [min, max] (an
 * end that is the exact min or max holds a value; an open end is half a
 * step away), so values all in one bucket read between their min and max.
 */
uint64_t hist_percentile(const struct hist *h, double p);
double hist_percentile_interp(const struct hist *h, double p);
double hist_mean(const struct hist *h);

#endif
