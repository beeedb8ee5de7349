/*
 * The asynchronous HTTP client: against eddy's own server (in its own
 * thread), and against a scripted faulty upstream (never answers, resets
 * mid-body, truncates, chunked, read-until-close, closes a pooled
 * connection, drips, garbage, too large); pool cap, retry, cancel, close.
 */
#define _GNU_SOURCE
#include "http_util.h"
#include "upstream.h"

#include "eddy/http_client.h"

#include <dlfcn.h>
#include <fcntl.h>
#include <netdb.h>
#include <poll.h>
#include <time.h>

/* ---- helpers ------------------------------------------------------------ */

struct fres {
    volatile int calls;
    int err;
    int order;
};

static int g_order;

static void on_fetch(struct eddy_http_fetch *f, int err)
{
    struct fres *r = f->data;
    r->calls++;
    r->err = err;
    r->order = ++g_order;
}

struct env {
    struct eddy_loop *loop;
    struct eddy_http_client *cli;
    int fds_before;
    volatile int done;
};

static void env_init(struct env *e, const struct eddy_http_client_options *o)
{
    memset(e, 0, sizeof *e);
    e->fds_before = ts_fd_count();
    e->loop = ts_loop_new(NULL);
    assert_int_equal(eddy_http_client_init(&e->cli, e->loop, o), 0);
}

static void on_closed_cli(struct eddy_http_client *cli, void *ud)
{
    struct env *e = ud;
    (void)cli;
    e->done++;
}

/* Every descriptor the test opened is closed again; the peers (server
 * thread, upstream threads) close their ends a moment later. */
static void wait_fds(int want)
{
    int64_t end = ts_now_ms() + 2000;
    while (ts_fd_count() != want && ts_now_ms() < end)
        usleep(1000);
    assert_int_equal(ts_fd_count(), want);
}

static void env_free(struct env *e)
{
    assert_int_equal(eddy_http_client_close(e->cli, on_closed_cli, e), 0);
    assert_int_equal(eddy_http_client_close(e->cli, on_closed_cli, e), -EALREADY);
    ts_run_until(e->loop, &e->done, 5000);
    ts_run_idle(e->loop, 2000);
    assert_int_equal(e->done, 1);
    struct eddy_http_client_stats st;
    eddy_http_client_stats(e->cli, &st);
    assert_int_equal(st.conns, 0);
    assert_int_equal(st.active, 0);
    assert_int_equal(st.origins, 0); /* none kept for nothing until destroy */
    assert_int_equal(eddy_http_client_destroy(e->cli), 0);
    ts_loop_free(e->loop);
    wait_fds(e->fds_before);
}

/* Starts f and runs the loop until its callback; returns its err. */
static int fetch_run(struct env *e, struct eddy_http_fetch *f, struct fres *r, unsigned ms)
{
    memset(r, 0, sizeof *r);
    f->data = r;
    int rc = eddy_http_fetch_start(e->cli, f, on_fetch);
    assert_int_equal(rc, 0);
    ts_run_until(e->loop, &r->calls, ms);
    assert_int_equal(r->calls, 1);
    return r->err;
}

static int fetch_url(struct env *e, struct eddy_http_fetch *f, const char *url)
{
    struct fres r;
    f->url = url;
    return fetch_run(e, f, &r, 5000);
}

/* Runs the loop for about ms (callbacks may happen). */
static void run_for(struct eddy_loop *loop, unsigned ms)
{
    int64_t end = ts_now_ms() + ms;
    while (ts_now_ms() < end) {
        eddy_loop_run(loop, EDDY_RUN_NOWAIT);
        usleep(500);
    }
}

static char url[256];

/* ---- against eddy's server --------------------------------------------- */

static struct hsrv S;

static const char *surl(const char *path)
{
    snprintf(url, sizeof url, "http://127.0.0.1:%d%s", atomic_load(&S.port), path);
    return url;
}

static void test_server_get_args(void **state)
{
    (void)state;
    struct env e;
    env_init(&e, NULL);
    struct eddy_http_fetch f;
    memset(&f, 0, sizeof f);
    struct eddy_http_pair a[] = {{"time", "1.5"}, {"x", "a b&c"}};
    f.args = a;
    f.nargs = 2;
    assert_int_equal(fetch_url(&e, &f, surl("/args")), 0);
    assert_int_equal(f.resp.status, 200);
    assert_int_equal(f.resp.version, 11);
    assert_int_equal(f.resp.body_len, strlen("time=1.5|x=a b&c"));
    assert_string_equal(f.resp.body, "time=1.5|x=a b&c");
    assert_string_equal(eddy_http_response_header(&f.resp, "content-type"), "text/plain");
    assert_string_equal(eddy_http_response_header(&f.resp, "Content-Length"), "16");
    assert_int_equal(f.attempts, 1);
    /* a request header, and a 404 is a successful fetch */
    struct eddy_http_pair h[] = {{"X-Test", "hello there"}};
    f.args = NULL;
    f.nargs = 0;
    f.headers = h;
    f.nheaders = 1;
    assert_int_equal(fetch_url(&e, &f, surl("/hdr")), 0);
    assert_string_equal(f.resp.body, "hello there");
    f.headers = NULL;
    f.nheaders = 0;
    assert_int_equal(fetch_url(&e, &f, surl("/nope")), 0);
    assert_int_equal(f.resp.status, 404);
    /* HEAD: the head only */
    f.method = "HEAD";
    assert_int_equal(fetch_url(&e, &f, surl("/plaintext")), 0);
    assert_int_equal(f.resp.status, 200);
    assert_int_equal(f.resp.body_len, 0);
    assert_null(f.resp.body);
    assert_string_equal(eddy_http_response_header(&f.resp, "content-length"), "13");
    /* after HEAD the connection is still in sync */
    f.method = NULL;
    assert_int_equal(fetch_url(&e, &f, surl("/plaintext")), 0);
    assert_string_equal(f.resp.body, "Hello, World!");
    assert_int_equal(f.reused, 1);
    eddy_http_fetch_release(&f);
    assert_null(f.resp.body);
    env_free(&e);
}

static void test_server_post_form(void **state)
{
    (void)state;
    struct env e;
    env_init(&e, NULL);
    struct eddy_http_fetch f;
    memset(&f, 0, sizeof f);
    struct eddy_http_pair a[] = {{"name", "eddy loop"}, {"q", "1+1=2"}};
    f.method = "POST";
    f.args = a;
    f.nargs = 2;
    assert_int_equal(fetch_url(&e, &f, surl("/echo")), 0);
    assert_int_equal(f.resp.status, 200);
    assert_string_equal(f.resp.body, "name=eddy+loop&q=1%2B1%3D2");
    /* a raw body */
    static char big[100000];
    for (size_t i = 0; i < sizeof big; i++)
        big[i] = (char)('a' + i % 26);
    f.method = "PUT";
    f.args = NULL;
    f.nargs = 0;
    f.body = big;
    f.body_len = sizeof big;
    f.content_type = "application/octet-stream";
    /* the server's default max_body is 1 MiB */
    assert_int_equal(fetch_url(&e, &f, surl("/echo")), 0);
    assert_int_equal(f.resp.status, 200);
    assert_int_equal(f.resp.body_len, sizeof big);
    assert_memory_equal(f.resp.body, big, sizeof big);
    /* misuse: form args and a raw body together; a bad URL */
    struct fres r = {0};
    f.args = a;
    f.nargs = 1;
    f.method = "POST";
    f.data = &r;
    assert_int_equal(eddy_http_fetch_start(e.cli, &f, on_fetch), -EINVAL);
    f.args = NULL;
    f.nargs = 0;
    f.url = "http://127.0.0.1:99999/";
    assert_int_equal(eddy_http_fetch_start(e.cli, &f, on_fetch), -EINVAL);
    f.url = "https://127.0.0.1/";
    assert_int_equal(eddy_http_fetch_start(e.cli, &f, on_fetch), -EINVAL);
    run_for(e.loop, 20);
    assert_int_equal(r.calls, 0);
    eddy_http_fetch_release(&f);
    env_free(&e);
}

