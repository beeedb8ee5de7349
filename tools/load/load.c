/*
 * eddy-load: an HTTP load generator on eddy's own asynchronous client.
 *
 *   eddy-load [-c CONNS] [-n REQUESTS | -d SECONDS] [--rate R] [--timeout S]
 *             [--json FILE] [--timeline FILE.svg] [-q] URL
 *
 * One loop, one eddy_http_client with max_conns_per_origin = CONNS, and
 * CONNS workers.  A worker is one caller-owned struct eddy_http_fetch that
 * keeps one request in flight: when it finishes, the result is recorded
 * and the worker starts the next one, until -n requests were started or
 * the -d deadline passed.  Then nothing new starts and the requests in
 * flight finish.  The client pools its connections, so a worker is not
 * tied to one socket; but with CONNS workers and a cap of CONNS
 * connections each worker in effect owns one, which is why the timeline
 * calls a worker's row a "connection".
 *
 * --rate R paces the starts (open loop): request i is due at t0 + i/R
 * exactly, and is started by the next free worker.  With -n N, N requests
 * are scheduled; with -d D, floor(D x R) (the smaller with both).  When no
 * worker is free the request waits: its lag (actual start - due time) is
 * recorded, and a start is late when the lag exceeds max(1 ms, 10 % of
 * 1/R).  The run "could not keep up" when more than 1 % of the starts were
 * late, or some never started.  The start rate is reported over the span
 * from the first start to the last.
 *
 * Latency: closed loop, from the start call to the callback; under --rate,
 * from the request's due time (so a backlog shows in the latency instead
 * of hiding in the schedule: coordinated omission, corrected as wrk2
 * does), with the service time (from the actual start) reported apart.
 * Only requests that got a response (any status) are timed and counted as
 * throughput; errors are counted by kind instead.  Percentiles come from a
 * log-linear histogram (hist.h: within 1.6 %).
 *
 * It always ends by itself: every request is bounded by --timeout (the
 * client's request timeout, connecting and queueing included), and with
 * -d anything still running (or, under --rate, not started yet) at the
 * deadline + the timeout + 1 s is cancelled.  SIGINT stops starting and
 * cancels what is in flight; the report is printed anyway.
 *
 * Memory: the histograms are fixed; for --timeline every finished request
 * is kept as a 12-byte record, the first 200,000 of them (2.4 MB); later
 * ones are counted but not drawn (the SVG says so).  Without --timeline
 * nothing per request is kept.
 *
 * Exit status: 0 when at least one request got a response (whatever its
 * status), 2 when none did (every request failed: refused, timed out...),
 * 1 on usage errors (also a URL the client rejects) and setup failures.
 */
#define _GNU_SOURCE
#include "load.h"
#include "eddy/eddy.h"
#include "eddy/http_client.h"
#include "hist.h"

#include <errno.h>
#include <getopt.h>
#include <math.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

#define MAX_CONNS 10000
#define MAX_RECS 200000
#define PROGRESS_MS 500
#define PROGRESS_AFTER_NS 2000000000LL

enum {
    E_REFUSED,
    E_RESOLVE,
    E_CONNECT,
    E_RESET,
    E_TIMEOUT,
    E_MALFORMED,
    E_TOO_LARGE,
    E_CANCELLED,
    E_OTHER,
    E_KINDS
};
static const char *const err_names[E_KINDS] = {"refused",   "resolve",   "connect",
                                               "reset",     "timeout",   "malformed",
                                               "too_large", "cancelled", "other"};

struct load;

struct worker {
    struct eddy_http_fetch f;
    struct load *L;
    unsigned idx;
    int busy;
    int64_t start_ns; /* the start call */
    int64_t due_ns;   /* under --rate, when the request was due; else start_ns */
};

struct load {
    /* options */
    const char *url;
    unsigned conns;
    uint64_t limit;    /* requests to start; UINT64_MAX with -d alone */
    double duration_s; /* 0: none */
    double rate;       /* 0: closed loop */
    unsigned timeout_ms;
    const char *json_path, *svg_path;
    int quiet;

    struct eddy_loop *loop;
    struct eddy_http_client *cli;
    struct worker *w;
    unsigned *idle; /* a stack of idle worker indices */
    unsigned nidle;
    unsigned inflight;
    uint64_t started, finished;
    int stopping, finishing, interrupted, bad_url;
    int start_err; /* a start that failed synchronously */
    int64_t t0, t_last;

