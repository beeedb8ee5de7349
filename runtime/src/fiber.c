/*
 * Fibers over the completion API: the registry (loop -> scheduler),
 * switching, the run queue, parking a fiber in a wait (fiber_wait), set-up,
 * spawn, exit, join and cancel.  How waits end (wake, interrupt,
 * deadlines) is in fiber_wait.c, the awaiting forms of eddy.h in
 * fiber_ops.c, events and channels in fiber_chan.c, stacks in
 * fiber_stack.c.
 *
 * Scheduling.  A fiber runs only inside a loop callback: the completion
 * callback of the op it waited for resumes it directly on the loop's
 * stack; fibers made ready otherwise (spawn, yield, events, cancel, timer
 * expiry) go on a run queue that the scheduler's posted op drains.  When a
 * fiber suspends it switches straight to the next ready fiber, not back
 * to the loop — at most BUDGET times per excursion, so a busy set of
 * fibers cannot starve I/O.  Each switch restarts the stall watchdog's
 * clock under the fiber's label (watch_switch).
 */
#define _GNU_SOURCE
#include "fiber_internal.h"

#include <assert.h>
#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <string.h>

#if EDDY_FIBER_ASAN
#include <sanitizer/common_interface_defs.h>
#endif

#define BUDGET 256 /* fiber-to-fiber switches before the loop gets a turn */

__thread struct eddy_fiber *eddy__fiber_cur;

/* ---- the registry: loop -> scheduler ---------------------------------- */

static pthread_mutex_t g_mu = PTHREAD_MUTEX_INITIALIZER;
static struct fiber_sched *g_scheds;
static atomic_uint g_gen;
static __thread struct {
    struct eddy_loop *loop;
    struct fiber_sched *s;
    unsigned gen;
} tls_cache;

static struct fiber_sched *sched_find(struct eddy_loop *loop)
{
    struct eddy_fiber *c = eddy__fiber_cur;
    if (c && c->s->loop == loop)
        return c->s;
    unsigned gen = atomic_load_explicit(&g_gen, memory_order_acquire);
    if (tls_cache.loop == loop && tls_cache.gen == gen)
        return tls_cache.s;
    pthread_mutex_lock(&g_mu);
    struct fiber_sched *s = g_scheds;
    while (s && s->loop != loop)
        s = s->next;
    pthread_mutex_unlock(&g_mu);
    tls_cache.loop = loop;
    tls_cache.s = s;
    tls_cache.gen = gen;
    return s;
}

/* ---- switching ---------------------------------------------------------- */

static void reap_dead(struct fiber_sched *s);

static inline void raw_switch(struct fiber_sched *s, struct fiber_ctx *a, struct fiber_ctx *b)
{
#if EDDY_FIBER_ASM
    if (!s->use_uc) {
        eddy__fiber_jump(&a->sp, b->sp);
        return;
    }
#else
    (void)s; /* always ucontext here */
#endif
    swapcontext(a->uc, b->uc);
}

static inline void asan_start(struct fiber_ctx *from, struct fiber_ctx *to, bool dying)
{
#if EDDY_FIBER_ASAN
    __sanitizer_start_switch_fiber(dying ? NULL : &from->fake, to->bottom, to->size);
#else
    (void)from, (void)to, (void)dying;
#endif
}

/* On arrival in self: tells ASan, and learns the loop stack's bounds when
 * the switch came from it. */
static inline void asan_finish(struct fiber_sched *s, struct fiber_ctx *self)
{
#if EDDY_FIBER_ASAN
    const void *bottom;
    size_t size;
    __sanitizer_finish_switch_fiber(self->fake, &bottom, &size);
    if (s->from_main) {
        s->main.bottom = bottom;
        s->main.size = size;
    }
#else
    (void)s, (void)self;
#endif
}

/* The stall watchdog's hook (see watchdog_fiber_switch in fiber_internal.h):
 * leaving the loop's stack, keep the callback it was timing, to give it
 * back on the way home. */