static void test_server_chunked(void **state)
{
    (void)state;
    struct env e;
    env_init(&e, NULL);
    struct eddy_http_fetch f;
    memset(&f, 0, sizeof f);
    assert_int_equal(fetch_url(&e, &f, surl("/stream?n=3")), 0);
    assert_int_equal(f.resp.status, 200);
    assert_string_equal(eddy_http_response_header(&f.resp, "transfer-encoding"), "chunked");
    assert_string_equal(f.resp.body, "chunk 0\nchunk 1\nchunk 2\n");
    /* streamed from timers, chunk by chunk */
    assert_int_equal(fetch_url(&e, &f, surl("/stream?n=5&async=1")), 0);
    assert_int_equal(f.resp.body_len, 40);
    assert_string_equal(f.resp.body, "chunk 0\nchunk 1\nchunk 2\nchunk 3\nchunk 4\n");
    assert_int_equal(f.reused, 1);
    /* a large body */
    assert_int_equal(fetch_url(&e, &f, surl("/big?n=300000")), 0);
    assert_int_equal(f.resp.body_len, 300000);
    assert_int_equal(f.resp.body[299999], 'x');
    eddy_http_fetch_release(&f);
    env_free(&e);
}

static void test_server_keepalive_reuse(void **state)
{
    (void)state;
    struct hsrv h;
    memset(&h, 0, sizeof h);
    h.o.host = "127.0.0.1";
    hsrv_start(&h);
    struct env e;
    env_init(&e, NULL);
    struct eddy_http_fetch f;
    memset(&f, 0, sizeof f);
    char u[128];
    snprintf(u, sizeof u, "http://127.0.0.1:%d/plaintext", atomic_load(&h.port));
    for (int i = 0; i < 5; i++) {
        assert_int_equal(fetch_url(&e, &f, u), 0);
        assert_string_equal(f.resp.body, "Hello, World!");
        assert_int_equal(f.reused, i > 0);
    }
    snprintf(u, sizeof u, "http://127.0.0.1:%d/stats", atomic_load(&h.port));
    assert_int_equal(fetch_url(&e, &f, u), 0);
    assert_non_null(strstr(f.resp.body, "accepted=1 conns=1"));
    struct eddy_http_client_stats st;
    eddy_http_client_stats(e.cli, &st);
    assert_int_equal(st.fetches, 6);
    assert_int_equal(st.connects, 1);
    assert_int_equal(st.reuses, 5);
    assert_int_equal(st.conns, 1);
    assert_int_equal(st.idle, 1);
    eddy_http_fetch_release(&f);
    env_free(&e);
    hsrv_stop(&h);
    assert_int_equal(h.st.accepted, 1);
    assert_int_equal(h.st.requests, 6);
}

/* An IPv6 literal, and a name resolved by the client's resolver threads. */
static void test_server_v6_and_names(void **state)
{
    (void)state;
    struct env e;
    env_init(&e, NULL);
    struct eddy_http_fetch f;
    memset(&f, 0, sizeof f);
    char u[128];
    snprintf(u, sizeof u, "http://localhost:%d/plaintext", atomic_load(&S.port));
    struct addrinfo *ai = NULL;
    if (getaddrinfo("localhost", NULL, NULL, &ai) == 0) {
        freeaddrinfo(ai);
        assert_int_equal(fetch_url(&e, &f, u), 0);
        assert_string_equal(f.resp.body, "Hello, World!");
    }
    struct hsrv h6;
    memset(&h6, 0, sizeof h6);
    h6.o.host = "::1";
    int probe = socket(AF_INET6, SOCK_STREAM, 0);
    struct sockaddr_in6 a6 = {.sin6_family = AF_INET6, .sin6_addr = IN6ADDR_LOOPBACK_INIT};
    int v6ok = probe >= 0 && bind(probe, (struct sockaddr *)&a6, sizeof a6) == 0;
    if (probe >= 0)
        close(probe);
    if (v6ok) {
        hsrv_start(&h6);
        snprintf(u, sizeof u, "http://[::1]:%d/peer", atomic_load(&h6.port));
        assert_int_equal(fetch_url(&e, &f, u), 0);
        assert_string_equal(f.resp.body, "::1");
        eddy_http_fetch_release(&f);
        hsrv_stop(&h6);
        env_free(&e);
        return;
    }
    eddy_http_fetch_release(&f);
    env_free(&e);
}

/* The original's pattern: many concurrent fetches of a slow handler finish
 * in about the longest delay, over at most the cap of connections. */
static void test_server_concurrent(void **state)
{
    (void)state;
    struct eddy_http_client_options o = {.max_conns_per_origin = 4};
    struct env e;
    env_init(&e, &o);
    enum { N = 12 };
    struct eddy_http_fetch f[N];
    struct fres r[N];
    char urls[N][128];
    memset(f, 0, sizeof f);
    memset(r, 0, sizeof r);
    int64_t t0 = ts_now_ms();
    for (int i = 0; i < N; i++) {
        snprintf(urls[i], sizeof urls[i], "http://127.0.0.1:%d/async?ms=100&id=%d",
                 atomic_load(&S.port), i);
        f[i].url = urls[i];
        f[i].data = &r[i];
        assert_int_equal(eddy_http_fetch_start(e.cli, &f[i], on_fetch), 0);
    }
    struct eddy_http_client_stats st;
    eddy_http_client_stats(e.cli, &st);
    assert_int_equal(st.queued, N - 4);
    assert_int_equal(st.active, N);
    for (int i = 0; i < N; i++)
        ts_run_until(e.loop, &r[i].calls, 5000);
    int64_t took = ts_now_ms() - t0;
    for (int i = 0; i < N; i++) {
        char want[32];
        snprintf(want, sizeof want, "async %d", i);
        assert_int_equal(r[i].calls, 1);
        assert_int_equal(r[i].err, 0);
        assert_string_equal(f[i].resp.body, want);
        eddy_http_fetch_release(&f[i]);
    }
    /* three rounds of 100 ms over four connections */
    assert_true(took >= 300);
    assert_true(took < 2000);
    eddy_http_client_stats(e.cli, &st);
    assert_int_equal(st.connects, 4);
    assert_int_equal(st.reuses, N - 4);
    env_free(&e);
}

/* ---- against the scripted upstream ------------------------------------- */

static void test_pool_cap(void **state)
{
    (void)state;
    struct upstream u;
    up_start(&u, UP_OK);
    u.delay_ms = 60;
    struct eddy_http_client_options o = {.max_conns_per_origin = 2};
    struct env e;
    env_init(&e, &o);
    enum { N = 7 };
    struct eddy_http_fetch f[N];
    struct fres r[N];
    memset(f, 0, sizeof f);
    memset(r, 0, sizeof r);
    up_url(&u, url, sizeof url, "/cap");
    for (int i = 0; i < N; i++) {
        f[i].url = url;
        f[i].data = &r[i];
        assert_int_equal(eddy_http_fetch_start(e.cli, &f[i], on_fetch), 0);
    }
    for (int i = 0; i < N; i++)
        ts_run_until(e.loop, &r[i].calls, 5000);
    for (int i = 0; i < N; i++) {
        assert_int_equal(r[i].calls, 1);
        assert_int_equal(r[i].err, 0);
        assert_string_equal(f[i].resp.body, "echo:GET /cap HTTP/1.1|");
        eddy_http_fetch_release(&f[i]);
    }
    /* FIFO: the queue is served in start order, so fetch i (from 2 on)
     * gets a connection only at the (i-1)-th completion and ends after it.
     * (Completion order itself is up to the upstream's threads.) */
    for (int i = 2; i < N; i++)
        assert_true(r[i].order >= i);
    assert_int_equal(atomic_load(&u.conns), 2);
    assert_int_equal(atomic_load(&u.max_cur), 2);
    assert_int_equal(atomic_load(&u.reqs), N);
    env_free(&e);
    up_stop(&u);
}

