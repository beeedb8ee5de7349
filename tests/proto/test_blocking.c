/*
 * The blocking client: against eddy's server, against the scripted faulty
 * upstream (timeouts, refused, reset, truncated, until-close, garbage),
 * and from worker-pool jobs, where it belongs.
 */
#define _GNU_SOURCE
#include "http_util.h"
#include "upstream.h"

#include "eddy/http_client.h"

static struct hsrv S;
static char url[256];

static const char *surl(const char *path)
{
    snprintf(url, sizeof url, "http://127.0.0.1:%d%s", atomic_load(&S.port), path);
    return url;
}

static void wait_fds(int want)
{
    int64_t end = ts_now_ms() + 2000;
    while (ts_fd_count() != want && ts_now_ms() < end)
        usleep(1000);
    assert_int_equal(ts_fd_count(), want);
}

static void test_server(void **state)
{
    (void)state;
    int fds = ts_fd_count();
    struct eddy_http_response r;
    struct eddy_http_pair a[] = {{"time", "0.5"}, {"x", "a b"}};
    assert_int_equal(eddy_http_blocking_fetch(surl("/args"), NULL, a, 2, 5000, &r), 0);
    assert_int_equal(r.status, 200);
    assert_string_equal(r.body, "time=0.5|x=a b");
    assert_string_equal(eddy_http_response_header(&r, "Connection"), "close");
    eddy_http_response_free(&r);
    assert_null(r.body);

    assert_int_equal(eddy_http_blocking_fetch(surl("/echo"), "POST", a, 2, 5000, &r), 0);
    assert_string_equal(r.body, "time=0.5&x=a+b");
    eddy_http_response_free(&r);

    assert_int_equal(eddy_http_blocking_fetch(surl("/stream?n=2"), NULL, NULL, 0, 5000, &r), 0);
    assert_string_equal(r.body, "chunk 0\nchunk 1\n");
    eddy_http_response_free(&r);

    assert_int_equal(eddy_http_blocking_fetch(surl("/missing"), "HEAD", NULL, 0, 5000, &r), 0);
    assert_int_equal(r.status, 404);
    assert_int_equal(r.body_len, 0);
    eddy_http_response_free(&r);

    assert_int_equal(eddy_http_blocking_fetch("ftp://x/", NULL, NULL, 0, 100, &r), -EINVAL);
    assert_int_equal(eddy_http_blocking_fetch(surl("/"), "BAD METHOD", NULL, 0, 100, &r),
                     -EINVAL);
    wait_fds(fds);
}

