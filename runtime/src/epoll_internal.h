/*
 * The epoll backend's own internals, shared by epoll.c (the backend
 * interface and the descriptors' wait queues), epoll_fd.c (the descriptor
 * table), epoll_heap.c (timers) and epoll_sys.c (the system call of each
 * op kind).  See epoll.c for the design.
 */
#ifndef EDDY_EPOLL_INTERNAL_H
#define EDDY_EPOLL_INTERNAL_H

#include "internal.h"

#include <assert.h>
#include <poll.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <unistd.h>

/* epoll events taken per wait at most (opts->cq_entries may ask fewer). */
#define EVENTS_MAX 128

/* fdent.st: what is remembered of a descriptor.  RDY_*: the direction may
 * be ready (an edge came, or nothing said otherwise since the
 * registration); clear = the last try said EAGAIN (or a short stream read
 * drained it) and no edge came since.  Valid while FD_REG. */
enum {
    RDY_IN = 1,
    RDY_OUT = 2,
    FD_REG = 4,     /* in the epoll set, and known to be the same file since */
    FD_TYPED = 8,   /* FD_STREAM is known (asked once per registration) */
    FD_STREAM = 16, /* a SOCK_STREAM socket: a short read drained it */
    FD_NOSHORT = 32, /* an edge said hang-up, error or urgent data: more may
                        wait after a short read with no edge to come (EOF
                        behind the data, the bytes past an urgent mark) */
    FD_SHORT1 = 64, /* a short read came before FD_TYPED: the next one asks
                       the type (a connection that reads once never does) */
    /* Bit 7 means one thing before the registration and another with it: */
    FD_FRESH = 128, /* without FD_REG: just returned by an accept whose
                       listener does not defer; its first read waits for an
                       edge instead of trying (the client's bytes are seldom
                       there yet; the registration reports them if they are) */
    FD_OUT = 128,   /* with FD_REG: the registration includes EPOLLOUT (the
                       first writer to wait adds it) */
};

/*
 * A wait queue: FIFO on the ops' next/prev links, its tail the head's
 * prev (one pointer, not two: the table has an entry per descriptor
 * number).  An op off every list has next == prev == NULL.
 */
struct opfifo {
    struct eddy_op *head;
};

static inline bool fifo_empty(const struct opfifo *q)
{
    return q->head == NULL;
}

static inline void fifo_push(struct opfifo *q, struct eddy_op *op)
{
    assert(!op->next && !op->prev && q->head != op);
    if (!q->head) {
        q->head = op;
        op->prev = op;
        return;
    }
    struct eddy_op *tail = q->head->prev;
    tail->next = op;
    op->prev = tail;
    q->head->prev = op;
}

static inline void fifo_remove(struct opfifo *q, struct eddy_op *op)
{
    if (op == q->head) {
        q->head = op->next;
        if (op->next)
            op->next->prev = op->prev;
    } else {
        op->prev->next = op->next;
        if (op->next)
            op->next->prev = op->prev;
        else
            q->head->prev = op->prev; /* op was the tail */
    }
    op->next = op->prev = NULL;
}

/* One descriptor: its wait queues and what is remembered of it.  32 bytes:
 * an idle connection's share of the table (see ep_fd_ent). */
struct fdent {
    struct opfifo rd, wr, pl;   /* readers, writers, pollers */
    int32_t retry_next;         /* next fd on the retry list, -1 = end */
    uint16_t busy;              /* ops of this fd the backend holds (PF_FDREF),
                                   saturating: an op past 65535 goes uncounted */
    uint8_t retry;              /* RDY_*: FIFOs to run again next iteration */
    uint8_t st;                 /* RDY_* and FD_* */
};
_Static_assert(sizeof(struct fdent) == 32, "struct fdent is an idle connection's cost");

