/*
 * Faults against a live server on loopback: peers that reset in the middle
 * of a request and of a large answer, half-closed clients (shutdown
 * SHUT_WR after the request) that still get their answers (with
 * eof_finish also those of asynchronous handlers; without it they are
 * aborted), clients that close for good while eof_finish waits for their
 * answers (the abort comes at the failed send or at eof_timeout_ms), a connection
 * served through eddy_http_server_adopt (a socketpair end), and allocation
 * failure injected through the loop's allocator hook (every Nth call
 * fails): each request then gets its answer, a 503, or a close -- never a
 * wrong answer, a hang, a crash or a leak (the ASan build runs LSan at
 * exit) -- and the server serves normally once allocation works again.
 * After each case the process's descriptor count is back to its baseline.
 */
#include "http_util.h"

#include <poll.h>

#define S(x) x, sizeof(x) - 1

static struct hsrv H;
static int baseline_fds;

static int settle_fds(void)
{
    int64_t end = ts_now_ms() + 2000;
    int prev = -1, n;
    while ((n = ts_fd_count()) != prev && ts_now_ms() < end) {
        prev = n;
        usleep(100000);
    }
    return n;
}

/* Waits (bounded) until the server has let go of every connection. */
static int fds_back(int want)
{
    int64_t end = ts_now_ms() + 3000;
    int n;
    while ((n = ts_fd_count()) != want && ts_now_ms() < end)
        usleep(500);
    return n;
}

static int setup(void **state)
{
    (void)state;
    memset(&H, 0, sizeof H);
    H.o.host = "127.0.0.1";
    H.o.max_body = 1 << 20;
    hsrv_start(&H);
    char body[64];
    assert_int_equal(simple_get(atomic_load(&H.port), "/plaintext", body, sizeof body), 200);
    baseline_fds = settle_fds();
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    hsrv_stop(&H);
    return 0;
}

/* Closes fd with a reset (SO_LINGER 0) instead of a FIN. */
static void reset_close(int fd)
{
    struct linger lg = {.l_onoff = 1, .l_linger = 0};
    assert_int_equal(setsockopt(fd, SOL_SOCKET, SO_LINGER, &lg, sizeof lg), 0);
    close(fd);
}

static void server_still_serves(void)
{
    char body[64];
    assert_int_equal(simple_get(atomic_load(&H.port), "/plaintext", body, sizeof body), 200);
    assert_string_equal(body, "Hello, World!");
    assert_int_equal(fds_back(baseline_fds), baseline_fds);
}

/* "accepted=N conns=M ...": the server's own connection count (this
 * request's connection included). */
static unsigned server_conns(void)
{
    char body[256];
    assert_int_equal(simple_get(atomic_load(&H.port), "/stats", body, sizeof body), 200);
    const char *p = strstr(body, "conns=");
    assert_non_null(p);
    return (unsigned)atoi(p + 6);
}

/* ---- resets -------------------------------------------------------------- */

static void test_reset_mid_request(void **state)
{
    (void)state;
    static const char *parts[] = {
        "GET /plain",                                                          /* request line */
        "GET /plaintext HTTP/1.1\r\nHost: t\r\nX-A: b",                        /* header section */
        "POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 1000\r\n\r\nabcdef", /* body */
        "POST /echo HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n10\r\nabc", /* chunk */
        "GET /plaintext HTTP/1.1\r\nHost: t\r\n\r\nGET /plaintext HTTP/1.1\r\nHo", /* 2nd of a pipeline */
    };
    for (size_t i = 0; i < sizeof parts / sizeof parts[0]; i++) {
        int fd = cli_connect(atomic_load(&H.port));
        cli_send(fd, parts[i], strlen(parts[i]));
        usleep(20000); /* the server has read it */
        reset_close(fd);
        server_still_serves();
    }
    assert_int_equal(server_conns(), 1);
}

static void test_reset_with_pending_async(void **state)
{
    (void)state;
    int a0 = atomic_load(&H.aborts);
    int fd = cli_connect(atomic_load(&H.port));
    cli_send(fd, S("GET /async?ms=300&id=1 HTTP/1.1\r\nHost: t\r\n\r\n"));
    usleep(30000);
    reset_close(fd);
    int64_t end = ts_now_ms() + 2000;
    while (atomic_load(&H.aborts) == a0 && ts_now_ms() < end)
        usleep(1000);
    assert_int_equal(atomic_load(&H.aborts), a0 + 1); /* the handler heard it */
    server_still_serves();
}

