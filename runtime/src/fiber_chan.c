/*
 * Fiber-to-fiber primitives: events and channels.  Both are FIFO queues of
 * parked waiters (the waiters live on the waiting fibers' stacks, linked
 * through next_/prev_), woken "later" — queued to run, never inside the
 * call that wakes them — so setting an event or sending on a channel is
 * safe from a callback, a fiber, or a cancel hook.
 *
 * A channel keeps two invariants: receivers wait only while it is empty,
 * senders only while it is full.  So a send with a receiver waiting hands
 * the message straight to that receiver (no other fiber can take it
 * first), and a receive from a full channel with a sender waiting moves
 * that sender's message into the slot it freed.
 */
#define _GNU_SOURCE
#include "fiber_internal.h"

#include <errno.h>
#include <string.h>

/* ---- wait queues ---------------------------------------------------------- */

static void q_push(struct eddy_fiber_waiter **head, struct eddy_fiber_waiter **tail,
                   struct eddy_fiber_waiter *w)
{
    w->next_ = NULL;
    w->prev_ = *tail;
    if (*tail)
        (*tail)->next_ = w;
    else
        *head = w;
    *tail = w;
}

static void q_unlink(struct eddy_fiber_waiter **head, struct eddy_fiber_waiter **tail,
                     struct eddy_fiber_waiter *w)
{
    if (w->prev_)
        w->prev_->next_ = w->next_;
    else
        *head = w->next_;
    if (w->next_)
        w->next_->prev_ = w->prev_;
    else
        *tail = w->prev_;
    w->next_ = w->prev_ = NULL;
}

static struct eddy_fiber_waiter *q_pop(struct eddy_fiber_waiter **head,
                                       struct eddy_fiber_waiter **tail)
{
    struct eddy_fiber_waiter *w = *head;
    if (w)
        q_unlink(head, tail, w);
    return w;
}

/* Wakes every waiter of a queue with res (they run later). */
static void q_wake_all(struct eddy_fiber_waiter **head, struct eddy_fiber_waiter **tail, int res)
{
    struct eddy_fiber_waiter *w;
    while ((w = q_pop(head, tail)))
        fiber_wake(w, res, false);
}

/* ---- events --------------------------------------------------------------- */

static void ev_cancel(struct eddy_fiber_waiter *w)
{
    struct eddy_fiber_event *ev = w->data;
    q_unlink(&ev->head_, &ev->tail_, w);
    fiber_wake(w, -ECANCELED, false);
}

int eddy_fiber_event_wait(struct eddy_fiber_event *ev)
{
    struct eddy_fiber *f = eddy__fiber_cur;
    if (!f)
        return -EPERM;
    int rc = fiber_pre(f);
    if (rc < 0 || ev->set) {
        f->call_deadline = 0;
        return rc;
    }
    struct eddy_fiber_waiter w;
    memset(&w, 0, sizeof w);
    w.data = ev;
    q_push(&ev->head_, &ev->tail_, &w);
    return fiber_wait(f->s, f, &w, ev_cancel, fiber_take_deadline(f));
}

void eddy_fiber_event_set(struct eddy_fiber_event *ev)
{
    ev->set = 1;
    q_wake_all(&ev->head_, &ev->tail_, 0);
}

void eddy_fiber_event_clear(struct eddy_fiber_event *ev)
{
    ev->set = 0;
}

/* ---- channels ------------------------------------------------------------- */

/* A fiber parked in a channel, on its stack: the message it sends, or the
 * place for the one it receives. */
struct chan_wait {
    struct eddy_fiber_waiter w;
    struct eddy_fiber_chan *ch;
    void *msg;
    bool tx;
};

int eddy_fiber_chan_init(struct eddy_fiber_chan *ch, void **slots, unsigned cap)
{
    if (!ch || !slots || !cap)
        return -EINVAL;
    memset(ch, 0, sizeof *ch);
    ch->slots_ = slots;
    ch->cap = cap;
    return 0;
}

