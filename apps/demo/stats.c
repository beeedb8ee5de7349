/*
 * Per-route accounting and GET /stats: the JSON counters of the loop that
 * answers (the loop's, its server's and client's, its fibers', each
 * route's, the backend, and the fault counters when faults are on).
 */
#include "demo.h"
#include "eddy/fault.h"

#include <string.h>

const char *const demo_route_path[R_COUNT] = {
    "/api/time", "/api/noblock", "/api/block", "/api/offload", "/api/coro", "/plaintext",
    "/plaintext-fiber", "/stats", "/", "/api/race", "/api/routes", "/api/stalls",
};

uint64_t demo_routes_in_flight(const struct loopctx *lc)
{
    uint64_t busy = 0;
    for (int r = 0; r < R_COUNT; r++)
        busy += lc->routes[r].in_flight;
    return busy;
}

/* The fault injector's counters, when faults are on (eddy/fault.h). */
static void faults_json(struct dbuf *b, struct eddy_loop *loop)
{
    struct eddy_fault_stat fs[32];
    unsigned n = eddy_fault_stats(loop, fs, 32);
    if (n == 0)
        return; /* off: no "faults" at all */
    demo_db_printf(b, "\"faults\":{\"seed\":%llu,\"rules\":[", U(eddy_fault_seed(loop)));
    for (unsigned i = 0; i < n && i < 32; i++) {
        demo_db_puts(b, i ? ",{\"rule\":" : "{\"rule\":");
        demo_db_json(b, fs[i].rule);
        demo_db_printf(b, ",\"events\":%llu,\"injected\":%llu}", U(fs[i].events),
                       U(fs[i].injected));
    }
    demo_db_puts(b, "]},");
}

/* The loop's fiber routes together: requests refused (503) for want of a
 * fiber are counted only here. */
static void fibers_json(struct dbuf *b, const struct loopctx *lc)
{
    const struct eddy_http_fiber_route *c = &lc->coro_route, *p = &lc->plain_fiber_route;
    demo_db_printf(b, "\"fibers\":{\"spawned\":%llu,\"refused\":%llu,\"running\":%u},",
                   U(c->spawned + p->spawned), U(c->refused + p->refused), c->running + p->running);
}

static void routes_stats_json(struct dbuf *b, const struct loopctx *lc)
{
    demo_db_puts(b, "\"routes\":{");
    for (int r = 0; r < R_COUNT; r++) {
        const struct route_stats *rs = &lc->routes[r];
        const struct hist *h = &rs->lat;
        demo_db_printf(b,
                       "%s\"%s\":{\"requests\":%llu,\"answered\":%llu,\"failed\":%llu,"
                       "\"aborted\":%llu,\"in_flight\":%llu,\"latency_ms\":{\"p50\":%.3f,"
                       "\"p90\":%.3f,\"p99\":%.3f,\"max\":%.3f}}",
                       r ? "," : "", demo_route_path[r], U(rs->requests), U(rs->answered),
                       U(rs->failed), U(rs->aborted), U(rs->in_flight),
                       hist_percentile_interp(h, 50) / 1000, hist_percentile_interp(h, 90) / 1000,
                       hist_percentile_interp(h, 99) / 1000, (double)h->max / 1000);
    }
    demo_db_puts(b, "}");
}

size_t demo_stats_json(struct loopctx *lc, char *buf, size_t cap)
{
    struct dbuf b = demo_dbuf_fixed(buf, cap);
    struct eddy_loop_stats ls;
    eddy_loop_stats(lc->loop, &ls);
    struct eddy_http_stats hs;
    eddy_http_server_stats(lc->srv, &hs);
    int64_t start_ns = (int64_t)cfg.started.tv_sec * 1000000000 + cfg.started.tv_nsec;
    double up = (double)(demo_clock_ns() - start_ns) / 1e9;
    demo_db_printf(&b,
                   "{\"scope\":\"loop\",\"loop\":%d,\"loops\":%u,\"backend\":\"%s\","
                   "\"uptime_s\":%.3f,"
                   "\"loop_counters\":{\"iterations\":%llu,\"sqes\":%llu,\"completions\":%llu,"
                   "\"submit_calls\":%llu,\"sq_full\":%llu,\"cq_overflows\":%llu,\"enobufs\":%llu,"
                   "\"stalls\":%llu,\"active\":%u,\"inflight\":%u},",
                   lc->index, cfg.threads, eddy_loop_backend(lc->loop), up, U(ls.iterations),
                   U(ls.sqes), U(ls.completions), U(ls.submit_calls), U(ls.sq_full),
                   U(ls.cq_overflows), U(ls.enobufs), U(ls.stalls), ls.active, ls.inflight);
    demo_db_printf(&b,
                   "\"server\":{\"connections\":%u,\"accepted\":%llu,\"requests\":%llu,"
                   "\"responses\":%llu,\"errors\":%llu,\"timeouts\":%llu,\"rejected\":%llu},",
                   hs.conns, U(hs.accepted), U(hs.requests), U(hs.responses), U(hs.errors),
                   U(hs.timeouts), U(hs.rejected));
    if (lc->cli) {
        struct eddy_http_client_stats cs;
        eddy_http_client_stats(lc->cli, &cs);
        demo_db_printf(&b,
                       "\"client\":{\"fetches\":%llu,\"connects\":%llu,\"reuses\":%llu,"
                       "\"retries\":%llu,\"conns\":%u,\"idle\":%u,\"queued\":%u,\"active\":%u},",
                       U(cs.fetches), U(cs.connects), U(cs.reuses), U(cs.retries), cs.conns,
                       cs.idle, cs.queued, cs.active);
    }
    if (lc->fibers)
        fibers_json(&b, lc);
    faults_json(&b, lc->loop);
    routes_stats_json(&b, lc);
    demo_db_puts(&b, "}\n");
    return b.oom ? 0 : b.len;
}

void demo_h_stats(struct eddy_http_req *req, void *ud)
{
    struct loopctx *lc = ud;
    int64_t t0 = demo_clock_ns();
    demo_route_begin(lc, R_STATS);
    char buf[STATS_JSON_MAX];
    struct dbuf b = demo_dbuf_fixed(buf, sizeof buf);
    b.len = demo_stats_json(lc, buf, sizeof buf);
    b.oom = b.len == 0;
    int st = demo_respond_dbuf(req, "application/json", &b);
    demo_route_end(lc, R_STATS, st == 200 ? OUT_ANSWERED : OUT_FAILED, t0);
}