static void watch_switch(struct fiber_sched *s, struct eddy_fiber *from, struct eddy_fiber *to)
{
    void *fn = to ? (void *)to->fn : s->main_fn;
    const char *label = to ? (to->name[0] ? to->name : NULL) : s->main_label;
    watchdog_fiber_switch(s->loop, fn, label, from ? NULL : &s->main_fn,
                          from ? NULL : &s->main_label);
}

/* from/to NULL: the loop's stack. */
static inline __attribute__((always_inline)) void
switch_to(struct fiber_sched *s, struct eddy_fiber *from, struct eddy_fiber *to, bool dying)
{
    struct fiber_ctx *a = from ? &from->ctx : &s->main;
    struct fiber_ctx *b = to ? &to->ctx : &s->main;
    if (from)
        stack_check(from);
    s->current = to;
    eddy__fiber_cur = to;
    if (to)
        to->state = FS_RUNNING;
    s->from_main = !from;
    watch_switch(s, from, to);
    asan_start(a, b, dying);
    raw_switch(s, a, b);
    asan_finish(s, a);
    if (s->dead)
        reap_dead(s);
}

static void runq_push(struct fiber_sched *s, struct eddy_fiber *f)
{
    f->next = NULL;
    if (s->rq_tail)
        s->rq_tail->next = f;
    else
        s->rq_head = f;
    s->rq_tail = f;
}

static struct eddy_fiber *runq_pop(struct fiber_sched *s)
{
    struct eddy_fiber *f = s->rq_head;
    if (f) {
        s->rq_head = f->next;
        if (!s->rq_head)
            s->rq_tail = NULL;
    }
    return f;
}

/* The next context for a fiber that stops running: a ready fiber while the
 * budget lasts, else the loop (NULL). */
static struct eddy_fiber *pick_next(struct fiber_sched *s, struct eddy_fiber *self)
{
    struct eddy_fiber *h = s->rq_head;
    if (h && h != self && s->budget) {
        s->budget--;
        return runq_pop(s);
    }
    return NULL;
}

static void run_cb(struct eddy_op *op, int res);

/* On the loop's stack, after fibers ran: more are ready, so drain them on
 * the next iteration. */
static void main_after(struct fiber_sched *s)
{
    if (s->rq_head && !eddy_op_active(&s->run_op))
        eddy_post(s->loop, &s->run_op, run_cb);
}

void fiber_resume(struct fiber_sched *s, struct eddy_fiber *f)
{
    stack_overflow_arm(); /* this thread's alternate signal stack, once */
    s->budget = BUDGET;
    switch_to(s, NULL, f, false);
    main_after(s);
}

static void run_cb(struct eddy_op *op, int res)
{
    (void)res;
    struct fiber_sched *s = eddy_container_of(op, struct fiber_sched, run_op);
    struct eddy_fiber *f = runq_pop(s);
    if (f)
        fiber_resume(s, f);
}

void fiber_make_ready(struct fiber_sched *s, struct eddy_fiber *f)
{
    f->state = FS_READY;
    runq_push(s, f);
    if (!s->current)
        main_after(s);
}

/* Here, next to switch_to, so that the switch is inlined into it: every
 * call level between a wait and the switch is a return the CPU mispredicts
 * once the other stack runs (two more levels made eddy-fiber-bench's
 * spawn-and-join about 40 ns slower). */
int fiber_wait(struct fiber_sched *s, struct eddy_fiber *f, struct eddy_fiber_waiter *w,
               void (*cancel)(struct eddy_fiber_waiter *), int64_t dl)
{
    w->fiber_ = f;
    w->cancel_ = cancel;
    w->done_ = 0;
    w->why_ = 0;
    w->heap_ = 0;
    w->deadline_ = dl;
    f->wait = w;
    if (!(w->pad_[0] & W_EXEMPT)) {
        if (f->cancelled)
            fiber_interrupt(s, w, WHY_CANCEL);
        else if (dl && dl <= eddy_now_ns(s->loop))
            fiber_interrupt(s, w, WHY_TIME);
        else if (dl)
            fiber_deadline_add(s, w);
    }
    if (!w->done_) {
        f->state = FS_PARKED;
        switch_to(s, f, pick_next(s, f), false);
    }
    f->wait = NULL;
    int res = w->res_;
    if (w->why_ == WHY_TIME && res == -ECANCELED)
        res = -ETIME;
    return res;
}

