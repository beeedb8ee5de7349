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

/* The running child, so a failed test still does not leave it behind. */
static pid_t g_child = -1;

static int teardown_child(void **state)
{
    (void)state;
    if (g_child > 0) {
        kill(g_child, SIGKILL);
        waitpid(g_child, NULL, 0);
        g_child = -1;
    }
    return 0;
}

/* Starts eddy-echo --port 0 [extra] and reads its "listening on PORT". */
static void server_start(struct server *s, const char *threads)
{
    int out[2];
    assert_int_equal(pipe2(out, O_CLOEXEC), 0);
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        dup2(out[1], 1);
        execl(EDDY_ECHO_PATH, "eddy-echo", "--port", "0", "--threads", threads,
              (char *)NULL);
        _exit(127);
    }
    g_child = pid;
    close(out[1]);
    char line[128];
    size_t len = 0;
    int64_t deadline = ts_now_ms() + 5000;
    while (len < sizeof line - 1 && !memchr(line, '\n', len)) {
        struct pollfd p = {.fd = out[0], .events = POLLIN};
        int left = (int)(deadline - ts_now_ms());
        assert_true(left > 0);
        if (poll(&p, 1, left) <= 0)
            continue;
        ssize_t n = read(out[0], line + len, sizeof line - 1 - len);
        assert_true(n > 0);
        len += (size_t)n;
    }
    line[len] = 0;
    close(out[0]);
    unsigned port = 0;
    assert_int_equal(sscanf(line, "listening on %u", &port), 1);
    assert_true(port > 0 && port < 65536);
    s->pid = pid;
    s->port = (uint16_t)port;
}

/* SIGTERM, then the exit status within 2 s (the child is killed if not). */
static int server_stop(struct server *s)
{
    assert_int_equal(kill(s->pid, SIGTERM), 0);
    int64_t deadline = ts_now_ms() + 2000;
    int status = 0;
    for (;;) {
        pid_t r = waitpid(s->pid, &status, WNOHANG);
        assert_true(r >= 0);
        if (r == s->pid)
            break;
        if (ts_now_ms() > deadline) {
            kill(s->pid, SIGKILL);
            waitpid(s->pid, &status, 0);
            fail_msg("eddy-echo did not exit within 2 s of SIGTERM");
        }
        usleep(2000);
    }
    s->pid = -1;
    g_child = -1;
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
                ssize_t got = recv(c->fd, rx, 65536, 0);
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
    assert_int_equal(recv(busy, r, sizeof r, MSG_WAITALL), (ssize_t)sizeof r);
    assert_memory_equal(r, b, sizeof b);
    assert_int_equal(server_stop(&s), 0);
    /* The server closed them: EOF (or a reset), never a hang. */
    struct timeval tv = {.tv_sec = 2};
    setsockopt(idle, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    ssize_t got = recv(idle, r, sizeof r, 0);
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

/* --help exits 0; a missing --port is a usage error (2). */
static void test_echo_usage(void **state)
{
    (void)state;
    const char *argsets[2][3] = {{"--help", NULL, NULL}, {"--threads", "1", NULL}};
    int want[2] = {0, 2};
    for (int k = 0; k < 2; k++) {
        pid_t pid = fork();
        assert_true(pid >= 0);
        if (pid == 0) {
            int devnull = open("/dev/null", O_WRONLY);
            dup2(devnull, 1);
            dup2(devnull, 2);
            execl(EDDY_ECHO_PATH, "eddy-echo", argsets[k][0], argsets[k][1], (char *)NULL);
            _exit(127);
        }
        int status;
        assert_int_equal(waitpid(pid, &status, 0), pid);
        assert_true(WIFEXITED(status));
        assert_int_equal(WEXITSTATUS(status), want[k]);
    }
}

int main(void)
{
    signal(SIGPIPE, SIG_IGN);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_echo_usage),
        cmocka_unit_test_teardown(test_echo_many, teardown_child),
        cmocka_unit_test_teardown(test_echo_threads, teardown_child),
        cmocka_unit_test_teardown(test_echo_reset, teardown_child),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
