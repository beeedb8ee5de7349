/*
 * The epoll backend: the same completion contract as uring.c on a
 * readiness API, for the kernels and containers that refuse io_uring
 * (seccomp profiles, kernel.io_uring_disabled, gVisor).  This file holds
 * the backend interface and the descriptors' wait queues; epoll_fd.c the
 * descriptor table (registrations and what is remembered of readiness),
 * epoll_sys.c the system call of each op kind, epoll_heap.c the timers.
 *
 * How an op travels.  arm() tries the system call at once (non-blocking:
 * MSG_DONTWAIT, or a descriptor we know is O_NONBLOCK) unless other ops
 * already wait on the same descriptor in the same direction (they keep
 * their turn), or the descriptor is known not to be ready (below).  A
 * result in hand goes on this backend's completion list (`done`), which
 * reap() drains on the loop's thread: never a callback from a starter or
 * from eddy_cancel().  -EAGAIN parks the op on its descriptor's FIFO of
 * readers, writers or pollers.  Each descriptor is registered once,
 * edge-triggered, for reading (and writing from the first writer that
 * waits: fd_register); an edge re-runs the head of the
 * matching FIFO until the kernel says -EAGAIN again.  Multishot kinds
 * (accept, recv_multi) stay at the head of their FIFO and deliver every
 * result of an edge (capped per edge for fairness: what is left is
 * retried next iteration as if a new edge had come).  The one exception
 * is a listener, level-triggered while an accept heads its readers
 * (PF_LEVEL): one connection per wait, and no accept4 only to hear EAGAIN
 * (see EP_LEVEL in epoll_fd.c).
 *
 * Parking costs no system call.  The registration is kept while the
 * backend holds an op of the descriptor (fdent.busy, counted by PF_FDREF
 * from the op's first park until its final callback has returned): the
 * contract forbids closing a descriptor that operations still use, so in
 * that span the number cannot have been closed and reused behind our
 * back.  When the count falls to 0 the registration is forgotten (not
 * removed) and the next park asks again (EPOLL_CTL_ADD; EEXIST means it
 * still stands).  eddy_close and a descriptor returned by accept forget
 * it at once; a connection just accepted from a listener that does not
 * defer accept (TCP_DEFER_ACCEPT) is registered by its first read before
 * any try, as its client's bytes are seldom there yet (FD_FRESH: one
 * recv(2) less per connection; the registration reports bytes that are
 * there).  With a live registration, each direction remembers whether
 * it may be ready (RDY_*): cleared by -EAGAIN, and by a read shorter than
 * asked from a stream socket (the queue was empty then; any later byte
 * raises a new edge; not once an edge reported hang-up or urgent data,
 * which a read can leave behind with no edge to come; the socket type is
 * asked at the second short read of a registration, so a connection that
 * reads once never asks), set again by every edge.  An op whose direction is
 * known not ready parks without trying: no recv that is sure to fail.
 *
 * Why our own completion list and not loop->pending: an op on pending is
 * turned into -ECANCELED by eddy_cancel(), and a result already taken from
 * the kernel (bytes received, a connection accepted) must win over a later
 * cancel, as it does on io_uring.  The list is drained first in every reap
 * and before each further step of an edge, so results are delivered in the
 * order they happened (a send that went out completes before the answer it
 * provoked is received, as on io_uring), and the loop does not sleep while
 * it holds anything.
 *
 * Timers, per-op deadlines and accept back-offs share one min-heap
 * (epoll_heap.c) whose earliest key bounds the sleep: epoll_pwait2 (5.11)
 * takes it in ns; before that epoll_wait's ms are rounded up, so a timer
 * never fires early (up to 1 ms late).
 *
 * Where epoll differs from io_uring, and what was chosen:
 *   - eddy_close() of a descriptor with ops parked on it ends them with
 *     -ECANCELED first (io_uring would leave them waiting on a file no one
 *     can reach), then closes.
 *   - Regular files run on the worker pool (work.c); sockets, pipes and
 *     the like wait for readiness.
 *   - No MSG_RING (eddy_post_to takes the eventfd path), no buffer ring
 *     (pools are user-space), send_zc is a plain send, shutdown is the
 *     system call: eddy_loop_features() is 0.
 *   - opts->entries bounds the results of one edge per FIFO (at most 64),
 *     opts->cq_entries the events taken per wait (at most 128): where a
 *     small SQ or CQ makes io_uring queue, these make epoll take the rest
 *     next iteration (the retry list; the kernel's ready list).  Neither
 *     is a full queue: sq_full and cq_overflows stay 0.
 *   - Counters (eddy.h documents them): sqes = system calls made for ops
 *     (and timers armed), completions = results delivered, submit_calls =
 *     epoll waits, inflight = parked ops plus heap entries (a deadline is
 *     a second one).
 */
