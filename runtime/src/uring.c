/*
 * The io_uring backend, whole: ring set-up and feature probe, an op's SQEs
 * per kind, submission with back-pressure, reaping, and what each kind does
 * with its CQEs (re-arm, re-submit the rest, wait for readiness on -EAGAIN,
 * back off on EMFILE, zero-copy notifications).  It plugs into the loop
 * through backend.h; the contract's bookkeeping (final callbacks, deferred
 * delivery, cancel states, the backlog) stays in loop.c.
 *
 * Every SQE carries its op's address as user_data, with what it is for in
 * the low 3 bits (ops are 8-aligned): the one choke point that sees every
 * completion is dispatch().
 */
#define _GNU_SOURCE
#include "internal.h"
#include "backend.h"

#include <assert.h>
#include <errno.h>
#include <liburing.h>
#include <poll.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

/* The low 3 bits of user_data say what a CQE is for; ops are 8-aligned. */
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

static void uring_arm(struct eddy_loop *loop, struct eddy_op *op);
static void uring_reap(struct eddy_loop *loop);

/* ---- set-up ----------------------------------------------------------- */

const char *eddy_loop_init_explain(int err)
{
    switch (err) {
    case -ENOSYS:
        return "io_uring is not available: this kernel was built without it "
               "(CONFIG_IO_URING) or a seccomp filter (container runtime) "
               "blocks io_uring_setup; run on Linux >= 5.10 with io_uring "
               "allowed";
    case -EPERM:
        return "io_uring is disabled for this process: sysctl "
               "kernel.io_uring_disabled is 2 (or 1 and this user is not in "
               "kernel.io_uring_group), or a seccomp filter denies "
               "io_uring_setup; set kernel.io_uring_disabled=0 or allow the "
               "system calls";
    case -ENOMEM:
        return "io_uring could not allocate its rings: on kernels before "
               "5.12 ring memory counts against RLIMIT_MEMLOCK (ulimit -l); "
               "raise that limit or use a smaller queue depth";
    case -EMFILE:
    case -ENFILE:
        return "no file descriptor left for the io_uring instance; raise "
               "ulimit -n";
    case -EINVAL:
        return "the kernel rejected the io_uring parameters (kernel older "
               "than 5.10?)";
    default:
        return "io_uring set-up failed";
    }
}

/* Tries the best setup flags first; returns 0 or -errno of the last try. */
static int setup_ring(struct eddy_loop *loop, unsigned disable)
{
    static const struct {
        unsigned flags, needs;
    } tiers[] = {
        /* A single-issuer ring is born disabled: it belongs to the task
         * that enables it, which is the thread that first runs the loop. */
        {IORING_SETUP_SINGLE_ISSUER | IORING_SETUP_DEFER_TASKRUN |
             IORING_SETUP_SUBMIT_ALL | IORING_SETUP_R_DISABLED,
         EDDY_FEAT_SINGLE_ISSUER | EDDY_FEAT_DEFER_TASKRUN},
        {IORING_SETUP_SINGLE_ISSUER | IORING_SETUP_COOP_TASKRUN |
             IORING_SETUP_TASKRUN_FLAG | IORING_SETUP_SUBMIT_ALL |
             IORING_SETUP_R_DISABLED,
         EDDY_FEAT_SINGLE_ISSUER | EDDY_FEAT_COOP_TASKRUN},
        {IORING_SETUP_COOP_TASKRUN | IORING_SETUP_TASKRUN_FLAG |
             IORING_SETUP_SUBMIT_ALL,
         EDDY_FEAT_COOP_TASKRUN},
        {0, 0},
    };
    int rc = -EINVAL;
    unsigned entries = U(loop)->entries;
    for (;;) {
        for (size_t i = 0; i < sizeof tiers / sizeof tiers[0]; i++) {
            if (tiers[i].needs & disable)
                continue;
            struct io_uring_params p;
            memset(&p, 0, sizeof p);
            p.flags = tiers[i].flags | IORING_SETUP_CQSIZE;
            p.cq_entries = U(loop)->cq_entries;
            rc = io_uring_queue_init_params(entries, &U(loop)->ring, &p);
            if (rc == 0) {
                loop->setup_flags = p.flags;
                loop->features |= tiers[i].needs;
                if (p.features & IORING_FEAT_NODROP)
                    loop->features |= EDDY_FEAT_NODROP;
                if (p.features & IORING_FEAT_EXT_ARG)
                    loop->features |= EDDY_FEAT_EXT_ARG | EDDY_FEAT_TIMEOUT_UPDATE;
                if (p.features & IORING_FEAT_NATIVE_WORKERS)
                    loop->features |= EDDY_FEAT_NO_MEMLOCK;
                if (p.features & IORING_FEAT_CQE_SKIP)
                    loop->features |= EDDY_FEAT_CQE_SKIP;
                U(loop)->entries = entries;
                U(loop)->cq_entries = p.cq_entries;
                return 0;
            }
            if (rc != -EINVAL)
                break; /* not a flags problem */
        }
        /* Before 5.12 ring memory is charged to RLIMIT_MEMLOCK: shrink. */
        if (rc == -ENOMEM && entries > 16) {
            entries /= 2;
            if (U(loop)->cq_entries > 2 * entries)
                U(loop)->cq_entries /= 2;
            continue;
        }
        return rc;
    }
}

