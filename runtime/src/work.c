/*
 * The worker pool: blocking work runs on pool threads; its completion comes
 * back to the loop thread through the same lock-free queue as
 * eddy_post_threadsafe(), so the loop never blocks on the pool.  Also the
 * start and stop of the loop's own threads (the watchdog's too), and the
 * read/write system call the pool and the epoll backend share.
 */
#define _GNU_SOURCE
#include "internal.h"

#include <errno.h>
#include <signal.h>
#include <unistd.h>

int op_rw_syscall(const struct eddy_op *op, bool wr)
{
    const int fd = op->u.rw.fd;
    ssize_t n;
    /* The loop's eventfd read says offset 0, but an eventfd has none. */
    if (op->u.rw.off == (uint64_t)-1 || op->kind == K_INTERNAL_READ)
        n = wr ? write(fd, op->u.rw.buf, op->u.rw.len) : read(fd, op->u.rw.buf, op->u.rw.len);
    else
        n = wr ? pwrite(fd, op->u.rw.buf, op->u.rw.len, (off_t)op->u.rw.off)
               : pread(fd, op->u.rw.buf, op->u.rw.len, (off_t)op->u.rw.off);
    return n < 0 ? -errno : (int)n;
}

/* ---- the loop's threads (workers, the watchdog) ------------------------ */

int loop_thread_start(pthread_t *t, void *(*fn)(void *), void *arg)
{
    /* They must never take a signal meant for a signalfd. */
    sigset_t all, old;
    sigfillset(&all);
    pthread_sigmask(SIG_SETMASK, &all, &old);
    int rc = pthread_create(t, NULL, fn, arg);
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    return -rc;
}

void loop_threads_stop(pthread_mutex_t *mu, pthread_cond_t *cv, bool *quit,
                       const pthread_t *threads, unsigned n)
{
    pthread_mutex_lock(mu);
    *quit = true;
    pthread_cond_broadcast(cv);
    pthread_mutex_unlock(mu);
    for (unsigned i = 0; i < n; i++)
        pthread_join(threads[i], NULL);
}

/* ---- the worker pool ---------------------------------------------------- */

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
        /* Not K_WORK: the epoll backend's read or write of a regular file
         * (which never says EAGAIN, so epoll cannot wait for it). */
        op->res = op->kind == K_WORK ? op->u.work.fn(op) : op_rw_syscall(op, op->kind == K_WRITE);
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
    int rc = 0;
    for (unsigned i = 0; i < loop->pool_threads; i++) {
        rc = loop_thread_start(&p->threads[i], worker, loop);
        if (rc < 0)
            break;
        p->nthreads++;
    }
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
    loop_threads_stop(&p->mu, &p->cv, &p->shutdown, p->threads, p->nthreads);
    loop_free(loop, p->threads);
    p->threads = NULL;
}