#define _GNU_SOURCE
#include "epoll_internal.h"
#include "backend.h"

#include <assert.h>
#include <errno.h>
#include <poll.h>
#include <string.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#ifndef __NR_epoll_pwait2
#define __NR_epoll_pwait2 441
#endif

/* Results of one edge run per FIFO before the rest waits for the next
 * iteration: one busy listener or stream cannot starve the others. */
#define EDGE_BUDGET 64
/* Rounds of final callbacks per reap (see ep_reap). */
#define DONE_ROUNDS 4

#define IN_EVENTS (EPOLLIN | EPOLLRDHUP | EPOLLHUP | EPOLLERR | EPOLLPRI)
#define OUT_EVENTS (EPOLLOUT | EPOLLHUP | EPOLLERR)

static void drain_done(struct eddy_loop *loop);

/* The accept that kept its listener level-triggered (PF_LEVEL) left the
 * head of its readers: the next accept there keeps it so, or the
 * listener is edge-triggered again (see EP_LEVEL in epoll_fd.c). */
static __attribute__((noinline)) void level_pass(struct eddy_loop *loop, struct eddy_op *op)
{
    int fd = op_target_fd(op);
    struct fdent *f = &E(loop)->fds[fd];
    struct eddy_op *next = f->rd.head;
    op->pflags &= ~PF_LEVEL;
    if (next && next->kind == K_ACCEPT)
        next->pflags |= PF_LEVEL;
    else if (f->st & FD_REG)
        (void)fd_level(loop, fd, false); /* fails only if fd is gone, and its registration */
}

/* Takes op off its descriptor's FIFO (and the heap): it is done waiting. */
static void unpark(struct eddy_loop *loop, struct eddy_op *op)
{
    if (op->pflags & PF_PARKED) {
        struct fdent *f = &E(loop)->fds[op_target_fd(op)];
        fifo_remove(op_queue(f, op), op);
        op->pflags &= ~PF_PARKED;
        loop->inflight--;
        if (op->pflags & PF_LEVEL)
            level_pass(loop, op);
    }
    if (in_heap(op)) /* (the test inline: most ops have no deadline) */
        ep_heap_remove(loop, op);
}

/* The final result of op, delivered by the next drain of the done list. */
static void complete(struct eddy_loop *loop, struct eddy_op *op, int res)
{
    unpark(loop, op);
    op->res = res == RES_EAGAIN ? -EAGAIN : res;
    op->pflags |= PF_DONE;
    loop->st.completions++;
    oplist_push(&E(loop)->done, op);
}

/* Parks op at the tail of its FIFO (registering fd if it is not known to
 * be); its deadline goes on the heap. */
