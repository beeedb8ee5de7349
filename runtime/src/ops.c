/*
 * The starters of the operations: each checks its arguments, records them
 * in the op and arms it in the backend (uring_submit.c and epoll.c say how
 * each kind becomes kernel work, uring_complete.c and epoll.c what it does
 * with its completions).
 */
#define _GNU_SOURCE
#include "internal.h"

#include <assert.h>
#include <errno.h>
#include <string.h>
#include <sys/socket.h>

/* ---- starters --------------------------------------------------------- */

/* Every starter goes through op_start() with its verdict on its own
 * arguments (0 or -errno): -EBUSY and deadline rules live there, once.
 * Only once it succeeds are the op's arguments written: an op already
 * active is left as it is. */

int eddy_accept(struct eddy_loop *loop, struct eddy_op *op, int fd,
                struct sockaddr *addr, socklen_t *addrlen, int flags, eddy_cb cb)
{
    int rc = op_start(loop, op, K_ACCEPT, cb, fd < 0 ? -EINVAL : 0);
    if (rc < 0)
        return rc;
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
    int rc = op_start(loop, op, K_CONNECT, cb, fd < 0 || !addr ? -EINVAL : 0);
    if (rc < 0)
        return rc;
    op->u.connect.fd = fd;
    op->u.connect.addr = addr;
    op->u.connect.len = len;
    op_arm(loop, op);
    return 0;
}

int eddy_recv(struct eddy_loop *loop, struct eddy_op *op, int fd, void *buf,
              size_t len, unsigned msgflags, eddy_cb cb)
{
    int rc = op_start(loop, op, K_RECV, cb, fd < 0 || (!buf && len) ? -EINVAL : 0);
    if (rc < 0)
        return rc;
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
    int bad = fd < 0 || !pool || pool->loop != loop;
    int rc = op_start(loop, op, K_RECV_MULTI, cb, bad ? -EINVAL : 0);
    if (rc < 0)
        return rc;
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
    int bad = fd < 0 || !buf || len == 0 || len > INT32_MAX;
    int rc = op_start(loop, op, K_SEND, cb, bad ? -EINVAL : 0);
    if (rc < 0)
        return rc;
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
    int rc = op_start(loop, op, K_SENDMSG, cb, total == 0 || total > INT32_MAX ? -EINVAL : 0);
    if (rc < 0)
        return rc;
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
    int rc = op_start(loop, op, kind, cb, fd < 0 || (!buf && len) ? -EINVAL : 0);
    if (rc < 0)
        return rc;
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
    int rc = op_start(loop, op, K_CLOSE, cb, fd < 0 ? -EBADF : 0);
    if (rc < 0)
        return rc;
    op->u.shut.fd = fd;
    op_arm(loop, op);
    return 0;
}

int eddy_shutdown(struct eddy_loop *loop, struct eddy_op *op, int fd, int how,
                  eddy_cb cb)
{
    int rc = op_start(loop, op, K_SHUTDOWN, cb, fd < 0 ? -EBADF : 0);
    if (rc < 0)
        return rc;
    op->u.shut.fd = fd;
    op->u.shut.how = how;
    if (!(loop->features & EDDY_FEAT_SHUTDOWN)) {
        /* Before 5.11: the system call, its result as a completion. */
        op_defer_final(loop, op, shutdown(fd, how) < 0 ? -errno : 0);
        return 0;
    }
    op_arm(loop, op);
    return 0;
}

int eddy_poll(struct eddy_loop *loop, struct eddy_op *op, int fd,
              unsigned events, eddy_cb cb)
{
    int rc = op_start(loop, op, K_POLL, cb, fd < 0 ? -EBADF : 0);
    if (rc < 0)
        return rc;
    op->u.poll.fd = fd;
    op->u.poll.events = events;
    op_arm(loop, op);
    return 0;
}

static int start_timer(struct eddy_loop *loop, struct eddy_op *op, int64_t abs_ns,
                       int64_t interval_ns, int err, eddy_cb cb)
{
    int rc = op_start(loop, op, K_TIMER, cb, err);
    if (rc < 0)
        return rc;
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
    if (op->state == ST_QUEUED) {
        /* Not prepared yet: its prep reads this. */
        op->u.timer.next_ns = next;
        return 0;
    }
    return loop->be->timer_update(loop, op, next);
}

int eddy_work(struct eddy_loop *loop, struct eddy_op *op, eddy_work_fn fn, eddy_cb cb)
{
    int rc = op_start(loop, op, K_WORK, cb, fn ? 0 : -EINVAL);
    if (rc < 0)
        return rc;
    op->u.work.fn = fn;
    op->u.work.res = 0;
    rc = wpool_submit(loop, op);
    if (rc < 0) {
        op_start_undo(loop, op);
        return rc;
    }
    return 0;
}
