/*
 * The asynchronous HTTP/1.1 client: per-origin keep-alive pools with a
 * connection cap and a FIFO queue beyond it, names resolved by the client's
 * own resolver threads, one request at a time per connection (no
 * pipelining).
 *
 * Lifetimes.  A fetch's callback runs only when nothing of the client still
 * refers to the fetch's memory: its request timer has ended (it is
 * cancelled when the result is decided, and the cancellation's final
 * callback delivers the result) and no connection operation points at its
 * request buffer.  So the caller may free or restart the fetch inside its
 * callback.  A connection is freed in the callback of its close.
 */
#define _GNU_SOURCE
#include "url.h"

#include "eddy/fiber.h"

#include <errno.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <unistd.h>

enum { F_IDLE = 0, F_QUEUED, F_CONN, F_FINISHING };
enum { C_CONNECTING = 1, C_SENDING, C_RECEIVING, C_IDLE, C_CLOSING };
enum { RS_NONE = 0, RS_BUSY, RS_OK };
#define MAX_ADDRS 4
#define RBUF_SIZE 16384
#define RESOLVER_THREADS 2

struct conn;

struct origin {
    struct origin *next, *prev;
    struct eddy_http_client *cli;
    char host[256];
    uint16_t port;
    int resolve;
    int naddrs;
    struct sockaddr_storage addrs[MAX_ADDRS];
    socklen_t addrlens[MAX_ADDRS];
    struct origin *rnext, *rprev;     /* the resolver's queue */
    int rqueued;                      /* in that queue, no thread yet (resolver's mutex) */
    int rres;                         /* the resolution's result */
    struct eddy_op resolved;          /* posts the result back to the loop */
    unsigned nconns;                  /* every connection, closing ones too */
    struct conn *idle_head, *idle_tail; /* most recently used first */
    struct eddy_http_fetch *qhead, *qtail;
};

struct conn {
    struct conn *next, *prev;         /* the origin's idle list */
    struct origin *o;
    struct eddy_http_fetch *f;
    int fd;
    int state;
    int addr_idx;
    unsigned served;                  /* responses completed on it */
    size_t got;                       /* bytes of the current response */
    int64_t idle_since;
    struct eddy_op op;                /* connect, send, recv: one at a time */
    struct eddy_op close_op;
    struct msghdr msg;
    struct eddy_resp_parser rp;
    char rbuf[RBUF_SIZE];
};

/*
 * Name resolution has threads of its own rather than the loop's worker
 * pool, whose threads users fill with blocking work of their own: a fetch
 * must not wait behind that.  Up to RESOLVER_THREADS threads, started when
 * a name is queued and no thread is idle, living until the client is
 * destroyed.  The mutex guards the queue (with each origin's rqueued), the
 * counts and stop.  An origin being resolved belongs to the resolver until
 * its result is posted back; one still waiting in the queue may be taken
 * out again by the loop thread (resolve_drop) when nobody wants it.
 */
struct resolver {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    struct origin *head, *tail;       /* names waiting for a thread */
    unsigned nwait, nidle, nthreads;
    int stop;
    pthread_t th[RESOLVER_THREADS];
};

struct eddy_http_client {
    struct eddy_loop *loop;
    struct resolver rs;
    struct eddy_http_client_options o;
    struct origin *origins;
    struct eddy_http_fetch *active;
    unsigned nfetches, nconns, nidle, nqueued, nresolving, norigins;
    struct eddy_op idle_timer;
    struct eddy_op done_post;
    int closing, done_posted;
    unsigned in_cb;                   /* inside a fetch callback: no destroy */
    eddy_http_client_done_cb done;
    void *done_ud;
    struct eddy_http_client_stats st;
};

static void origin_dispatch(struct origin *o);
static void conn_close(struct conn *c);
static void fetch_finish(struct eddy_http_fetch *f, int err);

/* ---- client ------------------------------------------------------------- */

int eddy_http_client_init(struct eddy_http_client **out, struct eddy_loop *loop,
                          const struct eddy_http_client_options *opts)
{
    struct eddy_http_client *cli = eddy_loop_alloc(loop, sizeof *cli);
    if (!cli)
        return -ENOMEM;
    memset(cli, 0, sizeof *cli);
    int rc = pthread_mutex_init(&cli->rs.mu, NULL);
    if (rc == 0) {
        rc = pthread_cond_init(&cli->rs.cv, NULL);
        if (rc != 0)
            pthread_mutex_destroy(&cli->rs.mu);
    }
    if (rc != 0) {
        eddy_loop_free(loop, cli);
        return -rc;
    }
    cli->loop = loop;
    if (opts)
        cli->o = *opts;
    if (!cli->o.max_conns_per_origin)
        cli->o.max_conns_per_origin = 8;
    if (!cli->o.connect_timeout_ms)
        cli->o.connect_timeout_ms = 20000;
    if (!cli->o.request_timeout_ms)
        cli->o.request_timeout_ms = 60000;
    if (!cli->o.max_response_bytes)
        cli->o.max_response_bytes = 16u << 20;
    if (!cli->o.keepalive_idle_ms)
        cli->o.keepalive_idle_ms = 30000;
    eddy_loop_attach(loop); /* the loop outlives the client */
    *out = cli;
    return 0;
}

