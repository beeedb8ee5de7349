/*
 * eddy fibers — straight-line code on the proactor.
 *
 * A fiber is a function with its own stack that runs on a loop's thread
 * and suspends where callback code would return: an awaiting call starts
 * an ordinary eddy operation whose completion callback resumes the fiber,
 * and gives the operation's result back as its return value:
 *
 *     ssize_t n = eddy_fiber_recv(fd, buf, sizeof buf, 0);   // reads like recv(2)
 *
 * The loop never blocks: while the fiber waits, the loop runs everything
 * else.  Fibers sit on the public starters of eddy.h only, so they run on
 * every backend.
 *
 * Rules:
 *   - A fiber belongs to the loop it was spawned on and never leaves that
 *     loop's thread.  Everything here is loop-thread only.
 *   - Set the loop up for fibers once (eddy_fiber_setup), tear it down
 *     before eddy_loop_destroy (eddy_fiber_teardown): in between the loop
 *     has an attachment (eddy_loop_attach), so eddy_loop_destroy() says
 *     -EBUSY instead of freeing memory fibers still use.  While any fiber
 *     lives the loop also holds a reference (eddy_loop_ref): a loop run in
 *     EDDY_RUN_DEFAULT does not return while a fiber waits for an event
 *     nobody will set, as a server would not.
 *   - Spawning never runs the fiber inside the spawn: a fiber spawned from a
 *     callback first runs on the loop's next iteration, one spawned from a
 *     fiber when the spawner next waits or yields (or, spawned held, when
 *     eddy_fiber_start() says).
 *   - An awaiting call (every function below marked "awaiting") made
 *     outside a fiber returns -EPERM at once; it never blocks or crashes.
 *   - Awaiting calls return what the operation's callback got (bytes, a
 *     descriptor, 0) or a negative errno: the starter's, the operation's,
 *     -ECANCELED (the fiber was cancelled), -ETIME (a deadline passed).  As
 *     in eddy.h, an operation that won the race against its cancellation
 *     returns its real result.  No awaiting call returns before the
 *     operation's final callback: buffers on the fiber's stack are safe.
 *   - Cancellation is cooperative: eddy_fiber_cancel() interrupts the
 *     fiber's current wait and makes every later wait return -ECANCELED at
 *     once, until the fiber returns.  Cleanup calls — eddy_fiber_close()
 *     and eddy_fiber_shutdown() — are exempt, so unwinding releases
 *     descriptors.
 *   - Memory: a detached fiber's record and stack go back to the pool when
 *     it returns (its handle is dead from then on); a joinable one's when
 *     it is joined or detached.
 *
 * Stacks.  Each fiber gets an mmap'd stack from a per-loop pool (warm
 * stacks are reused without a system call).  The default size is
 * EDDY_FIBER_STACK_DEFAULT (64 KiB, 256 KiB under AddressSanitizer, whose
 * redzones grow frames): room for printf-family calls, a parser and a few
 * levels of handler code, and at 100,000 fibers 6.4 GB of address space
 * but only the pages actually touched in memory (a sleeping fiber touches
 * one or two).  Blocking libraries with deep stacks belong on the worker
 * pool (eddy_fiber_work) anyway.
 *
 * Guard pages and vm.max_map_count.  A guard page below each stack turns an
 * overflow into a SIGSEGV that eddy reports — "eddy: fiber 'label'
 * overflowed its 65536-byte stack" — before the process dies by that
 * signal (the handler runs on an alternate signal stack; faults that are
 * not fiber overflows go to the previous handler).  But each guarded stack
 * costs two kernel mappings (the guard and the stack cannot merge), and
 * Linux caps a process at vm.max_map_count mappings (65530 by default): at
 * most about 27,600 guarded stacks after a reserve of 8192 mappings for the
 * rest of the process and 2048 for the guard pages of packed chunks.
 * Beyond that the pool (EDDY_FIBER_GUARD_AUTO, the default) packs stacks
 * without guard pages of their own into large shared mappings (2 MiB of
 * stacks each, with one guard page below, two mappings per chunk) and says
 * so once through the loop's log hook.  A packed stack has a canary at its
 * end, checked at every switch and at exit.  The guarantee: an overflow of
 * a packed stack that stays within one page (4 KiB) below it is always
 * reported with the fiber's label and ends the process — by SIGABRT when
 * the canary check finds it (the stack below is then the neighbouring
 * fiber's, whose top it overwrote: the report and abort() run on a stack of
 * their own and read nothing there, and no other fiber runs in between), by
 * SIGSEGV when it reaches the guard page below its chunk (the first stack
 * of a chunk).  What it does not cover: a frame that jumps more than a page
 * past the canary corrupts the neighbouring stack silently, and so does an
 * overflow that is still running when the fiber calls into code that reads
 * the neighbour's record (eddy_fiber_join or cancel of that fiber) before
 * its next switch — that is the price of not paying mappings.  When even
 * the chunks' guard pages are spent, chunks get a plain page instead (one
 * mapping each, and logged once): the canary then catches what lands there.
 * EDDY_FIBER_GUARD_PAGE refuses (-EAGAIN) instead of degrading;
 * EDDY_FIBER_GUARD_NONE always packs.  To keep guard pages for more fibers,
 * raise the limit (sysctl vm.max_map_count=262144).
 *
 * Switching is a few dozen instructions of assembly on x86-64 and aarch64
 * (callee-saved registers and the FP control words), swapcontext(3)
 * elsewhere or when built with -DEDDY_FIBER_SWITCH=ucontext.
 * AddressSanitizer is told about every switch, Valgrind about every stack,
 * and the stall watchdog names the fiber holding the loop by its label.
 */
