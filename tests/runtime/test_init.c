/* Loop set-up: clear errors when io_uring is unavailable (seccomp makes
 * io_uring_setup fail in a child), allocator failure, counters, and the
 * EDDY_DISABLE switch. */
#define _GNU_SOURCE
#include "testsupport.h"

#include <errno.h>
#include <stdbool.h>
#include <liburing.h>
#include <linux/audit.h>
#include <linux/filter.h>
#include <linux/seccomp.h>
#include <signal.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

/* ---- io_uring_setup refused ------------------------------------------------ */

/* Makes io_uring_setup fail with err in this process (and no other call). */
static int deny_io_uring_setup(int err)
{
    struct sock_filter f[] = {
        BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, arch)),
        BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, AUDIT_ARCH_X86_64, 1, 0),
        BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW),
        BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, nr)),
        BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, __NR_io_uring_setup, 0, 1),
        BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ERRNO | ((unsigned)err & SECCOMP_RET_DATA)),
        BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW),
    };
    struct sock_fprog prog = {.len = sizeof f / sizeof f[0], .filter = f};
    if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0)
        return -errno;
    if (prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, &prog) != 0)
        return -errno;
    return 0;
}

/* Child exit codes: what went wrong, so the parent can say. */
enum { C_OK = 0, C_FILTER = 10, C_WRONG_RC = 11, C_EXPLAIN = 12, C_LOOP = 13, C_STILL_WORKS = 14,
       C_NO_FALLBACK = 15, C_WARNING = 16, C_EPOLL_RUN = 17 };

static char warned[1024];
static int nwarn;

static void capture_log(void *ud, int level, const char *msg)
{
    (void)ud;
    if (level == EDDY_LOG_WARN) {
        nwarn++;
        snprintf(warned, sizeof warned, "%s", msg);
    }
}

static void child_timer_cb(struct eddy_op *op, int res)
{
    (void)op;
    *(int *)op->data = res == 0 ? 1 : -1;
}

/*
 * A forced io_uring (the option wins over EDDY_BACKEND) fails with today's
 * clear error; auto runs on epoll instead, after exactly one warning that
 * gives the same explanation and names epoll.  An ENOMEM falls back only
 * under a finite RLIMIT_MEMLOCK (fallback says whether to expect it).
 */
static int child(int err, const char *want1, const char *want2, bool fallback)
{
    if (deny_io_uring_setup(err) != 0)
        return C_FILTER;
    /* the filter works: the raw call fails with exactly err */
    long r = syscall(__NR_io_uring_setup, 4, NULL);
    if (r != -1 || errno != err)
        return C_STILL_WORKS;
    struct eddy_loop_options o;
    eddy_loop_options_init(&o);
    o.backend = "io_uring";
    struct eddy_loop *loop = NULL;
    int rc = eddy_loop_init(&loop, &o);
    if (rc != -err)
        return C_WRONG_RC;
    if (loop != NULL)
        return C_LOOP;
    const char *why = eddy_loop_init_explain(rc);
    if (!why || !strstr(why, want1) || (want2 && !strstr(why, want2)))
        return C_EXPLAIN;
    /* auto: epoll, said once */
    o.backend = "auto";
    o.log = capture_log;
    rc = eddy_loop_init(&loop, &o);
    if (!fallback)
        return rc == -err && !loop ? C_OK : C_WRONG_RC;
    if (rc != 0 || strcmp(eddy_loop_backend(loop), "epoll") != 0)
        return C_NO_FALLBACK;
    if (nwarn != 1 || !strstr(warned, why) || !strstr(warned, "epoll"))
        return C_WARNING;
    /* and it works */
    int fired = 0;
    struct eddy_op t = EDDY_OP_INIT;
    t.data = &fired;
    if (eddy_timer(loop, &t, 1, child_timer_cb) != 0 ||
        eddy_loop_run(loop, EDDY_RUN_DEFAULT) != 0 || fired != 1 ||
        eddy_loop_destroy(loop) != 0)
        return C_EPOLL_RUN;
    return C_OK;
}