    /* pacing (--rate) */
    uint64_t sched;  /* slots due so far */
    uint64_t late;   /* starts more than late_ns after their slot */
    int64_t late_ns; /* max(1 ms, 10 % of the interval) */
    int64_t max_lag_ns;
    int64_t first_start, last_start;

    struct eddy_op deadline_op, hard_op, rate_op, progress_op, sig_op;
    int progress_shown;

    /* results */
    struct hist h;   /* latency: from the due time under --rate, else the start */
    struct hist svc; /* under --rate: service time, from the actual start */
    uint64_t responses;
    uint64_t status[1000]; /* exact codes 100..999 */
    uint64_t klass[6];     /* 1xx..5xx by first digit; [0] unused */
    uint64_t errs[E_KINDS];
    uint64_t errors;
    struct rec *recs;
    size_t nrecs, recs_cap;
};

static int64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

/*
 * The kind of a failed fetch.  attempts is the fetch's count of connections
 * tried: 0 means it never got as far as a connection, so an unreachable
 * host then is a name that could not be resolved (the client reports a
 * name that does not exist as -ENOENT, a temporary resolver failure as
 * -EHOSTUNREACH, no resolver thread as -EAGAIN).  "connect" is a
 * connection that could not be opened for another reason than a refusal
 * or a timeout: no route, no local address or port, no descriptor, a
 * local firewall.
 */
static int err_kind(int err, unsigned attempts)
{
    switch (err) {
    case -ECONNREFUSED:
        return E_REFUSED;
    case -ENOENT:
        return E_RESOLVE;
    case -EAGAIN:
        return attempts == 0 ? E_RESOLVE : E_OTHER;
    case -EHOSTUNREACH:
        return attempts == 0 ? E_RESOLVE : E_CONNECT;
    case -ENETUNREACH:
    case -ENETDOWN:
    case -EADDRNOTAVAIL:
    case -EAFNOSUPPORT:
    case -EACCES:
    case -EPERM:
    case -EMFILE:
    case -ENFILE:
        return E_CONNECT;
    case -ECONNRESET:
    case -EPIPE:
        return E_RESET;
    case -ETIMEDOUT:
    case -ETIME:
        return E_TIMEOUT;
    case -EPROTO:
        return E_MALFORMED;
    case -EMSGSIZE:
        return E_TOO_LARGE;
    case -ECANCELED:
        return E_CANCELLED;
    default:
        return E_OTHER;
    }
}

static void on_fetch(struct eddy_http_fetch *f, int err);

static int64_t slot_ns(const struct load *L, uint64_t k)
{
    return L->t0 + (int64_t)((double)k * 1e9 / L->rate);
}

static int can_start(const struct load *L)
{
    if (L->stopping || L->started >= L->limit)
        return 0;
    return L->rate == 0 || L->started < L->sched;
}

static void record(struct load *L, unsigned worker, int64_t start, int64_t end, int outcome)
{
    if (!L->svg_path)
        return;
    if (L->nrecs == L->recs_cap) {
        if (L->recs_cap >= MAX_RECS)
            return;
        size_t cap = L->recs_cap ? L->recs_cap * 2 : 4096;
        if (cap > MAX_RECS)
            cap = MAX_RECS;
        struct rec *r = realloc(L->recs, cap * sizeof *r);
        if (!r)
            return; /* the timeline just stops early; the figures stay right */
        L->recs = r;
        L->recs_cap = cap;
    }
    int64_t s = (start - L->t0) / 1000, d = (end - start) / 1000;
    struct rec *q = &L->recs[L->nrecs++];
    q->start_us = s > UINT32_MAX ? UINT32_MAX : (uint32_t)s;
    q->dur_us = d > UINT32_MAX ? UINT32_MAX : (uint32_t)d;
    q->worker = (uint16_t)worker;
    q->outcome = (int16_t)(outcome < -32768 ? -32768 : outcome);
}