/* A loop on epoll: the loop, then this (one allocation). */
struct epoll_loop {
    struct eddy_loop base;
    int epfd;
    bool no_pwait2;             /* the kernel lacks epoll_pwait2: ms waits */
    struct fdent *fds;          /* indexed by fd, grown in chunks */
    int nfds;
    int retry_head, retry_tail; /* fds whose FIFOs run again next iteration */
    struct eddy_op **heap;      /* min-heap on op->ts.tv_nsec; slot+1 in ts.tv_sec */
    unsigned nheap, capheap;
    unsigned budget;            /* results per FIFO per edge (fairness) */
    int maxevents;              /* events per wait, <= EVENTS_MAX */
    struct oplist done;         /* results in hand, for the next reap */
    int nevents;
    struct epoll_event events[EVENTS_MAX];
};

static inline struct epoll_loop *E(struct eddy_loop *loop)
{
    return eddy_container_of(loop, struct epoll_loop, base);
}

/* connect's -EAGAIN is a result, not a wait: carried under another name
 * until complete() gives it back. */
#define RES_EAGAIN INT32_MIN


/* The kinds that wait for room to write; pollers wait for anything; the
 * rest wait for bytes to read (a bit test, not a branch per kind). */
#define WRITE_KINDS (1u << K_CONNECT | 1u << K_SEND | 1u << K_SENDMSG | 1u << K_WRITE)
_Static_assert(K_INTERNAL_READ < 32, "a kind is a bit of an unsigned mask");

/* The readiness an op waits for (RDY_*; 0 for pollers: always tried). */
static inline unsigned op_dir(const struct eddy_op *op)
{
    if (op->kind == K_POLL)
        return 0;
    return (WRITE_KINDS >> op->kind) & 1 ? RDY_OUT : RDY_IN;
}

/* Which FIFO of its descriptor an op waits in. */
static inline struct opfifo *op_queue(struct fdent *f, const struct eddy_op *op)
{
    unsigned dir = op_dir(op);
    return dir == RDY_IN ? &f->rd : dir == RDY_OUT ? &f->wr : &f->pl;
}

/* ---- epoll_heap.c: timers, deadlines and accept back-offs --------------- */

#define HKEY(op) ((int64_t)(op)->ts.tv_nsec)

static inline bool in_heap(const struct eddy_op *op)
{
    return op->ts.tv_sec != 0;
}

/* Adds op with key (absolute ns); an op already in the heap is moved.
 * 0 or -ENOMEM. */
int ep_heap_push(struct eddy_loop *loop, struct eddy_op *op, int64_t key);
/* Takes op out of the heap, if it is in. */
void ep_heap_remove(struct eddy_loop *loop, struct eddy_op *op);
/* ns until the earliest key (0 if due), or -1: the heap is empty. */
int64_t ep_heap_timeout(struct eddy_loop *loop);

/* ---- epoll_sys.c: the system calls of each kind ------------------------ */

/*
 * The socket calls of a step, made with syscall(2) rather than through
 * libc's wrappers: those are pthread cancellation points, which in a
 * process with more than one thread (every loop group) cost two atomic
 * operations around each call, per message; and a loop thread is not to
 * be cancelled in the middle of a step anyway.  -1 and errno, as the
 * wrappers.
 */
static inline ssize_t ep_recv(int fd, void *buf, size_t len, int flags)
{
    return syscall(SYS_recvfrom, fd, buf, len, flags, NULL, NULL);
}

static inline ssize_t ep_send(int fd, const void *buf, size_t len, int flags)
{
    return syscall(SYS_sendto, fd, buf, len, flags, NULL, 0);
}

static inline ssize_t ep_sendmsg(int fd, const struct msghdr *msg, int flags)
{
    return syscall(SYS_sendmsg, fd, msg, flags);
}

static inline int ep_accept4(int fd, struct sockaddr *addr, socklen_t *len, int flags)
{
    return (int)syscall(SYS_accept4, fd, addr, len, flags);
}

bool ep_is_nonblocking(int fd);
bool ep_is_regular(int fd);
/* read/write of a descriptor that may be blocking: -EAGAIN unless poll(2)
 * says a blocking one is ready. */
