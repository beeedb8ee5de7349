/*
 * The proactor loop, backend-neutral: set-up, the life of an operation
 * (start, deferred and final callbacks, cancel), the run loop and its
 * phases, teardown, the allocator and the log.  Everything that talks to
 * the kernel is behind loop->be (backend.h: uring.c with uring_submit.c and
 * uring_complete.c, or epoll*.c).
 */
#define _GNU_SOURCE
#include "internal.h"
#include "backend.h"

#include <assert.h>
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/resource.h>
#include <sys/socket.h>
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

void eddy_loop_options_init(struct eddy_loop_options *o)
{
    memset(o, 0, sizeof *o);
}

enum { BE_AUTO, BE_URING, BE_EPOLL };

/* The backend a name asks for; an unknown one is auto, with a warning. */
static int backend_choose(struct eddy_loop *loop, const char *name)
{
    if (!name || !*name || !strcmp(name, "auto"))
        return BE_AUTO;
    if (!strcmp(name, "io_uring"))
        return BE_URING;
    if (!strcmp(name, "epoll"))
        return BE_EPOLL;
    eddy_loop_log(loop, EDDY_LOG_WARN,
                  "unknown backend \"%.64s\" (EDDY_BACKEND or the loop option): "
                  "auto, io_uring or epoll; using auto", name);
    return BE_AUTO;
}

/* io_uring_setup's errors that mean "not here": auto falls back to epoll.
 * ENOMEM only under a finite RLIMIT_MEMLOCK (kernels before 5.12 charge
 * ring memory to it, and uring.c already tried smaller rings). */
static bool uring_refused(int rc)
{
    if (rc == -EPERM || rc == -EACCES || rc == -ENOSYS)
        return true;
    struct rlimit rl;
    return rc == -ENOMEM && getrlimit(RLIMIT_MEMLOCK, &rl) == 0 &&
           rl.rlim_cur != RLIM_INFINITY;
}

/* The features o and the environment switch off (with what depends on
 * them); *stall_ms from EDDY_STALL_MS unless o set it. */
static unsigned options_env(struct eddy_loop *loop, const struct eddy_loop_options *o,
                            unsigned *stall_ms)
{
    unsigned disable = o->disable;
    if (!o->ignore_env) {
        const char *bad = NULL;
        disable |= features_env_disable(&bad);
        if (bad)
            loop->log(loop->log_ud, EDDY_LOG_WARN,
                      "EDDY_DISABLE names an unknown feature; ignored");
        const char *s = getenv("EDDY_STALL_MS");
        if (!*stall_ms && s)
            *stall_ms = (unsigned)strtoul(s, NULL, 10);
    }
    return features_disable_closure(disable);
}

const char *eddy_loop_backend(const struct eddy_loop *loop)
{
    return loop->be->name;
}

