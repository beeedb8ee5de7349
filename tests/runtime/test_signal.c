/* Signals as completions: res = signo with EDDY_OP_MORE, once per delivery,
 * per-signal ops, cancel, SIGTERM/SIGINT; the thread's signal mask given
 * back when the last watch of a signal ends; signals read by the loop
 * thread itself (thread-directed ones too, as on Linux 5.10). */
#define _GNU_SOURCE
#include "testsupport.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/signalfd.h>
#include <unistd.h>

#define MAXCALLS 8

struct sigrec {
    struct eddy_op op;
    int calls;
    int res[MAXCALLS];
    unsigned flags[MAXCALLS];
};

static void sig_cb(struct eddy_op *op, int res)
{
    struct sigrec *r = eddy_container_of(op, struct sigrec, op);
    assert_true(r->calls < MAXCALLS);
    r->res[r->calls] = res;
    r->flags[r->calls] = op->flags;
    r->calls++;
}

/* Every signal these tests send is blocked before it is sent, so an
 * unhandled one stays pending instead of killing the process. */
static int setup(void **state)
{
    (void)state;
    sigset_t s;
    sigemptyset(&s);
    sigaddset(&s, SIGUSR1);
    sigaddset(&s, SIGUSR2);
    sigaddset(&s, SIGTERM);
    sigaddset(&s, SIGINT);
    return pthread_sigmask(SIG_BLOCK, &s, NULL);
}

/* No signal may be left pending between tests. */
static void assert_none_pending(void)
{
    sigset_t p;
    sigpending(&p);
    assert_false(sigismember(&p, SIGUSR1));
    assert_false(sigismember(&p, SIGUSR2));
    assert_false(sigismember(&p, SIGTERM));
    assert_false(sigismember(&p, SIGINT));
}

static void wait_calls(struct eddy_loop *loop, struct sigrec *r, int n)
{
    int64_t end = ts_now_ms() + 2000;
    while (r->calls < n) {
        if (ts_now_ms() > end)
            fail_msg("signal callback %d of %d did not come", r->calls + 1, n);
        assert_true(eddy_loop_run(loop, EDDY_RUN_NOWAIT) >= 0);
        usleep(200);
    }
}

static void guard_cb(struct eddy_op *op, int res)
{
    *(int *)op->data = res == 0 ? 1 : 2;
}

/*
 * Runs the loop in RUN_ONCE steps (asleep in the kernel between
 * completions) until r has n calls.  A 2 s timer bounds the sleep; it must
 * not be what woke the loop: the signal has to.
 */
static void wait_calls_sleeping(struct eddy_loop *loop, struct sigrec *r, int n)
{
    struct eddy_op guard = EDDY_OP_INIT;
    int ended = 0;
    guard.data = &ended;
    assert_int_equal(eddy_timer(loop, &guard, 2000, guard_cb), 0);
    while (r->calls < n && !ended)
        assert_true(eddy_loop_run(loop, EDDY_RUN_ONCE) >= 0);
    if (!ended)
        assert_int_equal(eddy_cancel(loop, &guard), 0);
    while (!ended)
        assert_true(eddy_loop_run(loop, EDDY_RUN_ONCE) >= 0);
    if (ended == 1)
        fail_msg("signal callback %d of %d did not wake the loop within 2 s",
                 r->calls + 1, n);
}

static void cancel_and_check(struct eddy_loop *loop, struct sigrec *r)
{
    int before = r->calls;
    assert_int_equal(eddy_cancel(loop, &r->op), 0);
    assert_int_equal(eddy_cancel(loop, &r->op), -EALREADY);
    assert_int_equal(r->calls, before); /* never from inside cancel */
    wait_calls(loop, r, before + 1);
    for (int i = 0; i < 5; i++)
        assert_true(eddy_loop_run(loop, EDDY_RUN_NOWAIT) >= 0);
    assert_int_equal(r->calls, before + 1);
    assert_int_equal(r->res[before], -ECANCELED);
    assert_int_equal(r->flags[before] & EDDY_OP_MORE, 0);
    assert_false(eddy_op_active(&r->op));
}

