/*
 * The operations: their starters, how each is prepared as SQEs, and what
 * each does with its completions (re-arm, re-submit the rest, finish).
 */
#define _GNU_SOURCE
#include "internal.h"

#include <assert.h>
#include <errno.h>
#include <poll.h>
#include <string.h>
#include <sys/socket.h>

/* ---- preparing SQEs --------------------------------------------------- */

static struct io_uring_sqe *op_sqe(struct eddy_loop *loop, struct eddy_op *op,
                                   unsigned tag)
{
    struct io_uring_sqe *sqe = io_uring_get_sqe(&loop->ring);
    assert(sqe); /* op_arm made room */
    io_uring_sqe_set_data64(sqe, EDDY_UD(op, tag));
    loop->inflight++;
    return sqe;
}

static void set_ts(struct eddy_op *op, int64_t abs_ns)
{
    op->ts.tv_sec = abs_ns / 1000000000;
    op->ts.tv_nsec = abs_ns % 1000000000;
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
        if ((loop->features & EDDY_FEAT_RECV_MULTI) && !(op->pflags & PF_ONCE))
            io_uring_prep_recv_multishot(sqe, op->u.recvm.fd, NULL, 0, 0);
        else
            io_uring_prep_recv(sqe, op->u.recvm.fd, NULL, 0, 0);
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
    io_uring_prep_recv(sqe, op->u.recvm.fd, eddy_bufpool_buf(pool, bid), pool->size, 0);
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
static unsigned again_events(const struct eddy_op *op)
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

/* The descriptor of an op that can wait for readiness. */
static int again_fd(const struct eddy_op *op)
{
    switch (op->kind) {
    case K_ACCEPT:
        return op->u.accept.fd;
    case K_RECV:
        return op->u.recv.fd;
    case K_RECV_MULTI:
        return op->u.recvm.fd;
    case K_SEND:
        return op->u.send.fd;
    case K_SENDMSG:
        return op->u.sendmsg.fd;
    default:
        return op->u.rw.fd;
    }
}

bool op_prep(struct eddy_loop *loop, struct eddy_op *op)
{
    struct io_uring_sqe *sqe = NULL;
    if (op->pflags & PF_AGAIN) {
        /* Same user_data as the op itself: cancel and deadline apply. */
        sqe = op_sqe(loop, op, TAG_OP);
        io_uring_prep_poll_add(sqe, again_fd(op), again_events(op));
        link_deadline(loop, op, sqe);
        return true;
    }
    switch (op->kind) {
    case K_ACCEPT:
        prep_accept(loop, op);
        return true;
    case K_RECV_MULTI:
        prep_recv_multi(loop, op);
        return true;
    case K_CONNECT:
        sqe = op_sqe(loop, op, TAG_OP);
        io_uring_prep_connect(sqe, op->u.connect.fd, op->u.connect.addr, op->u.connect.len);
        break;
    case K_RECV:
        sqe = op_sqe(loop, op, TAG_OP);
        io_uring_prep_recv(sqe, op->u.recv.fd, op->u.recv.buf, op->u.recv.len,
                           (int)op->u.recv.msgflags);
        break;
    case K_SEND:
        sqe = op_sqe(loop, op, TAG_OP);
        if (op->pflags & PF_ZC)
            io_uring_prep_send_zc(sqe, op->u.send.fd,
                                  (const char *)op->u.send.buf + op->u.send.done,
                                  op->u.send.len - op->u.send.done,
                                  (int)(op->u.send.msgflags | MSG_NOSIGNAL), 0);
        else
            io_uring_prep_send(sqe, op->u.send.fd,
                               (const char *)op->u.send.buf + op->u.send.done,
                               op->u.send.len - op->u.send.done,
                               (int)(op->u.send.msgflags | MSG_NOSIGNAL));
        break;
    case K_SENDMSG:
        sqe = op_sqe(loop, op, TAG_OP);
        io_uring_prep_sendmsg(sqe, op->u.sendmsg.fd, op->u.sendmsg.msg,
                              op->u.sendmsg.msgflags | MSG_NOSIGNAL);
        break;
    case K_READ:
    case K_INTERNAL_READ:
        sqe = op_sqe(loop, op, TAG_OP);
        io_uring_prep_read(sqe, op->u.rw.fd, op->u.rw.buf, op->u.rw.len, op->u.rw.off);
        break;
    case K_WRITE:
        sqe = op_sqe(loop, op, TAG_OP);
        io_uring_prep_write(sqe, op->u.rw.fd, op->u.rw.buf, op->u.rw.len, op->u.rw.off);
        break;
    case K_CLOSE:
        sqe = op_sqe(loop, op, TAG_OP);
        io_uring_prep_close(sqe, op->u.shut.fd);
        break;
    case K_SHUTDOWN:
        sqe = op_sqe(loop, op, TAG_OP);
        io_uring_prep_shutdown(sqe, op->u.shut.fd, op->u.shut.how);
        break;
    case K_POLL:
        sqe = op_sqe(loop, op, TAG_OP);
        io_uring_prep_poll_add(sqe, op->u.poll.fd, op->u.poll.events);
        break;
    case K_TIMER:
        sqe = op_sqe(loop, op, TAG_OP);
        set_ts(op, op->u.timer.next_ns);
        io_uring_prep_timeout(sqe, (struct __kernel_timespec *)&op->ts, 0,
                              IORING_TIMEOUT_ABS);
        return true; /* a timer needs no deadline */
    default:
        assert(!"eddy: op kind cannot be prepared");
        return false;
    }
    link_deadline(loop, op, sqe);
    return true;
}

/* ---- completions ------------------------------------------------------ */

static bool accept_transient(int res)
{
    switch (res) {
    case -ECONNABORTED:
    case -EINTR:
    case -EPROTO:
    case -EPERM:
    case -ENETDOWN:
    case -ENOPROTOOPT:
    case -EHOSTDOWN:
    case -ENONET:
    case -EHOSTUNREACH:
    case -EOPNOTSUPP:
    case -ENETUNREACH:
        return true;
    default:
        return false;
    }
}

static void send_finish(struct eddy_loop *loop, struct eddy_op *op, int res);

/* The final callback of any kind (a send may still wait for notifications). */
static void op_end_kind(struct eddy_loop *loop, struct eddy_op *op, int res)
{
    if (op->kind == K_SEND)
        send_finish(loop, op, res);
    else
        op_finish(loop, op, res);
}

/* The kernel said -EAGAIN (see again_events): wait for readiness, then
 * issue the op again.  True if taken; false when -EAGAIN is this kind's
 * real error. */
static bool wait_ready(struct eddy_loop *loop, struct eddy_op *op)
{
    if (!again_events(op))
        return false;
    if (op->pflags & PF_CANCEL) {
        op_end_kind(loop, op, -ECANCELED);
        return true;
    }
    op->pflags |= PF_AGAIN;
    op_arm(loop, op);
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
        op_arm(loop, op); /* even on POLLERR/POLLHUP: the op itself tells */
        return;
    }
    op_end_kind(loop, op, res);
}