static void test_reset_mid_response(void **state)
{
    (void)state;
    /* 8 MiB answers, the client reads a little of each and resets: the
     * send fails, the connection and its buffers go. */
    for (int round = 0; round < 4; round++) {
        int fd = cli_connect(atomic_load(&H.port));
        int rcv = 4096;
        setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &rcv, sizeof rcv);
        cli_send(fd, S("GET /big?n=8388608 HTTP/1.1\r\nHost: t\r\n\r\n"));
        char buf[16384];
        size_t got = 0;
        while (got < (size_t)(round + 1) * 20000) {
            ssize_t n = ts_recv(fd, buf, got ? sizeof buf : 12, 0);
            assert_true(n > 0);
            if (!got) /* the answer has begun */
                assert_memory_equal(buf, "HTTP/1.1 200", (size_t)n);
            got += (size_t)n;
        }
        reset_close(fd);
        server_still_serves();
    }
    /* and a pipelined pair whose second answer is cut */
    int fd = cli_connect(atomic_load(&H.port));
    cli_send(fd, S("GET /plaintext HTTP/1.1\r\nHost: t\r\n\r\nGET /big?n=4000000 HTTP/1.1\r\nHost: t\r\n\r\n"));
    char buf[4096];
    assert_true(ts_recv(fd, buf, sizeof buf, 0) > 0);
    reset_close(fd);
    server_still_serves();
    assert_int_equal(server_conns(), 1);
}

/* ---- half-close ---------------------------------------------------------- */

/* Sends req to port, half-closes, and reads everything until the
 * server's EOF. */
static int half_closed_at(int port, const char *req, size_t len, struct resp *r, int want)
{
    int fd = cli_connect(port);
    cli_send(fd, req, len);
    assert_int_equal(shutdown(fd, SHUT_WR), 0);
    int eof = 0;
    int n = cli_read(fd, r, want + 1, 0, &eof, 1);
    assert_int_equal(eof, 1); /* a clean close, not a reset */
    close(fd);
    return n;
}

static int half_closed(const char *req, size_t len, struct resp *r, int want)
{
    return half_closed_at(atomic_load(&H.port), req, len, r, want);
}

static void test_half_close(void **state)
{
    (void)state;
    static struct resp r[4];
    /* one request */
    assert_int_equal(half_closed(S("GET /plaintext HTTP/1.1\r\nHost: t\r\n\r\n"), r, 1), 1);
    assert_int_equal(r[0].status, 200);
    assert_int_equal(r[0].blen, 13);
    assert_memory_equal(r[0].body, "Hello, World!", 13);
    /* with a body */
    assert_int_equal(half_closed(S("POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\n\r\nhello"), r, 1), 1);
    assert_int_equal(r[0].status, 200);
    assert_memory_equal(r[0].body, "hello", 5);
    /* a pipeline of three: all answered, in order */
    assert_int_equal(half_closed(S("GET /args?time=1 HTTP/1.1\r\nHost: t\r\n\r\n"
                                   "GET /nope HTTP/1.1\r\nHost: t\r\n\r\n"
                                   "GET /args?time=3 HTTP/1.1\r\nHost: t\r\n\r\n"), r, 3), 3);
    assert_int_equal(r[0].status, 200);
    assert_int_equal(r[1].status, 404);
    assert_int_equal(r[2].status, 200);
    assert_memory_equal(r[2].body, "time=3|x=none", 13);
    /* a large answer arrives whole */
    assert_int_equal(half_closed(S("GET /big?n=900000 HTTP/1.1\r\nHost: t\r\n\r\n"), r, 1), 1);
    assert_int_equal(r[0].status, 200);
    assert_int_equal(r[0].blen, 900000);
    /* a streamed answer */
    assert_int_equal(half_closed(S("GET /stream?n=3 HTTP/1.1\r\nHost: t\r\n\r\n"), r, 1), 1);
    assert_int_equal(r[0].status, 200);
    assert_memory_equal(r[0].body, "chunk 0\nchunk 1\nchunk 2\n", 24);
    /* an error answer */
    assert_int_equal(half_closed(S("GET /plaintext HTTP/1.1\r\nHost : t\r\n\r\n"), r, 1), 1);
    assert_int_equal(r[0].status, 400);
    /* an incomplete request then EOF: closed without an answer */
    assert_int_equal(half_closed(S("GET /plaintext HTTP/1.1\r\nHost: t\r\n"), r, 0), 0);
    /* a complete request followed by a partial one: the first is answered */
    assert_int_equal(half_closed(S("GET /plaintext HTTP/1.1\r\nHost: t\r\n\r\nGET /plain"), r, 1), 1);
    assert_int_equal(r[0].status, 200);
    server_still_serves();
}

