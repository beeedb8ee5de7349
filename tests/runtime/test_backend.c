/* Choosing the backend (EDDY_BACKEND, the loop option, auto and its
 * fallback under a seccomp filter that refuses io_uring as Docker's default
 * profile does), and what only the epoll backend does: descriptors closed
 * with ops parked on them, one registration per descriptor, counters. */
#define _GNU_SOURCE
#include "testsupport.h"

#include <errno.h>
#include <fcntl.h>
#include <linux/audit.h>
#include <linux/filter.h>
#include <linux/seccomp.h>
#include <poll.h>
#include <signal.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

/* ---- the log hook ----------------------------------------------------- */

static char last_warn[1024];
static int nwarn;

static void capture_log(void *ud, int level, const char *msg)
{
    (void)ud;
    if (level == EDDY_LOG_WARN) {
        nwarn++;
        snprintf(last_warn, sizeof last_warn, "%s", msg);
    }
}

static struct eddy_loop *loop_with(const char *backend, bool ignore_env)
{
    struct eddy_loop_options o;
    eddy_loop_options_init(&o);
    o.backend = backend;
    o.ignore_env = ignore_env;
    o.log = capture_log;
    return ts_loop_new(&o);
}

static void expect_backend(const char *env, const char *opt, bool ignore_env,
                           const char *want, int warnings)
{
    const char *saved = getenv("EDDY_BACKEND");
    char keep[64] = "";
    if (saved)
        snprintf(keep, sizeof keep, "%s", saved);
    if (env)
        assert_int_equal(setenv("EDDY_BACKEND", env, 1), 0);
    else
        unsetenv("EDDY_BACKEND");
    nwarn = 0;
    last_warn[0] = 0;
    struct eddy_loop *loop = loop_with(opt, ignore_env);
    assert_string_equal(eddy_loop_backend(loop), want);
    assert_int_equal(nwarn, warnings);
    ts_loop_free(loop);
    if (saved)
        setenv("EDDY_BACKEND", keep, 1);
    else
        unsetenv("EDDY_BACKEND");
}

/* Where this process may use io_uring, auto means io_uring (the fallback
 * is tested below, in a child whose io_uring is refused). */
static void need_io_uring(void)
{
    struct eddy_loop_options o;
    eddy_loop_options_init(&o);
    o.backend = "io_uring";
    o.ignore_env = 1;
    struct eddy_loop *loop = NULL;
    int rc = eddy_loop_init(&loop, &o);
    if (rc < 0) {
        print_message("    io_uring refused here (%s): skipped\n", eddy_strerror(rc));
        skip();
    }
    assert_int_equal(eddy_loop_destroy(loop), 0);
}

static void test_select_env(void **state)
{
    (void)state;
    need_io_uring();
    expect_backend("epoll", NULL, false, "epoll", 0);
    expect_backend("io_uring", NULL, false, "io_uring", 0);
    expect_backend("auto", NULL, false, "io_uring", 0);
    expect_backend("", NULL, false, "io_uring", 0);
    expect_backend(NULL, NULL, false, "io_uring", 0);
    /* an unknown name: one warning that names it, then auto */
    expect_backend("kqueue", NULL, false, "io_uring", 1);
    assert_non_null(strstr(last_warn, "kqueue"));
    assert_non_null(strstr(last_warn, "auto"));
    /* ignore_env: the variable has no effect */
    expect_backend("epoll", NULL, true, "io_uring", 0);
}

static void test_select_option(void **state)
{
    (void)state;
    need_io_uring();
    /* the option wins over the variable */
    expect_backend("io_uring", "epoll", false, "epoll", 0);
    expect_backend("epoll", "io_uring", false, "io_uring", 0);
    expect_backend("epoll", "auto", false, "io_uring", 0);
    expect_backend(NULL, "epoll", true, "epoll", 0);
    expect_backend(NULL, "bogus", true, "io_uring", 1);
    assert_non_null(strstr(last_warn, "bogus"));
}

/* ---- io_uring refused (as Docker's default seccomp profile does) ------- */

