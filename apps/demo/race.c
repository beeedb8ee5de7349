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
 * race_start() to the racer's loop (a loop of the group, eddy_group_post);
 * race_finish() writes the JSON and posts race_reply() back to the loop
 * that took the request, which holds a reference on its loop meanwhile (so
 * it outlives a shutdown).
 *
 * The racer stops last, with the time service: requests still draining on
 * the main loops may be races.  The group's stop reaches it at once
 * (demo_racer_group_stop), the last main loop's "finished" later
 * (on_racer_stop, posted by demo_lc_finished), in either order; the loop
 * runs until both have come and its client has closed.
 */
#include "demo.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct race_one {
    struct eddy_http_fetch fetch;
    int64_t start_ns, end_ns;
    int status, err;
};

static struct {
    struct eddy_loop *loop;
    struct eddy_http_client *cli;
    struct eddy_op start_op, stop_op, reply_op;
    atomic_bool busy;
    /* the racer's thread only */
    bool active;      /* a race runs */
    bool stop_wanted; /* the main loops have finished (on_racer_stop) */
    bool ref_held;    /* demo_racer_group_stop's reference, until on_racer_stop */
    int rc;
    /* the race: set by demo_h_race, then the racer's, then race_reply()'s */
    const struct race_route *route;
    unsigned n, left;
    char url[400];
    struct loopctx *origin;
    struct eddy_http_req *req;
    int64_t req_t0, t0_ns;
    struct dbuf json;
    struct race_one one[RACE_MAX_N];
} racer;

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
    demo_db_puts(b, "{\"route\":");
    demo_db_json(b, racer.route->path);
    demo_db_printf(b, ",\"n\":%u,\"wall_ms\":%.3f,\"requests\":[", racer.n,
                   (double)(last - racer.t0_ns) / 1e6);
    for (unsigned i = 0; i < racer.n; i++) {
        const struct race_one *o = &racer.one[i];
        demo_db_printf(b, "%s{\"start_ms\":%.3f,\"end_ms\":%.3f,\"status\":%d", i ? "," : "",
                       (double)(o->start_ns - racer.t0_ns) / 1e6,
                       (double)(o->end_ns - racer.t0_ns) / 1e6, o->status);
        if (o->err) {
            char why[160];
            if (o->status == 504)
                snprintf(why, sizeof why, "no answer within %u ms (--race-timeout)",
                         cfg.race_timeout_ms);
            else
                snprintf(why, sizeof why, "%s", eddy_strerror(o->err));
            demo_db_puts(b, ",\"error\":");
            demo_db_json(b, why);
        }
        demo_db_puts(b, "}");
    }
    demo_db_printf(b, "],\"name\":");
    demo_db_json(b, racer.route->name);
    demo_db_printf(b, ",\"race_timeout_ms\":%u}\n", cfg.race_timeout_ms);
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
    int st = demo_respond_dbuf(req, "application/json", &json);
    demo_route_end(lc, R_RACE, aborted ? OUT_ABORTED : st == 200 ? OUT_ANSWERED : OUT_FAILED,
                   racer.req_t0);
    atomic_store(&racer.busy, false);
    eddy_loop_unref(lc->loop); /* taken by demo_h_race */
}

/* Once the client has closed, nothing keeps the racer's loop running. */
static void racer_close(void)
{
    eddy_http_client_close(racer.cli, NULL, NULL); /* -EALREADY: closing already */
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
    o->end_ns = demo_clock_ns();
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
    racer.t0_ns = demo_clock_ns();
    for (unsigned i = 0; i < racer.n; i++) {
        struct race_one *o = &racer.one[i];
        memset(o, 0, sizeof *o);
        o->fetch.url = racer.url;
        o->fetch.data = o;
        o->start_ns = demo_clock_ns();
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

static void on_racer_stop(struct eddy_op *op, int res)
{
    (void)op;
    (void)res;
    racer.stop_wanted = true;
    if (racer.ref_held) {
        racer.ref_held = false;
        eddy_loop_unref(racer.loop);
    }
    if (!racer.active)
        racer_close(); /* else race_finish() does */
}

void demo_h_race(struct eddy_http_req *req, void *ud)
{
    struct loopctx *lc = ud;
    int64_t t0 = demo_clock_ns();
    demo_route_begin(lc, R_RACE);
    char list[256];
    demo_race_route_list(list, sizeof list);
    const char *path = eddy_http_arg(req, "route", NULL);
    if (!path || !*path) {
        demo_fail_text(lc, R_RACE, req, 400, t0,
                       demo_textf("want /api/race?route=PATH&n=N, PATH one of: %s\n", list));
        return;
    }
    const struct race_route *r = demo_race_route_find(path);
    if (!r) {
        demo_fail_text(lc, R_RACE, req, 400, t0,
                       demo_textf("route %.200s cannot be raced: a race runs one of the demo's own "
                                  "routes: %s\n",
                                  path, list));
        return;
    }
    const char *ns = eddy_http_arg(req, "n", "10");
    unsigned long n = 0;
    const char *c = ns;
    for (; *c >= '0' && *c <= '9' && n <= RACE_MAX_N; c++)
        n = n * 10 + (unsigned long)(*c - '0');
    if (c == ns || *c || n < 1 || n > RACE_MAX_N) {
        demo_fail_text(lc, R_RACE, req, 400, t0,
                       demo_textf("n %.40s: want a whole number from 1 to %d\n", ns, RACE_MAX_N));
        return;
    }
    if (atomic_exchange(&racer.busy, true)) {
        demo_fail_text(lc, R_RACE, req, 409, t0,
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
    eddy_loop_ref(lc->loop); /* until race_reply() */
    if (eddy_group_post(lc->group, demo_racer_index(), &racer.start_op, race_start) < 0) {
        eddy_loop_unref(lc->loop);
        atomic_store(&racer.busy, false);
        demo_fail_text(lc, R_RACE, req, 503, t0, "the racer's loop has ended (see stderr)\n");
    }
}

/* The group's setup of the racer's loop, on its thread: the client. */
int demo_racer_setup(struct eddy_loop *loop)
{
    racer.loop = loop;
    struct eddy_http_client_options co;
    demo_client_options(&co, RACE_MAX_N, cfg.race_timeout_ms); /* one connection per request */
    co.keepalive_idle_ms = 5000;
    int rc = eddy_http_client_init(&racer.cli, loop, &co);
    if (rc < 0)
        fprintf(stderr, "eddy-demo: racer: client: %s\n", eddy_strerror(rc));
    return rc;
}

void demo_racer_group_stop(bool started)
{
    if (!started) {
        on_racer_stop(&racer.stop_op, 0); /* a failed start: no main loop will post */
        return;
    }
    /* The group lets the loop end now; keep it until the main loops have
     * finished, unless they already have. */
    if (!racer.stop_wanted) {
        eddy_loop_ref(racer.loop);
        racer.ref_held = true;
    }
}

void demo_racer_teardown(void)
{
    if (racer.cli && eddy_http_client_destroy(racer.cli) < 0)
        racer.rc = 1;
    racer.cli = NULL;
}

void demo_racer_post_stop(struct eddy_group *g)
{
    eddy_group_post(g, demo_racer_index(), &racer.stop_op, on_racer_stop); /* -ESHUTDOWN: ended */
}

int demo_racer_status(void)
{
    return racer.rc;
}
