/* The loop itself: init/destroy, run modes, posts, stop, features, stats. */
#define _GNU_SOURCE
#include "testsupport.h"

#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
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

/* ---- set up on one thread, run on another -------------------------------- */

struct handover {
    struct eddy_loop *loop;   /* set up by the test thread, run by the runner */
    struct eddy_op timer, post, tspost, msg, late;
    pthread_t runner;
    _Atomic(pthread_t) runner_self; /* what the runner itself says it is */
    int ran_elsewhere, ran_here, timer_calls, post_calls, ts_calls, msg_calls, late_calls;
    int run_rc, destroy_rc;
    int fds[2];
    struct eddy_op rop;
    char rbuf[16];
    int recv_res;
};

static void ho_note(struct handover *h)
{
    if (pthread_equal(pthread_self(), atomic_load(&h->runner_self)))
        h->ran_elsewhere++;
    else
        h->ran_here++;
}

static void ho_timer(struct eddy_op *op, int res)
{
    struct handover *h = op->data;
    ho_note(h);
    h->timer_calls += res == 0;
}

static void ho_post(struct eddy_op *op, int res)
{
    struct handover *h = op->data;
    ho_note(h);
    h->post_calls += res == 0;
}

static void ho_ts(struct eddy_op *op, int res)
{
    struct handover *h = op->data;
    ho_note(h);
    h->ts_calls += res == 0;
}

static void ho_msg(struct eddy_op *op, int res)
{
    struct handover *h = op->data;
    ho_note(h);
    h->msg_calls += res == 0;
}

static void ho_late(struct eddy_op *op, int res)
{
    struct handover *h = op->data;
    ho_note(h);
    h->late_calls += res == 0;
}

static void ho_recv(struct eddy_op *op, int res)
{
    struct handover *h = op->data;
    ho_note(h);
    h->recv_res = res;
    /* started from a callback on the runner: this thread owns the loop now */
    h->late.data = h;
    assert_int_equal(eddy_timer(h->loop, &h->late, 5, ho_late), 0);
}

static void ho_unref(struct eddy_op *op, int res)
{
    (void)res;
    eddy_loop_unref(op->data);
    eddy_loop_unref(op->data);
}

static void *ho_run(void *arg)
{
    struct handover *h = arg;
    atomic_store(&h->runner_self, pthread_self()); /* before any callback runs */
    h->run_rc = eddy_loop_run(h->loop, EDDY_RUN_DEFAULT);
    h->destroy_rc = eddy_loop_destroy(h->loop);
    return NULL;
}

/* A loop set up on this thread (timer, post, receive, a thread-safe post
 * and a loop-to-loop post sent before it ever ran) and handed to another
 * thread: its first eddy_loop_run() takes that thread — every callback runs
 * there, ops started there work, and it is destroyed there. */
static void test_handover(void **state)
{
    (void)state;
    static struct handover h;
    memset(&h, 0, sizeof h);
    h.loop = ts_loop_new(NULL);
    h.timer.data = h.post.data = h.tspost.data = h.msg.data = h.rop.data = &h;
    assert_int_equal(eddy_timer(h.loop, &h.timer, 20, ho_timer), 0);
    assert_int_equal(eddy_post(h.loop, &h.post, ho_post), 0);
    ts_tcp_pair(h.fds);
    assert_int_equal(eddy_recv(h.loop, &h.rop, h.fds[1], h.rbuf, sizeof h.rbuf, 0, ho_recv), 0);
    assert_int_equal(write(h.fds[0], "hand", 4), 4);
    eddy_post_threadsafe(h.loop, &h.tspost, ho_ts);
    eddy_loop_ref(h.loop); /* the thread-safe post is not an active op */
    /* From another loop, over MSG_RING where the kernel has it: the target
     * ring is not enabled yet, so the kernel refuses and the post falls
     * back to the thread-safe path. */
    struct eddy_loop *from = ts_loop_new(NULL);
    eddy_post_to(from, h.loop, &h.msg, ho_msg);
    eddy_loop_ref(h.loop);
    assert_true(eddy_loop_run(from, EDDY_RUN_NOWAIT) >= 0);
    for (int i = 0; i < 20; i++) {
        usleep(1000);
        assert_true(eddy_loop_run(from, EDDY_RUN_NOWAIT) >= 0);
    }
    ts_loop_free(from);
    assert_int_equal(h.ran_here + h.ran_elsewhere, 0); /* nothing ran yet */

    /* The refs: dropped by the runner once both posts came in. */
    assert_int_equal(pthread_create(&h.runner, NULL, ho_run, &h), 0);
    int64_t t0 = ts_now_ms();
    while ((!h.ts_calls || !h.msg_calls) && ts_now_ms() - t0 < 5000)
        usleep(1000);
    assert_int_equal(h.ts_calls, 1);
    assert_int_equal(h.msg_calls, 1);
    /* The runner owns the loop now; eddy_loop_unref() is a loop-thread call,
     * so the runner drops the refs through a post of its own. */
    static struct eddy_op unref_op;
    unref_op.data = h.loop;
    eddy_post_threadsafe(h.loop, &unref_op, ho_unref);
    pthread_join(h.runner, NULL);
    assert_int_equal(h.run_rc, 0);
    assert_int_equal(h.destroy_rc, 0);
    assert_int_equal(h.timer_calls, 1);
    assert_int_equal(h.post_calls, 1);
    assert_int_equal(h.recv_res, 4);
    assert_memory_equal(h.rbuf, "hand", 4);
    assert_int_equal(h.late_calls, 1);
    assert_int_equal(h.ran_here, 0);
    assert_int_equal(h.ran_elsewhere, 6); /* timer, post, recv, the two posts, late */
    close(h.fds[0]);
    close(h.fds[1]);
}

