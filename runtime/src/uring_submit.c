/*
 * The io_uring backend, from op to SQE: how each kind is prepared (with its
 * linked deadline, or as a readiness poll after -EAGAIN), room in the SQ
 * (a full SQ is submitted once, then the op waits on loop->backlog, oldest
 * first), cancels and timer updates, posts to another ring over MSG_RING,
 * and the submission that hands it all to the kernel.  What comes back is
 * uring_complete.c's.
 */
#define _GNU_SOURCE
#include "uring_internal.h"

#include <assert.h>
#include <errno.h>
#include <poll.h>
#include <sys/socket.h>

/* ---- SQEs ------------------------------------------------------------- */

/* io_uring_submit() with its SQEs counted. */
static int submit_counted(struct eddy_loop *loop)
{
    int n = io_uring_submit(&U(loop)->ring);
    if (n > 0)
        loop->st.sqes += (unsigned)n;
    return n;
}

/* Room for need SQEs, submitting a full SQ once to make it. */
static bool sq_room(struct eddy_loop *loop, unsigned need)
{
    if (io_uring_sq_space_left(&U(loop)->ring) >= need)
        return true;
    loop->st.sq_full++;
    submit_counted(loop);
    return io_uring_sq_space_left(&U(loop)->ring) >= need;
}

/* Takes an SQE, flushing a full SQ once; NULL when the kernel takes none. */
static struct io_uring_sqe *get_sqe(struct eddy_loop *loop, unsigned need)
{
    if (!sq_room(loop, need))
        return NULL;
    loop->queued = true;
    return io_uring_get_sqe(&U(loop)->ring);
}

/* sqe is op's, for tag, and its CQE is awaited (counted in flight). */
static void sqe_tag(struct eddy_loop *loop, struct io_uring_sqe *sqe, struct eddy_op *op,
                    unsigned tag)
{
    io_uring_sqe_set_data64(sqe, EDDY_UD(op, tag));
    loop->inflight++;
}

/* An SQE whose completion nothing waits for (a cancel, a timer update):
 * with CQE_SKIP_SUCCESS the kernel posts a CQE only if it fails. */
static void sqe_set_aside(struct eddy_loop *loop, struct io_uring_sqe *sqe, struct eddy_op *op)
{
    if (loop->features & EDDY_FEAT_CQE_SKIP) {
        io_uring_sqe_set_data64(sqe, EDDY_UD(op, TAG_QUIET));
        sqe->flags |= IOSQE_CQE_SKIP_SUCCESS;
        return;
    }
    sqe_tag(loop, sqe, op, TAG_CANCEL);
}

bool uring_prep_cancel(struct eddy_loop *loop, struct eddy_op *op, unsigned tag)
{
    struct io_uring_sqe *sqe = get_sqe(loop, 1);
    if (!sqe)
        return false;
    io_uring_prep_cancel64(sqe, EDDY_UD(op, tag), 0);
    sqe_set_aside(loop, sqe, op);
    return true;
}

bool uring_prep_backoff(struct eddy_loop *loop, struct eddy_op *op, unsigned ms)
{
    /* Not behind the backlog: the op is the kernel's already (ST_BACKOFF). */
    struct io_uring_sqe *sqe = get_sqe(loop, 1);
    if (!sqe)
        return false;
    sqe_tag(loop, sqe, op, TAG_BACKOFF);
    set_ts(op, eddy_update_time(loop) + (int64_t)ms * 1000000);
    io_uring_prep_timeout(sqe, (struct __kernel_timespec *)&op->ts, 0, IORING_TIMEOUT_ABS);
    return true;
}

/* ---- preparing an op ------------------------------------------------- */

/* One of op's SQEs; uring_arm() or uring_flush_backlog() made room. */
static struct io_uring_sqe *op_sqe(struct eddy_loop *loop, struct eddy_op *op,
                                   unsigned tag)
{
    struct io_uring_sqe *sqe = io_uring_get_sqe(&U(loop)->ring);
    assert(sqe);
    sqe_tag(loop, sqe, op, tag);
    loop->queued = true;
    return sqe;
}

/* SQEs op needs: its own, and a linked timeout for a deadline. */
static unsigned op_need(const struct eddy_op *op)
{
    return op->deadline_ns ? 2 : 1;
}

/* Links a deadline (absolute, so re-submissions share it) after sqe. */
static void link_deadline(struct eddy_loop *loop, struct eddy_op *op,
                          struct io_uring_sqe *sqe)
{
    if (!op->deadline_ns)
        return;
    sqe->flags |= IOSQE_IO_LINK;
    set_ts(op, op->deadline_ns);
    struct io_uring_sqe *t = op_sqe(loop, op, TAG_LINK);
    io_uring_prep_link_timeout(t, (struct __kernel_timespec *)&op->ts,
                               IORING_TIMEOUT_ABS);
}

