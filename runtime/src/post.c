/*
 * Posts: eddy_post() (the next iteration), eddy_post_threadsafe() (any
 * thread: a lock-free stack drained by the loop, woken through its eventfd,
 * whose read is itself an operation of the loop) and eddy_post_to() (loop
 * to loop, over MSG_RING where the kernel has it).  The worker pool sends
 * its finished jobs home through the same stack.
 */
#define _GNU_SOURCE
#include "internal.h"

#include <unistd.h>

int eddy_post(struct eddy_loop *loop, struct eddy_op *op, eddy_cb cb)
{
    int rc = op_start(loop, op, K_POST, cb, 0);
    if (rc < 0)
        return rc;
    op_defer_final(loop, op, 0);
    return 0;
}

void loop_wake(struct eddy_loop *loop)
{
    if (!atomic_exchange(&loop->wake_pending, 1)) {
        uint64_t one = 1;
        ssize_t n = write(loop->wake_fd, &one, sizeof one);
        (void)n; /* EAGAIN means the counter is full: the loop wakes anyway */
    }
}

/* Treiber stack push: any thread. */
void ts_push(struct eddy_loop *loop, struct eddy_op *op)
{
    struct eddy_op *old = atomic_load_explicit(&loop->ts_head, memory_order_relaxed);
    do {
        op->next = old;
    } while (!atomic_compare_exchange_weak_explicit(&loop->ts_head, &old, op,
                                                    memory_order_release,
                                                    memory_order_relaxed));
    loop_wake(loop);
}

/* Fills op in as a post to loop's thread (any thread may: no loop state is
 * read); ts_push() then hands it over. */
static void post_ts_init(struct eddy_loop *loop, struct eddy_op *op, eddy_cb cb)
{
    op->cb = cb;
    op->kind = K_POST_TS;
    op->loop = loop;
    op->flags = 0;
    op->pflags = 0;
    op->res = 0;
    op->state = ST_TSPOST;
}

void eddy_post_threadsafe(struct eddy_loop *loop, struct eddy_op *op, eddy_cb cb)
{
    post_ts_init(loop, op, cb);
    ts_push(loop, op);
}

void eddy_post_to(struct eddy_loop *from, struct eddy_loop *to, struct eddy_op *op,
                  eddy_cb cb)
{
    post_ts_init(to, op, cb);
    if (!from || from == to || !from->be->post_to(from, to, op))
        ts_push(to, op); /* eddy_post_threadsafe()'s way */
}

/* Runs everything other threads pushed, oldest first. */
void post_drain(struct eddy_loop *loop)
{
    if (!atomic_load_explicit(&loop->ts_head, memory_order_relaxed))
        return;
    struct eddy_op *list = atomic_exchange_explicit(&loop->ts_head, NULL,
                                                    memory_order_acquire);
    struct eddy_op *rev = NULL;
    while (list) {
        struct eddy_op *n = list->next;
        list->next = rev;
        rev = list;
        list = n;
    }
    while (rev) {
        struct eddy_op *op = rev;
        rev = rev->next;
        op->next = NULL;
        if (op->kind == K_POST_TS)
            loop->active++; /* op_finish balances it */
        op_finish(loop, op, op->res);
    }
}

static void post_wake_done(struct eddy_op *op, int res)
{
    struct eddy_loop *loop = op->data;
    (void)res;
    atomic_store(&loop->wake_pending, 0);
    post_drain(loop);
    if (!loop->closing)
        post_arm_wake(loop);
}

void post_arm_wake(struct eddy_loop *loop)
{
    struct eddy_op *op = &loop->wake_op;
    op->state = ST_IDLE;
    op_begin_internal(loop, op, K_INTERNAL_READ, post_wake_done, "eddy wake-up");
    op->u.rw.fd = loop->wake_fd;
    op->u.rw.buf = &loop->wake_buf;
    op->u.rw.len = sizeof loop->wake_buf;
    op->u.rw.off = 0;
    op_arm(loop, op);
}
