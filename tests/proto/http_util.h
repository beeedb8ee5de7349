/*
 * Helpers for the HTTP server tests: a server running on its own loop in
 * its own thread (so the tests can be plain blocking clients), a set of
 * test handlers, and a small response parser.
 */
#ifndef EDDY_TEST_HTTP_UTIL_H
#define EDDY_TEST_HTTP_UTIL_H

#define _GNU_SOURCE
#include "testsupport.h"
#pragma GCC diagnostic ignored "-Wunused-function"
#include "eddy/http.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

/* ---- the server thread -------------------------------------------------- */

struct hsrv {
    struct eddy_http_options o;
    pthread_t th;
    struct eddy_loop *loop;
    struct eddy_http_server *srv;
    _Atomic int port;          /* > 0 once listening; < 0 on failure */
    _Atomic int aborts;        /* abort callbacks heard */
    _Atomic int second_rc;     /* what a second answer returned */
    _Atomic int done_calls;    /* shutdown done callbacks */
    _Atomic int async_answered;
    _Atomic int stream_rc;     /* /sstream: the first failure of begin, write, end (or 0) */
    struct eddy_http_stats st; /* after the thread ended */
    int leftover_active;       /* loop ops active after shutdown */
    int destroy_rc, loop_destroy_rc;
    unsigned drain_ms;         /* drain for the final shutdown */
    _Atomic long allocs;       /* calls of the loop's allocator that allocate */
    int handover;              /* set up on the starting thread, run on the server thread */
    pthread_mutex_t loop_mu;   /* hsrv_stop's eddy_loop_stop vs the thread's destroy */
    int loop_gone;             /* under loop_mu */
};

static void *count_alloc(void *ud, void *ptr, size_t size)
{
    struct hsrv *h = ud;
    if (size == 0) {
        free(ptr);
        return NULL;
    }
    atomic_fetch_add(&h->allocs, 1);
    return realloc(ptr, size);
}

struct async_job {
    struct eddy_op timer;
    struct eddy_http_req *req;
    struct hsrv *h;
    int id;
    int stream;                /* chunks left to stream, -1 = plain answer */
    int n;
};

static void h_plaintext(struct eddy_http_req *req, void *ud)
{
    (void)ud;
    eddy_http_respond(req, 200, "text/plain", "Hello, World!", 13);
}

static void h_echo(struct eddy_http_req *req, void *ud)
{
    (void)ud;
    size_t n;
    const void *b = eddy_http_body(req, &n);
    eddy_http_respond(req, 200, "application/octet-stream", b, n);
}

static void h_args(struct eddy_http_req *req, void *ud)
{
    (void)ud;
    char out[512];
    int n = snprintf(out, sizeof out, "time=%s|x=%s", eddy_http_arg(req, "time", "none"),
                     eddy_http_arg(req, "x", "none"));
    eddy_http_respond(req, 200, "text/plain", out, (size_t)n);
}

/* The method, the path and the raw query, as the accessors give them. */
static void h_reqline(struct eddy_http_req *req, void *ud)
{
    (void)ud;
    char out[512];
    int n = snprintf(out, sizeof out, "%s %s ?%s", eddy_http_method(req), eddy_http_path(req),
                     eddy_http_query(req));
    eddy_http_respond(req, 200, "text/plain", out, (size_t)n);
}

static void h_hdr(struct eddy_http_req *req, void *ud)
{
    (void)ud;
    const char *v = eddy_http_header(req, "x-test");
    if (!v)
        v = "(none)";
    eddy_http_respond(req, 200, "text/plain", v, strlen(v));
}

static void h_prefix(struct eddy_http_req *req, void *ud)
{
    (void)ud;
    char out[512];
    int n = snprintf(out, sizeof out, "prefix:%s", eddy_http_path(req));
    eddy_http_respond(req, 200, "text/plain", out, (size_t)n);
}

static void h_version(struct eddy_http_req *req, void *ud)
{
    (void)ud;
    char out[16];
    int n = snprintf(out, sizeof out, "%d", eddy_http_version(req));
    eddy_http_respond(req, 200, "text/plain", out, (size_t)n);
}

