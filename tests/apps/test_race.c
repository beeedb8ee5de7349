/*
 * The demo's home page and race API, against the real eddy-demo binary
 * (started and stopped as in test_demo.c, see demo_child.h): every 400 of
 * /api/race and its exact reason, the 409 of a second race, a good race's
 * JSON and timing (block's requests end one delay after another, noblock's
 * overlap, offload's come in waves of the pool's size), timeouts reported
 * as 504 without a hang, the stall reports of /api/stalls, the page itself
 * (its slots filled, no external URL, --web-dir read at every request).
 * Timing claims use --delay-ms 200 and bounds that hold on a loaded machine
 * yet fail for the wrong shape.
 */
#define _GNU_SOURCE
#include "testsupport.h"

#include <errno.h>
#include <regex.h>
#include <stdbool.h>
#include <sys/socket.h>
#include <sys/stat.h>

#include "demo_child.h"

/* ---- one GET, whole answer, any size ------------------------------------ */

struct resp {
    int fd;
    int status;
    char *raw;  /* head and body, NUL-terminated */
    size_t len;
    const char *body;
};

/* Connects and sends GET path ("Connection: close"). */
static void get_start(uint16_t port, const char *path, struct resp *r)
{
    memset(r, 0, sizeof *r);
    r->fd = ts_connect(port);
    assert_true(r->fd >= 0);
    char req[1024];
    int n = snprintf(req, sizeof req,
                     "GET %s HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n", path);
    assert_true(n > 0 && (size_t)n < sizeof req);
    assert_int_equal(send(r->fd, req, (size_t)n, MSG_NOSIGNAL), n);
}

/* Reads to EOF within timeout_ms, then parses the status and finds the body. */
static void get_finish(struct resp *r, unsigned timeout_ms)
{
    size_t cap = 65536;
    r->raw = malloc(cap);
    assert_non_null(r->raw);
    int64_t deadline = ts_now_ms() + timeout_ms;
    for (;;) {
        struct pollfd p = {.fd = r->fd, .events = POLLIN};
        int left = (int)(deadline - ts_now_ms());
        if (left <= 0)
            fail_msg("no whole answer within %u ms (%zu bytes so far)", timeout_ms, r->len);
        if (poll(&p, 1, left) <= 0)
            continue;
        if (r->len + 1 >= cap) {
            cap *= 2;
            assert_true(cap <= (1u << 22));
            r->raw = realloc(r->raw, cap);
            assert_non_null(r->raw);
        }
        ssize_t got = recv(r->fd, r->raw + r->len, cap - 1 - r->len, 0);
        if (got < 0 && (errno == EINTR || errno == EAGAIN))
            continue;
        if (got <= 0)
            break;
        r->len += (size_t)got;
    }
    close(r->fd);
    r->fd = -1;
    r->raw[r->len] = 0;
    if (sscanf(r->raw, "HTTP/1.1 %d", &r->status) != 1)
        r->status = -1;
    char *b = strstr(r->raw, "\r\n\r\n");
    r->body = b ? b + 4 : "";
}

static void get(uint16_t port, const char *path, struct resp *r, unsigned timeout_ms)
{
    get_start(port, path, r);
    get_finish(r, timeout_ms);
}

static void resp_free(struct resp *r)
{
    free(r->raw);
    r->raw = NULL;
}

static bool matches(const char *re, const char *s)
{
    regex_t rx;
    assert_int_equal(regcomp(&rx, re, REG_EXTENDED | REG_NOSUB), 0);
    bool ok = regexec(&rx, s, 0, NULL, 0) == 0;
    regfree(&rx);
    return ok;
}

/* The answer of path is status with exactly body want. */
static void expect(uint16_t port, const char *path, int status, const char *want)
{
    struct resp r;
    get(port, path, &r, 5000);
    if (r.status != status || strcmp(r.body, want) != 0)
        fail_msg("GET %s: %d '%s', want %d '%s'", path, r.status, r.body, status, want);
    resp_free(&r);
}

