/* Fibers: switching, spawn/join/cancel, sleeping by the 100,000, every
 * kind of wait interrupted by cancel and deadlines, waiting for several
 * operations, channels (fan-out/fan-in, close, deadlines), -EPERM outside
 * fibers, bad spawns, stack overflow reports and the watchdog naming a
 * fiber. */
#define _GNU_SOURCE
#include "testsupport.h"

#include "eddy/fiber.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fenv.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#if defined(__SANITIZE_ADDRESS__)
#define UNDER_ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define UNDER_ASAN 1
#endif
#endif
#ifndef UNDER_ASAN
#define UNDER_ASAN 0
#endif

/* A small stack that still fits a sanitized frame or two. */
#define SMALL_STACK (UNDER_ASAN ? 32u * 1024 : 16u * 1024)

/* ---- scaffolding -------------------------------------------------------- */

#define MAXLOG 16
static struct {
    pthread_mutex_t mu;
    int n;
    char msg[MAXLOG][512];
} logs = {.mu = PTHREAD_MUTEX_INITIALIZER};

static void log_hook(void *ud, int level, const char *msg)
{
    (void)ud, (void)level;
    pthread_mutex_lock(&logs.mu);
    if (logs.n < MAXLOG)
        snprintf(logs.msg[logs.n++], sizeof logs.msg[0], "%s", msg);
    pthread_mutex_unlock(&logs.mu);
}

static int logs_find(const char *needle)
{
    int found = 0;
    pthread_mutex_lock(&logs.mu);
    for (int i = 0; i < logs.n; i++)
        if (strstr(logs.msg[i], needle))
            found++;
    pthread_mutex_unlock(&logs.mu);
    return found;
}

static struct eddy_loop *loop_new(const struct eddy_fiber_config *cfg, unsigned stall_ms)
{
    struct eddy_loop_options o;
    eddy_loop_options_init(&o);
    o.log = log_hook;
    o.stall_ms = stall_ms;
    pthread_mutex_lock(&logs.mu);
    logs.n = 0;
    pthread_mutex_unlock(&logs.mu);
    struct eddy_loop *loop = ts_loop_new(&o);
    assert_int_equal(eddy_fiber_setup(loop, cfg), 0);
    return loop;
}

/* Runs the loop until the fibers can be torn down. */
static void fibers_teardown(struct eddy_loop *loop)
{
    int64_t end = ts_now_ms() + 10000;
    int rc;
    while ((rc = eddy_fiber_teardown(loop)) == -EBUSY) {
        if (ts_now_ms() > end)
            fail_msg("fibers still alive after 10 s");
        assert_true(eddy_loop_run(loop, EDDY_RUN_NOWAIT) >= 0);
        usleep(100);
    }
    assert_int_equal(rc, 0);
}

/* ... then frees it. */
static void loop_free(struct eddy_loop *loop)
{
    fibers_teardown(loop);
    ts_loop_free(loop);
}

static void spawn(struct eddy_loop *loop, struct eddy_fiber **out, eddy_fiber_fn fn, void *arg,
                  const char *label)
{
    struct eddy_fiber_options o = {.stack_size = 0, .label = label};
    assert_int_equal(eddy_fiber_spawn(loop, out, fn, arg, &o), 0);
}

static int64_t mono_ms(void)
{
    return ts_now_ms();
}

/* ---- ping-pong ---------------------------------------------------------- */

#define PINGS 1000
static struct {
    char trace[2 * PINGS + 8];
    int n;
    int done;
} pp;

static void *pinger(void *arg)
{
    char me = (char)(intptr_t)arg;
    for (int i = 0; i < PINGS; i++) {
        pp.trace[pp.n++] = me;
        assert_int_equal(eddy_fiber_yield(), 0);
    }
    pp.done++;
    return NULL;
}

static void run_pingpong(int use_ucontext)
{
    struct eddy_fiber_config cfg = {.ucontext = use_ucontext};
    struct eddy_loop *loop = loop_new(&cfg, 0);
    memset(&pp, 0, sizeof pp);
    spawn(loop, NULL, pinger, (void *)(intptr_t)'a', "ping");
    spawn(loop, NULL, pinger, (void *)(intptr_t)'b', "pong");
    assert_int_equal(pp.n, 0); /* never inside the spawn */
    TS_RUN_UNTIL(loop, pp.done == 2, 10000);
    /* every yield switched to the other fiber: strict alternation */
    assert_int_equal(pp.n, 2 * PINGS);
    for (int i = 0; i < 2 * PINGS; i++)
        assert_int_equal(pp.trace[i], i % 2 ? 'b' : 'a');
    loop_free(loop);
}

static void test_pingpong(void **state)
{
    (void)state;
    run_pingpong(0);
}

static void test_pingpong_ucontext(void **state)
{
    (void)state;
    run_pingpong(1);
}

/* ---- each fiber keeps its own FP control state (MXCSR / x87 CW / FPCR) ---- */

static struct {
    int seen[4];
    int done;
} fp;

static void *fp_fiber(void *arg)
{
    int mine = (int)(intptr_t)arg;
    fp.seen[mine ? 1 : 0] = fegetround(); /* a new fiber starts with the defaults */
    assert_int_equal(fesetround(mine ? FE_DOWNWARD : FE_UPWARD), 0);
    assert_int_equal(eddy_fiber_yield(), 0);
    assert_int_equal(eddy_fiber_yield(), 0);
    fp.seen[mine ? 3 : 2] = fegetround();
    fp.done++;
    return NULL;
}

static void run_fp(int use_ucontext)
{
    struct eddy_fiber_config cfg = {.ucontext = use_ucontext};
    struct eddy_loop *loop = loop_new(&cfg, 0);
    memset(&fp, 0, sizeof fp);
    assert_int_equal(fesetround(FE_TOWARDZERO), 0); /* the loop's own */
    spawn(loop, NULL, fp_fiber, (void *)0, "fp-up");
    spawn(loop, NULL, fp_fiber, (void *)1, "fp-down");
    TS_RUN_UNTIL(loop, fp.done == 2, 5000);
    assert_int_equal(fegetround(), FE_TOWARDZERO);
    assert_int_equal(fesetround(FE_TONEAREST), 0);
    assert_int_equal(fp.seen[0], FE_TONEAREST); /* not the spawner's */
    assert_int_equal(fp.seen[1], FE_TONEAREST);
    assert_int_equal(fp.seen[2], FE_UPWARD);
    assert_int_equal(fp.seen[3], FE_DOWNWARD);
    loop_free(loop);
}

static void test_fp_control_per_fiber(void **state)
{
    (void)state;
    run_fp(0);
    run_fp(1);
}

/* ---- spawn from a fiber, join, detach ------------------------------------ */

static int detached_ran;

static void *child(void *arg)
{
    assert_int_equal(eddy_fiber_sleep(5), 0);
    return (void *)((intptr_t)arg * 2);
}

static void *detached_child(void *arg)
{
    (void)arg;
    assert_int_equal(eddy_fiber_yield(), 0);
    detached_ran++;
    return NULL;
}

static int parent_done;

static void *parent(void *arg)
{
    struct eddy_loop *loop = arg;
    struct eddy_fiber *kids[4];
    for (int i = 0; i < 4; i++)
        spawn(loop, &kids[i], child, (void *)(intptr_t)(i + 1), "kid");
    spawn(loop, NULL, detached_child, NULL, "orphan");
    assert_int_equal(eddy_fiber_join(eddy_fiber_self(), NULL), -EDEADLK);
    for (int i = 0; i < 4; i++) {
        void *ret = NULL;
        assert_int_equal(eddy_fiber_join(kids[i], &ret), 0);
        assert_int_equal((intptr_t)ret, 2 * (i + 1));
    }
    /* join a fiber that has already returned */
    struct eddy_fiber *quick;
    spawn(loop, &quick, detached_child, NULL, "quick");
    assert_int_equal(eddy_fiber_sleep(10), 0);
    assert_true(eddy_fiber_done(quick));
    assert_int_equal(eddy_fiber_join(quick, NULL), 0);
    /* detach a joinable one */
    struct eddy_fiber *d;
    spawn(loop, &d, detached_child, NULL, "detached-later");
    eddy_fiber_detach(d);
    assert_string_equal(eddy_fiber_label(eddy_fiber_self()), "parent");
    assert_ptr_equal(eddy_fiber_loop(eddy_fiber_self()), loop);
    parent_done = 1;
    return NULL;
}

static void test_spawn_join(void **state)
{
    (void)state;
    struct eddy_loop *loop = loop_new(NULL, 0);
    parent_done = detached_ran = 0;
    spawn(loop, NULL, parent, loop, "parent");
    /* fibers hold the loop: eddy_loop_destroy refuses */
    assert_int_equal(eddy_loop_destroy(loop), -EBUSY);
    assert_int_equal(eddy_fiber_teardown(loop), -EBUSY);
    TS_RUN_UNTIL(loop, parent_done && detached_ran == 3, 5000);
    loop_free(loop);
}

