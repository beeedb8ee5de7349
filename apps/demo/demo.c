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
 *   GET /plaintext-fiber  the same, answered from a fiber handler
 *                         (eddy_http_route_fiber), so a benchmark can compare
 *                         a fiber's cost per request with a callback's.
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
 * (SO_REUSEPORT) and its own client; the time service and the racer are
 * two more.  One eddy loop group (eddy/group.h) runs them all, each on a
 * thread of its own; one more thread reads the signals; shutdown drains
 * the main loops first and the time service last, so requests in flight
 * that still need it can finish (threads.c).
 *
 * This file: the routes (the code the home page shows is marked in it)
 * and each loop's server.  demo.h says where the rest is.
 */
#include "demo.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

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

/* ---- jobs: the requests answered later ----------------------------------- */

/* A job is allocated the first time the loop has that many requests in
 * flight, then recycled, and freed at exit: a steady load allocates nothing
 * per request. */
static struct job *job_get(struct loopctx *lc, struct eddy_http_req *req, enum job_kind kind)
{
    struct job *j = lc->free_jobs, *all;
    if (j) {
        lc->free_jobs = j->next_free;
        all = j->next_all;
    } else {
        j = eddy_loop_alloc(lc->loop, sizeof *j);
        if (!j)
            return NULL;
        all = lc->jobs;
        lc->jobs = j;
    }
    memset(j, 0, sizeof *j);
    j->next_all = all;
    j->lc = lc;
    j->req = req;
    j->kind = kind;
    j->t0_ns = demo_clock_ns();
    return j;
}

static const enum route kind_route[] = {R_TIME, R_NOBLOCK, R_BLOCK, R_OFFLOAD, R_CORO};

/* Counts a request of the kind's route and takes a job for it; NULL when
 * there is none (the loop's allocator failed: answered 503 here). */
static struct job *job_begin(struct loopctx *lc, struct eddy_http_req *req, enum job_kind kind)
{
    demo_route_begin(lc, kind_route[kind]);
    struct job *j = job_get(lc, req, kind);
    if (!j) {
        eddy_http_respond(req, 503, NULL, NULL, 0);
        demo_route_end(lc, kind_route[kind], OUT_FAILED, demo_clock_ns());
    }
    return j;
}

static void job_recycle(struct job *j)
{
    j->next_free = j->lc->free_jobs;
    j->lc->free_jobs = j;
}

void demo_job_answer(struct job *j, int status, const char *ctype, const void *body, size_t len)
{
    bool aborted = j->aborted || eddy_http_aborted(j->req);
    if (eddy_http_respond(j->req, status, ctype, body, len) == -ENOMEM) {
        eddy_http_respond(j->req, 503, NULL, NULL, 0); /* never leave it unanswered */
        status = 503;
    }
    demo_route_end(j->lc, kind_route[j->kind],
                   aborted ? OUT_ABORTED : status < 400 ? OUT_ANSWERED : OUT_FAILED, j->t0_ns);
    job_recycle(j);
}

void demo_job_fail(struct job *j, int status, const char *msg)
{
    demo_job_answer(j, status, "text/plain; charset=UTF-8", msg, strlen(msg));
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
            demo_route_end(j->lc, R_OFFLOAD, OUT_ABORTED, j->t0_ns);
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

/* A started job's operation: on failure the job is answered 500 with what
 * failed, else the job watches for its client going away. */
static void job_started(struct job *j, int rc, const char *what)
{
    if (rc < 0) {
        demo_job_fail(j, 500, demo_textf("%s: %s\n", what, eddy_strerror(rc)));
        return;
    }
    eddy_http_on_abort(j->req, job_abort, j);
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
    demo_job_answer(j, 200, "text/plain; charset=UTF-8", body, (size_t)n);
}

static void h_time(struct eddy_http_req *req, void *ud)
{
    struct loopctx *lc = ud;
    struct job *j = job_begin(lc, req, J_TIME);
    if (!j)
        return;
    j->tval = eddy_http_arg(req, "time", "");
    j->delay_ms = cfg.delay_ms >= 0 ? (unsigned)cfg.delay_ms
                                     : 10 + (unsigned)(rng_next(&lc->rng) % 491);
    j->op.label = "api_time timer";
    job_started(j, eddy_timer(lc->loop, &j->op, j->delay_ms, time_fired), "timer");
}

/* ---- the four fetching routes ------------------------------------------ */

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
    struct job *j = job_begin(lc, req, J_NOBLOCK);
    if (!j)
        return;
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
        demo_answer_upstream(j, rc, NULL);
        return;
    }
    eddy_http_on_abort(req, job_abort, j);
}
/* excerpt end */

