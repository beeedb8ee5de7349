/*
 * Loop groups (eddy/group.h): N loops on N threads, a ready barrier, a
 * broadcast stop, SIGINT/SIGTERM on loop 0.
 *
 * Lifetimes.  A member's loop may be posted to (the group's stop, the
 * user's eddy_group_post) only while it is live: from the start's "go"
 * until its first run returns.  Posters are lock-free (eddy_group_stop is
 * async-signal safe): a poster counts itself in m->posters, then looks at
 * m->live; the loop thread clears live, then waits for posters to be 0, and
 * only then runs the loop one last time and destroys it.  Both sides use
 * sequentially consistent atomics, so either the poster sees the loop
 * closed, or the closer sees the poster and waits for its push to finish:
 * no post ever reaches a freed loop, and every accepted one is run.
 */
#define _GNU_SOURCE
#include "eddy/group.h"

#include <errno.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

struct member {
    struct eddy_group *g;
    unsigned index;
    int cpu;                     /* -1: not pinned */
    bool started;                /* its thread exists (join it) */
    bool skipped;                /* loop 0 failed: this one was never created */
    bool stopped;                /* stop ran (loop thread only) */
    bool setup_ran;              /* so teardown runs */
    struct eddy_loop *loop;      /* written before the barrier, read-only after */
    pthread_t thread;
    struct eddy_op stop_op;
    struct eddy_op sig_ops[2];   /* loop 0 with o.signals: SIGINT, SIGTERM */
    atomic_bool live;            /* takes posts */
    atomic_bool stop_posted;
    atomic_uint posters;         /* posts being pushed right now */
    int rc;                      /* its run's or its destroy's error */
};

struct eddy_group {
    struct eddy_group_options o;
    struct eddy_loop_options lo;
    unsigned n;
    pthread_mutex_t mu;          /* the barrier's */
    pthread_cond_t cv;
    unsigned ready;              /* threads past setup */
    bool loop0_done;             /* loop 0 created (or failed): the others may attach */
    bool decided, go;
    int err;                     /* the start's first error */
    atomic_bool stop_req;
    bool mask_set;               /* o.signals: the caller's mask to give back */
    sigset_t old_mask;
    struct member m[];
};

static const int group_signals[2] = {SIGINT, SIGTERM};

void eddy_group_options_init(struct eddy_group_options *o)
{
    memset(o, 0, sizeof *o);
}

unsigned eddy_group_size(const struct eddy_group *g)
{
    return g->n;
}

int eddy_group_started(const struct eddy_group *g)
{
    struct eddy_group *w = (struct eddy_group *)g; /* the mutex only */
    pthread_mutex_lock(&w->mu);
    int started = g->decided && g->go;
    pthread_mutex_unlock(&w->mu);
    return started;
}

struct eddy_loop *eddy_group_loop(const struct eddy_group *g, unsigned index)
{
    return index < g->n ? g->m[index].loop : NULL;
}

/* ---- posts and stop --------------------------------------------------- */

/* Pushes op to m's loop if it is live (see the top of the file). */
static bool member_post(struct member *m, struct eddy_op *op, eddy_cb cb, atomic_bool *once)
{
    bool posted = false;
    atomic_fetch_add(&m->posters, 1);
    if (atomic_load(&m->live) && (!once || !atomic_exchange(once, true))) {
        eddy_post_threadsafe(m->loop, op, cb);
        posted = true;
    }
    atomic_fetch_sub(&m->posters, 1);
    return posted;
}

/* Loop thread: no post reaches the loop from now on. */
static void member_close(struct member *m)
{
    atomic_store(&m->live, false);
    while (atomic_load(&m->posters))
        sched_yield(); /* a push takes a few instructions */
}

/* On m's thread: the group stops this loop (once). */
static void member_stop(struct member *m)
{
    struct eddy_group *g = m->g;
    if (m->stopped)
        return;
    m->stopped = true;
    for (int k = 0; k < 2; k++)
        if (eddy_op_active(&m->sig_ops[k]))
            eddy_cancel(m->loop, &m->sig_ops[k]);
    eddy_loop_unref(m->loop); /* taken after setup: the loop may now end */
    if (g->o.stop)
        g->o.stop(g, m->index, m->loop, g->o.ud);
}

static void on_stop_post(struct eddy_op *op, int res)
{
    (void)res;
    member_stop(eddy_container_of(op, struct member, stop_op));
}

void eddy_group_stop(struct eddy_group *g)
{
    atomic_store(&g->stop_req, true);
    for (unsigned i = 0; i < g->n; i++)
        member_post(&g->m[i], &g->m[i].stop_op, on_stop_post, &g->m[i].stop_posted);
}

int eddy_group_post(struct eddy_group *g, unsigned index, struct eddy_op *op, eddy_cb cb)
{
    if (index >= g->n || !op || !cb)
        return -EINVAL;
    return member_post(&g->m[index], op, cb, NULL) ? 0 : -ESHUTDOWN;
}