/* Hands due requests to idle workers. */
static void dispatch(struct load *L)
{
    while (L->nidle && can_start(L) && !L->start_err) {
        struct worker *w = &L->w[L->idle[L->nidle - 1]];
        int64_t t = now_ns();
        int rc = eddy_http_fetch_start(L->cli, &w->f, on_fetch);
        if (rc < 0) {
            /* Nothing can go better on the next try (bad URL, no memory,
             * client closing): stop the run rather than spin. */
            L->start_err = rc;
            L->bad_url = rc == -EINVAL && L->started == 0;
            L->stopping = 1;
            break;
        }
        w->due_ns = t;
        if (L->rate > 0) {
            w->due_ns = slot_ns(L, L->started);
            int64_t lag = t - w->due_ns;
            if (lag > L->late_ns)
                L->late++;
            if (lag > L->max_lag_ns)
                L->max_lag_ns = lag;
            if (L->started == 0)
                L->first_start = t;
            L->last_start = t;
        }
        L->nidle--;
        w->busy = 1;
        w->start_ns = t;
        L->started++;
        L->inflight++;
    }
}

static void client_done(struct eddy_http_client *cli, void *ud)
{
    (void)cli;
    (void)ud;
}

static void cancel_op(struct load *L, struct eddy_op *op)
{
    if (eddy_op_active(op))
        eddy_cancel(L->loop, op);
}

/* Everything has ended: release the timers and the client so the loop
 * runs out of work and eddy_loop_run() returns. */
static void maybe_finish(struct load *L)
{
    if (L->finishing || L->inflight)
        return;
    if (!L->stopping && L->started < L->limit)
        return;
    L->finishing = 1;
    cancel_op(L, &L->deadline_op);
    cancel_op(L, &L->hard_op);
    cancel_op(L, &L->rate_op);
    cancel_op(L, &L->progress_op);
    cancel_op(L, &L->sig_op);
    eddy_http_client_close(L->cli, client_done, L);
}

static void on_fetch(struct eddy_http_fetch *f, int err)
{
    struct worker *w = eddy_container_of(f, struct worker, f);
    struct load *L = w->L;
    int64_t end = now_ns();
    int outcome;
    if (err == 0) {
        int st = f->resp.status;
        L->responses++;
        if (st >= 100 && st <= 999) {
            L->status[st]++;
            if (st / 100 <= 5)
                L->klass[st / 100]++;
        }
        hist_record(&L->h, (uint64_t)((end - w->due_ns) / 1000));
        if (L->rate > 0)
            hist_record(&L->svc, (uint64_t)((end - w->start_ns) / 1000));
        outcome = st;
        eddy_http_fetch_release(f);
    } else {
        L->errs[err_kind(err, f->attempts)]++;
        L->errors++;
        outcome = err;
    }
    record(L, w->idx, w->start_ns, end, outcome);
    L->finished++;
    L->t_last = end;
    w->busy = 0;
    L->inflight--;
    L->idle[L->nidle++] = w->idx;
    dispatch(L);
    maybe_finish(L);
}

static void cancel_inflight(struct load *L)
{
    for (unsigned i = 0; i < L->conns; i++)
        if (L->w[i].busy)
            eddy_http_fetch_cancel(L->cli, &L->w[i].f);
}

static void on_deadline(struct eddy_op *op, int res)
{
    struct load *L = eddy_container_of(op, struct load, deadline_op);
    if (res != 0)
        return;
    L->stopping = 1;
    cancel_op(L, &L->rate_op);
    maybe_finish(L);
}

/* Stops at once: no new request, whatever still runs cancelled. */
static void stop_now(struct load *L)
{
    L->stopping = 1;
    cancel_op(L, &L->rate_op);
    cancel_inflight(L);
    maybe_finish(L);
}

/* The last resort against a server that holds requests: at the deadline +
 * the timeout + 1 s, whatever still runs is cancelled, and under --rate
 * what is still waiting for a worker is not started. */
static void on_hard(struct eddy_op *op, int res)
{
    struct load *L = eddy_container_of(op, struct load, hard_op);
    if (res != 0)
        return;
    stop_now(L);
}

static void on_rate(struct eddy_op *op, int res)
{
    struct load *L = eddy_container_of(op, struct load, rate_op);
    if (res != 0)
        return;
    int64_t now = now_ns();
    while (!L->stopping && L->sched < L->limit && slot_ns(L, L->sched) <= now)
        L->sched++;
    dispatch(L);
    if (!L->stopping && L->sched < L->limit)
        eddy_timer_at(L->loop, &L->rate_op, slot_ns(L, L->sched), on_rate);
    maybe_finish(L);
}

