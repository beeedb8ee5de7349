/*
 * The demo's loops on the runtime's loop group (eddy/group.h): one loop
 * context per main loop and one for the time service, the group's
 * callbacks, and the signal thread.
 *
 * The order of the stop.  The group's stop reaches every loop at once, but
 * requests still draining on the main loops may need the time service (an
 * upstream fetch) and the racer (a race): so the main loops drain at the
 * stop, and the last of them to finish posts the stops of the time service
 * and the racer (demo_lc_finished), which the group keeps running until then
 * (the time service by its listener, the racer by a reference of its own).
 *
 * Signals are read by a thread of their own (sigwaitinfo), not by a loop
 * (so the group does not watch them): a loop held by a blocking call
 * (/api/block) cannot read anything, and the operator's second Ctrl-C must
 * work exactly then.  Every other thread has them blocked (demo_signals_block()
 * before the group starts: its threads inherit the mask), so this thread
 * is their only reader.
 */
#include "demo.h"

#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static struct {
    struct loopctx *loops; /* cfg.threads of them; kept until exit (the signal thread) */
    struct loopctx time_lc;
    bool has_time;
    atomic_uint main_left;  /* main loops not finished yet */
    atomic_uint setups_ran; /* setups that ran ... */
    atomic_uint setups_ok;  /* ... and returned 0 */
    sigset_t signals;
    struct eddy_group *group; /* the signal thread's, until exit */
} demo;

struct loopctx *demo_lc_at(unsigned i)
{
    if (i < cfg.threads)
        return &demo.loops[i];
    return i == cfg.threads && demo.has_time ? &demo.time_lc : NULL;
}

unsigned demo_racer_index(void) { return cfg.threads + (demo.has_time ? 1 : 0); }

int demo_threads_create(void)
{
    demo.loops = calloc(cfg.threads, sizeof *demo.loops);
    if (!demo.loops)
        return -1;
    for (unsigned i = 0; i < cfg.threads; i++) {
        demo.loops[i].index = (int)i;
        demo.loops[i].lfd = -1;
    }
    demo.has_time = !cfg.time_off;
    demo.time_lc.index = -1;
    demo.time_lc.is_time = true;
    demo.time_lc.lfd = -1;
    atomic_store(&demo.main_left, cfg.threads);
    return 0;
}

/* ---- one loop's stop ------------------------------------------------------ */

/* Stops accepting and drains (once); say: see demo_serve_drain(). */
static void lc_drain(struct loopctx *lc, bool say)
{
    if (lc->stopping)
        return;
    lc->stopping = true;
    demo_serve_drain(lc, say);
}

/* The time service's stop, posted by the last main loop to finish. */
static void on_time_stop(struct eddy_op *op, int res)
{
    (void)res;
    lc_drain(eddy_container_of(op, struct loopctx, stop_op), true);
}

void demo_lc_finished(struct loopctx *lc)
{
    if (lc->offloads) {
        /* Every request is finished, but blocking calls on the pool can
         * only end by themselves (up to --timeout): do not wait for them.
         * The group then tears the loop down and leaves it (and the jobs)
         * allocated for the pool threads until the process exits. */
        fprintf(stderr, "eddy-demo: loop %d: %u worker-pool call%s still blocked; not "
                "waiting for %s\n", lc->index, lc->offloads, lc->offloads == 1 ? "" : "s",
                lc->offloads == 1 ? "it" : "them");
        lc->abandoned = true;
        eddy_loop_stop(lc->loop);
    }
    /* The time service and the racer go last (see the top of the file).
     * -ESHUTDOWN: that loop has ended already (an error of its run). */
    if (!lc->is_time && atomic_fetch_sub(&demo.main_left, 1) == 1) {
        if (demo.has_time)
            eddy_group_post(lc->group, cfg.threads, &demo.time_lc.stop_op, on_time_stop);
        demo_racer_post_stop(lc->group);
    }
}

/* ---- the group's callbacks ------------------------------------------------ */

/* Every loop logs through demo_log() (log_ud: its loopctx; NULL for the
 * racer); the main loops and the time service get --stall-ms and --pool. */
static void group_loop_options(struct eddy_group *g, unsigned i, struct eddy_loop_options *lo,
                               void *ud)
{
    (void)g;
    (void)ud;
    struct loopctx *lc = demo_lc_at(i);
    if (lc) {
        lo->stall_ms = cfg.stall_ms;
        lo->pool_threads = cfg.pool;
    }
    lo->log = demo_log; /* stderr, and stall reports for /api/stalls */
    lo->log_ud = lc;
}

static int group_setup(struct eddy_group *g, unsigned i, struct eddy_loop *loop, void *ud)
{
    (void)ud;
    atomic_fetch_add(&demo.setups_ran, 1);
    struct loopctx *lc = demo_lc_at(i);
    int rc;
    if (lc) {
        lc->group = g;
        lc->loop = loop;
        rc = demo_serve_setup(lc);
    } else {
        rc = demo_racer_setup(loop);
    }
    if (rc == 0)
        atomic_fetch_add(&demo.setups_ok, 1);
    return rc;
}

/*
 * The group's stop, on loop i's thread.  When every setup succeeded, the
 * group started (eddy_group_started): the main loops drain now, the time
 * service and the racer wait for demo_lc_finished().  Otherwise the group
 * undoes a failed start: no main loop will post, so each loop ends at once.
 */
