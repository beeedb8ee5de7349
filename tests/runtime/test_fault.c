/* The fault injector (eddy/fault.h): the EDDY_FAULTS grammar, each effect
 * on each kind family with exact results and callback counts, nth:K and xM,
 * determinism by seed, the counters, and "off means off". */
#define _GNU_SOURCE
#include "testsupport.h"
#include "eddy/fault.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <stdbool.h>
#include <unistd.h>

/* ---- a log that keeps what it hears ------------------------------------ */

struct logbuf {
    char text[65536];
    size_t len;
    int warnings;
    char last_warning[512];
};

static void log_keep(void *ud, int level, const char *msg)
{
    struct logbuf *b = ud;
    if (level == EDDY_LOG_WARN) {
        b->warnings++;
        snprintf(b->last_warning, sizeof b->last_warning, "%s", msg);
    }
    /* Only the injection lines: the loop's other words may differ by run. */
    if (strncmp(msg, "fault:", 6) != 0)
        return;
    int n = snprintf(b->text + b->len, sizeof b->text - b->len, "%s\n", msg);
    if (n > 0 && b->len + (size_t)n < sizeof b->text)
        b->len += (size_t)n;
}

static struct eddy_loop *loop_with_log(struct logbuf *b)
{
    memset(b, 0, sizeof *b);
    struct eddy_loop_options o;
    eddy_loop_options_init(&o);
    o.log = log_keep;
    o.log_ud = b;
    return ts_loop_new(&o);
}

static struct eddy_loop *loop_faults(struct logbuf *b, const char *spec)
{
    struct eddy_loop *loop = loop_with_log(b);
    assert_int_equal(eddy_fault_set(loop, spec), 0);
    return loop;
}

static void loop_done(struct eddy_loop *loop)
{
    assert_int_equal(eddy_fault_set(loop, NULL), 0);
    ts_loop_free(loop);
}

/* ---- a counting op ------------------------------------------------------ */

struct one {
    struct eddy_op op;
    int calls, more_calls, res;
    uint32_t flags;
    int64_t at_ms;
};

static void one_cb(struct eddy_op *op, int res)
{
    struct one *o = eddy_container_of(op, struct one, op);
    if (op->flags & EDDY_OP_MORE) {
        o->more_calls++;
        return;
    }
    o->calls++;
    o->res = res;
    o->flags = op->flags;
    o->at_ms = ts_now_ms();
}

static struct eddy_fault_stat rule_stat(struct eddy_loop *loop, unsigned i)
{
    struct eddy_fault_stat st[8];
    unsigned n = eddy_fault_stats(loop, st, 8);
    assert_true(i < n);
    return st[i];
}

/* ---- the grammar -------------------------------------------------------- */

static void test_parse_valid(void **state)
{
    (void)state;
    struct logbuf b;
    struct eddy_loop *loop = loop_with_log(&b);
    assert_int_equal(eddy_fault_stats(loop, NULL, 0), 0);
    assert_true(eddy_fault_seed(loop) == 0);

    assert_int_equal(eddy_fault_set(loop, "seed=7;recv=ECONNRESET@2%x100;send=short:1@10%;"
                                          "accept=EMFILE@nth:3"), 0);
    struct eddy_fault_stat st[4];
    assert_int_equal(eddy_fault_stats(loop, st, 4), 3);
    assert_true(eddy_fault_seed(loop) == 7);
    assert_string_equal(st[0].rule, "recv=ECONNRESET@2%x100");
    assert_string_equal(st[1].rule, "send=short:1@10%");
    assert_string_equal(st[2].rule, "accept=EMFILE@nth:3");
    assert_true(st[0].events == 0 && st[0].injected == 0);

    static const char *const ok[] = {
        "seed=1;recv=EPIPE@0.5%",
        "seed=18446744073709551615;all=delay:5@100%",
        " seed=3 ; recv , send = EPIPE @ nth:2x1 ; ",
        "timer,work=EIO@0.0000001%",
        "recv_multi,recv_once,send_zc,sendmsg,read,write=short:3@1%",
        "connect,close,shutdown,poll=ECONNREFUSED@100%x3",
        "work=fail:EAGAIN@nth:1;recv=fail:ENOMEM@50%",
    };
    for (size_t i = 0; i < sizeof ok / sizeof ok[0]; i++) {
        assert_int_equal(eddy_fault_set(loop, ok[i]), 0);
        assert_true(eddy_fault_stats(loop, NULL, 0) >= 1);
    }
    assert_true(eddy_fault_seed(loop) != 0 || 1); /* last had no seed: one is chosen */
    assert_int_equal(b.warnings, 0);
    /* Off again. */
    assert_int_equal(eddy_fault_set(loop, NULL), 0);
    assert_int_equal(eddy_fault_stats(loop, NULL, 0), 0);
    assert_int_equal(eddy_fault_set(loop, ""), 0);
    assert_int_equal(eddy_fault_stats(loop, NULL, 0), 0);
    ts_loop_free(loop);
}

