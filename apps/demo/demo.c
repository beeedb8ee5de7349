/*
 * eddy-demo: the Tornado demo of blocking versus non-blocking, on eddy.
 *
 *   GET /api/time?time=T  waits 10-500 ms on a timer (the loop stays free),
 *                         then answers "b:{T},s:{S} => e:{E}".
 *   GET /api/noblock      fetches the time service with the async client.
 *   GET /api/block        the same fetch with the blocking client, on the
 *                         loop thread: every other client of the loop waits,
 *                         and the stall watchdog says so on stderr.
 *   GET /api/offload      the blocking fetch on the worker pool instead.
 *   GET /api/coro         the blocking version's straight line, on a fiber
 *                         of its own: eddy_http_fetch_await() parks the
 *                         fiber, not the loop (eddy/http_fiber.h).
 *   GET /plaintext        "Hello, World!" (benchmarks).
 *   GET /stats            JSON counters of the loop that answers.
 *   GET /                 the home page: the lesson, each route's code next
 *                         to its timeline, live /stats and stall reports
 *                         (web/index.html, compiled in; --web-dir reads it
 *                         from disk).
 *   GET /api/race         runs N concurrent requests of one of the routes
 *                         above from the racer's own loop thread and
 *                         answers their timings (JSON), for the page.
 *   GET /api/routes       JSON: the routes a race may use, and the settings.
 *   GET /api/stalls       JSON: the stall watchdog's last reports.
 *
 * The time service runs on its own loop thread and port, so /api/block
 * shows serialization rather than a deadlock; --upstream self points the
 * four fetching routes at the demo's own port, the original single-loop
 * set-up, where /api/block can only end in a 504 after --timeout.
 *
 * Threads: --threads N loops, each with its own server on the same port
 * (SO_REUSEPORT) and its own client; the time service is one more loop.
 * Loop 0 runs on the main thread and reads SIGINT/SIGTERM; shutdown drains
 * the main loops first and the time service last, so requests in flight
 * that still need it can finish.
 */
#define _GNU_SOURCE
#include "eddy/eddy.h"
#include "eddy/fiber.h"
#include "eddy/http.h"
#include "eddy/http_client.h"
#include "eddy/http_fiber.h"

#include <ctype.h>
#include <errno.h>
#include <getopt.h>
#include <netdb.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

/* ---- routes and their statistics ------------------------------------- */

enum route {
    R_TIME, R_NOBLOCK, R_BLOCK, R_OFFLOAD, R_CORO, R_PLAINTEXT, R_STATS, R_PAGE, R_RACE,
    R_ROUTES, R_STALLS, R_COUNT
};
static const char *const route_path[R_COUNT] = {
    "/api/time", "/api/noblock", "/api/block", "/api/offload", "/api/coro", "/plaintext",
    "/stats",    "/",            "/api/race",  "/api/routes",  "/api/stalls",
};

/*
 * A log-linear latency histogram in microseconds (the layout of eddy-load's
 * tools/load/hist.h): exact below 64 us, then 32 linear buckets per power
 * of two, so a bucket is never wider than 1/32 of its lower bound, up to
 * 2^32 us (71 minutes; beyond, the last bucket); the exact minimum and
 * maximum are kept apart.  Fixed size, no allocation, O(1) per record.
 */
#define HIST_SUB_BITS 5
#define HIST_SUB (1u << HIST_SUB_BITS)
#define HIST_MAX_EXP 32
#define HIST_BUCKETS (2 * HIST_SUB + (HIST_MAX_EXP - HIST_SUB_BITS - 1) * HIST_SUB)

struct hist {
    uint64_t counts[HIST_BUCKETS];
    uint64_t n, min, max;
};

static unsigned hist_index(uint64_t v)
{
    if (v < 2 * HIST_SUB)
        return (unsigned)v;
    if (v >> HIST_MAX_EXP)
        return HIST_BUCKETS - 1;
    unsigned e = 63u - (unsigned)__builtin_clzll(v); /* > HIST_SUB_BITS */
    unsigned sub = (unsigned)(v >> (e - HIST_SUB_BITS)); /* HIST_SUB .. 2 * HIST_SUB - 1 */
    return 2 * HIST_SUB + (e - HIST_SUB_BITS - 1) * HIST_SUB + (sub - HIST_SUB);
}

/* Bucket i holds the values [low, low + width). */
static void hist_bounds(unsigned i, uint64_t *low, uint64_t *width)
{
    if (i < 2 * HIST_SUB) {
        *low = i;
        *width = 1;
        return;
    }
    unsigned k = i - 2 * HIST_SUB, shift = k / HIST_SUB + 1;
    *low = (uint64_t)(k % HIST_SUB + HIST_SUB) << shift;
    *width = (uint64_t)1 << shift;
}

static void hist_record(struct hist *h, uint64_t v)
{
    h->counts[hist_index(v)]++;
    if (h->n == 0 || v < h->min)
        h->min = v;
    if (v > h->max)
        h->max = v;
    h->n++;
}

/*
 * The p-th percentile (0 < p <= 100): the ceil(p% * n)-th smallest value,
 * interpolated linearly among the c values of its bucket, spread evenly
 * over the bucket's range narrowed to [min, max] (an end that is the exact
 * min or max holds a value; an open end is half a step away).  So p100 is
 * max, and values all in one bucket read between their min and max.
 * Reading the bucket's upper bound instead is up to a bucket width high.
 */
static double hist_percentile(const struct hist *h, double p)
{
    if (h->n == 0)
        return 0;
    if (p >= 100)
        return (double)h->max;
    double want = p * (double)h->n / 100; /* exact for a whole p */
    uint64_t rank = (uint64_t)want, seen = 0;
    if ((double)rank < want || rank == 0)
        rank++; /* ceil, at least the first */
    for (unsigned i = 0; i < HIST_BUCKETS; i++) {
        if (seen + h->counts[i] < rank) {
            seen += h->counts[i];
            continue;
        }
        uint64_t low, width;
        hist_bounds(i, &low, &width);
        bool has_min = h->min >= low, has_max = h->max < low + width;
        double lo = (double)(has_min ? h->min : low);
        double hi = (double)(has_max ? h->max : low + width - 1);
        double k = (double)(rank - seen), c = (double)h->counts[i];
        double a = has_min ? 0 : 0.5, steps = c - 1 + a + (has_max ? 0 : 0.5);
        return steps > 0 ? lo + (hi - lo) * (k - 1 + a) / steps : lo;
    }
    return (double)h->max;
}

/*
 * Every request of a route ends once, as one of: answered (an answer below
 * 400 went out), failed (an error answer: 5xx from an upstream failure or
 * a shortage), aborted (the client went away first; no answer reaches it).
 * So requests = answered + failed + aborted + in_flight at any time.  The
 * latency (handler to answer) is recorded for answered and failed.
 */
enum outcome { OUT_ANSWERED, OUT_FAILED, OUT_ABORTED };

struct route_stats {
    uint64_t requests, answered, failed, aborted, in_flight;
    struct hist lat;
};

/* ---- configuration (read-only once the threads start) ---------------- */

struct loopctx;

static struct {
    const char *host;
    unsigned port, time_port;
    bool time_off;
    unsigned threads;
    const char *upstream_arg;
    char upstream[1024];
    unsigned timeout_ms;
    int delay_ms; /* -1: random 10..500 */
    uint64_t seed;
    unsigned stall_ms, pool, upstream_conns, drain_ms;
    unsigned header_timeout_ms, body_timeout_ms, idle_timeout_ms, send_timeout_ms, max_conns;
    int eof_finish; /* --half-close: 1 finish, 0 abort */
    unsigned defer_accept_s;
    const char *web_dir;      /* NULL: the page compiled in */
    unsigned race_timeout_ms; /* one raced request, at most */
    char race_base[320];      /* "http://host:port" of the main loops, for the racer */
    struct loopctx *loops;
    struct loopctx *time_lc;
    atomic_uint main_left;
    struct timespec started;
} cfg = {
    .host = "0.0.0.0",
    .port = 2345,
    .time_port = 2346,
    .threads = 1,
    .timeout_ms = 60000,
    .delay_ms = -1,
    .eof_finish = 1,
    .stall_ms = 100,
    .pool = 4,
    .upstream_conns = 1024,
    .drain_ms = 5000,
    .header_timeout_ms = 10000,
    .body_timeout_ms = 30000,
    .idle_timeout_ms = 60000,
    .send_timeout_ms = 30000,
    .max_conns = 10000,
    .race_timeout_ms = 60000,
};

/* ---- per-loop state --------------------------------------------------- */

enum job_kind { J_TIME, J_NOBLOCK, J_BLOCK, J_OFFLOAD, J_CORO };

/* One request that is answered later.  Taken from the loop's free list. */
struct job {
    struct loopctx *lc;
    struct eddy_http_req *req;
    enum job_kind kind;
    int64_t t0_ns;
    unsigned delay_ms;
    const char *tval;
    struct eddy_op op; /* timer, post or work */
    struct eddy_http_fetch fetch;
    struct eddy_http_pair arg;
    struct eddy_http_response resp; /* the blocking client's */
    char now[32];
    bool aborted;  /* the client went away (job_abort ran) */
    bool detached; /* counted as aborted already; the pool call still runs */
    struct job *next_free;
};

#define JOBS_PER_CHUNK 64
struct jobchunk {
    struct jobchunk *next;
    struct job jobs[JOBS_PER_CHUNK];
};

struct loopctx {
    int index; /* 0..threads-1; -1 for the time service */
    bool is_time;
    pthread_t thread;
    int lfd;
    struct eddy_loop *loop;
    struct eddy_http_server *srv;
    struct eddy_http_client *cli;
    bool fibers;                           /* eddy_fiber_setup() done: /api/coro */
    struct eddy_http_fiber_route coro_route;
    struct eddy_op stop_op;
    struct eddy_op dump_op;   /* SIGUSR1: print /stats to stderr */
    atomic_bool dump_pending; /* dump_op is posted and has not run yet */
    bool open;                /* the signal thread may post to it (under post_mu) */
    bool stopping;
    uint64_t rng;
    struct job *free_jobs;
    struct jobchunk *chunks;
    struct route_stats routes[R_COUNT];
    unsigned offloads; /* worker-pool calls started and not yet back */
    bool abandoned;    /* stopped with pool calls still blocked */
    int rc;
};

static int64_t mono_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

/* UNIX seconds with microseconds, like Python's time.time(). */
static void unix_now(char *out, size_t n)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    snprintf(out, n, "%lld.%06ld", (long long)ts.tv_sec, ts.tv_nsec / 1000);
}

