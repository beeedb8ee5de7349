/*
 * The io_uring backend, from CQE to callback: a bounded batch of CQEs is
 * reaped, each is dispatched by the tag in its user_data, and each kind
 * decides what its completion means: a multishot accept or receive goes
 * on or is re-armed, a short send sends the rest, -EAGAIN waits for
 * readiness, an accept out of descriptors backs off, a zero-copy send
 * waits for its notifications.  The loop's op_* functions (internal.h) run
 * the callbacks; what goes back to the kernel is uring_submit.c's.
 */
#define _GNU_SOURCE
#include "uring_internal.h"

#include <errno.h>

static void send_finish(struct eddy_loop *loop, struct eddy_op *op, int res);

/* The final callback of any kind (a send may still wait for notifications). */
static void op_end_kind(struct eddy_loop *loop, struct eddy_op *op, int res)
{
    if (op->kind == K_SEND)
        send_finish(loop, op, res);
    else
        op_finish(loop, op, res);
}

/* ---- -EAGAIN: readiness, then again ------------------------------------ */

/* The kernel said -EAGAIN (see uring_again_events): wait for readiness,
 * then issue the op again.  True if taken; false when -EAGAIN is this
 * kind's real error. */
static bool wait_ready(struct eddy_loop *loop, struct eddy_op *op)
{
    if (!uring_again_events(op))
        return false;
    if (op->pflags & PF_CANCEL) {
        op_end_kind(loop, op, -ECANCELED);
        return true;
    }
    op->pflags |= PF_AGAIN;
    uring_arm(loop, op);
    return true;
}

/* The readiness poll of wait_ready() completed: revents, or -ECANCELED
 * (eddy_cancel, or the deadline), or an error of the descriptor. */
static void ready_done(struct eddy_loop *loop, struct eddy_op *op, int res)
{
    op->pflags &= ~PF_AGAIN;
    if (op->pflags & PF_CANCEL)
        res = -ECANCELED;
    if (res >= 0) {
        uring_arm(loop, op); /* even on POLLERR/POLLHUP: the op itself tells */
        return;
    }
    op_end_kind(loop, op, res);
}

/* ---- accept ------------------------------------------------------------ */

/* Out of descriptors or memory: say so, wait, try again.  Spinning on
 * accept would only burn the CPU the server needs to free them. */
static void accept_back_off(struct eddy_loop *loop, struct eddy_op *op, int res)
{
    unsigned ms = accept_backoff_next(op);
    op->state = ST_BACKOFF;
    if (!uring_prep_backoff(loop, op, ms))
        uring_arm(loop, op); /* no SQE even for a timer: retry at once */
    op_deliver(loop, op, res, 0);
}

static void complete_accept(struct eddy_loop *loop, struct eddy_op *op, int res,
                            unsigned cflags)
{
    bool more = cflags & IORING_CQE_F_MORE;
    bool cancel = op->pflags & PF_CANCEL;
    if (res >= 0) {
        op->u.accept.backoff_ms = 0;
        if (!more) {
            if (cancel) {
                op_defer_final(loop, op, -ECANCELED);
            } else {
                /* Single-shot, or the kernel ended multishot.  A kernel
                 * that said -EAGAIN for this listener (5.10 does for a
                 * non-blocking one rather than wait) would say it again
                 * for an empty queue: wait for readiness first, one
                 * operation less per connection. */
                if (op->pflags & PF_POLL_FIRST)
                    op->pflags |= PF_AGAIN;
                uring_arm(loop, op);
            }
        }
        op_deliver(loop, op, res, 0);
        return;
    }
    if (more)
        return; /* an error the multishot accept survives */
    if (cancel || res == -ECANCELED) {
        op_finish(loop, op, cancel ? -ECANCELED : res);
    } else if (res == -EAGAIN) {
        op->pflags |= PF_POLL_FIRST; /* from now on (above) */
        wait_ready(loop, op);        /* accept waits for POLLIN: always taken */
    } else if (accept_transient(res)) {
        uring_arm(loop, op);
    } else if (accept_exhausted(res)) {
        accept_back_off(loop, op, res);
    } else {
        op_finish(loop, op, res);
    }
}

static void backoff_done(struct eddy_loop *loop, struct eddy_op *op, int res)
{
    if (op->pflags & PF_CANCEL || (res != -ETIME && res != 0)) {
        op_finish(loop, op, -ECANCELED);
        return;
    }
    uring_arm(loop, op);
}

/* ---- receive into a pool ---------------------------------------------- */

/* The pool buffer a receive's CQE carries, if any: *bid, true. */
static bool recv_buffer(struct eddy_op *op, unsigned cflags, uint16_t *bid)
{
    struct eddy_bufpool *pool = op->u.recvm.pool;
    if (pool->ring && (cflags & IORING_CQE_F_BUFFER)) {
        *bid = (uint16_t)(cflags >> IORING_CQE_BUFFER_SHIFT);
        pool->out++;
        return true;
    }
    if (op->pflags & PF_HAS_BUF) {
        *bid = op->bid;
        op->pflags &= ~PF_HAS_BUF;
        return true;
    }
    return false;
}