static void test_parse_malformed(void **state)
{
    (void)state;
    static const struct {
        const char *spec, *part, *why;
    } bad[] = {
        {"recv", "\"recv\"", "no '='"},
        {"seed=1;foo=EPIPE@1%", "\"foo=EPIPE@1%\"", "unknown kind"},
        {"recv=EFOO@1%", "\"recv=EFOO@1%\"", "unknown effect"},
        {"recv=EAGAIN@1%", "\"recv=EAGAIN@1%\"", "unknown effect"},
        {"recv=EPIPE", "\"recv=EPIPE\"", "no '@'"},
        {"recv=EPIPE@101%", "\"recv=EPIPE@101%\"", "0 < P <= 100"},
        {"recv=EPIPE@0%", "\"recv=EPIPE@0%\"", "0 < P <= 100"},
        {"recv=EPIPE@0.12345678%", "\"recv=EPIPE@0.12345678%\"", "0 < P <= 100"},
        {"recv=EPIPE@nth:0", "\"recv=EPIPE@nth:0\"", "K >= 1"},
        {"recv=EPIPE@1%x0", "\"recv=EPIPE@1%x0\"", "M >= 1"},
        {"recv=EPIPE@often", "\"recv=EPIPE@often\"", "unknown trigger"},
        {"accept=short:1@1%", "\"accept=short:1@1%\"", "recv, send, read and write"},
        {"send=short:0@1%", "\"send=short:0@1%\"", "N >= 1"},
        {"recv=delay:0@1%", "\"recv=delay:0@1%\"", "delay:N"},
        {"recv=fail:EPIPE@1%", "\"recv=fail:EPIPE@1%\"", "EAGAIN or ENOMEM"},
        {"seed=abc;recv=EPIPE@1%", "\"seed=abc\"", "decimal"},
        /* a good rule before a bad one: still none at all */
        {"seed=2;recv=EPIPE@1%;send=EPIPE@", "\"send=EPIPE@\"", "unknown trigger"},
    };
    struct logbuf b;
    struct eddy_loop *loop = loop_with_log(&b);
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        assert_int_equal(eddy_fault_set(loop, "seed=9;timer=EIO@1%"), 0);
        int w = b.warnings;
        assert_int_equal(eddy_fault_set(loop, bad[i].spec), -EINVAL);
        assert_int_equal(b.warnings, w + 1);
        if (!strstr(b.last_warning, bad[i].part) || !strstr(b.last_warning, bad[i].why) ||
            !strstr(b.last_warning, "no faults injected"))
            fail_msg("%s: warning \"%s\"", bad[i].spec, b.last_warning);
        assert_int_equal(eddy_fault_stats(loop, NULL, 0), 0); /* never half a set */
        assert_true(eddy_fault_seed(loop) == 0);
    }
    ts_loop_free(loop);
}

static void test_env(void **state)
{
    (void)state;
    struct logbuf b;
    setenv("EDDY_FAULTS", "seed=5;timer=EIO@nth:2", 1);
    struct eddy_loop *loop = loop_with_log(&b);
    assert_int_equal(eddy_fault_stats(loop, NULL, 0), 1);
    assert_true(eddy_fault_seed(loop) == 5);
    ts_loop_free(loop);

    setenv("EDDY_FAULTS", "seed=5;timer=EIO@nth:2;bogus", 1);
    loop = loop_with_log(&b);
    assert_int_equal(b.warnings, 1);
    assert_non_null(strstr(b.last_warning, "EDDY_FAULTS: bad part \"bogus\""));
    assert_int_equal(eddy_fault_stats(loop, NULL, 0), 0);
    ts_loop_free(loop);

    /* ignore_env: not read at all */
    setenv("EDDY_FAULTS", "timer=EIO@100%", 1);
    struct eddy_loop_options o;
    eddy_loop_options_init(&o);
    o.ignore_env = 1;
    o.log = log_keep;
    o.log_ud = &b;
    loop = ts_loop_new(&o);
    assert_int_equal(eddy_fault_stats(loop, NULL, 0), 0);
    ts_loop_free(loop);
    unsetenv("EDDY_FAULTS");
}

static int work_fn(struct eddy_op *op)
{
    (void)op;
    return 42;
}

/* ---- errors on each family ---------------------------------------------- */

static void test_errno_recv(void **state)
{
    (void)state;
    struct logbuf b;
    struct eddy_loop *loop = loop_faults(&b, "seed=1;recv=ECONNRESET@nth:1");
    int fds[2];
    ts_tcp_pair(fds);
    assert_int_equal(write(fds[0], "abc", 3), 3);
    char buf[16];
    struct one r = {.op = EDDY_OP_INIT};
    r.op.label = "my recv";
    assert_int_equal(eddy_recv(loop, &r.op, fds[1], buf, sizeof buf, 0, one_cb), 0);
    assert_int_equal(r.calls, 0); /* never from inside the starter */
    ts_run_idle(loop, 2000);
    assert_int_equal(r.calls, 1);
    assert_int_equal(r.res, -ECONNRESET);
    /* The injected error hid nothing: the bytes are still there. */
    assert_int_equal(eddy_recv(loop, &r.op, fds[1], buf, sizeof buf, 0, one_cb), 0);
    ts_run_idle(loop, 2000);
    assert_int_equal(r.calls, 2);
    assert_int_equal(r.res, 3);
    assert_memory_equal(buf, "abc", 3);
    assert_non_null(strstr(b.text, "fault: seed=1 rule=1 \"recv=ECONNRESET@nth:1\" kind=recv "
                                   "label=my recv at=arm n=1"));
    struct eddy_fault_stat st = rule_stat(loop, 0);
    assert_true(st.events == 2 && st.injected == 1);
    close(fds[0]);
    close(fds[1]);
    loop_done(loop);
}

static void test_errno_send(void **state)
{
    (void)state;
    struct logbuf b;
    struct eddy_loop *loop = loop_faults(&b, "seed=1;send=EPIPE@nth:1");
    int fds[2];
    ts_tcp_pair(fds);
    static char data[100];
    struct one s = {.op = EDDY_OP_INIT};
    assert_int_equal(eddy_send(loop, &s.op, fds[0], data, sizeof data, 0, one_cb), 0);
    ts_run_idle(loop, 2000);
    assert_int_equal(s.calls, 1);
    assert_int_equal(s.more_calls, 0);
    assert_int_equal(s.res, -EPIPE);
    assert_int_equal(eddy_send(loop, &s.op, fds[0], data, sizeof data, 0, one_cb), 0);
    ts_run_idle(loop, 2000);
    assert_int_equal(s.calls, 2);
    assert_int_equal(s.res, (int)sizeof data);
    close(fds[0]);
    close(fds[1]);
    loop_done(loop);
}

