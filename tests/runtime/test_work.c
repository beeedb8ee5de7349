/* The worker pool: jobs run off the loop thread, completions come back on
 * it; a blocking job does not block the loop; cancel queued vs running. */
#define _GNU_SOURCE
#include "testsupport.h"

#include <errno.h>
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define MS 1000000LL

static int64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

static pthread_t loop_thread;

/* ---- 100 jobs on 4 threads ------------------------------------------------ */

#define NJOBS 100
#define POOL 4

struct job {
    struct eddy_op op;
    int idx;
    atomic_int fn_runs;
    pthread_t worker;
    int cb_calls;
    int res;
};

static struct job jobs[NJOBS];
static atomic_int fn_on_loop_thread;
static int cb_off_loop_thread;
static int done_jobs;

static int job_fn(struct eddy_op *op)
{
    struct job *j = eddy_container_of(op, struct job, op);
    if (pthread_equal(pthread_self(), loop_thread))
        atomic_fetch_add(&fn_on_loop_thread, 1);
    j->worker = pthread_self();
    atomic_fetch_add(&j->fn_runs, 1);
    usleep(200); /* long enough that several workers share the jobs */
    return j->idx * 3 + 1;
}

static void job_cb(struct eddy_op *op, int res)
{
    struct job *j = eddy_container_of(op, struct job, op);
    if (!pthread_equal(pthread_self(), loop_thread))
        cb_off_loop_thread++;
    assert_false(eddy_op_active(op));
    assert_int_equal(op->flags & EDDY_OP_MORE, 0);
    j->cb_calls++;
    j->res = res;
    done_jobs++;
}

static void test_hundred_jobs(void **state)
{
    (void)state;
    struct eddy_loop_options o;
    eddy_loop_options_init(&o);
    o.pool_threads = POOL;
    struct eddy_loop *loop = ts_loop_new(&o);
    loop_thread = pthread_self();
    memset(jobs, 0, sizeof jobs);
    atomic_store(&fn_on_loop_thread, 0);
    cb_off_loop_thread = 0;
    done_jobs = 0;
    for (int i = 0; i < NJOBS; i++) {
        jobs[i].idx = i;
        assert_int_equal(eddy_work(loop, &jobs[i].op, job_fn, job_cb), 0);
        assert_true(eddy_op_active(&jobs[i].op));
    }
    assert_int_equal(done_jobs, 0); /* never synchronous */
    struct eddy_loop_stats st;
    eddy_loop_stats(loop, &st);
    assert_int_equal(st.active, NJOBS);
    ts_run_idle(loop, 5000);
    assert_int_equal(done_jobs, NJOBS);
    assert_int_equal(atomic_load(&fn_on_loop_thread), 0);
    assert_int_equal(cb_off_loop_thread, 0);
    pthread_t seen[NJOBS];
    int nseen = 0;
    for (int i = 0; i < NJOBS; i++) {
        assert_int_equal(atomic_load(&jobs[i].fn_runs), 1);
        assert_int_equal(jobs[i].cb_calls, 1);
        assert_int_equal(jobs[i].res, i * 3 + 1);
        int known = 0;
        for (int k = 0; k < nseen; k++)
            known |= pthread_equal(seen[k], jobs[i].worker);
        if (!known)
            seen[nseen++] = jobs[i].worker;
    }
    /* at most pool_threads distinct workers, and more than one used */
    assert_true(nseen >= 2);
    assert_true(nseen <= POOL);
    /* bad argument: no callback, not active */
    struct eddy_op bad = EDDY_OP_INIT;
    assert_int_equal(eddy_work(loop, &bad, NULL, job_cb), -EINVAL);
    assert_false(eddy_op_active(&bad));
    ts_loop_free(loop);
}

/* ---- a blocking job does not block the loop -------------------------------- */

static struct {
    struct eddy_op job, timer;
    atomic_llong job_end_ns;
    int64_t timer_ns, cb_ns;
    int timer_calls, cb_calls, cb_res;
    int job_was_running_at_timer;
} blk;

