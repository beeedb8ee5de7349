/* Loop groups (eddy/group.h) and the listening-socket helpers: N loops on
 * N threads, the ready barrier, a failing start, stop from a thread and
 * from SIGTERM, posts between loops, pinning; eddy_listen_tcp(_n) and
 * eddy_sock_port.  Callbacks on loop threads only record (cmocka asserts
 * belong to the main thread); the main thread checks after the join. */
#define _GNU_SOURCE
#include "testsupport.h"
#include "eddy/group.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#define MAXL 4

/* What each loop's callbacks saw. */
static struct rec {
    atomic_int setups, stops, teardowns, ready_seen, ticks;
    int fail_index;                 /* setup of this loop fails (-1: none) */
    int fail_rc;
    pthread_t setup_thread[MAXL], teardown_thread[MAXL];
    struct eddy_loop *loop[MAXL];
    int ready_at_first_cb[MAXL];    /* setups done when the loop's first callback ran */
    int order_ok[MAXL];             /* stop ran before teardown */
    int stopped[MAXL];
    int started_at_stop[MAXL];      /* eddy_group_started() in the stop callback */
    int timer_res[MAXL];            /* the 10 s timer's final result */
    int cpu_count[MAXL], cpu[MAXL]; /* affinity seen in setup */
    struct eddy_op first[MAXL], timer[MAXL], tick[MAXL];
    atomic_int signo;
    const char *backend[MAXL];      /* the loop's, seen in setup */
    atomic_int hooked;              /* loop_options calls */
    int stop_in_setup;              /* setup of the last loop calls eddy_group_stop */
    pthread_t hook_thread[MAXL];
    unsigned n;
} R;

static void rec_reset(unsigned n)
{
    memset(&R, 0, sizeof R);
    R.n = n;
    R.fail_index = -1;
    for (unsigned i = 0; i < MAXL; i++) {
        R.timer_res[i] = 1;
        R.started_at_stop[i] = -1; /* no stop callback seen */
    }
}

static unsigned op_index(struct eddy_op *op)
{
    return (unsigned)(uintptr_t)op->data;
}

static void on_first(struct eddy_op *op, int res)
{
    (void)res;
    R.ready_at_first_cb[op_index(op)] = atomic_load(&R.setups);
    atomic_fetch_add(&R.ready_seen, 1);
}

static void on_timer(struct eddy_op *op, int res)
{
    R.timer_res[op_index(op)] = res;
}

static void on_tick(struct eddy_op *op, int res)
{
    if (res == 0)
        atomic_fetch_add(&R.ticks, 1);
}

/* Every loop: a post (its first callback), a 10 s timer that only the
 * stop may end, and a 5 ms repeating tick. */
static int setup(struct eddy_group *g, unsigned i, struct eddy_loop *loop, void *ud)
{
    (void)ud;
    R.setup_thread[i] = pthread_self();
    R.loop[i] = loop;
    R.backend[i] = eddy_loop_backend(loop);
    if (eddy_group_loop(g, i) != loop)
        return -EFAULT;
    cpu_set_t set;
    if (pthread_getaffinity_np(pthread_self(), sizeof set, &set) == 0) {
        R.cpu_count[i] = CPU_COUNT(&set);
        for (int c = 0; c < CPU_SETSIZE; c++)
            if (CPU_ISSET(c, &set)) {
                R.cpu[i] = c;
                break;
            }
    }
    R.first[i].data = R.timer[i].data = R.tick[i].data = (void *)(uintptr_t)i;
    int rc = eddy_post(loop, &R.first[i], on_first);
    if (rc == 0)
        rc = eddy_timer(loop, &R.timer[i], 10000, on_timer);
    if ((int)i == R.fail_index) {
        /* A failing setup cancels what it started. */
        if (rc == 0)
            eddy_cancel(loop, &R.timer[i]);
        eddy_cancel(loop, &R.first[i]);
        atomic_fetch_add(&R.setups, 1);
        return R.fail_rc;
    }
    if (rc == 0)
        rc = eddy_timer_repeat(loop, &R.tick[i], 5, on_tick);
    if (i == R.n - 1)
        usleep(50 * 1000); /* the slowest: nobody may run before it is done */
    if (i == R.n - 1 && R.stop_in_setup)
        eddy_group_stop(g); /* before any loop runs: the start passes it on */
    atomic_fetch_add(&R.setups, 1);
    return rc;
}

