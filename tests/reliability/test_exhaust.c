/*
 * Exhaustion: more connections than descriptors (a server child with
 * RLIMIT_NOFILE 64 and 500 clients: no busy loop, accept backs off and
 * resumes, serving again soon after descriptors free), more receiving
 * connections than receive buffers (-ENOBUFS: every byte still arrives),
 * and a 4-entry SQ with an 8-entry CQ under 100 keep-alive clients (no
 * completion lost).
 *
 * On epoll the same tests check that backend's equivalents: a parked
 * receive holds no buffer there (as with a kernel buffer ring), so 200
 * receivers share 4 buffers; and the "rings" are its two bounds, the
 * results one descriptor's edge may deliver per iteration (entries: the
 * rest is replayed next iteration) and the events one wait takes
 * (cq_entries: the rest stays ready in the kernel for the next wait).
 * Neither is a full queue, so sq_full and cq_overflows must stay 0 there.
 */
#include "stress_util.h"

#include <signal.h>
#include <stdbool.h>

/* ---- descriptors ---------------------------------------------------------- */

static volatile int child_done;

static void child_done_cb(struct eddy_http_server *srv, void *ud)
{
    (void)srv;
    (void)ud;
    child_done = 1;
}

struct child {
    struct eddy_loop *loop;
    struct eddy_http_server *srv;
    struct eddy_op sig;
};

static void child_sig(struct eddy_op *op, int res)
{
    struct child *c = eddy_container_of(op, struct child, sig);
    (void)res;
    if (!(op->flags & EDDY_OP_MORE))
        return;
    eddy_cancel(c->loop, op);
    eddy_http_server_shutdown(c->srv, 500, child_done_cb, NULL);
}

/* The server process: 64 descriptors at most.  Exits 0 after a clean
 * SIGTERM shutdown, non-zero on any failure. */
static int child_main(int wfd)
{
    struct rlimit rl = {.rlim_cur = 64, .rlim_max = 64};
    if (setrlimit(RLIMIT_NOFILE, &rl) < 0)
        return 10;
    struct child c;
    memset(&c, 0, sizeof c);
    int fds0 = ts_fd_count() - 1; /* less the pipe to the parent, closed below */
    if (eddy_loop_init(&c.loop, NULL) < 0)
        return 11;
    struct eddy_http_options o;
    memset(&o, 0, sizeof o);
    o.host = "127.0.0.1";
    o.header_timeout_ms = 30000; /* the silent clients keep their descriptors */
    if (eddy_http_server_init(&c.srv, c.loop, &o) < 0 ||
        eddy_http_route(c.srv, "GET", "/plaintext", EDDY_HTTP_EXACT, h_plaintext, NULL) < 0 ||
        eddy_http_server_listen(c.srv) < 0)
        return 12;
    if (eddy_signal(c.loop, &c.sig, SIGTERM, child_sig) < 0)
        return 13;
    int port = eddy_http_server_port(c.srv);
    if (write(wfd, &port, sizeof port) != sizeof port)
        return 14;
    close(wfd);
    if (eddy_loop_run(c.loop, EDDY_RUN_DEFAULT) < 0)
        return 15;
    if (!child_done)
        return 16;
    if (eddy_http_server_destroy(c.srv) < 0)
        return 17;
    if (eddy_loop_destroy(c.loop) < 0)
        return 18;
    if (ts_fd_count() != fds0)
        return 19; /* every descriptor of the server and its clients closed */
    return 0;
}

/* utime + stime of pid, in clock ticks. */
static long cpu_ticks(pid_t pid)
{
    char path[64], buf[1024];
    snprintf(path, sizeof path, "/proc/%d/stat", (int)pid);
    FILE *f = fopen(path, "r");
    assert_non_null(f);
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    fclose(f);
    buf[n] = 0;
    const char *p = strrchr(buf, ')'); /* fields after the command name */
    assert_non_null(p);
    unsigned long ut = 0, st = 0;
    /* ") S ppid pgrp session tty tpgid flags minflt cminflt majflt cmajflt utime stime" */
    assert_int_equal(sscanf(p + 2, "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %lu %lu", &ut,
                            &st),
                     2);
    return (long)(ut + st);
}

static int fd_count_of(pid_t pid)
{
    char cmd[128];
    snprintf(cmd, sizeof cmd, "ls /proc/%d/fd | wc -l", (int)pid);
    FILE *f = popen(cmd, "r");
    int n = -1;
    if (f) {
        if (fscanf(f, "%d", &n) != 1)
            n = -1;
        pclose(f);
    }
    return n;
}