static void h_peer(struct eddy_http_req *req, void *ud)
{
    (void)ud;
    struct sockaddr_storage ss;
    socklen_t len;
    char out[INET6_ADDRSTRLEN + 8] = "?";
    if (eddy_http_peer(req, &ss, &len) == 0) {
        if (ss.ss_family == AF_INET)
            inet_ntop(AF_INET, &((struct sockaddr_in *)&ss)->sin_addr, out, sizeof out);
        else
            inet_ntop(AF_INET6, &((struct sockaddr_in6 *)&ss)->sin6_addr, out, sizeof out);
    }
    eddy_http_respond(req, 200, "text/plain", out, strlen(out));
}

static void h_big(struct eddy_http_req *req, void *ud)
{
    (void)ud;
    size_t n = (size_t)atol(eddy_http_arg(req, "n", "0"));
    char *b = malloc(n ? n : 1);
    memset(b, 'x', n);
    eddy_http_respond(req, 200, "text/plain", b, n);
    free(b);
}

static void h_double(struct eddy_http_req *req, void *ud)
{
    struct hsrv *h = ud;
    eddy_http_respond(req, 200, "text/plain", "one", 3);
    atomic_store(&h->second_rc, eddy_http_respond(req, 200, "text/plain", "two", 3));
}

static void h_stats(struct eddy_http_req *req, void *ud)
{
    struct hsrv *h = ud;
    struct eddy_http_stats st;
    eddy_http_server_stats(h->srv, &st);
    char out[256];
    int n = snprintf(out, sizeof out,
                     "accepted=%llu conns=%u timeouts=%llu aborts=%d sends=%llu read_stops=%llu",
                     (unsigned long long)st.accepted, st.conns,
                     (unsigned long long)st.timeouts, atomic_load(&h->aborts),
                     (unsigned long long)st.sends, (unsigned long long)st.read_stops);
    eddy_http_respond(req, 200, "text/plain", out, (size_t)n);
}

static void job_abort(struct eddy_http_req *req, void *ud)
{
    struct async_job *j = ud;
    (void)req;
    atomic_fetch_add(&j->h->aborts, 1);
    eddy_cancel(j->h->loop, &j->timer); /* cancel our own work */
}

static void job_fire(struct eddy_op *op, int res)
{
    struct async_job *j = eddy_container_of(op, struct async_job, timer);
    char out[64];
    if (j->stream >= 0 && res == 0) {
        if (j->n < j->stream) {
            int n = snprintf(out, sizeof out, "chunk %d\n", j->n++);
            eddy_http_stream_write(j->req, out, (size_t)n);
            eddy_timer(j->h->loop, &j->timer, 5, job_fire);
            return;
        }
        eddy_http_stream_end(j->req);
    } else if (j->stream >= 0) {
        eddy_http_stream_end(j->req); /* cancelled: finish anyway */
    } else {
        int n = snprintf(out, sizeof out, "async %d", j->id);
        eddy_http_respond(j->req, 200, "text/plain", out, (size_t)n);
    }
    atomic_fetch_add(&j->h->async_answered, 1);
    free(j);
}

/* /async?ms=N&id=K: answers "async K" after N ms, from a timer. */
static void h_async(struct eddy_http_req *req, void *ud)
{
    struct async_job *j = calloc(1, sizeof *j);
    j->h = ud;
    j->req = req;
    j->id = atoi(eddy_http_arg(req, "id", "0"));
    j->stream = -1;
    eddy_http_on_abort(req, job_abort, j);
    eddy_timer(j->h->loop, &j->timer, (uint64_t)atoi(eddy_http_arg(req, "ms", "10")), job_fire);
}

/* /stream?n=N[&async=1]: N chunks "chunk i\n", streamed. */
static void h_stream(struct eddy_http_req *req, void *ud)
{
    struct hsrv *h = ud;
    int n = atoi(eddy_http_arg(req, "n", "3"));
    eddy_http_stream_begin(req, 200, "text/plain");
    if (atoi(eddy_http_arg(req, "async", "0"))) {
        struct async_job *j = calloc(1, sizeof *j);
        j->h = h;
        j->req = req;
        j->stream = n;
        eddy_http_on_abort(req, job_abort, j);
        eddy_timer(h->loop, &j->timer, 5, job_fire);
        return;
    }
    for (int i = 0; i < n; i++) {
        char out[32];
        int k = snprintf(out, sizeof out, "chunk %d\n", i);
        eddy_http_stream_write(req, out, (size_t)k);
    }
    eddy_http_stream_end(req);
}