/* ---- 100,000 sleeping fibers --------------------------------------------- */

#define MANY 100000
static int many_done, many_awake;
static int64_t many_wake_at;

static void *sleeper(void *arg)
{
    (void)arg;
    many_awake++;
    assert_int_equal(eddy_fiber_sleep_until(many_wake_at), 0);
    many_done++;
    return NULL;
}

static void test_100k_sleepers(void **state)
{
    (void)state;
    /* Small stacks; guard pages while vm.max_map_count allows, then packed. */
    struct eddy_fiber_config cfg = {.stack_size = SMALL_STACK};
    struct eddy_loop *loop = loop_new(&cfg, 0);
    int fds = ts_fd_count();
    many_done = many_awake = 0;
    int64_t t0 = ts_now_ms();
    for (int i = 0; i < MANY; i++)
        assert_int_equal(eddy_fiber_spawn(loop, NULL, sleeper, NULL, NULL), 0);
    int64_t t1 = ts_now_ms();
    /* none has run yet (spawning never runs a fiber): all sleep until then */
    assert_int_equal(many_awake, 0);
    /* They all wake at one time, which must come after the last has gone to
     * sleep: 5 s, or longer on a machine slow enough that the spawns alone
     * took seconds (AddressSanitizer on a loaded machine took 4.7 s to spawn
     * and 5.2 s to have them all asleep), so the check below never races. */
    int64_t window_ms = 5000;
    if (2 * (t1 - t0) + 2000 > window_ms)
        window_ms = 2 * (t1 - t0) + 2000;
    many_wake_at = eddy_update_time(loop) + window_ms * 1000000LL;
    TS_RUN_UNTIL(loop, many_awake == MANY, 60000);
    print_message("    spawned in %lld ms, all asleep after %lld ms\n", (long long)(t1 - t0),
                  (long long)(ts_now_ms() - t0));
    assert_int_equal(many_done, 0); /* all asleep at once */
    assert_int_equal(ts_fd_count(), fds); /* no descriptor per fiber */
    TS_RUN_UNTIL(loop, many_done == MANY, 60000);
    loop_free(loop);
}

/* ---- cancel during each kind of wait ------------------------------------- */

enum wait_kind { W_SLEEP, W_RECV, W_RECV_ONCE, W_POLL, W_ACCEPT, W_EVENT, W_JOIN, W_WORK,
                 W_AWAIT_ALL, W_SUSPEND, W_CHAN_RECV, W_CHAN_SEND, W_KINDS };
static const char *kind_name[] = {"sleep", "recv", "recv_once", "poll", "accept", "event",
                                  "join", "work", "await_all", "suspend", "chan_recv",
                                  "chan_send"};

static struct {
    enum wait_kind kind;
    int fds[2];
    int lfd;
    int res, after, closed;
    int done;
    struct eddy_fiber_event ev;
    int work_ran;
    int hook_calls;
    struct eddy_bufpool *pool;
    struct eddy_fiber_chan ch;
    void *slots[1];
} cw;

/* A channel wait that was cancelled left nothing behind: the channel holds
 * what it held, and a message sent now is queued, not handed to the
 * cancelled fiber. */
static void chan_wait_kind(int tx, int *rc)
{
    void *m = (void *)(intptr_t)7;
    assert_int_equal(eddy_fiber_chan_init(&cw.ch, cw.slots, 1), 0);
    if (tx) {
        assert_int_equal(eddy_fiber_chan_try_send(&cw.ch, m), 0); /* full */
        *rc = eddy_fiber_chan_send(&cw.ch, (void *)(intptr_t)8);
        assert_int_equal(cw.ch.len, 1);
        assert_int_equal(eddy_fiber_chan_try_recv(&cw.ch, &m), 0);
        assert_ptr_equal(m, (void *)(intptr_t)7); /* the cancelled send sent nothing */
        assert_int_equal(eddy_fiber_chan_try_recv(&cw.ch, &m), -EAGAIN);
    } else {
        *rc = eddy_fiber_chan_recv(&cw.ch, &m);
        assert_ptr_equal(m, (void *)(intptr_t)7); /* untouched */
        assert_int_equal(eddy_fiber_chan_try_send(&cw.ch, m), 0);
        assert_int_equal(cw.ch.len, 1);
    }
}

static void *forever(void *arg)
{
    (void)arg;
    struct eddy_fiber_event never = EDDY_FIBER_EVENT_INIT;
    int rc = eddy_fiber_event_wait(&never);
    return (void *)(intptr_t)rc;
}

static int slow_job(void *arg)
{
    (void)arg;
    usleep(100000);
    cw.work_ran = 1;
    return 7;
}

static void suspend_hook(struct eddy_fiber_waiter *w)
{
    cw.hook_calls++;
    eddy_fiber_wake(w, -ECANCELED);
}

static void *waiter(void *arg)
{
    struct eddy_loop *loop = arg;
    char buf[16];
    int rc = 0;
    switch (cw.kind) {
    case W_SLEEP:
        rc = eddy_fiber_sleep(60000);
        break;
    case W_RECV:
        rc = eddy_fiber_recv(cw.fds[1], buf, sizeof buf, 0);
        break;
    case W_RECV_ONCE: {
        void *b = NULL;
        uint16_t bid = 0;
        rc = eddy_fiber_recv_once(cw.fds[1], cw.pool, &b, &bid);
        assert_null(b);
        break;
    }
    case W_POLL:
        rc = eddy_fiber_poll(cw.fds[1], POLLIN);
        break;
    case W_ACCEPT:
        rc = eddy_fiber_accept(cw.lfd, NULL, NULL, SOCK_CLOEXEC);
        break;
    case W_EVENT:
        rc = eddy_fiber_event_wait(&cw.ev);
        break;
    case W_JOIN: {
        struct eddy_fiber *t;
        spawn(loop, &t, forever, NULL, "forever");
        rc = eddy_fiber_join(t, NULL);
        /* the target keeps running: cancel it and join for real */
        assert_int_equal(eddy_fiber_cancel(t), 0);
        void *ret;
        /* our own cancellation makes this join fail at once too */
        assert_int_equal(eddy_fiber_join(t, &ret), -ECANCELED);
        eddy_fiber_detach(t);
        break;
    }
    case W_WORK:
        rc = eddy_fiber_work(slow_job, NULL);
        break;
    case W_AWAIT_ALL: {
        struct eddy_fiber_op a, b;
        memset(&a, 0, sizeof a);
        memset(&b, 0, sizeof b);
        assert_int_equal(eddy_recv(loop, &a.op, cw.fds[1], buf, sizeof buf, 0, eddy_fiber_op_cb), 0);
        assert_int_equal(eddy_timer(loop, &b.op, 60000, eddy_fiber_op_cb), 0);
        struct eddy_fiber_op *ops[] = {&a, &b};
        rc = eddy_fiber_await_all(ops, 2);
        assert_true(a.done && b.done);
        assert_int_equal(a.res, -ECANCELED);
        assert_int_equal(b.res, -ECANCELED);
        break;
    }
    case W_SUSPEND: {
        struct eddy_fiber_waiter w;
        memset(&w, 0, sizeof w);
        rc = eddy_fiber_suspend(&w, suspend_hook);
        assert_int_equal(cw.hook_calls, 1);
        break;
    }
    case W_CHAN_RECV:
    case W_CHAN_SEND:
        chan_wait_kind(cw.kind == W_CHAN_SEND, &rc);
        break;
    default:
        break;
    }
    cw.res = rc;
    assert_int_equal(eddy_fiber_cancelled(), 1);
    /* every later wait fails at once, without starting anything */
    cw.after = eddy_fiber_recv(cw.fds[1], buf, sizeof buf, 0);
    assert_int_equal(eddy_fiber_sleep(1), -ECANCELED);
    assert_int_equal(eddy_fiber_yield(), -ECANCELED);
    /* ... but cleanup still runs */
    int fd = dup(cw.fds[1]);
    assert_true(fd >= 0);
    cw.closed = eddy_fiber_close(fd);
    cw.done = 1;
    return NULL;
}

struct canceller {
    struct eddy_op op;
    struct eddy_fiber *target;
};

static void cancel_cb(struct eddy_op *op, int res)
{
    assert_int_equal(res, 0);
    struct canceller *c = eddy_container_of(op, struct canceller, op);
    assert_int_equal(eddy_fiber_cancel(c->target), 0);
}

