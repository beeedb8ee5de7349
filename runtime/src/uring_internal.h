/*
 * What the files of the io_uring backend share, and nothing else includes:
 * the loop's ring, the user_data tags, and the calls between the files.
 *
 *   uring.c           the ring's life: set-up tiers, feature probe, the
 *                     bind to the loop's thread, buffer rings, teardown,
 *                     and the backend table (backend.h)
 *   uring_submit.c    ops into SQEs: each kind's preparation, room in the
 *                     SQ and the backlog, cancel and timer updates, posts
 *                     to another ring, submission
 *   uring_complete.c  CQEs back into callbacks: reaping, dispatch by tag,
 *                     and what each kind does with its completion (re-arm,
 *                     the rest of a short send, readiness on -EAGAIN,
 *                     accept back-off, zero-copy notifications)
 */
#ifndef EDDY_URING_INTERNAL_H
#define EDDY_URING_INTERNAL_H

#include "internal.h"

#include <liburing.h>

/* Every SQE carries its op's address as user_data, with what it is for in
 * the low 3 bits (ops are 8-aligned). */
enum {
    TAG_OP = 0,      /* the op's main SQE */
    TAG_LINK = 1,    /* a linked timeout (deadline): ignored, never dereferenced */
    TAG_CANCEL = 2,  /* an async cancel we issued: ignored */
    TAG_BACKOFF = 3, /* accept back-off timer of the op */
    TAG_MSG_OUT = 4, /* our MSG_RING to another loop: deref only on failure */
    TAG_MSG_IN = 5,  /* a post another loop sent us with MSG_RING */
    TAG_QUIET = 6,   /* a cancel/update with CQE_SKIP_SUCCESS: a CQE only on failure, ignored */
    TAG_MASK = 7,
};

#define EDDY_UD(op, tag) ((uint64_t)(uintptr_t)(op) | (tag))

/* A loop on io_uring: the loop, then the ring (one allocation). */
struct uring_loop {
    struct eddy_loop base;
    struct io_uring ring;
    unsigned entries, cq_entries;
    uint16_t next_bgid;          /* buffer group id of the next buffer ring */
};

static inline struct uring_loop *U(struct eddy_loop *loop)
{
    return eddy_container_of(loop, struct uring_loop, base);
}

/* op->ts as an absolute CLOCK_MONOTONIC time, for a timeout SQE. */
static inline void set_ts(struct eddy_op *op, int64_t abs_ns)
{
    op->ts.tv_sec = abs_ns / 1000000000;
    op->ts.tv_nsec = abs_ns % 1000000000;
}

/* uring_submit.c: the backend.h entries it implements */
void uring_arm(struct eddy_loop *loop, struct eddy_op *op);
void uring_cancel(struct eddy_loop *loop, struct eddy_op *op);
int uring_timer_update(struct eddy_loop *loop, struct eddy_op *op, int64_t next_ns);
bool uring_post_to(struct eddy_loop *from, struct eddy_loop *to, struct eddy_op *op);
void uring_flush_backlog(struct eddy_loop *loop);
int uring_enter(struct eddy_loop *loop, bool wait);
void uring_settle(struct eddy_loop *loop);
void uring_flush_late(struct eddy_loop *loop, int64_t now);

/* uring_submit.c: for the other two files */
/* The readiness op's kind waits for after -EAGAIN (POLLIN or POLLOUT); 0
 * when -EAGAIN is a real error for the kind. */
unsigned uring_again_events(const struct eddy_op *op);
/* An async cancel of op's SQE tagged tag; false when the SQ has no room. */
bool uring_prep_cancel(struct eddy_loop *loop, struct eddy_op *op, unsigned tag);
/* Op's accept back-off timer (TAG_BACKOFF), ms from now; false when the SQ
 * has no room even after a submit. */
bool uring_prep_backoff(struct eddy_loop *loop, struct eddy_op *op, unsigned ms);

/* uring_complete.c */
void uring_reap(struct eddy_loop *loop);

#endif