static void test_sigusr1_process_directed(void **state)
{
    (void)state;
    struct eddy_loop *loop = ts_loop_new(NULL);
    struct sigrec r;
    memset(&r, 0, sizeof r);
    assert_int_equal(eddy_signal(loop, &r.op, SIGUSR1, sig_cb), 0);
    assert_true(eddy_op_active(&r.op));
    assert_int_equal(eddy_loop_run(loop, EDDY_RUN_NOWAIT), 1);
    assert_int_equal(kill(getpid(), SIGUSR1), 0);
    wait_calls(loop, &r, 1);
    assert_int_equal(r.res[0], SIGUSR1);
    assert_int_equal(r.flags[0] & EDDY_OP_MORE, EDDY_OP_MORE);
    assert_true(eddy_op_active(&r.op));
    /* a second delivery, after the first was read: a second callback */
    assert_int_equal(kill(getpid(), SIGUSR1), 0);
    wait_calls(loop, &r, 2);
    assert_int_equal(r.res[1], SIGUSR1);
    assert_int_equal(r.flags[1] & EDDY_OP_MORE, EDDY_OP_MORE);
    /* and no extra ones */
    for (int i = 0; i < 20; i++) {
        eddy_loop_run(loop, EDDY_RUN_NOWAIT);
        usleep(1000);
    }
    assert_int_equal(r.calls, 2);
    cancel_and_check(loop, &r);
    assert_int_equal(r.calls, 3);
    assert_none_pending();
    ts_loop_free(loop);
}

/* Sent to the loop thread itself, and while the loop sleeps in RUN_ONCE. */
static void test_thread_directed_wakes_loop(void **state)
{
    (void)state;
    struct eddy_loop *loop = ts_loop_new(NULL);
    struct sigrec r;
    memset(&r, 0, sizeof r);
    assert_int_equal(eddy_signal(loop, &r.op, SIGUSR1, sig_cb), 0);
    assert_int_equal(pthread_kill(pthread_self(), SIGUSR1), 0);
    wait_calls_sleeping(loop, &r, 1);
    assert_int_equal(r.calls, 1);
    assert_int_equal(r.res[0], SIGUSR1);
    assert_int_equal(raise(SIGUSR1), 0);
    wait_calls_sleeping(loop, &r, 2);
    assert_int_equal(r.calls, 2);
    assert_int_equal(r.res[1], SIGUSR1);
    cancel_and_check(loop, &r);
    assert_none_pending();
    ts_loop_free(loop);
}

static void test_two_signals_two_ops(void **state)
{
    (void)state;
    struct eddy_loop *loop = ts_loop_new(NULL);
    struct sigrec u1, u2, u1b;
    memset(&u1, 0, sizeof u1);
    memset(&u2, 0, sizeof u2);
    memset(&u1b, 0, sizeof u1b);
    assert_int_equal(eddy_signal(loop, &u1.op, SIGUSR1, sig_cb), 0);
    assert_int_equal(eddy_signal(loop, &u2.op, SIGUSR2, sig_cb), 0);
    assert_int_equal(kill(getpid(), SIGUSR2), 0);
    wait_calls(loop, &u2, 1);
    assert_int_equal(u2.res[0], SIGUSR2);
    assert_int_equal(u1.calls, 0);
    assert_int_equal(kill(getpid(), SIGUSR1), 0);
    wait_calls(loop, &u1, 1);
    assert_int_equal(u1.res[0], SIGUSR1);
    assert_int_equal(u2.calls, 1);
    /* Two ops on the same signal both hear one delivery. */
    assert_int_equal(eddy_signal(loop, &u1b.op, SIGUSR1, sig_cb), 0);
    assert_int_equal(kill(getpid(), SIGUSR1), 0);
    wait_calls(loop, &u1, 2);
    wait_calls(loop, &u1b, 1);
    assert_int_equal(u1.res[1], SIGUSR1);
    assert_int_equal(u1b.res[0], SIGUSR1);
    assert_int_equal(u2.calls, 1);
    /* After cancelling u2, u1 still works. */
    cancel_and_check(loop, &u2);
    assert_int_equal(kill(getpid(), SIGUSR1), 0);
    wait_calls(loop, &u1, 3);
    wait_calls(loop, &u1b, 2);
    assert_int_equal(u2.calls, 2);
    cancel_and_check(loop, &u1);
    cancel_and_check(loop, &u1b);
    assert_int_equal(u1.calls, 4);
    assert_int_equal(u1b.calls, 3);
    assert_none_pending();
    ts_loop_free(loop);
}