static int wait_exit(pid_t pid, unsigned timeout_ms, int *status)
{
    int64_t end = ts_now_ms() + timeout_ms;
    for (;;) {
        pid_t r = waitpid(pid, status, WNOHANG);
        if (r == pid)
            return 0;
        if (ts_now_ms() > end)
            return -1;
        usleep(5000);
    }
}

#define NCONN 500

static void test_fd_limit(void **state)
{
    (void)state;
    int pfd[2];
    assert_int_equal(pipe2(pfd, O_CLOEXEC), 0);
    fflush(NULL);
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        close(pfd[0]);
        _exit(child_main(pfd[1]));
    }
    close(pfd[1]);
    int port = 0;
    assert_int_equal(read(pfd[0], &port, sizeof port), (ssize_t)sizeof port);
    close(pfd[0]);
    assert_true(timed_get(port) >= 0);

    static int fd[NCONN];
    for (int i = 0; i < NCONN; i++)
        fd[i] = nb_connect(port);
    usleep(300000); /* the child fills its table and starts backing off */
    int nfd = fd_count_of(pid);
    long c0 = cpu_ticks(pid);
    int64_t t0 = ts_now_ms();
    usleep(1000000);
    long c1 = cpu_ticks(pid);
    int64_t t1 = ts_now_ms();
    double cpu = (double)(c1 - c0) / (double)sysconf(_SC_CLK_TCK) / ((double)(t1 - t0) / 1000.0);
    /* A request now waits in the backlog: nothing can be accepted. */
    int probe = cli_connect(port);
    cli_send(probe, "GET /plaintext HTTP/1.1\r\nHost: t\r\n\r\n", 36);

    int64_t tfree = ts_now_ms();
    for (int i = 0; i < NCONN; i++)
        close(fd[i]);
    /* The probe queued during the exhaustion is answered once descriptors
     * free, and so is a new client. */
    static struct resp r;
    int eof;
    assert_int_equal(cli_read(probe, &r, 1, 0, &eof, 0), 1);
    int64_t probe_ms = ts_now_ms() - tfree;
    assert_int_equal(r.status, 200);
    close(probe);
    int ms = timed_get(port);
    int64_t fresh_ms = ts_now_ms() - tfree;
    int nfd_after = fd_count_of(pid);

    kill(pid, SIGTERM);
    int status = 0;
    int64_t ts = ts_now_ms();
    assert_int_equal(wait_exit(pid, 5000, &status), 0);
    print_message("fd limit 64, %d clients: child held %d fds, CPU %.1f%% of a core over %lld ms; "
                  "after freeing: queued request answered in %lld ms, new one in %lld ms (%d ms "
                  "itself); child fds then %d; SIGTERM exit %d in %lld ms\n",
                  NCONN, nfd, cpu * 100, (long long)(t1 - t0), (long long)probe_ms,
                  (long long)fresh_ms, ms, nfd_after, WIFEXITED(status) ? WEXITSTATUS(status) : -1,
                  (long long)(ts_now_ms() - ts));
    assert_true(nfd >= 60);      /* the table really was full */
    assert_true(cpu < 0.15);     /* backing off, not spinning */
    assert_true(ms >= 0);
    assert_true(probe_ms < 1000); /* the accept back-off is at most 250 ms */
    assert_true(fresh_ms < 1000);
    assert_true(WIFEXITED(status));
    assert_int_equal(WEXITSTATUS(status), 0);
}

/* ---- receive buffers ------------------------------------------------------ */

static struct ssrv H;

#define NRECV 200
#define BODY 3000

