/*
 * eddy-echo: a TCP echo server on the eddy runtime.
 *
 * One loop per thread, each with its own listener, a multishot accept and
 * one buffer pool.  A connection receives one pool buffer at a time; each
 * received buffer is queued on the connection and sent back straight from
 * the pool (one send for a single buffer, one sendmsg for several), and
 * goes back to the pool when its send completes.  Nothing is copied and
 * nothing is allocated per message.
 *
 * Back-pressure: the pool is shared by every connection of a loop, and a
 * peer that sends but does not read keeps its echo, and so its buffers,
 * queued.  So no connection may take the pool from the others:
 *   - a connection holding conn_max buffers (bufs/16, at least 2) stops
 *     receiving, and receives again once its sends have drained it down to
 *     conn_max/4;
 *   - while the pool is low (fewer than bufs/4 free) the mark is 1: a
 *     connection with an echo in flight receives again only once it is sent;
 *   - every send has a deadline (--send-timeout): a connection whose echo
 *     cannot be sent in time is closed, and its buffers return.
 * Peers that never read hold conn_max buffers each until the pool is low,
 * then one each: it takes about bufs/4 of them to starve the others, and
 * then only until their send timeout.
 *
 * Why not a multishot receive: it fills buffers in the kernel for as long
 * as the socket has data, and on loopback the peer's window updates refill
 * the socket within the same io_uring_enter, so one peer's burst, before its
 * cancel could land, could be as large as its send buffer (megabytes) and
 * take the whole pool.  A single receive takes one buffer, and pausing is
 * simply not asking again.  The price is one SQE per received buffer.
 *
 * The port: several loops share it through SO_REUSEPORT, which would also
 * let any other process of the same user join the group and take part of
 * the connections.  So a second server on a port in use is refused with
 * EADDRINUSE: one loop binds without SO_REUSEPORT (an exclusive bind, no
 * race); several check first that the port is free, bind, listen, and then
 * check /proc/net/tcp that every listener on the port is theirs, which
 * closes the window between the check and the bind (of two racing servers
 * at least one sees the other).  eddy_listen_tcp_n (eddy.h) does both.
 *
 * Threads: an eddy loop group (eddy/group.h) runs the loops, one per
 * thread; each builds its pool and accept in loop_setup, on its thread.
 *
 * SIGINT / SIGTERM: stop accepting, cancel every connection's operations,
 * close, and exit 0 once every loop has no operation left.
 */
#define _GNU_SOURCE
#include "eddy/eddy.h"
#include "eddy/group.h"
#include "opts.h"

#include <errno.h>
#include <getopt.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define SEND_BATCH 16   /* buffers per sendmsg */
#define CONN_CHUNK 64   /* connections allocated at a time */
#define QNIL 0xffff

struct loopctx;

/*
 * A connection, laid out for the cache: what every message touches (the
 * fields below and the two ops) is five whole cache lines, 64-aligned, so
 * no op straddles a third; the rest follows.
 */
#define LINE 64

struct conn {
    /* hot: every message */
    _Alignas(LINE) struct loopctx *lc;
    struct conn *snext, *sprev; /* lc's sends in flight, oldest first */
    int64_t send_ns;          /* when the send in flight started */
    int fd;
    /* queue of received buffers, linked through lc->bnext by buffer id;
     * the first `sending` of them are in the send in flight */
    uint16_t qhead, qtail;
    unsigned qcount, sending;
    bool in_sends;            /* on that list */
    bool closing;             /* error, reset or shutdown: tear down */
    bool eof;                 /* peer finished sending: close when drained */
    bool paused;              /* receive not re-armed: back-pressure */
    _Alignas(LINE) struct eddy_op recv_op;
    _Alignas(LINE) struct eddy_op send_op;
    /* cold: connection set-up and teardown, sends of several buffers */
    struct eddy_op close_op;
    struct conn *next, *prev; /* live list, or the free list (next only) */
    struct msghdr msg;
    struct iovec iov[SEND_BATCH];
};

struct chunk {
    struct chunk *next;
    void *mem;                /* what eddy_loop_alloc gave: LINE-1 more, to align */
    struct conn conns[CONN_CHUNK];
};