static void test_errno_connect_timer_work(void **state)
{
    (void)state;
    struct logbuf b;
    struct eddy_loop *loop =
        loop_faults(&b, "seed=1;connect=ECONNREFUSED@nth:1;timer=ETIMEDOUT@nth:1;work=EIO@nth:1");
    uint16_t port;
    int lfd = ts_listen(0, &port);
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons(port)};
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    int cfd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    struct one c = {.op = EDDY_OP_INIT}, t = {.op = EDDY_OP_INIT}, w = {.op = EDDY_OP_INIT};
    assert_int_equal(eddy_connect(loop, &c.op, cfd, (struct sockaddr *)&sa, sizeof sa, one_cb), 0);
    assert_int_equal(eddy_timer(loop, &t.op, 1, one_cb), 0);
    assert_int_equal(eddy_work(loop, &w.op, work_fn, one_cb), 0);
    ts_run_idle(loop, 3000);
    assert_int_equal(c.calls, 1);
    assert_int_equal(c.res, -ECONNREFUSED);
    assert_int_equal(t.calls, 1);
    assert_int_equal(t.res, -ETIMEDOUT);
    assert_int_equal(t.more_calls, 0);
    assert_int_equal(w.calls, 1);
    assert_int_equal(w.res, -EIO);
    /* The second of each is left alone. */
    assert_int_equal(eddy_timer(loop, &t.op, 1, one_cb), 0);
    assert_int_equal(eddy_work(loop, &w.op, work_fn, one_cb), 0);
    ts_run_idle(loop, 3000);
    assert_int_equal(t.calls, 2);
    assert_int_equal(t.res, 0);
    assert_int_equal(w.calls, 2);
    assert_int_equal(w.res, 42);
    close(cfd);
    close(lfd);
    loop_done(loop);
}

/* accept: EMFILE is delivered as the kernel's (EDDY_OP_MORE, accepting goes
 * on); the descriptor it replaced is closed. */
struct acc {
    struct eddy_op op;
    int fds[8], nfds, errs, last_err, finals, final_res;
};

static void acc_cb(struct eddy_op *op, int res)
{
    struct acc *a = eddy_container_of(op, struct acc, op);
    if (!(op->flags & EDDY_OP_MORE)) {
        a->finals++;
        a->final_res = res;
    } else if (res >= 0) {
        a->fds[a->nfds++] = res;
    } else {
        a->errs++;
        a->last_err = res;
    }
}

static void test_errno_accept(void **state)
{
    (void)state;
    struct logbuf b;
    struct eddy_loop *loop = loop_faults(&b, "seed=1;accept=EMFILE@nth:1");
    uint16_t port;
    int lfd = ts_listen(0, &port);
    struct acc a = {.op = EDDY_OP_INIT};
    assert_int_equal(eddy_accept(loop, &a.op, lfd, NULL, NULL, SOCK_CLOEXEC, acc_cb), 0);
    int c1 = ts_connect(port);
    TS_RUN_UNTIL(loop, a.errs == 1, 2000);
    assert_int_equal(a.last_err, -EMFILE);
    int c2 = ts_connect(port);
    TS_RUN_UNTIL(loop, a.nfds == 1, 2000);
    /* The first connection was closed by the fault: its peer reads EOF. */
    char ch;
    assert_int_equal(read(c1, &ch, 1), 0);
    assert_int_equal(eddy_cancel(loop, &a.op), 0);
    ts_run_idle(loop, 2000);
    assert_int_equal(a.finals, 1);
    assert_int_equal(a.final_res, -ECANCELED);
    assert_int_equal(a.errs, 1);
    assert_int_equal(a.nfds, 1);
    close(a.fds[0]);
    close(c1);
    close(c2);
    close(lfd);
    loop_done(loop);
}

/* A fatal errno ends a multishot accept: one final callback, no MORE. */
static void test_end_accept(void **state)
{
    (void)state;
    struct logbuf b;
    struct eddy_loop *loop = loop_faults(&b, "seed=1;accept=EINVAL@nth:1");
    uint16_t port;
    int lfd = ts_listen(0, &port);
    struct acc a = {.op = EDDY_OP_INIT};
    assert_int_equal(eddy_accept(loop, &a.op, lfd, NULL, NULL, SOCK_CLOEXEC, acc_cb), 0);
    int c1 = ts_connect(port);
    ts_run_idle(loop, 2000);
    assert_int_equal(a.finals, 1);
    assert_int_equal(a.final_res, -EINVAL);
    assert_int_equal(a.nfds, 0);
    assert_int_equal(a.errs, 0);
    assert_false(eddy_op_active(&a.op));
    char ch;
    assert_int_equal(read(c1, &ch, 1), 0);
    close(c1);
    close(lfd);
    loop_done(loop);
}

/* recv_multi ended by a fault: the buffer of that delivery is delivered
 * (no byte lost), then the final callback carries the errno. */
struct rm {
    struct eddy_op op;
    struct eddy_bufpool *pool;
    char got[4096];
    size_t n;
    int deliveries, finals, final_res;
    uint32_t final_flags;
};

static void rm_cb(struct eddy_op *op, int res)
{
    struct rm *r = eddy_container_of(op, struct rm, op);
    if (op->flags & EDDY_OP_BUFFER) {
        memcpy(r->got + r->n, op->buf, (size_t)res);
        r->n += (size_t)res;
        eddy_bufpool_put(r->pool, op->bid);
    }
    if (op->flags & EDDY_OP_MORE) {
        r->deliveries++;
        return;
    }
    r->finals++;
    r->final_res = res;
    r->final_flags = op->flags;
}

