/* The log-linear histogram of eddy-load (see hist.h). */
#include "hist.h"

#include <math.h>
#include <string.h>

void hist_init(struct hist *h) { memset(h, 0, sizeof *h); }

unsigned hist_index(uint64_t v)
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

void hist_bounds(unsigned i, uint64_t *low, uint64_t *width)
{
    if (i < 2 * HIST_SUB) {
        *low = i;
        *width = 1;
        return;
    }
    unsigned k = i - 2 * HIST_SUB;
    unsigned shift = k / HIST_SUB + 1;
    *low = (uint64_t)(k % HIST_SUB + HIST_SUB) << shift;
    *width = (uint64_t)1 << shift;
}

void hist_record(struct hist *h, uint64_t v)
{
    h->counts[hist_index(v)]++;
    if (h->n == 0 || v < h->min)
        h->min = v;
    if (v > h->max)
        h->max = v;
    h->n++;
    h->sum += v;
}

uint64_t hist_percentile(const struct hist *h, double p)
{
    if (h->n == 0)
        return 0;
    if (p >= 100.0)
        return h->max;
    double r = ceil(p / 100.0 * (double)h->n);
    uint64_t rank = r < 1.0 ? 1 : (uint64_t)r;
    if (rank > h->n)
        rank = h->n;
    uint64_t seen = 0;
    for (unsigned i = 0; i < HIST_BUCKETS; i++) {
        seen += h->counts[i];
        if (seen < rank)
            continue;
        uint64_t low, width;
        hist_bounds(i, &low, &width);
        uint64_t v = low + (width - 1) / 2;
        if (v < h->min)
            v = h->min;
        if (v > h->max)
            v = h->max;
        return v;
    }
    return h->max;
}

double hist_mean(const struct hist *h) { return h->n ? (double)h->sum / (double)h->n : 0.0; }