/* A loop that never ran can still be destroyed on its own thread at once. */
static void test_destroy_never_run(void **state)
{
    (void)state;
    struct eddy_loop *loop = ts_loop_new(NULL);
    struct eddy_op op = EDDY_OP_INIT;
    assert_int_equal(eddy_timer(loop, &op, 10, count_cb), 0);
    assert_int_equal(eddy_loop_destroy(loop), -EBUSY);
    assert_int_equal(eddy_cancel(loop, &op), 0);
    calls = 0;
    assert_int_equal(eddy_loop_run(loop, EDDY_RUN_DEFAULT), 0);
    assert_int_equal(calls, 1);
    struct eddy_loop *idle = ts_loop_new(NULL);
    int64_t t0 = ts_now_ms();
    ts_loop_free(idle);
    assert_true(ts_now_ms() - t0 < 500);
    ts_loop_free(loop);
}

/* ---- misuse: the same error in every build ------------------------------ */

static int work_fn(struct eddy_op *op)
{
    (void)op;
    return 7;
}

/*
 * Starting an op that is already active is -EBUSY from every starter, in a
 * Debug build (assertions on) as in a release build, and leaves the running
 * start alone: it still ends once, as it would have.
 */
static void test_start_active_is_ebusy(void **state)
{
    (void)state;
    struct eddy_loop *loop = ts_loop_new(NULL);
    int sv[2];
    assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv), 0);
    char buf[8];
    struct sockaddr_storage ss;
    socklen_t sl = sizeof ss;
    struct iovec iov = {buf, 1};
    struct msghdr msg = {.msg_iov = &iov, .msg_iovlen = 1};
    struct eddy_op op = EDDY_OP_INIT;
    calls = 0;
    assert_int_equal(eddy_recv(loop, &op, sv[0], buf, sizeof buf, 0, count_cb), 0);
    assert_int_equal(eddy_recv(loop, &op, sv[0], buf, sizeof buf, 0, count_cb), -EBUSY);
    assert_int_equal(eddy_recv(loop, &op, -1, buf, sizeof buf, 0, count_cb), -EBUSY);
    assert_int_equal(eddy_send(loop, &op, sv[0], "x", 1, 0, count_cb), -EBUSY);
    assert_int_equal(eddy_send_zc(loop, &op, sv[0], "x", 1, 0, count_cb), -EBUSY);
    assert_int_equal(eddy_sendmsg(loop, &op, sv[0], &msg, 0, count_cb), -EBUSY);
    assert_int_equal(eddy_accept(loop, &op, sv[0], (struct sockaddr *)&ss, &sl, 0, count_cb), -EBUSY);
    assert_int_equal(eddy_connect(loop, &op, sv[0], (struct sockaddr *)&ss, sl, count_cb), -EBUSY);
    assert_int_equal(eddy_read(loop, &op, sv[0], buf, 1, 0, count_cb), -EBUSY);
    assert_int_equal(eddy_write(loop, &op, sv[0], buf, 1, 0, count_cb), -EBUSY);
    assert_int_equal(eddy_close(loop, &op, sv[0], count_cb), -EBUSY);
    assert_int_equal(eddy_shutdown(loop, &op, sv[0], SHUT_RD, count_cb), -EBUSY);
    assert_int_equal(eddy_poll(loop, &op, sv[0], 1, count_cb), -EBUSY);
    assert_int_equal(eddy_timer(loop, &op, 10, count_cb), -EBUSY);
    assert_int_equal(eddy_timer_ns(loop, &op, 10, count_cb), -EBUSY);
    assert_int_equal(eddy_timer_at(loop, &op, 10, count_cb), -EBUSY);
    assert_int_equal(eddy_timer_repeat(loop, &op, 10, count_cb), -EBUSY);
    assert_int_equal(eddy_post(loop, &op, count_cb), -EBUSY);
    assert_int_equal(eddy_work(loop, &op, work_fn, count_cb), -EBUSY);
    /* A deadline set on the active op is not the running start's. */
    eddy_op_set_deadline(loop, &op, 20);
    assert_int_equal(eddy_recv(loop, &op, sv[0], buf, sizeof buf, 0, count_cb), -EBUSY);
    ts_run_for(loop, 100);
    assert_int_equal(calls, 0);
    assert_int_equal(write(sv[1], "abc", 3), 3);
    TS_RUN_UNTIL(loop, calls == 1, 2000);
    ts_run_for(loop, 5);
    assert_int_equal(calls, 1);
    assert_int_equal(last_res, 3);

    /* The same for a timer, a post and a job. */
    assert_int_equal(eddy_timer(loop, &op, 10000, count_cb), 0);
    assert_int_equal(eddy_timer(loop, &op, 1, count_cb), -EBUSY);
    assert_int_equal(eddy_cancel(loop, &op), 0);
    assert_int_equal(eddy_post(loop, &op, count_cb), -EBUSY);
    TS_RUN_UNTIL(loop, calls == 2, 2000);
    assert_int_equal(last_res, -ECANCELED);
    assert_int_equal(eddy_post(loop, &op, count_cb), 0);
    assert_int_equal(eddy_post(loop, &op, count_cb), -EBUSY);
    TS_RUN_UNTIL(loop, calls == 3, 2000);
    assert_int_equal(last_res, 0);
    assert_int_equal(eddy_work(loop, &op, work_fn, count_cb), 0);
    assert_int_equal(eddy_work(loop, &op, work_fn, count_cb), -EBUSY);
    TS_RUN_UNTIL(loop, calls == 4, 2000);
    assert_int_equal(last_res, 7);
    /* A thread-safe post on its way cannot be cancelled (-EBUSY, as
     * documented) nor started again; it still arrives once. */
    eddy_post_threadsafe(loop, &op, count_cb);
    assert_int_equal(eddy_cancel(loop, &op), -EBUSY);
    assert_int_equal(eddy_post(loop, &op, count_cb), -EBUSY);
    TS_RUN_UNTIL(loop, calls == 5, 2000);
    assert_int_equal(last_res, 0);
    ts_run_for(loop, 5);
    assert_int_equal(calls, 5);
    close(sv[0]);
    close(sv[1]);
    ts_loop_free(loop);
}