static int blocking_fn(struct eddy_op *op)
{
    (void)op;
    usleep(50000);
    atomic_store(&blk.job_end_ns, now_ns());
    return 7;
}

static void blocking_cb(struct eddy_op *op, int res)
{
    (void)op;
    blk.cb_calls++;
    blk.cb_res = res;
    blk.cb_ns = now_ns();
}

static void blk_timer_cb(struct eddy_op *op, int res)
{
    (void)op;
    assert_int_equal(res, 0);
    blk.timer_calls++;
    blk.timer_ns = now_ns();
    blk.job_was_running_at_timer = atomic_load(&blk.job_end_ns) == 0;
}

static void test_blocking_job_does_not_block_loop(void **state)
{
    (void)state;
    struct eddy_loop *loop = ts_loop_new(NULL);
    memset(&blk, 0, sizeof blk);
    assert_int_equal(eddy_work(loop, &blk.job, blocking_fn, blocking_cb), 0);
    assert_int_equal(eddy_timer(loop, &blk.timer, 10, blk_timer_cb), 0);
    ts_run_idle(loop, 3000);
    assert_int_equal(blk.timer_calls, 1);
    assert_int_equal(blk.cb_calls, 1);
    assert_int_equal(blk.cb_res, 7);
    assert_true(blk.job_was_running_at_timer);
    assert_true(blk.timer_ns < atomic_load(&blk.job_end_ns));
    assert_true(blk.cb_ns >= atomic_load(&blk.job_end_ns));
    ts_loop_free(loop);
}

/* ---- cancel: queued vs running -------------------------------------------- */

static struct {
    struct eddy_op a, b, c;
    atomic_int a_started, release;
    atomic_int a_runs, b_runs, c_runs;
    int a_calls, b_calls, c_calls;
    int a_res, b_res, c_res;
} cx;

static int hold_fn(struct eddy_op *op)
{
    (void)op;
    atomic_fetch_add(&cx.a_runs, 1);
    atomic_store(&cx.a_started, 1);
    /* Waits for the test to let go, 3 s at most. */
    for (int i = 0; i < 3000 && !atomic_load(&cx.release); i++)
        usleep(1000);
    return 42;
}

static int b_fn(struct eddy_op *op)
{
    (void)op;
    atomic_fetch_add(&cx.b_runs, 1);
    return 1;
}

static int c_fn(struct eddy_op *op)
{
    (void)op;
    atomic_fetch_add(&cx.c_runs, 1);
    return 2;
}

static void cx_cb(struct eddy_op *op, int res)
{
    assert_false(eddy_op_active(op));
    if (op == &cx.a) {
        cx.a_calls++;
        cx.a_res = res;
    } else if (op == &cx.b) {
        cx.b_calls++;
        cx.b_res = res;
    } else {
        cx.c_calls++;
        cx.c_res = res;
    }
}

