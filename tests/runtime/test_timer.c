/* Timers: order, never early, absolute, repeating, zero delay, cancel,
 * started from inside a callback. */
#define _GNU_SOURCE
#include "testsupport.h"

#include <errno.h>
#include <string.h>
#include <time.h>

#define MS 1000000LL

static int64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

struct tmr {
    struct eddy_op op;
    int64_t delay_ms;
    int64_t started_ns;   /* clock read just before the start call */
    int64_t fired_ns;
    int calls;
    int res;
    int order;            /* position among all timers that fired */
};

static int fired_seq;

static void tmr_cb(struct eddy_op *op, int res)
{
    struct tmr *t = eddy_container_of(op, struct tmr, op);
    t->fired_ns = now_ns();
    t->calls++;
    t->res = res;
    t->order = fired_seq++;
    assert_int_equal(op->flags & EDDY_OP_MORE, 0);
    assert_false(eddy_op_active(op));
}

/* Distinct delays started in shuffled order fire in delay order, none
 * before its delay has passed. */
static void test_order_not_early(void **state)
{
    (void)state;
    struct eddy_loop *loop = ts_loop_new(NULL);
    static const int64_t delays[] = {90, 15, 60, 0, 120, 30, 45, 75};
    enum { N = sizeof delays / sizeof delays[0] };
    struct tmr t[N];
    memset(t, 0, sizeof t);
    fired_seq = 0;
    for (int i = 0; i < N; i++) {
        t[i].delay_ms = delays[i];
        t[i].started_ns = now_ns();
        assert_int_equal(eddy_timer(loop, &t[i].op, (uint64_t)delays[i], tmr_cb), 0);
        assert_true(eddy_op_active(&t[i].op));
    }
    for (int i = 0; i < N; i++)
        assert_int_equal(t[i].calls, 0); /* never synchronous */
    int64_t t0 = now_ns();
    assert_int_equal(eddy_loop_run(loop, EDDY_RUN_DEFAULT), 0);
    assert_true(now_ns() - t0 < 2000 * MS);
    for (int i = 0; i < N; i++) {
        assert_int_equal(t[i].calls, 1);
        assert_int_equal(t[i].res, 0);
        if (t[i].fired_ns < t[i].started_ns + t[i].delay_ms * MS)
            fail_msg("timer %lld ms fired %lld us early", (long long)t[i].delay_ms,
                     (long long)((t[i].started_ns + t[i].delay_ms * MS - t[i].fired_ns) / 1000));
        /* its rank equals the number of shorter delays */
        int rank = 0;
        for (int j = 0; j < N; j++)
            rank += delays[j] < delays[i];
        assert_int_equal(t[i].order, rank);
    }
    ts_loop_free(loop);
}

static void test_timer_at_absolute(void **state)
{
    (void)state;
    struct eddy_loop *loop = ts_loop_new(NULL);
    struct tmr a, past;
    memset(&a, 0, sizeof a);
    memset(&past, 0, sizeof past);
    fired_seq = 0;
    int64_t when = now_ns() + 40 * MS;
    assert_int_equal(eddy_timer_at(loop, &a.op, when, tmr_cb), 0);
    /* A deadline already passed fires at once, with res 0. */
    assert_int_equal(eddy_timer_at(loop, &past.op, now_ns() - 5 * MS, tmr_cb), 0);
    assert_int_equal(eddy_loop_run(loop, EDDY_RUN_DEFAULT), 0);
    assert_int_equal(a.calls, 1);
    assert_int_equal(a.res, 0);
    assert_true(a.fired_ns >= when);
    assert_true(a.fired_ns - when < 1000 * MS);
    assert_int_equal(past.calls, 1);
    assert_int_equal(past.res, 0);
    assert_int_equal(past.order, 0);
    assert_int_equal(a.order, 1);
    /* Bad arguments: no callback, op stays idle. */
    struct tmr bad;
    memset(&bad, 0, sizeof bad);
    assert_int_equal(eddy_timer_at(loop, &bad.op, -1, tmr_cb), -EINVAL);
    assert_int_equal(eddy_timer_repeat(loop, &bad.op, 0, tmr_cb), -EINVAL);
    assert_int_equal(eddy_timer(loop, &bad.op, UINT64_MAX, tmr_cb), -EINVAL);
    assert_false(eddy_op_active(&bad.op));
    assert_int_equal(eddy_loop_run(loop, EDDY_RUN_DEFAULT), 0);
    assert_int_equal(bad.calls, 0);
    ts_loop_free(loop);
}

/* ---- repeating -------------------------------------------------------- */

#define TICKS 6
#define INTERVAL_MS 20