static void test_cancel_each_wait(void **state)
{
    (void)state;
    for (int k = 0; k < W_KINDS; k++) {
        print_message("    cancel during %s\n", kind_name[k]);
        struct eddy_loop *loop = loop_new(NULL, 0);
        memset(&cw, 0, sizeof cw);
        cw.kind = (enum wait_kind)k;
        ts_tcp_pair(cw.fds);
        uint16_t port;
        cw.lfd = ts_listen(0, &port);
        assert_int_equal(eddy_bufpool_init(loop, &cw.pool, 4, 64), 0);
        struct eddy_fiber *f;
        spawn(loop, &f, waiter, loop, kind_name[k]);
        struct canceller c;
        memset(&c, 0, sizeof c);
        c.target = f;
        int64_t t0 = mono_ms();
        assert_int_equal(eddy_timer(loop, &c.op, 30, cancel_cb), 0);
        TS_RUN_UNTIL(loop, cw.done, 5000);
        if (k == W_WORK) {
            /* a running job cannot be stopped: its real result wins */
            assert_int_equal(cw.res, 7);
            assert_int_equal(cw.work_ran, 1);
        } else {
            assert_int_equal(cw.res, -ECANCELED);
            assert_true(mono_ms() - t0 < 2000);
        }
        assert_int_equal(cw.after, -ECANCELED);
        assert_int_equal(cw.closed, 0);
        assert_true(eddy_fiber_done(f));
        assert_int_equal(eddy_fiber_cancel(f), -EALREADY);
        eddy_fiber_detach(f); /* returned: freed now */
        TS_RUN_UNTIL(loop, eddy_bufpool_destroy(cw.pool) == 0, 1000);
        close(cw.fds[0]);
        close(cw.fds[1]);
        close(cw.lfd);
        loop_free(loop);
    }
}

/* ---- cancel everything (shutdown) ----------------------------------------- */

static int stuck_ended;

static void *stuck(void *arg)
{
    struct eddy_fiber_event never = EDDY_FIBER_EVENT_INIT;
    int rc = arg ? eddy_fiber_sleep(60000) : eddy_fiber_event_wait(&never);
    assert_int_equal(rc, -ECANCELED);
    stuck_ended++;
    return NULL;
}

static void test_cancel_all(void **state)
{
    (void)state;
    struct eddy_loop *loop = loop_new(NULL, 0);
    stuck_ended = 0;
    for (int i = 0; i < 10; i++)
        spawn(loop, NULL, stuck, (void *)(intptr_t)(i & 1), "stuck");
    ts_run_for(loop, 20);
    assert_int_equal(stuck_ended, 0);
    assert_int_equal(eddy_fiber_cancel_all(loop), 10);
    assert_int_equal(eddy_fiber_cancel_all(loop), 0);
    TS_RUN_UNTIL(loop, stuck_ended == 10, 2000);
    loop_free(loop); /* the loop ends: no fiber, no timer left */
}

/* ---- deadlines ------------------------------------------------------------ */

static struct {
    int r[8];
    int64_t t[8];
    int done;
    int fds[2];
} dl;

static void *deadline_fiber(void *arg)
{
    (void)arg;
    char buf[8];
    int64_t t0 = mono_ms();
    /* per call: only the next call */
    assert_int_equal(eddy_fiber_timeout(30), 0);
    dl.r[0] = eddy_fiber_recv(dl.fds[1], buf, sizeof buf, 0);
    dl.t[0] = mono_ms() - t0;
    dl.r[1] = eddy_fiber_sleep(40); /* no deadline left over */
    /* a block: two 20 ms sleeps fit in 300 ms, a 10 s one does not */
    int64_t saved, inner;
    t0 = mono_ms();
    assert_int_equal(eddy_fiber_deadline_push(300, &saved), 0);
    dl.r[2] = eddy_fiber_sleep(20);
    dl.r[3] = eddy_fiber_sleep(20);
    dl.r[4] = eddy_fiber_sleep(10000);
    dl.t[4] = mono_ms() - t0;
    /* passed: fails at once, starts nothing */
    dl.r[5] = eddy_fiber_recv(dl.fds[1], buf, sizeof buf, 0);
    /* nesting keeps the earlier deadline */
    assert_int_equal(eddy_fiber_deadline_push(10000, &inner), 0);
    dl.r[6] = eddy_fiber_poll(dl.fds[1], POLLIN);
    eddy_fiber_deadline_pop(inner);
    eddy_fiber_deadline_pop(saved);
    dl.r[7] = eddy_fiber_sleep(5);
    dl.done = 1;
    return NULL;
}

static void test_deadlines(void **state)
{
    (void)state;
    struct eddy_loop *loop = loop_new(NULL, 0);
    memset(&dl, 0, sizeof dl);
    ts_tcp_pair(dl.fds);
    spawn(loop, NULL, deadline_fiber, NULL, "deadlines");
    TS_RUN_UNTIL(loop, dl.done, 5000);
    assert_int_equal(dl.r[0], -ETIME);
    assert_true(dl.t[0] >= 29 && dl.t[0] < 1000);
    assert_int_equal(dl.r[1], 0);
    assert_int_equal(dl.r[2], 0);
    assert_int_equal(dl.r[3], 0);
    assert_int_equal(dl.r[4], -ETIME);
    assert_true(dl.t[4] >= 299 && dl.t[4] < 3000);
    assert_int_equal(dl.r[5], -ETIME);
    assert_int_equal(dl.r[6], -ETIME);
    assert_int_equal(dl.r[7], 0);
    close(dl.fds[0]);
    close(dl.fds[1]);
    loop_free(loop);
}

/* ---- several operations at once ----------------------------------------- */

static struct {
    int fds[2][2];
    int calls[3];
    int ret_all, ret_any;
    int res[3];
    int done;
    struct eddy_op writer;
} mo;

struct counted {
    struct eddy_fiber_op fo;
    int idx;
};

static void counted_cb(struct eddy_op *op, int res)
{
    struct counted *c = eddy_container_of(op, struct counted, fo.op);
    mo.calls[c->idx]++;
    eddy_fiber_op_cb(op, res);
}

static void writer_cb(struct eddy_op *op, int res)
{
    (void)op;
    assert_int_equal(res, 0);
    assert_int_equal(write(mo.fds[0][0], "hello", 5), 5);
    assert_int_equal(write(mo.fds[1][0], "world!", 6), 6);
}

static void *multi_fiber(void *arg)
{
    struct eddy_loop *loop = arg;
    char b0[16], b1[16], b2[16];
    struct counted c[3];
    memset(c, 0, sizeof c);
    for (int i = 0; i < 3; i++)
        c[i].idx = i;
    /* all: two receives that complete when the writer runs */
    assert_int_equal(eddy_recv(loop, &c[0].fo.op, mo.fds[0][1], b0, sizeof b0, 0, counted_cb), 0);
    assert_int_equal(eddy_recv(loop, &c[1].fo.op, mo.fds[1][1], b1, sizeof b1, 0, counted_cb), 0);
    assert_int_equal(eddy_timer(loop, &mo.writer, 20, writer_cb), 0);
    struct eddy_fiber_op *two[] = {&c[0].fo, &c[1].fo};
    mo.ret_all = eddy_fiber_await_all(two, 2);
    assert_int_equal(c[0].fo.res, 5);
    assert_int_equal(c[1].fo.res, 6);
    assert_memory_equal(b0, "hello", 5);
    /* any: a 10 ms timer against two idle receives; the losers cancelled */
    memset(c, 0, sizeof c);
    for (int i = 0; i < 3; i++)
        c[i].idx = i;
    memset(mo.calls, 0, sizeof mo.calls);
    assert_int_equal(eddy_recv(loop, &c[0].fo.op, mo.fds[0][1], b0, sizeof b0, 0, counted_cb), 0);
    assert_int_equal(eddy_timer(loop, &c[1].fo.op, 10, counted_cb), 0);
    assert_int_equal(eddy_recv(loop, &c[2].fo.op, mo.fds[1][1], b2, sizeof b2, 0, counted_cb), 0);
    struct eddy_fiber_op *three[] = {&c[0].fo, &c[1].fo, &c[2].fo};
    mo.ret_any = eddy_fiber_await_any(three, 3);
    for (int i = 0; i < 3; i++) {
        mo.res[i] = c[i].fo.res;
        assert_false(eddy_op_active(&c[i].fo.op)); /* all final on return */
    }
    /* the ops are on this stack: give the loop time to show a stray callback */
    assert_int_equal(eddy_fiber_sleep(30), 0);
    mo.done = 1;
    return NULL;
}

static void test_wait_all_any(void **state)
{
    (void)state;
    struct eddy_loop *loop = loop_new(NULL, 0);
    memset(&mo, 0, sizeof mo);
    ts_tcp_pair(mo.fds[0]);
    ts_tcp_pair(mo.fds[1]);
    spawn(loop, NULL, multi_fiber, loop, "multi");
    TS_RUN_UNTIL(loop, mo.done, 5000);
    assert_int_equal(mo.ret_all, 0);
    assert_int_equal(mo.ret_any, 1);
    assert_int_equal(mo.res[0], -ECANCELED);
    assert_int_equal(mo.res[1], 0);
    assert_int_equal(mo.res[2], -ECANCELED);
    /* each op's final callback exactly once */
    for (int i = 0; i < 3; i++)
        assert_int_equal(mo.calls[i], 1);
    for (int i = 0; i < 2; i++) {
        close(mo.fds[i][0]);
        close(mo.fds[i][1]);
    }
    loop_free(loop);
}