/* Forks a child that runs child(), waits at most 10 s. */
static void run_child(int err, const char *want1, const char *want2, bool fallback)
{
    fflush(NULL);
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0)
        _exit(child(err, want1, want2, fallback));
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
    if (!WIFEXITED(status))
        fail_msg("child for %s died by signal %d", strerror(err),
                 WIFSIGNALED(status) ? WTERMSIG(status) : -1);
    if (WEXITSTATUS(status) != C_OK)
        fail_msg("child for %s: exit code %d", strerror(err), WEXITSTATUS(status));
}

static void test_enosys(void **state)
{
    (void)state;
    run_child(ENOSYS, "CONFIG_IO_URING", "seccomp", true);
}

static void test_eperm(void **state)
{
    (void)state;
    run_child(EPERM, "io_uring_disabled", NULL, true);
}

/* EACCES too (the sysctl's group check on some kernels): auto falls back. */
static void test_eacces(void **state)
{
    (void)state;
    run_child(EACCES, "io_uring", NULL, true);
}

/* -ENOMEM survives the retries with smaller rings. */
static void test_enomem(void **state)
{
    (void)state;
    struct rlimit rl;
    assert_int_equal(getrlimit(RLIMIT_MEMLOCK, &rl), 0);
    run_child(ENOMEM, "RLIMIT_MEMLOCK", NULL, rl.rlim_cur != RLIM_INFINITY);
}

static void test_explain_never_null(void **state)
{
    (void)state;
    static const int errs[] = {-ENOSYS, -EPERM, -ENOMEM, -EMFILE, -ENFILE,
                               -EINVAL, -EIO, 0};
    for (size_t i = 0; i < sizeof errs / sizeof errs[0]; i++) {
        const char *s = eddy_loop_init_explain(errs[i]);
        assert_non_null(s);
        assert_true(strlen(s) > 10);
    }
    assert_non_null(strstr(eddy_loop_init_explain(-EMFILE), "ulimit -n"));
}

static int calls;

static void count_cb(struct eddy_op *op, int res)
{
    (void)op;
    (void)res;
    calls++;
}

static int work_fn(struct eddy_op *op)
{
    (void)op;
    return 5;
}

/* ---- allocator failure ------------------------------------------------------ */

static int allocs_left, allocs_made;

static void *failing_alloc(void *ud, void *ptr, size_t size)
{
    assert_ptr_equal(ud, &allocs_left);
    if (size == 0) {
        free(ptr);
        return NULL;
    }
    if (!ptr) {
        if (allocs_left == 0)
            return NULL;
        allocs_left--;
        allocs_made++;
    }
    return realloc(ptr, size);
}

static void test_alloc_failure(void **state)
{
    (void)state;
    struct eddy_loop_options o;
    eddy_loop_options_init(&o);
    o.alloc = failing_alloc;
    o.alloc_ud = &allocs_left;
    int fds = ts_fd_count();
    struct eddy_loop *loop = (struct eddy_loop *)&o; /* must not be touched on failure */
    allocs_left = 0;
    allocs_made = 0;
    assert_int_equal(eddy_loop_init(&loop, &o), -ENOMEM);
    assert_ptr_equal(loop, (struct eddy_loop *)&o);
    assert_int_equal(ts_fd_count(), fds);
    /* with the allocator working, the same options give a loop */
    allocs_left = 1000;
    loop = ts_loop_new(&o);
    assert_true(allocs_made >= 1);
    /* the pool's thread array comes from the hook too: failing it fails
     * the start, with no callback and nothing active */
    allocs_left = 0;
    struct eddy_op op = EDDY_OP_INIT;
    assert_int_equal(eddy_work(loop, &op, work_fn, count_cb), -ENOMEM);
    assert_false(eddy_op_active(&op));
    ts_loop_free(loop);
    assert_int_equal(ts_fd_count(), fds);
}

/* ---- counters ----------------------------------------------------------------- */