static struct {
    struct eddy_op op;
    int64_t start_ns;
    int64_t at[TICKS + 4];
    unsigned flags[TICKS + 4];
    int res[TICKS + 4];
    int calls;
    int cancel_rc;
    struct eddy_loop *loop;
} rep;

static void rep_cb(struct eddy_op *op, int res)
{
    int i = rep.calls++;
    assert_true(i < TICKS + 4);
    rep.at[i] = now_ns();
    rep.flags[i] = op->flags;
    rep.res[i] = res;
    if (rep.calls == TICKS) {
        assert_true(eddy_op_active(op)); /* still ours until the final call */
        rep.cancel_rc = eddy_cancel(rep.loop, op);
    }
}

static void test_repeat_then_cancel(void **state)
{
    (void)state;
    struct eddy_loop *loop = ts_loop_new(NULL);
    memset(&rep, 0, sizeof rep);
    rep.loop = loop;
    rep.cancel_rc = 1;
    rep.start_ns = now_ns();
    assert_int_equal(eddy_timer_repeat(loop, &rep.op, INTERVAL_MS, rep_cb), 0);
    assert_int_equal(rep.calls, 0);
    assert_int_equal(eddy_loop_run(loop, EDDY_RUN_DEFAULT), 0);
    assert_int_equal(rep.cancel_rc, 0);
    assert_int_equal(rep.calls, TICKS + 1);
    for (int i = 0; i < TICKS; i++) {
        assert_int_equal(rep.res[i], 0);
        assert_int_equal(rep.flags[i] & EDDY_OP_MORE, EDDY_OP_MORE);
        /* Scheduled from the previous deadline: tick k is due at start + k
         * intervals and never comes before it. */
        int64_t due = rep.start_ns + (int64_t)(i + 1) * INTERVAL_MS * MS;
        if (rep.at[i] < due)
            fail_msg("tick %d came %lld us early", i + 1, (long long)((due - rep.at[i]) / 1000));
        if (i > 0)
            assert_true(rep.at[i] > rep.at[i - 1]);
    }
    assert_true(rep.at[TICKS - 1] - rep.start_ns >= (int64_t)TICKS * INTERVAL_MS * MS);
    /* exactly one final callback, -ECANCELED, without MORE */
    assert_int_equal(rep.res[TICKS], -ECANCELED);
    assert_int_equal(rep.flags[TICKS] & EDDY_OP_MORE, 0);
    assert_false(eddy_op_active(&rep.op));
    assert_int_equal(eddy_cancel(loop, &rep.op), -ENOENT);
    ts_loop_free(loop);
}

/* Cancelled from outside the callback, while it sleeps between ticks. */
static void test_repeat_cancel_outside(void **state)
{
    (void)state;
    struct eddy_loop *loop = ts_loop_new(NULL);
    memset(&rep, 0, sizeof rep);
    rep.loop = loop;
    rep.start_ns = now_ns();
    assert_int_equal(eddy_timer_repeat(loop, &rep.op, 10, rep_cb), 0);
    int64_t end = ts_now_ms() + 2000;
    while (rep.calls < 3 && ts_now_ms() < end)
        assert_true(eddy_loop_run(loop, EDDY_RUN_ONCE) >= 0);
    assert_int_equal(rep.calls, 3);
    assert_int_equal(eddy_cancel(loop, &rep.op), 0);
    assert_int_equal(eddy_cancel(loop, &rep.op), -EALREADY);
    assert_int_equal(eddy_loop_run(loop, EDDY_RUN_DEFAULT), 0);
    assert_int_equal(rep.calls, 4);
    assert_int_equal(rep.res[3], -ECANCELED);
    assert_int_equal(rep.flags[3] & EDDY_OP_MORE, 0);
    ts_loop_free(loop);
}

/* ---- zero delay, cancel, restart from a callback ----------------------- */

static void test_zero_delay(void **state)
{
    (void)state;
    struct eddy_loop *loop = ts_loop_new(NULL);
    struct tmr t;
    memset(&t, 0, sizeof t);
    fired_seq = 0;
    int64_t t0 = now_ns();
    assert_int_equal(eddy_timer(loop, &t.op, 0, tmr_cb), 0);
    assert_int_equal(t.calls, 0);
    assert_int_equal(eddy_loop_run(loop, EDDY_RUN_DEFAULT), 0);
    assert_int_equal(t.calls, 1);
    assert_int_equal(t.res, 0);
    assert_true(t.fired_ns - t0 < 500 * MS);
    ts_loop_free(loop);
}

