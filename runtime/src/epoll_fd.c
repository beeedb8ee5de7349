/*
 * The epoll backend's descriptor table (see epoll.c for the design): an
 * entry per descriptor number, its registration in the epoll set (reading
 * at once, writing from the first writer that waits), the count of ops the
 * backend holds on it, and what is remembered of its readiness: the
 * socket type behind a short read, a connection fresh from accept, the
 * descriptors to run again next iteration.
 */
#define _GNU_SOURCE
#include "epoll_internal.h"

#include <errno.h>
#include <string.h>
#include <sys/socket.h>

/*
 * The entry of fd, growing the table in chunks; NULL on -ENOMEM.  An entry
 * per descriptor number up to the highest one parked: by a quarter more
 * each time (few reallocations, at most a quarter of it unused), so an
 * idle connection costs about 32-40 bytes here.
 */
struct fdent *fd_ent(struct eddy_loop *loop, int fd)
{
    struct epoll_loop *e = E(loop);
    if (fd < e->nfds)
        return &e->fds[fd];
    int n = e->nfds + e->nfds / 4;
    if (n <= fd)
        n = fd + 1;
    n = (n + 63) & ~63;
    struct fdent *p = loop->alloc(loop->alloc_ud, e->fds, (size_t)n * sizeof *p);
    if (!p)
        return NULL;
    memset(p + e->nfds, 0, (size_t)(n - e->nfds) * sizeof *p);
    e->fds = p;
    e->nfds = n;
    return &p[fd];
}


/* The descriptor's number may now name another file: ask again. */
void fd_forget(struct eddy_loop *loop, int fd)
{
    struct fdent *f = fd_known(loop, fd);
    if (f)
        f->st = 0;
}

/* op leaves the backend without a final callback from it (to a pool's
 * waiters, or dropped): its count goes. */
void op_unref(struct eddy_loop *loop, struct eddy_op *op)
{
    if (op->pflags & PF_FDREF) {
        op->pflags &= ~PF_FDREF;
        fd_unref(loop, op_target_fd(op));
    }
}



/* accept returned fd: a new file under a number we may know.  Its entry
 * forgets the old one; a connection from a listener that does not defer
 * accept is FD_FRESH (the table grows for it: fd is a real descriptor). */
void fd_accepted(struct eddy_loop *loop, int fd, bool defers)
{
    struct fdent *f = defers ? fd_known(loop, fd) : fd_ent(loop, fd);
    if (f)
        f->st = defers ? 0 : FD_FRESH;
}

/* read_drained's question, once per registration: is fd a stream socket?
 * (The first short read does not ask: a connection that reads once never
 * does.)  Sets FD_TYPED and FD_STREAM on f; false if not a stream (yet). */
bool fd_type_stream(struct fdent *f, int fd)
{
    if (!(f->st & FD_SHORT1)) {
        f->st |= FD_SHORT1; /* may try once for nothing: no question yet */
        return false;
    }
    int type = 0;
    socklen_t len = sizeof type;
    f->st |= FD_TYPED;
    if (getsockopt(fd, SOL_SOCKET, SO_TYPE, &type, &len) == 0 && type == SOCK_STREAM)
        f->st |= FD_STREAM;
    return f->st & FD_STREAM;
}

/*
 * Puts fd in the epoll set, once per registration (see the top): a
 * descriptor closed outside eddy and its number reused would otherwise
 * keep a registration the kernel already dropped.  EEXIST: it stands (and
 * gets EPOLLOUT if out asks for it).  Readiness is unknown then, so both
 * directions may be ready.
 *
 * EPOLLOUT only once a writer waits (out; or fd_watch_out later): a socket
 * is writable from the start, so with it every new registration would be
 * reported at once, one event and often one more wait per connection for
 * nothing; most connections never wait to write.
 */
#define EP_EVENTS (EPOLLIN | EPOLLRDHUP | EPOLLPRI | EPOLLET)

/*
 * A listener is the one exception, level-triggered while an accept heads
 * its readers (PF_LEVEL; fd_level): edge-triggered, every edge would have
 * to be drained to the accept4 that says EAGAIN (an edge stands for one or
 * several connections), a system call per wait for nothing; level-triggered,
 * each wait says whether more are queued, so one accept per wait is all.
 * Without a parked accept (none, or one backing off) it is edge-triggered
 * again, or every wait would report the connections nobody takes.
 */
#define EP_LEVEL EPOLLIN

static uint32_t ep_events(bool out, bool level)
{
    return (level ? EP_LEVEL : EP_EVENTS) | (out ? EPOLLOUT : 0);
}

int fd_register(struct eddy_loop *loop, int fd, bool out, bool level)
{
    struct epoll_event ev = {.events = ep_events(out, level), .data.fd = fd};
    if (epoll_ctl(E(loop)->epfd, EPOLL_CTL_ADD, fd, &ev) == 0)
        return 0;
    if (errno != EEXIST)
        return -errno;
    if ((out || level) && epoll_ctl(E(loop)->epfd, EPOLL_CTL_MOD, fd, &ev) < 0)
        return -errno;
    return 0;
}

int fd_level(struct eddy_loop *loop, int fd, bool level)
{
    struct fdent *f = &E(loop)->fds[fd];
    struct epoll_event ev = {.events = ep_events(f->st & FD_OUT, level), .data.fd = fd};
    return epoll_ctl(E(loop)->epfd, EPOLL_CTL_MOD, fd, &ev) < 0 ? -errno : 0;
}

/* The first writer (or poller of POLLOUT) waits on a registration without
 * EPOLLOUT: add it.  The kernel then reports the direction's readiness as
 * it is now, so room made since the -EAGAIN is not missed. */
int fd_watch_out(struct eddy_loop *loop, int fd)
{
    struct eddy_op *head = E(loop)->fds[fd].rd.head; /* keeps a listener's level */
    bool level = head && (head->pflags & PF_LEVEL);
    struct epoll_event ev = {.events = ep_events(true, level), .data.fd = fd};
    return epoll_ctl(E(loop)->epfd, EPOLL_CTL_MOD, fd, &ev) < 0 ? -errno : 0;
}


/* Runs fd's FIFOs of dirs (RDY_*) again next iteration: an edge left
 * unfinished, or an op that may find its descriptor ready. */
void fd_retry(struct eddy_loop *loop, int fd, unsigned dirs)
{
    struct epoll_loop *e = E(loop);
    struct fdent *f = &e->fds[fd];
    if (f->retry) {
        f->retry |= (uint8_t)dirs;
        return;
    }
    f->retry = (uint8_t)dirs;
    f->retry_next = -1;
    if (e->retry_tail >= 0)
        e->fds[e->retry_tail].retry_next = fd;
    else
        e->retry_head = fd;
    e->retry_tail = fd;
}
