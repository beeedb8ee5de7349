/*
 * Signals as completions: the watched signals are blocked and read from one
 * signalfd per loop, through an internal read that is always armed while a
 * signal op exists.  Graceful shutdown then happens in ordinary callbacks.
 */
#define _GNU_SOURCE
#include "internal.h"

#include <errno.h>
#include <signal.h>
#include <string.h>
#include <unistd.h>

static void arm_sigread(struct eddy_loop *loop);

static void sigread_done(struct eddy_op *op, int res)
{
    struct eddy_loop *loop = op->data;
    if (res == (int)sizeof loop->sig_buf)
        signal_dispatch(loop, (int)loop->sig_buf.ssi_signo);
    if (!loop->closing && loop->signals.head)
        arm_sigread(loop);
}

static void arm_sigread(struct eddy_loop *loop)
{
    struct eddy_op *op = &loop->sig_op;
    if (op->state != ST_IDLE)
        return;
    op_begin(loop, op, K_INTERNAL_READ, sigread_done);
    loop->active--;
    op->pflags = PF_INTERNAL;
    op->data = loop;
    op->label = "eddy signalfd";
    op->u.rw.fd = loop->sig_fd;
    op->u.rw.buf = &loop->sig_buf;
    op->u.rw.len = sizeof loop->sig_buf;
    op->u.rw.off = 0;
    op_arm(loop, op);
}

void signal_dispatch(struct eddy_loop *loop, int signo)
{
    /* A callback may cancel any signal op, so walk with care: collect the
     * matching ones first by moving them to a local list. */
    struct oplist hit = {0}, rest = {0};
    struct eddy_op *op;
    while ((op = oplist_pop(&loop->signals)))
        oplist_push(op->u.sig.signo == signo ? &hit : &rest, op);
    loop->signals = rest;
    while ((op = oplist_pop(&hit))) {
        oplist_push(&loop->signals, op);
        if (!(op->pflags & PF_CANCEL))
            op_deliver(loop, op, signo, 0);
    }
}

int eddy_signal(struct eddy_loop *loop, struct eddy_op *op, int signo, eddy_cb cb)
{
    if (signo <= 0 || signo >= NSIG || signo == SIGKILL || signo == SIGSTOP)
        return -EINVAL;
    sigset_t mask = loop->sig_mask;
    sigaddset(&mask, signo);
    sigset_t one;
    sigemptyset(&one);
    sigaddset(&one, signo);
    if (pthread_sigmask(SIG_BLOCK, &one, NULL) != 0)
        return -EINVAL;
    int fd = signalfd(loop->sig_fd, &mask, SFD_NONBLOCK | SFD_CLOEXEC);
    if (fd < 0)
        return -errno;
    loop->sig_fd = fd;
    loop->sig_mask = mask;
    int rc = op_begin(loop, op, K_SIGNAL, cb);
    if (rc < 0)
        return rc;
    op->u.sig.signo = signo;
    op->state = ST_SIGNAL;
    oplist_push(&loop->signals, op);
    arm_sigread(loop);
    return 0;
}

void signal_cancel(struct eddy_loop *loop, struct eddy_op *op)
{
    oplist_remove(&loop->signals, op);
}

void signal_destroy(struct eddy_loop *loop)
{
    if (loop->sig_fd >= 0)
        close(loop->sig_fd);
    loop->sig_fd = -1;
}
