/*
 * The io_uring backend, whole in three files (uring_internal.h has the
 * map): this one is the ring's life, uring_submit.c turns ops into SQEs,
 * uring_complete.c turns CQEs back into callbacks.  It plugs into the loop
 * through backend.h; the contract's bookkeeping (final callbacks, deferred
 * delivery, cancel states, the backlog) stays in loop.c.
 *
 * An op's path: a starter (ops.c) calls op_arm() -> uring_arm() prepares
 * its SQE(s) with the op's address as user_data (or queues the op on the
 * backlog while the SQ is full) -> uring_enter() submits and waits ->
 * uring_reap() hands each CQE to dispatch(), the one choke point that sees
 * every completion, which finds the op and the SQE's job in user_data ->
 * the kind's completion re-arms the op, sends the rest, or ends it with
 * op_finish(), which runs the callback.
 *
 * Here: the setup tiers (the best flags the kernel takes; smaller rings
 * where RLIMIT_MEMLOCK bites), io-wq sharing and its cap, the feature
 * probe, binding a single-issuer ring to the thread that runs the loop,
 * kernel buffer rings for bufpools, the bounded drain of the loop's
 * internal ops at teardown, and the backend table.
 */
#define _GNU_SOURCE
#include "uring_internal.h"

#include <errno.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <unistd.h>

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

/* Tries the best setup flags first; returns 0 or -errno of the last try.
 * wq_fd >= 0: share that ring's io-wq (IORING_SETUP_ATTACH_WQ, 5.6). */
static int setup_ring(struct eddy_loop *loop, unsigned disable, int wq_fd)
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
            if (wq_fd >= 0) {
                p.flags |= IORING_SETUP_ATTACH_WQ;
                p.wq_fd = (unsigned)wq_fd;
            }
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

/* ---- io-wq sharing and cap (eddy_loop_options.attach_wq, iowq_max_workers) ---- */

/* The ring whose io-wq a new ring attaches to, or -1: only an io_uring loop
 * has one. */
static int iowq_attach_fd(const struct eddy_loop_options *o)
{
    if (!o->attach_wq || o->attach_wq->be != &backend_uring)
        return -1;
    return U(o->attach_wq)->ring.ring_fd;
}

/* Caps io-wq's workers (both kinds).  The kernel (5.15+) keeps the limit in
 * the ring and applies it to every thread's io-wq that uses the ring, so it
 * may be set before the loop's thread first submits.  Older kernels refuse
 * (-EINVAL): their defaults stay, as documented. */
static void iowq_cap(struct eddy_loop *loop, unsigned max)
{
    if (!max)
        return;
    unsigned vals[2] = {max, max};
    if (io_uring_register_iowq_max_workers(&U(loop)->ring, vals) < 0)
        eddy_loop_log(loop, EDDY_LOG_INFO, "io-wq worker cap not applied (kernel < 5.15)");
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
    int rc = setup_ring(loop, disable, iowq_attach_fd(o));
    if (rc < 0)
        return rc;
    iowq_cap(loop, o->iowq_max_workers);
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

/* ---- buffer rings (eddy_bufpool) ------------------------------------ */

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
    io_uring_buf_ring_add(pool->br, bufpool_buf(pool, bid), pool->size,
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
    uring_prep_cancel(loop, op, TAG_OP);
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
    .lazy_bufs = false, /* without a ring, the SQE names its buffer */
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