static void test_half_close_async(void **state)
{
    (void)state;
    /* A half-close cannot be told from a close: a request not answered
     * when the EOF arrives is aborted (documented in http.h), the
     * connection closes cleanly, and answers made before go out first. */
    static struct resp r[3];
    int a0 = atomic_load(&H.aborts);
    assert_int_equal(half_closed(S("GET /plaintext HTTP/1.1\r\nHost: t\r\n\r\n"
                                   "GET /async?ms=200&id=2 HTTP/1.1\r\nHost: t\r\n\r\n"), r, 1), 1);
    assert_int_equal(r[0].status, 200);
    int64_t end = ts_now_ms() + 2000;
    while (atomic_load(&H.aborts) == a0 && ts_now_ms() < end)
        usleep(1000);
    assert_int_equal(atomic_load(&H.aborts), a0 + 1);
    server_still_serves();
}

/* ---- half-close with eof_finish ---------------------------------------- */

/* A second server, eof_finish = 1, for the tests below. */
static struct hsrv F;
#define F_EOF_TIMEOUT_MS 1000

static int setup_finish(void **state)
{
    (void)state;
    memset(&F, 0, sizeof F);
    F.o.host = "127.0.0.1";
    F.o.eof_finish = 1;
    F.o.eof_timeout_ms = F_EOF_TIMEOUT_MS;
    F.o.max_pipeline = 2; /* a pipeline of 3+ stashes and resumes after the EOF */
    hsrv_start(&F);
    char body[64];
    assert_int_equal(simple_get(atomic_load(&F.port), "/plaintext", body, sizeof body), 200);
    return 0;
}

static int teardown_finish(void **state)
{
    (void)state;
    hsrv_stop(&F);
    return 0;
}

/* F's own connection count (this request's connection included). */
static unsigned f_conns(void)
{
    char body[256];
    assert_int_equal(simple_get(atomic_load(&F.port), "/stats", body, sizeof body), 200);
    const char *p = strstr(body, "conns=");
    assert_non_null(p);
    return (unsigned)atoi(p + 6);
}

static int wait_aborts(struct hsrv *h, int want, int ms)
{
    int64_t end = ts_now_ms() + ms;
    while (atomic_load(&h->aborts) < want && ts_now_ms() < end)
        usleep(1000);
    return atomic_load(&h->aborts);
}