static void test_faults(void **state)
{
    (void)state;
    static const struct {
        enum up_mode mode;
        unsigned timeout;
        int err;
        const char *body;
    } cases[] = {
        {UP_SILENT, 300, -ETIMEDOUT, NULL},
        {UP_DRIP, 300, -ETIMEDOUT, NULL},
        {UP_RESET_BODY, 5000, -ECONNRESET, NULL},
        {UP_TRUNCATED, 5000, -ECONNRESET, NULL},
        {UP_CHUNKED, 5000, 0, "hello world"},
        {UP_UNTIL_CLOSE, 5000, 0, "until close"},
        {UP_GARBAGE, 5000, -EPROTO, NULL},
        {UP_OK, 5000, 0, "echo:GET /b HTTP/1.1|"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        int fds = ts_fd_count();
        struct upstream u;
        up_start(&u, cases[i].mode);
        up_url(&u, url, sizeof url, "/b");
        struct eddy_http_response r;
        int64_t t0 = ts_now_ms();
        int err = eddy_http_blocking_fetch(url, NULL, NULL, 0, cases[i].timeout, &r);
        int64_t took = ts_now_ms() - t0;
        if (err != cases[i].err)
            fail_msg("case %zu: %d (%s), want %d", i, err, eddy_strerror(err), cases[i].err);
        if (cases[i].err == -ETIMEDOUT) {
            assert_true(took >= cases[i].timeout);
            assert_true(took < cases[i].timeout + 1000);
        }
        if (cases[i].body)
            assert_string_equal(r.body, cases[i].body);
        else
            assert_null(r.body);
        eddy_http_response_free(&r);
        up_stop(&u);
        wait_fds(fds);
    }
    /* refused */
    uint16_t port;
    int l = ts_listen(0, &port);
    close(l);
    snprintf(url, sizeof url, "http://127.0.0.1:%u/", (unsigned)port);
    struct eddy_http_response r;
    assert_int_equal(eddy_http_blocking_fetch(url, NULL, NULL, 0, 1000, &r), -ECONNREFUSED);
}

/* 1xx, 204 and 304 never have a body, whatever their headers say, nor has
 * the answer to HEAD; interim 1xx answers are skipped.  The upstream keeps
 * the connection open after answering, so waiting for a body would last
 * until the timeout. */
static void test_no_body_statuses(void **state)
{
    (void)state;
    static const struct {
        const char *method;
        const char *answer;
        int status;
        const char *body;
    } cases[] = {
        {NULL, "HTTP/1.1 304 Not Modified\r\nContent-Length: 50\r\n\r\n", 304, NULL},
        {NULL, "HTTP/1.1 204 No Content\r\nContent-Length: 7\r\n\r\n", 204, NULL},
        {"HEAD", "HTTP/1.1 200 OK\r\nContent-Length: 50\r\n\r\n", 200, NULL},
        {NULL,
         "HTTP/1.1 100 Continue\r\n\r\n\x01"
         "HTTP/1.1 103 Early Hints\r\nLink: </a.css>\r\n\r\n\x01"
         "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok",
         200, "ok"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        int fds = ts_fd_count();
        struct upstream u;
        up_start_script(&u, cases[i].answer, NULL);
        up_url(&u, url, sizeof url, "/nb");
        struct eddy_http_response r;
        int64_t t0 = ts_now_ms();
        int err = eddy_http_blocking_fetch(url, cases[i].method, NULL, 0, 2000, &r);
        int64_t took = ts_now_ms() - t0;
        if (err != 0)
            fail_msg("case %zu: %d (%s) after %d ms", i, err, eddy_strerror(err), (int)took);
        assert_true(took < 1000);
        assert_int_equal(r.status, cases[i].status);
        if (cases[i].body) {
            assert_string_equal(r.body, cases[i].body);
            assert_null(eddy_http_response_header(&r, "link"));
        } else {
            assert_null(r.body);
            assert_int_equal(r.body_len, 0);
        }
        eddy_http_response_free(&r);
        up_stop(&u);
        wait_fds(fds);
    }
}

/* Where the blocking client belongs: worker-pool jobs.  Four 150 ms
 * fetches on four pool threads overlap; the loop stays free meanwhile. */
struct job {
    struct eddy_op op;
    char url[128];
    struct eddy_http_response r;
    int err;
    volatile int done;
};

static int job_fn(struct eddy_op *op)
{
    struct job *j = eddy_container_of(op, struct job, op);
    return eddy_http_blocking_fetch(j->url, NULL, NULL, 0, 5000, &j->r);
}

static void job_done(struct eddy_op *op, int res)
{
    struct job *j = eddy_container_of(op, struct job, op);
    j->err = res;
    j->done = 1;
}

static int ticks;
static void on_tick(struct eddy_op *op, int res)
{
    (void)op;
    if (res == 0)
        ticks++;
}

static void test_worker_pool(void **state)
{
    (void)state;
    struct eddy_loop *loop = ts_loop_new(NULL);
    struct job jobs[4];
    memset(jobs, 0, sizeof jobs);
    int64_t t0 = ts_now_ms();
    for (int i = 0; i < 4; i++) {
        snprintf(jobs[i].url, sizeof jobs[i].url, "http://127.0.0.1:%d/async?ms=150&id=%d",
                 atomic_load(&S.port), i);
        assert_int_equal(eddy_work(loop, &jobs[i].op, job_fn, job_done), 0);
    }
    struct eddy_op tick = EDDY_OP_INIT;
    ticks = 0;
    assert_int_equal(eddy_timer_repeat(loop, &tick, 10, on_tick), 0);
    for (int i = 0; i < 4; i++)
        ts_run_until(loop, &jobs[i].done, 5000);
    int64_t took = ts_now_ms() - t0;
    eddy_cancel(loop, &tick);
    ts_run_idle(loop, 1000);
    for (int i = 0; i < 4; i++) {
        char want[32];
        snprintf(want, sizeof want, "async %d", i);
        assert_int_equal(jobs[i].err, 0);
        assert_string_equal(jobs[i].r.body, want);
        eddy_http_response_free(&jobs[i].r);
    }
    assert_true(took >= 150);
    assert_true(took < 550); /* overlapped, not 4 x 150 ms */
    assert_true(ticks >= 5);  /* the loop kept running meanwhile */
    ts_loop_free(loop);
}

static int setup(void **state)
{
    (void)state;
    memset(&S, 0, sizeof S);
    S.o.host = "127.0.0.1";
    hsrv_start(&S);
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    hsrv_stop(&S);
    return 0;
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_server),
        cmocka_unit_test(test_faults),
        cmocka_unit_test(test_no_body_statuses),
        cmocka_unit_test(test_worker_pool),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