static void on_signal(struct eddy_op *op, int res)
{
    struct load *L = eddy_container_of(op, struct load, sig_op);
    if (res != SIGINT)
        return;
    L->interrupted = 1;
    stop_now(L);
}

static void on_progress(struct eddy_op *op, int res)
{
    struct load *L = eddy_container_of(op, struct load, progress_op);
    if (res != 0)
        return;
    int64_t el = now_ns() - L->t0;
    if (el < PROGRESS_AFTER_NS)
        return;
    double s = (double)el / 1e9;
    printf("\r\033[K  %.1f s  %llu done  %.1f responses/s  %u in flight  %llu errors", s,
           (unsigned long long)L->finished, (double)L->responses / s, L->inflight,
           (unsigned long long)L->errors);
    fflush(stdout);
    L->progress_shown = 1;
}

/* ---- the report ---------------------------------------------------------- */

struct lat {
    double min, mean, p50, p90, p99, p999, max; /* ms */
};

struct figures {
    double dur_s, rps;
    double span_s, start_rate; /* under --rate; start_rate < 0: fewer than 2 starts */
    uint64_t scheduled, not_started;
    struct lat lat, svc;
};

static void lat_of(const struct hist *h, struct lat *l)
{
    l->min = (double)h->min / 1000;
    l->mean = hist_mean(h) / 1000;
    l->p50 = (double)hist_percentile(h, 50) / 1000;
    l->p90 = (double)hist_percentile(h, 90) / 1000;
    l->p99 = (double)hist_percentile(h, 99) / 1000;
    l->p999 = (double)hist_percentile(h, 99.9) / 1000;
    l->max = (double)h->max / 1000;
}

static void compute(const struct load *L, struct figures *g)
{
    int64_t end = L->t_last > L->t0 ? L->t_last : L->t0;
    /* Under --rate the run lasts its schedule at least: k requests at R/s
     * take k/R s, although the last one is due at (k-1)/R (5 at 10/s are
     * 10/s, not 5 in 0.4 s).  k counts the slots that came due, so an
     * interrupted run ends where its schedule stopped. */
    if (L->rate > 0 && slot_ns(L, L->sched) > end)
        end = slot_ns(L, L->sched);
    g->dur_s = (double)(end - L->t0) / 1e9;
    /* Throughput is what came back: errors (a refusal takes microseconds)
     * are not served requests. */
    g->rps = g->dur_s > 0 ? (double)L->responses / g->dur_s : 0;
    g->scheduled = L->limit;
    g->not_started = L->limit - L->started;
    g->span_s = L->started ? (double)(L->last_start - L->first_start) / 1e9 : 0;
    g->start_rate = L->started >= 2 && g->span_s > 0 ? (double)(L->started - 1) / g->span_s : -1;
    lat_of(&L->h, &g->lat);
    lat_of(&L->svc, &g->svc);
}

/* Under --rate: the server (or the workers) set the pace when more than
 * 1 % of the starts were late, or when some requests never started (the
 * -d hard stop came first; an interrupted run is not judged on those). */
static int kept_up(const struct load *L, const struct figures *g)
{
    return L->late * 100 <= L->started && (g->not_started == 0 || L->interrupted);
}

static void print_lat(const char *label, const struct lat *l)
{
    printf("  %-12s min %.3f  mean %.3f  p50 %.3f  p90 %.3f  p99 %.3f  p99.9 %.3f  max %.3f\n",
           label, l->min, l->mean, l->p50, l->p90, l->p99, l->p999, l->max);
}