/* splitmix64: small, seedable, good enough for picking delays. */
static uint64_t rng_next(uint64_t *s)
{
    uint64_t z = (*s += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

/* Jobs come from chunks that grow on demand and are freed at exit, so a
 * steady load allocates nothing per request. */
static struct job *job_get(struct loopctx *lc, struct eddy_http_req *req, enum job_kind kind)
{
    if (!lc->free_jobs) {
        struct jobchunk *ch = eddy_loop_alloc(lc->loop, sizeof *ch);
        if (!ch)
            return NULL;
        ch->next = lc->chunks;
        lc->chunks = ch;
        for (unsigned i = 0; i < JOBS_PER_CHUNK; i++) {
            ch->jobs[i].next_free = lc->free_jobs;
            lc->free_jobs = &ch->jobs[i];
        }
    }
    struct job *j = lc->free_jobs;
    lc->free_jobs = j->next_free;
    memset(j, 0, sizeof *j);
    j->lc = lc;
    j->req = req;
    j->kind = kind;
    j->t0_ns = mono_ns();
    return j;
}

static const enum route kind_route[] = {R_TIME, R_NOBLOCK, R_BLOCK, R_OFFLOAD, R_CORO};

static void route_begin(struct loopctx *lc, enum route r)
{
    lc->routes[r].requests++;
    lc->routes[r].in_flight++;
}

/* A request of route r started at t0_ns has ended, as out. */
static void route_end(struct loopctx *lc, enum route r, enum outcome out, int64_t t0_ns)
{
    struct route_stats *rs = &lc->routes[r];
    rs->in_flight--;
    if (out == OUT_ABORTED) {
        rs->aborted++;
        return;
    }
    if (out == OUT_ANSWERED)
        rs->answered++;
    else
        rs->failed++;
    int64_t us = (mono_ns() - t0_ns) / 1000;
    hist_record(&rs->lat, us > 0 ? (uint64_t)us : 0);
}

/* Answers a request that got no job (the loop's allocator failed). */
static void answer_no_job(struct loopctx *lc, enum route r, struct eddy_http_req *req,
                          int64_t t0_ns)
{
    eddy_http_respond(req, 503, NULL, NULL, 0);
    route_end(lc, r, OUT_FAILED, t0_ns);
}

static void job_recycle(struct job *j)
{
    j->next_free = j->lc->free_jobs;
    j->lc->free_jobs = j;
}

/* Answers the job's request (an answer after an abort is discarded), counts
 * how it ended and recycles the job. */
static void job_answer(struct job *j, int status, const char *ctype, const void *body,
                       size_t len)
{
    bool aborted = j->aborted || eddy_http_aborted(j->req);
    if (eddy_http_respond(j->req, status, ctype, body, len) == -ENOMEM) {
        eddy_http_respond(j->req, 503, NULL, NULL, 0); /* never leave it unanswered */
        status = 503;
    }
    route_end(j->lc, kind_route[j->kind],
              aborted ? OUT_ABORTED : status < 400 ? OUT_ANSWERED : OUT_FAILED, j->t0_ns);
    job_recycle(j);
}

static void job_fail(struct job *j, int status, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static void job_fail(struct job *j, int status, const char *fmt, ...)
{
    char msg[1400];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    if (n < 0)
        n = 0;
    if ((size_t)n >= sizeof msg)
        n = (int)sizeof msg - 1;
    job_answer(j, status, "text/plain; charset=UTF-8", msg, (size_t)n);
}

static void job_abort(struct eddy_http_req *req, void *ud)
{
    (void)req;
    struct job *j = ud;
    j->aborted = true;
    switch (j->kind) {
    case J_TIME:
        /* The final callback answers (the answer is discarded). */
        eddy_cancel(j->lc->loop, &j->op);
        break;
    case J_OFFLOAD:
        /* A blocking call already running on the pool cannot be stopped:
         * finish the request now, so a draining server need not wait up to
         * --timeout for it, and let offload_done() only recycle the job. */
        if (eddy_cancel(j->lc->loop, &j->op) == -EBUSY) {
            eddy_http_respond(j->req, 503, NULL, NULL, 0); /* discarded */
            route_end(j->lc, R_OFFLOAD, OUT_ABORTED, j->t0_ns);
            j->req = NULL;
            j->detached = true;
        }
        break;
    case J_NOBLOCK:
        eddy_http_fetch_cancel(j->lc->cli, &j->fetch);
        break;
    case J_BLOCK:
        break; /* the posted call looks at eddy_http_aborted() */
    case J_CORO:
        break; /* not used: the fiber route cancels the fiber itself */
    }
}

/* ---- /api/time --------------------------------------------------------- */

static void time_fired(struct eddy_op *op, int res)
{
    (void)res; /* -ECANCELED after an abort: answer anyway, it is discarded */
    struct job *j = eddy_container_of(op, struct job, op);
    /* S as Python prints randint(10, 500) * 0.001: no trailing zeros. */
    char s[16];
    snprintf(s, sizeof s, "%u.%03u", j->delay_ms / 1000, j->delay_ms % 1000);
    size_t sl = strlen(s);
    while (sl > 3 && s[sl - 1] == '0' && s[sl - 2] != '.')
        s[--sl] = 0;
    char e[32];
    unix_now(e, sizeof e);
    char body[4096 + 128];
    int n = snprintf(body, sizeof body, "b:%s,s:%s => e:%s", j->tval, s, e);
    if ((size_t)n >= sizeof body)
        n = (int)sizeof body - 1;
    job_answer(j, 200, "text/plain; charset=UTF-8", body, (size_t)n);
}

static void h_time(struct eddy_http_req *req, void *ud)
{
    struct loopctx *lc = ud;
    route_begin(lc, R_TIME);
    struct job *j = job_get(lc, req, J_TIME);
    if (!j) {
        answer_no_job(lc, R_TIME, req, mono_ns());
        return;
    }
    j->tval = eddy_http_arg(req, "time", "");
    j->delay_ms = cfg.delay_ms >= 0 ? (unsigned)cfg.delay_ms
                                     : 10 + (unsigned)(rng_next(&lc->rng) % 491);
    j->op.label = "api_time timer";
    int rc = eddy_timer(lc->loop, &j->op, j->delay_ms, time_fired);
    if (rc < 0) {
        job_fail(j, 500, "timer: %s\n", eddy_strerror(rc));
        return;
    }
    eddy_http_on_abort(req, job_abort, j);
}

/* ---- the three fetching routes ---------------------------------------- */

/* The upstream's host as written in cfg.upstream (brackets kept). */
static void upstream_host(char *out, size_t n)
{
    const char *h = cfg.upstream + strlen("http://");
    size_t len = h[0] == '[' ? strcspn(h, "]") + 1 : strcspn(h, ":/?#");
    snprintf(out, n, "%.*s", (int)len, h);
}

/*
 * Why a fetch failed, for an operator.  The clients report a host name
 * that getaddrinfo() says does not exist (EAI_NONAME, EAI_NODATA) as
 * -ENOENT, whose own text ("No such file or directory") would mislead, and
 * a temporary resolver failure (EAI_AGAIN, EAI_FAIL) as -EHOSTUNREACH,
 * like a missing route.  They do not pass getaddrinfo's own code on, so
 * the words say what the error means without quoting a reason of its.
 */
static void upstream_reason(int err, char *out, size_t n)
{
    char host[300];
    upstream_host(host, sizeof host);
    struct in_addr a4;
    bool name = host[0] != '[' && inet_pton(AF_INET, host, &a4) != 1;
    if (err == -ENOENT && name)
        snprintf(out, n, "the host name %s did not resolve", host);
    else if (err == -EHOSTUNREACH && name)
        snprintf(out, n, "%s could not be resolved now, or there is no route to it", host);
    else if (err == -EAGAIN && name)
        snprintf(out, n, "the client could not start a thread to resolve %s", host);
    else
        snprintf(out, n, "%s", eddy_strerror(err));
}

/* Turns an upstream result into the answer: its body, 502 or 504. */
static void answer_upstream(struct job *j, int err, const struct eddy_http_response *r)
{
    if (err == 0 && r->status >= 200 && r->status < 300) {
        const char *ct = eddy_http_response_header(r, "Content-Type");
        job_answer(j, 200, ct ? ct : "text/plain; charset=UTF-8", r->body ? r->body : "",
                   r->body_len);
    } else if (err == 0) {
        job_fail(j, 502, "upstream %s answered %d %s\n", cfg.upstream, r->status,
                 eddy_http_reason(r->status));
    } else if (err == -ETIMEDOUT || err == -ETIME) {
        job_fail(j, 504, "upstream timeout: %s did not answer within %u ms\n", cfg.upstream,
                 cfg.timeout_ms);
    } else if (err == -ECANCELED) {
        job_fail(j, 503, "cancelled: the client went away\n");
    } else {
        char why[400];
        upstream_reason(err, why, sizeof why);
        job_fail(j, 502, "upstream error: %s: %s\n", cfg.upstream, why);
    }
}

/*
 * The "excerpt" comments mark the code the home page shows next to each
 * route's timeline (embed.cmake cuts it out at build time; "..." marks a
 * part left out).
 */
static void noblock_fetched(struct eddy_http_fetch *f, int err);

/* excerpt: noblock */
static void h_noblock(struct eddy_http_req *req, void *ud)
{
    /* excerpt end */
    struct loopctx *lc = ud;
    route_begin(lc, R_NOBLOCK);
    struct job *j = job_get(lc, req, J_NOBLOCK);
    if (!j) {
        answer_no_job(lc, R_NOBLOCK, req, mono_ns());
        return;
    }
    unix_now(j->now, sizeof j->now);
    j->arg.name = "time";
    j->arg.value = j->now;
    /* excerpt: noblock ... */
    j->fetch.url = cfg.upstream;
    j->fetch.args = &j->arg;
    j->fetch.nargs = 1;
    j->fetch.data = j;
    int rc = eddy_http_fetch_start(lc->cli, &j->fetch, noblock_fetched);
    if (rc < 0) {
        answer_upstream(j, rc, NULL);
        return;
    }
    eddy_http_on_abort(req, job_abort, j);
}
/* excerpt end */

/* excerpt: noblock */
static void noblock_fetched(struct eddy_http_fetch *f, int err)
{
    struct job *j = f->data;
    answer_upstream(j, err, &f->resp);
    eddy_http_fetch_release(f);
}
/* excerpt end */

/*
 * The blocking call, deliberately on the loop thread.  It runs as its own
 * posted callback, labelled, so the stall watchdog names this handler
 * rather than the server's receive callback that called h_block().
 */
/* excerpt: block */
static void api_block_fetch(struct eddy_op *op, int res)
{
    (void)res;
    struct job *j = eddy_container_of(op, struct job, op);
    /* excerpt end */
    if (eddy_http_aborted(j->req)) {
        job_fail(j, 503, "cancelled: the client went away\n");
        return;
    }
    /* excerpt: block ... */
    unix_now(j->now, sizeof j->now);
    struct eddy_http_pair a = {"time", j->now};
    struct eddy_http_response r;
    memset(&r, 0, sizeof r);
    int err = eddy_http_blocking_fetch(cfg.upstream, "GET", &a, 1, cfg.timeout_ms, &r);
    answer_upstream(j, err, &r);
    eddy_http_response_free(&r);
}
/* excerpt end */

static void h_block(struct eddy_http_req *req, void *ud)
{
    struct loopctx *lc = ud;
    route_begin(lc, R_BLOCK);
    struct job *j = job_get(lc, req, J_BLOCK);
    if (!j) {
        answer_no_job(lc, R_BLOCK, req, mono_ns());
        return;
    }
    j->op.label = "api_block_fetch (GET /api/block: blocking HTTP call on the loop thread)";
    int rc = eddy_post(lc->loop, &j->op, api_block_fetch);
    if (rc < 0) {
        job_fail(j, 500, "post: %s\n", eddy_strerror(rc));
        return;
    }
    eddy_http_on_abort(req, job_abort, j);
}

/* excerpt: offload */
/* On a pool thread: only the job's own fields, nothing of the loop. */
static int offload_work(struct eddy_op *op)
{
    struct job *j = eddy_container_of(op, struct job, op);
    struct eddy_http_pair a = {"time", j->now};
    unix_now(j->now, sizeof j->now);
    return eddy_http_blocking_fetch(cfg.upstream, "GET", &a, 1, cfg.timeout_ms, &j->resp);
}
/* excerpt end */

static void offload_done(struct eddy_op *op, int res)
{
    struct job *j = eddy_container_of(op, struct job, op);
    j->lc->offloads--;
    if (j->detached)
        job_recycle(j);
    else
        answer_upstream(j, res, &j->resp);
    eddy_http_response_free(&j->resp);
}

/* excerpt: offload */
static void h_offload(struct eddy_http_req *req, void *ud)
{
    /* excerpt end */
    struct loopctx *lc = ud;
    route_begin(lc, R_OFFLOAD);
    struct job *j = job_get(lc, req, J_OFFLOAD);
    if (!j) {
        answer_no_job(lc, R_OFFLOAD, req, mono_ns());
        return;
    }
    /* excerpt: offload ... */
    int rc = eddy_work(lc->loop, &j->op, offload_work, offload_done);
    if (rc < 0) {
        job_fail(j, 500, "worker pool: %s\n", eddy_strerror(rc));
        return;
    }
    lc->offloads++;
    eddy_http_on_abort(req, job_abort, j);
}
/* excerpt end */

/*
 * /api/coro: /api/block's straight line, on a fiber of its own (the route
 * is eddy_http_route_fiber's).  eddy_http_fetch_await() starts the same
 * asynchronous fetch as /api/noblock and parks this fiber, not the loop,
 * until the fetch's completion resumes it.  If the client goes away, the
 * route cancels the fiber: the await returns -ECANCELED (503, discarded).
 */
/* excerpt: coro */
static void h_coro(struct eddy_http_req *req, void *ud) /* on a fiber of its own */
{
    /* excerpt end */
    struct loopctx *lc = ud;
    route_begin(lc, R_CORO);
    struct job *j = job_get(lc, req, J_CORO);
    if (!j) {
        answer_no_job(lc, R_CORO, req, mono_ns());
        return;
    }
    /* excerpt: coro ... */
    unix_now(j->now, sizeof j->now);
    struct eddy_http_pair a = {"time", j->now};
    struct eddy_http_fetch f;
    memset(&f, 0, sizeof f);
    f.url = cfg.upstream;
    f.args = &a;
    f.nargs = 1;
    int err = eddy_http_fetch_await(lc->cli, &f);
    answer_upstream(j, err, &f.resp);
    eddy_http_fetch_release(&f);
}
/* excerpt end */

/* ---- /plaintext and /stats --------------------------------------------- */

static void h_plaintext(struct eddy_http_req *req, void *ud)
{
    struct loopctx *lc = ud;
    int64_t t0 = mono_ns();
    route_begin(lc, R_PLAINTEXT);
    eddy_http_respond(req, 200, "text/plain", "Hello, World!", 13);
    route_end(lc, R_PLAINTEXT, OUT_ANSWERED, t0);
}

struct sbuf {
    char *p;
    size_t len, cap;
};

static void sb_printf(struct sbuf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void sb_printf(struct sbuf *b, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(b->p + b->len, b->cap - b->len, fmt, ap);
    va_end(ap);
    if (n > 0)
        b->len += (size_t)n < b->cap - b->len ? (size_t)n : b->cap - b->len - 1;
}

#define U(x) ((unsigned long long)(x))

/* The /stats JSON of lc (one line, with its newline) into buf; its length. */
static size_t stats_json(struct loopctx *lc, char *buf, size_t cap)
{
    struct sbuf b = {buf, 0, cap};
    struct eddy_loop_stats ls;
    eddy_loop_stats(lc->loop, &ls);
    struct eddy_http_stats hs;
    eddy_http_server_stats(lc->srv, &hs);
    int64_t start_ns = (int64_t)cfg.started.tv_sec * 1000000000 + cfg.started.tv_nsec;
    double up = (double)(mono_ns() - start_ns) / 1e9;
    sb_printf(&b,
              "{\"scope\":\"loop\",\"loop\":%d,\"loops\":%u,\"uptime_s\":%.3f,"
              "\"loop_counters\":{\"iterations\":%llu,\"sqes\":%llu,\"completions\":%llu,"
              "\"submit_calls\":%llu,\"sq_full\":%llu,\"cq_overflows\":%llu,\"enobufs\":%llu,"
              "\"stalls\":%llu,\"active\":%u,\"inflight\":%u},",
              lc->index, cfg.threads, up, U(ls.iterations), U(ls.sqes), U(ls.completions),
              U(ls.submit_calls), U(ls.sq_full), U(ls.cq_overflows), U(ls.enobufs),
              U(ls.stalls), ls.active, ls.inflight);
    sb_printf(&b,
              "\"server\":{\"connections\":%u,\"accepted\":%llu,\"requests\":%llu,"
              "\"responses\":%llu,\"errors\":%llu,\"timeouts\":%llu,\"rejected\":%llu},",
              hs.conns, U(hs.accepted), U(hs.requests), U(hs.responses), U(hs.errors),
              U(hs.timeouts), U(hs.rejected));
    if (lc->cli) {
        struct eddy_http_client_stats cs;
        eddy_http_client_stats(lc->cli, &cs);
        sb_printf(&b,
                  "\"client\":{\"fetches\":%llu,\"connects\":%llu,\"reuses\":%llu,"
                  "\"retries\":%llu,\"conns\":%u,\"idle\":%u,\"queued\":%u,\"active\":%u},",
                  U(cs.fetches), U(cs.connects), U(cs.reuses), U(cs.retries), cs.conns, cs.idle,
                  cs.queued, cs.active);
    }
    if (lc->fibers) /* /api/coro's: requests refused (503) for want of a fiber are only here */
        sb_printf(&b, "\"fibers\":{\"spawned\":%llu,\"refused\":%llu,\"running\":%u},",
                  U(lc->coro_route.spawned), U(lc->coro_route.refused), lc->coro_route.running);
    sb_printf(&b, "\"routes\":{");
    for (int r = 0; r < R_COUNT; r++) {
        const struct route_stats *rs = &lc->routes[r];
        sb_printf(&b,
                  "%s\"%s\":{\"requests\":%llu,\"answered\":%llu,\"failed\":%llu,"
                  "\"aborted\":%llu,\"in_flight\":%llu,\"latency_ms\":{\"p50\":%.3f,"
                  "\"p90\":%.3f,\"p99\":%.3f,\"max\":%.3f}}",
                  r ? "," : "", route_path[r], U(rs->requests), U(rs->answered),
                  U(rs->failed), U(rs->aborted), U(rs->in_flight),
                  hist_percentile(&rs->lat, 50) / 1000, hist_percentile(&rs->lat, 90) / 1000,
                  hist_percentile(&rs->lat, 99) / 1000, (double)rs->lat.max / 1000);
    }
    sb_printf(&b, "}}\n");
    return b.len;
}

static void h_stats(struct eddy_http_req *req, void *ud)
{
    struct loopctx *lc = ud;
    int64_t t0 = mono_ns();
    route_begin(lc, R_STATS);
    char buf[8192];
    size_t len = stats_json(lc, buf, sizeof buf);
    eddy_http_respond(req, 200, "application/json", buf, len);
    route_end(lc, R_STATS, OUT_ANSWERED, t0);
}

/* ---- a growable buffer, for the page and the race's JSON --------------- */

/* Not on a hot path: the page, a race's answer.  On allocation failure the
 * buffer stops growing and says so (oom); the answer is then a 503. */
struct dbuf {
    char *p;
    size_t len, cap;
    bool oom;
};

static void db_put(struct dbuf *b, const void *s, size_t n)
{
    if (b->oom)
        return;
    if (b->len + n + 1 > b->cap) {
        size_t cap = b->cap ? b->cap : 4096;
        while (cap < b->len + n + 1)
            cap *= 2;
        char *p = realloc(b->p, cap);
        if (!p) {
            b->oom = true;
            return;
        }
        b->p = p;
        b->cap = cap;
    }
    memcpy(b->p + b->len, s, n);
    b->len += n;
    b->p[b->len] = 0;
}

static void db_puts(struct dbuf *b, const char *s)
{
    db_put(b, s, strlen(s));
}

static void db_printf(struct dbuf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void db_printf(struct dbuf *b, const char *fmt, ...)
{
    char small[512];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(small, sizeof small, fmt, ap);
    va_end(ap);
    if (n < 0)
        return;
    if ((size_t)n < sizeof small) {
        db_put(b, small, (size_t)n);
        return;
    }
    char *big = malloc((size_t)n + 1);
    if (!big) {
        b->oom = true;
        return;
    }
    va_start(ap, fmt);
    vsnprintf(big, (size_t)n + 1, fmt, ap);
    va_end(ap);
    db_put(b, big, (size_t)n);
    free(big);
}

/* s as a JSON string, quoted.  "<" is escaped too, so the JSON may sit
 * inside a <script> element of the page. */
static void db_json(struct dbuf *b, const char *s)
{
    db_put(b, "\"", 1);
    for (; *s; s++) {
        unsigned char c = (unsigned char)*s;
        if (c == '"' || c == '\\')
            db_printf(b, "\\%c", c);
        else if (c < 0x20 || c == '<')
            db_printf(b, "\\u%04x", c);
        else
            db_put(b, s, 1);
    }
    db_put(b, "\"", 1);
}

/* n bytes of text, HTML-escaped. */
static void db_html(struct dbuf *b, const char *s, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        switch (s[i]) {
        case '&': db_puts(b, "&amp;"); break;
        case '<': db_puts(b, "&lt;"); break;
        case '>': db_puts(b, "&gt;"); break;
        case '"': db_puts(b, "&quot;"); break;
        default: db_put(b, s + i, 1);
        }
    }
}

/* ---- stall reports, kept for the page ----------------------------------- */

/*
 * Every loop logs through demo_log(): each line goes to stderr as the
 * runtime's own hook prints it, and a stall report is also kept in a small
 * ring that GET /api/stalls shows.  The watchdog's thread writes the "still
 * running" reports and the loop's thread the "it has returned" ones, so the
 * ring is under a mutex.
 */
#define STALL_KEEP 16

struct stall_report {
    uint64_t seq;  /* 1, 2, ... over the process */
    int64_t unix_ms;
    int loop;      /* the loop's index; -1: the time service; -2: the racer */
    long ms;       /* how long it had held the loop when reported */
    bool running;  /* reported while it was still running */
    char culprit[256];
};

static struct {
    pthread_mutex_t mu;
    uint64_t seq;
    struct stall_report r[STALL_KEEP];
} stalls = {.mu = PTHREAD_MUTEX_INITIALIZER};

/* Keeps msg if it is a stall report ("loop stalled: callback NAME [has]
 * blocked the loop for N ms ..." from runtime/src/watchdog.c). */
static void stall_keep(int loop, const char *msg)
{
    static const char pre[] = "loop stalled: callback ", mid[] = " blocked the loop for ";
    if (strncmp(msg, pre, sizeof pre - 1) != 0)
        return;
    const char *name = msg + sizeof pre - 1, *mark = NULL;
    for (const char *p = name; (p = strstr(p, mid)) != NULL; p++)
        mark = p; /* the last one: a label may say anything */
    if (!mark)
        return;
    const char *end = mark;
    if (end - name >= 4 && !strncmp(end - 4, " has", 4))
        end -= 4;
    struct stall_report s;
    memset(&s, 0, sizeof s);
    s.loop = loop;
    s.ms = strtol(mark + sizeof mid - 1, NULL, 10);
    s.running = strstr(mark, "still running") != NULL;
    snprintf(s.culprit, sizeof s.culprit, "%.*s", (int)(end - name), name);
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    s.unix_ms = (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
    pthread_mutex_lock(&stalls.mu);
    s.seq = ++stalls.seq;
    stalls.r[(s.seq - 1) % STALL_KEEP] = s;
    pthread_mutex_unlock(&stalls.mu);
}

/* The loops' log hook (ud: the loopctx, NULL for the racer). */
static void demo_log(void *ud, int level, const char *msg)
{
    const struct loopctx *lc = ud;
    static const char *const names[] = {"error", "warning", "info"};
    fprintf(stderr, "eddy: %s: %s\n", names[level < 0 || level > 2 ? 2 : level], msg);
    stall_keep(lc ? lc->index : -2, msg);
}

/* GET /api/stalls[?since=SEQ]: the kept reports after SEQ, oldest first. */
static void h_stalls(struct eddy_http_req *req, void *ud)
{
    struct loopctx *lc = ud;
    int64_t t0 = mono_ns();
    route_begin(lc, R_STALLS);
    uint64_t since = strtoull(eddy_http_arg(req, "since", "0"), NULL, 10);
    struct stall_report r[STALL_KEEP];
    unsigned n = 0;
    pthread_mutex_lock(&stalls.mu);
    uint64_t last = stalls.seq;
    for (uint64_t q = last > STALL_KEEP ? last - STALL_KEEP + 1 : 1; q <= last; q++)
        if (q > since)
            r[n++] = stalls.r[(q - 1) % STALL_KEEP];
    pthread_mutex_unlock(&stalls.mu);
    struct dbuf b = {0};
    db_printf(&b, "{\"total\":%llu,\"threshold_ms\":%u,\"stalls\":[", U(last), cfg.stall_ms);
    for (unsigned i = 0; i < n; i++) {
        db_printf(&b, "%s{\"seq\":%llu,\"unix_ms\":%lld,\"loop\":%d,\"ms\":%ld,\"running\":%s,"
                  "\"culprit\":",
                  i ? "," : "", U(r[i].seq), (long long)r[i].unix_ms, r[i].loop, r[i].ms,
                  r[i].running ? "true" : "false");
        db_json(&b, r[i].culprit);
        db_puts(&b, "}");
    }
    db_puts(&b, "]}\n");
    int st = b.oom ? 503 : 200;
    eddy_http_respond(req, st, "application/json", b.oom ? NULL : b.p, b.oom ? 0 : b.len);
    free(b.p);
    route_end(lc, R_STALLS, st == 200 ? OUT_ANSWERED : OUT_FAILED, t0);
}

/* ---- the routes a race may use ------------------------------------------ */

/*
 * The page and the race API know the routes from this table only: one row
 * per route (a new route is one more row, and its code excerpt is marked in
 * this file like the others).  how is HTML.
 */
struct race_route {
    const char *name;  /* in the page's deep link: #race=block,noblock&n=10 */
    const char *path;
    const char *key;   /* the call that makes the difference: marked in the code */
    const char *how;   /* how it waits */
    const char *shape; /* what its timeline looks like */
};

static const struct race_route race_routes[] = {
    {"block", "/api/block", "eddy_http_blocking_fetch",
     "calls the <em>blocking</em> HTTP client on the loop thread. Until the time service "
     "answers, the loop runs nothing else: not the other requests, not even this page's "
     "own <code>/stats</code>. The stall watchdog names the culprit.",
     "a staircase: each request waits for all the ones before it, so n requests take n "
     "delays."},
    {"noblock", "/api/noblock", "eddy_http_fetch_start",
     "starts an <em>asynchronous</em> fetch with eddy's client and returns to the loop at "
     "once; the answer comes back later as a completion, and the callback finishes the "
     "request.",
     "a column of parallel bars: every wait overlaps, so n requests take about one delay."},
    {"offload", "/api/offload", "eddy_work",
     "runs the same blocking call on a <em>worker-pool</em> thread (<code>eddy_work</code>); "
     "the loop stays free, but only as many calls run at once as the pool has threads.",
     "waves as wide as the pool (<code>--pool</code>): n requests take about n / pool "
     "delays."},
    {"coro", "/api/coro", "eddy_http_fetch_await",
     "reads like <b>block</b>, one straight line: fetch, then answer. But it runs on a "
     "<em>fiber</em> of its own, and <code>eddy_http_fetch_await</code> starts noblock's "
     "asynchronous fetch and parks the fiber, not the loop, until the completion resumes it.",
     "noblock's column: every wait overlaps, so n requests take about one delay."},
};
#define RACE_ROUTES (sizeof race_routes / sizeof race_routes[0])
#define RACE_MAX_N 200

/* The handlers' code, cut from this file at build time (embed.cmake). */
struct demo_excerpt {
    const char *name;
    const unsigned char *text;
    size_t len;
};
#include "demo_web.h"

static const struct race_route *race_route_find(const char *path)
{
    for (size_t i = 0; i < RACE_ROUTES; i++)
        if (!strcmp(race_routes[i].path, path))
            return &race_routes[i];
    return NULL;
}

/* "/api/block, /api/noblock, ..." */
static void race_route_list(char *out, size_t n)
{
    size_t len = 0;
    out[0] = 0;
    for (size_t i = 0; i < RACE_ROUTES && len < n; i++) {
        int w = snprintf(out + len, n - len, "%s%s", i ? ", " : "", race_routes[i].path);
        if (w < 0)
            break;
        len += (size_t)w;
    }
}

/* The table and the settings a reader of the timelines needs. */
static void routes_json(struct dbuf *b)
{
    db_puts(b, "{\"routes\":[");
    for (size_t i = 0; i < RACE_ROUTES; i++) {
        db_puts(b, i ? ",{\"name\":" : "{\"name\":");
        db_json(b, race_routes[i].name);
        db_puts(b, ",\"path\":");
        db_json(b, race_routes[i].path);
        db_puts(b, "}");
    }
    char delay[16] = "null";
    if (cfg.delay_ms >= 0)
        snprintf(delay, sizeof delay, "%d", cfg.delay_ms);
    db_printf(b,
              "],\"max_n\":%d,\"delay_ms\":%s,\"pool\":%u,\"stall_ms\":%u,\"threads\":%u,"
              "\"timeout_ms\":%u,\"race_timeout_ms\":%u,\"upstream\":",
              RACE_MAX_N, delay, cfg.pool, cfg.stall_ms, cfg.threads, cfg.timeout_ms,
              cfg.race_timeout_ms);
    db_json(b, cfg.upstream);
    db_puts(b, "}");
}

static void h_routes(struct eddy_http_req *req, void *ud)
{
    struct loopctx *lc = ud;
    int64_t t0 = mono_ns();
    route_begin(lc, R_ROUTES);
    struct dbuf b = {0};
    routes_json(&b);
    db_puts(&b, "\n");
    int st = b.oom ? 503 : 200;
    eddy_http_respond(req, st, "application/json", b.oom ? NULL : b.p, b.oom ? 0 : b.len);
    free(b.p);
    route_end(lc, R_ROUTES, st == 200 ? OUT_ANSWERED : OUT_FAILED, t0);
}

/* ---- the home page ------------------------------------------------------ */

/* The excerpt, HTML-escaped, with each occurrence of key in <mark>. */
static void excerpt_html(struct dbuf *b, const char *s, size_t n, const char *key)
{
    size_t kl = key ? strlen(key) : 0;
    while (n) {
        const char *k = kl ? memmem(s, n, key, kl) : NULL;
        size_t before = k ? (size_t)(k - s) : n;
        db_html(b, s, before);
        if (!k)
            break;
        db_puts(b, "<mark>");
        db_html(b, k, kl);
        db_puts(b, "</mark>");
        s = k + kl;
        n -= before + kl;
    }
}

/* One <section> per race route: what it does, its code, its timeline. */
static void page_routes(struct dbuf *b)
{
    for (size_t i = 0; i < RACE_ROUTES; i++) {
        const struct race_route *r = &race_routes[i];
        db_printf(b,
                  "<section class=\"route r%zu\" id=\"route-%s\" data-route=\"%s\">\n"
                  "<h3><span class=\"key\" aria-hidden=\"true\"></span>%s "
                  "<code>GET %s</code></h3>\n"
                  "<p>%s</p>\n<p class=\"shape\"><b>Expect</b> %s</p>\n"
                  "<div class=\"pair\">\n<pre class=\"code\"><code>",
                  i, r->name, r->name, r->name, r->path, r->how, r->shape);
        const struct demo_excerpt *e = demo_excerpts;
        while (e->name && strcmp(e->name, r->name))
            e++;
        if (e->name)
            excerpt_html(b, (const char *)e->text, e->len, r->key);
        else
            db_puts(b, "/* no excerpt of this route is marked in apps/demo/demo.c */");
        db_printf(b,
                  "</code></pre>\n<figure class=\"timeline\" data-route=\"%s\">"
                  "<figcaption>Not raced yet.</figcaption></figure>\n</div>\n</section>\n",
                  r->name);
    }
}

/*
 * The page is web/index.html with two slots filled in: <!--eddy:routes-->
 * (the sections above) and <!--eddy:data--> (the route table and settings
 * as JSON, for the script).  Anything else is copied as it is.
 */
static void page_render(const char *tpl, size_t len, struct dbuf *b)
{
    static const char slot[] = "<!--eddy:";
    const char *p = tpl, *end = tpl + len;
    while (p < end) {
        const char *s = memmem(p, (size_t)(end - p), slot, sizeof slot - 1);
        if (!s) {
            db_put(b, p, (size_t)(end - p));
            break;
        }
        db_put(b, p, (size_t)(s - p));
        const char *rest = s + sizeof slot - 1;
        size_t left = (size_t)(end - rest);
        if (left >= 9 && !memcmp(rest, "routes-->", 9)) {
            page_routes(b);
            p = rest + 9;
        } else if (left >= 7 && !memcmp(rest, "data-->", 7)) {
            db_puts(b, "<script type=\"application/json\" id=\"eddy-data\">");
            routes_json(b);
            db_puts(b, "</script>");
            p = rest + 7;
        } else {
            db_put(b, s, sizeof slot - 1);
            p = rest;
        }
    }
}

/* Reads a whole (small) file: 0 and *out (malloc'd, NUL-terminated), or
 * -errno (-EFBIG past 4 MiB). */
static int read_small_file(const char *path, char **out, size_t *len)
{
    FILE *f = fopen(path, "rb");
    if (!f)
        return -errno;
    size_t cap = 65536, n = 0;
    char *p = malloc(cap);
    int rc = 0;
    while (p) {
        n += fread(p + n, 1, cap - n - 1, f);
        if (ferror(f)) {
            rc = -EIO;
            break;
        }
        if (feof(f))
            break;
        if (cap >= 4u << 20) {
            rc = -EFBIG;
            break;
        }
        char *q = realloc(p, cap * 2);
        if (!q) {
            free(p);
            p = NULL;
            break;
        }
        p = q;
        cap *= 2;
    }
    fclose(f);
    if (!p)
        return -ENOMEM;
    if (rc < 0) {
        free(p);
        return rc;
    }
    p[n] = 0;
    *out = p;
    *len = n;
    return 0;
}

/* The page allows itself no other origin: no external URL can load. */
#define PAGE_CSP "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; " \
                 "img-src data:; connect-src 'self'; base-uri 'none'; form-action 'self'"

static void h_page(struct eddy_http_req *req, void *ud)
{
    struct loopctx *lc = ud;
    int64_t t0 = mono_ns();
    route_begin(lc, R_PAGE);
    const char *tpl = (const char *)demo_index_html;
    size_t tlen = sizeof demo_index_html - 1;
    char *file = NULL;
    if (cfg.web_dir) {
        /* From disk on every request, so the page can be edited without a
         * rebuild: a small blocking read on the loop, for the page's author. */
        char path[4200];
        snprintf(path, sizeof path, "%s/index.html", cfg.web_dir);
        int rc = read_small_file(path, &file, &tlen);
        if (rc < 0) {
            char msg[4400];
            int n = snprintf(msg, sizeof msg, "--web-dir: cannot read %s: %s\n", path,
                             eddy_strerror(rc));
            eddy_http_respond(req, 500, "text/plain; charset=UTF-8", msg,
                              n < 0 ? 0 : (size_t)n < sizeof msg ? (size_t)n : sizeof msg - 1);
            route_end(lc, R_PAGE, OUT_FAILED, t0);
            return;
        }
        tpl = file;
    }
    struct dbuf b = {0};
    page_render(tpl, tlen, &b);
    free(file);
    int st = 503;
    if (!b.oom) {
        eddy_http_set_header(req, "Cache-Control", "no-store");
        eddy_http_set_header(req, "Content-Security-Policy", PAGE_CSP);
        if (eddy_http_respond(req, 200, "text/html; charset=UTF-8", b.p, b.len) == 0)
            st = 200;
    }
    if (st != 200)
        eddy_http_respond(req, 503, NULL, NULL, 0);
    free(b.p);
    route_end(lc, R_PAGE, st == 200 ? OUT_ANSWERED : OUT_FAILED, t0);
}

/* ---- the race ------------------------------------------------------------ */

/*
 * GET /api/race?route=PATH&n=N runs N concurrent GET PATH against the demo
 * itself and answers when every one has ended.  The requests are made by
 * the racer: a loop on a thread of its own with eddy's async client, one
 * connection per request (so nothing waits for a connection but the
 * server), never by the loop under test (which /api/block holds) and never
 * by the browser (six connections per host).  One race at a time, over the
 * whole process: racer.busy is taken by the handler that starts it and
 * given back once its answer is made.
 *
 * The race travels by posts: the handler fills the racer's fields and posts
 * race_start() to the racer's loop; race_finish() writes the JSON and posts
 * race_reply() back to the loop that took the request, which holds a
 * reference on its loop meanwhile (so it outlives a shutdown).
 */
struct race_one {
    struct eddy_http_fetch fetch;
    int64_t start_ns, end_ns;
    int status, err;
};

static struct {
    pthread_t thread;
    struct eddy_loop *loop;
    struct eddy_http_client *cli;
    struct eddy_op start_op, stop_op, reply_op;
    atomic_bool busy;
    bool open;                /* its loop runs: others may post to it (under post_mu) */
    bool active, stop_wanted; /* the racer's thread only */
    int rc;
    /* the race: set by h_race, then the racer's, then race_reply()'s */
    const struct race_route *route;
    unsigned n, left;
    char url[400];
    struct loopctx *origin;
    struct eddy_http_req *req;
    int64_t req_t0, t0_ns;
    struct dbuf json;
    struct race_one one[RACE_MAX_N];
} racer;

/* Guards posts to another thread's loop against its teardown (see
 * lc_set_open and racer.open). */
static pthread_mutex_t post_mu = PTHREAD_MUTEX_INITIALIZER;

/* Guards posts to the loops of other threads against their teardown. */

static int race_status(int err)
{
    return err == -ETIMEDOUT || err == -ETIME ? 504 : 502;
}

static void race_json(struct dbuf *b)
{
    int64_t last = racer.t0_ns;
    for (unsigned i = 0; i < racer.n; i++)
        if (racer.one[i].end_ns > last)
            last = racer.one[i].end_ns;
    db_puts(b, "{\"route\":");
    db_json(b, racer.route->path);
    db_printf(b, ",\"n\":%u,\"wall_ms\":%.3f,\"requests\":[", racer.n,
              (double)(last - racer.t0_ns) / 1e6);
    for (unsigned i = 0; i < racer.n; i++) {
        const struct race_one *o = &racer.one[i];
        db_printf(b, "%s{\"start_ms\":%.3f,\"end_ms\":%.3f,\"status\":%d", i ? "," : "",
                  (double)(o->start_ns - racer.t0_ns) / 1e6,
                  (double)(o->end_ns - racer.t0_ns) / 1e6, o->status);
        if (o->err) {
            char why[160];
            if (o->status == 504)
                snprintf(why, sizeof why, "no answer within %u ms (--race-timeout)",
                         cfg.race_timeout_ms);
            else
                snprintf(why, sizeof why, "%s", eddy_strerror(o->err));
            db_puts(b, ",\"error\":");
            db_json(b, why);
        }
        db_puts(b, "}");
    }
    db_printf(b, "],\"name\":");
    db_json(b, racer.route->name);
    db_printf(b, ",\"race_timeout_ms\":%u}\n", cfg.race_timeout_ms);
}

/* On the loop that took the request. */
static void race_reply(struct eddy_op *op, int res)
{
    (void)op;
    (void)res;
    struct loopctx *lc = racer.origin;
    struct eddy_http_req *req = racer.req;
    struct dbuf json = racer.json;
    memset(&racer.json, 0, sizeof racer.json);
    bool aborted = eddy_http_aborted(req);
    int st = 503;
    if (!json.oom && eddy_http_respond(req, 200, "application/json", json.p, json.len) == 0)
        st = 200;
    else
        eddy_http_respond(req, 503, NULL, NULL, 0);
    free(json.p);
    route_end(lc, R_RACE, aborted ? OUT_ABORTED : st == 200 ? OUT_ANSWERED : OUT_FAILED,
              racer.req_t0);
    atomic_store(&racer.busy, false);
    eddy_loop_unref(lc->loop); /* taken by h_race */
}

static void racer_closed(struct eddy_http_client *cli, void *ud)
{
    (void)cli;
    (void)ud;
    eddy_loop_unref(racer.loop); /* taken at set-up: now the racer's loop may end */
}

static void racer_close(void)
{
    if (eddy_http_client_close(racer.cli, racer_closed, NULL) < 0)
        eddy_loop_unref(racer.loop);
}

/* On the racer's loop, when every request has ended. */
static void race_finish(void)
{
    memset(&racer.json, 0, sizeof racer.json);
    race_json(&racer.json);
    racer.active = false;
    eddy_post_threadsafe(racer.origin->loop, &racer.reply_op, race_reply);
    if (racer.stop_wanted)
        racer_close();
}

static void race_fetched(struct eddy_http_fetch *f, int err)
{
    struct race_one *o = f->data;
    o->end_ns = mono_ns();
    o->err = err;
    o->status = err == 0 ? f->resp.status : race_status(err);
    eddy_http_fetch_release(f);
    if (--racer.left == 0)
        race_finish();
}

/* On the racer's loop: every request at once. */
static void race_start(struct eddy_op *op, int res)
{
    (void)op;
    (void)res;
    racer.active = true;
    racer.left = racer.n;
    racer.t0_ns = mono_ns();
    for (unsigned i = 0; i < racer.n; i++) {
        struct race_one *o = &racer.one[i];
        memset(o, 0, sizeof *o);
        o->fetch.url = racer.url;
        o->fetch.data = o;
        o->start_ns = mono_ns();
        int rc = eddy_http_fetch_start(racer.cli, &o->fetch, race_fetched);
        if (rc < 0) {
            o->end_ns = o->start_ns;
            o->err = rc;
            o->status = race_status(rc);
            racer.left--;
        }
    }
    if (racer.left == 0)
        race_finish();
}

static void racer_stop_post(struct eddy_op *op, int res)
{
    (void)op;
    (void)res;
    racer.stop_wanted = true;
    if (!racer.active)
        racer_close(); /* else race_finish() does */
}

/* A refusal of /api/race (4xx, or 503 when the racer is gone), with its reason. */
static void race_refuse(struct loopctx *lc, struct eddy_http_req *req, int status, int64_t t0,
                        const char *fmt, ...) __attribute__((format(printf, 5, 6)));
static void race_refuse(struct loopctx *lc, struct eddy_http_req *req, int status, int64_t t0,
                        const char *fmt, ...)
{
    char msg[1024];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    if (n < 0)
        n = 0;
    if ((size_t)n >= sizeof msg)
        n = (int)sizeof msg - 1;
    eddy_http_respond(req, status, "text/plain; charset=UTF-8", msg, (size_t)n);
    route_end(lc, R_RACE, OUT_FAILED, t0);
}

static void h_race(struct eddy_http_req *req, void *ud)
{
    struct loopctx *lc = ud;
    int64_t t0 = mono_ns();
    route_begin(lc, R_RACE);
    char list[256];
    race_route_list(list, sizeof list);
    const char *path = eddy_http_arg(req, "route", NULL);
    if (!path || !*path) {
        race_refuse(lc, req, 400, t0, "want /api/race?route=PATH&n=N, PATH one of: %s\n", list);
        return;
    }
    const struct race_route *r = race_route_find(path);
    if (!r) {
        race_refuse(lc, req, 400, t0,
                    "route %.200s cannot be raced: a race runs one of the demo's own "
                    "routes: %s\n",
                    path, list);
        return;
    }
    const char *ns = eddy_http_arg(req, "n", "10");
    unsigned long n = 0;
    const char *c = ns;
    for (; *c >= '0' && *c <= '9' && n <= RACE_MAX_N; c++)
        n = n * 10 + (unsigned long)(*c - '0');
    if (c == ns || *c || n < 1 || n > RACE_MAX_N) {
        race_refuse(lc, req, 400, t0, "n %.40s: want a whole number from 1 to %d\n", ns,
                    RACE_MAX_N);
        return;
    }
    if (atomic_exchange(&racer.busy, true)) {
        race_refuse(lc, req, 409, t0,
                    "a race is already running: one at a time, so that races do not distort "
                    "each other; try again when it has ended\n");
        return;
    }
    racer.route = r;
    racer.n = (unsigned)n;
    snprintf(racer.url, sizeof racer.url, "%s%s", cfg.race_base, r->path);
    racer.origin = lc;
    racer.req = req;
    racer.req_t0 = t0;
    pthread_mutex_lock(&post_mu);
    bool open = racer.open;
    if (open) {
        eddy_loop_ref(lc->loop); /* until race_reply() */
        eddy_post_threadsafe(racer.loop, &racer.start_op, race_start);
    }
    pthread_mutex_unlock(&post_mu);
    if (!open) {
        atomic_store(&racer.busy, false);
        race_refuse(lc, req, 503, t0, "the racer's loop has ended (see stderr)\n");
    }
}

/* The racer's thread: its own loop and client, set up here (the loop's
 * thread), then run until racer_closed(). */
static int racer_setup(void)
{
    struct eddy_loop_options lo;
    eddy_loop_options_init(&lo);
    lo.log = demo_log;
    lo.log_ud = NULL;
    int rc = eddy_loop_init(&racer.loop, &lo);
    if (rc < 0) {
        fprintf(stderr, "eddy-demo: racer: %s\n", eddy_loop_init_explain(rc));
        racer.loop = NULL;
        return rc;
    }
    struct eddy_http_client_options co;
    memset(&co, 0, sizeof co);
    co.max_conns_per_origin = RACE_MAX_N; /* one connection per request */
    co.request_timeout_ms = cfg.race_timeout_ms;
    co.connect_timeout_ms = cfg.race_timeout_ms < 20000 ? cfg.race_timeout_ms : 20000;
    co.keepalive_idle_ms = 5000;
    rc = eddy_http_client_init(&racer.cli, racer.loop, &co);
    if (rc < 0) {
        fprintf(stderr, "eddy-demo: racer: client: %s\n", eddy_strerror(rc));
        eddy_loop_destroy(racer.loop);
        racer.loop = NULL;
        return rc;
    }
    eddy_loop_ref(racer.loop);
    return 0;
}

static void racer_teardown(void)
{
    if (racer.cli && eddy_http_client_destroy(racer.cli) < 0)
        racer.rc = 1;
    racer.cli = NULL;
    if (eddy_loop_destroy(racer.loop) < 0) {
        fprintf(stderr, "eddy-demo: the racer's loop is still busy at exit\n");
        racer.rc = 1;
    }
    racer.loop = NULL;
}

/* ---- set-up and shutdown ---------------------------------------------- */

/* The signal thread's posts reach a loop only while it is open: from the
 * end of its set-up (a post waits until the loop runs) until its run
 * returns (then it is torn down).  post_mu is defined with the racer. */
static bool loops_gone; /* cfg.loops is being freed: post to none */

static void lc_set_open(struct loopctx *lc, bool open)
{
    pthread_mutex_lock(&post_mu);
    lc->open = open;
    pthread_mutex_unlock(&post_mu);
}

static void on_stop_post(struct eddy_op *op, int res);

static void lc_finished(struct loopctx *lc)
{
    eddy_loop_unref(lc->loop); /* taken at set-up so stop posts are never missed */
    if (lc->offloads) {
        /* Every request is finished, but blocking calls on the pool can
         * only end by themselves (up to --timeout): do not wait for them.
         * The loop and the jobs stay allocated for the pool threads until
         * the process exits. */
        fprintf(stderr, "eddy-demo: loop %d: %u worker-pool call%s still blocked; not "
                "waiting for %s\n", lc->index, lc->offloads, lc->offloads == 1 ? "" : "s",
                lc->offloads == 1 ? "it" : "them");
        lc->abandoned = true;
        eddy_loop_stop(lc->loop);
    }
    /* The time service and the racer go last: requests still draining may
     * need them. */
    if (!lc->is_time && atomic_fetch_sub(&cfg.main_left, 1) == 1) {
        /* As the signal thread does: a time loop whose run already
         * returned (an error) is torn down, its loop gone. */
        pthread_mutex_lock(&post_mu);
        if (cfg.time_lc && cfg.time_lc->open)
            eddy_post_threadsafe(cfg.time_lc->loop, &cfg.time_lc->stop_op, on_stop_post);
        if (racer.open)
            eddy_post_threadsafe(racer.loop, &racer.stop_op, racer_stop_post);
        pthread_mutex_unlock(&post_mu);
    }
}

static void cli_done(struct eddy_http_client *cli, void *ud)
{
    (void)cli;
    lc_finished(ud);
}

static void srv_done(struct eddy_http_server *srv, void *ud)
{
    (void)srv;
    struct loopctx *lc = ud;
    if (!lc->cli || eddy_http_client_close(lc->cli, cli_done, lc) < 0)
        lc_finished(lc);
}

static void lc_stop(struct loopctx *lc)
{
    if (lc->stopping)
        return;
    lc->stopping = true;
    int rc = eddy_http_server_shutdown(lc->srv, cfg.drain_ms, srv_done, lc);
    if (!lc->is_time) {
        uint64_t busy = 0;
        for (int r = 0; r < R_COUNT; r++)
            busy += lc->routes[r].in_flight;
        fprintf(stderr, "eddy-demo: loop %d: stopped accepting; %llu request%s in flight\n",
                lc->index, U(busy), busy == 1 ? "" : "s");
    }
    if (rc < 0)
        srv_done(lc->srv, lc);
}

static void on_stop_post(struct eddy_op *op, int res)
{
    (void)res;
    lc_stop(eddy_container_of(op, struct loopctx, stop_op));
}

/* Creates the loop, its server (and client) on the calling thread. */
static int lc_setup(struct loopctx *lc)
{
    struct eddy_loop_options lo;
    eddy_loop_options_init(&lo);
    lo.stall_ms = cfg.stall_ms;
    lo.pool_threads = cfg.pool;
    lo.log = demo_log; /* stderr, and stall reports for /api/stalls */
    lo.log_ud = lc;
    int rc = eddy_loop_init(&lc->loop, &lo);
    if (rc < 0) {
        fprintf(stderr, "eddy-demo: %s\n", eddy_loop_init_explain(rc));
        return rc;
    }
    lc->rng = cfg.seed + (uint64_t)(lc->index + 1) * 0x9e3779b97f4a7c15ull;
    struct eddy_http_options o;
    memset(&o, 0, sizeof o);
    o.host = cfg.host;
    o.port = (uint16_t)(lc->is_time ? cfg.time_port : cfg.port);
    o.reuseport = !lc->is_time && cfg.threads > 1; /* listen_fd is set up so already */
    o.listen_fd = lc->lfd;
    o.max_conns = cfg.max_conns;
    o.header_timeout_ms = cfg.header_timeout_ms;
    o.body_timeout_ms = cfg.body_timeout_ms;
    o.idle_timeout_ms = cfg.idle_timeout_ms;
    o.send_timeout_ms = cfg.send_timeout_ms;
    o.eof_finish = cfg.eof_finish;
    o.defer_accept_s = lc->is_time ? 0 : cfg.defer_accept_s;
    const char *what = "server";
    rc = eddy_http_server_init(&lc->srv, lc->loop, &o);
    if (rc < 0)
        goto err;
    what = "route";
    rc = eddy_http_route(lc->srv, "GET", "/api/time", EDDY_HTTP_EXACT, h_time, lc);
    if (rc == 0 && !lc->is_time)
        rc = eddy_http_route(lc->srv, "GET", "/api/noblock", EDDY_HTTP_EXACT, h_noblock, lc);
    if (rc == 0 && !lc->is_time)
        rc = eddy_http_route(lc->srv, "GET", "/api/block", EDDY_HTTP_EXACT, h_block, lc);
    if (rc == 0 && !lc->is_time)
        rc = eddy_http_route(lc->srv, "GET", "/api/offload", EDDY_HTTP_EXACT, h_offload, lc);
    if (rc == 0 && !lc->is_time) {
        /* /api/coro's handlers run on fibers from this loop's stack pool
         * (the defaults: 64 KiB stacks with guard pages). */
        what = "fibers";
        rc = eddy_fiber_setup(lc->loop, NULL);
        lc->fibers = rc == 0;
        if (rc == 0) {
            what = "route";
            rc = eddy_http_route_fiber(lc->srv, &lc->coro_route, "GET", "/api/coro",
                                       EDDY_HTTP_EXACT, h_coro, lc, NULL);
        }
    }
    if (rc == 0)
        rc = eddy_http_route(lc->srv, "GET", "/plaintext", EDDY_HTTP_EXACT, h_plaintext, lc);
    if (rc == 0)
        rc = eddy_http_route(lc->srv, "GET", "/stats", EDDY_HTTP_EXACT, h_stats, lc);
    if (rc == 0 && !lc->is_time)
        rc = eddy_http_route(lc->srv, "GET", "/", EDDY_HTTP_EXACT, h_page, lc);
    if (rc == 0 && !lc->is_time)
        rc = eddy_http_route(lc->srv, "GET", "/api/race", EDDY_HTTP_EXACT, h_race, lc);
    if (rc == 0 && !lc->is_time)
        rc = eddy_http_route(lc->srv, "GET", "/api/routes", EDDY_HTTP_EXACT, h_routes, lc);
    if (rc == 0 && !lc->is_time)
        rc = eddy_http_route(lc->srv, "GET", "/api/stalls", EDDY_HTTP_EXACT, h_stalls, lc);
    if (rc < 0)
        goto err;
    if (!lc->is_time) {
        struct eddy_http_client_options co;
        memset(&co, 0, sizeof co);
        co.max_conns_per_origin = cfg.upstream_conns;
        co.request_timeout_ms = cfg.timeout_ms;
        co.connect_timeout_ms = cfg.timeout_ms < 20000 ? cfg.timeout_ms : 20000;
        what = "client";
        rc = eddy_http_client_init(&lc->cli, lc->loop, &co);
        if (rc < 0)
            goto err;
    }
    what = "listen";
    rc = eddy_http_server_listen(lc->srv);
    if (rc < 0)
        goto err;
    lc->lfd = -1; /* the server's now */
    eddy_loop_ref(lc->loop);
    lc_set_open(lc, true);
    return 0;
err:
    fprintf(stderr, "eddy-demo: %s loop set-up (%s): %s\n",
            lc->is_time ? "time service" : "main", what, eddy_strerror(rc));
    return rc;
}

static void lc_teardown(struct loopctx *lc)
{
    if (!lc->loop)
        return;
    if (lc->cli && eddy_http_client_destroy(lc->cli) < 0)
        lc->rc = 1;
    if (lc->srv && eddy_http_server_destroy(lc->srv) < 0)
        lc->rc = 1;
    lc->cli = NULL;
    lc->srv = NULL;
    if (lc->fibers && eddy_fiber_teardown(lc->loop) < 0)
        lc->rc = 1;
    lc->fibers = false;
    if (lc->abandoned)
        return; /* the pool threads still use the loop and the jobs */
    while (lc->chunks) {
        struct jobchunk *ch = lc->chunks;
        lc->chunks = ch->next;
        eddy_loop_free(lc->loop, ch);
    }
    if (eddy_loop_destroy(lc->loop) < 0) {
        fprintf(stderr, "eddy-demo: loop %d still busy at exit\n", lc->index);
        lc->rc = 1;
    }
    lc->loop = NULL;
}

static void lc_run(struct loopctx *lc)
{
    int rc = eddy_loop_run(lc->loop, EDDY_RUN_DEFAULT);
    lc_set_open(lc, false);
    if (rc < 0) {
        fprintf(stderr, "eddy-demo: loop %d: %s\n", lc->index, eddy_strerror(rc));
        lc->rc = 1;
    }
}

static pthread_mutex_t ready_mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t ready_cv = PTHREAD_COND_INITIALIZER;
static unsigned ready_count, ready_failed;

static void *thread_main(void *arg)
{
    struct loopctx *lc = arg;
    int rc = lc_setup(lc);
    pthread_mutex_lock(&ready_mu);
    ready_count++;
    if (rc < 0)
        ready_failed++;
    pthread_cond_broadcast(&ready_cv);
    pthread_mutex_unlock(&ready_mu);
    if (rc < 0)
        return NULL; /* main exits the process */
    lc_run(lc);
    lc_teardown(lc);
    return NULL;
}

static void *racer_main(void *arg)
{
    (void)arg;
    int rc = racer_setup();
    pthread_mutex_lock(&ready_mu);
    ready_count++;
    if (rc < 0)
        ready_failed++;
    pthread_cond_broadcast(&ready_cv);
    pthread_mutex_unlock(&ready_mu);
    if (rc < 0)
        return NULL; /* main exits the process */
    pthread_mutex_lock(&post_mu);
    racer.open = true;
    pthread_mutex_unlock(&post_mu);
    rc = eddy_loop_run(racer.loop, EDDY_RUN_DEFAULT);
    if (rc < 0) {
        fprintf(stderr, "eddy-demo: the racer's loop: %s\n", eddy_strerror(rc));
        racer.rc = 1;
    }
    pthread_mutex_lock(&post_mu);
    racer.open = false;
    pthread_mutex_unlock(&post_mu);
    racer_teardown();
    return NULL;
}

/* ---- signals ----------------------------------------------------------- */

/*
 * The signals are read by a thread of their own (sigwaitinfo), not by a
 * loop: a loop held by a blocking call (/api/block) cannot read anything,
 * and the operator's second Ctrl-C must work exactly then.  Every other
 * thread has them blocked (the mask is set before the first thread
 * starts), so this thread is their only reader.  It reaches the loops with
 * thread-safe posts, under post_mu, and only while they are open.
 */
static const int demo_signals[] = {SIGINT, SIGTERM, SIGHUP, SIGUSR1, SIGUSR2};

static const char *sig_name(int s)
{
    switch (s) {
    case SIGINT: return "SIGINT";
    case SIGTERM: return "SIGTERM";
    case SIGHUP: return "SIGHUP";
    case SIGUSR1: return "SIGUSR1";
    case SIGUSR2: return "SIGUSR2";
    default: return "signal";
    }
}

/* SIGUSR1, on each loop's own thread: its /stats line to stderr. */
static void on_dump_post(struct eddy_op *op, int res)
{
    (void)res;
    struct loopctx *lc = eddy_container_of(op, struct loopctx, dump_op);
    char buf[8192];
    size_t len = stats_json(lc, buf, sizeof buf);
    fprintf(stderr, "eddy-demo: stats: %.*s", (int)len, buf);
    atomic_store(&lc->dump_pending, false);
}

static void *signal_main(void *arg)
{
    const sigset_t *set = arg;
    bool draining = false;
    for (;;) {
        int s = sigwaitinfo(set, NULL);
        if (s < 0)
            continue; /* EINTR */
        if (s == SIGUSR2) {
            fprintf(stderr, "eddy-demo: SIGUSR2: ignored\n");
            continue;
        }
        if (s != SIGUSR1 && draining) {
            /* The operator's second Ctrl-C: do not make them wait, even
             * for a loop that a blocking call holds. */
            fprintf(stderr, "eddy-demo: %s again: exiting without draining\n", sig_name(s));
            _exit(1);
        }
        if (s != SIGUSR1) {
            draining = true;
            fprintf(stderr, "eddy-demo: %s: draining (up to %u ms; again to exit at once)\n",
                    sig_name(s), cfg.drain_ms);
        }
        pthread_mutex_lock(&post_mu);
        for (unsigned i = 0; !loops_gone && i <= cfg.threads; i++) {
            struct loopctx *lc = i < cfg.threads ? &cfg.loops[i] : cfg.time_lc;
            if (!lc || !lc->open)
                continue;
            if (s == SIGUSR1) {
                if (!atomic_exchange(&lc->dump_pending, true))
                    eddy_post_threadsafe(lc->loop, &lc->dump_op, on_dump_post);
            } else if (!lc->is_time) {
                /* the time service stops after the main loops (lc_finished) */
                eddy_post_threadsafe(lc->loop, &lc->stop_op, on_stop_post);
            }
        }
        pthread_mutex_unlock(&post_mu);
    }
    return NULL;
}

/* ---- command line ------------------------------------------------------ */

static void usage(FILE *f)
{
    char races[256];
    race_route_list(races, sizeof races);
    fprintf(f,
        "usage: eddy-demo [options]\n"
        "The Tornado blocking/non-blocking demo on the eddy io_uring runtime.\n"
        "\n"
        "Routes (all GET):\n"
        "  /api/time?time=T  waits 10-500 ms on a timer, answers \"b:{T},s:{S} => e:{E}\"\n"
        "  /api/noblock      fetches the upstream with the async client\n"
        "  /api/block        the same with the blocking client on the loop thread (stalls it)\n"
        "  /api/offload      the blocking client on the worker pool\n"
        "  /api/coro         the async client awaited on a fiber: /api/block's straight line\n"
        "  /plaintext        \"Hello, World!\"\n"
        "  /                 the home page: the lesson, each route's code next to its\n"
        "                    timeline, races, live /stats and stall reports (inline\n"
        "                    HTML, CSS and JS; no external URL).  Deep link:\n"
        "                    /#race=block,noblock&n=10 runs those races on load\n"
        "  /api/race?route=PATH&n=N\n"
        "                    a race: N concurrent GET PATH (N 1-%d, default 10) made\n"
        "                    by the demo's async client from a thread of its own (not\n"
        "                    the loop under test, not the browser), one connection\n"
        "                    each; answers when all have ended, 200 JSON:\n"
        "                    {\"route\":PATH,\"n\":N,\"wall_ms\":W,\"requests\":[{\"start_ms\":S,\n"
        "                    \"end_ms\":E,\"status\":200}, ...],...} (ms from the race's\n"
        "                    start; a request unanswered after --race-timeout has\n"
        "                    status 504 and an \"error\").  PATH is one of:\n"
        "                    %s.\n"
        "                    400 (with the reason): another PATH, or N not in 1-%d;\n"
        "                    409: a race is already running (one at a time)\n"
        "  /api/routes       JSON: the routes a race may use, and the settings\n"
        "  /api/stalls[?since=SEQ]\n"
        "                    JSON: the stall watchdog's last %d reports (time, loop,\n"
        "                    ms, culprit), also printed on stderr\n"
        "  /stats            JSON: loop counters, connections; per route its requests,\n"
        "                    each counted once as it ends: requests =\n"
        "                    answered + failed + aborted + in_flight (failed: an error\n"
        "                    answer, 4xx/5xx; aborted: the client left before its\n"
        "                    answer), and the latency of the answers (handler to\n"
        "                    answer): p50, p90, p99 interpolated within a log-linear\n"
        "                    histogram bucket (within 3.2 %%), max exact.  Of the loop\n"
        "                    that answers\n"
        "                    (\"scope\":\"loop\"; with --threads N each loop counts its own)\n"
        "Upstream errors answer 502, upstream timeouts 504, each with a one-line reason.\n"
        "\n"
        "Options:\n"
        "  --host ADDR            address to bind (default 0.0.0.0; \"::\" is dual stack)\n"
        "  --port P               main port, 0-65535 (default 2345; 0 picks a free one)\n"
        "  --time-port Q|off      time service port (not --port), on its own loop thread:\n"
        "                         default 2346 (a free one with --port 0); 0 picks a free\n"
        "                         one; \"off\" runs no time service and needs --upstream\n"
        "  --threads N            main loops, one per thread, SO_REUSEPORT (default 1;\n"
        "                         1-256)\n"
        "  --upstream URL|self    what /api/noblock, /api/block, /api/offload and /api/coro\n"
        "                         fetch (default: the time service).  URL:\n"
        "                         http://host[:port][/path][?query] (scheme in any case;\n"
        "                         host a name, IPv4 or [IPv6]; port 1-65535; no user@),\n"
        "                         checked at start; without a path it gets /api/time\n"
        "                         (before the query).  \"self\": this server's own port,\n"
        "                         the original single-loop set-up (/api/block then\n"
        "                         ends in 504)\n"
        "  --timeout SEC          upstream request timeout in seconds, decimals allowed,\n"
        "                         at most 86400 (default 60, as in the original)\n"
        "  --delay-ms MS          /api/time waits exactly MS (0-600000) instead of a\n"
        "                         random 10-500 ms\n"
        "  --seed N               seed of the random delays (default: time and pid)\n"
        "  --stall-ms MS          stall watchdog threshold, reported on stderr and in\n"
        "                         /api/stalls (default 100;\n"
        "                         0 = off)\n"
        "  --pool N               worker threads per loop for /api/offload (default 4;\n"
        "                         1-1024)\n"
        "  --upstream-conns N     async client connections per upstream origin, 1-100000\n"
        "                         (default 1024)\n"
        "  --drain-ms MS          graceful shutdown: time for requests in flight (default 5000)\n"
        "  --header-timeout-ms MS whole request head, else 408 (default 10000)\n"
        "  --body-timeout-ms MS   whole request body, from the end of the head, else 408\n"
        "                         (default 30000)\n"
        "  --idle-timeout-ms MS   keep-alive idle, then close (default 60000)\n"
        "  --send-timeout-ms MS   a client that does not read an answer for MS is closed\n"
        "                         (default 30000)\n"
        "  --max-conns N          connections per loop, 1-1000000; beyond, 503 and close\n"
        "                         (default 10000)\n"
        "  --half-close finish|abort\n"
        "                         a client's EOF before its answers: finish (default)\n"
        "                         answers every request received, then closes, so\n"
        "                         `printf ... | nc -N` style clients that shutdown(SHUT_WR)\n"
        "                         get /api/noblock's answer; a client gone for good is\n"
        "                         noticed at the next failed send or after 30 s.  abort\n"
        "                         cancels the requests not answered yet at once (the\n"
        "                         handler's upstream fetch stops), as Tornado does\n"
        "  --web-dir DIR          serve the home page from DIR/index.html, read at every\n"
        "                         request (edit apps/demo/web/index.html without a\n"
        "                         rebuild); default: the copy compiled in\n"
        "  --race-timeout SEC     a raced request not answered within SEC is reported as\n"
        "                         504, decimals allowed (default 60)\n"
        "  --defer-accept SEC     TCP_DEFER_ACCEPT: a connection is handed over only once\n"
        "                         its first bytes are in (a silent client after about SEC\n"
        "                         seconds, 0-3600); saves a wake-up per connection\n"
        "                         (default 0: off)\n"
        "  --help                 this text\n"
        "Times in MS are 0-86400000 (a day); the four --*-timeout-ms at least 1.\n"
        "A bad value is named on stderr with what it accepts, and the exit status is 2.\n"
        "\n"
        "Prints one line once ready: \"eddy-demo: port P time-port Q: serving URLs...\"\n"
        "(Q is \"off\" with --time-port off).\n"
        "\n"
        "Signals:\n"
        "  SIGINT, SIGTERM, SIGHUP: drain: stop accepting, finish the requests in flight\n"
        "           (up to --drain-ms), exit 0.  A second one exits at once (status 1),\n"
        "           also while a blocking call (/api/block) holds a loop.\n"
        "  SIGUSR1: each loop prints its /stats line to stderr (once the loop is free).\n"
        "  SIGUSR2: ignored (noted on stderr).\n",
        RACE_MAX_N, races, RACE_MAX_N, STALL_KEEP);
}

/* A usage error: the reason (one line), a pointer to --help, status 2. */
static int usage_error(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static int usage_error(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fputs("eddy-demo: ", stderr);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputs("\nTry 'eddy-demo --help'.\n", stderr);
    return 2;
}

/* A whole decimal number in [min, max], else false with the option named. */
static bool opt_num(const char *opt, const char *arg, unsigned long min, unsigned long max,
                    const char *note, unsigned long *out)
{
    char *end;
    errno = 0;
    unsigned long v = strtoul(arg, &end, 10);
    if (errno || end == arg || *end || *arg == '-' || *arg == '+' || v < min || v > max) {
        usage_error("%s %s: want a number from %lu to %lu%s", opt, arg, min, max, note);
        return false;
    }
    *out = v;
    return true;
}

/*
 * Checks an --upstream URL by the client's rules (eddy/http_client.h), so a
 * URL the client would refuse stops the demo at start instead of turning
 * every fetch into a 502, and writes what the routes fetch into out: the
 * scheme in lower case, /api/time when there is no path (before the
 * query), no fragment (never sent).  0, or -1 with the reason in why.
 */
static int upstream_parse(const char *url, char *out, size_t n, char *why, size_t wn)
{
    if (strncasecmp(url, "http://", 7) != 0) {
        snprintf(why, wn, "want self or http://host[:port][/path][?query]");
        return -1;
    }
    const char *h = url + 7;
    size_t alen = strcspn(h, "/?#"); /* the authority: host[:port] */
    const char *rest = h + alen, *port = NULL;
    if (memchr(h, '@', alen)) {
        snprintf(why, wn, "user info (user@) is not supported");
        return -1;
    }
    if (alen && h[0] == '[') {
        const char *close = memchr(h, ']', alen);
        if (!close) {
            snprintf(why, wn, "no ] after the IPv6 address");
            return -1;
        }
        char a6[64];
        struct in6_addr ip;
        int l = (int)(close - h - 1);
        snprintf(a6, sizeof a6, "%.*s", l, h + 1);
        if ((size_t)l >= sizeof a6 || inet_pton(AF_INET6, a6, &ip) != 1) {
            snprintf(why, wn, "[%.*s] is not an IPv6 address", l, h + 1);
            return -1;
        }
        if (close + 1 < rest) {
            if (close[1] != ':') {
                snprintf(why, wn, "want [IPv6]:port");
                return -1;
            }
            port = close + 2;
        }
    } else {
        const char *colon = memchr(h, ':', alen);
        size_t hl = colon ? (size_t)(colon - h) : alen;
        if (hl == 0) {
            snprintf(why, wn, "no host");
            return -1;
        }
        for (size_t i = 0; i < hl; i++) {
            unsigned char c = (unsigned char)h[i];
            if (!isalnum(c) && c != '-' && c != '.' && c != '_') {
                snprintf(why, wn, "bad character in the host (A-Z a-z 0-9 - . _ only)");
                return -1;
            }
        }
        if (hl > 255) {
            snprintf(why, wn, "the host is longer than 255 bytes");
            return -1;
        }
        port = colon ? colon + 1 : NULL;
    }
    if (port) {
        unsigned long p = 0;
        const char *c = port;
        for (; c < rest && isdigit((unsigned char)*c) && p <= 65535; c++)
            p = p * 10 + (unsigned long)(*c - '0');
        if (c == port || c < rest || p == 0 || p > 65535) {
            snprintf(why, wn, "port '%.*s': want a number from 1 to 65535", (int)(rest - port),
                     port);
            return -1;
        }
    }
    size_t tlen = strcspn(rest, "#"), plen = strcspn(rest, "?#");
    for (size_t i = 0; i < tlen; i++) {
        unsigned char c = (unsigned char)rest[i];
        if (c <= 0x20 || c >= 0x7f) {
            snprintf(why, wn, "spaces and control characters are not allowed");
            return -1;
        }
    }
    int w = snprintf(out, n, "http://%.*s%s%.*s", (int)alen, h, plen ? "" : "/api/time",
                     (int)tlen, rest);
    if (w < 0 || (size_t)w >= n) {
        snprintf(why, wn, "longer than %zu bytes", n - 1);
        return -1;
    }
    return 0;
}

enum {
    O_HOST = 256, O_PORT, O_TIME_PORT, O_THREADS, O_UPSTREAM, O_TIMEOUT, O_DELAY, O_SEED,
    O_STALL, O_POOL, O_UPCONNS, O_DRAIN, O_HDR_TO, O_BODY_TO, O_IDLE_TO, O_SEND_TO,
    O_MAXCONNS, O_HALFCLOSE, O_DEFER, O_WEBDIR, O_RACE_TO, O_HELP,
};

/*
 * Fills cfg from the command line and checks it whole before anything is
 * bound or started.  Returns -1 to go on, or the exit status: 0 after
 * --help, 2 after a usage error (already reported on stderr).
 */
static int parse_args(int argc, char **argv)
{
    static const struct option longopts[] = {
        {"host", required_argument, NULL, O_HOST},
        {"port", required_argument, NULL, O_PORT},
        {"time-port", required_argument, NULL, O_TIME_PORT},
        {"threads", required_argument, NULL, O_THREADS},
        {"upstream", required_argument, NULL, O_UPSTREAM},
        {"timeout", required_argument, NULL, O_TIMEOUT},
        {"delay-ms", required_argument, NULL, O_DELAY},
        {"seed", required_argument, NULL, O_SEED},
        {"stall-ms", required_argument, NULL, O_STALL},
        {"pool", required_argument, NULL, O_POOL},
        {"upstream-conns", required_argument, NULL, O_UPCONNS},
        {"drain-ms", required_argument, NULL, O_DRAIN},
        {"header-timeout-ms", required_argument, NULL, O_HDR_TO},
        {"body-timeout-ms", required_argument, NULL, O_BODY_TO},
        {"idle-timeout-ms", required_argument, NULL, O_IDLE_TO},
        {"send-timeout-ms", required_argument, NULL, O_SEND_TO},
        {"max-conns", required_argument, NULL, O_MAXCONNS},
        {"half-close", required_argument, NULL, O_HALFCLOSE},
        {"defer-accept", required_argument, NULL, O_DEFER},
        {"web-dir", required_argument, NULL, O_WEBDIR},
        {"race-timeout", required_argument, NULL, O_RACE_TO},
        {"help", no_argument, NULL, O_HELP},
        {NULL, 0, NULL, 0},
    };
    static const char port_note[] = " (0: a free port)";
    bool have_seed = false, time_port_set = false;
    int ch, idx = 0;
    unsigned long v;
    const unsigned long big = 86400000ul; /* a day, in ms: bounds every time flag */
    while ((ch = getopt_long(argc, argv, "h", longopts, &idx)) != -1) {
        char opt[32] = ""; /* the option's full name, however it was spelt */
        if (ch >= O_HOST)
            snprintf(opt, sizeof opt, "--%s", longopts[idx].name);
        switch (ch) {
        case O_HOST: cfg.host = optarg; break;
        case O_PORT:
            if (!opt_num(opt, optarg, 0, 65535, port_note, &v))
                return 2;
            cfg.port = (unsigned)v;
            break;
        case O_TIME_PORT:
            if (!strcmp(optarg, "off")) {
                cfg.time_off = true;
                break;
            }
            if (!opt_num(opt, optarg, 0, 65535, " (0: a free port), or off", &v))
                return 2;
            cfg.time_port = (unsigned)v;
            cfg.time_off = false;
            time_port_set = true;
            break;
        case O_THREADS:
            if (!opt_num(opt, optarg, 1, 256, "", &v))
                return 2;
            cfg.threads = (unsigned)v;
            break;
        case O_UPSTREAM: cfg.upstream_arg = optarg; break;
        case O_TIMEOUT:
        case O_RACE_TO: {
            char *end;
            double d = strtod(optarg, &end);
            if (end == optarg || *end || !(d > 0) || d * 1000 > (double)big)
                return usage_error("%s %s: want seconds, more than 0 and at most %lu "
                                   "(decimals allowed)", opt, optarg, big / 1000);
            unsigned ms = (unsigned)(d * 1000 + 0.5);
            *(ch == O_TIMEOUT ? &cfg.timeout_ms : &cfg.race_timeout_ms) = ms ? ms : 1;
            break;
        }
        case O_WEBDIR: {
            char path[4200];
            snprintf(path, sizeof path, "%s/index.html", optarg);
            if (strlen(optarg) > 4000 || access(path, R_OK) != 0)
                return usage_error("%s %s: cannot read %s: %s", opt, optarg, path,
                                   strlen(optarg) > 4000 ? "path too long" : strerror(errno));
            cfg.web_dir = optarg;
            break;
        }
        case O_DELAY:
            if (!opt_num(opt, optarg, 0, 600000, "", &v))
                return 2;
            cfg.delay_ms = (int)v;
            break;
        case O_SEED: {
            char *end;
            errno = 0;
            cfg.seed = strtoull(optarg, &end, 0);
            if (errno || end == optarg || *end)
                return usage_error("%s %s: want a number (decimal, or hex with 0x)", opt,
                                   optarg);
            have_seed = true;
            break;
        }
        case O_STALL:
            if (!opt_num(opt, optarg, 0, big, " (0: off)", &v))
                return 2;
            cfg.stall_ms = (unsigned)v;
            break;
        case O_POOL:
            if (!opt_num(opt, optarg, 1, 1024, "", &v))
                return 2;
            cfg.pool = (unsigned)v;
            break;
        case O_UPCONNS:
            if (!opt_num(opt, optarg, 1, 100000, "", &v))
                return 2;
            cfg.upstream_conns = (unsigned)v;
            break;
        case O_DRAIN:
            if (!opt_num(opt, optarg, 0, big, "", &v))
                return 2;
            cfg.drain_ms = (unsigned)v;
            break;
        case O_HDR_TO:
        case O_BODY_TO:
        case O_IDLE_TO:
        case O_SEND_TO:
            if (!opt_num(opt, optarg, 1, big, "", &v))
                return 2;
            *(ch == O_HDR_TO ? &cfg.header_timeout_ms
              : ch == O_BODY_TO ? &cfg.body_timeout_ms
              : ch == O_IDLE_TO ? &cfg.idle_timeout_ms
                                : &cfg.send_timeout_ms) = (unsigned)v;
            break;
        case O_MAXCONNS:
            if (!opt_num(opt, optarg, 1, 1000000, "", &v))
                return 2;
            cfg.max_conns = (unsigned)v;
            break;
        case O_DEFER:
            if (!opt_num(opt, optarg, 0, 3600, " (0: off)", &v))
                return 2;
            cfg.defer_accept_s = (unsigned)v;
            break;
        case O_HALFCLOSE:
            if (!strcmp(optarg, "finish"))
                cfg.eof_finish = 1;
            else if (!strcmp(optarg, "abort"))
                cfg.eof_finish = 0;
            else
                return usage_error("%s %s: want finish or abort", opt, optarg);
            break;
        case O_HELP:
        case 'h':
            usage(stdout);
            return 0;
        default:
            /* getopt_long has said what was wrong */
            fputs("Try 'eddy-demo --help'.\n", stderr);
            return 2;
        }
    }
    if (optind != argc)
        return usage_error("unexpected argument '%s'", argv[optind]);
    /* Asking for any free main port means: do not claim a fixed one. */
    if (cfg.port == 0 && !time_port_set)
        cfg.time_port = 0;
    if (!cfg.time_off && cfg.port && cfg.port == cfg.time_port)
        return usage_error("--port and --time-port are both %u: the time service needs a "
                           "port of its own (0 picks a free one)", cfg.port);
    const char *up = cfg.upstream_arg;
    if (!up && cfg.time_off)
        return usage_error("--time-port off needs --upstream (without the time service the "
                           "fetching routes have nothing to fetch)");
    if (up && strcmp(up, "self") != 0) {
        char why[160];
        if (upstream_parse(up, cfg.upstream, sizeof cfg.upstream, why, sizeof why) < 0)
            return usage_error("--upstream %s: %s", up, why);
    }
    if (!have_seed)
        cfg.seed = (uint64_t)time(NULL) ^ ((uint64_t)getpid() << 32);
    return -1;
}

/* The host clients should dial to reach a server bound to cfg.host. */
static void dial_host(char *out, size_t n)
{
    const char *h = cfg.host;
    if (!strcmp(h, "0.0.0.0") || !strcmp(h, "::"))
        snprintf(out, n, "127.0.0.1");
    else if (strchr(h, ':'))
        snprintf(out, n, "[%s]", h);
    else
        snprintf(out, n, "%s", h);
}

static int bound_port(int fd)
{
    struct sockaddr_storage ss;
    socklen_t len = sizeof ss;
    if (getsockname(fd, (struct sockaddr *)&ss, &len) < 0)
        return -errno;
    if (ss.ss_family == AF_INET)
        return ntohs(((struct sockaddr_in *)&ss)->sin_port);
    return ntohs(((struct sockaddr_in6 *)&ss)->sin6_port);
}

/* Binds one SO_REUSEPORT socket per loop; port 0 becomes the kernel's pick,
 * shared by the others. */
/*
 * Is host:port free?  A plain bind without SO_REUSEPORT fails with
 * EADDRINUSE while anyone listens there, even a SO_REUSEPORT group: so a
 * second eddy-demo (same user) cannot silently join the first one's group
 * and share its traffic.
 */
static int port_free(unsigned port)
{
    struct sockaddr_storage ss;
    memset(&ss, 0, sizeof ss);
    struct sockaddr_in *a4 = (struct sockaddr_in *)&ss;
    struct sockaddr_in6 *a6 = (struct sockaddr_in6 *)&ss;
    socklen_t len;
    if (inet_pton(AF_INET, cfg.host, &a4->sin_addr) == 1) {
        a4->sin_family = AF_INET;
        a4->sin_port = htons((uint16_t)port);
        len = sizeof *a4;
    } else if (inet_pton(AF_INET6, cfg.host, &a6->sin6_addr) == 1) {
        a6->sin6_family = AF_INET6;
        a6->sin6_port = htons((uint16_t)port);
        len = sizeof *a6;
    } else {
        return -EINVAL;
    }
    int fd = socket(ss.ss_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return -errno;
    int one = 1, rc = 0;
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    if (bind(fd, (struct sockaddr *)&ss, len) < 0)
        rc = -errno;
    close(fd);
    return rc;
}

/* One listening socket; SO_REUSEPORT only when several loops share the
 * port (then the first checks that nobody else listens there).  Port 0
 * becomes the kernel's pick, which the other loops then share. */
static int open_listener(unsigned *port, bool shared, bool first, const char *what)
{
    int fd = shared && first && *port ? port_free(*port) : 0;
    if (fd == 0)
        fd = eddy_http_listen_socket(cfg.host, (uint16_t)*port, shared, 1024);
    if (fd < 0) {
        fprintf(stderr, "eddy-demo: listen on %s:%u (%s): %s%s\n", cfg.host, *port, what,
                eddy_strerror(fd),
                fd == -EADDRINUSE ? " (another eddy-demo?  --port 0 / --time-port 0 pick "
                                    "free ports)"
                                  : "");
        return fd;
    }
    if (*port == 0)
        *port = (unsigned)bound_port(fd);
    return fd;
}

int main(int argc, char **argv)
{
    int st = parse_args(argc, argv);
    if (st >= 0)
        return st;
    clock_gettime(CLOCK_MONOTONIC, &cfg.started);
    signal(SIGPIPE, SIG_IGN);

    cfg.loops = calloc(cfg.threads, sizeof *cfg.loops);
    struct loopctx time_lc;
    memset(&time_lc, 0, sizeof time_lc);
    if (!cfg.loops)
        return 1;
    for (unsigned i = 0; i < cfg.threads; i++) {
        cfg.loops[i].index = (int)i;
        cfg.loops[i].lfd = open_listener(&cfg.port, cfg.threads > 1, i == 0, "main");
        if (cfg.loops[i].lfd < 0)
            return 1;
    }
    if (!cfg.time_off) {
        time_lc.index = -1;
        time_lc.is_time = true;
        time_lc.lfd = open_listener(&cfg.time_port, false, true, "time service");
        if (time_lc.lfd < 0)
            return 1;
        cfg.time_lc = &time_lc;
    }

    char dial[300];
    dial_host(dial, sizeof dial);
    const char *up = cfg.upstream_arg;
    if (!up)
        snprintf(cfg.upstream, sizeof cfg.upstream, "http://%s:%u/api/time", dial, cfg.time_port);
    else if (!strcmp(up, "self"))
        snprintf(cfg.upstream, sizeof cfg.upstream, "http://%s:%u/api/time", dial, cfg.port);
    /* else parse_args() has checked and completed it */

    /* The signal thread reads the signals; every other thread must block
     * them, so block them before any thread is created (threads inherit
     * the mask). */
    static sigset_t set;
    sigemptyset(&set);
    for (size_t i = 0; i < sizeof demo_signals / sizeof demo_signals[0]; i++)
        sigaddset(&set, demo_signals[i]);
    pthread_sigmask(SIG_BLOCK, &set, NULL);

    atomic_store(&cfg.main_left, cfg.threads);
    struct loopctx *lc0 = &cfg.loops[0];
    if (lc_setup(lc0) < 0)
        return 1;
    snprintf(cfg.race_base, sizeof cfg.race_base, "http://%s:%u", dial, cfg.port);
    unsigned want = 0;
    if (pthread_create(&racer.thread, NULL, racer_main, NULL) != 0) {
        fprintf(stderr, "eddy-demo: cannot start a thread\n");
        return 1;
    }
    want++;
    for (unsigned i = 1; i <= cfg.threads; i++) {
        struct loopctx *lc = i < cfg.threads ? &cfg.loops[i] : cfg.time_lc;
        if (!lc)
            continue;
        if (pthread_create(&lc->thread, NULL, thread_main, lc) != 0) {
            fprintf(stderr, "eddy-demo: cannot start a thread\n");
            return 1;
        }
        want++;
    }
    pthread_mutex_lock(&ready_mu);
    while (ready_count < want)
        pthread_cond_wait(&ready_cv, &ready_mu);
    unsigned failed = ready_failed;
    pthread_mutex_unlock(&ready_mu);
    if (failed)
        return 1; /* the reason is on stderr; exiting ends the other loops */
    pthread_t sig_thread;
    if (pthread_create(&sig_thread, NULL, signal_main, &set) != 0) {
        fprintf(stderr, "eddy-demo: cannot start the signal thread\n");
        return 1;
    }
    pthread_detach(sig_thread); /* it waits for signals until the process ends */

    char tsvc[350] = "off", tport[8] = "off";
    if (!cfg.time_off) {
        snprintf(tsvc, sizeof tsvc, "http://%s:%u/api/time", dial, cfg.time_port);
        snprintf(tport, sizeof tport, "%u", cfg.time_port);
    }
    printf("eddy-demo: port %u time-port %s: serving http://%s:%u/api/time /api/noblock "
           "/api/block /api/offload /api/coro /plaintext /stats / /api/race /api/routes "
           "/api/stalls; "
           "time service %s; upstream %s; %u loop%s\n",
           cfg.port, tport, dial, cfg.port, tsvc, cfg.upstream, cfg.threads,
           cfg.threads == 1 ? "" : "s");
    fflush(stdout);
    /* The same for the log (scripts and tests of the first demo read it). */
    fprintf(stderr, "eddy-demo: listening on %s:%u (time port %s)\n", cfg.host, cfg.port,
            tport);

    lc_run(lc0);
    int status = lc0->rc;
    lc_teardown(lc0);
    for (unsigned i = 1; i <= cfg.threads; i++) {
        struct loopctx *lc = i < cfg.threads ? &cfg.loops[i] : cfg.time_lc;
        if (!lc)
            continue;
        pthread_join(lc->thread, NULL);
        status |= lc->rc;
    }
    pthread_join(racer.thread, NULL);
    status |= racer.rc;
    bool abandoned = false;
    for (unsigned i = 0; i < cfg.threads; i++)
        abandoned |= cfg.loops[i].abandoned;
    pthread_mutex_lock(&post_mu);
    loops_gone = true; /* the signal thread posts to none from now on */
    pthread_mutex_unlock(&post_mu);
    if (!abandoned)
        free(cfg.loops); /* else the pool threads still use what hangs off it */
    return status ? 1 : 0;
}
