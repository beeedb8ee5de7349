/*
 * The connection state machine: the receive, feeding the parser, back-
 * pressure, the client's EOF, the send (one per batch of ready answers),
 * linger and close; and the timeout lists with their sweep.  The states
 * a connection goes through, and the re-entrancy rule every caller here
 * follows, are stated once, in internal.h (enum conn_state).
 *
 * A request's way through: recv_cb (a buffer arrives) -> conn_feed ->
 * conn_parse -> wire_parse (wire.c: llhttp's callbacks fill the request
 * and queue it on the session) -> dispatch_new (server.c: route, run the
 * handler, which answers into the request's buffer, request.c) -> back in
 * recv_cb, sess_flush sends every answer ready in one send -> send_done
 * recycles the requests sent, then reads on, lingers or closes.  While a
 * buffer is parsed and dispatched the session is "batching": the answers
 * made meanwhile wait for that one sess_flush at the end.
 *
 * Timeouts: no kernel timer per connection.  Every connection is on exactly
 * one of a few lists, one per kind of wait (enum tlist: head, body, idle,
 * send, EOF, linger, none).
 * All entries of a list share one timeout, so appending on state entry (and
 * moving to the tail on activity) keeps each list in deadline order, and one
 * repeating timer per server pops the expired heads: O(expired) per sweep.
 */
#define _GNU_SOURCE
#include "internal.h"

#include <assert.h>
#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

/* ---- timeout lists ----------------------------------------------------- */

static void tl_remove(struct eddy_http_server *srv, struct conn *c)
{
    conn_list_remove(&srv->tl[c->tl], c);
}

static void tl_append(struct eddy_http_server *srv, struct conn *c, unsigned tl)
{
    c->tl = (uint8_t)tl;
    c->since = eddy_now_ns(srv->loop);
    conn_list_push(&srv->tl[tl], c);
}

/* The timeout list an open connection belongs on, from its session. */
static unsigned conn_wait(const struct conn *c)
{
    const struct sess *s = c->s;
    if (c->state == CONN_LINGER)
        return TL_LINGER;
    if (s && eddy_op_active(&s->sop))
        return TL_SEND;
    if (c->state == CONN_EOF)
        return TL_EOF; /* waiting for handlers after the EOF: bounded */
    if (s && s->in_msg && !s->paused && !s->stop)
        return s->in_body ? TL_BODY : TL_HEAD;
    if (s && s->nreq)
        return TL_NONE; /* handlers at work: their business */
    if (!(c->flags & C_SERVED))
        return TL_HEAD; /* a new connection must send its first request in time */
    return TL_IDLE;
}

/* Puts c on the list of its wait; touch restarts the clock of the send
 * timeout on progress.  The head and body deadlines are totals (from the
 * first byte of the head, and from its end): bytes trickled in one at a
 * time must not keep a connection forever. */
void conn_retime(struct conn *c, bool touch)
{
    if (conn_closing(c))
        return;
    unsigned st = conn_wait(c);
    if (st == c->tl && !(touch && st == TL_SEND))
        return;
    tl_remove(c->srv, c);
    tl_append(c->srv, c, st);
}

/* ---- sending ----------------------------------------------------------- */

static void send_done(struct eddy_op *op, int res);