static void print_report(const struct load *L, const struct figures *g)
{
    printf("eddy-load %s\n", L->url);
    printf("  connections  %u\n", L->conns);
    printf("  duration     %.3f s%s\n", g->dur_s, L->interrupted ? " (interrupted)" : "");
    printf("  requests     %llu finished, %llu responses, %llu errors\n",
           (unsigned long long)L->finished, (unsigned long long)L->responses,
           (unsigned long long)L->errors);
    printf("  throughput   %.1f req/s (responses)\n", g->rps);
    if (L->rate > 0) {
        printf("  rate         target %.1f/s: %llu scheduled, %llu started in %.3f s", L->rate,
               (unsigned long long)g->scheduled, (unsigned long long)L->started, g->span_s);
        if (g->start_rate >= 0)
            printf(" (%.1f/s)", g->start_rate);
        if (g->not_started)
            printf(", %llu not started", (unsigned long long)g->not_started);
        printf("\n  start lag    max %.3f ms, %llu late (> %.3f ms)%s\n",
               (double)L->max_lag_ns / 1e6, (unsigned long long)L->late, (double)L->late_ns / 1e6,
               kept_up(L, g) ? "" : ": could not keep up");
    }
    if (L->h.n && L->rate > 0) {
        print_lat("latency ms", &g->lat);
        printf("               (from when each request was due; the service time is from its "
               "actual start)\n");
        print_lat("service ms", &g->svc);
    } else if (L->h.n) {
        print_lat("latency ms", &g->lat);
    }
    printf("  status       1xx %llu  2xx %llu  3xx %llu  4xx %llu  5xx %llu\n",
           (unsigned long long)L->klass[1], (unsigned long long)L->klass[2],
           (unsigned long long)L->klass[3], (unsigned long long)L->klass[4],
           (unsigned long long)L->klass[5]);
    int any = 0;
    for (int s = 100; s < 1000; s++) {
        if (!L->status[s])
            continue;
        printf("%s%d: %llu", any ? "  " : "  codes        ", s, (unsigned long long)L->status[s]);
        any = 1;
    }
    if (any)
        printf("\n");
    printf("  errors      ");
    for (int k = 0; k < E_KINDS; k++)
        printf(" %s %llu", err_names[k], (unsigned long long)L->errs[k]);
    printf("\n");
    if (L->start_err && !L->bad_url)
        printf("  stopped: a request could not be started: %s\n", eddy_strerror(L->start_err));
}

static void json_string(FILE *o, const char *s)
{
    fputc('"', o);
    for (; *s; s++) {
        unsigned char c = (unsigned char)*s;
        if (c == '"' || c == '\\')
            fprintf(o, "\\%c", c);
        else if (c < 0x20)
            fprintf(o, "\\u%04x", c);
        else
            fputc(c, o);
    }
    fputc('"', o);
}

/* "from": what the time is measured from: "start" (the start call) or
 * "due" (the request's slot in the --rate schedule). */
static void json_lat(FILE *o, const char *name, const struct hist *h, const struct lat *l,
                     const char *from)
{
    fprintf(o,
            "  \"%s\": {\"from\": \"%s\", \"count\": %llu, \"min\": %.3f, \"mean\": %.3f, "
            "\"p50\": %.3f, \"p90\": %.3f, \"p99\": %.3f, \"p99.9\": %.3f, \"max\": %.3f},\n",
            name, from, (unsigned long long)h->n, l->min, l->mean, l->p50, l->p90, l->p99, l->p999,
            l->max);
}