/* io_uring_setup, io_uring_enter and io_uring_register fail with err. */
static int deny_io_uring(int err)
{
    struct sock_filter f[] = {
        BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, arch)),
        BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, AUDIT_ARCH_X86_64, 1, 0),
        BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW),
        BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, nr)),
        BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, __NR_io_uring_setup, 3, 0),
        BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, __NR_io_uring_enter, 2, 0),
        BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, __NR_io_uring_register, 1, 0),
        BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW),
        BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ERRNO | ((unsigned)err & SECCOMP_RET_DATA)),
    };
    struct sock_fprog prog = {.len = sizeof f / sizeof f[0], .filter = f};
    if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0)
        return -errno;
    if (prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, &prog) != 0)
        return -errno;
    return 0;
}

enum { C_OK, C_FILTER = 20, C_FORCED, C_AUTO, C_WARN, C_RUN, C_ENV };

static int rt_got, rt_sent;
static char rt_buf[16];

static void rt_recv_cb(struct eddy_op *op, int res)
{
    (void)op;
    rt_got = res;
}

static void rt_send_cb(struct eddy_op *op, int res)
{
    (void)op;
    rt_sent = res;
}

/* A loopback round trip on loop: a send one way, a recv the other. */
static int roundtrip(struct eddy_loop *loop)
{
    int sv[2];
    if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) != 0)
        return -1;
    struct eddy_op r = EDDY_OP_INIT, s = EDDY_OP_INIT;
    rt_got = rt_sent = -1000;
    if (eddy_recv(loop, &r, sv[1], rt_buf, sizeof rt_buf, 0, rt_recv_cb) != 0 ||
        eddy_send(loop, &s, sv[0], "hello", 5, 0, rt_send_cb) != 0)
        return -1;
    int rc = eddy_loop_run(loop, EDDY_RUN_DEFAULT);
    close(sv[0]);
    close(sv[1]);
    return rc == 0 && rt_got == 5 && rt_sent == 5 && !memcmp(rt_buf, "hello", 5) ? 0 : -1;
}

static int refused_child(int err)
{
    if (deny_io_uring(err) != 0)
        return C_FILTER;
    struct eddy_loop_options o;
    eddy_loop_options_init(&o);
    o.log = capture_log;
    o.ignore_env = 1;
    /* forced: today's clear error, no loop, no warning */
    o.backend = "io_uring";
    struct eddy_loop *loop = NULL;
    nwarn = 0;
    if (eddy_loop_init(&loop, &o) != -err || loop || nwarn != 0)
        return C_FORCED;
    /* auto: epoll, one warning with the reason, and it serves */
    o.backend = NULL;
    if (eddy_loop_init(&loop, &o) != 0 || strcmp(eddy_loop_backend(loop), "epoll"))
        return C_AUTO;
    if (nwarn != 1 || !strstr(last_warn, eddy_loop_init_explain(-err)) ||
        !strstr(last_warn, "epoll") || !strstr(last_warn, strerror(err)))
        return C_WARN;
    if (roundtrip(loop) != 0 || eddy_loop_destroy(loop) != 0)
        return C_RUN;
    /* the same through the environment */
    o.ignore_env = 0;
    setenv("EDDY_BACKEND", "auto", 1);
    nwarn = 0;
    if (eddy_loop_init(&loop, &o) != 0 || strcmp(eddy_loop_backend(loop), "epoll") ||
        nwarn != 1 || eddy_loop_destroy(loop) != 0)
        return C_ENV;
    setenv("EDDY_BACKEND", "io_uring", 1);
    if (eddy_loop_init(&loop, &o) != -err)
        return C_ENV;
    return C_OK;
}

static void run_refused(int err)
{
    fflush(NULL);
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0)
        _exit(refused_child(err));
    int status = 0;
    int64_t end = ts_now_ms() + 10000;
    pid_t w;
    while ((w = waitpid(pid, &status, WNOHANG)) == 0) {
        if (ts_now_ms() > end) {
            kill(pid, SIGKILL);
            waitpid(pid, &status, 0);
            fail_msg("child for %s hung", strerror(err));
        }
        usleep(2000);
    }
    assert_int_equal(w, pid);
    assert_true(WIFEXITED(status));
    if (WEXITSTATUS(status) != C_OK)
        fail_msg("child for %s: exit code %d", strerror(err), WEXITSTATUS(status));
}

static void test_fallback_eperm(void **state)
{
    (void)state;
    run_refused(EPERM);
}

static void test_fallback_enosys(void **state)
{
    (void)state;
    run_refused(ENOSYS);
}

static void test_fallback_eacces(void **state)
{
    (void)state;
    run_refused(EACCES);
}