void eddy_http_client_stats(const struct eddy_http_client *cli,
                            struct eddy_http_client_stats *out)
{
    *out = cli->st;
    out->resolver_threads = cli->rs.nthreads;
    out->conns = cli->nconns;
    out->idle = cli->nidle;
    out->queued = cli->nqueued;
    out->active = cli->nfetches;
    out->origins = cli->norigins;
}

static void done_cb(struct eddy_op *op, int res)
{
    struct eddy_http_client *cli = eddy_container_of(op, struct eddy_http_client, done_post);
    (void)res;
    if (cli->done)
        cli->done(cli, cli->done_ud);
}

static void client_maybe_done(struct eddy_http_client *cli)
{
    if (!cli->closing || cli->done_posted || cli->nfetches || cli->nconns ||
        cli->nresolving || eddy_op_active(&cli->idle_timer))
        return;
    cli->done_posted = 1;
    eddy_post(cli->loop, &cli->done_post, done_cb);
}

int eddy_http_client_close(struct eddy_http_client *cli, eddy_http_client_done_cb done,
                           void *ud)
{
    if (cli->closing)
        return -EALREADY;
    cli->closing = 1;
    cli->done = done;
    cli->done_ud = ud;
    /* Cancelling every fetch empties every origin's queue, which drops
     * each name no resolver thread has picked yet (fetch_abort): done
     * waits only for the names being resolved now. */
    for (struct eddy_http_fetch *f = cli->active, *n; f; f = n) {
        n = f->p_.anext;
        eddy_http_fetch_cancel(cli, f);
    }
    for (struct origin *o = cli->origins, *on; o; o = on) {
        on = o->next; /* closing cannot free o: the closes are still in flight */
        while (o->idle_head)
            conn_close(o->idle_head);
    }
    if (eddy_op_active(&cli->idle_timer))
        eddy_cancel(cli->loop, &cli->idle_timer);
    client_maybe_done(cli);
    return 0;
}

int eddy_http_client_destroy(struct eddy_http_client *cli)
{
    if (cli->nfetches || cli->nconns || cli->nresolving || cli->in_cb ||
        eddy_op_active(&cli->idle_timer) || eddy_op_active(&cli->done_post))
        return -EBUSY;
    /* Every resolution has been posted back: the threads are idle, or about
     * to be.  Joining them cannot wait for a name. */
    pthread_mutex_lock(&cli->rs.mu);
    cli->rs.stop = 1;
    pthread_cond_broadcast(&cli->rs.cv);
    pthread_mutex_unlock(&cli->rs.mu);
    for (unsigned i = 0; i < cli->rs.nthreads; i++)
        pthread_join(cli->rs.th[i], NULL);
    pthread_cond_destroy(&cli->rs.cv);
    pthread_mutex_destroy(&cli->rs.mu);
    eddy_loop_detach(cli->loop);
    while (cli->origins) {
        struct origin *o = cli->origins;
        cli->origins = o->next;
        eddy_loop_free(cli->loop, o);
    }
    eddy_loop_free(cli->loop, cli);
    return 0;
}

/* ---- origins ------------------------------------------------------------ */

static struct origin *origin_get(struct eddy_http_client *cli, const struct eddy_url *u)
{
    for (struct origin *o = cli->origins; o; o = o->next)
        if (o->port == u->port && !strcasecmp(o->host, u->host))
            return o;
    struct origin *o = eddy_loop_alloc(cli->loop, sizeof *o);
    if (!o)
        return NULL;
    memset(o, 0, sizeof *o);
    o->cli = cli;
    memcpy(o->host, u->host, sizeof o->host);
    o->port = u->port;
    if (u->addrlen) {
        o->addrs[0] = u->addr;
        o->addrlens[0] = u->addrlen;
        o->naddrs = 1;
        o->resolve = RS_OK;
    }
    o->next = cli->origins;
    if (o->next)
        o->next->prev = o;
    cli->origins = o;
    cli->norigins++;
    return o;
}