/* ---- I/O round trip, accept/connect, recv_once, events ------------------ */

static struct {
    uint16_t port;
    int lfd;
    int served, got;
    int done;
    struct eddy_bufpool *pool;
} io;

static void *server(void *arg)
{
    (void)arg;
    for (int i = 0; i < 3; i++) {
        int c = eddy_fiber_accept(io.lfd, NULL, NULL, SOCK_CLOEXEC);
        assert_true(c >= 0);
        void *buf;
        uint16_t bid;
        int n = eddy_fiber_recv_once(c, io.pool, &buf, &bid);
        assert_int_equal(n, 4);
        char reply[4];
        memcpy(reply, buf, 4);
        eddy_bufpool_put(io.pool, bid);
        struct iovec iov = {.iov_base = reply, .iov_len = 4};
        struct msghdr mh = {.msg_iov = &iov, .msg_iovlen = 1};
        assert_int_equal(eddy_fiber_sendmsg(c, &mh, 0), 4);
        assert_int_equal(eddy_fiber_shutdown(c, SHUT_WR), 0);
        assert_int_equal(eddy_fiber_close(c), 0);
        io.served++;
    }
    return NULL;
}

static void *client(void *arg)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons(io.port),
                            .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    assert_int_equal(eddy_fiber_connect(fd, (struct sockaddr *)&a, sizeof a), 0);
    if (arg)
        assert_int_equal(eddy_fiber_send_zc(fd, "ping", 4, 0), 4);
    else
        assert_int_equal(eddy_fiber_send(fd, "ping", 4, 0), 4);
    char buf[8];
    assert_int_equal(eddy_fiber_recv(fd, buf, sizeof buf, 0), 4);
    assert_memory_equal(buf, "ping", 4);
    assert_int_equal(eddy_fiber_recv(fd, buf, sizeof buf, 0), 0);
    assert_int_equal(eddy_fiber_close(fd), 0);
    io.got++;
    return NULL;
}

static int file_job(void *arg)
{
    return *(int *)arg + 1;
}

static struct eddy_fiber_event go = EDDY_FIBER_EVENT_INIT;
static int fanned;

static void *fan_waiter(void *arg)
{
    (void)arg;
    assert_int_equal(eddy_fiber_event_wait(&go), 0);
    fanned++;
    return NULL;
}

static void *file_fiber(void *arg)
{
    (void)arg;
    char path[] = "/tmp/eddy-fiber-XXXXXX";
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    unlink(path);
    assert_int_equal(eddy_fiber_write(fd, "abcdef", 6, 0), 6);
    char buf[8];
    assert_int_equal(eddy_fiber_read(fd, buf, 3, 2), 3);
    assert_memory_equal(buf, "cde", 3);
    assert_int_equal(eddy_fiber_close(fd), 0);
    int x = 41;
    assert_int_equal(eddy_fiber_work(file_job, &x), 42);
    /* fan-out */
    assert_int_equal(eddy_fiber_sleep(5), 0);
    assert_int_equal(fanned, 0);
    eddy_fiber_event_set(&go);
    assert_int_equal(fanned, 0); /* they run later, not inside set */
    assert_int_equal(eddy_fiber_yield(), 0);
    assert_int_equal(fanned, 10);
    assert_int_equal(eddy_fiber_event_wait(&go), 0); /* stays set */
    eddy_fiber_event_clear(&go);
    assert_int_equal(eddy_fiber_timeout(5), 0);
    assert_int_equal(eddy_fiber_event_wait(&go), -ETIME);
    io.done = 1;
    return NULL;
}

static void test_io_roundtrip(void **state)
{
    (void)state;
    struct eddy_loop *loop = loop_new(NULL, 0);
    memset(&io, 0, sizeof io);
    fanned = 0;
    eddy_fiber_event_clear(&go);
    io.lfd = ts_listen(0, &io.port);
    assert_int_equal(eddy_bufpool_init(loop, &io.pool, 8, 64), 0);
    spawn(loop, NULL, server, NULL, "server");
    for (int i = 0; i < 3; i++)
        spawn(loop, NULL, client, (void *)(intptr_t)(i & 1), "client");
    for (int i = 0; i < 10; i++)
        spawn(loop, NULL, fan_waiter, NULL, "fan");
    spawn(loop, NULL, file_fiber, NULL, "file");
    TS_RUN_UNTIL(loop, io.served == 3 && io.got == 3 && io.done, 5000);
    TS_RUN_UNTIL(loop, eddy_fiber_teardown(loop) == 0, 5000);
    assert_int_equal(eddy_bufpool_destroy(io.pool), 0);
    close(io.lfd);
    ts_loop_free(loop);
}

/* ---- accept: one connection per call ------------------------------------ */

static struct {
    int lfd;
    int got[3];
    int done;
} ac;

static void *acceptor(void *arg)
{
    (void)arg;
    for (int i = 0; i < 3; i++) {
        struct sockaddr_in peer;
        socklen_t len = sizeof peer;
        ac.got[i] = eddy_fiber_accept(ac.lfd, (struct sockaddr *)&peer, &len, SOCK_CLOEXEC);
        assert_true(ac.got[i] >= 0);
        assert_int_equal(len, sizeof peer);
        assert_int_equal(peer.sin_family, AF_INET);
    }
    ac.done = 1;
    return NULL;
}

static void test_accept_one_per_call(void **state)
{
    (void)state;
    struct eddy_loop *loop = loop_new(NULL, 0);
    memset(&ac, 0, sizeof ac);
    uint16_t port;
    ac.lfd = ts_listen(0, &port);
    /* three connections already waiting: a multishot accept takes them all
     * at once, and the extra two wait for the next calls */
    int c[3];
    for (int i = 0; i < 3; i++)
        c[i] = ts_connect(port);
    spawn(loop, NULL, acceptor, NULL, "acceptor");
    TS_RUN_UNTIL(loop, ac.done, 5000);
    assert_true(ac.got[0] != ac.got[1] && ac.got[1] != ac.got[2] && ac.got[0] != ac.got[2]);
    for (int i = 0; i < 3; i++) {
        close(ac.got[i]);
        close(c[i]);
    }
    close(ac.lfd);
    loop_free(loop);
}

/* ---- held fibers, started at once from a callback ------------------------ */

static struct {
    struct eddy_loop *loop;
    struct eddy_fiber *held, *child;
    int steps, child_ran, start_rc[4], done;
} hs;

static void *held_fn(void *arg)
{
    (void)arg;
    hs.steps = 1;
    assert_int_equal(eddy_fiber_sleep(5), 0); /* back to the starter's callback here */
    hs.steps = 2;
    return NULL;
}

static void *held_child(void *arg)
{
    (void)arg;
    hs.child_ran = 1;
    return NULL;
}

static void *held_parent(void *arg)
{
    (void)arg;
    struct eddy_fiber_options o = {.label = "held-child", .flags = EDDY_FIBER_HELD};
    assert_int_equal(eddy_fiber_spawn(hs.loop, &hs.child, held_child, NULL, &o), 0);
    hs.start_rc[2] = eddy_fiber_start(hs.child);
    assert_int_equal(hs.child_ran, 0); /* from a fiber: queued, not run inside */
    assert_int_equal(eddy_fiber_yield(), 0);
    assert_int_equal(hs.child_ran, 1);
    assert_int_equal(eddy_fiber_join(hs.child, NULL), 0);
    hs.done = 1;
    return NULL;
}

static void start_cb(struct eddy_op *op, int res)
{
    (void)op;
    assert_int_equal(res, 0);
    assert_int_equal(hs.steps, 0); /* held: the loop's iterations did not run it */
    hs.start_rc[0] = eddy_fiber_start(hs.held);
    assert_int_equal(hs.steps, 1); /* ran inside the call, up to its first wait */
    hs.start_rc[1] = eddy_fiber_start(hs.held);
}