static void chan_put(struct eddy_fiber_chan *ch, void *msg)
{
    ch->slots_[(ch->head_ + ch->len) % ch->cap] = msg;
    ch->len++;
}

static void *chan_get(struct eddy_fiber_chan *ch)
{
    void *msg = ch->slots_[ch->head_];
    ch->head_ = (ch->head_ + 1) % ch->cap;
    ch->len--;
    return msg;
}

int eddy_fiber_chan_try_send(struct eddy_fiber_chan *ch, void *msg)
{
    if (ch->closed)
        return -EPIPE;
    struct eddy_fiber_waiter *w = q_pop(&ch->rx_head_, &ch->rx_tail_);
    if (w) { /* a receiver waits, so the channel is empty: hand it over */
        eddy_container_of(w, struct chan_wait, w)->msg = msg;
        fiber_wake(w, 0, false);
        return 0;
    }
    if (ch->len == ch->cap)
        return -EAGAIN;
    chan_put(ch, msg);
    return 0;
}

int eddy_fiber_chan_try_recv(struct eddy_fiber_chan *ch, void **msg)
{
    if (!ch->len)
        return ch->closed ? -EPIPE : -EAGAIN;
    *msg = chan_get(ch);
    struct eddy_fiber_waiter *w = q_pop(&ch->tx_head_, &ch->tx_tail_);
    if (w) { /* a sender waits, so the channel was full: its message takes the slot */
        chan_put(ch, eddy_container_of(w, struct chan_wait, w)->msg);
        fiber_wake(w, 0, false);
    }
    return 0;
}

void eddy_fiber_chan_close(struct eddy_fiber_chan *ch)
{
    ch->closed = 1;
    q_wake_all(&ch->rx_head_, &ch->rx_tail_, -EPIPE);
    q_wake_all(&ch->tx_head_, &ch->tx_tail_, -EPIPE);
}

static void chan_cancel(struct eddy_fiber_waiter *w)
{
    struct chan_wait *cw = eddy_container_of(w, struct chan_wait, w);
    struct eddy_fiber_chan *ch = cw->ch;
    if (cw->tx)
        q_unlink(&ch->tx_head_, &ch->tx_tail_, w);
    else
        q_unlink(&ch->rx_head_, &ch->rx_tail_, w);
    fiber_wake(w, -ECANCELED, false);
}

/* Both directions: try at once, else park until a peer, close, cancel or
 * the deadline ends the wait. */
static int chan_await(struct eddy_fiber_chan *ch, void **msg, bool tx)
{
    struct eddy_fiber *f = eddy__fiber_cur;
    if (!f)
        return -EPERM;
    int rc = fiber_pre(f);
    if (rc == 0)
        rc = tx ? eddy_fiber_chan_try_send(ch, *msg) : eddy_fiber_chan_try_recv(ch, msg);
    if (rc != -EAGAIN) {
        f->call_deadline = 0;
        return rc;
    }
    struct chan_wait cw;
    memset(&cw, 0, sizeof cw);
    cw.ch = ch;
    cw.tx = tx;
    cw.msg = tx ? *msg : NULL;
    if (tx)
        q_push(&ch->tx_head_, &ch->tx_tail_, &cw.w);
    else
        q_push(&ch->rx_head_, &ch->rx_tail_, &cw.w);
    rc = fiber_wait(f->s, f, &cw.w, chan_cancel, fiber_take_deadline(f));
    if (rc == 0 && !tx)
        *msg = cw.msg;
    return rc;
}

int eddy_fiber_chan_send(struct eddy_fiber_chan *ch, void *msg)
{
    return chan_await(ch, &msg, true);
}

int eddy_fiber_chan_recv(struct eddy_fiber_chan *ch, void **msg)
{
    return chan_await(ch, msg, false);
}
