/*
 * eddy-fiber-bench: what fibers cost.  Prints one line:
 *
 *   switch_ns=A ucontext_switch_ns=B spawn_ns=C fibers=100000 rss_per_fiber_B=D
 *
 *   switch_ns          one eddy_fiber_yield() to another fiber and back (two
 *                      switches), averaged, with the assembly switch;
 *   ucontext_switch_ns the same with the swapcontext switch (config.ucontext);
 *   spawn_ns           spawn + run to completion + join, from a warm pool;
 *   rss_per_fiber_B    resident memory per sleeping fiber with the default
 *                      stack (and guard policy), over 100,000 fibers.
 *
 * Both switch figures include the scheduler's queue and the loop iteration
 * it gets every 256 switches: what a yield costs in a real program.
 * Usage: eddy-fiber-bench [iterations]   (default 2,000,000)
 */
#define _GNU_SOURCE
#include "eddy/eddy.h"
#include "eddy/fiber.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static int64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

static void die(const char *what, int rc)
{
    fprintf(stderr, "eddy-fiber-bench: %s: %s\n", what, eddy_strerror(rc));
    exit(1);
}

static struct eddy_loop *loop_new(const struct eddy_fiber_config *cfg)
{
    struct eddy_loop *loop;
    int rc = eddy_loop_init(&loop, NULL);
    if (rc < 0)
        die("eddy_loop_init", rc);
    rc = eddy_fiber_setup(loop, cfg);
    if (rc < 0)
        die("eddy_fiber_setup", rc);
    return loop;
}

static void loop_free(struct eddy_loop *loop)
{
    int rc;
    while ((rc = eddy_fiber_teardown(loop)) == -EBUSY)
        eddy_loop_run(loop, EDDY_RUN_NOWAIT);
    if (rc < 0)
        die("eddy_fiber_teardown", rc);
    rc = eddy_loop_destroy(loop);
    if (rc < 0)
        die("eddy_loop_destroy", rc);
}

/* ---- switch ---------------------------------------------------------- */

static long iters;
static int64_t t_start, t_end;
static int finished;

static void *yielder(void *arg)
{
    (void)arg;
    if (!t_start)
        t_start = now_ns();
    for (long i = 0; i < iters; i++)
        eddy_fiber_yield();
    if (++finished == 2)
        t_end = now_ns();
    return NULL;
}

static double switch_ns(int ucontext, long n)
{
    struct eddy_fiber_config cfg = {.ucontext = ucontext};
    struct eddy_loop *loop = loop_new(&cfg);
    iters = n;
    t_start = t_end = 0;
    finished = 0;
    eddy_fiber_spawn(loop, NULL, yielder, NULL, NULL);
    eddy_fiber_spawn(loop, NULL, yielder, NULL, NULL);
    eddy_loop_run(loop, EDDY_RUN_DEFAULT);
    loop_free(loop);
    /* 2n yields in all: each fiber's yield goes to the other and comes back */
    return (double)(t_end - t_start) / (double)n;
}

/* ---- spawn ----------------------------------------------------------- */

static void *nothing(void *arg)
{
    return arg;
}

static double spawn_result;

static void *spawner(void *arg)
{
    struct eddy_loop *loop = arg;
    /* warm the pool */
    for (int i = 0; i < 1000; i++) {
        struct eddy_fiber *f;
        eddy_fiber_spawn(loop, &f, nothing, NULL, NULL);
        eddy_fiber_join(f, NULL);
    }
    int64_t t0 = now_ns();
    for (long i = 0; i < iters; i++) {
        struct eddy_fiber *f;
        int rc = eddy_fiber_spawn(loop, &f, nothing, NULL, NULL);
        if (rc < 0)
            die("spawn", rc);
        eddy_fiber_join(f, NULL);
    }
    spawn_result = (double)(now_ns() - t0) / (double)iters;
    return NULL;
}

static double spawn_ns(long n)
{
    struct eddy_loop *loop = loop_new(NULL);
    iters = n;
    eddy_fiber_spawn(loop, NULL, spawner, loop, NULL);
    eddy_loop_run(loop, EDDY_RUN_DEFAULT);
    loop_free(loop);
    return spawn_result;
}

/* ---- memory ---------------------------------------------------------- */

#define FIBERS 100000
static struct eddy_fiber_event release_ev = EDDY_FIBER_EVENT_INIT;
static int asleep;

static void *sleeper(void *arg)
{
    (void)arg;
    asleep++;
    eddy_fiber_event_wait(&release_ev);
    return NULL;
}

static long rss_bytes(void)
{
    FILE *f = fopen("/proc/self/statm", "r");
    long size = 0, rss = 0;
    if (!f || fscanf(f, "%ld %ld", &size, &rss) != 2)
        die("/proc/self/statm", -EIO);
    fclose(f);
    return rss * sysconf(_SC_PAGESIZE);
}

static void quiet_log(void *ud, int level, const char *msg)
{
    (void)ud, (void)level;
    fprintf(stderr, "eddy-fiber-bench: (log) %s\n", msg);
}

static long rss_per_fiber(void)
{
    struct eddy_loop_options o;
    eddy_loop_options_init(&o);
    o.log = quiet_log;
    struct eddy_loop *loop;
    int rc = eddy_loop_init(&loop, &o);
    if (rc < 0)
        die("eddy_loop_init", rc);
    if ((rc = eddy_fiber_setup(loop, NULL)) < 0)
        die("eddy_fiber_setup", rc);
    long before = rss_bytes();
    for (int i = 0; i < FIBERS; i++)
        if ((rc = eddy_fiber_spawn(loop, NULL, sleeper, NULL, NULL)) < 0)
            die("spawn", rc);
    while (asleep < FIBERS)
        eddy_loop_run(loop, EDDY_RUN_NOWAIT);
    long after = rss_bytes();
    eddy_fiber_event_set(&release_ev);
    loop_free(loop);
    return (after - before) / FIBERS;
}

int main(int argc, char **argv)
{
    long n = argc > 1 ? atol(argv[1]) : 2000000;
    if (n < 1000)
        n = 1000;
    double sw = switch_ns(0, n);
    double uc = switch_ns(1, n / 10);
    double sp = spawn_ns(n / 2);
    long rss = rss_per_fiber();
    printf("switch_ns=%.1f ucontext_switch_ns=%.1f spawn_ns=%.1f fibers=%d rss_per_fiber_B=%ld\n",
           sw, uc, sp, FIBERS, rss);
    return 0;
}
