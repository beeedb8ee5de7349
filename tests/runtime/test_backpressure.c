/* Ring back-pressure: a 4-entry SQ with far more submissions than entries,
 * and an 8-entry CQ with far more completions than entries.  Nothing may be
 * dropped, nothing may complete twice. */
#define _GNU_SOURCE
#include "testsupport.h"

#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

/*
 * The SQ and CQ are io_uring's.  On the epoll backend (EDDY_BACKEND=epoll)
 * there is no queue to fill: the same ops and exact callback counts are
 * checked, and the counters must say that no queue was ever full.
 */
static void ring_pressure(const char *what, uint64_t before, uint64_t after)
{
    if (ts_backend_is_epoll()) {
        print_message("    epoll: no %s; checking the counter stayed put\n", what);
        assert_int_equal(after, before);
    } else {
        assert_true(after > before);
    }
}

static void spin(struct eddy_loop *loop, int n)
{
    for (int i = 0; i < n; i++)
        assert_true(eddy_loop_run(loop, EDDY_RUN_NOWAIT) >= 0);
}

static struct eddy_loop *tiny_loop(void)
{
    struct eddy_loop_options o;
    eddy_loop_options_init(&o);
    o.entries = 4;
    o.cq_entries = 8;
    return ts_loop_new(&o);
}

static struct eddy_loop_stats stats(struct eddy_loop *loop)
{
    struct eddy_loop_stats st;
    eddy_loop_stats(loop, &st);
    return st;
}

/* Every op of a test in one table, so a callback knows its index. */
enum { MAXOPS = 512 };

struct slot {
    struct eddy_op op;
    int calls, res, bad_flags;
    char buf[8];
};

static struct slot *S;
static int total;

static void slot_cb(struct eddy_op *op, int res)
{
    struct slot *s = eddy_container_of(op, struct slot, op);
    if (op->flags != 0)
        s->bad_flags++;
    s->calls++;
    s->res = res;
    total++;
}

static int slots_setup(void **state)
{
    S = calloc(MAXOPS, sizeof *S);
    total = 0;
    return S ? ts_fd_setup(state) : -1;
}

static int slots_teardown(void **state)
{
    free(S);
    S = NULL;
    return ts_fd_teardown(state);
}

static void pairs_open(int (*fds)[2], int n)
{
    for (int i = 0; i < n; i++)
        ts_tcp_pair(fds[i]);
}

static void pairs_close(int (*fds)[2], int n)
{
    for (int i = 0; i < n; i++) {
        close(fds[i][0]);
        close(fds[i][1]);
    }
}

/* 50 timers, 50 posts, 60 recvs, 30 sends and 20 recvs with deadlines (two
 * SQEs each), all started in one go on a 4-entry SQ. */