static void test_end_recv_multi(void **state)
{
    (void)state;
    struct logbuf b;
    struct eddy_loop *loop = loop_faults(&b, "seed=1;recv_multi=ENOBUFS@nth:1");
    struct rm r = {.op = EDDY_OP_INIT};
    assert_int_equal(eddy_bufpool_init(loop, &r.pool, 8, 256), 0);
    int fds[2];
    ts_tcp_pair(fds);
    uint8_t data[100];
    for (size_t i = 0; i < sizeof data; i++)
        data[i] = ts_pattern(i);
    assert_int_equal(write(fds[0], data, sizeof data), (int)sizeof data);
    assert_int_equal(eddy_recv_multi(loop, &r.op, fds[1], r.pool, rm_cb), 0);
    ts_run_idle(loop, 2000);
    assert_int_equal(r.deliveries, 1);
    assert_int_equal(r.finals, 1);
    assert_int_equal(r.final_res, -ENOBUFS);
    assert_int_equal(r.final_flags, 0);
    assert_int_equal(r.n, sizeof data);
    assert_memory_equal(r.got, data, sizeof data);
    assert_int_equal(eddy_bufpool_free_count(r.pool), 8);
    assert_int_equal(eddy_bufpool_destroy(r.pool), 0);
    close(fds[0]);
    close(fds[1]);
    loop_done(loop);
}

/* A repeating timer ended by a fault: that tick is delivered, then the
 * final callback carries the errno; a cancel by the caller in between
 * still ends it with -ECANCELED. */
struct rep {
    struct eddy_op op;
    struct eddy_loop *loop;
    int ticks, finals, final_res, cancel_at, cancel_rc;
};

static void rep_cb(struct eddy_op *op, int res)
{
    struct rep *r = eddy_container_of(op, struct rep, op);
    if (op->flags & EDDY_OP_MORE) {
        assert_int_equal(res, 0);
        if (++r->ticks == r->cancel_at)
            r->cancel_rc = eddy_cancel(r->loop, op);
        return;
    }
    r->finals++;
    r->final_res = res;
}

static void test_end_timer_repeat(void **state)
{
    (void)state;
    struct logbuf b;
    struct eddy_loop *loop = loop_faults(&b, "seed=1;timer=EIO@nth:2");
    struct rep r = {.op = EDDY_OP_INIT, .loop = loop, .cancel_rc = 1};
    assert_int_equal(eddy_timer_repeat(loop, &r.op, 2, rep_cb), 0);
    ts_run_idle(loop, 2000);
    assert_int_equal(r.ticks, 2);
    assert_int_equal(r.finals, 1);
    assert_int_equal(r.final_res, -EIO);

    assert_int_equal(eddy_fault_set(loop, "seed=1;timer=EIO@nth:2"), 0);
    struct rep c = {.op = EDDY_OP_INIT, .loop = loop, .cancel_at = 2, .cancel_rc = 1};
    assert_int_equal(eddy_timer_repeat(loop, &c.op, 2, rep_cb), 0);
    ts_run_idle(loop, 2000);
    assert_int_equal(c.ticks, 2);
    assert_int_equal(c.cancel_rc, 0);
    assert_int_equal(c.finals, 1);
    assert_int_equal(c.final_res, -ECANCELED);
    loop_done(loop);
}

/* recv_multi where it runs as single receives into pool buffers (5.10, or
 * no buffer ring): short:N asks each receive for N bytes. */
static void test_short_recv_multi(void **state)
{
    (void)state;
    struct logbuf b;
    struct eddy_loop *loop = loop_faults(&b, "seed=1;recv_multi=short:10@100%");
    if (ts_backend_is_epoll() || (eddy_loop_features(loop) & EDDY_FEAT_RECV_MULTI)) {
        loop_done(loop);
        skip(); /* multishot: the kernel takes no length; epoll: TODO */
    }
    struct rm r = {.op = EDDY_OP_INIT};
    assert_int_equal(eddy_bufpool_init(loop, &r.pool, 8, 256), 0);
    int fds[2];
    ts_tcp_pair(fds);
    uint8_t data[100];
    for (size_t i = 0; i < sizeof data; i++)
        data[i] = ts_pattern(i);
    assert_int_equal(write(fds[0], data, sizeof data), (int)sizeof data);
    assert_int_equal(eddy_recv_multi(loop, &r.op, fds[1], r.pool, rm_cb), 0);
    TS_RUN_UNTIL(loop, r.n == sizeof data, 2000);
    assert_int_equal(r.deliveries, 10);
    assert_memory_equal(r.got, data, sizeof data);
    assert_int_equal(eddy_cancel(loop, &r.op), 0);
    ts_run_idle(loop, 2000);
    assert_int_equal(r.finals, 1);
    assert_int_equal(r.final_res, -ECANCELED);
    assert_int_equal(eddy_bufpool_free_count(r.pool), 8);
    assert_int_equal(eddy_bufpool_destroy(r.pool), 0);
    close(fds[0]);
    close(fds[1]);
    loop_done(loop);
}

/* ---- short transfers ------------------------------------------------------ */

/* Reads exactly len bytes from fd and checks they are data's. */
static void expect_bytes(int fd, const uint8_t *data, size_t len)
{
    uint8_t *got = malloc(len);
    assert_non_null(got);
    size_t n = 0;
    while (n < len) {
        ssize_t k = read(fd, got + n, len - n);
        assert_true(k > 0);
        n += (size_t)k;
    }
    assert_memory_equal(got, data, len);
    free(got);
}