static void probe_features(struct eddy_loop *loop)
{
    struct io_uring_probe *probe = io_uring_get_probe_ring(&U(loop)->ring);
    if (!probe)
        return;
    if (io_uring_opcode_supported(probe, IORING_OP_SHUTDOWN))
        loop->features |= EDDY_FEAT_SHUTDOWN;
    if (io_uring_opcode_supported(probe, IORING_OP_MSG_RING))
        loop->features |= EDDY_FEAT_MSG_RING;
    /* No probe bit for multishot accept or the buffer ring: IORING_OP_SOCKET
     * came with both in 5.19, SEND_ZC with multishot recv in 6.0. */
    if (io_uring_opcode_supported(probe, IORING_OP_SOCKET))
        loop->features |= EDDY_FEAT_ACCEPT_MULTI | EDDY_FEAT_BUF_RING;
    if (io_uring_opcode_supported(probe, IORING_OP_SEND_ZC))
        loop->features |= EDDY_FEAT_SEND_ZC | EDDY_FEAT_RECV_MULTI;
    io_uring_free_probe(probe);
}

static int uring_init(struct eddy_loop *loop, const struct eddy_loop_options *o,
                      unsigned disable)
{
    unsigned entries = o->entries ? o->entries : 256;
    unsigned e = 1;
    while (e < entries)
        e <<= 1;
    U(loop)->entries = e;
    U(loop)->cq_entries = o->cq_entries ? o->cq_entries : 4 * e;
    if (U(loop)->cq_entries < e)
        U(loop)->cq_entries = e;
    int rc = setup_ring(loop, disable);
    if (rc < 0)
        return rc;
    probe_features(loop);
    /* The registered ring fd lives in the registering thread's io_uring
     * context: only see here that the kernel has it, and register for real
     * on the thread that runs the loop (uring_bind). */
    if (!(disable & EDDY_FEAT_REG_RING_FD) && io_uring_register_ring_fd(&U(loop)->ring) == 1) {
        loop->features |= EDDY_FEAT_REG_RING_FD;
        io_uring_unregister_ring_fd(&U(loop)->ring);
    }
    return 0;
}

/* A disabled single-issuer ring is enabled here, so the kernel takes this
 * thread as its submitter, and the ring fd is registered in this thread's
 * context. */
static int uring_bind(struct eddy_loop *loop)
{
    if (loop->setup_flags & IORING_SETUP_R_DISABLED) {
        /* liburing 2.3 has no io_uring_enable_rings() */
        if (syscall(__NR_io_uring_register, U(loop)->ring.ring_fd,
                    IORING_REGISTER_ENABLE_RINGS, NULL, 0) < 0)
            return -errno;
    }
    if ((loop->features & EDDY_FEAT_REG_RING_FD) && io_uring_register_ring_fd(&U(loop)->ring) != 1)
        loop->features &= ~(unsigned)EDDY_FEAT_REG_RING_FD;
    return 0;
}

/* ---- SQEs ------------------------------------------------------------- */

