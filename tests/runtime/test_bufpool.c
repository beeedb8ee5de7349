/* The buffer pool, eddy_recv_multi and eddy_recv_once: chunks in pool buffers, back-pressure
 * when the pool runs dry (-ENOBUFS) and recovery when buffers come back,
 * one pool shared by many connections, cancel, destroy while in use. */
#define _GNU_SOURCE
#include "testsupport.h"

#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

/* ---- a sender on the other end, fed from the test thread -------------- */

struct pump {
    int fd;
    size_t len, off, seed;
};

static void pump_init(struct pump *p, int fd, size_t len, size_t seed)
{
    p->fd = fd;
    p->len = len;
    p->off = 0;
    p->seed = seed;
    assert_int_equal(fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK), 0);
}

static void pump_step(struct pump *p)
{
    uint8_t buf[4096];
    while (p->off < p->len) {
        size_t n = p->len - p->off < sizeof buf ? p->len - p->off : sizeof buf;
        for (size_t i = 0; i < n; i++)
            buf[i] = ts_pattern(p->seed + p->off + i);
        ssize_t w = send(p->fd, buf, n, MSG_DONTWAIT | MSG_NOSIGNAL);
        if (w <= 0)
            return;
        p->off += (size_t)w;
    }
}

/* Runs the loop, feeding the pumps, until cond holds; fails after ms. */
#define RUN_PUMPED(loop, pumps, npumps, cond, ms)                              \
    do {                                                                       \
        int64_t end_ = ts_now_ms() + (ms);                                     \
        while (!(cond)) {                                                      \
            if (ts_now_ms() > end_)                                            \
                fail_msg("timed out after %d ms waiting for %s", (int)(ms),   \
                         #cond);                                               \
            for (int k_ = 0; k_ < (npumps); k_++)                              \
                pump_step(&(pumps)[k_]);                                       \
            assert_true(eddy_loop_run((loop), EDDY_RUN_NOWAIT) >= 0);          \
            if (!(cond))                                                       \
                usleep(100);                                                   \
        }                                                                      \
    } while (0)

static void run_for(struct eddy_loop *loop, struct pump *pumps, int n, int ms)
{
    int64_t end = ts_now_ms() + ms;
    while (ts_now_ms() < end) {
        for (int k = 0; k < n; k++)
            pump_step(&pumps[k]);
        assert_true(eddy_loop_run(loop, EDDY_RUN_NOWAIT) >= 0);
        usleep(500);
    }
}

/* ---- the receiver ----------------------------------------------------- */

struct rm {
    struct eddy_op op;
    struct eddy_bufpool *pool;
    unsigned count, size;
    uint8_t *data;
    size_t cap, got;
    int chunks, finals, final_res, bad_flags, bad_buf;
    int hold;           /* keep buffers instead of putting them back */
    int release_at;     /* with hold: put all back from the callback at this many */
    uint16_t held[64];
    int nheld;
};

static void rm_init(struct rm *m, struct eddy_bufpool *pool, unsigned count, size_t cap)
{
    memset(m, 0, sizeof *m);
    m->pool = pool;
    m->count = count;
    m->size = eddy_bufpool_bufsize(pool);
    m->cap = cap;
    m->data = malloc(cap ? cap : 1);
    assert_non_null(m->data);
}

static void rm_release(struct rm *m)
{
    while (m->nheld > 0)
        eddy_bufpool_put(m->pool, m->held[--m->nheld]);
}

static void rm_cb(struct eddy_op *op, int res)
{
    struct rm *m = eddy_container_of(op, struct rm, op);
    if (!(op->flags & EDDY_OP_MORE)) {
        m->finals++;
        m->final_res = res;
        if (op->flags & EDDY_OP_BUFFER)
            m->bad_flags++;
        return;
    }
    if (op->flags != (EDDY_OP_MORE | EDDY_OP_BUFFER) || res <= 0) {
        m->bad_flags++;
        return;
    }
    if (op->bid >= m->count || op->buf != eddy_bufpool_buf(m->pool, op->bid) ||
        (unsigned)res > m->size) {
        m->bad_buf++;
    }
    if (m->got + (size_t)res <= m->cap)
        memcpy(m->data + m->got, op->buf, (size_t)res);
    m->got += (size_t)res;
    m->chunks++;
    if (m->hold) {
        assert_true(m->nheld < 64);
        m->held[m->nheld++] = op->bid;
        if (m->release_at && m->nheld == m->release_at)
            rm_release(m);
    } else {
        eddy_bufpool_put(m->pool, op->bid);
    }
}

static void rm_check(struct rm *m, size_t len, size_t seed)
{
    assert_int_equal(m->bad_flags, 0);
    assert_int_equal(m->bad_buf, 0);
    assert_int_equal(m->got, len);
    for (size_t i = 0; i < len; i++)
        if (m->data[i] != ts_pattern(seed + i))
            fail_msg("byte %zu of %zu wrong", i, len);
}

static void rm_free(struct rm *m)
{
    free(m->data);
    m->data = NULL;
}

static struct eddy_loop_stats stats(struct eddy_loop *loop)
{
    struct eddy_loop_stats st;
    eddy_loop_stats(loop, &st);
    return st;
}

/* ---- tests ------------------------------------------------------------ */

static void test_chunks_and_eof(void **state)
{
    (void)state;
    struct eddy_loop *loop = ts_loop_new(NULL);
    struct eddy_bufpool *pool;
    assert_int_equal(eddy_bufpool_init(loop, &pool, 8, 1024), 0);
    assert_int_equal(eddy_bufpool_free_count(pool), 8);
    assert_int_equal(eddy_bufpool_bufsize(pool), 1024);
    int fds[2];
    ts_tcp_pair(fds);
    enum { LEN = 200 * 1024 };
    struct rm m;
    rm_init(&m, pool, eddy_bufpool_free_count(pool), LEN);
    struct pump p;
    pump_init(&p, fds[0], LEN, 0);
    assert_int_equal(eddy_recv_multi(loop, &m.op, fds[1], pool, rm_cb), 0);
    assert_int_equal(eddy_bufpool_destroy(pool), -EBUSY);
    RUN_PUMPED(loop, &p, 1, m.got == LEN, 5000);
    assert_true(m.chunks >= LEN / 1024);
    assert_int_equal(m.finals, 0);
    assert_int_equal(eddy_bufpool_destroy(pool), -EBUSY);
    close(fds[0]);
    RUN_PUMPED(loop, &p, 0, m.finals > 0, 2000);
    run_for(loop, &p, 0, 5);
    assert_int_equal(m.finals, 1);
    assert_int_equal(m.final_res, 0);
    rm_check(&m, LEN, 0);
    assert_int_equal(eddy_bufpool_free_count(pool), 8);
    assert_int_equal(eddy_bufpool_destroy(pool), 0);
    rm_free(&m);
    close(fds[1]);
    ts_loop_free(loop);
}

/* The test keeps every buffer: receiving stops; giving them back resumes it
 * and not a byte is lost. */
static void test_exhaustion_and_recovery(void **state)
{
    (void)state;
    struct eddy_loop *loop = ts_loop_new(NULL);
    struct eddy_bufpool *pool;
    assert_int_equal(eddy_bufpool_init(loop, &pool, 4, 256), 0);
    int fds[2];
    ts_tcp_pair(fds);
    enum { LEN = 64 * 1024 };
    struct rm m;
    rm_init(&m, pool, eddy_bufpool_free_count(pool), LEN);
    m.hold = 1;
    struct pump p;
    pump_init(&p, fds[0], LEN, 77);
    uint64_t enobufs0 = stats(loop).enobufs;
    assert_int_equal(eddy_recv_multi(loop, &m.op, fds[1], pool, rm_cb), 0);
    RUN_PUMPED(loop, &p, 1, m.nheld == 4 && stats(loop).enobufs > enobufs0, 3000);
    run_for(loop, &p, 1, 50);
    assert_int_equal(m.nheld, 4);
    assert_int_equal(m.chunks, 4); /* stopped, not spinning on -ENOBUFS */
    assert_int_equal(eddy_bufpool_free_count(pool), 0);
    assert_int_equal(m.finals, 0);
    uint64_t enobufs = stats(loop).enobufs - enobufs0;
    assert_true(enobufs >= 1);
    assert_true(enobufs <= 4);

    m.hold = 0;
    rm_release(&m);
    RUN_PUMPED(loop, &p, 1, m.got == LEN, 5000);
    close(fds[0]);
    RUN_PUMPED(loop, &p, 0, m.finals > 0, 2000);
    assert_int_equal(m.finals, 1);
    assert_int_equal(m.final_res, 0);
    rm_check(&m, LEN, 77);
    assert_int_equal(eddy_bufpool_free_count(pool), 4);
    assert_int_equal(eddy_bufpool_destroy(pool), 0);
    rm_free(&m);
    close(fds[1]);
    ts_loop_free(loop);
}

/* Buffers go back from inside the callback that took the last one, so the
 * kernel's -ENOBUFS for the exhausted ring is reaped after they are free
 * again: the receive must not wait for a put that never comes. */
static void test_release_in_callback(void **state)
{
    (void)state;
    struct eddy_loop *loop = ts_loop_new(NULL);
    struct eddy_bufpool *pool;
    assert_int_equal(eddy_bufpool_init(loop, &pool, 4, 256), 0);
    int fds[2];
    ts_tcp_pair(fds);
    enum { LEN = 256 * 1024 };
    struct rm m;
    rm_init(&m, pool, eddy_bufpool_free_count(pool), LEN);
    m.hold = 1;
    m.release_at = 4;
    struct pump p;
    pump_init(&p, fds[0], LEN, 5);
    assert_int_equal(eddy_recv_multi(loop, &m.op, fds[1], pool, rm_cb), 0);
    RUN_PUMPED(loop, &p, 1, m.got == LEN, 5000);
    assert_int_equal(eddy_cancel(loop, &m.op), 0);
    RUN_PUMPED(loop, &p, 0, m.finals > 0, 2000);
    assert_int_equal(m.finals, 1);
    assert_int_equal(m.final_res, -ECANCELED);
    rm_release(&m);
    rm_check(&m, LEN, 5);
    print_message("release in callback: %d chunks, %llu enobufs\n", m.chunks,
                  (unsigned long long)stats(loop).enobufs);
    assert_int_equal(eddy_bufpool_free_count(pool), 4);
    assert_int_equal(eddy_bufpool_destroy(pool), 0);
    rm_free(&m);
    close(fds[0]);
    close(fds[1]);
    ts_loop_free(loop);
}

enum { NCONN = 16 };

static void test_shared_pool(void **state)
{
    (void)state;
    struct eddy_loop *loop = ts_loop_new(NULL);
    struct eddy_bufpool *pool;
    assert_int_equal(eddy_bufpool_init(loop, &pool, 8, 512), 0);
    enum { LEN = 32 * 1024 };
    int fds[NCONN][2];
    struct rm *m = calloc(NCONN, sizeof *m);
    struct pump p[NCONN];
    assert_non_null(m);
    for (int i = 0; i < NCONN; i++) {
        ts_tcp_pair(fds[i]);
        rm_init(&m[i], pool, 8, LEN);
        pump_init(&p[i], fds[i][0], LEN, (size_t)i * 7919);
        assert_int_equal(eddy_recv_multi(loop, &m[i].op, fds[i][1], pool, rm_cb), 0);
    }
    size_t total = 0;
    int64_t end = ts_now_ms() + 8000;
    for (;;) {
        total = 0;
        for (int i = 0; i < NCONN; i++)
            total += m[i].got;
        if (total == (size_t)NCONN * LEN)
            break;
        if (ts_now_ms() > end)
            fail_msg("shared pool: %zu of %zu bytes after 8 s", total, (size_t)NCONN * LEN);
        for (int i = 0; i < NCONN; i++)
            pump_step(&p[i]);
        assert_true(eddy_loop_run(loop, EDDY_RUN_NOWAIT) >= 0);
        usleep(100);
    }
    for (int i = 0; i < NCONN; i++)
        close(fds[i][0]);
    int finals = 0;
    end = ts_now_ms() + 2000;
    while (finals < NCONN) {
        if (ts_now_ms() > end)
            fail_msg("only %d of %d finals", finals, NCONN);
        assert_true(eddy_loop_run(loop, EDDY_RUN_NOWAIT) >= 0);
        usleep(100);
        finals = 0;
        for (int i = 0; i < NCONN; i++)
            finals += m[i].finals;
    }
    run_for(loop, p, 0, 5);
    for (int i = 0; i < NCONN; i++) {
        assert_int_equal(m[i].finals, 1);
        assert_int_equal(m[i].final_res, 0);
        rm_check(&m[i], LEN, (size_t)i * 7919);
        rm_free(&m[i]);
        close(fds[i][1]);
    }
    print_message("16 connections on 8 buffers: %llu enobufs\n",
                  (unsigned long long)stats(loop).enobufs);
    assert_int_equal(eddy_bufpool_free_count(pool), 8);
    assert_int_equal(eddy_bufpool_destroy(pool), 0);
    free(m);
    ts_loop_free(loop);
}

static void test_cancel_and_destroy_busy(void **state)
{
    (void)state;
    struct eddy_loop *loop = ts_loop_new(NULL);
    struct eddy_bufpool *pool;
    assert_int_equal(eddy_bufpool_init(loop, &pool, 4, 128), 0);
    int fds[2];
    ts_tcp_pair(fds);
    struct rm m;
    rm_init(&m, pool, 4, 4096);

    /* Cancelled while waiting for data. */
    assert_int_equal(eddy_recv_multi(loop, &m.op, fds[1], pool, rm_cb), 0);
    run_for(loop, NULL, 0, 10);
    assert_int_equal(m.chunks + m.finals, 0);
    assert_int_equal(eddy_bufpool_destroy(pool), -EBUSY);
    assert_int_equal(eddy_cancel(loop, &m.op), 0);
    assert_int_equal(eddy_cancel(loop, &m.op), -EALREADY);
    assert_int_equal(eddy_bufpool_destroy(pool), -EBUSY); /* until the final callback */
    RUN_PUMPED(loop, (struct pump *)NULL, 0, m.finals > 0, 2000);
    run_for(loop, NULL, 0, 5);
    assert_int_equal(m.finals, 1);
    assert_int_equal(m.final_res, -ECANCELED);
    assert_int_equal(eddy_bufpool_free_count(pool), 4);

    /* Cancelled while parked on an empty pool. */
    m.finals = 0;
    m.hold = 1;
    struct pump p;
    pump_init(&p, fds[0], 4096, 0);
    assert_int_equal(eddy_recv_multi(loop, &m.op, fds[1], pool, rm_cb), 0);
    RUN_PUMPED(loop, &p, 1, m.nheld == 4 && stats(loop).enobufs > 0, 3000);
    run_for(loop, &p, 1, 10);
    assert_int_equal(eddy_cancel(loop, &m.op), 0);
    RUN_PUMPED(loop, &p, 0, m.finals > 0, 2000);
    run_for(loop, NULL, 0, 5);
    assert_int_equal(m.finals, 1);
    assert_int_equal(m.final_res, -ECANCELED);
    assert_int_equal(m.chunks, 4);
    assert_true(m.got > 0 && m.got <= 4 * 128);
    rm_check(&m, m.got, 0);
    assert_int_equal(eddy_bufpool_free_count(pool), 0);
    rm_release(&m);
    assert_int_equal(eddy_bufpool_free_count(pool), 4);
    assert_int_equal(eddy_bufpool_destroy(pool), 0);

    /* Starter checks. */
    struct eddy_bufpool *bad;
    assert_int_equal(eddy_bufpool_init(loop, &bad, 3, 128), -EINVAL);
    assert_int_equal(eddy_bufpool_init(loop, &bad, 0, 128), -EINVAL);
    assert_int_equal(eddy_bufpool_init(loop, &bad, 4, 0), -EINVAL);
    assert_int_equal(eddy_bufpool_init(loop, &pool, 4, 128), 0);
    eddy_op_set_deadline(loop, &m.op, 100);
    assert_int_equal(eddy_recv_multi(loop, &m.op, fds[1], pool, rm_cb), -EINVAL);
    /* That failed start dropped the deadline: the next start has none. */
    assert_int_equal(eddy_recv_multi(loop, &m.op, fds[1], NULL, rm_cb), -EINVAL);
    assert_int_equal(eddy_recv_multi(loop, &m.op, -1, pool, rm_cb), -EINVAL);
    struct eddy_loop *other = ts_loop_new(NULL);
    assert_int_equal(eddy_recv_multi(other, &m.op, fds[1], pool, rm_cb), -EINVAL);
    ts_loop_free(other);
    assert_int_equal(eddy_bufpool_destroy(pool), 0);
    assert_int_equal(m.finals, 1);
    rm_free(&m);
    close(fds[0]);
    close(fds[1]);
    ts_loop_free(loop);
}

/* A connection reset ends the receive with the error, and no buffer. */
static void test_reset_final(void **state)
{
    (void)state;
    struct eddy_loop *loop = ts_loop_new(NULL);
    struct eddy_bufpool *pool;
    assert_int_equal(eddy_bufpool_init(loop, &pool, 4, 512), 0);
    int fds[2];
    ts_tcp_pair(fds);
    struct rm m;
    rm_init(&m, pool, 4, 4096);
    assert_int_equal(eddy_recv_multi(loop, &m.op, fds[1], pool, rm_cb), 0);
    assert_int_equal(write(fds[0], "abc", 3), 3);
    RUN_PUMPED(loop, (struct pump *)NULL, 0, m.got == 3, 2000);
    struct linger lg = {.l_onoff = 1, .l_linger = 0};
    assert_int_equal(setsockopt(fds[0], SOL_SOCKET, SO_LINGER, &lg, sizeof lg), 0);
    close(fds[0]);
    RUN_PUMPED(loop, (struct pump *)NULL, 0, m.finals > 0, 2000);
    run_for(loop, NULL, 0, 5);
    assert_int_equal(m.finals, 1);
    assert_int_equal(m.final_res, -ECONNRESET);
    assert_int_equal(m.bad_flags, 0);
    assert_memory_equal(m.data, "abc", 3);
    assert_int_equal(eddy_bufpool_free_count(pool), 4);
    assert_int_equal(eddy_bufpool_destroy(pool), 0);
    rm_free(&m);
    close(fds[1]);
    ts_loop_free(loop);
}

/* ---- eddy_recv_once --------------------------------------------------- */

struct once {
    struct eddy_op op;
    int calls, res;
    unsigned flags;
    uint16_t bid;
    char data[512];
};

static void once_cb(struct eddy_op *op, int res)
{
    struct once *o = eddy_container_of(op, struct once, op);
    o->calls++;
    o->res = res;
    o->flags = op->flags;
    o->bid = op->bid;
    if (res > 0 && (op->flags & EDDY_OP_BUFFER) && (size_t)res <= sizeof o->data)
        memcpy(o->data, op->buf, (size_t)res);
}

static void once_start(struct eddy_loop *loop, struct once *o, int fd,
                       struct eddy_bufpool *pool)
{
    memset(o, 0, sizeof *o);
    assert_int_equal(eddy_recv_once(loop, &o->op, fd, pool, once_cb), 0);
    assert_true(eddy_op_active(&o->op));
}

/* One chunk, one final callback carrying its buffer; nothing stays armed
 * (the rest stays in the socket for the next receive); EOF; cancel (a
 * quiet cancel where the kernel has CQE_SKIP: nothing left in flight). */
static void test_recv_once(void **state)
{
    (void)state;
    struct eddy_loop *loop = ts_loop_new(NULL);
    struct eddy_bufpool *pool;
    assert_int_equal(eddy_bufpool_init(loop, &pool, 2, 256), 0);
    int fds[2];
    ts_tcp_pair(fds);
    struct once o;

    /* 100 bytes: all of them, in a pool buffer, final. */
    once_start(loop, &o, fds[1], pool);
    assert_int_equal(write(fds[0], "0123456789", 10), 10);
    RUN_PUMPED(loop, (struct pump *)NULL, 0, o.calls > 0, 2000);
    run_for(loop, NULL, 0, 5);
    assert_int_equal(o.calls, 1);
    assert_int_equal(o.res, 10);
    assert_int_equal(o.flags, EDDY_OP_BUFFER);
    assert_memory_equal(o.data, "0123456789", 10);
    assert_false(eddy_op_active(&o.op));
    assert_int_equal(eddy_bufpool_free_count(pool), 1);
    eddy_bufpool_put(pool, o.bid);
    assert_int_equal(eddy_bufpool_free_count(pool), 2);

    /* 600 bytes: one buffer's worth each time, the rest waits. */
    uint8_t big[600];
    for (size_t i = 0; i < sizeof big; i++)
        big[i] = ts_pattern(i);
    assert_int_equal(write(fds[0], big, sizeof big), (ssize_t)sizeof big);
    usleep(2000);
    size_t got = 0;
    for (int k = 0; k < 3; k++) {
        once_start(loop, &o, fds[1], pool);
        RUN_PUMPED(loop, (struct pump *)NULL, 0, o.calls > 0, 2000);
        assert_int_equal(o.calls, 1);
        assert_int_equal(o.flags, EDDY_OP_BUFFER);
        assert_true(o.res > 0 && o.res <= 256);
        assert_memory_equal(o.data, big + got, (size_t)o.res);
        got += (size_t)o.res;
        eddy_bufpool_put(pool, o.bid);
        if (got == sizeof big)
            break;
    }
    assert_int_equal(got, sizeof big);

    /* Cancel with nothing to read: -ECANCELED, no buffer, nothing in flight. */
    uint32_t inflight0 = stats(loop).inflight;
    once_start(loop, &o, fds[1], pool);
    run_for(loop, NULL, 0, 5);
    assert_int_equal(o.calls, 0);
    assert_int_equal(eddy_cancel(loop, &o.op), 0);
    RUN_PUMPED(loop, (struct pump *)NULL, 0, o.calls > 0, 2000);
    run_for(loop, NULL, 0, 5);
    assert_int_equal(o.calls, 1);
    assert_int_equal(o.res, -ECANCELED);
    assert_int_equal(o.flags, 0);
    assert_int_equal(stats(loop).inflight, inflight0);
    assert_int_equal(eddy_bufpool_free_count(pool), 2);

    /* EOF: res 0, no buffer. */
    once_start(loop, &o, fds[1], pool);
    close(fds[0]);
    RUN_PUMPED(loop, (struct pump *)NULL, 0, o.calls > 0, 2000);
    run_for(loop, NULL, 0, 5);
    assert_int_equal(o.calls, 1);
    assert_int_equal(o.res, 0);
    assert_int_equal(o.flags, 0);
    assert_int_equal(eddy_bufpool_free_count(pool), 2);
    assert_int_equal(eddy_bufpool_destroy(pool), 0);
    close(fds[1]);
    ts_loop_free(loop);
}

/* A dry pool: the receive waits (counted as enobufs) without a callback
 * and goes on when a buffer comes back. */
static void test_recv_once_dry_pool(void **state)
{
    (void)state;
    struct eddy_loop *loop = ts_loop_new(NULL);
    struct eddy_bufpool *pool;
    assert_int_equal(eddy_bufpool_init(loop, &pool, 1, 128), 0);
    int fds[2];
    ts_tcp_pair(fds);
    struct once a, b;
    once_start(loop, &a, fds[1], pool);
    assert_int_equal(write(fds[0], "first", 5), 5);
    RUN_PUMPED(loop, (struct pump *)NULL, 0, a.calls > 0, 2000);
    assert_int_equal(a.res, 5);
    assert_int_equal(eddy_bufpool_free_count(pool), 0); /* a holds it */

    uint64_t enobufs0 = stats(loop).enobufs;
    once_start(loop, &b, fds[1], pool);
    assert_int_equal(write(fds[0], "second", 6), 6);
    RUN_PUMPED(loop, (struct pump *)NULL, 0, stats(loop).enobufs > enobufs0, 2000);
    run_for(loop, NULL, 0, 30);
    assert_int_equal(b.calls, 0);
    assert_true(eddy_op_active(&b.op));
    eddy_bufpool_put(pool, a.bid);
    RUN_PUMPED(loop, (struct pump *)NULL, 0, b.calls > 0, 2000);
    run_for(loop, NULL, 0, 5);
    assert_int_equal(b.calls, 1);
    assert_int_equal(b.res, 6);
    assert_int_equal(b.flags, EDDY_OP_BUFFER);
    assert_memory_equal(b.data, "second", 6);
    eddy_bufpool_put(pool, b.bid);
    assert_int_equal(eddy_bufpool_destroy(pool), 0);
    close(fds[0]);
    close(fds[1]);
    ts_loop_free(loop);
}

/* eddy_bufpool_lazy says whether waiting receives hold buffers, and it is
 * so: with one buffer and two receives waiting, a lazy pool keeps its
 * buffer free and the second connection's bytes get it while the first
 * still waits; otherwise the first receive holds it while it waits. */
static void test_lazy(void **state)
{
    (void)state;
    struct eddy_loop *loop = ts_loop_new(NULL);
    struct eddy_bufpool *pool;
    assert_int_equal(eddy_bufpool_init(loop, &pool, 1, 128), 0);
    int want = ts_backend_is_epoll() || (eddy_loop_features(loop) & EDDY_FEAT_BUF_RING) != 0;
    assert_int_equal(eddy_bufpool_lazy(pool), want);
    int p1[2], p2[2];
    ts_tcp_pair(p1);
    ts_tcp_pair(p2);
    struct once a, b;
    once_start(loop, &a, p1[1], pool);
    once_start(loop, &b, p2[1], pool);
    run_for(loop, NULL, 0, 20);
    assert_int_equal(a.calls + b.calls, 0);
    assert_int_equal(eddy_bufpool_free_count(pool), want ? 1 : 0);
    if (want) {
        assert_int_equal(write(p2[0], "hi", 2), 2);
        RUN_PUMPED(loop, (struct pump *)NULL, 0, b.calls > 0, 2000);
        assert_int_equal(b.res, 2);
        assert_memory_equal(b.data, "hi", 2);
        assert_int_equal(a.calls, 0);
        eddy_bufpool_put(pool, b.bid);
    }
    assert_int_equal(eddy_cancel(loop, &a.op), 0);
    if (!want)
        assert_int_equal(eddy_cancel(loop, &b.op), 0);
    RUN_PUMPED(loop, (struct pump *)NULL, 0, a.calls > 0 && b.calls > 0, 2000);
    run_for(loop, NULL, 0, 5);
    assert_int_equal(eddy_bufpool_free_count(pool), 1);
    assert_int_equal(eddy_bufpool_destroy(pool), 0);
    for (int i = 0; i < 2; i++) {
        close(p1[i]);
        close(p2[i]);
    }
    ts_loop_free(loop);
}

#define T(f) cmocka_unit_test_setup_teardown(f, ts_fd_setup, ts_fd_teardown)

int main(void)
{
    const struct CMUnitTest tests[] = {
        T(test_chunks_and_eof),
        T(test_exhaustion_and_recovery),
        T(test_release_in_callback),
        T(test_shared_pool),
        T(test_cancel_and_destroy_busy),
        T(test_reset_final),
        T(test_recv_once),
        T(test_recv_once_dry_pool),
        T(test_lazy),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