static void test_request_timeout(void **state)
{
    (void)state;
    struct upstream u;
    up_start(&u, UP_SILENT);
    struct env e;
    env_init(&e, NULL);
    struct eddy_http_fetch f;
    memset(&f, 0, sizeof f);
    up_url(&u, url, sizeof url, "/never");
    f.url = url;
    f.request_timeout_ms = 200;
    struct fres r;
    int64_t t0 = ts_now_ms();
    assert_int_equal(fetch_run(&e, &f, &r, 3000), -ETIMEDOUT);
    int64_t took = ts_now_ms() - t0;
    assert_true(took >= 200);
    assert_true(took < 1500);
    assert_int_equal(f.resp.status, 0);
    assert_null(f.resp.body);
    run_for(e.loop, 10);
    assert_int_equal(r.calls, 1);
    /* the client's own default applies when the fetch leaves it 0 */
    env_free(&e);
    /* the connection was closed: the upstream saw EOF */
    int64_t end = ts_now_ms() + 2000;
    while (atomic_load(&u.closed_by_peer) < 1 && ts_now_ms() < end)
        usleep(1000);
    assert_int_equal(atomic_load(&u.closed_by_peer), 1);
    up_stop(&u);

    /* a server that drips its answer: the request timeout is total */
    up_start(&u, UP_DRIP);
    struct eddy_http_client_options o = {.request_timeout_ms = 300};
    env_init(&e, &o);
    memset(&f, 0, sizeof f);
    up_url(&u, url, sizeof url, "/drip");
    f.url = url;
    t0 = ts_now_ms();
    assert_int_equal(fetch_run(&e, &f, &r, 3000), -ETIMEDOUT);
    took = ts_now_ms() - t0;
    assert_true(took >= 300 && took < 1500);
    env_free(&e);
    up_stop(&u);
}

static void test_refused(void **state)
{
    (void)state;
    uint16_t port;
    int l = ts_listen(0, &port);
    close(l); /* nobody listens there now */
    struct env e;
    env_init(&e, NULL);
    struct eddy_http_fetch f;
    memset(&f, 0, sizeof f);
    snprintf(url, sizeof url, "http://127.0.0.1:%u/", (unsigned)port);
    assert_int_equal(fetch_url(&e, &f, url), -ECONNREFUSED);
    assert_int_equal(f.attempts, 1);
    /* refused is not retried, and a second fetch fails the same way */
    assert_int_equal(fetch_url(&e, &f, url), -ECONNREFUSED);
    struct eddy_http_client_stats st;
    eddy_http_client_stats(e.cli, &st);
    assert_int_equal(st.retries, 0);
    assert_int_equal(st.conns, 0);
    env_free(&e);
}

/* A listener whose accept queue is full drops SYNs: the connect hangs
 * until the connect timeout, well before the request timeout. */
static void test_connect_timeout(void **state)
{
    (void)state;
    uint16_t port;
    int l = ts_listen(0, &port);
    assert_int_equal(listen(l, 0), 0);
    int fill[3];
    for (int i = 0; i < 3; i++) {
        fill[i] = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
        struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons(port),
                                .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
        connect(fill[i], (struct sockaddr *)&a, sizeof a);
    }
    usleep(50000);
    struct eddy_http_client_options o = {.connect_timeout_ms = 200, .request_timeout_ms = 3000};
    struct env e;
    env_init(&e, &o);
    struct eddy_http_fetch f;
    memset(&f, 0, sizeof f);
    snprintf(url, sizeof url, "http://127.0.0.1:%u/", (unsigned)port);
    int64_t t0 = ts_now_ms();
    int err = fetch_url(&e, &f, url);
    int64_t took = ts_now_ms() - t0;
    assert_int_equal(err, -ETIMEDOUT);
    assert_true(took >= 200);
    assert_true(took < 1500);
    /* the fetch's own connect timeout wins over the client's */
    f.connect_timeout_ms = 500;
    t0 = ts_now_ms();
    assert_int_equal(fetch_url(&e, &f, url), -ETIMEDOUT);
    took = ts_now_ms() - t0;
    assert_true(took >= 500 && took < 2000);
    env_free(&e);
    for (int i = 0; i < 3; i++)
        close(fill[i]);
    close(l);
}

/* Timeouts while queued and while connecting, and a cancel while the name
 * is being resolved. */
static void test_timeouts_anywhere(void **state)
{
    (void)state;
    struct upstream u;
    up_start(&u, UP_SILENT);
    struct eddy_http_client_options o = {.max_conns_per_origin = 1};
    struct env e;
    env_init(&e, &o);
    struct eddy_http_fetch f[2];
    struct fres r[2];
    memset(f, 0, sizeof f);
    memset(r, 0, sizeof r);
    up_url(&u, url, sizeof url, "/q");
    for (int i = 0; i < 2; i++) {
        f[i].url = url;
        f[i].data = &r[i];
        f[i].request_timeout_ms = i == 0 ? 400 : 100;
        assert_int_equal(eddy_http_fetch_start(e.cli, &f[i], on_fetch), 0);
    }
    ts_run_until(e.loop, &r[1].calls, 2000);
    assert_int_equal(r[1].err, -ETIMEDOUT); /* still in the queue */
    assert_int_equal(f[1].attempts, 0);
    assert_int_equal(r[0].calls, 0);
    ts_run_until(e.loop, &r[0].calls, 2000);
    assert_int_equal(r[0].err, -ETIMEDOUT); /* on the wire */
    assert_int_equal(f[0].attempts, 1);
    env_free(&e);
    up_stop(&u);

    /* the request timeout while the connect hangs */
    uint16_t port;
    int l = ts_listen(0, &port);
    assert_int_equal(listen(l, 0), 0);
    int fill[3];
    for (int i = 0; i < 3; i++) {
        fill[i] = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
        struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons(port),
                                .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
        connect(fill[i], (struct sockaddr *)&a, sizeof a);
    }
    usleep(50000);
    env_init(&e, NULL);
    memset(f, 0, sizeof f);
    snprintf(url, sizeof url, "http://127.0.0.1:%u/", (unsigned)port);
    f[0].url = url;
    f[0].request_timeout_ms = 150;
    int64_t t0 = ts_now_ms();
    assert_int_equal(fetch_run(&e, &f[0], &r[0], 2000), -ETIMEDOUT);
    assert_true(ts_now_ms() - t0 >= 150);
    assert_true(ts_now_ms() - t0 < 1000);
    /* cancel during name resolution: the fetch ends, the resolution runs on */
    f[1].url = "http://localhost:1/";
    f[1].data = &r[1];
    memset(&r[1], 0, sizeof r[1]);
    assert_int_equal(eddy_http_fetch_start(e.cli, &f[1], on_fetch), 0);
    assert_int_equal(eddy_http_fetch_cancel(e.cli, &f[1]), 0);
    ts_run_until(e.loop, &r[1].calls, 2000);
    assert_int_equal(r[1].err, -ECANCELED);
    env_free(&e);
    for (int i = 0; i < 3; i++)
        close(fill[i]);
    close(l);
}