static void test_half_close_finish(void **state)
{
    (void)state;
    int port = atomic_load(&F.port);
    static struct resp r[5];
    /* an asynchronous answer 100 ms after the EOF still arrives */
    int64_t t0 = ts_now_ms();
    assert_int_equal(half_closed_at(port, S("GET /async?ms=100&id=7 HTTP/1.1\r\nHost: t\r\n\r\n"),
                                    r, 1), 1);
    assert_true(ts_now_ms() - t0 >= 95);
    assert_int_equal(r[0].status, 200);
    assert_int_equal(r[0].close, 1); /* the last answer says the connection ends */
    assert_int_equal(r[0].blen, 7);
    assert_memory_equal(r[0].body, "async 7", 7);
    /* a pipeline of three answered out of order by the handlers: sent in
     * order (max_pipeline 2: the third waits in the stash past the EOF) */
    assert_int_equal(half_closed_at(port, S("GET /async?ms=150&id=1 HTTP/1.1\r\nHost: t\r\n\r\n"
                                            "GET /async?ms=20&id=2 HTTP/1.1\r\nHost: t\r\n\r\n"
                                            "GET /async?ms=60&id=3 HTTP/1.1\r\nHost: t\r\n\r\n"),
                                    r, 3), 3);
    for (int i = 0; i < 3; i++) {
        char want[16];
        snprintf(want, sizeof want, "async %d", i + 1);
        assert_int_equal(r[i].status, 200);
        assert_int_equal(r[i].blen, 7);
        assert_memory_equal(r[i].body, want, 7);
        assert_int_equal(r[i].close, i == 2);
    }
    /* synchronous and asynchronous mixed, and a streamed answer */
    assert_int_equal(half_closed_at(port, S("GET /plaintext HTTP/1.1\r\nHost: t\r\n\r\n"
                                            "GET /stream?n=2&async=1 HTTP/1.1\r\nHost: t\r\n\r\n"
                                            "GET /async?ms=30&id=9 HTTP/1.1\r\nHost: t\r\n\r\n"),
                                    r, 3), 3);
    assert_int_equal(r[0].status, 200);
    assert_memory_equal(r[0].body, "Hello, World!", 13);
    assert_int_equal(r[1].status, 200);
    assert_memory_equal(r[1].body, "chunk 0\nchunk 1\n", 16);
    assert_memory_equal(r[2].body, "async 9", 7);
    /* a request cut short by the EOF is dropped, the one before answered */
    assert_int_equal(half_closed_at(port, S("GET /async?ms=50&id=4 HTTP/1.1\r\nHost: t\r\n\r\n"
                                            "GET /pl"),
                                    r, 1), 1);
    assert_memory_equal(r[0].body, "async 4", 7);
    /* nothing complete: closed without an answer */
    assert_int_equal(half_closed_at(port, S("GET /plaintext HTTP/1.1\r\n"), r, 0), 0);
    assert_int_equal(atomic_load(&F.aborts), 0);
    assert_int_equal(atomic_load(&F.async_answered), 7); /* 6 answers and 1 stream */
    assert_int_equal(f_conns(), 1);
}

static void test_full_close_finish(void **state)
{
    (void)state;
    int port = atomic_load(&F.port);
    /* closed for good before the answer: the answer is made and dropped
     * (the first send to a closed peer succeeds), no abort, nothing left */
    int fd = cli_connect(port);
    cli_send(fd, S("GET /async?ms=100&id=1 HTTP/1.1\r\nHost: t\r\n\r\n"));
    close(fd);
    int64_t end = ts_now_ms() + 3000;
    while (atomic_load(&F.async_answered) < 1 && ts_now_ms() < end)
        usleep(1000);
    assert_int_equal(atomic_load(&F.async_answered), 1);
    assert_int_equal(f_conns(), 1);
    /* the next send fails (the peer answered the first with a reset): the
     * request still waiting hears the abort then, long before its 5 s */
    fd = cli_connect(port);
    int64_t t0 = ts_now_ms();
    cli_send(fd, S("GET /async?ms=50&id=1 HTTP/1.1\r\nHost: t\r\n\r\n"
                   "GET /async?ms=150&id=2 HTTP/1.1\r\nHost: t\r\n\r\n"
                   "GET /async?ms=5000&id=3 HTTP/1.1\r\nHost: t\r\n\r\n"));
    usleep(20000); /* the server has read all three */
    close(fd);
    assert_int_equal(wait_aborts(&F, 1, 3000), 1);
    int64_t took = ts_now_ms() - t0;
    print_message("full close: the abort came after %lld ms (send failure)\n", (long long)took);
    assert_true(took >= 140 && took < F_EOF_TIMEOUT_MS);
    /* no send is left to fail: the wait ends at eof_timeout_ms */
    fd = cli_connect(port);
    t0 = ts_now_ms();
    cli_send(fd, S("GET /async?ms=30&id=1 HTTP/1.1\r\nHost: t\r\n\r\n"
                   "GET /async?ms=5000&id=2 HTTP/1.1\r\nHost: t\r\n\r\n"));
    usleep(20000);
    close(fd);
    assert_int_equal(wait_aborts(&F, 2, 4000), 2);
    took = ts_now_ms() - t0;
    print_message("full close: the abort came after %lld ms (eof_timeout_ms %d)\n", (long long)took,
                  F_EOF_TIMEOUT_MS);
    assert_true(took >= F_EOF_TIMEOUT_MS && took < F_EOF_TIMEOUT_MS + 1500);
    /* every handler answered (the aborted ones too): nothing held */
    end = ts_now_ms() + 3000;
    while (atomic_load(&F.async_answered) < 6 && ts_now_ms() < end)
        usleep(1000);
    assert_int_equal(atomic_load(&F.async_answered), 6);
    assert_int_equal(atomic_load(&F.aborts), 2);
    assert_int_equal(f_conns(), 1);
}