/* ---- fibers ------------------------------------------------------------- */

static void release(struct fiber_sched *s, struct eddy_fiber *f)
{
    s->records--;
    stack_give(s->pool, f);
}

static void reap_dead(struct fiber_sched *s)
{
    struct eddy_fiber *d = s->dead;
    s->dead = NULL;
    if (d->detached)
        release(s, d);
}

static void fiber_exit(struct fiber_sched *s, struct eddy_fiber *f)
{
    f->state = FS_DONE;
    if (f->all_prev)
        f->all_prev->all_next = f->all_next;
    else
        s->all = f->all_next;
    if (f->all_next)
        f->all_next->all_prev = f->all_prev;
    if (f->joiner) {
        struct eddy_fiber_waiter *w = f->joiner;
        f->joiner = NULL;
        fiber_wake(w, 0, false);
    }
    if (--s->live == 0) {
        eddy_loop_unref(s->loop);
        fiber_timer_stop(s);
    }
    s->dead = f;
    switch_to(s, f, pick_next(s, f), true);
    __builtin_unreachable();
}

void eddy__fiber_main(void)
{
    struct eddy_fiber *f = eddy__fiber_cur;
    struct fiber_sched *s = f->s;
    asan_finish(s, &f->ctx);
    if (s->dead)
        reap_dead(s);
    f->ret = f->fn(f->arg);
    fiber_exit(s, f);
}

/* makecontext() hands a fiber its creator's FP control state; the assembly
 * switch starts every fiber with the ABI's defaults: do the same here. */
static void uc_entry(void)
{
#if defined(__x86_64__)
    unsigned mxcsr = 0x1f80;
    unsigned short cw = 0x037f;
    __asm__ volatile("ldmxcsr %0\n\tfldcw %1" : : "m"(mxcsr), "m"(cw));
#elif defined(__aarch64__)
    __asm__ volatile("msr fpcr, xzr");
#endif
    eddy__fiber_main();
}

int eddy_fiber_setup(struct eddy_loop *loop, const struct eddy_fiber_config *cfg)
{
    if (cfg && ((cfg->stack_size && (cfg->stack_size < EDDY_FIBER_STACK_MIN ||
                                     cfg->stack_size > EDDY_FIBER_STACK_MAX)) ||
                cfg->guard > EDDY_FIBER_GUARD_NONE))
        return -EINVAL;
    if (sched_find(loop))
        return -EEXIST;
    struct fiber_sched *s = eddy_loop_alloc(loop, sizeof *s);
    if (!s)
        return -ENOMEM;
    memset(s, 0, sizeof *s);
    s->loop = loop;
    int rc = stack_pool_new(loop, cfg, &s->pool);
    if (rc < 0) {
        eddy_loop_free(loop, s);
        return rc;
    }
    size_t pg = stack_page();
    s->stack_size = cfg && cfg->stack_size ? cfg->stack_size : EDDY_FIBER_STACK_DEFAULT;
    s->stack_size = (s->stack_size + pg - 1) & ~(pg - 1);
    s->use_uc = (cfg && cfg->ucontext) || !EDDY_FIBER_ASM;
    s->main.uc = &s->main_uc;
    s->run_op.label = "fiber scheduler";
    stack_overflow_install();
    pthread_mutex_lock(&g_mu);
    s->next = g_scheds;
    g_scheds = s;
    pthread_mutex_unlock(&g_mu);
    atomic_fetch_add(&g_gen, 1);
    eddy_loop_attach(loop);
    return 0;
}