struct loopctx {
    int index;
    int lfd;                  /* closed by main after the group ends */
    struct eddy_loop *loop;
    struct eddy_bufpool *pool;
    uint16_t *bnext;          /* per buffer id: next in its connection's queue */
    uint32_t *blen;           /* per buffer id: bytes received into it */
    struct eddy_op accept_op;
    struct eddy_op sweep_op;  /* the send timeout's repeating timer */
    struct conn *live;
    struct conn *sends_head, *sends_tail; /* sends in flight, by start time */
    struct conn *free_conns;
    struct chunk *chunks;
    bool stopping;
    int rc;                   /* exit status of this loop */
    uint64_t accepted, pauses, send_timeouts; /* for --verbose */
};

static struct {
    unsigned threads;
    unsigned bufs, bufsize;
    unsigned send_timeout_ms;  /* 0 = none */
    uint16_t port;
    const char *bind;
    bool verbose;
    /* derived from bufs (see the top of the file) */
    unsigned conn_max;         /* buffers that pause a connection's receive */
    unsigned conn_resume;      /* ... and that resume it */
    unsigned pool_low;         /* free buffers below which the mark is 1 */
    struct loopctx *loops;
    atomic_bool setups;        /* a loop set-up ran (so a failed start said why) */
} cfg = {.threads = 1, .bufs = 1024, .bufsize = 4096, .send_timeout_ms = 10000,
         .bind = "0.0.0.0"};

/* ---- connections ------------------------------------------------------ */

static struct conn *conn_get(struct loopctx *lc)
{
    if (!lc->free_conns) {
        void *mem = eddy_loop_alloc(lc->loop, sizeof(struct chunk) + LINE - 1);
        if (!mem)
            return NULL;
        struct chunk *ch = (struct chunk *)(((uintptr_t)mem + LINE - 1) & ~(uintptr_t)(LINE - 1));
        ch->mem = mem;
        ch->next = lc->chunks;
        lc->chunks = ch;
        for (int i = CONN_CHUNK - 1; i >= 0; i--) {
            ch->conns[i].next = lc->free_conns;
            lc->free_conns = &ch->conns[i];
        }
    }
    struct conn *c = lc->free_conns;
    lc->free_conns = c->next;
    memset(c, 0, sizeof *c);
    c->lc = lc;
    c->qhead = c->qtail = QNIL;
    c->next = lc->live;
    if (lc->live)
        lc->live->prev = c;
    lc->live = c;
    return c;
}

static void conn_put(struct conn *c)
{
    struct loopctx *lc = c->lc;
    if (c->prev)
        c->prev->next = c->next;
    else
        lc->live = c->next;
    if (c->next)
        c->next->prev = c->prev;
    c->prev = NULL;
    c->next = lc->free_conns;
    lc->free_conns = c;
}

static void q_push(struct conn *c, uint16_t bid, uint32_t len)
{
    struct loopctx *lc = c->lc;
    lc->bnext[bid] = QNIL;
    lc->blen[bid] = len;
    if (c->qtail == QNIL)
        c->qhead = bid;
    else
        lc->bnext[c->qtail] = bid;
    c->qtail = bid;
    c->qcount++;
}

/* Pops n buffers from the head of the queue back into the pool. */
static void q_release(struct conn *c, unsigned n)
{
    struct loopctx *lc = c->lc;
    while (n-- && c->qhead != QNIL) {
        uint16_t bid = c->qhead;
        c->qhead = lc->bnext[bid];
        if (c->qhead == QNIL)
            c->qtail = QNIL;
        c->qcount--;
        eddy_bufpool_put(lc->pool, bid);
    }
}

/*
 * The send timeout is a per-loop sweep, not a kernel timeout per send: a
 * linked timeout on every send is an extra SQE and a kernel timer armed and
 * cancelled per echo (bench-timeouts measured 640 ns per reset against 3 ns
 * for a sweep).  Sends start in time order, so appending each one to a
 * list keeps it sorted, and the sweep looks at the oldest only.
 */
static void sends_add(struct conn *c)
{
    struct loopctx *lc = c->lc;
    c->send_ns = eddy_now_ns(lc->loop);
    c->snext = NULL;
    c->sprev = lc->sends_tail;
    if (lc->sends_tail)
        lc->sends_tail->snext = c;
    else
        lc->sends_head = c;
    lc->sends_tail = c;
    c->in_sends = true;
}

static void sends_remove(struct conn *c)
{
    struct loopctx *lc = c->lc;
    if (!c->in_sends)
        return;
    if (c->sprev)
        c->sprev->snext = c->snext;
    else
        lc->sends_head = c->snext;
    if (c->snext)
        c->snext->sprev = c->sprev;
    else
        lc->sends_tail = c->sprev;
    c->snext = c->sprev = NULL;
    c->in_sends = false;
}

