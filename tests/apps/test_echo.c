/*
 * Integration tests of the eddy-echo binary: it is started as a child on a
 * port the kernel picks, driven over loopback, and stopped with SIGTERM.
 * The compat run inherits EDDY_COMPAT=5.10, so the server then runs on the
 * 5.10 fallbacks (single accepts, single recvs into pool buffers).
 */
#define _GNU_SOURCE
#include "testsupport.h"

#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#ifndef EDDY_ECHO_PATH
#error "EDDY_ECHO_PATH must name the eddy-echo binary"
#endif

struct server {
    pid_t pid;
    uint16_t port;
};

/* The running children, so a failed test still does not leave them behind. */
static pid_t g_children[4] = {-1, -1, -1, -1};

static void child_track(pid_t pid)
{
    for (size_t i = 0; i < sizeof g_children / sizeof g_children[0]; i++)
        if (g_children[i] <= 0) {
            g_children[i] = pid;
            return;
        }
    fail_msg("too many children");
}

static void child_forget(pid_t pid)
{
    for (size_t i = 0; i < sizeof g_children / sizeof g_children[0]; i++)
        if (g_children[i] == pid)
            g_children[i] = -1;
}

static int teardown_child(void **state)
{
    (void)state;
    for (size_t i = 0; i < sizeof g_children / sizeof g_children[0]; i++)
        if (g_children[i] > 0) {
            kill(g_children[i], SIGKILL);
            waitpid(g_children[i], NULL, 0);
            g_children[i] = -1;
        }
    return 0;
}

/*
 * Starts eddy-echo with argv (NULL-terminated, after the program name) with
 * its stdout (and stderr if err is not NULL) on pipes; returns the pid.
 */
static pid_t spawn(const char *const *argv, int *out, int *err)
{
    int o[2], e[2] = {-1, -1};
    assert_int_equal(pipe2(o, O_CLOEXEC), 0);
    if (err)
        assert_int_equal(pipe2(e, O_CLOEXEC), 0);
    const char *args[32] = {"eddy-echo"};
    size_t n = 1;
    for (; argv[n - 1]; n++) {
        assert_true(n < 31);
        args[n] = argv[n - 1];
    }
    args[n] = NULL;
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        dup2(o[1], 1);
        if (err)
            dup2(e[1], 2);
        execv(EDDY_ECHO_PATH, (char *const *)args);
        _exit(127);
    }
    child_track(pid);
    close(o[1]);
    *out = o[0];
    if (err) {
        close(e[1]);
        *err = e[0];
    }
    return pid;
}

/* Reads one line (without its newline) from fd within timeout_ms; returns
 * its length, or -1 on EOF or timeout. */
static int read_line(int fd, char *line, size_t size, unsigned timeout_ms)
{
    size_t len = 0;
    int64_t deadline = ts_now_ms() + timeout_ms;
    while (len < size - 1) {
        struct pollfd p = {.fd = fd, .events = POLLIN};
        int left = (int)(deadline - ts_now_ms());
        if (left <= 0 || poll(&p, 1, left) <= 0)
            return -1;
        ssize_t n = read(fd, line + len, 1);
        if (n <= 0)
            return -1;
        if (line[len] == '\n')
            break;
        len++;
    }
    line[len] = 0;
    return (int)len;
}

/* The backend a loop gets in this test's environment (EDDY_BACKEND). */
static const char *backend_here(void)
{
    struct eddy_loop *l;
    assert_int_equal(eddy_loop_init(&l, NULL), 0);
    const char *name = eddy_loop_backend(l); /* a static string */
    assert_int_equal(eddy_loop_destroy(l), 0);
    return name;
}

/* Starts eddy-echo --port 0 argv... and reads its "listening on PORT
 * (backend NAME)": the backend must be the one this environment picks. */