static int write_json(const struct load *L, const struct figures *g, const char *path)
{
    FILE *o = fopen(path, "w");
    if (!o)
        return -errno;
    fprintf(o, "{\n  \"url\": ");
    json_string(o, L->url);
    fprintf(o, ",\n  \"connections\": %u,\n", L->conns);
    if (L->limit != UINT64_MAX)
        fprintf(o, "  \"requests_target\": %llu,\n", (unsigned long long)L->limit);
    fprintf(o, "  \"duration_target_s\": %.3f,\n", L->duration_s);
    fprintf(o, "  \"timeout_s\": %.3f,\n", L->timeout_ms / 1000.0);
    fprintf(o, "  \"interrupted\": %s,\n", L->interrupted ? "true" : "false");
    fprintf(o, "  \"duration_s\": %.6f,\n", g->dur_s);
    fprintf(o, "  \"requests\": %llu,\n", (unsigned long long)L->finished);
    fprintf(o, "  \"responses\": %llu,\n", (unsigned long long)L->responses);
    fprintf(o, "  \"errors_total\": %llu,\n", (unsigned long long)L->errors);
    fprintf(o, "  \"requests_per_s\": %.3f,\n", g->rps);
    if (L->rate > 0) {
        fprintf(o,
                "  \"rate\": {\"target\": %.3f, \"scheduled\": %llu, \"started\": %llu, "
                "\"not_started\": %llu, \"start_span_s\": %.6f, \"started_per_s\": ",
                L->rate, (unsigned long long)g->scheduled, (unsigned long long)L->started,
                (unsigned long long)g->not_started, g->span_s);
        if (g->start_rate >= 0)
            fprintf(o, "%.3f", g->start_rate);
        else
            fprintf(o, "null");
        fprintf(o,
                ", \"late\": %llu, \"late_threshold_ms\": %.3f, \"max_lag_ms\": %.3f, "
                "\"kept_up\": %s},\n",
                (unsigned long long)L->late, (double)L->late_ns / 1e6, (double)L->max_lag_ns / 1e6,
                kept_up(L, g) ? "true" : "false");
    }
    json_lat(o, "latency_ms", &L->h, &g->lat, L->rate > 0 ? "due" : "start");
    if (L->rate > 0)
        json_lat(o, "service_ms", &L->svc, &g->svc, "start");
    fprintf(o,
            "  \"status\": {\"1xx\": %llu, \"2xx\": %llu, \"3xx\": %llu, \"4xx\": %llu, "
            "\"5xx\": %llu, \"codes\": {",
            (unsigned long long)L->klass[1], (unsigned long long)L->klass[2],
            (unsigned long long)L->klass[3], (unsigned long long)L->klass[4],
            (unsigned long long)L->klass[5]);
    int any = 0;
    for (int s = 100; s < 1000; s++) {
        if (!L->status[s])
            continue;
        fprintf(o, "%s\"%d\": %llu", any ? ", " : "", s, (unsigned long long)L->status[s]);
        any = 1;
    }
    fprintf(o, "}},\n  \"errors\": {");
    for (int k = 0; k < E_KINDS; k++)
        fprintf(o, "%s\"%s\": %llu", k ? ", " : "", err_names[k], (unsigned long long)L->errs[k]);
    fprintf(o, "}\n}\n");
    int bad = ferror(o);
    if (fclose(o) != 0 || bad)
        return -EIO;
    return 0;
}

static int write_svg(const struct load *L, const struct figures *g, const char *path)
{
    FILE *o = fopen(path, "w");
    if (!o)
        return -errno;
    struct timeline t = {
        .url = L->url,
        .recs = L->recs,
        .nrecs = L->nrecs,
        .total = L->finished,
        .workers = L->conns,
        .duration_s = g->dur_s,
        .rps = g->rps,
        .p50_ms = g->lat.p50,
        .p99_ms = g->lat.p99,
        .ok2xx = L->klass[2],
        .other_status = L->responses - L->klass[2],
        .errors = L->errors,
    };
    int rc = svg_timeline(o, &t);
    if (fclose(o) != 0 && rc == 0)
        rc = -EIO;
    return rc;
}

/* ---- the command line ---------------------------------------------------- */

static void usage(FILE *o)
{
    fputs("usage: eddy-load [-c CONNS] [-n REQUESTS | -d SECONDS] [--rate R] [--timeout S]\n"
          "                 [--json FILE] [--timeline FILE.svg] [-q] URL\n"
          "\n"
          "HTTP load on eddy's own client: CONNS workers, each keeping one request in\n"
          "flight on its own keep-alive connection, against an http:// URL (GET).\n"
          "\n"
          "  -c, --connections N  concurrent connections (workers), default 10\n"
          "  -n, --requests N     stop after N requests\n"
          "  -d, --duration S     stop starting requests after S seconds (default 10 when\n"
          "                       neither -n nor -d is given; with both, the first wins);\n"
          "                       under --rate it sets how many are scheduled (below)\n"
          "      --rate R         open loop: request i is due at i/R s; the first free\n"
          "                       worker starts it (see below)\n"
          "      --timeout S      per request, connect and queueing included; default 30\n"
          "      --json FILE      write every figure as JSON\n"
          "      --timeline F.svg draw every request as a bar from start to end, one row\n"
          "                       per connection (worker); the first 200000 requests\n"
          "  -q, --quiet          no progress line (shown on a terminal after 2 s)\n"
          "  -h, --help           this text\n"
          "\n"
          "Latency (to the complete response, responses of any status) runs from the\n"
          "start call; under --rate from the time the request was due, so a backlog\n"
          "counts (the service time, from the actual start, is shown apart).  It comes\n"
          "from a log-linear histogram: percentiles within 1.6 %.  Throughput counts\n"
          "responses only.  Errors are counted by kind: refused, resolve (the name did\n"
          "not resolve), connect (no route, address or descriptor), reset, timeout,\n"
          "malformed, too_large, cancelled, other.\n"
          "\n"
          "--rate R: request i is due at t0 + i/R exactly.  -n N schedules N requests;\n"
          "-d D schedules floor(D x R) (with both, the smaller).  A start is late when\n"
          "it comes more than max(1 ms, 10 % of 1/R) after it was due (no worker was\n"
          "free); \"could not keep up\" means more than 1 % of the starts were late, or\n"
          "some never started.  The start rate is measured from the first start to the\n"
          "last.  The duration (and so the throughput) is the schedule's N/R s, or up\n"
          "to the last answer if that came later.\n"
          "\n"
          "The run always ends by itself: with -d, anything still running (or not yet\n"
          "started) at the deadline + the timeout + 1 s is cancelled.\n"
          "\n"
          "Exit status: 0 if at least one response came back (any status), 2 if none\n"
          "did, 1 on usage errors.\n",
          o);
}