/* Frees o when nothing uses it; o must not be used after. */
static void origin_maybe_free(struct origin *o)
{
    if (o->nconns || o->qhead || o->resolve == RS_BUSY)
        return;
    struct eddy_http_client *cli = o->cli;
    if (o->prev)
        o->prev->next = o->next;
    else
        cli->origins = o->next;
    if (o->next)
        o->next->prev = o->prev;
    cli->norigins--;
    eddy_loop_free(cli->loop, o);
}

static void queue_push(struct origin *o, struct eddy_http_fetch *f, int front)
{
    f->p_.origin = o;
    f->p_.state = F_QUEUED;
    f->p_.prev = f->p_.next = NULL;
    if (front) {
        f->p_.next = o->qhead;
        if (o->qhead)
            o->qhead->p_.prev = f;
        else
            o->qtail = f;
        o->qhead = f;
    } else {
        f->p_.prev = o->qtail;
        if (o->qtail)
            o->qtail->p_.next = f;
        else
            o->qhead = f;
        o->qtail = f;
    }
    o->cli->nqueued++;
}

static void queue_remove(struct origin *o, struct eddy_http_fetch *f)
{
    if (f->p_.prev)
        f->p_.prev->p_.next = f->p_.next;
    else
        o->qhead = f->p_.next;
    if (f->p_.next)
        f->p_.next->p_.prev = f->p_.prev;
    else
        o->qtail = f->p_.prev;
    f->p_.next = f->p_.prev = NULL;
    o->cli->nqueued--;
}

/* Runs on a resolver thread: touches only o->host, o->port and o->addrs,
 * which the loop thread leaves alone while the resolution is busy. */
static int resolve(struct origin *o)
{
    struct addrinfo hints, *res = NULL;
    memset(&hints, 0, sizeof hints);
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    int rc = getaddrinfo(o->host, NULL, &hints, &res);
    if (rc != 0)
        return gai_to_errno(rc);
    int n = 0;
    for (struct addrinfo *ai = res; ai && n < MAX_ADDRS; ai = ai->ai_next) {
        if (ai->ai_family != AF_INET && ai->ai_family != AF_INET6)
            continue;
        memcpy(&o->addrs[n], ai->ai_addr, ai->ai_addrlen);
        o->addrlens[n] = ai->ai_addrlen;
        if (ai->ai_family == AF_INET)
            ((struct sockaddr_in *)&o->addrs[n])->sin_port = htons(o->port);
        else
            ((struct sockaddr_in6 *)&o->addrs[n])->sin6_port = htons(o->port);
        n++;
    }
    freeaddrinfo(res);
    o->naddrs = n;
    return n ? 0 : -ENOENT;
}

static void on_resolved(struct eddy_op *op, int res);

static void *resolver_main(void *arg)
{
    struct eddy_http_client *cli = arg;
    struct resolver *rs = &cli->rs;
    pthread_mutex_lock(&rs->mu);
    for (;;) {
        if (!rs->head) {
            if (rs->stop)
                break;
            rs->nidle++;
            pthread_cond_wait(&rs->cv, &rs->mu);
            rs->nidle--;
            continue;
        }
        struct origin *o = rs->head;
        rs->head = o->rnext;
        if (rs->head)
            rs->head->rprev = NULL;
        else
            rs->tail = NULL;
        o->rnext = NULL;
        o->rqueued = 0;
        rs->nwait--;
        pthread_mutex_unlock(&rs->mu);
        o->rres = resolve(o);
        /* o is the loop's again from here.  The client outlives this: its
         * destroy waits for every result and then joins us. */
        eddy_post_threadsafe(cli->loop, &o->resolved, on_resolved);
        pthread_mutex_lock(&rs->mu);
    }
    pthread_mutex_unlock(&rs->mu);
    return NULL;
}

/* Queues o for resolution, starting a thread when none is idle and the cap
 * allows.  0, or -errno of pthread_create when no thread exists at all. */