static void park(struct eddy_loop *loop, struct eddy_op *op)
{
    int fd = op_target_fd(op);
    struct fdent *f = fd_known(loop, fd);
    bool out = wants_out(op);
    /* An accept at the head of the readers: level-triggered (EP_LEVEL). */
    bool level = op->kind == K_ACCEPT && (!f || !(f->st & FD_REG) || fifo_empty(&f->rd));
    int rc = 0;
    if (!f || !(f->st & FD_REG)) {
        /* The kernel first: a bogus number never sizes the table. */
        rc = fd < 0 ? -EBADF : fd_register(loop, fd, out, level);
        if (!rc && !(f = fd_ent(loop, fd)))
            rc = -ENOMEM;
        if (!rc) /* readiness unknown: may be ready */
            f->st = (uint8_t)((f->st & FD_NOSHORT) | FD_REG | RDY_IN | RDY_OUT |
                              (out ? FD_OUT : 0));
    } else if (level) {
        rc = fd_level(loop, fd, true);
    } else if (out && !(f->st & FD_OUT)) {
        rc = fd_watch_out(loop, fd);
        if (!rc)
            f->st |= FD_OUT;
    }
    if (!rc && op->deadline_ns && !in_heap(op))
        rc = ep_heap_push(loop, op, op->deadline_ns);
    if (rc) {
        if (level && f && (f->st & FD_REG))
            (void)fd_level(loop, fd, false); /* the heap was full: as it was */
        complete(loop, op, rc);
        return;
    }
    if (level)
        op->pflags |= PF_LEVEL;
    fd_ref(f, op);
    fifo_push(op_queue(f, op), op);
    op->pflags |= PF_PARKED;
    loop->inflight++;
}

/* Parks a multishot op and, unless its descriptor is known not ready,
 * tries it next iteration (its results come from reap only). */
static void park_multishot(struct eddy_loop *loop, struct eddy_op *op)
{
    park(loop, op);
    if (!(op->pflags & PF_PARKED))
        return;
    int fd = op_target_fd(op);
    if (may_be_ready(&E(loop)->fds[fd], op))
        fd_retry(loop, fd, RDY_IN);
}

/* ---- multishot kinds: what one try does ------------------------------- */

/* What the head of a FIFO did: wait for the next edge, or go on. */
enum { STEP_WAIT, STEP_NEXT };

/* accept4 said EMFILE/ENFILE/ENOBUFS/ENOMEM: say so, wait, try again.
 * Spinning on accept would only burn the CPU the server needs to free
 * them. */
static int accept_backoff(struct eddy_loop *loop, struct eddy_op *op, int res)
{
    unsigned ms = accept_backoff_next(op);
    unpark(loop, op);
    if (ep_heap_push(loop, op, eddy_update_time(loop) + (int64_t)ms * 1000000) < 0) {
        complete(loop, op, res);
        return STEP_NEXT;
    }
    op->state = ST_BACKOFF;
    loop->st.completions++;
    op_deliver(loop, op, res, 0);
    return STEP_NEXT;
}

static int accept_step(struct eddy_loop *loop, struct eddy_op *op)
{
    loop->st.sqes++;
    if (op->pflags & PF_BLOCKING) {
        /* A blocking listener (left as the caller made it): accept4 only
         * when poll(2) says a connection waits, so the loop never blocks
         * (unless another process takes it in between). */
        struct pollfd p = {.fd = op->u.accept.fd, .events = POLLIN};
        if (poll(&p, 1, 0) == 0)
            return STEP_WAIT;
    }
    int fd = ep_accept4(op->u.accept.fd, op->u.accept.addr, op->u.accept.addrlen,
                        op->u.accept.flags);
    int res = fd >= 0 ? fd : -errno;
    if (res == -EAGAIN)
        return STEP_WAIT;
    if (res >= 0) {
        fd_accepted(loop, res, op->pflags & PF_DEFERS);
        op->u.accept.backoff_ms = 0;
        loop->st.completions++;
        /* Before the callback, which may end the op and reuse it.
         * Level-triggered, the next wait says whether more are queued:
         * no accept4 to hear EAGAIN. */
        bool level = op->pflags & PF_LEVEL;
        op_deliver(loop, op, res, 0);
        return level ? STEP_WAIT : STEP_NEXT;
    }
    if (accept_transient(res))
        return STEP_NEXT; /* quietly, the next one */
    if (accept_exhausted(res))
        return accept_backoff(loop, op, res);
    complete(loop, op, res); /* -EBADF, -EINVAL, -ENOTSOCK: final */
    return STEP_NEXT;
}

/* A buffer back to the pool's free stack, without waking parked ops. */
static void buf_unget(struct eddy_bufpool *pool, uint16_t bid)
{
    pool->free_ids[pool->nfree++] = bid;
}

