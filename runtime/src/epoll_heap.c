/*
 * The epoll backend's timers: one binary min-heap of ops keyed by absolute
 * CLOCK_MONOTONIC ns, shared by timers, per-op deadlines and accept
 * back-offs.  The op's ts field (unused on epoll) holds its key (tv_nsec)
 * and its slot + 1 (tv_sec; 0 = not in the heap).  The earliest key bounds
 * the loop's sleep (epoll.c, ep_enter).
 */
#include "epoll_internal.h"

#include <errno.h>

static inline void heap_set(struct epoll_loop *e, unsigned i, struct eddy_op *op)
{
    e->heap[i] = op;
    op->ts.tv_sec = (int64_t)i + 1;
}

static void heap_up(struct epoll_loop *e, unsigned i)
{
    struct eddy_op *op = e->heap[i];
    while (i > 0) {
        unsigned p = (i - 1) / 2;
        if (HKEY(e->heap[p]) <= HKEY(op))
            break;
        heap_set(e, i, e->heap[p]);
        i = p;
    }
    heap_set(e, i, op);
}

static void heap_down(struct epoll_loop *e, unsigned i)
{
    struct eddy_op *op = e->heap[i];
    for (;;) {
        unsigned c = 2 * i + 1;
        if (c >= e->nheap)
            break;
        if (c + 1 < e->nheap && HKEY(e->heap[c + 1]) < HKEY(e->heap[c]))
            c++;
        if (HKEY(op) <= HKEY(e->heap[c]))
            break;
        heap_set(e, i, e->heap[c]);
        i = c;
    }
    heap_set(e, i, op);
}

int ep_heap_push(struct eddy_loop *loop, struct eddy_op *op, int64_t key)
{
    struct epoll_loop *e = E(loop);
    if (in_heap(op)) {
        op->ts.tv_nsec = key;
        heap_up(e, (unsigned)op->ts.tv_sec - 1);
        heap_down(e, (unsigned)op->ts.tv_sec - 1);
        return 0;
    }
    if (e->nheap == e->capheap) {
        /* Grown in chunks (doubling), never shrunk: off the hot path once
         * the loop has seen its largest number of timers. */
        unsigned cap = e->capheap ? e->capheap * 2 : 64;
        void *p = loop->alloc(loop->alloc_ud, e->heap, cap * sizeof *e->heap);
        if (!p)
            return -ENOMEM;
        e->heap = p;
        e->capheap = cap;
    }
    op->ts.tv_nsec = key;
    e->heap[e->nheap] = op;
    op->ts.tv_sec = (int64_t)e->nheap + 1;
    e->nheap++;
    loop->inflight++;
    heap_up(e, e->nheap - 1);
    return 0;
}

void ep_heap_remove(struct eddy_loop *loop, struct eddy_op *op)
{
    struct epoll_loop *e = E(loop);
    if (!in_heap(op))
        return;
    unsigned i = (unsigned)op->ts.tv_sec - 1;
    op->ts.tv_sec = 0;
    loop->inflight--;
    struct eddy_op *last = e->heap[--e->nheap];
    if (i == e->nheap)
        return;
    heap_set(e, i, last);
    heap_up(e, i);
    heap_down(e, (unsigned)last->ts.tv_sec - 1);
}

int64_t ep_heap_timeout(struct eddy_loop *loop)
{
    struct epoll_loop *e = E(loop);
    if (!e->nheap)
        return -1;
    int64_t d = HKEY(e->heap[0]) - mono_ns();
    return d < 0 ? 0 : d;
}