static int resolve_start(struct origin *o)
{
    struct eddy_http_client *cli = o->cli;
    struct resolver *rs = &cli->rs;
    int rc = 0;
    pthread_mutex_lock(&rs->mu);
    if (rs->nwait >= rs->nidle && rs->nthreads < RESOLVER_THREADS) {
        /* Every signal blocked in the thread, as in the worker pool: a
         * process that takes its signals through eddy_signal() (a
         * signalfd) must not have them delivered to a thread of ours. */
        sigset_t all, old;
        sigfillset(&all);
        pthread_sigmask(SIG_SETMASK, &all, &old);
        rc = pthread_create(&rs->th[rs->nthreads], NULL, resolver_main, cli);
        pthread_sigmask(SIG_SETMASK, &old, NULL);
        if (rc == 0)
            rs->nthreads++;
        else if (rs->nthreads > 0)
            rc = 0; /* a running thread gets to it */
    }
    if (rc == 0) {
        o->rnext = NULL;
        o->rprev = rs->tail;
        if (rs->tail)
            rs->tail->rnext = o;
        else
            rs->head = o;
        rs->tail = o;
        o->rqueued = 1;
        rs->nwait++;
        pthread_cond_signal(&rs->cv);
    }
    pthread_mutex_unlock(&rs->mu);
    if (rc != 0)
        return -rc;
    cli->nresolving++;
    eddy_loop_ref(cli->loop); /* the result comes as a post: keep the loop running */
    return 0;
}

/* Nobody wants o's name any more: takes its resolution out of the
 * resolver's queue if no thread has picked it yet, and ends it here, so
 * close and destroy wait only for the names a thread is resolving.  A
 * running resolution cannot be stopped; its result comes as usual.  The
 * caller frees o (origin_maybe_free) if it is unused. */
static void resolve_drop(struct origin *o)
{
    struct eddy_http_client *cli = o->cli;
    struct resolver *rs = &cli->rs;
    if (o->resolve != RS_BUSY)
        return;
    pthread_mutex_lock(&rs->mu);
    int queued = o->rqueued;
    if (queued) {
        if (o->rprev)
            o->rprev->rnext = o->rnext;
        else
            rs->head = o->rnext;
        if (o->rnext)
            o->rnext->rprev = o->rprev;
        else
            rs->tail = o->rprev;
        o->rnext = o->rprev = NULL;
        o->rqueued = 0;
        rs->nwait--;
    }
    pthread_mutex_unlock(&rs->mu);
    if (!queued)
        return;
    cli->nresolving--;
    eddy_loop_unref(cli->loop);
    o->resolve = RS_NONE; /* a later fetch queues the name again */
}

static void on_resolved(struct eddy_op *op, int posted)
{
    struct origin *o = eddy_container_of(op, struct origin, resolved);
    struct eddy_http_client *cli = o->cli;
    int res = o->rres;
    (void)posted;
    cli->nresolving--;
    cli->st.resolutions++;
    eddy_loop_unref(cli->loop);
    if (res < 0) {
        o->resolve = RS_NONE; /* a later fetch tries again */
        while (o->qhead) {
            struct eddy_http_fetch *f = o->qhead;
            queue_remove(o, f);
            fetch_finish(f, res);
        }
    } else {
        o->resolve = RS_OK;
        origin_dispatch(o);
    }
    origin_maybe_free(o);
    client_maybe_done(cli);
}

/* ---- connections -------------------------------------------------------- */

static int map_err(int err)
{
    switch (err) {
    case -ETIME:
        return -ETIMEDOUT;
    case -EPIPE:
        return -ECONNRESET;
    default:
        return err;
    }
}

static void on_closed(struct eddy_op *op, int res)
{
    struct conn *c = eddy_container_of(op, struct conn, close_op);
    struct origin *o = c->o;
    struct eddy_http_client *cli = o->cli;
    (void)res;
    o->nconns--;
    cli->nconns--;
    eddy_loop_free(cli->loop, c);
    origin_dispatch(o); /* a slot is free: the next queued fetch may connect */
    origin_maybe_free(o);
    client_maybe_done(cli);
}

static void idle_unlink(struct conn *c)
{
    struct origin *o = c->o;
    if (c->prev)
        c->prev->next = c->next;
    else
        o->idle_head = c->next;
    if (c->next)
        c->next->prev = c->prev;
    else
        o->idle_tail = c->prev;
    c->next = c->prev = NULL;
    o->cli->nidle--;
    /* Nothing left to expire: the timer must not keep the loop alive. */
    if (o->cli->nidle == 0 && eddy_op_active(&o->cli->idle_timer))
        eddy_cancel(o->cli->loop, &o->cli->idle_timer);
}

static void conn_close(struct conn *c)
{
    if (c->state == C_IDLE)
        idle_unlink(c);
    c->state = C_CLOSING;
    c->f = NULL;
    /* eddy_close only fails for a negative fd, which a conn never has. */
    eddy_close(c->o->cli->loop, &c->close_op, c->fd, on_closed);
}

static void on_idle_timer(struct eddy_op *op, int res);