/* ---- what only epoll does -------------------------------------------- */

struct rec {
    struct eddy_op op;
    int calls, res;
    char buf[8];
};

static void rec_cb(struct eddy_op *op, int res)
{
    struct rec *r = eddy_container_of(op, struct rec, op);
    r->calls++;
    r->res = res;
}

/* eddy_close on a descriptor with ops parked on it: they end with
 * -ECANCELED (on io_uring they would wait on a file nobody can reach),
 * then the close's own callback. */
static void test_epoll_close_with_parked_ops(void **state)
{
    (void)state;
    struct eddy_loop *loop = loop_with("epoll", true);
    int fds[2];
    ts_tcp_pair(fds);
    struct rec r1, r2, s, c;
    memset(&r1, 0, sizeof r1);
    memset(&r2, 0, sizeof r2);
    memset(&s, 0, sizeof s);
    memset(&c, 0, sizeof c);
    assert_int_equal(eddy_recv(loop, &r1.op, fds[1], r1.buf, 8, 0, rec_cb), 0);
    eddy_op_set_deadline(loop, &r2.op, 10000);
    assert_int_equal(eddy_recv(loop, &r2.op, fds[1], r2.buf, 8, 0, rec_cb), 0);
    assert_int_equal(eddy_poll(loop, &s.op, fds[1], POLLIN, rec_cb), 0);
    ts_run_for(loop, 5);
    struct eddy_loop_stats st;
    eddy_loop_stats(loop, &st);
    /* the wake-up read, 3 parked ops, and r2's deadline */
    assert_int_equal(st.inflight, 5);
    assert_int_equal(r1.calls + r2.calls + s.calls, 0);
    assert_int_equal(eddy_close(loop, &c.op, fds[1], rec_cb), 0);
    assert_int_equal(r1.calls + r2.calls + s.calls + c.calls, 0); /* never from a starter */
    ts_run_idle(loop, 2000);
    assert_int_equal(r1.calls, 1);
    assert_int_equal(r1.res, -ECANCELED);
    assert_int_equal(r2.calls, 1);
    assert_int_equal(r2.res, -ECANCELED);
    assert_int_equal(s.calls, 1);
    assert_int_equal(s.res, -ECANCELED);
    assert_int_equal(c.calls, 1);
    assert_int_equal(c.res, 0);
    eddy_loop_stats(loop, &st);
    assert_int_equal(st.inflight, 1);
    close(fds[0]);
    ts_loop_free(loop);
}

/* A descriptor closed outside eddy and its number reused: the new one is
 * served (each park asks epoll to add the descriptor again). */
static void test_epoll_fd_reuse(void **state)
{
    (void)state;
    struct eddy_loop *loop = loop_with("epoll", true);
    for (int round = 0; round < 3; round++) {
        int fds[2];
        ts_tcp_pair(fds);
        struct rec r;
        memset(&r, 0, sizeof r);
        assert_int_equal(eddy_recv(loop, &r.op, fds[1], r.buf, 8, 0, rec_cb), 0);
        ts_run_for(loop, 2);
        assert_int_equal(write(fds[0], "x", 1), 1);
        TS_RUN_UNTIL(loop, r.calls == 1, 2000);
        assert_int_equal(r.res, 1);
        assert_int_equal(r.buf[0], 'x');
        close(fds[0]);
        close(fds[1]);
    }
    ts_loop_free(loop);
}

/* A descriptor number nobody has: the kernel's -EBADF, and the per-fd
 * table is not sized by it. */
static void test_epoll_bogus_fd(void **state)
{
    (void)state;
    struct eddy_loop *loop = loop_with("epoll", true);
    struct rec r, m, p;
    memset(&r, 0, sizeof r);
    memset(&m, 0, sizeof m);
    memset(&p, 0, sizeof p);
    struct eddy_bufpool *pool;
    assert_int_equal(eddy_bufpool_init(loop, &pool, 4, 64), 0);
    int bogus = 1 << 29;
    assert_int_equal(eddy_recv(loop, &r.op, bogus, r.buf, 8, 0, rec_cb), 0);
    assert_int_equal(eddy_recv_multi(loop, &m.op, bogus, pool, rec_cb), 0);
    assert_int_equal(eddy_poll(loop, &p.op, bogus, POLLIN, rec_cb), 0);
    ts_run_idle(loop, 2000);
    assert_int_equal(r.calls, 1);
    assert_int_equal(r.res, -EBADF);
    assert_int_equal(m.calls, 1);
    assert_int_equal(m.res, -EBADF);
    assert_int_equal(p.calls, 1);
    assert_int_equal(p.res, -EBADF);
    assert_int_equal(eddy_bufpool_destroy(pool), 0);
    ts_loop_free(loop);
}