/* Many fetches with short timeouts and cancels racing real answers: each
 * callback exactly once, with a result that fits, and a clean close. */
static void test_stress(void **state)
{
    (void)state;
    struct eddy_http_client_options o = {.max_conns_per_origin = 6};
    struct env e;
    env_init(&e, &o);
    enum { N = 300 };
    static struct eddy_http_fetch f[N];
    static struct fres r[N];
    static char urls[N][128];
    memset(f, 0, sizeof f);
    memset(r, 0, sizeof r);
    unsigned seed = 12345;
    for (int i = 0; i < N; i++) {
        seed = seed * 1103515245 + 12345;
        int ms = (int)(seed >> 16) % 20;
        snprintf(urls[i], sizeof urls[i], "http://127.0.0.1:%d/async?ms=%d&id=%d",
                 atomic_load(&S.port), ms, i);
        f[i].url = urls[i];
        f[i].data = &r[i];
        f[i].request_timeout_ms = i % 5 == 0 ? 1 + (unsigned)(seed >> 8) % 40 : 5000;
        assert_int_equal(eddy_http_fetch_start(e.cli, &f[i], on_fetch), 0);
        if (i % 3 == 0)
            eddy_loop_run(e.loop, EDDY_RUN_NOWAIT);
        if (i % 7 == 0 && i >= 7)
            eddy_http_fetch_cancel(e.cli, &f[i - 7]);
    }
    for (int i = 0; i < N; i++)
        ts_run_until(e.loop, &r[i].calls, 10000);
    int ok = 0, timedout = 0, cancelled = 0;
    for (int i = 0; i < N; i++) {
        assert_int_equal(r[i].calls, 1);
        if (r[i].err == 0) {
            char want[32];
            snprintf(want, sizeof want, "async %d", i);
            assert_string_equal(f[i].resp.body, want);
            ok++;
        } else if (r[i].err == -ETIMEDOUT) {
            assert_int_equal(i % 5, 0);
            timedout++;
        } else {
            assert_int_equal(r[i].err, -ECANCELED);
            cancelled++;
        }
        eddy_http_fetch_release(&f[i]);
    }
    assert_int_equal(ok + timedout + cancelled, N);
    assert_true(ok > N / 2);
    struct eddy_http_client_stats st;
    eddy_http_client_stats(e.cli, &st);
    assert_true(st.conns <= 6);
    env_free(&e);
}

static void test_faults(void **state)
{
    (void)state;
    static const struct {
        enum up_mode mode;
        int err;
        const char *body;
    } cases[] = {
        {UP_RESET_BODY, -ECONNRESET, NULL},
        {UP_TRUNCATED, -ECONNRESET, NULL},
        {UP_CHUNKED, 0, "hello world"},
        {UP_UNTIL_CLOSE, 0, "until close"},
        {UP_GARBAGE, -EPROTO, NULL},
        {UP_BIG, -EMSGSIZE, NULL},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        struct upstream u;
        up_start(&u, cases[i].mode);
        struct eddy_http_client_options o = {.max_response_bytes = 1 << 20};
        struct env e;
        env_init(&e, &o);
        struct eddy_http_fetch f;
        memset(&f, 0, sizeof f);
        up_url(&u, url, sizeof url, "/fault");
        int err = fetch_url(&e, &f, url);
        if (err != cases[i].err)
            fail_msg("case %zu: %d (%s), want %d", i, err, eddy_strerror(err), cases[i].err);
        if (cases[i].body) {
            assert_int_equal(f.resp.status, 200);
            assert_string_equal(f.resp.body, cases[i].body);
        } else {
            assert_null(f.resp.body);
            assert_int_equal(f.resp.body_len, 0);
        }
        struct eddy_http_client_stats st;
        eddy_http_client_stats(e.cli, &st);
        /* only the chunked answer leaves a reusable connection */
        assert_int_equal(st.idle, cases[i].mode == UP_CHUNKED);
        eddy_http_fetch_release(&f);
        env_free(&e);
        up_stop(&u);
    }
}

/* The server closes a pooled connection as the next request arrives: GET
 * is retried once on a fresh connection, POST is not. */
static void test_stale_retry(void **state)
{
    (void)state;
    struct upstream u;
    up_start(&u, UP_CLOSE_SECOND);
    struct env e;
    env_init(&e, NULL);
    struct eddy_http_fetch f;
    memset(&f, 0, sizeof f);
    up_url(&u, url, sizeof url, "/r");
    assert_int_equal(fetch_url(&e, &f, url), 0);
    assert_int_equal(f.attempts, 1);
    assert_int_equal(fetch_url(&e, &f, url), 0);
    assert_string_equal(f.resp.body, "echo:GET /r HTTP/1.1|");
    assert_int_equal(f.attempts, 2);
    assert_int_equal(f.reused, 1);
    struct eddy_http_client_stats st;
    eddy_http_client_stats(e.cli, &st);
    assert_int_equal(st.retries, 1);
    assert_int_equal(st.connects, 2);
    assert_int_equal(atomic_load(&u.conns), 2);
    assert_int_equal(atomic_load(&u.reqs), 3);
    /* POST on the (now pooled) second connection: closed, not retried */
    f.method = "POST";
    assert_int_equal(fetch_url(&e, &f, url), -ECONNRESET);
    assert_int_equal(f.attempts, 1);
    eddy_http_client_stats(e.cli, &st);
    assert_int_equal(st.retries, 1);
    assert_int_equal(atomic_load(&u.reqs), 4);
    env_free(&e);
    up_stop(&u);

    /* A pooled connection the server already closed is noticed before use. */
    up_start(&u, UP_CLOSE_AFTER);
    env_init(&e, NULL);
    memset(&f, 0, sizeof f);
    f.method = "POST";
    up_url(&u, url, sizeof url, "/c");
    assert_int_equal(fetch_url(&e, &f, url), 0);
    int64_t end = ts_now_ms() + 2000;
    while (atomic_load(&u.cur) > 0 && ts_now_ms() < end)
        usleep(1000);
    usleep(20000);
    assert_int_equal(fetch_url(&e, &f, url), 0);
    assert_string_equal(f.resp.body, "echo:POST /c HTTP/1.1|");
    assert_int_equal(f.reused, 0);
    assert_int_equal(f.attempts, 1);
    assert_int_equal(atomic_load(&u.conns), 2);
    eddy_http_fetch_release(&f);
    env_free(&e);
    up_stop(&u);
}

