/*
 * Fiber waits: how a wait ends (woken, cancelled, past its deadline), the
 * deadline heap, sleeps, deadlines, and waiting for operations — one, all
 * of them, or the first of them.
 *
 * Deadlines and sleeps are one min-heap of waits per loop, served by one
 * kernel timer (so 100,000 sleeping fibers cost one timer, not 100,000).
 */
#define _GNU_SOURCE
#include "fiber_internal.h"

#include <assert.h>
#include <errno.h>
#include <string.h>

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

int fiber_heap_reserve(struct fiber_sched *s, unsigned n)
{
    if (n <= s->capheap)
        return 0;
    unsigned cap = s->capheap ? s->capheap * 2 : 64;
    void *h = eddy_loop_realloc(s->loop, s->heap, cap * sizeof *s->heap);
    if (!h)
        return -ENOMEM;
    s->heap = h;
    s->capheap = cap;
    return 0;
}

static void tmr_cb(struct eddy_op *op, int res);

/* Keeps the one timer armed for the earliest deadline.  A later deadline
 * than the armed one waits for it to fire (then re-arms); an earlier one
 * cancels and re-arms in the final callback.  With no deadline left the
 * timer may stay armed: live fibers keep the loop anyway, and the last one
 * to end cancels it (fiber_timer_stop). */
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

void fiber_deadline_add(struct fiber_sched *s, struct eddy_fiber_waiter *w)
{
    heap_insert(s, w);
    arm(s);
}

void fiber_timer_stop(struct fiber_sched *s)
{
    if (eddy_op_active(&s->tmr) && !s->tmr_cancel) {
        s->tmr_cancel = true;
        eddy_cancel(s->loop, &s->tmr);
    }
}

/* ---- how a wait ends ------------------------------------------------------ */

void fiber_wake(struct eddy_fiber_waiter *w, int res, bool direct)
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
        fiber_resume(s, f);
    else
        fiber_make_ready(s, f);
}

void fiber_interrupt(struct fiber_sched *s, struct eddy_fiber_waiter *w, int why)
{
    if (w->done_ || w->why_ || (w->pad_[0] & W_EXEMPT))
        return;
    w->why_ = (unsigned char)why;
    if (w->cancel_) {
        s->in_hook++;
        w->cancel_(w);
        s->in_hook--;
    } else {
        fiber_wake(w, -ECANCELED, false);
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
            fiber_wake(w, 0, false);
        else
            fiber_interrupt(s, w, WHY_TIME);
    }
    if (s->live)
        arm(s);
}

/* The deadline the next wait will have: the block's or the call's, the earlier. */
static int64_t next_deadline(const struct eddy_fiber *f)
{
    int64_t dl = f->deadline;
    if (f->call_deadline && (!dl || f->call_deadline < dl))
        dl = f->call_deadline;
    return dl;
}

int64_t fiber_take_deadline(struct eddy_fiber *f)
{
    int64_t dl = next_deadline(f);
    f->call_deadline = 0;
    return dl;
}

int fiber_pre(struct eddy_fiber *f)
{
    if (f->cancelled) {
        f->call_deadline = 0;
        return -ECANCELED;
    }
    int64_t dl = next_deadline(f);
    if (dl && dl <= eddy_update_time(f->s->loop)) {
        f->call_deadline = 0;
        return -ETIME;
    }
    return 0;
}

static int why_err(int why)
{
    return why == WHY_TIME ? -ETIME : -ECANCELED;
}

/* ---- public: suspend/wake, checks, sleeps, deadlines ---------------------- */

int eddy_fiber_suspend(struct eddy_fiber_waiter *w, void (*cancel)(struct eddy_fiber_waiter *w))
{
    struct eddy_fiber *f = eddy__fiber_cur;
    if (!f)
        return -EPERM;
    w->pad_[0] = 0;
    w->sleep_end_ = 0;
    return fiber_wait(f->s, f, w, cancel, fiber_take_deadline(f));
}

void eddy_fiber_wake(struct eddy_fiber_waiter *w, int res)
{
    fiber_wake(w, res, true);
}

int eddy_fiber_check(void)
{
    struct eddy_fiber *f = eddy__fiber_cur;
    return f ? fiber_pre(f) : -EPERM;
}

int eddy_fiber_timeout_clear(void)
{
    struct eddy_fiber *f = eddy__fiber_cur;
    if (!f)
        return -EPERM;
    f->call_deadline = 0;
    return 0;
}

static void sleep_cancel(struct eddy_fiber_waiter *w)
{
    fiber_wake(w, -ECANCELED, false);
}

int eddy_fiber_sleep_until(int64_t at)
{
    struct eddy_fiber *f = eddy__fiber_cur;
    if (!f)
        return -EPERM;
    struct fiber_sched *s = f->s;
    int64_t dl = fiber_take_deadline(f);
    if (!f->cancelled && at <= eddy_update_time(s->loop) && (!dl || at <= dl))
        return eddy_fiber_yield();
    struct eddy_fiber_waiter w;
    memset(&w, 0, sizeof w);
    w.sleep_end_ = at;
    if (!dl || at < dl)
        dl = at;
    return fiber_wait(s, f, &w, sleep_cancel, dl);
}

int eddy_fiber_sleep(uint64_t ms)
{
    struct eddy_fiber *f = eddy__fiber_cur;
    if (!f)
        return -EPERM;
    return eddy_fiber_sleep_until(eddy_update_time(f->s->loop) + (int64_t)ms * 1000000);
}

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

/* ---- waiting for operations: one, all, the first ------------------------- */

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
        fiber_wake(&g->w, 0, true);
}

/* Joins the ops that are not done yet to g; for any, notes the first done. */
static int group_join(struct group *g, struct eddy_fiber_op *const *fos, unsigned n)
{
    for (unsigned i = 0; i < n; i++)
        if (!fos[i]->done && !eddy_op_active(&fos[i]->op))
            return -EINVAL; /* never started: nothing would wake us */
    for (unsigned i = 0; i < n; i++) {
        if (fos[i]->done) {
            if (g->any && g->first < 0)
                g->first = (int)i;
        } else {
            fos[i]->group_ = g;
            g->pending++;
        }
    }
    return 0;
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
    if (group_join(&g, fos, n) < 0)
        return -EINVAL;
    int64_t dl = fiber_take_deadline(f);
    if (!g.pending)
        return any ? g.first : 0;
    if (any && g.first >= 0)
        group_cancel_rest(&g);
    if (exempt)
        g.w.pad_[0] = W_EXEMPT;
    fiber_wait(s, f, &g.w, group_cancel, exempt ? 0 : dl);
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

int fiber_await_one(struct eddy_fiber_op *fo, bool exempt)
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
    return fiber_await_one(fo, false);
}
