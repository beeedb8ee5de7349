/*
 * eddy-demo's internal header: the structs its files share, and who
 * provides what.  The files (each says more at its top):
 *
 *   demo.c      the routes: /api/time and the four fetching routes (jobs,
 *               answers, aborts), /plaintext and /plaintext-fiber, and
 *               each loop's server: routes, client, drain, teardown
 *   upstream.c  the upstream (time service) URL: checked at start, and
 *               what a fetch's result becomes (the body, 502 or 504)
 *   stats.c     per-route accounting, the /stats JSON and its route
 *   dbuf.c      a text buffer (growable or fixed) and small answer helpers
 *   stalls.c    the loops' log hook: stall reports kept for /api/stalls
 *   page.c      the home page (web/index.html and the code excerpts of
 *               demo.c, compiled in), /api/routes and the race route table
 *   race.c      GET /api/race and the racer's loop
 *   threads.c   the loops on the runtime's group (eddy/group.h): loop
 *               contexts, the group's callbacks, the order of the stop
 *               (main loops first, the time service and the racer last),
 *               and the signal thread
 *   options.c   the command line (cfg, --help)
 *   main.c      listening sockets, the upstream's URL, the group's start,
 *               the ready line, main
 *
 * Threads.  One eddy group runs every loop, each on a thread of its own:
 * indices 0..threads-1 the main loops, then the time service (unless
 * --time-port off), then the racer (demo_racer_index()).  Each loopctx
 * (and the racer) belongs to its loop's thread; the others reach it only
 * by eddy_group_post(), which refuses (-ESHUTDOWN) once the loop has
 * ended.  cfg is written by main before the group starts and only read
 * after.
 *
 * Names.  The functions the files share are named demo_* (the others are
 * static): the internal functions of libeddy.a and libeddy_http.a are
 * global symbols too, and a program function of the same name clashes
 * with one (a link error, or one silently taking the other's place; a
 * demo mono_ns() once did).
 */
#ifndef EDDY_DEMO_H
#define EDDY_DEMO_H

#include "eddy/eddy.h"
#include "eddy/fiber.h"
#include "eddy/group.h"
#include "eddy/http.h"
#include "eddy/http_client.h"
#include "eddy/http_fiber.h"
#include "hist.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <time.h>

/* ---- routes and their statistics (stats.c) ------------------------------ */

enum route {
    R_TIME, R_NOBLOCK, R_BLOCK, R_OFFLOAD, R_CORO, R_PLAINTEXT, R_PLAINTEXT_FIBER, R_STATS,
    R_PAGE, R_RACE, R_ROUTES, R_STALLS, R_COUNT
};
extern const char *const demo_route_path[R_COUNT];

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
    struct hist lat; /* µs; read interpolated (hist_percentile_interp) */
};

/* ---- configuration (options.c; read-only once the threads start) -------- */

struct demo_cfg {
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
    struct timespec started;  /* CLOCK_MONOTONIC */
};
extern struct demo_cfg cfg;

/* ---- per-loop state ------------------------------------------------------- */

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
    struct job *next_all; /* every job of the loop, freed at exit */
};

struct loopctx {
    int index; /* 0..threads-1; -1 for the time service */
    bool is_time;
    int lfd;
    struct eddy_group *group;
    struct eddy_loop *loop;
    struct eddy_http_server *srv;
    struct eddy_http_client *cli;
    bool fibers; /* eddy_fiber_setup() done: /api/coro, /plaintext-fiber */
    struct eddy_http_fiber_route coro_route, plain_fiber_route;
    struct eddy_op stop_op;
    struct eddy_op dump_op;   /* SIGUSR1: print /stats to stderr */
    atomic_bool dump_pending; /* dump_op is posted and has not run yet */
    bool stopping;
    uint64_t rng;
    struct job *free_jobs, *jobs;
    struct route_stats routes[R_COUNT];
    unsigned offloads; /* worker-pool calls started and not yet back */
    bool abandoned;    /* stopped with pool calls still blocked */
    int rc;
};