int eddy_fiber_teardown(struct eddy_loop *loop)
{
    struct fiber_sched *s = sched_find(loop);
    if (!s)
        return -ENOENT;
    if (s->live || s->records || eddy_op_active(&s->run_op) || eddy_op_active(&s->tmr))
        return -EBUSY;
    pthread_mutex_lock(&g_mu);
    struct fiber_sched **pp = &g_scheds;
    while (*pp != s)
        pp = &(*pp)->next;
    *pp = s->next;
    pthread_mutex_unlock(&g_mu);
    atomic_fetch_add(&g_gen, 1);
    tls_cache.loop = NULL;
    fiber_stash_free(s);
    eddy_loop_free(loop, s->heap);
    stack_pool_free(s->pool);
    eddy_loop_free(loop, s);
    eddy_loop_detach(loop);
    return 0;
}

static void init_context(struct fiber_sched *s, struct eddy_fiber *f)
{
    char *top = f->top;
    if (s->use_uc) {
        ucontext_t *uc = (ucontext_t *)(void *)(((uintptr_t)top - sizeof(ucontext_t)) &
                                                ~(uintptr_t)15);
        getcontext(uc);
        uc->uc_link = NULL;
        uc->uc_stack.ss_sp = f->lo;
        uc->uc_stack.ss_size = (size_t)((char *)uc - f->lo);
        makecontext(uc, uc_entry, 0);
        f->ctx.uc = uc;
        top = (char *)uc;
    } else {
#if EDDY_FIBER_ASM && defined(__x86_64__)
        /* As if suspended in eddy__fiber_jump: control words (MXCSR 0x1f80,
         * x87 CW 0x37f), r15..rbx and rbp = 0, return into the start stub. */
        uint64_t *sp = (uint64_t *)(void *)top;
        *--sp = (uint64_t)(uintptr_t)eddy__fiber_start;
        for (int i = 0; i < 6; i++)
            *--sp = 0;
        *--sp = 0x1f80 | (0x037fULL << 32);
        f->ctx.sp = sp;
#elif EDDY_FIBER_ASM && defined(__aarch64__)
        uint64_t *sp = (uint64_t *)(void *)(top - 176);
        memset(sp, 0, 176);
        sp[11] = (uint64_t)(uintptr_t)eddy__fiber_start; /* x30 */
        f->ctx.sp = sp;
#endif
    }
#if EDDY_FIBER_ASAN
    f->ctx.bottom = f->lo;
    f->ctx.size = (size_t)(top - f->lo);
#endif
}

/* label (truncated to 31 bytes) and "fiber <label>" for the watchdog;
 * copied by hand: two snprintf calls per spawn showed in the profile of a
 * pipelined fiber route. */
static void set_label(struct eddy_fiber *f, const char *label)
{
    _Static_assert(sizeof f->name >= sizeof "fiber " - 1 + sizeof f->label, "name fits");
    size_t n = strnlen(label, sizeof f->label - 1);
    memcpy(f->label, label, n);
    f->label[n] = 0;
    memcpy(f->name, "fiber ", 6);
    memcpy(f->name + 6, f->label, n + 1);
}

int eddy_fiber_spawn(struct eddy_loop *loop, struct eddy_fiber **out, eddy_fiber_fn fn,
                     void *arg, const struct eddy_fiber_options *opts)
{
    if (out)
        *out = NULL;
    struct fiber_sched *s = sched_find(loop);
    if (!s)
        return -ENOENT;
    size_t size = s->stack_size;
    if (opts && opts->stack_size) {
        if (opts->stack_size < EDDY_FIBER_STACK_MIN || opts->stack_size > EDDY_FIBER_STACK_MAX)
            return -EINVAL;
        size_t pg = stack_page();
        size = (opts->stack_size + pg - 1) & ~(pg - 1);
    }
    if (!fn || (opts && (opts->flags & ~EDDY_FIBER_HELD)))
        return -EINVAL;
    if (fiber_heap_reserve(s, s->live + 1) < 0)
        return -ENOMEM;
    int err = 0;
    struct eddy_fiber *f = stack_take(s->pool, size, &err);
    if (!f)
        return err;
    f->s = s;
    f->fn = fn;
    f->arg = arg;
    f->data = NULL;
    f->detached = !out;
    if (opts && opts->label && opts->label[0])
        set_label(f, opts->label);
    init_context(s, f);
    if (s->live++ == 0)
        eddy_loop_ref(loop);
    f->all_prev = NULL;
    f->all_next = s->all;
    if (s->all)
        s->all->all_prev = f;
    s->all = f;
    s->records++;
    if (opts && (opts->flags & EDDY_FIBER_HELD))
        f->state = FS_HELD;
    else
        fiber_make_ready(s, f);
    if (out)
        *out = f;
    return 0;
}

