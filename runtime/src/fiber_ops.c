/*
 * The awaiting forms of eddy.h's operations.  Every one is the same job —
 * check the fiber may wait, start the op with a callback that ends the
 * wait, await it — so each public call only fills a struct call (on the
 * fiber's stack) and hands it to await_call(); call_start() is the one
 * place that knows which starter each kind uses.  Only eddy.h's public
 * starters are used, so these run on every backend.
 */
#define _GNU_SOURCE
#include "fiber_internal.h"

#include <errno.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

enum call_kind {
    C_CONNECT, C_RECV, C_RECV_ONCE, C_SEND, C_SEND_ZC, C_SENDMSG, C_READ, C_WRITE,
    C_POLL, C_WORK, C_ACCEPT, C_CLOSE, C_SHUTDOWN, /* the last two: cleanup, exempt */
};

/* One awaiting call: its arguments, its op, and what some kinds bring back. */
struct call {
    struct eddy_fiber_op fo;
    enum call_kind kind;
    int fd;
    union {
        void *buf;
        const void *cbuf;
        struct msghdr *msg;
        const struct sockaddr *addr;
        struct sockaddr *out_addr;
        struct eddy_bufpool *pool;
        int (*fn)(void *arg);
    };
    size_t len;          /* bytes; socklen (connect); events (poll); how (shutdown) */
    unsigned flags;      /* msgflags; accept's flags */
    uint64_t off;        /* read/write offset */
    void *arg;           /* work */
    socklen_t *addrlen;  /* accept */
    struct fiber_sched *s;
    void *got_buf;       /* recv_once: the pool buffer */
    uint16_t got_bid;
    bool have;           /* accept: a descriptor in got */
    int got;
};

/* ---- accept: one descriptor per call ------------------------------------ */

/* eddy_accept() goes on accepting until cancelled; the first descriptor is
 * the answer, the ones that come before the cancel lands are kept for the
 * next call on the same listener. */
struct fiber_stash {
    struct fiber_stash *next;
    int lfd, fd;
};

static void stash_push(struct fiber_sched *s, int lfd, int fd)
{
    struct fiber_stash *st = eddy_loop_alloc(s->loop, sizeof *st);
    if (!st) {
        close(fd); /* out of memory: the connection is refused late */
        return;
    }
    st->lfd = lfd;
    st->fd = fd;
    st->next = NULL;
    struct fiber_stash **pp = &s->stash;
    while (*pp)
        pp = &(*pp)->next;
    *pp = st;
}

static int stash_take(struct fiber_sched *s, int lfd)
{
    for (struct fiber_stash **pp = &s->stash; *pp; pp = &(*pp)->next) {
        if ((*pp)->lfd == lfd) {
            struct fiber_stash *st = *pp;
            int fd = st->fd;
            *pp = st->next;
            eddy_loop_free(s->loop, st);
            return fd;
        }
    }
    return -1;
}

void fiber_stash_free(struct fiber_sched *s)
{
    while (s->stash) {
        struct fiber_stash *st = s->stash;
        s->stash = st->next;
        close(st->fd);
        eddy_loop_free(s->loop, st);
    }
}

static void accept_cb(struct eddy_op *op, int res)
{
    struct call *c = eddy_container_of(op, struct call, fo.op);
    if (op->flags & EDDY_OP_MORE) {
        if (!c->have) {
            c->have = true;
            c->got = res;
            eddy_cancel(c->s->loop, op);
        } else if (res >= 0) {
            stash_push(c->s, c->fd, res);
        }
        return;
    }
    eddy_fiber_op_cb(op, res);
}

/* A descriptor accepted ahead for this listener: the answer, no op. */
static bool accept_stashed(struct call *c)
{
    int fd = stash_take(c->s, c->fd);
    if (fd < 0)
        return false;
    if (c->out_addr && c->addrlen && getpeername(fd, c->out_addr, c->addrlen) < 0)
        *c->addrlen = 0;
    c->have = true;
    c->got = fd;
    return true;
}

/* ---- the other kinds' callbacks ------------------------------------------- */

static void once_cb(struct eddy_op *op, int res)
{
    struct call *c = eddy_container_of(op, struct call, fo.op);
    if (op->flags & EDDY_OP_BUFFER) {
        c->got_buf = op->buf;
        c->got_bid = op->bid;
    }
    eddy_fiber_op_cb(op, res);
}

static int work_tramp(struct eddy_op *op)
{
    struct call *c = eddy_container_of(op, struct call, fo.op);
    return c->fn(c->arg);
}

/* ---- one start, one await ----------------------------------------------- */

