/* Shared between load.c and svg.c. */
#ifndef EDDY_LOAD_H
#define EDDY_LOAD_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

/*
 * One finished request, 12 bytes: start and duration in µs from the start
 * of the run (uint32: 71 minutes), the worker (the timeline row) and the
 * outcome: the HTTP status, or a negative errno.
 */
struct rec {
    uint32_t start_us;
    uint32_t dur_us;
    uint16_t worker;
    int16_t outcome;
};

struct timeline {
    const char *url;
    const struct rec *recs;
    size_t nrecs;     /* stored (the first ones to finish) */
    uint64_t total;   /* requests finished in the run */
    unsigned workers; /* rows */
    double duration_s;
    double rps;
    double p50_ms, p99_ms;
    uint64_t ok2xx, other_status, errors;
};

/* Writes the timeline as SVG to out.  0, -ENOMEM or -EIO. */
int svg_timeline(FILE *out, const struct timeline *t);

#endif