int eddy_loop_init(struct eddy_loop **out, const struct eddy_loop_options *opts)
{
    struct eddy_loop_options o;
    if (opts)
        o = *opts;
    else
        eddy_loop_options_init(&o);
    /* Room for either backend: auto may end on the second. */
    size_t size = backend_uring.loop_size > backend_epoll.loop_size
                      ? backend_uring.loop_size
                      : backend_epoll.loop_size;
    eddy_alloc_fn alloc = o.alloc ? o.alloc : default_alloc;
    struct eddy_loop *loop = alloc(o.alloc_ud, NULL, size);
    if (!loop)
        return -ENOMEM;
    memset(loop, 0, size);
    loop->alloc = alloc;
    loop->alloc_ud = o.alloc_ud;
    loop->log = o.log ? o.log : default_log;
    loop->log_ud = o.log_ud;
    loop->owner = pthread_self();
    loop->sig_fd = -1;
    loop->wake_fd = -1;
    loop->pool_threads = o.pool_threads ? o.pool_threads : 4;

    unsigned stall_ms = o.stall_ms;
    unsigned disable = options_env(loop, &o, &stall_ms);

    const char *name = o.backend;
    if (!name && !o.ignore_env)
        name = features_env_backend();
    int choice = backend_choose(loop, name);
    const struct backend *be = choice == BE_EPOLL ? &backend_epoll : &backend_uring;
    loop->be = be;
    int rc = be->init(loop, &o, disable);
    if (rc < 0 && choice == BE_AUTO && uring_refused(rc)) {
        eddy_loop_log(loop, EDDY_LOG_WARN, "io_uring refused (%s): %s; this loop runs on epoll",
                      eddy_strerror(rc), eddy_loop_init_explain(rc));
        memset((char *)loop + sizeof *loop, 0, size - sizeof *loop);
        loop->features = loop->setup_flags = 0;
        be = &backend_epoll;
        loop->be = be;
        rc = be->init(loop, &o, disable);
    }
    if (rc < 0)
        goto err_free;
    loop->features &= ~disable;

    loop->wake_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    if (loop->wake_fd < 0) {
        rc = -errno;
        goto err_backend;
    }
    pthread_mutex_init(&loop->pool.mu, NULL);
    pthread_cond_init(&loop->pool.cv, NULL);
    sigemptyset(&loop->sig_mask);
    sigemptyset(&loop->sig_owned);
    loop->now_ns = mono_ns();
    /* Before the wake-up read is armed: a failure then leaves the backend
     * no internal op to take back. */
    if (stall_ms) {
        rc = watchdog_start(loop, stall_ms);
        if (rc < 0)
            goto err_fd;
    }
    post_arm_wake(loop);
    if (!o.ignore_env && features_env_faults())
        fault_env(loop, features_env_faults()); /* malformed: a warning, no faults */
    *out = loop;
    return 0;

err_fd:
    close(loop->wake_fd);
    pthread_mutex_destroy(&loop->pool.mu);
    pthread_cond_destroy(&loop->pool.cv);
err_backend:
    be->destroy(loop);
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
    if (!err && __builtin_expect(loop->faults != NULL, 0))
        return fault_start(loop, op, kind, cb); /* fail:E, else op_start_tail() */
    return op_start_tail(loop, op, kind, cb, err);
}

/* op_start() from its verdict on; fault_start() ends in it too (a tail
 * call, so the path without faults keeps no stack frame for it). */