static void test_held_start(void **state)
{
    (void)state;
    struct eddy_loop *loop = loop_new(NULL, 0);
    memset(&hs, 0, sizeof hs);
    hs.loop = loop;
    struct eddy_fiber_options o = {.label = "held", .flags = EDDY_FIBER_HELD};
    assert_int_equal(eddy_fiber_spawn(loop, &hs.held, held_fn, NULL, &o), 0);
    o.flags = 2;
    struct eddy_fiber *bad = NULL;
    assert_int_equal(eddy_fiber_spawn(loop, &bad, held_fn, NULL, &o), -EINVAL);
    assert_null(bad);
    struct eddy_op op = EDDY_OP_INIT;
    assert_int_equal(eddy_timer(loop, &op, 20, start_cb), 0);
    TS_RUN_UNTIL(loop, hs.steps == 2, 5000);
    assert_int_equal(hs.start_rc[0], 0);
    assert_int_equal(hs.start_rc[1], -EINVAL); /* started already */
    assert_int_equal(eddy_fiber_join(hs.held, NULL), -EPERM); /* not from a callback */
    assert_true(eddy_fiber_done(hs.held));
    eddy_fiber_detach(hs.held);
    spawn(loop, NULL, held_parent, NULL, "held-parent");
    TS_RUN_UNTIL(loop, hs.done, 5000);
    assert_int_equal(hs.start_rc[2], 0);
    /* cancelling a held fiber lets it run, to unwind: it is not stuck */
    o.flags = EDDY_FIBER_HELD;
    struct eddy_fiber *f;
    assert_int_equal(eddy_fiber_spawn(loop, &f, forever, NULL, &o), 0);
    ts_run_for(loop, 10);
    assert_false(eddy_fiber_done(f));
    assert_int_equal(eddy_fiber_cancel(f), 0);
    assert_int_equal(eddy_fiber_start(f), -EINVAL);
    TS_RUN_UNTIL(loop, eddy_fiber_done(f), 5000); /* its wait ended: -ECANCELED */
    eddy_fiber_detach(f);
    loop_free(loop);
}

/* ---- channels: fan-out, fan-in, close, deadlines ------------------------- */

#define CH_MSGS 20000
#define CH_WORKERS 4
#define CH_PRODUCERS 3

static struct {
    struct eddy_fiber_chan jobs, results;
    void *jslots[4], *rslots[2];
    unsigned char seen[CH_MSGS + 1];
    int per_worker[CH_WORKERS];
    int end_rc[CH_WORKERS];
    int collect_rc;
    int sent, collected;
    int done;
} fan;

/* Producer p sends its share of 1..CH_MSGS, in increasing order. */
static void *fan_producer(void *arg)
{
    int p = (int)(intptr_t)arg;
    for (int v = p + 1; v <= CH_MSGS; v += CH_PRODUCERS) {
        assert_int_equal(eddy_fiber_chan_send(&fan.jobs, (void *)(intptr_t)v), 0);
        fan.sent++;
    }
    return NULL;
}

/* Fan-out: takes jobs until the channel is closed and drained; fan-in: each
 * result goes to the one collector.  Channels are FIFO, so one worker sees
 * each producer's values in increasing order. */
static void *fan_worker(void *arg)
{
    int w = (int)(intptr_t)arg;
    int last[CH_PRODUCERS] = {0};
    void *m;
    int rc;
    while ((rc = eddy_fiber_chan_recv(&fan.jobs, &m)) == 0) {
        int v = (int)(intptr_t)m;
        int p = (v - 1) % CH_PRODUCERS;
        assert_true(v > last[p]);
        last[p] = v;
        fan.per_worker[w]++;
        assert_int_equal(eddy_fiber_chan_send(&fan.results, m), 0);
    }
    fan.end_rc[w] = rc;
    return NULL;
}

static void *fan_collector(void *arg)
{
    (void)arg;
    void *m;
    int rc;
    while ((rc = eddy_fiber_chan_recv(&fan.results, &m)) == 0) {
        int v = (int)(intptr_t)m;
        assert_true(v >= 1 && v <= CH_MSGS);
        fan.seen[v]++;
        fan.collected++;
    }
    fan.collect_rc = rc;
    return NULL;
}

/* Spawns the rest from a fiber, closes jobs once the producers are joined
 * and results once the workers are. */
static void *fan_main(void *arg)
{
    struct eddy_loop *loop = arg;
    struct eddy_fiber *prod[CH_PRODUCERS], *work[CH_WORKERS], *coll;
    spawn(loop, &coll, fan_collector, NULL, "collector");
    for (int i = 0; i < CH_WORKERS; i++)
        spawn(loop, &work[i], fan_worker, (void *)(intptr_t)i, "worker");
    for (int i = 0; i < CH_PRODUCERS; i++)
        spawn(loop, &prod[i], fan_producer, (void *)(intptr_t)i, "producer");
    for (int i = 0; i < CH_PRODUCERS; i++)
        assert_int_equal(eddy_fiber_join(prod[i], NULL), 0);
    eddy_fiber_chan_close(&fan.jobs);
    assert_int_equal(eddy_fiber_chan_send(&fan.jobs, &fan), -EPIPE);
    for (int i = 0; i < CH_WORKERS; i++)
        assert_int_equal(eddy_fiber_join(work[i], NULL), 0);
    eddy_fiber_chan_close(&fan.results);
    assert_int_equal(eddy_fiber_join(coll, NULL), 0);
    fan.done = 1;
    return NULL;
}

static void test_chan_fanout(void **state)
{
    (void)state;
    struct eddy_loop *loop = loop_new(NULL, 0);
    memset(&fan, 0, sizeof fan);
    assert_int_equal(eddy_fiber_chan_init(&fan.jobs, fan.jslots, 4), 0);
    assert_int_equal(eddy_fiber_chan_init(&fan.results, fan.rslots, 2), 0);
    spawn(loop, NULL, fan_main, loop, "fan-main");
    TS_RUN_UNTIL(loop, fan.done, 30000);
    assert_int_equal(fan.sent, CH_MSGS);
    assert_int_equal(fan.collected, CH_MSGS);
    assert_int_equal(fan.collect_rc, -EPIPE);
    int total = 0;
    for (int w = 0; w < CH_WORKERS; w++) {
        assert_int_equal(fan.end_rc[w], -EPIPE);
        assert_true(fan.per_worker[w] > 0); /* the work was fanned out */
        total += fan.per_worker[w];
    }
    assert_int_equal(total, CH_MSGS);
    for (int v = 1; v <= CH_MSGS; v++)
        assert_int_equal(fan.seen[v], 1); /* each exactly once */
    assert_int_equal(fan.jobs.len, 0);
    assert_int_equal(fan.results.len, 0);
    loop_free(loop);
}

static struct {
    struct eddy_fiber_chan ch;
    void *slots[2];
    int rx_rc[3], tx_rc[2];
    int ended;
    int drained[3];
    int drain_rc, done;
} cl;

static void *cl_receiver(void *arg)
{
    void *m = NULL;
    cl.rx_rc[(intptr_t)arg] = eddy_fiber_chan_recv(&cl.ch, &m);
    assert_null(m);
    cl.ended++;
    return NULL;
}

static void *cl_sender(void *arg)
{
    cl.tx_rc[(intptr_t)arg] = eddy_fiber_chan_send(&cl.ch, (void *)(intptr_t)9);
    cl.ended++;
    return NULL;
}

/* After close: what was queued, in order, then -EPIPE. */
static void *cl_drainer(void *arg)
{
    (void)arg;
    void *m = NULL;
    int n = 0;
    while ((cl.drain_rc = eddy_fiber_chan_recv(&cl.ch, &m)) == 0 && n < 3)
        cl.drained[n++] = (int)(intptr_t)m;
    assert_int_equal(eddy_fiber_chan_send(&cl.ch, m), -EPIPE);
    cl.done = 1;
    return NULL;
}

static void closer_cb(struct eddy_op *op, int res)
{
    (void)op;
    assert_int_equal(res, 0);
    eddy_fiber_chan_close(&cl.ch);
    assert_int_equal(cl.ended, 0); /* the waiters run later, not inside close */
}

static void test_chan_close(void **state)
{
    (void)state;
    struct eddy_loop *loop = loop_new(NULL, 0);
    struct eddy_op closer = EDDY_OP_INIT;
    /* receivers waiting on an empty channel; closed from a callback */
    memset(&cl, 0, sizeof cl);
    assert_int_equal(eddy_fiber_chan_init(&cl.ch, cl.slots, 2), 0);
    for (int i = 0; i < 3; i++)
        spawn(loop, NULL, cl_receiver, (void *)(intptr_t)i, "receiver");
    ts_run_for(loop, 20);
    assert_int_equal(cl.ended, 0);
    assert_int_equal(eddy_timer(loop, &closer, 1, closer_cb), 0);
    TS_RUN_UNTIL(loop, cl.ended == 3, 2000);
    for (int i = 0; i < 3; i++)
        assert_int_equal(cl.rx_rc[i], -EPIPE);
    assert_int_equal(eddy_fiber_chan_try_send(&cl.ch, &cl), -EPIPE);
    void *m;
    assert_int_equal(eddy_fiber_chan_try_recv(&cl.ch, &m), -EPIPE);
    /* senders waiting on a full channel: closed, they fail and send nothing;
     * what was queued before the close is still received */
    memset(&cl, 0, sizeof cl);
    assert_int_equal(eddy_fiber_chan_init(&cl.ch, cl.slots, 2), 0);
    assert_int_equal(eddy_fiber_chan_try_send(&cl.ch, (void *)(intptr_t)1), 0);
    assert_int_equal(eddy_fiber_chan_try_send(&cl.ch, (void *)(intptr_t)2), 0);
    assert_int_equal(eddy_fiber_chan_try_send(&cl.ch, (void *)(intptr_t)3), -EAGAIN);
    for (int i = 0; i < 2; i++)
        spawn(loop, NULL, cl_sender, (void *)(intptr_t)i, "sender");
    ts_run_for(loop, 20);
    assert_int_equal(cl.ended, 0);
    assert_int_equal(cl.ch.len, 2);
    assert_int_equal(eddy_timer(loop, &closer, 1, closer_cb), 0);
    TS_RUN_UNTIL(loop, cl.ended == 2, 2000);
    assert_int_equal(cl.tx_rc[0], -EPIPE);
    assert_int_equal(cl.tx_rc[1], -EPIPE);
    assert_int_equal(cl.ch.len, 2);
    spawn(loop, NULL, cl_drainer, NULL, "drainer");
    TS_RUN_UNTIL(loop, cl.done, 2000);
    assert_int_equal(cl.drained[0], 1);
    assert_int_equal(cl.drained[1], 2);
    assert_int_equal(cl.drained[2], 0);
    assert_int_equal(cl.drain_rc, -EPIPE);
    loop_free(loop);
}