static void test_cancel_queued_and_running(void **state)
{
    (void)state;
    struct eddy_loop_options o;
    eddy_loop_options_init(&o);
    o.pool_threads = 1;
    struct eddy_loop *loop = ts_loop_new(&o);
    memset(&cx, 0, sizeof cx);
    assert_int_equal(eddy_work(loop, &cx.a, hold_fn, cx_cb), 0);
    assert_int_equal(eddy_work(loop, &cx.b, b_fn, cx_cb), 0);
    assert_int_equal(eddy_work(loop, &cx.c, c_fn, cx_cb), 0);
    int64_t end = ts_now_ms() + 3000;
    while (!atomic_load(&cx.a_started) && ts_now_ms() < end)
        usleep(500);
    assert_true(atomic_load(&cx.a_started));
    /* b waits behind a on the only thread: cancellable. */
    assert_int_equal(eddy_cancel(loop, &cx.b), 0);
    assert_int_equal(eddy_cancel(loop, &cx.b), -EALREADY);
    /* a is running: it cannot be stopped and completes normally. */
    assert_int_equal(eddy_cancel(loop, &cx.a), -EBUSY);
    assert_int_equal(eddy_cancel(loop, &cx.a), -EBUSY);
    assert_true(eddy_op_active(&cx.a));
    assert_int_equal(cx.b_calls, 0); /* cancel never calls back itself */
    assert_int_equal(eddy_loop_run(loop, EDDY_RUN_NOWAIT), 2); /* a and c */
    assert_int_equal(cx.b_calls, 1);
    assert_int_equal(cx.b_res, -ECANCELED);
    assert_int_equal(cx.a_calls, 0);
    atomic_store(&cx.release, 1);
    ts_run_idle(loop, 5000);
    assert_int_equal(cx.a_calls, 1);
    assert_int_equal(cx.a_res, 42);
    assert_int_equal(atomic_load(&cx.a_runs), 1);
    assert_int_equal(cx.b_calls, 1);
    assert_int_equal(atomic_load(&cx.b_runs), 0); /* its fn never ran */
    assert_int_equal(cx.c_calls, 1);
    assert_int_equal(cx.c_res, 2);
    assert_int_equal(atomic_load(&cx.c_runs), 1);
    assert_int_equal(eddy_cancel(loop, &cx.a), -ENOENT);
    /* The cancelled op can be started again and runs normally. */
    assert_int_equal(eddy_work(loop, &cx.b, b_fn, cx_cb), 0);
    ts_run_idle(loop, 3000);
    assert_int_equal(cx.b_calls, 2);
    assert_int_equal(cx.b_res, 1);
    assert_int_equal(atomic_load(&cx.b_runs), 1);
    ts_loop_free(loop);
}

/* Cancel racing the pick-up by a worker: the cancel's return value says
 * which side won, and the callback agrees with it. */
static atomic_int race_runs;
static int race_calls, race_res;

static int race_fn(struct eddy_op *op)
{
    (void)op;
    atomic_fetch_add(&race_runs, 1);
    return 9;
}

static void race_cb(struct eddy_op *op, int res)
{
    (void)op;
    race_calls++;
    race_res = res;
}

static void test_cancel_races_pickup(void **state)
{
    (void)state;
    struct eddy_loop_options o;
    eddy_loop_options_init(&o);
    o.pool_threads = 1;
    struct eddy_loop *loop = ts_loop_new(&o);
    struct eddy_op op = EDDY_OP_INIT;
    int won = 0, lost = 0;
    for (int i = 0; i < 500; i++) {
        atomic_store(&race_runs, 0);
        race_calls = 0;
        assert_int_equal(eddy_work(loop, &op, race_fn, race_cb), 0);
        for (int k = 0; k < i % 5; k++)
            sched_yield();
        int rc = eddy_cancel(loop, &op);
        ts_run_idle(loop, 3000);
        assert_int_equal(race_calls, 1);
        if (rc == 0) {
            assert_int_equal(race_res, -ECANCELED);
            assert_int_equal(atomic_load(&race_runs), 0);
            won++;
        } else {
            assert_int_equal(rc, -EBUSY);
            assert_int_equal(race_res, 9);
            assert_int_equal(atomic_load(&race_runs), 1);
            lost++;
        }
    }
    print_message("    cancel won %d, worker won %d\n", won, lost);
    ts_loop_free(loop);
}

/* Destroying a loop whose pool ran joins the threads: nothing leaks (LSan). */
static void test_pool_teardown(void **state)
{
    (void)state;
    for (int round = 0; round < 3; round++) {
        struct eddy_loop_options o;
        eddy_loop_options_init(&o);
        o.pool_threads = 2;
        struct eddy_loop *loop = ts_loop_new(&o);
        memset(&cx, 0, sizeof cx);
        assert_int_equal(eddy_work(loop, &cx.c, c_fn, cx_cb), 0);
        ts_run_idle(loop, 3000);
        assert_int_equal(cx.c_calls, 1);
        ts_loop_free(loop);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_hundred_jobs),
        cmocka_unit_test(test_blocking_job_does_not_block_loop),
        cmocka_unit_test(test_cancel_queued_and_running),
        cmocka_unit_test(test_cancel_races_pickup),
        cmocka_unit_test(test_pool_teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