int op_start_tail(struct eddy_loop *loop, struct eddy_op *op, int kind, eddy_cb cb, int err)
{
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

/* Records the op (internal ops use it directly).  Not armed yet. */
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

/* Records one of the loop's own ops (the wake-up read, the signalfd poll,
 * the fault injector's timer): not counted active, so it never keeps
 * eddy_loop_run() going; op->data is the loop.  Not armed yet. */
void op_begin_internal(struct eddy_loop *loop, struct eddy_op *op, int kind, eddy_cb cb,
                       const char *label)
{
    op_begin(loop, op, kind, cb);
    loop->active--;
    op->pflags = PF_INTERNAL;
    op->label = label;
    op->data = loop;
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

int64_t coarse_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC_COARSE, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

/*
 * Work queued by callbacks (SQEs) normally goes out together at the end
 * of the batch.  But when a callback ran long (it blocked), what earlier
 * callbacks queued has already waited that long: send it now rather than
 * after the rest of the batch.  This is what lets each client of a blocking handler
 * get its answer as soon as its own handler returns.  The coarse clock is
 * read only when something is queued (the backend's loop->queued), and
 * costs a few ns; the backend is called only when it is late.
 */
#define FLUSH_AFTER_NS 2000000

static inline void flush_if_late(struct eddy_loop *loop)
{
    if (!loop->queued)
        return;
    int64_t now = coarse_ns();
    if (now - loop->flush_mark < FLUSH_AFTER_NS)
        return;
    loop->be->flush_late(loop, now);
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
    if (__builtin_expect(loop->faults != NULL, 0)) {
        res = fault_deliver(loop, op, res);
        if (res == FAULT_HELD)
            return; /* an accepted descriptor the fault closed */
    }
    op->flags = flags | EDDY_OP_MORE;
    run_cb(loop, op, res);
}

static void op_end(struct eddy_loop *loop, struct eddy_op *op, int res)
{
    if (__builtin_expect(loop->faults != NULL, 0)) {
        res = fault_final(loop, op, res);
        if (res == FAULT_HELD)
            return; /* held back by delay:N (ST_DELAYED) */
    }
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
    op->buf = bufpool_buf(op->u.recvm.pool, bid);
    op->bid = bid;
    op_end(loop, op, res);
}

/* ---- cancel ----------------------------------------------------------- */

int eddy_cancel(struct eddy_loop *loop, struct eddy_op *op)
{
    assert(pthread_equal(pthread_self(), loop->owner));
    if (op->state == ST_IDLE)
        return -ENOENT;
    /* Before reading pflags: a worker may be writing them (under the pool
     * lock); a job in ST_WORK never has PF_CANCEL set. */
    if (op->state == ST_WORK)
        return wpool_cancel(loop, op);
    /* A fault's cancel on its way (it set PF_CANCEL too) becomes the caller's. */
    if (op->pflags & PF_CANCEL)
        return op->pflags & PF_FAULT_END_MASK ? fault_cancel(loop, op) : -EALREADY;
    op->pflags |= PF_CANCEL;
    switch (op->state) {
    case ST_QUEUED:
        oplist_remove(&loop->backlog, op);
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
        loop->be->cancel(loop, op);
        return 0;
    case ST_DELAYED:
        return 0; /* its real result won the race: it comes after the delay */
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

/* Accept errors both backends (and the fault injector) treat alike. */
bool accept_transient(int res)
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

bool accept_exhausted(int res)
{
    return res == -EMFILE || res == -ENFILE || res == -ENOBUFS || res == -ENOMEM;
}

/* The next accept back-off: 10 ms, doubling, capped at 250 ms (accepting
 * resumes well within a second of descriptors freeing; four tries a second
 * cost nothing).  A successful accept resets it (backoff_ms = 0). */
unsigned accept_backoff_next(struct eddy_op *op)
{
    unsigned ms = op->u.accept.backoff_ms ? op->u.accept.backoff_ms * 2 : 10;
    if (ms > 250)
        ms = 250;
    op->u.accept.backoff_ms = ms;
    return ms;
}

bool sendmsg_advance(struct msghdr *msg, size_t n)
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

/* Runs the final callbacks deferred so far (not those they defer). */
static void run_pending(struct eddy_loop *loop)
{
    struct oplist batch = loop->pending;
    loop->pending = (struct oplist){NULL, NULL};
    struct eddy_op *op;
    while ((op = oplist_pop(&batch)))
        op_finish(loop, op, op->res);
}

/*
 * Binds the loop to the calling thread: the first eddy_loop_run() does it
 * (or eddy_loop_destroy() of a loop never run).  Until then the loop may be
 * set up on the thread that created it and handed over; the backend takes
 * this thread as the one that submits.
 */
static int loop_bind(struct eddy_loop *loop)
{
    int rc = loop->be->bind(loop);
    if (rc < 0)
        return rc;
    loop->owner = pthread_self();
    loop->bound = true;
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
    const struct backend *be = loop->be;
    int rc = 0;
    for (;;) {
        eddy_update_time(loop);
        run_pending(loop);
        post_drain(loop);
        be->flush_backlog(loop);
        if (atomic_load_explicit(&loop->stop, memory_order_relaxed))
            break;
        if (!loop_alive(loop))
            break;
        bool wait = mode != EDDY_RUN_NOWAIT && !loop->pending.head &&
                    !atomic_load_explicit(&loop->ts_head, memory_order_relaxed);
        rc = be->enter(loop, wait);
        if (rc < 0)
            break;
        eddy_update_time(loop);
        be->reap(loop);
        loop->st.iterations++;
        if (mode != EDDY_RUN_DEFAULT) {
            run_pending(loop);
            break;
        }
    }
    atomic_store(&loop->stop, 0);
    if (rc < 0)
        return rc;
    be->settle(loop);
    return (int)(loop->active + (loop->pending.head ? 1 : 0));
}

/* ---- teardown --------------------------------------------------------- */

int eddy_loop_destroy(struct eddy_loop *loop)
{
    assert(pthread_equal(pthread_self(), loop->owner));
    if (loop->active || loop->pending.head || loop->attached)
        return -EBUSY;
    if (!loop->bound)
        loop_bind(loop); /* the internal ops' cancels need a live kernel side */
    loop->closing = true;
    fault_free(loop);
    loop->be->destroy(loop);
    watchdog_stop(loop);
    wpool_destroy(loop);
    signal_destroy(loop);
    close(loop->wake_fd);
    pthread_mutex_destroy(&loop->pool.mu);
    pthread_cond_destroy(&loop->pool.cv);
    loop->alloc(loop->alloc_ud, loop, 0);
    return 0;
}
