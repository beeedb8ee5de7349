/* Shared helpers for eddy's cmocka tests: loopback sockets, bounded loop
 * runs, skipping when the kernel lacks a feature. */
#ifndef EDDY_TESTSUPPORT_H
#define EDDY_TESTSUPPORT_H

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <unistd.h>

#include "eddy/eddy.h"

/* A loop with the environment's features (so the compat run applies). */
struct eddy_loop *ts_loop_new(const struct eddy_loop_options *opts);
/* Asserts the loop has nothing active and destroys it. */
void ts_loop_free(struct eddy_loop *loop);

/* Runs the loop (EDDY_RUN_ONCE steps) until *flag becomes nonzero or
 * timeout_ms passes; fails the test on timeout. */
void ts_run_until(struct eddy_loop *loop, const volatile int *flag, unsigned timeout_ms);
/* Runs until the loop has no active op, failing after timeout_ms. */
void ts_run_idle(struct eddy_loop *loop, unsigned timeout_ms);

/* A listening TCP socket on 127.0.0.1 (or ::1 if v6), port chosen by the
 * kernel; *port gets it. */
int ts_listen(int v6, uint16_t *port);
/* A blocking client socket connected to 127.0.0.1:port. */
int ts_connect(uint16_t port);
/* A connected TCP pair over loopback: fds[0] client, fds[1] server side. */
void ts_tcp_pair(int fds[2]);
/* recv(2) for the tests' blocking sockets, most of which have SO_RCVTIMEO:
 * such a receive fails with EINTR (instead of being restarted) whenever
 * the kernel interrupts its wait, with or without a signal to handle, and
 * this retries it.  With MSG_WAITALL it goes on until len bytes, EOF or an
 * error, like recv without the interruption.  The socket's own timeout
 * still bounds each wait (-1, EAGAIN). */
ssize_t ts_recv(int fd, void *buf, size_t len, int flags);
/* Number of open descriptors of this process. */
int ts_fd_count(void);
/* Monotonic ms. */
int64_t ts_now_ms(void);

/* True when loops made with the environment's settings (ts_loop_new(NULL))
 * run on the epoll backend (EDDY_BACKEND=epoll, or io_uring refused): for
 * tests that check something only io_uring has, so that they check the
 * epoll equivalent instead, and say so. */
int ts_backend_is_epoll(void);

/* Runs the loop (RUN_NOWAIT, short naps) for ms, whatever happens. */
void ts_run_for(struct eddy_loop *loop, int ms);

/* Polls the loop until cond holds; fails the test after ms. */
#define TS_RUN_UNTIL(loop, cond, ms)                                           \
    do {                                                                       \
        int64_t end_ = ts_now_ms() + (ms);                                     \
        while (!(cond)) {                                                      \
            if (ts_now_ms() > end_)                                            \
                fail_msg("timed out after %d ms waiting for %s", (int)(ms),   \
                         #cond);                                               \
            assert_true(eddy_loop_run((loop), EDDY_RUN_NOWAIT) >= 0);          \
            if (!(cond))                                                       \
                usleep(50);                                                    \
        }                                                                      \
    } while (0)

/* cmocka setup/teardown pair: the teardown fails the test when the
 * process's descriptor count differs from the setup's (a leak). */
int ts_fd_setup(void **state);
int ts_fd_teardown(void **state);

/* A byte pattern with no short period, for checking order and loss. */
uint8_t ts_pattern(size_t i);

#endif