static void stop(struct eddy_group *g, unsigned i, struct eddy_loop *loop, void *ud)
{
    (void)g;
    (void)ud;
    R.stopped[i] = 1;
    R.started_at_stop[i] = eddy_group_started(g);
    atomic_fetch_add(&R.stops, 1);
    eddy_cancel(loop, &R.timer[i]);
    eddy_cancel(loop, &R.tick[i]);
}

static void teardown(struct eddy_group *g, unsigned i, struct eddy_loop *loop, void *ud)
{
    (void)g;
    (void)ud;
    (void)loop;
    R.teardown_thread[i] = pthread_self();
    R.order_ok[i] = R.stopped[i] || (int)i == R.fail_index || R.fail_index >= 0;
    atomic_fetch_add(&R.teardowns, 1);
}

static void opts_for(struct eddy_group_options *o, unsigned n)
{
    eddy_group_options_init(o);
    o->loops = n;
    o->setup = setup;
    o->stop = stop;
    o->teardown = teardown;
    o->iowq_max_workers = 2;
}

static void wait_for(atomic_int *v, int want, unsigned ms)
{
    int64_t end = ts_now_ms() + ms;
    while (atomic_load(v) < want) {
        if (ts_now_ms() > end)
            fail_msg("timed out: %d of %d", atomic_load(v), want);
        usleep(1000);
    }
}

/* ---- start, barrier, stop --------------------------------------------- */

static void check_clean_run(unsigned n)
{
    assert_int_equal(atomic_load(&R.setups), n);
    assert_int_equal(atomic_load(&R.stops), n);
    assert_int_equal(atomic_load(&R.teardowns), n);
    for (unsigned i = 0; i < n; i++) {
        assert_int_equal(R.ready_at_first_cb[i], n); /* the barrier */
        assert_int_equal(R.timer_res[i], -ECANCELED);
        assert_true(pthread_equal(R.setup_thread[i], R.teardown_thread[i]));
        assert_false(pthread_equal(R.setup_thread[i], pthread_self()));
        assert_true(R.order_ok[i]);
        assert_int_equal(R.started_at_stop[i], 1); /* a real stop */
        for (unsigned j = 0; j < i; j++)
            assert_false(pthread_equal(R.setup_thread[i], R.setup_thread[j]));
    }
}

/* N = 1..4: every setup before any callback, each loop on its own thread,
 * stop from the main thread ends them all; nothing leaks. */
static void test_start_stop(void **state)
{
    (void)state;
    for (unsigned n = 1; n <= MAXL; n++) {
        rec_reset(n);
        struct eddy_group_options o;
        opts_for(&o, n);
        struct eddy_group *g;
        assert_int_equal(eddy_group_start(&g, &o), 0);
        assert_int_equal(eddy_group_size(g), n);
        /* All setups are done by the time start returns. */
        assert_int_equal(atomic_load(&R.setups), n);
        wait_for(&R.ready_seen, (int)n, 5000);
        wait_for(&R.ticks, (int)(2 * n), 5000);
        eddy_group_stop(g);
        eddy_group_stop(g); /* again: nothing more */
        assert_int_equal(eddy_group_join(g), 0);
        eddy_group_destroy(g);
        check_clean_run(n);
    }
}

/* A stop asked for during a setup, before the group runs, is not lost:
 * every loop still passes the barrier, then stops. */
static void test_stop_during_setup(void **state)
{
    (void)state;
    rec_reset(3);
    R.stop_in_setup = 1;
    struct eddy_group_options o;
    opts_for(&o, 3);
    struct eddy_group *g;
    assert_int_equal(eddy_group_start(&g, &o), 0);
    assert_int_equal(eddy_group_join(g), 0);
    eddy_group_destroy(g);
    check_clean_run(3);
}

/* One setup fails: start returns its error, the loops that were ready are
 * stopped (their 10 s timers cancelled, so none served), every loop is
 * torn down and joined. */
