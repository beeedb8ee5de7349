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
 *   GET /plaintext        "Hello, World!" (benchmarks).
 *   GET /stats            JSON counters of the loop that answers.
 *
 * The time service runs on its own loop thread and port, so /api/block
 * shows serialization rather than a deadlock; --upstream self points the
 * three fetching routes at the demo's own port, the original single-loop
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
#include "eddy/http.h"
#include "eddy/http_client.h"

#include <errno.h>
#include <getopt.h>
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
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

/* ---- routes and their statistics ------------------------------------- */

enum route { R_TIME, R_NOBLOCK, R_BLOCK, R_OFFLOAD, R_PLAINTEXT, R_STATS, R_COUNT };
static const char *const route_path[R_COUNT] = {
    "/api/time", "/api/noblock", "/api/block", "/api/offload", "/plaintext", "/stats",
};

/*
 * A log-linear latency histogram in microseconds: exact below 16 us, then
 * 8 sub-buckets per power of two (at most 12.5 % error) up to 2^41 us.
 * Fixed size, no allocation, O(1) per record; percentiles walk 312 counts.
 */
#define HIST_LINEAR 16
#define HIST_SUB 8
#define HIST_BUCKETS (HIST_LINEAR + HIST_SUB * 37)

struct hist {
    uint64_t count, max_us;
    uint64_t b[HIST_BUCKETS];
};

static unsigned hist_index(uint64_t v)
{
    if (v < HIST_LINEAR)
        return (unsigned)v;
    unsigned e = 63u - (unsigned)__builtin_clzll(v); /* >= 4 */
    unsigned idx = HIST_LINEAR + (e - 4) * HIST_SUB + (unsigned)((v >> (e - 3)) & 7);
    return idx < HIST_BUCKETS ? idx : HIST_BUCKETS - 1;
}

/* The largest value that lands in bucket idx. */
static uint64_t hist_upper(unsigned idx)
{
    if (idx < HIST_LINEAR)
        return idx;
    unsigned e = (idx - HIST_LINEAR) / HIST_SUB + 4, sub = (idx - HIST_LINEAR) % HIST_SUB;
    return ((uint64_t)(HIST_SUB + sub + 1) << (e - 3)) - 1;
}

static void hist_record(struct hist *h, uint64_t us)
{
    h->b[hist_index(us)]++;
    h->count++;
    if (us > h->max_us)
        h->max_us = us;
}

/* The p-th percentile (0 < p <= 100) as a bucket's upper bound, capped at max. */
static uint64_t hist_pct(const struct hist *h, unsigned p)
{
    if (!h->count)
        return 0;
    uint64_t want = (h->count * p + 99) / 100, seen = 0;
    for (unsigned i = 0; i < HIST_BUCKETS; i++) {
        seen += h->b[i];
        if (seen >= want) {
            uint64_t u = hist_upper(i);
            return u < h->max_us ? u : h->max_us;
        }
    }
    return h->max_us;
}

struct route_stats {
    uint64_t requests;
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
};

/* ---- per-loop state --------------------------------------------------- */

enum job_kind { J_TIME, J_NOBLOCK, J_BLOCK, J_OFFLOAD };

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
    struct eddy_http_arg arg;
    struct eddy_http_response resp; /* the blocking client's */
    char now[32];
    bool detached; /* answered already; the pool call still runs */
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
    struct eddy_op stop_op;
    struct eddy_op sig_ops[2];
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

static const enum route kind_route[] = {R_TIME, R_NOBLOCK, R_BLOCK, R_OFFLOAD};

static void record(struct loopctx *lc, enum route r, int64_t t0_ns)
{
    int64_t us = (mono_ns() - t0_ns) / 1000;
    hist_record(&lc->routes[r].lat, us > 0 ? (uint64_t)us : 0);
}

static void job_recycle(struct job *j)
{
    j->next_free = j->lc->free_jobs;
    j->lc->free_jobs = j;
}