static void on_signal(struct eddy_op *op, int res)
{
    if (!(op->flags & EDDY_OP_MORE))
        return; /* the final callback of our own cancel */
    struct member *m = op->data;
    struct eddy_group *g = m->g;
    if (g->o.on_signal)
        g->o.on_signal(g, res, g->o.ud);
    eddy_group_stop(g);
}

/* ---- a member's thread ------------------------------------------------ */

/* Creates m's loop (loops 1..n-1 attached to loop 0's io-wq), watches the
 * signals on loop 0, and runs the user's setup. */
static int member_init(struct member *m)
{
    struct eddy_group *g = m->g;
    struct eddy_loop_options lo = g->lo;
    if (g->o.iowq_max_workers)
        lo.iowq_max_workers = g->o.iowq_max_workers;
    if (m->index > 0) {
        pthread_mutex_lock(&g->mu);
        while (!g->loop0_done)
            pthread_cond_wait(&g->cv, &g->mu);
        pthread_mutex_unlock(&g->mu);
        if (!g->m[0].loop) {
            m->skipped = true; /* loop 0's error is the group's */
            return -ECANCELED;
        }
        lo.attach_wq = g->m[0].loop;
    }
    if (g->o.loop_options)
        g->o.loop_options(g, m->index, &lo, g->o.ud);
    int rc = eddy_loop_init(&m->loop, &lo);
    if (rc < 0)
        m->loop = NULL;
    if (m->index == 0) {
        pthread_mutex_lock(&g->mu);
        g->loop0_done = true;
        pthread_cond_broadcast(&g->cv);
        pthread_mutex_unlock(&g->mu);
    }
    if (rc < 0)
        return rc;
    for (int k = 0; m->index == 0 && g->o.signals && k < 2; k++) {
        m->sig_ops[k].data = m;
        m->sig_ops[k].label = "eddy group signal";
        rc = eddy_signal(m->loop, &m->sig_ops[k], group_signals[k], on_signal);
        if (rc < 0)
            return rc;
    }
    m->setup_ran = true;
    if (g->o.setup)
        rc = g->o.setup(g, m->index, m->loop, g->o.ud);
    if (rc == 0)
        eddy_loop_ref(m->loop); /* until the stop: posts are never missed */
    return rc;
}

/* The ready barrier: reports rc, waits for the start's verdict. */
static bool barrier(struct member *m, int rc)
{
    struct eddy_group *g = m->g;
    pthread_mutex_lock(&g->mu);
    if (rc < 0 && !m->skipped && !g->err)
        g->err = rc;
    g->ready++;
    pthread_cond_broadcast(&g->cv);
    while (!g->decided)
        pthread_cond_wait(&g->cv, &g->mu);
    bool go = g->go;
    pthread_mutex_unlock(&g->mu);
    return go;
}

/* Runs the loop to its end, closes it to posts, runs what was posted. */
static void member_run(struct member *m)
{
    int rc = eddy_loop_run(m->loop, EDDY_RUN_DEFAULT);
    member_close(m);
    if (rc < 0) {
        m->rc = rc;
        rc = eddy_loop_run(m->loop, EDDY_RUN_NOWAIT);
    } else if (rc == 0 && m->stopped) {
        rc = eddy_loop_run(m->loop, EDDY_RUN_DEFAULT);
    } else {
        /* eddy_loop_stop() from the loop's own thread: abandoned with
         * work active.  Deliver what arrived, wait for nothing. */
        rc = eddy_loop_run(m->loop, EDDY_RUN_NOWAIT);
    }
    if (rc < 0 && !m->rc)
        m->rc = rc;
}

static void *member_main(void *arg)
{
    struct member *m = arg;
    struct eddy_group *g = m->g;
    int rc = member_init(m);
    bool go = barrier(m, rc);
    if (!m->loop)
        return NULL;
    if (rc < 0) {
        /* Its setup failed: only cancels it made (and our signal
         * watches) are left to end. */
        for (int k = 0; k < 2; k++)
            if (eddy_op_active(&m->sig_ops[k]))
                eddy_cancel(m->loop, &m->sig_ops[k]);
        int r = eddy_loop_run(m->loop, EDDY_RUN_DEFAULT);
        if (r < 0)
            m->rc = r;
    } else {
        if (!go)
            member_stop(m); /* another loop failed: undo, serve nothing */
        member_run(m);
    }
    if (g->o.teardown && m->setup_ran)
        g->o.teardown(g, m->index, m->loop, g->o.ud);
    rc = eddy_loop_destroy(m->loop);
    if (rc < 0 && !m->rc)
        m->rc = rc; /* left allocated: something still uses it */
    return NULL;
}

/* ---- start, join ------------------------------------------------------ */

/* The CPUs this process may run on, in order, into out; their count. */
static int allowed_cpus(int *out)
{
    cpu_set_t set;
    int count = 0;
    if (sched_getaffinity(0, sizeof set, &set) == 0)
        for (int c = 0; c < CPU_SETSIZE; c++)
            if (CPU_ISSET(c, &set))
                out[count++] = c;
    return count;
}