static void test_sq_full_mixed(void **state)
{
    (void)state;
    struct eddy_loop *loop = tiny_loop();
    enum { NPAIR = 30, NT = 50, NP = 50, NR = 2 * NPAIR, NS = 30, ND = 20 };
    int fds[NPAIR][2];
    pairs_open(fds, NPAIR);
    struct eddy_loop_stats st0 = stats(loop);
    int n = 0;
    for (int i = 0; i < NT; i++, n++)
        assert_int_equal(eddy_timer_ns(loop, &S[n].op, (uint64_t)(i % 10) * 100000, slot_cb), 0);
    for (int i = 0; i < NP; i++, n++)
        assert_int_equal(eddy_post(loop, &S[n].op, slot_cb), 0);
    int rbase = n;
    for (int i = 0; i < NR; i++, n++)
        assert_int_equal(eddy_recv(loop, &S[n].op, fds[i / 2][i % 2], S[n].buf, 8, 0, slot_cb), 0);
    int sbase = n;
    for (int i = 0; i < NS; i++, n++) {
        /* Each pair's client side gets one more byte from a send. */
        S[n].buf[0] = (char)('a' + i % 26);
        assert_int_equal(eddy_send(loop, &S[n].op, fds[i][1], S[n].buf, 1, 0, slot_cb), 0);
    }
    int dbase = n;
    int dfds[ND][2];
    pairs_open(dfds, ND);
    for (int i = 0; i < ND; i++, n++) {
        eddy_op_set_deadline(loop, &S[n].op, 50);
        assert_int_equal(eddy_recv(loop, &S[n].op, dfds[i][1], S[n].buf, 8, 0, slot_cb), 0);
    }
    assert_int_equal(total, 0); /* nothing runs inside a starter */
    /* The server sides get their byte from the test. */
    for (int i = 0; i < NPAIR; i++)
        assert_int_equal(write(fds[i][0], "z", 1), 1);
    TS_RUN_UNTIL(loop, total == n, 5000);
    spin(loop, 10);
    struct eddy_loop_stats st1 = stats(loop);
    assert_int_equal(total, n);
    for (int i = 0; i < n; i++) {
        assert_int_equal(S[i].calls, 1);
        assert_int_equal(S[i].bad_flags, 0);
    }
    for (int i = 0; i < NT + NP; i++)
        assert_int_equal(S[i].res, 0);
    for (int i = 0; i < NR; i++) {
        struct slot *s = &S[rbase + i];
        assert_int_equal(s->res, 1);
        if (i % 2 == 0) /* the client side: what the send wrote */
            assert_int_equal(s->buf[0], 'a' + (i / 2) % 26);
        else
            assert_int_equal(s->buf[0], 'z');
    }
    for (int i = 0; i < NS; i++)
        assert_int_equal(S[sbase + i].res, 1);
    for (int i = 0; i < ND; i++)
        assert_int_equal(S[dbase + i].res, -ETIME);
    print_message("%d ops on a 4-entry SQ: %llu early flushes, %llu SQEs, %llu enter calls\n",
                  n, (unsigned long long)(st1.sq_full - st0.sq_full),
                  (unsigned long long)(st1.sqes - st0.sqes),
                  (unsigned long long)(st1.submit_calls - st0.submit_calls));
    ring_pressure("SQ", st0.sq_full, st1.sq_full);
    assert_int_equal(st1.inflight, 1); /* only the loop's own wake-up read */
    pairs_close(fds, NPAIR);
    pairs_close(dfds, ND);
    ts_loop_free(loop);
}

/* 200 timers due at once: 200 CQEs for an 8-entry CQ. */
static void test_cq_overflow_timers(void **state)
{
    (void)state;
    struct eddy_loop *loop = tiny_loop();
    enum { N = 200 };
    struct eddy_loop_stats st0 = stats(loop);
    int64_t due = eddy_update_time(loop) + 20 * 1000000;
    for (int i = 0; i < N; i++)
        assert_int_equal(eddy_timer_at(loop, &S[i].op, due, slot_cb), 0);
    /* Every timer is in the kernel before any fires. */
    spin(loop, 3);
    assert_int_equal(total, 0);
    usleep(40000);
    TS_RUN_UNTIL(loop, total == N, 3000);
    spin(loop, 10);
    struct eddy_loop_stats st1 = stats(loop);
    assert_int_equal(total, N);
    for (int i = 0; i < N; i++) {
        assert_int_equal(S[i].calls, 1);
        assert_int_equal(S[i].res, 0);
    }
    print_message("200 timers, CQ of 8: cq_overflows +%llu, %llu completions\n",
                  (unsigned long long)(st1.cq_overflows - st0.cq_overflows),
                  (unsigned long long)(st1.completions - st0.completions));
    ring_pressure("CQ", st0.cq_overflows, st1.cq_overflows); /* the overflow path ran */
    ts_loop_free(loop);
}

