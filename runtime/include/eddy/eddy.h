/*
 * eddy — an io_uring proactor runtime.
 *
 * The model: completion, not readiness.  You fill an operation (a struct
 * eddy_op that you own, usually embedded in your own connection or request
 * struct), start it, and the kernel does the I/O.  The loop reaps
 * completions and calls the operation's callback with the result.
 *
 * Guarantees, for every operation kind:
 *   - A starter that returns a negative errno never calls the callback.
 *   - A starter that returns 0 leads to exactly one *final* callback, also
 *     when the operation is cancelled or its deadline fires.  Multishot
 *     operations (accept, recv_multi, repeating timers, signals) may call
 *     the callback several times before that; every non-final call has
 *     EDDY_OP_MORE set in op->flags, the final one has it clear.
 *   - Callbacks run only from eddy_loop_run() on the loop's thread, never
 *     from inside the starter.
 *   - From start until the final callback the op and every buffer it points
 *     to belong to the loop and the kernel.  Cancelling does not end that
 *     ownership; the final callback does.  Inside the final callback the op
 *     may be freed or started again.
 *   - A full submission queue is not the caller's problem: the op is queued
 *     and submitted after the next flush.
 *
 * Threads: one loop per thread.  A loop belongs to the thread that created
 * it until it first runs; the first eddy_loop_run() binds it to the thread
 * that calls it.  So a loop may be set up (ops started, servers listening)
 * on one thread and handed over — with the usual synchronization, such as
 * pthread_create() — to the thread that runs it.  Every function here must
 * be called from the owning thread, except eddy_loop_stop(),
 * eddy_post_threadsafe() and eddy_strerror() (and eddy_post_to(), from the
 * sending loop's thread).
 *
 * Errors: functions return 0 (or a count) on success and a negative errno
 * on failure.  Callback results are the kernel's: bytes or a descriptor on
 * success, a negative errno on failure.  Nothing sets errno for you to read.
 * The library never prints unless you ask for it (the stall watchdog, and
 * the log hook in the loop options).
 */
#ifndef EDDY_EDDY_H
#define EDDY_EDDY_H

#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>
#include <sys/types.h>
#include <sys/uio.h>