static void test_short_send(void **state)
{
    (void)state;
    struct logbuf b;
    struct eddy_loop *loop = loop_faults(&b, "seed=1;send=short:100@100%");
    int fds[2];
    ts_tcp_pair(fds);
    static uint8_t data[4096];
    for (size_t i = 0; i < sizeof data; i++)
        data[i] = ts_pattern(i);
    struct one s = {.op = EDDY_OP_INIT};
    assert_int_equal(eddy_send(loop, &s.op, fds[0], data, sizeof data, 0, one_cb), 0);
    ts_run_idle(loop, 5000);
    assert_int_equal(s.calls, 1);
    assert_int_equal(s.more_calls, 0);
    assert_int_equal(s.res, (int)sizeof data); /* the caller sees len */
    expect_bytes(fds[1], data, sizeof data); /* every byte, in order */
    /* Preps with more than 100 bytes left: 4096, 3996, ..., 196. */
    struct eddy_fault_stat st = rule_stat(loop, 0);
    assert_true(st.injected == 40);
    assert_true(st.events == 40);
    assert_non_null(strstr(b.text, "fault: seed=1 rule=1 \"send=short:100@100%\" kind=send "
                                   "label=- at=prep n=40\n"));
    close(fds[0]);
    close(fds[1]);
    loop_done(loop);
}

/* sendmsg has no one length: short:N sends at most N bytes of the first
 * non-empty iovec (the message's first bytes), the op advances its iovecs
 * and goes on, so the caller still sees one final callback with the total. */
static void test_short_sendmsg(void **state)
{
    (void)state;
    struct logbuf b;
    struct eddy_loop *loop = loop_faults(&b, "seed=1;sendmsg=short:100@100%");
    int fds[2];
    ts_tcp_pair(fds);
    static uint8_t data[4096];
    for (size_t i = 0; i < sizeof data; i++)
        data[i] = ts_pattern(i);
    struct iovec iov[3] = {{data, 1000}, {data + 1000, 0}, {data + 1000, 3096}};
    struct msghdr msg = {.msg_iov = iov, .msg_iovlen = 3};
    struct one s = {.op = EDDY_OP_INIT};
    assert_int_equal(eddy_sendmsg(loop, &s.op, fds[0], &msg, 0, one_cb), 0);
    ts_run_idle(loop, 5000);
    assert_int_equal(s.calls, 1);
    assert_int_equal(s.more_calls, 0);
    assert_int_equal(s.res, (int)sizeof data);
    expect_bytes(fds[1], data, sizeof data); /* every byte, in order */
    /* 10 cuts in the first iovec, 30 in the third; its last 96 bytes go
     * whole (nothing to shorten: not an event). */
    struct eddy_fault_stat st = rule_stat(loop, 0);
    assert_int_equal(st.injected, 40);
    assert_int_equal(st.events, 40);
    close(fds[0]);
    close(fds[1]);
    loop_done(loop);
}

static void test_short_recv(void **state)
{
    (void)state;
    struct logbuf b;
    struct eddy_loop *loop = loop_faults(&b, "seed=1;recv=short:7@100%");
    int fds[2];
    ts_tcp_pair(fds);
    static uint8_t data[1000], got[1000];
    for (size_t i = 0; i < sizeof data; i++)
        data[i] = ts_pattern(i);
    assert_int_equal(write(fds[0], data, sizeof data), (int)sizeof data);
    size_t n = 0;
    int recvs = 0;
    struct one r = {.op = EDDY_OP_INIT};
    while (n < sizeof data) {
        assert_int_equal(eddy_recv(loop, &r.op, fds[1], got + n, 256, 0, one_cb), 0);
        ts_run_idle(loop, 2000);
        assert_int_equal(r.calls, ++recvs);
        assert_true(r.res > 0 && r.res <= 7);
        n += (size_t)r.res;
    }
    assert_int_equal(n, sizeof data);
    assert_memory_equal(got, data, sizeof data); /* nothing lost, nothing invented */
    assert_int_equal(recvs, 143);                 /* 142 * 7 + 6 */
    struct eddy_fault_stat st = rule_stat(loop, 0);
    assert_true(st.injected == 143);
    close(fds[0]);
    close(fds[1]);
    loop_done(loop);
}

/* read and write on a pipe: short:N asks for fewer bytes (the caller sees a
 * short result, which their contract allows); an error on read comes before
 * the kernel reads, so the bytes stay in the pipe. */
static void test_read_write(void **state)
{
    (void)state;
    struct logbuf b;
    struct eddy_loop *loop = loop_faults(&b, "seed=1;write=short:3@nth:1;read=EIO@nth:1");
    int p[2];
    assert_int_equal(pipe(p), 0);
    struct one w = {.op = EDDY_OP_INIT}, r = {.op = EDDY_OP_INIT};
    assert_int_equal(eddy_write(loop, &w.op, p[1], "abcdefghij", 10, (uint64_t)-1, one_cb), 0);
    ts_run_idle(loop, 2000);
    assert_int_equal(w.calls, 1);
    assert_int_equal(w.res, 3);
    assert_int_equal(eddy_write(loop, &w.op, p[1], "defghij", 7, (uint64_t)-1, one_cb), 0);
    ts_run_idle(loop, 2000);
    assert_int_equal(w.res, 7);
    char buf[16];
    assert_int_equal(eddy_read(loop, &r.op, p[0], buf, sizeof buf, (uint64_t)-1, one_cb), 0);
    ts_run_idle(loop, 2000);
    assert_int_equal(r.calls, 1);
    assert_int_equal(r.res, -EIO);
    assert_int_equal(eddy_read(loop, &r.op, p[0], buf, sizeof buf, (uint64_t)-1, one_cb), 0);
    ts_run_idle(loop, 2000);
    assert_int_equal(r.calls, 2);
    assert_int_equal(r.res, 10);
    assert_memory_equal(buf, "abcdefghij", 10);
    close(p[0]);
    close(p[1]);
    loop_done(loop);
}

/* ---- delay ---------------------------------------------------------------- */