/* Data in buffer bid: the callback sees it, the receive goes on. */
static void recv_data(struct eddy_loop *loop, struct eddy_op *op, int res, bool more,
                      uint16_t bid)
{
    if (op->pflags & PF_ONCE) {
        op_finish_buffer(loop, op, res, bid); /* data wins over a cancel */
        return;
    }
    if (!more) {
        if (op->pflags & PF_CANCEL)
            op_defer_final(loop, op, -ECANCELED);
        else
            uring_arm(loop, op);
    }
    op->buf = bufpool_buf(op->u.recvm.pool, bid);
    /* The fallback's re-armed recv already holds its next buffer in
     * op->bid: lend op->bid to the callback, then restore it, or the
     * next completion would report this buffer instead of its own. */
    uint16_t kbid = op->bid;
    bool lent = op->pflags & PF_HAS_BUF;
    op->bid = bid;
    op_deliver(loop, op, res, EDDY_OP_BUFFER);
    if (lent && (op->pflags & PF_HAS_BUF))
        op->bid = kbid;
}

static void complete_recv_multi(struct eddy_loop *loop, struct eddy_op *op,
                                int res, unsigned cflags)
{
    struct eddy_bufpool *pool = op->u.recvm.pool;
    bool more = cflags & IORING_CQE_F_MORE;
    bool cancel = op->pflags & PF_CANCEL;
    uint16_t bid = 0;
    bool has_buf = recv_buffer(op, cflags, &bid);
    if (res > 0) {
        recv_data(loop, op, res, more, bid);
        return;
    }
    if (has_buf)
        eddy_bufpool_put(pool, bid); /* no data in it */
    if (more)
        return;
    if (res == -EAGAIN && wait_ready(loop, op))
        return;
    if (res == -ENOBUFS && !cancel) {
        /* Back-pressure: the pool is dry.  Wait for a buffer to come back. */
        loop->st.enobufs++;
        /* The kernel found the ring empty before this CQE was reaped; the
         * callbacks for the same batch may have put every buffer back since,
         * and then no later put would ever wake a parked receive. */
        if (eddy_bufpool_free_count(pool))
            uring_arm(loop, op);
        else
            bufpool_park(pool, op);
        return;
    }
    op_finish(loop, op, cancel ? -ECANCELED : res);
}

/* ---- send, sendmsg ------------------------------------------------------ */

/* The final result of a send; a zero-copy send waits until the kernel has
 * let go of the buffer (every notification is in). */
static void send_finish(struct eddy_loop *loop, struct eddy_op *op, int res)
{
    if (op->u.send.zc_notifs) {
        op->res = res;
        op->pflags |= PF_ZC_DONE;
        return;
    }
    op_finish(loop, op, res);
}

/* Part of a send or sendmsg went out: the rest goes now, unless the op was
 * cancelled. */
static void send_rest(struct eddy_loop *loop, struct eddy_op *op)
{
    if (op->pflags & PF_CANCEL)
        op_end_kind(loop, op, -ECANCELED);
    else
        uring_arm(loop, op);
}

/* A send or sendmsg that moved no byte: -EAGAIN waits for room, 0 means
 * the peer is gone. */
static void send_error(struct eddy_loop *loop, struct eddy_op *op, int res)
{
    if (res == -EAGAIN && wait_ready(loop, op))
        return;
    op_end_kind(loop, op, res == 0 ? -EPIPE : res);
}

static void complete_send(struct eddy_loop *loop, struct eddy_op *op, int res,
                          unsigned cflags)
{
    if (cflags & IORING_CQE_F_NOTIF) {
        /* SEND_ZC: the kernel no longer reads this part of the buffer. */
        if (--op->u.send.zc_notifs == 0 && (op->pflags & PF_ZC_DONE))
            op_finish(loop, op, op->res);
        return;
    }
    if (cflags & IORING_CQE_F_MORE)
        op->u.send.zc_notifs++; /* a notification will follow */
    if (res <= 0) {
        send_error(loop, op, res);
        return;
    }
    op->u.send.done += (uint32_t)res;
    if (op->u.send.done < op->u.send.len)
        send_rest(loop, op); /* a short send */
    else
        send_finish(loop, op, (int)op->u.send.done);
}

static void complete_sendmsg(struct eddy_loop *loop, struct eddy_op *op, int res)
{
    if (res > 0) {
        op->u.sendmsg.done += (size_t)res;
        if (sendmsg_advance(op->u.sendmsg.msg, (size_t)res))
            send_rest(loop, op);
        else
            op_finish(loop, op, (int)op->u.sendmsg.done);
    } else if (res == 0 && op->u.sendmsg.msg->msg_iovlen == 0) {
        op_finish(loop, op, (int)op->u.sendmsg.done);
    } else {
        send_error(loop, op, res);
    }
}

/* ---- timers ------------------------------------------------------------ */