/* Sends every answer that is ready, in request order, in one send(msg). */
void sess_flush(struct sess *s)
{
    struct conn *c = s->c;
    if (s->batching || eddy_op_active(&s->sop) || c->state >= CONN_LINGER)
        return;
    unsigned n = 0;
    size_t total = 0;
    struct eddy_http_req *last = NULL;
    for (struct eddy_http_req *r = s->q.head; r && n < MAX_IOV; r = r->next) {
        if (!(r->flags & R_ANSWERED))
            break;
        uint32_t from = r->osent ? r->osent : r->ostart;
        bool more = r->olen > from;
        if (!more && !(r->flags & R_DONE))
            break; /* a stream with nothing new yet */
        r->oinfl = r->olen;
        if (more) {
            size_t seg = r->olen - from;
            if (seg > SEND_MAX - total)
                seg = SEND_MAX - total; /* a large answer goes in slices */
            s->iov[n].iov_base = r->out + from;
            s->iov[n].iov_len = seg;
            n++;
            total += seg;
            r->oinfl = from + (uint32_t)seg;
        }
        r->flags |= R_INFLIGHT;
        last = r;
        if (r->oinfl < r->olen || !(r->flags & R_DONE) || (r->flags & R_CLOSE) ||
            total >= SEND_MAX)
            break;
    }
    if (!last)
        return;
    s->sent_upto = last;
    if (n == 0) {
        /* Nothing new to send (a stream that ended with nothing pending):
         * complete as if a send of 0 bytes finished. */
        s->sop.data = s;
        eddy_post(c->srv->loop, &s->sop, send_done);
        return;
    }
    s->sop.data = s;
    c->srv->st.sends++;
    int rc;
    if (n == 1) {
        /* One answer (the usual case): a plain send, which spares the kernel
         * copying in a msghdr and an iovec. */
        rc = eddy_send(c->srv->loop, &s->sop, c->fd, s->iov[0].iov_base, s->iov[0].iov_len,
                       0, send_done);
    } else {
        memset(&s->msg, 0, sizeof s->msg);
        s->msg.msg_iov = s->iov;
        s->msg.msg_iovlen = n;
        rc = eddy_sendmsg(c->srv->loop, &s->sop, c->fd, &s->msg, 0, send_done);
    }
    if (rc < 0) {
        conn_close(c);
        return;
    }
    conn_retime(c, true);
}

static void recv_cb(struct eddy_op *op, int res);
static void conn_resume(struct conn *c);

/* Sends our FIN and reads (discarding) until the client's, or a timeout. */
static void conn_linger(struct conn *c)
{
    bool eof = c->state == CONN_EOF;
    /* A direct call, not eddy_shutdown(): SHUT_WR never blocks, and an
     * operation would add one more completion for close to wait for. */
    shutdown(c->fd, SHUT_WR);
    c->state = CONN_LINGER;
    bool reading = eddy_op_active(&c->rop);
    if (!reading && !eof && !(c->flags & C_READSTOP)) /* the first receive ended */
        reading = eddy_recv_multi(c->srv->loop, &c->rop, c->fd, c->srv->pool, recv_cb) == 0;
    if (!reading) {
        conn_close(c);
        return;
    }
    conn_retime(c, false);
}

static void sess_release_if_idle(struct conn *c);

static void send_done(struct eddy_op *op, int res)
{
    struct sess *s = op->data;
    struct conn *c = s->c;
    if (res < 0 || conn_closing(c)) {
        conn_close(c);
        return;
    }
    bool close_after = false, clean = false;
    for (;;) {
        struct eddy_http_req *r = s->q.head;
        if (!r)
            break;
        r->osent = r->oinfl;
        r->flags &= ~(uint32_t)R_INFLIGHT;
        xfree(c->srv, r->oold);
        r->oold = NULL;
        bool done = (r->flags & R_DONE) && r->osent == r->olen;
        bool stop = r == s->sent_upto;
        if (done) {
            if (r->flags & R_CLOSE) {
                close_after = true;
                clean = (r->flags & R_COMPLETE) != 0;
            }
            req_queue_pop(&s->q);
            s->nreq--;
            req_put(r);
        }
        if (stop || !done || close_after)
            break;
    }
    s->sent_upto = NULL;
    if (close_after) {
        /* Lingering (RFC 9112 9.6) keeps client bytes that arrive after the
         * close from turning our answer into an RST.  A fully read request
         * with nothing after it, or a client already at EOF, leaves none to
         * come: close at once, as nginx does, without the shutdown and the
         * wait for the client's FIN. */
        if (clean && (c->state == CONN_EOF || (!s->q.head && !s->cur && !s->in_msg &&
                                             !s->pend_len && !s->dropped && !s->mwait)))
            conn_close(c);
        else
            conn_linger(c);
        return;
    }
    if (s->paused && s->nreq < c->srv->o.max_pipeline)
        conn_resume(c);
    if (conn_closing(c))
        return;
    sess_flush(s);
    if (!eddy_op_active(&s->sop))
        sess_release_if_idle(c);
    conn_retime(c, true);
}