static void test_sigterm_sigint(void **state)
{
    (void)state;
    struct eddy_loop *loop = ts_loop_new(NULL);
    struct sigrec term, intr;
    memset(&term, 0, sizeof term);
    memset(&intr, 0, sizeof intr);
    assert_int_equal(eddy_signal(loop, &term.op, SIGTERM, sig_cb), 0);
    assert_int_equal(eddy_signal(loop, &intr.op, SIGINT, sig_cb), 0);
    assert_int_equal(kill(getpid(), SIGTERM), 0);
    wait_calls(loop, &term, 1);
    assert_int_equal(term.res[0], SIGTERM);
    assert_int_equal(term.flags[0] & EDDY_OP_MORE, EDDY_OP_MORE);
    assert_int_equal(intr.calls, 0);
    assert_int_equal(kill(getpid(), SIGINT), 0);
    wait_calls(loop, &intr, 1);
    assert_int_equal(intr.res[0], SIGINT);
    assert_int_equal(intr.flags[0] & EDDY_OP_MORE, EDDY_OP_MORE);
    assert_int_equal(term.calls, 1);
    cancel_and_check(loop, &term);
    cancel_and_check(loop, &intr);
    assert_int_equal(term.calls, 2);
    assert_int_equal(intr.calls, 2);
    assert_none_pending();
    ts_loop_free(loop);
}

/* Two watches of one signal; the first one's callback cancels the second
 * before the second heard that delivery, and starts a third. */
struct pair {
    struct sigrec a, b, c;
    struct eddy_loop *loop;
    int cancel_rc, start_rc;
};

static void pair_a_cb(struct eddy_op *op, int res)
{
    sig_cb(op, res);
    struct pair *p = eddy_container_of(op, struct pair, a.op);
    if (p->a.calls == 1) {
        p->cancel_rc = eddy_cancel(p->loop, &p->b.op);
        p->start_rc = eddy_signal(p->loop, &p->c.op, SIGUSR1, sig_cb);
    }
}

static void test_cancel_from_callback(void **state)
{
    (void)state;
    struct pair p;
    memset(&p, 0, sizeof p);
    p.loop = ts_loop_new(NULL);
    p.cancel_rc = p.start_rc = 1;
    assert_int_equal(eddy_signal(p.loop, &p.a.op, SIGUSR1, pair_a_cb), 0);
    assert_int_equal(eddy_signal(p.loop, &p.b.op, SIGUSR1, sig_cb), 0);
    assert_int_equal(kill(getpid(), SIGUSR1), 0);
    wait_calls(p.loop, &p.a, 1);
    wait_calls(p.loop, &p.b, 1);
    for (int i = 0; i < 5; i++)
        assert_true(eddy_loop_run(p.loop, EDDY_RUN_NOWAIT) >= 0);
    assert_int_equal(p.cancel_rc, 0);
    assert_int_equal(p.start_rc, 0);
    assert_int_equal(p.a.calls, 1);
    assert_int_equal(p.a.res[0], SIGUSR1);
    /* b never heard the delivery it was cancelled during; c started after */
    assert_int_equal(p.b.calls, 1);
    assert_int_equal(p.b.res[0], -ECANCELED);
    assert_int_equal(p.b.flags[0] & EDDY_OP_MORE, 0);
    assert_false(eddy_op_active(&p.b.op));
    assert_int_equal(p.c.calls, 0);
    /* a and c still hear the next one, once each */
    assert_int_equal(kill(getpid(), SIGUSR1), 0);
    wait_calls(p.loop, &p.a, 2);
    wait_calls(p.loop, &p.c, 1);
    for (int i = 0; i < 5; i++)
        assert_true(eddy_loop_run(p.loop, EDDY_RUN_NOWAIT) >= 0);
    assert_int_equal(p.a.calls, 2);
    assert_int_equal(p.c.calls, 1);
    assert_int_equal(p.c.res[0], SIGUSR1);
    assert_int_equal(p.b.calls, 1);
    cancel_and_check(p.loop, &p.a);
    cancel_and_check(p.loop, &p.c);
    assert_none_pending();
    ts_loop_free(p.loop);
}

