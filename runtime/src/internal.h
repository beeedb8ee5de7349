/*
 * Internals of the eddy runtime: not installed, not part of the API.
 * Backend-neutral: the kernel interface is backend.h, and no io_uring type
 * appears here.
 */
#ifndef EDDY_INTERNAL_H
#define EDDY_INTERNAL_H

#include "eddy/eddy.h"
#include "backend.h"
#include "list.h"

#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <sys/signalfd.h>

enum op_kind {
    K_NONE = 0,
    K_ACCEPT,
    K_CONNECT,
    K_RECV,
    K_RECV_MULTI,
    K_SEND,
    K_SENDMSG,
    K_READ,
    K_WRITE,
    K_CLOSE,
    K_SHUTDOWN,
    K_POLL,
    K_TIMER,
    K_POST,
    K_POST_TS,
    K_WORK,
    K_SIGNAL,
    K_INTERNAL_READ, /* the loop's wake-up: a read of its eventfd */
};

enum op_state {
    ST_IDLE = 0,
    ST_QUEUED,  /* on loop->backlog: waiting for room in the backend */
    ST_KERNEL,  /* the backend (the kernel) has it */
    ST_PENDING, /* on loop->pending: final callback with op->res next iteration */
    ST_PARKED,  /* on its bufpool's waiters: no buffer free */
    ST_BACKOFF, /* accept waiting out EMFILE (a backend timer) */
    ST_WORK,    /* in the worker pool (queued or running) */
    ST_TSPOST,  /* posted from another thread, not drained yet */
    ST_SIGNAL,  /* on loop->signals */
    ST_DELAYED, /* fault.c: its final callback held back (delay:N) */
};

enum {
    PF_CANCEL = 1u << 0,      /* eddy_cancel() was called */
    PF_CANCEL_OWED = 1u << 1, /* the backend owes a cancel (on loop->backlog) */
    PF_INTERNAL = 1u << 2,    /* loop-owned: not counted as active */
    PF_REPEAT = 1u << 3,      /* repeating timer */
    PF_HAS_BUF = 1u << 4,     /* recv_multi fallback: op->bid is taken */
    PF_WORK_RUNNING = 1u << 5,
    PF_FINAL_CANCEL = 1u << 6, /* end with -ECANCELED once the kernel is done */
    PF_ZC = 1u << 7,          /* send: zero-copy */
    PF_ZC_DONE = 1u << 8,     /* send_zc: result in op->res, waiting for notifications */
    PF_REARM = 1u << 9,       /* timer: a cancel for an update is on its way; re-arm on it */
    PF_ONCE = 1u << 10,       /* recv_multi kind, one chunk: eddy_recv_once */
    PF_AGAIN = 1u << 11,      /* the kernel said -EAGAIN: its SQE now is a poll for readiness
                                 (epoll: a connect in progress) */
    PF_PARKED = 1u << 12,     /* epoll: on its descriptor's wait queue */
    PF_DONE = 1u << 13,       /* epoll: result in op->res, on the backend's done list */
    PF_BLOCKING = 1u << 14,   /* epoll: accept on a blocking listener: poll(2) before accept4 */
    PF_FAULT_SKIP = 1u << 15, /* fault.c: a delayed final, not to be faulted again */
    PF_FDREF = 1u << 16,      /* epoll: counted in its descriptor's busy count */
    PF_DEFERS = 1u << 17,     /* epoll: accept on a TCP_DEFER_ACCEPT listener (bytes come first) */
    PF_POLL_FIRST = 1u << 18, /* io_uring: a single-shot accept that met -EAGAIN waits for
                                 readiness before each accept (a non-blocking listener on 5.10) */
    PF_LEVEL = 1u << 19,      /* epoll: the accept heading its listener's readers, which is
                                 registered level-triggered while it does (epoll_fd.c) */
    /* fault.c: bits 24..31 hold an errno a multishot op ends with (its
     * cancel is on its way); eddy_cancel() clears them */
    PF_FAULT_END_SHIFT = 24,
    PF_FAULT_END_MASK = 0xffu << 24,
};

