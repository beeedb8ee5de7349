/*
 * Signals as completions.  A watched signal is blocked in the loop's thread
 * and read from one signalfd per loop, so graceful shutdown happens in
 * ordinary callbacks.
 *
 * The ring only waits for the signalfd to become readable (a single-shot
 * IORING_OP_POLL_ADD, re-armed after each wake-up); the loop thread then
 * read()s it itself until EAGAIN.  A signalfd read returns the pending
 * signals of the task that performs it.  On Linux 5.10 a read issued
 * through the ring runs in an io-wq kernel thread, which sees the signals
 * sent to the process but not those sent to the loop thread (pthread_kill,
 * raise): those were never delivered.  A poll is evaluated in the context of
 * the submitting task on every kernel (at submission, then in its task work
 * after a wake-up), and read(2) runs on the loop thread, so one mechanism
 * serves every kernel (measured on Debian 11's 5.10.223 and on 6.18: a
 * signal sent to the loop thread before or after the poll is submitted, and
 * one sent to the process, each complete the poll).  Single-shot rather
 * than multishot poll (5.13): signals are rare, one SQE per burst costs
 * nothing, and one path is all there is to test.
 *
 * Some 5.10.y and 5.15.y stable kernels of late 2022 refuse to poll a
 * signalfd through io_uring ("io_uring: disable polling pollfree files":
 * -EOPNOTSUPP).  There the loop falls back to looking at the signalfd every
 * SIG_TICK_MS with a timeout, still read by the loop thread.
 *
 * When the last watch of a signal ends, the thread gets its mask back (see
 * eddy_signal() in eddy.h for what happens to pending instances).
 */
#define _GNU_SOURCE
#include "internal.h"

#include <errno.h>
#include <poll.h>
#include <stdatomic.h>
#include <signal.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

/* Signals read per wake-up: queued real-time signals can be many, and the
 * loop has other work; the re-armed poll fires again at once if more wait. */
#define SIG_READS_MAX 64

/* The fallback's period: a signal waits at most this long. */
#define SIG_TICK_MS 50

/* Set once the kernel refused a signalfd poll: a property of the kernel,
 * so of every loop of the process. */
static atomic_bool sigpoll_refused;

static void arm_sigpoll(struct eddy_loop *loop);

static void sigpoll_done(struct eddy_op *op, int res)
{
    struct eddy_loop *loop = op->data;
    if (loop->closing)
        return;
    if (op->kind == K_POLL && res == -EOPNOTSUPP &&
        !atomic_exchange(&sigpoll_refused, true))
        eddy_loop_log(loop, EDDY_LOG_WARN,
                      "this kernel cannot poll a signalfd through io_uring; "
                      "signals are looked for every %d ms", SIG_TICK_MS);
    /* POLLIN, a tick, or an error: what is there is read either way. */
    /* One siginfo per read(2): a callback may end or start watches, and
     * the next read then already uses the new mask. */
    for (int i = 0; i < SIG_READS_MAX && loop->signals.head; i++) {
        struct signalfd_siginfo si;
        ssize_t n = read(loop->sig_fd, &si, sizeof si);
        if (n < 0 && errno == EINTR)
            continue;
        if (n != (ssize_t)sizeof si)
            break; /* EAGAIN: drained */
        signal_dispatch(loop, (int)si.ssi_signo);
    }
    if (loop->signals.head)
        arm_sigpoll(loop);
}

static void arm_sigpoll(struct eddy_loop *loop)
{
    struct eddy_op *op = &loop->sig_op;
    if (op->state != ST_IDLE || loop->closing)
        return;
    bool tick = atomic_load(&sigpoll_refused);
    op_begin_internal(loop, op, tick ? K_TIMER : K_POLL, sigpoll_done, "eddy signalfd");
    if (tick) {
        op->u.timer.next_ns = eddy_update_time(loop) + SIG_TICK_MS * 1000000LL;
        op->u.timer.interval_ns = 0;
    } else {
        op->u.poll.fd = loop->sig_fd;
        op->u.poll.events = POLLIN;
    }
    op_arm(loop, op);
}

/*
 * Every watch of signo when it was read hears it once.  A callback may
 * cancel any watch (which leaves the list at once) or start new ones (not
 * due this time), so the watches are marked first and the list is walked
 * again from its head after each callback: O(watches^2), and there are few.
 */