static void server_start_args(struct server *s, const char *const *argv)
{
    const char *args[32] = {"--port", "0"};
    size_t n = 2;
    for (size_t i = 0; argv[i]; i++) {
        assert_true(n < 31);
        args[n++] = argv[i];
    }
    args[n] = NULL;
    int out;
    pid_t pid = spawn(args, &out, NULL);
    char line[128];
    int len = read_line(out, line, sizeof line, 5000);
    close(out);
    assert_true(len > 0);
    unsigned port = 0;
    assert_int_equal(sscanf(line, "listening on %u", &port), 1);
    assert_true(port > 0 && port < 65536);
    char want[64];
    snprintf(want, sizeof want, "(backend %s)", backend_here());
    if (!strstr(line, want))
        fail_msg("ready line '%s' does not say %s", line, want);
    s->pid = pid;
    s->port = (uint16_t)port;
}

static void server_start(struct server *s, const char *threads)
{
    const char *argv[] = {"--threads", threads, NULL};
    server_start_args(s, argv);
}

/* Waits up to timeout_ms for pid to exit: true and *status if it did. */
static bool wait_exit(pid_t pid, unsigned timeout_ms, int *status)
{
    int64_t deadline = ts_now_ms() + timeout_ms;
    for (;;) {
        pid_t r = waitpid(pid, status, WNOHANG);
        assert_true(r >= 0);
        if (r == pid) {
            child_forget(pid);
            return true;
        }
        if (ts_now_ms() > deadline)
            return false;
        usleep(2000);
    }
}

/* SIGTERM, then the exit status within 2 s (the child is killed if not). */
static int server_stop(struct server *s)
{
    assert_int_equal(kill(s->pid, SIGTERM), 0);
    int status = 0;
    if (!wait_exit(s->pid, 2000, &status))
        fail_msg("eddy-echo did not exit within 2 s of SIGTERM"); /* teardown kills it */
    s->pid = -1;
    assert_true(WIFEXITED(status));
    return WEXITSTATUS(status);
}

static void set_nonblock(int fd)
{
    assert_int_equal(fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK), 0);
}

static unsigned char pattern(size_t client, size_t i)
{
    return (unsigned char)((i * 131 + client * 17 + (i >> 12)) & 0xff);
}

struct client {
    int fd;
    size_t len, sent, recvd;
    unsigned char *tx;
    bool bad;
};

/* Pumps every client with poll until each got its bytes back, in order. */
static void echo_all(struct client *cl, size_t n, unsigned timeout_ms)
{
    struct pollfd *p = calloc(n, sizeof *p);
    unsigned char *rx = malloc(65536);
    assert_non_null(p);
    assert_non_null(rx);
    int64_t deadline = ts_now_ms() + timeout_ms;
    for (;;) {
        size_t open = 0;
        for (size_t i = 0; i < n; i++) {
            p[i].fd = cl[i].recvd < cl[i].len ? cl[i].fd : -1;
            p[i].events = POLLIN | (cl[i].sent < cl[i].len ? POLLOUT : 0);
            p[i].revents = 0;
            open += p[i].fd >= 0;
        }
        if (!open)
            break;
        int left = (int)(deadline - ts_now_ms());
        if (left <= 0)
            fail_msg("echo timed out with %zu clients unfinished", open);
        int r = poll(p, (nfds_t)n, left);
        assert_true(r >= 0);
        for (size_t i = 0; i < n; i++) {
            struct client *c = &cl[i];
            if (p[i].revents & POLLOUT) {
                ssize_t w = send(c->fd, c->tx + c->sent, c->len - c->sent, MSG_NOSIGNAL);
                if (w < 0)
                    assert_int_equal(errno, EAGAIN);
                else
                    c->sent += (size_t)w;
            }
            if (p[i].revents & (POLLIN | POLLHUP | POLLERR)) {
                ssize_t got = ts_recv(c->fd, rx, 65536, 0);
                if (got < 0) {
                    assert_int_equal(errno, EAGAIN);
                    continue;
                }
                if (got == 0)
                    fail_msg("client %zu: EOF after %zu of %zu bytes", i, c->recvd, c->len);
                assert_true(c->recvd + (size_t)got <= c->len);
                if (memcmp(rx, c->tx + c->recvd, (size_t)got) != 0)
                    fail_msg("client %zu: wrong bytes at offset %zu", i, c->recvd);
                c->recvd += (size_t)got;
            }
        }
    }
    free(p);
    free(rx);
}

