/*
 * Helpers for the stress tests: an HTTP server on its own loop in its own
 * thread whose allocator counts live bytes, a stats snapshot the test
 * thread can read while the server runs, and small client helpers (the
 * blocking ones come from tests/proto/http_util.h).
 */
#ifndef EDDY_TEST_STRESS_UTIL_H
#define EDDY_TEST_STRESS_UTIL_H

#include "../proto/http_util.h"

#include <fcntl.h>
#include <malloc.h>
#include <poll.h>
#include <sys/resource.h>
#include <sys/wait.h>

struct ssrv {
    struct eddy_http_options o;   /* set before ss_start */
    struct eddy_loop_options lo;  /* set before ss_start (alloc is ours) */
    pthread_t th;
    struct eddy_loop *loop;
    struct eddy_http_server *srv;
    struct eddy_op snap_op;
    _Atomic int port;
    _Atomic int quit;
    _Atomic long live, peak;      /* bytes the loop's allocator holds */
    pthread_mutex_t mu;
    struct eddy_http_stats st;    /* snapshot, every few ms, under mu */
    struct eddy_loop_stats ls;
    unsigned features;
    int done, destroy_rc, loop_destroy_rc, leftover;
};

static void *ss_alloc(void *ud, void *ptr, size_t size)
{
    struct ssrv *h = ud;
    if (ptr)
        atomic_fetch_sub(&h->live, (long)malloc_usable_size(ptr));
    if (size == 0) {
        free(ptr);
        return NULL;
    }
    void *p = realloc(ptr, size);
    if (!p) {
        if (ptr)
            atomic_fetch_add(&h->live, (long)malloc_usable_size(ptr));
        return NULL;
    }
    long now = atomic_fetch_add(&h->live, (long)malloc_usable_size(p)) +
               (long)malloc_usable_size(p);
    long pk = atomic_load(&h->peak);
    while (now > pk && !atomic_compare_exchange_weak(&h->peak, &pk, now))
        ;
    return p;
}

static void ss_snapshot(struct ssrv *h)
{
    pthread_mutex_lock(&h->mu);
    eddy_http_server_stats(h->srv, &h->st);
    eddy_loop_stats(h->loop, &h->ls);
    pthread_mutex_unlock(&h->mu);
}

static void ss_snap_cb(struct eddy_op *op, int res)
{
    struct ssrv *h = eddy_container_of(op, struct ssrv, snap_op);
    (void)res;
    if (!(op->flags & EDDY_OP_MORE))
        return;
    ss_snapshot(h);
    if (atomic_load(&h->quit))
        eddy_cancel(h->loop, op);
}

static void ss_done(struct eddy_http_server *srv, void *ud)
{
    (void)srv;
    ((struct ssrv *)ud)->done = 1;
}

static void *ss_main(void *arg)
{
    struct ssrv *h = arg;
    struct eddy_loop_options lo = h->lo;
    lo.alloc = ss_alloc;
    lo.alloc_ud = h;
    if (eddy_loop_init(&h->loop, &lo) < 0) {
        atomic_store(&h->port, -1);
        return NULL;
    }
    h->features = eddy_loop_features(h->loop);
    int rc = eddy_http_server_init(&h->srv, h->loop, &h->o);
    static const struct {
        const char *m, *p;
        eddy_http_handler fn;
    } routes[] = {
        {"GET", "/plaintext", h_plaintext},
        {"POST", "/echo", h_echo},
        {"GET", "/big", h_big},
    };
    for (size_t i = 0; rc == 0 && i < sizeof routes / sizeof routes[0]; i++)
        rc = eddy_http_route(h->srv, routes[i].m, routes[i].p, EDDY_HTTP_EXACT, routes[i].fn, h);
    if (rc == 0)
        rc = eddy_http_server_listen(h->srv);
    if (rc == 0)
        rc = eddy_timer_repeat(h->loop, &h->snap_op, 10, ss_snap_cb);
    if (rc < 0) {
        atomic_store(&h->port, -1);
        return NULL;
    }
    ss_snapshot(h);
    atomic_store(&h->port, eddy_http_server_port(h->srv));
    while (!atomic_load(&h->quit) && eddy_loop_run(h->loop, EDDY_RUN_ONCE) >= 0)
        ;
    eddy_cancel(h->loop, &h->snap_op);
    eddy_http_server_shutdown(h->srv, 1000, ss_done, h);
    int64_t end = ts_now_ms() + 5000;
    while ((!h->done || eddy_op_active(&h->snap_op)) && ts_now_ms() < end)
        eddy_loop_run(h->loop, EDDY_RUN_ONCE);
    ss_snapshot(h);
    h->destroy_rc = eddy_http_server_destroy(h->srv);
    struct eddy_loop_stats ls;
    eddy_loop_stats(h->loop, &ls);
    h->leftover = (int)ls.active;
    h->loop_destroy_rc = eddy_loop_destroy(h->loop);
    return NULL;
}

