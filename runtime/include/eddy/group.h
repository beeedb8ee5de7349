/*
 * eddy loop groups: thread-per-core in one call.
 *
 * A group is N loops, each on a thread of its own that the group creates
 * (optionally pinned to a CPU), started together and stopped together:
 *
 *   start     every thread creates its loop and calls your setup(); only
 *             when every setup has returned 0 does any loop run (the ready
 *             barrier).  If one loop's creation or setup fails, none
 *             serves: the others are stopped and torn down as below, every
 *             thread is joined, and eddy_group_start() returns that error.
 *   run       each loop runs until it is stopped and its work is done.
 *   stop      eddy_group_stop(), from any thread or a signal handler, or
 *             SIGINT/SIGTERM when the group watches them: every loop runs
 *             your stop() once on its own thread; that callback ends what
 *             keeps the loop busy (cancel accepts, shut servers down, close
 *             connections) and the loop runs on until nothing is active.
 *   teardown  on each loop's thread, after its run: your teardown() frees
 *             what setup built on the loop (servers, pools), then the group
 *             destroys the loop.
 *   join      eddy_group_join() waits for every thread; eddy_group_destroy()
 *             frees the group.
 *
 * Threads and callbacks.  setup, stop and teardown of loop i run on loop
 * i's thread, in that order, each at most once: setup for every loop
 * created (once the group watches the signals, with o->signals),
 * teardown for every loop whose setup ran (also when it failed), stop for
 * every loop whose setup returned 0.  Until its stop callback a loop is
 * kept running even with nothing active (a eddy_loop_ref() that the stop
 * takes back), so other threads may post to it; after it, the loop ends as
 * soon as it has no active operation.  The group owns the loops: it
 * creates and destroys them; do not call eddy_loop_run() or
 * eddy_loop_destroy() on one (eddy_loop_stop() abandons it: see
 * eddy_group_join()).
 *
 * Sharing io-wq.  On io_uring, loop 0 has its own io-wq (the kernel's
 * worker threads for work that cannot complete inline) and every other
 * loop is created attached to it (eddy_loop_options.attach_wq, 5.6); with
 * iowq_max_workers every ring caps it (eddy_loop_options.iowq_max_workers,
 * 5.15; an older kernel keeps its defaults and the loop logs that at info
 * level).  Since 5.12 io-wq belongs to each submitting thread, so there
 * the attach is only checked by the kernel and the cap is what bounds the
 * workers.  On epoll there is no io-wq: each loop's blocking work (regular
 * files, eddy_work) runs on its own worker pool, whose size
 * (loop.pool_threads, default 4) is the cap.
 *
 * Errors: 0 or a negative errno, as everywhere in eddy.
 */
#ifndef EDDY_GROUP_H
#define EDDY_GROUP_H

#include "eddy/eddy.h"