/* ---- sessions ---------------------------------------------------------- */

static struct sess *sess_get(struct eddy_http_server *srv, struct conn *c)
{
    struct sess *s = pool_take(srv, &srv->sfree, sizeof *s, 16, offsetof(struct sess, nextfree));
    if (!s)
        return NULL;
    memset(s, 0, offsetof(struct sess, pend)); /* the per-use part (internal.h) */
    wire_init(s);
    s->c = c;
    c->s = s;
    return s;
}

static void sess_put(struct conn *c)
{
    struct sess *s = c->s;
    struct eddy_http_server *srv = c->srv;
    assert(!eddy_op_active(&s->sop));
    buf_trim(srv, &s->pend, &s->pend_cap, PEND_STOP);
    s->nextfree = srv->sfree;
    srv->sfree = s;
    c->s = NULL;
}

/* A connection between requests needs no parser: give the session back. */
static void sess_release_if_idle(struct conn *c)
{
    struct sess *s = c->s;
    if (!s || s->nreq || s->in_msg || s->pend_len || s->stop || s->paused ||
        eddy_op_active(&s->sop) || (c->state >= CONN_LINGER))
        return;
    sess_put(c);
}

/* ---- closing ----------------------------------------------------------- */

static void close_done(struct eddy_op *op, int res)
{
    struct conn *c = eddy_container_of(op, struct conn, rop);
    struct eddy_http_server *srv = c->srv;
    (void)res;
    if (c->s)
        sess_put(c);
    c->state = CONN_OPEN;
    c->flags = 0;
    c->tnext = srv->cfree;
    srv->cfree = c;
    srv->nconns--;
    check_done(srv);
}

/* Closes c: cancels its ops, tells handlers still holding requests, and
 * closes the descriptor once every op has ended and every held request is
 * answered.  Safe to call again: each call re-checks whether the
 * descriptor can be closed now.  Requests stay on the session's list until
 * then, because a send in flight may still read their buffers. */
void conn_close(struct conn *c)
{
    struct sess *s = c->s;
    if (c->state == CONN_CLOSED)
        return;
    if (c->state < CONN_ABORTING) {
        c->state = CONN_ABORTING;
        tl_remove(c->srv, c);
        c->tl = TL_NONE;
        if (eddy_op_active(&c->rop))
            eddy_cancel(c->srv->loop, &c->rop);
        if (s && eddy_op_active(&s->sop))
            eddy_cancel(c->srv->loop, &s->sop);
        if (s) {
            struct eddy_http_req *r;
            for (r = s->q.head; r; r = r->next) {
                if ((r->flags & R_DISPATCHED) && !(r->flags & R_DONE)) {
                    r->flags |= R_ABORTED;
                    c->held++;
                }
            }
            /* An abort callback may answer at once; the list does not
             * change under us (answers to aborted requests only count). */
            for (r = s->q.head; r; r = r->next)
                if ((r->flags & R_ABORTED) && !(r->flags & R_DONE) && r->abort_cb)
                    r->abort_cb(r, r->abort_ud);
        }
        c->state = CONN_CLOSING;
    }
    if (c->state == CONN_ABORTING)
        return; /* an abort callback answered: the first call goes on */
    if (eddy_op_active(&c->rop) || (s && eddy_op_active(&s->sop)) || c->held)
        return;
    c->state = CONN_CLOSED;
    if (s) {
        struct eddy_http_req *r;
        while ((r = req_queue_pop(&s->q)))
            req_put(r);
        s->nreq = 0;
        if (s->cur) {
            req_put(s->cur);
            s->cur = NULL;
        }
    }
    if (eddy_close(c->srv->loop, &c->rop, c->fd, close_done) < 0)
        close_done(&c->rop, 0); /* cannot happen with a valid fd */
}

/* ---- receiving --------------------------------------------------------- */

/* Queues an error answer behind the requests already queued, stops parsing
 * and closes after it. */