/* Takes an SQE, flushing a full SQ once; NULL when the kernel takes none. */
static struct io_uring_sqe *get_sqe(struct eddy_loop *loop, unsigned need)
{
    if (io_uring_sq_space_left(&U(loop)->ring) < need) {
        loop->st.sq_full++;
        int n = io_uring_submit(&U(loop)->ring);
        if (n > 0)
            loop->st.sqes += (unsigned)n;
        if (io_uring_sq_space_left(&U(loop)->ring) < need)
            return NULL;
    }
    loop->queued = true;
    return io_uring_get_sqe(&U(loop)->ring);
}

/* get_sqe() for an op's side request, which must not overtake the
 * backlog. */
static struct io_uring_sqe *get_sqe_flush(struct eddy_loop *loop)
{
    if (loop->backlog.head)
        return NULL; /* ops waiting for room go first */
    return get_sqe(loop, 1);
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
    io_uring_sqe_set_data64(sqe, EDDY_UD(op, TAG_CANCEL));
    loop->inflight++;
}

static bool prep_cancel(struct eddy_loop *loop, struct eddy_op *op, unsigned tag)
{
    struct io_uring_sqe *sqe = get_sqe(loop, 1);
    if (!sqe)
        return false;
    io_uring_prep_cancel64(sqe, EDDY_UD(op, tag), 0);
    sqe_set_aside(loop, sqe, op);
    return true;
}

/* ---- preparing an op ------------------------------------------------- */

static struct io_uring_sqe *op_sqe(struct eddy_loop *loop, struct eddy_op *op,
                                   unsigned tag)
{
    struct io_uring_sqe *sqe = io_uring_get_sqe(&U(loop)->ring);
    assert(sqe); /* uring_arm made room */
    io_uring_sqe_set_data64(sqe, EDDY_UD(op, tag));
    loop->inflight++;
    loop->queued = true;
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
    io_uring_prep_recv(sqe, op->u.recvm.fd, eddy_bufpool_buf(pool, bid),
                       fault_clamp_len(loop, op, pool->size), 0);
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

static bool op_prep(struct eddy_loop *loop, struct eddy_op *op)
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
    case K_SEND: {
        /* fault_clamp_len: the short:N fault; the rest is re-submitted */
        unsigned len = fault_clamp_len(loop, op, op->u.send.len - op->u.send.done);
        sqe = op_sqe(loop, op, TAG_OP);
        if (op->pflags & PF_ZC)
            io_uring_prep_send_zc(sqe, op->u.send.fd,
                                  (const char *)op->u.send.buf + op->u.send.done,
                                  len, (int)(op->u.send.msgflags | MSG_NOSIGNAL), 0);
        else
            io_uring_prep_send(sqe, op->u.send.fd,
                               (const char *)op->u.send.buf + op->u.send.done,
                               len, (int)(op->u.send.msgflags | MSG_NOSIGNAL));
        break;
    }
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

/* Prepares an op's SQEs, or queues it until the SQ has room.  Ops already
 * waiting keep their turn: a new op queues behind them. */
static void uring_arm(struct eddy_loop *loop, struct eddy_op *op)
{
    drop_owed_cancel(loop, op);
    unsigned need = op->deadline_ns ? 2 : 1;
    if (loop->backlog.head || io_uring_sq_space_left(&U(loop)->ring) < need) {
        if (!loop->backlog.head) {
            loop->st.sq_full++;
            int n = io_uring_submit(&U(loop)->ring);
            if (n > 0)
                loop->st.sqes += (unsigned)n;
        }
        if (loop->backlog.head || io_uring_sq_space_left(&U(loop)->ring) < need) {
            op->state = ST_QUEUED;
            oplist_push(&loop->backlog, op);
            return;
        }
    }
    op->state = ST_KERNEL;
    op_prep(loop, op);
}

/* Re-tries ops that waited for SQ room, in order. */
static void uring_flush_backlog(struct eddy_loop *loop)
{
    struct eddy_op *op;
    while ((op = loop->backlog.head)) {
        if (op->pflags & PF_CANCEL_OWED) {
            unsigned tag = op->state == ST_BACKOFF ? TAG_BACKOFF : TAG_OP;
            if (io_uring_sq_space_left(&U(loop)->ring) < 1)
                return;
            oplist_remove(&loop->backlog, op);
            op->pflags &= ~PF_CANCEL_OWED;
            prep_cancel(loop, op, tag);
            continue;
        }
        unsigned need = op->deadline_ns ? 2 : 1;
        if (io_uring_sq_space_left(&U(loop)->ring) < need)
            return;
        oplist_remove(&loop->backlog, op);
        op->state = ST_KERNEL;
        op_prep(loop, op);
    }
}

static void uring_cancel(struct eddy_loop *loop, struct eddy_op *op)
{
    if (!prep_cancel(loop, op, op->state == ST_BACKOFF ? TAG_BACKOFF : TAG_OP)) {
        op->pflags |= PF_CANCEL_OWED;
        oplist_push(&loop->backlog, op);
    }
}

/* ---- completions ------------------------------------------------------ */

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
                uring_arm(loop, op); /* single-shot, or the kernel ended multishot */
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
        uring_arm(loop, op);
        return;
    }
    if (accept_exhausted(res)) {
        /* Out of descriptors or memory: say so, wait, try again.  Spinning
         * on accept would only burn the CPU the server needs to free them. */
        unsigned ms = accept_backoff_next(op);
        op->state = ST_BACKOFF;
        struct io_uring_sqe *sqe = io_uring_get_sqe(&U(loop)->ring);
        if (!sqe) {
            io_uring_submit(&U(loop)->ring);
            sqe = io_uring_get_sqe(&U(loop)->ring);
        }
        if (sqe) {
            io_uring_sqe_set_data64(sqe, EDDY_UD(op, TAG_BACKOFF));
            loop->inflight++;
            loop->queued = true;
            set_ts(op, eddy_update_time(loop) + (int64_t)ms * 1000000);
            io_uring_prep_timeout(sqe, (struct __kernel_timespec *)&op->ts, 0,
                                  IORING_TIMEOUT_ABS);
        } else {
            uring_arm(loop, op); /* no SQE even for a timer: retry at once */
        }
        op_deliver(loop, op, res, 0);
        return;
    }
    op_finish(loop, op, res);
}

