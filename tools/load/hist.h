/*
 * A log-linear latency histogram (HDR style), in microseconds.
 *
 * Values below 2 * HIST_SUB are counted exactly (1 µs buckets).  Above,
 * each power-of-two range [2^e, 2^(e+1)) is split into HIST_SUB linear
 * buckets of width 2^(e - HIST_SUB_BITS), so a bucket is never wider than
 * 1/32 of its lower bound: a percentile read from it (its midpoint) is
 * within 1/64 (1.6 %) of a value actually recorded.  The range ends at
 * 2^32 µs (71 minutes); larger values land in the last bucket (the exact
 * maximum is kept apart).  Fixed size (7 KiB), no allocation, O(1) record.
 */
#ifndef EDDY_LOAD_HIST_H
#define EDDY_LOAD_HIST_H

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

void hist_init(struct hist *h);
void hist_record(struct hist *h, uint64_t v);
/* The bucket of v, and the bounds [low, low + width) of bucket i. */
unsigned hist_index(uint64_t v);
void hist_bounds(unsigned i, uint64_t *low, uint64_t *width);
/* The value at percentile p (0 < p <= 100): the midpoint of the bucket
 * holding the ceil(p% * n)-th smallest value, clamped to [min, max];
 * p = 100 gives max.  0 when empty. */
uint64_t hist_percentile(const struct hist *h, double p);
double hist_mean(const struct hist *h);

#endif