/* A refused answer is answered 200 "rc=<what it returned>" instead. */
static void answer_rc(struct eddy_http_req *req, int rc)
{
    char out[32];
    int n = snprintf(out, sizeof out, "rc=%d", rc);
    eddy_http_respond(req, 200, "text/plain", out, (size_t)n);
}

/* /sstream?st=N[&ct=TYPE]: status N streamed, with one write of "abc".  The
 * first nonzero return of begin, write and end goes to h->stream_rc. */
static void h_sstream(struct eddy_http_req *req, void *ud)
{
    struct hsrv *h = ud;
    int rc = eddy_http_stream_begin(req, atoi(eddy_http_arg(req, "st", "200")),
                                    eddy_http_arg(req, "ct", "text/plain"));
    if (rc < 0) {
        atomic_store(&h->stream_rc, rc);
        answer_rc(req, rc);
        return;
    }
    int w = eddy_http_stream_write(req, "abc", 3);
    int e = eddy_http_stream_end(req);
    atomic_store(&h->stream_rc, w ? w : e);
}

/* /sresp?st=N[&ct=TYPE]: status N answered with the body "abc". */
static void h_sresp(struct eddy_http_req *req, void *ud)
{
    (void)ud;
    int rc = eddy_http_respond(req, atoi(eddy_http_arg(req, "st", "200")),
                               eddy_http_arg(req, "ct", "text/plain"), "abc", 3);
    if (rc < 0)
        answer_rc(req, rc);
}

/* /sethdr?n=NAME&v=VALUE: eddy_http_set_header(NAME, VALUE), then 200 with
 * the body "rc=<what it returned>". */
static void h_sethdr(struct eddy_http_req *req, void *ud)
{
    (void)ud;
    answer_rc(req, eddy_http_set_header(req, eddy_http_arg(req, "n", ""),
                                        eddy_http_arg(req, "v", "")));
}

static void on_done(struct eddy_http_server *srv, void *ud)
{
    struct hsrv *h = ud;
    (void)srv;
    atomic_fetch_add(&h->done_calls, 1);
}

/* /shutdown?ms=N: graceful shutdown from a handler (the loop thread). */
static void h_shutdown(struct eddy_http_req *req, void *ud)
{
    struct hsrv *h = ud;
    eddy_http_respond(req, 200, "text/plain", "bye", 3);
    eddy_http_server_shutdown(h->srv, (unsigned)atoi(eddy_http_arg(req, "ms", "2000")),
                              on_done, h);
}

