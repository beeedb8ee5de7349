/*
 * Fibers over the completion API: the scheduler, waits, deadlines and the
 * awaiting forms of eddy.h's operations.  Only eddy.h's public functions
 * are used underneath, so fibers run on every backend.
 *
 * Scheduling.  A fiber runs only inside a loop callback: the completion
 * callback of the op it waited for resumes it directly on the loop's
 * stack; fibers made ready otherwise (spawn, yield, events, cancel, timer
 * expiry) go on a run queue that the scheduler's posted op drains.  When a
 * fiber suspends it switches straight to the next ready fiber, not back
 * to the loop — at most BUDGET times per excursion, so a busy set of
 * fibers cannot starve I/O.  Each switch restarts the stall watchdog's
 * clock under the fiber's label.
 *
 * Deadlines and sleeps are one min-heap of waits per loop, served by one
 * kernel timer (so 100,000 sleeping fibers cost one timer, not 100,000).
 */
#define _GNU_SOURCE
#include "fiber_internal.h"

#include <assert.h>
#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <ucontext.h>
#include <unistd.h>

#if EDDY_FIBER_ASAN
#include <sanitizer/common_interface_defs.h>
#endif

#define BUDGET 256 /* fiber-to-fiber switches before the loop gets a turn */

enum { WHY_CANCEL = 1, WHY_TIME = 2 };
enum { W_EXEMPT = 1 }; /* waiter pad_[0]: not interrupted (close, shutdown) */

struct stash {
    struct stash *next;
    int lfd, fd;
};

struct fiber_sched {
    struct eddy_loop *loop;
    struct fiber_sched *next;       /* the registry */
    struct stack_pool *pool;
    size_t stack_size;
    int use_uc;
    struct fiber_ctx main;          /* the loop's own stack */
    ucontext_t main_uc;
    void *main_fn;                  /* the callback a switch left (watchdog) */
    const char *main_label;
    struct eddy_fiber *current;
    struct eddy_fiber *dead;        /* returned: release after the switch */
    bool from_main;
    struct eddy_fiber *rq_head, *rq_tail;
    struct eddy_fiber *all;         /* live fibers, for eddy_fiber_cancel_all */
    unsigned budget;
    unsigned live, records;
    unsigned in_hook;
    struct eddy_op run_op;
    /* deadlines */
    struct eddy_fiber_waiter **heap;
    unsigned nheap, capheap;
    struct eddy_op tmr;
    int64_t tmr_at;
    bool tmr_cancel;
    struct stash *stash;
};

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

/* from/to NULL: the loop's stack. */
static void switch_to(struct fiber_sched *s, struct eddy_fiber *from, struct eddy_fiber *to,
                      bool dying)
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
    if (to)
        watchdog_fiber_switch(s->loop, (void *)to->fn, to->name[0] ? to->name : NULL,
                              from ? NULL : &s->main_fn, from ? NULL : &s->main_label);
    else
        watchdog_fiber_switch(s->loop, s->main_fn, s->main_label, NULL, NULL);
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

static void resume_from_main(struct fiber_sched *s, struct eddy_fiber *f)
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
        resume_from_main(s, f);
}

static void make_ready(struct fiber_sched *s, struct eddy_fiber *f)
{
    f->state = FS_READY;
    runq_push(s, f);
    if (!s->current)
        main_after(s);
}

/* ---- the deadline heap -------------------------------------------------- */

static void heap_swap(struct fiber_sched *s, unsigned i, unsigned j)
{
    struct eddy_fiber_waiter *t = s->heap[i];
    s->heap[i] = s->heap[j];
    s->heap[j] = t;
    s->heap[i]->heap_ = i + 1;
    s->heap[j]->heap_ = j + 1;
}

static void heap_up(struct fiber_sched *s, unsigned i)
{
    while (i > 0) {
        unsigned p = (i - 1) / 2;
        if (s->heap[p]->deadline_ <= s->heap[i]->deadline_)
            break;
        heap_swap(s, i, p);
        i = p;
    }
}