static void run_clients(uint16_t port, unsigned rounds)
{
    enum { N = 50 };
    static const size_t sizes[] = {1, 7, 64, 100, 1000, 4095, 4096, 4097, 16384, 65536, 200000};
    struct client cl[N];
    for (size_t i = 0; i < N; i++) {
        cl[i].fd = ts_connect(port);
        assert_true(cl[i].fd >= 0);
        set_nonblock(cl[i].fd);
    }
    for (unsigned r = 0; r < rounds; r++) {
        for (size_t i = 0; i < N; i++) {
            struct client *c = &cl[i];
            /* Client 0 pushes 1 MiB: more than the server's queue limit,
             * so its back-pressure pause and resume are exercised. */
            c->len = i == 0 ? (1u << 20) : sizes[(i + r) % (sizeof sizes / sizeof sizes[0])];
            c->tx = malloc(c->len);
            assert_non_null(c->tx);
            for (size_t k = 0; k < c->len; k++)
                c->tx[k] = pattern(i + r, k);
            c->sent = c->recvd = 0;
        }
        echo_all(cl, N, 8000);
        for (size_t i = 0; i < N; i++) {
            assert_int_equal(cl[i].recvd, cl[i].len);
            free(cl[i].tx);
        }
    }
    for (size_t i = 0; i < N; i++)
        close(cl[i].fd);
}

/* 50 clients, varied sizes, one of 1 MiB, two rounds on the same
 * connections; then SIGTERM with connections still open: exit 0. */
