/* Posts: eddy_post ordering, thread-safe posts from many threads (each runs
 * exactly once, on the loop thread), prompt wake-up, stop from a thread. */
#define _GNU_SOURCE
#include "testsupport.h"

#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
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

/* A guard so a lost post fails the test instead of hanging it. */
struct guard {
    struct eddy_op op;
    struct eddy_loop *loop;
    int fired;
};

static void guard_cb(struct eddy_op *op, int res)
{
    struct guard *g = eddy_container_of(op, struct guard, op);
    if (res == 0) {
        g->fired = 1;
        eddy_loop_stop(g->loop);
    }
}

static void guard_start(struct guard *g, struct eddy_loop *loop, unsigned ms)
{
    memset(g, 0, sizeof *g);
    g->loop = loop;
    assert_int_equal(eddy_timer(loop, &g->op, ms, guard_cb), 0);
}

/* Cancels the guard (unless it fired) and runs the loop idle. */
static void guard_end(struct guard *g)
{
    if (eddy_op_active(&g->op))
        assert_int_equal(eddy_cancel(g->loop, &g->op), 0);
    ts_run_idle(g->loop, 2000);
    assert_false(g->fired);
}

/* ---- eddy_post -------------------------------------------------------- */

#define NPOST 16

static struct {
    struct eddy_loop *loop;
    struct eddy_op ops[NPOST];
    int order[NPOST];
    int res[NPOST];
    int n;
    struct eddy_op inner;
    uint64_t outer_iter, inner_iter;
    int inner_calls;
} fifo;

static void fifo_cb(struct eddy_op *op, int res)
{
    assert_false(eddy_op_active(op));
    fifo.res[fifo.n] = res;
    fifo.order[fifo.n++] = (int)(op - fifo.ops);
}

static void inner_cb(struct eddy_op *op, int res)
{
    (void)op;
    assert_int_equal(res, 0);
    struct eddy_loop_stats st;
    eddy_loop_stats(fifo.loop, &st);
    fifo.inner_iter = st.iterations;
    fifo.inner_calls++;
}

static void outer_cb(struct eddy_op *op, int res)
{
    (void)op;
    assert_int_equal(res, 0);
    struct eddy_loop_stats st;
    eddy_loop_stats(fifo.loop, &st);
    fifo.outer_iter = st.iterations;
    assert_int_equal(eddy_post(fifo.loop, &fifo.inner, inner_cb), 0);
    /* Never synchronous, not even from a callback. */
    assert_int_equal(fifo.inner_calls, 0);
}

static void test_post_fifo(void **state)
{
    (void)state;
    struct eddy_loop *loop = ts_loop_new(NULL);
    memset(&fifo, 0, sizeof fifo);
    fifo.loop = loop;
    for (int i = 0; i < NPOST; i++) {
        assert_int_equal(eddy_post(loop, &fifo.ops[i], fifo_cb), 0);
        assert_true(eddy_op_active(&fifo.ops[i]));
    }
    assert_int_equal(fifo.n, 0);
    assert_int_equal(eddy_loop_run(loop, EDDY_RUN_ONCE), 0);
    assert_int_equal(fifo.n, NPOST);
    for (int i = 0; i < NPOST; i++) {
        assert_int_equal(fifo.order[i], i);
        assert_int_equal(fifo.res[i], 0);
    }

    /* A post made inside a callback runs on a later iteration. */
    struct eddy_op outer = EDDY_OP_INIT;
    assert_int_equal(eddy_post(loop, &outer, outer_cb), 0);
    assert_int_equal(eddy_loop_run(loop, EDDY_RUN_DEFAULT), 0);
    assert_int_equal(fifo.inner_calls, 1);
    assert_true(fifo.inner_iter > fifo.outer_iter);

    /* A cancelled post runs once, with -ECANCELED. */
    fifo.n = 0;
    assert_int_equal(eddy_post(loop, &fifo.ops[0], fifo_cb), 0);
    assert_int_equal(eddy_post(loop, &fifo.ops[1], fifo_cb), 0);
    assert_int_equal(eddy_cancel(loop, &fifo.ops[0]), 0);
    assert_int_equal(eddy_cancel(loop, &fifo.ops[0]), -EALREADY);
    assert_int_equal(eddy_loop_run(loop, EDDY_RUN_DEFAULT), 0);
    assert_int_equal(fifo.n, 2);
    assert_int_equal(fifo.order[0], 0);
    assert_int_equal(fifo.res[0], -ECANCELED);
    assert_int_equal(fifo.order[1], 1);
    assert_int_equal(fifo.res[1], 0);
    ts_loop_free(loop);
}

/* ---- 4 threads x 10,000 thread-safe posts ------------------------------ */