static void test_cancel_before_fire(void **state)
{
    (void)state;
    struct eddy_loop *loop = ts_loop_new(NULL);
    struct tmr a, b, c;
    memset(&a, 0, sizeof a);
    memset(&b, 0, sizeof b);
    memset(&c, 0, sizeof c);
    fired_seq = 0;
    /* a: cancelled before its SQE was even submitted */
    assert_int_equal(eddy_timer(loop, &a.op, 200, tmr_cb), 0);
    assert_int_equal(eddy_cancel(loop, &a.op), 0);
    /* b: cancelled once it is in the kernel */
    assert_int_equal(eddy_timer(loop, &b.op, 300, tmr_cb), 0);
    assert_int_equal(eddy_loop_run(loop, EDDY_RUN_NOWAIT), 1);
    /* c: unaffected, fires first */
    assert_int_equal(eddy_timer(loop, &c.op, 20, tmr_cb), 0);
    int64_t t0 = now_ns();
    ts_run_until(loop, &c.calls, 2000);
    assert_int_equal(eddy_cancel(loop, &b.op), 0);
    assert_int_equal(eddy_loop_run(loop, EDDY_RUN_DEFAULT), 0);
    /* cancellation does not wait for the 200/300 ms deadlines */
    assert_true(now_ns() - t0 < 180 * MS);
    assert_int_equal(a.calls, 1);
    assert_int_equal(a.res, -ECANCELED);
    assert_int_equal(b.calls, 1);
    assert_int_equal(b.res, -ECANCELED);
    assert_int_equal(c.calls, 1);
    assert_int_equal(c.res, 0);
    ts_loop_free(loop);
}

/* Started from inside callbacks: a post starts a timer; the timer restarts
 * itself from its own final callback (the op is free again there). */
static struct {
    struct eddy_loop *loop;
    struct eddy_op post, timer;
    int64_t armed_ns[3];
    int64_t fired_ns[3];
    int fires;
    int post_calls;
} chain;

static void chain_timer_cb(struct eddy_op *op, int res)
{
    assert_int_equal(res, 0);
    assert_false(eddy_op_active(op));
    chain.fired_ns[chain.fires++] = now_ns();
    if (chain.fires < 3) {
        chain.armed_ns[chain.fires] = now_ns();
        assert_int_equal(eddy_timer(chain.loop, op, 15, chain_timer_cb), 0);
        assert_true(eddy_op_active(op));
    }
}

static void chain_post_cb(struct eddy_op *op, int res)
{
    (void)op;
    assert_int_equal(res, 0);
    chain.post_calls++;
    chain.armed_ns[0] = now_ns();
    assert_int_equal(eddy_timer(chain.loop, &chain.timer, 15, chain_timer_cb), 0);
    assert_int_equal(chain.fires, 0);
}

static void test_timer_from_callback(void **state)
{
    (void)state;
    struct eddy_loop *loop = ts_loop_new(NULL);
    memset(&chain, 0, sizeof chain);
    chain.loop = loop;
    assert_int_equal(eddy_post(loop, &chain.post, chain_post_cb), 0);
    assert_int_equal(eddy_loop_run(loop, EDDY_RUN_DEFAULT), 0);
    assert_int_equal(chain.post_calls, 1);
    assert_int_equal(chain.fires, 3);
    for (int i = 0; i < 3; i++)
        assert_true(chain.fired_ns[i] >= chain.armed_ns[i] + 15 * MS);
    ts_loop_free(loop);
}

/* Cancel racing the expiry: whatever wins, exactly one final callback, and
 * nothing after it. */
static struct {
    struct eddy_op op;
    int more, finals, after_final, last_res;
} race;

static void race_cb(struct eddy_op *op, int res)
{
    if (race.finals)
        race.after_final++;
    if (op->flags & EDDY_OP_MORE) {
        assert_int_equal(res, 0);
        race.more++;
    } else {
        race.finals++;
        race.last_res = res;
    }
}

static void test_cancel_races_expiry(void **state)
{
    (void)state;
    struct eddy_loop *loop = ts_loop_new(NULL);
    int fired = 0, cancelled = 0;
    for (int i = 0; i < 200; i++) {
        memset(&race, 0, sizeof race);
        if (i % 2 == 0) {
            /* one-shot due in 0-1.5 ms, cancelled before or after it reached
             * the kernel */
            assert_int_equal(eddy_timer_ns(loop, &race.op, (uint64_t)(i % 8) * 250000, race_cb), 0);
            if (i % 4 == 0)
                eddy_loop_run(loop, EDDY_RUN_NOWAIT);
        } else {
            /* repeating every 1 ms, cancelled after a few loop steps */
            assert_int_equal(eddy_timer_repeat(loop, &race.op, 1, race_cb), 0);
            for (int k = 0; k < i % 7; k++)
                eddy_loop_run(loop, EDDY_RUN_ONCE);
        }
        int rc = eddy_cancel(loop, &race.op);
        if (rc == -ENOENT) {
            assert_int_equal(race.finals, 1); /* it already ended */
        } else {
            assert_int_equal(rc, 0);
            ts_run_idle(loop, 2000);
        }
        assert_int_equal(race.finals, 1);
        assert_int_equal(race.after_final, 0);
        assert_false(eddy_op_active(&race.op));
        if (i % 2 == 1)
            assert_int_equal(race.last_res, -ECANCELED); /* a repeat only ends by cancel */
        else if (race.last_res == 0)
            fired++;
        else {
            assert_int_equal(race.last_res, -ECANCELED);
            cancelled++;
        }
    }
    print_message("    one-shot races: %d fired first, %d cancelled first\n", fired, cancelled);
    ts_loop_free(loop);
}