static bool accept_exhausted(int res)
{
    return res == -EMFILE || res == -ENFILE || res == -ENOBUFS || res == -ENOMEM;
}

static void complete_accept(struct eddy_loop *loop, struct eddy_op *op, int res,
                            unsigned cflags)
{
    bool more = cflags & IORING_CQE_F_MORE;
    bool cancel = op->pflags & PF_CANCEL;
    if (res >= 0) {
        op->u.accept.backoff_ms = 0;
        if (!more) {
            if (cancel)
                op_defer_final(loop, op, -ECANCELED);
            else
                op_arm(loop, op); /* single-shot, or the kernel ended multishot */
        }
        op_deliver(loop, op, res, 0);
        return;
    }
    if (more)
        return; /* an error the multishot accept survives */
    if (cancel || res == -ECANCELED) {
        op_finish(loop, op, cancel ? -ECANCELED : res);
        return;
    }
    if (res == -EAGAIN && wait_ready(loop, op))
        return;
    if (accept_transient(res)) {
        op_arm(loop, op);
        return;
    }
    if (accept_exhausted(res)) {
        /* Out of descriptors or memory: say so, wait, try again.  Spinning
         * on accept would only burn the CPU the server needs to free them. */
        unsigned ms = op->u.accept.backoff_ms ? op->u.accept.backoff_ms * 2 : 10;
        /* Capped low enough that accepting resumes well within a second of
         * descriptors freeing; four tries a second cost nothing. */
        if (ms > 250)
            ms = 250;
        op->u.accept.backoff_ms = ms;
        op->state = ST_BACKOFF;
        struct io_uring_sqe *sqe = io_uring_get_sqe(&loop->ring);
        if (!sqe) {
            io_uring_submit(&loop->ring);
            sqe = io_uring_get_sqe(&loop->ring);
        }
        if (sqe) {
            io_uring_sqe_set_data64(sqe, EDDY_UD(op, TAG_BACKOFF));
            loop->inflight++;
            set_ts(op, eddy_update_time(loop) + (int64_t)ms * 1000000);
            io_uring_prep_timeout(sqe, (struct __kernel_timespec *)&op->ts, 0,
                                  IORING_TIMEOUT_ABS);
        } else {
            op_arm(loop, op); /* no SQE even for a timer: retry at once */
        }
        op_deliver(loop, op, res, 0);
        return;
    }
    op_finish(loop, op, res);
}