/* Cancelled before any delivery; bad signal numbers are refused. */
static void test_cancel_and_errors(void **state)
{
    (void)state;
    struct eddy_loop *loop = ts_loop_new(NULL);
    struct sigrec r;
    memset(&r, 0, sizeof r);
    assert_int_equal(eddy_signal(loop, &r.op, SIGKILL, sig_cb), -EINVAL);
    assert_int_equal(eddy_signal(loop, &r.op, SIGSTOP, sig_cb), -EINVAL);
    assert_int_equal(eddy_signal(loop, &r.op, 0, sig_cb), -EINVAL);
    assert_int_equal(eddy_signal(loop, &r.op, NSIG, sig_cb), -EINVAL);
#ifdef __GLIBC__
    /* glibc keeps 32 and 33 for itself: they could never be blocked */
    assert_int_equal(eddy_signal(loop, &r.op, 32, sig_cb), -EINVAL);
    assert_int_equal(eddy_signal(loop, &r.op, 33, sig_cb), -EINVAL);
#endif
    assert_false(eddy_op_active(&r.op));
    /* a multishot kind takes no deadline; the refused start drops it */
    eddy_op_set_deadline(loop, &r.op, 100);
    assert_int_equal(eddy_signal(loop, &r.op, SIGUSR2, sig_cb), -EINVAL);
    assert_false(eddy_op_active(&r.op));
    assert_int_equal(eddy_signal(loop, &r.op, SIGUSR2, sig_cb), 0);
    cancel_and_check(loop, &r);
    assert_int_equal(r.calls, 1);
    /* started again after its final callback */
    assert_int_equal(eddy_signal(loop, &r.op, SIGUSR2, sig_cb), 0);
    assert_int_equal(kill(getpid(), SIGUSR2), 0);
    wait_calls(loop, &r, 2);
    assert_int_equal(r.res[1], SIGUSR2);
    cancel_and_check(loop, &r);
    assert_none_pending();
    ts_loop_free(loop);
}

/* ---- the thread's signal mask -------------------------------------------- */

static bool blocked(int signo)
{
    sigset_t cur;
    assert_int_equal(pthread_sigmask(SIG_BLOCK, NULL, &cur), 0);
    return sigismember(&cur, signo) == 1;
}

static void mask_now(sigset_t *m)
{
    assert_int_equal(pthread_sigmask(SIG_BLOCK, NULL, m), 0);
}

static void assert_mask_equal(const sigset_t *a, const sigset_t *b)
{
    for (int s = 1; s < NSIG; s++)
        if (sigismember(a, s) != sigismember(b, s))
            fail_msg("signal %d (%s): blocked %d before, %d after", s, strsignal(s),
                     sigismember(a, s), sigismember(b, s));
}

static bool is_pending(int signo)
{
    sigset_t p;
    assert_int_equal(sigpending(&p), 0);
    return sigismember(&p, signo) == 1;
}

/* Signals these tests expect eddy to give back unblocked get a handler
 * that counts, so a delivery that should not happen is seen, not fatal. */
static volatile sig_atomic_t handled[NSIG];

static void count_handler(int signo)
{
    handled[signo]++;
}

static void handler_on(int signo, struct sigaction *old)
{
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = count_handler;
    sigemptyset(&sa.sa_mask);
    assert_int_equal(sigaction(signo, &sa, old), 0);
    handled[signo] = 0;
}

/* Two watches of a signal the thread did not block: it stays blocked (and
 * watched) until the last one ends, then the thread has its old mask back
 * and the signal reaches its handler again. */