#ifdef __cplusplus
extern "C" {
#endif

#define EDDY_VERSION_MAJOR 0
#define EDDY_VERSION_MINOR 1
#define EDDY_VERSION_PATCH 0

/* ------------------------------------------------------------------------
 * Errors
 * ---------------------------------------------------------------------- */

/* The text for a negative errno (or 0).  Never NULL; thread-safe. */
const char *eddy_strerror(int err);

/* ------------------------------------------------------------------------
 * Kernel features
 *
 * Probed once at eddy_loop_init().  eddy_loop_features() gives the mask in
 * use: what the kernel has, minus what the options or the environment
 * switched off.  Names (for EDDY_DISABLE) are in parentheses.
 * ---------------------------------------------------------------------- */
enum eddy_feature {
    EDDY_FEAT_ACCEPT_MULTI   = 1u << 0, /* (accept_multishot) 5.19 */
    EDDY_FEAT_BUF_RING       = 1u << 1, /* (buf_ring) provided buffer ring, 5.19 */
    EDDY_FEAT_RECV_MULTI     = 1u << 2, /* (recv_multishot) 6.0, needs buf_ring */
    EDDY_FEAT_SINGLE_ISSUER  = 1u << 3, /* (single_issuer) 6.0 */
    EDDY_FEAT_DEFER_TASKRUN  = 1u << 4, /* (defer_taskrun) 6.1, needs single_issuer */
    EDDY_FEAT_COOP_TASKRUN   = 1u << 5, /* (coop_taskrun) 5.19 */
    EDDY_FEAT_MSG_RING       = 1u << 6, /* (msg_ring) 5.18 */
    EDDY_FEAT_SEND_ZC        = 1u << 7, /* (send_zc) 6.0 */
    EDDY_FEAT_TIMEOUT_UPDATE = 1u << 8, /* (timeout_update) 5.11 */
    EDDY_FEAT_NO_MEMLOCK     = 1u << 9, /* (no_memlock) ring memory not charged to RLIMIT_MEMLOCK, 5.12 */
    EDDY_FEAT_REG_RING_FD    = 1u << 10, /* (registered_ring) 5.18 */
    EDDY_FEAT_SHUTDOWN       = 1u << 11, /* (shutdown) IORING_OP_SHUTDOWN, 5.11 */
    EDDY_FEAT_NODROP         = 1u << 12, /* (nodrop) no CQE is dropped on CQ overflow, 5.5 */
    EDDY_FEAT_EXT_ARG        = 1u << 13, /* (ext_arg) 5.11 */
    EDDY_FEAT_CQE_SKIP       = 1u << 14, /* (cqe_skip) no CQE for a cancel that worked, 5.17 */
};

/* Everything a Linux 5.10 kernel lacks; EDDY_COMPAT=5.10 switches these off. */
#define EDDY_FEAT_NOT_IN_5_10                                                  \
    (EDDY_FEAT_ACCEPT_MULTI | EDDY_FEAT_BUF_RING | EDDY_FEAT_RECV_MULTI |      \
     EDDY_FEAT_SINGLE_ISSUER | EDDY_FEAT_DEFER_TASKRUN |                       \
     EDDY_FEAT_COOP_TASKRUN | EDDY_FEAT_MSG_RING | EDDY_FEAT_SEND_ZC |         \
     EDDY_FEAT_TIMEOUT_UPDATE | EDDY_FEAT_NO_MEMLOCK |                         \
     EDDY_FEAT_REG_RING_FD | EDDY_FEAT_SHUTDOWN | EDDY_FEAT_EXT_ARG |          \
     EDDY_FEAT_CQE_SKIP)

/* The name of one feature bit ("accept_multishot"), or NULL. */
const char *eddy_feature_name(unsigned feature);

/*
 * Parses a comma-separated list of feature names (spaces allowed; "all"
 * means every feature) into a mask.  Returns 0 and sets *mask, or -EINVAL
 * for an unknown name.
 */
int eddy_feature_parse(const char *list, unsigned *mask);

/* ------------------------------------------------------------------------
 * Loop options
 * ---------------------------------------------------------------------- */

/* The log hook: level is one of EDDY_LOG_*; msg has no trailing newline. */
enum { EDDY_LOG_ERROR = 0, EDDY_LOG_WARN = 1, EDDY_LOG_INFO = 2 };
typedef void (*eddy_log_fn)(void *ud, int level, const char *msg);

/*
 * The allocator hook, Lua style: alloc(ud, ptr, 0) frees; alloc(ud, NULL, n)
 * allocates; never called on the hot path.  Returning NULL is an ordinary
 * failure (-ENOMEM) that every caller handles.
 */
typedef void *(*eddy_alloc_fn)(void *ud, void *ptr, size_t size);

struct eddy_loop_options {
    unsigned entries;          /* SQ entries; 0 = 256.  Rounded up to a power of 2.  On
                                  epoll: the results one descriptor delivers per edge (at
                                  most 64) before the others get their turn. */
    unsigned cq_entries;       /* CQ entries; 0 = 4 * entries.  On epoll: the events
                                  taken per wait (at most 128). */
    unsigned disable;          /* features to switch off (EDDY_FEAT_*) */
    unsigned stall_ms;         /* stall watchdog threshold; 0 = off.  A thread samples the
                                  running callback every quarter threshold (1..50 ms); the
                                  loop pays a few atomic stores per callback, no clock read.
                                  A callback is reported once it has surely run this long
                                  (up to a quarter threshold late), while still running
                                  and again with its total when it returns. */
    unsigned pool_threads;     /* worker pool threads; 0 = 4.  Started on first job. */
    int ignore_env;            /* nonzero: ignore EDDY_DISABLE/EDDY_COMPAT/EDDY_STALL_MS/EDDY_BACKEND */
    eddy_log_fn log;           /* NULL: warnings and stall reports go to stderr */
    void *log_ud;
    eddy_alloc_fn alloc;       /* NULL: malloc/realloc/free */
    void *alloc_ud;
    const char *backend;       /* "auto" (NULL), "io_uring" or "epoll": see eddy_loop_init() */
    /* io-wq, the kernel's threads for work that cannot complete inline (a
     * regular file's read, an IOSQE_ASYNC op): io_uring only; the epoll
     * backend sends such work to its worker pool, sized by pool_threads. */
    struct eddy_loop *attach_wq; /* share this loop's io-wq (IORING_SETUP_ATTACH_WQ) instead
                                    of a new one; NULL = own.  Since 5.12 io-wq belongs to the
                                    submitting thread and the kernel only checks the ring */
    unsigned iowq_max_workers; /* cap io-wq's bounded and unbounded workers at this many
                                  (IORING_REGISTER_IOWQ_MAX_WORKERS, 5.15; older kernels
                                  keep their defaults); 0 = the kernel's defaults */
};

/* Fills o with the defaults (all zero). */
void eddy_loop_options_init(struct eddy_loop_options *o);

/* ------------------------------------------------------------------------
 * Operations
 * ---------------------------------------------------------------------- */

struct eddy_loop;
struct eddy_op;
struct eddy_bufpool;

/* One callback shape for every kind: res is bytes, a descriptor, 0 or -errno. */
typedef void (*eddy_cb)(struct eddy_op *op, int res);

/* A worker-pool job body; runs on a pool thread. Its return value is the
 * res of the completion callback. */
typedef int (*eddy_work_fn)(struct eddy_op *op);

/* op->flags, read-only, valid inside the callback */
enum {
    EDDY_OP_MORE = 1u << 0,    /* more callbacks will follow (not final) */
    EDDY_OP_BUFFER = 1u << 1,  /* recv_multi: op->buf/op->bid hold a pool buffer */
};

/*
 * The operation.  Embed it in your own struct and recover yours with
 * eddy_container_of(), or point op->data at it.  Zero it (or use
 * EDDY_OP_INIT) before its first start; after its final callback it may be
 * started again as it is.
 */
struct eddy_op {
    /* public: set by you (the starter sets cb) */
    eddy_cb cb;
    void *data;                /* yours */
    const char *label;         /* optional name for the stall watchdog */
    /* read-only: valid inside the callback */
    void *buf;                 /* recv_multi: the received bytes */
    uint32_t flags;            /* EDDY_OP_MORE, EDDY_OP_BUFFER */
    uint16_t bid;              /* recv_multi: buffer id to give back */
    /* private: the loop's */
    uint8_t kind;
    uint8_t state;
    uint32_t pflags;
    int32_t res;               /* result waiting for a deferred callback */
    struct eddy_op *next;
    struct eddy_op *prev;
    struct eddy_loop *loop;
    int64_t deadline_ns;       /* absolute CLOCK_MONOTONIC, 0 = none */
    struct { int64_t tv_sec; long long tv_nsec; } ts; /* kernel timespec */
    union {
        struct { int fd; unsigned msgflags; const void *buf; uint32_t len, done, zc_notifs; } send;
        struct { int fd; unsigned msgflags; struct msghdr *msg; size_t done; } sendmsg;
        struct { int fd; unsigned msgflags; void *buf; size_t len; } recv;
        struct { int fd; struct eddy_bufpool *pool; } recvm;
        struct { int fd; int flags; struct sockaddr *addr; socklen_t *addrlen; unsigned backoff_ms; } accept;
        struct { int fd; socklen_t len; const struct sockaddr *addr; } connect;
        struct { int fd; unsigned len; void *buf; uint64_t off; } rw;
        struct { int fd; int how; } shut;
        struct { int fd; unsigned events; } poll;
        struct { int64_t interval_ns; int64_t next_ns; } timer;
        struct { eddy_work_fn fn; int res; } work;
        struct { int signo; int due; } sig;
    } u;
};

/* An idle op, all zero; warning-free in C and C++ (-Wall -Wextra). */
#ifdef __cplusplus
#define EDDY_OP_INIT {}
#else
#define EDDY_OP_INIT {0}
#endif

#define eddy_container_of(ptr, type, member)                                   \
    ((type *)(void *)((char *)(ptr) - offsetof(type, member)))

/* True while the op is started and its final callback has not run yet. */
int eddy_op_active(const struct eddy_op *op);

/*
 * Gives the next start of op a deadline, ms from now: when it passes, the
 * operation is cancelled and ends with -ETIME (or with its real result if
 * that won the race).  For send/sendmsg the deadline covers every
 * re-submission, and any wait for readiness.  Not for multishot kinds nor
 * timers (their starters return -EINVAL).  Call on an idle op, before the
 * starter (on an active op it does nothing).  The deadline belongs to that
 * next start alone: a start that fails drops it, and a start that succeeds
 * ends it with its final callback; it never carries over to a later start.
 */
void eddy_op_set_deadline(struct eddy_loop *loop, struct eddy_op *op, unsigned ms);

/* ------------------------------------------------------------------------
 * The loop
 * ---------------------------------------------------------------------- */

/*
 * Creates a loop and its ring.  opts may be NULL.  The loop belongs to the
 * calling thread until its first eddy_loop_run() (see Threads, above).
 * Environment (unless opts->ignore_env): EDDY_DISABLE=<names> and
 * EDDY_COMPAT=5.10 switch features off; EDDY_STALL_MS=<n> sets the
 * watchdog threshold when opts leaves it 0; EDDY_BACKEND=auto|io_uring|epoll
 * chooses the backend when opts->backend is NULL (see Backends, below).
 * Returns 0 and *out, or -ENOSYS / -EPERM / -ENOMEM / ... when io_uring
 * cannot be set up (and the backend is forced to io_uring, or auto and the
 * error is not one that falls back): eddy_loop_init_explain() says why and
 * what to do.
 */
int eddy_loop_init(struct eddy_loop **out, const struct eddy_loop_options *opts);

/* A sentence that explains an eddy_loop_init() failure to an operator. */
const char *eddy_loop_init_explain(int err);

/*
 * Backends.  The loop runs on io_uring or, where io_uring is refused, on
 * epoll, with the same contract.  opts->backend, else EDDY_BACKEND (unless
 * opts->ignore_env), chooses: "io_uring" (refused: eddy_loop_init fails as
 * described above), "epoll", or "auto" (the default): io_uring, and epoll
 * when io_uring_setup says EPERM, EACCES or ENOSYS (seccomp, the sysctl
 * kernel.io_uring_disabled, an old or foreign kernel) or ENOMEM under a
 * finite RLIMIT_MEMLOCK; that fallback logs one warning (why io_uring was
 * refused, and that the loop runs on epoll).  An unknown name logs a
 * warning and means "auto".  On epoll eddy_loop_features() and
 * eddy_loop_setup_flags() are 0 (every feature bit is io_uring's), and
 * eddy_loop_stats() counts what its struct says for epoll.
 */
/* The backend the loop runs on: "io_uring" or "epoll". */
const char *eddy_loop_backend(const struct eddy_loop *loop);

/*
 * Frees the loop.  Returns -EBUSY (and frees nothing) while operations are
 * active, or while anything is still attached to it (a buffer pool, an HTTP
 * server or client: see eddy_loop_attach()).  The teardown order is the
 * reverse of set-up: cancel what runs and run the loop until it ends, destroy
 * what was built on the loop (servers and clients, then buffer pools), then
 * destroy the loop.
 */
int eddy_loop_destroy(struct eddy_loop *loop);

/*
 * For objects built on a loop that outlive single operations (eddy's buffer
 * pools, HTTP servers and clients; yours too): attach when created, detach
 * when destroyed.  While any attachment remains eddy_loop_destroy() returns
 * -EBUSY instead of freeing memory the object still points to.  Counted;
 * loop thread only.  eddy_loop_attached() gives the count.
 */
void eddy_loop_attach(struct eddy_loop *loop);
void eddy_loop_detach(struct eddy_loop *loop);
unsigned eddy_loop_attached(const struct eddy_loop *loop);

enum eddy_run_mode {
    EDDY_RUN_DEFAULT = 0, /* until no operation is active, or stopped */
    EDDY_RUN_ONCE = 1,    /* one iteration; waits for at least one completion if work is active */
    EDDY_RUN_NOWAIT = 2,  /* one iteration without waiting */
};

/*
 * Runs the loop.  Returns the number of active operations left (0 when the
 * loop ran out of work), or a negative errno on a fatal ring error.  The
 * first call binds the loop to the calling thread (see Threads, above):
 * a single-issuer ring is created disabled and enabled here, so the kernel
 * takes this thread as its submitter; ops started before wait in the
 * submission queue until then.
 */
int eddy_loop_run(struct eddy_loop *loop, enum eddy_run_mode mode);

/* Makes eddy_loop_run() return after its current iteration.  Any thread. */
void eddy_loop_stop(struct eddy_loop *loop);

/* Keeps the loop running while it has no active operation (for example
 * while other threads will post to it).  Counted; loop thread only.  An
 * unref without a ref (like a detach without an attach) is a bug that no
 * return value can report: a build with assertions aborts, others ignore
 * it (the count never wraps around). */
void eddy_loop_ref(struct eddy_loop *loop);
void eddy_loop_unref(struct eddy_loop *loop);

/* The loop's cached CLOCK_MONOTONIC time in ns, updated every iteration. */
int64_t eddy_now_ns(const struct eddy_loop *loop);
/* Re-reads the clock into the cache and returns it. */
int64_t eddy_update_time(struct eddy_loop *loop);

/* The features in use (EDDY_FEAT_*), and the ring's setup flags. */
unsigned eddy_loop_features(const struct eddy_loop *loop);
unsigned eddy_loop_setup_flags(const struct eddy_loop *loop);

/*
 * Counters since eddy_loop_init(), and two gauges (active, inflight).  The
 * field comments say what each counts on io_uring; on epoll:
 *   sqes          system calls made for operations (each try, including
 *                 one that says EAGAIN; each timer armed counts one)
 *   completions   results delivered (each callback of a multishot
 *                 operation, each final result)
 *   submit_calls  epoll waits
 *   sq_full       0: there is no queue to fill (opts->entries, at most 64,
 *                 bounds the results one descriptor's readiness delivers in
 *                 an iteration; the rest comes the next one)
 *   cq_overflows  0 (opts->cq_entries, at most 128, bounds the events one
 *                 wait takes; the rest stay ready in the kernel for the
 *                 next wait)
 *   enobufs, iterations, stalls, active: the same on both
 *   inflight      operations parked on a descriptor, plus timers,
 *                 deadlines and accept back-offs waiting (a deadline counts
 *                 apart from its operation)
 */
struct eddy_loop_stats {
    uint64_t sqes;             /* SQEs submitted */
    uint64_t completions;      /* CQEs reaped */
    uint64_t submit_calls;     /* io_uring_enter calls that submitted or waited */
    uint64_t sq_full;          /* times a full SQ had to be flushed early */
    uint64_t cq_overflows;     /* times the kernel reported CQ overflow */
    uint64_t enobufs;          /* -ENOBUFS from an empty buffer pool */
    uint64_t iterations;       /* loop iterations */
    uint64_t stalls;           /* callbacks the watchdog reported */
    uint32_t active;           /* operations started and not yet final */
    uint32_t inflight;         /* SQEs in the kernel */
};
void eddy_loop_stats(const struct eddy_loop *loop, struct eddy_loop_stats *out);

/* The allocator of the loop (for layers built on it). */
void *eddy_loop_alloc(struct eddy_loop *loop, size_t size);
void *eddy_loop_realloc(struct eddy_loop *loop, void *ptr, size_t size);
void eddy_loop_free(struct eddy_loop *loop, void *ptr);
/* Logs through the loop's log hook (printf-style). */
void eddy_loop_log(struct eddy_loop *loop, int level, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* ------------------------------------------------------------------------
 * Starters.  All take (loop, op, args..., cb); all return 0 or -errno.
 * Buffers and addresses passed in belong to the loop until the final
 * callback.  Every starter returns -EBUSY for an op that is already active
 * (and leaves that running start alone), -EINVAL for bad arguments
 * (eddy_close, eddy_shutdown and eddy_poll: -EBADF for a negative fd), in
 * every build: misuse the API can see is an error code, never an assertion.
 *
 * -EAGAIN is never a result.  On a non-blocking descriptor (O_NONBLOCK, or
 * MSG_DONTWAIT in msgflags) the kernel may answer -EAGAIN instead of
 * waiting; the loop then waits for readiness (POLLIN for accept, recv,
 * recv_multi, recv_once and read; POLLOUT for send, send_zc, sendmsg and
 * write) and issues the operation again, inside the same start: cancel and
 * the deadline apply to that wait too.  (connect is the exception: its
 * -EAGAIN means no local port or no backlog room, a real error.)
 * ---------------------------------------------------------------------- */

/*
 * Accepts connections on a listening socket, repeatedly: one callback per
 * connection (res = the new descriptor, EDDY_OP_MORE set) until cancelled.
 * Multishot where the kernel has it, else a single accept re-armed after
 * each completion.  flags: SOCK_NONBLOCK / SOCK_CLOEXEC for accept4.
 * On -EMFILE / -ENFILE / -ENOMEM / -ENOBUFS the callback sees the error
 * with EDDY_OP_MORE set, and accepting resumes after a back-off (10 ms
 * doubling to 250 ms), so an out-of-descriptors server neither spins nor
 * stops.  Transient errors (-ECONNABORTED, -EINTR ...) are retried quietly.
 * The final callback is -ECANCELED (after eddy_cancel) or a fatal error
 * (-EBADF, -EINVAL, -ENOTSOCK).  addr/addrlen may be NULL.
 */
int eddy_accept(struct eddy_loop *loop, struct eddy_op *op, int fd,
                struct sockaddr *addr, socklen_t *addrlen, int flags, eddy_cb cb);

/* Connects fd to addr; res 0 or -errno (-EAGAIN: no free local port, or a
 * full backlog of a Unix socket).  addr must live until the callback. */
int eddy_connect(struct eddy_loop *loop, struct eddy_op *op, int fd,
                 const struct sockaddr *addr, socklen_t len, eddy_cb cb);

/* One recv into buf: res = bytes (0 = peer closed) or -errno. */
int eddy_recv(struct eddy_loop *loop, struct eddy_op *op, int fd, void *buf,
              size_t len, unsigned msgflags, eddy_cb cb);

/*
 * Receives repeatedly into buffers taken from pool: one callback per chunk
 * with res = bytes, op->buf/op->bid the buffer (EDDY_OP_BUFFER set) and
 * EDDY_OP_MORE set.  Give every buffer back with eddy_bufpool_put().  The
 * final callback has res 0 (peer closed), -ECANCELED or another -errno, and
 * no buffer.  When the pool runs dry the receive waits (counted as enobufs)
 * and resumes by itself when a buffer is put back; no byte is lost.
 * Multishot recv from a buffer ring where the kernel has it, else single
 * recvs into pool buffers.
 */
int eddy_recv_multi(struct eddy_loop *loop, struct eddy_op *op, int fd,
                    struct eddy_bufpool *pool, eddy_cb cb);

/*
 * One receive into a buffer taken from pool, for a connection that may need
 * only one (a request with Connection: close): nothing stays armed after it,
 * so closing needs no cancel.  The only callback is final: res = bytes with
 * op->buf/op->bid and EDDY_OP_BUFFER set (give the buffer back with
 * eddy_bufpool_put), or 0 / -errno with no buffer.  A dry pool waits as in
 * eddy_recv_multi.  After eddy_cancel the data still wins if it came first.
 */
int eddy_recv_once(struct eddy_loop *loop, struct eddy_op *op, int fd,
                   struct eddy_bufpool *pool, eddy_cb cb);

/*
 * Sends all len bytes: short sends are re-submitted inside, the callback
 * sees len or the first error (bytes already sent are then lost to the
 * caller's view; treat the connection as broken).  MSG_NOSIGNAL is always
 * added: a reset peer gives -EPIPE / -ECONNRESET, never SIGPIPE.
 */
int eddy_send(struct eddy_loop *loop, struct eddy_op *op, int fd,
              const void *buf, size_t len, unsigned msgflags, eddy_cb cb);

/*
 * eddy_send() without the copy into the kernel: IORING_OP_SEND_ZC (6.0)
 * pins buf and the NIC reads it directly; worth it for large buffers (tens
 * of KiB and up) on real NICs, not on loopback.  The kernel tells when it no
 * longer needs buf: the final callback comes only after that, so the usual
 * rule holds (buf is the loop's until the final callback).  Without the
 * feature (or with send_zc switched off) it is a plain eddy_send().
 */
int eddy_send_zc(struct eddy_loop *loop, struct eddy_op *op, int fd,
                 const void *buf, size_t len, unsigned msgflags, eddy_cb cb);

/*
 * sendmsg until every byte of msg's iovecs is sent (res = total) or an
 * error.  On a short send the loop advances msg->msg_iov / msg_iovlen and
 * the iovecs in place: they are the loop's until the callback.
 */
int eddy_sendmsg(struct eddy_loop *loop, struct eddy_op *op, int fd,
                 struct msghdr *msg, unsigned msgflags, eddy_cb cb);

/* read/write at offset (-1 = current position); res = bytes or -errno. */
int eddy_read(struct eddy_loop *loop, struct eddy_op *op, int fd, void *buf,
              unsigned len, uint64_t offset, eddy_cb cb);
int eddy_write(struct eddy_loop *loop, struct eddy_op *op, int fd,
               const void *buf, unsigned len, uint64_t offset, eddy_cb cb);

/* Closes fd; res 0 or -errno. */
int eddy_close(struct eddy_loop *loop, struct eddy_op *op, int fd, eddy_cb cb);

/* shutdown(fd, how); IORING_OP_SHUTDOWN or, before 5.11, the system call
 * with the result delivered as a completion. */
int eddy_shutdown(struct eddy_loop *loop, struct eddy_op *op, int fd, int how,
                  eddy_cb cb);

/* Waits once for readiness (POLLIN, POLLOUT ...) of any descriptor; res =
 * the revents or -errno. */
int eddy_poll(struct eddy_loop *loop, struct eddy_op *op, int fd,
              unsigned events, eddy_cb cb);

/*
 * Timers.  res is 0 when the timer fires (never early), -ECANCELED when
 * cancelled.  A repeating timer fires every interval_ms (EDDY_OP_MORE set),
 * scheduled from its previous deadline so it does not drift, until
 * cancelled.  eddy_timer_at takes an absolute CLOCK_MONOTONIC time in ns.
 */
int eddy_timer(struct eddy_loop *loop, struct eddy_op *op, uint64_t ms, eddy_cb cb);
int eddy_timer_ns(struct eddy_loop *loop, struct eddy_op *op, uint64_t ns, eddy_cb cb);
int eddy_timer_at(struct eddy_loop *loop, struct eddy_op *op, int64_t abs_ns, eddy_cb cb);
int eddy_timer_repeat(struct eddy_loop *loop, struct eddy_op *op,
                      uint64_t interval_ms, eddy_cb cb);

/*
 * Moves an active timer's next expiry to ms from now (a repeating timer
 * keeps its interval after that).  IORING_TIMEOUT_UPDATE (5.11), else a
 * cancel and a new timeout, invisible to the caller: no callback for the
 * old expiry.  If the timer has already fired (its callback is on its way)
 * the update is lost with it.  Returns 0, -ENOENT if op is not an active
 * timer, -EALREADY if it is being cancelled, -EAGAIN if no SQE is free.
 */
int eddy_timer_update(struct eddy_loop *loop, struct eddy_op *op, uint64_t ms);

/*
 * Cancels op.  Returns 0 if a cancellation was started, -ENOENT if op is not
 * active, -EALREADY if it is already being cancelled, -EBUSY if it cannot
 * be stopped: an eddy_work() job a pool thread is already running, or an
 * eddy_post_threadsafe()/eddy_post_to() post on its way.  Its final
 * callback then comes as usual, with its real result.  Otherwise the op's
 * final callback runs exactly once, with -ECANCELED or with its real result
 * when that won the race.  Never calls the callback from here.
 */
int eddy_cancel(struct eddy_loop *loop, struct eddy_op *op);

/* Runs cb(op, 0) on the loop's next iteration. */
int eddy_post(struct eddy_loop *loop, struct eddy_op *op, eddy_cb cb);

/*
 * From any thread: runs cb(op, 0) on the loop's thread soon, waking the
 * loop if it sleeps.  Lock-free; no post is lost.  The op must not be
 * active.  The loop does not know of the post until it arrives: keep it
 * running with eddy_loop_ref() while posts may still come.
 */
void eddy_post_threadsafe(struct eddy_loop *loop, struct eddy_op *op, eddy_cb cb);

/*
 * From the thread of loop from, to loop to (thread-per-core messaging):
 * the same contract as eddy_post_threadsafe(to, op, cb), but where the
 * kernel has MSG_RING (5.18) the post travels as a completion written
 * straight into to's ring, leaving with from's next submit: no eventfd, no
 * system call of its own.  Otherwise, or if the kernel refuses it, it falls
 * back to eddy_post_threadsafe().
 */
void eddy_post_to(struct eddy_loop *from, struct eddy_loop *to, struct eddy_op *op,
                  eddy_cb cb);

/*
 * Runs fn(op) on a worker-pool thread, then cb(op, fn's result) on the loop
 * thread.  Returns 0, -EINVAL (fn NULL), -EBUSY (op active), or the error
 * of starting the pool threads (-EAGAIN, -ENOMEM) the first time.
 * eddy_cancel() before a thread picks the job up gives -ECANCELED; on a job
 * already running it returns -EBUSY, and the job completes normally.
 */
int eddy_work(struct eddy_loop *loop, struct eddy_op *op, eddy_work_fn fn, eddy_cb cb);

/*
 * Delivers signo (SIGINT, SIGTERM, SIGHUP ...) as completions: res = signo,
 * EDDY_OP_MORE set, once per delivery, until cancelled (final -ECANCELED).
 * Several ops may watch one signal; each hears every delivery.  -EINVAL for
 * SIGKILL, SIGSTOP and signals the C library keeps for itself.
 * The signal is blocked in the calling thread and the loop's thread reads it
 * from a signalfd, so it hears signals sent to the process (kill) and to the
 * loop's thread (pthread_kill, raise), not those sent to another thread.
 * Block it in every other thread of the process too (threads created after
 * this call inherit the mask; eddy's pool threads block all signals).
 *
 * When the last watch of signo ends (its eddy_cancel), the thread gets its
 * mask back: the signal is unblocked again, unless it was already blocked
 * before the first watch, and the loop no longer reads it.  Instances that
 * arrived while it was watched and were not delivered yet are discarded just
 * before the unblock, so they do not meet the disposition it gives back
 * (SIGTERM's default action would kill the process); one arriving after
 * the unblock gets that disposition, as without eddy.  A signal the thread
 * had blocked itself stays blocked, with its pending instances: they are the
 * thread's.  The unblock happens in the thread that cancels, which is the
 * loop's: start watches on the thread that runs the loop, or before creating
 * it, so that it inherits the mask.
 */
int eddy_signal(struct eddy_loop *loop, struct eddy_op *op, int signo, eddy_cb cb);

/* ------------------------------------------------------------------------
 * Listening sockets (runtime/src/listen.c).  Plain blocking set-up calls,
 * not operations: use them before or between loop runs, from any thread.
 * ---------------------------------------------------------------------- */

enum {
    EDDY_LISTEN_REUSEPORT = 1u << 0, /* SO_REUSEPORT: join (or start) a group sharing the port */
    EDDY_LISTEN_V6ONLY = 1u << 1,    /* "::" serves IPv6 only (default: dual stack) */
    EDDY_LISTEN_NODELAY = 1u << 2,   /* TCP_NODELAY, which accepted sockets inherit */
};
/* TCP_DEFER_ACCEPT for s seconds (at most 65535), or'ed into the flags: the
 * kernel hands a connection over only once its first bytes are in. */
#define EDDY_LISTEN_DEFER_ACCEPT(s) (((unsigned)(s) > 0xffffu ? 0xffffu : (unsigned)(s)) << 16)

/*
 * Creates a listening TCP socket (SOCK_NONBLOCK, SOCK_CLOEXEC, SO_REUSEADDR;
 * accepted sockets do not inherit O_NONBLOCK) on host:port:
 * host is a numeric IPv4 or IPv6 address (NULL = "0.0.0.0"; "::" is dual
 * stack unless EDDY_LISTEN_V6ONLY), port 0 lets the kernel pick (see
 * eddy_sock_port), backlog 0 means 1024.  Without EDDY_LISTEN_REUSEPORT the
 * bind is exclusive: a port anyone listens on gives -EADDRINUSE.  Returns 0
 * and *fd (yours to close), or -EINVAL (host not an address) or the
 * socket/bind/listen error; nothing is left open on failure.
 */
int eddy_listen_tcp(const char *host, uint16_t port, int backlog, unsigned flags, int *fd);

/*
 * n listening sockets on one port, one per loop of a thread-per-core server
 * (SO_REUSEPORT when n > 1, the kernel spreading connections among them),
 * that nobody else may share: SO_REUSEPORT would let any process of the
 * same user join the group and take part of the connections unnoticed, so
 * a port another socket listens on is refused with -EADDRINUSE (checked
 * with an exclusive bind before, and after the listens in /proc/net/tcp and
 * tcp6, which closes the window in between: of two servers racing for one
 * port at least one refuses).  Port 0: the kernel's pick, shared by all n.
 * EDDY_LISTEN_REUSEPORT is implied for n > 1 and ignored for n == 1 (an
 * exclusive bind).  Returns 0 and fds[0..n-1] (yours), or -errno with
 * nothing left open.
 */
int eddy_listen_tcp_n(const char *host, uint16_t port, int backlog, unsigned flags,
                      unsigned n, int *fds);

/* The local port fd is bound to (IPv4 or IPv6), or -errno (-EAFNOSUPPORT
 * for another family). */
int eddy_sock_port(int fd);

/* ------------------------------------------------------------------------
 * Buffer pool (for eddy_recv_multi)
 * ---------------------------------------------------------------------- */

/*
 * Creates a pool of count buffers of size bytes each (count a power of 2,
 * at most 32768).  A provided-buffer ring where the kernel has one.
 */
int eddy_bufpool_init(struct eddy_loop *loop, struct eddy_bufpool **out,
                      unsigned count, unsigned size);
/* Frees the pool; -EBUSY while a recv_multi uses it. */
int eddy_bufpool_destroy(struct eddy_bufpool *pool);
/* Gives buffer bid back to the pool (and resumes receives waiting for one). */
void eddy_bufpool_put(struct eddy_bufpool *pool, uint16_t bid);
/* The buffer with id bid, its size, and how many buffers are free. */
void *eddy_bufpool_buf(const struct eddy_bufpool *pool, uint16_t bid);
unsigned eddy_bufpool_bufsize(const struct eddy_bufpool *pool);
unsigned eddy_bufpool_free_count(const struct eddy_bufpool *pool);
/*
 * Whether a receive waiting for data holds no buffer of the pool: 1
 * with a kernel buffer ring (io_uring, 5.19+) and on the epoll backend
 * (the buffer is taken when bytes are there); 0 on io_uring without a
 * ring, where every waiting eddy_recv_multi / eddy_recv_once holds one, so
 * at most count of them can wait at once: size the pool for the
 * connections, or cap the connections at the pool (as the HTTP server does).
 */
int eddy_bufpool_lazy(const struct eddy_bufpool *pool);

#ifdef __cplusplus
}
#endif

#endif /* EDDY_EDDY_H */