void conn_error(struct conn *c, int status)
{
    struct sess *s = c->s;
    struct eddy_http_server *srv = c->srv;
    if (s->cur) {
        req_put(s->cur);
        s->cur = NULL;
    }
    s->stop = 1;
    s->in_msg = 0;
    s->pend_len = 0;
    srv->st.errors++;
    struct eddy_http_req *r = req_get(srv, c);
    if (!r) {
        conn_close(c);
        return;
    }
    r->flags |= R_CLOSE | R_DISPATCHED;
    sess_queue(s, r);
    const char *reason = eddy_http_reason(status);
    char body[64];
    int n = snprintf(body, sizeof body, "%d %s\n", status, reason);
    answer_or_drop(r, status, body, (size_t)n);
}


/*
 * Parses len bytes (wire_parse) and sends the interim "100 Continue" the
 * parser asked for.  It asks only when nothing is queued, and every answer
 * of this batch is sent after the parse (batching), so it cannot overtake
 * one.  A plain non-blocking send, not an operation: nothing is in flight
 * on the connection then, and its socket buffer always takes these 25
 * bytes at once.
 */
static int conn_parse(struct conn *c, const char *data, size_t len, size_t *used)
{
    static const char cont[] = "HTTP/1.1 100 Continue\r\n\r\n";
    struct sess *s = c->s;
    int st = wire_parse(s, data, len, used);
    if (s->continue_due) {
        s->continue_due = 0;
        ssize_t k = send(c->fd, cont, sizeof cont - 1, MSG_DONTWAIT | MSG_NOSIGNAL);
        (void)k;
    }
    return st;
}

/* Keeps bytes that cannot be parsed yet (paused) for later. */
static bool stash(struct sess *s, const char *data, size_t len)
{
    if (!grow(s->c->srv->loop, &s->pend, &s->pend_cap, s->pend_len + len, 4096))
        return false;
    memcpy(s->pend + s->pend_len, data, len);
    s->pend_len += len;
    return true;
}

static void conn_feed(struct conn *c, const char *data, size_t len)
{
    struct sess *s = c->s;
    if (s->stop || c->state == CONN_LINGER) {
        s->dropped = 1; /* after an error or a closing request: discard */
        return;
    }
    if (s->mwait) {
        int st = method_verdict(s, data, len);
        if (st)
            conn_error(c, st);
        return;
    }
    if (s->paused) {
        if (!stash(s, data, len)) {
            conn_close(c);
            return;
        }
        if (s->pend_len > PEND_STOP && eddy_op_active(&c->rop)) {
            c->flags |= C_READSTOP;
            c->srv->st.read_stops++;
            eddy_cancel(c->srv->loop, &c->rop);
        }
        return;
    }
    size_t used;
    int st = conn_parse(c, data, len, &used);
    if (st) {
        conn_error(c, st);
        return;
    }
    if (s->stop && used < len)
        s->dropped = 1;
    else if (!s->stop && used < len && !stash(s, data + used, len - used))
        conn_close(c);
}

static bool eof_settle(struct conn *c);

/* Answers drained under the cap: parse what waited, read again. */
static void conn_resume(struct conn *c)
{
    struct sess *s = c->s;
    s->paused = 0;
    if (s->pend_len) {
        s->batching = 1;
        size_t used;
        int st = conn_parse(c, s->pend, s->pend_len, &used);
        if (st)
            conn_error(c, st);
        if (conn_closing(c))
            return;
        if (s->stop) {
            if (used < s->pend_len)
                s->dropped = 1;
            s->pend_len = 0;
        } else {
            memmove(s->pend, s->pend + used, s->pend_len - used);
            s->pend_len -= used;
        }
        dispatch_new(s);
        s->batching = 0;
        if (conn_closing(c))
            return;
    }
    if (c->state == CONN_EOF) {
        if (!s->paused && !eof_settle(c))
            conn_close(c);
        return;
    }
    if (!s->paused && (c->flags & C_READSTOP) && !eddy_op_active(&c->rop)) {
        c->flags &= (uint8_t)~C_READSTOP;
        if (eddy_recv_multi(c->srv->loop, &c->rop, c->fd, c->srv->pool, recv_cb) < 0)
            conn_close(c);
    }
}

