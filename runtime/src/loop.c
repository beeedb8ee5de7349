/*
 * The proactor loop: set-up and feature probing, the run loop, SQE
 * acquisition with back-pressure, CQE reaping and dispatch.
 */
#define _GNU_SOURCE
#include "internal.h"

#include <assert.h>
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

/* ---- small helpers ---------------------------------------------------- */

int64_t mono_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

static void *default_alloc(void *ud, void *ptr, size_t size)
{
    (void)ud;
    if (size == 0) {
        free(ptr);
        return NULL;
    }
    return realloc(ptr, size);
}

void *loop_alloc(struct eddy_loop *loop, size_t n)
{
    return loop->alloc(loop->alloc_ud, NULL, n);
}

void loop_free(struct eddy_loop *loop, void *p)
{
    if (p)
        loop->alloc(loop->alloc_ud, p, 0);
}

void *eddy_loop_alloc(struct eddy_loop *loop, size_t size)
{
    return size ? loop_alloc(loop, size) : NULL;
}

void *eddy_loop_realloc(struct eddy_loop *loop, void *ptr, size_t size)
{
    if (size == 0) {
        loop_free(loop, ptr);
        return NULL;
    }
    return loop->alloc(loop->alloc_ud, ptr, size);
}

void eddy_loop_free(struct eddy_loop *loop, void *ptr)
{
    loop_free(loop, ptr);
}

static void default_log(void *ud, int level, const char *msg)
{
    (void)ud;
    static const char *names[] = {"error", "warning", "info"};
    fprintf(stderr, "eddy: %s: %s\n", names[level < 0 || level > 2 ? 2 : level], msg);
}

void eddy_loop_log(struct eddy_loop *loop, int level, const char *fmt, ...)
{
    char buf[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(buf, sizeof buf, fmt, ap);
    va_end(ap);
    loop->log(loop->log_ud, level, buf);
}

void oplist_push(struct oplist *l, struct eddy_op *op)
{
    op->next = NULL;
    op->prev = l->tail;
    if (l->tail)
        l->tail->next = op;
    else
        l->head = op;
    l->tail = op;
}

void oplist_remove(struct oplist *l, struct eddy_op *op)
{
    if (op->prev)
        op->prev->next = op->next;
    else
        l->head = op->next;
    if (op->next)
        op->next->prev = op->prev;
    else
        l->tail = op->prev;
    op->next = op->prev = NULL;
}

struct eddy_op *oplist_pop(struct oplist *l)
{
    struct eddy_op *op = l->head;
    if (op)
        oplist_remove(l, op);
    return op;
}

/* ---- features --------------------------------------------------------- */

static const char *const feature_names[] = {
    "accept_multishot", "buf_ring",  "recv_multishot", "single_issuer",
    "defer_taskrun",    "coop_taskrun", "msg_ring",    "send_zc",
    "timeout_update",   "no_memlock", "registered_ring", "shutdown",
    "nodrop",           "ext_arg",   "cqe_skip",
};
#define NFEATURES (sizeof feature_names / sizeof feature_names[0])

const char *eddy_feature_name(unsigned feature)
{
    for (unsigned i = 0; i < NFEATURES; i++)
        if (feature == 1u << i)
            return feature_names[i];
    return NULL;
}

int eddy_feature_parse(const char *list, unsigned *mask)
{
    unsigned m = 0;
    const char *p = list ? list : "";
    while (*p) {
        while (*p == ',' || *p == ' ')
            p++;
        if (!*p)
            break;
        size_t n = strcspn(p, ", ");
        bool found = false;
        if (n == 3 && !strncmp(p, "all", 3)) {
            m |= (1u << NFEATURES) - 1;
            found = true;
        }
        for (unsigned i = 0; i < NFEATURES && !found; i++) {
            if (strlen(feature_names[i]) == n && !strncmp(p, feature_names[i], n)) {
                m |= 1u << i;
                found = true;
            }
        }
        if (!found)
            return -EINVAL;
        p += n;
    }
    *mask = m;
    return 0;
}

void eddy_loop_options_init(struct eddy_loop_options *o)
{
    memset(o, 0, sizeof *o);
}

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
    unsigned entries = loop->entries;
    for (;;) {
        for (size_t i = 0; i < sizeof tiers / sizeof tiers[0]; i++) {
            if (tiers[i].needs & disable)
                continue;
            struct io_uring_params p;
            memset(&p, 0, sizeof p);
            p.flags = tiers[i].flags | IORING_SETUP_CQSIZE;
            p.cq_entries = loop->cq_entries;
            rc = io_uring_queue_init_params(entries, &loop->ring, &p);
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
                loop->entries = entries;
                loop->cq_entries = p.cq_entries;
                return 0;
            }
            if (rc != -EINVAL)
                break; /* not a flags problem */
        }
        /* Before 5.12 ring memory is charged to RLIMIT_MEMLOCK: shrink. */
        if (rc == -ENOMEM && entries > 16) {
            entries /= 2;
            if (loop->cq_entries > 2 * entries)
                loop->cq_entries /= 2;
            continue;
        }
        return rc;
    }
}