/*
 * A deadline belongs to the next start only, whether it succeeds or fails:
 * a failed start (bad arguments, or a kind that refuses deadlines) drops it.
 */
static void test_deadline_dropped_by_failed_start(void **state)
{
    (void)state;
    struct eddy_loop *loop = ts_loop_new(NULL);
    int sv[2];
    assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv), 0);
    char buf[8];
    struct eddy_op op = EDDY_OP_INIT;
    calls = 0;

    /* recv on fd -1 fails; the next recv, started without a deadline, waits. */
    eddy_op_set_deadline(loop, &op, 100);
    assert_int_equal(eddy_recv(loop, &op, -1, buf, sizeof buf, 0, count_cb), -EINVAL);
    assert_int_equal(eddy_recv(loop, &op, sv[0], buf, sizeof buf, 0, count_cb), 0);
    ts_run_for(loop, 250);
    assert_int_equal(calls, 0);
    assert_int_equal(write(sv[1], "hi", 2), 2);
    TS_RUN_UNTIL(loop, calls == 1, 2000);
    assert_int_equal(last_res, 2);

    /* The same after other failing starters. */
    eddy_op_set_deadline(loop, &op, 50);
    assert_int_equal(eddy_send(loop, &op, sv[0], NULL, 1, 0, count_cb), -EINVAL);
    eddy_op_set_deadline(loop, &op, 50);
    assert_int_equal(eddy_poll(loop, &op, -1, 1, count_cb), -EBADF);
    eddy_op_set_deadline(loop, &op, 50);
    assert_int_equal(eddy_work(loop, &op, NULL, count_cb), -EINVAL);
    eddy_op_set_deadline(loop, &op, 50);
    assert_int_equal(eddy_accept(loop, &op, sv[0], NULL, NULL, 0, count_cb), -EINVAL);
    assert_int_equal(eddy_recv(loop, &op, sv[0], buf, sizeof buf, 0, count_cb), 0);
    ts_run_for(loop, 150);
    assert_int_equal(calls, 1);
    assert_int_equal(write(sv[1], "abc", 3), 3);
    TS_RUN_UNTIL(loop, calls == 2, 2000);
    assert_int_equal(last_res, 3);

    /* A timer refuses a deadline once; the next eddy_timer works. */
    eddy_op_set_deadline(loop, &op, 100);
    assert_int_equal(eddy_timer(loop, &op, 10, count_cb), -EINVAL);
    assert_int_equal(eddy_timer(loop, &op, 10, count_cb), 0);
    TS_RUN_UNTIL(loop, calls == 3, 2000);
    assert_int_equal(last_res, 0);
    eddy_op_set_deadline(loop, &op, 100);
    assert_int_equal(eddy_timer(loop, &op, UINT64_MAX, count_cb), -EINVAL);
    assert_int_equal(eddy_timer_repeat(loop, &op, 5, count_cb), 0);
    TS_RUN_UNTIL(loop, calls == 5, 2000);
    assert_int_equal(eddy_cancel(loop, &op), 0);
    TS_RUN_UNTIL(loop, calls == 6, 2000);
    assert_int_equal(last_res, -ECANCELED);

    /* A deadline that a start took ends with that start's final callback. */
    eddy_op_set_deadline(loop, &op, 50);
    assert_int_equal(eddy_recv(loop, &op, sv[0], buf, sizeof buf, 0, count_cb), 0);
    TS_RUN_UNTIL(loop, calls == 7, 2000);
    assert_int_equal(last_res, -ETIME);
    assert_int_equal(eddy_timer(loop, &op, 1, count_cb), 0);
    TS_RUN_UNTIL(loop, calls == 8, 2000);
    assert_int_equal(last_res, 0);
    ts_run_for(loop, 5);
    assert_int_equal(calls, 8);
    close(sv[0]);
    close(sv[1]);
    ts_loop_free(loop);
}