int ep_rw_try(struct eddy_op *op, bool wr);
/* One try of a single-shot kind: its result, or -EAGAIN to wait. */
int ep_try_once(struct eddy_loop *loop, struct eddy_op *op);

/* ---- epoll_fd.c: the descriptor table ----------------------------------- */

struct fdent *fd_ent(struct eddy_loop *loop, int fd);
void fd_forget(struct eddy_loop *loop, int fd);
void op_unref(struct eddy_loop *loop, struct eddy_op *op);
void fd_accepted(struct eddy_loop *loop, int fd, bool defers);
bool fd_type_stream(struct fdent *f, int fd);
int fd_register(struct eddy_loop *loop, int fd, bool out, bool level);
/* A registered listener level-triggered (level) or edge-triggered again:
 * 0 or -errno (see EP_LEVEL in epoll_fd.c). */
int fd_level(struct eddy_loop *loop, int fd, bool level);
int fd_watch_out(struct eddy_loop *loop, int fd);
void fd_retry(struct eddy_loop *loop, int fd, unsigned dirs);

/* The entry of fd if the table has one (a descriptor that parked once). */
static inline struct fdent *fd_known(struct eddy_loop *loop, int fd)
{
    struct epoll_loop *e = E(loop);
    return fd >= 0 && fd < e->nfds ? &e->fds[fd] : NULL;
}

/* op is held by the backend on f's behalf: the registration stays known. */
static inline void fd_ref(struct fdent *f, struct eddy_op *op)
{
    if (!(op->pflags & PF_FDREF) && f->busy != UINT16_MAX) {
        op->pflags |= PF_FDREF;
        f->busy++;
    }
}

/* The backend no longer holds an op counted on fd. */
static inline void fd_unref(struct eddy_loop *loop, int fd)
{
    struct fdent *f = &E(loop)->fds[fd];
    assert(f->busy > 0);
    if (--f->busy == 0) /* the user may close it now: ask at the next park */
        f->st &= FD_NOSHORT; /* (kept: an edge it came with is not repeated) */
}

/* A try in op's direction said -EAGAIN: wait for the next edge. */
static inline void not_ready(struct eddy_loop *loop, const struct eddy_op *op)
{
    struct fdent *f = fd_known(loop, op_target_fd(op));
    if (f)
        f->st &= (uint8_t)~op_dir(op);
}

/* May a try of op's direction succeed?  Unknown counts as yes, but for a
 * read of a fresh connection (FD_FRESH). */
static inline bool may_be_ready(const struct fdent *f, const struct eddy_op *op)
{
    unsigned dir = op_dir(op);
    if (!dir || !f)
        return true;
    if (!(f->st & FD_REG))
        return !(dir == RDY_IN && (f->st & FD_FRESH));
    return f->st & dir;
}

/*
 * A read of got bytes out of asked, with msgflags: true (and the direction
 * marked not ready) when it emptied a stream socket's queue, so the next
 * read would say -EAGAIN until a new edge.  Not for a peek (the bytes
 * stay), nor for datagrams (one per read); the socket type is asked once
 * per registration.
 */
static inline bool read_drained(struct eddy_loop *loop, int fd, int got, size_t asked,
                                unsigned msgflags)
{
    struct fdent *f = fd_known(loop, fd);
    if (!f || (f->st & (FD_REG | FD_NOSHORT)) != FD_REG || got <= 0 || (size_t)got >= asked ||
        (msgflags & (MSG_PEEK | MSG_OOB)))
        return false;
    if (!(f->st & FD_TYPED) ? !fd_type_stream(f, fd) : !(f->st & FD_STREAM))
        return false;
    f->st &= (uint8_t)~RDY_IN;
    return true;
}

/* Does op wait for room to write (or for POLLOUT)? */
static inline bool wants_out(const struct eddy_op *op)
{
    return op_dir(op) == RDY_OUT || (op->kind == K_POLL && (op->u.poll.events & POLLOUT));
}

#endif
