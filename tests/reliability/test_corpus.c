/*
 * The bad-bytes corpus (corpus.txt) against a live server on loopback:
 * every case gets exactly the answers the RFCs prescribe, in order, then
 * the close (or not) it expects; after each, a fresh connection is still
 * served and the process's descriptor count is back to its baseline.
 * Each case runs twice: sent whole, and sent one byte at a time.
 *
 * `test_corpus --dump DIR` writes each decoded request to DIR/NNN (the
 * fuzzer's seeds, see tools/fuzz.sh) and exits.
 */
#include "http_util.h"

#include <stdarg.h>
#include <sys/stat.h>

#include "corpus.h"

#ifndef CORPUS_FILE
#error "CORPUS_FILE must name corpus.txt"
#endif

#define S(x) x, sizeof(x) - 1

static struct hsrv H;
static struct ccase *C;
static size_t NC;
static int baseline_fds;

static int setup(void **state)
{
    (void)state;
    int rc = corpus_load(CORPUS_FILE, &C, &NC);
    if (rc != 0)
        print_error("corpus.txt: bad line %d\n", rc);
    assert_int_equal(rc, 0);
    memset(&H, 0, sizeof H);
    H.o.host = "127.0.0.1";
    H.o.max_uri = 1024;
    H.o.max_header = 4096;
    H.o.max_headers = 32;
    H.o.max_body = 4096;
    H.o.max_pipeline = 8;
    hsrv_start(&H);
    char body[64];
    assert_int_equal(simple_get(atomic_load(&H.port), "/plaintext", body, sizeof body), 200);
    /* the server closes its side of that connection on our close: settle */
    int64_t end = ts_now_ms() + 2000;
    int prev = -1;
    while ((baseline_fds = ts_fd_count()) != prev && ts_now_ms() < end) {
        prev = baseline_fds;
        usleep(100000);
    }
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    hsrv_stop(&H);
    assert_int_equal(ts_fd_count(), baseline_fds - 3); /* listener, ring, eventfd gone */
    corpus_free(C, NC);
    return 0;
}

__attribute__((format(printf, 1, 2))) static int report(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    char buf[600];
    vsnprintf(buf, sizeof buf, fmt, ap);
    va_end(ap);
    print_error("%s\n", buf);
    return 1;
}

/* Waits (bounded) until the server has let go of every connection. */
static int fds_back(void)
{
    int64_t end = ts_now_ms() + 3000;
    int n;
    while ((n = ts_fd_count()) != baseline_fds && ts_now_ms() < end)
        usleep(500);
    return n;
}

static void fmt_statuses(char *out, size_t cap, const int *st, int n)
{
    size_t o = 0;
    out[0] = 0;
    for (int i = 0; i < n && o < cap; i++)
        o += (size_t)snprintf(out + o, cap - o, "%s%d", i ? "," : "", st[i]);
}

/* Runs one case; returns 0 when it behaved as expected, 1 otherwise (with
 * the reason printed). */