static void test_setup_failure(void **state)
{
    (void)state;
    for (int bad = 0; bad < 3; bad++) {
        rec_reset(3);
        R.fail_index = bad;
        R.fail_rc = -EADDRNOTAVAIL;
        struct eddy_group_options o;
        opts_for(&o, 3);
        struct eddy_group *g = (struct eddy_group *)&o; /* must stay untouched */
        assert_int_equal(eddy_group_start(&g, &o), -EADDRNOTAVAIL);
        assert_ptr_equal(g, (struct eddy_group *)&o);
        assert_int_equal(atomic_load(&R.setups), 3);
        assert_int_equal(atomic_load(&R.stops), 2);
        assert_int_equal(atomic_load(&R.teardowns), 3);
        assert_int_equal(atomic_load(&R.ticks), 0);
        for (int i = 0; i < 3; i++) {
            assert_int_equal(R.stopped[i], i != bad);
            assert_int_equal(R.started_at_stop[i], i != bad ? 0 : -1); /* undoing a failed start */
            assert_int_equal(R.timer_res[i], -ECANCELED);
        }
    }
}

static void *fail_alloc(void *ud, void *ptr, size_t size)
{
    (void)ud;
    if (size == 0) {
        free(ptr);
        return NULL;
    }
    return NULL;
}

/* Loop 0 cannot even be created: the others never are either, no setup
 * runs, and the start fails with the loop's error. */
static void test_init_failure(void **state)
{
    (void)state;
    rec_reset(3);
    struct eddy_loop_options lo;
    eddy_loop_options_init(&lo);
    lo.alloc = fail_alloc;
    struct eddy_group_options o;
    opts_for(&o, 3);
    o.loop = &lo;
    o.signals = 1;
    struct eddy_group *g;
    assert_int_equal(eddy_group_start(&g, &o), -ENOMEM);
    assert_int_equal(atomic_load(&R.setups), 0);
    assert_int_equal(atomic_load(&R.teardowns), 0);
    /* The caller's mask is back: SIGTERM is not blocked. */
    sigset_t cur;
    pthread_sigmask(SIG_BLOCK, NULL, &cur);
    assert_false(sigismember(&cur, SIGTERM));
}

static void *stopper(void *arg)
{
    usleep(30 * 1000);
    eddy_group_stop(arg);
    return NULL;
}

/* Stop from a thread of its own. */
static void test_stop_from_thread(void **state)
{
    (void)state;
    rec_reset(2);
    struct eddy_group_options o;
    opts_for(&o, 2);
    struct eddy_group *g;
    assert_int_equal(eddy_group_start(&g, &o), 0);
    pthread_t t;
    assert_int_equal(pthread_create(&t, NULL, stopper, g), 0);
    assert_int_equal(eddy_group_join(g), 0);
    pthread_join(t, NULL);
    eddy_group_destroy(g);
    check_clean_run(2);
}

static void on_sig(struct eddy_group *g, int signo, void *ud)
{
    (void)g;
    (void)ud;
    int none = 0;
    atomic_compare_exchange_strong(&R.signo, &none, signo); /* the first */
}

/* SIGTERM to the process, read by loop 0, drains every loop; a second
 * signal during the drain does not kill the process (it is discarded at
 * the join), and the caller's mask is given back. */
static void test_stop_from_signal(void **state)
{
    (void)state;
    for (int twice = 0; twice < 2; twice++) {
        rec_reset(3);
        struct eddy_group_options o;
        opts_for(&o, 3);
        o.signals = 1;
        o.on_signal = on_sig;
        struct eddy_group *g;
        assert_int_equal(eddy_group_start(&g, &o), 0);
        sigset_t cur;
        pthread_sigmask(SIG_BLOCK, NULL, &cur);
        assert_true(sigismember(&cur, SIGTERM)); /* until the join */
        wait_for(&R.ticks, 6, 5000);
        assert_int_equal(kill(getpid(), SIGTERM), 0);
        if (twice)
            assert_int_equal(kill(getpid(), SIGINT), 0);
        assert_int_equal(eddy_group_join(g), 0);
        eddy_group_destroy(g);
        check_clean_run(3);
        /* Both pending at once are read lowest number first. */
        int seen = atomic_load(&R.signo);
        assert_true(seen == SIGTERM || (twice && seen == SIGINT));
        pthread_sigmask(SIG_BLOCK, NULL, &cur);
        assert_false(sigismember(&cur, SIGTERM));
        assert_false(sigismember(&cur, SIGINT));
    }
}