/* ---- a race's JSON ------------------------------------------------------- */

struct race {
    char route[64];
    unsigned n;
    double wall;
    unsigned got;
    double start[200], end[200];
    int status[200];
};

/* Parses and checks a race's answer: 200, application/json, exactly the
 * documented shape, n requests whose times make sense. */
static void race_parse(const struct resp *r, struct race *out)
{
    if (r->status != 200)
        fail_msg("race: %d '%s'", r->status, r->body);
    assert_non_null(strcasestr(r->raw, "\r\nContent-Type: application/json\r\n"));
    const char *num = "[0-9]+\\.[0-9]{3}";
    char re[512];
    snprintf(re, sizeof re,
             "^\\{\"route\":\"/api/[a-z]+\",\"n\":[0-9]+,\"wall_ms\":%s,\"requests\":\\["
             "(\\{\"start_ms\":%s,\"end_ms\":%s,\"status\":[0-9]{3}(,\"error\":\"[^\"]*\")?\\},?)+"
             "\\],\"name\":\"[a-z]+\",\"race_timeout_ms\":[0-9]+\\}\n$",
             num, num, num);
    if (!matches(re, r->body))
        fail_msg("race JSON not of the documented shape: %s", r->body);
    memset(out, 0, sizeof *out);
    assert_int_equal(sscanf(r->body, "{\"route\":\"%63[^\"]\",\"n\":%u,\"wall_ms\":%lf",
                            out->route, &out->n, &out->wall),
                     3);
    const char *p = r->body;
    while ((p = strstr(p, "{\"start_ms\":")) != NULL) {
        assert_true(out->got < 200);
        assert_int_equal(sscanf(p, "{\"start_ms\":%lf,\"end_ms\":%lf,\"status\":%d",
                                &out->start[out->got], &out->end[out->got],
                                &out->status[out->got]),
                         3);
        out->got++;
        p++;
    }
    assert_int_equal(out->got, out->n);
    double last = 0;
    for (unsigned i = 0; i < out->n; i++) {
        assert_true(out->start[i] >= 0 && out->start[i] <= out->end[i]);
        if (out->end[i] > last)
            last = out->end[i];
    }
    /* wall_ms is the last end, both to the microsecond */
    assert_true(out->wall >= last - 0.001 && out->wall <= last + 0.001);
}