/* Answers the job's request, records its latency and recycles the job. */
static void job_answer(struct job *j, int status, const char *ctype, const void *body,
                       size_t len)
{
    if (eddy_http_respond(j->req, status, ctype, body, len) == -ENOMEM)
        eddy_http_respond(j->req, 503, NULL, NULL, 0); /* never leave it unanswered */
    record(j->lc, kind_route[j->kind], j->t0_ns);
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
            j->req = NULL;
            j->detached = true;
        }
        break;
    case J_NOBLOCK:
        eddy_http_fetch_cancel(j->lc->cli, &j->fetch);
        break;
    case J_BLOCK:
        break; /* the posted call looks at eddy_http_aborted() */
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
    lc->routes[R_TIME].requests++;
    struct job *j = job_get(lc, req, J_TIME);
    if (!j) {
        eddy_http_respond(req, 503, NULL, NULL, 0);
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
        job_fail(j, 502, "upstream error: %s: %s\n", cfg.upstream, eddy_strerror(err));
    }
}

static void noblock_fetched(struct eddy_http_fetch *f, int err)
{
    struct job *j = f->data;
    answer_upstream(j, err, &f->resp);
    eddy_http_fetch_release(f);
}

static void h_noblock(struct eddy_http_req *req, void *ud)
{
    struct loopctx *lc = ud;
    lc->routes[R_NOBLOCK].requests++;
    struct job *j = job_get(lc, req, J_NOBLOCK);
    if (!j) {
        eddy_http_respond(req, 503, NULL, NULL, 0);
        return;
    }
    unix_now(j->now, sizeof j->now);
    j->arg.name = "time";
    j->arg.value = j->now;
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

/*
 * The blocking call, deliberately on the loop thread.  It runs as its own
 * posted callback, labelled, so the stall watchdog names this handler
 * rather than the server's receive callback that called h_block().
 */
static void api_block_fetch(struct eddy_op *op, int res)
{
    (void)res;
    struct job *j = eddy_container_of(op, struct job, op);
    if (eddy_http_aborted(j->req)) {
        job_fail(j, 503, "cancelled: the client went away\n");
        return;
    }
    unix_now(j->now, sizeof j->now);
    struct eddy_http_arg a = {"time", j->now};
    struct eddy_http_response r;
    memset(&r, 0, sizeof r);
    int err = eddy_http_blocking_fetch(cfg.upstream, "GET", &a, 1, cfg.timeout_ms, &r);
    answer_upstream(j, err, &r);
    eddy_http_response_free(&r);
}

static void h_block(struct eddy_http_req *req, void *ud)
{
    struct loopctx *lc = ud;
    lc->routes[R_BLOCK].requests++;
    struct job *j = job_get(lc, req, J_BLOCK);
    if (!j) {
        eddy_http_respond(req, 503, NULL, NULL, 0);
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

/* On a pool thread: only the job's own fields, nothing of the loop. */
static int offload_work(struct eddy_op *op)
{
    struct job *j = eddy_container_of(op, struct job, op);
    struct eddy_http_arg a = {"time", j->now};
    unix_now(j->now, sizeof j->now);
    return eddy_http_blocking_fetch(cfg.upstream, "GET", &a, 1, cfg.timeout_ms, &j->resp);
}

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

static void h_offload(struct eddy_http_req *req, void *ud)
{
    struct loopctx *lc = ud;
    lc->routes[R_OFFLOAD].requests++;
    struct job *j = job_get(lc, req, J_OFFLOAD);
    if (!j) {
        eddy_http_respond(req, 503, NULL, NULL, 0);
        return;
    }
    int rc = eddy_work(lc->loop, &j->op, offload_work, offload_done);
    if (rc < 0) {
        job_fail(j, 500, "worker pool: %s\n", eddy_strerror(rc));
        return;
    }
    lc->offloads++;
    eddy_http_on_abort(req, job_abort, j);
}

/* ---- /plaintext and /stats --------------------------------------------- */

static void h_plaintext(struct eddy_http_req *req, void *ud)
{
    struct loopctx *lc = ud;
    int64_t t0 = mono_ns();
    lc->routes[R_PLAINTEXT].requests++;
    eddy_http_respond(req, 200, "text/plain", "Hello, World!", 13);
    record(lc, R_PLAINTEXT, t0);
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

static void h_stats(struct eddy_http_req *req, void *ud)
{
    struct loopctx *lc = ud;
    int64_t t0 = mono_ns();
    lc->routes[R_STATS].requests++;
    char buf[8192];
    struct sbuf b = {buf, 0, sizeof buf};
    struct eddy_loop_stats ls;
    eddy_loop_stats(lc->loop, &ls);
    struct eddy_http_stats hs;
    eddy_http_server_stats(lc->srv, &hs);
    double up = (double)(t0 - ((int64_t)cfg.started.tv_sec * 1000000000 + cfg.started.tv_nsec)) / 1e9;
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
    sb_printf(&b, "\"routes\":{");
    for (int r = 0; r < R_COUNT; r++) {
        const struct route_stats *rs = &lc->routes[r];
        sb_printf(&b,
                  "%s\"%s\":{\"requests\":%llu,\"answered\":%llu,\"latency_ms\":{\"p50\":%.3f,"
                  "\"p90\":%.3f,\"p99\":%.3f,\"max\":%.3f}}",
                  r ? "," : "", route_path[r], U(rs->requests), U(rs->lat.count),
                  (double)hist_pct(&rs->lat, 50) / 1000, (double)hist_pct(&rs->lat, 90) / 1000,
                  (double)hist_pct(&rs->lat, 99) / 1000, (double)rs->lat.max_us / 1000);
    }
    sb_printf(&b, "}}\n");
    eddy_http_respond(req, 200, "application/json", buf, b.len);
    record(lc, R_STATS, t0);
}

/* ---- set-up and shutdown ---------------------------------------------- */

static void on_stop_post(struct eddy_op *op, int res);

static void lc_finished(struct loopctx *lc)
{
    eddy_loop_unref(lc->loop); /* taken at set-up so stop posts are never missed */
    if (lc == &cfg.loops[0]) {
        eddy_cancel(lc->loop, &lc->sig_ops[0]);
        eddy_cancel(lc->loop, &lc->sig_ops[1]);
    }
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
    /* The time service goes last: requests still draining may need it. */
    if (!lc->is_time && atomic_fetch_sub(&cfg.main_left, 1) == 1 && cfg.time_lc)
        eddy_post_threadsafe(cfg.time_lc->loop, &cfg.time_lc->stop_op, on_stop_post);
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
    if (eddy_http_server_shutdown(lc->srv, cfg.drain_ms, srv_done, lc) < 0)
        srv_done(lc->srv, lc);
}

static void on_stop_post(struct eddy_op *op, int res)
{
    (void)res;
    lc_stop(eddy_container_of(op, struct loopctx, stop_op));
}

static void on_signal(struct eddy_op *op, int res)
{
    if (!(op->flags & EDDY_OP_MORE))
        return; /* our own cancel */
    struct loopctx *lc0 = &cfg.loops[0];
    if (lc0->stopping) {
        /* The operator's second Ctrl-C: do not make them wait. */
        fprintf(stderr, "eddy-demo: signal %d again: exiting without draining\n", res);
        fflush(stderr);
        _exit(1);
    }
    fprintf(stderr, "eddy-demo: signal %d: draining (up to %u ms; again to exit at once)\n",
            res, cfg.drain_ms);
    for (unsigned i = 1; i < cfg.threads; i++)
        eddy_post_to(lc0->loop, cfg.loops[i].loop, &cfg.loops[i].stop_op, on_stop_post);
    lc_stop(lc0);
}

/* Creates the loop, its server (and client) on the calling thread. */
static int lc_setup(struct loopctx *lc)
{
    struct eddy_loop_options lo;
    eddy_loop_options_init(&lo);
    lo.stall_ms = cfg.stall_ms;
    lo.pool_threads = cfg.pool;
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
    if (rc == 0)
        rc = eddy_http_route(lc->srv, "GET", "/plaintext", EDDY_HTTP_EXACT, h_plaintext, lc);
    if (rc == 0)
        rc = eddy_http_route(lc->srv, "GET", "/stats", EDDY_HTTP_EXACT, h_stats, lc);
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

/* ---- command line ------------------------------------------------------ */

static void usage(FILE *f)
{
    fprintf(f,
        "usage: eddy-demo [options]\n"
        "The Tornado blocking/non-blocking demo on the eddy io_uring runtime.\n"
        "\n"
        "Routes (all GET):\n"
        "  /api/time?time=T  waits 10-500 ms on a timer, answers \"b:{T},s:{S} => e:{E}\"\n"
        "  /api/noblock      fetches the upstream with the async client\n"
        "  /api/block        the same with the blocking client on the loop thread (stalls it)\n"
        "  /api/offload      the blocking client on the worker pool\n"
        "  /plaintext        \"Hello, World!\"\n"
        "  /stats            JSON: loop counters, connections, requests and latency\n"
        "                    percentiles per route (handler to answer), of the loop that\n"
        "                    answers (\"scope\":\"loop\"; with --threads N each loop counts\n"
        "                    its own requests)\n"
        "Upstream errors answer 502, upstream timeouts 504, each with a one-line reason.\n"
        "\n"
        "Options:\n"
        "  --host ADDR            address to bind (default 0.0.0.0; \"::\" is dual stack)\n"
        "  --port P               main port (default 2345; 0 picks a free one)\n"
        "  --time-port Q          time service port, on its own loop thread (default 2346,\n"
        "                         or a free one with --port 0; 0 picks a free one; \"off\"\n"
        "                         runs no time service)\n"
        "  --threads N            main loops, one per thread, SO_REUSEPORT (default 1)\n"
        "  --upstream URL|self    what /api/noblock, /api/block and /api/offload fetch\n"
        "                         (default: the time service).  A URL without a path\n"
        "                         gets /api/time.  \"self\": this server's own port, the\n"
        "                         original single-loop set-up (/api/block then ends in 504)\n"
        "  --timeout SEC          upstream request timeout in seconds, decimals allowed\n"
        "                         (default 60, as in the original)\n"
        "  --delay-ms MS          /api/time waits exactly MS instead of a random 10-500 ms\n"
        "  --seed N               seed of the random delays (default: time and pid)\n"
        "  --stall-ms MS          stall watchdog threshold, reported on stderr (default 100;\n"
        "                         0 = off)\n"
        "  --pool N               worker threads per loop for /api/offload (default 4)\n"
        "  --upstream-conns N     async client connections per upstream origin (default 1024)\n"
        "  --drain-ms MS          graceful shutdown: time for requests in flight (default 5000)\n"
        "  --header-timeout-ms MS whole request head, else 408 (default 10000)\n"
        "  --body-timeout-ms MS   whole request body, from the end of the head, else 408\n"
        "                         (default 30000)\n"
        "  --idle-timeout-ms MS   keep-alive idle, then close (default 60000)\n"
        "  --send-timeout-ms MS   a client that does not read an answer for MS is closed\n"
        "                         (default 30000)\n"
        "  --max-conns N          connections per loop; beyond, 503 and close (default 10000)\n"
        "  --half-close finish|abort\n"
        "                         a client's EOF before its answers: finish (default)\n"
        "                         answers every request received, then closes, so\n"
        "                         `printf ... | nc -N` style clients that shutdown(SHUT_WR)\n"
        "                         get /api/noblock's answer; a client gone for good is\n"
        "                         noticed at the next failed send or after 30 s.  abort\n"
        "                         cancels the requests not answered yet at once (the\n"
        "                         handler's upstream fetch stops), as Tornado does\n"
        "  --defer-accept SEC     TCP_DEFER_ACCEPT: a connection is handed over only once\n"
        "                         its first bytes are in (a silent client after about SEC\n"
        "                         seconds); saves a wake-up per connection (default 0: off)\n"
        "  --help                 this text\n"
        "\n"
        "Prints one line once ready: \"eddy-demo: port P time-port Q: serving URLs...\".\n"
        "SIGINT/SIGTERM: stop accepting, finish requests in flight (up to --drain-ms),\n"
        "exit 0; a second signal exits at once (status 1).\n");
}

static bool parse_ul(const char *s, unsigned long max, unsigned long *out)
{
    char *end;
    errno = 0;
    unsigned long v = strtoul(s, &end, 10);
    if (errno || end == s || *end || v > max || *s == '-')
        return false;
    *out = v;
    return true;
}

enum {
    O_HOST = 256, O_PORT, O_TIME_PORT, O_THREADS, O_UPSTREAM, O_TIMEOUT, O_DELAY, O_SEED,
    O_STALL, O_POOL, O_UPCONNS, O_DRAIN, O_HDR_TO, O_BODY_TO, O_IDLE_TO, O_SEND_TO,
    O_MAXCONNS, O_HALFCLOSE, O_DEFER, O_HELP,
};

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
        {"help", no_argument, NULL, O_HELP},
        {NULL, 0, NULL, 0},
    };
    bool have_seed = false, time_port_set = false;
    int ch;
    unsigned long v;
    const unsigned long big = 86400000ul; /* a day, in ms: bounds every time flag */
    while ((ch = getopt_long(argc, argv, "h", longopts, NULL)) != -1) {
        switch (ch) {
        case O_HOST: cfg.host = optarg; break;
        case O_PORT:
            if (!parse_ul(optarg, 65535, &v))
                goto bad;
            cfg.port = (unsigned)v;
            break;
        case O_TIME_PORT:
            if (!strcmp(optarg, "off")) {
                cfg.time_off = true;
                break;
            }
            if (!parse_ul(optarg, 65535, &v))
                goto bad;
            cfg.time_port = (unsigned)v;
            cfg.time_off = false;
            time_port_set = true;
            break;
        case O_THREADS:
            if (!parse_ul(optarg, 256, &v) || v == 0)
                goto bad;
            cfg.threads = (unsigned)v;
            break;
        case O_UPSTREAM: cfg.upstream_arg = optarg; break;
        case O_TIMEOUT: {
            char *end;
            double d = strtod(optarg, &end);
            if (end == optarg || *end || !(d > 0) || d * 1000 > (double)big)
                goto bad;
            cfg.timeout_ms = (unsigned)(d * 1000 + 0.5);
            if (cfg.timeout_ms == 0)
                cfg.timeout_ms = 1;
            break;
        }
        case O_DELAY:
            if (!parse_ul(optarg, 600000, &v))
                goto bad;
            cfg.delay_ms = (int)v;
            break;
        case O_SEED: {
            char *end;
            errno = 0;
            cfg.seed = strtoull(optarg, &end, 0);
            if (errno || end == optarg || *end)
                goto bad;
            have_seed = true;
            break;
        }
        case O_STALL:
            if (!parse_ul(optarg, big, &v))
                goto bad;
            cfg.stall_ms = (unsigned)v;
            break;
        case O_POOL:
            if (!parse_ul(optarg, 1024, &v) || v == 0)
                goto bad;
            cfg.pool = (unsigned)v;
            break;
        case O_UPCONNS:
            if (!parse_ul(optarg, 100000, &v) || v == 0)
                goto bad;
            cfg.upstream_conns = (unsigned)v;
            break;
        case O_DRAIN:
            if (!parse_ul(optarg, big, &v))
                goto bad;
            cfg.drain_ms = (unsigned)v;
            break;
        case O_HDR_TO:
        case O_BODY_TO:
        case O_IDLE_TO:
        case O_SEND_TO:
            if (!parse_ul(optarg, big, &v) || v == 0)
                goto bad;
            *(ch == O_HDR_TO ? &cfg.header_timeout_ms
              : ch == O_BODY_TO ? &cfg.body_timeout_ms
              : ch == O_IDLE_TO ? &cfg.idle_timeout_ms
                                : &cfg.send_timeout_ms) = (unsigned)v;
            break;
        case O_MAXCONNS:
            if (!parse_ul(optarg, 1000000, &v) || v == 0)
                goto bad;
            cfg.max_conns = (unsigned)v;
            break;
        case O_DEFER:
            if (!parse_ul(optarg, 3600, &v))
                goto bad;
            cfg.defer_accept_s = (unsigned)v;
            break;
        case O_HALFCLOSE:
            if (!strcmp(optarg, "finish"))
                cfg.eof_finish = 1;
            else if (!strcmp(optarg, "abort"))
                cfg.eof_finish = 0;
            else
                goto bad;
            break;
        case O_HELP:
        case 'h':
            usage(stdout);
            return 0;
        default:
            goto bad;
        }
    }
    if (optind != argc)
        goto bad;
    /* Asking for any free main port means: do not claim a fixed one. */
    if (cfg.port == 0 && !time_port_set)
        cfg.time_port = 0;
    if (!have_seed)
        cfg.seed = (uint64_t)time(NULL) ^ ((uint64_t)getpid() << 32);
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
    if (!up && cfg.time_off) {
        fprintf(stderr, "eddy-demo: --time-port off needs --upstream\n");
        goto bad;
    }
    if (!up)
        snprintf(cfg.upstream, sizeof cfg.upstream, "http://%s:%u/api/time", dial, cfg.time_port);
    else if (!strcmp(up, "self"))
        snprintf(cfg.upstream, sizeof cfg.upstream, "http://%s:%u/api/time", dial, cfg.port);
    else if (strncmp(up, "http://", 7) || strlen(up) > sizeof cfg.upstream - 16) {
        fprintf(stderr, "eddy-demo: --upstream wants self or http://host[:port][/path]\n");
        goto bad;
    } else
        snprintf(cfg.upstream, sizeof cfg.upstream, "%s%s", up,
                 strchr(up + 7, '/') ? "" : "/api/time");

    /* Loop 0 reads the signals; every other thread must block them, so
     * block them before any thread is created (threads inherit the mask). */
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGINT);
    sigaddset(&set, SIGTERM);
    pthread_sigmask(SIG_BLOCK, &set, NULL);

    atomic_store(&cfg.main_left, cfg.threads);
    struct loopctx *lc0 = &cfg.loops[0];
    if (lc_setup(lc0) < 0)
        return 1;
    if (eddy_signal(lc0->loop, &lc0->sig_ops[0], SIGINT, on_signal) < 0 ||
        eddy_signal(lc0->loop, &lc0->sig_ops[1], SIGTERM, on_signal) < 0) {
        fprintf(stderr, "eddy-demo: cannot watch signals\n");
        return 1;
    }
    unsigned want = 0;
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

    char tsvc[350] = "off";
    if (!cfg.time_off)
        snprintf(tsvc, sizeof tsvc, "http://%s:%u/api/time", dial, cfg.time_port);
    printf("eddy-demo: port %u time-port %u: serving http://%s:%u/api/time /api/noblock "
           "/api/block /api/offload /plaintext /stats; time service %s; upstream %s; "
           "%u loop%s\n",
           cfg.port, cfg.time_off ? 0 : cfg.time_port, dial, cfg.port, tsvc, cfg.upstream,
           cfg.threads, cfg.threads == 1 ? "" : "s");
    fflush(stdout);
    /* The same for the log (scripts and tests of the first demo read it). */
    fprintf(stderr, "eddy-demo: listening on %s:%u (time port %u)\n", cfg.host, cfg.port,
            cfg.time_off ? 0 : cfg.time_port);

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
    bool abandoned = false;
    for (unsigned i = 0; i < cfg.threads; i++)
        abandoned |= cfg.loops[i].abandoned;
    if (!abandoned)
        free(cfg.loops); /* else the pool threads still use what hangs off it */
    return status ? 1 : 0;

bad:
    usage(stderr);
    return 2;
}
