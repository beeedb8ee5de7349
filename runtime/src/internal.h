/* Internals of the eddy runtime: not installed, not part of the API. */
#ifndef EDDY_INTERNAL_H
#define EDDY_INTERNAL_H

#include "eddy/eddy.h"

#include <liburing.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <sys/signalfd.h>

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
    K_INTERNAL_READ, /* the loop's eventfd / signalfd reads */
};

enum op_state {
    ST_IDLE = 0,
    ST_QUEUED,  /* on loop->sq_wait: waiting for SQEs */
    ST_KERNEL,  /* its SQE is in the kernel */
    ST_PENDING, /* on loop->pending: final callback with op->res next iteration */
    ST_PARKED,  /* on its bufpool's waiters: no buffer free */
    ST_BACKOFF, /* accept back-off timer in the kernel */
    ST_WORK,    /* in the worker pool (queued or running) */
    ST_TSPOST,  /* posted from another thread, not drained yet */
    ST_SIGNAL,  /* on loop->signals */
};

enum {
    PF_CANCEL = 1u << 0,      /* eddy_cancel() was called */
    PF_CANCEL_OWED = 1u << 1, /* an async-cancel SQE is owed (on sq_wait) */
    PF_INTERNAL = 1u << 2,    /* loop-owned: not counted as active */
    PF_REPEAT = 1u << 3,      /* repeating timer */
    PF_HAS_BUF = 1u << 4,     /* recv_multi fallback: op->bid is taken */
    PF_WORK_RUNNING = 1u << 5,
    PF_FINAL_CANCEL = 1u << 6, /* end with -ECANCELED once the kernel is done */
    PF_ZC = 1u << 7,          /* send: zero-copy */
    PF_ZC_DONE = 1u << 8,     /* send_zc: result in op->res, waiting for notifications */
    PF_REARM = 1u << 9,       /* timer: a cancel for an update is on its way; re-arm on it */
    PF_ONCE = 1u << 10,       /* recv_multi kind, one chunk: eddy_recv_once */
    PF_AGAIN = 1u << 11,      /* the kernel said -EAGAIN: its SQE now is a poll for readiness */
};

struct oplist {
    struct eddy_op *head, *tail;
};

struct eddy_bufpool {
    struct eddy_loop *loop;
    unsigned count, size, out;
    uint16_t bgid;
    bool ring;                   /* kernel buffer ring (else a free stack) */
    unsigned char *mem;          /* count * size */
    struct io_uring_buf_ring *br;
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

struct eddy_loop {
    struct io_uring ring;
    pthread_t owner;
    unsigned features, setup_flags;
    unsigned entries, cq_entries;
    int64_t now_ns;
    int64_t flush_mark;          /* coarse ns: when queued SQEs last went out */
    unsigned active, refs;
    unsigned attached;           /* pools, servers, clients built on the loop */
    unsigned inflight;           /* SQEs the kernel holds */
    struct oplist pending;       /* final callbacks for the next iteration */
    struct oplist sq_wait;       /* ops waiting for SQEs */
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
    uint16_t next_bgid;
    struct wpool pool;
    unsigned pool_threads;
    struct watchdog wd;
    eddy_log_fn log;
    void *log_ud;
    eddy_alloc_fn alloc;
    void *alloc_ud;
};

/* lists */
void oplist_push(struct oplist *l, struct eddy_op *op);
void oplist_remove(struct oplist *l, struct eddy_op *op);
struct eddy_op *oplist_pop(struct oplist *l);

/* loop.c */
int64_t mono_ns(void);
int op_begin(struct eddy_loop *loop, struct eddy_op *op, int kind, eddy_cb cb);
int op_start(struct eddy_loop *loop, struct eddy_op *op, int kind, eddy_cb cb, int err);
void op_start_undo(struct eddy_loop *loop, struct eddy_op *op);
void op_arm(struct eddy_loop *loop, struct eddy_op *op);
struct io_uring_sqe *get_sqe_flush(struct eddy_loop *loop);
void op_defer_final(struct eddy_loop *loop, struct eddy_op *op, int res);
void op_deliver(struct eddy_loop *loop, struct eddy_op *op, int res, unsigned flags);
void op_finish(struct eddy_loop *loop, struct eddy_op *op, int res);
void op_finish_buffer(struct eddy_loop *loop, struct eddy_op *op, int res, uint16_t bid);
void sqe_set_aside(struct eddy_loop *loop, struct io_uring_sqe *sqe, struct eddy_op *op);
void loop_wake(struct eddy_loop *loop);
void ts_push(struct eddy_loop *loop, struct eddy_op *op);

/* ops.c: prepare the op's SQE(s); false when the SQ has no room */
bool op_prep(struct eddy_loop *loop, struct eddy_op *op);
void op_complete(struct eddy_loop *loop, struct eddy_op *op, int res, unsigned cflags);
void op_backoff_done(struct eddy_loop *loop, struct eddy_op *op, int res);

/* bufpool.c */
void bufpool_park(struct eddy_bufpool *pool, struct eddy_op *op);
bool bufpool_take(struct eddy_bufpool *pool, uint16_t *bid);

/* work.c */
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

#define EDDY_UD(op, tag) ((uint64_t)(uintptr_t)(op) | (tag))

#endif