static void probe_features(struct eddy_loop *loop)
{
    struct io_uring_probe *probe = io_uring_get_probe_ring(&loop->ring);
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

static unsigned env_disable(const char **bad)
{
    unsigned m = 0;
    const char *compat = getenv("EDDY_COMPAT");
    if (compat && !strcmp(compat, "5.10"))
        m |= EDDY_FEAT_NOT_IN_5_10;
    const char *list = getenv("EDDY_DISABLE");
    unsigned d;
    if (list && eddy_feature_parse(list, &d) == 0)
        m |= d;
    else if (list)
        *bad = list;
    return m;
}

static void arm_wake(struct eddy_loop *loop);

int eddy_loop_init(struct eddy_loop **out, const struct eddy_loop_options *opts)
{
    struct eddy_loop_options o;
    if (opts)
        o = *opts;
    else
        eddy_loop_options_init(&o);
    eddy_alloc_fn alloc = o.alloc ? o.alloc : default_alloc;
    struct eddy_loop *loop = alloc(o.alloc_ud, NULL, sizeof *loop);
    if (!loop)
        return -ENOMEM;
    memset(loop, 0, sizeof *loop);
    loop->alloc = alloc;
    loop->alloc_ud = o.alloc_ud;
    loop->log = o.log ? o.log : default_log;
    loop->log_ud = o.log_ud;
    loop->owner = pthread_self();
    loop->sig_fd = -1;
    loop->wake_fd = -1;
    loop->pool_threads = o.pool_threads ? o.pool_threads : 4;
    unsigned entries = o.entries ? o.entries : 256;
    unsigned e = 1;
    while (e < entries)
        e <<= 1;
    loop->entries = e;
    loop->cq_entries = o.cq_entries ? o.cq_entries : 4 * e;
    if (loop->cq_entries < e)
        loop->cq_entries = e;

    unsigned disable = o.disable;
    unsigned stall_ms = o.stall_ms;
    if (!o.ignore_env) {
        const char *bad = NULL;
        disable |= env_disable(&bad);
        if (bad)
            loop->log(loop->log_ud, EDDY_LOG_WARN,
                      "EDDY_DISABLE names an unknown feature; ignored");
        const char *s = getenv("EDDY_STALL_MS");
        if (!stall_ms && s)
            stall_ms = (unsigned)strtoul(s, NULL, 10);
    }
    /* Dependencies: multishot recv needs the buffer ring, DEFER_TASKRUN
     * needs SINGLE_ISSUER. */
    if (disable & EDDY_FEAT_BUF_RING)
        disable |= EDDY_FEAT_RECV_MULTI;
    if (disable & EDDY_FEAT_SINGLE_ISSUER)
        disable |= EDDY_FEAT_DEFER_TASKRUN;

    int rc = setup_ring(loop, disable);
    if (rc < 0)
        goto err_free;
    probe_features(loop);
    /* The registered ring fd lives in the registering thread's io_uring
     * context: only see here that the kernel has it, and register for real
     * on the thread that runs the loop (loop_bind). */
    if (!(disable & EDDY_FEAT_REG_RING_FD) && io_uring_register_ring_fd(&loop->ring) == 1) {
        loop->features |= EDDY_FEAT_REG_RING_FD;
        io_uring_unregister_ring_fd(&loop->ring);
    }
    loop->features &= ~disable;

    loop->wake_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    if (loop->wake_fd < 0) {
        rc = -errno;
        goto err_ring;
    }
    pthread_mutex_init(&loop->pool.mu, NULL);
    pthread_cond_init(&loop->pool.cv, NULL);
    sigemptyset(&loop->sig_mask);
    sigemptyset(&loop->sig_owned);
    loop->now_ns = mono_ns();
    arm_wake(loop);
    if (stall_ms) {
        rc = watchdog_start(loop, stall_ms);
        if (rc < 0)
            goto err_fd;
    }
    *out = loop;
    return 0;

err_fd:
    close(loop->wake_fd);
    pthread_mutex_destroy(&loop->pool.mu);
    pthread_cond_destroy(&loop->pool.cv);
err_ring:
    io_uring_queue_exit(&loop->ring);
err_free:
    alloc(o.alloc_ud, loop, 0);
    return rc;
}

/* ---- operations: lifecycle -------------------------------------------- */

int eddy_op_active(const struct eddy_op *op)
{
    return op->state != ST_IDLE;
}

void eddy_op_set_deadline(struct eddy_loop *loop, struct eddy_op *op, unsigned ms)
{
    /* An active op's deadline is its running start's: not to be moved. */
    if (op->state != ST_IDLE)
        return;
    op->deadline_ns = eddy_update_time(loop) + (int64_t)ms * 1000000;
}

/* Kinds that refuse a deadline: multishot, and timers (a deadline itself). */
static bool deadline_refused(int kind)
{
    return kind == K_ACCEPT || kind == K_RECV_MULTI || kind == K_TIMER || kind == K_SIGNAL;
}

/*
 * The common entry of every public starter; err is the starter's verdict
 * on its own arguments (0 or -errno).  Misuse gives the same error in every
 * build: -EBUSY for an op already active (its running start is left as it
 * is), -EINVAL for a deadline on a kind that refuses one.  A deadline set
 * with eddy_op_set_deadline() belongs to this start alone: a start that
 * fails drops it, so it never reaches a later start.
 */
int op_start(struct eddy_loop *loop, struct eddy_op *op, int kind, eddy_cb cb, int err)
{
    if (op->state != ST_IDLE)
        return -EBUSY;
    if (!err && op->deadline_ns && deadline_refused(kind))
        err = -EINVAL;
    if (!err)
        err = op_begin(loop, op, kind, cb);
    if (err)
        op->deadline_ns = 0;
    return err;
}

/* Undoes op_start() for a starter that fails after it (no callback). */
void op_start_undo(struct eddy_loop *loop, struct eddy_op *op)
{
    loop->active--;
    op->state = ST_IDLE;
    op->deadline_ns = 0;
    op->pflags = 0;
}

/* Records the op (internal ops use it directly).  No SQE yet. */
int op_begin(struct eddy_loop *loop, struct eddy_op *op, int kind, eddy_cb cb)
{
    /* A call from another thread cannot be answered safely: a bug. */
    assert(pthread_equal(pthread_self(), loop->owner));
    if (op->state != ST_IDLE)
        return -EBUSY;
    op->cb = cb;
    op->kind = (uint8_t)kind;
    op->loop = loop;
    op->flags = 0;
    op->pflags = 0;
    op->res = 0;
    op->buf = NULL;
    op->next = op->prev = NULL;
    loop->active++;
    return 0;
}

static void drop_owed_cancel(struct eddy_loop *loop, struct eddy_op *op);

/* Takes an SQE, flushing a full SQ once; NULL when the kernel takes none. */
static struct io_uring_sqe *get_sqe(struct eddy_loop *loop, unsigned need);

struct io_uring_sqe *get_sqe_flush(struct eddy_loop *loop)
{
    if (loop->sq_wait.head)
        return NULL; /* ops waiting for room go first */
    return get_sqe(loop, 1);
}

static struct io_uring_sqe *get_sqe(struct eddy_loop *loop, unsigned need)
{
    if (io_uring_sq_space_left(&loop->ring) < need) {
        loop->st.sq_full++;
        int n = io_uring_submit(&loop->ring);
        if (n > 0)
            loop->st.sqes += (unsigned)n;
        if (io_uring_sq_space_left(&loop->ring) < need)
            return NULL;
    }
    return io_uring_get_sqe(&loop->ring);
}

/* Prepares an op's SQEs, or queues it until the SQ has room.  Ops already
 * waiting keep their turn: a new op queues behind them. */
void op_arm(struct eddy_loop *loop, struct eddy_op *op)
{
    drop_owed_cancel(loop, op);
    unsigned need = op->deadline_ns ? 2 : 1;
    if (loop->sq_wait.head || io_uring_sq_space_left(&loop->ring) < need) {
        if (!loop->sq_wait.head) {
            loop->st.sq_full++;
            int n = io_uring_submit(&loop->ring);
            if (n > 0)
                loop->st.sqes += (unsigned)n;
        }
        if (loop->sq_wait.head || io_uring_sq_space_left(&loop->ring) < need) {
            op->state = ST_QUEUED;
            oplist_push(&loop->sq_wait, op);
            return;
        }
    }
    op->state = ST_KERNEL;
    op_prep(loop, op);
}

/* An op that owes a cancel SQE sits on sq_wait while the kernel still has
 * it; when it completes first, it must leave that list before it moves on. */
static void drop_owed_cancel(struct eddy_loop *loop, struct eddy_op *op)
{
    if (op->pflags & PF_CANCEL_OWED) {
        oplist_remove(&loop->sq_wait, op);
        op->pflags &= ~PF_CANCEL_OWED;
    }
}

/*
 * The deferred final callback: runs next iteration with res.  Used for
 * posts, cancellation of ops that never reached the kernel and fallbacks
 * done in user space, so no callback ever runs inside a starter.
 */
void op_defer_final(struct eddy_loop *loop, struct eddy_op *op, int res)
{
    drop_owed_cancel(loop, op);
    op->res = res;
    op->state = ST_PENDING;
    oplist_push(&loop->pending, op);
}

static int64_t coarse_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC_COARSE, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

/*
 * SQEs queued by callbacks normally go out together at the end of the
 * batch.  But when a callback ran long (it blocked), what earlier callbacks
 * queued has already waited that long: send it now rather than after the
 * rest of the batch.  This is what lets each client of a blocking handler
 * get its answer as soon as its own handler returns.  The coarse clock is
 * read only when something is queued, and costs a few ns.
 */
#define FLUSH_AFTER_NS 2000000

static inline void flush_if_late(struct eddy_loop *loop)
{
    if (!io_uring_sq_ready(&loop->ring))
        return;
    int64_t now = coarse_ns();
    if (now - loop->flush_mark < FLUSH_AFTER_NS)
        return;
    loop->flush_mark = now;
    loop->st.submit_calls++;
    int n = io_uring_submit(&loop->ring);
    if (n > 0)
        loop->st.sqes += (unsigned)n;
}

static inline void run_cb(struct eddy_loop *loop, struct eddy_op *op, int res)
{
    if (loop->wd.running) {
        watchdog_enter(loop, op);
        op->cb(op, res);
        watchdog_leave(loop);
    } else {
        op->cb(op, res);
    }
    flush_if_late(loop);
}

void op_deliver(struct eddy_loop *loop, struct eddy_op *op, int res, unsigned flags)
{
    op->flags = flags | EDDY_OP_MORE;
    run_cb(loop, op, res);
}

static void op_end(struct eddy_loop *loop, struct eddy_op *op, int res)
{
    /* A deadline fired: the kernel says -ECANCELED, the caller hears -ETIME. */
    if (res == -ECANCELED && op->deadline_ns && !(op->pflags & PF_CANCEL))
        res = -ETIME;
    drop_owed_cancel(loop, op);
    if (op->kind == K_RECV_MULTI)
        op->u.recvm.pool->users--;
    if (!(op->pflags & PF_INTERNAL))
        loop->active--;
    op->state = ST_IDLE;
    op->deadline_ns = 0;
    op->pflags = 0;
    run_cb(loop, op, res);
}

void op_finish(struct eddy_loop *loop, struct eddy_op *op, int res)
{
    op->flags = 0;
    op->buf = NULL;
    op_end(loop, op, res);
}

/* The final callback of eddy_recv_once: it carries the pool buffer bid. */
void op_finish_buffer(struct eddy_loop *loop, struct eddy_op *op, int res, uint16_t bid)
{
    op->flags = EDDY_OP_BUFFER;
    op->buf = eddy_bufpool_buf(op->u.recvm.pool, bid);
    op->bid = bid;
    op_end(loop, op, res);
}

/* An SQE whose completion nothing waits for (a cancel, a timer update):
 * with CQE_SKIP_SUCCESS the kernel posts a CQE only if it fails. */
void sqe_set_aside(struct eddy_loop *loop, struct io_uring_sqe *sqe, struct eddy_op *op)
{
    if (loop->features & EDDY_FEAT_CQE_SKIP) {
        io_uring_sqe_set_data64(sqe, EDDY_UD(op, TAG_QUIET));
        sqe->flags |= IOSQE_CQE_SKIP_SUCCESS;
        return;
    }
    io_uring_sqe_set_data64(sqe, EDDY_UD(op, TAG_CANCEL));
    loop->inflight++;
}

/* ---- cancel ----------------------------------------------------------- */

static bool prep_cancel(struct eddy_loop *loop, struct eddy_op *op, unsigned tag)
{
    struct io_uring_sqe *sqe = get_sqe(loop, 1);
    if (!sqe)
        return false;
    io_uring_prep_cancel64(sqe, EDDY_UD(op, tag), 0);
    sqe_set_aside(loop, sqe, op);
    return true;
}

int eddy_cancel(struct eddy_loop *loop, struct eddy_op *op)
{
    assert(pthread_equal(pthread_self(), loop->owner));
    if (op->state == ST_IDLE)
        return -ENOENT;
    /* Before reading pflags: a worker may be writing them (under the pool
     * lock); a job in ST_WORK never has PF_CANCEL set. */
    if (op->state == ST_WORK)
        return wpool_cancel(loop, op);
    if (op->pflags & PF_CANCEL)
        return -EALREADY;
    op->pflags |= PF_CANCEL;
    switch (op->state) {
    case ST_QUEUED:
        oplist_remove(&loop->sq_wait, op);
        op_defer_final(loop, op, -ECANCELED);
        return 0;
    case ST_PENDING:
        op->res = -ECANCELED;
        return 0;
    case ST_PARKED:
        oplist_remove(&op->u.recvm.pool->waiters, op);
        op_defer_final(loop, op, -ECANCELED);
        return 0;
    case ST_KERNEL:
    case ST_BACKOFF:
        if (!prep_cancel(loop, op, op->state == ST_BACKOFF ? TAG_BACKOFF : TAG_OP)) {
            op->pflags |= PF_CANCEL_OWED;
            oplist_push(&loop->sq_wait, op);
        }
        return 0;
    case ST_SIGNAL:
        signal_cancel(loop, op);
        op_defer_final(loop, op, -ECANCELED);
        return 0;
    case ST_TSPOST:
    default:
        op->pflags &= ~PF_CANCEL;
        return -EBUSY;
    }
}

/* ---- posts ------------------------------------------------------------ */

int eddy_post(struct eddy_loop *loop, struct eddy_op *op, eddy_cb cb)
{
    int rc = op_start(loop, op, K_POST, cb, 0);
    if (rc < 0)
        return rc;
    op_defer_final(loop, op, 0);
    return 0;
}

void loop_wake(struct eddy_loop *loop)
{
    if (!atomic_exchange(&loop->wake_pending, 1)) {
        uint64_t one = 1;
        ssize_t n = write(loop->wake_fd, &one, sizeof one);
        (void)n; /* EAGAIN means the counter is full: the loop wakes anyway */
    }
}

/* Treiber stack push: any thread. */
void ts_push(struct eddy_loop *loop, struct eddy_op *op)
{
    struct eddy_op *old = atomic_load_explicit(&loop->ts_head, memory_order_relaxed);
    do {
        op->next = old;
    } while (!atomic_compare_exchange_weak_explicit(&loop->ts_head, &old, op,
                                                    memory_order_release,
                                                    memory_order_relaxed));
    loop_wake(loop);
}

void eddy_post_threadsafe(struct eddy_loop *loop, struct eddy_op *op, eddy_cb cb)
{
    op->cb = cb;
    op->kind = K_POST_TS;
    op->loop = loop;
    op->flags = 0;
    op->pflags = 0;
    op->res = 0;
    op->state = ST_TSPOST;
    ts_push(loop, op);
}

void eddy_post_to(struct eddy_loop *from, struct eddy_loop *to, struct eddy_op *op,
                  eddy_cb cb)
{
    if (!from || from == to || !(from->features & EDDY_FEAT_MSG_RING)) {
        eddy_post_threadsafe(to, op, cb);
        return;
    }
    assert(pthread_equal(pthread_self(), from->owner));
    struct io_uring_sqe *sqe = get_sqe(from, 1);
    if (!sqe) {
        eddy_post_threadsafe(to, op, cb);
        return;
    }
    op->cb = cb;
    op->kind = K_POST_TS;
    op->loop = to;
    op->flags = 0;
    op->pflags = 0;
    op->res = 0;
    op->state = ST_TSPOST;
    io_uring_prep_msg_ring(sqe, to->ring.ring_fd, 0, EDDY_UD(op, TAG_MSG_IN), 0);
    io_uring_sqe_set_data64(sqe, EDDY_UD(op, TAG_MSG_OUT));
    from->inflight++;
}

/* Runs everything other threads pushed, oldest first. */
static void drain_ts(struct eddy_loop *loop)
{
    if (!atomic_load_explicit(&loop->ts_head, memory_order_relaxed))
        return;
    struct eddy_op *list = atomic_exchange_explicit(&loop->ts_head, NULL,
                                                    memory_order_acquire);
    struct eddy_op *rev = NULL;
    while (list) {
        struct eddy_op *n = list->next;
        list->next = rev;
        rev = list;
        list = n;
    }
    while (rev) {
        struct eddy_op *op = rev;
        rev = rev->next;
        op->next = NULL;
        if (op->kind == K_POST_TS)
            loop->active++; /* op_finish balances it */
        op_finish(loop, op, op->res);
    }
}

static void wake_done(struct eddy_op *op, int res)
{
    struct eddy_loop *loop = op->data;
    (void)res;
    atomic_store(&loop->wake_pending, 0);
    drain_ts(loop);
    if (!loop->closing)
        arm_wake(loop);
}

static void arm_wake(struct eddy_loop *loop)
{
    struct eddy_op *op = &loop->wake_op;
    op->data = loop;
    op->state = ST_IDLE;
    op_begin(loop, op, K_INTERNAL_READ, wake_done);
    loop->active--;
    op->pflags = PF_INTERNAL;
    op->label = "eddy wake-up";
    op->u.rw.fd = loop->wake_fd;
    op->u.rw.buf = &loop->wake_buf;
    op->u.rw.len = sizeof loop->wake_buf;
    op->u.rw.off = 0;
    op_arm(loop, op);
}

/* ---- run -------------------------------------------------------------- */

int64_t eddy_now_ns(const struct eddy_loop *loop)
{
    return loop->now_ns;
}

int64_t eddy_update_time(struct eddy_loop *loop)
{
    loop->now_ns = mono_ns();
    return loop->now_ns;
}

unsigned eddy_loop_features(const struct eddy_loop *loop)
{
    return loop->features;
}

unsigned eddy_loop_setup_flags(const struct eddy_loop *loop)
{
    return loop->setup_flags;
}

void eddy_loop_stats(const struct eddy_loop *loop, struct eddy_loop_stats *out)
{
    *out = loop->st;
    out->active = loop->active;
    out->inflight = loop->inflight;
}

void eddy_loop_stop(struct eddy_loop *loop)
{
    atomic_store(&loop->stop, 1);
    loop_wake(loop);
}

void eddy_loop_ref(struct eddy_loop *loop)
{
    loop->refs++;
}

void eddy_loop_unref(struct eddy_loop *loop)
{
    /* More unrefs than refs is a bug nothing can report (void): never
     * wrap the count around (a loop that would never end). */
    assert(loop->refs > 0);
    if (loop->refs > 0)
        loop->refs--;
}

void eddy_loop_attach(struct eddy_loop *loop)
{
    loop->attached++;
}

void eddy_loop_detach(struct eddy_loop *loop)
{
    assert(loop->attached > 0); /* as in eddy_loop_unref */
    if (loop->attached > 0)
        loop->attached--;
}

unsigned eddy_loop_attached(const struct eddy_loop *loop)
{
    return loop->attached;
}

/* Re-tries ops that waited for SQ room, in order. */
static void flush_sq_wait(struct eddy_loop *loop)
{
    struct eddy_op *op;
    while ((op = loop->sq_wait.head)) {
        if (op->pflags & PF_CANCEL_OWED) {
            unsigned tag = op->state == ST_BACKOFF ? TAG_BACKOFF : TAG_OP;
            if (io_uring_sq_space_left(&loop->ring) < 1)
                return;
            oplist_remove(&loop->sq_wait, op);
            op->pflags &= ~PF_CANCEL_OWED;
            prep_cancel(loop, op, tag);
            continue;
        }
        unsigned need = op->deadline_ns ? 2 : 1;
        if (io_uring_sq_space_left(&loop->ring) < need)
            return;
        oplist_remove(&loop->sq_wait, op);
        op->state = ST_KERNEL;
        op_prep(loop, op);
    }
}

/* Runs the final callbacks deferred so far (not those they defer). */
static void run_pending(struct eddy_loop *loop)
{
    struct oplist batch = loop->pending;
    loop->pending.head = loop->pending.tail = NULL;
    struct eddy_op *op;
    while ((op = oplist_pop(&batch)))
        op_finish(loop, op, op->res);
}

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
static void reap(struct eddy_loop *loop)
{
    struct io_uring_cqe *cqes[64];
    unsigned budget = loop->cq_entries * 2;
    while (budget) {
        /* Counted here: liburing's peek flushes an overflow by itself once
         * the CQ is empty, so the branch below rarely sees one. */
        if (io_uring_cq_has_overflow(&loop->ring))
            loop->st.cq_overflows++;
        unsigned n = io_uring_peek_batch_cqe(&loop->ring, cqes, 64);
        if (n == 0) {
            if (!io_uring_cq_has_overflow(&loop->ring))
                break;
            /* NODROP kept the overflow in the kernel: have it flushed in. */
            io_uring_get_events(&loop->ring);
            continue;
        }
        struct { uint64_t ud; int res; unsigned flags; } c[64];
        for (unsigned i = 0; i < n; i++) {
            c[i].ud = cqes[i]->user_data;
            c[i].res = cqes[i]->res;
            c[i].flags = cqes[i]->flags;
        }
        io_uring_cq_advance(&loop->ring, n);
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
            rc = io_uring_submit_and_wait(&loop->ring, 1);
        else if (loop->setup_flags & IORING_SETUP_DEFER_TASKRUN)
            rc = io_uring_submit_and_get_events(&loop->ring);
        else
            rc = io_uring_submit(&loop->ring);
        if (rc >= 0) {
            loop->st.sqes += (unsigned)rc;
            loop->flush_mark = coarse_ns();
            return 0;
        }
        if (rc == -EINTR)
            continue; /* a signal: the SQEs are still ours to submit */
        if (rc == -EAGAIN || rc == -EBUSY)
            return 0; /* the CQ is backed up: reap, then submit again */
        return rc;
    }
}

static bool alive(const struct eddy_loop *loop)
{
    return loop->active || loop->refs || loop->pending.head;
}

/*
 * Binds the loop to the calling thread: the first eddy_loop_run() does it
 * (or eddy_loop_destroy() of a loop never run).  Until then the loop may be
 * set up on the thread that created it and handed over; a disabled
 * single-issuer ring is enabled here, so the kernel takes this thread as
 * its submitter, and the ring fd is registered in this thread's context.
 */
static int loop_bind(struct eddy_loop *loop)
{
    if (loop->setup_flags & IORING_SETUP_R_DISABLED) {
        /* liburing 2.3 has no io_uring_enable_rings() */
        if (syscall(__NR_io_uring_register, loop->ring.ring_fd,
                    IORING_REGISTER_ENABLE_RINGS, NULL, 0) < 0)
            return -errno;
    }
    loop->owner = pthread_self();
    loop->bound = true;
    if ((loop->features & EDDY_FEAT_REG_RING_FD) && io_uring_register_ring_fd(&loop->ring) != 1)
        loop->features &= ~(unsigned)EDDY_FEAT_REG_RING_FD;
    return 0;
}

int eddy_loop_run(struct eddy_loop *loop, enum eddy_run_mode mode)
{
    if (!loop->bound) {
        int rc = loop_bind(loop);
        if (rc < 0)
            return rc;
    }
    assert(pthread_equal(pthread_self(), loop->owner));
    int rc = 0;
    for (;;) {
        eddy_update_time(loop);
        run_pending(loop);
        drain_ts(loop);
        flush_sq_wait(loop);
        if (atomic_load_explicit(&loop->stop, memory_order_relaxed))
            break;
        if (!alive(loop))
            break;
        bool wait = mode != EDDY_RUN_NOWAIT && !loop->pending.head &&
                    !atomic_load_explicit(&loop->ts_head, memory_order_relaxed);
        /* Ops waiting for SQ room go out before we sleep: the completion we
         * would sleep for may be one of theirs. */
        while (loop->sq_wait.head) {
            struct eddy_op *head = loop->sq_wait.head;
            rc = submit(loop, false);
            if (rc < 0)
                break;
            flush_sq_wait(loop);
            if (loop->sq_wait.head == head)
                break; /* no room yet: completions must free some first */
        }
        if (rc >= 0)
            rc = submit(loop, wait);
        if (rc < 0)
            break;
        eddy_update_time(loop);
        reap(loop);
        loop->st.iterations++;
        if (mode != EDDY_RUN_DEFAULT) {
            run_pending(loop);
            break;
        }
    }
    atomic_store(&loop->stop, 0);
    if (rc < 0)
        return rc;
    /* Nothing alive, yet the kernel may hold CQEs of SQEs that outlive their
     * op: a deadline's linked timeout can be posted after the op's own CQE,
     * behind a full CQ in the overflow list (6.1 with DEFER_TASKRUN does).
     * Reap what is posted, so it is not left in the kernel (and counted in
     * flight) until the loop runs again; no wait, no work when none is. */
    for (int i = 0; i < 8 && !alive(loop) &&
                    (io_uring_cq_ready(&loop->ring) || io_uring_cq_has_overflow(&loop->ring));
         i++)
        reap(loop);
    /* What we queued but did not submit yet goes out now, so a caller of
     * RUN_NOWAIT polling the loop never strands an SQE. */
    if (io_uring_sq_ready(&loop->ring))
        submit(loop, false);
    return (int)(loop->active + (loop->pending.head ? 1 : 0));
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
        io_uring_submit(&loop->ring);
        io_uring_wait_cqe_timeout(&loop->ring, &cqe, &ts);
        reap(loop);
    }
}

int eddy_loop_destroy(struct eddy_loop *loop)
{
    assert(pthread_equal(pthread_self(), loop->owner));
    if (loop->active || loop->pending.head || loop->attached)
        return -EBUSY;
    if (!loop->bound)
        loop_bind(loop); /* the internal ops' cancels need a live ring */
    loop->closing = true;
    drain_internal(loop, &loop->wake_op);
    drain_internal(loop, &loop->sig_op);
    watchdog_stop(loop);
    wpool_destroy(loop);
    signal_destroy(loop);
    io_uring_queue_exit(&loop->ring);
    close(loop->wake_fd);
    pthread_mutex_destroy(&loop->pool.mu);
    pthread_cond_destroy(&loop->pool.cv);
    loop->alloc(loop->alloc_ud, loop, 0);
    return 0;
}
