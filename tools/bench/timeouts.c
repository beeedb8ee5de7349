/*
 * bench-timeouts: what a connection timeout costs when it is reset on every
 * request, the two ways a server can keep them:
 *
 *   kernel  one IORING_OP_TIMEOUT per connection, moved with
 *           eddy_timer_update() on every request (an SQE each, TIMEOUT_UPDATE
 *           or cancel + re-arm);
 *   sweep   what proto/src/server.c does: per-state FIFO lists that share
 *           one timeout, a move to the tail on every request, one repeating
 *           timer per server popping the expired heads.
 *
 * It resets N connections' timeouts M times, round robin, and prints the
 * CPU time per reset (user + system, getrusage) for each and the ratio.
 *   bench-timeouts [connections] [resets]     (defaults 10000, 2000000)
 */
#define _GNU_SOURCE
#include "eddy/eddy.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>

static double cpu_s(void)
{
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return (double)ru.ru_utime.tv_sec + ru.ru_utime.tv_usec / 1e6 +
           (double)ru.ru_stime.tv_sec + ru.ru_stime.tv_usec / 1e6;
}

static int fired;

static void timer_cb(struct eddy_op *op, int res)
{
    (void)op;
    if (res == 0)
        fired++;
}

static double bench_kernel(unsigned n, unsigned m, unsigned *feature)
{
    struct eddy_loop *loop;
    struct eddy_loop_options o;
    eddy_loop_options_init(&o);
    o.entries = 4096;
    if (eddy_loop_init(&loop, &o) < 0) {
        fprintf(stderr, "eddy_loop_init failed\n");
        exit(1);
    }
    *feature = eddy_loop_features(loop) & EDDY_FEAT_TIMEOUT_UPDATE;
    struct eddy_op *ops = calloc(n, sizeof *ops);
    for (unsigned i = 0; i < n; i++)
        eddy_timer(loop, &ops[i], 60000, timer_cb);
    eddy_loop_run(loop, EDDY_RUN_NOWAIT);
    double t0 = cpu_s();
    for (unsigned k = 0; k < m; k++) {
        while (eddy_timer_update(loop, &ops[k % n], 60000) == -EAGAIN)
            eddy_loop_run(loop, EDDY_RUN_NOWAIT);
        if ((k & 63) == 63) /* a loop iteration every 64 requests */
            eddy_loop_run(loop, EDDY_RUN_NOWAIT);
    }
    eddy_loop_run(loop, EDDY_RUN_NOWAIT);
    double dt = cpu_s() - t0;
    for (unsigned i = 0; i < n; i++)
        eddy_cancel(loop, &ops[i]);
    eddy_loop_run(loop, EDDY_RUN_DEFAULT);
    eddy_loop_destroy(loop);
    free(ops);
    return dt;
}

struct node {
    struct node *next, *prev;
    int64_t since;
};

static double bench_sweep(unsigned n, unsigned m)
{
    struct node *nodes = calloc(n, sizeof *nodes);
    struct node head = {&head, &head, 0};
    for (unsigned i = 0; i < n; i++) {
        nodes[i].prev = head.prev;
        nodes[i].next = &head;
        head.prev->next = &nodes[i];
        head.prev = &nodes[i];
    }
    struct timespec ts;
    double t0 = cpu_s();
    int64_t now = 0;
    for (unsigned k = 0; k < m; k++) {
        if ((k & 63) == 0) { /* the loop's cached clock, once per iteration */
            clock_gettime(CLOCK_MONOTONIC, &ts);
            now = (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
        }
        struct node *c = &nodes[k % n];
        c->prev->next = c->next;
        c->next->prev = c->prev;
        c->since = now;
        c->prev = head.prev;
        c->next = &head;
        head.prev->next = c;
        head.prev = c;
        /* the sweep: nothing has expired at the head (60 s timeout) */
        if ((k & 1023) == 0 && head.next != &head && now - head.next->since > 60000000000LL)
            fired++;
    }
    double dt = cpu_s() - t0;
    free(nodes);
    return dt;
}

int main(int argc, char **argv)
{
    unsigned n = argc > 1 ? (unsigned)strtoul(argv[1], NULL, 10) : 10000;
    unsigned m = argc > 2 ? (unsigned)strtoul(argv[2], NULL, 10) : 2000000;
    if (n == 0 || m == 0) {
        fprintf(stderr, "usage: bench-timeouts [connections] [resets]\n");
        return 1;
    }
    unsigned feat;
    double k = bench_kernel(n, m, &feat);
    double s = bench_sweep(n, m);
    printf("timeout resets: %u connections, %u resets\n", n, m);
    printf("  kernel timer per connection (%s): %8.1f ns CPU per reset\n",
           feat ? "IORING_TIMEOUT_UPDATE" : "cancel + re-arm", k * 1e9 / m);
    printf("  per-state lists + one sweep timer:   %8.1f ns CPU per reset\n", s * 1e9 / m);
    printf("  ratio kernel/sweep: %.0fx\n", s > 0 ? k / s : 0.0);
    return 0;
}