/* Loop, server, routes, listen; 0 or -errno (port set to -1). */
static int hsrv_setup(struct hsrv *h)
{
    struct eddy_loop_options lo;
    eddy_loop_options_init(&lo);
    lo.alloc = count_alloc;
    lo.alloc_ud = h;
    if (eddy_loop_init(&h->loop, &lo) < 0) {
        atomic_store(&h->port, -1);
        return -1;
    }
    int rc = eddy_http_server_init(&h->srv, h->loop, &h->o);
    struct {
        const char *m, *p;
        int f;
        eddy_http_handler fn;
    } routes[] = {
        {"GET", "/plaintext", EDDY_HTTP_EXACT, h_plaintext},
        {"POST", "/echo", EDDY_HTTP_EXACT, h_echo},
        {"PUT", "/echo", EDDY_HTTP_EXACT, h_echo},
        {"GET", "/args", EDDY_HTTP_EXACT, h_args},
        {"GET", "/hdr", EDDY_HTTP_EXACT, h_hdr},
        {NULL, "/reqline", EDDY_HTTP_EXACT, h_reqline},
        {"GET", "/pre/", EDDY_HTTP_PREFIX, h_prefix},
        {NULL, "/any/", EDDY_HTTP_PREFIX, h_prefix},
        {"GET", "/version", EDDY_HTTP_EXACT, h_version},
        {"GET", "/peer", EDDY_HTTP_EXACT, h_peer},
        {"GET", "/big", EDDY_HTTP_EXACT, h_big},
        {"GET", "/double", EDDY_HTTP_EXACT, h_double},
        {"GET", "/stats", EDDY_HTTP_EXACT, h_stats},
        {"GET", "/async", EDDY_HTTP_EXACT, h_async},
        {"GET", "/stream", EDDY_HTTP_EXACT, h_stream},
        {"GET", "/shutdown", EDDY_HTTP_EXACT, h_shutdown},
        {"GET", "/sstream", EDDY_HTTP_EXACT, h_sstream},
        {"GET", "/sresp", EDDY_HTTP_EXACT, h_sresp},
        {"GET", "/sethdr", EDDY_HTTP_EXACT, h_sethdr},
        /* an any-method route before a GET route on the same path: GET
         * goes to the GET route, other methods to the any-method one */
        {NULL, "/prec", EDDY_HTTP_EXACT, h_prefix},
        {"GET", "/prec", EDDY_HTTP_EXACT, h_plaintext},
        /* methods whose names hold one another, for the Allow list */
        {"UNLOCK", "/lock", EDDY_HTTP_EXACT, h_plaintext},
        {"LOCK", "/lock", EDDY_HTTP_EXACT, h_plaintext},
        {"M-SEARCH", "/lock", EDDY_HTTP_EXACT, h_plaintext},
        {"SEARCH", "/lock", EDDY_HTTP_EXACT, h_plaintext},
    };
    for (size_t i = 0; rc == 0 && i < sizeof routes / sizeof routes[0]; i++)
        rc = eddy_http_route(h->srv, routes[i].m, routes[i].p, routes[i].f, routes[i].fn, h);
    if (rc == 0)
        rc = eddy_http_server_listen(h->srv);
    if (rc < 0) {
        atomic_store(&h->port, -1);
        return rc;
    }
    atomic_store(&h->port, eddy_http_server_port(h->srv));
    return 0;
}

/* Runs the server until stopped, then shuts it down and frees it all. */
static void *hsrv_serve(void *arg)
{
    struct hsrv *h = arg;
    eddy_loop_run(h->loop, EDDY_RUN_DEFAULT);
    if (!atomic_load(&h->done_calls))
        eddy_http_server_shutdown(h->srv, h->drain_ms, on_done, h); /* -EALREADY if a handler did */
    int64_t end = ts_now_ms() + 5000;
    while (!atomic_load(&h->done_calls) && ts_now_ms() < end)
        eddy_loop_run(h->loop, EDDY_RUN_ONCE);
    /* What handlers of aborted requests still do (timers) finishes too. */
    while (eddy_loop_run(h->loop, EDDY_RUN_ONCE) > 0 && ts_now_ms() < end)
        ;
    eddy_http_server_stats(h->srv, &h->st);
    h->destroy_rc = eddy_http_server_destroy(h->srv);
    struct eddy_loop_stats ls;
    eddy_loop_stats(h->loop, &ls);
    h->leftover_active = (int)ls.active;
    pthread_mutex_lock(&h->loop_mu);
    h->loop_destroy_rc = eddy_loop_destroy(h->loop);
    h->loop_gone = 1;
    pthread_mutex_unlock(&h->loop_mu);
    return NULL;
}

static void *hsrv_main(void *arg)
{
    struct hsrv *h = arg;
    if (hsrv_setup(h) < 0)
        return NULL;
    return hsrv_serve(h);
}

/* h->handover: set the server up on this thread and hand the loop to the
 * server thread (the first eddy_loop_run() there takes it over). */
static void hsrv_start(struct hsrv *h)
{
    atomic_store(&h->port, 0);
    atomic_store(&h->second_rc, 1);
    pthread_mutex_init(&h->loop_mu, NULL);
    h->loop_gone = 0;
    if (h->handover) {
        assert_int_equal(hsrv_setup(h), 0);
        assert_int_equal(pthread_create(&h->th, NULL, hsrv_serve, h), 0);
        return;
    }
    assert_int_equal(pthread_create(&h->th, NULL, hsrv_main, h), 0);
    int64_t end = ts_now_ms() + 5000;
    while (atomic_load(&h->port) == 0 && ts_now_ms() < end)
        usleep(1000);
    assert_true(atomic_load(&h->port) > 0);
}

/* Stops the server thread (unless it ended by itself) and checks that
 * everything closed cleanly. */