static void test_bufpool_exhausted(void **state)
{
    (void)state;
    memset(&H, 0, sizeof H);
    H.o.rbuf_count = 4;
    H.o.rbuf_size = 512;
    H.o.max_conns = 1000;
    /* With a kernel buffer ring, or on epoll, a pending receive holds no
     * buffer: 200 receivers share 4.  (On epoll a buffer is taken only
     * for the receive call and its callback, so this server, which gives
     * each back in its callback, never finds the pool dry.) */
    bool shared = ts_backend_is_epoll();
    ss_start(&H);
    shared = shared || (H.features & EDDY_FEAT_BUF_RING);
    if (!shared) {
        /* Before 5.19 a pending receive holds a pool buffer and the server
         * caps connections at the pool: exhaustion cannot happen that way.
         * Run the same traffic with one buffer per connection. */
        ss_stop(&H);
        memset(&H, 0, sizeof H);
        H.o.rbuf_count = 256;
        H.o.rbuf_size = 512;
        ss_start(&H);
    }
    int port = atomic_load(&H.port);
    static int fd[NRECV];
    static char body[NRECV][BODY];
    static char req[BODY + 128];
    static struct resp r;
    for (int i = 0; i < NRECV; i++)
        fd[i] = cli_connect(port);
    for (int round = 0; round < 3; round++) {
        /* Every connection has its whole request in flight before any is
         * read: 200 receivers, 4 buffers. */
        for (int i = 0; i < NRECV; i++) {
            for (int k = 0; k < BODY; k++)
                body[i][k] = (char)('a' + (i * 7 + k * 13 + round) % 26);
            int n = snprintf(req, sizeof req,
                             "POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: %d\r\n\r\n", BODY);
            memcpy(req + n, body[i], BODY);
            cli_send(fd[i], req, (size_t)n + BODY);
        }
        for (int i = 0; i < NRECV; i++) {
            int eof;
            assert_int_equal(cli_read(fd[i], &r, 1, 0, &eof, 0), 1);
            assert_int_equal(r.status, 200);
            assert_int_equal(r.blen, BODY);
            assert_memory_equal(r.body, body[i], BODY);
        }
    }
    for (int i = 0; i < NRECV; i++)
        close(fd[i]);
    assert_int_equal(ss_wait_conns(&H, 0, 3000), 0);
    struct eddy_loop_stats ls;
    struct eddy_http_stats st;
    ss_stats(&H, &st, &ls);
    print_message("buffer pool: %u buffers, %d conns x 3 rounds x %d-byte bodies: %llu answers, "
                  "enobufs %llu\n", H.o.rbuf_count, NRECV, BODY,
                  (unsigned long long)st.responses, (unsigned long long)ls.enobufs);
    assert_int_equal(st.responses, 3 * NRECV);
    if (ts_backend_is_epoll())
        assert_int_equal(ls.enobufs, 0); /* 200 parked receives held none of the 4 */
    else if (shared)
        assert_true(ls.enobufs > 0);
    ss_stop(&H);
}

/* ---- tiny rings ----------------------------------------------------------- */

#define NKA 100
#define ROUNDS 20
#define DEPTH 3

static void test_tiny_rings(void **state)
{
    (void)state;
    bool ep = ts_backend_is_epoll();
    memset(&H, 0, sizeof H);
    H.lo.entries = 4;
    H.lo.cq_entries = 8;
    H.o.rbuf_count = 256;
    /* epoll: 16-byte buffers make each 108-byte batch (one segment) 7
     * receives, more than the 4 one edge may deliver: every batch goes
     * through the replay of an unfinished edge, and a lost replay would
     * lose its answers. */
    if (ep)
        H.o.rbuf_size = 16;
    ss_start(&H);
    int port = atomic_load(&H.port);
    static int fd[NKA];
    static struct resp r[DEPTH];
    static const char one[] = "GET /plaintext HTTP/1.1\r\nHost: t\r\n\r\n";
    char reqs[DEPTH * sizeof one];
    for (int d = 0; d < DEPTH; d++)
        memcpy(reqs + (size_t)d * (sizeof one - 1), one, sizeof one - 1);
    for (int i = 0; i < NKA; i++)
        fd[i] = cli_connect(port);
    long answers = 0;
    for (int round = 0; round < ROUNDS; round++) {
        for (int i = 0; i < NKA; i++)
            cli_send(fd[i], reqs, DEPTH * (sizeof one - 1));
        for (int i = 0; i < NKA; i++) {
            int eof;
            assert_int_equal(cli_read(fd[i], r, DEPTH, 0, &eof, 0), DEPTH);
            for (int d = 0; d < DEPTH; d++) {
                assert_int_equal(r[d].status, 200);
                assert_memory_equal(r[d].body, "Hello, World!", 13);
                answers++;
            }
        }
    }
    for (int i = 0; i < NKA; i++)
        close(fd[i]);
    assert_int_equal(ss_wait_conns(&H, 0, 3000), 0);
    struct eddy_loop_stats ls;
    struct eddy_http_stats st;
    ss_stats(&H, &st, &ls);
    print_message("tiny rings (SQ 4, CQ 8) on %s: %d clients, %ld answers; sq_full %llu, "
                  "cq_overflows %llu, completions %llu\n", ep ? "epoll" : "io_uring", NKA,
                  answers, (unsigned long long)ls.sq_full, (unsigned long long)ls.cq_overflows,
                  (unsigned long long)ls.completions);
    assert_int_equal(answers, (long)NKA * ROUNDS * DEPTH);
    assert_int_equal(st.responses, (uint64_t)NKA * ROUNDS * DEPTH);
    if (ep) {
        assert_int_equal(ls.sq_full, 0);
        assert_int_equal(ls.cq_overflows, 0);
    } else {
        assert_true(ls.sq_full > 0);
    }
    ss_stop(&H);
}

int main(void)
{
    signal(SIGPIPE, SIG_IGN);
    raise_nofile();
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_fd_limit),
        cmocka_unit_test(test_bufpool_exhausted),
        cmocka_unit_test(test_tiny_rings),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
