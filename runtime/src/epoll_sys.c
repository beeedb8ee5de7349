/*
 * The epoll backend's system calls: one non-blocking try of each op kind
 * (epoll.c decides when to try, and what -EAGAIN means for the wait).  A
 * blocking descriptor is never called blocking: MSG_DONTWAIT, poll(2)
 * first (read, write), or O_NONBLOCK for the duration of connect().
 */
#define _GNU_SOURCE
#include "epoll_internal.h"

#include <assert.h>
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

bool ep_is_nonblocking(int fd)
{
    int fl = fcntl(fd, F_GETFL);
    return fl >= 0 && (fl & O_NONBLOCK);
}

bool ep_is_regular(int fd)
{
    struct stat st;
    return fstat(fd, &st) == 0 && (S_ISREG(st.st_mode) || S_ISBLK(st.st_mode));
}

int ep_rw_try(struct eddy_op *op, bool wr)
{
    int fd = op->u.rw.fd;
    if (op->kind != K_INTERNAL_READ && !ep_is_nonblocking(fd)) {
        struct pollfd p = {.fd = fd, .events = wr ? POLLOUT : POLLIN};
        if (poll(&p, 1, 0) == 0)
            return -EAGAIN;
    }
    return op_rw_syscall(op, wr); /* -EWOULDBLOCK is -EAGAIN on Linux */
}

static int send_try(struct eddy_loop *loop, struct eddy_op *op)
{
    for (;;) {
        loop->st.sqes++;
        /* fault_clamp_len: the fault injector's short:N; the rest follows */
        unsigned len = fault_clamp_len(loop, op, op->u.send.len - op->u.send.done);
        ssize_t n = ep_send(op->u.send.fd, (const char *)op->u.send.buf + op->u.send.done, len,
                            (int)(op->u.send.msgflags | MSG_NOSIGNAL | MSG_DONTWAIT));
        if (n < 0) {
            if (errno == EINTR)
                continue;
            return -errno;
        }
        if (n == 0)
            return -EPIPE;
        op->u.send.done += (uint32_t)n;
        if (op->u.send.done == op->u.send.len)
            return (int)op->u.send.done;
        /* Short: the rest now, most likely -EAGAIN until the next edge. */
    }
}

static int sendmsg_try(struct eddy_loop *loop, struct eddy_op *op)
{
    for (;;) {
        loop->st.sqes++;
        const void *buf;
        size_t cut = fault_sendmsg_len(loop, op, &buf); /* short:N, else 0 */
        int flags = (int)(op->u.sendmsg.msgflags | MSG_NOSIGNAL | MSG_DONTWAIT);
        ssize_t n = cut ? ep_send(op->u.sendmsg.fd, buf, cut, flags)
                        : ep_sendmsg(op->u.sendmsg.fd, op->u.sendmsg.msg, flags);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            return -errno;
        }
        op->u.sendmsg.done += (size_t)n;
        if (!sendmsg_advance(op->u.sendmsg.msg, (size_t)n))
            return (int)op->u.sendmsg.done;
        if (n == 0)
            return -EPIPE;
    }
}

/* connect: the call first (a blocking socket made non-blocking for it);
 * then, on a writable edge, SO_ERROR says how it went.  PF_AGAIN marks a
 * connect in progress. */
static int connect_try(struct eddy_loop *loop, struct eddy_op *op)
{
    int fd = op->u.connect.fd;
    loop->st.sqes++;
    if (op->pflags & PF_AGAIN) {
        int err = 0;
        socklen_t len = sizeof err;
        if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &len) < 0)
            return -errno;
        return -err;
    }
    int fl = fcntl(fd, F_GETFL);
    if (fl >= 0 && !(fl & O_NONBLOCK))
        fcntl(fd, F_SETFL, fl | O_NONBLOCK);
    int rc = connect(fd, op->u.connect.addr, op->u.connect.len);
    int err = rc < 0 ? errno : 0;
    if (fl >= 0 && !(fl & O_NONBLOCK))
        fcntl(fd, F_SETFL, fl);
    if (err == EINPROGRESS || err == EINTR) {
        op->pflags |= PF_AGAIN;
        return -EAGAIN; /* wait for writable */
    }
    if (err == EAGAIN)
        return RES_EAGAIN; /* a real error here: no local port, or a full backlog */
    return -err;
}

static int poll_try(struct eddy_op *op)
{
    struct pollfd p = {.fd = op->u.poll.fd, .events = (short)op->u.poll.events};
    int n = poll(&p, 1, 0);
    if (n < 0)
        return -errno;
    if (p.revents & POLLNVAL)
        return -EBADF;
    return n ? p.revents : -EAGAIN;
}

int ep_try_once(struct eddy_loop *loop, struct eddy_op *op)
{
    ssize_t n;
    switch (op->kind) {
    case K_RECV:
        loop->st.sqes++;
        do
            n = ep_recv(op->u.recv.fd, op->u.recv.buf, op->u.recv.len,
                        (int)(op->u.recv.msgflags | MSG_DONTWAIT));
        while (n < 0 && errno == EINTR);
        return n < 0 ? -errno : (int)n;
    case K_SEND:
        return send_try(loop, op);
    case K_SENDMSG:
        return sendmsg_try(loop, op);
    case K_CONNECT:
        return connect_try(loop, op);
    case K_POLL:
        loop->st.sqes++;
        return poll_try(op);
    case K_READ:
    case K_INTERNAL_READ:
        loop->st.sqes++;
        return ep_rw_try(op, false);
    case K_WRITE:
        loop->st.sqes++;
        return ep_rw_try(op, true);
    default:
        assert(!"eddy: epoll: not a single-shot kind");
        return -EINVAL;
    }
}