/* eddy_post_to between loops on different backends: no MSG_RING between
 * them (an epoll loop has no ring), the eventfd path instead. */
static void test_post_to_across_backends(void **state)
{
    (void)state;
    need_io_uring();
    struct eddy_loop *u = loop_with("io_uring", true);
    struct eddy_loop *e = loop_with("epoll", true);
    struct rec a, b;
    memset(&a, 0, sizeof a);
    memset(&b, 0, sizeof b);
    eddy_post_to(u, e, &a.op, rec_cb);
    eddy_post_to(e, u, &b.op, rec_cb);
    assert_true(eddy_loop_run(u, EDDY_RUN_NOWAIT) >= 0); /* what u queued goes out */
    TS_RUN_UNTIL(e, a.calls == 1, 2000);
    TS_RUN_UNTIL(u, b.calls == 1, 2000);
    ts_run_for(e, 2);
    ts_run_for(u, 2);
    assert_int_equal(a.calls, 1);
    assert_int_equal(a.res, 0);
    assert_int_equal(b.calls, 1);
    assert_int_equal(b.res, 0);
    ts_loop_free(e);
    ts_loop_free(u);
}

/* Timers never fire early, whatever the rounding of the wait. */
static void test_epoll_timer_never_early(void **state)
{
    (void)state;
    struct eddy_loop *loop = loop_with("epoll", true);
    static const uint64_t ns[] = {1, 300000, 1500000, 2700000, 10000000};
    for (size_t i = 0; i < sizeof ns / sizeof ns[0]; i++) {
        struct rec t;
        memset(&t, 0, sizeof t);
        struct timespec a, b;
        clock_gettime(CLOCK_MONOTONIC, &a);
        assert_int_equal(eddy_timer_ns(loop, &t.op, ns[i], rec_cb), 0);
        assert_int_equal(eddy_loop_run(loop, EDDY_RUN_DEFAULT), 0);
        clock_gettime(CLOCK_MONOTONIC, &b);
        int64_t took = (b.tv_sec - a.tv_sec) * 1000000000LL + (b.tv_nsec - a.tv_nsec);
        assert_int_equal(t.calls, 1);
        assert_int_equal(t.res, 0);
        assert_true(took >= (int64_t)ns[i]);
    }
    ts_loop_free(loop);
}

/* Stats on epoll: no SQ or CQ to fill; sqes count system calls for ops,
 * submit_calls the waits. */
static void test_epoll_stats(void **state)
{
    (void)state;
    struct eddy_loop *loop = loop_with("epoll", true);
    assert_int_equal(eddy_loop_features(loop), 0);
    assert_int_equal(eddy_loop_setup_flags(loop), 0);
    struct eddy_loop_stats st0, st1;
    eddy_loop_stats(loop, &st0);
    assert_true(roundtrip(loop) == 0);
    eddy_loop_stats(loop, &st1);
    assert_true(st1.sqes - st0.sqes >= 2);        /* the recv (twice: EAGAIN first) and the send */
    assert_true(st1.completions - st0.completions >= 2);
    assert_true(st1.submit_calls > st0.submit_calls);
    assert_int_equal(st1.sq_full, 0);
    assert_int_equal(st1.cq_overflows, 0);
    assert_int_equal(st1.inflight, 1); /* the wake-up read, parked */
    ts_loop_free(loop);
}

#define T(f) cmocka_unit_test_setup_teardown(f, ts_fd_setup, ts_fd_teardown)

int main(void)
{
    const struct CMUnitTest tests[] = {
        T(test_select_env),
        T(test_select_option),
        T(test_fallback_eperm),
        T(test_fallback_enosys),
        T(test_fallback_eacces),
        T(test_epoll_close_with_parked_ops),
        T(test_epoll_fd_reuse),
        T(test_epoll_bogus_fd),
        T(test_post_to_across_backends),
        T(test_epoll_timer_never_early),
        T(test_epoll_stats),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