/* struct oplist and oplist_push/remove/pop/empty, on eddy_op's next/prev */
LIST_DEFINE(oplist, struct eddy_op, next, prev)

struct eddy_bufpool {
    struct eddy_loop *loop;
    unsigned count, size, out;
    uint16_t bgid;               /* the backend's buffer group id (ring) */
    bool ring;                   /* kernel buffer ring (else a free stack) */
    unsigned char *mem;          /* count * size */
    void *br;                    /* the backend's buffer ring (io_uring_buf_ring) */
    size_t br_bytes;
    uint16_t *free_ids;          /* fallback: stack of free ids */
    unsigned nfree;
    unsigned users;              /* recv_multi ops using it */
    struct oplist waiters;       /* ops parked on -ENOBUFS */
};

struct wpool {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    struct oplist queue;
    pthread_t *threads;
    unsigned nthreads, started;
    bool shutdown;
};

struct watchdog {
    unsigned stall_ms;
    int64_t created_ns; /* before the thread starts; seq is 0 then */
    pthread_t thread;
    bool running;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    bool quit;
    /* written by the loop thread around every callback: no clock read */
    _Atomic uint64_t seq;        /* odd while a callback runs */
    _Atomic(void *) fn;
    _Atomic(const char *) label;
    /* written by the watchdog thread when it first sees a callback running */
    _Atomic uint64_t seen_seq;   /* that callback's seq */
    _Atomic int64_t seen_after;  /* it began after this (the tick before) */
    _Atomic int64_t seen_at;     /* it was running at this (the first sighting) */
    _Atomic uint64_t reported;   /* seq the watchdog thread reported */
};

/* A loop: the backend's allocation begins with it (backend.h, Memory). */
struct eddy_loop {
    const struct backend *be;    /* the kernel interface, fixed at init */
    struct fault_set *faults;    /* fault.c: NULL = no faults (one branch per choke point) */
    pthread_t owner;
    unsigned features, setup_flags;
    int64_t now_ns;
    /* The backend keeps these two for flush_if_late (loop.c). */
    int64_t flush_mark;          /* coarse ns: when queued work last went out */
    bool queued;                 /* the backend may hold work not handed over yet */
    unsigned active, refs;
    unsigned attached;           /* pools, servers, clients built on the loop */
    unsigned inflight;           /* work the kernel holds (SQEs on io_uring) */
    struct oplist pending;       /* final callbacks for the next iteration */
    struct oplist backlog;       /* ops the backend had no room for, and owed
                                    cancels (PF_CANCEL_OWED), oldest first */
    struct eddy_loop_stats st;
    _Atomic int stop;
    bool closing;                /* destroy: internal ops must not re-arm */
    bool bound;                  /* the first eddy_loop_run() took its thread */
    _Atomic int wake_pending;
    _Atomic(struct eddy_op *) ts_head; /* posts and finished work from other threads */
    int wake_fd;
    uint64_t wake_buf;
    struct eddy_op wake_op;
    /* signals */
    int sig_fd;
    sigset_t sig_mask;           /* watched: the signalfd's mask */
    sigset_t sig_owned;          /* blocked by eddy_signal (not before it): unblock at the end */
    struct oplist signals;
    struct eddy_op sig_op;       /* POLLIN on sig_fd; the loop thread read()s it */
    /* the rest */
    struct wpool pool;
    unsigned pool_threads;
    struct watchdog wd;
    eddy_log_fn log;
    void *log_ud;
    eddy_alloc_fn alloc;
    void *alloc_ud;
};

/* fault.c: the injector (eddy/fault.h).  Each is called only when
 * loop->faults is set; see fault.c for what each site may inject. */
struct fault_set;
/* fault_start: fail:E, or op_start_tail()'s result (op_start's tail call). */
int fault_start(struct eddy_loop *loop, struct eddy_op *op, int kind, eddy_cb cb);
bool fault_arm(struct eddy_loop *loop, struct eddy_op *op);
/* fault_deliver and fault_final return the result to give, or FAULT_HELD:
 * no callback now (a descriptor closed; a final held back). */
