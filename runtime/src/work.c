/*
 * The worker pool: blocking work runs on pool threads; its completion comes
 * back to the loop thread through the same lock-free queue as
 * eddy_post_threadsafe(), so the loop never blocks on the pool.
 */
#define _GNU_SOURCE
#include "internal.h"

#include <errno.h>
#include <signal.h>
#include <unistd.h>

/* The epoll backend's reads and writes of regular files (which never say
 * EAGAIN, so epoll cannot wait for them) run here, as jobs. */
static int file_io(struct eddy_op *op)
{
    ssize_t n;
    bool wr = op->kind == K_WRITE;
    if (op->u.rw.off == (uint64_t)-1)
        n = wr ? write(op->u.rw.fd, op->u.rw.buf, op->u.rw.len)
               : read(op->u.rw.fd, op->u.rw.buf, op->u.rw.len);
    else
        n = wr ? pwrite(op->u.rw.fd, op->u.rw.buf, op->u.rw.len, (off_t)op->u.rw.off)
               : pread(op->u.rw.fd, op->u.rw.buf, op->u.rw.len, (off_t)op->u.rw.off);
    return n < 0 ? -errno : (int)n;
}

static void *worker(void *arg)
{
    struct eddy_loop *loop = arg;
    struct wpool *p = &loop->pool;
    pthread_mutex_lock(&p->mu);
    for (;;) {
        while (!p->queue.head && !p->shutdown)
            pthread_cond_wait(&p->cv, &p->mu);
        if (!p->queue.head)
            break; /* shut down with nothing left */
        struct eddy_op *op = oplist_pop(&p->queue);
        op->pflags |= PF_WORK_RUNNING;
        pthread_mutex_unlock(&p->mu);
        op->res = op->kind == K_WORK ? op->u.work.fn(op) : file_io(op);
        ts_push(loop, op);
        pthread_mutex_lock(&p->mu);
    }
    pthread_mutex_unlock(&p->mu);
    return NULL;
}

/* Starts the threads on first use: the pool costs nothing until then. */
static int start_threads(struct eddy_loop *loop)
{
    struct wpool *p = &loop->pool;
    p->threads = loop_alloc(loop, loop->pool_threads * sizeof(pthread_t));
    if (!p->threads)
        return -ENOMEM;
    sigset_t all, old;
    sigfillset(&all);
    /* Pool threads must never take a signal meant for a signalfd. */
    pthread_sigmask(SIG_SETMASK, &all, &old);
    int rc = 0;
    for (unsigned i = 0; i < loop->pool_threads; i++) {
        rc = pthread_create(&p->threads[i], NULL, worker, loop);
        if (rc) {
            rc = -rc;
            break;
        }
        p->nthreads++;
    }
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    p->started = 1;
    if (p->nthreads == 0) {
        loop_free(loop, p->threads);
        p->threads = NULL;
        p->started = 0;
        return rc;
    }
    return 0;
}

int wpool_submit(struct eddy_loop *loop, struct eddy_op *op)
{
    struct wpool *p = &loop->pool;
    if (!p->started) {
        int rc = start_threads(loop);
        if (rc < 0)
            return rc;
    }
    op->state = ST_WORK;
    pthread_mutex_lock(&p->mu);
    oplist_push(&p->queue, op);
    pthread_cond_signal(&p->cv);
    pthread_mutex_unlock(&p->mu);
    return 0;
}

int wpool_cancel(struct eddy_loop *loop, struct eddy_op *op)
{
    struct wpool *p = &loop->pool;
    pthread_mutex_lock(&p->mu);
    if (op->pflags & PF_WORK_RUNNING) {
        pthread_mutex_unlock(&p->mu);
        return -EBUSY; /* running: it completes normally */
    }
    oplist_remove(&p->queue, op);
    op->pflags |= PF_CANCEL;
    pthread_mutex_unlock(&p->mu);
    op_defer_final(loop, op, -ECANCELED);
    return 0;
}

void wpool_destroy(struct eddy_loop *loop)
{
    struct wpool *p = &loop->pool;
    if (!p->started)
        return;
    pthread_mutex_lock(&p->mu);
    p->shutdown = true;
    pthread_cond_broadcast(&p->cv);
    pthread_mutex_unlock(&p->mu);
    for (unsigned i = 0; i < p->nthreads; i++)
        pthread_join(p->threads[i], NULL);
    loop_free(loop, p->threads);
    p->threads = NULL;
}