#define NTHREADS 4
#define PER_THREAD 10000
#define TOTAL (NTHREADS * PER_THREAD)

static struct {
    struct eddy_loop *loop;
    pthread_t loop_thread;
    struct eddy_op *ops;
    int *hits;
    int last_seen[NTHREADS];
    int total;
    int wrong_thread;
    int out_of_order;
    atomic_int go;
} mt;

static void mt_cb(struct eddy_op *op, int res)
{
    int idx = (int)(op - mt.ops);
    if (res != 0 || idx < 0 || idx >= TOTAL)
        fail_msg("bad post: res %d idx %d", res, idx);
    if (!pthread_equal(pthread_self(), mt.loop_thread))
        mt.wrong_thread++;
    mt.hits[idx]++;
    /* Each producer's posts arrive in the order it made them. */
    int t = idx / PER_THREAD, seq = idx % PER_THREAD;
    if (seq <= mt.last_seen[t])
        mt.out_of_order++;
    mt.last_seen[t] = seq;
    if (++mt.total == TOTAL)
        eddy_loop_unref(mt.loop);
}

static void *mt_producer(void *arg)
{
    int t = (int)(intptr_t)arg;
    while (!atomic_load(&mt.go))
        ;
    for (int i = 0; i < PER_THREAD; i++)
        eddy_post_threadsafe(mt.loop, &mt.ops[t * PER_THREAD + i], mt_cb);
    return NULL;
}

static void test_threadsafe_many(void **state)
{
    (void)state;
    struct eddy_loop *loop = ts_loop_new(NULL);
    memset(&mt, 0, sizeof mt);
    mt.loop = loop;
    mt.loop_thread = pthread_self();
    mt.ops = calloc(TOTAL, sizeof *mt.ops);
    mt.hits = calloc(TOTAL, sizeof *mt.hits);
    assert_non_null(mt.ops);
    assert_non_null(mt.hits);
    for (int t = 0; t < NTHREADS; t++)
        mt.last_seen[t] = -1;
    struct guard g;
    guard_start(&g, loop, 8000);
    eddy_loop_ref(loop);
    pthread_t th[NTHREADS];
    for (int t = 0; t < NTHREADS; t++)
        assert_int_equal(pthread_create(&th[t], NULL, mt_producer, (void *)(intptr_t)t), 0);
    atomic_store(&mt.go, 1);
    int64_t t0 = now_ns();
    /* Runs until the last post unrefs the loop; only the guard is left then. */
    while (mt.total < TOTAL && !g.fired)
        assert_true(eddy_loop_run(loop, EDDY_RUN_ONCE) >= 0);
    int64_t took = now_ns() - t0;
    for (int t = 0; t < NTHREADS; t++)
        pthread_join(th[t], NULL);
    guard_end(&g);
    assert_int_equal(mt.total, TOTAL);
    assert_int_equal(mt.wrong_thread, 0);
    assert_int_equal(mt.out_of_order, 0);
    for (int i = 0; i < TOTAL; i++) {
        if (mt.hits[i] != 1)
            fail_msg("post %d ran %d times", i, mt.hits[i]);
        assert_false(eddy_op_active(&mt.ops[i]));
    }
    print_message("    %d posts from %d threads in %.1f ms\n", TOTAL, NTHREADS,
                  (double)took / 1e6);
    ts_loop_free(loop);
    free(mt.ops);
    free(mt.hits);
}

/* Stops the loop if the test has not finished in time (a thread, since a
 * guard timer would keep a DEFAULT run alive). */
static atomic_int deadman_done, deadman_fired;

static void *deadman(void *arg)
{
    for (int i = 0; i < 800 && !atomic_load(&deadman_done); i++)
        usleep(10000);
    if (!atomic_load(&deadman_done)) {
        atomic_store(&deadman_fired, 1);
        eddy_loop_stop(arg);
    }
    return NULL;
}

/* The same through eddy_loop_run(EDDY_RUN_DEFAULT): the ref keeps the loop
 * up while nothing is active, the last post's unref lets it return. */
