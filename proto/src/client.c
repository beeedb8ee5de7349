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
#include "client.h"

#include "eddy/fiber.h"

#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <unistd.h>

enum { F_IDLE = 0, F_QUEUED, F_CONN, F_FINISHING };
enum { C_CONNECTING = 1, C_SENDING, C_RECEIVING, C_IDLE, C_CLOSING };

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
    int rc = resolver_init(&cli->rs);
    if (rc < 0) {
        eddy_loop_free(loop, cli);
        return rc;
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
    for (struct eddy_http_fetch *f = cli->active.head, *n; f; f = n) {
        n = f->p_.anext;
        eddy_http_fetch_cancel(cli, f);
    }
    for (struct origin *o = cli->origins.head, *on; o; o = on) {
        on = o->next; /* closing cannot free o: the closes are still in flight */
        while (o->idle.head)
            conn_close(o->idle.head);
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
    resolver_destroy(&cli->rs);
    eddy_loop_detach(cli->loop);
    struct origin *o;
    while ((o = origin_list_pop(&cli->origins)))
        eddy_loop_free(cli->loop, o);
    eddy_loop_free(cli->loop, cli);
    return 0;
}

/* ---- origins ------------------------------------------------------------ */

static struct origin *origin_get(struct eddy_http_client *cli, const struct url *u)
{
    for (struct origin *o = cli->origins.head; o; o = o->next)
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
    origin_list_push(&cli->origins, o);
    cli->norigins++;
    return o;
}

/* Frees o when nothing uses it; o must not be used after. */
static void origin_maybe_free(struct origin *o)
{
    if (o->nconns || !fetch_queue_empty(&o->q) || o->resolve == RS_BUSY)
        return;
    struct eddy_http_client *cli = o->cli;
    origin_list_remove(&cli->origins, o);
    cli->norigins--;
    eddy_loop_free(cli->loop, o);
}

/* Queues f on o: at the tail, or (a retry) at the head.  list.h pushes at
 * the tail only, so the head is made by moving the rest behind f: O(queue),
 * on the rare retry path alone. */
static void queue_push(struct origin *o, struct eddy_http_fetch *f, bool front)
{
    f->p_.origin = o;
    f->p_.state = F_QUEUED;
    if (front) {
        struct fetch_queue behind = o->q;
        struct eddy_http_fetch *x;
        o->q.head = o->q.tail = NULL;
        fetch_queue_push(&o->q, f);
        while ((x = fetch_queue_pop(&behind)))
            fetch_queue_push(&o->q, x);
    } else {
        fetch_queue_push(&o->q, f);
    }
    o->cli->nqueued++;
}

static void queue_remove(struct origin *o, struct eddy_http_fetch *f)
{
    fetch_queue_remove(&o->q, f);
    o->cli->nqueued--;
}

/* resolve.c's result, on the loop thread. */
void origin_resolved(struct origin *o, int res)
{
    struct eddy_http_client *cli = o->cli;
    if (res < 0) {
        o->resolve = RS_NONE; /* a later fetch tries again */
        struct eddy_http_fetch *f;
        while ((f = o->q.head)) {
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

/* Frees c, whose descriptor is closed (or was never made). */
static void conn_free(struct conn *c)
{
    struct origin *o = c->o;
    struct eddy_http_client *cli = o->cli;
    o->nconns--;
    cli->nconns--;
    eddy_loop_free(cli->loop, c);
    origin_dispatch(o); /* a slot is free: the next queued fetch may connect */
    origin_maybe_free(o);
    client_maybe_done(cli);
}

static void on_closed(struct eddy_op *op, int res)
{
    (void)res;
    conn_free(eddy_container_of(op, struct conn, close_op));
}

static void idle_unlink(struct conn *c)
{
    struct origin *o = c->o;
    idle_list_remove(&o->idle, c);
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
    for (struct origin *o = cli->origins.head; o; o = o->next) {
        /* Least recently used first: the expired ones lead the list. */
        while (o->idle.head && o->idle.head->idle_since + idle_ns <= now)
            conn_close(o->idle.head);
        if (o->idle.head && (!next || o->idle.head->idle_since + idle_ns < next))
            next = o->idle.head->idle_since + idle_ns;
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
    idle_list_push(&o->idle, c); /* the most recently used is the tail */
    cli->nidle++;
    arm_idle_timer(cli, c->idle_since + (int64_t)cli->o.keepalive_idle_ms * 1000000);
}

/* A pooled connection the server closed (or wrote to unasked) must not be
 * used: one non-blocking peek tells.  A direct call, not an operation: it
 * never blocks, and its answer decides now which connection the fetch takes. */
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

/* Ends c's fetch with err, and c with it. */
static void conn_fail(struct conn *c, int err)
{
    conn_done(c, err);
    conn_close(c);
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
        int err = res < 0 ? map_err(res) : resp_eof(&c->rp);
        conn_fail(c, err == 1 ? 0 : err);
        return;
    }
    c->got += (size_t)res;
    size_t used = 0;
    int rc = resp_feed(&c->rp, c->rbuf, (size_t)res, &used);
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
        conn_fail(c, rc);
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
        conn_fail(c, map_err(res));
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
    resp_begin(&c->rp, &f->resp, c->o->cli->o.max_response_bytes, f->p_.head);
    int rc = eddy_sendmsg(c->o->cli->loop, &c->op, c->fd, &c->msg, 0, on_sent);
    if (rc < 0) {
        conn_fail(c, rc);
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
            conn_done(c, res);
            conn_free(c);
            return;
        }
        conn_fail(c, map_err(res));
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
    struct eddy_http_fetch *f;
    while ((f = o->q.head)) {
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
        if (!f->p_.fresh && o->idle.tail) {
            struct conn *c = o->idle.tail; /* the most recently used */
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
        if (f->p_.fresh && o->idle.head) {
            /* A retry wants a new connection: make room for it. */
            conn_close(o->idle.head);
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
    fetch_list_remove(&cli->active, f);
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
        if (fetch_queue_empty(&o->q))
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
    if (f->p_.state != F_FINISHING && res != -ECANCELED) {
        /* Fired (or ended by an error, which would leave f without a
         * deadline: a timeout too).  Delivers, or has the connection's
         * callback deliver; f may be gone (freed by its callback) after this. */
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
    struct url u;
    int rc = url_parse(f->url, &u);
    if (rc < 0)
        return rc;
    if (f->body_len && !f->body)
        return -EINVAL;
    const char *m = f->method ? f->method : "GET";
    struct request_spec s = {
        .method = m, .url = &u, .headers = f->headers, .nheaders = f->nheaders,
        .args = f->args, .nargs = f->nargs, .raw_body_len = f->body ? f->body_len : 0,
        .content_type = f->content_type,
    };
    char *req;
    size_t len;
    rc = request_build(cli->loop, &s, &req, &len);
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
    f->p_.idempotent = method_idempotent(m);
    f->p_.head = !strcmp(m, "HEAD");
    f->p_.fresh = 0;
    f->p_.next = f->p_.prev = f->p_.anext = f->p_.aprev = NULL; /* off every list while idle */
    fetch_list_push(&cli->active, f);
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
    int rc = eddy_fiber_check(); /* -EPERM, -ECANCELED, -ETIME: start nothing */
    if (rc < 0)
        return rc;
    rc = eddy_fiber_loop(eddy_fiber_self()) != cli->loop ? -EINVAL
                                                         : eddy_http_fetch_start(cli, f, await_done);
    if (rc < 0) {
        eddy_fiber_timeout_clear(); /* this call's deadline is used up */
        return rc;
    }
    struct fetch_wait fw;
    memset(&fw, 0, sizeof fw);
    fw.cli = cli;
    fw.f = f;
    f->p_.waiter = &fw;
    return eddy_fiber_suspend(&fw.w, await_cancel);
}