static void test_echo_many(void **state)
{
    (void)state;
    struct server s;
    server_start(&s, "1");
    run_clients(s.port, 2);

    /* Open connections at shutdown must not hold the server up. */
    int idle = ts_connect(s.port);
    int busy = ts_connect(s.port);
    assert_true(idle >= 0 && busy >= 0);
    char b[8] = "abcdefg";
    assert_int_equal(send(busy, b, sizeof b, 0), (ssize_t)sizeof b);
    char r[8];
    assert_int_equal(ts_recv(busy, r, sizeof r, MSG_WAITALL), (ssize_t)sizeof r);
    assert_memory_equal(r, b, sizeof b);
    assert_int_equal(server_stop(&s), 0);
    /* The server closed them: EOF (or a reset), never a hang. */
    struct timeval tv = {.tv_sec = 2};
    setsockopt(idle, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    ssize_t got = ts_recv(idle, r, sizeof r, 0);
    assert_true(got == 0 || (got < 0 && errno == ECONNRESET));
    close(idle);
    close(busy);
}

/* Two loops (SO_REUSEPORT): the same traffic, and a clean stop of both. */
static void test_echo_threads(void **state)
{
    (void)state;
    struct server s;
    server_start(&s, "2");
    run_clients(s.port, 1);
    assert_int_equal(server_stop(&s), 0);
}

/* Clients that reset mid-stream (SO_LINGER 0 with unread echo and unsent
 * data) must not crash or wedge the server. */
static void test_echo_reset(void **state)
{
    (void)state;
    struct server s;
    server_start(&s, "1");
    size_t len = 512 * 1024;
    unsigned char *tx = malloc(len);
    assert_non_null(tx);
    memset(tx, 'x', len);
    for (int i = 0; i < 20; i++) {
        int fd = ts_connect(s.port);
        assert_true(fd >= 0);
        set_nonblock(fd);
        /* Fill what the socket takes; the server echoes into our receive
         * buffer, which we never read. */
        size_t sent = 0;
        int64_t until = ts_now_ms() + 20 + i * 3;
        while (ts_now_ms() < until && sent < len) {
            ssize_t w = send(fd, tx + sent, len - sent, MSG_NOSIGNAL);
            if (w > 0)
                sent += (size_t)w;
            else
                usleep(500);
        }
        assert_true(sent > 0);
        struct linger lg = {.l_onoff = 1, .l_linger = 0};
        assert_int_equal(setsockopt(fd, SOL_SOCKET, SO_LINGER, &lg, sizeof lg), 0);
        close(fd); /* RST */
    }
    free(tx);
    /* Still serving, and serving correctly. */
    run_clients(s.port, 1);
    assert_int_equal(kill(s.pid, 0), 0);
    assert_int_equal(server_stop(&s), 0);
}

/* Runs eddy-echo with argv to its exit (within 5 s): the status, and what
 * it wrote to stdout and stderr (together, truncated to size). */
static int run_to_exit(const char *const *argv, char *text, size_t size)
{
    int out, err;
    pid_t pid = spawn(argv, &out, &err);
    size_t len = 0;
    int64_t deadline = ts_now_ms() + 5000;
    struct pollfd p[2] = {{.fd = out, .events = POLLIN}, {.fd = err, .events = POLLIN}};
    while (p[0].fd >= 0 || p[1].fd >= 0) {
        int left = (int)(deadline - ts_now_ms());
        if (left <= 0)
            fail_msg("eddy-echo %s did not exit within 5 s", argv[0]);
        if (poll(p, 2, left) <= 0)
            continue;
        for (int i = 0; i < 2; i++) {
            if (!p[i].revents)
                continue;
            char tmp[512];
            ssize_t n = read(p[i].fd, tmp, sizeof tmp);
            if (n <= 0) {
                close(p[i].fd);
                p[i].fd = -1;
                continue;
            }
            size_t k = (size_t)n < size - 1 - len ? (size_t)n : size - 1 - len;
            memcpy(text + len, tmp, k);
            len += k;
        }
    }
    text[len] = 0;
    int status;
    if (!wait_exit(pid, 5000, &status))
        fail_msg("eddy-echo closed its output but did not exit");
    assert_true(WIFEXITED(status));
    return WEXITSTATUS(status);
}

/* --help exits 0 and lists every option; a missing --port or a bad value
 * is a usage error (2). */
static void test_echo_usage(void **state)
{
    (void)state;
    static char text[8192];
    const char *help[] = {"--help", NULL};
    assert_int_equal(run_to_exit(help, text, sizeof text), 0);
    static const char *const opts[] = {"--port", "--threads", "--bind", "--bufs",
                                       "--buf-size", "--send-timeout", "--verbose"};
    for (size_t i = 0; i < sizeof opts / sizeof opts[0]; i++)
        if (!strstr(text, opts[i]))
            fail_msg("--help does not mention %s:\n%s", opts[i], text);
    const char *bad[][5] = {
        {"--threads", "1", NULL},
        {"--port", "0", "--send-timeout", "x", NULL},
        {"--port", "0", "--send-timeout", "-1", NULL},
        {"--port", "0", "--send-timeout", "1e9", NULL},
        {"--port", "0", "--bufs", "33", NULL},
    };
    for (size_t k = 0; k < sizeof bad / sizeof bad[0]; k++)
        if (run_to_exit(bad[k], text, sizeof text) != 2)
            fail_msg("%s %s %s %s: not a usage error", bad[k][0], bad[k][1],
                     bad[k][2] ? bad[k][2] : "", bad[k][3] ? bad[k][3] : "");
}

/* ---- clients that send and never read --------------------------------- */

/* A client with a 4 KiB receive buffer that will send and never read: the
 * server's echo to it stalls almost at once. */
static int hog_connect(uint16_t port)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    assert_true(fd >= 0);
    int rcv = 4096;
    assert_int_equal(setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &rcv, sizeof rcv), 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons(port),
                            .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    assert_int_equal(connect(fd, (struct sockaddr *)&a, sizeof a), 0);
    set_nonblock(fd);
    return fd;
}