static void arm_idle_timer(struct eddy_http_client *cli, int64_t at_ns)
{
    if (!eddy_op_active(&cli->idle_timer) && !cli->closing)
        eddy_timer_at(cli->loop, &cli->idle_timer, at_ns, on_idle_timer);
}

static void on_idle_timer(struct eddy_op *op, int res)
{
    struct eddy_http_client *cli = eddy_container_of(op, struct eddy_http_client, idle_timer);
    (void)res;
    if (cli->closing) {
        client_maybe_done(cli);
        return;
    }
    int64_t now = eddy_update_time(cli->loop);
    int64_t idle_ns = (int64_t)cli->o.keepalive_idle_ms * 1000000;
    int64_t next = 0;
    for (struct origin *o = cli->origins; o; o = o->next) {
        while (o->idle_tail && o->idle_tail->idle_since + idle_ns <= now)
            conn_close(o->idle_tail);
        if (o->idle_tail && (!next || o->idle_tail->idle_since + idle_ns < next))
            next = o->idle_tail->idle_since + idle_ns;
    }
    if (next)
        arm_idle_timer(cli, next);
}

static void conn_idle(struct conn *c)
{
    struct origin *o = c->o;
    struct eddy_http_client *cli = o->cli;
    if (cli->closing) {
        conn_close(c);
        return;
    }
    c->state = C_IDLE;
    c->idle_since = eddy_update_time(cli->loop);
    c->prev = NULL;
    c->next = o->idle_head;
    if (o->idle_head)
        o->idle_head->prev = c;
    else
        o->idle_tail = c;
    o->idle_head = c;
    cli->nidle++;
    arm_idle_timer(cli, c->idle_since + (int64_t)cli->o.keepalive_idle_ms * 1000000);
}

/* A pooled connection the server closed (or wrote to unasked) must not be
 * used: one non-blocking peek tells. */
static int conn_alive(struct conn *c)
{
    char b;
    ssize_t n = recv(c->fd, &b, 1, MSG_PEEK | MSG_DONTWAIT);
    return n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK);
}

/* Detaches f from c and decides f's result; c must be handled by the caller. */
static void conn_done(struct conn *c, int err)
{
    struct eddy_http_fetch *f = c->f;
    c->f = NULL;
    f->p_.conn = NULL;
    fetch_finish(f, err);
}

/* The server closed a reused connection before answering: try once more
 * on a fresh connection if the method allows it. */
static int conn_stale_retry(struct conn *c)
{
    struct eddy_http_fetch *f = c->f;
    if (!c->served || c->got || !f->p_.idempotent || f->p_.fresh)
        return 0;
    struct origin *o = c->o;
    c->f = NULL;
    f->p_.conn = NULL;
    conn_close(c);
    f->p_.fresh = 1;
    o->cli->st.retries++;
    eddy_http_response_free(&f->resp);
    queue_push(o, f, 1);
    origin_dispatch(o);
    return 1;
}

/* The fetch was cancelled or timed out while c worked for it. */
static int conn_check_abandoned(struct conn *c)
{
    struct eddy_http_fetch *f = c->f;
    if (f->p_.state != F_FINISHING)
        return 0;
    c->f = NULL;
    f->p_.conn = NULL;
    conn_close(c);
    fetch_finish(f, f->p_.err);
    return 1;
}

static void conn_recv(struct conn *c);

static void on_recv(struct eddy_op *op, int res)
{
    struct conn *c = eddy_container_of(op, struct conn, op);
    if (conn_check_abandoned(c))
        return;
    if (res <= 0) {
        if ((res == 0 || res == -ECONNRESET) && conn_stale_retry(c))
            return;
        int err = res < 0 ? map_err(res) : eddy_resp_eof(&c->rp);
        conn_done(c, err == 1 ? 0 : err);
        conn_close(c);
        return;
    }
    c->got += (size_t)res;
    size_t used = 0;
    int rc = eddy_resp_feed(&c->rp, c->rbuf, (size_t)res, &used);
    if (rc == 0) {
        conn_recv(c);
        return;
    }
    int keep = rc == 1 && c->rp.keepalive && used == (size_t)res;
    conn_done(c, rc == 1 ? 0 : rc);
    if (keep) {
        c->served++;
        conn_idle(c);
        origin_dispatch(c->o);
    } else {
        conn_close(c);
    }
}

static void conn_recv(struct conn *c)
{
    c->state = C_RECEIVING;
    int rc = eddy_recv(c->o->cli->loop, &c->op, c->fd, c->rbuf, sizeof c->rbuf, 0, on_recv);
    if (rc < 0) {
        conn_done(c, rc);
        conn_close(c);
    }
}

