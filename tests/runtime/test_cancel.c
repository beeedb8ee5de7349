/* Cancellation: cancel racing a completion (the final callback runs exactly
 * once, with the real result or -ECANCELED, and the op may be freed in it),
 * cancel from inside callbacks, cancel of ops behind a full SQ. */
#define _GNU_SOURCE
#include "testsupport.h"

#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

static void spin(struct eddy_loop *loop, int n)
{
    for (int i = 0; i < n; i++)
        assert_true(eddy_loop_run(loop, EDDY_RUN_NOWAIT) >= 0);
}

/* ---- recv vs cancel --------------------------------------------------- */

enum { ITER = 1000 };

/* Heap-allocated and freed in its final callback: under ASan any touch of
 * the op after that callback is a use-after-free report. */
struct rop {
    struct eddy_op op;
    int iter;
    char buf[16];
};

static int finals[ITER];
static int results[ITER];
static int got_byte[ITER];
static int total_finals, bad_flags;

static void rop_cb(struct eddy_op *op, int res)
{
    struct rop *r = eddy_container_of(op, struct rop, op);
    if (op->flags != 0)
        bad_flags++;
    finals[r->iter]++;
    results[r->iter] = res;
    got_byte[r->iter] = res == 1 ? (unsigned char)r->buf[0] : -1;
    total_finals++;
    free(r);
}

static void test_recv_cancel_race(void **state)
{
    (void)state;
    struct eddy_loop *loop = ts_loop_new(NULL);
    int fds[2];
    ts_tcp_pair(fds);
    memset(finals, 0, sizeof finals);
    total_finals = bad_flags = 0;
    int won_data = 0, won_cancel = 0;
    for (int i = 0; i < ITER; i++) {
        struct rop *r = calloc(1, sizeof *r);
        assert_non_null(r);
        r->iter = i;
        unsigned char b = (unsigned char)i;
        int v = i % 5;
        switch (v) {
        case 0: /* data already there when the recv starts */
            assert_int_equal(write(fds[0], &b, 1), 1);
            assert_int_equal(eddy_recv(loop, &r->op, fds[1], r->buf, sizeof r->buf, 0, rop_cb), 0);
            break;
        case 1: /* data arrives before the SQE is even submitted */
            assert_int_equal(eddy_recv(loop, &r->op, fds[1], r->buf, sizeof r->buf, 0, rop_cb), 0);
            assert_int_equal(write(fds[0], &b, 1), 1);
            break;
        case 2: /* the recv is waiting in the kernel, then data arrives */
            assert_int_equal(eddy_recv(loop, &r->op, fds[1], r->buf, sizeof r->buf, 0, rop_cb), 0);
            spin(loop, 1);
            assert_int_equal(write(fds[0], &b, 1), 1);
            break;
        default: /* 3: in the kernel, cancel queued, data right after;
                  * 4: data only after the final callback */
            assert_int_equal(eddy_recv(loop, &r->op, fds[1], r->buf, sizeof r->buf, 0, rop_cb), 0);
            spin(loop, 1);
            break;
        }
        /* A recv that completed in a NOWAIT step is final, and freed. */
        if (finals[i] == 0)
            assert_int_equal(eddy_cancel(loop, &r->op), 0);
        if (v == 3)
            assert_int_equal(write(fds[0], &b, 1), 1);
        TS_RUN_UNTIL(loop, finals[i] > 0, 2000);
        spin(loop, 2);
        if (v == 4)
            assert_int_equal(write(fds[0], &b, 1), 1);
        assert_int_equal(finals[i], 1);
        if (results[i] == 1) {
            assert_int_equal(got_byte[i], b);
            won_data++;
        } else {
            assert_int_equal(results[i], -ECANCELED);
            won_cancel++;
            /* Nothing was consumed: the byte is still in the socket. */
            unsigned char c;
            int64_t end = ts_now_ms() + 1000;
            ssize_t n;
            while ((n = recv(fds[1], &c, 1, MSG_DONTWAIT)) < 0 && ts_now_ms() < end)
                usleep(50);
            assert_int_equal(n, 1);
            assert_int_equal(c, b);
        }
        unsigned char extra;
        assert_int_equal(recv(fds[1], &extra, 1, MSG_DONTWAIT), -1);
    }
    spin(loop, 10);
    assert_int_equal(total_finals, ITER);
    assert_int_equal(bad_flags, 0);
    print_message("recv vs cancel, %d rounds: data won %d, cancel won %d\n", ITER,
                  won_data, won_cancel);
    assert_true(won_cancel > 0); /* the cancel path really was taken */
    close(fds[0]);
    close(fds[1]);
    ts_loop_free(loop);
}

/* ---- timer vs cancel -------------------------------------------------- */

