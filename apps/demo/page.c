/*
 * The home page (GET /): web/index.html with each race route's section (what
 * it does, its code excerpt from demo.c, its timeline) and the settings
 * filled in; GET /api/routes, the same table as JSON; and that table.
 */
#include "demo.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* The page and the race API know the routes from this table only. */
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

/* The handlers' code, cut from demo.c at build time (embed.cmake). */
struct demo_excerpt {
    const char *name;
    const unsigned char *text;
    size_t len;
};
#include "demo_web.h"

const struct race_route *demo_race_route_find(const char *path)
{
    for (size_t i = 0; i < RACE_ROUTES; i++)
        if (!strcmp(race_routes[i].path, path))
            return &race_routes[i];
    return NULL;
}

void demo_race_route_list(char *out, size_t n)
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
    demo_db_puts(b, "{\"routes\":[");
    for (size_t i = 0; i < RACE_ROUTES; i++) {
        demo_db_puts(b, i ? ",{\"name\":" : "{\"name\":");
        demo_db_json(b, race_routes[i].name);
        demo_db_puts(b, ",\"path\":");
        demo_db_json(b, race_routes[i].path);
        demo_db_puts(b, "}");
    }
    char delay[16] = "null";
    if (cfg.delay_ms >= 0)
        snprintf(delay, sizeof delay, "%d", cfg.delay_ms);
    demo_db_printf(b,
                   "],\"max_n\":%d,\"delay_ms\":%s,\"pool\":%u,\"stall_ms\":%u,\"threads\":%u,"
                   "\"timeout_ms\":%u,\"race_timeout_ms\":%u,\"upstream\":",
                   RACE_MAX_N, delay, cfg.pool, cfg.stall_ms, cfg.threads, cfg.timeout_ms,
                   cfg.race_timeout_ms);
    demo_db_json(b, cfg.upstream);
    demo_db_puts(b, "}");
}

void demo_h_routes(struct eddy_http_req *req, void *ud)
{
    struct loopctx *lc = ud;
    int64_t t0 = demo_clock_ns();
    demo_route_begin(lc, R_ROUTES);
    struct dbuf b = {0};
    routes_json(&b);
    demo_db_puts(&b, "\n");
    int st = demo_respond_dbuf(req, "application/json", &b);
    demo_route_end(lc, R_ROUTES, st == 200 ? OUT_ANSWERED : OUT_FAILED, t0);
}

/* ---- the home page ------------------------------------------------------ */

/* The excerpt, HTML-escaped, with each occurrence of key in <mark>. */
static void excerpt_html(struct dbuf *b, const char *s, size_t n, const char *key)
{
    size_t kl = key ? strlen(key) : 0;
    while (n) {
        const char *k = kl ? memmem(s, n, key, kl) : NULL;
        size_t before = k ? (size_t)(k - s) : n;
        demo_db_html(b, s, before);
        if (!k)
            break;
        demo_db_puts(b, "<mark>");
        demo_db_html(b, k, kl);
        demo_db_puts(b, "</mark>");
        s = k + kl;
        n -= before + kl;
    }
}

/* One <section> per race route: what it does, its code, its timeline. */
static void page_routes(struct dbuf *b)
{
    for (size_t i = 0; i < RACE_ROUTES; i++) {
        const struct race_route *r = &race_routes[i];
        demo_db_printf(b,
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
            demo_db_puts(b, "/* no excerpt of this route is marked in apps/demo/demo.c */");
        demo_db_printf(b,
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
            demo_db_put(b, p, (size_t)(end - p));
            break;
        }
        demo_db_put(b, p, (size_t)(s - p));
        const char *rest = s + sizeof slot - 1;
        size_t left = (size_t)(end - rest);
        if (left >= 9 && !memcmp(rest, "routes-->", 9)) {
            page_routes(b);
            p = rest + 9;
        } else if (left >= 7 && !memcmp(rest, "data-->", 7)) {
            demo_db_puts(b, "<script type=\"application/json\" id=\"eddy-data\">");
            routes_json(b);
            demo_db_puts(b, "</script>");
            p = rest + 7;
        } else {
            demo_db_put(b, s, sizeof slot - 1);
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

void demo_h_page(struct eddy_http_req *req, void *ud)
{
    struct loopctx *lc = ud;
    int64_t t0 = demo_clock_ns();
    demo_route_begin(lc, R_PAGE);
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
            demo_fail_text(lc, R_PAGE, req, 500, t0,
                           demo_textf("--web-dir: cannot read %s: %s\n", path, eddy_strerror(rc)));
            return;
        }
        tpl = file;
    }
    struct dbuf b = {0};
    page_render(tpl, tlen, &b);
    free(file);
    if (!b.oom) {
        eddy_http_set_header(req, "Cache-Control", "no-store");
        eddy_http_set_header(req, "Content-Security-Policy", PAGE_CSP);
    }
    int st = demo_respond_dbuf(req, "text/html; charset=UTF-8", &b);
    demo_route_end(lc, R_PAGE, st == 200 ? OUT_ANSWERED : OUT_FAILED, t0);
}