/* The pool is dry: wait for eddy_bufpool_put(), which arms the op again.
 * The bytes stay in the socket: none is lost. */
static void recvm_dry(struct eddy_loop *loop, struct eddy_op *op)
{
    loop->st.enobufs++;
    unpark(loop, op);
    op_unref(loop, op);
    bufpool_park(op->u.recvm.pool, op);
}

static int recvm_step(struct eddy_loop *loop, struct eddy_op *op)
{
    struct eddy_bufpool *pool = op->u.recvm.pool;
    uint16_t bid;
    if (!bufpool_take(pool, &bid)) {
        recvm_dry(loop, op);
        return STEP_NEXT;
    }
    loop->st.sqes++;
    unsigned len = fault_clamp_len(loop, op, pool->size);
    ssize_t n;
    do
        n = ep_recv(op->u.recvm.fd, bufpool_buf(pool, bid), len, MSG_DONTWAIT);
    while (n < 0 && errno == EINTR);
    int res = n >= 0 ? (int)n : -errno;
    if (res == -EAGAIN) {
        buf_unget(pool, bid);
        not_ready(loop, op);
        return STEP_WAIT;
    }
    if (res <= 0) {
        buf_unget(pool, bid);
        complete(loop, op, res);
        return STEP_NEXT;
    }
    /* Before the callback, which may end the op and reuse it. */
    bool drained = read_drained(loop, op->u.recvm.fd, res, len, 0);
    if (op->pflags & PF_ONCE) {
        op->bid = bid;
        op->pflags |= PF_HAS_BUF;
        complete(loop, op, res);
        return drained ? STEP_WAIT : STEP_NEXT;
    }
    loop->st.completions++;
    op->buf = bufpool_buf(pool, bid);
    op->bid = bid;
    op_deliver(loop, op, res, EDDY_OP_BUFFER);
    return drained ? STEP_WAIT : STEP_NEXT;
}

/* The head of a FIFO tries again (an edge came): one step. */
static int step(struct eddy_loop *loop, struct eddy_op *op)
{
    if (op->kind == K_ACCEPT)
        return accept_step(loop, op);
    if (op->kind == K_RECV_MULTI)
        return recvm_step(loop, op);
    int res = ep_try_once(loop, op);
    if (res == -EAGAIN) {
        not_ready(loop, op);
        return STEP_WAIT;
    }
    bool drained = op->kind == K_RECV && read_drained(loop, op->u.recv.fd, res, op->u.recv.len,
                                                      op->u.recv.msgflags);
    complete(loop, op, res);
    return drained ? STEP_WAIT : STEP_NEXT;
}

/* Runs the FIFO of fd selected by which (0 rd, 1 wr) until it waits again
 * or the budget runs out (then the rest is replayed next iteration).
 * Results already in hand are delivered before each further step: they
 * happened first.  Callbacks may start, cancel and close anything: the
 * entry is looked up again after each step (the table may grow). */
static void run_fifo(struct eddy_loop *loop, int fd, int which)
{
    struct epoll_loop *e = E(loop);
    for (unsigned budget = e->budget, first = 1;; budget--, first = 0) {
        if (!first && !oplist_empty(&e->done))
            drain_done(loop);
        struct fdent *f = &e->fds[fd];
        struct eddy_op *op = which ? f->wr.head : f->rd.head;
        if (!op)
            return;
        if (budget == 0) {
            fd_retry(loop, fd, which ? RDY_OUT : RDY_IN);
            return;
        }
        if (step(loop, op) == STEP_WAIT)
            return;
    }
}

/* Pollers hear every event that matches what they wait for. */
static void run_pollers(struct eddy_loop *loop, int fd, uint32_t events)
{
    struct fdent *f = &E(loop)->fds[fd];
    struct eddy_op *op = f->pl.head;
    while (op) {
        struct eddy_op *next = op->next;
        uint32_t rev = events & (op->u.poll.events | POLLERR | POLLHUP);
        if (rev)
            complete(loop, op, (int)rev);
        op = next;
    }
}