static void test_cancel(void **state)
{
    (void)state;
    struct upstream u;
    up_start(&u, UP_SILENT);
    struct eddy_http_client_options o = {.max_conns_per_origin = 1};
    struct env e;
    env_init(&e, &o);
    struct eddy_http_fetch f[3];
    struct fres r[3];
    memset(f, 0, sizeof f);
    memset(r, 0, sizeof r);
    up_url(&u, url, sizeof url, "/x");
    for (int i = 0; i < 3; i++) {
        f[i].url = url;
        f[i].data = &r[i];
        assert_int_equal(eddy_http_fetch_start(e.cli, &f[i], on_fetch), 0);
        assert_true(eddy_http_fetch_active(&f[i]));
    }
    assert_int_equal(eddy_http_fetch_start(e.cli, &f[0], on_fetch), -EBUSY);
    /* cancel a queued one: no callback from inside the cancel */
    assert_int_equal(eddy_http_fetch_cancel(e.cli, &f[2]), 0);
    assert_int_equal(r[2].calls, 0);
    ts_run_until(e.loop, &r[2].calls, 2000);
    assert_int_equal(r[2].err, -ECANCELED);
    assert_int_equal(eddy_http_fetch_cancel(e.cli, &f[2]), -ENOENT);
    /* cancel the one on the wire, once the upstream has its request */
    int64_t end = ts_now_ms() + 2000;
    while (atomic_load(&u.reqs) < 1 && ts_now_ms() < end)
        eddy_loop_run(e.loop, EDDY_RUN_NOWAIT);
    assert_int_equal(atomic_load(&u.reqs), 1);
    assert_int_equal(eddy_http_fetch_cancel(e.cli, &f[0]), 0);
    ts_run_until(e.loop, &r[0].calls, 2000);
    assert_int_equal(r[0].err, -ECANCELED);
    /* its connection closed, so the queued one gets a new connection */
    end = ts_now_ms() + 2000;
    while (atomic_load(&u.reqs) < 2 && ts_now_ms() < end)
        eddy_loop_run(e.loop, EDDY_RUN_NOWAIT);
    assert_int_equal(atomic_load(&u.reqs), 2);
    assert_int_equal(atomic_load(&u.conns), 2);
    assert_int_equal(r[1].calls, 0);
    /* closing the client cancels what is left */
    assert_int_equal(eddy_http_client_close(e.cli, on_closed_cli, &e), 0);
    struct eddy_http_fetch g;
    memset(&g, 0, sizeof g);
    g.url = url;
    assert_int_equal(eddy_http_fetch_start(e.cli, &g, on_fetch), -ESHUTDOWN);
    assert_int_equal(eddy_http_client_destroy(e.cli), -EBUSY);
    ts_run_until(e.loop, &e.done, 2000);
    assert_int_equal(r[1].calls, 1);
    assert_int_equal(r[1].err, -ECANCELED);
    assert_int_equal(r[0].calls, 1);
    assert_int_equal(r[2].calls, 1);
    assert_int_equal(eddy_http_client_destroy(e.cli), 0);
    ts_loop_free(e.loop);
    wait_fds(e.fds_before);
    up_stop(&u);
}

/* A callback may start its own fetch again (and chain). */
static int chain_left;
static struct eddy_http_client *chain_cli;
static void on_chain(struct eddy_http_fetch *f, int err)
{
    struct fres *r = f->data;
    assert_int_equal(err, 0);
    assert_int_equal(f->resp.status, 200);
    if (--chain_left > 0) {
        assert_int_equal(eddy_http_fetch_start(chain_cli, f, on_chain), 0);
        return;
    }
    r->calls++;
}

static void test_restart_in_callback(void **state)
{
    (void)state;
    struct env e;
    env_init(&e, NULL);
    struct eddy_http_fetch f;
    memset(&f, 0, sizeof f);
    struct fres r = {0};
    chain_left = 5;
    chain_cli = e.cli;
    f.url = surl("/plaintext");
    f.data = &r;
    assert_int_equal(eddy_http_fetch_start(e.cli, &f, on_chain), 0);
    ts_run_until(e.loop, &r.calls, 5000);
    assert_int_equal(chain_left, 0);
    struct eddy_http_client_stats st;
    eddy_http_client_stats(e.cli, &st);
    assert_int_equal(st.fetches, 5);
    assert_int_equal(st.connects, 1);
    eddy_http_fetch_release(&f);
    env_free(&e);
}

/* Idle pooled connections expire after keepalive_idle_ms. */
static void test_idle_expiry(void **state)
{
    (void)state;
    struct eddy_http_client_options o = {.keepalive_idle_ms = 100};
    struct env e;
    env_init(&e, &o);
    struct eddy_http_fetch f;
    memset(&f, 0, sizeof f);
    assert_int_equal(fetch_url(&e, &f, surl("/plaintext")), 0);
    struct eddy_http_client_stats st;
    eddy_http_client_stats(e.cli, &st);
    assert_int_equal(st.idle, 1);
    /* the loop ends by itself once the idle connection expired */
    int64_t t0 = ts_now_ms();
    ts_run_idle(e.loop, 2000);
    assert_true(ts_now_ms() - t0 >= 90);
    eddy_http_client_stats(e.cli, &st);
    assert_int_equal(st.idle, 0);
    assert_int_equal(st.conns, 0);
    assert_int_equal(fetch_url(&e, &f, surl("/plaintext")), 0);
    assert_int_equal(f.reused, 0);
    eddy_http_fetch_release(&f);
    env_free(&e);
}

/* ---- responses without a body ------------------------------------------ */

/* 1xx, 204 and 304 never have a body, whatever their headers say (RFC 9112
 * 6.3), nor has the answer to HEAD; interim 1xx answers are skipped.  Each
 * case is followed by a second fetch on the same pooled connection, which
 * must find it in sync. */