static void heap_down(struct fiber_sched *s, unsigned i)
{
    for (;;) {
        unsigned l = 2 * i + 1, r = l + 1, m = i;
        if (l < s->nheap && s->heap[l]->deadline_ < s->heap[m]->deadline_)
            m = l;
        if (r < s->nheap && s->heap[r]->deadline_ < s->heap[m]->deadline_)
            m = r;
        if (m == i)
            return;
        heap_swap(s, i, m);
        i = m;
    }
}

static void heap_insert(struct fiber_sched *s, struct eddy_fiber_waiter *w)
{
    assert(s->nheap < s->capheap); /* reserved at spawn: one wait per fiber */
    s->heap[s->nheap] = w;
    w->heap_ = ++s->nheap;
    heap_up(s, s->nheap - 1);
}

static void heap_remove(struct fiber_sched *s, struct eddy_fiber_waiter *w)
{
    unsigned i = w->heap_ - 1;
    w->heap_ = 0;
    s->nheap--;
    if (i == s->nheap)
        return;
    s->heap[i] = s->heap[s->nheap];
    s->heap[i]->heap_ = i + 1;
    heap_up(s, i);
    heap_down(s, s->heap[i]->heap_ - 1);
}

static void tmr_cb(struct eddy_op *op, int res);

/* Keeps the one timer armed for the earliest deadline.  A later deadline
 * than the armed one waits for it to fire (then re-arms); an earlier one
 * cancels and re-arms in the final callback.  With no deadline left the
 * timer may stay armed: live fibers keep the loop anyway, and the last one
 * to end cancels it. */
static void arm(struct fiber_sched *s)
{
    if (!s->nheap)
        return;
    int64_t want = s->heap[0]->deadline_;
    if (eddy_op_active(&s->tmr)) {
        if (want < s->tmr_at && !s->tmr_cancel) {
            s->tmr_cancel = true;
            eddy_cancel(s->loop, &s->tmr);
        }
        return;
    }
    s->tmr.label = "fiber deadlines";
    if (eddy_timer_at(s->loop, &s->tmr, want, tmr_cb) == 0)
        s->tmr_at = want;
    else
        eddy_loop_log(s->loop, EDDY_LOG_ERROR, "fibers: cannot arm the deadline timer");
}

/* ---- waits -------------------------------------------------------------- */

static void wake_(struct eddy_fiber_waiter *w, int res, bool direct)
{
    if (w->done_)
        return;
    w->done_ = 1;
    w->res_ = res;
    struct eddy_fiber *f = w->fiber_;
    struct fiber_sched *s = f->s;
    if (w->heap_)
        heap_remove(s, w);
    f->wait = NULL;
    if (f == s->current)
        return; /* woken before it suspended: it will not */
    if (direct && !s->current && !s->in_hook)
        resume_from_main(s, f);
    else
        make_ready(s, f);
}

static void interrupt(struct fiber_sched *s, struct eddy_fiber_waiter *w, int why)
{
    if (w->done_ || w->why_ || (w->pad_[0] & W_EXEMPT))
        return;
    w->why_ = (unsigned char)why;
    if (w->cancel_) {
        s->in_hook++;
        w->cancel_(w);
        s->in_hook--;
    } else {
        wake_(w, -ECANCELED, false);
    }
}

static void tmr_cb(struct eddy_op *op, int res)
{
    (void)res;
    struct fiber_sched *s = eddy_container_of(op, struct fiber_sched, tmr);
    s->tmr_at = 0;
    s->tmr_cancel = false;
    int64_t now = eddy_update_time(s->loop);
    while (s->nheap && s->heap[0]->deadline_ <= now) {
        struct eddy_fiber_waiter *w = s->heap[0];
        heap_remove(s, w);
        if (w->sleep_end_ && w->sleep_end_ <= w->deadline_)
            wake_(w, 0, false);
        else
            interrupt(s, w, WHY_TIME);
    }
    if (s->live)
        arm(s);
}