#ifndef EDDY_FIBER_H
#define EDDY_FIBER_H

#include "eddy/eddy.h"

#ifdef __cplusplus
extern "C" {
#endif

struct eddy_fiber;

/* ------------------------------------------------------------------------
 * Setting a loop up for fibers
 * ---------------------------------------------------------------------- */

#ifdef __SANITIZE_ADDRESS__
#define EDDY_FIBER_STACK_DEFAULT (256u * 1024)
#else
#define EDDY_FIBER_STACK_DEFAULT (64u * 1024)
#endif
#define EDDY_FIBER_STACK_MIN (16u * 1024)           /* includes the fiber's record */
#define EDDY_FIBER_STACK_MAX (256u * 1024 * 1024)

enum eddy_fiber_guard {
    EDDY_FIBER_GUARD_AUTO = 0, /* guard pages while mappings allow, then canaries (logged once) */
    EDDY_FIBER_GUARD_PAGE = 1, /* always a guard page; -EAGAIN when the mapping budget is spent */
    EDDY_FIBER_GUARD_NONE = 2, /* never: packed stacks, canary checked */
};

struct eddy_fiber_config {
    size_t stack_size;  /* default for spawns; 0 = EDDY_FIBER_STACK_DEFAULT */
    unsigned guard;     /* enum eddy_fiber_guard */
    unsigned pool_max;  /* idle stacks kept warm per size; 0 = 1024.  Beyond that
                           a freed stack is returned to the system */
    unsigned max_fibers; /* 0 = no cap; else spawn is -EAGAIN at this many */
    int ucontext;       /* nonzero: switch with swapcontext (for comparison;
                           always so where no assembly switch exists) */
};

/*
 * Makes loop ready for fibers (cfg may be NULL).  Attaches to the loop.
 * Returns 0, -EEXIST if already set up, -EINVAL for a bad cfg, -ENOMEM.
 */
int eddy_fiber_setup(struct eddy_loop *loop, const struct eddy_fiber_config *cfg);

/*
 * Frees the pool and detaches from the loop.  -EBUSY while any fiber lives
 * or awaits its join (cancel them and run the loop until they end);
 * -ENOENT if the loop has no fibers set up.
 */
int eddy_fiber_teardown(struct eddy_loop *loop);

/* Nonzero if loop is set up for fibers (eddy_fiber_setup done, teardown
 * not yet): for layers that offer fibers on a loop the application owns. */
int eddy_fiber_is_setup(struct eddy_loop *loop);

/* ------------------------------------------------------------------------
 * Fibers
 * ---------------------------------------------------------------------- */

typedef void *(*eddy_fiber_fn)(void *arg);

struct eddy_fiber_options {
    size_t stack_size;  /* 0 = the loop's default; else MIN..MAX, rounded to pages */
    const char *label;  /* for the watchdog and overflow reports; copied (31 chars) */
    unsigned flags;     /* 0 or EDDY_FIBER_HELD (others: -EINVAL) */
};

/* Spawned held: the fiber does not run until eddy_fiber_start(). */
#define EDDY_FIBER_HELD 1u

/*
 * Creates a fiber running fn(arg) on loop (see "Rules" for when it first
 * runs).  With out NULL the fiber is detached; else *out is its handle,
 * valid until eddy_fiber_join() returns 0 or eddy_fiber_detach().
 * Returns 0, -EINVAL (stack size out of range, fn NULL, unknown flags), -ENOENT (no
 * eddy_fiber_setup), -ENOMEM or -EAGAIN (no memory or mappings for a stack,
 * or max_fibers reached): the loop is unaffected.
 */
int eddy_fiber_spawn(struct eddy_loop *loop, struct eddy_fiber **out, eddy_fiber_fn fn,
                     void *arg, const struct eddy_fiber_options *opts);

/*
 * Starts f, spawned with EDDY_FIBER_HELD (0, or -EINVAL if it was not or
 * has started).  From a callback of f's loop, f runs at once, inside this
 * call, until it first waits or returns — a request handler on a fiber
 * then runs where a callback handler would, and a fiber that never waits
 * gives its stack back, still warm, before the call returns.  From a
 * fiber (or a cancel hook) f is queued as a spawn's is.  Hold a fiber to
 * finish setting up around it (eddy_fiber_set_data, an abort callback
 * that names it) before it can run.  Not outside the loop's callbacks.
 */
int eddy_fiber_start(struct eddy_fiber *f);

/* The running fiber, or NULL outside fibers. */
struct eddy_fiber *eddy_fiber_self(void);
const char *eddy_fiber_label(const struct eddy_fiber *f);
struct eddy_loop *eddy_fiber_loop(const struct eddy_fiber *f);
/* Nonzero once f has returned (f must be joinable). */
int eddy_fiber_done(const struct eddy_fiber *f);
/* One pointer of yours per fiber (a fiber-local), NULL at spawn: set it
 * right after the spawn to hand the fiber more than its argument, or from
 * the fiber itself.  Valid while f's handle is. */
void eddy_fiber_set_data(struct eddy_fiber *f, void *data);
void *eddy_fiber_data(const struct eddy_fiber *f);

/*
 * Awaiting.  Lets the other ready fibers run, and the loop when no other is
 * ready (or after 256 switches without it, so I/O is never starved).
 * 0, -ECANCELED (cancelled: returns at once), -EPERM.
 */
int eddy_fiber_yield(void);

/* Awaiting.  0 after ms (never early), -ECANCELED, -ETIME (a deadline
 * earlier than the wake-up), -EPERM.  Sleeping fibers share one kernel
 * timer per loop. */
int eddy_fiber_sleep(uint64_t ms);
/* Awaiting.  The same until an absolute CLOCK_MONOTONIC time in ns. */
int eddy_fiber_sleep_until(int64_t abs_ns);

/*
 * Awaiting.  Waits for f to return; *ret (may be NULL) gets its return
 * value and f's handle is freed.  -EINVAL if f is detached or already has a
 * joiner, -EDEADLK for the calling fiber itself, -ECANCELED / -ETIME (f
 * keeps running and can be joined again).
 */
int eddy_fiber_join(struct eddy_fiber *f, void **ret);

/* Gives up the handle: f's memory goes when it returns (now, if it has). */
void eddy_fiber_detach(struct eddy_fiber *f);

/*
 * Cancels f (from a fiber or a callback): its current wait ends with
 * -ECANCELED (an operation it waits for is cancelled, and the wait still
 * lasts until that operation's final callback), and so does every later
 * one at once, until f returns.  A held fiber is queued to run (and
 * unwind: eddy_fiber_start() then says -EINVAL).  0, or -EALREADY if f
 * has returned.
 */
int eddy_fiber_cancel(struct eddy_fiber *f);
/* Cancels every live fiber of loop (also detached ones: for shutdown).
 * Returns how many were newly cancelled, or -ENOENT without setup. */
int eddy_fiber_cancel_all(struct eddy_loop *loop);
/* Nonzero if the calling fiber has been cancelled. */
int eddy_fiber_cancelled(void);

/* ------------------------------------------------------------------------
 * Deadlines (-ETIME)
 *
 * A deadline interrupts a wait the way cancellation does, with -ETIME.
 * eddy_fiber_timeout() gives the next awaiting call alone a deadline;
 * eddy_fiber_deadline_push()/pop() one for a whole block of calls (gevent's
 * `with Timeout(s)`): nested blocks keep the earliest.  A wait whose
 * deadline has passed returns -ETIME without starting anything.
 * ---------------------------------------------------------------------- */

/* 0 or -EPERM. */
int eddy_fiber_timeout(unsigned ms);
/* Drops the deadline eddy_fiber_timeout() set for the next call, unused.
 * An awaiting call of another layer that ends without waiting (its
 * operation failed to start) calls this, as the calls here do, so the
 * deadline does not fall on the caller's next wait.  0 or -EPERM. */
int eddy_fiber_timeout_clear(void);
/* *saved gets the enclosing deadline to hand to pop.  0 or -EPERM. */
int eddy_fiber_deadline_push(unsigned ms, int64_t *saved);
void eddy_fiber_deadline_pop(int64_t saved);

/* ------------------------------------------------------------------------
 * Awaiting forms of the operations of eddy.h.  Each starts the operation
 * on the fiber's loop, suspends the fiber until the final callback and
 * returns its result (or the starter's -errno).  Arguments mean what they
 * mean for the starter of the same name.  The multishot starters
 * (eddy_recv_multi, eddy_timer_repeat, eddy_signal) have no awaiting form:
 * a fiber receives with eddy_fiber_recv/recv_once, sleeps in a loop, or
 * waits for an event that a signal's callback sets.
 * ---------------------------------------------------------------------- */

/*
 * One connection per call: res = the new descriptor.  eddy_accept() may
 * accept several at once (multishot); the extra ones are kept for the next
 * eddy_fiber_accept() on the same listener (and closed by
 * eddy_fiber_teardown), their addresses read with getpeername().
 */
int eddy_fiber_accept(int fd, struct sockaddr *addr, socklen_t *addrlen, int flags);
int eddy_fiber_connect(int fd, const struct sockaddr *addr, socklen_t len);
int eddy_fiber_recv(int fd, void *buf, size_t len, unsigned msgflags);
/* On res > 0, buf and bid get the pool buffer: give it back with eddy_bufpool_put(). */
int eddy_fiber_recv_once(int fd, struct eddy_bufpool *pool, void **buf, uint16_t *bid);
int eddy_fiber_send(int fd, const void *buf, size_t len, unsigned msgflags);
/* Returns once the kernel is done with buf (see eddy_send_zc). */
int eddy_fiber_send_zc(int fd, const void *buf, size_t len, unsigned msgflags);
int eddy_fiber_sendmsg(int fd, struct msghdr *msg, unsigned msgflags);
int eddy_fiber_read(int fd, void *buf, unsigned len, uint64_t offset);
int eddy_fiber_write(int fd, const void *buf, unsigned len, uint64_t offset);
/* Not interrupted by cancellation or deadlines (cleanup must happen). */
int eddy_fiber_close(int fd);
int eddy_fiber_shutdown(int fd, int how);
/* res = revents */
int eddy_fiber_poll(int fd, unsigned events);
/* Runs fn(arg) on the worker pool; res = its return value.  A job already
 * running cannot be stopped: a cancel or deadline then waits for it. */
int eddy_fiber_work(int (*fn)(void *arg), void *arg);

/* ------------------------------------------------------------------------
 * Building blocks: waiting for your own operations, several at once
 *
 * Embed (or declare on the fiber's stack) a struct eddy_fiber_op, zero it,
 * start its op with any single-shot starter and eddy_fiber_op_cb as the
 * callback — or with your own callback that ends by calling
 * eddy_fiber_op_cb(op, res) — then await it.  Starting several and awaiting
 * them together is Tornado's `yield [a, b]`.  An op may finish before it is
 * awaited; the await then returns at once.
 * ---------------------------------------------------------------------- */

struct eddy_fiber_op {
    struct eddy_op op;   /* start it with callback eddy_fiber_op_cb */
    int res;             /* read-only: the final result, once done */
    int done;            /* read-only: nonzero once the final callback ran */
    void *group_;        /* private */
};

void eddy_fiber_op_cb(struct eddy_op *op, int res);

/* Awaiting.  The op's result (-ETIME/-ECANCELED if interrupted and
 * cancelled; the real result if that won). */
int eddy_fiber_await(struct eddy_fiber_op *fo);

/*
 * Awaiting.  Waits until every op has had its final callback: 0, or
 * -ETIME / -ECANCELED when interrupted (every op still running was
 * cancelled and waited for).  Each op's result is in its res.
 */
int eddy_fiber_await_all(struct eddy_fiber_op *const *fos, unsigned n);

/*
 * Awaiting.  Waits for the first op to finish, cancels the others and
 * waits for their final callbacks too (so every op may be reused or freed
 * on return).  Returns the winner's index, or -ETIME / -ECANCELED when
 * interrupted before any finished.  A loser that completed before its
 * cancel took effect has its real result in res (bytes received are in
 * your buffer): check res, not only the index.
 */
int eddy_fiber_await_any(struct eddy_fiber_op *const *fos, unsigned n);

/*
 * For layers with awaiting calls of their own (an HTTP fetch), the check
 * every awaiting call makes before it starts anything: 0 when the calling
 * fiber may wait; -EPERM outside a fiber; -ECANCELED (cancelled) or -ETIME
 * (its deadline has passed), the deadline for the next call then used up.
 * Start your operation only on 0; if the start fails, call
 * eddy_fiber_timeout_clear() and return the starter's error.
 */
int eddy_fiber_check(void);

/*
 * The most general building block, for layers with their own operations
 * (an HTTP fetch): suspend the calling fiber until somebody calls
 * eddy_fiber_wake(w, res).  cancel (may be NULL only for waits that need
 * no undoing) is called when the fiber is cancelled or a deadline passes;
 * it must lead to exactly one eddy_fiber_wake() (at once or later, e.g.
 * from the cancelled operation's final callback).  Returns res, with a
 * -ECANCELED that a deadline caused turned into -ETIME.  If the fiber is
 * already cancelled or past its deadline, cancel is called at once.
 * Zero w before use; w->data is yours.
 */
struct eddy_fiber_waiter {
    void *data;          /* yours */
    /* private */
    struct eddy_fiber *fiber_;
    void (*cancel_)(struct eddy_fiber_waiter *w);
    struct eddy_fiber_waiter *next_, *prev_;
    int64_t deadline_, sleep_end_;
    unsigned heap_;
    int res_;
    unsigned char done_, why_, pad_[2];
};

int eddy_fiber_suspend(struct eddy_fiber_waiter *w, void (*cancel)(struct eddy_fiber_waiter *w));
/* From a callback or a fiber of the same loop.  From a callback the fiber
 * runs right away, inside it; from a fiber it is queued.  Once per wait. */
void eddy_fiber_wake(struct eddy_fiber_waiter *w, int res);

/* ------------------------------------------------------------------------
 * Events: fiber-to-fiber (and callback-to-fiber) signalling
 * ---------------------------------------------------------------------- */

/* Zero-initialise (EDDY_FIBER_EVENT_INIT).  Manual reset, like
 * gevent.event.Event: once set, waits return at once until cleared. */
struct eddy_fiber_event {
    int set;                         /* read-only */
    struct eddy_fiber_waiter *head_; /* private */
    struct eddy_fiber_waiter *tail_;
};
#define EDDY_FIBER_EVENT_INIT {0, 0, 0}

/* Awaiting.  0 once set (at once if it is), -ECANCELED, -ETIME (like
 * every awaiting call: at once, set or not, for a cancelled fiber or a
 * passed deadline), -EPERM. */
int eddy_fiber_event_wait(struct eddy_fiber_event *ev);
/* Wakes every waiter (they run later, not inside this call).  Fibers or callbacks. */
void eddy_fiber_event_set(struct eddy_fiber_event *ev);
void eddy_fiber_event_clear(struct eddy_fiber_event *ev);

/* ------------------------------------------------------------------------
 * Channels: a bounded FIFO of pointers between fibers — Go's buffered
 * channel, gevent's Queue(maxsize) — for fan-out (one producer, many
 * workers) and fan-in (many producers, one consumer).
 *
 * The caller owns the channel and its slots (no allocation here); both
 * stay valid and unmoved while any fiber waits in it.  Loop-thread only:
 * every fiber that waits in one channel belongs to the same loop.
 * Messages are delivered in order, exactly once: a receiver woken by a
 * send has the message already, no other fiber can take it first.
 * Waiting senders and receivers are served first come, first served.
 *
 * Close ends the channel for senders: later sends, and those waiting, get
 * -EPIPE (their message is not delivered); receivers still get what is
 * queued, then -EPIPE.  A waiting sender or receiver that is cancelled or
 * whose deadline passes gets -ECANCELED / -ETIME and has sent or received
 * nothing.  As with every awaiting call, a cancelled fiber or a passed
 * deadline gets its error at once, even when the channel could serve it.
 * ---------------------------------------------------------------------- */

struct eddy_fiber_chan {
    unsigned cap;        /* read-only: slots */
    unsigned len;        /* read-only: messages queued now */
    int closed;          /* read-only */
    /* private */
    unsigned head_;
    void **slots_;
    struct eddy_fiber_waiter *rx_head_, *rx_tail_, *tx_head_, *tx_tail_;
};

/* Makes ch an empty, open channel of cap >= 1 messages kept in slots (cap
 * pointers, yours).  0 or -EINVAL.  Nothing to free: once no fiber waits
 * in it (closing it releases them), a channel may simply be dropped. */
int eddy_fiber_chan_init(struct eddy_fiber_chan *ch, void **slots, unsigned cap);
/* Awaiting.  Queues msg, waiting while the channel is full.  0, -EPIPE
 * (closed), -ECANCELED, -ETIME, -EPERM. */
int eddy_fiber_chan_send(struct eddy_fiber_chan *ch, void *msg);
/* Awaiting.  *msg gets the oldest message, waiting while there is none.
 * 0, -EPIPE (closed and drained), -ECANCELED, -ETIME, -EPERM. */
int eddy_fiber_chan_recv(struct eddy_fiber_chan *ch, void **msg);
/* Not awaiting (fibers or callbacks): the same without waiting; -EAGAIN
 * instead (full / empty).  A fiber woken by them runs later, not inside. */
int eddy_fiber_chan_try_send(struct eddy_fiber_chan *ch, void *msg);
int eddy_fiber_chan_try_recv(struct eddy_fiber_chan *ch, void **msg);
/* Closes ch (fibers or callbacks; again is harmless): wakes every waiter
 * as said above. */
void eddy_fiber_chan_close(struct eddy_fiber_chan *ch);

#ifdef __cplusplus
}
#endif

#endif /* EDDY_FIBER_H */