static void race_run(uint16_t port, const char *route, unsigned n, struct race *out,
                     unsigned timeout_ms)
{
    char path[128];
    snprintf(path, sizeof path, "/api/race?route=%s&n=%u", route, n);
    struct resp r;
    get(port, path, &r, timeout_ms);
    race_parse(&r, out);
    resp_free(&r);
    assert_string_equal(out->route, route);
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

/* ---- tests -------------------------------------------------------------- */

#define LIST "/api/block, /api/noblock, /api/offload, /api/coro"

/* Every 400, each with its reason; nothing is raced. */
static void test_race_bad_inputs(void **state)
{
    (void)state;
    struct demo d;
    const char *args[] = {"--delay-ms", "50", NULL};
    demo_start(&d, args);
    uint16_t p = d.port;
    const char *no_route = "want /api/race?route=PATH&n=N, PATH one of: " LIST "\n";
    expect(p, "/api/race", 400, no_route);
    expect(p, "/api/race?n=3", 400, no_route);
    expect(p, "/api/race?route=&n=3", 400, no_route);
    static const struct {
        const char *q, *shown;
    } routes[] = {
        {"/api/time", "/api/time"},          /* the demo's, but not on the list */
        {"/plaintext", "/plaintext"},
        {"/api/race", "/api/race"},          /* a race of races */
        {"/api/blockX", "/api/blockX"},
        {"/api/block/", "/api/block/"},
        {"api/block", "api/block"},
        {"block", "block"},                  /* the page's name, not a path */
        {"http%3A%2F%2F127.0.0.1%3A1%2F", "http://127.0.0.1:1/"}, /* never a URL */
        {"%2Fapi%2Fblock%3Fx%3D1", "/api/block?x=1"},
    };
    for (size_t i = 0; i < sizeof routes / sizeof routes[0]; i++) {
        char path[256], want[512];
        snprintf(path, sizeof path, "/api/race?route=%s&n=3", routes[i].q);
        snprintf(want, sizeof want,
                 "route %s cannot be raced: a race runs one of the demo's own routes: " LIST
                 "\n",
                 routes[i].shown);
        expect(p, path, 400, want);
    }
    static const struct {
        const char *q, *shown;
    } ns[] = {
        {"0", "0"}, {"201", "201"}, {"1000", "1000"}, {"-1", "-1"}, {"1.5", "1.5"},
        {"abc", "abc"}, {"", ""}, {"%2010", " 10"}, {"10%20", "10 "}, {"0x10", "0x10"},
        {"99999999999999999999", "99999999999999999999"},
    };
    for (size_t i = 0; i < sizeof ns / sizeof ns[0]; i++) {
        char path[256], want[256];
        snprintf(path, sizeof path, "/api/race?route=/api/noblock&n=%s", ns[i].q);
        snprintf(want, sizeof want, "n %s: want a whole number from 1 to 200\n", ns[i].shown);
        expect(p, path, 400, want);
    }
    /* Counted as failed answers of /api/race; no request was raced. */
    struct resp s;
    get(p, "/stats", &s, 3000);
    assert_int_equal(s.status, 200);
    unsigned long req = 0, ans = 0, failed = 0;
    const char *k = strstr(s.body, "\"/api/race\":{");
    assert_non_null(k);
    assert_int_equal(sscanf(k, "\"/api/race\":{\"requests\":%lu,\"answered\":%lu,\"failed\":%lu",
                            &req, &ans, &failed),
                     3);
    unsigned long bad = 3 + sizeof routes / sizeof routes[0] + sizeof ns / sizeof ns[0];
    assert_int_equal(req, bad);
    assert_int_equal(failed, bad);
    assert_int_equal(ans, 0);
    k = strstr(s.body, "\"/api/noblock\":{\"requests\":0,");
    assert_non_null(k);
    resp_free(&s);
    demo_done(&d);
}

/* A second race while one runs is 409, whichever loop takes it; once the
 * first has answered, the next one runs. */
static void test_race_busy_409(void **state)
{
    (void)state;
    struct demo d;
    /* noblock keeps the loop free, so the second request is surely taken
     * while the first race runs (with block, the loop could take it only
     * after the race). */
    const char *args[] = {"--delay-ms", "600", NULL};
    demo_start(&d, args);
    struct resp first, second;
    int64_t t0 = ts_now_ms();
    get_start(d.port, "/api/race?route=/api/noblock&n=3", &first);
    usleep(100 * 1000);
    get_start(d.port, "/api/race?route=/api/block&n=1", &second);
    get_finish(&second, 3000);
    int64_t t409 = ts_now_ms() - t0;
    assert_int_equal(second.status, 409);
    assert_string_equal(second.body, "a race is already running: one at a time, so that races "
                                     "do not distort each other; try again when it has ended\n");
    assert_true(t409 < 600); /* at once, not after the first race */
    resp_free(&second);
    struct race r;
    get_finish(&first, 5000);
    race_parse(&first, &r);
    resp_free(&first);
    assert_string_equal(r.route, "/api/noblock");
    for (unsigned i = 0; i < r.n; i++)
        assert_int_equal(r.status[i], 200);
    /* Given back: the next race runs. */
    race_run(d.port, "/api/noblock", 1, &r, 5000);
    assert_int_equal(r.status[0], 200);
    demo_done(&d);
}

/* The shapes the page draws, from the JSON: block a staircase, noblock one
 * column, offload waves of the pool's size. */
static void test_race_shapes(void **state)
{
    (void)state;
    struct demo d;
    const char *args[] = {"--delay-ms", "200", "--pool", "4", NULL};
    demo_start(&d, args);
    struct race r;
    double e[200];

    /*
     * A staircase.  Served one after another, the k-th answer cannot leave
     * before k delays (the time service's timer never fires early): an
     * exact lower bound.  It may be seen late (a loaded machine can hold
     * the racer's thread for a while), so a single step may look short;
     * the median step is about one delay, and no answer comes much later
     * than its turn.
     */
    race_run(d.port, "/api/block", 6, &r, 20000);
    memcpy(e, r.end, sizeof e);
    qsort(e, r.n, sizeof e[0], cmp_double);
    print_message("block x6 ends:  %.0f %.0f %.0f %.0f %.0f %.0f ms\n", e[0], e[1], e[2], e[3],
                  e[4], e[5]);
    double step[5];
    for (unsigned i = 0; i < r.n; i++) {
        assert_int_equal(r.status[i], 200);
        assert_true(r.start[i] < 100);            /* all sent at once */
        assert_true(e[i] >= (i + 1) * 200.0 - 1); /* one after another */
        assert_true(e[i] <= (i + 1) * 200.0 + 1000);
        if (i)
            step[i - 1] = e[i] - e[i - 1];
    }
    qsort(step, 5, sizeof step[0], cmp_double);
    print_message("block median step %.0f ms\n", step[2]);
    assert_true(step[2] >= 150 && step[2] <= 400);

    race_run(d.port, "/api/noblock", 10, &r, 20000);
    double last_start = 0, first_end = 1e9;
    for (unsigned i = 0; i < r.n; i++) {
        assert_int_equal(r.status[i], 200);
        last_start = r.start[i] > last_start ? r.start[i] : last_start;
        first_end = r.end[i] < first_end ? r.end[i] : first_end;
    }
    print_message("noblock x10: last start %.1f, first end %.1f, wall %.1f ms\n", last_start,
                  first_end, r.wall);
    assert_true(last_start < first_end); /* every one overlaps every other */
    assert_true(first_end >= 200);
    assert_true(r.wall < 4 * 200);       /* about one delay, not ten */

    race_run(d.port, "/api/offload", 8, &r, 20000);
    memcpy(e, r.end, sizeof e);
    qsort(e, r.n, sizeof e[0], cmp_double);
    print_message("offload x8 ends: %.0f %.0f %.0f %.0f | %.0f %.0f %.0f %.0f ms\n", e[0], e[1],
                  e[2], e[3], e[4], e[5], e[6], e[7]);
    for (unsigned i = 0; i < r.n; i++)
        assert_int_equal(r.status[i], 200);
    assert_true(e[0] >= 200);
    assert_true(e[4] >= 400);            /* the fifth waits for one of the 4 workers */
    assert_true(r.wall < 6 * 200);       /* two waves, not eight steps */

    /* coro reads like block but runs like noblock: one column. */
    race_run(d.port, "/api/coro", 10, &r, 20000);
    last_start = 0, first_end = 1e9;
    for (unsigned i = 0; i < r.n; i++) {
        assert_int_equal(r.status[i], 200);
        last_start = r.start[i] > last_start ? r.start[i] : last_start;
        first_end = r.end[i] < first_end ? r.end[i] : first_end;
    }
    print_message("coro x10: last start %.1f, first end %.1f, wall %.1f ms\n", last_start,
                  first_end, r.wall);
    assert_true(last_start < first_end); /* every one overlaps every other */
    assert_true(first_end >= 200);
    assert_true(r.wall < 4 * 200);       /* about one delay, not ten */
    demo_done(&d);
}

/* Requests that time out are reported as 504, by the racer's own timeout
 * (--race-timeout) or by the route's upstream timeout; the race ends. */
static void test_race_timeouts(void **state)
{
    (void)state;
    struct demo d;
    const char *args[] = {"--delay-ms", "1500", "--race-timeout", "0.3", NULL};
    demo_start(&d, args);
    struct race r;
    int64_t t0 = ts_now_ms();
    char path[64];
    snprintf(path, sizeof path, "/api/race?route=/api/noblock&n=3");
    struct resp a;
    get(d.port, path, &a, 5000);
    int64_t took = ts_now_ms() - t0;
    race_parse(&a, &r);
    for (unsigned i = 0; i < r.n; i++) {
        assert_int_equal(r.status[i], 504);
        assert_true(r.end[i] >= 300 - 1 && r.end[i] < 1200);
    }
    assert_non_null(strstr(a.body, "\"status\":504,\"error\":\"no answer within 300 ms "
                                   "(--race-timeout)\"}"));
    assert_true(took < 1200); /* not the 1.5 s of the upstream */
    resp_free(&a);
    demo_done(&d); /* the drain waits for the requests the server still holds */

    /* The original's deadlock: /api/block calls its own loop, which cannot
     * answer; the upstream timeout (--timeout) ends each one with a 504. */
    const char *self[] = {"--upstream", "self", "--timeout", "0.4", NULL};
    demo_start(&d, self);
    race_run(d.port, "/api/block", 2, &r, 10000);
    for (unsigned i = 0; i < r.n; i++)
        assert_int_equal(r.status[i], 504);
    print_message("self /api/block x2: wall %.0f ms\n", r.wall);
    assert_true(r.wall >= 2 * 400 - 1 && r.wall < 5000); /* one after another */
    demo_done(&d);
}

/* The watchdog's reports, kept for the page: time, loop, ms, culprit. */
static void test_stalls(void **state)
{
    (void)state;
    struct demo d;
    const char *args[] = {"--delay-ms", "200", "--stall-ms", "100", NULL};
    demo_start(&d, args);
    /* (Not necessarily empty at start: on a loaded machine any callback
     * may be held past the threshold.) */
    struct race r;
    race_run(d.port, "/api/block", 2, &r, 10000);
    struct resp s;
    get(d.port, "/api/stalls", &s, 3000);
    assert_int_equal(s.status, 200);
    const char *one = "\\{\"seq\":[0-9]+,\"unix_ms\":1[0-9]{12},\"loop\":-?[0-9]+,\"ms\":[0-9]+,"
                      "\"running\":(true|false),\"culprit\":\"[^\"]+\"\\}";
    char re[1024];
    snprintf(re, sizeof re,
             "^\\{\"total\":[0-9]+,\"threshold_ms\":100,\"stalls\":\\[%s(,%s)*\\]\\}\n$", one,
             one);
    if (!matches(re, s.body))
        fail_msg("/api/stalls: %s", s.body);
    /* A blocking call is reported on loop 0 once it has returned, with its
     * total, naming its handler.  (The watchdog's thread must run during
     * the call to see it: on a loaded machine it may miss one.  And any
     * other callback may be held past the threshold: not counted.) */
    unsigned returned = 0, entries = 0;
    uint64_t prev = 0;
    for (const char *p = s.body; (p = strstr(p, "{\"seq\":")) != NULL; p++) {
        unsigned long long seq, at;
        int loop;
        long ms;
        char running[6];
        assert_int_equal(sscanf(p, "{\"seq\":%llu,\"unix_ms\":%llu,\"loop\":%d,\"ms\":%ld,"
                                   "\"running\":%5[a-z],",
                                &seq, &at, &loop, &ms, running),
                         5);
        assert_true(seq > prev); /* oldest first */
        prev = seq;
        entries++;
        const char *end = strchr(p, '}');
        assert_non_null(end);
        const char *c = strstr(p, "\"culprit\":\"api_block_fetch (GET /api/block: blocking HTTP "
                                  "call on the loop thread)\"}");
        if (c && c < end && loop == 0 && !strcmp(running, "false")) {
            assert_true(ms >= 190);
            returned++;
        }
    }
    assert_true(returned >= 1 && returned <= 2);
    /* stderr still has them, as the runtime's own hook prints them */
    assert_non_null(strstr(demo_stderr(&d), "eddy: warning: loop stalled: callback "
                                            "api_block_fetch (GET /api/block: blocking HTTP "
                                            "call on the loop thread) blocked the loop for "));
    unsigned long total = 0;
    assert_int_equal(sscanf(s.body, "{\"total\":%lu", &total), 1);
    assert_int_equal(total, prev);
    assert_true(entries >= 2 && entries <= 16);
    resp_free(&s);
    /* since=SEQ: only the later ones (none). */
    char path[64], want[128];
    snprintf(path, sizeof path, "/api/stalls?since=%lu", total);
    snprintf(want, sizeof want, "{\"total\":%lu,\"threshold_ms\":100,\"stalls\":[]}\n", total);
    expect(d.port, path, 200, want);
    demo_done(&d);
}

/* GET /: the page, its slots filled, nothing external; /api/routes. */
static void test_page(void **state)
{
    (void)state;
    struct demo d;
    const char *args[] = {"--delay-ms", "200", NULL};
    demo_start(&d, args);
    struct resp r;
    get(d.port, "/", &r, 3000);
    assert_int_equal(r.status, 200);
    assert_non_null(strcasestr(r.raw, "\r\nContent-Type: text/html; charset=UTF-8\r\n"));
    assert_non_null(strcasestr(r.raw, "\r\nContent-Security-Policy: default-src 'none';"));
    assert_true(!strncmp(r.body, "<!doctype html>", 15));
    assert_null(strstr(r.body, "<!--eddy:")); /* both slots filled */
    const char *want[] = {
        "every handler on one thread",  /* the lesson, readable without the script */
        "<section class=\"route r0\" id=\"route-block\" data-route=\"block\">",
        "<section class=\"route r1\" id=\"route-noblock\" data-route=\"noblock\">",
        "<section class=\"route r2\" id=\"route-offload\" data-route=\"offload\">",
        "<section class=\"route r3\" id=\"route-coro\" data-route=\"coro\">",
        "int err = <mark>eddy_http_fetch_await</mark>(lc-&gt;cli, &amp;f);",
        "int err = <mark>eddy_http_blocking_fetch</mark>(cfg.upstream, &quot;GET&quot;",
        "int rc = <mark>eddy_http_fetch_start</mark>(lc-&gt;cli, &amp;j-&gt;fetch, "
        "noblock_fetched);",
        "int rc = <mark>eddy_work</mark>(lc-&gt;loop, &amp;j-&gt;op, offload_work, "
        "offload_done);",
        "<script type=\"application/json\" id=\"eddy-data\">{\"routes\":[{\"name\":\"block\","
        "\"path\":\"/api/block\"},{\"name\":\"noblock\",\"path\":\"/api/noblock\"},"
        "{\"name\":\"offload\",\"path\":\"/api/offload\"},{\"name\":\"coro\","
        "\"path\":\"/api/coro\"}],\"max_n\":200,\"delay_ms\":200,",
        "<noscript>",
    };
    for (size_t i = 0; i < sizeof want / sizeof want[0]; i++)
        if (!strstr(r.body, want[i]))
            fail_msg("the page lacks %s", want[i]);
    /* No external URL: every http:// is the SVG namespace or loopback. */
    for (const char *p = r.body; (p = strcasestr(p, "http")) != NULL; p++) {
        if (strncasecmp(p, "https://", 8) == 0)
            fail_msg("the page names an external URL: %.60s", p);
        if (strncasecmp(p, "http://", 7) != 0)
            continue;
        if (strncmp(p, "http://www.w3.org/2000/svg\"", 27) && strncmp(p, "http://127.0.0.1:", 17))
            fail_msg("the page names an external URL: %.60s", p);
    }
    assert_null(strcasestr(r.body, " src=")); /* nothing loaded from anywhere */
    assert_null(strcasestr(r.body, "<link"));
    resp_free(&r);
    get(d.port, "/api/routes", &r, 3000);
    assert_int_equal(r.status, 200);
    if (!matches("^\\{\"routes\":\\[\\{\"name\":\"block\",\"path\":\"/api/block\"\\},"
                 "\\{\"name\":\"noblock\",\"path\":\"/api/noblock\"\\},\\{\"name\":\"offload\","
                 "\"path\":\"/api/offload\"\\},\\{\"name\":\"coro\",\"path\":\"/api/coro\"\\}\\],"
                 "\"max_n\":200,\"delay_ms\":200,\"pool\":4,"
                 "\"stall_ms\":100,\"threads\":1,\"timeout_ms\":60000,\"race_timeout_ms\":60000,"
                 "\"upstream\":\"http://127\\.0\\.0\\.1:[0-9]+/api/time\"\\}\n$",
                 r.body))
        fail_msg("/api/routes: %s", r.body);
    resp_free(&r);
    demo_done(&d);
}

/* --web-dir: the page from disk, read at every request; a missing one is
 * a usage error. */
static void test_web_dir(void **state)
{
    (void)state;
    char dir[] = "/tmp/eddy-web-XXXXXX";
    assert_non_null(mkdtemp(dir));
    char file[128];
    snprintf(file, sizeof file, "%s/index.html", dir);
    FILE *f = fopen(file, "w");
    assert_non_null(f);
    fputs("<p>one</p><!--eddy:other--><!--eddy:routes-->", f);
    fclose(f);
    struct demo d;
    const char *args[] = {"--web-dir", dir, NULL};
    demo_start(&d, args);
    struct resp r;
    get(d.port, "/", &r, 3000);
    assert_int_equal(r.status, 200);
    assert_true(!strncmp(r.body, "<p>one</p><!--eddy:other--><section class=\"route r0\"", 52));
    resp_free(&r);
    f = fopen(file, "w");
    assert_non_null(f);
    fputs("<p>two</p>", f);
    fclose(f);
    expect(d.port, "/", 200, "<p>two</p>");
    unlink(file);
    char want[256];
    snprintf(want, sizeof want, "--web-dir: cannot read %s: No such file or directory\n", file);
    expect(d.port, "/", 500, want);
    demo_done(&d);

    /* At start: exit 2, naming the file. */
    const char *argv[] = {"eddy-demo", "--web-dir", dir, NULL};
    int ep[2];
    assert_int_equal(pipe2(ep, O_CLOEXEC), 0);
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        dup2(ep[1], 2);
        execv(EDDY_DEMO_PATH, (char *const *)argv);
        _exit(127);
    }
    close(ep[1]);
    char err[1024];
    size_t len = 0;
    int64_t deadline = ts_now_ms() + 5000;
    for (;;) {
        struct pollfd p = {.fd = ep[0], .events = POLLIN};
        int left = (int)(deadline - ts_now_ms());
        if (left <= 0) {
            kill(pid, SIGKILL);
            waitpid(pid, NULL, 0);
            fail_msg("eddy-demo --web-dir (missing) did not exit");
        }
        if (poll(&p, 1, left) <= 0)
            continue;
        ssize_t got = read(ep[0], err + len, sizeof err - 1 - len);
        if (got <= 0)
            break;
        len += (size_t)got;
    }
    close(ep[0]);
    err[len] = 0;
    int status;
    assert_int_equal(waitpid(pid, &status, 0), pid);
    assert_true(WIFEXITED(status));
    assert_int_equal(WEXITSTATUS(status), 2);
    snprintf(want, sizeof want,
             "eddy-demo: --web-dir %s: cannot read %s: No such file or directory\n"
             "Try 'eddy-demo --help'.\n",
             dir, file);
    assert_string_equal(err, want);
    rmdir(dir);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_teardown(test_race_bad_inputs, teardown_child),
        cmocka_unit_test_teardown(test_race_busy_409, teardown_child),
        cmocka_unit_test_teardown(test_race_shapes, teardown_child),
        cmocka_unit_test_teardown(test_race_timeouts, teardown_child),
        cmocka_unit_test_teardown(test_stalls, teardown_child),
        cmocka_unit_test_teardown(test_page, teardown_child),
        cmocka_unit_test_teardown(test_web_dir, teardown_child),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