static void test_no_body_statuses(void **state)
{
    (void)state;
    static const struct {
        const char *method;
        const char *answer;
        int status;
        const char *body;
        const char *hname, *hval;
    } cases[] = {
        {NULL, "HTTP/1.1 304 Not Modified\r\nContent-Length: 50\r\nETag: \"v1\"\r\n\r\n", 304,
         NULL, "ETag", "\"v1\""},
        {NULL, "HTTP/1.1 204 No Content\r\nContent-Length: 7\r\n\r\n", 204, NULL,
         "content-length", "7"},
        {NULL, "HTTP/1.1 304 Not Modified\r\nTransfer-Encoding: chunked\r\n\r\n", 304, NULL,
         NULL, NULL},
        {"HEAD", "HTTP/1.1 200 OK\r\nContent-Length: 50\r\n\r\n", 200, NULL, "content-length",
         "50"},
        {"HEAD", "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n", 200, NULL, NULL, NULL},
        /* interim answers, each in its own segment (\x01: a 30 ms pause) */
        {NULL,
         "HTTP/1.1 100 Continue\r\n\r\n\x01"
         "HTTP/1.1 103 Early Hints\r\nLink: </a.css>; rel=preload\r\n\r\n\x01"
         "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok",
         200, "ok", "link", NULL},
        {NULL, "HTTP/1.1 102 Processing\r\nContent-Length: 4\r\n\r\n\x01"
               "HTTP/1.1 304 Not Modified\r\nContent-Length: 9\r\n\r\n",
         304, NULL, "content-length", "9"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        struct upstream u;
        up_start_script(&u, cases[i].answer, NULL);
        struct eddy_http_client_options o = {.request_timeout_ms = 2000};
        struct env e;
        env_init(&e, &o);
        struct eddy_http_fetch f;
        memset(&f, 0, sizeof f);
        up_url(&u, url, sizeof url, "/nb");
        f.method = cases[i].method;
        int64_t t0 = ts_now_ms();
        int err = fetch_url(&e, &f, url);
        int64_t took = ts_now_ms() - t0;
        if (err != 0)
            fail_msg("case %zu: %d (%s) after %d ms", i, err, eddy_strerror(err), (int)took);
        assert_true(took < 1000);
        assert_int_equal(f.resp.status, cases[i].status);
        if (cases[i].body) {
            assert_string_equal(f.resp.body, cases[i].body);
        } else {
            assert_null(f.resp.body);
            assert_int_equal(f.resp.body_len, 0);
        }
        if (cases[i].hname && cases[i].hval)
            assert_string_equal(eddy_http_response_header(&f.resp, cases[i].hname),
                                cases[i].hval);
        else if (cases[i].hname)
            assert_null(eddy_http_response_header(&f.resp, cases[i].hname));
        struct eddy_http_client_stats st;
        eddy_http_client_stats(e.cli, &st);
        assert_int_equal(st.idle, 1);
        /* the connection is still in sync */
        f.method = NULL;
        assert_int_equal(fetch_url(&e, &f, url), 0);
        assert_int_equal(f.reused, 1);
        assert_string_equal(f.resp.body, "echo:GET /nb HTTP/1.1|");
        assert_int_equal(atomic_load(&u.conns), 1);
        eddy_http_fetch_release(&f);
        env_free(&e);
        up_stop(&u);
    }
}

/* ---- name resolution ---------------------------------------------------- */

/* The worker pool's only thread is busy with a long job: a fetch of a name
 * must not wait for it. */
struct blocker {
    struct eddy_op op;
    int pipe[2];
    atomic_int started;
    volatile int done;
    int res;
};

static int blocker_fn(struct eddy_op *op)
{
    struct blocker *b = eddy_container_of(op, struct blocker, op);
    atomic_store(&b->started, 1);
    struct pollfd p = {.fd = b->pipe[0], .events = POLLIN};
    return poll(&p, 1, 5000); /* 1 when released, 0 after 5 s */
}

static void blocker_done(struct eddy_op *op, int res)
{
    struct blocker *b = eddy_container_of(op, struct blocker, op);
    b->res = res;
    b->done = 1;
}

static int have_localhost(void)
{
    struct addrinfo *ai = NULL;
    if (getaddrinfo("localhost", NULL, NULL, &ai) != 0)
        return 0;
    freeaddrinfo(ai);
    return 1;
}

static void test_resolver_not_behind_pool(void **state)
{
    (void)state;
    if (!have_localhost())
        skip();
    struct upstream u;
    up_start(&u, UP_OK);
    struct env e;
    memset(&e, 0, sizeof e);
    e.fds_before = ts_fd_count();
    struct eddy_loop_options lo;
    eddy_loop_options_init(&lo);
    lo.pool_threads = 1;
    e.loop = ts_loop_new(&lo);
    struct eddy_http_client_options o = {.request_timeout_ms = 3000};
    assert_int_equal(eddy_http_client_init(&e.cli, e.loop, &o), 0);
    /* numeric addresses never start the resolver */
    struct eddy_http_fetch f;
    memset(&f, 0, sizeof f);
    up_url(&u, url, sizeof url, "/n");
    assert_int_equal(fetch_url(&e, &f, url), 0);
    struct eddy_http_client_stats st;
    eddy_http_client_stats(e.cli, &st);
    assert_int_equal(st.resolutions, 0);
    assert_int_equal(st.resolver_threads, 0);

    static struct blocker b; /* outlives a failed test: the job may still run */
    memset(&b, 0, sizeof b);
    assert_int_equal(pipe2(b.pipe, O_CLOEXEC), 0);
    assert_int_equal(eddy_work(e.loop, &b.op, blocker_fn, blocker_done), 0);
    int64_t end = ts_now_ms() + 2000;
    while (!atomic_load(&b.started) && ts_now_ms() < end)
        eddy_loop_run(e.loop, EDDY_RUN_NOWAIT);
    assert_true(atomic_load(&b.started));

    snprintf(url, sizeof url, "http://localhost:%u/name", (unsigned)u.port);
    int64_t t0 = ts_now_ms();
    int err = fetch_url(&e, &f, url);
    int64_t took = ts_now_ms() - t0;
    if (err != 0)
        fail_msg("fetch: %d (%s) after %d ms", err, eddy_strerror(err), (int)took);
    assert_string_equal(f.resp.body, "echo:GET /name HTTP/1.1|");
    assert_true(took < 1000);
    assert_int_equal(b.done, 0); /* the job still holds the pool */
    eddy_http_client_stats(e.cli, &st);
    assert_int_equal(st.resolutions, 1);
    assert_int_equal(st.resolver_threads, 1);

    assert_int_equal(write(b.pipe[1], "x", 1), 1);
    ts_run_until(e.loop, &b.done, 3000);
    assert_int_equal(b.res, 1);
    close(b.pipe[0]);
    close(b.pipe[1]);
    eddy_http_fetch_release(&f);
    env_free(&e);
    up_stop(&u);
}

/*
 * A slow resolver, under the test's control: this executable's
 * getaddrinfo() takes the place of the C library's (which it calls) and
 * holds names ending in ".test" (resolved as 127.0.0.1) while gai_hold is
 * set, each at most gai_hold_ms (0: 5 s) from when its resolution began.
 */
static pthread_mutex_t gai_mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t gai_cv = PTHREAD_COND_INITIALIZER;
static int gai_hold, gai_hold_ms, gai_waiting;

typedef int (*gai_fn)(const char *, const char *, const struct addrinfo *, struct addrinfo **);
static gai_fn gai_real;
static pthread_once_t gai_once = PTHREAD_ONCE_INIT;

/* Once, whichever thread resolves first: the resolver threads race here. */
static void gai_find_real(void) { *(void **)&gai_real = dlsym(RTLD_NEXT, "getaddrinfo"); }

int getaddrinfo(const char *node, const char *service, const struct addrinfo *hints,
                struct addrinfo **res)
{
    pthread_once(&gai_once, gai_find_real);
    size_t nl = node ? strlen(node) : 0;
    if (nl > 5 && !strcmp(node + nl - 5, ".test")) {
        struct timespec until;
        clock_gettime(CLOCK_REALTIME, &until);
        pthread_mutex_lock(&gai_mu);
        long ms = gai_hold_ms ? gai_hold_ms : 5000;
        until.tv_sec += ms / 1000;
        until.tv_nsec += (ms % 1000) * 1000000;
        if (until.tv_nsec >= 1000000000) {
            until.tv_sec++;
            until.tv_nsec -= 1000000000;
        }
        gai_waiting++;
        pthread_cond_broadcast(&gai_cv);
        while (gai_hold && pthread_cond_timedwait(&gai_cv, &gai_mu, &until) == 0)
            ;
        gai_waiting--;
        pthread_mutex_unlock(&gai_mu);
        node = "127.0.0.1";
    }
    return gai_real(node, service, hints, res);
}

/* hold_ms: how long each held name is held at most (0: 5 s). */
static void gai_set_hold_for(int hold, int hold_ms)
{
    pthread_mutex_lock(&gai_mu);
    gai_hold = hold;
    gai_hold_ms = hold_ms;
    pthread_cond_broadcast(&gai_cv);
    pthread_mutex_unlock(&gai_mu);
}

static void gai_set_hold(int hold) { gai_set_hold_for(hold, 0); }

/* Waits until exactly n resolutions are held. */
static void gai_wait_held(int n)
{
    int64_t end = ts_now_ms() + 2000;
    pthread_mutex_lock(&gai_mu);
    while (gai_waiting != n && ts_now_ms() < end) {
        pthread_mutex_unlock(&gai_mu);
        usleep(1000);
        pthread_mutex_lock(&gai_mu);
    }
    int w = gai_waiting;
    pthread_mutex_unlock(&gai_mu);
    assert_int_equal(w, n);
}

/* Cancel and close while the name is being resolved: the fetch ends at
 * once; the resolution's result, arriving later, finds nothing freed. */
static void test_resolver_cancel_and_close(void **state)
{
    (void)state;
    struct upstream u;
    up_start(&u, UP_OK);
    struct env e;
    env_init(&e, NULL);
    char surl_[128];
    snprintf(surl_, sizeof surl_, "http://slow.test:%u/s", (unsigned)u.port);

    /* resolved by the client's own threads */
    struct eddy_http_fetch f;
    memset(&f, 0, sizeof f);
    assert_int_equal(fetch_url(&e, &f, surl_), 0);
    assert_string_equal(f.resp.body, "echo:GET /s HTTP/1.1|");
    eddy_http_fetch_release(&f);
    env_free(&e);

    /* cancel: the callback comes while the resolution is still held */
    env_init(&e, NULL);
    gai_set_hold(1);
    struct eddy_http_fetch *g = calloc(1, sizeof *g);
    struct fres r = {0};
    g->url = surl_;
    g->data = &r;
    assert_int_equal(eddy_http_fetch_start(e.cli, g, on_fetch), 0);
    gai_wait_held(1);
    assert_int_equal(eddy_http_fetch_cancel(e.cli, g), 0);
    int64_t t0 = ts_now_ms();
    ts_run_until(e.loop, &r.calls, 1000);
    assert_true(ts_now_ms() - t0 < 500);
    assert_int_equal(r.err, -ECANCELED);
    free(g); /* the fetch is the caller's again */
    struct eddy_http_client_stats st;
    eddy_http_client_stats(e.cli, &st);
    assert_int_equal(st.active, 0);
    assert_int_equal(eddy_http_client_destroy(e.cli), -EBUSY); /* the resolution runs */
    /* a numeric fetch meanwhile is not held up */
    memset(&f, 0, sizeof f);
    up_url(&u, url, sizeof url, "/n");
    assert_int_equal(fetch_url(&e, &f, url), 0);
    eddy_http_fetch_release(&f);
    gai_set_hold(0);
    gai_wait_held(0);
    env_free(&e);

    /* close: the fetch is cancelled at once, done waits for the resolution */
    env_init(&e, NULL);
    gai_set_hold(1);
    memset(&f, 0, sizeof f);
    memset(&r, 0, sizeof r);
    f.url = surl_;
    f.data = &r;
    assert_int_equal(eddy_http_fetch_start(e.cli, &f, on_fetch), 0);
    gai_wait_held(1);
    assert_int_equal(eddy_http_client_close(e.cli, on_closed_cli, &e), 0);
    ts_run_until(e.loop, &r.calls, 1000);
    assert_int_equal(r.err, -ECANCELED);
    ts_run_for(e.loop, 50);
    assert_int_equal(e.done, 0);
    assert_int_equal(eddy_http_client_destroy(e.cli), -EBUSY);
    gai_set_hold(0);
    ts_run_until(e.loop, &e.done, 3000);
    assert_int_equal(eddy_http_client_destroy(e.cli), 0);
    ts_loop_free(e.loop);
    wait_fds(e.fds_before);
    up_stop(&u);
}

/* At most two resolver threads: a third name waits for one of them. */
static void test_resolver_threads_cap(void **state)
{
    (void)state;
    struct upstream u;
    up_start(&u, UP_OK);
    struct env e;
    env_init(&e, NULL);
    enum { N = 3 };
    struct eddy_http_fetch f[N];
    struct fres r[N];
    char urls[N][128];
    memset(f, 0, sizeof f);
    memset(r, 0, sizeof r);
    gai_set_hold(1);
    for (int i = 0; i < N; i++) {
        snprintf(urls[i], sizeof urls[i], "http://n%d.test:%u/t%d", i, (unsigned)u.port, i);
        f[i].url = urls[i];
        f[i].data = &r[i];
        assert_int_equal(eddy_http_fetch_start(e.cli, &f[i], on_fetch), 0);
    }
    gai_wait_held(2);
    ts_run_for(e.loop, 50);
    gai_wait_held(2); /* not three */
    struct eddy_http_client_stats st;
    eddy_http_client_stats(e.cli, &st);
    assert_int_equal(st.resolver_threads, 2);
    assert_int_equal(st.resolutions, 0);
    assert_int_equal(r[0].calls + r[1].calls + r[2].calls, 0);
    gai_set_hold(0);
    for (int i = 0; i < N; i++) {
        ts_run_until(e.loop, &r[i].calls, 3000);
        assert_int_equal(r[i].err, 0);
        char want[64];
        snprintf(want, sizeof want, "echo:GET /t%d HTTP/1.1|", i);
        assert_string_equal(f[i].resp.body, want);
        eddy_http_fetch_release(&f[i]);
    }
    eddy_http_client_stats(e.cli, &st);
    assert_int_equal(st.resolver_threads, 2);
    assert_int_equal(st.resolutions, 3);
    env_free(&e);
    up_stop(&u);
}

/*
 * A name still waiting for a resolver thread is dropped once no fetch
 * wants it: a cancelled fetch's name is never resolved, and close's done
 * callback waits only for the two names being resolved, not for every
 * queued name two at a time.
 */
static void test_resolver_queue_dropped(void **state)
{
    (void)state;
    struct upstream u;
    up_start(&u, UP_OK);
    struct env e;
    env_init(&e, NULL);
    enum { N = 6, HOLD_MS = 500 };
    struct eddy_http_fetch f[N];
    struct fres r[N];
    char urls[N][128];
    memset(f, 0, sizeof f);
    memset(r, 0, sizeof r);
    for (int i = 0; i < N; i++) {
        snprintf(urls[i], sizeof urls[i], "http://q%d.test:%u/q%d", i, (unsigned)u.port, i);
        f[i].url = urls[i];
        f[i].data = &r[i];
    }

    /* cancel: the third name, queued behind two held ones, is dropped */
    gai_set_hold(1);
    for (int i = 0; i < 3; i++)
        assert_int_equal(eddy_http_fetch_start(e.cli, &f[i], on_fetch), 0);
    gai_wait_held(2);
    struct eddy_http_client_stats st;
    eddy_http_client_stats(e.cli, &st);
    assert_int_equal(st.origins, 3);
    assert_int_equal(eddy_http_fetch_cancel(e.cli, &f[2]), 0);
    ts_run_until(e.loop, &r[2].calls, 1000);
    assert_int_equal(r[2].err, -ECANCELED);
    eddy_http_client_stats(e.cli, &st);
    assert_int_equal(st.origins, 2);
    assert_int_equal(st.active, 2);
    gai_set_hold(0);
    for (int i = 0; i < 2; i++) {
        ts_run_until(e.loop, &r[i].calls, 3000);
        assert_int_equal(r[i].err, 0);
        eddy_http_fetch_release(&f[i]);
    }
    assert_int_equal(eddy_http_client_close(e.cli, on_closed_cli, &e), 0);
    ts_run_until(e.loop, &e.done, 3000);
    eddy_http_client_stats(e.cli, &st);
    assert_int_equal(st.resolutions, 2); /* q2.test never reached getaddrinfo */
    assert_int_equal(st.origins, 0);
    assert_int_equal(eddy_http_client_destroy(e.cli), 0);
    ts_loop_free(e.loop);
    wait_fds(e.fds_before);
    gai_wait_held(0);

    /* close with two names held and four queued: done after one hold */
    env_init(&e, NULL);
    memset(r, 0, sizeof r);
    gai_set_hold_for(1, HOLD_MS);
    for (int i = 0; i < N; i++)
        assert_int_equal(eddy_http_fetch_start(e.cli, &f[i], on_fetch), 0);
    gai_wait_held(2);
    int64_t t0 = ts_now_ms();
    assert_int_equal(eddy_http_client_close(e.cli, on_closed_cli, &e), 0);
    for (int i = 0; i < N; i++) {
        ts_run_until(e.loop, &r[i].calls, 1000);
        assert_int_equal(r[i].calls, 1);
        assert_int_equal(r[i].err, -ECANCELED);
    }
    ts_run_until(e.loop, &e.done, 3000);
    int64_t took = ts_now_ms() - t0;
    /* at most one hold (HOLD_MS) plus slack for a loaded machine; waiting
     * for the queued names too takes three holds (ceil(6 / 2) x 500 ms) */
    if (took >= 2 * HOLD_MS)
        fail_msg("close done after %lld ms, want < %d", (long long)took, 2 * HOLD_MS);
    eddy_http_client_stats(e.cli, &st);
    assert_int_equal(st.resolutions, 2);
    assert_int_equal(st.origins, 0);
    assert_int_equal(eddy_http_client_destroy(e.cli), 0);
    ts_loop_free(e.loop);
    wait_fds(e.fds_before);
    gai_wait_held(0);
    gai_set_hold(0);
    up_stop(&u);
}

/* ---- origins ------------------------------------------------------------ */

/* Fails allocations too large for anything but a connection (its 16 KiB
 * receive buffer) while fail_conn_alloc is set. */
static volatile int fail_conn_alloc;

static void *alloc_fail_conn(void *ud, void *p, size_t n)
{
    (void)ud;
    if (n == 0) {
        free(p);
        return NULL;
    }
    if (fail_conn_alloc && n > 16384)
        return NULL;
    return realloc(p, n);
}

/*
 * A fetch that fails as it starts to be served leaves no origin behind.
 * The three such failures (no memory for the connection, no socket or no
 * connect, no resolver thread) end the fetch inside the same dispatch,
 * after which fetch_start frees the unused origin; the allocation failure
 * is the one a test can cause on demand.
 */
static void test_origin_freed_on_failure(void **state)
{
    (void)state;
    struct upstream u;
    up_start(&u, UP_OK);
    struct eddy_loop_options lo = {.alloc = alloc_fail_conn};
    struct env e;
    memset(&e, 0, sizeof e);
    e.fds_before = ts_fd_count();
    e.loop = ts_loop_new(&lo);
    assert_int_equal(eddy_http_client_init(&e.cli, e.loop, NULL), 0);
    struct eddy_http_fetch f;
    memset(&f, 0, sizeof f);
    up_url(&u, url, sizeof url, "/o");
    fail_conn_alloc = 1;
    assert_int_equal(fetch_url(&e, &f, url), -ENOMEM);
    fail_conn_alloc = 0;
    struct eddy_http_client_stats st;
    eddy_http_client_stats(e.cli, &st);
    assert_int_equal(st.connects, 0);
    assert_int_equal(st.active, 0);
    assert_int_equal(st.origins, 0);
    /* the same origin works afterwards, and is kept while pooled */
    assert_int_equal(fetch_url(&e, &f, url), 0);
    assert_string_equal(f.resp.body, "echo:GET /o HTTP/1.1|");
    eddy_http_fetch_release(&f);
    eddy_http_client_stats(e.cli, &st);
    assert_int_equal(st.idle, 1);
    assert_int_equal(st.origins, 1);
    env_free(&e);
    up_stop(&u);
}

/* ---- request headers ---------------------------------------------------- */

/* The client owns the framing: a user Host replaces its own, framing
 * headers and malformed names or values are refused at start. */
static void test_request_headers(void **state)
{
    (void)state;
    struct upstream u;
    up_start(&u, UP_OK);
    struct env e;
    env_init(&e, NULL);
    struct eddy_http_fetch f;
    memset(&f, 0, sizeof f);
    up_url(&u, url, sizeof url, "/h");
    struct eddy_http_pair h[] = {{"HOST", "example.com"}, {"X-A", "1"}};
    f.headers = h;
    f.nheaders = 2;
    assert_int_equal(fetch_url(&e, &f, url), 0);
    const char *req = up_req(&u, 0);
    assert_non_null(req);
    assert_non_null(strstr(req, "\r\nHOST: example.com\r\n"));
    assert_null(strcasestr(strcasestr(req, "\r\nhost:") + 1, "\r\nhost:")); /* only one */
    assert_non_null(strstr(req, "\r\nX-A: 1\r\n"));

    static const struct eddy_http_pair bad[] = {
        {"Content-Length", "3"}, {"transfer-encoding", "chunked"}, {"CONNECTION", "close"},
        {"X Y", "a"}, {"X:", "a"}, {"", "a"}, {"X", "a\r\nB: c"}, {"X", "a\nb"}, {"X", "a\r"},
    };
    struct fres r = {0};
    f.method = "POST";
    f.body = "hello";
    f.body_len = 5;
    f.nheaders = 1;
    f.data = &r;
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        f.headers = &bad[i];
        assert_int_equal(eddy_http_fetch_start(e.cli, &f, on_fetch), -EINVAL);
        assert_false(eddy_http_fetch_active(&f));
    }
    run_for(e.loop, 20);
    assert_int_equal(r.calls, 0);
    /* the pooled connection was never written to: still in sync */
    f.headers = NULL;
    f.nheaders = 0;
    assert_int_equal(fetch_url(&e, &f, url), 0);
    assert_string_equal(f.resp.body, "echo:POST /h HTTP/1.1|hello");
    assert_int_equal(f.reused, 1);
    assert_int_equal(atomic_load(&u.reqs), 2);
    eddy_http_fetch_release(&f);
    env_free(&e);
    up_stop(&u);
}