void signal_dispatch(struct eddy_loop *loop, int signo)
{
    struct eddy_op *op;
    for (op = loop->signals.head; op; op = op->next)
        op->u.sig.due = op->u.sig.signo == signo;
    for (;;) {
        for (op = loop->signals.head; op && !op->u.sig.due; op = op->next)
            ;
        if (!op)
            return;
        op->u.sig.due = 0;
        op_deliver(loop, op, signo, 0);
    }
}

/* The first watch of signo: block it in this thread, remembering whether
 * it was blocked already, and add it to the signalfd. */
static int watch_begin(struct eddy_loop *loop, int signo)
{
    sigset_t one, old, mask = loop->sig_mask;
    sigemptyset(&one);
    sigaddset(&one, signo);
    sigaddset(&mask, signo);
    int rc = pthread_sigmask(SIG_BLOCK, &one, &old);
    if (rc != 0)
        return -rc;
    int fd = signalfd(loop->sig_fd, &mask, SFD_NONBLOCK | SFD_CLOEXEC);
    if (fd < 0) {
        rc = -errno;
        if (!sigismember(&old, signo))
            pthread_sigmask(SIG_UNBLOCK, &one, NULL);
        return rc;
    }
    loop->sig_fd = fd;
    loop->sig_mask = mask;
    if (!sigismember(&old, signo))
        sigaddset(&loop->sig_owned, signo);
    return 0;
}

/*
 * The last watch of signo has ended: the loop stops reading it, and if
 * eddy blocked it, the instances that arrived while it was watched are
 * taken (so they do not meet the disposition the unblock gives back, whose
 * default may kill the process), then it is unblocked.  One that arrives
 * after the unblock is the thread's, as it would be without eddy.  A
 * signal the thread had blocked itself stays blocked, pending ones and all.
 */
static void watch_end(struct eddy_loop *loop, int signo)
{
    sigdelset(&loop->sig_mask, signo);
    /* Cannot fail: a signalfd of ours and a valid mask. */
    signalfd(loop->sig_fd, &loop->sig_mask, SFD_NONBLOCK | SFD_CLOEXEC);
    if (!sigismember(&loop->sig_owned, signo))
        return;
    sigdelset(&loop->sig_owned, signo);
    sigset_t one;
    sigemptyset(&one);
    sigaddset(&one, signo);
    /* Both the thread's own pending instances and the process's.  Ends when
     * the queue is empty (a standard signal is pending once at most; a
     * real-time one up to RLIMIT_SIGPENDING times). */
    const struct timespec zero = {0, 0};
    int got;
    do
        got = sigtimedwait(&one, NULL, &zero);
    while (got == signo || (got < 0 && errno == EINTR));
    pthread_sigmask(SIG_UNBLOCK, &one, NULL);
}

int eddy_signal(struct eddy_loop *loop, struct eddy_op *op, int signo, eddy_cb cb)
{
    /* sigaddset also refuses the signals the C library keeps for itself
     * (glibc's thread cancellation and setxid). */
    sigset_t probe;
    sigemptyset(&probe);
    bool bad = signo == SIGKILL || signo == SIGSTOP || sigaddset(&probe, signo) != 0;
    int rc = op_start(loop, op, K_SIGNAL, cb, bad ? -EINVAL : 0);
    if (rc < 0)
        return rc;
    if (!sigismember(&loop->sig_mask, signo)) {
        rc = watch_begin(loop, signo);
        if (rc < 0) {
            op_start_undo(loop, op);
            return rc;
        }
    }
    op->u.sig.signo = signo;
    op->u.sig.due = 0;
    op->state = ST_SIGNAL;
    oplist_push(&loop->signals, op);
    arm_sigpoll(loop);
    return 0;
}

void signal_cancel(struct eddy_loop *loop, struct eddy_op *op)
{
    oplist_remove(&loop->signals, op);
    int signo = op->u.sig.signo;
    for (struct eddy_op *o = loop->signals.head; o; o = o->next)
        if (o->u.sig.signo == signo)
            return; /* still watched */
    watch_end(loop, signo);
}

void signal_destroy(struct eddy_loop *loop)
{
    /* eddy_loop_destroy() refuses a loop with active ops, so every watch has
     * ended and given its signal back already; this is the backstop. */
    for (int s = 1; s < NSIG; s++)
        if (sigismember(&loop->sig_mask, s) == 1)
            watch_end(loop, s);
    if (loop->sig_fd >= 0)
        close(loop->sig_fd);
    loop->sig_fd = -1;
}