static void test_delay(void **state)
{
    (void)state;
    struct logbuf b;
    struct eddy_loop *loop = loop_faults(&b, "seed=1;close=delay:60@nth:1;close=delay:60@nth:2");
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct one c = {.op = EDDY_OP_INIT};
    int64_t t0 = ts_now_ms();
    assert_int_equal(eddy_close(loop, &c.op, fd, one_cb), 0);
    ts_run_idle(loop, 3000);
    assert_int_equal(c.calls, 1);
    assert_int_equal(c.res, 0);
    assert_true(c.at_ms - t0 >= 60);
    /* Cancelled while held: the real result already won, and comes late. */
    fd = socket(AF_INET, SOCK_STREAM, 0);
    t0 = ts_now_ms();
    assert_int_equal(eddy_close(loop, &c.op, fd, one_cb), 0);
    TS_RUN_UNTIL(loop, ts_now_ms() - t0 >= 20, 2000);
    assert_int_equal(c.calls, 1);
    assert_true(eddy_op_active(&c.op));
    /* The held final needs the rules that hold it. */
    assert_int_equal(eddy_fault_set(loop, "seed=1;timer=EIO@1%"), -EBUSY);
    assert_int_equal(eddy_fault_stats(loop, NULL, 0), 2);
    assert_int_equal(eddy_cancel(loop, &c.op), 0);
    ts_run_idle(loop, 3000);
    assert_int_equal(c.calls, 2);
    assert_int_equal(c.res, 0);
    assert_true(c.at_ms - t0 >= 60);
    assert_true(rule_stat(loop, 0).injected == 1);
    assert_true(rule_stat(loop, 1).injected == 1);
    loop_done(loop);
}

/* ---- submission ----------------------------------------------------------- */

static void test_fail_start(void **state)
{
    (void)state;
    struct logbuf b;
    struct eddy_loop *loop = loop_faults(&b, "seed=1;recv=fail:ENOMEM@nth:2;work=fail:EAGAIN@nth:1");
    int fds[2];
    ts_tcp_pair(fds);
    char buf[8];
    struct one r1 = {.op = EDDY_OP_INIT}, r2 = {.op = EDDY_OP_INIT}, w = {.op = EDDY_OP_INIT};
    assert_int_equal(eddy_recv(loop, &r1.op, fds[1], buf, 4, 0, one_cb), 0);
    assert_int_equal(eddy_recv(loop, &r2.op, fds[1], buf + 4, 4, 0, one_cb), -ENOMEM);
    assert_false(eddy_op_active(&r2.op));
    assert_int_equal(eddy_work(loop, &w.op, work_fn, one_cb), -EAGAIN);
    assert_false(eddy_op_active(&w.op));
    assert_int_equal(eddy_cancel(loop, &r1.op), 0);
    ts_run_idle(loop, 2000);
    assert_int_equal(r1.calls, 1);
    assert_int_equal(r1.res, -ECANCELED);
    assert_int_equal(r2.calls + r2.more_calls, 0); /* no callback */
    assert_int_equal(w.calls + w.more_calls, 0);
    close(fds[0]);
    close(fds[1]);
    loop_done(loop);
}

/* ---- triggers --------------------------------------------------------------- */

static int run_timers(struct eddy_loop *loop, int n, int *results)
{
    struct one t = {.op = EDDY_OP_INIT};
    for (int i = 0; i < n; i++) {
        assert_int_equal(eddy_timer(loop, &t.op, 0, one_cb), 0);
        ts_run_idle(loop, 2000);
        assert_int_equal(t.calls, i + 1);
        results[i] = t.res;
    }
    return t.calls;
}

static void test_nth_and_cap(void **state)
{
    (void)state;
    struct logbuf b;
    int res[6];
    struct eddy_loop *loop = loop_faults(&b, "seed=1;timer=EIO@nth:3");
    run_timers(loop, 6, res);
    for (int i = 0; i < 6; i++)
        assert_int_equal(res[i], i == 2 ? -EIO : 0);
    struct eddy_fault_stat st = rule_stat(loop, 0);
    assert_true(st.events == 6 && st.injected == 1);

    assert_int_equal(eddy_fault_set(loop, "seed=1;timer=EIO@100%x2"), 0);
    run_timers(loop, 6, res);
    for (int i = 0; i < 6; i++)
        assert_int_equal(res[i], i < 2 ? -EIO : 0);
    st = rule_stat(loop, 0);
    assert_true(st.events == 6 && st.injected == 2);
    loop_done(loop);
}

static void det_run(uint64_t seed, struct logbuf *b, int *res)
{
    char spec[128];
    snprintf(spec, sizeof spec, "seed=%llu;timer=EIO@30%%;timer=EPIPE@20%%x3",
             (unsigned long long)seed);
    struct eddy_loop *loop = loop_faults(b, spec);
    run_timers(loop, 40, res);
    loop_done(loop);
}

static void test_determinism(void **state)
{
    (void)state;
    static struct logbuf a, b, c;
    int ra[40], rb[40], rc[40];
    det_run(42, &a, ra);
    det_run(42, &b, rb);
    det_run(43, &c, rc);
    assert_true(a.len > 0);
    assert_string_equal(a.text, b.text); /* same seed, same faults */
    assert_memory_equal(ra, rb, sizeof ra);
    assert_string_not_equal(a.text, c.text);
}

/* ---- chaos: an echo over loopback, many seeds ------------------------------ */

/* Clients send a pattern and read their echo; the server accepts, receives
 * with recv_multi and sends back what it got.  Under a mix of faults, for
 * each seed: every client got its bytes in order or saw its connection end
 * (never a wrong byte), every start had exactly one final callback, every
 * pool buffer came back, nothing stayed active, no descriptor leaked (the
 * teardown counts them).  A failure names the spec that replays it. */
#define CH_CLIENTS 8
#define CH_BYTES 4096

struct ch_client {
    struct eddy_op send, recv;
    int fd;
    uint8_t got[CH_BYTES];
    size_t n;
    bool failed, closed;
};

struct ch_conn {
    struct eddy_op recv, send;
    int fd;
    uint8_t out[CH_BYTES];
    size_t out_len, out_off;
    bool recv_done, closed, broken;
};