static int spawn(struct member *m)
{
    pthread_attr_t attr;
    int rc = pthread_attr_init(&attr);
    if (rc)
        return -rc;
    if (m->cpu >= 0) {
        cpu_set_t set;
        CPU_ZERO(&set);
        if (m->cpu >= CPU_SETSIZE) {
            pthread_attr_destroy(&attr);
            return -EINVAL;
        }
        CPU_SET(m->cpu, &set);
        rc = pthread_attr_setaffinity_np(&attr, sizeof set, &set);
    }
    if (!rc)
        rc = pthread_create(&m->thread, &attr, member_main, m);
    pthread_attr_destroy(&attr);
    m->started = rc == 0;
    return -rc;
}

/* SIGINT/SIGTERM blocked in the caller, so every loop thread inherits the
 * block and only loop 0's signalfd reads them. */
static void mask_signals(struct eddy_group *g)
{
    sigset_t set;
    sigemptyset(&set);
    for (int k = 0; k < 2; k++)
        sigaddset(&set, group_signals[k]);
    pthread_sigmask(SIG_BLOCK, &set, &g->old_mask);
    g->mask_set = true;
}

/* Gives the caller its mask back, discarding instances that arrived after
 * loop 0 stopped reading (they would meet the default action). */
static void unmask_signals(struct eddy_group *g)
{
    if (!g->mask_set)
        return;
    for (int k = 0; k < 2; k++) {
        int s = group_signals[k];
        sigset_t pending, one;
        if (sigismember(&g->old_mask, s) || sigpending(&pending) < 0 ||
            !sigismember(&pending, s))
            continue;
        sigemptyset(&one);
        sigaddset(&one, s);
        struct timespec zero = {0, 0};
        while (sigtimedwait(&one, NULL, &zero) == s)
            ;
    }
    pthread_sigmask(SIG_SETMASK, &g->old_mask, NULL);
    g->mask_set = false;
}

static int join_all(struct eddy_group *g)
{
    int err = 0;
    for (unsigned i = 0; i < g->n; i++) {
        if (!g->m[i].started)
            continue;
        pthread_join(g->m[i].thread, NULL);
        g->m[i].started = false;
        if (g->m[i].rc < 0 && !err)
            err = g->m[i].rc;
    }
    unmask_signals(g);
    return err;
}

static struct eddy_group *group_new(const struct eddy_group_options *o)
{
    int allowed[CPU_SETSIZE];
    int count = allowed_cpus(allowed);
    unsigned n = o->loops ? o->loops : count > 0 ? (unsigned)count : 1;
    struct eddy_group *g = calloc(1, sizeof *g + n * sizeof g->m[0]);
    if (!g)
        return NULL;
    g->o = *o;
    g->n = n;
    if (o->loop)
        g->lo = *o->loop;
    else
        eddy_loop_options_init(&g->lo);
    pthread_mutex_init(&g->mu, NULL);
    pthread_cond_init(&g->cv, NULL);
    for (unsigned i = 0; i < n; i++) {
        struct member *m = &g->m[i];
        m->g = g;
        m->index = i;
        m->cpu = !o->pin ? -1 : o->cpus ? o->cpus[i] : count > 0 ? allowed[i % count] : -1;
    }
    return g;
}

static void group_free(struct eddy_group *g)
{
    pthread_mutex_destroy(&g->mu);
    pthread_cond_destroy(&g->cv);
    free(g);
}

int eddy_group_start(struct eddy_group **out, const struct eddy_group_options *o)
{
    if (!out || !o)
        return -EINVAL;
    struct eddy_group *g = group_new(o);
    if (!g)
        return -ENOMEM;
    if (o->signals)
        mask_signals(g);
    unsigned spawned = 0;
    int err = 0;
    while (spawned < g->n && (err = spawn(&g->m[spawned])) == 0)
        spawned++;
    pthread_mutex_lock(&g->mu);
    while (g->ready < spawned)
        pthread_cond_wait(&g->cv, &g->mu);
    if (err && !g->err)
        g->err = err;
    g->go = !g->err;
    g->decided = true;
    if (g->go)
        for (unsigned i = 0; i < g->n; i++)
            atomic_store(&g->m[i].live, true);
    pthread_cond_broadcast(&g->cv);
    err = g->err;
    pthread_mutex_unlock(&g->mu);
    if (err) {
        join_all(g);
        group_free(g);
        return err;
    }
    if (atomic_load(&g->stop_req))
        eddy_group_stop(g); /* asked for during a setup */
    *out = g;
    return 0;
}

int eddy_group_join(struct eddy_group *g)
{
    return join_all(g);
}

void eddy_group_destroy(struct eddy_group *g)
{
    if (!g)
        return;
    join_all(g); /* nothing left to join after eddy_group_join() */
    group_free(g);
}
