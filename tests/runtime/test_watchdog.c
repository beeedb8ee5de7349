/* The stall watchdog: names a blocking callback (label or symbol) while it
 * is still blocked, counts it once, and stays silent for fast callbacks. */
#define _GNU_SOURCE
#include "testsupport.h"

#include <errno.h>
#include <pthread.h>
#include <stdio.h>
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

/* The log hook runs on the watchdog thread too: guarded by a mutex. */
#define MAXLOG 16
static struct {
    pthread_mutex_t mu;
    int n;
    char msg[MAXLOG][512];
    int level[MAXLOG];
    int64_t at[MAXLOG];
    pthread_t thread[MAXLOG];
} logs = {.mu = PTHREAD_MUTEX_INITIALIZER};

static void log_hook(void *ud, int level, const char *msg)
{
    assert_ptr_equal(ud, &logs);
    pthread_mutex_lock(&logs.mu);
    if (logs.n < MAXLOG) {
        snprintf(logs.msg[logs.n], sizeof logs.msg[0], "%s", msg);
        logs.level[logs.n] = level;
        logs.at[logs.n] = now_ns();
        logs.thread[logs.n] = pthread_self();
        logs.n++;
    }
    pthread_mutex_unlock(&logs.mu);
}

static void logs_reset(void)
{
    pthread_mutex_lock(&logs.mu);
    logs.n = 0;
    pthread_mutex_unlock(&logs.mu);
}

static int logs_count(void)
{
    pthread_mutex_lock(&logs.mu);
    int n = logs.n;
    pthread_mutex_unlock(&logs.mu);
    return n;
}

static struct eddy_loop *loop_with_log(unsigned stall_ms, int ignore_env)
{
    struct eddy_loop_options o;
    eddy_loop_options_init(&o);
    o.stall_ms = stall_ms;
    o.ignore_env = ignore_env;
    o.log = log_hook;
    o.log_ud = &logs;
    return ts_loop_new(&o);
}

static int64_t slow_start_ns, slow_end_ns;
static int slow_calls;

/* Not static, so dladdr finds its name (the tests export their symbols). */
void eddy_test_slow_callback(struct eddy_op *op, int res);
void eddy_test_slow_callback(struct eddy_op *op, int res)
{
    (void)op;
    assert_int_equal(res, 0);
    slow_calls++;
    slow_start_ns = now_ns();
    usleep(200000);
    slow_end_ns = now_ns();
}

/* Runs one slow post and checks the two reports: "still running" from the
 * watchdog thread during the block, the total from the loop thread after. */
static void check_stall(struct eddy_loop *loop, const char *label, const char *want_name)
{
    struct eddy_op op = EDDY_OP_INIT;
    logs_reset();
    slow_calls = 0;
    op.label = label;
    assert_int_equal(eddy_post(loop, &op, eddy_test_slow_callback), 0);
    assert_int_equal(eddy_loop_run(loop, EDDY_RUN_DEFAULT), 0);
    assert_int_equal(slow_calls, 1);
    struct eddy_loop_stats st;
    eddy_loop_stats(loop, &st);
    assert_int_equal(st.stalls, 1);
    /* a copy, so a failed assert does not leave the mutex held */
    static __typeof__(logs) L;
    pthread_mutex_lock(&logs.mu);
    memcpy(&L, &logs, sizeof L);
    pthread_mutex_unlock(&logs.mu);
    int n = L.n;
    for (int i = 0; i < n; i++)
        print_message("    log[%d] +%lld ms: %s\n", i,
                      (long long)((L.at[i] - slow_start_ns) / MS), L.msg[i]);
    assert_int_equal(n, 2);
    /* 1: while the callback is still blocked, from another thread */
    assert_int_equal(L.level[0], EDDY_LOG_WARN);
    assert_non_null(strstr(L.msg[0], want_name));
    assert_non_null(strstr(L.msg[0], "still running"));
    assert_false(pthread_equal(L.thread[0], pthread_self()));
    assert_true(L.at[0] < slow_end_ns);
    /* at least the threshold after it started, well before it ends */
    assert_true(L.at[0] >= slow_start_ns + 50 * MS - 10 * MS);
    assert_true(L.at[0] <= slow_start_ns + 150 * MS);
    /* 2: after it returned, on the loop thread, with the total */
    assert_int_equal(L.level[1], EDDY_LOG_WARN);
    assert_non_null(strstr(L.msg[1], want_name));
    assert_null(strstr(L.msg[1], "still running"));
    assert_non_null(strstr(L.msg[1], "threshold 50 ms"));
    assert_true(pthread_equal(L.thread[1], pthread_self()));
    assert_true(L.at[1] >= slow_end_ns);
    int blocked_ms = -1;
    const char *p = strstr(L.msg[1], "for ");
    assert_non_null(p);
    blocked_ms = atoi(p + 4);
    assert_true(blocked_ms >= 190);
    assert_true(blocked_ms < 2000);
}