static void test_threadsafe_many_default(void **state)
{
    (void)state;
    struct eddy_loop *loop = ts_loop_new(NULL);
    memset(&mt, 0, sizeof mt);
    mt.loop = loop;
    mt.loop_thread = pthread_self();
    mt.ops = calloc(TOTAL, sizeof *mt.ops);
    mt.hits = calloc(TOTAL, sizeof *mt.hits);
    assert_non_null(mt.ops);
    assert_non_null(mt.hits);
    for (int t = 0; t < NTHREADS; t++)
        mt.last_seen[t] = -1;
    eddy_loop_ref(loop);
    pthread_t th[NTHREADS];
    for (int t = 0; t < NTHREADS; t++)
        assert_int_equal(pthread_create(&th[t], NULL, mt_producer, (void *)(intptr_t)t), 0);
    atomic_store(&mt.go, 1);
    atomic_store(&deadman_done, 0);
    atomic_store(&deadman_fired, 0);
    pthread_t dm;
    assert_int_equal(pthread_create(&dm, NULL, deadman, loop), 0);
    int rc = eddy_loop_run(loop, EDDY_RUN_DEFAULT);
    atomic_store(&deadman_done, 1);
    pthread_join(dm, NULL);
    for (int t = 0; t < NTHREADS; t++)
        pthread_join(th[t], NULL);
    assert_false(atomic_load(&deadman_fired));
    assert_int_equal(rc, 0);
    assert_int_equal(mt.total, TOTAL);
    assert_int_equal(mt.wrong_thread, 0);
    assert_int_equal(mt.out_of_order, 0);
    for (int i = 0; i < TOTAL; i++)
        if (mt.hits[i] != 1)
            fail_msg("post %d ran %d times", i, mt.hits[i]);
    ts_loop_free(loop);
    free(mt.ops);
    free(mt.hits);
}

/* ---- wake-up latency, stop from a thread -------------------------------- */

#define NWAKE 5

static struct {
    struct eddy_loop *loop;
    struct eddy_op ops[NWAKE];
    _Atomic int64_t posted_ns[NWAKE];
    int64_t ran_ns[NWAKE];
    int n;
} wk;

static void wake_cb(struct eddy_op *op, int res)
{
    assert_int_equal(res, 0);
    int i = (int)(op - wk.ops);
    wk.ran_ns[i] = now_ns();
    if (++wk.n == NWAKE)
        eddy_loop_unref(wk.loop);
}

static void *waker(void *arg)
{
    (void)arg;
    for (int i = 0; i < NWAKE; i++) {
        usleep(40000); /* the loop is asleep in the kernel by now */
        atomic_store(&wk.posted_ns[i], now_ns());
        eddy_post_threadsafe(wk.loop, &wk.ops[i], wake_cb);
    }
    return NULL;
}

static void test_wakes_sleeping_loop(void **state)
{
    (void)state;
    struct eddy_loop *loop = ts_loop_new(NULL);
    memset(&wk, 0, sizeof wk);
    wk.loop = loop;
    eddy_loop_ref(loop);
    pthread_t th;
    assert_int_equal(pthread_create(&th, NULL, waker, NULL), 0);
    atomic_store(&deadman_done, 0);
    atomic_store(&deadman_fired, 0);
    pthread_t dm;
    assert_int_equal(pthread_create(&dm, NULL, deadman, loop), 0);
    int64_t t0 = now_ns();
    int rc = eddy_loop_run(loop, EDDY_RUN_DEFAULT);
    atomic_store(&deadman_done, 1);
    pthread_join(dm, NULL);
    pthread_join(th, NULL);
    assert_false(atomic_load(&deadman_fired));
    assert_int_equal(rc, 0);
    assert_int_equal(wk.n, NWAKE);
    assert_true(now_ns() - t0 < 3000 * MS);
    int64_t worst = 0;
    for (int i = 0; i < NWAKE; i++) {
        int64_t lat = wk.ran_ns[i] - atomic_load(&wk.posted_ns[i]);
        assert_true(lat >= 0);
        if (lat > worst)
            worst = lat;
    }
    if (worst >= 1000 * MS)
        fail_msg("a post took %lld ms to wake the loop", (long long)(worst / MS));
    print_message("    worst wake-up latency %.3f ms\n", (double)worst / 1e6);
    ts_loop_free(loop);
}

static void *stopper(void *arg)
{
    usleep(50000);
    eddy_loop_stop(arg);
    return NULL;
}

/* The loop sleeps with nothing active (held by a ref); another thread's
 * stop ends eddy_loop_run promptly. */
static void test_stop_from_thread(void **state)
{
    (void)state;
    struct eddy_loop *loop = ts_loop_new(NULL);
    eddy_loop_ref(loop);
    pthread_t th;
    assert_int_equal(pthread_create(&th, NULL, stopper, loop), 0);
    int64_t t0 = now_ns();
    assert_int_equal(eddy_loop_run(loop, EDDY_RUN_DEFAULT), 0);
    int64_t took = now_ns() - t0;
    pthread_join(th, NULL);
    assert_true(took >= 40 * MS);
    assert_true(took < 1000 * MS);
    /* The stop is consumed: the next run works normally. */
    memset(&fifo, 0, sizeof fifo);
    assert_int_equal(eddy_post(loop, &fifo.ops[0], fifo_cb), 0);
    eddy_loop_unref(loop);
    assert_int_equal(eddy_loop_run(loop, EDDY_RUN_DEFAULT), 0);
    assert_int_equal(fifo.n, 1);
    assert_int_equal(fifo.res[0], 0);
    ts_loop_free(loop);
}