/* 100 recvs waiting in the kernel; all their data arrives at once. */
static void test_cq_overflow_recvs(void **state)
{
    (void)state;
    struct eddy_loop *loop = tiny_loop();
    enum { N = 100 };
    int(*fds)[2] = calloc(N, sizeof *fds);
    assert_non_null(fds);
    pairs_open(fds, N);
    struct eddy_loop_stats st0 = stats(loop);
    for (int i = 0; i < N; i++)
        assert_int_equal(eddy_recv(loop, &S[i].op, fds[i][1], S[i].buf, 8, 0, slot_cb), 0);
    for (int i = 0; i < 20; i++) {
        spin(loop, 1);
        usleep(200);
    }
    assert_int_equal(total, 0);
    for (int i = 0; i < N; i++) {
        char b = (char)i;
        assert_int_equal(write(fds[i][0], &b, 1), 1);
    }
    usleep(10000);
    TS_RUN_UNTIL(loop, total == N, 3000);
    spin(loop, 10);
    struct eddy_loop_stats st1 = stats(loop);
    for (int i = 0; i < N; i++) {
        assert_int_equal(S[i].calls, 1);
        assert_int_equal(S[i].res, 1);
        assert_int_equal(S[i].buf[0], (char)i);
    }
    print_message("100 recvs, CQ of 8: cq_overflows +%llu\n",
                  (unsigned long long)(st1.cq_overflows - st0.cq_overflows));
    ring_pressure("CQ", st0.cq_overflows, st1.cq_overflows);
    pairs_close(fds, N);
    free(fds);
    ts_loop_free(loop);
}

/* Multishot receives flooding an 8-entry CQ: the kernel ends a multishot
 * recv without F_MORE when it cannot post, and eddy re-arms it; every byte
 * arrives, in order. */
struct flood {
    struct eddy_op op;
    struct eddy_bufpool *pool;
    size_t got;
    int bad, finals, final_res;
    unsigned char next;
};

static void flood_cb(struct eddy_op *op, int res)
{
    struct flood *f = eddy_container_of(op, struct flood, op);
    if (!(op->flags & EDDY_OP_MORE)) {
        f->finals++;
        f->final_res = res;
        return;
    }
    const unsigned char *p = op->buf;
    for (int i = 0; i < res; i++)
        if (p[i] != (unsigned char)(f->got + (size_t)i))
            f->bad++;
    f->got += (size_t)res;
    eddy_bufpool_put(f->pool, op->bid);
}

static void test_multishot_recv_tiny_cq(void **state)
{
    (void)state;
    struct eddy_loop *loop = tiny_loop();
    enum { N = 8, LEN = 64 * 1024 };
    struct eddy_bufpool *pool;
    assert_int_equal(eddy_bufpool_init(loop, &pool, 64, 256), 0);
    int fds[N][2];
    pairs_open(fds, N);
    struct flood f[N];
    memset(f, 0, sizeof f);
    struct eddy_loop_stats st0 = stats(loop);
    for (int i = 0; i < N; i++) {
        f[i].pool = pool;
        assert_int_equal(eddy_recv_multi(loop, &f[i].op, fds[i][1], pool, flood_cb), 0);
    }
    spin(loop, 3);
    static unsigned char data[LEN];
    for (size_t i = 0; i < LEN; i++)
        data[i] = (unsigned char)i;
    for (int i = 0; i < N; i++)
        assert_int_equal(write(fds[i][0], data, LEN), LEN);
    int64_t end = ts_now_ms() + 5000;
    for (;;) {
        size_t got = 0;
        for (int i = 0; i < N; i++)
            got += f[i].got;
        if (got == (size_t)N * LEN)
            break;
        if (ts_now_ms() > end)
            fail_msg("%zu of %d bytes after 5 s", got, N * LEN);
        spin(loop, 1);
        usleep(100);
    }
    struct eddy_loop_stats st1 = stats(loop);
    for (int i = 0; i < N; i++) {
        assert_int_equal(f[i].bad, 0);
        assert_int_equal(f[i].finals, 0);
        close(fds[i][0]);
    }
    int finals = 0;
    end = ts_now_ms() + 2000;
    while (finals < N) {
        if (ts_now_ms() > end)
            fail_msg("%d of %d finals", finals, N);
        spin(loop, 1);
        usleep(100);
        finals = 0;
        for (int i = 0; i < N; i++)
            finals += f[i].finals;
    }
    spin(loop, 5);
    for (int i = 0; i < N; i++) {
        assert_int_equal(f[i].finals, 1);
        assert_int_equal(f[i].final_res, 0);
        assert_int_equal(f[i].got, LEN);
        close(fds[i][1]);
    }
    print_message("8 multishot recvs x 64 KiB, CQ of 8: %llu SQEs, %llu enobufs, "
                  "cq_overflows +%llu\n",
                  (unsigned long long)(st1.sqes - st0.sqes),
                  (unsigned long long)(st1.enobufs - st0.enobufs),
                  (unsigned long long)(st1.cq_overflows - st0.cq_overflows));
    /* Multishot would need N SQEs if it never ended: more means the kernel
     * ended it without F_MORE (CQ full) and eddy re-armed it. */
    if (eddy_loop_features(loop) & EDDY_FEAT_RECV_MULTI)
        assert_true(st1.sqes - st0.sqes > N);
    assert_int_equal(eddy_bufpool_free_count(pool), 64);
    assert_int_equal(eddy_bufpool_destroy(pool), 0);
    ts_loop_free(loop);
}