/* ---- demo.c: each loop's server ------------------------------------------- */

/* On the loop's thread, once its loop exists: the server with its routes,
 * the client (main loops), listening.  0 or -errno (reported on stderr). */
int demo_serve_setup(struct loopctx *lc);
/* Stops accepting and drains (up to --drain-ms), then closes the client;
 * calls demo_lc_finished(lc) once all that has ended.  say: a main loop
 * reports its requests in flight on stderr. */
void demo_serve_drain(struct loopctx *lc, bool say);
/* Destroys what demo_serve_setup() built, and the jobs unless lc->abandoned. */
void demo_serve_teardown(struct loopctx *lc);
/* Client options: conns per origin, request timeout_ms (connect: at most
 * 20 s of it). */
void demo_client_options(struct eddy_http_client_options *co, unsigned conns, unsigned timeout_ms);

/* Answers the job's request (an answer after an abort is discarded), counts
 * how it ended and recycles the job. */
void demo_job_answer(struct job *j, int status, const char *ctype, const void *body, size_t len);
/* demo_job_answer() with a plain-text message. */
void demo_job_fail(struct job *j, int status, const char *msg);

/* ---- upstream.c --------------------------------------------------------- */

/* Checks an --upstream URL and writes what the routes fetch into out:
 * 0, or -1 with the reason in why. */
int demo_upstream_parse(const char *url, char *out, size_t n, char *why, size_t wn);
/* Turns a fetch's result into the job's answer: its body, 502 or 504. */
void demo_answer_upstream(struct job *j, int err, const struct eddy_http_response *r);

/* ---- stats.c ------------------------------------------------------------ */

/* The route accounting every request passes through, inline: it is on the
 * hot path of /plaintext (the benchmarks' route). */
static inline int64_t demo_clock_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

static inline void demo_route_begin(struct loopctx *lc, enum route r)
{
    lc->routes[r].requests++;
    lc->routes[r].in_flight++;
}

/* A request of route r started at t0_ns has ended, as out. */
static inline void demo_route_end(struct loopctx *lc, enum route r, enum outcome out,
                                  int64_t t0_ns)
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
    int64_t us = (demo_clock_ns() - t0_ns) / 1000;
    hist_record(&rs->lat, us > 0 ? (uint64_t)us : 0);
}
/* Requests of every route of lc still in flight. */
uint64_t demo_routes_in_flight(const struct loopctx *lc);
/* The /stats JSON of lc (one line, with its newline) into buf; its length,
 * 0 when it does not fit. */
size_t demo_stats_json(struct loopctx *lc, char *buf, size_t cap);
#define STATS_JSON_MAX 16384
void demo_h_stats(struct eddy_http_req *req, void *ud);

/* ---- dbuf.c ------------------------------------------------------------- */

/* Not on a hot path: the page, a race's answer, /stats.  A growable buffer
 * (zeroed) reallocs; a fixed one (demo_dbuf_fixed) never does.  When it cannot
 * grow the buffer stops there and says so (oom); the answer is then a 503. */
struct dbuf {
    char *p;
    size_t len, cap;
    bool oom;
    bool fixed;
};

