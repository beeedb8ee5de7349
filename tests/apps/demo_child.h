/*
 * eddy-demo as a child process, for the tests of the demo (test_demo.c,
 * test_race.c): started on ports the kernel picks (--port 0 --time-port 0,
 * read back from its first stdout line), its stderr in a temporary file,
 * stopped with SIGTERM; teardown_child() kills one a failed test left.
 * Include after testsupport.h, with EDDY_DEMO_PATH defined.
 */
#ifndef EDDY_TEST_DEMO_CHILD_H
#define EDDY_TEST_DEMO_CHILD_H

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#ifndef EDDY_DEMO_PATH
#error "EDDY_DEMO_PATH must name the eddy-demo binary"
#endif

struct demo {
    pid_t pid;
    uint16_t port, time_port; /* time_port 0: --time-port off */
    char errpath[64];
    char line[1024]; /* the start line */
};

/* The running child, so a failed test still does not leave it behind. */
static struct demo *g_demo;

static int teardown_child(void **state)
{
    (void)state;
    if (g_demo) {
        if (g_demo->pid > 0) {
            kill(g_demo->pid, SIGKILL);
            waitpid(g_demo->pid, NULL, 0);
        }
        if (g_demo->errpath[0])
            unlink(g_demo->errpath);
        g_demo = NULL;
    }
    return 0;
}

/* Starts eddy-demo --port 0 --time-port 0 extra... and reads its ports. */
static void demo_start(struct demo *d, const char *const *extra)
{
    memset(d, 0, sizeof *d);
    snprintf(d->errpath, sizeof d->errpath, "/tmp/eddy-demo-test-XXXXXX");
    int errfd = mkostemp(d->errpath, O_CLOEXEC);
    assert_true(errfd >= 0);
    g_demo = d;
    const char *argv[32] = {"eddy-demo", "--port", "0", "--time-port", "0"};
    size_t n = 5;
    for (; extra && *extra; extra++) {
        assert_true(n < 31);
        argv[n++] = *extra;
    }
    argv[n] = NULL;
    int out[2];
    assert_int_equal(pipe2(out, O_CLOEXEC), 0);
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        dup2(out[1], 1);
        dup2(errfd, 2);
        execv(EDDY_DEMO_PATH, (char *const *)argv);
        _exit(127);
    }
    d->pid = pid;
    close(out[1]);
    close(errfd);
    char line[1024];
    size_t len = 0;
    int64_t deadline = ts_now_ms() + 5000;
    while (len < sizeof line - 1 && !memchr(line, '\n', len)) {
        struct pollfd p = {.fd = out[0], .events = POLLIN};
        int left = (int)(deadline - ts_now_ms());
        if (left <= 0)
            fail_msg("eddy-demo printed no start line within 5 s");
        if (poll(&p, 1, left) <= 0)
            continue;
        ssize_t r = read(out[0], line + len, sizeof line - 1 - len);
        if (r <= 0)
            fail_msg("eddy-demo exited before its start line");
        len += (size_t)r;
    }
    line[len] = 0;
    close(out[0]);
    unsigned port = 0, tport = 0;
    char toff[4] = "";
    if (sscanf(line, "eddy-demo: port %u time-port %3[of]:", &port, toff) == 2) {
        assert_string_equal(toff, "off"); /* --time-port off: no time service */
        assert_true(port > 0 && port < 65536);
    } else {
        assert_int_equal(sscanf(line, "eddy-demo: port %u time-port %u", &port, &tport), 2);
        assert_true(port > 0 && port < 65536 && tport > 0 && tport < 65536);
        assert_true(port != tport);
    }
    snprintf(d->line, sizeof d->line, "%s", line);
    assert_non_null(strstr(line, "/api/noblock"));
    d->port = (uint16_t)port;
    d->time_port = (uint16_t)tport;
}

/* SIGTERM, then the exit status within timeout_ms (killed if not). */
static int demo_stop(struct demo *d, unsigned timeout_ms)
{
    assert_int_equal(kill(d->pid, SIGTERM), 0);
    int64_t deadline = ts_now_ms() + timeout_ms;
    int status = 0;
    for (;;) {
        pid_t r = waitpid(d->pid, &status, WNOHANG);
        assert_true(r >= 0);
        if (r == d->pid)
            break;
        if (ts_now_ms() > deadline) {
            kill(d->pid, SIGKILL);
            waitpid(d->pid, &status, 0);
            d->pid = -1;
            fail_msg("eddy-demo did not exit within %u ms of SIGTERM", timeout_ms);
        }
        usleep(2000);
    }
    d->pid = -1;
    assert_true(WIFEXITED(status));
    return WEXITSTATUS(status);
}

/* The child's stderr so far. */
static char *demo_stderr(const struct demo *d)
{
    FILE *f = fopen(d->errpath, "r");
    assert_non_null(f);
    static char buf[65536];
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    buf[n] = 0;
    fclose(f);
    return buf;
}

static void demo_done(struct demo *d)
{
    assert_int_equal(demo_stop(d, 5000), 0);
    unlink(d->errpath);
    g_demo = NULL;
}

#endif /* EDDY_TEST_DEMO_CHILD_H */