static void prep_accept(struct eddy_loop *loop, struct eddy_op *op)
{
    struct io_uring_sqe *sqe = op_sqe(loop, op, TAG_OP);
    if (loop->features & EDDY_FEAT_ACCEPT_MULTI)
        io_uring_prep_multishot_accept(sqe, op->u.accept.fd, op->u.accept.addr,
                                       op->u.accept.addrlen, op->u.accept.flags);
    else
        io_uring_prep_accept(sqe, op->u.accept.fd, op->u.accept.addr,
                             op->u.accept.addrlen, op->u.accept.flags);
}

static void prep_recv_multi(struct eddy_loop *loop, struct eddy_op *op)
{
    struct eddy_bufpool *pool = op->u.recvm.pool;
    if (pool->ring) {
        struct io_uring_sqe *sqe = op_sqe(loop, op, TAG_OP);
        /* A multishot recv takes no length (6.0): short:N cannot apply. */
        if ((loop->features & EDDY_FEAT_RECV_MULTI) && !(op->pflags & PF_ONCE)) {
            io_uring_prep_recv_multishot(sqe, op->u.recvm.fd, NULL, 0, 0);
        } else {
            unsigned len = fault_clamp_len(loop, op, pool->size);
            io_uring_prep_recv(sqe, op->u.recvm.fd, NULL, len == pool->size ? 0 : len, 0);
        }
        sqe->flags |= IOSQE_BUFFER_SELECT;
        sqe->buf_group = pool->bgid;
        return;
    }
    /* Without a buffer ring: a single recv into a buffer we pick. */
    uint16_t bid;
    if (!bufpool_take(pool, &bid)) {
        loop->st.enobufs++;
        bufpool_park(pool, op);
        return;
    }
    op->bid = bid;
    op->pflags |= PF_HAS_BUF;
    struct io_uring_sqe *sqe = op_sqe(loop, op, TAG_OP);
    io_uring_prep_recv(sqe, op->u.recvm.fd, bufpool_buf(pool, bid),
                       fault_clamp_len(loop, op, pool->size), 0);
}

/* The rest of a send: from u.send.done on (a short send is re-submitted). */
static void prep_send(struct eddy_loop *loop, struct eddy_op *op, struct io_uring_sqe *sqe)
{
    /* fault_clamp_len: the short:N fault; the rest is re-submitted */
    unsigned len = fault_clamp_len(loop, op, op->u.send.len - op->u.send.done);
    const char *buf = (const char *)op->u.send.buf + op->u.send.done;
    int flags = (int)(op->u.send.msgflags | MSG_NOSIGNAL);
    if (op->pflags & PF_ZC)
        io_uring_prep_send_zc(sqe, op->u.send.fd, buf, len, flags, 0);
    else
        io_uring_prep_send(sqe, op->u.send.fd, buf, len, flags);
}

/*
 * -EAGAIN is never a result.  The kernel hands it back on a non-blocking
 * descriptor (O_NONBLOCK, or MSG_DONTWAIT) when it would not wait itself:
 * when its own poll retries for one request run out it gives the request to
 * an io-wq thread, whose blocking sendmsg/read/write/accept honours
 * O_NONBLOCK.  The op then waits for the readiness its kind needs and is
 * issued again.  0: -EAGAIN is a real error for this kind (connect: no
 * local port left; a poll would say "ready" at once and spin).
 */
unsigned uring_again_events(const struct eddy_op *op)
{
    switch (op->kind) {
    case K_ACCEPT:
    case K_RECV:
    case K_RECV_MULTI:
    case K_READ:
    case K_INTERNAL_READ:
        return POLLIN;
    case K_SEND:
    case K_SENDMSG:
    case K_WRITE:
        return POLLOUT;
    default:
        return 0;
    }
}