static void test_counters(void **state)
{
    (void)state;
    struct eddy_loop *loop = ts_loop_new(NULL);
    struct eddy_loop_stats st;
    eddy_loop_stats(loop, &st);
    assert_int_equal(st.active, 0);
    assert_int_equal(st.completions, 0);
    assert_int_equal(st.stalls, 0);
    struct eddy_op t = EDDY_OP_INIT, p = EDDY_OP_INIT, w = EDDY_OP_INIT;
    calls = 0;
    assert_int_equal(eddy_timer(loop, &t, 5, count_cb), 0);
    assert_int_equal(eddy_post(loop, &p, count_cb), 0);
    assert_int_equal(eddy_work(loop, &w, work_fn, count_cb), 0);
    eddy_loop_stats(loop, &st);
    assert_int_equal(st.active, 3);
    assert_int_equal(eddy_loop_run(loop, EDDY_RUN_DEFAULT), 0);
    assert_int_equal(calls, 3);
    eddy_loop_stats(loop, &st);
    assert_true(st.sqes >= 2);        /* the timer and the wake-up read at least */
    /* The timer's at least.  The wake-up for the finished job is not
     * counted for sure: the loop may take the job off its queue before the
     * eventfd read completes, and then end without reaping it (seen on an
     * emulated 6.1 kernel). */
    assert_true(st.completions >= 1);
    assert_true(st.submit_calls > 0);
    assert_true(st.iterations > 0);
    assert_int_equal(st.active, 0);
    assert_int_equal(st.stalls, 0);
    assert_int_equal(st.cq_overflows, 0);
    /* they only grow */
    struct eddy_loop_stats st2;
    assert_int_equal(eddy_timer(loop, &t, 1, count_cb), 0);
    assert_int_equal(eddy_loop_run(loop, EDDY_RUN_DEFAULT), 0);
    eddy_loop_stats(loop, &st2);
    assert_true(st2.sqes > st.sqes);
    assert_true(st2.completions > st.completions);
    assert_true(st2.iterations > st.iterations);
    assert_true(st2.submit_calls > st.submit_calls);
    assert_int_equal(st2.active, 0);
    ts_loop_free(loop);
}

/* ---- EDDY_DISABLE ------------------------------------------------------------- */

static void test_env_disable(void **state)
{
    (void)state;
    struct eddy_loop_options o;
    eddy_loop_options_init(&o);
    /* Feature bits are io_uring's: this test is about that backend (the
     * option wins over EDDY_BACKEND).  On epoll the mask is 0 whatever is
     * switched off. */
    struct eddy_loop_options ou;
    eddy_loop_options_init(&ou);
    ou.backend = "io_uring";
    struct eddy_loop_options oe;
    eddy_loop_options_init(&oe);
    oe.backend = "epoll";
    o.backend = "io_uring";
    o.ignore_env = 1;
    struct eddy_loop *loop = ts_loop_new(&oe);
    assert_int_equal(eddy_loop_features(loop), 0);
    assert_int_equal(eddy_loop_setup_flags(loop), 0);
    ts_loop_free(loop);
    loop = ts_loop_new(&o);
    unsigned native = eddy_loop_features(loop);
    ts_loop_free(loop);
    /* This kernel (6.x) has both, else the switch below proves nothing. */
    if ((native & (EDDY_FEAT_MSG_RING | EDDY_FEAT_SEND_ZC)) !=
        (EDDY_FEAT_MSG_RING | EDDY_FEAT_SEND_ZC)) {
        print_message("    kernel lacks msg_ring/send_zc: skipped\n");
        skip();
    }

    assert_int_equal(setenv("EDDY_DISABLE", "msg_ring,send_zc", 1), 0);
    loop = ts_loop_new(&ou);
    unsigned f = eddy_loop_features(loop);
    ts_loop_free(loop);
    /* ignore_env: the variable (and EDDY_COMPAT) have no effect */
    loop = ts_loop_new(&o);
    unsigned fi = eddy_loop_features(loop);
    ts_loop_free(loop);
    /* dependencies follow: no buffer ring means no multishot recv, no
     * single issuer means no DEFER_TASKRUN */
    assert_int_equal(setenv("EDDY_DISABLE", " buf_ring , single_issuer", 1), 0);
    loop = ts_loop_new(&ou);
    unsigned fd = eddy_loop_features(loop);
    unsigned flags = eddy_loop_setup_flags(loop);
    ts_loop_free(loop);
    unsetenv("EDDY_DISABLE");

    assert_int_equal(f & (EDDY_FEAT_MSG_RING | EDDY_FEAT_SEND_ZC), 0);
    assert_int_equal(fi, native);
    assert_int_equal(fd & (EDDY_FEAT_BUF_RING | EDDY_FEAT_RECV_MULTI |
                           EDDY_FEAT_SINGLE_ISSUER | EDDY_FEAT_DEFER_TASKRUN), 0);
    assert_int_equal(flags & (IORING_SETUP_SINGLE_ISSUER | IORING_SETUP_DEFER_TASKRUN), 0);
    const char *compat = getenv("EDDY_COMPAT");
    if (!(compat && !strcmp(compat, "5.10"))) {
        /* only the named bits (and what depends on them) went away */
        assert_int_equal(f, native & ~(EDDY_FEAT_MSG_RING | EDDY_FEAT_SEND_ZC));
    } else {
        assert_int_equal(f & EDDY_FEAT_NOT_IN_5_10, 0);
    }
    /* an option switches off like the variable does */
    o.ignore_env = 1;
    o.disable = EDDY_FEAT_MSG_RING;
    loop = ts_loop_new(&o);
    assert_int_equal(eddy_loop_features(loop), native & ~(unsigned)EDDY_FEAT_MSG_RING);
    ts_loop_free(loop);
}