static void hsrv_stop(struct hsrv *h)
{
    pthread_mutex_lock(&h->loop_mu);
    if (h->loop && !h->loop_gone)
        eddy_loop_stop(h->loop); /* harmless if the loop already returned */
    pthread_mutex_unlock(&h->loop_mu);
    pthread_join(h->th, NULL);
    pthread_mutex_destroy(&h->loop_mu);
    assert_int_equal(atomic_load(&h->done_calls), 1);
    assert_int_equal(h->destroy_rc, 0);
    assert_int_equal(h->leftover_active, 0);
    assert_int_equal(h->loop_destroy_rc, 0);
    assert_int_equal(h->st.conns, 0);
}

/* ---- the client side ----------------------------------------------------- */

static int cli_connect(int port)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    assert_true(fd >= 0);
    struct sockaddr_in a;
    memset(&a, 0, sizeof a);
    a.sin_family = AF_INET;
    a.sin_port = htons((uint16_t)port);
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    assert_int_equal(connect(fd, (struct sockaddr *)&a, sizeof a), 0);
    struct timeval tv = {.tv_sec = 5};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    return fd;
}

static void cli_send(int fd, const void *p, size_t n)
{
    const char *c = p;
    while (n) {
        ssize_t k = send(fd, c, n, MSG_NOSIGNAL);
        if (k < 0 && errno == EINTR)
            continue;
        if (k <= 0)
            return; /* the server may have answered and closed already */
        c += k;
        n -= (size_t)k;
    }
}

struct resp {
    int status;
    int close;        /* Connection: close */
    int keepalive;    /* Connection: keep-alive */
    int chunked;
    long clen;
    char allow[128];
    char body[8192];  /* truncated copy */
    size_t blen;      /* full length */
};

/* Parses one response at buf[0..len).  Returns the bytes it took, 0 when
 * incomplete, -1 when malformed.  head: the request was HEAD. */
static long parse_resp(const char *buf, size_t len, struct resp *r, int head)
{
    memset(r, 0, sizeof *r);
    r->clen = -1;
    const char *end = memmem(buf, len, "\r\n\r\n", 4);
    if (!end)
        return 0;
    if (sscanf(buf, "HTTP/1.1 %d", &r->status) != 1)
        return -1;
    const char *p = (const char *)memchr(buf, '\n', (size_t)(end + 2 - buf)) + 1;
    while (p < end + 2) {
        const char *eol = memmem(p, (size_t)(end + 2 - p), "\r\n", 2);
        size_t n = (size_t)(eol - p);
        if (n > 16 && !strncasecmp(p, "Content-Length:", 15))
            r->clen = atol(p + 15);
        else if (!strncasecmp(p, "Transfer-Encoding: chunked", 26))
            r->chunked = 1;
        else if (!strncasecmp(p, "Connection: close", 17))
            r->close = 1;
        else if (!strncasecmp(p, "Connection: keep-alive", 22))
            r->keepalive = 1;
        else if (!strncasecmp(p, "Allow: ", 7) && n - 7 < sizeof r->allow)
            memcpy(r->allow, p + 7, n - 7);
        p = eol + 2;
    }
    const char *b = end + 4;
    size_t left = len - (size_t)(b - buf);
    if (head || r->status == 204 || r->status == 304 || r->status < 200)
        return b - buf;
    if (r->chunked) {
        const char *q = b;
        for (;;) {
            const char *eol = memmem(q, left - (size_t)(q - b), "\r\n", 2);
            if (!eol)
                return 0;
            long sz = strtol(q, NULL, 16);
            q = eol + 2;
            if ((size_t)(q - b) + (size_t)sz + 2 > left)
                return 0;
            if (sz == 0)
                return q + 2 - buf;
            if (r->blen + (size_t)sz <= sizeof r->body)
                memcpy(r->body + r->blen, q, (size_t)sz);
            r->blen += (size_t)sz;
            q += sz + 2;
        }
    }
    if (r->clen < 0) {
        /* close-delimited: everything until EOF (the caller passes it all) */
        r->blen = left;
        memcpy(r->body, b, left < sizeof r->body ? left : sizeof r->body);
        return (long)len;
    }
    if (left < (size_t)r->clen)
        return 0;
    r->blen = (size_t)r->clen;
    memcpy(r->body, b, r->blen < sizeof r->body ? r->blen : sizeof r->body);
    return (b - buf) + r->clen;
}