/* Starting ops from inside callbacks while the SQ is full: each timer
 * callback starts the next two until 300 have run. */
static int chain_started;

static void chain_cb(struct eddy_op *op, int res)
{
    slot_cb(op, res);
    for (int k = 0; k < 2 && chain_started < 300; k++) {
        int rc = eddy_timer_ns(op->loop, &S[chain_started].op, 0, chain_cb);
        assert_int_equal(rc, 0);
        chain_started++;
    }
}

static void test_submit_from_callbacks(void **state)
{
    (void)state;
    struct eddy_loop *loop = tiny_loop();
    chain_started = 1;
    assert_int_equal(eddy_timer_ns(loop, &S[0].op, 0, chain_cb), 0);
    TS_RUN_UNTIL(loop, total == 300, 5000);
    spin(loop, 10);
    assert_int_equal(total, 300);
    for (int i = 0; i < 300; i++) {
        assert_int_equal(S[i].calls, 1);
        assert_int_equal(S[i].res, 0);
    }
    /* The same through eddy_loop_run(DEFAULT), which must return by itself. */
    total = 0;
    memset(S, 0, 300 * sizeof *S);
    chain_started = 1;
    assert_int_equal(eddy_timer_ns(loop, &S[0].op, 0, chain_cb), 0);
    alarm(10); /* a hang here kills the test instead of stalling ctest */
    assert_int_equal(eddy_loop_run(loop, EDDY_RUN_DEFAULT), 0);
    alarm(0);
    assert_int_equal(total, 300);
    ts_loop_free(loop);
}

/* ---- a kernel that takes no SQE --------------------------------------- */

/* io_uring_submit() is interposed (eddy links statically, liburing is a
 * shared library): while submit_fail is set it takes nothing and says
 * -EBUSY, as a kernel with a backed-up CQ does.  That is the only way to
 * make eddy queue ops on its own wait list and owe cancel SQEs. */
struct io_uring;
int io_uring_submit(struct io_uring *ring);
static int submit_fail, submits_refused;

int io_uring_submit(struct io_uring *ring)
{
    static int (*real)(struct io_uring *);
    if (!real)
        real = (int (*)(struct io_uring *))dlsym(RTLD_NEXT, "io_uring_submit");
    if (submit_fail) {
        submits_refused++;
        return -EBUSY;
    }
    return real(ring);
}

struct heap_timer {
    struct eddy_op op;
    int idx;
};

static void heap_timer_cb(struct eddy_op *op, int res)
{
    struct heap_timer *h = eddy_container_of(op, struct heap_timer, op);
    S[h->idx].calls++;
    S[h->idx].res = res;
    total++;
    free(h); /* a later touch by the loop is a use-after-free under ASan */
}