static struct {
    struct eddy_fiber_chan ch;
    void *slots[1];
    int r[10];
    int64_t t[2];
    void *got[3];
    int done;
    struct eddy_op late;
} cd;

static void late_send_cb(struct eddy_op *op, int res)
{
    (void)op;
    assert_int_equal(res, 0);
    assert_int_equal(eddy_fiber_chan_try_send(&cd.ch, (void *)(intptr_t)4), 0);
}

static void *chan_deadline_fiber(void *arg)
{
    struct eddy_loop *loop = arg;
    int64_t t0 = mono_ms(), saved;
    /* a receive on an empty channel, a send on a full one: -ETIME, nothing moved */
    assert_int_equal(eddy_fiber_timeout(30), 0);
    cd.r[0] = eddy_fiber_chan_recv(&cd.ch, &cd.got[0]);
    cd.t[0] = mono_ms() - t0;
    assert_int_equal(eddy_fiber_chan_try_send(&cd.ch, (void *)(intptr_t)1), 0);
    t0 = mono_ms();
    assert_int_equal(eddy_fiber_timeout(30), 0);
    cd.r[1] = eddy_fiber_chan_send(&cd.ch, (void *)(intptr_t)2);
    cd.t[1] = mono_ms() - t0;
    cd.r[2] = (int)cd.ch.len;
    /* in a block: served at once while it lasts, -ETIME at once after */
    assert_int_equal(eddy_fiber_deadline_push(20, &saved), 0);
    cd.r[3] = eddy_fiber_chan_recv(&cd.ch, &cd.got[1]);
    cd.r[4] = eddy_fiber_sleep(1000);
    assert_int_equal(eddy_fiber_chan_try_send(&cd.ch, (void *)(intptr_t)3), 0);
    cd.r[5] = eddy_fiber_chan_recv(&cd.ch, &cd.got[2]);
    cd.r[6] = (int)cd.ch.len;
    eddy_fiber_deadline_pop(saved);
    cd.r[7] = eddy_fiber_chan_recv(&cd.ch, &cd.got[2]);
    /* a receive that timed out is not served later: the late message waits */
    assert_int_equal(eddy_timer(loop, &cd.late, 30, late_send_cb), 0);
    assert_int_equal(eddy_fiber_timeout(5), 0);
    cd.r[8] = eddy_fiber_chan_recv(&cd.ch, &cd.got[0]);
    assert_int_equal(eddy_fiber_sleep(60), 0);
    assert_int_equal(cd.ch.len, 1);
    cd.r[9] = eddy_fiber_chan_recv(&cd.ch, &cd.got[0]);
    cd.done = 1;
    return NULL;
}

static void test_chan_deadline(void **state)
{
    (void)state;
    struct eddy_loop *loop = loop_new(NULL, 0);
    memset(&cd, 0, sizeof cd);
    assert_int_equal(eddy_fiber_chan_init(&cd.ch, cd.slots, 1), 0);
    spawn(loop, NULL, chan_deadline_fiber, loop, "chan-deadline");
    TS_RUN_UNTIL(loop, cd.done, 5000);
    assert_int_equal(cd.r[0], -ETIME);
    assert_true(cd.t[0] >= 29 && cd.t[0] < 1000);
    assert_int_equal(cd.r[1], -ETIME);
    assert_true(cd.t[1] >= 29 && cd.t[1] < 1000);
    assert_int_equal(cd.r[2], 1); /* the timed-out send sent nothing */
    assert_int_equal(cd.r[3], 0);
    assert_ptr_equal(cd.got[1], (void *)(intptr_t)1);
    assert_int_equal(cd.r[4], -ETIME);
    assert_int_equal(cd.r[5], -ETIME); /* passed: at once, even with a message there */
    assert_int_equal(cd.r[6], 1);
    assert_int_equal(cd.r[7], 0);
    assert_ptr_equal(cd.got[2], (void *)(intptr_t)3);
    assert_int_equal(cd.r[8], -ETIME);
    assert_int_equal(cd.r[9], 0);
    assert_ptr_equal(cd.got[0], (void *)(intptr_t)4);
    loop_free(loop);
}

/* ---- for other layers: the pre-wait check, the call deadline, fiber data --- */

static int checked;

static void *checker(void *arg)
{
    struct eddy_fiber *self = eddy_fiber_self();
    assert_ptr_equal(eddy_fiber_data(self), arg); /* set by the spawner */
    eddy_fiber_set_data(self, &checked);
    assert_ptr_equal(eddy_fiber_data(self), &checked);
    assert_int_equal(eddy_fiber_check(), 0);
    /* a cleared call deadline does not fall on the next wait */
    assert_int_equal(eddy_fiber_timeout(5), 0);
    assert_int_equal(eddy_fiber_timeout_clear(), 0);
    assert_int_equal(eddy_fiber_sleep(30), 0);
    /* a passed call deadline: -ETIME, and used up */
    assert_int_equal(eddy_fiber_timeout(0), 0);
    assert_int_equal(eddy_fiber_check(), -ETIME);
    assert_int_equal(eddy_fiber_sleep(1), 0);
    /* a passed deadline wins over a set event, as over a ready operation */
    struct eddy_fiber_event ev = EDDY_FIBER_EVENT_INIT;
    eddy_fiber_event_set(&ev);
    assert_int_equal(eddy_fiber_timeout(0), 0);
    assert_int_equal(eddy_fiber_event_wait(&ev), -ETIME);
    assert_int_equal(eddy_fiber_event_wait(&ev), 0);
    int64_t saved;
    assert_int_equal(eddy_fiber_deadline_push(0, &saved), 0);
    assert_int_equal(eddy_fiber_check(), -ETIME);
    eddy_fiber_deadline_pop(saved);
    assert_int_equal(eddy_fiber_check(), 0);
    assert_int_equal(eddy_fiber_cancel(self), 0);
    assert_int_equal(eddy_fiber_check(), -ECANCELED);
    checked = 1;
    return NULL;
}

static void test_check_and_data(void **state)
{
    (void)state;
    struct eddy_loop *loop = loop_new(NULL, 0);
    checked = 0;
    struct eddy_fiber *f;
    spawn(loop, &f, checker, &loop, "checker");
    assert_null(eddy_fiber_data(f));
    eddy_fiber_set_data(f, &loop);
    TS_RUN_UNTIL(loop, checked, 5000);
    assert_true(eddy_fiber_done(f));
    assert_ptr_equal(eddy_fiber_data(f), &checked);
    eddy_fiber_detach(f);
    loop_free(loop);
}

/* ---- misuse ------------------------------------------------------------- */

static int eperm_checked;