static void complete_timer(struct eddy_loop *loop, struct eddy_op *op, int res)
{
    if (op->pflags & PF_REARM) {
        op->pflags &= ~PF_REARM;
        if (res == -ECANCELED && !(op->pflags & PF_CANCEL)) {
            uring_arm(loop, op); /* eddy_timer_update() without TIMEOUT_UPDATE */
            return;
        }
    }
    if (res != -ETIME && res != 0) {
        op_finish(loop, op, op->pflags & PF_CANCEL ? -ECANCELED : res);
        return;
    }
    if (!(op->pflags & PF_REPEAT)) {
        op_finish(loop, op, 0);
        return;
    }
    if (op->pflags & PF_CANCEL) {
        op_finish(loop, op, -ECANCELED);
        return;
    }
    /* Next tick from the previous deadline, not from now: no drift.  After
     * a long stall, skip the missed ticks rather than fire a burst. */
    int64_t now = eddy_update_time(loop);
    op->u.timer.next_ns += op->u.timer.interval_ns;
    if (op->u.timer.next_ns <= now)
        op->u.timer.next_ns = now + op->u.timer.interval_ns;
    uring_arm(loop, op);
    op_deliver(loop, op, 0, 0);
}

/* ---- dispatch ---------------------------------------------------------- */

/* The CQE of an op's own SQE (TAG_OP), by kind. */
static void op_complete(struct eddy_loop *loop, struct eddy_op *op, int res, unsigned cflags)
{
    /* A zero-copy notification of an earlier send may land while the op
     * waits for readiness: it is complete_send's, not the poll's. */
    if ((op->pflags & PF_AGAIN) && !(cflags & IORING_CQE_F_NOTIF)) {
        ready_done(loop, op, res);
        return;
    }
    switch (op->kind) {
    case K_ACCEPT:
        complete_accept(loop, op, res, cflags);
        break;
    case K_RECV_MULTI:
        complete_recv_multi(loop, op, res, cflags);
        break;
    case K_SEND:
        complete_send(loop, op, res, cflags);
        break;
    case K_SENDMSG:
        complete_sendmsg(loop, op, res);
        break;
    case K_TIMER:
        complete_timer(loop, op, res);
        break;
    default:
        if (res == -EAGAIN && wait_ready(loop, op))
            break;
        op_finish(loop, op, res);
        break;
    }
}

/* The one choke point that sees every completion of the ring. */
static void dispatch(struct eddy_loop *loop, uint64_t ud, int res, unsigned cflags)
{
    unsigned tag = ud & TAG_MASK;
    struct eddy_op *op = (struct eddy_op *)(uintptr_t)(ud & ~(uint64_t)TAG_MASK);
    if (tag == TAG_MSG_IN) {
        /* Sent by another loop's MSG_RING: no SQE of ours to account. */
        loop->active++;
        op_finish(loop, op, 0);
        return;
    }
    if (tag == TAG_QUIET)
        return; /* a cancel or update that failed: the op's own CQE tells */
    if (!(cflags & IORING_CQE_F_MORE))
        loop->inflight--;
    if (tag == TAG_OP) {
        op_complete(loop, op, res, cflags);
    } else if (tag == TAG_BACKOFF) {
        backoff_done(loop, op, res);
    } else if (tag == TAG_MSG_OUT && res < 0) {
        /* Refused (target CQ full, ring gone): still ours to send.  Once
         * delivered, the op is the other loop's (maybe already freed). */
        ts_push(op->loop, op);
    }
    /* TAG_LINK, TAG_CANCEL: nothing refers to them any more */
}

/* Reaps up to a bound of CQEs (so a flood cannot starve submission). */
void uring_reap(struct eddy_loop *loop)
{
    struct io_uring_cqe *cqes[64];
    unsigned budget = U(loop)->cq_entries * 2;
    while (budget) {
        /* Counted here: liburing's peek flushes an overflow by itself once
         * the CQ is empty, so the branch below rarely sees one. */
        if (io_uring_cq_has_overflow(&U(loop)->ring))
            loop->st.cq_overflows++;
        unsigned n = io_uring_peek_batch_cqe(&U(loop)->ring, cqes, 64);
        if (n == 0) {
            if (!io_uring_cq_has_overflow(&U(loop)->ring))
                break;
            /* NODROP kept the overflow in the kernel: have it flushed in. */
            io_uring_get_events(&U(loop)->ring);
            continue;
        }
        struct { uint64_t ud; int res; unsigned flags; } c[64];
        for (unsigned i = 0; i < n; i++) {
            c[i].ud = cqes[i]->user_data;
            c[i].res = cqes[i]->res;
            c[i].flags = cqes[i]->flags;
        }
        io_uring_cq_advance(&U(loop)->ring, n);
        loop->st.completions += n;
        for (unsigned i = 0; i < n; i++)
            dispatch(loop, c[i].ud, c[i].res, c[i].flags);
        budget = budget > n ? budget - n : 0;
    }
}