static int run_case(const struct ccase *c, int bytewise)
{
    int port = atomic_load(&H.port);
    int fd = cli_connect(port);
    /* a missing answer or close shows as a timeout: keep it short */
    struct timeval tv = {.tv_sec = 1, .tv_usec = 500000};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    if (bytewise) {
        for (size_t i = 0; i < c->len; i++)
            cli_send(fd, c->req + i, 1);
    } else {
        cli_send(fd, c->req, c->len);
    }
    static struct resp r[CORPUS_MAX_ANS + 1];
    int eof = 0;
    int head = !strncmp(c->req, "HEAD ", 5);
    /* One more than expected: an extra answer is a failure too. */
    int got = cli_read(fd, r, c->closes ? c->nstatus + 1 : c->nstatus, head, &eof, c->closes);
    int st[CORPUS_MAX_ANS + 1];
    for (int i = 0; i < got; i++)
        st[i] = r[i].status;
    char want[128], have[128];
    fmt_statuses(want, sizeof want, c->status, c->nstatus);
    fmt_statuses(have, sizeof have, st, got);
    int bad = 0;
    const char *why = "";
    if (got != c->nstatus || memcmp(st, c->status, sizeof st[0] * (size_t)got)) {
        bad = 1;
        why = "statuses";
    } else if (c->closes && eof != 1) {
        bad = 1;
        why = eof ? "reset or timeout instead of a clean close" : "not closed";
    } else if (c->closes && c->nstatus && !r[got - 1].close && r[got - 1].clen >= 0) {
        bad = 1;
        why = "closed without Connection: close";
    } else if (!c->closes) {
        for (int i = 0; i < got; i++)
            if (r[i].close) {
                bad = 1;
                why = "unexpected Connection: close";
            }
        if (!bad) {
            /* the connection still serves */
            cli_send(fd, S("GET /plaintext HTTP/1.1\r\nHost: t\r\n\r\n"));
            if (cli_read(fd, r, 1, 0, &eof, 0) != 1 || r[0].status != 200) {
                bad = 1;
                why = "connection unusable after the answers";
            }
        }
    }
    close(fd);
    /* A normal request on a new connection still works. */
    char body[64];
    if (!bad && simple_get(port, "/plaintext", body, sizeof body) != 200) {
        bad = 1;
        why = "server no longer answers a normal request";
    }
    int fds = fds_back();
    if (!bad && fds != baseline_fds) {
        bad = 1;
        why = "descriptor count did not return to baseline";
    }
    if (!bad) {
        if (c->known)
            report("corpus.txt:%d '%s'%s: known deviation now passes: drop its '!'", c->line,
                   c->name, bytewise ? " (bytewise)" : "");
        return 0;
    }
    report("corpus.txt:%d '%s'%s: %s%s: want %s %s, got %s eof %d (fds %d, baseline %d) [%s]",
           c->line, c->name, bytewise ? " (bytewise)" : "", c->known ? "KNOWN DEVIATION, " : "",
           why, want, c->closes ? "close" : "keep", have, eof, fds, baseline_fds, c->ref);
    return c->known ? 0 : 1;
}

static void test_corpus_whole(void **state)
{
    (void)state;
    assert_true(NC >= 150);
    int bad = 0, known = 0;
    for (size_t i = 0; i < NC; i++) {
        bad += run_case(&C[i], 0);
        known += C[i].known;
    }
    print_message("corpus: %zu cases, %d marked as known deviations\n", NC, known);
    assert_int_equal(bad, 0);
}

static void test_corpus_bytewise(void **state)
{
    (void)state;
    int bad = 0;
    for (size_t i = 0; i < NC; i++)
        if (C[i].len <= 600)
            bad += run_case(&C[i], 1);
    assert_int_equal(bad, 0);
}

static void test_server_intact(void **state)
{
    (void)state;
    /* after the whole corpus: the server's own count agrees */
    char body[256];
    assert_int_equal(simple_get(atomic_load(&H.port), "/stats", body, sizeof body), 200);
    assert_non_null(strstr(body, "conns=1 ")); /* this request's own connection */
    assert_int_equal(fds_back(), baseline_fds);
}

static int dump(const char *dir)
{
    struct ccase *cs;
    size_t n;
    int rc = corpus_load(CORPUS_FILE, &cs, &n);
    if (rc != 0) {
        fprintf(stderr, "corpus.txt: bad line %d\n", rc);
        return 1;
    }
    mkdir(dir, 0755);
    for (size_t i = 0; i < n; i++) {
        char path[4096];
        snprintf(path, sizeof path, "%s/corpus-%03zu", dir, i);
        FILE *f = fopen(path, "wb");
        if (!f || fwrite(cs[i].req, 1, cs[i].len, f) != cs[i].len) {
            fprintf(stderr, "cannot write %s\n", path);
            return 1;
        }
        fclose(f);
    }
    printf("%zu seeds in %s\n", n, dir);
    corpus_free(cs, n);
    return 0;
}

int main(int argc, char **argv)
{
    if (argc == 3 && !strcmp(argv[1], "--dump"))
        return dump(argv[2]);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_corpus_whole),
        cmocka_unit_test(test_corpus_bytewise),
        cmocka_unit_test(test_server_intact),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