/*
 * eof_finish: the EOF point is reached (any stash of a paused connection
 * parsed): a request cut short is dropped, and the last request received
 * closes the connection once answered.  False: nothing to answer, close.
 */
static bool eof_settle(struct conn *c)
{
    struct sess *s = c->s;
    if (s->cur) {
        req_put(s->cur);
        s->cur = NULL;
    }
    s->in_msg = s->in_body = 0;
    s->stop = 1;
    s->pend_len = 0;
    if (!s->q.tail)
        return false;
    s->q.tail->flags |= R_CLOSE;
    conn_retime(c, false);
    return true;
}

/*
 * EOF: a half-close (shutdown(SHUT_WR) after the request) cannot be told
 * from a close until a send fails.  By default the answers already made
 * (the answered head of the queue) are still sent, then the connection
 * closes; requests not answered yet are aborted.  With eof_finish every
 * request received waits for its answer (at most eof_timeout_ms per wait).
 * False: close now.
 */
static bool eof_keep_answers(struct conn *c)
{
    struct sess *s = c->s;
    if (!s || (c->state >= CONN_LINGER))
        return false;
    c->state = CONN_EOF;
    c->flags &= (uint8_t)~C_READSTOP;
    if (c->srv->o.eof_finish) {
        if (!s->paused)
            return eof_settle(c);
        conn_retime(c, false); /* conn_resume parses the stash, then settles */
        return true;
    }
    struct eddy_http_req *last = NULL;
    for (struct eddy_http_req *r = s->q.head; r && (r->flags & R_ANSWERED); r = r->next)
        last = r;
    if (!last)
        return false;
    last->flags |= R_CLOSE; /* after it: half-close, and close_done on the way out */
    s->stop = 1;            /* nothing more is parsed */
    s->paused = 0;
    s->pend_len = 0;
    conn_retime(c, false);
    return true;
}

/*
 * After the first chunk: a lone request that asked to close, answered in
 * full at once, leaves nothing to read; the connection closes when the
 * answer is sent, with no receive to cancel on the way (a Connection: close
 * load then costs one SQE and two CQEs less per connection).
 */
static bool conn_read_done(const struct conn *c)
{
    const struct sess *s = c->s;
    return s && s->q.head && s->q.head == s->q.tail && (s->q.head->flags & R_CLOSE) &&
           (s->q.head->flags & R_DONE) && !s->cur && !s->in_msg && !s->pend_len &&
           !s->dropped;
}

/* Keeps reading after the first chunk, unless there is nothing to read or
 * the stash is already over the back-pressure mark (conn_resume re-arms). */
static void conn_read_on(struct conn *c)
{
    if (eddy_op_active(&c->rop) || conn_closing(c) || c->state == CONN_EOF ||
        (c->flags & C_READSTOP) ||
        conn_read_done(c))
        return;
    if (c->s && c->s->paused && c->s->pend_len > PEND_STOP) {
        c->flags |= C_READSTOP;
        c->srv->st.read_stops++;
        return;
    }
    if (eddy_recv_multi(c->srv->loop, &c->rop, c->fd, c->srv->pool, recv_cb) < 0)
        conn_close(c);
}

