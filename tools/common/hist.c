/* The log-linear histogram of eddy-load and eddy-demo (see hist.h). */
#include "hist.h"

#include <stdbool.h>
#include <string.h>

void hist_init(struct hist *h) { memset(h, 0, sizeof *h); }

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

/*
 * The bucket holding the ceil(p% * n)-th smallest value (h not empty,
 * p < 100): its index, that rank, and how many values lie in the buckets
 * below it.  p * n / 100 rather than p / 100 * n: exact for a whole p.
 */
static unsigned rank_bucket(const struct hist *h, double p, uint64_t *rank, uint64_t *below)
{
    double want = p * (double)h->n / 100;
    uint64_t r = (uint64_t)want, seen = 0;
    if ((double)r < want || r == 0)
        r++; /* ceil, at least the first */
    if (r > h->n)
        r = h->n;
    unsigned i = 0;
    for (; i < HIST_BUCKETS - 1 && seen + h->counts[i] < r; i++)
        seen += h->counts[i];
    *rank = r;
    *below = seen;
    return i;
}

uint64_t hist_percentile(const struct hist *h, double p)
{
    if (h->n == 0)
        return 0;
    if (p >= 100.0)
        return h->max;
    uint64_t rank, below, low, width;
    hist_bounds(rank_bucket(h, p, &rank, &below), &low, &width);
    uint64_t v = low + (width - 1) / 2;
    if (v < h->min)
        v = h->min;
    if (v > h->max)
        v = h->max;
    return v;
}

double hist_percentile_interp(const struct hist *h, double p)
{
    if (h->n == 0)
        return 0;
    if (p >= 100)
        return (double)h->max;
    uint64_t rank, below, low, width;
    unsigned i = rank_bucket(h, p, &rank, &below);
    hist_bounds(i, &low, &width);
    bool has_min = h->min >= low, has_max = h->max < low + width;
    double lo = (double)(has_min ? h->min : low);
    double hi = (double)(has_max ? h->max : low + width - 1);
    double k = (double)(rank - below), c = (double)h->counts[i];
    double a = has_min ? 0 : 0.5, steps = c - 1 + a + (has_max ? 0 : 0.5);
    return steps > 0 ? lo + (hi - lo) * (k - 1 + a) / steps : lo;
}

double hist_mean(const struct hist *h) { return h->n ? (double)h->sum / (double)h->n : 0.0; }