void op_backoff_done(struct eddy_loop *loop, struct eddy_op *op, int res)
{
    if (op->pflags & PF_CANCEL || (res != -ETIME && res != 0)) {
        op_finish(loop, op, -ECANCELED);
        return;
    }
    op_arm(loop, op);
}

static void complete_recv_multi(struct eddy_loop *loop, struct eddy_op *op,
                                int res, unsigned cflags)
{
    struct eddy_bufpool *pool = op->u.recvm.pool;
    bool more = cflags & IORING_CQE_F_MORE;
    bool cancel = op->pflags & PF_CANCEL;
    uint16_t bid = 0;
    bool has_buf = false;
    if (pool->ring && (cflags & IORING_CQE_F_BUFFER)) {
        bid = (uint16_t)(cflags >> IORING_CQE_BUFFER_SHIFT);
        pool->out++;
        has_buf = true;
    } else if (op->pflags & PF_HAS_BUF) {
        bid = op->bid;
        op->pflags &= ~PF_HAS_BUF;
        has_buf = true;
    }
    if (res > 0) {
        if (op->pflags & PF_ONCE) {
            op_finish_buffer(loop, op, res, bid); /* data wins over a cancel */
            return;
        }
        if (!more) {
            if (cancel) {
                op_defer_final(loop, op, -ECANCELED);
            } else {
                op_arm(loop, op);
            }
        }
        op->buf = eddy_bufpool_buf(pool, bid);
        /* The fallback's re-armed recv already holds its next buffer in
         * op->bid: lend op->bid to the callback, then restore it, or the
         * next completion would report this buffer instead of its own. */
        uint16_t kbid = op->bid;
        bool lent = op->pflags & PF_HAS_BUF;
        op->bid = bid;
        op_deliver(loop, op, res, EDDY_OP_BUFFER);
        if (lent && (op->pflags & PF_HAS_BUF))
            op->bid = kbid;
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
            op_arm(loop, op);
        else
            bufpool_park(pool, op);
        return;
    }
    op_finish(loop, op, cancel ? -ECANCELED : res);
}

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
    if (res > 0) {
        op->u.send.done += (uint32_t)res;
        if (op->u.send.done < op->u.send.len) {
            if (op->pflags & PF_CANCEL) {
                send_finish(loop, op, -ECANCELED);
                return;
            }
            op_arm(loop, op); /* a short send: the rest goes out now */
            return;
        }
        send_finish(loop, op, (int)op->u.send.done);
        return;
    }
    if (res == -EAGAIN && wait_ready(loop, op))
        return;
    send_finish(loop, op, res == 0 ? -EPIPE : res);
}

/* Moves msg's iovecs past n sent bytes; returns true if bytes remain. */
static bool iov_advance(struct msghdr *msg, size_t n)
{
    while (msg->msg_iovlen && n >= msg->msg_iov[0].iov_len) {
        n -= msg->msg_iov[0].iov_len;
        msg->msg_iov++;
        msg->msg_iovlen--;
    }
    if (msg->msg_iovlen) {
        msg->msg_iov[0].iov_base = (char *)msg->msg_iov[0].iov_base + n;
        msg->msg_iov[0].iov_len -= n;
    }
    while (msg->msg_iovlen && msg->msg_iov[0].iov_len == 0) {
        msg->msg_iov++;
        msg->msg_iovlen--;
    }
    return msg->msg_iovlen > 0;
}