/* One round of 64 KiB sends into every open hog (as much as each takes). */
static void hogs_push(const int *fd, size_t n)
{
    static unsigned char chunk[65536];
    memset(chunk, 'h', sizeof chunk);
    for (size_t i = 0; i < n; i++) {
        if (fd[i] < 0)
            continue;
        ssize_t w = send(fd[i], chunk, sizeof chunk, MSG_NOSIGNAL);
        if (w < 0)
            assert_true(errno == EAGAIN || errno == EPIPE || errno == ECONNRESET);
    }
}

/* Has the server closed (FIN or RST) this client's connection? */
static bool peer_closed(int fd)
{
    struct pollfd p = {.fd = fd, .events = POLLRDHUP};
    assert_true(poll(&p, 1, 0) >= 0);
    return p.revents & (POLLRDHUP | POLLHUP | POLLERR);
}

/* Sends "hello" on a fresh connection and waits up to timeout_ms for the
 * echo, pushing the hogs all the while; returns the latency in ms, or -1. */
static int fresh_echo_ms(uint16_t port, const int *hogs, size_t nhogs, unsigned timeout_ms)
{
    int fd = ts_connect(port);
    assert_true(fd >= 0);
    int64_t t0 = ts_now_ms();
    assert_int_equal(send(fd, "hello", 5, 0), 5);
    char r[8];
    size_t got = 0;
    int ms = -1;
    while (ts_now_ms() - t0 < timeout_ms) {
        hogs_push(hogs, nhogs);
        struct pollfd p = {.fd = fd, .events = POLLIN};
        if (poll(&p, 1, 10) <= 0)
            continue;
        ssize_t n = ts_recv(fd, r + got, sizeof r - got, MSG_DONTWAIT);
        assert_true(n > 0);
        got += (size_t)n;
        if (got >= 5) {
            ms = (int)(ts_now_ms() - t0);
            break;
        }
    }
    if (ms >= 0) {
        assert_int_equal(got, 5);
        assert_memory_equal(r, "hello", 5);
    }
    close(fd);
    return ms;
}

/*
 * Issue 10.17: clients that send and never read must not take the receive
 * pool from the others.  Before the fix each held 32 buffers whatever
 * --bufs said, so with --bufs 32 one of them starved every other client
 * until it went away.  The send timeout is long here: the per-connection
 * share alone must keep the fresh client served.
 */
static void test_echo_hogs(void **state)
{
    (void)state;
    enum { HOGS = 8, TRIES = 3 };
    struct server s;
    const char *argv[] = {"--bufs", "32", "--send-timeout", "60", NULL};
    server_start_args(&s, argv);
    int hogs[HOGS];
    for (size_t i = 0; i < HOGS; i++)
        hogs[i] = hog_connect(s.port);
    /* Until every hog's echo has stalled and its receive is paused. */
    for (int64_t until = ts_now_ms() + 500; ts_now_ms() < until;) {
        hogs_push(hogs, HOGS);
        usleep(1000);
    }
    for (int k = 0; k < TRIES; k++) {
        int ms = fresh_echo_ms(s.port, hogs, HOGS, 2000);
        if (ms < 0)
            fail_msg("try %d: no echo within 2 s with %d clients that never read", k, HOGS);
        print_message("fresh client's echo with %d hogs: %d ms\n", HOGS, ms);
    }
    /* Stalled, not dead: the 60 s send timeout has not closed them. */
    for (size_t i = 0; i < HOGS; i++) {
        assert_false(peer_closed(hogs[i]));
        close(hogs[i]);
    }
    assert_int_equal(server_stop(&s), 0);
}

/*
 * Issue 10.17: an echo that cannot be sent within --send-timeout closes
 * the connection (never before the timeout), and the server goes on
 * serving.
 */
