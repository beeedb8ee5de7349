/* Signals as completions: res = signo with EDDY_OP_MORE, once per delivery,
 * per-signal ops, cancel, SIGTERM/SIGINT. */
#define _GNU_SOURCE
#include "testsupport.h"

#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <string.h>
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
    int64_t end = ts_now_ms() + 2000;
    while (r.calls < 1 && ts_now_ms() < end)
        assert_true(eddy_loop_run(loop, EDDY_RUN_ONCE) >= 0);
    assert_int_equal(r.calls, 1);
    assert_int_equal(r.res[0], SIGUSR1);
    assert_int_equal(raise(SIGUSR1), 0);
    while (r.calls < 2 && ts_now_ms() < end)
        assert_true(eddy_loop_run(loop, EDDY_RUN_ONCE) >= 0);
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

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_sigusr1_process_directed),
        cmocka_unit_test(test_thread_directed_wakes_loop),
        cmocka_unit_test(test_two_signals_two_ops),
        cmocka_unit_test(test_sigterm_sigint),
        cmocka_unit_test(test_cancel_and_errors),
    };
    return cmocka_run_group_tests(tests, setup, NULL);
}