/* Loop-to-loop posts (MSG_RING where the kernel has it): a sender loop on
 * its own thread posts N ops to a receiver loop; each runs exactly once, on
 * the receiver's thread, in the order sent. */
#define XN 20000
static struct {
    struct eddy_op ops[XN];
    int ran[XN];
    int next;
    int order_ok;
    int wrong_thread;
    pthread_t rx_thread;
    struct eddy_loop *rx;
    atomic_int rx_ready;
    int sent;
} xl;

static void xl_cb(struct eddy_op *op, int res)
{
    int i = (int)(op - xl.ops);
    assert_int_equal(res, 0);
    xl.ran[i]++;
    if (i != xl.next)
        xl.order_ok = 0;
    xl.next = i + 1;
    if (!pthread_equal(pthread_self(), xl.rx_thread))
        xl.wrong_thread++;
    if (xl.next == XN)
        eddy_loop_unref(xl.rx);
}

static void xl_send_batch(struct eddy_op *op, int res);
static struct eddy_op xl_tick;
static struct eddy_loop *xl_tx;
static int xl_tx_msg_ring;

static void xl_send_batch(struct eddy_op *op, int res)
{
    (void)op;
    assert_int_equal(res, 0);
    /* 1000 per iteration: they leave together with the next submit. */
    for (int k = 0; k < 1000 && xl.sent < XN; k++, xl.sent++)
        eddy_post_to(xl_tx, xl.rx, &xl.ops[xl.sent], xl_cb);
    if (xl.sent < XN)
        assert_int_equal(eddy_post(xl_tx, &xl_tick, xl_send_batch), 0);
}

static void *xl_sender(void *arg)
{
    (void)arg;
    while (!atomic_load(&xl.rx_ready))
        usleep(100);
    struct eddy_loop *tx = NULL;
    if (eddy_loop_init(&tx, NULL) < 0)
        return (void *)1;
    xl_tx = tx;
    xl_tx_msg_ring = (eddy_loop_features(tx) & EDDY_FEAT_MSG_RING) != 0;
    memset(&xl_tick, 0, sizeof xl_tick);
    eddy_post(tx, &xl_tick, xl_send_batch);
    int64_t end = now_ns() + 10 * 1000000000LL;
    while (eddy_loop_run(tx, EDDY_RUN_ONCE) > 0 && now_ns() < end)
        ;
    /* MSG_RING completions of the sender are counted in flight: reap them. */
    struct eddy_loop_stats st;
    do {
        eddy_loop_run(tx, EDDY_RUN_NOWAIT);
        eddy_loop_stats(tx, &st);
    } while (st.inflight > 1 && now_ns() < end);
    return (void *)(intptr_t)eddy_loop_destroy(tx);
}

static void test_post_between_loops(void **state)
{
    (void)state;
    memset(&xl, 0, sizeof xl);
    xl.order_ok = 1;
    xl.rx_thread = pthread_self();
    xl.rx = ts_loop_new(NULL);
    eddy_loop_ref(xl.rx);
    pthread_t t;
    assert_int_equal(pthread_create(&t, NULL, xl_sender, NULL), 0);
    atomic_store(&xl.rx_ready, 1);
    int64_t end = now_ns() + 15 * 1000000000LL;
    while (xl.next < XN && now_ns() < end)
        eddy_loop_run(xl.rx, EDDY_RUN_ONCE);
    void *rc;
    pthread_join(t, &rc);
    assert_int_equal((intptr_t)rc, 0);
    assert_int_equal(xl.next, XN);
    for (int i = 0; i < XN; i++)
        assert_int_equal(xl.ran[i], 1);
    assert_int_equal(xl.wrong_thread, 0);
    assert_true(xl.order_ok);
    /* With MSG_RING every post is its own completion in the receiver's ring;
     * through the eventfd a whole batch costs one. */
    struct eddy_loop_stats st;
    eddy_loop_stats(xl.rx, &st);
    if (xl_tx_msg_ring)
        assert_true(st.completions >= XN);
    else
        assert_true(st.completions < XN);
    ts_loop_free(xl.rx);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_post_fifo),
        cmocka_unit_test(test_threadsafe_many),
        cmocka_unit_test(test_threadsafe_many_default),
        cmocka_unit_test(test_wakes_sleeping_loop),
        cmocka_unit_test(test_stop_from_thread),
        cmocka_unit_test(test_post_between_loops),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