#define FAULT_HELD INT32_MIN
int fault_deliver(struct eddy_loop *loop, struct eddy_op *op, int res);
int fault_final(struct eddy_loop *loop, struct eddy_op *op, int res);
unsigned fault_clamp(struct eddy_loop *loop, struct eddy_op *op, unsigned len);
int fault_cancel(struct eddy_loop *loop, struct eddy_op *op);
void fault_env(struct eddy_loop *loop, const char *spec);
void fault_free(struct eddy_loop *loop);

/* The hook a backend calls where it prepares the length of a send (each
 * re-submission) or of a receive into a pool buffer: the short:N effect.
 * Returns len, or fewer bytes (at least 1). */
static inline unsigned fault_clamp_len(struct eddy_loop *loop, struct eddy_op *op,
                                       unsigned len)
{
    if (__builtin_expect(loop->faults != NULL, 0))
        return fault_clamp(loop, op, len);
    return len;
}

/* short:N for a sendmsg, which has no single length to clamp: 0 when the
 * whole message goes (always, with faults off), else the bytes to send now
 * with a plain send from *buf, the start of msg's first non-empty iovec.
 * Those are the message's first bytes, so the completion advances the
 * iovecs and re-submits the rest as for any short sendmsg. */
size_t fault_sendmsg_cut(struct eddy_loop *loop, struct eddy_op *op, const void **buf);
static inline size_t fault_sendmsg_len(struct eddy_loop *loop, struct eddy_op *op,
                                       const void **buf)
{
    if (__builtin_expect(loop->faults != NULL, 0))
        return fault_sendmsg_cut(loop, op, buf);
    return 0;
}

/* features.c */
/* The features EDDY_COMPAT and EDDY_DISABLE switch off; *bad = the
 * EDDY_DISABLE text when it names an unknown feature (then ignored). */
unsigned features_env_disable(const char **bad);
/* disable plus what depends on a feature in it. */
unsigned features_disable_closure(unsigned disable);

/* The EDDY_BACKEND variable, or NULL. */
const char *features_env_backend(void);
/* The EDDY_FAULTS variable (eddy/fault.h), or NULL. */
const char *features_env_faults(void);

/* loop.c */
bool accept_transient(int res);  /* -errno accept retries without a word */
bool accept_exhausted(int res);  /* -EMFILE/-ENFILE/-ENOBUFS/-ENOMEM: back off */
unsigned accept_backoff_next(struct eddy_op *op); /* ms: 10 doubling to 250 */
struct msghdr;
/* Moves msg's iovecs past n sent bytes (a short sendmsg); true if bytes
 * remain. */
bool sendmsg_advance(struct msghdr *msg, size_t n);
int64_t mono_ns(void);
int64_t coarse_ns(void);
int op_begin(struct eddy_loop *loop, struct eddy_op *op, int kind, eddy_cb cb);
/* op_begin() for an op of the loop's own: PF_INTERNAL, not counted active,
 * op->data = loop, op->label = label. */
void op_begin_internal(struct eddy_loop *loop, struct eddy_op *op, int kind, eddy_cb cb,
                       const char *label);
int op_start(struct eddy_loop *loop, struct eddy_op *op, int kind, eddy_cb cb, int err);
int op_start_tail(struct eddy_loop *loop, struct eddy_op *op, int kind, eddy_cb cb, int err);
void op_start_undo(struct eddy_loop *loop, struct eddy_op *op);
void op_defer_final(struct eddy_loop *loop, struct eddy_op *op, int res);
void op_deliver(struct eddy_loop *loop, struct eddy_op *op, int res, unsigned flags);
void op_finish(struct eddy_loop *loop, struct eddy_op *op, int res);
void op_finish_buffer(struct eddy_loop *loop, struct eddy_op *op, int res, uint16_t bid);

/* Starts (or restarts) op in the backend: its SQE(s), or the backlog. */
static inline void op_arm(struct eddy_loop *loop, struct eddy_op *op)
{
    if (__builtin_expect(loop->faults != NULL, 0) && fault_arm(loop, op))
        return; /* its final callback is deferred with an injected error */
    loop->be->arm(loop, op);
}