static void test_mask_restored_after_last_watch(void **state)
{
    (void)state;
    struct sigaction old;
    handler_on(SIGHUP, &old);
    sigset_t before, during, after;
    assert_false(blocked(SIGHUP));
    mask_now(&before);
    struct eddy_loop *loop = ts_loop_new(NULL);
    struct sigrec a, b;
    memset(&a, 0, sizeof a);
    memset(&b, 0, sizeof b);
    assert_int_equal(eddy_signal(loop, &a.op, SIGHUP, sig_cb), 0);
    assert_true(blocked(SIGHUP));
    assert_int_equal(eddy_signal(loop, &b.op, SIGHUP, sig_cb), 0);
    mask_now(&during);
    sigaddset(&before, SIGHUP);
    assert_mask_equal(&before, &during); /* SIGHUP and nothing else */
    sigdelset(&before, SIGHUP);
    /* The first watch ends: SIGHUP is still blocked and still heard. */
    cancel_and_check(loop, &a);
    assert_true(blocked(SIGHUP));
    assert_int_equal(kill(getpid(), SIGHUP), 0);
    wait_calls(loop, &b, 1);
    assert_int_equal(b.res[0], SIGHUP);
    assert_int_equal(b.flags[0] & EDDY_OP_MORE, EDDY_OP_MORE);
    assert_int_equal(a.calls, 1);
    assert_int_equal(handled[SIGHUP], 0);
    /* The last one ends: the mask is the one from before. */
    cancel_and_check(loop, &b);
    assert_int_equal(b.calls, 2);
    mask_now(&after);
    assert_mask_equal(&before, &after);
    /* A new SIGHUP goes to its handler (raise delivers before returning). */
    assert_int_equal(raise(SIGHUP), 0);
    assert_int_equal(handled[SIGHUP], 1);
    /* Watching again blocks it again; the loop's teardown leaves the mask
     * as it found it. */
    memset(&a, 0, sizeof a);
    assert_int_equal(eddy_signal(loop, &a.op, SIGHUP, sig_cb), 0);
    assert_true(blocked(SIGHUP));
    assert_int_equal(kill(getpid(), SIGHUP), 0);
    wait_calls(loop, &a, 1);
    assert_int_equal(a.res[0], SIGHUP);
    cancel_and_check(loop, &a);
    ts_loop_free(loop);
    mask_now(&after);
    assert_mask_equal(&before, &after);
    assert_int_equal(handled[SIGHUP], 1);
    assert_false(is_pending(SIGHUP));
    assert_int_equal(sigaction(SIGHUP, &old, NULL), 0);
}

/*
 * Deliveries pending when the last watch ends (arrived, not read by the
 * loop yet) are discarded, not delivered to the disposition the unblock
 * gives back (the default one would kill the process): a thread-directed
 * and a process-directed SIGHUP, three queued instances of a real-time
 * signal.  A signal the thread had blocked before eddy is left alone,
 * pending instances and all: they are the thread's.
 */