static void fd_events(struct eddy_loop *loop, int fd, uint32_t ev)
{
    struct fdent *f = fd_known(loop, fd);
    if (!f)
        return;
    if (ev & (EPOLLRDHUP | EPOLLHUP | EPOLLERR | EPOLLPRI))
        f->st |= FD_NOSHORT; /* until the number names another file */
    if (ev & IN_EVENTS) {
        f->st |= RDY_IN;
        run_fifo(loop, fd, 0);
    }
    if (ev & OUT_EVENTS) {
        E(loop)->fds[fd].st |= RDY_OUT;
        run_fifo(loop, fd, 1);
    }
    if (E(loop)->fds[fd].pl.head)
        run_pollers(loop, fd, ev);
}

/* ---- the backend interface ------------------------------------------- */

/* eddy_close: the ops parked on fd end first (-ECANCELED, as if cancelled:
 * on io_uring they would wait on a file nobody can reach any more), the
 * registration goes, then close(2), its result the op's. */
static void epoll_close_fd(struct eddy_loop *loop, struct eddy_op *op)
{
    int fd = op->u.shut.fd;
    struct fdent *f = fd_known(loop, fd);
    if (f) {
        bool any = false;
        for (int i = 0; i < 3; i++) {
            struct eddy_op *o;
            while ((o = (i == 0 ? f->rd : i == 1 ? f->wr : f->pl).head)) {
                o->pflags |= PF_CANCEL;
                complete(loop, o, -ECANCELED);
                any = true;
            }
        }
        if (any)
            epoll_ctl(E(loop)->epfd, EPOLL_CTL_DEL, fd, NULL);
        fd_forget(loop, fd);
    }
    loop->st.sqes++;
    complete(loop, op, close(fd) < 0 ? -errno : 0);
}

/* The kinds that need no descriptor's readiness (K_READ and K_WRITE
 * only on regular files); true if op was taken.  Out of ep_arm's line:
 * the sockets' path stays short. */
#define DIRECT_KINDS (1u << K_TIMER | 1u << K_CLOSE | 1u << K_SHUTDOWN | 1u << K_READ | 1u << K_WRITE)
static __attribute__((noinline)) bool arm_direct(struct eddy_loop *loop, struct eddy_op *op)
{
    switch (op->kind) {
    case K_TIMER: {
        loop->st.sqes++; /* counted as submitted, as on io_uring */
        int rc = ep_heap_push(loop, op, op->u.timer.next_ns);
        if (rc < 0)
            complete(loop, op, rc);
        return true;
    }
    case K_CLOSE:
        epoll_close_fd(loop, op);
        return true;
    case K_SHUTDOWN:
        loop->st.sqes++;
        complete(loop, op, shutdown(op->u.shut.fd, op->u.shut.how) < 0 ? -errno : 0);
        return true;
    case K_READ:
    case K_WRITE:
        /* Regular files never say EAGAIN and epoll cannot watch them
         * (EPERM): they go to the worker pool (work.c), whose finished jobs
         * come back through the loop's cross-thread queue.  Cancel then
         * behaves as for eddy_work(): -ECANCELED before a thread takes the
         * job, -EBUSY once it runs; a deadline is not enforced there.  If
         * the pool cannot start, the call runs here, on the loop thread. */
        if (!ep_is_regular(op->u.rw.fd))
            return false;
        loop->st.sqes++;
        if (wpool_submit(loop, op) == 0)
            return true;
        op->state = ST_KERNEL;
        complete(loop, op, ep_rw_try(op, op->kind == K_WRITE));
        return true;
    default:
        return false;
    }
}

/* accept, once per start: what accept4 would say of a descriptor that is
 * not a listening socket, without calling it on a blocking one.  False:
 * op ended with that error. */
static __attribute__((noinline)) bool accept_check(struct eddy_loop *loop, struct eddy_op *op)
{
    int fd = op->u.accept.fd, on = 0;
    socklen_t len = sizeof on;
    int err = getsockopt(fd, SOL_SOCKET, SO_ACCEPTCONN, &on, &len) < 0 ? -errno : 0;
    if (err || !on) {
        complete(loop, op, err ? err : -EINVAL);
        return false;
    }
    if (!ep_is_nonblocking(fd))
        op->pflags |= PF_BLOCKING;
    int defer = 0; /* off TCP the question fails: no deferring */
    len = sizeof defer;
    if (getsockopt(fd, IPPROTO_TCP, TCP_DEFER_ACCEPT, &defer, &len) == 0 && defer > 0)
        op->pflags |= PF_DEFERS;
    return true;
}