static void ss_start(struct ssrv *h)
{
    pthread_mutex_init(&h->mu, NULL);
    atomic_store(&h->port, 0);
    atomic_store(&h->quit, 0);
    if (!h->o.host)
        h->o.host = "127.0.0.1";
    assert_int_equal(pthread_create(&h->th, NULL, ss_main, h), 0);
    int64_t end = ts_now_ms() + 5000;
    while (atomic_load(&h->port) == 0 && ts_now_ms() < end)
        usleep(1000);
    assert_true(atomic_load(&h->port) > 0);
}

/* Stops the server thread and checks everything closed: no connection, no
 * active op, every byte the loop allocated given back. */
static void ss_stop(struct ssrv *h)
{
    atomic_store(&h->quit, 1);
    eddy_loop_stop(h->loop);
    pthread_join(h->th, NULL);
    assert_int_equal(h->done, 1);
    assert_int_equal(h->destroy_rc, 0);
    assert_int_equal(h->leftover, 0);
    assert_int_equal(h->loop_destroy_rc, 0);
    assert_int_equal(h->st.conns, 0);
    assert_int_equal(atomic_load(&h->live), 0);
    pthread_mutex_destroy(&h->mu);
}

static void ss_stats(struct ssrv *h, struct eddy_http_stats *st, struct eddy_loop_stats *ls)
{
    pthread_mutex_lock(&h->mu);
    if (st)
        *st = h->st;
    if (ls)
        *ls = h->ls;
    pthread_mutex_unlock(&h->mu);
}

static unsigned ss_conns(struct ssrv *h)
{
    struct eddy_http_stats st;
    ss_stats(h, &st, NULL);
    return st.conns;
}

/* Polls until the server has n connections, or timeout; returns the count. */
static unsigned ss_wait_conns(struct ssrv *h, unsigned n, unsigned timeout_ms)
{
    int64_t end = ts_now_ms() + timeout_ms;
    unsigned c;
    while ((c = ss_conns(h)) != n && ts_now_ms() < end)
        usleep(5000);
    return c;
}

/* Lets this process open many descriptors (the hard limit is ~20000). */
static void raise_nofile(void)
{
    struct rlimit rl;
    getrlimit(RLIMIT_NOFILE, &rl);
    rl.rlim_cur = rl.rlim_max;
    setrlimit(RLIMIT_NOFILE, &rl);
}

/* A non-blocking connect to 127.0.0.1:port (in progress is fine). */
static int nb_connect(int port)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    assert_true(fd >= 0);
    struct sockaddr_in a;
    memset(&a, 0, sizeof a);
    a.sin_family = AF_INET;
    a.sin_port = htons((uint16_t)port);
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    int rc = connect(fd, (struct sockaddr *)&a, sizeof a);
    assert_true(rc == 0 || errno == EINPROGRESS);
    return fd;
}

/* GET /plaintext on a new connection; returns the ms it took, or -1 when
 * the answer was not "200 Hello, World!". */
static int timed_get(int port)
{
    int64_t t0 = ts_now_ms();
    char body[64];
    if (simple_get(port, "/plaintext", body, sizeof body) != 200 || strcmp(body, "Hello, World!"))
        return -1;
    return (int)(ts_now_ms() - t0);
}

/* A probe thread: GET /plaintext every period_ms until told to stop. */
struct prober {
    pthread_t th;
    int port, period_ms;
    _Atomic int stop;
    int n, fails, max_ms;
};

static void *prober_main(void *arg)
{
    struct prober *p = arg;
    while (!atomic_load(&p->stop)) {
        int ms = timed_get(p->port);
        p->n++;
        if (ms < 0)
            p->fails++;
        else if (ms > p->max_ms)
            p->max_ms = ms;
        usleep((useconds_t)p->period_ms * 1000);
    }
    return NULL;
}

static void prober_start(struct prober *p, int port, int period_ms)
{
    memset(p, 0, sizeof *p);
    p->port = port;
    p->period_ms = period_ms;
    assert_int_equal(pthread_create(&p->th, NULL, prober_main, p), 0);
}

static void prober_stop(struct prober *p)
{
    atomic_store(&p->stop, 1);
    pthread_join(p->th, NULL);
}

#endif