/* ---- adopt --------------------------------------------------------------- */

struct adopt_job {
    struct eddy_op op;
    int fd;
    _Atomic int rc;
};

static void adopt_cb(struct eddy_op *op, int res)
{
    struct adopt_job *j = eddy_container_of(op, struct adopt_job, op);
    (void)res;
    atomic_store(&j->rc, eddy_http_server_adopt(H.srv, j->fd));
}

static void test_adopt_socketpair(void **state)
{
    (void)state;
    int sv[2];
    assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv), 0);
    static struct adopt_job j;
    j.fd = sv[1];
    atomic_store(&j.rc, 1);
    /* adopt runs on the loop's thread: post it there */
    eddy_post_threadsafe(H.loop, &j.op, adopt_cb);
    int64_t end = ts_now_ms() + 2000;
    while (atomic_load(&j.rc) == 1 && ts_now_ms() < end)
        usleep(1000);
    assert_int_equal(atomic_load(&j.rc), 0);
    struct timeval tv = {.tv_sec = 5};
    setsockopt(sv[0], SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    static struct resp r[2];
    int eof;
    cli_send(sv[0], S("GET /plaintext HTTP/1.1\r\nHost: t\r\n\r\nPOST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 2\r\n\r\nhi"));
    assert_int_equal(cli_read(sv[0], r, 2, 0, &eof, 0), 2);
    assert_int_equal(r[0].status, 200);
    assert_int_equal(r[1].status, 200);
    assert_memory_equal(r[1].body, "hi", 2);
    /* keep-alive, then a bad request closes it like any other */
    cli_send(sv[0], S("GET /plaintext HTTP/1.1\r\n\r\n"));
    assert_int_equal(cli_read(sv[0], r, 1, 0, &eof, 1), 1);
    assert_int_equal(r[0].status, 400);
    assert_int_equal(eof, 1);
    close(sv[0]);
    server_still_serves();
}

static void adopt_bad_cb(struct eddy_op *op, int res)
{
    struct adopt_job *j = eddy_container_of(op, struct adopt_job, op);
    (void)res;
    atomic_store(&j->rc, eddy_http_server_adopt(H.srv, -1));
}

static void test_adopt_bad_fd(void **state)
{
    (void)state;
    static struct adopt_job j;
    atomic_store(&j.rc, 1);
    eddy_post_threadsafe(H.loop, &j.op, adopt_bad_cb);
    int64_t end = ts_now_ms() + 2000;
    while (atomic_load(&j.rc) == 1 && ts_now_ms() < end)
        usleep(1000);
    assert_int_equal(atomic_load(&j.rc), -EBADF);
}

/* ---- allocation failure -------------------------------------------------- */

struct fsrv {
    pthread_t th;
    struct eddy_loop *loop;
    struct eddy_http_server *srv;
    _Atomic int port;
    _Atomic int every;       /* 0: allocation works; N: every Nth call fails */
    _Atomic long calls, failed;
    _Atomic int stop;
    int destroy_rc, loop_destroy_rc, leftover;
    unsigned conns_left;
    int done;
};

static void *fail_alloc(void *ud, void *ptr, size_t size)
{
    struct fsrv *f = ud;
    if (size == 0) {
        free(ptr);
        return NULL;
    }
    int every = atomic_load(&f->every);
    if (every && atomic_fetch_add(&f->calls, 1) % every == every - 1) {
        atomic_fetch_add(&f->failed, 1);
        return NULL;
    }
    return realloc(ptr, size);
}

/* Answers, or when even that fails for want of memory, a bare 503 (a
 * handler must answer every request; one retry suffices with every >= 2,
 * as the 503 needs at most one allocation). */
static void answer(struct eddy_http_req *req, const char *ct, const void *b, size_t n)
{
    if (eddy_http_respond(req, 200, ct, b, n) == 0)
        return;
    for (int i = 0; i < 4; i++)
        if (eddy_http_respond(req, 503, NULL, NULL, 0) == 0)
            return;
    abort(); /* cannot happen with every >= 2: the test would say so loudly */
}

static void f_plain(struct eddy_http_req *req, void *ud)
{
    (void)ud;
    answer(req, "text/plain", "Hello, World!", 13);
}