/* recv_once: take a buffer and read at once, or park (dry pool, or no
 * data yet). */
static void arm_recv_once(struct eddy_loop *loop, struct eddy_op *op)
{
    uint16_t bid;
    if (!bufpool_take(op->u.recvm.pool, &bid)) {
        recvm_dry(loop, op);
        return;
    }
    buf_unget(op->u.recvm.pool, bid);
    if (recvm_step(loop, op) == STEP_WAIT && !(op->pflags & PF_DONE)) {
        park(loop, op);
        not_ready(loop, op);
    }
}

static void ep_arm(struct eddy_loop *loop, struct eddy_op *op)
{
    drop_owed_cancel(loop, op);
    op->state = ST_KERNEL;
    op->ts.tv_sec = 0; /* not in the heap */
    if (((DIRECT_KINDS >> op->kind) & 1) && arm_direct(loop, op))
        return;
    /* Ops already waiting on fd in the same direction keep their turn.
     * (The table grows only when an op parks: by then the kernel has
     * accepted fd, so a bogus number never sizes it.) */
    struct fdent *f = fd_known(loop, op_target_fd(op));
    if (f && (f->st & FD_REG))
        fd_ref(f, op); /* keeps the registration known until its final */
    bool waiting = f && !fifo_empty(op_queue(f, op));
    if (op->kind == K_ACCEPT && !accept_check(loop, op))
        return;
    if (op->kind == K_ACCEPT || (op->kind == K_RECV_MULTI && !(op->pflags & PF_ONCE))) {
        park_multishot(loop, op);
        return;
    }
    if (waiting || !may_be_ready(f, op)) {
        park(loop, op); /* no try: it would say -EAGAIN */
        return;
    }
    if (op->kind == K_RECV_MULTI) {
        arm_recv_once(loop, op);
        return;
    }
    int res = ep_try_once(loop, op);
    if (res == -EAGAIN) {
        park(loop, op);
        not_ready(loop, op);
        return;
    }
    if (op->kind == K_RECV)
        read_drained(loop, op->u.recv.fd, res, op->u.recv.len, op->u.recv.msgflags);
    complete(loop, op, res);
}

static void ep_cancel(struct eddy_loop *loop, struct eddy_op *op)
{
    if (op->pflags & PF_DONE)
        return; /* its result is in hand: it wins */
    if (op->state == ST_BACKOFF || (op->pflags & PF_PARKED) || in_heap(op)) {
        complete(loop, op, -ECANCELED);
        return;
    }
    /* Nothing else holds an op in ST_KERNEL here. */
    assert(!"eddy: epoll: cancel of an op nowhere");
}

static int ep_timer_update(struct eddy_loop *loop, struct eddy_op *op, int64_t next)
{
    op->u.timer.next_ns = next;
    if (!in_heap(op))
        return 0; /* fired: the update is lost with it */
    return ep_heap_push(loop, op, next);
}

static bool ep_post_to(struct eddy_loop *from, struct eddy_loop *to, struct eddy_op *op)
{
    (void)from, (void)to, (void)op;
    return false; /* no MSG_RING: eddy_post_threadsafe's eventfd */
}

static void ep_flush_backlog(struct eddy_loop *loop)
{
    (void)loop; /* never used: arm always finds room */
}

