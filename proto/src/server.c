/*
 * The HTTP/1.1 server: accept, parse with llhttp straight from the loop's
 * receive buffers, route, answer in request order, time out.
 *
 * Memory: an idle keep-alive connection is only a struct conn (its receive
 * op, timeout-list links, the descriptor).  The parser, the request queue
 * and the send op live in a struct sess that a connection takes from the
 * server's free list when bytes arrive and gives back when it is idle
 * again.  Requests come from a free list too and keep their buffers, so the
 * steady state allocates nothing.
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

#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>

/* ---- init -------------------------------------------------------------- */

int eddy_http_server_init(struct eddy_http_server **out, struct eddy_loop *loop,
                          const struct eddy_http_options *opts)
{
    struct eddy_http_server *srv = eddy_loop_alloc(loop, sizeof *srv);
    if (!srv)
        return -ENOMEM;
    memset(srv, 0, sizeof *srv);
    srv->loop = loop;
    eddy_loop_attach(loop); /* eddy_loop_destroy() is -EBUSY until the server is destroyed */
    if (opts)
        srv->o = *opts;
    struct eddy_http_options *o = &srv->o;
#define DEF(f, v) if (!o->f) o->f = (v)
    DEF(backlog, 1024);
    DEF(max_conns, 10000);
    DEF(max_pipeline, 32);
    DEF(max_uri, 4096);
    DEF(max_header, 8192);
    DEF(max_headers, 64);
    DEF(max_body, 1024 * 1024);
    DEF(header_timeout_ms, 10000);
    DEF(body_timeout_ms, 30000);
    DEF(idle_timeout_ms, 60000);
    DEF(send_timeout_ms, 30000);
    DEF(linger_ms, 2000);
    DEF(eof_timeout_ms, 30000);
    DEF(sweep_ms, 100);
    DEF(rbuf_count, 1024);
    DEF(rbuf_size, 4096);
#undef DEF
    if (o->max_header > 65535)
        o->max_header = 65535;
    if (o->max_uri > o->max_header)
        o->max_uri = o->max_header;
    if (o->max_headers > 1024)
        o->max_headers = 1024;
    srv->lfd = -1;
    srv->tl_ns[TL_NONE] = INT64_MAX / 2;
    srv->tl_ns[TL_HEAD] = (int64_t)o->header_timeout_ms * 1000000;
    srv->tl_ns[TL_BODY] = (int64_t)o->body_timeout_ms * 1000000;
    srv->tl_ns[TL_IDLE] = (int64_t)o->idle_timeout_ms * 1000000;
    srv->tl_ns[TL_SEND] = (int64_t)o->send_timeout_ms * 1000000;
    srv->tl_ns[TL_LINGER] = (int64_t)o->linger_ms * 1000000;
    srv->tl_ns[TL_EOF] = (int64_t)o->eof_timeout_ms * 1000000;
    const char *name = o->server_name ? o->server_name : "eddy";
    if (*name && strlen(name) < 60 && !strpbrk(name, "\r\n"))
        srv->server_hdr_len = (size_t)snprintf(srv->server_hdr, sizeof srv->server_hdr,
                                               "Server: %s\r\n", name);
    date_refresh(srv);
    srv->st.idle_conn_bytes = sizeof(struct conn); /* an idle connection is its struct alone */
    *out = srv;
    return 0;
}

/* ---- routes ------------------------------------------------------------ */

static char *dupstr(struct eddy_http_server *srv, const char *s)
{
    size_t n = strlen(s) + 1;
    char *d = xalloc(srv, n);
    if (d)
        memcpy(d, s, n);
    return d;
}

/* A method a request can be routed with: one llhttp parses for HTTP, spelled
 * as on the wire (methods are case-sensitive: "get" is 501), and not
 * CONNECT (always 501). */