/* ---- teardown order ----------------------------------------------------- */

/* A loop is not destroyed under a client that still uses it. */
static void test_loop_destroy_busy(void **state)
{
    (void)state;
    struct env e;
    env_init(&e, NULL);
    assert_int_equal(eddy_loop_destroy(e.loop), -EBUSY);
    assert_int_equal(eddy_http_client_destroy(e.cli), 0);
    assert_int_equal(eddy_loop_destroy(e.loop), 0);

    /* after fetches too: close, run, destroy the client, then the loop */
    env_init(&e, NULL);
    struct eddy_http_fetch f;
    memset(&f, 0, sizeof f);
    assert_int_equal(fetch_url(&e, &f, surl("/plaintext")), 0);
    eddy_http_fetch_release(&f);
    assert_int_equal(eddy_http_client_close(e.cli, on_closed_cli, &e), 0);
    ts_run_until(e.loop, &e.done, 2000);
    ts_run_idle(e.loop, 2000);
    assert_int_equal(eddy_loop_destroy(e.loop), -EBUSY);
    assert_int_equal(eddy_http_client_destroy(e.cli), 0);
    ts_loop_free(e.loop);
    wait_fds(e.fds_before);
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
        cmocka_unit_test(test_server_get_args),
        cmocka_unit_test(test_server_post_form),
        cmocka_unit_test(test_server_chunked),
        cmocka_unit_test(test_server_keepalive_reuse),
        cmocka_unit_test(test_server_v6_and_names),
        cmocka_unit_test(test_server_concurrent),
        cmocka_unit_test(test_pool_cap),
        cmocka_unit_test(test_request_timeout),
        cmocka_unit_test(test_refused),
        cmocka_unit_test(test_connect_timeout),
        cmocka_unit_test(test_timeouts_anywhere),
        cmocka_unit_test(test_stress),
        cmocka_unit_test(test_faults),
        cmocka_unit_test(test_stale_retry),
        cmocka_unit_test(test_cancel),
        cmocka_unit_test(test_restart_in_callback),
        cmocka_unit_test(test_idle_expiry),
        cmocka_unit_test(test_no_body_statuses),
        cmocka_unit_test(test_resolver_not_behind_pool),
        cmocka_unit_test(test_resolver_cancel_and_close),
        cmocka_unit_test(test_resolver_threads_cap),
        cmocka_unit_test(test_resolver_queue_dropped),
        cmocka_unit_test(test_origin_freed_on_failure),
        cmocka_unit_test(test_request_headers),
        cmocka_unit_test(test_loop_destroy_busy),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