static int ep_enter(struct eddy_loop *loop, bool wait)
{
    struct epoll_loop *e = E(loop);
    int64_t ns = 0;
    if (wait && oplist_empty(&e->done) && e->retry_head < 0)
        ns = ep_heap_timeout(loop);
    loop->st.submit_calls++;
    int n = -1;
    if (!e->no_pwait2) {
        struct timespec ts = {.tv_sec = ns / 1000000000, .tv_nsec = ns % 1000000000};
        n = (int)syscall(__NR_epoll_pwait2, e->epfd, e->events, e->maxevents,
                         ns < 0 ? NULL : &ts, NULL, 0);
        if (n < 0 && errno == ENOSYS)
            e->no_pwait2 = true;
    }
    if (e->no_pwait2) {
        /* ms, rounded up: never wake before the timer is due. */
        int ms = ns < 0 ? -1 : (int)((ns + 999999) / 1000000);
        n = epoll_wait(e->epfd, e->events, e->maxevents, ms);
    }
    if (n < 0) {
        /* A signal (or a tracer) interrupted the wait: nothing is lost,
         * the next iteration waits again. */
        if (errno != EINTR)
            return -errno;
        n = 0;
    }
    e->nevents = n; /* n == maxevents: more may be ready, the next wait takes them */
    return 0;
}

/* An accept's back-off is over: accept again. */
static void backoff_over(struct eddy_loop *loop, struct eddy_op *op)
{
    ep_heap_remove(loop, op);
    op->state = ST_KERNEL;
    park(loop, op);
    if (op->pflags & PF_PARKED)
        fd_retry(loop, op->u.accept.fd, RDY_IN);
}

static void run_timers(struct eddy_loop *loop)
{
    struct epoll_loop *e = E(loop);
    int64_t now = loop->now_ns;
    /* Bounded: a repeating timer re-armed into the past waits a turn. */
    for (unsigned budget = e->nheap; budget && e->nheap; budget--) {
        struct eddy_op *op = e->heap[0];
        if (HKEY(op) > now)
            return;
        if (op->state == ST_BACKOFF) {
            backoff_over(loop, op);
            continue;
        }
        if (op->kind != K_TIMER) {
            complete(loop, op, -ECANCELED); /* the deadline: op_end says -ETIME */
            continue;
        }
        if (!(op->pflags & PF_REPEAT)) {
            complete(loop, op, 0);
            continue;
        }
        /* Next tick from the previous deadline, not from now: no drift.
         * After a long stall, skip the missed ticks rather than burst. */
        op->u.timer.next_ns += op->u.timer.interval_ns;
        if (op->u.timer.next_ns <= now)
            op->u.timer.next_ns = now + op->u.timer.interval_ns;
        ep_heap_push(loop, op, op->u.timer.next_ns); /* in the heap: cannot fail */
        loop->st.completions++;
        op_deliver(loop, op, 0, 0);
    }
}

/* Final callbacks of the results in hand (those their callbacks produce
 * wait for the next drain).  An op counted on its descriptor is uncounted
 * after its callback returns: until then its owner may not close it. */
static void drain_done(struct eddy_loop *loop)
{
    struct oplist batch = E(loop)->done;
    E(loop)->done.head = E(loop)->done.tail = NULL;
    struct eddy_op *op;
    while ((op = oplist_pop(&batch))) {
        int ref = op->pflags & PF_FDREF ? op_target_fd(op) : -1;
        bool buf = op->kind == K_RECV_MULTI && (op->pflags & PF_HAS_BUF);
        if (buf && op->res > 0) {
            op_finish_buffer(loop, op, op->res, op->bid);
        } else {
            if (buf)
                eddy_bufpool_put(op->u.recvm.pool, op->bid);
            op_finish(loop, op, op->res);
        }
        if (ref >= 0)
            fd_unref(loop, ref);
    }
}