static struct chaos {
    struct eddy_loop *loop;
    struct eddy_bufpool *pool;
    struct eddy_op acc;
    uint8_t pattern[CH_BYTES];
    struct ch_client cl[CH_CLIENTS];
    struct ch_conn conn[CH_CLIENTS];
    int lfd, nconn, clients_closed, conns_closed;
    long starts, finals;
    int wrong_bytes, overflow;
} ch;

static void ch_start(int rc)
{
    assert_int_equal(rc, 0); /* no fail: effect in the mix */
    ch.starts++;
}

static void srv_send_cb(struct eddy_op *op, int res);

static void srv_maybe_close(struct ch_conn *c)
{
    if (c->recv_done && !eddy_op_active(&c->send) && !c->closed) {
        close(c->fd);
        c->closed = true;
        ch.conns_closed++;
    }
}

static void srv_pump(struct ch_conn *c)
{
    /* After a failed send the connection is broken (eddy_send: its bytes
     * may have gone out or not): never send again on it. */
    if (!c->recv_done && !c->broken && !eddy_op_active(&c->send) && c->out_off < c->out_len)
        ch_start(eddy_send(ch.loop, &c->send, c->fd, c->out + c->out_off,
                           c->out_len - c->out_off, 0, srv_send_cb));
}

static void srv_recv_cb(struct eddy_op *op, int res)
{
    struct ch_conn *c = eddy_container_of(op, struct ch_conn, recv);
    if (op->flags & EDDY_OP_BUFFER) {
        if (c->out_len + (size_t)res > sizeof c->out)
            ch.overflow++;
        else
            memcpy(c->out + c->out_len, op->buf, (size_t)res);
        c->out_len += (size_t)res;
        eddy_bufpool_put(ch.pool, op->bid);
    }
    if (op->flags & EDDY_OP_MORE) {
        srv_pump(c);
        return;
    }
    ch.finals++;
    c->recv_done = true;
    if (eddy_op_active(&c->send))
        eddy_cancel(ch.loop, &c->send);
    srv_maybe_close(c);
}

static void srv_send_cb(struct eddy_op *op, int res)
{
    struct ch_conn *c = eddy_container_of(op, struct ch_conn, send);
    ch.finals++;
    if (res > 0) {
        c->out_off += (size_t)res;
        srv_pump(c);
    } else {
        c->broken = true;
        if (eddy_op_active(&c->recv))
            eddy_cancel(ch.loop, &c->recv);
    }
    srv_maybe_close(c);
}

static void ch_acc_cb(struct eddy_op *op, int res)
{
    (void)op;
    if (!(op->flags & EDDY_OP_MORE)) {
        ch.finals++;
        /* Ended (a fatal error, or our cancel): the connections still in
         * the backlog are reset, as a server that stops listening does. */
        close(ch.lfd);
        ch.lfd = -1;
        return;
    }
    if (res < 0)
        return; /* EMFILE: the kernel's (or the fault's) back-pressure */
    if (ch.nconn == CH_CLIENTS) {
        close(res);
        return;
    }
    struct ch_conn *c = &ch.conn[ch.nconn++];
    c->fd = res;
    ch_start(eddy_recv_multi(ch.loop, &c->recv, res, ch.pool, srv_recv_cb));
}

static void cl_recv_cb(struct eddy_op *op, int res);

static void cl_maybe_close(struct ch_client *c)
{
    if (!eddy_op_active(&c->send) && !eddy_op_active(&c->recv) && !c->closed) {
        close(c->fd);
        c->closed = true;
        ch.clients_closed++;
    }
}

static void cl_send_cb(struct eddy_op *op, int res)
{
    struct ch_client *c = eddy_container_of(op, struct ch_client, send);
    ch.finals++;
    if (res != CH_BYTES) {
        assert_true(res < 0); /* a send is whole or an error */
        c->failed = true;
        if (eddy_op_active(&c->recv))
            eddy_cancel(ch.loop, &c->recv);
    }
    cl_maybe_close(c);
}

static void cl_recv_cb(struct eddy_op *op, int res)
{
    struct ch_client *c = eddy_container_of(op, struct ch_client, recv);
    ch.finals++;
    if (res > 0) {
        if (memcmp(c->got + c->n, ch.pattern + c->n, (size_t)res) != 0)
            ch.wrong_bytes++;
        c->n += (size_t)res;
        if (c->n < CH_BYTES && !c->failed)
            ch_start(eddy_recv(ch.loop, &c->recv, c->fd, c->got + c->n, CH_BYTES - c->n, 0,
                               cl_recv_cb));
    } else {
        c->failed = true;
        if (eddy_op_active(&c->send))
            eddy_cancel(ch.loop, &c->send);
    }
    cl_maybe_close(c);
}