static void test_pending_at_last_cancel(void **state)
{
    (void)state;
    int rt = SIGRTMIN + 2;
    struct sigaction old_hup, old_rt;
    handler_on(SIGHUP, &old_hup);
    handler_on(rt, &old_rt);
    sigset_t before, after;
    assert_false(blocked(SIGHUP));
    assert_false(blocked(rt));
    assert_true(blocked(SIGUSR2)); /* by setup() */
    mask_now(&before);
    struct eddy_loop *loop = ts_loop_new(NULL);
    struct sigrec hup, rtr, usr2;
    memset(&hup, 0, sizeof hup);
    memset(&rtr, 0, sizeof rtr);
    memset(&usr2, 0, sizeof usr2);
    assert_int_equal(eddy_signal(loop, &hup.op, SIGHUP, sig_cb), 0);
    assert_int_equal(eddy_signal(loop, &rtr.op, rt, sig_cb), 0);
    assert_int_equal(eddy_signal(loop, &usr2.op, SIGUSR2, sig_cb), 0);
    assert_int_equal(eddy_loop_run(loop, EDDY_RUN_NOWAIT), 3);
    /* Sent, but the loop does not run before the watches end. */
    assert_int_equal(pthread_kill(pthread_self(), SIGHUP), 0);
    assert_int_equal(kill(getpid(), SIGHUP), 0);
    union sigval v = {.sival_int = 7};
    for (int i = 0; i < 3; i++)
        assert_int_equal(sigqueue(getpid(), rt, v), 0);
    assert_int_equal(kill(getpid(), SIGUSR2), 0);
    assert_true(is_pending(SIGHUP));
    assert_true(is_pending(rt));
    assert_int_equal(eddy_cancel(loop, &hup.op), 0);
    assert_int_equal(eddy_cancel(loop, &rtr.op), 0);
    assert_int_equal(eddy_cancel(loop, &usr2.op), 0);
    assert_int_equal(handled[SIGHUP], 0);
    assert_int_equal(handled[rt], 0);
    assert_false(is_pending(SIGHUP));
    assert_false(is_pending(rt));
    assert_true(blocked(SIGUSR2));
    assert_true(is_pending(SIGUSR2));
    mask_now(&after);
    assert_mask_equal(&before, &after);
    /* Each watch ends once, with -ECANCELED: the discarded signals were
     * never delivered to it. */
    wait_calls(loop, &hup, 1);
    wait_calls(loop, &rtr, 1);
    wait_calls(loop, &usr2, 1);
    for (int i = 0; i < 5; i++)
        assert_true(eddy_loop_run(loop, EDDY_RUN_NOWAIT) >= 0);
    assert_int_equal(hup.calls, 1);
    assert_int_equal(hup.res[0], -ECANCELED);
    assert_int_equal(rtr.calls, 1);
    assert_int_equal(rtr.res[0], -ECANCELED);
    assert_int_equal(usr2.calls, 1);
    assert_int_equal(usr2.res[0], -ECANCELED);
    ts_loop_free(loop);
    /* Unblocked again: both reach their handlers. */
    assert_int_equal(raise(SIGHUP), 0);
    assert_int_equal(raise(rt), 0);
    assert_int_equal(handled[SIGHUP], 1);
    assert_int_equal(handled[rt], 1);
    /* The thread's own SIGUSR2 is still there for it to take. */
    sigset_t one;
    sigemptyset(&one);
    sigaddset(&one, SIGUSR2);
    struct timespec zero = {0, 0};
    assert_int_equal(sigtimedwait(&one, NULL, &zero), SIGUSR2);
    assert_none_pending();
    assert_int_equal(sigaction(SIGHUP, &old_hup, NULL), 0);
    assert_int_equal(sigaction(rt, &old_rt, NULL), 0);
}

/* A signal blocked before eddy watched it stays blocked after, and once
 * unwatched it is no longer read by the loop (which still reads others). */
static void test_preblocked_stays_blocked(void **state)
{
    (void)state;
    sigset_t before, after;
    assert_true(blocked(SIGUSR1)); /* by setup() */
    mask_now(&before);
    struct eddy_loop *loop = ts_loop_new(NULL);
    struct sigrec u1, u2;
    memset(&u1, 0, sizeof u1);
    memset(&u2, 0, sizeof u2);
    assert_int_equal(eddy_signal(loop, &u1.op, SIGUSR1, sig_cb), 0);
    assert_int_equal(eddy_signal(loop, &u2.op, SIGUSR2, sig_cb), 0);
    assert_int_equal(kill(getpid(), SIGUSR1), 0);
    wait_calls(loop, &u1, 1);
    assert_int_equal(u1.res[0], SIGUSR1);
    cancel_and_check(loop, &u1);
    assert_true(blocked(SIGUSR1));
    mask_now(&after);
    assert_mask_equal(&before, &after);
    /* SIGUSR1 (read first by a signalfd: lower number) is not taken. */
    assert_int_equal(kill(getpid(), SIGUSR1), 0);
    assert_int_equal(kill(getpid(), SIGUSR2), 0);
    wait_calls(loop, &u2, 1);
    assert_int_equal(u2.res[0], SIGUSR2);
    assert_int_equal(u1.calls, 2);
    assert_true(is_pending(SIGUSR1));
    cancel_and_check(loop, &u2);
    ts_loop_free(loop);
    mask_now(&after);
    assert_mask_equal(&before, &after);
    sigset_t one;
    sigemptyset(&one);
    sigaddset(&one, SIGUSR1);
    struct timespec zero = {0, 0};
    assert_int_equal(sigtimedwait(&one, NULL, &zero), SIGUSR1);
    assert_none_pending();
}