static void outside_cb(struct eddy_op *op, int res)
{
    (void)op, (void)res;
    char buf[4];
    struct eddy_fiber_event ev = EDDY_FIBER_EVENT_INIT;
    struct eddy_fiber_waiter w;
    memset(&w, 0, sizeof w);
    struct eddy_fiber_op fo;
    memset(&fo, 0, sizeof fo);
    struct eddy_fiber_op *ops[] = {&fo};
    int64_t saved;
    assert_null(eddy_fiber_self());
    assert_int_equal(eddy_fiber_yield(), -EPERM);
    assert_int_equal(eddy_fiber_sleep(1), -EPERM);
    assert_int_equal(eddy_fiber_sleep_until(0), -EPERM);
    assert_int_equal(eddy_fiber_recv(0, buf, 4, 0), -EPERM);
    assert_int_equal(eddy_fiber_send(0, buf, 4, 0), -EPERM);
    assert_int_equal(eddy_fiber_send_zc(0, buf, 4, 0), -EPERM);
    assert_int_equal(eddy_fiber_read(0, buf, 4, 0), -EPERM);
    assert_int_equal(eddy_fiber_write(0, buf, 4, 0), -EPERM);
    assert_int_equal(eddy_fiber_accept(0, NULL, NULL, 0), -EPERM);
    assert_int_equal(eddy_fiber_connect(0, NULL, 0), -EPERM);
    assert_int_equal(eddy_fiber_sendmsg(0, NULL, 0), -EPERM);
    assert_int_equal(eddy_fiber_recv_once(0, NULL, NULL, NULL), -EPERM);
    assert_int_equal(eddy_fiber_close(0), -EPERM);
    assert_int_equal(eddy_fiber_shutdown(0, SHUT_RDWR), -EPERM);
    assert_int_equal(eddy_fiber_poll(0, POLLIN), -EPERM);
    assert_int_equal(eddy_fiber_work(file_job, NULL), -EPERM);
    assert_int_equal(eddy_fiber_event_wait(&ev), -EPERM);
    struct eddy_fiber_chan ch;
    void *slot[1], *m = NULL;
    assert_int_equal(eddy_fiber_chan_init(&ch, slot, 1), 0);
    assert_int_equal(eddy_fiber_chan_send(&ch, &ch), -EPERM);
    assert_int_equal(eddy_fiber_chan_recv(&ch, &m), -EPERM);
    assert_int_equal(ch.len, 0); /* nothing sent */
    assert_int_equal(eddy_fiber_chan_try_send(&ch, &ch), 0); /* callbacks may */
    assert_int_equal(eddy_fiber_chan_try_recv(&ch, &m), 0);
    assert_ptr_equal(m, &ch);
    assert_int_equal(eddy_fiber_check(), -EPERM);
    assert_int_equal(eddy_fiber_timeout_clear(), -EPERM);
    assert_int_equal(eddy_fiber_suspend(&w, NULL), -EPERM);
    assert_int_equal(eddy_fiber_await(&fo), -EPERM);
    assert_int_equal(eddy_fiber_await_all(ops, 1), -EPERM);
    assert_int_equal(eddy_fiber_await_any(ops, 1), -EPERM);
    assert_int_equal(eddy_fiber_join(NULL, NULL), -EPERM);
    assert_int_equal(eddy_fiber_timeout(5), -EPERM);
    assert_int_equal(eddy_fiber_deadline_push(5, &saved), -EPERM);
    assert_int_equal(eddy_fiber_cancelled(), 0);
    eperm_checked = 1;
}

static void *noop(void *arg)
{
    return arg;
}

static int served_ticks;
static void tick_cb(struct eddy_op *op, int res)
{
    (void)op;
    assert_int_equal(res, 0);
    served_ticks++;
}

static void test_misuse(void **state)
{
    (void)state;
    /* no setup: -ENOENT; awaiting from a callback: -EPERM */
    struct eddy_loop *bare = ts_loop_new(NULL);
    assert_int_equal(eddy_fiber_is_setup(bare), 0);
    assert_int_equal(eddy_fiber_spawn(bare, NULL, noop, NULL, NULL), -ENOENT);
    assert_int_equal(eddy_fiber_teardown(bare), -ENOENT);
    struct eddy_op op = EDDY_OP_INIT;
    eperm_checked = 0;
    assert_int_equal(eddy_post(bare, &op, outside_cb), 0);
    TS_RUN_UNTIL(bare, eperm_checked, 1000);
    ts_loop_free(bare);
    char buf[4];
    assert_int_equal(eddy_fiber_recv(0, buf, 4, 0), -EPERM); /* not even in a loop */

    struct eddy_fiber_config bad = {.stack_size = 1024};
    struct eddy_loop *loop = ts_loop_new(NULL);
    assert_int_equal(eddy_fiber_setup(loop, &bad), -EINVAL);
    struct eddy_fiber_config cfg = {.max_fibers = 2};
    assert_int_equal(eddy_fiber_is_setup(loop), 0);
    assert_int_equal(eddy_fiber_setup(loop, &cfg), 0);
    assert_int_equal(eddy_fiber_is_setup(loop), 1);
    assert_int_equal(eddy_fiber_setup(loop, &cfg), -EEXIST);
    struct eddy_fiber_chan ch;
    void *slot[1];
    assert_int_equal(eddy_fiber_chan_init(&ch, slot, 0), -EINVAL);
    assert_int_equal(eddy_fiber_chan_init(&ch, NULL, 1), -EINVAL);
    struct eddy_fiber_options o = {.stack_size = EDDY_FIBER_STACK_MIN - 1};
    assert_int_equal(eddy_fiber_spawn(loop, NULL, noop, NULL, &o), -EINVAL);
    o.stack_size = (size_t)EDDY_FIBER_STACK_MAX + 1;
    assert_int_equal(eddy_fiber_spawn(loop, NULL, noop, NULL, &o), -EINVAL);
    o.stack_size = 0;
    assert_int_equal(eddy_fiber_spawn(loop, NULL, NULL, NULL, &o), -EINVAL);
    /* the cap: -EAGAIN, and the loop keeps serving */
    assert_int_equal(eddy_fiber_spawn(loop, NULL, noop, NULL, &o), 0);
    assert_int_equal(eddy_fiber_spawn(loop, NULL, noop, NULL, &o), 0);
    assert_int_equal(eddy_fiber_spawn(loop, NULL, noop, NULL, &o), -EAGAIN);
    served_ticks = 0;
    assert_int_equal(eddy_timer(loop, &op, 1, tick_cb), 0);
    TS_RUN_UNTIL(loop, served_ticks == 1, 1000);
    assert_int_equal(eddy_fiber_spawn(loop, NULL, noop, NULL, &o), 0); /* room again */
    fibers_teardown(loop);
    assert_int_equal(eddy_fiber_is_setup(loop), 0);
    ts_loop_free(loop);
}

/* The system cannot back a stack: -ENOMEM, and the loop keeps serving.
 * RLIMIT_AS in a child (AddressSanitizer needs its address space: skipped). */
static void test_spawn_enomem(void **state)
{
    (void)state;
    if (UNDER_ASAN) {
        print_message("    skipped under AddressSanitizer (RLIMIT_AS)\n");
        return;
    }
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        alarm(20); /* a child that hangs dies by SIGALRM: the test fails, never hangs */
        struct eddy_loop *loop = NULL;
        if (eddy_loop_init(&loop, NULL) < 0 || eddy_fiber_setup(loop, NULL) < 0)
            _exit(10);
        struct rlimit rl;
        getrlimit(RLIMIT_AS, &rl);
        /* a little above what the process maps now */
        FILE *f = fopen("/proc/self/statm", "r");
        unsigned long pages = 0;
        if (!f || fscanf(f, "%lu", &pages) != 1)
            _exit(11);
        fclose(f);
        rl.rlim_cur = pages * (unsigned long)sysconf(_SC_PAGESIZE) + (8u << 20);
        if (setrlimit(RLIMIT_AS, &rl) < 0)
            _exit(12);
        struct eddy_fiber_options o = {.stack_size = 64u << 20};
        int rc = eddy_fiber_spawn(loop, NULL, noop, NULL, &o);
        if (rc != -ENOMEM)
            _exit(13);
        struct eddy_op op = EDDY_OP_INIT;
        served_ticks = 0;
        if (eddy_timer(loop, &op, 1, tick_cb) < 0)
            _exit(14);
        if (eddy_loop_run(loop, EDDY_RUN_DEFAULT) != 0 || served_ticks != 1)
            _exit(15);
        _exit(0);
    }
    int st;
    assert_int_equal(waitpid(pid, &st, 0), pid);
    assert_true(WIFEXITED(st));
    assert_int_equal(WEXITSTATUS(st), 0);
}

/* ---- stack overflow ----------------------------------------------------- */

static int (*volatile recurse_p)(int);

static int recurse(int n)
{
    volatile char pad[512];
    pad[0] = (char)n;
    pad[511] = (char)n;
    return recurse_p(n + 1) + pad[0] + pad[511];
}

static void *overflow_fiber(void *arg)
{
    (void)arg;
    recurse_p = recurse;
    return (void *)(intptr_t)recurse_p(0);
}

static char *volatile deep_record; /* the overflowing fiber's record: the top of its slot */

/* Runs on the stack abort() raises SIGABRT on (no SA_ONSTACK): it must not
 * be the overflowed one, nor the slot below it. */
static void abort_where(int sig)
{
    char here;
    char *r = deep_record;
    const char *m = r && &here < r + 4096 && &here > r - (2u << 20)
                        ? "abort ran on the fiber stacks\n"
                        : "abort ran off the fiber stacks\n";
    ssize_t w = write(STDERR_FILENO, m, strlen(m));
    (void)w, (void)sig; /* SA_RESETHAND: abort() raises it again, and the process dies */
}

