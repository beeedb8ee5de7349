/*
 * The stall watchdog: a thread that looks at the callback the loop is
 * running and reports one that has held the loop past the threshold while
 * it is still blocked; the loop thread reports the total once it returns.
 * The loop's cost is a few relaxed atomic stores per callback and no clock
 * read (nothing at all when the watchdog is off): the watchdog thread
 * samples a sequence number every quarter threshold (1..50 ms) and times
 * a callback from the first tick that sees it running.  So a stall is
 * reported once it has surely lasted the threshold (up to a tick late), and
 * the total is an upper bound, at most a tick too long.
 */
#define _GNU_SOURCE
#include "internal.h"
#include "fiber_internal.h"

#include <dlfcn.h>
#include <errno.h>
#include <stdio.h>
#include <time.h>

/* "handler (apps/demo)" via the label, or dladdr, or the address. */
static void describe(void *fn, const char *label, char *out, size_t n)
{
    if (label) {
        snprintf(out, n, "%s", label);
        return;
    }
    Dl_info info;
    if (fn && dladdr(fn, &info) && info.dli_sname)
        snprintf(out, n, "%s", info.dli_sname);
    else if (fn && dladdr(fn, &info) && info.dli_fname)
        snprintf(out, n, "%p (in %s)", fn, info.dli_fname);
    else
        snprintf(out, n, "%p", fn);
}

static void *watch(void *arg)
{
    struct eddy_loop *loop = arg;
    struct watchdog *wd = &loop->wd;
    int64_t threshold = (int64_t)wd->stall_ms * 1000000;
    int64_t tick = threshold / 4;
    if (tick < 1000000)
        tick = 1000000;
    if (tick > 50000000)
        tick = 50000000;
    /* As when the thread was created: nothing ran yet (the thread itself
     * may first run after the loop has entered a callback). */
    uint64_t last_seq = 0;
    int64_t last_tick = wd->created_ns;
    pthread_mutex_lock(&wd->mu);
    while (!wd->quit) {
        struct timespec ts;
        int64_t t = mono_ns() + tick;
        ts.tv_sec = t / 1000000000;
        ts.tv_nsec = t % 1000000000;
        pthread_cond_timedwait(&wd->cv, &wd->mu, &ts);
        if (wd->quit)
            break;
        int64_t now = mono_ns();
        uint64_t seq = atomic_load(&wd->seq);
        if ((seq & 1) && seq != last_seq) {
            /* First sighting: it began after the previous tick. */
            atomic_store_explicit(&wd->seen_after, last_tick, memory_order_relaxed);
            atomic_store_explicit(&wd->seen_at, now, memory_order_relaxed);
            atomic_store_explicit(&wd->seen_seq, seq, memory_order_release);
        } else if ((seq & 1) && atomic_load(&wd->reported) != seq &&
                   atomic_load(&wd->seen_seq) == seq &&
                   now - atomic_load(&wd->seen_at) >= threshold) {
            void *fn = atomic_load(&wd->fn);
            const char *label = atomic_load(&wd->label);
            if (atomic_load(&wd->seq) == seq) {
                atomic_store(&wd->reported, seq);
                char name[256];
                describe(fn, label, name, sizeof name);
                eddy_loop_log(loop, EDDY_LOG_WARN,
                              "loop stalled: callback %s has blocked the loop for %lld ms "
                              "(threshold %u ms) and is still running",
                              name, (long long)((now - atomic_load(&wd->seen_after)) / 1000000),
                              wd->stall_ms);
            }
        }
        last_seq = seq;
        last_tick = now;
    }
    pthread_mutex_unlock(&wd->mu);
    return NULL;
}

int watchdog_start(struct eddy_loop *loop, unsigned stall_ms)
{
    struct watchdog *wd = &loop->wd;
    wd->stall_ms = stall_ms;
    wd->created_ns = mono_ns();
    pthread_mutex_init(&wd->mu, NULL);
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&wd->cv, &ca);
    pthread_condattr_destroy(&ca);
    int rc = loop_thread_start(&wd->thread, watch, loop);
    if (rc < 0) {
        pthread_mutex_destroy(&wd->mu);
        pthread_cond_destroy(&wd->cv);
        return rc;
    }
    wd->running = true;
    return 0;
}

void watchdog_stop(struct eddy_loop *loop)
{
    struct watchdog *wd = &loop->wd;
    if (!wd->running)
        return;
    loop_threads_stop(&wd->mu, &wd->cv, &wd->quit, &wd->thread, 1);
    pthread_mutex_destroy(&wd->mu);
    pthread_cond_destroy(&wd->cv);
    wd->running = false;
}

void watchdog_enter(struct eddy_loop *loop, struct eddy_op *op)
{
    struct watchdog *wd = &loop->wd;
    atomic_store_explicit(&wd->fn, (void *)op->cb, memory_order_relaxed);
    atomic_store_explicit(&wd->label, op->label, memory_order_relaxed);
    atomic_fetch_add_explicit(&wd->seq, 1, memory_order_release); /* odd: running */
}

void watchdog_leave(struct eddy_loop *loop)
{
    struct watchdog *wd = &loop->wd;
    uint64_t seq = atomic_fetch_add_explicit(&wd->seq, 1, memory_order_release);
    if (atomic_load_explicit(&wd->seen_seq, memory_order_acquire) != seq)
        return; /* no tick saw it running: shorter than a tick */
    int64_t now = mono_ns();
    bool seen = atomic_load(&wd->reported) == seq;
    if (!seen && now - atomic_load_explicit(&wd->seen_at, memory_order_relaxed) <
                     (int64_t)wd->stall_ms * 1000000)
        return;
    int64_t held = now - atomic_load_explicit(&wd->seen_after, memory_order_relaxed);
    loop->st.stalls++;
    char name[256];
    describe(atomic_load(&wd->fn), atomic_load(&wd->label), name, sizeof name);
    eddy_loop_log(loop, EDDY_LOG_WARN,
                  "loop stalled: callback %s blocked the loop for %lld ms "
                  "(threshold %u ms)%s",
                  name, (long long)(held / 1000000), wd->stall_ms,
                  seen ? "; it has returned" : "");
}

/* fiber.c: a fiber switch inside a callback is timed and named as a
 * callback of its own (the fiber's label), so a stall names the fiber. */
void watchdog_fiber_switch(struct eddy_loop *loop, void *fn, const char *label,
                           void **old_fn, const char **old_label)
{
    struct watchdog *wd = &loop->wd;
    if (!wd->running)
        return;
    if (old_fn)
        *old_fn = atomic_load_explicit(&wd->fn, memory_order_relaxed);
    if (old_label)
        *old_label = atomic_load_explicit(&wd->label, memory_order_relaxed);
    watchdog_leave(loop);
    struct eddy_op op = {.cb = (eddy_cb)fn, .label = label};
    watchdog_enter(loop, &op);
}