static void test_echo_send_timeout(void **state)
{
    (void)state;
    struct server s;
    const char *argv[] = {"--bufs", "32", "--send-timeout", "0.5", NULL};
    server_start_args(&s, argv);
    int64_t t0 = ts_now_ms();
    int hog = hog_connect(s.port);
    int64_t closed_at = 0;
    while (ts_now_ms() - t0 < 5000) {
        hogs_push(&hog, 1);
        if (peer_closed(hog)) {
            closed_at = ts_now_ms();
            break;
        }
        usleep(5000);
    }
    if (!closed_at)
        fail_msg("a client that never reads was not closed within 5 s (--send-timeout 0.5)");
    print_message("hog closed %d ms after connecting (--send-timeout 0.5)\n",
                  (int)(closed_at - t0));
    /* No send can have started before the connection: 500 ms at least. */
    assert_true(closed_at - t0 >= 500);
    close(hog);

    /* A client that reads is served, and a large echo is not cut short. */
    struct client c = {.fd = ts_connect(s.port), .len = 300000};
    assert_true(c.fd >= 0);
    set_nonblock(c.fd);
    c.tx = malloc(c.len);
    assert_non_null(c.tx);
    for (size_t k = 0; k < c.len; k++)
        c.tx[k] = pattern(3, k);
    echo_all(&c, 1, 5000);
    assert_int_equal(c.recvd, c.len);
    free(c.tx);
    close(c.fd);
    assert_int_equal(server_stop(&s), 0);
}

/* ---- one port, one process -------------------------------------------- */

/* A second eddy-echo on a port in use must refuse: exit 1, saying so. */
static void expect_refused(const char *const *argv)
{
    static char text[4096];
    int rc = run_to_exit(argv, text, sizeof text);
    if (rc != 1 || !strstr(text, "Address already in use"))
        fail_msg("eddy-echo %s %s %s %s %s %s: exit %d, said: %s", argv[0], argv[1], argv[2],
                 argv[3], argv[4] ? argv[4] : "", argv[4] && argv[5] ? argv[5] : "", rc,
                 text);
}

static void echo_once(uint16_t port)
{
    int fd = ts_connect(port);
    assert_true(fd >= 0);
    assert_int_equal(send(fd, "ping", 4, 0), 4);
    struct timeval tv = {.tv_sec = 2};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    char r[4];
    assert_int_equal(ts_recv(fd, r, sizeof r, MSG_WAITALL), 4);
    assert_memory_equal(r, "ping", 4);
    close(fd);
}

/*
 * Issue 10.18: a second eddy-echo on the same port used to start silently
 * and take half the connections (SO_REUSEPORT was set unconditionally).
 * Whatever the thread counts, the second one must refuse with EADDRINUSE
 * and the first keep every connection; once the first is gone the port is
 * free again at once (its TIME_WAIT sockets do not count).
 */
static void test_echo_port_in_use(void **state)
{
    (void)state;
    static const char *const threads[] = {"1", "2"};
    for (size_t a = 0; a < 2; a++) {
        struct server s;
        server_start(&s, threads[a]);
        char port[8];
        snprintf(port, sizeof port, "%u", s.port);
        echo_once(s.port);
        for (size_t b = 0; b < 2; b++) {
            const char *argv[] = {"--port", port, "--threads", threads[b], NULL};
            expect_refused(argv);
            const char *lo[] = {"--port", port, "--threads", threads[b], "--bind", "127.0.0.1",
                                NULL};
            expect_refused(lo);
        }
        /* Still the only server there: every connection is its own. */
        for (int i = 0; i < 8; i++)
            echo_once(s.port);
        assert_int_equal(server_stop(&s), 0);

        /* Restart on the same port, with connections just closed by it. */
        const char *again[] = {"--port", port, "--threads", threads[a], NULL};
        int out;
        pid_t pid = spawn(again, &out, NULL);
        char line[128];
        int len = read_line(out, line, sizeof line, 5000);
        close(out);
        if (len <= 0)
            fail_msg("eddy-echo could not listen again on port %s after the first stopped", port);
        struct server s2 = {.pid = pid, .port = s.port};
        echo_once(s2.port);
        assert_int_equal(server_stop(&s2), 0);
    }
}