/* Writes a little past the end of its 64 KiB stack, then switches. */
static void *canary_fiber(void *arg)
{
    (void)arg;
    deep_record = (char *)eddy_fiber_self();
    volatile char big[66000];
    memset((char *)big, 0x5a, sizeof big);
    eddy_fiber_yield();
    return (void *)(intptr_t)big[100];
}

/* Occupies a slot below the overflowing fiber's: parked, or back in the
 * pool (its record on a free list) by the time the overflow happens. */
static void *parked_fiber(void *arg)
{
    (void)arg;
    eddy_fiber_sleep(60000);
    return NULL;
}

static void *quick_fiber(void *arg)
{
    (void)arg;
    return NULL;
}

/* In a child: `nfill` fibers of filler_fn, then the overflowing one (so
 * that, packed, it takes slot nfill of a fresh chunk); it must die by
 * want_sig with the report naming it. */
static void run_overflow_child_after(unsigned guard, unsigned nfill, void *(*filler_fn)(void *),
                                     const char *want, int want_sig)
{
    int p[2];
    assert_int_equal(pipe(p), 0);
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        alarm(20); /* a child that hangs dies by SIGALRM: the test fails, never hangs */
        /* cmocka catches these in this process: die as a program would */
        signal(SIGABRT, SIG_DFL);
        signal(SIGSEGV, SIG_DFL);
        if (want_sig == SIGABRT) {
            struct sigaction sa;
            memset(&sa, 0, sizeof sa);
            sa.sa_handler = abort_where;
            sa.sa_flags = SA_RESETHAND;
            sigemptyset(&sa.sa_mask);
            sigaction(SIGABRT, &sa, NULL);
        }
        dup2(p[1], STDERR_FILENO);
        close(p[0]);
        struct eddy_loop *loop = NULL;
        if (eddy_loop_init(&loop, NULL) < 0)
            _exit(10);
        struct eddy_fiber_config cfg = {.guard = guard};
        if (eddy_fiber_setup(loop, &cfg) < 0)
            _exit(11);
        struct eddy_fiber_options o = {.stack_size = 64 * 1024, .label = "deep-recursion"};
        struct eddy_fiber_options fo = {.stack_size = 64 * 1024, .label = "filler"};
        for (unsigned i = 0; i < nfill; i++)
            if (eddy_fiber_spawn(loop, NULL, filler_fn, NULL, &fo) < 0)
                _exit(12);
        if (eddy_fiber_spawn(loop, NULL,
                             guard == EDDY_FIBER_GUARD_NONE ? canary_fiber : overflow_fiber, NULL,
                             &o) < 0)
            _exit(12);
        eddy_loop_run(loop, EDDY_RUN_DEFAULT);
        _exit(13);
    }
    close(p[1]);
    char out[4096];
    size_t n = 0;
    ssize_t r;
    while (n < sizeof out - 1 && (r = read(p[0], out + n, sizeof out - 1 - n)) > 0)
        n += (size_t)r;
    out[n] = 0;
    close(p[0]);
    int st;
    assert_int_equal(waitpid(pid, &st, 0), pid);
    print_message("    child stderr: %.300s", out);
    assert_true(WIFSIGNALED(st));
    assert_int_equal(WTERMSIG(st), want_sig);
    assert_non_null(strstr(out, "fiber 'deep-recursion' overflowed its 65536-byte stack"));
    assert_non_null(strstr(out, want));
    assert_null(strstr(out, "'filler'"));
    if (want_sig == SIGABRT)
        assert_non_null(strstr(out, "abort ran off the fiber stacks"));
}

static void run_overflow_child(unsigned guard, const char *want, int want_sig)
{
    run_overflow_child_after(guard, 0, NULL, want, want_sig);
}

static void test_stack_overflow(void **state)
{
    (void)state;
    run_overflow_child(EDDY_FIBER_GUARD_PAGE, "guard page", SIGSEGV);
}

/* Without a guard page (packed stacks), in a slot above another stack: the
 * canary catches it at the switch, the report runs on a stack of its own
 * (the overflowing stack pointer is inside the slot below) and aborts.  The
 * fiber in the slot below is parked, or back in the pool. */
static void test_stack_overflow_canary(void **state)
{
    (void)state;
    run_overflow_child_after(EDDY_FIBER_GUARD_NONE, 1, quick_fiber,
                             "canary at its end was overwritten", SIGABRT);
    run_overflow_child_after(EDDY_FIBER_GUARD_NONE, 5, quick_fiber,
                             "canary at its end was overwritten", SIGABRT);
    if (UNDER_ASAN) {
        /* the parked fiber's frames below carry redzones: ASan reports the
         * overflow itself, as a stack-buffer-underflow without the label */
        print_message("    below a parked fiber: skipped under AddressSanitizer\n");
        return;
    }
    run_overflow_child_after(EDDY_FIBER_GUARD_NONE, 1, parked_fiber,
                             "canary at its end was overwritten", SIGABRT);
    run_overflow_child_after(EDDY_FIBER_GUARD_NONE, 5, parked_fiber,
                             "canary at its end was overwritten", SIGABRT);
}

/* Packed, in slot 0 of its chunk: the overflow runs into the guard page
 * below the chunk and is reported like a guarded stack's. */
static void test_stack_overflow_canary_slot0(void **state)
{
    (void)state;
    run_overflow_child(EDDY_FIBER_GUARD_NONE, "guard page below its chunk of packed stacks",
                       SIGSEGV);
}

/* ---- the watchdog names the fiber --------------------------------------- */

static int sloth_done;

static void *sloth(void *arg)
{
    (void)arg;
    assert_int_equal(eddy_fiber_sleep(1), 0);
    usleep(150000); /* blocks the loop */
    sloth_done = 1;
    return NULL;
}

static void test_watchdog_names_fiber(void **state)
{
    (void)state;
    struct eddy_loop *loop = loop_new(NULL, 50);
    sloth_done = 0;
    spawn(loop, NULL, sloth, NULL, "sloth-handler");
    TS_RUN_UNTIL(loop, sloth_done, 5000);
    loop_free(loop);
    assert_true(logs_find("fiber sloth-handler") >= 1);
    assert_int_equal(logs_find("still running"), 1);
    struct eddy_loop_stats st;
    (void)st;
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_pingpong, ts_fd_setup, ts_fd_teardown),
        cmocka_unit_test_setup_teardown(test_pingpong_ucontext, ts_fd_setup, ts_fd_teardown),
        cmocka_unit_test_setup_teardown(test_fp_control_per_fiber, ts_fd_setup, ts_fd_teardown),
        cmocka_unit_test_setup_teardown(test_spawn_join, ts_fd_setup, ts_fd_teardown),
        cmocka_unit_test_setup_teardown(test_100k_sleepers, ts_fd_setup, ts_fd_teardown),
        cmocka_unit_test_setup_teardown(test_cancel_each_wait, ts_fd_setup, ts_fd_teardown),
        cmocka_unit_test_setup_teardown(test_cancel_all, ts_fd_setup, ts_fd_teardown),
        cmocka_unit_test_setup_teardown(test_deadlines, ts_fd_setup, ts_fd_teardown),
        cmocka_unit_test_setup_teardown(test_wait_all_any, ts_fd_setup, ts_fd_teardown),
        cmocka_unit_test_setup_teardown(test_io_roundtrip, ts_fd_setup, ts_fd_teardown),
        cmocka_unit_test_setup_teardown(test_accept_one_per_call, ts_fd_setup, ts_fd_teardown),
        cmocka_unit_test_setup_teardown(test_held_start, ts_fd_setup, ts_fd_teardown),
        cmocka_unit_test_setup_teardown(test_chan_fanout, ts_fd_setup, ts_fd_teardown),
        cmocka_unit_test_setup_teardown(test_chan_close, ts_fd_setup, ts_fd_teardown),
        cmocka_unit_test_setup_teardown(test_chan_deadline, ts_fd_setup, ts_fd_teardown),
        cmocka_unit_test_setup_teardown(test_check_and_data, ts_fd_setup, ts_fd_teardown),
        cmocka_unit_test_setup_teardown(test_misuse, ts_fd_setup, ts_fd_teardown),
        cmocka_unit_test_setup_teardown(test_spawn_enomem, ts_fd_setup, ts_fd_teardown),
        cmocka_unit_test_setup_teardown(test_stack_overflow, ts_fd_setup, ts_fd_teardown),
        cmocka_unit_test_setup_teardown(test_stack_overflow_canary, ts_fd_setup, ts_fd_teardown),
        cmocka_unit_test_setup_teardown(test_stack_overflow_canary_slot0, ts_fd_setup,
                                        ts_fd_teardown),
        cmocka_unit_test_setup_teardown(test_watchdog_names_fiber, ts_fd_setup, ts_fd_teardown),
    };
    const char *only = getenv("EDDY_TEST_ONLY"); /* a test name pattern, for debugging */
    if (only)
        cmocka_set_test_filter(only);
    return cmocka_run_group_tests(tests, NULL, NULL);
}