static void f_echo(struct eddy_http_req *req, void *ud)
{
    (void)ud;
    size_t n;
    const void *b = eddy_http_body(req, &n);
    answer(req, "application/octet-stream", b, n);
}

static void f_big(struct eddy_http_req *req, void *ud)
{
    (void)ud;
    size_t n = (size_t)atol(eddy_http_arg(req, "n", "0"));
    char *b = malloc(n ? n : 1);
    memset(b, 'x', n);
    answer(req, "text/plain", b, n);
    free(b);
}

static void f_done(struct eddy_http_server *srv, void *ud)
{
    struct fsrv *f = ud;
    (void)srv;
    f->done = 1;
}

static void f_tick(struct eddy_op *op, int res)
{
    struct fsrv *f = op->data;
    if (res == 0 && atomic_load(&f->stop))
        eddy_loop_stop(f->loop);
}

static void *fsrv_main(void *arg)
{
    struct fsrv *f = arg;
    struct eddy_loop_options lo;
    eddy_loop_options_init(&lo);
    lo.alloc = fail_alloc;
    lo.alloc_ud = f;
    if (eddy_loop_init(&f->loop, &lo) < 0) {
        atomic_store(&f->port, -1);
        return NULL;
    }
    struct eddy_http_options o;
    memset(&o, 0, sizeof o);
    o.host = "127.0.0.1";
    o.max_pipeline = 4;
    int rc = eddy_http_server_init(&f->srv, f->loop, &o);
    if (rc == 0)
        rc = eddy_http_route(f->srv, "GET", "/plaintext", EDDY_HTTP_EXACT, f_plain, f);
    if (rc == 0)
        rc = eddy_http_route(f->srv, "POST", "/echo", EDDY_HTTP_EXACT, f_echo, f);
    if (rc == 0)
        rc = eddy_http_route(f->srv, "GET", "/big", EDDY_HTTP_EXACT, f_big, f);
    if (rc == 0)
        rc = eddy_http_server_listen(f->srv);
    if (rc < 0) {
        atomic_store(&f->port, -1);
        return NULL;
    }
    struct eddy_op tick;
    memset(&tick, 0, sizeof tick);
    tick.data = f;
    eddy_timer_repeat(f->loop, &tick, 20, f_tick);
    atomic_store(&f->port, eddy_http_server_port(f->srv));
    eddy_loop_run(f->loop, EDDY_RUN_DEFAULT);
    atomic_store(&f->every, 0); /* shutting down: allocation works again */
    eddy_cancel(f->loop, &tick);
    eddy_http_server_shutdown(f->srv, 1000, f_done, f);
    int64_t end = ts_now_ms() + 5000;
    while ((eddy_loop_run(f->loop, EDDY_RUN_ONCE) > 0 || !f->done) && ts_now_ms() < end)
        ;
    struct eddy_http_stats st;
    eddy_http_server_stats(f->srv, &st);
    f->conns_left = st.conns;
    f->destroy_rc = eddy_http_server_destroy(f->srv);
    struct eddy_loop_stats ls;
    eddy_loop_stats(f->loop, &ls);
    f->leftover = (int)ls.active;
    f->loop_destroy_rc = eddy_loop_destroy(f->loop);
    return NULL;
}

/* One request on conn *fd (reconnecting when it was closed); checks the
 * outcome is the right answer, a 503 or a close.  Returns 2 answered,
 * 1 503, 0 closed. */