static void ep_reap(struct eddy_loop *loop)
{
    struct epoll_loop *e = E(loop);
    /* Results in hand since the last reap (ops started by deferred finals
     * and posts, or left over from the rounds below) come before the
     * events just read: they happened first. */
    if (!oplist_empty(&e->done))
        drain_done(loop);
    int n = e->nevents;
    e->nevents = 0;
    /* The woken descriptors' entries, all asked for before the first is
     * read: the kernel's work since the last look has evicted them, and
     * the misses then overlap instead of coming one per event. */
    for (int i = 0; i < n; i++) {
        int fd = e->events[i].data.fd;
        if (fd >= 0 && fd < e->nfds)
            __builtin_prefetch(&e->fds[fd]);
    }
    for (int i = 0; i < n; i++)
        fd_events(loop, e->events[i].data.fd, e->events[i].events);
    /* Edges left unfinished (budget) and fresh multishot arms. */
    int fd = e->retry_head;
    e->retry_head = e->retry_tail = -1;
    while (fd >= 0) {
        struct fdent *f = &e->fds[fd];
        int next = f->retry_next;
        unsigned dirs = f->retry;
        f->retry = 0;
        if (dirs & RDY_IN)
            run_fifo(loop, fd, 0);
        if (dirs & RDY_OUT)
            run_fifo(loop, fd, 1);
        fd = next;
    }
    run_timers(loop);
    /* Results the callbacks produced at once (a send that went out whole)
     * are delivered now rather than after another epoll_wait; bounded, so
     * descriptors are polled again soon. */
    for (int round = 0; round < DONE_ROUNDS && !oplist_empty(&e->done); round++)
        drain_done(loop);
}

static void ep_settle(struct eddy_loop *loop)
{
    (void)loop;
}

static void ep_flush_late(struct eddy_loop *loop, int64_t now)
{
    (void)now;
    loop->queued = false; /* nothing is ever queued: calls go out at once */
}

static int ep_buf_register(struct eddy_loop *loop, struct eddy_bufpool *pool)
{
    (void)loop, (void)pool;
    return 1; /* the user-space pool serves */
}

static void ep_buf_unregister(struct eddy_bufpool *pool)
{
    (void)pool;
}

static void ep_buf_put(struct eddy_bufpool *pool, uint16_t bid)
{
    (void)pool, (void)bid;
}

static int ep_init(struct eddy_loop *loop, const struct eddy_loop_options *o,
                   unsigned disable)
{
    (void)disable;
    struct epoll_loop *e = E(loop);
    e->epfd = epoll_create1(EPOLL_CLOEXEC);
    if (e->epfd < 0)
        return -errno;
    e->retry_head = e->retry_tail = -1;
    /* The bounds a full SQ and a full CQ are on io_uring (see the top). */
    unsigned entries = o ? o->entries : 0, cq = o ? o->cq_entries : 0;
    e->budget = entries && entries < EDGE_BUDGET ? entries : EDGE_BUDGET;
    e->maxevents = cq && cq < EVENTS_MAX ? (int)cq : EVENTS_MAX;
    loop->features = 0; /* every EDDY_FEAT_* is an io_uring feature */
    loop->setup_flags = 0;
    return 0;
}

static int ep_bind(struct eddy_loop *loop)
{
    (void)loop;
    return 0;
}

/* An internal op (wake-up read, signalfd poll) let go without a callback. */
static void drop_internal(struct eddy_loop *loop, struct eddy_op *op)
{
    if (op->state == ST_IDLE)
        return;
    unpark(loop, op);
    op_unref(loop, op);
    if (op->pflags & PF_DONE)
        oplist_remove(&E(loop)->done, op);
    op->state = ST_IDLE;
    op->pflags = 0;
}

static void ep_destroy(struct eddy_loop *loop)
{
    struct epoll_loop *e = E(loop);
    drop_internal(loop, &loop->wake_op);
    drop_internal(loop, &loop->sig_op);
    if (e->epfd >= 0)
        close(e->epfd);
    loop_free(loop, e->fds);
    loop_free(loop, e->heap);
    e->fds = NULL;
    e->heap = NULL;
}

const struct backend backend_epoll = {
    .name = "epoll",
    .loop_size = sizeof(struct epoll_loop),
    .lazy_bufs = true, /* the buffer is taken at the system call */
    .init = ep_init,
    .bind = ep_bind,
    .destroy = ep_destroy,
    .arm = ep_arm,
    .cancel = ep_cancel,
    .timer_update = ep_timer_update,
    .post_to = ep_post_to,
    .flush_backlog = ep_flush_backlog,
    .enter = ep_enter,
    .reap = ep_reap,
    .settle = ep_settle,
    .flush_late = ep_flush_late,
    .buf_register = ep_buf_register,
    .buf_unregister = ep_buf_unregister,
    .buf_put = ep_buf_put,
};