struct top {
    struct eddy_op op;
    int *calls, *res;
};

static void top_cb(struct eddy_op *op, int res)
{
    struct top *t = eddy_container_of(op, struct top, op);
    (*t->calls)++;
    *t->res = res;
    free(t);
}

static void test_timer_cancel_race(void **state)
{
    (void)state;
    struct eddy_loop *loop = ts_loop_new(NULL);
    int fired = 0, cancelled = 0;
    for (int i = 0; i < ITER; i++) {
        int calls = 0, res = 1;
        struct top *t = calloc(1, sizeof *t);
        assert_non_null(t);
        t->calls = &calls;
        t->res = &res;
        assert_int_equal(eddy_timer_ns(loop, &t->op, (uint64_t)(i % 5) * 20000, top_cb), 0);
        if (i % 3 == 1)
            spin(loop, 1);
        if (i % 3 == 2)
            usleep(100);
        if (calls == 0) /* else it fired and was freed */
            assert_int_equal(eddy_cancel(loop, &t->op), 0);
        TS_RUN_UNTIL(loop, calls > 0, 2000);
        spin(loop, 2);
        assert_int_equal(calls, 1);
        if (res == 0) {
            fired++;
        } else {
            assert_int_equal(res, -ECANCELED);
            cancelled++;
        }
    }
    print_message("timer vs cancel, %d rounds: fired %d, cancelled %d\n", ITER, fired,
                  cancelled);
    assert_int_equal(fired + cancelled, ITER);
    ts_loop_free(loop);
}

/* ---- accept vs cancel ------------------------------------------------- */

struct aop {
    struct eddy_op op;
    int fds[8];
    int n, finals, final_res;
};

static void aop_cb(struct eddy_op *op, int res)
{
    struct aop *a = eddy_container_of(op, struct aop, op);
    if (op->flags & EDDY_OP_MORE) {
        assert_true(res >= 0);
        assert_true(a->n < 8);
        a->fds[a->n++] = res;
        return;
    }
    a->finals++;
    a->final_res = res;
}

/* A connection waits in the backlog; accept starts and is cancelled at
 * once.  Either it was accepted before the cancel, or it is still there:
 * never lost, never accepted twice, one final -ECANCELED. */
static void test_accept_cancel_race(void **state)
{
    (void)state;
    struct eddy_loop *loop = ts_loop_new(NULL);
    uint16_t port;
    int l = ts_listen(0, &port);
    assert_int_equal(fcntl(l, F_SETFL, O_NONBLOCK), 0); /* the checks below must not block */
    int accepted = 0, left = 0;
    for (int i = 0; i < 200; i++) {
        /* 0: pending before the accept starts; 1: and the accept submitted
         * before the cancel; 2: the connection comes after the cancel. */
        int v = i % 3, c = -1;
        if (v != 2)
            c = ts_connect(port);
        struct aop *a = calloc(1, sizeof *a);
        assert_non_null(a);
        assert_int_equal(eddy_accept(loop, &a->op, l, NULL, NULL, SOCK_CLOEXEC, aop_cb), 0);
        if (v != 0)
            spin(loop, 1);
        assert_int_equal(eddy_cancel(loop, &a->op), 0);
        if (v == 2)
            c = ts_connect(port);
        TS_RUN_UNTIL(loop, a->finals > 0, 2000);
        spin(loop, 2);
        assert_int_equal(a->finals, 1);
        assert_int_equal(a->final_res, -ECANCELED);
        assert_true(a->n <= 1);
        accepted += a->n;
        for (int k = 0; k < a->n; k++)
            close(a->fds[k]);
        if (a->n == 0) {
            int s = accept4(l, NULL, NULL, SOCK_CLOEXEC);
            assert_true(s >= 0);
            close(s);
            left++;
        }
        assert_int_equal(accept4(l, NULL, NULL, SOCK_CLOEXEC), -1); /* backlog empty */
        assert_int_equal(errno, EAGAIN);
        free(a);
        close(c);
    }
    print_message("accept vs cancel, 200 rounds: accepted %d, left in backlog %d\n",
                  accepted, left);
    close(l);
    ts_loop_free(loop);
}

/* ---- a short send cancelled half-way ---------------------------------- */

struct sop {
    struct eddy_op op;
    uint8_t *buf;
    int *calls, *res;
};

static void sop_cb(struct eddy_op *op, int res)
{
    struct sop *s = eddy_container_of(op, struct sop, op);
    (*s->calls)++;
    *s->res = res;
    free(s->buf);
    free(s);
}