static void test_queued_ops_and_owed_cancels(void **state)
{
    (void)state;
    struct eddy_loop *loop = tiny_loop();
    spin(loop, 2);
    int fds[2];
    ts_tcp_pair(fds);
    struct eddy_bufpool *pool;
    assert_int_equal(eddy_bufpool_init(loop, &pool, 4, 64), 0);
    enum { N = 16 };
    submit_fail = 1;
    submits_refused = 0;
    /* 0..3 fill the SQ; the rest wait on the loop's list. Even ones are
     * zero-delay timers on the heap, odd ones 10 s timers. */
    for (int i = 0; i < N; i++) {
        if (i % 2 == 0) {
            struct heap_timer *h = calloc(1, sizeof *h);
            assert_non_null(h);
            h->idx = i;
            assert_int_equal(eddy_timer_ns(loop, &h->op, 0, heap_timer_cb), 0);
            S[i].op.data = h;
        } else {
            assert_int_equal(eddy_timer(loop, &S[i].op, 10000, slot_cb), 0);
        }
    }
    assert_int_equal(eddy_recv_multi(loop, &S[N].op, fds[1], pool, slot_cb), 0);
    assert_int_equal(eddy_recv(loop, &S[N + 1].op, fds[1], S[N + 1].buf, 8, 0, slot_cb), 0);
    if (ts_backend_is_epoll())
        assert_int_equal(submits_refused, 0); /* epoll: no SQ, never submitted */
    else
        assert_true(submits_refused > 0);
    struct eddy_loop_stats st = stats(loop);
    assert_int_equal(st.active, N + 2);
    /* Cancel ops sitting in the SQ (their cancel SQE is owed) and ops on
     * the wait list (they end without reaching the kernel). */
    for (int i = 0; i < N; i++) {
        struct eddy_op *op = i % 2 == 0 ? &((struct heap_timer *)S[i].op.data)->op : &S[i].op;
        if (i % 4 == 0 || i % 4 == 1 || i >= 8)
            assert_int_equal(eddy_cancel(loop, op), 0);
    }
    assert_int_equal(eddy_cancel(loop, &S[N].op), 0);
    assert_int_equal(eddy_bufpool_destroy(pool), -EBUSY);
    assert_int_equal(total, 0); /* never from inside a starter or eddy_cancel */
    submit_fail = 0;
    /* Everything but the two 10 s timers (3 and 7) ends: 14 timers and the
     * cancelled recv_multi. */
    TS_RUN_UNTIL(loop, total == N - 2 + 1, 3000);
    spin(loop, 10);
    assert_int_equal(total, N - 1);
    for (int i = 0; i < N; i++) {
        if (i == 3 || i == 7) {
            assert_int_equal(S[i].calls, 0);
            continue;
        }
        assert_int_equal(S[i].calls, 1);
        if (i == 2 || i == 6)
            assert_int_equal(S[i].res, 0); /* not cancelled: fired */
        else if (i % 2 == 0)
            assert_true(S[i].res == 0 || S[i].res == -ECANCELED); /* raced */
        else
            assert_int_equal(S[i].res, -ECANCELED);
    }
    assert_int_equal(S[N].calls, 1);
    assert_int_equal(S[N].res, -ECANCELED);
    assert_int_equal(eddy_bufpool_destroy(pool), 0); /* no user left behind */
    /* The recv queued behind them all still works; the long timers cancel. */
    assert_int_equal(S[N + 1].calls, 0);
    assert_int_equal(write(fds[0], "q", 1), 1);
    assert_int_equal(eddy_cancel(loop, &S[3].op), 0);
    assert_int_equal(eddy_cancel(loop, &S[7].op), 0);
    TS_RUN_UNTIL(loop, total == N + 2, 3000);
    spin(loop, 5);
    assert_int_equal(S[N + 1].res, 1);
    assert_int_equal(S[N + 1].buf[0], 'q');
    assert_int_equal(S[3].res, -ECANCELED);
    assert_int_equal(S[7].res, -ECANCELED);
    for (int i = 0; i <= N + 1; i++)
        assert_int_equal(S[i].calls, 1);
    print_message("SQ refused %d times; every op ended once\n", submits_refused);
    close(fds[0]);
    close(fds[1]);
    ts_loop_free(loop);
}

#define T(f) cmocka_unit_test_setup_teardown(f, slots_setup, slots_teardown)

int main(void)
{
    const struct CMUnitTest tests[] = {
        T(test_sq_full_mixed),
        T(test_cq_overflow_timers),
        T(test_cq_overflow_recvs),
        T(test_multishot_recv_tiny_cq),
        T(test_submit_from_callbacks),
        T(test_queued_ops_and_owed_cancels),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