static void on_recv(struct eddy_op *op, int res);
static void on_send(struct eddy_op *op, int res);

static void on_close(struct eddy_op *op, int res)
{
    (void)res;
    conn_put(eddy_container_of(op, struct conn, close_op));
}

/* Closes the socket once no receive or send of it is in flight. */
static void conn_maybe_close(struct conn *c)
{
    if (!c->closing || c->fd < 0 || eddy_op_active(&c->recv_op) ||
        eddy_op_active(&c->send_op))
        return;
    q_release(c, c->qcount);
    int fd = c->fd;
    c->fd = -1;
    if (eddy_close(c->lc->loop, &c->close_op, fd, on_close) < 0) {
        close(fd);
        conn_put(c);
    }
}

/* Tears the connection down: cancel what is in flight, close when it ends. */
static void conn_kill(struct conn *c)
{
    c->closing = true;
    eddy_cancel(c->lc->loop, &c->recv_op); /* -ENOENT / -EALREADY are fine */
    eddy_cancel(c->lc->loop, &c->send_op);
    conn_maybe_close(c);
}

/* One receive of one buffer: a connection can never hold more buffers than
 * it was allowed to ask for (see the top of the file). */
static void conn_recv(struct conn *c)
{
    c->paused = false;
    int rc = eddy_recv_once(c->lc->loop, &c->recv_op, c->fd, c->lc->pool, on_recv);
    if (rc < 0)
        conn_kill(c);
}

/* Sends the head of the queue if no send is in flight: one buffer with
 * send, several with one sendmsg. */
static void conn_pump(struct conn *c)
{
    if (c->closing || eddy_op_active(&c->send_op) || c->qcount == 0)
        return;
    struct loopctx *lc = c->lc;
    int rc;
    if (c->qcount == 1) {
        c->sending = 1;
        rc = eddy_send(lc->loop, &c->send_op, c->fd,
                       eddy_bufpool_buf(lc->pool, c->qhead), lc->blen[c->qhead], 0,
                       on_send);
    } else {
        unsigned n = 0;
        for (uint16_t b = c->qhead; b != QNIL && n < SEND_BATCH; b = lc->bnext[b], n++) {
            c->iov[n].iov_base = eddy_bufpool_buf(lc->pool, b);
            c->iov[n].iov_len = lc->blen[b];
        }
        c->sending = n;
        memset(&c->msg, 0, sizeof c->msg);
        c->msg.msg_iov = c->iov;
        c->msg.msg_iovlen = n;
        rc = eddy_sendmsg(lc->loop, &c->send_op, c->fd, &c->msg, 0, on_send);
    }
    if (rc < 0) {
        c->sending = 0;
        conn_kill(c);
        return;
    }
    if (cfg.send_timeout_ms)
        sends_add(c);
}

static bool pool_low(const struct loopctx *lc)
{
    return eddy_bufpool_free_count(lc->pool) < cfg.pool_low;
}

/* Must this connection stop receiving until its sends drain it? */
static bool conn_full(const struct conn *c)
{
    return c->qcount >= cfg.conn_max || (c->qcount > 0 && pool_low(c->lc));
}

/* May a paused connection receive again?  While it holds buffers it has a
 * send in flight, whose completion asks again. */
static bool conn_may_resume(const struct conn *c)
{
    return c->qcount == 0 || (c->qcount <= cfg.conn_resume && !pool_low(c->lc));
}

static void on_send(struct eddy_op *op, int res)
{
    struct conn *c = eddy_container_of(op, struct conn, send_op);
    /* The kernel is done with these buffers whatever the result. */
    sends_remove(c);
    q_release(c, c->sending);
    c->sending = 0;
    if (res < 0) {
        conn_kill(c);
        return;
    }
    if (c->closing) {
        conn_maybe_close(c);
        return;
    }
    conn_pump(c);
    if (c->eof && c->qcount == 0) {
        conn_kill(c);
        return;
    }
    if (c->paused && conn_may_resume(c))
        conn_recv(c);
}