static void recv_cb(struct eddy_op *op, int res)
{
    struct conn *c = eddy_container_of(op, struct conn, rop);
    struct eddy_http_server *srv = c->srv;
    /* The first receive is an eddy_recv_once: its data comes final. */
    bool first = !(op->flags & EDDY_OP_MORE) && (op->flags & EDDY_OP_BUFFER);
    if (!(op->flags & EDDY_OP_MORE) && !first) {
        /* The receive ended: EOF, an error, or our cancel. */
        if (res == -ECANCELED && (c->flags & C_READSTOP) && !conn_closing(c)) {
            /* Stopped for back-pressure: conn_resume re-arms, unless the
             * answers drained while the cancel was on its way. */
            if (c->s && c->s->paused)
                return;
            c->flags &= (uint8_t)~C_READSTOP;
            if (eddy_recv_multi(srv->loop, &c->rop, c->fd, srv->pool, recv_cb) == 0)
                return;
        }
        if (res == 0 && eof_keep_answers(c))
            return;
        conn_close(c);
        return;
    }
    if (op->flags & EDDY_OP_BUFFER) {
        if (c->state < CONN_LINGER) {
            if (!c->s && !sess_get(srv, c)) {
                eddy_bufpool_put(srv->pool, op->bid);
                conn_close(c);
                return;
            }
            c->s->batching = 1;
            conn_feed(c, op->buf, (size_t)res);
        }
        eddy_bufpool_put(srv->pool, op->bid);
    }
    if (conn_closing(c)) {
        if (first)
            conn_close(c); /* it waited for this receive to end */
        return;
    }
    if (!c->s)
        return;
    c->s->batching = 1;
    dispatch_new(c->s);
    c->s->batching = 0;
    if (conn_closing(c))
        return;
    sess_flush(c->s);
    if (conn_closing(c))
        return;
    if (first) {
        conn_read_on(c);
        if (conn_closing(c))
            return;
    }
    sess_release_if_idle(c);
    conn_retime(c, true);
}

/* ---- accepting --------------------------------------------------------- */

static struct conn *conn_get(struct eddy_http_server *srv)
{
    struct conn *c = pool_take(srv, &srv->cfree, sizeof *c, 64, offsetof(struct conn, tnext));
    if (c)
        memset(c, 0, sizeof *c);
    return c;
}

/* Serves the connected socket fd (owned from here on, closed on error). */
int conn_start(struct eddy_http_server *srv, int fd)
{
    struct conn *c = conn_get(srv);
    if (!c) {
        close(fd);
        return -ENOMEM;
    }
    c->srv = srv;
    c->fd = fd;
    srv->nconns++;
    tl_append(srv, c, TL_HEAD);
    int rc = eddy_recv_once(srv->loop, &c->rop, fd, srv->pool, recv_cb);
    if (rc < 0) {
        tl_remove(srv, c);
        c->state = CONN_CLOSING; /* nothing to cancel, nothing to abort */
        conn_close(c);
        return rc; /* the descriptor closes through conn_close */
    }
    return 0;
}


/* ---- the sweep --------------------------------------------------------- */

static void expire(struct conn *c)
{
    struct eddy_http_server *srv = c->srv;
    srv->st.timeouts++;
    switch (c->tl) {
    case TL_HEAD:
    case TL_BODY:
        if (c->s && c->s->in_msg && !eddy_op_active(&c->s->sop)) {
            /* slowloris: say why, then close */
            tl_remove(srv, c);
            tl_append(srv, c, TL_NONE);
            conn_error(c, 408);
            if (!conn_closing(c))
                conn_retime(c, false);
            return;
        }
        conn_close(c);
        return;
    default:
        conn_close(c); /* idle, slow reader, linger, handlers after the EOF: quietly */
        return;
    }
}

void sweep_cb(struct eddy_op *op, int res)
{
    struct eddy_http_server *srv = eddy_container_of(op, struct eddy_http_server, top);
    if (!(op->flags & EDDY_OP_MORE)) {
        /* Not check_done's cancel but an error: every timeout (and the
         * drain) depends on this timer, so it starts again. */
        if (res != -ECANCELED &&
            eddy_timer_repeat(srv->loop, op, srv->o.sweep_ms, sweep_cb) == 0)
            return;
        srv->timer_dead = true;
        check_done(srv);
        return;
    }
    date_refresh(srv);
    int64_t now = eddy_now_ns(srv->loop);
    for (unsigned t = TL_HEAD; t < TL_COUNT; t++) {
        struct conn_list *q = &srv->tl[t];
        /* Bounded per list: an expired entry always leaves the list (or
         * moves to TL_NONE), so this terminates. */
        while (q->head && q->head->since + srv->tl_ns[t] <= now)
            expire(q->head);
    }
    if (srv->shutting && now >= srv->drain_deadline) {
        for (unsigned t = 0; t < TL_COUNT; t++)
            while (srv->tl[t].head)
                conn_close(srv->tl[t].head);
    }
    check_done(srv);
}