static void op_backoff_done(struct eddy_loop *loop, struct eddy_op *op, int res)
{
    if (op->pflags & PF_CANCEL || (res != -ETIME && res != 0)) {
        op_finish(loop, op, -ECANCELED);
        return;
    }
    uring_arm(loop, op);
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
                uring_arm(loop, op);
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
            uring_arm(loop, op);
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
            uring_arm(loop, op); /* a short send: the rest goes out now */
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
            uring_arm(loop, op);
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

/* ---- submission and reaping ------------------------------------------ */

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
    switch (tag) {
    case TAG_MSG_OUT:
        /* Delivered: the op is the other loop's now (maybe already freed).
         * Refused (target CQ full, ring gone): it is still ours to send. */
        if (res < 0)
            ts_push(op->loop, op);
        break;
    case TAG_OP:
        op_complete(loop, op, res, cflags);
        break;
    case TAG_BACKOFF:
        op_backoff_done(loop, op, res);
        break;
    default: /* TAG_LINK, TAG_CANCEL: nothing refers to them any more */
        break;
    }
}

/* Reaps up to a bound of CQEs (so a flood cannot starve submission). */
static void uring_reap(struct eddy_loop *loop)
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

static int uring_enter(struct eddy_loop *loop, bool wait)
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

static void uring_settle(struct eddy_loop *loop)
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

static void uring_flush_late(struct eddy_loop *loop, int64_t now)
{
    if (!io_uring_sq_ready(&U(loop)->ring)) {
        loop->queued = false;
        return;
    }
    loop->flush_mark = now;
    loop->st.submit_calls++;
    int n = io_uring_submit(&U(loop)->ring);
    if (n > 0)
        loop->st.sqes += (unsigned)n;
}

/* ---- the rest of the interface ---------------------------------------- */