int eddy_fiber_start(struct eddy_fiber *f)
{
    if (f->state != FS_HELD)
        return -EINVAL;
    struct fiber_sched *s = f->s;
    if (s->current || s->in_hook)
        fiber_make_ready(s, f);
    else
        fiber_resume(s, f);
    return 0;
}

int eddy_fiber_is_setup(struct eddy_loop *loop)
{
    return sched_find(loop) != NULL;
}

struct eddy_fiber *eddy_fiber_self(void)
{
    return eddy__fiber_cur;
}

void eddy_fiber_set_data(struct eddy_fiber *f, void *data)
{
    f->data = data;
}

void *eddy_fiber_data(const struct eddy_fiber *f)
{
    return f->data;
}

const char *eddy_fiber_label(const struct eddy_fiber *f)
{
    return f->label;
}

struct eddy_loop *eddy_fiber_loop(const struct eddy_fiber *f)
{
    return f->s->loop;
}

int eddy_fiber_done(const struct eddy_fiber *f)
{
    return f->state == FS_DONE;
}

int eddy_fiber_cancelled(void)
{
    struct eddy_fiber *f = eddy__fiber_cur;
    return f && f->cancelled;
}

int eddy_fiber_yield(void)
{
    struct eddy_fiber *f = eddy__fiber_cur;
    if (!f)
        return -EPERM;
    if (f->cancelled)
        return -ECANCELED;
    struct fiber_sched *s = f->s;
    f->state = FS_READY;
    runq_push(s, f);
    struct eddy_fiber *next = pick_next(s, f);
    switch_to(s, f, next, false);
    return 0;
}

static void join_cancel(struct eddy_fiber_waiter *w)
{
    struct eddy_fiber *t = w->data;
    if (t->joiner == w)
        t->joiner = NULL;
    fiber_wake(w, -ECANCELED, false);
}

int eddy_fiber_join(struct eddy_fiber *t, void **ret)
{
    struct eddy_fiber *f = eddy__fiber_cur;
    if (!f)
        return -EPERM;
    if (t == f)
        return -EDEADLK;
    if (t->detached || t->joiner || t->s != f->s)
        return -EINVAL;
    struct fiber_sched *s = f->s;
    if (t->state != FS_DONE) {
        struct eddy_fiber_waiter w;
        memset(&w, 0, sizeof w);
        w.data = t;
        t->joiner = &w;
        int rc = fiber_wait(s, f, &w, join_cancel, fiber_take_deadline(f));
        if (rc < 0)
            return rc;
    } else {
        fiber_take_deadline(f);
    }
    if (ret)
        *ret = t->ret;
    release(s, t);
    return 0;
}

void eddy_fiber_detach(struct eddy_fiber *f)
{
    assert(!f->detached && !f->joiner);
    if (f->state == FS_DONE)
        release(f->s, f);
    else
        f->detached = 1;
}

int eddy_fiber_cancel(struct eddy_fiber *f)
{
    if (f->state == FS_DONE)
        return -EALREADY;
    f->cancelled = 1;
    if (f->wait)
        fiber_interrupt(f->s, f->wait, WHY_CANCEL);
    else if (f->state == FS_HELD)
        fiber_make_ready(f->s, f); /* it runs, to unwind: nobody may start it */
    return 0;
}

int eddy_fiber_cancel_all(struct eddy_loop *loop)
{
    struct fiber_sched *s = sched_find(loop);
    if (!s)
        return -ENOENT;
    int n = 0;
    /* A cancel hook never ends a fiber synchronously (it only wakes it), so
     * the list holds still while we walk it. */
    for (struct eddy_fiber *f = s->all; f; f = f->all_next) {
        if (!f->cancelled) {
            eddy_fiber_cancel(f);
            n++;
        }
    }
    return n;
}