/* The deadline of the next wait: the block's or the next call's, the
 * earlier; the call's is used up. */
static int64_t take_deadline(struct eddy_fiber *f)
{
    int64_t dl = f->deadline;
    if (f->call_deadline && (!dl || f->call_deadline < dl))
        dl = f->call_deadline;
    f->call_deadline = 0;
    return dl;
}

static int why_err(int why)
{
    return why == WHY_TIME ? -ETIME : -ECANCELED;
}

static int wait_(struct fiber_sched *s, struct eddy_fiber *f, struct eddy_fiber_waiter *w,
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
            interrupt(s, w, WHY_CANCEL);
        else if (dl && dl <= eddy_now_ns(s->loop))
            interrupt(s, w, WHY_TIME);
        else if (dl) {
            heap_insert(s, w);
            arm(s);
        }
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

int eddy_fiber_suspend(struct eddy_fiber_waiter *w, void (*cancel)(struct eddy_fiber_waiter *w))
{
    struct eddy_fiber *f = eddy__fiber_cur;
    if (!f)
        return -EPERM;
    w->pad_[0] = 0;
    w->sleep_end_ = 0;
    return wait_(f->s, f, w, cancel, take_deadline(f));
}

void eddy_fiber_wake(struct eddy_fiber_waiter *w, int res)
{
    wake_(w, res, true);
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
        wake_(w, 0, false);
    }
    if (--s->live == 0) {
        eddy_loop_unref(s->loop);
        if (eddy_op_active(&s->tmr) && !s->tmr_cancel) {
            s->tmr_cancel = true;
            eddy_cancel(s->loop, &s->tmr);
        }
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
    while (s->stash) {
        struct stash *st = s->stash;
        s->stash = st->next;
        close(st->fd);
        eddy_loop_free(loop, st);
    }
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
    if (!fn)
        return -EINVAL;
    if (s->live + 1 > s->capheap) {
        unsigned cap = s->capheap ? s->capheap * 2 : 64;
        void *h = eddy_loop_realloc(loop, s->heap, cap * sizeof *s->heap);
        if (!h)
            return -ENOMEM;
        s->heap = h;
        s->capheap = cap;
    }
    int err = 0;
    struct eddy_fiber *f = stack_take(s->pool, size, &err);
    if (!f)
        return err;
    f->s = s;
    f->fn = fn;
    f->arg = arg;
    f->detached = !out;
    if (opts && opts->label && opts->label[0]) {
        snprintf(f->label, sizeof f->label, "%s", opts->label);
        snprintf(f->name, sizeof f->name, "fiber %s", f->label);
    }
    init_context(s, f);
    if (s->live++ == 0)
        eddy_loop_ref(loop);
    f->all_prev = NULL;
    f->all_next = s->all;
    if (s->all)
        s->all->all_prev = f;
    s->all = f;
    s->records++;
    make_ready(s, f);
    if (out)
        *out = f;
    return 0;
}

struct eddy_fiber *eddy_fiber_self(void)
{
    return eddy__fiber_cur;
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

static void sleep_cancel(struct eddy_fiber_waiter *w)
{
    wake_(w, -ECANCELED, false);
}

int eddy_fiber_sleep_until(int64_t at)
{
    struct eddy_fiber *f = eddy__fiber_cur;
    if (!f)
        return -EPERM;
    struct fiber_sched *s = f->s;
    int64_t dl = take_deadline(f);
    if (!f->cancelled && at <= eddy_update_time(s->loop) && (!dl || at <= dl))
        return eddy_fiber_yield();
    struct eddy_fiber_waiter w;
    memset(&w, 0, sizeof w);
    w.sleep_end_ = at;
    if (!dl || at < dl)
        dl = at;
    return wait_(s, f, &w, sleep_cancel, dl);
}

int eddy_fiber_sleep(uint64_t ms)
{
    struct eddy_fiber *f = eddy__fiber_cur;
    if (!f)
        return -EPERM;
    return eddy_fiber_sleep_until(eddy_update_time(f->s->loop) + (int64_t)ms * 1000000);
}

static void join_cancel(struct eddy_fiber_waiter *w)
{
    struct eddy_fiber *t = w->data;
    if (t->joiner == w)
        t->joiner = NULL;
    wake_(w, -ECANCELED, false);
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
        int rc = wait_(s, f, &w, join_cancel, take_deadline(f));
        if (rc < 0)
            return rc;
    } else {
        take_deadline(f);
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
        interrupt(f->s, f->wait, WHY_CANCEL);
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

/* ---- deadlines ---------------------------------------------------------- */

int eddy_fiber_timeout(unsigned ms)
{
    struct eddy_fiber *f = eddy__fiber_cur;
    if (!f)
        return -EPERM;
    f->call_deadline = eddy_update_time(f->s->loop) + (int64_t)ms * 1000000;
    return 0;
}

int eddy_fiber_deadline_push(unsigned ms, int64_t *saved)
{
    struct eddy_fiber *f = eddy__fiber_cur;
    if (!f)
        return -EPERM;
    *saved = f->deadline;
    int64_t d = eddy_update_time(f->s->loop) + (int64_t)ms * 1000000;
    if (!f->deadline || d < f->deadline)
        f->deadline = d;
    return 0;
}

void eddy_fiber_deadline_pop(int64_t saved)
{
    struct eddy_fiber *f = eddy__fiber_cur;
    if (f)
        f->deadline = saved;
}

/* ---- waiting for operations --------------------------------------------- */

struct group {
    struct eddy_fiber_waiter w;
    struct eddy_fiber_op *const *ops;
    struct eddy_loop *loop;
    unsigned n, pending;
    int first;
    bool any;
};

static void group_cancel_rest(struct group *g)
{
    for (unsigned i = 0; i < g->n; i++)
        if (!g->ops[i]->done)
            eddy_cancel(g->loop, &g->ops[i]->op);
}

static void group_cancel(struct eddy_fiber_waiter *w)
{
    group_cancel_rest(eddy_container_of(w, struct group, w));
}

void eddy_fiber_op_cb(struct eddy_op *op, int res)
{
    struct eddy_fiber_op *fo = eddy_container_of(op, struct eddy_fiber_op, op);
    assert(!(op->flags & EDDY_OP_MORE)); /* single-shot operations only */
    fo->res = res;
    fo->done = 1;
    struct group *g = fo->group_;
    if (!g)
        return; /* nobody waits yet: the await will find it done */
    fo->group_ = NULL;
    if (g->any && g->first < 0 && !g->w.why_) {
        for (unsigned i = 0; i < g->n; i++)
            if (g->ops[i] == fo)
                g->first = (int)i;
        group_cancel_rest(g);
    }
    if (--g->pending == 0)
        wake_(&g->w, 0, true);
}

static int await_ops(struct eddy_fiber_op *const *fos, unsigned n, bool any, bool exempt)
{
    struct eddy_fiber *f = eddy__fiber_cur;
    if (!f)
        return -EPERM;
    if (!n)
        return -EINVAL;
    struct fiber_sched *s = f->s;
    struct group g;
    memset(&g, 0, sizeof g);
    g.ops = fos;
    g.n = n;
    g.loop = s->loop;
    g.first = -1;
    g.any = any;
    for (unsigned i = 0; i < n; i++)
        if (!fos[i]->done && !eddy_op_active(&fos[i]->op))
            return -EINVAL; /* never started: nothing would wake us */
    for (unsigned i = 0; i < n; i++) {
        if (fos[i]->done) {
            if (any && g.first < 0)
                g.first = (int)i;
        } else {
            fos[i]->group_ = &g;
            g.pending++;
        }
    }
    int64_t dl = take_deadline(f);
    if (!g.pending)
        return any ? g.first : 0;
    if (any && g.first >= 0)
        group_cancel_rest(&g);
    if (exempt)
        g.w.pad_[0] = W_EXEMPT;
    wait_(s, f, &g.w, group_cancel, exempt ? 0 : dl);
    for (unsigned i = 0; i < n; i++)
        fos[i]->group_ = NULL;
    if (any)
        return g.first >= 0 ? g.first : why_err(g.w.why_);
    return g.w.why_ ? why_err(g.w.why_) : 0;
}

int eddy_fiber_await_all(struct eddy_fiber_op *const *fos, unsigned n)
{
    return await_ops(fos, n, false, false);
}

int eddy_fiber_await_any(struct eddy_fiber_op *const *fos, unsigned n)
{
    return await_ops(fos, n, true, false);
}

static int await_one(struct eddy_fiber_op *fo, bool exempt)
{
    struct eddy_fiber_op *one[1] = {fo};
    int rc = await_ops(one, 1, false, exempt);
    if (rc == -EPERM || rc == -EINVAL)
        return rc;
    if (rc < 0 && fo->res == -ECANCELED)
        return rc;
    return fo->res;
}

int eddy_fiber_await(struct eddy_fiber_op *fo)
{
    return await_one(fo, false);
}

/* ---- awaiting forms of eddy.h ------------------------------------------- */

/* Before starting: a cancelled fiber or a passed deadline starts nothing. */
static int pre(struct eddy_fiber *f)
{
    if (f->cancelled) {
        f->call_deadline = 0;
        return -ECANCELED;
    }
    int64_t dl = f->deadline;
    if (f->call_deadline && (!dl || f->call_deadline < dl))
        dl = f->call_deadline;
    if (dl && dl <= eddy_update_time(f->s->loop)) {
        f->call_deadline = 0;
        return -ETIME;
    }
    return 0;
}

static int started(struct eddy_fiber *f, struct eddy_fiber_op *fo, int rc)
{
    if (rc < 0) {
        f->call_deadline = 0;
        return rc;
    }
    return await_one(fo, false);
}

#define FIBER_PROLOGUE(f)                                                      \
    struct eddy_fiber *f = eddy__fiber_cur;                                    \
    if (!f)                                                                    \
        return -EPERM;                                                         \
    int rc_ = pre(f);                                                          \
    if (rc_ < 0)                                                               \
        return rc_;                                                            \
    struct eddy_fiber_op fo;                                                   \
    memset(&fo, 0, sizeof fo)

int eddy_fiber_connect(int fd, const struct sockaddr *addr, socklen_t len)
{
    FIBER_PROLOGUE(f);
    return started(f, &fo, eddy_connect(f->s->loop, &fo.op, fd, addr, len, eddy_fiber_op_cb));
}

int eddy_fiber_recv(int fd, void *buf, size_t len, unsigned msgflags)
{
    FIBER_PROLOGUE(f);
    return started(f, &fo,
                   eddy_recv(f->s->loop, &fo.op, fd, buf, len, msgflags, eddy_fiber_op_cb));
}

int eddy_fiber_send(int fd, const void *buf, size_t len, unsigned msgflags)
{
    FIBER_PROLOGUE(f);
    return started(f, &fo,
                   eddy_send(f->s->loop, &fo.op, fd, buf, len, msgflags, eddy_fiber_op_cb));
}

int eddy_fiber_send_zc(int fd, const void *buf, size_t len, unsigned msgflags)
{
    FIBER_PROLOGUE(f);
    return started(f, &fo,
                   eddy_send_zc(f->s->loop, &fo.op, fd, buf, len, msgflags, eddy_fiber_op_cb));
}

int eddy_fiber_sendmsg(int fd, struct msghdr *msg, unsigned msgflags)
{
    FIBER_PROLOGUE(f);
    return started(f, &fo,
                   eddy_sendmsg(f->s->loop, &fo.op, fd, msg, msgflags, eddy_fiber_op_cb));
}

int eddy_fiber_read(int fd, void *buf, unsigned len, uint64_t offset)
{
    FIBER_PROLOGUE(f);
    return started(f, &fo,
                   eddy_read(f->s->loop, &fo.op, fd, buf, len, offset, eddy_fiber_op_cb));
}

int eddy_fiber_write(int fd, const void *buf, unsigned len, uint64_t offset)
{
    FIBER_PROLOGUE(f);
    return started(f, &fo,
                   eddy_write(f->s->loop, &fo.op, fd, buf, len, offset, eddy_fiber_op_cb));
}

int eddy_fiber_poll(int fd, unsigned events)
{
    FIBER_PROLOGUE(f);
    return started(f, &fo, eddy_poll(f->s->loop, &fo.op, fd, events, eddy_fiber_op_cb));
}

/* close and shutdown: cleanup, so neither cancellation nor deadlines stop them. */
int eddy_fiber_close(int fd)
{
    struct eddy_fiber *f = eddy__fiber_cur;
    if (!f)
        return -EPERM;
    struct eddy_fiber_op fo;
    memset(&fo, 0, sizeof fo);
    f->call_deadline = 0;
    int rc = eddy_close(f->s->loop, &fo.op, fd, eddy_fiber_op_cb);
    return rc < 0 ? rc : await_one(&fo, true);
}

int eddy_fiber_shutdown(int fd, int how)
{
    struct eddy_fiber *f = eddy__fiber_cur;
    if (!f)
        return -EPERM;
    struct eddy_fiber_op fo;
    memset(&fo, 0, sizeof fo);
    f->call_deadline = 0;
    int rc = eddy_shutdown(f->s->loop, &fo.op, fd, how, eddy_fiber_op_cb);
    return rc < 0 ? rc : await_one(&fo, true);
}

struct once_op {
    struct eddy_fiber_op fo;
    void *buf;
    uint16_t bid;
};

static void once_cb(struct eddy_op *op, int res)
{
    struct once_op *o = eddy_container_of(op, struct once_op, fo.op);
    if (op->flags & EDDY_OP_BUFFER) {
        o->buf = op->buf;
        o->bid = op->bid;
    }
    eddy_fiber_op_cb(op, res);
}

int eddy_fiber_recv_once(int fd, struct eddy_bufpool *pool, void **buf, uint16_t *bid)
{
    struct eddy_fiber *f = eddy__fiber_cur;
    if (!f)
        return -EPERM;
    int rc = pre(f);
    if (rc < 0)
        return rc;
    struct once_op o;
    memset(&o, 0, sizeof o);
    rc = started(f, &o.fo, eddy_recv_once(f->s->loop, &o.fo.op, fd, pool, once_cb));
    if (o.buf) {
        if (rc > 0) {
            *buf = o.buf;
            *bid = o.bid;
        } else {
            eddy_bufpool_put(pool, o.bid); /* cannot happen: a buffer comes with bytes */
        }
    }
    return rc;
}

struct work_op {
    struct eddy_fiber_op fo;
    int (*fn)(void *);
    void *arg;
};

static int work_tramp(struct eddy_op *op)
{
    struct work_op *w = eddy_container_of(op, struct work_op, fo.op);
    return w->fn(w->arg);
}

int eddy_fiber_work(int (*fn)(void *arg), void *arg)
{
    struct eddy_fiber *f = eddy__fiber_cur;
    if (!f)
        return -EPERM;
    int rc = pre(f);
    if (rc < 0)
        return rc;
    struct work_op w;
    memset(&w, 0, sizeof w);
    w.fn = fn;
    w.arg = arg;
    return started(f, &w.fo, eddy_work(f->s->loop, &w.fo.op, work_tramp, eddy_fiber_op_cb));
}

/* Accept: eddy_accept() goes on accepting until cancelled; the first
 * descriptor is the answer, the ones that come before the cancel lands are
 * kept for the next call on the same listener. */
struct accept_op {
    struct eddy_fiber_op fo;
    struct fiber_sched *s;
    int lfd;
    int got;
    bool have;
};

static void stash_push(struct fiber_sched *s, int lfd, int fd)
{
    struct stash *st = eddy_loop_alloc(s->loop, sizeof *st);
    if (!st) {
        close(fd); /* out of memory: the connection is refused late */
        return;
    }
    st->lfd = lfd;
    st->fd = fd;
    st->next = NULL;
    struct stash **pp = &s->stash;
    while (*pp)
        pp = &(*pp)->next;
    *pp = st;
}

static int stash_take(struct fiber_sched *s, int lfd)
{
    for (struct stash **pp = &s->stash; *pp; pp = &(*pp)->next) {
        if ((*pp)->lfd == lfd) {
            struct stash *st = *pp;
            int fd = st->fd;
            *pp = st->next;
            eddy_loop_free(s->loop, st);
            return fd;
        }
    }
    return -1;
}

static void accept_cb(struct eddy_op *op, int res)
{
    struct accept_op *a = eddy_container_of(op, struct accept_op, fo.op);
    if (op->flags & EDDY_OP_MORE) {
        if (!a->have) {
            a->have = true;
            a->got = res;
            eddy_cancel(a->s->loop, op);
        } else if (res >= 0) {
            stash_push(a->s, a->lfd, res);
        }
        return;
    }
    eddy_fiber_op_cb(op, res);
}

int eddy_fiber_accept(int fd, struct sockaddr *addr, socklen_t *addrlen, int flags)
{
    struct eddy_fiber *f = eddy__fiber_cur;
    if (!f)
        return -EPERM;
    int rc = pre(f);
    if (rc < 0)
        return rc;
    struct fiber_sched *s = f->s;
    int c = stash_take(s, fd);
    if (c >= 0) {
        f->call_deadline = 0;
        if (addr && addrlen && getpeername(c, addr, addrlen) < 0)
            *addrlen = 0;
        return c;
    }
    struct accept_op a;
    memset(&a, 0, sizeof a);
    a.s = s;
    a.lfd = fd;
    rc = started(f, &a.fo, eddy_accept(s->loop, &a.fo.op, fd, addr, addrlen, flags, accept_cb));
    return a.have ? a.got : rc;
}

/* ---- events ------------------------------------------------------------- */

static void ev_unlink(struct eddy_fiber_event *ev, struct eddy_fiber_waiter *w)
{
    if (w->prev_)
        w->prev_->next_ = w->next_;
    else
        ev->head_ = w->next_;
    if (w->next_)
        w->next_->prev_ = w->prev_;
    else
        ev->tail_ = w->prev_;
    w->next_ = w->prev_ = NULL;
}

static void ev_cancel(struct eddy_fiber_waiter *w)
{
    ev_unlink(w->data, w);
    wake_(w, -ECANCELED, false);
}

int eddy_fiber_event_wait(struct eddy_fiber_event *ev)
{
    struct eddy_fiber *f = eddy__fiber_cur;
    if (!f)
        return -EPERM;
    if (f->cancelled) {
        f->call_deadline = 0;
        return -ECANCELED;
    }
    if (ev->set) {
        f->call_deadline = 0;
        return 0;
    }
    struct eddy_fiber_waiter w;
    memset(&w, 0, sizeof w);
    w.data = ev;
    w.prev_ = ev->tail_;
    if (ev->tail_)
        ev->tail_->next_ = &w;
    else
        ev->head_ = &w;
    ev->tail_ = &w;
    return wait_(f->s, f, &w, ev_cancel, take_deadline(f));
}

void eddy_fiber_event_set(struct eddy_fiber_event *ev)
{
    ev->set = 1;
    struct eddy_fiber_waiter *w;
    while ((w = ev->head_)) {
        ev_unlink(ev, w);
        wake_(w, 0, false);
    }
}

void eddy_fiber_event_clear(struct eddy_fiber_event *ev)
{
    ev->set = 0;
}