/* The SQE of a kind with one plain SQE and an optional deadline. */
static void prep_plain(struct eddy_loop *loop, struct eddy_op *op, struct io_uring_sqe *sqe)
{
    switch (op->kind) {
    case K_CONNECT:
        io_uring_prep_connect(sqe, op->u.connect.fd, op->u.connect.addr, op->u.connect.len);
        break;
    case K_RECV:
        io_uring_prep_recv(sqe, op->u.recv.fd, op->u.recv.buf, op->u.recv.len,
                           (int)op->u.recv.msgflags);
        break;
    case K_SEND:
        prep_send(loop, op, sqe);
        break;
    case K_SENDMSG: {
        const void *buf;
        size_t cut = fault_sendmsg_len(loop, op, &buf); /* short:N, else 0 */
        if (cut)
            io_uring_prep_send(sqe, op->u.sendmsg.fd, buf, cut,
                               (int)(op->u.sendmsg.msgflags | MSG_NOSIGNAL));
        else
            io_uring_prep_sendmsg(sqe, op->u.sendmsg.fd, op->u.sendmsg.msg,
                                  op->u.sendmsg.msgflags | MSG_NOSIGNAL);
        break;
    }
    case K_READ:
    case K_INTERNAL_READ:
        io_uring_prep_read(sqe, op->u.rw.fd, op->u.rw.buf, op->u.rw.len, op->u.rw.off);
        break;
    case K_WRITE:
        io_uring_prep_write(sqe, op->u.rw.fd, op->u.rw.buf, op->u.rw.len, op->u.rw.off);
        break;
    case K_CLOSE:
        io_uring_prep_close(sqe, op->u.shut.fd);
        break;
    case K_SHUTDOWN:
        io_uring_prep_shutdown(sqe, op->u.shut.fd, op->u.shut.how);
        break;
    case K_POLL:
        io_uring_prep_poll_add(sqe, op->u.poll.fd, op->u.poll.events);
        break;
    default:
        /* No starter makes another kind.  Without asserts, a no-op ends
         * the op (with 0) rather than a stale SQE going to the kernel. */
        assert(!"eddy: op kind cannot be prepared");
        io_uring_prep_nop(sqe);
        break;
    }
}

/* Prepares op's SQEs; the caller made room for op_need(op) of them. */
static void op_prep(struct eddy_loop *loop, struct eddy_op *op)
{
    struct io_uring_sqe *sqe;
    if (op->pflags & PF_AGAIN) {
        /* Same user_data as the op itself: cancel and deadline apply. */
        sqe = op_sqe(loop, op, TAG_OP);
        io_uring_prep_poll_add(sqe, op_target_fd(op), uring_again_events(op));
        link_deadline(loop, op, sqe);
        return;
    }
    switch (op->kind) {
    case K_ACCEPT:
        prep_accept(loop, op); /* multishot: no deadline */
        return;
    case K_RECV_MULTI:
        prep_recv_multi(loop, op); /* no deadline */
        return;
    case K_TIMER:
        sqe = op_sqe(loop, op, TAG_OP);
        set_ts(op, op->u.timer.next_ns);
        io_uring_prep_timeout(sqe, (struct __kernel_timespec *)&op->ts, 0,
                              IORING_TIMEOUT_ABS);
        return; /* a timer is a deadline itself */
    default:
        sqe = op_sqe(loop, op, TAG_OP);
        prep_plain(loop, op, sqe);
        link_deadline(loop, op, sqe);
        return;
    }
}

/* ---- arming, the backlog, cancel --------------------------------------- */

/* Prepares an op's SQEs, or queues it until the SQ has room.  Ops already
 * waiting keep their turn: a new op queues behind them. */
void uring_arm(struct eddy_loop *loop, struct eddy_op *op)
{
    drop_owed_cancel(loop, op);
    if (loop->backlog.head || !sq_room(loop, op_need(op))) {
        op->state = ST_QUEUED;
        oplist_push(&loop->backlog, op);
        return;
    }
    op->state = ST_KERNEL;
    op_prep(loop, op);
}

/* The tag of op's SQE a cancel must name. */
static unsigned cancel_tag(const struct eddy_op *op)
{
    return op->state == ST_BACKOFF ? TAG_BACKOFF : TAG_OP;
}

/* Re-tries ops that waited for SQ room, and owed cancels, in order. */
void uring_flush_backlog(struct eddy_loop *loop)
{
    struct eddy_op *op;
    while ((op = loop->backlog.head)) {
        bool cancel = op->pflags & PF_CANCEL_OWED;
        if (io_uring_sq_space_left(&U(loop)->ring) < (cancel ? 1 : op_need(op)))
            return;
        oplist_remove(&loop->backlog, op);
        if (cancel) {
            op->pflags &= ~PF_CANCEL_OWED;
            uring_prep_cancel(loop, op, cancel_tag(op));
            continue;
        }
        op->state = ST_KERNEL;
        op_prep(loop, op);
    }
}

void uring_cancel(struct eddy_loop *loop, struct eddy_op *op)
{
    if (!uring_prep_cancel(loop, op, cancel_tag(op))) {
        op->pflags |= PF_CANCEL_OWED;
        oplist_push(&loop->backlog, op);
    }
}