/* The descriptor op works on (any kind with one; the rest: u.rw's): every
 * member of op->u with a descriptor keeps it first, so one load serves
 * every kind (the epoll backend asks several times per operation). */
#define FD_FIRST(m) (offsetof(struct eddy_op, u.m.fd) == offsetof(struct eddy_op, u.rw.fd))
_Static_assert(FD_FIRST(accept) && FD_FIRST(connect) && FD_FIRST(recv) && FD_FIRST(recvm) &&
                   FD_FIRST(send) && FD_FIRST(sendmsg) && FD_FIRST(poll) && FD_FIRST(shut),
               "the descriptor is the first field of every member of eddy_op.u that has one");
#undef FD_FIRST
static inline int op_target_fd(const struct eddy_op *op)
{
    return op->u.rw.fd;
}

/* An op that owes a cancel sits on the backlog while the kernel still has
 * it; when it completes first, it must leave that list before it moves on. */
static inline void drop_owed_cancel(struct eddy_loop *loop, struct eddy_op *op)
{
    if (op->pflags & PF_CANCEL_OWED) {
        oplist_remove(&loop->backlog, op);
        op->pflags &= ~PF_CANCEL_OWED;
    }
}

/* The loop has something to run for: eddy_loop_run() goes on. */
static inline bool loop_alive(const struct eddy_loop *loop)
{
    return loop->active || loop->refs || loop->pending.head;
}

/* post.c */
/* Wakes the loop from any thread (once until the loop has seen it). */
void loop_wake(struct eddy_loop *loop);
/* Hands op to loop's thread from any thread; it runs op_finish(op->res). */
void ts_push(struct eddy_loop *loop, struct eddy_op *op);
/* Loop thread: runs everything ts_push() brought, oldest first. */
void post_drain(struct eddy_loop *loop);
/* Arms the loop's internal eventfd read that wakes it. */
void post_arm_wake(struct eddy_loop *loop);

/* bufpool.c */
void bufpool_park(struct eddy_bufpool *pool, struct eddy_op *op);

/* Buffer bid's bytes (eddy_bufpool_buf, inline for the backends' paths). */
static inline void *bufpool_buf(const struct eddy_bufpool *pool, uint16_t bid)
{
    return pool->mem + (size_t)bid * pool->size;
}

/* A free buffer of a pool without a kernel ring into *bid; false if dry. */
static inline bool bufpool_take(struct eddy_bufpool *pool, uint16_t *bid)
{
    if (!pool->nfree)
        return false;
    *bid = pool->free_ids[--pool->nfree];
    return true;
}

/* work.c */
/* Starts a thread of the loop's own (a worker, the watchdog) with every
 * signal blocked.  0 or -errno. */
int loop_thread_start(pthread_t *t, void *(*fn)(void *), void *arg);
/* Stops threads started so: sets *quit under mu, wakes every waiter on cv,
 * and joins the n threads. */
void loop_threads_stop(pthread_mutex_t *mu, pthread_cond_t *cv, bool *quit,
                       const pthread_t *threads, unsigned n);
/* One read(2)/write(2) of op's u.rw, or pread/pwrite at its offset (none:
 * (uint64_t)-1): bytes, or -errno.  Blocks on a blocking descriptor. */
int op_rw_syscall(const struct eddy_op *op, bool wr);
int wpool_submit(struct eddy_loop *loop, struct eddy_op *op);
int wpool_cancel(struct eddy_loop *loop, struct eddy_op *op);
void wpool_destroy(struct eddy_loop *loop);

/* signal.c */
void signal_dispatch(struct eddy_loop *loop, int res);
void signal_cancel(struct eddy_loop *loop, struct eddy_op *op);
void signal_destroy(struct eddy_loop *loop);

/* watchdog.c */
int watchdog_start(struct eddy_loop *loop, unsigned stall_ms);
void watchdog_stop(struct eddy_loop *loop);
void watchdog_enter(struct eddy_loop *loop, struct eddy_op *op);
void watchdog_leave(struct eddy_loop *loop);

/* the loop's allocator */
void *loop_alloc(struct eddy_loop *loop, size_t n);
void loop_free(struct eddy_loop *loop, void *p);

#endif