/* loop_options: loop 1 made to run on epoll (with the environment
 * ignored), on its own thread, before it is created; loop 0 as the
 * environment says.  With io_uring on loop 0, loop 1 does not attach to
 * its io-wq (an epoll loop has none). */
static void hook(struct eddy_group *g, unsigned i, struct eddy_loop_options *lo, void *ud)
{
    (void)g;
    (void)ud;
    R.hook_thread[i] = pthread_self();
    atomic_fetch_add(&R.hooked, 1);
    if (i == 1) {
        lo->ignore_env = 1;
        lo->backend = "epoll";
    }
}

static void test_loop_options(void **state)
{
    (void)state;
    rec_reset(2);
    struct eddy_group_options o;
    opts_for(&o, 2);
    o.loop_options = hook;
    struct eddy_group *g;
    assert_int_equal(eddy_group_start(&g, &o), 0);
    eddy_group_stop(g);
    assert_int_equal(eddy_group_join(g), 0);
    eddy_group_destroy(g);
    check_clean_run(2);
    assert_int_equal(atomic_load(&R.hooked), 2);
    assert_string_equal(R.backend[0], ts_backend_is_epoll() ? "epoll" : "io_uring");
    assert_string_equal(R.backend[1], "epoll");
    for (int i = 0; i < 2; i++)
        assert_true(pthread_equal(R.hook_thread[i], R.setup_thread[i]));
}

/* ---- posts between loops ---------------------------------------------- */

static struct {
    struct eddy_group *g;
    struct eddy_op kick, to_op, group_op, late_op;
    pthread_t ran_on[3];
    atomic_int ran;
    atomic_int late_ran;
} P;

static void on_arrive(struct eddy_op *op, int res)
{
    (void)res;
    int k = op == &P.to_op ? 0 : 1;
    P.ran_on[k] = pthread_self();
    atomic_fetch_add(&P.ran, 1);
}

static void on_late(struct eddy_op *op, int res)
{
    (void)op;
    (void)res;
    atomic_fetch_add(&P.late_ran, 1);
}

/* On loop 0's thread: post to loop 1, loop to loop (MSG_RING where the
 * kernel has it). */
static void on_kick(struct eddy_op *op, int res)
{
    (void)op;
    (void)res;
    eddy_post_to(eddy_group_loop(P.g, 0), eddy_group_loop(P.g, 1), &P.to_op, on_arrive);
}

static void test_cross_loop_post(void **state)
{
    (void)state;
    rec_reset(2);
    memset(&P, 0, sizeof P);
    struct eddy_group_options o;
    opts_for(&o, 2);
    assert_int_equal(eddy_group_start(&P.g, &o), 0);
    struct eddy_group *g = P.g;
    assert_int_equal(eddy_group_post(g, 0, &P.kick, on_kick), 0);
    assert_int_equal(eddy_group_post(g, 1, &P.group_op, on_arrive), 0);
    assert_int_equal(eddy_group_post(g, 2, &P.late_op, on_late), -EINVAL);
    wait_for(&P.ran, 2, 5000);
    /* A post accepted right before the stop still runs. */
    assert_int_equal(eddy_group_post(g, 1, &P.late_op, on_late), 0);
    eddy_group_stop(g);
    assert_int_equal(eddy_group_join(g), 0);
    assert_int_equal(atomic_load(&P.late_ran), 1);
    assert_true(pthread_equal(P.ran_on[0], R.setup_thread[1]));
    assert_true(pthread_equal(P.ran_on[1], R.setup_thread[1]));
    /* After the run: refused, and the callback never runs. */
    assert_int_equal(eddy_group_post(g, 1, &P.late_op, on_late), -ESHUTDOWN);
    eddy_group_destroy(g);
    assert_int_equal(atomic_load(&P.late_ran), 1);
    check_clean_run(2);
}

/* ---- pinning ---------------------------------------------------------- */