/* The signalfd cannot be created (no descriptor left): the start fails,
 * the op is not active, and the signal is not left blocked. */
static void test_signalfd_fails(void **state)
{
    (void)state;
    assert_false(blocked(SIGHUP));
    struct eddy_loop *loop = ts_loop_new(NULL);
    struct sigrec r;
    memset(&r, 0, sizeof r);
    struct rlimit lim, none;
    assert_int_equal(getrlimit(RLIMIT_NOFILE, &lim), 0);
    none = lim;
    none.rlim_cur = 0;
    assert_int_equal(setrlimit(RLIMIT_NOFILE, &none), 0);
    int rc = eddy_signal(loop, &r.op, SIGHUP, sig_cb);
    assert_int_equal(setrlimit(RLIMIT_NOFILE, &lim), 0);
    assert_int_equal(rc, -EMFILE);
    assert_false(eddy_op_active(&r.op));
    assert_false(blocked(SIGHUP));
    struct eddy_loop_stats st;
    eddy_loop_stats(loop, &st);
    assert_int_equal(st.active, 0);
    /* and with descriptors again it starts */
    assert_int_equal(eddy_signal(loop, &r.op, SIGHUP, sig_cb), 0);
    assert_true(blocked(SIGHUP));
    cancel_and_check(loop, &r);
    assert_false(blocked(SIGHUP));
    assert_int_equal(r.calls, 1);
    ts_loop_free(loop);
}

/* ---- who reads the signalfd ---------------------------------------------- */

/* This thread's read() accounting (CONFIG_TASK_IO_ACCOUNTING): rchar and
 * syscr count bytes and calls of read(2) made by the thread itself, never
 * io_uring's reads.  Returns the bytes this read of the file took. */