#ifdef __cplusplus
extern "C" {
#endif

struct eddy_group;

/*
 * setup: on loop index's thread, after the loop is created, before it
 * runs.  Build what the loop serves (a server on a listener of your own,
 * timers, accepts).  0 to go on; a negative errno fails the whole start.
 * A failing setup must leave nothing active on the loop: cancel what it
 * started (the group runs the loop until those cancels complete) and free
 * the rest in teardown.  ud is eddy_group_options.ud.
 */
typedef int (*eddy_group_setup_fn)(struct eddy_group *g, unsigned index,
                                   struct eddy_loop *loop, void *ud);
/* stop and teardown: see the top of this file for when they run. */
typedef void (*eddy_group_loop_fn)(struct eddy_group *g, unsigned index,
                                   struct eddy_loop *loop, void *ud);
/* Before loop index is created, on its thread: adjust its options (a
 * log_ud of its own, another pool size ...).  lo starts as o->loop (or the
 * defaults) with the group's attach_wq and iowq_max_workers filled in. */
typedef void (*eddy_group_options_fn)(struct eddy_group *g, unsigned index,
                                      struct eddy_loop_options *lo, void *ud);
/* A watched signal arrived (on loop 0's thread), just before the group
 * stops: to log it, say. */
typedef void (*eddy_group_signal_fn)(struct eddy_group *g, int signo, void *ud);

struct eddy_group_options {
    unsigned loops;              /* N; 0 = the CPUs this process may run on */
    const struct eddy_loop_options *loop; /* every loop's options; NULL = defaults.  The
                                    group sets attach_wq of loops 1..N-1 to loop 0 */
    unsigned iowq_max_workers;   /* per loop, see "Sharing io-wq" above; 0 = loop's own option */
    int pin;                     /* nonzero: pin loop i to one CPU: cpus[i] if cpus is set,
                                    else the i-th (modulo their count) of the CPUs the
                                    process may run on.  A CPU that cannot be used fails
                                    the start (-EINVAL) */
    const int *cpus;             /* loops entries (a negative one: that loop unpinned), or NULL */
    int signals;                 /* nonzero: SIGINT and SIGTERM stop the group; see
                                    eddy_group_start() for the signal mask */
    eddy_group_options_fn loop_options; /* may be NULL */
    eddy_group_setup_fn setup;   /* may be NULL (a loop that serves posts only) */
    eddy_group_loop_fn stop;     /* may be NULL */
    eddy_group_loop_fn teardown; /* may be NULL */
    eddy_group_signal_fn on_signal; /* may be NULL */
    void *ud;                    /* passed to every callback */
};

/* Fills o with the defaults (all zero). */
void eddy_group_options_init(struct eddy_group_options *o);

/*
 * Starts the group and returns once every loop has passed setup (0 and *out,
 * the group running) or once everything started has been stopped, torn
 * down and joined after a failure (the first error: of eddy_loop_init(),
 * of a setup, of pthread_create, -EINVAL for a CPU that cannot be used;
 * *out untouched).  With o->signals, SIGINT and SIGTERM are blocked in the
 * calling thread before the loop threads are created (they inherit the
 * mask), and loop 0 reads them (eddy_signal()); eddy_group_join() gives
 * the calling thread its mask back.  Threads the process created earlier
 * must block them too, as eddy_signal() says.
 */
int eddy_group_start(struct eddy_group **out, const struct eddy_group_options *o);

/*
 * Stops every loop (see stop at the top).  Any thread, and async-signal
 * safe (atomic operations and a write(2) to each loop's eventfd); further
 * calls do nothing.  Valid until eddy_group_destroy().
 */
void eddy_group_stop(struct eddy_group *g);

/*
 * From any thread: runs cb(op, 0) on loop index's thread, as
 * eddy_post_threadsafe() does, while that loop runs (from the end of the
 * start until its run ends after its stop).  Returns 0, -ESHUTDOWN if the
 * loop no longer takes posts (cb will not run), -EINVAL for a bad index.
 * A post accepted here always runs, even when it arrives after the stop:
 * the loop ends only once it has run.  Lock-free, like eddy_group_stop().
 */
int eddy_group_post(struct eddy_group *g, unsigned index, struct eddy_op *op, eddy_cb cb);

/* The number of loops, and loop index (NULL for a bad index).  A loop
 * pointer is for its own thread's use (and the thread-safe calls of
 * eddy.h, such as eddy_post_to() between two loops of the group) while it
 * runs; it is gone after its teardown. */
unsigned eddy_group_size(const struct eddy_group *g);
/* 1 once every loop's setup has returned 0 and the loops serve; 0 before,
 * and for good when the start failed.  In a stop callback it tells the
 * group's real stop (1) from the undoing of a failed start (0), where no
 * loop has served and none will post to another.  Any thread. */
int eddy_group_started(const struct eddy_group *g);
struct eddy_loop *eddy_group_loop(const struct eddy_group *g, unsigned index);

/*
 * Waits until every loop's thread has ended, and gives the calling thread
 * its signal mask back (with o->signals; instances of SIGINT/SIGTERM still
 * pending then are discarded first, so they do not meet the default
 * action).  Returns 0, or the first error of a loop: a fatal error of its
 * run, or -EBUSY if the loop could not be destroyed after its teardown
 * (something was still active or attached: the loop is then left
 * allocated, for work that still uses it, such as a worker-pool call
 * blocked in a system call).  A loop may be abandoned so on purpose with
 * eddy_loop_stop() from its own thread.  Not from a loop thread of the
 * group; a second call returns 0 at once.
 */
int eddy_group_join(struct eddy_group *g);

/* Frees the group (joining it first if eddy_group_join() was not called).
 * NULL is fine. */
void eddy_group_destroy(struct eddy_group *g);

#ifdef __cplusplus
}
#endif

#endif /* EDDY_GROUP_H */