static void test_send_cancel(void **state)
{
    (void)state;
    struct eddy_loop *loop = ts_loop_new(NULL);
    enum { LEN = 4 << 20 };
    for (int i = 0; i < 20; i++) {
        int fds[2];
        ts_tcp_pair(fds);
        int small = 4096;
        setsockopt(fds[0], SOL_SOCKET, SO_SNDBUF, &small, sizeof small);
        setsockopt(fds[1], SOL_SOCKET, SO_RCVBUF, &small, sizeof small);
        int calls = 0, res = 0;
        struct sop *s = calloc(1, sizeof *s);
        assert_non_null(s);
        s->buf = calloc(1, LEN);
        assert_non_null(s->buf);
        s->calls = &calls;
        s->res = &res;
        assert_int_equal(eddy_send(loop, &s->op, fds[0], s->buf, LEN, 0, sop_cb), 0);
        for (int k = 0; k < i % 4; k++) {
            spin(loop, 1);
            usleep(200);
        }
        assert_int_equal(calls, 0); /* else s is freed already */
        assert_int_equal(eddy_cancel(loop, &s->op), 0);
        TS_RUN_UNTIL(loop, calls > 0, 2000);
        spin(loop, 2);
        assert_int_equal(calls, 1);
        /* Nobody reads: 4 MiB cannot have gone out whole. */
        assert_int_equal(res, -ECANCELED);
        close(fds[0]);
        close(fds[1]);
    }
    ts_loop_free(loop);
}

/* ---- cancel from callbacks -------------------------------------------- */

struct pair_ops {
    struct eddy_op a, b;
    int a_calls, b_calls, a_res, b_res;
};

static void b_cb(struct eddy_op *op, int res)
{
    struct pair_ops *p = eddy_container_of(op, struct pair_ops, b);
    p->b_calls++;
    p->b_res = res;
}

static void a_cancels_b(struct eddy_op *op, int res)
{
    struct pair_ops *p = eddy_container_of(op, struct pair_ops, a);
    p->a_calls++;
    p->a_res = res;
    assert_int_equal(eddy_cancel(op->loop, &p->b), 0);
    assert_int_equal(eddy_cancel(op->loop, op), -ENOENT); /* a is final already */
}

static void test_cancel_in_callback(void **state)
{
    (void)state;
    struct eddy_loop *loop = ts_loop_new(NULL);
    struct pair_ops p;
    memset(&p, 0, sizeof p);
    assert_int_equal(eddy_timer(loop, &p.b, 10000, b_cb), 0);
    assert_int_equal(eddy_timer(loop, &p.a, 1, a_cancels_b), 0);
    TS_RUN_UNTIL(loop, p.b_calls > 0, 2000);
    spin(loop, 3);
    assert_int_equal(p.a_calls, 1);
    assert_int_equal(p.a_res, 0);
    assert_int_equal(p.b_calls, 1);
    assert_int_equal(p.b_res, -ECANCELED);

    /* A post cancelled before its turn, and ops that are not active. */
    memset(&p, 0, sizeof p);
    assert_int_equal(eddy_post(loop, &p.b, b_cb), 0);
    assert_int_equal(eddy_cancel(loop, &p.b), 0);
    assert_int_equal(eddy_cancel(loop, &p.b), -EALREADY);
    spin(loop, 3);
    assert_int_equal(p.b_calls, 1);
    assert_int_equal(p.b_res, -ECANCELED);
    assert_false(eddy_op_active(&p.b));
    assert_int_equal(eddy_cancel(loop, &p.b), -ENOENT);
    struct eddy_op idle = EDDY_OP_INIT;
    assert_int_equal(eddy_cancel(loop, &idle), -ENOENT);
    ts_loop_free(loop);
}

/* A multishot accept cancelled from its own callback: every callback after
 * it is the single final -ECANCELED. */
struct self {
    struct eddy_op op;
    int more, finals, final_res, cancel_rc;
};

static void self_cb(struct eddy_op *op, int res)
{
    struct self *s = eddy_container_of(op, struct self, op);
    if (op->flags & EDDY_OP_MORE) {
        if (res >= 0)
            close(res);
        if (s->more++ == 0)
            s->cancel_rc = eddy_cancel(op->loop, op);
        return;
    }
    s->finals++;
    s->final_res = res;
}