static long thread_io(long long *rchar)
{
    char buf[512];
    int fd = open("/proc/thread-self/io", O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return -1;
    ssize_t n = read(fd, buf, sizeof buf - 1);
    close(fd);
    if (n <= 0)
        return -1;
    buf[n] = 0;
    const char *p = strstr(buf, "rchar:");
    if (!p)
        return -1;
    *rchar = strtoll(p + 6, NULL, 10);
    return (long)n;
}

/*
 * On Linux 5.10 a read of the signalfd issued through the ring runs in an
 * io-wq kernel thread, which cannot see the loop thread's own pending
 * signals: a thread-directed signal never arrived.  So the ring only waits
 * for readiness and the loop thread read()s the signalfd itself.  On a
 * newer kernel both ways deliver; this shows which way ran: the bytes of
 * one signalfd_siginfo in this thread's read(2) accounting.
 */
static void test_read_by_loop_thread(void **state)
{
    (void)state;
    long long r0, r1;
    if (thread_io(&r0) < 0)
        skip(); /* no per-thread I/O accounting in this kernel */
    struct eddy_loop *loop = ts_loop_new(NULL);
    struct sigrec r;
    memset(&r, 0, sizeof r);
    assert_int_equal(eddy_signal(loop, &r.op, SIGUSR1, sig_cb), 0);
    assert_int_equal(eddy_loop_run(loop, EDDY_RUN_NOWAIT), 1);
    long n0 = thread_io(&r0);
    assert_true(n0 > 0);
    assert_int_equal(pthread_kill(pthread_self(), SIGUSR1), 0);
    wait_calls(loop, &r, 1);
    assert_int_equal(r.res[0], SIGUSR1);
    assert_true(thread_io(&r1) > 0);
    /* One siginfo; under Valgrind also the few bytes its scheduler's pipe
     * lock reads on this thread. */
    long long read_here = r1 - r0 - n0;
    if (read_here < (long long)sizeof(struct signalfd_siginfo) ||
        read_here >= 2 * (long long)sizeof(struct signalfd_siginfo))
        fail_msg("the loop thread read %lld bytes, not one signalfd_siginfo (%zu)",
                 read_here, sizeof(struct signalfd_siginfo));
    cancel_and_check(loop, &r);
    assert_none_pending();
    ts_loop_free(loop);
}

/* Helper threads that block SIGUSR1 (inherited from setup) and send it. */
struct sender {
    pthread_t loop_thread;
    pthread_barrier_t go, done;
    int what; /* 0: to the loop thread, 1: to the process, 2: to itself */
    int rc, taken;
};

static void *sender_main(void *arg)
{
    struct sender *s = arg;
    for (int round = 0; round < 3; round++) {
        pthread_barrier_wait(&s->go);
        if (round == 0)
            s->rc = pthread_kill(s->loop_thread, SIGUSR1);
        else if (round == 1)
            s->rc = kill(getpid(), SIGUSR1) ? errno : 0;
        else
            s->rc = pthread_kill(pthread_self(), SIGUSR1);
        pthread_barrier_wait(&s->done);
    }
    /* Round 2's signal is this thread's own: the loop must not have it. */
    sigset_t one;
    sigemptyset(&one);
    sigaddset(&one, SIGUSR1);
    struct timespec zero = {0, 0};
    s->taken = sigtimedwait(&one, NULL, &zero);
    return NULL;
}

/*
 * With other threads alive that block the signal: one sent to the loop
 * thread from another thread, and one sent to the process, each reach the
 * loop exactly once; one sent to another thread stays that thread's.
 */
static void test_other_threads_block(void **state)
{
    (void)state;
    struct eddy_loop *loop = ts_loop_new(NULL);
    struct sigrec r;
    memset(&r, 0, sizeof r);
    assert_int_equal(eddy_signal(loop, &r.op, SIGUSR1, sig_cb), 0);
    assert_int_equal(eddy_loop_run(loop, EDDY_RUN_NOWAIT), 1);
    struct sender s;
    memset(&s, 0, sizeof s);
    s.loop_thread = pthread_self();
    pthread_barrier_init(&s.go, NULL, 2);
    pthread_barrier_init(&s.done, NULL, 2);
    pthread_t t;
    assert_int_equal(pthread_create(&t, NULL, sender_main, &s), 0);
    for (int round = 0; round < 2; round++) {
        pthread_barrier_wait(&s.go);
        pthread_barrier_wait(&s.done);
        assert_int_equal(s.rc, 0);
        wait_calls_sleeping(loop, &r, round + 1);
        assert_int_equal(r.calls, round + 1);
        assert_int_equal(r.res[round], SIGUSR1);
        assert_int_equal(r.flags[round] & EDDY_OP_MORE, EDDY_OP_MORE);
    }
    pthread_barrier_wait(&s.go);
    pthread_barrier_wait(&s.done);
    assert_int_equal(s.rc, 0);
    for (int i = 0; i < 20; i++) {
        assert_true(eddy_loop_run(loop, EDDY_RUN_NOWAIT) >= 0);
        usleep(1000);
    }
    assert_int_equal(r.calls, 2);
    assert_int_equal(pthread_join(t, NULL), 0);
    assert_int_equal(s.taken, SIGUSR1);
    pthread_barrier_destroy(&s.go);
    pthread_barrier_destroy(&s.done);
    cancel_and_check(loop, &r);
    assert_int_equal(r.calls, 3);
    assert_none_pending();
    ts_loop_free(loop);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_sigusr1_process_directed),
        cmocka_unit_test(test_thread_directed_wakes_loop),
        cmocka_unit_test(test_two_signals_two_ops),
        cmocka_unit_test(test_sigterm_sigint),
        cmocka_unit_test(test_cancel_and_errors),
        cmocka_unit_test(test_cancel_from_callback),
        cmocka_unit_test(test_mask_restored_after_last_watch),
        cmocka_unit_test(test_pending_at_last_cancel),
        cmocka_unit_test(test_preblocked_stays_blocked),
        cmocka_unit_test(test_signalfd_fails),
        cmocka_unit_test(test_read_by_loop_thread),
        cmocka_unit_test(test_other_threads_block),
    };
    return cmocka_run_group_tests(tests, setup, NULL);
}