/* Starts c's op: 0, the starter's -errno, or 1 when done without one. */
static int call_start(struct eddy_loop *loop, struct call *c)
{
    struct eddy_op *op = &c->fo.op;
    eddy_cb cb = eddy_fiber_op_cb;
    switch (c->kind) {
    case C_CONNECT:
        return eddy_connect(loop, op, c->fd, c->addr, (socklen_t)c->len, cb);
    case C_RECV:
        return eddy_recv(loop, op, c->fd, c->buf, c->len, c->flags, cb);
    case C_RECV_ONCE:
        return eddy_recv_once(loop, op, c->fd, c->pool, once_cb);
    case C_SEND:
        return eddy_send(loop, op, c->fd, c->cbuf, c->len, c->flags, cb);
    case C_SEND_ZC:
        return eddy_send_zc(loop, op, c->fd, c->cbuf, c->len, c->flags, cb);
    case C_SENDMSG:
        return eddy_sendmsg(loop, op, c->fd, c->msg, c->flags, cb);
    case C_READ:
        return eddy_read(loop, op, c->fd, c->buf, (unsigned)c->len, c->off, cb);
    case C_WRITE:
        return eddy_write(loop, op, c->fd, c->cbuf, (unsigned)c->len, c->off, cb);
    case C_POLL:
        return eddy_poll(loop, op, c->fd, (unsigned)c->len, cb);
    case C_WORK:
        return eddy_work(loop, op, work_tramp, cb);
    case C_ACCEPT:
        if (accept_stashed(c))
            return 1;
        return eddy_accept(loop, op, c->fd, c->out_addr, c->addrlen, (int)c->flags, accept_cb);
    case C_CLOSE:
        return eddy_close(loop, op, c->fd, cb);
    case C_SHUTDOWN:
        return eddy_shutdown(loop, op, c->fd, (int)c->len, cb);
    }
    return -EINVAL;
}

/* Outside a fiber -EPERM; a cancelled fiber or a passed deadline starts
 * nothing (except cleanup: close and shutdown are never interrupted); a
 * starter's error is returned as is.  Every path uses up the deadline set
 * for this call. */
static int await_call(struct call *c)
{
    struct eddy_fiber *f = eddy__fiber_cur;
    if (!f)
        return -EPERM;
    bool exempt = c->kind == C_CLOSE || c->kind == C_SHUTDOWN;
    int rc = exempt ? 0 : fiber_pre(f);
    if (rc < 0)
        return rc;
    c->s = f->s;
    rc = call_start(f->s->loop, c);
    if (rc != 0 || exempt)
        f->call_deadline = 0;
    if (rc != 0)
        return rc < 0 ? rc : 0;
    return fiber_await_one(&c->fo, exempt);
}

/* ---- the public calls ----------------------------------------------------- */

int eddy_fiber_connect(int fd, const struct sockaddr *addr, socklen_t len)
{
    struct call c = {.kind = C_CONNECT, .fd = fd, .addr = addr, .len = len};
    return await_call(&c);
}

int eddy_fiber_recv(int fd, void *buf, size_t len, unsigned msgflags)
{
    struct call c = {.kind = C_RECV, .fd = fd, .buf = buf, .len = len, .flags = msgflags};
    return await_call(&c);
}

int eddy_fiber_send(int fd, const void *buf, size_t len, unsigned msgflags)
{
    struct call c = {.kind = C_SEND, .fd = fd, .cbuf = buf, .len = len, .flags = msgflags};
    return await_call(&c);
}

int eddy_fiber_send_zc(int fd, const void *buf, size_t len, unsigned msgflags)
{
    struct call c = {.kind = C_SEND_ZC, .fd = fd, .cbuf = buf, .len = len, .flags = msgflags};
    return await_call(&c);
}

int eddy_fiber_sendmsg(int fd, struct msghdr *msg, unsigned msgflags)
{
    struct call c = {.kind = C_SENDMSG, .fd = fd, .msg = msg, .flags = msgflags};
    return await_call(&c);
}

int eddy_fiber_read(int fd, void *buf, unsigned len, uint64_t offset)
{
    struct call c = {.kind = C_READ, .fd = fd, .buf = buf, .len = len, .off = offset};
    return await_call(&c);
}

int eddy_fiber_write(int fd, const void *buf, unsigned len, uint64_t offset)
{
    struct call c = {.kind = C_WRITE, .fd = fd, .cbuf = buf, .len = len, .off = offset};
    return await_call(&c);
}

int eddy_fiber_poll(int fd, unsigned events)
{
    struct call c = {.kind = C_POLL, .fd = fd, .len = events};
    return await_call(&c);
}

/* close and shutdown: cleanup, so neither cancellation nor deadlines stop them. */
int eddy_fiber_close(int fd)
{
    struct call c = {.kind = C_CLOSE, .fd = fd};
    return await_call(&c);
}

int eddy_fiber_shutdown(int fd, int how)
{
    struct call c = {.kind = C_SHUTDOWN, .fd = fd, .len = (size_t)how};
    return await_call(&c);
}

int eddy_fiber_work(int (*fn)(void *arg), void *arg)
{
    struct call c = {.kind = C_WORK, .fn = fn, .arg = arg};
    return await_call(&c);
}

int eddy_fiber_recv_once(int fd, struct eddy_bufpool *pool, void **buf, uint16_t *bid)
{
    struct call c = {.kind = C_RECV_ONCE, .fd = fd, .pool = pool};
    int rc = await_call(&c);
    if (c.got_buf) {
        if (rc > 0) {
            *buf = c.got_buf;
            *bid = c.got_bid;
        } else {
            eddy_bufpool_put(pool, c.got_bid); /* cannot happen: a buffer comes with bytes */
        }
    }
    return rc;
}

int eddy_fiber_accept(int fd, struct sockaddr *addr, socklen_t *addrlen, int flags)
{
    struct call c = {.kind = C_ACCEPT, .fd = fd, .out_addr = addr, .addrlen = addrlen,
                     .flags = (unsigned)flags};
    int rc = await_call(&c);
    return c.have ? c.got : rc;
}