/* A loop with a buffer pool attached refuses to go; once the pool is gone
 * it goes (and ASan's leak check at exit finds nothing left). */
static void test_destroy_with_pool_attached(void **state)
{
    (void)state;
    struct eddy_loop *loop = ts_loop_new(NULL);
    assert_int_equal(eddy_loop_attached(loop), 0);
    struct eddy_bufpool *pool = NULL, *pool2 = NULL;
    assert_int_equal(eddy_bufpool_init(loop, &pool, 8, 256), 0);
    assert_int_equal(eddy_bufpool_init(loop, &pool2, 4, 64), 0);
    assert_int_equal(eddy_loop_attached(loop), 2);
    assert_int_equal(eddy_loop_destroy(loop), -EBUSY);
    assert_int_equal(eddy_bufpool_destroy(pool), 0);
    assert_int_equal(eddy_loop_attached(loop), 1);
    assert_int_equal(eddy_loop_destroy(loop), -EBUSY);
    assert_int_equal(eddy_bufpool_destroy(pool2), 0);
    assert_int_equal(eddy_loop_attached(loop), 0);
    /* The loop still works after a refused destroy. */
    struct eddy_op op = EDDY_OP_INIT;
    calls = 0;
    assert_int_equal(eddy_post(loop, &op, count_cb), 0);
    assert_int_equal(eddy_loop_run(loop, EDDY_RUN_DEFAULT), 0);
    assert_int_equal(calls, 1);
    assert_int_equal(eddy_loop_destroy(loop), 0);
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
        cmocka_unit_test(test_handover),
        cmocka_unit_test(test_destroy_never_run),
        cmocka_unit_test(test_start_active_is_ebusy),
        cmocka_unit_test(test_deadline_dropped_by_failed_start),
        cmocka_unit_test(test_destroy_with_pool_attached),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