static void test_stall_named_by_label(void **state)
{
    (void)state;
    struct eddy_loop *loop = loop_with_log(50, 1);
    check_stall(loop, "slow-handler-label", "slow-handler-label");
    ts_loop_free(loop);
}

static void test_stall_named_by_symbol(void **state)
{
    (void)state;
    struct eddy_loop *loop = loop_with_log(50, 1);
    check_stall(loop, NULL, "eddy_test_slow_callback");
    ts_loop_free(loop);
}

/* ---- silence for fast callbacks ------------------------------------------- */

#define NFAST 1000
static int fast_calls;

static void fast_cb(struct eddy_op *op, int res)
{
    (void)op;
    assert_int_equal(res, 0);
    fast_calls++;
}

static void test_fast_callbacks_silent(void **state)
{
    (void)state;
    struct eddy_loop *loop = loop_with_log(50, 1);
    static struct eddy_op ops[NFAST];
    memset(ops, 0, sizeof ops);
    logs_reset();
    fast_calls = 0;
    for (int round = 0; round < 3; round++) {
        for (int i = 0; i < NFAST; i++)
            assert_int_equal(eddy_post(loop, &ops[i], fast_cb), 0);
        assert_int_equal(eddy_loop_run(loop, EDDY_RUN_DEFAULT), 0);
        usleep(60000); /* idle longer than the threshold: no callback runs */
    }
    /* and a loop asleep in the kernel with a pending timer is not a stall */
    struct eddy_op t = EDDY_OP_INIT;
    assert_int_equal(eddy_timer(loop, &t, 120, fast_cb), 0);
    assert_int_equal(eddy_loop_run(loop, EDDY_RUN_DEFAULT), 0);
    assert_int_equal(fast_calls, 3 * NFAST + 1);
    struct eddy_loop_stats st;
    eddy_loop_stats(loop, &st);
    assert_int_equal(st.stalls, 0);
    assert_int_equal(logs_count(), 0);
    ts_loop_free(loop);
}

/* ---- EDDY_STALL_MS --------------------------------------------------------- */

static void test_env_threshold(void **state)
{
    (void)state;
    assert_int_equal(setenv("EDDY_STALL_MS", "50", 1), 0);
    struct eddy_loop *loop = loop_with_log(0, 0);
    check_stall(loop, "env-label", "env-label");
    ts_loop_free(loop);

    /* ignore_env: the variable has no effect, the watchdog stays off */
    loop = loop_with_log(0, 1);
    struct eddy_op op = EDDY_OP_INIT;
    logs_reset();
    slow_calls = 0;
    assert_int_equal(eddy_post(loop, &op, eddy_test_slow_callback), 0);
    assert_int_equal(eddy_loop_run(loop, EDDY_RUN_DEFAULT), 0);
    assert_int_equal(slow_calls, 1);
    struct eddy_loop_stats st;
    eddy_loop_stats(loop, &st);
    assert_int_equal(st.stalls, 0);
    assert_int_equal(logs_count(), 0);
    ts_loop_free(loop);

    /* an explicit option wins over the variable */
    assert_int_equal(setenv("EDDY_STALL_MS", "5000", 1), 0);
    loop = loop_with_log(50, 0);
    check_stall(loop, "option-label", "option-label");
    ts_loop_free(loop);
    /* a threshold above the block: silent */
    loop = loop_with_log(0, 0);
    logs_reset();
    assert_int_equal(eddy_post(loop, &op, eddy_test_slow_callback), 0);
    assert_int_equal(eddy_loop_run(loop, EDDY_RUN_DEFAULT), 0);
    eddy_loop_stats(loop, &st);
    assert_int_equal(st.stalls, 0);
    assert_int_equal(logs_count(), 0);
    ts_loop_free(loop);
    unsetenv("EDDY_STALL_MS");
}

int main(void)
{
    unsetenv("EDDY_STALL_MS");
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_stall_named_by_label),
        cmocka_unit_test(test_stall_named_by_symbol),
        cmocka_unit_test(test_fast_callbacks_silent),
        cmocka_unit_test(test_env_threshold),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