static void on_recv(struct eddy_op *op, int res)
{
    struct conn *c = eddy_container_of(op, struct conn, recv_op);
    struct loopctx *lc = c->lc;
    if (op->flags & EDDY_OP_BUFFER) {
        if (c->closing) {
            eddy_bufpool_put(lc->pool, op->bid);
            conn_maybe_close(c);
            return;
        }
        q_push(c, op->bid, (uint32_t)res);
        conn_pump(c);
        if (c->closing)
            return;
        if (conn_full(c)) {
            /* Not re-armed until on_send has drained the queue. */
            c->paused = true;
            lc->pauses++;
            return;
        }
        conn_recv(c);
        return;
    }
    if (c->closing) {
        conn_maybe_close(c);
        return;
    }
    if (res == 0) {
        /* The peer finished sending: echo what is queued, then close. */
        c->eof = true;
        if (c->qcount == 0)
            conn_kill(c);
        return;
    }
    if (cfg.verbose && res != -ECONNRESET)
        fprintf(stderr, "eddy-echo: recv: %s\n", eddy_strerror(res));
    conn_kill(c);
}

/* Closes the connections whose send has been in flight for the timeout. */
static void on_sweep(struct eddy_op *op, int res)
{
    struct loopctx *lc = eddy_container_of(op, struct loopctx, sweep_op);
    if (res < 0)
        return; /* cancelled by loop_stop */
    int64_t limit = eddy_now_ns(lc->loop) - (int64_t)cfg.send_timeout_ms * 1000000;
    struct conn *c;
    while ((c = lc->sends_head) && c->send_ns <= limit) {
        sends_remove(c);
        lc->send_timeouts++;
        if (cfg.verbose)
            fprintf(stderr, "eddy-echo: echo not sent within %u ms: closing\n",
                    cfg.send_timeout_ms);
        conn_kill(c); /* its send ends with -ECANCELED */
    }
}

/* ---- accepting and stopping ------------------------------------------- */