static void test_feature_parse(void **state)
{
    (void)state;
    unsigned m = 12345;
    assert_int_equal(eddy_feature_parse("msg_ring,send_zc", &m), 0);
    assert_int_equal(m, EDDY_FEAT_MSG_RING | EDDY_FEAT_SEND_ZC);
    assert_int_equal(eddy_feature_parse("  msg_ring , , send_zc ,", &m), 0);
    assert_int_equal(m, EDDY_FEAT_MSG_RING | EDDY_FEAT_SEND_ZC);
    assert_int_equal(eddy_feature_parse("", &m), 0);
    assert_int_equal(m, 0);
    assert_int_equal(eddy_feature_parse(NULL, &m), 0);
    assert_int_equal(m, 0);
    assert_int_equal(eddy_feature_parse("all", &m), 0);
    assert_true((m & EDDY_FEAT_NOT_IN_5_10) == EDDY_FEAT_NOT_IN_5_10);
    assert_true(m & EDDY_FEAT_NODROP);
    /* errors leave *mask alone */
    m = 777;
    assert_int_equal(eddy_feature_parse("msg_ring,bogus", &m), -EINVAL);
    assert_int_equal(m, 777);
    assert_int_equal(eddy_feature_parse("msg_rin", &m), -EINVAL);
    assert_int_equal(eddy_feature_parse("msg_ringx", &m), -EINVAL);
    assert_int_equal(eddy_feature_parse("MSG_RING", &m), -EINVAL);
    assert_int_equal(eddy_feature_parse("alll", &m), -EINVAL);
    assert_int_equal(m, 777);
    /* every bit has a name that parses back to it */
    for (unsigned b = 0; b < 32; b++) {
        const char *name = eddy_feature_name(1u << b);
        if (!name)
            continue;
        assert_int_equal(eddy_feature_parse(name, &m), 0);
        assert_int_equal(m, 1u << b);
    }
    assert_null(eddy_feature_name(0));
    assert_null(eddy_feature_name(3));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_enosys),
        cmocka_unit_test(test_eperm),
        cmocka_unit_test(test_eacces),
        cmocka_unit_test(test_enomem),
        cmocka_unit_test(test_explain_never_null),
        cmocka_unit_test(test_alloc_failure),
        cmocka_unit_test(test_counters),
        cmocka_unit_test(test_env_disable),
        cmocka_unit_test(test_feature_parse),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