static void test_pin(void **state)
{
    (void)state;
    cpu_set_t set;
    assert_int_equal(sched_getaffinity(0, sizeof set, &set), 0);
    int allowed[CPU_SETSIZE], count = 0;
    for (int c = 0; c < CPU_SETSIZE; c++)
        if (CPU_ISSET(c, &set))
            allowed[count++] = c;
    rec_reset(3);
    struct eddy_group_options o;
    opts_for(&o, 3);
    o.pin = 1;
    struct eddy_group *g;
    assert_int_equal(eddy_group_start(&g, &o), 0);
    eddy_group_stop(g);
    assert_int_equal(eddy_group_join(g), 0);
    eddy_group_destroy(g);
    for (int i = 0; i < 3; i++) {
        assert_int_equal(R.cpu_count[i], 1);
        assert_int_equal(R.cpu[i], allowed[i % count]);
    }
    /* A CPU the process cannot use fails the start. */
    rec_reset(2);
    int bad[2] = {allowed[0], CPU_SETSIZE + 5};
    opts_for(&o, 2);
    o.pin = 1;
    o.cpus = bad;
    assert_int_equal(eddy_group_start(&g, &o), -EINVAL);
    assert_int_equal(atomic_load(&R.stops), atomic_load(&R.setups));
    assert_int_equal(atomic_load(&R.teardowns), atomic_load(&R.setups));
}

/* ---- listening sockets ------------------------------------------------ */

static int v6_available(void)
{
    int fd;
    if (eddy_listen_tcp("::1", 0, 0, 0, &fd) < 0)
        return 0;
    close(fd);
    return 1;
}

/* An ephemeral port on 127.0.0.1 and ::1 that accepts connections; a port
 * in use is refused; bad addresses are -EINVAL. */
static void test_listen_tcp(void **state)
{
    (void)state;
    const char *hosts[] = {"127.0.0.1", "::1"};
    for (int h = 0; h < 2; h++) {
        if (h == 1 && !v6_available()) {
            print_message("no IPv6 loopback: ::1 not tested\n");
            continue;
        }
        int fd = -1;
        assert_int_equal(eddy_listen_tcp(hosts[h], 0, 16, EDDY_LISTEN_NODELAY |
                                         EDDY_LISTEN_DEFER_ACCEPT(1), &fd), 0);
        int port = eddy_sock_port(fd);
        assert_true(port > 0 && port < 65536);
        /* Non-blocking, close-on-exec: an accept with nothing waiting
         * returns at once (the epoll backend needs no poll(2) first). */
        assert_true(fcntl(fd, F_GETFL) & O_NONBLOCK);
        assert_true(fcntl(fd, F_GETFD) & FD_CLOEXEC);
        assert_int_equal(accept4(fd, NULL, NULL, SOCK_CLOEXEC), -1);
        assert_int_equal(errno, EAGAIN);
        int c = socket(h ? AF_INET6 : AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
        struct sockaddr_storage ss;
        memset(&ss, 0, sizeof ss);
        socklen_t len;
        if (h == 0) {
            struct sockaddr_in *a = (struct sockaddr_in *)&ss;
            a->sin_family = AF_INET;
            a->sin_port = htons((uint16_t)port);
            inet_pton(AF_INET, hosts[h], &a->sin_addr);
            len = sizeof *a;
        } else {
            struct sockaddr_in6 *a = (struct sockaddr_in6 *)&ss;
            a->sin6_family = AF_INET6;
            a->sin6_port = htons((uint16_t)port);
            inet_pton(AF_INET6, hosts[h], &a->sin6_addr);
            len = sizeof *a;
        }
        assert_int_equal(connect(c, (struct sockaddr *)&ss, len), 0);
        close(c);
        int again = -1;
        assert_int_equal(eddy_listen_tcp(hosts[h], (uint16_t)port, 0, 0, &again), -EADDRINUSE);
        assert_int_equal(eddy_listen_tcp(hosts[h], (uint16_t)port, 0, EDDY_LISTEN_REUSEPORT,
                                         &again), -EADDRINUSE);
        assert_int_equal(again, -1);
        close(fd);
    }
    int fd = -1;
    assert_int_equal(eddy_listen_tcp("localhost", 0, 0, 0, &fd), -EINVAL);
    assert_int_equal(eddy_listen_tcp_n("127.0.0.1", 0, 0, 0, 0, &fd), -EINVAL);
    assert_int_equal(eddy_sock_port(-1), -EBADF);
    int sp[2];
    assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM, 0, sp), 0);
    assert_int_equal(eddy_sock_port(sp[0]), -EAFNOSUPPORT);
    close(sp[0]);
    close(sp[1]);
}

