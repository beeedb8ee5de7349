/*
 * The chaos suite (issue 15): the HTTP server, the async client
 * (eddy_http_fetch), the blocking client and raw pipelined connections
 * under seeded mixes of faults (eddy/fault.h), then eddy-demo under
 * EDDY_FAULTS, then the exhaustive mode (fail the 1st, 2nd ... Kth matching
 * completion until none is left) on the client's fetch path and on the
 * server's request path.
 *
 * The scenario: an HTTP server on loop S and its clients on loop C, both
 * driven from this thread (two loops, one thread, each run with
 * EDDY_RUN_NOWAIT in turn), each loop with its own fault rules.  Loop S
 * holds the server (routes /tok, /post, /later, /proxy, /big, /hang) and the upstream
 * client /proxy fetches /tok through (a proxy talking to its own server,
 * through the faults).  Loop C holds the async fetches, raw pipelined
 * connections (plain eddy ops) and blocking fetches run on C's worker
 * pool.  Every request carries a token of its own and every answer echoes
 * it, so a wrong or mixed-up answer cannot pass.
 *
 * Invariants after each run: every fetch, blocking fetch and raw
 * connection ended within its bound with its exact answer or an error (a
 * closed connection); /proxy gives the upstream's body or 502/504; every
 * upstream fetch ended; once the rules are cleared (eddy_fault_set NULL)
 * the server answers 100 fetches over every route exactly; descriptors and
 * the loops' heaps (a counting allocator hook) are back at baseline; no
 * sanitizer report (the asan preset runs this too).
 *
 * A failure prints the seed and the command that replays it:
 *   EDDY_CHAOS_SEED=N [EDDY_BACKEND=epoll|EDDY_COMPAT=5.10] test_http_chaos
 * Environment: EDDY_CHAOS_SEEDS (how many, default 50), EDDY_CHAOS_FIRST
 * (first seed, default 1), EDDY_CHAOS_SEED (just that one),
 * EDDY_CHAOS_RULES (rules instead of the seed's mix), EDDY_CHAOS_VERBOSE=1
 * (every log line of both loops, injections included, on stderr);
 * EDDY_CHAOS_CLIENT_RULES / EDDY_CHAOS_SERVER_RULES (+ EDDY_CHAOS_SILENT=1)
 * replay one run of the exhaustive mode, as its failure line says.
 *
 * Regressions it found and keeps: test_regress_fetch_timer_error,
 * test_regress_sweep_timer_error (below).
 */
#define _GNU_SOURCE
#include "testsupport.h"
#include "eddy/fault.h"
#include "eddy/http.h"
#include "eddy/http_client.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#ifdef EDDY_DEMO_PATH
#include "demo_child.h"
#endif

#define MAX_FETCH 128
#define MAX_RAW 8
#define MAX_BLOCK 8
#define FETCH_TIMEOUT_MS 4000  /* the async client's request timeout */
#define UP_TIMEOUT_MS 1500     /* /proxy's upstream fetch */
#define BLOCK_TIMEOUT_MS 3000  /* the blocking client's */
#define HEADER_TIMEOUT_MS 300 /* the server's */
#define SLACK_MS 2000          /* on top of a deadline, for a loaded machine */

/* What one run does.  Zero = the defaults. */
struct chaos_cfg {
    unsigned seed;             /* of the tokens (the rules carry their own) */
    const char *client_faults; /* rules for loop C (NULL: none) */
    const char *server_faults; /* rules for loop S (NULL: none) */
    unsigned fetches;          /* async fetches, routes in turn */
    unsigned raws;             /* raw pipelined connections */
    unsigned blockings;        /* blocking fetches on C's pool */
    unsigned after;            /* correct fetches once the faults stop; 0 = 100 */
    int sequential;            /* each fetch starts when the one before ended (keep-alive reuse) */
    int hang;                  /* one more fetch, to /hang (see R_HANG) */
    int silent;                /* one more raw connection that never ends its request head:
                                  the server must close it (408) at its header timeout */
};

struct chaos_result {
    uint64_t injected;         /* faults injected, both loops */
    unsigned ok, failed;       /* requests answered / ended by an error or a close */
    unsigned gateway;          /* /proxy answered 502 or 504 */
};

/* ---- the loops' heap and log --------------------------------------------- */

static void *count_alloc(void *ud, void *ptr, size_t size)
{
    _Atomic long *live = ud;
    if (size == 0) {
        if (ptr)
            atomic_fetch_sub(live, 1);
        free(ptr);
        return NULL;
    }
    void *p = realloc(ptr, size);
    if (p && !ptr)
        atomic_fetch_add(live, 1);
    return p;
}

#define LOG_KEEP 24
struct logring {
    const char *who;
    char line[LOG_KEEP][240];
    unsigned n;
};

static int g_verbose;

static void log_ring(void *ud, int level, const char *msg)
{
    (void)level;
    struct logring *r = ud;
    snprintf(r->line[r->n % LOG_KEEP], sizeof r->line[0], "%s", msg);
    r->n++;
    if (g_verbose)
        fprintf(stderr, "[%s] %s\n", r->who, msg);
}

static void log_dump(const struct logring *r)
{
    unsigned first = r->n > LOG_KEEP ? r->n - LOG_KEEP : 0;
    for (unsigned i = first; i < r->n; i++)
        fprintf(stderr, "  [%s] %s\n", r->who, r->line[i % LOG_KEEP]);
}

/* ---- the scenario's state ------------------------------------------------ */

/* R_HANG is not in the rotation: one fetch per phase (cfg.hang) to a route
 * that answers only once its client went away, with a 40 ms timeout:
 * it must end with -ETIMEDOUT (or, under faults, another closing error),
 * within its timeout, and never with an answer. */
enum route { R_TOK, R_POST, R_LATER, R_PROXY, R_BIG, R_N, R_HANG = R_N };
#define HANG_TIMEOUT_MS 40

struct cfetch {
    struct eddy_http_fetch f;
    struct eddy_http_pair arg;
    char url[160], tok[48], want[96];
    int route, done, err, status;
    int64_t t0, t1;
};

struct raw {
    struct eddy_op cop, sop, rop;
    int fd;
    struct sockaddr_in sa;
    char req[768];
    size_t req_len;
    char in[4096];
    size_t in_len;
    char want[3][96];
    bool closed, silent;
    int64_t t0;
};

struct bjob {
    struct eddy_op op;
    char url[160], want[96];
    int rc, status, done;
    char body[128];
    size_t body_len;
    int64_t t0, t1;
};

struct later {
    struct eddy_op timer;
    struct eddy_http_req *req;
    char body[96];
    int len;
};

struct proxy {
    struct eddy_http_fetch f;
    struct eddy_http_req *req;
    char url[160], want[96];
};