static void on_sent(struct eddy_op *op, int res)
{
    struct conn *c = eddy_container_of(op, struct conn, op);
    if (conn_check_abandoned(c))
        return;
    if (res < 0) {
        if ((res == -EPIPE || res == -ECONNRESET) && conn_stale_retry(c))
            return;
        conn_done(c, map_err(res));
        conn_close(c);
        return;
    }
    conn_recv(c);
}

static void conn_send(struct conn *c)
{
    struct eddy_http_fetch *f = c->f;
    c->state = C_SENDING;
    c->got = 0;
    f->p_.iov[0].iov_base = f->p_.req;
    f->p_.iov[0].iov_len = f->p_.req_len;
    f->p_.iov[1].iov_base = (void *)f->body;
    f->p_.iov[1].iov_len = f->body ? f->body_len : 0;
    memset(&c->msg, 0, sizeof c->msg);
    c->msg.msg_iov = f->p_.iov;
    c->msg.msg_iovlen = f->p_.iov[1].iov_len ? 2 : 1;
    eddy_resp_begin(&c->rp, &f->resp, c->o->cli->o.max_response_bytes, f->p_.head);
    int rc = eddy_sendmsg(c->o->cli->loop, &c->op, c->fd, &c->msg, 0, on_sent);
    if (rc < 0) {
        conn_done(c, rc);
        conn_close(c);
    }
}

static int conn_connect(struct conn *c);

static void on_connected(struct eddy_op *op, int res)
{
    struct conn *c = eddy_container_of(op, struct conn, op);
    if (conn_check_abandoned(c))
        return;
    if (res < 0) {
        /* Another address of the name may answer (localhost: ::1, then 127.0.0.1). */
        if ((res == -ECONNREFUSED || res == -ENETUNREACH || res == -EHOSTUNREACH ||
             res == -EADDRNOTAVAIL || res == -EAFNOSUPPORT) &&
            c->addr_idx + 1 < c->o->naddrs) {
            close(c->fd); /* never carried a byte; no op refers to it */
            c->fd = -1;
            c->addr_idx++;
            int rc = conn_connect(c);
            if (rc == 0)
                return;
            res = rc;
            /* fd is -1: free the conn here rather than through a close */
            struct origin *o = c->o;
            struct eddy_http_client *cli = o->cli;
            conn_done(c, res);
            o->nconns--;
            cli->nconns--;
            eddy_loop_free(cli->loop, c);
            origin_dispatch(o);
            origin_maybe_free(o);
            client_maybe_done(cli);
            return;
        }
        conn_done(c, map_err(res));
        conn_close(c);
        return;
    }
    conn_send(c);
}

