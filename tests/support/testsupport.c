#define _GNU_SOURCE
#include "testsupport.h"

#include <arpa/inet.h>
#include <dirent.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

int64_t ts_now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

struct eddy_loop *ts_loop_new(const struct eddy_loop_options *opts)
{
    struct eddy_loop *loop = NULL;
    int rc = eddy_loop_init(&loop, opts);
    if (rc < 0)
        fail_msg("eddy_loop_init: %s: %s", eddy_strerror(rc), eddy_loop_init_explain(rc));
    return loop;
}

int ts_backend_is_epoll(void)
{
    static int cached = -1;
    if (cached < 0) {
        struct eddy_loop *loop = ts_loop_new(NULL);
        cached = strcmp(eddy_loop_backend(loop), "epoll") == 0;
        assert_int_equal(eddy_loop_destroy(loop), 0);
    }
    return cached;
}

void ts_loop_free(struct eddy_loop *loop)
{
    struct eddy_loop_stats st;
    eddy_loop_stats(loop, &st);
    assert_int_equal(st.active, 0);
    assert_int_equal(eddy_loop_destroy(loop), 0);
}

void ts_run_until(struct eddy_loop *loop, const volatile int *flag, unsigned timeout_ms)
{
    int64_t end = ts_now_ms() + timeout_ms;
    while (!*flag) {
        if (ts_now_ms() > end)
            fail_msg("timed out after %u ms", timeout_ms);
        int rc = eddy_loop_run(loop, EDDY_RUN_NOWAIT);
        assert_true(rc >= 0);
        if (!*flag)
            usleep(200);
    }
}

void ts_run_idle(struct eddy_loop *loop, unsigned timeout_ms)
{
    int64_t end = ts_now_ms() + timeout_ms;
    for (;;) {
        int rc = eddy_loop_run(loop, EDDY_RUN_NOWAIT);
        assert_true(rc >= 0);
        if (rc == 0)
            return;
        if (ts_now_ms() > end)
            fail_msg("loop still has %d active after %u ms", rc, timeout_ms);
        usleep(200);
    }
}

int ts_listen(int v6, uint16_t *port)
{
    int fd = socket(v6 ? AF_INET6 : AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    assert_true(fd >= 0);
    int one = 1;
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    struct sockaddr_storage ss;
    socklen_t len;
    memset(&ss, 0, sizeof ss);
    if (v6) {
        struct sockaddr_in6 *a = (struct sockaddr_in6 *)&ss;
        a->sin6_family = AF_INET6;
        a->sin6_addr = in6addr_loopback;
        len = sizeof *a;
    } else {
        struct sockaddr_in *a = (struct sockaddr_in *)&ss;
        a->sin_family = AF_INET;
        a->sin_addr.s_addr = htonl(INADDR_LOOPBACK);
        len = sizeof *a;
    }
    assert_int_equal(bind(fd, (struct sockaddr *)&ss, len), 0);
    assert_int_equal(listen(fd, 1024), 0);
    assert_int_equal(getsockname(fd, (struct sockaddr *)&ss, &len), 0);
    *port = ntohs(v6 ? ((struct sockaddr_in6 *)&ss)->sin6_port
                     : ((struct sockaddr_in *)&ss)->sin_port);
    return fd;
}

int ts_connect(uint16_t port)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    assert_true(fd >= 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons(port),
                            .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    assert_int_equal(connect(fd, (struct sockaddr *)&a, sizeof a), 0);
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    return fd;
}

void ts_tcp_pair(int fds[2])
{
    uint16_t port;
    int l = ts_listen(0, &port);
    fds[0] = ts_connect(port);
    fds[1] = accept4(l, NULL, NULL, SOCK_CLOEXEC);
    assert_true(fds[1] >= 0);
    close(l);
}

ssize_t ts_recv(int fd, void *buf, size_t len, int flags)
{
    size_t got = 0;
    for (;;) {
        ssize_t n = recv(fd, (char *)buf + got, len - got, flags);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0)
            return got ? (ssize_t)got : -1;
        got += (size_t)n;
        if (n == 0 || !(flags & MSG_WAITALL) || got == len)
            return (ssize_t)got;
    }
}

int ts_fd_count(void)
{
    DIR *d = opendir("/proc/self/fd");
    assert_non_null(d);
    int n = 0;
    struct dirent *e;
    while ((e = readdir(d)))
        if (e->d_name[0] != '.')
            n++;
    closedir(d);
    return n - 1; /* the DIR's own descriptor */
}

void ts_run_for(struct eddy_loop *loop, int ms)
{
    int64_t end = ts_now_ms() + ms;
    while (ts_now_ms() < end) {
        assert_true(eddy_loop_run(loop, EDDY_RUN_NOWAIT) >= 0);
        usleep(500);
    }
}

int ts_fd_setup(void **state)
{
    *state = (void *)(intptr_t)ts_fd_count();
    return 0;
}

int ts_fd_teardown(void **state)
{
    int before = (int)(intptr_t)*state, after = ts_fd_count();
    if (before != after) {
        print_error("descriptor leak: %d open before, %d after\n", before, after);
        return -1;
    }
    return 0;
}

uint8_t ts_pattern(size_t i)
{
    return (uint8_t)((i * 2654435761u) >> 13);
}