static int parse_num(const char *s, double lo, double hi, double *out)
{
    char *end;
    errno = 0;
    double v = strtod(s, &end);
    if (errno || end == s || *end || !(v >= lo && v <= hi))
        return -1;
    *out = v;
    return 0;
}

static int parse_args(struct load *L, int argc, char **argv)
{
    static const struct option opts[] = {
        {"connections", required_argument, NULL, 'c'},
        {"requests", required_argument, NULL, 'n'},
        {"duration", required_argument, NULL, 'd'},
        {"rate", required_argument, NULL, 'r'},
        {"timeout", required_argument, NULL, 't'},
        {"json", required_argument, NULL, 'j'},
        {"timeline", required_argument, NULL, 's'},
        {"quiet", no_argument, NULL, 'q'},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    double v, timeout = 30;
    int c, have_n = 0;
    L->conns = 10;
    L->limit = UINT64_MAX;
    while ((c = getopt_long(argc, argv, "c:n:d:qh", opts, NULL)) != -1) {
        switch (c) {
        case 'c':
            if (parse_num(optarg, 1, MAX_CONNS, &v) || v != floor(v))
                goto bad;
            L->conns = (unsigned)v;
            break;
        case 'n':
            if (parse_num(optarg, 1, 1e15, &v) || v != floor(v))
                goto bad;
            L->limit = (uint64_t)v;
            have_n = 1;
            break;
        case 'd':
            if (parse_num(optarg, 0.001, 86400, &v))
                goto bad;
            L->duration_s = v;
            break;
        case 'r':
            if (parse_num(optarg, 0.001, 1e7, &v))
                goto bad;
            L->rate = v;
            break;
        case 't':
            if (parse_num(optarg, 0.001, 86400, &v))
                goto bad;
            timeout = v;
            break;
        case 'j':
            L->json_path = optarg;
            break;
        case 's':
            L->svg_path = optarg;
            break;
        case 'q':
            L->quiet = 1;
            break;
        case 'h':
            usage(stdout);
            exit(0);
        default:
            usage(stderr);
            return -1;
        }
    }
    if (optind != argc - 1) {
        fprintf(stderr, "eddy-load: %s\n", optind < argc ? "one URL only" : "a URL is needed");
        usage(stderr);
        return -1;
    }
    L->url = argv[optind];
    if (!have_n && L->duration_s == 0)
        L->duration_s = 10;
    L->timeout_ms = (unsigned)ceil(timeout * 1000);
    if (L->rate > 0 && L->duration_s > 0) {
        /* D seconds' worth of requests, rounded down; the epsilon keeps
         * 0.3 x 10 (2.9999...) at 3. */
        double n = floor(L->duration_s * L->rate + 1e-9);
        if (n < 1) {
            fprintf(stderr, "eddy-load: --rate %g with -d %g schedules floor(D x R) = 0 requests\n",
                    L->rate, L->duration_s);
            return -1;
        }
        if ((double)L->limit > n)
            L->limit = (uint64_t)n;
    }
    if (L->rate > 0)
        L->late_ns = (int64_t)fmax(1e6, 0.1 * 1e9 / L->rate);
    if (L->limit < L->conns)
        L->conns = (unsigned)L->limit; /* more workers than requests would idle */
    return 0;
bad:
    fprintf(stderr, "eddy-load: bad value: %s\n", optarg);
    usage(stderr);
    return -1;
}

int main(int argc, char **argv)
{
    static struct load L; /* big (the status table): not on the stack */
    if (parse_args(&L, argc, argv) < 0)
        return 1;
    hist_init(&L.h);
    hist_init(&L.svc);
    signal(SIGPIPE, SIG_IGN);
    /* Thousands of connections need descriptors beyond the usual soft
     * limit of 1024; take what the hard limit allows. */
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
        rl.rlim_cur = rl.rlim_max;
        setrlimit(RLIMIT_NOFILE, &rl);
    }

    int rc = eddy_loop_init(&L.loop, NULL);
    if (rc < 0) {
        fprintf(stderr, "eddy-load: %s (%s)\n", eddy_strerror(rc), eddy_loop_init_explain(rc));
        return 1;
    }
    struct eddy_http_client_options co = {
        .max_conns_per_origin = L.conns,
        .connect_timeout_ms = L.timeout_ms,
        .request_timeout_ms = L.timeout_ms,
    };
    L.w = calloc(L.conns, sizeof *L.w);
    L.idle = calloc(L.conns, sizeof *L.idle);
    if (!L.w || !L.idle || eddy_http_client_init(&L.cli, L.loop, &co) < 0) {
        fprintf(stderr, "eddy-load: out of memory\n");
        return 1;
    }
    /* The stack is popped from the top: worker 0 starts first. */
    for (unsigned i = 0; i < L.conns; i++) {
        struct worker *w = &L.w[L.conns - 1 - i];
        w->L = &L;
        w->idx = L.conns - 1 - i;
        w->f.url = L.url;
        L.idle[L.nidle++] = w->idx;
    }
    if (L.svg_path && L.limit != UINT64_MAX) {
        L.recs_cap = L.limit < MAX_RECS ? (size_t)L.limit : MAX_RECS;
        L.recs = malloc(L.recs_cap * sizeof *L.recs);
        if (!L.recs)
            L.recs_cap = 0;
    }

    L.t0 = now_ns();
    L.t_last = L.t0;
    if (L.duration_s > 0) {
        int64_t dl = L.t0 + (int64_t)(L.duration_s * 1e9);
        /* Under --rate the schedule, not the deadline, ends the starts. */
        if (L.rate == 0)
            eddy_timer_at(L.loop, &L.deadline_op, dl, on_deadline);
        eddy_timer_at(L.loop, &L.hard_op, dl + (int64_t)L.timeout_ms * 1000000 + 1000000000,
                      on_hard);
    }
    eddy_signal(L.loop, &L.sig_op, SIGINT, on_signal);
    if (!L.quiet && isatty(STDOUT_FILENO))
        eddy_timer_repeat(L.loop, &L.progress_op, PROGRESS_MS, on_progress);
    if (L.rate > 0) {
        L.sched = 1; /* request 0 is due now */
        eddy_timer_at(L.loop, &L.rate_op, slot_ns(&L, 1), on_rate);
    }
    dispatch(&L);
    maybe_finish(&L);

    rc = eddy_loop_run(L.loop, EDDY_RUN_DEFAULT);
    if (L.progress_shown)
        printf("\r\033[K");
    int code = 0;
    if (rc < 0) {
        fprintf(stderr, "eddy-load: the loop failed: %s\n", eddy_strerror(rc));
        code = 1;
    }
    eddy_http_client_destroy(L.cli);
    eddy_loop_destroy(L.loop);
    if (L.bad_url) {
        fprintf(stderr, "eddy-load: bad URL (http://host[:port][/path] only): %s\n", L.url);
        return 1;
    }

    struct figures g;
    compute(&L, &g);
    print_report(&L, &g);
    if (L.json_path && (rc = write_json(&L, &g, L.json_path)) < 0) {
        fprintf(stderr, "eddy-load: %s: %s\n", L.json_path, eddy_strerror(rc));
        code = 1;
    }
    if (L.svg_path && (rc = write_svg(&L, &g, L.svg_path)) < 0) {
        fprintf(stderr, "eddy-load: %s: %s\n", L.svg_path, eddy_strerror(rc));
        code = 1;
    }
    free(L.recs);
    free(L.w);
    free(L.idle);
    if (code == 0 && L.responses == 0)
        code = 2;
    return code;
}