static bool route_method_ok(const char *m)
{
    if (!strcmp(m, "CONNECT"))
        return false;
#define M(num, name, string) \
    if (!strcmp(m, #string)) \
        return true;
    HTTP_METHOD_MAP(M)
#undef M
    return false;
}

/* A path a request-target can have: it starts with "/" and holds no byte
 * a target cannot carry raw (CTL, SP, DEL, non-ASCII: those come
 * percent-encoded, and paths are compared undecoded), nor "?" or "#"
 * (the query is cut off before routing; a fragment is 400). */
static bool route_path_ok(const char *p)
{
    if (p[0] != '/')
        return false;
    for (; *p; p++) {
        unsigned char ch = (unsigned char)*p;
        if (ch <= 0x20 || ch >= 0x7f || ch == '?' || ch == '#')
            return false;
    }
    return true;
}

int eddy_http_route(struct eddy_http_server *srv, const char *method, const char *path,
                    int flags, eddy_http_handler fn, void *ud)
{
    if (!path || !fn || (flags != EDDY_HTTP_EXACT && flags != EDDY_HTTP_PREFIX) ||
        srv->listening || !route_path_ok(path) || (method && !route_method_ok(method)))
        return -EINVAL;
    for (unsigned i = 0; i < srv->nroutes; i++) {
        const struct route *rt = &srv->routes[i];
        if (rt->flags == flags && !strcmp(rt->path, path) &&
            (rt->method && method ? !strcmp(rt->method, method) : rt->method == method))
            return -EEXIST;
    }
    struct route *rs = eddy_loop_realloc(srv->loop, srv->routes,
                                         (srv->nroutes + 1) * sizeof *rs);
    if (!rs)
        return -ENOMEM;
    srv->routes = rs;
    struct route *rt = &rs[srv->nroutes];
    memset(rt, 0, sizeof *rt);
    rt->path = dupstr(srv, path);
    rt->method = method ? dupstr(srv, method) : NULL;
    if (!rt->path || (method && !rt->method)) {
        xfree(srv, rt->path);
        xfree(srv, rt->method);
        return -ENOMEM;
    }
    rt->plen = strlen(path);
    rt->flags = flags;
    rt->fn = fn;
    rt->ud = ud;
    srv->nroutes++;
    return 0;
}

/* ---- dispatch ---------------------------------------------------------- */

static bool route_match(const struct route *rt, const char *path, size_t plen, bool exact,
                        size_t prefix_len)
{
    if (exact)
        return rt->plen == plen && rt->flags == EDDY_HTTP_EXACT && !memcmp(rt->path, path, plen);
    return rt->flags == EDDY_HTTP_PREFIX && rt->plen <= plen && rt->plen == prefix_len &&
           !memcmp(rt->path, path, rt->plen);
}

/* Among the routes of one path: the route of this very method, else (HEAD)
 * the GET route, else the any-method route.  The order of registration
 * does not matter (eddy_http_route refuses duplicates, so each is unique). */
struct pick {
    struct route *same, *head_get, *any;
};

/* Ranks rt (whose path matched) for method m; true when it is the very
 * method's route, which nothing beats. */
static bool pick_rank(struct pick *pk, struct route *rt, const char *m, bool head)
{
    if (!rt->method) {
        pk->any = rt;
    } else if (!strcmp(rt->method, m)) {
        pk->same = rt;
        return true;
    } else if (head && !strcmp(rt->method, "GET")) {
        pk->head_get = rt;
    }
    return false;
}

/* Whether the ", "-separated list holds the name m (m may be part of
 * another name: LOCK of UNLOCK, SEARCH of M-SEARCH). */
static bool list_has(const char *list, const char *m, size_t ml)
{
    for (const char *p = list; (p = strstr(p, m)) != NULL; p += ml)
        if ((p == list || p[-1] == ' ') && (p[ml] == ',' || p[ml] == 0))
            return true;
    return false;
}

/* 405, with an Allow that lists the methods the path does have (each once). */
static void answer_405(struct eddy_http_req *r, const char *path, size_t plen, bool exact,
                       size_t pl)
{
    struct eddy_http_server *srv = r->srv;
    char allow[256];
    size_t al = 0;
    allow[0] = 0;
    for (unsigned i = 0; i < srv->nroutes; i++) {
        struct route *rt = &srv->routes[i];
        if (!route_match(rt, path, plen, exact, pl) || !rt->method)
            continue;
        const char *ms[2] = {rt->method, !strcmp(rt->method, "GET") ? "HEAD" : NULL};
        for (int k = 0; k < 2 && ms[k]; k++) {
            size_t ml = strlen(ms[k]);
            if (list_has(allow, ms[k], ml) || al + ml + 3 >= sizeof allow)
                continue;
            if (al) {
                memcpy(allow + al, ", ", 2);
                al += 2;
            }
            memcpy(allow + al, ms[k], ml + 1);
            al += ml;
        }
    }
    if (eddy_http_set_header(r, "Allow", allow) < 0)
        answer_or_drop(r, 0, NULL, 0); /* 405 needs its Allow: no half answer */
    else
        answer_or_drop(r, 405, "405 Method Not Allowed\n", 23);
}

/*
 * An exact route wins over every prefix; among prefixes the longest.  The
 * common case, an exact path, takes one pass over the table that stops at
 * the method's own route; only a path without an exact route scans the
 * prefixes, then ranks the methods of the longest.
 */
static void route_dispatch(struct eddy_http_req *r)
{
    struct eddy_http_server *srv = r->srv;
    const char *path = r->arena + r->url;
    size_t plen = strlen(path);
    const char *m = llhttp_method_name((llhttp_method_t)r->method);
    bool head = r->method == HTTP_HEAD;
    bool exact = false, known = false;
    size_t pl = 0;
    struct pick pk = {NULL, NULL, NULL};
    for (unsigned i = 0; i < srv->nroutes; i++) {
        struct route *rt = &srv->routes[i];
        if (route_match(rt, path, plen, true, 0)) {
            exact = known = true;
            if (pick_rank(&pk, rt, m, head))
                break;
        }
    }
    if (!exact) {
        for (unsigned i = 0; i < srv->nroutes; i++) {
            struct route *rt = &srv->routes[i];
            if (rt->flags == EDDY_HTTP_PREFIX && rt->plen <= plen &&
                !memcmp(rt->path, path, rt->plen) && (!known || rt->plen > pl)) {
                known = true;
                pl = rt->plen;
            }
        }
        for (unsigned i = 0; known && i < srv->nroutes; i++)
            if (route_match(&srv->routes[i], path, plen, false, pl) &&
                pick_rank(&pk, &srv->routes[i], m, head))
                break;
    }
    struct route *best = pk.same ? pk.same : pk.head_get ? pk.head_get : pk.any;
    r->flags |= R_DISPATCHED;
    srv->st.requests++;
    if (best) {
        best->fn(r, best->ud);
        return;
    }
    srv->st.errors++;
    if (!known) {
        answer_or_drop(r, 404, "404 Not Found\n", 14);
        return;
    }
    answer_405(r, path, plen, exact, pl);
}

/* Runs every parsed request's handler (in order), then sends what is ready. */
void dispatch_new(struct sess *s)
{
    /* Handlers answer synchronously into out; one flush afterwards sends
     * the whole batch in one send. */
    for (struct eddy_http_req *r = s->q.head; r; r = r->next) {
        if (!(r->flags & R_DISPATCHED)) {
            route_dispatch(r);
            if (conn_closing(s->c))
                return;
        }
        if (r->flags & R_CLOSE)
            return; /* the connection closes after r: nothing behind it is handled */
    }
}


/* ---- accepting --------------------------------------------------------- */

static const char busy_503[] =
    "HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\nConnection: close\r\n\r\n";

static void accept_cb(struct eddy_op *op, int res)
{
    struct eddy_http_server *srv = eddy_container_of(op, struct eddy_http_server, aop);
    if (!(op->flags & EDDY_OP_MORE)) {
        srv->accept_dead = true;
        if (res >= 0)
            close(res);
        check_done(srv);
        return;
    }
    if (res < 0)
        return; /* EMFILE and friends: the loop backs off for us */
    srv->st.accepted++;
    if (srv->shutting || srv->nconns >= srv->o.max_conns) {
        /* Over the cap: a short canned answer, never a hang.  A direct,
         * non-blocking send, not an operation: there is no struct conn to
         * carry one beyond max_conns, and the socket buffer of a fresh
         * connection always takes these few bytes. */
        srv->st.rejected++;
        ssize_t n = send(res, busy_503, sizeof busy_503 - 1, MSG_DONTWAIT | MSG_NOSIGNAL);
        (void)n;
        close(res);
        return;
    }
    conn_start(srv, res);
}

int eddy_http_server_adopt(struct eddy_http_server *srv, int fd)
{
    if (fd < 0)
        return -EBADF;
    if (!srv->listening || srv->shutting) {
        close(fd);
        return srv->shutting ? -ESHUTDOWN : -EINVAL;
    }
    if (srv->nconns >= srv->o.max_conns) {
        srv->st.rejected++;
        close(fd);
        return -EBUSY;
    }
    srv->st.accepted++;
    /* Accepted sockets inherit TCP_NODELAY from the listener; this one
     * came from elsewhere. */
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one); /* fails harmlessly off TCP */
    return conn_start(srv, fd);
}

/* ---- listening --------------------------------------------------------- */

int eddy_http_listen_socket(const char *host, uint16_t port, int reuseport, int backlog)
{
    int fd, rc = eddy_listen_tcp(host, port, backlog, reuseport ? EDDY_LISTEN_REUSEPORT : 0, &fd);
    return rc < 0 ? rc : fd;
}

int eddy_http_server_listen(struct eddy_http_server *srv)
{
    if (srv->listening || srv->shutting)
        return -EALREADY;
    int rc = eddy_bufpool_init(srv->loop, &srv->pool, srv->o.rbuf_count, srv->o.rbuf_size);
    if (rc < 0)
        return rc;
    /* Where every connection's waiting receive holds a pool buffer (io_uring
     * without a kernel buffer ring, before 5.19), more connections than
     * buffers would starve the newest: the cap follows the pool there. */
    if (!eddy_bufpool_lazy(srv->pool) && srv->o.max_conns > srv->o.rbuf_count)
        srv->o.max_conns = srv->o.rbuf_count;
    int fd = srv->o.listen_fd > 0
                 ? srv->o.listen_fd
                 : eddy_http_listen_socket(srv->o.host, srv->o.port, srv->o.reuseport,
                                           srv->o.backlog);
    if (fd < 0) {
        eddy_bufpool_destroy(srv->pool);
        srv->pool = NULL;
        return fd;
    }
    /* Once here rather than per accepted socket: Linux copies it to every
     * socket accept() returns.  Fails harmlessly off TCP. */
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    if (srv->o.defer_accept_s) {
        int secs = srv->o.defer_accept_s > INT_MAX ? INT_MAX : (int)srv->o.defer_accept_s;
        setsockopt(fd, IPPROTO_TCP, TCP_DEFER_ACCEPT, &secs, sizeof secs);
    }
    srv->lfd = fd;
    srv->aop.label = "eddy http accept";
    rc = eddy_accept(srv->loop, &srv->aop, fd, NULL, NULL, SOCK_CLOEXEC, accept_cb);
    if (rc < 0)
        goto err;
    srv->top.label = "eddy http sweep";
    rc = eddy_timer_repeat(srv->loop, &srv->top, srv->o.sweep_ms, sweep_cb);
    if (rc < 0) {
        eddy_cancel(srv->loop, &srv->aop);
        srv->timer_dead = true;
        srv->listening = true;
        srv->shutting = true;
        return rc; /* accept_cb's final callback finishes the clean-up */
    }
    srv->listening = true;
    return 0;
err:
    if (srv->o.listen_fd <= 0)
        close(fd);
    srv->lfd = -1;
    eddy_bufpool_destroy(srv->pool);
    srv->pool = NULL;
    return rc;
}

struct eddy_loop *eddy_http_server_loop(const struct eddy_http_server *srv)
{
    return srv->loop;
}

int eddy_http_server_port(const struct eddy_http_server *srv)
{
    return srv->lfd < 0 ? -EBADF : eddy_sock_port(srv->lfd);
}

/* ---- shutdown ---------------------------------------------------------- */

/* Calls the done callback once nothing of the server is active any more:
 * from shutdown, the sweep, the accept's final callback and close_done. */
void check_done(struct eddy_http_server *srv)
{
    if (!srv->shutting || srv->done_called)
        return;
    if (srv->accept_dead && srv->lfd >= 0) {
        close(srv->lfd);
        srv->lfd = -1;
    }
    if (srv->nconns == 0 && !srv->timer_dead && eddy_op_active(&srv->top))
        eddy_cancel(srv->loop, &srv->top);
    if (srv->nconns || !srv->accept_dead || !srv->timer_dead)
        return;
    srv->done_called = true;
    if (srv->done)
        srv->done(srv, srv->done_ud);
}

static void post_done(struct eddy_op *op, int res)
{
    struct eddy_http_server *srv = eddy_container_of(op, struct eddy_http_server, top);
    (void)res;
    if (srv->done)
        srv->done(srv, srv->done_ud);
}

int eddy_http_server_shutdown(struct eddy_http_server *srv, unsigned drain_ms,
                              eddy_http_done_cb done, void *ud)
{
    if (srv->shutting)
        return -EALREADY;
    srv->shutting = true;
    srv->done = done;
    srv->done_ud = ud;
    srv->drain_deadline = eddy_update_time(srv->loop) + (int64_t)drain_ms * 1000000;
    if (!srv->listening) {
        srv->accept_dead = srv->timer_dead = true;
        srv->done_called = true;
        eddy_post(srv->loop, &srv->top, post_done); /* callbacks stay async */
        return 0;
    }
    eddy_cancel(srv->loop, &srv->aop);
    /* Idle connections go now; the others close after their answers. */
    unsigned lists[] = {TL_IDLE, TL_HEAD};
    for (unsigned i = 0; i < 2; i++) {
        struct conn *c = srv->tl[lists[i]].head;
        while (c) {
            struct conn *next = c->tnext;
            if (!c->s || (!c->s->in_msg && !c->s->nreq))
                conn_close(c);
            c = next;
        }
    }
    /* Requests in flight finish: every answer goes out, in order, then the
     * connection closes after the last one queued (which says Connection:
     * close unless its head was made already), and nothing more is read.
     * A request still arriving closes when complete (on_message_complete). */
    for (unsigned t = 0; t < TL_COUNT; t++)
        for (struct conn *c = srv->tl[t].head; c; c = c->tnext)
            if (c->s && c->s->q.tail)
                req_close_after(c->s->q.tail);
    if (drain_ms == 0) {
        for (unsigned t = 0; t < TL_COUNT; t++)
            while (srv->tl[t].head)
                conn_close(srv->tl[t].head);
    }
    check_done(srv);
    return 0;
}

int eddy_http_server_destroy(struct eddy_http_server *srv)
{
    if (srv->listening && !srv->done_called)
        return -EBUSY;
    if (srv->pool && eddy_bufpool_destroy(srv->pool) < 0)
        return -EBUSY; /* before anything is freed: the call may be repeated */
    srv->pool = NULL;
    if (srv->lfd >= 0)
        close(srv->lfd);
    srv->lfd = -1;
    /* Buffers requests and sessions grew. */
    for (struct eddy_http_req *r = srv->rfree; r; r = r->next) {
        xfree(srv, r->arena);
        xfree(srv, r->body);
        xfree(srv, r->out);
        xfree(srv, r->oold);
    }
    for (struct sess *s = srv->sfree; s; s = s->nextfree)
        xfree(srv, s->pend);
    while (srv->chunks) {
        struct chunk *n = srv->chunks->next;
        xfree(srv, srv->chunks);
        srv->chunks = n;
    }
    for (unsigned i = 0; i < srv->nroutes; i++) {
        xfree(srv, srv->routes[i].path);
        xfree(srv, srv->routes[i].method);
    }
    xfree(srv, srv->routes);
    struct eddy_loop *loop = srv->loop;
    eddy_loop_free(loop, srv);
    eddy_loop_detach(loop);
    return 0;
}

void eddy_http_server_stats(const struct eddy_http_server *srv, struct eddy_http_stats *out)
{
    *out = srv->st;
    out->conns = srv->nconns;
}