/* eddy_timer_update: earlier and later, one-shot and repeating, then
 * cancel; TIMEOUT_UPDATE on new kernels, cancel + re-arm in the 5.10 run. */
static struct {
    int calls, finals, last;
    int64_t at[8];
} upd;

static void upd_cb(struct eddy_op *op, int res)
{
    (void)op;
    if (upd.calls < 8)
        upd.at[upd.calls] = now_ns();
    upd.calls++;
    upd.last = res;
    if (!(op->flags & EDDY_OP_MORE))
        upd.finals++;
}

static void test_timer_update(void **state)
{
    (void)state;
    struct eddy_loop *loop = ts_loop_new(NULL);
    struct eddy_op op = EDDY_OP_INIT;

    /* earlier: 5 s -> 50 ms */
    memset(&upd, 0, sizeof upd);
    int64_t t0 = now_ns();
    assert_int_equal(eddy_timer(loop, &op, 5000, upd_cb), 0);
    assert_int_equal(eddy_loop_run(loop, EDDY_RUN_NOWAIT), 1); /* in the kernel now */
    assert_int_equal(eddy_timer_update(loop, &op, 50), 0);
    assert_int_equal(eddy_loop_run(loop, EDDY_RUN_DEFAULT), 0);
    assert_int_equal(upd.calls, 1);
    assert_int_equal(upd.last, 0);
    assert_true(upd.at[0] - t0 >= 50000000);
    assert_true(upd.at[0] - t0 < 2000000000);

    /* later: 30 ms -> 250 ms, updated twice in a row (the last one wins) */
    memset(&upd, 0, sizeof upd);
    t0 = now_ns();
    assert_int_equal(eddy_timer(loop, &op, 30, upd_cb), 0);
    assert_int_equal(eddy_loop_run(loop, EDDY_RUN_NOWAIT), 1);
    assert_int_equal(eddy_timer_update(loop, &op, 100), 0);
    assert_int_equal(eddy_timer_update(loop, &op, 250), 0);
    assert_int_equal(eddy_loop_run(loop, EDDY_RUN_DEFAULT), 0);
    assert_int_equal(upd.calls, 1);
    assert_int_equal(upd.last, 0);
    assert_true(upd.at[0] - t0 >= 250000000);

    /* repeating: 2 s interval, first tick moved to 20 ms, then every 2 s:
     * cancel after the first tick */
    memset(&upd, 0, sizeof upd);
    t0 = now_ns();
    assert_int_equal(eddy_timer_repeat(loop, &op, 2000, upd_cb), 0);
    assert_int_equal(eddy_loop_run(loop, EDDY_RUN_NOWAIT), 1);
    assert_int_equal(eddy_timer_update(loop, &op, 20), 0);
    int64_t end = ts_now_ms() + 3000;
    while (upd.calls < 1 && ts_now_ms() < end)
        eddy_loop_run(loop, EDDY_RUN_ONCE);
    assert_int_equal(upd.calls, 1);
    assert_true(upd.at[0] - t0 < 1000000000);
    assert_int_equal(eddy_cancel(loop, &op), 0);
    assert_int_equal(eddy_timer_update(loop, &op, 10), -EALREADY);
    assert_int_equal(eddy_loop_run(loop, EDDY_RUN_DEFAULT), 0);
    assert_int_equal(upd.calls, 2);
    assert_int_equal(upd.finals, 1);
    assert_int_equal(upd.last, -ECANCELED);

    /* not a timer, or not active */
    assert_int_equal(eddy_timer_update(loop, &op, 10), -ENOENT);
    ts_loop_free(loop);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_order_not_early),
        cmocka_unit_test(test_timer_update),
        cmocka_unit_test(test_timer_at_absolute),
        cmocka_unit_test(test_repeat_then_cancel),
        cmocka_unit_test(test_repeat_cancel_outside),
        cmocka_unit_test(test_zero_delay),
        cmocka_unit_test(test_cancel_before_fire),
        cmocka_unit_test(test_timer_from_callback),
        cmocka_unit_test(test_cancel_races_expiry),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