/* A private reuseport group: every socket on the kernel's one port, the
 * kernel spreading connections over them; a second group or a plain
 * listener on that port is refused, and so is a group on a port where a
 * foreign SO_REUSEPORT listener waits (it would have shared silently). */
static void test_listen_group(void **state)
{
    (void)state;
    int fds[4];
    assert_int_equal(eddy_listen_tcp_n("127.0.0.1", 0, 64, 0, 4, fds), 0);
    int port = eddy_sock_port(fds[0]);
    assert_true(port > 0);
    for (int i = 1; i < 4; i++)
        assert_int_equal(eddy_sock_port(fds[i]), port);
    int other[2] = {-1, -1};
    assert_int_equal(eddy_listen_tcp_n("127.0.0.1", (uint16_t)port, 0, 0, 2, other),
                     -EADDRINUSE);
    assert_int_equal(eddy_listen_tcp_n("0.0.0.0", (uint16_t)port, 0, 0, 2, other),
                     -EADDRINUSE);
    assert_int_equal(eddy_listen_tcp_n("127.0.0.1", (uint16_t)port, 0, 0, 1, other),
                     -EADDRINUSE);
    assert_int_equal(other[0], -1);
    /* Connections land on several members (the kernel hashes the 4-tuple:
     * 64 connections miss a member with odds of 4 * (3/4)^64). */
    int conns[64], hit[4] = {0};
    for (int k = 0; k < 64; k++)
        conns[k] = ts_connect((uint16_t)port);
    for (int i = 0; i < 4; i++) {
        int c;
        assert_int_equal(fcntl(fds[i], F_SETFL, O_NONBLOCK), 0);
        while ((c = accept4(fds[i], NULL, NULL, SOCK_CLOEXEC)) >= 0) {
            hit[i]++;
            close(c);
        }
    }
    int members = 0, total = 0;
    for (int i = 0; i < 4; i++) {
        members += hit[i] > 0;
        total += hit[i];
        close(fds[i]);
    }
    for (int k = 0; k < 64; k++)
        close(conns[k]);
    assert_int_equal(total, 64);
    assert_true(members >= 2);

    /* A foreign SO_REUSEPORT listener of the same user. */
    int foreign = -1;
    assert_int_equal(eddy_listen_tcp("127.0.0.1", 0, 0, EDDY_LISTEN_REUSEPORT, &foreign), 0);
    port = eddy_sock_port(foreign);
    assert_int_equal(eddy_listen_tcp_n("127.0.0.1", (uint16_t)port, 0, 0, 2, other),
                     -EADDRINUSE);
    assert_int_equal(eddy_listen_tcp_n("0.0.0.0", (uint16_t)port, 0, 0, 3, other),
                     -EADDRINUSE);
    assert_int_equal(other[0], -1);
    close(foreign);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_start_stop, ts_fd_setup, ts_fd_teardown),
        cmocka_unit_test_setup_teardown(test_stop_during_setup, ts_fd_setup, ts_fd_teardown),
        cmocka_unit_test_setup_teardown(test_setup_failure, ts_fd_setup, ts_fd_teardown),
        cmocka_unit_test_setup_teardown(test_init_failure, ts_fd_setup, ts_fd_teardown),
        cmocka_unit_test_setup_teardown(test_stop_from_thread, ts_fd_setup, ts_fd_teardown),
        cmocka_unit_test_setup_teardown(test_stop_from_signal, ts_fd_setup, ts_fd_teardown),
        cmocka_unit_test_setup_teardown(test_loop_options, ts_fd_setup, ts_fd_teardown),
        cmocka_unit_test_setup_teardown(test_cross_loop_post, ts_fd_setup, ts_fd_teardown),
        cmocka_unit_test_setup_teardown(test_pin, ts_fd_setup, ts_fd_teardown),
        cmocka_unit_test_setup_teardown(test_listen_tcp, ts_fd_setup, ts_fd_teardown),
        cmocka_unit_test_setup_teardown(test_listen_group, ts_fd_setup, ts_fd_teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