/*
 * Reads until want responses are complete (then returns how many) or EOF
 * or timeout.  *eof is set when the server closed.  Responses go to out.
 */
static int cli_read(int fd, struct resp *out, int want, int head, int *eof, int wait_eof)
{
    static __thread char buf[1 << 20]; /* per thread: several clients may read at once */
    size_t len = 0;
    int got = 0;
    size_t off = 0;
    *eof = 0;
    for (;;) {
        while (got < want) {
            long k = parse_resp(buf + off, len - off, &out[got], head);
            if (k <= 0)
                break;
            /* close-delimited bodies need the EOF */
            if (out[got].clen < 0 && !out[got].chunked && !head && !*eof &&
                out[got].status >= 200 && out[got].status != 204 && out[got].status != 304)
                break;
            off += (size_t)k;
            got++;
        }
        if ((got == want && !wait_eof) || *eof)
            return got;
        if (len == sizeof buf)
            return got;
        ssize_t n = ts_recv(fd, buf + len, sizeof buf - len, 0);
        if (n <= 0) {
            *eof = n == 0 ? 1 : -1; /* -1: reset or timeout */
            if (got < want) {
                long k = len > off ? parse_resp(buf + off, len - off, &out[got], head) : 0;
                if (k > 0)
                    got++;
            }
            return got;
        }
        len += (size_t)n;
    }
}

/* One request on a fresh connection: returns the first status (0: none). */
static int one_shot(int port, const char *req, size_t len, struct resp *r, int *eof)
{
    int fd = cli_connect(port);
    cli_send(fd, req, len);
    int head = !strncmp(req, "HEAD ", 5);
    int n = cli_read(fd, r, 1, head, eof, 0);
    close(fd);
    return n == 1 ? r->status : 0;
}

/* GET path on a new connection, the body into out. */
static int simple_get(int port, const char *path, char *out, size_t cap)
{
    char req[512];
    int n = snprintf(req, sizeof req, "GET %s HTTP/1.1\r\nHost: t\r\n\r\n", path);
    static struct resp r;
    int eof;
    int st = one_shot(port, req, (size_t)n, &r, &eof);
    if (out && cap) {
        size_t k = r.blen < cap - 1 ? r.blen : cap - 1;
        memcpy(out, r.body, k);
        out[k] = 0;
    }
    return st;
}

/*
 * Sends req on a new connection and reads every byte the server sends until
 * it closes (5 s at most), with the "Date: ...\r\n" lines taken out (they
 * change every second).  Returns the length (out is NUL-terminated), or -1
 * when the server did not close cleanly in time.
 */
static long wire(int port, const char *req, size_t len, char *out, size_t cap)
{
    int fd = cli_connect(port);
    cli_send(fd, req, len);
    size_t n = 0;
    long rc = -1;
    for (;;) {
        ssize_t k = ts_recv(fd, out + n, cap - 1 - n, 0);
        if (k == 0)
            rc = 0;
        if (k <= 0)
            break;
        n += (size_t)k;
        if (n == cap - 1)
            break; /* full: more than any test expects, and no close seen */
    }
    close(fd);
    out[n] = 0;
    char *d;
    while ((d = strstr(out, "\r\nDate: ")) != NULL) {
        char *e = strstr(d + 2, "\r\n");
        if (!e)
            break;
        memmove(d, e, (size_t)(out + n - e) + 1);
        n -= (size_t)(e - d);
    }
    return rc < 0 ? -1 : (long)n;
}

/* The wire transcript of req is exactly want (Date lines aside). */
#define assert_wire(port, req, want)                                                 \
    do {                                                                             \
        static char wire_buf_[16384];                                                \
        long wire_n_ = wire((port), (req), strlen(req), wire_buf_, sizeof wire_buf_); \
        if (wire_n_ < 0)                                                             \
            print_error("no clean close after:\n%s\n", wire_buf_);                    \
        assert_true(wire_n_ >= 0);                                                   \
        assert_string_equal(wire_buf_, (want));                                      \
    } while (0)

#endif