static void chaos_one(const char *spec, uint64_t *injected)
{
    memset(&ch, 0, sizeof ch);
    for (size_t i = 0; i < CH_BYTES; i++)
        ch.pattern[i] = ts_pattern(i);
    struct logbuf *b = malloc(sizeof *b);
    assert_non_null(b);
    ch.loop = loop_faults(b, spec);
    assert_int_equal(eddy_bufpool_init(ch.loop, &ch.pool, 16, 512), 0);
    uint16_t port;
    ch.lfd = ts_listen(0, &port);
    ch_start(eddy_accept(ch.loop, &ch.acc, ch.lfd, NULL, NULL, SOCK_CLOEXEC, ch_acc_cb));
    for (int i = 0; i < CH_CLIENTS; i++) {
        struct ch_client *c = &ch.cl[i];
        c->fd = ts_connect(port);
        ch_start(eddy_send(ch.loop, &c->send, c->fd, ch.pattern, CH_BYTES, 0, cl_send_cb));
        ch_start(eddy_recv(ch.loop, &c->recv, c->fd, c->got, CH_BYTES, 0, cl_recv_cb));
    }
    int64_t end = ts_now_ms() + 10000;
    while (ch.clients_closed < CH_CLIENTS || ch.conns_closed < ch.nconn) {
        if (ts_now_ms() > end)
            fail_msg("hung: clients closed %d/%d, server conns closed %d/%d; replay: "
                     "EDDY_FAULTS=\"%s\"", ch.clients_closed, CH_CLIENTS, ch.conns_closed,
                     ch.nconn, spec);
        /* NOWAIT: a hang must reach the check above, not sleep in the loop. */
        assert_true(eddy_loop_run(ch.loop, EDDY_RUN_NOWAIT) >= 0);
        usleep(20);
    }
    if (eddy_op_active(&ch.acc))
        assert_int_equal(eddy_cancel(ch.loop, &ch.acc), 0);
    ts_run_idle(ch.loop, 5000);
    assert_int_equal(ch.lfd, -1);
    if (ch.wrong_bytes || ch.overflow || ch.starts != ch.finals)
        fail_msg("wrong bytes %d, overflow %d, starts %ld finals %ld; replay: EDDY_FAULTS=\"%s\"",
                 ch.wrong_bytes, ch.overflow, ch.starts, ch.finals, spec);
    for (int i = 0; i < CH_CLIENTS; i++)
        if (!ch.cl[i].failed && ch.cl[i].n != CH_BYTES)
            fail_msg("client %d: %zu bytes and no error; replay: EDDY_FAULTS=\"%s\"", i,
                     ch.cl[i].n, spec);
    assert_int_equal(eddy_bufpool_free_count(ch.pool), 16);
    struct eddy_fault_stat st[8];
    unsigned n = eddy_fault_stats(ch.loop, st, 8);
    for (unsigned i = 0; i < n && i < 8; i++)
        *injected += st[i].injected;
    assert_int_equal(eddy_bufpool_destroy(ch.pool), 0);
    loop_done(ch.loop);
    free(b);
}

static void test_chaos_echo(void **state)
{
    (void)state;
    uint64_t injected = 0;
    const char *seeds = getenv("EDDY_CHAOS_SEEDS");
    unsigned nseeds = seeds ? (unsigned)strtoul(seeds, NULL, 10) : 50;
    for (unsigned seed = 1; seed <= nseeds; seed++) {
        char spec[512];
        const char *rules = getenv("EDDY_CHAOS_RULES"); /* to replay or narrow down */
        snprintf(spec, sizeof spec, "seed=%u;%s", seed,
                 rules ? rules
                       : "recv=ECONNRESET@3%;send=short:7@20%;send=EPIPE@2%;"
                         "accept=EMFILE@5%x2;recv_multi=ENOBUFS@3%;all=delay:2@5%;"
                         "recv=short:100@20%;recv_multi=short:64@20%");
        chaos_one(spec, &injected);
    }
    print_message("chaos: %u seeds, %llu faults injected\n", nseeds,
                  (unsigned long long)injected);
    assert_true(injected >= nseeds); /* the mix does bite */
}

/* The Seastar method on the same echo: fail the 1st, the 2nd, ... Kth event
 * of one kind until a run has no Kth event left; every run must keep the
 * invariants. */
static void test_exhaustive_echo(void **state)
{
    (void)state;
    static const char *const rules[] = {"recv=ECONNRESET", "send=EPIPE", "accept=EINVAL",
                                        "accept=EMFILE", "recv_multi=ENOBUFS"};
    for (size_t i = 0; i < sizeof rules / sizeof rules[0]; i++) {
        unsigned k;
        for (k = 1; k <= 1000; k++) {
            char spec[128];
            snprintf(spec, sizeof spec, "seed=1;%s@nth:%u", rules[i], k);
            uint64_t injected = 0;
            chaos_one(spec, &injected);
            if (injected == 0)
                break; /* fewer than k events: each has failed once */
        }
        print_message("exhaustive: %s failed at each of its %u events\n", rules[i], k - 1);
        assert_true(k > 1 && k <= 1000);
    }
}

/* ---- off ------------------------------------------------------------------ */

static void test_off(void **state)
{
    (void)state;
    struct logbuf b;
    struct eddy_loop *loop = loop_with_log(&b);
    assert_int_equal(eddy_fault_set(loop, "seed=1;recv=ECONNRESET@100%"), 0);
    assert_int_equal(eddy_fault_set(loop, NULL), 0);
    int fds[2];
    ts_tcp_pair(fds);
    assert_int_equal(write(fds[0], "abcdef", 6), 6);
    char buf[16];
    struct one r = {.op = EDDY_OP_INIT};
    assert_int_equal(eddy_recv(loop, &r.op, fds[1], buf, sizeof buf, 0, one_cb), 0);
    ts_run_idle(loop, 2000);
    assert_int_equal(r.calls, 1);
    assert_int_equal(r.res, 6);
    assert_int_equal(b.len, 0); /* no injection logged */
    assert_int_equal(eddy_fault_stats(loop, NULL, 0), 0);
    close(fds[0]);
    close(fds[1]);
    ts_loop_free(loop);
}

#define T(f) cmocka_unit_test_setup_teardown(f, ts_fd_setup, ts_fd_teardown)

int main(void)
{
    unsetenv("EDDY_FAULTS");
    const struct CMUnitTest tests[] = {
        T(test_parse_valid),
        T(test_parse_malformed),
        T(test_env),
        T(test_errno_recv),
        T(test_errno_send),
        T(test_errno_connect_timer_work),
        T(test_errno_accept),
        T(test_end_accept),
        T(test_end_recv_multi),
        T(test_end_timer_repeat),
        T(test_short_send),
        T(test_short_sendmsg),
        T(test_short_recv_multi),
        T(test_short_recv),
        T(test_read_write),
        T(test_delay),
        T(test_fail_start),
        T(test_nth_and_cap),
        T(test_determinism),
        T(test_off),
        T(test_chaos_echo),
        T(test_exhaustive_echo),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