static void complete_sendmsg(struct eddy_loop *loop, struct eddy_op *op, int res)
{
    if (res > 0) {
        op->u.sendmsg.done += (size_t)res;
        if (iov_advance(op->u.sendmsg.msg, (size_t)res)) {
            if (op->pflags & PF_CANCEL) {
                op_finish(loop, op, -ECANCELED);
                return;
            }
            op_arm(loop, op);
            return;
        }
        op_finish(loop, op, (int)op->u.sendmsg.done);
        return;
    }
    if (res == 0 && op->u.sendmsg.msg->msg_iovlen == 0) {
        op_finish(loop, op, (int)op->u.sendmsg.done);
        return;
    }
    if (res == -EAGAIN && wait_ready(loop, op))
        return;
    op_finish(loop, op, res == 0 ? -EPIPE : res);
}

static void complete_timer(struct eddy_loop *loop, struct eddy_op *op, int res)
{
    if (op->pflags & PF_REARM) {
        op->pflags &= ~PF_REARM;
        if (res == -ECANCELED && !(op->pflags & PF_CANCEL)) {
            op_arm(loop, op); /* eddy_timer_update() without TIMEOUT_UPDATE */
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
    op_arm(loop, op);
    op_deliver(loop, op, 0, 0);
}

void op_complete(struct eddy_loop *loop, struct eddy_op *op, int res, unsigned cflags)
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

/* ---- starters --------------------------------------------------------- */

/* Every starter goes through op_start() with its verdict on its own
 * arguments (0 or -errno): -EBUSY and deadline rules live there, once. */
#define START(kind, err)                                                       \
    do {                                                                       \
        int rc_ = op_start(loop, op, (kind), cb, (err));                       \
        if (rc_ < 0)                                                           \
            return rc_;                                                        \
    } while (0)

int eddy_accept(struct eddy_loop *loop, struct eddy_op *op, int fd,
                struct sockaddr *addr, socklen_t *addrlen, int flags, eddy_cb cb)
{
    START(K_ACCEPT, fd < 0 ? -EINVAL : 0);
    op->u.accept.fd = fd;
    op->u.accept.addr = addr;
    op->u.accept.addrlen = addrlen;
    op->u.accept.flags = flags;
    op->u.accept.backoff_ms = 0;
    op_arm(loop, op);
    return 0;
}

int eddy_connect(struct eddy_loop *loop, struct eddy_op *op, int fd,
                 const struct sockaddr *addr, socklen_t len, eddy_cb cb)
{
    START(K_CONNECT, fd < 0 || !addr ? -EINVAL : 0);
    op->u.connect.fd = fd;
    op->u.connect.addr = addr;
    op->u.connect.len = len;
    op_arm(loop, op);
    return 0;
}

int eddy_recv(struct eddy_loop *loop, struct eddy_op *op, int fd, void *buf,
              size_t len, unsigned msgflags, eddy_cb cb)
{
    START(K_RECV, fd < 0 || (!buf && len) ? -EINVAL : 0);
    op->u.recv.fd = fd;
    op->u.recv.buf = buf;
    op->u.recv.len = len;
    op->u.recv.msgflags = msgflags;
    op_arm(loop, op);
    return 0;
}

static int start_recv_pool(struct eddy_loop *loop, struct eddy_op *op, int fd,
                           struct eddy_bufpool *pool, unsigned pflags, eddy_cb cb)
{
    START(K_RECV_MULTI, fd < 0 || !pool || pool->loop != loop ? -EINVAL : 0);
    op->pflags |= pflags;
    op->u.recvm.fd = fd;
    op->u.recvm.pool = pool;
    pool->users++;
    op_arm(loop, op);
    return 0;
}

int eddy_recv_multi(struct eddy_loop *loop, struct eddy_op *op, int fd,
                    struct eddy_bufpool *pool, eddy_cb cb)
{
    return start_recv_pool(loop, op, fd, pool, 0, cb);
}

int eddy_recv_once(struct eddy_loop *loop, struct eddy_op *op, int fd,
                   struct eddy_bufpool *pool, eddy_cb cb)
{
    return start_recv_pool(loop, op, fd, pool, PF_ONCE, cb);
}

static int start_send(struct eddy_loop *loop, struct eddy_op *op, int fd,
                      const void *buf, size_t len, unsigned msgflags, bool zc, eddy_cb cb)
{
    START(K_SEND, fd < 0 || !buf || len == 0 || len > INT32_MAX ? -EINVAL : 0);
    op->u.send.fd = fd;
    op->u.send.buf = buf;
    op->u.send.len = (uint32_t)len;
    op->u.send.done = 0;
    op->u.send.zc_notifs = 0;
    op->u.send.msgflags = msgflags;
    if (zc && (loop->features & EDDY_FEAT_SEND_ZC))
        op->pflags |= PF_ZC;
    op_arm(loop, op);
    return 0;
}

int eddy_send(struct eddy_loop *loop, struct eddy_op *op, int fd,
              const void *buf, size_t len, unsigned msgflags, eddy_cb cb)
{
    return start_send(loop, op, fd, buf, len, msgflags, false, cb);
}

int eddy_send_zc(struct eddy_loop *loop, struct eddy_op *op, int fd,
                 const void *buf, size_t len, unsigned msgflags, eddy_cb cb)
{
    return start_send(loop, op, fd, buf, len, msgflags, true, cb);
}

int eddy_sendmsg(struct eddy_loop *loop, struct eddy_op *op, int fd,
                 struct msghdr *msg, unsigned msgflags, eddy_cb cb)
{
    size_t total = 0;
    if (fd >= 0 && msg && (msg->msg_iov || !msg->msg_iovlen))
        for (size_t i = 0; i < msg->msg_iovlen && total <= INT32_MAX; i++)
            total += msg->msg_iov[i].iov_len;
    START(K_SENDMSG, total == 0 || total > INT32_MAX ? -EINVAL : 0);
    op->u.sendmsg.fd = fd;
    op->u.sendmsg.msg = msg;
    op->u.sendmsg.msgflags = msgflags;
    op->u.sendmsg.done = 0;
    op_arm(loop, op);
    return 0;
}

static int start_rw(struct eddy_loop *loop, struct eddy_op *op, int kind, int fd,
                    void *buf, unsigned len, uint64_t offset, eddy_cb cb)
{
    START(kind, fd < 0 || (!buf && len) ? -EINVAL : 0);
    op->u.rw.fd = fd;
    op->u.rw.buf = buf;
    op->u.rw.len = len;
    op->u.rw.off = offset;
    op_arm(loop, op);
    return 0;
}

int eddy_read(struct eddy_loop *loop, struct eddy_op *op, int fd, void *buf,
              unsigned len, uint64_t offset, eddy_cb cb)
{
    return start_rw(loop, op, K_READ, fd, buf, len, offset, cb);
}

int eddy_write(struct eddy_loop *loop, struct eddy_op *op, int fd,
               const void *buf, unsigned len, uint64_t offset, eddy_cb cb)
{
    return start_rw(loop, op, K_WRITE, fd, (void *)buf, len, offset, cb);
}

int eddy_close(struct eddy_loop *loop, struct eddy_op *op, int fd, eddy_cb cb)
{
    START(K_CLOSE, fd < 0 ? -EBADF : 0);
    op->u.shut.fd = fd;
    op_arm(loop, op);
    return 0;
}

int eddy_shutdown(struct eddy_loop *loop, struct eddy_op *op, int fd, int how,
                  eddy_cb cb)
{
    START(K_SHUTDOWN, fd < 0 ? -EBADF : 0);
    op->u.shut.fd = fd;
    op->u.shut.how = how;
    if (!(loop->features & EDDY_FEAT_SHUTDOWN)) {
        /* Before 5.11: the system call, its result as a completion. */
        int rc = shutdown(fd, how);
        op_defer_final(loop, op, rc < 0 ? -errno : 0);
        return 0;
    }
    op_arm(loop, op);
    return 0;
}

int eddy_poll(struct eddy_loop *loop, struct eddy_op *op, int fd,
              unsigned events, eddy_cb cb)
{
    START(K_POLL, fd < 0 ? -EBADF : 0);
    op->u.poll.fd = fd;
    op->u.poll.events = events;
    op_arm(loop, op);
    return 0;
}

static int start_timer(struct eddy_loop *loop, struct eddy_op *op, int64_t abs_ns,
                       int64_t interval_ns, int err, eddy_cb cb)
{
    START(K_TIMER, err);
    op->u.timer.next_ns = abs_ns;
    op->u.timer.interval_ns = interval_ns;
    if (interval_ns)
        op->pflags |= PF_REPEAT;
    op_arm(loop, op);
    return 0;
}

/* The largest relative time in ns: now + it cannot overflow. */
#define TIMER_MAX_NS ((uint64_t)INT64_MAX / 2)

int eddy_timer_at(struct eddy_loop *loop, struct eddy_op *op, int64_t abs_ns, eddy_cb cb)
{
    return start_timer(loop, op, abs_ns, 0, abs_ns < 0 ? -EINVAL : 0, cb);
}

int eddy_timer_ns(struct eddy_loop *loop, struct eddy_op *op, uint64_t ns, eddy_cb cb)
{
    if (ns > TIMER_MAX_NS)
        return start_timer(loop, op, 0, 0, -EINVAL, cb);
    /* A fresh clock, not the cached one: never fire early. */
    return start_timer(loop, op, eddy_update_time(loop) + (int64_t)ns, 0, 0, cb);
}

int eddy_timer(struct eddy_loop *loop, struct eddy_op *op, uint64_t ms, eddy_cb cb)
{
    if (ms > TIMER_MAX_NS / 1000000)
        return start_timer(loop, op, 0, 0, -EINVAL, cb);
    return eddy_timer_ns(loop, op, ms * 1000000, cb);
}

int eddy_timer_repeat(struct eddy_loop *loop, struct eddy_op *op,
                      uint64_t interval_ms, eddy_cb cb)
{
    if (interval_ms == 0 || interval_ms > TIMER_MAX_NS / 1000000)
        return start_timer(loop, op, 0, 0, -EINVAL, cb);
    int64_t iv = (int64_t)interval_ms * 1000000;
    return start_timer(loop, op, eddy_update_time(loop) + iv, iv, 0, cb);
}

int eddy_timer_update(struct eddy_loop *loop, struct eddy_op *op, uint64_t ms)
{
    if (op->kind != K_TIMER || op->loop != loop ||
        (op->state != ST_KERNEL && op->state != ST_QUEUED))
        return -ENOENT;
    if (op->pflags & PF_CANCEL)
        return -EALREADY;
    if (ms > TIMER_MAX_NS / 1000000)
        return -EINVAL;
    int64_t next = eddy_update_time(loop) + (int64_t)ms * 1000000;
    if (op->state == ST_QUEUED || (op->pflags & PF_REARM)) {
        /* Not prepared yet, or re-armed when the cancel lands: either way
         * the next prep reads this. */
        op->u.timer.next_ns = next;
        return 0;
    }
    struct io_uring_sqe *sqe = get_sqe_flush(loop);
    if (!sqe)
        return -EAGAIN;
    op->u.timer.next_ns = next;
    if (loop->features & EDDY_FEAT_TIMEOUT_UPDATE) {
        /* The kernel copies the new time when it handles the update. */
        set_ts(op, next);
        io_uring_prep_timeout_update(sqe, (struct __kernel_timespec *)&op->ts,
                                     EDDY_UD(op, TAG_OP), IORING_TIMEOUT_ABS);
    } else {
        /* Before 5.11: cancel it; complete_timer re-arms on the -ECANCELED. */
        op->pflags |= PF_REARM;
        io_uring_prep_cancel64(sqe, EDDY_UD(op, TAG_OP), 0);
    }
    sqe_set_aside(loop, sqe, op);
    return 0;
}

int eddy_work(struct eddy_loop *loop, struct eddy_op *op, eddy_work_fn fn, eddy_cb cb)
{
    START(K_WORK, fn ? 0 : -EINVAL);
    op->u.work.fn = fn;
    op->u.work.res = 0;
    int rc = wpool_submit(loop, op);
    if (rc < 0) {
        op_start_undo(loop, op);
        return rc;
    }
    return 0;
}