struct dbuf demo_dbuf_fixed(char *buf, size_t cap);
void demo_db_put(struct dbuf *b, const void *s, size_t n);
void demo_db_puts(struct dbuf *b, const char *s);
void demo_db_printf(struct dbuf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* s as a JSON string, quoted; "<" escaped too (the JSON may sit in a
 * <script> element). */
void demo_db_json(struct dbuf *b, const char *s);
/* n bytes of text, HTML-escaped. */
void demo_db_html(struct dbuf *b, const char *s, size_t n);
/* A formatted message in a buffer of the calling thread's, valid until its
 * next call (at most 4399 bytes: the rest is cut). */
const char *demo_textf(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
/* Answers req 200 with b's text (a growable b is freed), or 503 when b ran
 * out of memory or the answer could not be made; the status sent. */
int demo_respond_dbuf(struct eddy_http_req *req, const char *ctype, struct dbuf *b);
/* Answers req status with a plain-text message and counts route r's
 * request (started at t0) as failed. */
void demo_fail_text(struct loopctx *lc, enum route r, struct eddy_http_req *req, int status,
                    int64_t t0, const char *msg);

/* ---- stalls.c ----------------------------------------------------------- */

#define STALL_KEEP 16
/* The loops' log hook (ud: the loopctx, NULL for the racer). */
void demo_log(void *ud, int level, const char *msg);
void demo_h_stalls(struct eddy_http_req *req, void *ud);

/* ---- page.c ------------------------------------------------------------- */

/*
 * The routes a race may use: one row per route (a new route is one more
 * row, and its code excerpt is marked in demo.c like the others).  how is
 * HTML.
 */
struct race_route {
    const char *name;  /* in the page's deep link: #race=block,noblock&n=10 */
    const char *path;
    const char *key;   /* the call that makes the difference: marked in the code */
    const char *how;   /* how it waits */
    const char *shape; /* what its timeline looks like */
};
#define RACE_MAX_N 200
const struct race_route *demo_race_route_find(const char *path);
/* "/api/block, /api/noblock, ..." */
void demo_race_route_list(char *out, size_t n);
void demo_h_page(struct eddy_http_req *req, void *ud);
void demo_h_routes(struct eddy_http_req *req, void *ud);

/* ---- race.c ------------------------------------------------------------- */

void demo_h_race(struct eddy_http_req *req, void *ud);
/* The racer's loop in the group (threads.c calls these on its thread):
 * setup makes its client (0 or -errno, said on stderr); the group's stop
 * (started: false when it undoes a failed start); teardown destroys the
 * client. */
int demo_racer_setup(struct eddy_loop *loop);
void demo_racer_group_stop(bool started);
void demo_racer_teardown(void);
/* From the last main loop to finish: the racer may end once its race is
 * over. */
void demo_racer_post_stop(struct eddy_group *g);
/* The racer's exit status (0 or 1), once its thread has ended. */
int demo_racer_status(void);

/* ---- threads.c ---------------------------------------------------------- */

/* Loop i: 0..threads-1 the main loops, threads the time service (NULL with
 * --time-port off, and for the racer). */
struct loopctx *demo_lc_at(unsigned i);
/* The racer's index in the group: the last. */
unsigned demo_racer_index(void);
/* Everything lc's loop ran has ended: let the loop end. */
void demo_lc_finished(struct loopctx *lc);
/* Allocates the loop contexts (before the listeners).  0 or -1. */
int demo_threads_create(void);
/* The group's options: every loop, with threads.c's callbacks. */
void demo_threads_group_options(struct eddy_group_options *go);
/* Did a loop's setup fail (and say why on stderr)?  A failed start
 * without one could not make a loop or a thread. */
bool demo_threads_setup_failed(void);
/* Blocks the signals the signal thread reads, in the calling thread: call
 * before the group starts, so that every thread inherits the block. */
void demo_signals_block(void);
/* Starts the signal thread, which stops g (or dumps /stats) on a signal.
 * 0, or -1 (said on stderr). */
int demo_signals_start(struct eddy_group *g);
/* The exit status once eddy_group_join() has returned rc. */
int demo_threads_status(int rc);

/* ---- options.c ---------------------------------------------------------- */

/* Fills cfg from the command line: -1 to go on, else the exit status (0
 * after --help, 2 after a usage error, reported on stderr). */
int demo_parse_args(int argc, char **argv);

#define U(x) ((unsigned long long)(x))

#endif /* EDDY_DEMO_H */
