/* The loop itself: init/destroy, run modes, posts, stop, features, stats. */
#define _GNU_SOURCE
#include "testsupport.h"

#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

static int calls;
static int last_res;

static void count_cb(struct eddy_op *op, int res)
{
    (void)op;
    calls++;
    last_res = res;
}

static void test_init_destroy(void **state)
{
    (void)state;
    struct eddy_loop *loop = ts_loop_new(NULL);
    assert_int_equal(eddy_loop_run(loop, EDDY_RUN_DEFAULT), 0);
    ts_loop_free(loop);
}

static void test_post_runs_next_iteration(void **state)
{
    (void)state;
    struct eddy_loop *loop = ts_loop_new(NULL);
    struct eddy_op op = EDDY_OP_INIT;
    calls = 0;
    assert_int_equal(eddy_post(loop, &op, count_cb), 0);
    assert_int_equal(calls, 0); /* never synchronous */
    assert_true(eddy_op_active(&op));
    assert_int_equal(eddy_loop_run(loop, EDDY_RUN_DEFAULT), 0);
    assert_int_equal(calls, 1);
    assert_int_equal(last_res, 0);
    assert_false(eddy_op_active(&op));
    ts_loop_free(loop);
}

static void test_timer_not_early(void **state)
{
    (void)state;
    struct eddy_loop *loop = ts_loop_new(NULL);
    struct eddy_op op = EDDY_OP_INIT;
    calls = 0;
    int64_t t0 = ts_now_ms();
    assert_int_equal(eddy_timer(loop, &op, 30, count_cb), 0);
    assert_int_equal(eddy_loop_run(loop, EDDY_RUN_DEFAULT), 0);
    assert_int_equal(calls, 1);
    assert_int_equal(last_res, 0);
    assert_true(ts_now_ms() - t0 >= 30);
    ts_loop_free(loop);
}

static void test_cancel_timer(void **state)
{
    (void)state;
    struct eddy_loop *loop = ts_loop_new(NULL);
    struct eddy_op op = EDDY_OP_INIT;
    calls = 0;
    assert_int_equal(eddy_timer(loop, &op, 10000, count_cb), 0);
    assert_int_equal(eddy_loop_run(loop, EDDY_RUN_NOWAIT), 1);
    assert_int_equal(eddy_cancel(loop, &op), 0);
    assert_int_equal(eddy_cancel(loop, &op), -EALREADY);
    assert_int_equal(eddy_loop_run(loop, EDDY_RUN_DEFAULT), 0);
    assert_int_equal(calls, 1);
    assert_int_equal(last_res, -ECANCELED);
    assert_int_equal(eddy_cancel(loop, &op), -ENOENT);
    ts_loop_free(loop);
}

static void test_destroy_busy(void **state)
{
    (void)state;
    struct eddy_loop *loop = ts_loop_new(NULL);
    struct eddy_op op = EDDY_OP_INIT;
    calls = 0;
    assert_int_equal(eddy_timer(loop, &op, 10000, count_cb), 0);
    assert_int_equal(eddy_loop_destroy(loop), -EBUSY);
    eddy_cancel(loop, &op);
    eddy_loop_run(loop, EDDY_RUN_DEFAULT);
    assert_int_equal(calls, 1);
    ts_loop_free(loop);
}

static void *stopper(void *arg)
{
    usleep(20000);
    eddy_loop_stop(arg);
    return NULL;
}

static void test_stop_from_thread(void **state)
{
    (void)state;
    struct eddy_loop *loop = ts_loop_new(NULL);
    struct eddy_op op = EDDY_OP_INIT;
    calls = 0;
    assert_int_equal(eddy_timer(loop, &op, 10000, count_cb), 0);
    pthread_t t;
    pthread_create(&t, NULL, stopper, loop);
    int64_t t0 = ts_now_ms();
    assert_int_equal(eddy_loop_run(loop, EDDY_RUN_DEFAULT), 1);
    assert_true(ts_now_ms() - t0 < 5000);
    pthread_join(t, NULL);
    assert_int_equal(calls, 0);
    eddy_cancel(loop, &op);
    eddy_loop_run(loop, EDDY_RUN_DEFAULT);
    assert_int_equal(calls, 1);
    ts_loop_free(loop);
}

static void test_features_env(void **state)
{
    (void)state;
    unsigned m = 0;
    assert_int_equal(eddy_feature_parse("accept_multishot, buf_ring", &m), 0);
    assert_int_equal(m, EDDY_FEAT_ACCEPT_MULTI | EDDY_FEAT_BUF_RING);
    assert_int_equal(eddy_feature_parse("bogus", &m), -EINVAL);
    assert_string_equal(eddy_feature_name(EDDY_FEAT_MSG_RING), "msg_ring");
    struct eddy_loop_options o;
    eddy_loop_options_init(&o);
    o.disable = EDDY_FEAT_NOT_IN_5_10;
    struct eddy_loop *loop = ts_loop_new(&o);
    assert_int_equal(eddy_loop_features(loop) & EDDY_FEAT_NOT_IN_5_10, 0);
    ts_loop_free(loop);
    const char *compat = getenv("EDDY_COMPAT");
    loop = ts_loop_new(NULL);
    if (compat && !strcmp(compat, "5.10"))
        assert_int_equal(eddy_loop_features(loop) & EDDY_FEAT_NOT_IN_5_10, 0);
    ts_loop_free(loop);
}

/* A callback that runs long must not hold back what earlier callbacks of
 * the same batch queued: their SQEs go out as soon as it returns. */
static struct {
    int fds[2];
    struct eddy_loop *loop;
    struct eddy_op send_op, a, b;
    int seen_early;
    int sent;
} late;

static void late_send_done(struct eddy_op *op, int res)
{
    (void)op;
    late.sent = res;
}

static void late_a(struct eddy_op *op, int res)
{
    (void)op;
    (void)res;
    assert_int_equal(eddy_send(late.loop, &late.send_op, late.fds[1], "x", 1, 0, late_send_done), 0);
    usleep(20000); /* a blocking callback */
}

static void late_b(struct eddy_op *op, int res)
{
    (void)op;
    (void)res;
    char c;
    late.seen_early = recv(late.fds[0], &c, 1, MSG_DONTWAIT) == 1;
}

static void test_long_callback_flushes(void **state)
{
    (void)state;
    memset(&late, 0, sizeof late);
    ts_tcp_pair(late.fds);
    late.loop = ts_loop_new(NULL);
    assert_int_equal(eddy_post(late.loop, &late.a, late_a), 0);
    assert_int_equal(eddy_post(late.loop, &late.b, late_b), 0);
    assert_int_equal(eddy_loop_run(late.loop, EDDY_RUN_DEFAULT), 0);
    assert_int_equal(late.sent, 1);
    assert_true(late.seen_early);
    ts_loop_free(late.loop);
    close(late.fds[0]);
    close(late.fds[1]);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_init_destroy),
        cmocka_unit_test(test_post_runs_next_iteration),
        cmocka_unit_test(test_timer_not_early),
        cmocka_unit_test(test_cancel_timer),
        cmocka_unit_test(test_destroy_busy),
        cmocka_unit_test(test_stop_from_thread),
        cmocka_unit_test(test_features_env),
        cmocka_unit_test(test_long_callback_flushes),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