int uring_timer_update(struct eddy_loop *loop, struct eddy_op *op, int64_t next)
{
    if (op->pflags & PF_REARM) {
        /* Re-armed when the cancel lands: that prep reads this. */
        op->u.timer.next_ns = next;
        return 0;
    }
    if (loop->backlog.head)
        return -EAGAIN; /* ops waiting for room go first */
    struct io_uring_sqe *sqe = get_sqe(loop, 1);
    if (!sqe)
        return -EAGAIN;
    op->u.timer.next_ns = next;
    if (loop->features & EDDY_FEAT_TIMEOUT_UPDATE) {
        /* The kernel copies the new time when it handles the update. */
        set_ts(op, next);
        io_uring_prep_timeout_update(sqe, (struct __kernel_timespec *)&op->ts,
                                     EDDY_UD(op, TAG_OP), IORING_TIMEOUT_ABS);
    } else {
        /* Before 5.11: cancel it; the timer's completion re-arms on the
         * -ECANCELED (uring_complete.c). */
        op->pflags |= PF_REARM;
        io_uring_prep_cancel64(sqe, EDDY_UD(op, TAG_OP), 0);
    }
    sqe_set_aside(loop, sqe, op);
    return 0;
}

/* eddy_post_to() over MSG_RING, to a loop on io_uring too. */
bool uring_post_to(struct eddy_loop *from, struct eddy_loop *to, struct eddy_op *op)
{
    if (to->be != from->be || !(from->features & EDDY_FEAT_MSG_RING))
        return false;
    assert(pthread_equal(pthread_self(), from->owner));
    struct io_uring_sqe *sqe = get_sqe(from, 1);
    if (!sqe)
        return false;
    io_uring_prep_msg_ring(sqe, U(to)->ring.ring_fd, 0, EDDY_UD(op, TAG_MSG_IN), 0);
    sqe_tag(from, sqe, op, TAG_MSG_OUT);
    return true;
}

/* ---- submission -------------------------------------------------------- */

static int submit(struct eddy_loop *loop, bool wait)
{
    for (;;) {
        int rc;
        loop->st.submit_calls++;
        if (wait)
            rc = io_uring_submit_and_wait(&U(loop)->ring, 1);
        else if (loop->setup_flags & IORING_SETUP_DEFER_TASKRUN)
            rc = io_uring_submit_and_get_events(&U(loop)->ring);
        else
            rc = io_uring_submit(&U(loop)->ring);
        if (rc >= 0) {
            loop->st.sqes += (unsigned)rc;
            loop->flush_mark = coarse_ns();
            loop->queued = io_uring_sq_ready(&U(loop)->ring) != 0;
            return 0;
        }
        if (rc == -EINTR)
            continue; /* a signal: the SQEs are still ours to submit */
        if (rc == -EAGAIN || rc == -EBUSY)
            return 0; /* the CQ is backed up: reap, then submit again */
        return rc;
    }
}

int uring_enter(struct eddy_loop *loop, bool wait)
{
    int rc = 0;
    /* Ops waiting for SQ room go out before we sleep: the completion we
     * would sleep for may be one of theirs. */
    while (loop->backlog.head) {
        struct eddy_op *head = loop->backlog.head;
        rc = submit(loop, false);
        if (rc < 0)
            return rc;
        uring_flush_backlog(loop);
        if (loop->backlog.head == head)
            break; /* no room yet: completions must free some first */
    }
    return submit(loop, wait);
}

void uring_settle(struct eddy_loop *loop)
{
    /* Nothing alive, yet the kernel may hold CQEs of SQEs that outlive their
     * op: a deadline's linked timeout can be posted after the op's own CQE,
     * behind a full CQ in the overflow list (6.1 with DEFER_TASKRUN does).
     * Reap what is posted, so it is not left in the kernel (and counted in
     * flight) until the loop runs again; no wait, no work when none is. */
    for (int i = 0; i < 8 && !loop_alive(loop) &&
                    (io_uring_cq_ready(&U(loop)->ring) ||
                     io_uring_cq_has_overflow(&U(loop)->ring));
         i++)
        uring_reap(loop);
    /* What we queued but did not submit yet goes out now, so a caller of
     * RUN_NOWAIT polling the loop never strands an SQE. */
    if (io_uring_sq_ready(&U(loop)->ring))
        submit(loop, false);
}

void uring_flush_late(struct eddy_loop *loop, int64_t now)
{
    if (!io_uring_sq_ready(&U(loop)->ring)) {
        loop->queued = false;
        return;
    }
    loop->flush_mark = now;
    loop->st.submit_calls++;
    submit_counted(loop);
}