/* A SO_REUSEPORT listener of another program of the same user: eddy-echo
 * with several loops must not join its group. */
static void test_echo_port_foreign_reuseport(void **state)
{
    (void)state;
    int l = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    assert_true(l >= 0);
    int one = 1;
    assert_int_equal(setsockopt(l, SOL_SOCKET, SO_REUSEPORT, &one, sizeof one), 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t alen = sizeof a;
    assert_int_equal(bind(l, (struct sockaddr *)&a, sizeof a), 0);
    assert_int_equal(listen(l, 16), 0);
    assert_int_equal(getsockname(l, (struct sockaddr *)&a, &alen), 0);
    char port[8];
    snprintf(port, sizeof port, "%u", ntohs(a.sin_port));
    const char *argv[] = {"--port", port, "--threads", "2", "--bind", "127.0.0.1", NULL};
    expect_refused(argv);
    const char *any[] = {"--port", port, "--threads", "2", NULL};
    expect_refused(any);
    close(l);
}

/*
 * Two eddy-echo started at the same moment on the same free port, with
 * several loops each: at most one may end up listening (both refusing is
 * allowed: neither shares silently).  A check of the port followed by a
 * SO_REUSEPORT bind leaves a window between the two; this catches it.
 */
static void test_echo_port_race(void **state)
{
    (void)state;
    enum { ROUNDS = 10 };
    unsigned both = 0, none = 0;
    for (int r = 0; r < ROUNDS; r++) {
        uint16_t p;
        int l = ts_listen(0, &p);
        close(l);
        char port[8];
        snprintf(port, sizeof port, "%u", p);
        const char *argv[] = {"--port", port, "--threads", "2", "--bind", "127.0.0.1", NULL};
        int out[2];
        pid_t pid[2];
        for (int k = 0; k < 2; k++)
            pid[k] = spawn(argv, &out[k], NULL);
        int listening = 0;
        for (int k = 0; k < 2; k++) {
            char line[128];
            int len = read_line(out[k], line, sizeof line, 5000);
            close(out[k]);
            int status;
            if (len > 0) {
                listening++;
                continue;
            }
            if (!wait_exit(pid[k], 5000, &status))
                fail_msg("round %d: eddy-echo neither listened nor exited", r);
            assert_true(WIFEXITED(status));
            assert_int_equal(WEXITSTATUS(status), 1);
            pid[k] = -1;
        }
        if (listening == 2)
            both++;
        if (listening == 0)
            none++;
        for (int k = 0; k < 2; k++)
            if (pid[k] > 0) {
                struct server s = {.pid = pid[k], .port = p};
                assert_int_equal(server_stop(&s), 0);
            }
    }
    print_message("port race: %u of %d rounds both listened, %u both refused\n", both,
                  ROUNDS, none);
    assert_int_equal(both, 0);
}

int main(void)
{
    signal(SIGPIPE, SIG_IGN);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_teardown(test_echo_usage, teardown_child),
        cmocka_unit_test_teardown(test_echo_many, teardown_child),
        cmocka_unit_test_teardown(test_echo_threads, teardown_child),
        cmocka_unit_test_teardown(test_echo_reset, teardown_child),
        cmocka_unit_test_teardown(test_echo_hogs, teardown_child),
        cmocka_unit_test_teardown(test_echo_send_timeout, teardown_child),
        cmocka_unit_test_teardown(test_echo_port_in_use, teardown_child),
        cmocka_unit_test_teardown(test_echo_port_foreign_reuseport, teardown_child),
        cmocka_unit_test_teardown(test_echo_port_race, teardown_child),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