/* Opens the socket for the current address and starts the connect. */
static int conn_connect(struct conn *c)
{
    struct origin *o = c->o;
    struct eddy_http_client *cli = o->cli;
    const struct sockaddr_storage *a = &o->addrs[c->addr_idx];
    int fd = socket(a->ss_family, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    if (fd < 0)
        return -errno;
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    c->fd = fd;
    c->state = C_CONNECTING;
    struct eddy_http_fetch *f = c->f;
    unsigned ms = f->connect_timeout_ms ? f->connect_timeout_ms : cli->o.connect_timeout_ms;
    eddy_op_set_deadline(cli->loop, &c->op, ms);
    int rc = eddy_connect(cli->loop, &c->op, fd, (const struct sockaddr *)a,
                          o->addrlens[c->addr_idx], on_connected);
    if (rc < 0) {
        close(fd);
        c->fd = -1;
    }
    return rc;
}

static void attach(struct conn *c, struct eddy_http_fetch *f)
{
    queue_remove(c->o, f);
    f->p_.state = F_CONN;
    f->p_.conn = c;
    f->attempts++;
    c->f = f;
}

/* Gives queued fetches connections: an idle one, a new one under the cap,
 * or lets them wait.  Fetches it cannot start end here, which may leave o
 * unused: the caller calls origin_maybe_free(o) when done with o. */
static void origin_dispatch(struct origin *o)
{
    struct eddy_http_client *cli = o->cli;
    while (o->qhead) {
        struct eddy_http_fetch *f = o->qhead;
        if (o->resolve != RS_OK) {
            if (o->resolve == RS_NONE) {
                o->resolve = RS_BUSY;
                o->naddrs = 0;
                int rc = resolve_start(o);
                if (rc < 0) {
                    o->resolve = RS_NONE;
                    queue_remove(o, f);
                    fetch_finish(f, rc);
                    continue;
                }
            }
            return;
        }
        if (!f->p_.fresh && o->idle_head) {
            struct conn *c = o->idle_head;
            idle_unlink(c);
            if (!conn_alive(c)) {
                c->state = C_RECEIVING; /* not idle any more */
                conn_close(c);
                continue;
            }
            attach(c, f);
            f->reused = 1;
            cli->st.reuses++;
            conn_send(c);
            continue;
        }
        if (o->nconns < cli->o.max_conns_per_origin) {
            struct conn *c = eddy_loop_alloc(cli->loop, sizeof *c);
            if (!c) {
                queue_remove(o, f);
                fetch_finish(f, -ENOMEM);
                continue;
            }
            memset(c, 0, sizeof *c);
            c->o = o;
            c->fd = -1;
            attach(c, f);
            cli->st.connects++;
            int rc = conn_connect(c);
            if (rc < 0) {
                c->f = NULL;
                f->p_.conn = NULL;
                eddy_loop_free(cli->loop, c);
                fetch_finish(f, rc);
                continue;
            }
            o->nconns++;
            cli->nconns++;
            continue;
        }
        if (f->p_.fresh && o->idle_tail) {
            /* A retry wants a new connection: make room for it. */
            conn_close(o->idle_tail);
        }
        return;
    }
}

/* ---- fetches ------------------------------------------------------------ */

static void fetch_deliver(struct eddy_http_fetch *f)
{
    struct eddy_http_client *cli = f->p_.cli;
    if (eddy_op_active(&f->p_.timer) || f->p_.conn)
        return;
    if (f->p_.aprev)
        f->p_.aprev->p_.anext = f->p_.anext;
    else
        cli->active = f->p_.anext;
    if (f->p_.anext)
        f->p_.anext->p_.aprev = f->p_.aprev;
    f->p_.anext = f->p_.aprev = NULL;
    cli->nfetches--;
    eddy_loop_free(cli->loop, f->p_.req);
    f->p_.req = NULL;
    int err = f->p_.err;
    if (err)
        eddy_http_response_free(&f->resp);
    f->p_.state = F_IDLE;
    cli->in_cb++;
    f->p_.cb(f, err);
    cli->in_cb--;
    client_maybe_done(cli);
}

/* The result is decided; it is delivered once the timer has ended. */
static void fetch_finish(struct eddy_http_fetch *f, int err)
{
    f->p_.state = F_FINISHING;
    f->p_.err = err;
    if (eddy_op_active(&f->p_.timer))
        eddy_cancel(f->p_.cli->loop, &f->p_.timer);
    else
        fetch_deliver(f);
}

/* Ends f early (timeout, cancel) with err. */
static void fetch_abort(struct eddy_http_fetch *f, int err)
{
    switch (f->p_.state) {
    case F_QUEUED: {
        /* o is settled before f's result: from a timeout, fetch_finish
         * runs f's callback at once, and a fetch it starts may free o. */
        struct origin *o = f->p_.origin;
        queue_remove(o, f);
        if (!o->qhead)
            resolve_drop(o);
        origin_maybe_free(o);
        fetch_finish(f, err);
        break;
    }
    case F_CONN: {
        /* The connection's operation refers to f: cancel it, and its
         * callback (conn_check_abandoned) detaches f and delivers. */
        struct conn *c = f->p_.conn;
        f->p_.state = F_FINISHING;
        f->p_.err = err;
        if (eddy_op_active(&f->p_.timer))
            eddy_cancel(f->p_.cli->loop, &f->p_.timer);
        eddy_cancel(f->p_.cli->loop, &c->op);
        break;
    }
    default:
        break; /* already decided */
    }
}

static void on_timer(struct eddy_op *op, int res)
{
    struct eddy_http_fetch *f = eddy_container_of(op, struct eddy_http_fetch, p_.timer);
    if (f->p_.state != F_FINISHING && res == 0) {
        /* Delivers, or has the connection's callback deliver; f may be
         * gone (freed by its callback) after this. */
        fetch_abort(f, -ETIMEDOUT);
        return;
    }
    fetch_deliver(f);
}

int eddy_http_fetch_start(struct eddy_http_client *cli, struct eddy_http_fetch *f,
                          eddy_http_fetch_cb cb)
{
    if (cli->closing)
        return -ESHUTDOWN;
    if (f->p_.state != F_IDLE)
        return -EBUSY;
    if (!cb)
        return -EINVAL;
    struct eddy_url u;
    int rc = eddy_url_parse(f->url, &u);
    if (rc < 0)
        return rc;
    if (f->body_len && !f->body)
        return -EINVAL;
    const char *m = f->method ? f->method : "GET";
    struct eddy_req_spec s = {
        .method = m, .url = &u, .headers = f->headers, .nheaders = f->nheaders,
        .args = f->args, .nargs = f->nargs, .raw_body_len = f->body ? f->body_len : 0,
        .content_type = f->content_type,
    };
    char *req;
    size_t len;
    rc = eddy_req_build(cli->loop, &s, &req, &len);
    if (rc < 0)
        return rc;
    struct origin *o = origin_get(cli, &u);
    if (!o) {
        eddy_loop_free(cli->loop, req);
        return -ENOMEM;
    }
    unsigned ms = f->request_timeout_ms ? f->request_timeout_ms : cli->o.request_timeout_ms;
    memset(&f->p_.timer, 0, sizeof f->p_.timer);
    rc = eddy_timer(cli->loop, &f->p_.timer, ms, on_timer);
    if (rc < 0) {
        eddy_loop_free(cli->loop, req);
        origin_maybe_free(o);
        return rc;
    }
    eddy_http_response_free(&f->resp); /* with the allocator that made it */
    f->resp.loop_ = cli->loop;
    f->attempts = 0;
    f->reused = 0;
    f->p_.cli = cli;
    f->p_.cb = cb;
    f->p_.req = req;
    f->p_.req_len = len;
    f->p_.err = 0;
    f->p_.conn = NULL;
    f->p_.idempotent = eddy_method_idempotent(m);
    f->p_.head = !strcmp(m, "HEAD");
    f->p_.fresh = 0;
    f->p_.aprev = NULL;
    f->p_.anext = cli->active;
    if (cli->active)
        cli->active->p_.aprev = f;
    cli->active = f;
    cli->nfetches++;
    cli->st.fetches++;
    queue_push(o, f, 0);
    origin_dispatch(o);
    /* A failure there (no resolver thread, no socket, no memory) has
     * ended f (its callback comes later: the timer is active) and may
     * have left o unused. */
    origin_maybe_free(o);
    return 0;
}

int eddy_http_fetch_cancel(struct eddy_http_client *cli, struct eddy_http_fetch *f)
{
    (void)cli;
    if (f->p_.state == F_IDLE)
        return -ENOENT;
    fetch_abort(f, -ECANCELED);
    return 0;
}

int eddy_http_fetch_active(const struct eddy_http_fetch *f)
{
    return f->p_.state != F_IDLE;
}

void eddy_http_fetch_release(struct eddy_http_fetch *f)
{
    if (f->p_.state == F_IDLE)
        eddy_http_response_free(&f->resp);
}

/* ---- awaiting, on a fiber (eddy/fiber.h) --------------------------------- */

/* On the awaiting fiber's stack: the fiber is parked until await_done. */
struct fetch_wait {
    struct eddy_fiber_waiter w;
    struct eddy_http_client *cli;
    struct eddy_http_fetch *f;
};

/* The fetch's final callback: nothing of the client refers to f any more,
 * so the fiber may free or restart f as soon as it runs (it runs inside
 * this call). */
static void await_done(struct eddy_http_fetch *f, int err)
{
    struct fetch_wait *fw = f->p_.waiter;
    f->p_.waiter = NULL;
    eddy_fiber_wake(&fw->w, err);
}

/* The fiber was cancelled or its deadline passed: cancel the fetch; its
 * final callback (never this call's: a cancel does not deliver
 * synchronously) wakes the fiber. */
static void await_cancel(struct eddy_fiber_waiter *w)
{
    struct fetch_wait *fw = eddy_container_of(w, struct fetch_wait, w);
    eddy_http_fetch_cancel(fw->cli, fw->f);
}

int eddy_http_fetch_await(struct eddy_http_client *cli, struct eddy_http_fetch *f)
{
    struct eddy_fiber *self = eddy_fiber_self();
    if (!self)
        return -EPERM;
    if (eddy_fiber_loop(self) != cli->loop)
        return -EINVAL;
    int rc = eddy_fiber_cancelled() ? -ECANCELED : eddy_http_fetch_start(cli, f, await_done);
    if (rc < 0) {
        /* Nothing to wait for; but a deadline set for this call
         * (eddy_fiber_timeout) is used up, as by the runtime's own
         * awaiting calls: a sleep until a time past does that, and is at
         * most one yield. */
        (void)eddy_fiber_sleep_until(0);
        return rc;
    }
    struct fetch_wait fw;
    memset(&fw, 0, sizeof fw);
    fw.cli = cli;
    fw.f = f;
    f->p_.waiter = &fw;
    return eddy_fiber_suspend(&fw.w, await_cancel);
}
