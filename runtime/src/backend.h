/*
 * The seam between the loop and the kernel.  loop.c keeps everything the
 * contract of eddy.h promises (exactly one final callback, callbacks only
 * from eddy_loop_run(), deferred delivery, cancel bookkeeping, the backlog
 * that makes a full queue nobody's problem); a backend turns ops into
 * kernel work and kernel results back into calls of the loop's op_*
 * functions.  One backend serves a loop for its whole life, chosen at
 * eddy_loop_init(): io_uring (uring.c, uring_submit.c, uring_complete.c)
 * or epoll (epoll*.c).
 *
 * Calling the backend.  The loop calls through loop->be: one indirect call
 * per op armed (arm), three per loop iteration (flush_backlog, enter, reap)
 * and one per buffer given back to a kernel buffer ring (buf_put); the rest
 * is off the hot path.  A backend calls its own functions directly: the
 * completions of a batch are dispatched with no indirect call at all.
 *
 * Memory.  A backend's per-loop state lives in the same allocation as the
 * loop, behind it: the backend defines struct X { struct eddy_loop base;
 * ...its own... }, says sizeof in loop_size, and gets its state back with
 * container_of.  No allocation, no pointer to follow.
 *
 * What a backend may call in the loop (internal.h): op_finish,
 * op_finish_buffer, op_deliver, op_defer_final (final callbacks and the
 * callbacks of multishot ops; never from arm or cancel directly, except
 * through op_defer_final, which runs next iteration); the backlog
 * (loop->backlog with ST_QUEUED, and PF_CANCEL_OWED for a cancel it owes);
 * bufpool_take/bufpool_park; ts_push; loop_alive(); and fault_clamp_len()
 * (internal.h) wherever it computes the length of a send (each
 * re-submission) or of a receive into a pool buffer, for the injector's
 * short:N (one predictable branch when faults are off).  Not op_arm(): that
 * is the starters' entry, where the injector may end an op; a backend
 * re-arms its own ops with its own arm.  It keeps loop->inflight
 * (work the kernel holds, for eddy_loop_stats), loop->st's submission and
 * completion counters, loop->setup_flags, and the two hints below.
 *
 * Op states a backend owns: ST_KERNEL (the kernel has it), ST_BACKOFF
 * (accept waiting out EMFILE), ST_QUEUED (on the loop's backlog, waiting
 * for room).  Every other state is the loop's.
 */
#ifndef EDDY_BACKEND_H
#define EDDY_BACKEND_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct eddy_loop;
struct eddy_loop_options;
struct eddy_op;
struct eddy_bufpool;

struct backend {
    const char *name;  /* "io_uring", "epoll": for logs and, later, the API */
    size_t loop_size;  /* bytes to allocate for a loop: its struct, base first */
    /* A receive waiting for data holds no buffer of a pool without a
     * kernel ring either: it takes one when bytes are there (epoll).
     * False: it holds one while it waits (io_uring's single recv). */
    bool lazy_bufs;

    /* ---- lifecycle ---- */

    /* Sets up the kernel side of a zeroed loop (opts as given, disable =
     * the features switched off) and adds what the kernel has to
     * loop->features (the loop then masks out disable).  0, or -errno with
     * nothing left to undo; eddy_loop_init_explain() must explain it. */
    int (*init)(struct eddy_loop *loop, const struct eddy_loop_options *opts,
                unsigned disable);
    /* The loop's first eddy_loop_run() (or its destroy, if never run) on
     * the thread that will own it: take that thread as the submitter.  0 or
     * -errno (the run fails with it). */
    int (*bind)(struct eddy_loop *loop);
    /* The loop is closing (no active op; loop->closing set): end the
     * loop's internal ops still held (wake_op, sig_op) and wait, bounded,
     * until they are idle, then release the kernel side.  Also after a
     * failed eddy_loop_init() once init succeeded (no internal op armed). */
    void (*destroy)(struct eddy_loop *loop);

    /* ---- operations ---- */

    /* Starts (or restarts: the next chunk, a re-arm after readiness) op,
     * whose kind and arguments are filled in, op->state not yet set.  It
     * goes to the kernel (ST_KERNEL), or to the back of loop->backlog
     * (ST_QUEUED) while the backlog is not empty or there is no room.
     * Never fails, never calls a callback. */
    void (*arm)(struct eddy_loop *loop, struct eddy_op *op);
    /* eddy_cancel() of an op in ST_KERNEL or ST_BACKOFF (PF_CANCEL already
     * set): ask the kernel to end it, or owe that (PF_CANCEL_OWED, on the
     * backlog).  The final callback comes later from reap, with
     * -ECANCELED or the real result. */
    void (*cancel)(struct eddy_loop *loop, struct eddy_op *op);
    /* eddy_timer_update() of a timer in ST_KERNEL: fire at next_ns
     * (absolute) instead, with no callback for the old expiry.  0, or
     * -EAGAIN when it cannot be done now. */
    int (*timer_update)(struct eddy_loop *loop, struct eddy_op *op, int64_t next_ns);
    /* eddy_post_to() from the owning thread of from: deliver op (filled in,
     * ST_TSPOST) to loop to as op_finish(op, 0) on to's thread.  false: not
     * taken (no fast path, no room); the caller then takes the way of
     * eddy_post_threadsafe (ts_push). */
    bool (*post_to)(struct eddy_loop *from, struct eddy_loop *to, struct eddy_op *op);

    /* ---- the run loop, once per iteration, in this order ---- */

    /* Start of an iteration: move ops from the backlog into the kernel's
     * queue as far as there is room, oldest first. */
    void (*flush_backlog)(struct eddy_loop *loop);
    /* Hand everything queued to the kernel (the backlog first, as room
     * frees); if wait, sleep until at least one completion is ready.  The
     * backend's own timers bound the sleep; the loop has none.  0, or a
     * fatal -errno that ends eddy_loop_run(). */
    int (*enter)(struct eddy_loop *loop, bool wait);
    /* Reap a bounded batch of completions (so a flood cannot starve
     * submission) and dispatch each: multishot callbacks, re-arms, final
     * callbacks. */
    void (*reap)(struct eddy_loop *loop);
    /* eddy_loop_run() returns: take in, without waiting, completions that
     * no op waits for any more, and hand the kernel what is still queued,
     * so a caller polling with EDDY_RUN_NOWAIT never strands work. */
    void (*settle)(struct eddy_loop *loop);
    /* A callback returned late (see loop->flush_mark): hand the kernel what
     * earlier callbacks queued now, not at the end of the batch.  now is
     * the coarse clock; set loop->flush_mark to it if anything went out.
     * Called only while loop->queued; clear it if nothing is queued. */
    void (*flush_late)(struct eddy_loop *loop, int64_t now);

    /* ---- buffer pools (eddy_bufpool) ---- */

    /* EDDY_FEAT_BUF_RING: make pool's buffers kernel-provided (set
     * pool->ring and fill it).  0 done; 1 the kernel refused (the pool is
     * a user-space one); -errno a failure of eddy_bufpool_init. */
    int (*buf_register)(struct eddy_loop *loop, struct eddy_bufpool *pool);
    /* Undo buf_register (pool->ring is set; no receive uses the pool). */
    void (*buf_unregister)(struct eddy_bufpool *pool);
    /* Give buffer bid of a pool with pool->ring back to the kernel. */
    void (*buf_put)(struct eddy_bufpool *pool, uint16_t bid);
};

/* The backends. */
extern const struct backend backend_uring;
extern const struct backend backend_epoll;

#endif