static void on_accept(struct eddy_op *op, int res)
{
    struct loopctx *lc = eddy_container_of(op, struct loopctx, accept_op);
    if (res < 0) {
        if (op->flags & EDDY_OP_MORE) {
            /* Out of descriptors: the runtime backs off and retries. */
            if (cfg.verbose)
                fprintf(stderr, "eddy-echo: accept: %s\n", eddy_strerror(res));
            return;
        }
        if (!lc->stopping) {
            fprintf(stderr, "eddy-echo: accept stopped: %s\n", eddy_strerror(res));
            lc->rc = 1;
        }
        return;
    }
    if (lc->stopping) {
        close(res);
        return;
    }
    int one = 1;
    setsockopt(res, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    struct conn *c = conn_get(lc);
    if (!c) {
        close(res);
        return;
    }
    c->fd = res;
    lc->accepted++;
    conn_recv(c);
}

static void loop_stop(struct loopctx *lc)
{
    if (lc->stopping)
        return;
    lc->stopping = true;
    eddy_cancel(lc->loop, &lc->accept_op);
    eddy_cancel(lc->loop, &lc->sweep_op); /* -ENOENT without a send timeout */
    /* conn_kill may free c at once (if eddy_close fails): step first. */
    struct conn *next;
    for (struct conn *c = lc->live; c; c = next) {
        next = c->next;
        if (!c->closing)
            conn_kill(c);
    }
}

/* ---- the group's callbacks (eddy/group.h) ----------------------------- */

/* The group's stop, on each loop's thread: stop accepting, close every
 * connection; the loop ends once their operations have. */
static void on_group_stop(struct eddy_group *g, unsigned i, struct eddy_loop *loop, void *ud)
{
    (void)g;
    (void)loop;
    (void)ud;
    loop_stop(&cfg.loops[i]);
}

static void on_group_signal(struct eddy_group *g, int signo, void *ud)
{
    (void)g;
    (void)ud;
    if (cfg.verbose)
        fprintf(stderr, "eddy-echo: signal %d: shutting down\n", signo);
}

/* Builds loop i's pool and accept, on the loop's own thread. */
static int loop_setup(struct eddy_group *g, unsigned i, struct eddy_loop *loop, void *ud)
{
    (void)g;
    (void)ud;
    struct loopctx *lc = &cfg.loops[i];
    lc->loop = loop;
    atomic_store(&cfg.setups, 1);
    int rc = eddy_bufpool_init(loop, &lc->pool, cfg.bufs, cfg.bufsize);
    if (rc < 0)
        goto err;
    lc->bnext = eddy_loop_alloc(loop, cfg.bufs * sizeof *lc->bnext);
    lc->blen = eddy_loop_alloc(loop, cfg.bufs * sizeof *lc->blen);
    rc = -ENOMEM;
    if (!lc->bnext || !lc->blen)
        goto err;
    /* A quarter of the timeout, at most 250 ms: a connection is closed
     * between the timeout and a quarter (or 250 ms) later. */
    if (cfg.send_timeout_ms) {
        unsigned tick = cfg.send_timeout_ms / 4;
        tick = tick < 1 ? 1 : tick > 250 ? 250 : tick;
        rc = eddy_timer_repeat(loop, &lc->sweep_op, tick, on_sweep);
        if (rc < 0)
            goto err;
    }
    rc = eddy_accept(loop, &lc->accept_op, lc->lfd, NULL, NULL, SOCK_CLOEXEC, on_accept);
    if (rc < 0) {
        eddy_cancel(loop, &lc->sweep_op); /* the group runs the loop until it ends */
        goto err;
    }
    return 0;
err:
    fprintf(stderr, "eddy-echo: loop %d set-up: %s\n", lc->index, eddy_strerror(rc));
    return rc;
}

/* After loop i's run (or its failed set-up): what set-up built; the group
 * then destroys the loop. */
static void loop_teardown(struct eddy_group *g, unsigned i, struct eddy_loop *loop, void *ud)
{
    (void)g;
    (void)ud;
    struct loopctx *lc = &cfg.loops[i];
    if (cfg.verbose) {
        struct eddy_loop_stats st;
        eddy_loop_stats(loop, &st);
        fprintf(stderr,
                "eddy-echo: loop %d: %llu connections, %llu pauses, %llu send timeouts, "
                "%llu sqes, %llu completions, %llu submit calls, %llu iterations, "
                "%llu enobufs\n",
                lc->index, (unsigned long long)lc->accepted, (unsigned long long)lc->pauses,
                (unsigned long long)lc->send_timeouts, (unsigned long long)st.sqes,
                (unsigned long long)st.completions, (unsigned long long)st.submit_calls,
                (unsigned long long)st.iterations, (unsigned long long)st.enobufs);
    }
    eddy_loop_free(loop, lc->bnext);
    eddy_loop_free(loop, lc->blen);
    if (lc->pool)
        eddy_bufpool_destroy(lc->pool);
    while (lc->chunks) {
        struct chunk *ch = lc->chunks;
        lc->chunks = ch->next;
        eddy_loop_free(loop, ch->mem);
    }
}

/*
 * Every loop's listener, on one port that no other process shares (see
 * the top of the file): eddy_listen_tcp_n.  0, or 1 once said on stderr.
 */
static int listen_all(int *fds)
{
    int rc = eddy_listen_tcp_n(cfg.bind, cfg.port, 4096, EDDY_LISTEN_NODELAY, cfg.threads, fds);
    if (rc == -EINVAL) {
        fprintf(stderr, "eddy-echo: bad --bind address '%s'\n", cfg.bind);
        return 1;
    }
    if (rc < 0) {
        fprintf(stderr, "eddy-echo: listen on %s:%u: %s%s\n", cfg.bind, cfg.port,
                eddy_strerror(rc),
                rc == -EADDRINUSE ? " (another server there?  --port 0 picks a free port)" : "");
        return 1;
    }
    cfg.port = (uint16_t)eddy_sock_port(fds[0]);
    return 0;
}


static void usage(FILE *f)
{
    fprintf(f,
            "usage: eddy-echo --port P [--threads N] [--bind ADDR] [--bufs N]\n"
            "                 [--buf-size BYTES] [--send-timeout S] [--verbose]\n"
            "A TCP echo server on the eddy io_uring runtime.\n"
            "  --port P          port to listen on; 0 picks a free one.  A port another\n"
            "                    program listens on is refused (EADDRINUSE, exit 1)\n"
            "  --threads N       loops (one per thread, SO_REUSEPORT); default 1\n"
            "  --bind ADDR       IPv4 address; default 0.0.0.0\n"
            "  --bufs N          receive buffers per loop (power of 2); default 1024.\n"
            "                    A connection stops receiving when it holds N/16 of them\n"
            "                    (at least 2), or 1 while fewer than N/4 are free, until\n"
            "                    its echo is sent\n"
            "  --buf-size B      bytes per receive buffer; default 4096\n"
            "  --send-timeout S  close a connection whose echo cannot be sent within S\n"
            "                    seconds (decimals allowed; 0 = never); default 10\n"
            "  --verbose         report errors and shutdown on stderr\n"
            "Prints \"listening on PORT (backend NAME)\" once ready.  SIGINT/SIGTERM: graceful exit 0.\n");
}

/* Parses the command line into cfg: -1 to go on, else the exit status
 * (0 after --help, 2 after a usage error, said on stderr). */
static int parse_args(int argc, char **argv)
{
    static const struct option longopts[] = {
        {"port", required_argument, NULL, 'p'},
        {"threads", required_argument, NULL, 't'},
        {"bind", required_argument, NULL, 'b'},
        {"bufs", required_argument, NULL, 'n'},
        {"buf-size", required_argument, NULL, 's'},
        {"send-timeout", required_argument, NULL, 'T'},
        {"verbose", no_argument, NULL, 'v'},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    bool have_port = false;
    int ch;
    unsigned long v;
    while ((ch = getopt_long(argc, argv, "p:t:b:n:s:T:vh", longopts, NULL)) != -1) {
        switch (ch) {
        case 'p':
            if (!opt_uint(optarg, 0, 65535, &v))
                goto bad;
            cfg.port = (uint16_t)v;
            have_port = true;
            break;
        case 't':
            if (!opt_uint(optarg, 1, 1024, &v))
                goto bad;
            cfg.threads = (unsigned)v;
            break;
        case 'b':
            cfg.bind = optarg;
            break;
        case 'n':
            if (!opt_uint(optarg, 1, 32768, &v) || (v & (v - 1)))
                goto bad;
            cfg.bufs = (unsigned)v;
            break;
        case 's':
            if (!opt_uint(optarg, 64, 1u << 20, &v))
                goto bad;
            cfg.bufsize = (unsigned)v;
            break;
        case 'T': /* at most a day; 0 = never */
            if (!opt_seconds(optarg, true, 86400000, &cfg.send_timeout_ms))
                goto bad;
            break;
        case 'v':
            cfg.verbose = true;
            break;
        case 'h':
            usage(stdout);
            return 0;
        default:
            goto bad;
        }
    }
    if (optind == argc && have_port)
        return -1;
bad:
    usage(stderr);
    return 2;
}

int main(int argc, char **argv)
{
    int status = parse_args(argc, argv);
    if (status >= 0)
        return status;
    status = 0;
    cfg.conn_max = cfg.bufs / 16 > 2 ? cfg.bufs / 16 : 2;
    cfg.conn_resume = cfg.conn_max / 4;
    cfg.pool_low = cfg.bufs / 4;

    cfg.loops = calloc(cfg.threads, sizeof *cfg.loops);
    int *fds = calloc(cfg.threads, sizeof *fds);
    /* All listeners first, so --port 0 can share the kernel's pick. */
    if (!cfg.loops || !fds || listen_all(fds) != 0) {
        free(cfg.loops);
        free(fds);
        return 1;
    }
    for (unsigned i = 0; i < cfg.threads; i++) {
        cfg.loops[i].index = (int)i;
        cfg.loops[i].lfd = fds[i];
    }

    /* One loop per thread; SIGINT/SIGTERM (read by loop 0) stop them all. */
    struct eddy_group_options go;
    eddy_group_options_init(&go);
    go.loops = cfg.threads;
    go.signals = 1;
    go.setup = loop_setup;
    go.stop = on_group_stop;
    go.teardown = loop_teardown;
    go.on_signal = on_group_signal;
    struct eddy_group *g;
    int rc = eddy_group_start(&g, &go);
    if (rc < 0) {
        if (!atomic_load(&cfg.setups)) /* no set-up ran: a loop could not be made */
            fprintf(stderr, "eddy-echo: %s\n", eddy_loop_init_explain(rc));
        status = 1;
    } else {
        printf("listening on %u (backend %s)\n", cfg.port,
               eddy_loop_backend(eddy_group_loop(g, 0)));
        fflush(stdout);
        rc = eddy_group_join(g);
        eddy_group_destroy(g);
        if (rc < 0) {
            fprintf(stderr, "eddy-echo: %s\n",
                    rc == -EBUSY ? "a loop was still busy at exit" : eddy_strerror(rc));
            status = 1;
        }
    }
    for (unsigned i = 0; i < cfg.threads; i++) {
        status |= cfg.loops[i].rc;
        close(fds[i]);
    }
    free(cfg.loops);
    free(fds);
    return status ? 1 : 0;
}