static struct chaos {
    const struct chaos_cfg *cfg;
    struct eddy_loop *S, *C;
    _Atomic long heapS, heapC;
    struct logring logS, logC;
    struct eddy_http_server *srv;
    struct eddy_http_client *cli, *up;
    uint16_t port;
    uint64_t rng;
    const char *tag;           /* the token prefix of this phase */
    struct cfetch fetch[MAX_FETCH];
    struct raw raw[MAX_RAW];
    struct bjob bj[MAX_BLOCK];
    unsigned nfetch, fetch_done, nraw, raw_done, nbj, bj_done;
    unsigned up_started, up_ended, later_live, proxy_live;
    unsigned ok, failed, gateway;
    int strict;                /* after the faults: every answer must be right */
    int cli_done, up_done, srv_done;
    unsigned broken;
    char why[768];             /* the first broken invariant */
} X;

static void broke(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void broke(const char *fmt, ...)
{
    if (X.broken++)
        return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(X.why, sizeof X.why, fmt, ap);
    va_end(ap);
}

static uint64_t next_rand(void)
{
    uint64_t z = (X.rng += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

/* Errors that say "the connection was closed or broke" (or, for -EAGAIN
 * and -ENOMEM, that a starter failed: fail:E): allowed under faults.  The
 * others would mean a wrong answer (-EPROTO: a response that is not HTTP,
 * -EMSGSIZE) or a bug (-EINVAL, -ECANCELED: nobody cancelled). */
static bool closed_error(int err)
{
    switch (-err) {
    case EPROTO: case EMSGSIZE: case EINVAL: case ECANCELED: case 0:
        return false;
    default:
        return err < 0;
    }
}

/* ---- the server's routes (loop S) ---------------------------------------- */

static void h_tok(struct eddy_http_req *req, void *ud)
{
    (void)ud;
    char b[96];
    int n = snprintf(b, sizeof b, "tok:%s", eddy_http_arg(req, "t", ""));
    eddy_http_respond(req, 200, "text/plain", b, (size_t)n);
}

static void h_post(struct eddy_http_req *req, void *ud)
{
    (void)ud;
    size_t len;
    const char *body = eddy_http_body(req, &len);
    char b[160];
    int n = snprintf(b, sizeof b, "post:%.*s", (int)(len < 150 ? len : 150), body);
    eddy_http_respond(req, 200, "text/plain", b, (size_t)n);
}

static void later_cb(struct eddy_op *op, int res)
{
    (void)res; /* a timer a fault ended early answers early: still right */
    struct later *l = eddy_container_of(op, struct later, timer);
    eddy_http_respond(l->req, 200, "text/plain", l->body, (size_t)l->len);
    eddy_loop_free(X.S, l);
    X.later_live--;
}

/* A handler's zeroed state from the loop's allocator (counted), or NULL
 * and req answered 503. */
static void *handler_state(struct eddy_http_req *req, size_t size)
{
    void *p = eddy_loop_alloc(X.S, size);
    if (p)
        memset(p, 0, size);
    else
        eddy_http_respond(req, 503, NULL, NULL, 0);
    return p;
}

/* Answers from a timer, 2..14 ms later. */
static void h_later(struct eddy_http_req *req, void *ud)
{
    (void)ud;
    struct later *l = handler_state(req, sizeof *l);
    if (!l)
        return;
    l->req = req;
    const char *t = eddy_http_arg(req, "t", "");
    l->len = snprintf(l->body, sizeof l->body, "later:%s", t);
    if (eddy_timer(X.S, &l->timer, 2 + strlen(t) * 7 % 13, later_cb) < 0) {
        eddy_http_respond(req, 200, "text/plain", l->body, (size_t)l->len);
        eddy_loop_free(X.S, l);
        return;
    }
    X.later_live++;
}

/* /big?t=TOK: BIG_BYTES of "TOK." repeated (many receive buffers, many
 * short sends: a byte lost, doubled or swapped shows). */
#define BIG_BYTES 40000

static void big_fill(char *b, size_t n, const char *tok)
{
    size_t tl = strlen(tok);
    for (size_t i = 0; i < n; i++)
        b[i] = i % (tl + 1) == tl ? '.' : tok[i % (tl + 1)];
}

static bool big_right(const char *body, size_t len, const char *tok)
{
    size_t tl = strlen(tok);
    if (len != BIG_BYTES || !body)
        return false;
    for (size_t i = 0; i < len; i++)
        if (body[i] != (i % (tl + 1) == tl ? '.' : tok[i % (tl + 1)]))
            return false;
    return true;
}

static void h_big(struct eddy_http_req *req, void *ud)
{
    (void)ud;
    static char b[BIG_BYTES];
    big_fill(b, sizeof b, eddy_http_arg(req, "t", ""));
    eddy_http_respond(req, 200, "text/plain", b, sizeof b);
}

static void hang_abort(struct eddy_http_req *req, void *ud)
{
    (void)ud;
    eddy_http_respond(req, 200, "text/plain", "too late", 8); /* discarded */
    X.later_live--;
}

/* Answers only once its client went away (the answer is discarded). */
static void h_hang(struct eddy_http_req *req, void *ud)
{
    (void)ud;
    eddy_http_on_abort(req, hang_abort, NULL);
    X.later_live++;
}

static void proxy_done(struct eddy_http_fetch *f, int err)
{
    struct proxy *p = f->data;
    X.up_ended++;
    if (err == 0 && f->resp.status == 200) {
        if (f->resp.body_len != strlen(p->want) || memcmp(f->resp.body, p->want, f->resp.body_len))
            broke("upstream fetch %s: body '%.*s'", p->url, (int)f->resp.body_len,
                  f->resp.body ? f->resp.body : "");
        char b[128];
        int n = snprintf(b, sizeof b, "proxy:%.*s", (int)f->resp.body_len, f->resp.body);
        eddy_http_respond(p->req, 200, "text/plain", b, (size_t)n);
    } else {
        if (err == 0)
            broke("upstream fetch %s: status %d", p->url, f->resp.status);
        else if (!closed_error(err) && err != -ECANCELED)
            broke("upstream fetch %s ended with %s", p->url, eddy_strerror(err));
        eddy_http_respond(p->req, err == -ETIMEDOUT ? 504 : 502, NULL, NULL, 0);
    }
    eddy_http_fetch_release(f);
    eddy_loop_free(X.S, p);
    X.proxy_live--;
}

static void proxy_abort(struct eddy_http_req *req, void *ud)
{
    (void)req;
    struct proxy *p = ud;
    eddy_http_fetch_cancel(X.up, &p->f); /* its callback answers (discarded) */
}

/* Fetches /tok of this same server through the upstream client. */
static void h_proxy(struct eddy_http_req *req, void *ud)
{
    (void)ud;
    struct proxy *p = handler_state(req, sizeof *p);
    if (!p)
        return;
    p->req = req;
    const char *t = eddy_http_arg(req, "t", "");
    snprintf(p->url, sizeof p->url, "http://127.0.0.1:%u/tok?t=%s", X.port, t);
    snprintf(p->want, sizeof p->want, "tok:%s", t);
    p->f.url = p->url;
    p->f.request_timeout_ms = UP_TIMEOUT_MS;
    p->f.data = p;
    int rc = eddy_http_fetch_start(X.up, &p->f, proxy_done);
    if (rc < 0) {
        if (rc != -ENOMEM)
            broke("upstream fetch_start: %s", eddy_strerror(rc));
        eddy_http_respond(req, 502, NULL, NULL, 0);
        eddy_loop_free(X.S, p);
        return;
    }
    X.up_started++;
    X.proxy_live++;
    eddy_http_on_abort(req, proxy_abort, p);
}

/* ---- async fetches (loop C) ---------------------------------------------- */

static void fetch_start(struct cfetch *cf);

/* Sequential runs: the next fetch (not the hang one, started at once). */
static void fetch_next(struct cfetch *cf)
{
    unsigned next = (unsigned)(cf - X.fetch) + 1;
    if (X.cfg->sequential && cf->route != R_HANG &&
        next < X.nfetch - (X.cfg->hang && !X.strict ? 1 : 0))
        fetch_start(&X.fetch[next]);
}

static void fetch_done(struct eddy_http_fetch *f, int err)
{
    struct cfetch *cf = f->data;
    cf->t1 = ts_now_ms();
    cf->done = 1;
    cf->err = err;
    X.fetch_done++;
    const char *what = cf->url + strlen("http://127.0.0.1:") + 5;
    unsigned timeout = cf->f.request_timeout_ms;
    if (cf->t1 - cf->t0 > timeout + SLACK_MS)
        broke("fetch %s took %lld ms (timeout %u)", what, (long long)(cf->t1 - cf->t0), timeout);
    if (cf->route == R_HANG) {
        if (err == -ETIMEDOUT)
            X.ok++;
        else if (err == 0 || X.strict || !closed_error(err))
            broke("fetch %s (never answered): %s, status %d, want -ETIMEDOUT", what,
                  eddy_strerror(err), err ? 0 : f->resp.status);
        else
            X.failed++;
    } else if (err == 0) {
        cf->status = f->resp.status;
        bool right = f->resp.status == 200 &&
                     (cf->route == R_BIG ? big_right(f->resp.body, f->resp.body_len, cf->tok)
                                         : f->resp.body_len == strlen(cf->want) &&
                                           !memcmp(f->resp.body, cf->want, f->resp.body_len));
        if (right)
            X.ok++;
        else if (cf->route == R_PROXY && (f->resp.status == 502 || f->resp.status == 504) &&
                 !X.strict)
            X.gateway++;
        else
            broke("fetch %s: status %d body '%.*s' (%zu bytes), want 200 '%s'", what,
                  f->resp.status, (int)(f->resp.body_len < 200 ? f->resp.body_len : 200),
                  f->resp.body ? f->resp.body : "", f->resp.body_len,
                  cf->route == R_BIG ? "TOK.TOK..." : cf->want);
    } else if (X.strict || !closed_error(err)) {
        broke("fetch %s ended with %s", what, eddy_strerror(err));
    } else {
        X.failed++;
    }
    eddy_http_fetch_release(f);
    fetch_next(cf);
}

static void fetch_start(struct cfetch *cf)
{
    unsigned i = (unsigned)(cf - X.fetch);
    memset(cf, 0, sizeof *cf);
    cf->route = X.cfg->hang && !X.strict && i == X.nfetch - 1 ? R_HANG : (int)(i % R_N);
    snprintf(cf->tok, sizeof cf->tok, "%s-f%u-%08x", X.tag, i, (unsigned)next_rand());
    static const char *const path[R_N + 1] = {"tok", "post", "later", "proxy", "big", "hang"};
    if (cf->route == R_POST) {
        snprintf(cf->url, sizeof cf->url, "http://127.0.0.1:%u/post", X.port);
        cf->arg = (struct eddy_http_pair){"t", cf->tok};
        cf->f.method = "POST";
        cf->f.args = &cf->arg;
        cf->f.nargs = 1;
        snprintf(cf->want, sizeof cf->want, "post:t=%s", cf->tok);
    } else {
        snprintf(cf->url, sizeof cf->url, "http://127.0.0.1:%u/%s?t=%s", X.port,
                 path[cf->route], cf->tok);
        snprintf(cf->want, sizeof cf->want, "%s%s", cf->route == R_PROXY ? "proxy:tok:"
                 : cf->route == R_LATER ? "later:" : cf->route == R_BIG ? "" : "tok:", cf->tok);
    }
    cf->f.url = cf->url;
    cf->f.request_timeout_ms = cf->route == R_HANG ? HANG_TIMEOUT_MS : FETCH_TIMEOUT_MS;
    cf->f.data = cf;
    cf->t0 = ts_now_ms();
    int rc = eddy_http_fetch_start(X.cli, &cf->f, fetch_done);
    if (rc < 0) { /* fail:ENOMEM on its timer: a starter's failure */
        if (X.strict || rc != -ENOMEM)
            broke("fetch_start %s: %s", cf->url, eddy_strerror(rc));
        cf->done = 1;
        cf->err = rc;
        X.fetch_done++;
        X.failed++;
        fetch_next(cf);
    }
}

/* ---- raw pipelined connections (loop C) ---------------------------------- */

/* Checks what a raw connection received: a prefix of the three answers,
 * in order, each exact; a cut anywhere is a closed connection. */
static void raw_check(struct raw *r)
{
    if (r->silent) {
        int64_t took = ts_now_ms() - r->t0;
        if (took > HEADER_TIMEOUT_MS + SLACK_MS)
            return broke("silent connection closed after %lld ms (header timeout %d)",
                         (long long)took, HEADER_TIMEOUT_MS);
        if (r->in_len && strncmp(r->in, "HTTP/1.1 408 ", r->in_len < 13 ? r->in_len : 13))
            return broke("silent connection: '%.*s'", (int)r->in_len, r->in);
        X.ok++;
        return;
    }
    size_t pos = 0;
    int k;
    for (k = 0; k < 3 && pos < r->in_len; k++) {
        const char *p = r->in + pos, *end = r->in + r->in_len;
        static const char ok[] = "HTTP/1.1 200 ";
        size_t m = (size_t)(end - p) < sizeof ok - 1 ? (size_t)(end - p) : sizeof ok - 1;
        if (memcmp(p, ok, m))
            return broke("raw %s answer %d: '%.40s'", r->want[k], k, p);
        const char *he = memmem(p, (size_t)(end - p), "\r\n\r\n", 4);
        if (!he)
            break; /* cut in the head */
        const char *cl = memmem(p, (size_t)(he - p), "Content-Length: ", 16);
        if (!cl)
            return broke("raw answer %d without Content-Length: '%.*s'", k, (int)(he - p), p);
        size_t n = strtoul(cl + 16, NULL, 10), have = (size_t)(end - (he + 4));
        size_t want = strlen(r->want[k]);
        if (n != want || memcmp(he + 4, r->want[k], have < n ? have : n))
            return broke("raw answer %d: '%.*s', want '%s'", k, (int)(have < n ? have : n),
                         he + 4, r->want[k]);
        if (have < n)
            break; /* cut in the body */
        pos = (size_t)(he + 4 + n - r->in);
    }
    if (k == 3 && pos != r->in_len)
        return broke("raw: %zu bytes after the third answer", r->in_len - pos);
    if (k == 3 && pos == r->in_len)
        X.ok++;
    else if (X.strict)
        broke("raw connection cut after %zu bytes with no fault", r->in_len);
    else
        X.failed++;
}

static void raw_maybe_end(struct raw *r)
{
    if (r->closed || eddy_op_active(&r->cop) || eddy_op_active(&r->sop) ||
        eddy_op_active(&r->rop))
        return;
    close(r->fd);
    r->closed = true;
    raw_check(r);
    X.raw_done++;
}

static void raw_recvd(struct eddy_op *op, int res)
{
    struct raw *r = eddy_container_of(op, struct raw, rop);
    if (res > 0) {
        r->in_len += (size_t)res;
        if (r->in_len < sizeof r->in &&
            eddy_recv(X.C, &r->rop, r->fd, r->in + r->in_len, sizeof r->in - r->in_len, 0,
                      raw_recvd) == 0)
            return;
    }
    if (eddy_op_active(&r->sop))
        eddy_cancel(X.C, &r->sop);
    raw_maybe_end(r);
}

static void raw_sent(struct eddy_op *op, int res)
{
    struct raw *r = eddy_container_of(op, struct raw, sop);
    if (res >= 0 && (size_t)res != r->req_len)
        broke("raw send: %d of %zu bytes", res, r->req_len); /* a send is whole or an error */
    if (res < 0 && eddy_op_active(&r->rop))
        eddy_cancel(X.C, &r->rop);
    raw_maybe_end(r);
}

static void raw_connected(struct eddy_op *op, int res)
{
    struct raw *r = eddy_container_of(op, struct raw, cop);
    if (res == 0 && eddy_send(X.C, &r->sop, r->fd, r->req, r->req_len, 0, raw_sent) == 0 &&
        eddy_recv(X.C, &r->rop, r->fd, r->in, sizeof r->in, 0, raw_recvd) < 0)
        eddy_cancel(X.C, &r->sop);
    raw_maybe_end(r);
}

static void raw_start(struct raw *r, bool silent)
{
    unsigned i = (unsigned)(r - X.raw);
    memset(r, 0, sizeof *r);
    r->silent = silent;
    char t[3][48];
    for (int k = 0; k < 3; k++)
        snprintf(t[k], sizeof t[k], "%s-r%u.%d-%08x", X.tag, i, k, (unsigned)next_rand());
    snprintf(r->want[0], sizeof r->want[0], "tok:%s", t[0]);
    snprintf(r->want[1], sizeof r->want[1], "later:%s", t[1]);
    snprintf(r->want[2], sizeof r->want[2], "post:%s", t[2]);
    r->req_len = (size_t)snprintf(r->req, sizeof r->req,
        "GET /tok?t=%s HTTP/1.1\r\nHost: c\r\n\r\n"
        "GET /later?t=%s HTTP/1.1\r\nHost: c\r\n\r\n"
        "POST /post HTTP/1.1\r\nHost: c\r\nContent-Length: %zu\r\nConnection: close\r\n\r\n%s",
        t[0], t[1], strlen(t[2]), t[2]);
    if (silent) /* the head never ends */
        r->req_len = (size_t)snprintf(r->req, sizeof r->req, "GET /tok?t=%s HTTP/1.1\r\n", t[0]);
    r->sa.sin_family = AF_INET;
    r->sa.sin_port = htons(X.port);
    r->sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    r->t0 = ts_now_ms();
    r->fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    assert_true(r->fd >= 0);
    if (eddy_connect(X.C, &r->cop, r->fd, (struct sockaddr *)&r->sa, sizeof r->sa,
                     raw_connected) < 0)
        raw_maybe_end(r);
}

/* ---- blocking fetches (C's worker pool) ---------------------------------- */

static int bj_fn(struct eddy_op *op)
{
    struct bjob *b = eddy_container_of(op, struct bjob, op);
    struct eddy_http_response resp = {0};
    b->rc = eddy_http_blocking_fetch(b->url, NULL, NULL, 0, BLOCK_TIMEOUT_MS, &resp);
    if (b->rc == 0) {
        b->status = resp.status;
        b->body_len = resp.body_len < sizeof b->body ? resp.body_len : sizeof b->body;
        memcpy(b->body, resp.body ? resp.body : "", b->body_len);
        eddy_http_response_free(&resp);
    }
    b->t1 = ts_now_ms();
    return 0;
}

static void bj_check(struct bjob *b)
{
    b->done = 1;
    X.bj_done++;
    if (b->t1 - b->t0 > BLOCK_TIMEOUT_MS + SLACK_MS)
        broke("blocking fetch %s took %lld ms", b->url, (long long)(b->t1 - b->t0));
    if (b->rc == 0) {
        if (b->status == 200 && b->body_len == strlen(b->want) &&
            !memcmp(b->body, b->want, b->body_len))
            X.ok++;
        else
            broke("blocking fetch %s: %d '%.*s', want '%s'", b->url, b->status,
                  (int)b->body_len, b->body, b->want);
    } else if (X.strict || !closed_error(b->rc)) {
        broke("blocking fetch %s: %s", b->url, eddy_strerror(b->rc));
    } else {
        X.failed++;
    }
}

static void bj_cb(struct eddy_op *op, int res)
{
    (void)res; /* the job's own result is in b; a fault may replace res */
    bj_check(eddy_container_of(op, struct bjob, op));
}

static void bj_start(struct bjob *b)
{
    unsigned i = (unsigned)(b - X.bj);
    memset(b, 0, sizeof *b);
    char t[48];
    snprintf(t, sizeof t, "%s-b%u-%08x", X.tag, i, (unsigned)next_rand());
    snprintf(b->url, sizeof b->url, "http://127.0.0.1:%u/%s?t=%s", X.port,
             i % 2 ? "later" : "tok", t);
    snprintf(b->want, sizeof b->want, "%s:%s", i % 2 ? "later" : "tok", t);
    b->t0 = ts_now_ms();
    int rc = eddy_work(X.C, &b->op, bj_fn, bj_cb);
    if (rc < 0) { /* fail:ENOMEM on the work kind */
        b->rc = rc;
        b->t1 = b->t0;
        bj_check(b);
    }
}

/* ---- driving the two loops ----------------------------------------------- */

static void drive(void)
{
    assert_true(eddy_loop_run(X.S, EDDY_RUN_NOWAIT) >= 0);
    assert_true(eddy_loop_run(X.C, EDDY_RUN_NOWAIT) >= 0);
}

static bool all_ended(void)
{
    return X.fetch_done == X.nfetch && X.raw_done == X.nraw && X.bj_done == X.nbj &&
           X.up_ended == X.up_started && !X.later_live && !X.proxy_live;
}

static bool faults_cleared(void)
{
    return eddy_fault_set(X.S, NULL) == 0 && eddy_fault_set(X.C, NULL) == 0;
}

static bool torn_down(void)
{
    return X.cli_done && X.up_done && X.srv_done;
}

/* Runs both loops until cond() or ms pass; false on the timeout. */
static bool run_until(bool (*cond)(void), int64_t ms)
{
    int64_t end = ts_now_ms() + ms;
    while (!cond()) {
        if (ts_now_ms() > end)
            return false;
        drive();
        usleep(50);
    }
    return true;
}

static void report(const char *rules_c, const char *rules_s, const char *replay, const char *what)
{
    fprintf(stderr, "chaos: %s\n  client loop rules: %s\n  server loop rules: %s\n", what,
            rules_c ? rules_c : "(none)", rules_s ? rules_s : "(none)");
    fprintf(stderr, "  fetches %u/%u, raw %u/%u, blocking %u/%u, upstream %u/%u, "
            "later %u, proxy %u\n", X.fetch_done, X.nfetch, X.raw_done, X.nraw, X.bj_done,
            X.nbj, X.up_ended, X.up_started, X.later_live, X.proxy_live);
    for (unsigned i = 0; i < X.nfetch; i++)
        if (!X.fetch[i].done)
            fprintf(stderr, "  not ended: %s (started %lld ms ago)\n", X.fetch[i].url,
                    (long long)(ts_now_ms() - X.fetch[i].t0));
    for (unsigned i = 0; i < X.nraw; i++)
        if (!X.raw[i].closed)
            fprintf(stderr, "  raw %u%s not ended: connect %d send %d recv %d, %zu bytes in\n", i,
                    X.raw[i].silent ? " (silent)" : "", eddy_op_active(&X.raw[i].cop),
                    eddy_op_active(&X.raw[i].sop), eddy_op_active(&X.raw[i].rop),
                    X.raw[i].in_len);
    fprintf(stderr, "  last log lines:\n");
    log_dump(&X.logC);
    log_dump(&X.logS);
    fprintf(stderr, "  replay: %s\n", replay);
}

#define CHECK(cond, ...)                                                      \
    do {                                                                       \
        if (!(cond)) {                                                         \
            char what_[900];                                                   \
            snprintf(what_, sizeof what_, __VA_ARGS__);                        \
            report(cfg->client_faults, cfg->server_faults, replay, what_);     \
            fail_msg("%s; replay: %s", what_, replay);                         \
        }                                                                      \
    } while (0)

static void srv_done_cb(struct eddy_http_server *srv, void *ud)
{
    (void)srv;
    *(int *)ud = 1;
}

static void cli_done_cb(struct eddy_http_client *cli, void *ud)
{
    (void)cli;
    *(int *)ud = 1;
}

static struct eddy_loop *chaos_loop(_Atomic long *heap, struct logring *log, const char *who)
{
    struct eddy_loop_options o;
    eddy_loop_options_init(&o);
    o.alloc = count_alloc;
    o.alloc_ud = (void *)heap;
    o.log = log_ring;
    o.log_ud = log;
    log->who = who;
    return ts_loop_new(&o);
}

static void chaos_setup(void)
{
    X.S = chaos_loop(&X.heapS, &X.logS, "S");
    X.C = chaos_loop(&X.heapC, &X.logC, "C");
    struct eddy_http_options so = {
        .host = "127.0.0.1", .header_timeout_ms = HEADER_TIMEOUT_MS, .body_timeout_ms = 2000,
        .idle_timeout_ms = 3000, .send_timeout_ms = 2000, .linger_ms = 200,
        .eof_timeout_ms = 2000, .sweep_ms = 50, .rbuf_count = 64,
    };
    assert_int_equal(eddy_http_server_init(&X.srv, X.S, &so), 0);
    assert_int_equal(eddy_http_route(X.srv, "GET", "/tok", EDDY_HTTP_EXACT, h_tok, NULL), 0);
    assert_int_equal(eddy_http_route(X.srv, "POST", "/post", EDDY_HTTP_EXACT, h_post, NULL), 0);
    assert_int_equal(eddy_http_route(X.srv, "GET", "/later", EDDY_HTTP_EXACT, h_later, NULL), 0);
    assert_int_equal(eddy_http_route(X.srv, "GET", "/proxy", EDDY_HTTP_EXACT, h_proxy, NULL), 0);
    assert_int_equal(eddy_http_route(X.srv, "GET", "/hang", EDDY_HTTP_EXACT, h_hang, NULL), 0);
    assert_int_equal(eddy_http_route(X.srv, "GET", "/big", EDDY_HTTP_EXACT, h_big, NULL), 0);
    assert_int_equal(eddy_http_server_listen(X.srv), 0);
    X.port = (uint16_t)eddy_http_server_port(X.srv);
    struct eddy_http_client_options co = {.max_conns_per_origin = 4, .connect_timeout_ms = 1000,
                                          .keepalive_idle_ms = 2000};
    assert_int_equal(eddy_http_client_init(&X.up, X.S, &co), 0);
    assert_int_equal(eddy_http_client_init(&X.cli, X.C, &co), 0);
}

static void chaos_teardown(const struct chaos_cfg *cfg, const char *replay, int fds0)
{
    assert_int_equal(eddy_http_client_close(X.cli, cli_done_cb, &X.cli_done), 0);
    assert_int_equal(eddy_http_client_close(X.up, cli_done_cb, &X.up_done), 0);
    assert_int_equal(eddy_http_server_shutdown(X.srv, 1000, srv_done_cb, &X.srv_done), 0);
    CHECK(run_until(torn_down, 5000), "teardown hung (client %d, upstream %d, server %d)",
          X.cli_done, X.up_done, X.srv_done);
    assert_int_equal(eddy_http_client_destroy(X.cli), 0);
    assert_int_equal(eddy_http_client_destroy(X.up), 0);
    assert_int_equal(eddy_http_server_destroy(X.srv), 0);
    ts_loop_free(X.S);
    ts_loop_free(X.C);
    long hs = atomic_load(&X.heapS), hc = atomic_load(&X.heapC);
    CHECK(hs == 0 && hc == 0, "heap not back at baseline: %ld blocks of loop S, %ld of loop C",
          hs, hc);
    int fds = ts_fd_count();
    CHECK(fds == fds0, "descriptors: %d, baseline %d", fds, fds0);
}

/* The requests of one phase; returns once all ended (or fails the test). */
static void chaos_phase(const struct chaos_cfg *cfg, const char *replay, unsigned fetches,
                        unsigned raws, unsigned blockings, const char *tag)
{
    X.tag = tag;
    X.nfetch = X.fetch_done = X.nraw = X.raw_done = X.nbj = X.bj_done = 0;
    X.nfetch = fetches + (cfg->hang && !X.strict ? 1 : 0);
    X.nraw = raws + (cfg->silent && !X.strict ? 1 : 0);
    X.nbj = blockings;
    for (unsigned i = 0; i < X.nraw; i++)
        raw_start(&X.raw[i], i == raws);
    for (unsigned i = 0; i < blockings; i++)
        bj_start(&X.bj[i]);
    for (unsigned i = 0; i < (cfg->sequential ? 1 : fetches); i++)
        fetch_start(&X.fetch[i]);
    if (X.nfetch > fetches)
        fetch_start(&X.fetch[fetches]);
    int64_t bound = (cfg->sequential ? fetches : 1) * (int64_t)FETCH_TIMEOUT_MS +
                    BLOCK_TIMEOUT_MS + 2 * SLACK_MS;
    CHECK(run_until(all_ended, bound), "%s: not everything ended within %lld ms", tag,
          (long long)bound);
    CHECK(!X.broken, "%s: %s", tag, X.why);
}

static void chaos_run(const struct chaos_cfg *cfg, const char *replay, struct chaos_result *out)
{
    memset(&X, 0, sizeof X);
    X.cfg = cfg;
    X.rng = cfg->seed ^ 0x5eedull;
    int fds0 = ts_fd_count();
    chaos_setup();
    /* Faults from here on: the server is listening and both clients exist. */
    if (cfg->client_faults)
        assert_int_equal(eddy_fault_set(X.C, cfg->client_faults), 0);
    if (cfg->server_faults)
        assert_int_equal(eddy_fault_set(X.S, cfg->server_faults), 0);
    chaos_phase(cfg, replay, cfg->fetches, cfg->raws, cfg->blockings, "chaos");
    struct eddy_fault_stat st[32];
    unsigned n = eddy_fault_stats(X.C, st, 32);
    for (unsigned i = 0; i < n && i < 32; i++)
        out->injected += st[i].injected;
    n = eddy_fault_stats(X.S, st, 32);
    for (unsigned i = 0; i < n && i < 32; i++)
        out->injected += st[i].injected;
    out->ok += X.ok;
    out->failed += X.failed;
    out->gateway += X.gateway;
    /* The faults stop (a held delay or a fault's end on its way: -EBUSY,
     * run and retry); the server must now answer every request right. */
    CHECK(run_until(faults_cleared, 5000), "eddy_fault_set(NULL) still -EBUSY after 5 s");
    X.strict = 1;
    X.ok = 0;
    unsigned after = cfg->after ? cfg->after : 100;
    assert_true(after < MAX_FETCH);
    chaos_phase(cfg, replay, after, cfg->raws ? 1 : 0, cfg->blockings ? 1 : 0, "after");
    CHECK(X.ok == after + (cfg->raws ? 1 : 0) + (cfg->blockings ? 1 : 0),
          "after the faults: %u right answers", X.ok);
    chaos_teardown(cfg, replay, fds0);
}

/* ---- seeded runs --------------------------------------------------------- */

/* The rules a seed activates (FoundationDB's BUGGIFY: a site is on or off
 * per run, then fires with a probability): each with probability 2/5, at
 * least two, its parameter ('#') drawn from the seed. */
static const struct {
    const char *fmt;
    unsigned lo, hi;
} mix_pool[] = {
    {"recv=ECONNRESET@#%", 1, 4},
    {"send=ECONNRESET@#%", 1, 4},
    {"send=EPIPE@#%", 1, 3},
    {"send=short:#@30%", 1, 64},
    {"recv=short:#@30%", 1, 64},
    {"recv_multi=ENOBUFS@#%", 1, 6},
    {"accept=EMFILE@#%x3", 3, 15},
    {"accept=ECONNABORTED@#%", 3, 15},
    {"all=delay:#@3%", 1, 20},
    {"timer=delay:#@20%", 1, 30},
    {"timer=ETIME@#%", 1, 4},
    {"connect=ECONNREFUSED@#%", 1, 6},
    {"connect=delay:#@30%", 1, 30},
    {"shutdown,close=EIO@#%", 1, 10},
    {"work=EIO@#%", 5, 30},
    /* Not timer=fail: the server's sweep timer ended by an error starts
     * again, and a refused restart too would leave it with no timer at all
     * (neither error is one eddy.h lets a timer have; exhaustive runs try
     * each alone). */
    {"send,recv,connect=fail:ENOMEM@#%", 1, 2},
    {"send,recv=fail:EAGAIN@#%", 1, 2},
};

static void mix_for_seed(unsigned seed, char *out, size_t len)
{
    enum { NMIX = sizeof mix_pool / sizeof mix_pool[0] };
    uint64_t s = seed * 0x2545f4914f6cdd1dull;
    bool used[NMIX] = {0};
    int n = snprintf(out, len, "seed=%u", seed);
    unsigned on = 0;
    for (int pass = 0; on < 2 && pass < 8; pass++)
        for (size_t i = 0; i < NMIX; i++) {
            s = s * 6364136223846793005ull + 1442695040888963407ull;
            unsigned r = (unsigned)(s >> 33);
            if (used[i] || r % 5 >= 2)
                continue;
            used[i] = true;
            unsigned v = mix_pool[i].lo + (r >> 8) % (mix_pool[i].hi - mix_pool[i].lo + 1);
            const char *f = mix_pool[i].fmt, *hash = strchr(f, '#');
            n += snprintf(out + n, len - (size_t)n, ";%.*s%u%s", (int)(hash - f), f, v,
                          hash + 1);
            on++;
        }
}

static const char *exe_path(void)
{
    static char p[512];
    ssize_t n = readlink("/proc/self/exe", p, sizeof p - 1);
    p[n > 0 ? n : 0] = 0;
    return p;
}

/* "VAR=value [EDDY_BACKEND=...] [EDDY_COMPAT=...] /path/test_http_chaos" */
static void replay_line(char *out, size_t len, const char *vars)
{
    const char *be = getenv("EDDY_BACKEND"), *compat = getenv("EDDY_COMPAT");
    snprintf(out, len, "%s%s%s%s%s %s", vars, be ? " EDDY_BACKEND=" : "", be ? be : "",
             compat ? " EDDY_COMPAT=" : "", compat ? compat : "", exe_path());
}

/* The variable's value, or NULL when unset or empty. */
static const char *env(const char *name)
{
    const char *v = getenv(name);
    return v && *v ? v : NULL;
}

static unsigned env_uint(const char *name, unsigned def)
{
    const char *v = getenv(name);
    return v && *v ? (unsigned)strtoul(v, NULL, 10) : def;
}

/* At least 50 seeds (EDDY_CHAOS_SEEDS), each a mix of rules on both loops. */
static void test_chaos_seeds(void **state)
{
    (void)state;
    unsigned first = env_uint("EDDY_CHAOS_FIRST", 1), count = env_uint("EDDY_CHAOS_SEEDS", 50);
    if (env("EDDY_CHAOS_SEED")) {
        first = env_uint("EDDY_CHAOS_SEED", 1);
        count = 1;
    }
    const char *rules = env("EDDY_CHAOS_RULES");
    struct chaos_result res = {0};
    int64_t t0 = ts_now_ms();
    for (unsigned seed = first; seed < first + count; seed++) {
        char mix[1024], vars[1200], replay[1800];
        if (rules)
            snprintf(mix, sizeof mix, "seed=%u;%s", seed, rules);
        else
            mix_for_seed(seed, mix, sizeof mix);
        snprintf(vars, sizeof vars, "EDDY_CHAOS_SEED=%u%s%s%s", seed,
                 rules ? " EDDY_CHAOS_RULES=\"" : "", rules ? rules : "", rules ? "\"" : "");
        replay_line(replay, sizeof replay, vars);
        if (g_verbose)
            fprintf(stderr, "chaos: seed %u: %s\n", seed, mix);
        struct chaos_cfg cfg = {.seed = seed, .client_faults = mix, .server_faults = mix,
                                .fetches = 16, .raws = 2, .blockings = 2, .hang = 1,
                                .silent = seed % 4 == 0};
        chaos_run(&cfg, replay, &res);
    }
    print_message("chaos: seeds %u..%u in %lld ms: %llu faults injected; %u requests answered "
                  "right, %u ended by an error or a close, %u /proxy 502/504\n", first,
                  first + count - 1, (long long)(ts_now_ms() - t0),
                  (unsigned long long)res.injected, res.ok, res.failed, res.gateway);
    assert_true(res.injected >= count); /* the mixes bite */
    assert_true(res.failed > 0 || count < 10); /* and some requests do fail */
}

/* ---- exhaustive mode ----------------------------------------------------- */

/* Fails the 1st, 2nd ... Kth event of rule on one loop (client or server)
 * of a small scenario until a run has no Kth event left (the Seastar
 * allocation-failure method); every run keeps every invariant. */
static unsigned exhaust(const char *rule, bool server, bool silent)
{
    unsigned k;
    for (k = 1; k <= 400; k++) {
        char spec[160], vars[300], replay[900];
        snprintf(spec, sizeof spec, "seed=1;%s@nth:%u", rule, k);
        snprintf(vars, sizeof vars, "EDDY_CHAOS_%s_RULES=\"%s\"%s", server ? "SERVER" : "CLIENT",
                 spec, silent ? " EDDY_CHAOS_SILENT=1" : "");
        replay_line(replay, sizeof replay, vars);
        struct chaos_cfg cfg = {.seed = 1, .fetches = 5, .raws = 1, .blockings = server,
                                .after = 4, .sequential = 1, .hang = 1, .silent = silent};
        if (server)
            cfg.server_faults = spec;
        else
            cfg.client_faults = spec;
        struct chaos_result res = {0};
        chaos_run(&cfg, replay, &res);
        if (res.injected == 0)
            break;
    }
    print_message("exhaustive %s: %s failed at each of its %u events\n",
                  server ? "server" : "client", rule, k - 1);
    assert_true(k > 1 && k <= 400); /* the rule has events, and not endless ones */
    return k - 1;
}

/* The client's fetch path: faults on loop C only.  (Its request timers
 * are cancelled before they fire when a fetch goes well, and a cancelled op
 * is never faulted: "timer=ETIME" hits the /hang fetch's, which fires.) */
static void test_exhaustive_client(void **state)
{
    (void)state;
    static const char *const rules[] = {
        "connect=ECONNREFUSED", "connect=fail:EAGAIN", "send=ECONNRESET", "send=short:1",
        "recv=ECONNRESET",      "recv=short:1",        "timer=fail:ENOMEM", "timer=ETIME",
        "all=delay:5",
    };
    for (size_t i = 0; i < sizeof rules / sizeof rules[0]; i++)
        exhaust(rules[i], false, false);
}

/* The server's request path: faults on loop S only. */
static void test_exhaustive_server(void **state)
{
    (void)state;
    static const char *const rules[] = {
        "accept=ECONNABORTED", "accept=EMFILE",     "recv=ECONNRESET", "recv_multi=ENOBUFS",
        "recv=short:1",        "recv=fail:ENOMEM",  "send=EPIPE",      "send=short:1",
        "send=fail:EAGAIN",    "timer=ETIME",       "timer=fail:ENOMEM", "shutdown,close=EIO",
        "all=delay:5",
    };
    for (size_t i = 0; i < sizeof rules / sizeof rules[0]; i++)
        exhaust(rules[i], true, !strncmp(rules[i], "timer", 5));
}

/* One run with the rules of EDDY_CHAOS_CLIENT_RULES / _SERVER_RULES: the
 * replay of an exhaustive run (or any rules by hand). */
static void test_replay(void **state)
{
    (void)state;
    const char *c = env("EDDY_CHAOS_CLIENT_RULES"), *s = env("EDDY_CHAOS_SERVER_RULES");
    /* exhaust()'s scenario */
    struct chaos_cfg cfg = {.seed = 1, .client_faults = c, .server_faults = s, .fetches = 5,
                            .raws = 1, .blockings = s != NULL, .after = 4, .sequential = 1,
                            .hang = 1, .silent = env("EDDY_CHAOS_SILENT") != NULL};
    struct chaos_result res = {0};
    char vars[1200], replay[1800];
    snprintf(vars, sizeof vars, "EDDY_CHAOS_CLIENT_RULES=\"%s\" EDDY_CHAOS_SERVER_RULES=\"%s\"%s",
             c ? c : "", s ? s : "", cfg.silent ? " EDDY_CHAOS_SILENT=1" : "");
    replay_line(replay, sizeof replay, vars);
    chaos_run(&cfg, replay, &res);
    print_message("replay: %llu faults injected, %u right, %u failed, %u 502/504\n",
                  (unsigned long long)res.injected, res.ok, res.failed, res.gateway);
}

/* ---- regressions the suite found ----------------------------------------- */

/* proto/src/client.c on_timer(): a request timer that ended with an error
 * (not a cancel) left its fetch without a deadline, so a fetch to a server
 * that never answers never ended.  Now the error counts as the timeout. */
static void test_regress_fetch_timer_error(void **state)
{
    (void)state;
    struct chaos_cfg cfg = {.seed = 1, .client_faults = "seed=1;timer=ETIME@nth:1",
                            .fetches = 1, .after = 4, .sequential = 1, .hang = 1};
    struct chaos_result res = {0};
    char replay[700];
    replay_line(replay, sizeof replay, "EDDY_CHAOS_CLIENT_RULES=\"seed=1;timer=ETIME@nth:1\"");
    chaos_run(&cfg, replay, &res);
    assert_int_equal(res.injected, 1); /* it hit the /hang fetch's timer */
}

/* proto/src/conn.c sweep_cb(): the server's sweep timer ended by an error
 * stopped every server timeout (and the drain's deadline): a connection
 * that never finished its request head stayed open for good.  Now the
 * sweep starts again. */
static void test_regress_sweep_timer_error(void **state)
{
    (void)state;
    struct chaos_cfg cfg = {.seed = 1, .server_faults = "seed=1;timer=ETIME@nth:1",
                            .fetches = 1, .after = 4, .sequential = 1, .silent = 1};
    struct chaos_result res = {0};
    char replay[700];
    replay_line(replay, sizeof replay, "EDDY_CHAOS_SERVER_RULES=\"seed=1;timer=ETIME@nth:1\"");
    chaos_run(&cfg, replay, &res);
    assert_int_equal(res.injected, 1); /* it hit a tick of the sweep */
}

/* ---- eddy-demo under EDDY_FAULTS ----------------------------------------- */

#ifdef EDDY_DEMO_PATH
/* Its routes answer right, or with 502/504 where they go upstream, or the
 * connection closes; it keeps serving and exits 0 on SIGTERM. */
static void test_demo_faults(void **state)
{
    (void)state;
    static const struct {
        const char *path, *prefix;
        bool upstream;
    } routes[] = {
        {"/plaintext", "Hello, World!", false}, {"/api/time?time=t1", "b:t1,s:0.02 => ", false},
        {"/api/noblock", "b:", true},           {"/api/coro", "b:", true},
        {"/api/offload", "b:", true},
    };
    unsigned ok = 0, failed = 0, gateway = 0;
    for (unsigned seed = 1; seed <= 3; seed++) {
        char spec[512];
        snprintf(spec, sizeof spec,
                 "seed=%u;recv=ECONNRESET@3%%;send=short:7@30%%;accept=EMFILE@5%%x2;"
                 "all=delay:3@5%%;timer=delay:10@20%%;connect=ECONNREFUSED@5%%", seed);
        setenv("EDDY_FAULTS", spec, 1);
        struct demo d;
        const char *args[] = {"--delay-ms", "20", "--timeout", "3000", NULL};
        demo_start(&d, args);
        unsetenv("EDDY_FAULTS");
        char url[256];
        for (int round = 0; round < 4; round++)
            for (size_t i = 0; i < sizeof routes / sizeof routes[0]; i++) {
                snprintf(url, sizeof url, "http://127.0.0.1:%u%s", d.port, routes[i].path);
                struct eddy_http_response r = {0};
                int64_t t0 = ts_now_ms();
                int rc = eddy_http_blocking_fetch(url, NULL, NULL, 0, 8000, &r);
                if (ts_now_ms() - t0 > 8000 + SLACK_MS)
                    fail_msg("EDDY_FAULTS=\"%s\": %s took %lld ms", spec, url,
                             (long long)(ts_now_ms() - t0));
                if (rc < 0) {
                    if (!closed_error(rc))
                        fail_msg("EDDY_FAULTS=\"%s\": %s: %s", spec, url, eddy_strerror(rc));
                    failed++;
                } else if (r.status == 200 && r.body &&
                           !strncmp(r.body, routes[i].prefix, strlen(routes[i].prefix))) {
                    ok++;
                } else if (routes[i].upstream && (r.status == 502 || r.status == 504)) {
                    gateway++;
                } else {
                    fail_msg("EDDY_FAULTS=\"%s\": %s: %d '%s'", spec, url, r.status,
                             r.body ? r.body : "");
                }
                eddy_http_response_free(&r);
            }
        if (strstr(demo_stderr(&d), "ERROR") || strstr(demo_stderr(&d), "runtime error"))
            fail_msg("EDDY_FAULTS=\"%s\": eddy-demo's stderr:\n%s", spec, demo_stderr(&d));
        demo_done(&d); /* SIGTERM: exits 0 within 5 s */
    }
    print_message("eddy-demo under faults: %u right, %u closed, %u 502/504\n", ok, failed,
                  gateway);
    assert_true(ok > 0);
}
#endif

int main(void)
{
    unsetenv("EDDY_FAULTS");
    g_verbose = env("EDDY_CHAOS_VERBOSE") != NULL;
    if (env("EDDY_CHAOS_CLIENT_RULES") || env("EDDY_CHAOS_SERVER_RULES")) {
        const struct CMUnitTest one[] = {cmocka_unit_test(test_replay)};
        return cmocka_run_group_tests(one, NULL, NULL);
    }
    if (env("EDDY_CHAOS_SEED") || env("EDDY_CHAOS_SEEDS")) { /* just the seeds */
        const struct CMUnitTest one[] = {cmocka_unit_test(test_chaos_seeds)};
        return cmocka_run_group_tests(one, NULL, NULL);
    }
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_regress_fetch_timer_error),
        cmocka_unit_test(test_regress_sweep_timer_error),
        cmocka_unit_test(test_chaos_seeds),
        cmocka_unit_test(test_exhaustive_client),
        cmocka_unit_test(test_exhaustive_server),
#ifdef EDDY_DEMO_PATH
        cmocka_unit_test_teardown(test_demo_faults, teardown_child),
#endif
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