static void group_stop(struct eddy_group *g, unsigned i, struct eddy_loop *loop, void *ud)
{
    (void)loop;
    (void)ud;
    bool started = eddy_group_started(g);
    struct loopctx *lc = demo_lc_at(i);
    if (!lc)
        demo_racer_group_stop(started);
    else if (!lc->is_time || !started)
        lc_drain(lc, started); /* nothing to report when nothing was served */
    /* else the time service's listener keeps its loop running meanwhile */
}

/* After loop i's run (or its failed setup); the group then destroys the
 * loop, or leaves it allocated when it was abandoned (demo_lc_finished). */
static void group_teardown(struct eddy_group *g, unsigned i, struct eddy_loop *loop, void *ud)
{
    (void)g;
    (void)loop;
    (void)ud;
    struct loopctx *lc = demo_lc_at(i);
    if (lc)
        demo_serve_teardown(lc);
    else
        demo_racer_teardown();
}

void demo_threads_group_options(struct eddy_group_options *go)
{
    eddy_group_options_init(go);
    go->loops = demo_racer_index() + 1;
    go->signals = 0; /* the signal thread reads them (see the top of the file) */
    go->loop_options = group_loop_options;
    go->setup = group_setup;
    go->stop = group_stop;
    go->teardown = group_teardown;
}

bool demo_threads_setup_failed(void)
{
    return atomic_load(&demo.setups_ran) != atomic_load(&demo.setups_ok);
}

int demo_threads_status(int rc)
{
    bool abandoned = false;
    int status = demo_racer_status();
    for (unsigned i = 0; i <= cfg.threads; i++) {
        struct loopctx *lc = demo_lc_at(i);
        if (lc) {
            abandoned |= lc->abandoned;
            status |= lc->rc;
        }
    }
    /* -EBUSY: a loop could not be destroyed, which an abandoned one never
     * is (its pool calls still use it). */
    if (rc == -EBUSY && !abandoned)
        fprintf(stderr, "eddy-demo: a loop was still busy at exit\n");
    else if (rc < 0 && rc != -EBUSY)
        fprintf(stderr, "eddy-demo: a loop ended with an error: %s\n", eddy_strerror(rc));
    if (rc < 0 && !(rc == -EBUSY && abandoned))
        status = 1;
    return status ? 1 : 0;
}

/* ---- signals ----------------------------------------------------------- */

static const int demo_signals[] = {SIGINT, SIGTERM, SIGHUP, SIGUSR1, SIGUSR2};

static const char *sig_name(int s)
{
    switch (s) {
    case SIGINT: return "SIGINT";
    case SIGTERM: return "SIGTERM";
    case SIGHUP: return "SIGHUP";
    case SIGUSR1: return "SIGUSR1";
    case SIGUSR2: return "SIGUSR2";
    default: return "signal";
    }
}

/* SIGUSR1, on each loop's own thread: its /stats line to stderr. */
static void on_dump_post(struct eddy_op *op, int res)
{
    (void)res;
    struct loopctx *lc = eddy_container_of(op, struct loopctx, dump_op);
    char buf[STATS_JSON_MAX];
    size_t len = demo_stats_json(lc, buf, sizeof buf);
    fprintf(stderr, "eddy-demo: stats: %.*s", (int)len, buf);
    atomic_store(&lc->dump_pending, false);
}

/* SIGUSR1: a /stats dump from every main loop and the time service still
 * running (one at a time per loop). */
static void dump_all(struct eddy_group *g)
{
    for (unsigned i = 0; i <= cfg.threads; i++) {
        struct loopctx *lc = demo_lc_at(i);
        if (lc && !atomic_exchange(&lc->dump_pending, true) &&
            eddy_group_post(g, i, &lc->dump_op, on_dump_post) < 0)
            atomic_store(&lc->dump_pending, false);
    }
}

static void *signal_main(void *arg)
{
    (void)arg;
    struct eddy_group *g = demo.group;
    bool draining = false;
    for (;;) {
        int s = sigwaitinfo(&demo.signals, NULL);
        if (s < 0)
            continue; /* EINTR */
        if (s == SIGUSR2) {
            fprintf(stderr, "eddy-demo: SIGUSR2: ignored\n");
        } else if (s == SIGUSR1) {
            dump_all(g);
        } else if (draining) {
            /* The operator's second Ctrl-C: do not make them wait, even
             * for a loop that a blocking call holds. */
            fprintf(stderr, "eddy-demo: %s again: exiting without draining\n", sig_name(s));
            _exit(1);
        } else {
            draining = true;
            fprintf(stderr, "eddy-demo: %s: draining (up to %u ms; again to exit at once)\n",
                    sig_name(s), cfg.drain_ms);
            eddy_group_stop(g);
        }
    }
    return NULL;
}

void demo_signals_block(void)
{
    sigemptyset(&demo.signals);
    for (size_t i = 0; i < sizeof demo_signals / sizeof demo_signals[0]; i++)
        sigaddset(&demo.signals, demo_signals[i]);
    pthread_sigmask(SIG_BLOCK, &demo.signals, NULL);
}

int demo_signals_start(struct eddy_group *g)
{
    pthread_t t;
    demo.group = g;
    if (pthread_create(&t, NULL, signal_main, NULL) != 0) {
        fprintf(stderr, "eddy-demo: cannot start the signal thread\n");
        return -1;
    }
    pthread_detach(t); /* it waits for signals until the process ends */
    return 0;
}