static void test_cancel_self_multishot(void **state)
{
    (void)state;
    struct eddy_loop *loop = ts_loop_new(NULL);
    uint16_t port;
    int l = ts_listen(0, &port);
    int c[3];
    for (int i = 0; i < 3; i++)
        c[i] = ts_connect(port);
    struct self s;
    memset(&s, 0, sizeof s);
    assert_int_equal(eddy_accept(loop, &s.op, l, NULL, NULL, SOCK_CLOEXEC, self_cb), 0);
    TS_RUN_UNTIL(loop, s.finals > 0, 2000);
    spin(loop, 5);
    assert_int_equal(s.cancel_rc, 0);
    assert_int_equal(s.finals, 1);
    assert_int_equal(s.final_res, -ECANCELED);
    assert_true(s.more >= 1 && s.more <= 3);
    /* What was not accepted waits in the backlog. */
    assert_int_equal(fcntl(l, F_SETFL, O_NONBLOCK), 0);
    for (int i = s.more; i < 3; i++) {
        int fd = accept4(l, NULL, NULL, SOCK_CLOEXEC);
        assert_true(fd >= 0);
        close(fd);
    }
    assert_int_equal(accept4(l, NULL, NULL, SOCK_CLOEXEC), -1);
    for (int i = 0; i < 3; i++)
        close(c[i]);
    close(l);
    ts_loop_free(loop);
}

/* ---- cancel with the SQ full ------------------------------------------ */

enum { NOPS = 96 };

struct many {
    struct eddy_op op[NOPS];
    int calls[NOPS], res[NOPS];
    char buf[NOPS][8];
    int total;
};

static struct many M;

static void many_cb(struct eddy_op *op, int res)
{
    int i = (int)(op - M.op);
    M.calls[i]++;
    M.res[i] = res;
    M.total++;
}

/* A 4-entry SQ: starting 96 ops and cancelling each right away, so most
 * cancels are prepared while the SQ is full of the ops they target. */
static void test_cancel_sq_full(void **state)
{
    (void)state;
    struct eddy_loop_options o;
    eddy_loop_options_init(&o);
    o.entries = 4;
    o.cq_entries = 8;
    struct eddy_loop *loop = ts_loop_new(&o);
    int fds[2];
    ts_tcp_pair(fds);
    struct eddy_bufpool *pool;
    assert_int_equal(eddy_bufpool_init(loop, &pool, 4, 64), 0);
    memset(&M, 0, sizeof M);
    struct eddy_loop_stats st0, st1;
    eddy_loop_stats(loop, &st0);
    for (int i = 0; i < NOPS; i++) {
        int v = i % 5;
        switch (v) {
        case 0:
            assert_int_equal(eddy_timer(loop, &M.op[i], 10000, many_cb), 0);
            break;
        case 1:
            assert_int_equal(eddy_recv(loop, &M.op[i], fds[1], M.buf[i], 8, 0, many_cb), 0);
            break;
        case 2:
            eddy_op_set_deadline(loop, &M.op[i], 10000);
            assert_int_equal(eddy_recv(loop, &M.op[i], fds[0], M.buf[i], 8, 0, many_cb), 0);
            break;
        default:
            assert_int_equal(eddy_recv_multi(loop, &M.op[i], fds[1], pool, many_cb), 0);
            break;
        }
        if (i % 2 == 0)
            assert_int_equal(eddy_cancel(loop, &M.op[i]), 0);
    }
    assert_int_equal(eddy_bufpool_destroy(pool), -EBUSY);
    spin(loop, 3);
    for (int i = 1; i < NOPS; i += 2)
        assert_int_equal(M.calls[i], 0); /* nothing to complete them yet */
    for (int i = 1; i < NOPS; i += 2)
        assert_int_equal(eddy_cancel(loop, &M.op[i]), 0);
    TS_RUN_UNTIL(loop, M.total == NOPS, 3000);
    spin(loop, 5);
    eddy_loop_stats(loop, &st1);
    for (int i = 0; i < NOPS; i++) {
        assert_int_equal(M.calls[i], 1);
        assert_int_equal(M.res[i], -ECANCELED);
    }
    print_message("cancel with SQ of 4: %llu early flushes\n",
                  (unsigned long long)(st1.sq_full - st0.sq_full));
    if (ts_backend_is_epoll()) {
        /* epoll has no submission queue to fill: every op is a system
         * call or a wait at once, and the same exact callbacks follow. */
        print_message("    epoll: no SQ; checking that none was ever counted full\n");
        assert_int_equal(st1.sq_full, st0.sq_full);
    } else {
        assert_true(st1.sq_full > st0.sq_full);
    }
    /* Every recv_multi is final: the pool is free again. */
    assert_int_equal(eddy_bufpool_destroy(pool), 0);
    close(fds[0]);
    close(fds[1]);
    ts_loop_free(loop);
}

#define T(f) cmocka_unit_test_setup_teardown(f, ts_fd_setup, ts_fd_teardown)

int main(void)
{
    const struct CMUnitTest tests[] = {
        T(test_recv_cancel_race),
        T(test_timer_cancel_race),
        T(test_accept_cancel_race),
        T(test_send_cancel),
        T(test_cancel_in_callback),
        T(test_cancel_self_multishot),
        T(test_cancel_sq_full),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
