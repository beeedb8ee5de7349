/*
 * Stall reports, kept for the page.  Every loop logs through demo_log():
 * each line goes to stderr as the runtime's own hook prints it, and a
 * stall report is also kept in a small ring that GET /api/stalls shows.
 * The watchdog's thread writes the "still running" reports and the loop's
 * thread the "it has returned" ones, so the ring is under a mutex.
 */
#include "demo.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

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

void demo_log(void *ud, int level, const char *msg)
{
    const struct loopctx *lc = ud;
    static const char *const names[] = {"error", "warning", "info"};
    fprintf(stderr, "eddy: %s: %s\n", names[level < 0 || level > 2 ? 2 : level], msg);
    stall_keep(lc ? lc->index : -2, msg);
}

/* GET /api/stalls[?since=SEQ]: the kept reports after SEQ, oldest first. */
void demo_h_stalls(struct eddy_http_req *req, void *ud)
{
    struct loopctx *lc = ud;
    int64_t t0 = demo_clock_ns();
    demo_route_begin(lc, R_STALLS);
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
    demo_db_printf(&b, "{\"total\":%llu,\"threshold_ms\":%u,\"stalls\":[", U(last), cfg.stall_ms);
    for (unsigned i = 0; i < n; i++) {
        demo_db_printf(&b,
                       "%s{\"seq\":%llu,\"unix_ms\":%lld,\"loop\":%d,\"ms\":%ld,\"running\":%s,"
                       "\"culprit\":",
                       i ? "," : "", U(r[i].seq), (long long)r[i].unix_ms, r[i].loop, r[i].ms,
                       r[i].running ? "true" : "false");
        demo_db_json(&b, r[i].culprit);
        demo_db_puts(&b, "}");
    }
    demo_db_puts(&b, "]}\n");
    int st = demo_respond_dbuf(req, "application/json", &b);
    demo_route_end(lc, R_STALLS, st == 200 ? OUT_ANSWERED : OUT_FAILED, t0);
}