static int f_request(int port, int *fd, int kind, unsigned *seed)
{
    static char req[70000];
    static char bodybuf[60000];
    size_t len, blen = 0;
    const char *want = NULL;
    size_t wantlen = 0;
    if (*fd < 0) {
        *fd = cli_connect(port);
        struct timeval tv = {.tv_sec = 3};
        setsockopt(*fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    }
    switch (kind) {
    case 0:
        len = (size_t)snprintf(req, sizeof req, "GET /plaintext HTTP/1.1\r\nHost: t\r\n\r\n");
        want = "Hello, World!";
        wantlen = 13;
        break;
    case 1: /* a body that grows the request's buffer */
        blen = 1 + (size_t)rand_r(seed) % sizeof bodybuf;
        for (size_t i = 0; i < blen; i++)
            bodybuf[i] = (char)('a' + i % 26);
        len = (size_t)snprintf(req, sizeof req,
                               "POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: %zu\r\n\r\n", blen);
        memcpy(req + len, bodybuf, blen);
        len += blen;
        want = bodybuf;
        wantlen = blen;
        break;
    case 2: /* a big head that grows the arena */
        len = (size_t)snprintf(req, sizeof req, "GET /plaintext HTTP/1.1\r\nHost: t\r\nX-Big: ");
        for (int i = 0; i < 3000; i++)
            req[len++] = 'h';
        len += (size_t)snprintf(req + len, sizeof req - len, "\r\n\r\n");
        want = "Hello, World!";
        wantlen = 13;
        break;
    default: /* a large answer (its buffer is not kept) */
        len = (size_t)snprintf(req, sizeof req, "GET /big?n=100000 HTTP/1.1\r\nHost: t\r\n\r\n");
        wantlen = 100000;
        break;
    }
    cli_send(*fd, req, len);
    static struct resp r;
    int eof = 0;
    int n = cli_read(*fd, &r, 1, 0, &eof, 0);
    if (n == 0) {
        /* closed (or reset) by the server: never a hang */
        assert_int_not_equal(eof, 0);
        close(*fd);
        *fd = -1;
        return 0;
    }
    if (r.status == 503) {
        if (r.close) {
            close(*fd);
            *fd = -1;
        }
        return 1;
    }
    assert_int_equal(r.status, 200);
    assert_int_equal(r.blen, wantlen);
    if (want)
        assert_memory_equal(r.body, want, wantlen < sizeof r.body ? wantlen : sizeof r.body);
    if (r.close) {
        close(*fd);
        *fd = -1;
    }
    return 2;
}

static void test_alloc_failure(void **state)
{
    (void)state;
    static struct fsrv f;
    memset(&f, 0, sizeof f);
    int base = ts_fd_count();
    assert_int_equal(pthread_create(&f.th, NULL, fsrv_main, &f), 0);
    int64_t end = ts_now_ms() + 5000;
    while (atomic_load(&f.port) == 0 && ts_now_ms() < end)
        usleep(1000);
    int port = atomic_load(&f.port);
    assert_true(port > 0);
    unsigned seed = 4242;
    int outcome[3] = {0, 0, 0};
    static const int everies[] = {2, 3, 5, 7, 13, 31};
    for (size_t e = 0; e < sizeof everies / sizeof everies[0]; e++) {
        atomic_store(&f.every, everies[e]);
        /* several connections at once, so new connection, session and
         * request blocks are needed too */
        int fds[6] = {-1, -1, -1, -1, -1, -1};
        for (int it = 0; it < 120; it++) {
            int c = rand_r(&seed) % 6;
            outcome[f_request(port, &fds[c], rand_r(&seed) % 4, &seed)]++;
        }
        for (int c = 0; c < 6; c++)
            if (fds[c] >= 0)
                close(fds[c]);
        atomic_store(&f.every, 0);
        /* allocation works again: everything is answered normally */
        int fd = -1;
        for (int k = 0; k < 4; k++)
            assert_int_equal(f_request(port, &fd, k, &seed), 2);
        close(fd);
    }
    print_message("alloc failure: %ld allocations failed; %d answered, %d got 503, %d closed\n",
                  atomic_load(&f.failed), outcome[2], outcome[1], outcome[0]);
    assert_true(atomic_load(&f.failed) > 50);
    assert_true(outcome[2] > 0);
    assert_true(outcome[0] + outcome[1] > 0);
    atomic_store(&f.stop, 1);
    pthread_join(f.th, NULL);
    assert_int_equal(f.done, 1);
    assert_int_equal(f.conns_left, 0);
    assert_int_equal(f.destroy_rc, 0);
    assert_int_equal(f.leftover, 0);
    assert_int_equal(f.loop_destroy_rc, 0);
    assert_int_equal(fds_back(base), base);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_reset_mid_request),
        cmocka_unit_test(test_reset_with_pending_async),
        cmocka_unit_test(test_reset_mid_response),
        cmocka_unit_test(test_half_close),
        cmocka_unit_test(test_half_close_async),
        cmocka_unit_test_setup_teardown(test_half_close_finish, setup_finish, teardown_finish),
        cmocka_unit_test_setup_teardown(test_full_close_finish, setup_finish, teardown_finish),
        cmocka_unit_test(test_adopt_socketpair),
        cmocka_unit_test(test_adopt_bad_fd),
        cmocka_unit_test(test_alloc_failure),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