/* excerpt: noblock */
static void noblock_fetched(struct eddy_http_fetch *f, int err)
{
    struct job *j = f->data;
    demo_answer_upstream(j, err, &f->resp);
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
        demo_job_fail(j, 503, "cancelled: the client went away\n");
        return;
    }
    /* excerpt: block ... */
    unix_now(j->now, sizeof j->now);
    struct eddy_http_pair a = {"time", j->now};
    struct eddy_http_response r;
    memset(&r, 0, sizeof r);
    int err = eddy_http_blocking_fetch(cfg.upstream, "GET", &a, 1, cfg.timeout_ms, &r);
    demo_answer_upstream(j, err, &r);
    eddy_http_response_free(&r);
}
/* excerpt end */

static void h_block(struct eddy_http_req *req, void *ud)
{
    struct loopctx *lc = ud;
    struct job *j = job_begin(lc, req, J_BLOCK);
    if (!j)
        return;
    j->op.label = "api_block_fetch (GET /api/block: blocking HTTP call on the loop thread)";
    job_started(j, eddy_post(lc->loop, &j->op, api_block_fetch), "post");
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
        demo_answer_upstream(j, res, &j->resp);
    eddy_http_response_free(&j->resp);
}

/* excerpt: offload */
static void h_offload(struct eddy_http_req *req, void *ud)
{
    /* excerpt end */
    struct loopctx *lc = ud;
    struct job *j = job_begin(lc, req, J_OFFLOAD);
    if (!j)
        return;
    /* excerpt: offload ... */
    int rc = eddy_work(lc->loop, &j->op, offload_work, offload_done);
    if (rc < 0) {
        demo_job_fail(j, 500, demo_textf("worker pool: %s\n", eddy_strerror(rc)));
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
    struct job *j = job_begin(lc, req, J_CORO);
    if (!j)
        return;
    /* excerpt: coro ... */
    unix_now(j->now, sizeof j->now);
    struct eddy_http_pair a = {"time", j->now};
    struct eddy_http_fetch f;
    memset(&f, 0, sizeof f);
    f.url = cfg.upstream;
    f.args = &a;
    f.nargs = 1;
    int err = eddy_http_fetch_await(lc->cli, &f);
    demo_answer_upstream(j, err, &f.resp);
    eddy_http_fetch_release(&f);
}
/* excerpt end */

/* ---- /plaintext and /plaintext-fiber ------------------------------------ */

/* The benchmarks' route: the same answer from a plain callback and, for
 * /plaintext-fiber, from a fiber of its own per request. */
static void plaintext(struct eddy_http_req *req, struct loopctx *lc, enum route r)
{
    int64_t t0 = demo_clock_ns();
    demo_route_begin(lc, r);
    eddy_http_respond(req, 200, "text/plain", "Hello, World!", 13);
    demo_route_end(lc, r, OUT_ANSWERED, t0);
}

static void h_plaintext(struct eddy_http_req *req, void *ud)
{
    plaintext(req, ud, R_PLAINTEXT);
}

static void h_plaintext_fiber(struct eddy_http_req *req, void *ud) /* on a fiber */
{
    plaintext(req, ud, R_PLAINTEXT_FIBER);
}

/* ---- each loop's server -------------------------------------------------- */

void demo_client_options(struct eddy_http_client_options *co, unsigned conns, unsigned timeout_ms)
{
    memset(co, 0, sizeof *co);
    co->max_conns_per_origin = conns;
    co->request_timeout_ms = timeout_ms;
    co->connect_timeout_ms = timeout_ms < 20000 ? timeout_ms : 20000;
}

/* The callback routes; the time service has only those marked so. */
static const struct {
    const char *path;
    eddy_http_handler handler;
    bool on_time_service;
} routes[] = {
    {"/api/time", h_time, true},              {"/api/noblock", h_noblock, false},
    {"/api/block", h_block, false},           {"/api/offload", h_offload, false},
    {"/plaintext", h_plaintext, true},        {"/stats", demo_h_stats, true},
    {"/", demo_h_page, false},                {"/api/race", demo_h_race, false},
    {"/api/routes", demo_h_routes, false},    {"/api/stalls", demo_h_stalls, false},
};

/* The fiber routes (main loops): their handlers run on fibers from this
 * loop's stack pool (the defaults: 64 KiB stacks with guard pages). */
static int fiber_routes(struct loopctx *lc, const char **what)
{
    *what = "fibers";
    int rc = eddy_fiber_setup(lc->loop, NULL);
    lc->fibers = rc == 0;
    if (rc < 0)
        return rc;
    *what = "route";
    rc = eddy_http_route_fiber(lc->srv, &lc->coro_route, "GET", "/api/coro",
                               EDDY_HTTP_EXACT, h_coro, lc, NULL);
    if (rc == 0)
        rc = eddy_http_route_fiber(lc->srv, &lc->plain_fiber_route, "GET", "/plaintext-fiber",
                                   EDDY_HTTP_EXACT, h_plaintext_fiber, lc, NULL);
    return rc;
}

static void server_options(const struct loopctx *lc, struct eddy_http_options *o)
{
    memset(o, 0, sizeof *o);
    o->host = cfg.host;
    o->port = (uint16_t)(lc->is_time ? cfg.time_port : cfg.port);
    o->reuseport = !lc->is_time && cfg.threads > 1; /* listen_fd is set up so already */
    o->listen_fd = lc->lfd;
    o->max_conns = cfg.max_conns;
    o->header_timeout_ms = cfg.header_timeout_ms;
    o->body_timeout_ms = cfg.body_timeout_ms;
    o->idle_timeout_ms = cfg.idle_timeout_ms;
    o->send_timeout_ms = cfg.send_timeout_ms;
    o->eof_finish = cfg.eof_finish;
    o->defer_accept_s = lc->is_time ? 0 : cfg.defer_accept_s;
}

int demo_serve_setup(struct loopctx *lc)
{
    lc->rng = cfg.seed + (uint64_t)(lc->index + 1) * 0x9e3779b97f4a7c15ull;
    struct eddy_http_options o;
    server_options(lc, &o);
    const char *what = "server";
    int rc = eddy_http_server_init(&lc->srv, lc->loop, &o);
    if (rc < 0)
        goto err;
    what = "route";
    for (size_t i = 0; rc == 0 && i < sizeof routes / sizeof routes[0]; i++)
        if (!lc->is_time || routes[i].on_time_service)
            rc = eddy_http_route(lc->srv, "GET", routes[i].path, EDDY_HTTP_EXACT,
                                 routes[i].handler, lc);
    if (rc == 0 && !lc->is_time)
        rc = fiber_routes(lc, &what);
    if (rc < 0)
        goto err;
    if (!lc->is_time) {
        struct eddy_http_client_options co;
        demo_client_options(&co, cfg.upstream_conns, cfg.timeout_ms);
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
    return 0;
err:
    fprintf(stderr, "eddy-demo: %s loop set-up (%s): %s\n",
            lc->is_time ? "time service" : "main", what, eddy_strerror(rc));
    return rc;
}

static void cli_done(struct eddy_http_client *cli, void *ud)
{
    (void)cli;
    demo_lc_finished(ud);
}

static void srv_done(struct eddy_http_server *srv, void *ud)
{
    (void)srv;
    struct loopctx *lc = ud;
    if (!lc->cli || eddy_http_client_close(lc->cli, cli_done, lc) < 0)
        demo_lc_finished(lc);
}

void demo_serve_drain(struct loopctx *lc, bool say)
{
    int rc = eddy_http_server_shutdown(lc->srv, cfg.drain_ms, srv_done, lc);
    if (say && !lc->is_time) {
        uint64_t busy = demo_routes_in_flight(lc);
        fprintf(stderr, "eddy-demo: loop %d: stopped accepting; %llu request%s in flight\n",
                lc->index, U(busy), busy == 1 ? "" : "s");
    }
    if (rc < 0)
        srv_done(lc->srv, lc);
}

void demo_serve_teardown(struct loopctx *lc)
{
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
    while (lc->jobs) {
        struct job *j = lc->jobs;
        lc->jobs = j->next_all;
        eddy_loop_free(lc->loop, j);
    }
}