static int uring_timer_update(struct eddy_loop *loop, struct eddy_op *op, int64_t next)
{
    if (op->pflags & PF_REARM) {
        /* Re-armed when the cancel lands: that prep reads this. */
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

/* eddy_post_to() over MSG_RING, to a loop on io_uring too. */
static bool uring_post_to(struct eddy_loop *from, struct eddy_loop *to, struct eddy_op *op)
{
    if (to->be != from->be || !(from->features & EDDY_FEAT_MSG_RING))
        return false;
    assert(pthread_equal(pthread_self(), from->owner));
    struct io_uring_sqe *sqe = get_sqe(from, 1);
    if (!sqe)
        return false;
    io_uring_prep_msg_ring(sqe, U(to)->ring.ring_fd, 0, EDDY_UD(op, TAG_MSG_IN), 0);
    io_uring_sqe_set_data64(sqe, EDDY_UD(op, TAG_MSG_OUT));
    from->inflight++;
    return true;
}

static int uring_buf_register(struct eddy_loop *loop, struct eddy_bufpool *pool)
{
    /* liburing 2.3 has no io_uring_setup_buf_ring(): map the ring
     * ourselves, page-aligned as the kernel requires. */
    unsigned count = pool->count, size = pool->size;
    pool->br_bytes = (size_t)count * sizeof(struct io_uring_buf);
    void *br = mmap(NULL, pool->br_bytes, PROT_READ | PROT_WRITE,
                    MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (br == MAP_FAILED)
        return -errno;
    pool->br = br;
    io_uring_buf_ring_init(pool->br);
    struct io_uring_buf_reg reg;
    memset(&reg, 0, sizeof reg);
    reg.ring_addr = (uint64_t)(uintptr_t)pool->br;
    reg.ring_entries = count;
    reg.bgid = U(loop)->next_bgid;
    if (io_uring_register_buf_ring(&U(loop)->ring, &reg, 0) != 0) {
        munmap(pool->br, pool->br_bytes);
        pool->br = NULL;
        return 1; /* the user-space pool serves */
    }
    pool->bgid = U(loop)->next_bgid++;
    pool->ring = true;
    int mask = io_uring_buf_ring_mask(count);
    for (unsigned i = 0; i < count; i++)
        io_uring_buf_ring_add(pool->br, pool->mem + (size_t)i * size, size,
                              (unsigned short)i, mask, (int)i);
    io_uring_buf_ring_advance(pool->br, (int)count);
    return 0;
}

static void uring_buf_unregister(struct eddy_bufpool *pool)
{
    io_uring_unregister_buf_ring(&U(pool->loop)->ring, pool->bgid);
    munmap(pool->br, pool->br_bytes);
}

static void uring_buf_put(struct eddy_bufpool *pool, uint16_t bid)
{
    io_uring_buf_ring_add(pool->br, eddy_bufpool_buf(pool, bid), pool->size,
                          bid, io_uring_buf_ring_mask(pool->count), 0);
    io_uring_buf_ring_advance(pool->br, 1);
}

/* ---- teardown --------------------------------------------------------- */

/* Cancels an internal op and reaps until its final CQE is back, so the
 * kernel never writes into the loop after it is freed. */
static void drain_internal(struct eddy_loop *loop, struct eddy_op *op)
{
    if (op->state == ST_IDLE)
        return;
    op->pflags |= PF_CANCEL;
    prep_cancel(loop, op, TAG_OP);
    for (int i = 0; i < 1000 && op->state != ST_IDLE; i++) {
        struct __kernel_timespec ts = {.tv_sec = 0, .tv_nsec = 10000000};
        struct io_uring_cqe *cqe;
        io_uring_submit(&U(loop)->ring);
        io_uring_wait_cqe_timeout(&U(loop)->ring, &cqe, &ts);
        uring_reap(loop);
    }
}

static void uring_destroy(struct eddy_loop *loop)
{
    drain_internal(loop, &loop->wake_op);
    drain_internal(loop, &loop->sig_op);
    io_uring_queue_exit(&U(loop)->ring);
}

const struct backend backend_uring = {
    .name = "io_uring",
    .loop_size = sizeof(struct uring_loop),
    .init = uring_init,
    .bind = uring_bind,
    .destroy = uring_destroy,
    .arm = uring_arm,
    .cancel = uring_cancel,
    .timer_update = uring_timer_update,
    .post_to = uring_post_to,
    .flush_backlog = uring_flush_backlog,
    .enter = uring_enter,
    .reap = uring_reap,
    .settle = uring_settle,
    .flush_late = uring_flush_late,
    .buf_register = uring_buf_register,
    .buf_unregister = uring_buf_unregister,
    .buf_put = uring_buf_put,
};
