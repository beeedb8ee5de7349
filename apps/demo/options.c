/*
 * eddy-demo's command line: cfg, its defaults, --help, and the checks that
 * stop a bad value before anything is bound or started.
 */
#include "demo.h"
#include "opts.h"

#include <errno.h>
#include <getopt.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

struct demo_cfg cfg = {
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
    .race_timeout_ms = 60000,
};

/* --help, first part: what the demo serves. */
static void usage_routes(FILE *f)
{
    char races[256];
    demo_race_route_list(races, sizeof races);
    fprintf(f,
        "usage: eddy-demo [options]\n"
        "The Tornado blocking/non-blocking demo on the eddy io_uring runtime.\n"
        "\n"
        "Routes (all GET):\n"
        "  /api/time?time=T  waits 10-500 ms on a timer, answers \"b:{T},s:{S} => e:{E}\"\n"
        "  /api/noblock      fetches the upstream with the async client\n"
        "  /api/block        the same with the blocking client on the loop thread (stalls it)\n"
        "  /api/offload      the blocking client on the worker pool\n"
        "  /api/coro         the async client awaited on a fiber: /api/block's straight line\n"
        "  /plaintext        \"Hello, World!\"\n"
        "  /plaintext-fiber  the same, answered from a fiber handler (to compare costs)\n"
        "  /                 the home page: the lesson, each route's code next to its\n"
        "                    timeline, races, live /stats and stall reports (inline\n"
        "                    HTML, CSS and JS; no external URL).  Deep link:\n"
        "                    /#race=block,noblock&n=10 runs those races on load\n"
        "  /api/race?route=PATH&n=N\n"
        "                    a race: N concurrent GET PATH (N 1-%d, default 10) made\n"
        "                    by the demo's async client from a thread of its own (not\n"
        "                    the loop under test, not the browser), one connection\n"
        "                    each; answers when all have ended, 200 JSON:\n"
        "                    {\"route\":PATH,\"n\":N,\"wall_ms\":W,\"requests\":[{\"start_ms\":S,\n"
        "                    \"end_ms\":E,\"status\":200}, ...],...} (ms from the race's\n"
        "                    start; a request unanswered after --race-timeout has\n"
        "                    status 504 and an \"error\").  PATH is one of:\n"
        "                    %s.\n"
        "                    400 (with the reason): another PATH, or N not in 1-%d;\n"
        "                    409: a race is already running (one at a time)\n"
        "  /api/routes       JSON: the routes a race may use, and the settings\n"
        "  /api/stalls[?since=SEQ]\n"
        "                    JSON: the stall watchdog's last %d reports (time, loop,\n"
        "                    ms, culprit), also printed on stderr\n"
        "  /stats            JSON: loop counters, connections; per route its requests,\n"
        "                    each counted once as it ends: requests =\n"
        "                    answered + failed + aborted + in_flight (failed: an error\n"
        "                    answer, 4xx/5xx; aborted: the client left before its\n"
        "                    answer), and the latency of the answers (handler to\n"
        "                    answer): p50, p90, p99 interpolated within a log-linear\n"
        "                    histogram bucket (within 3.2 %%), max exact.  Of the loop\n"
        "                    that answers\n"
        "                    (\"scope\":\"loop\"; with --threads N each loop counts its own)\n"
        "Upstream errors answer 502, upstream timeouts 504, each with a one-line reason.\n"
        "\n",
        RACE_MAX_N, races, RACE_MAX_N, STALL_KEEP);
}

/* --help, second part: the options, the ready line, the signals. */
static void usage_options(FILE *f)
{
    fputs(
        "Options:\n"
        "  --host ADDR            address to bind (default 0.0.0.0; \"::\" is dual stack)\n"
        "  --port P               main port, 0-65535 (default 2345; 0 picks a free one)\n"
        "  --time-port Q|off      time service port (not --port), on its own loop thread:\n"
        "                         default 2346 (a free one with --port 0); 0 picks a free\n"
        "                         one; \"off\" runs no time service and needs --upstream\n"
        "  --threads N            main loops, one per thread, SO_REUSEPORT (default 1;\n"
        "                         1-256)\n"
        "  --upstream URL|self    what /api/noblock, /api/block, /api/offload and /api/coro\n"
        "                         fetch (default: the time service).  URL:\n"
        "                         http://host[:port][/path][?query] (scheme in any case;\n"
        "                         host a name, IPv4 or [IPv6]; port 1-65535; no user@),\n"
        "                         checked at start; without a path it gets /api/time\n"
        "                         (before the query).  \"self\": this server's own port,\n"
        "                         the original single-loop set-up (/api/block then\n"
        "                         ends in 504)\n"
        "  --timeout SEC          upstream request timeout in seconds, decimals allowed,\n"
        "                         at most 86400 (default 60, as in the original)\n"
        "  --delay-ms MS          /api/time waits exactly MS (0-600000) instead of a\n"
        "                         random 10-500 ms\n"
        "  --seed N               seed of the random delays (default: time and pid)\n"
        "  --stall-ms MS          stall watchdog threshold, reported on stderr and in\n"
        "                         /api/stalls (default 100;\n"
        "                         0 = off)\n"
        "  --pool N               worker threads per loop for /api/offload (default 4;\n"
        "                         1-1024)\n"
        "  --upstream-conns N     async client connections per upstream origin, 1-100000\n"
        "                         (default 1024)\n"
        "  --drain-ms MS          graceful shutdown: time for requests in flight (default 5000)\n"
        "  --header-timeout-ms MS whole request head, else 408 (default 10000)\n"
        "  --body-timeout-ms MS   whole request body, from the end of the head, else 408\n"
        "                         (default 30000)\n"
        "  --idle-timeout-ms MS   keep-alive idle, then close (default 60000)\n"
        "  --send-timeout-ms MS   a client that does not read an answer for MS is closed\n"
        "                         (default 30000)\n"
        "  --max-conns N          connections per loop, 1-1000000; beyond, 503 and close\n"
        "                         (default 10000)\n"
        "  --half-close finish|abort\n"
        "                         a client's EOF before its answers: finish (default)\n"
        "                         answers every request received, then closes, so\n"
        "                         `printf ... | nc -N` style clients that shutdown(SHUT_WR)\n"
        "                         get /api/noblock's answer; a client gone for good is\n"
        "                         noticed at the next failed send or after 30 s.  abort\n"
        "                         cancels the requests not answered yet at once (the\n"
        "                         handler's upstream fetch stops), as Tornado does\n"
        "  --web-dir DIR          serve the home page from DIR/index.html, read at every\n"
        "                         request (edit apps/demo/web/index.html without a\n"
        "                         rebuild); default: the copy compiled in\n"
        "  --race-timeout SEC     a raced request not answered within SEC is reported as\n"
        "                         504, decimals allowed (default 60)\n"
        "  --defer-accept SEC     TCP_DEFER_ACCEPT: a connection is handed over only once\n"
        "                         its first bytes are in (a silent client after about SEC\n"
        "                         seconds, 0-3600); saves a wake-up per connection\n"
        "                         (default 0: off)\n"
        "  --help                 this text\n"
        "Times in MS are 0-86400000 (a day); the four --*-timeout-ms at least 1.\n"
        "A bad value is named on stderr with what it accepts, and the exit status is 2.\n"
        "\n"
        "Prints one line once ready: \"eddy-demo: port P time-port Q: serving URLs...;\n"
        "... N loops; backend B\"\n"
        "(Q is \"off\" with --time-port off; B is io_uring or epoll).\n"
        "\n"
        "Environment:\n"
        "  EDDY_BACKEND=auto|io_uring|epoll  the loops' backend (default auto: io_uring,\n"
        "           else epoll, saying why); /stats reports it as \"backend\"\n"
        "  EDDY_FAULTS=SPEC  fault injection in every loop (eddy/fault.h); /stats then\n"
        "           shows \"faults\": the seed and each rule's events and injections\n"
        "\n"
        "Signals:\n"
        "  SIGINT, SIGTERM, SIGHUP: drain: stop accepting, finish the requests in flight\n"
        "           (up to --drain-ms), exit 0.  A second one exits at once (status 1),\n"
        "           also while a blocking call (/api/block) holds a loop.\n"
        "  SIGUSR1: each loop prints its /stats line to stderr (once the loop is free).\n"
        "  SIGUSR2: ignored (noted on stderr).\n", f);
}

/* A usage error: the reason (one line), a pointer to --help, status 2. */
static int usage_error(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static int usage_error(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fputs("eddy-demo: ", stderr);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputs("\nTry 'eddy-demo --help'.\n", stderr);
    return 2;
}

/* A whole decimal number in [min, max] (apps/common's opt_uint), else
 * false with the option named. */
static bool opt_num(const char *opt, const char *arg, unsigned long min, unsigned long max,
                    const char *note, unsigned long *out)
{
    if (opt_uint(arg, min, max, out))
        return true;
    usage_error("%s %s: want a number from %lu to %lu%s", opt, arg, min, max, note);
    return false;
}

#define DAY_MS 86400000ul /* a day, in ms: bounds every time flag */

/* The options that take a whole number in [min, max] into a field of cfg. */
static const struct num_opt {
    const char *name;
    unsigned long min, max;
    const char *note; /* after "want a number from MIN to MAX" */
    unsigned *field;
} num_opts[] = {
    {"port", 0, 65535, " (0: a free port)", &cfg.port},
    {"threads", 1, 256, "", &cfg.threads},
    {"stall-ms", 0, DAY_MS, " (0: off)", &cfg.stall_ms},
    {"pool", 1, 1024, "", &cfg.pool},
    {"upstream-conns", 1, 100000, "", &cfg.upstream_conns},
    {"drain-ms", 0, DAY_MS, "", &cfg.drain_ms},
    {"header-timeout-ms", 1, DAY_MS, "", &cfg.header_timeout_ms},
    {"body-timeout-ms", 1, DAY_MS, "", &cfg.body_timeout_ms},
    {"idle-timeout-ms", 1, DAY_MS, "", &cfg.idle_timeout_ms},
    {"send-timeout-ms", 1, DAY_MS, "", &cfg.send_timeout_ms},
    {"max-conns", 1, 1000000, "", &cfg.max_conns},
    {"defer-accept", 0, 3600, " (0: off)", &cfg.defer_accept_s},
};
#define NUM_OPTS (sizeof num_opts / sizeof num_opts[0])

/* The others; a num_opts entry i is getopt's value O_NUM + i. */
enum {
    O_HOST = 256, O_TIME_PORT, O_UPSTREAM, O_TIMEOUT, O_DELAY, O_SEED, O_HALFCLOSE, O_WEBDIR,
    O_RACE_TO, O_HELP, O_NUM,
};
static const struct option other_opts[] = {
    {"host", required_argument, NULL, O_HOST},
    {"time-port", required_argument, NULL, O_TIME_PORT},
    {"upstream", required_argument, NULL, O_UPSTREAM},
    {"timeout", required_argument, NULL, O_TIMEOUT},
    {"delay-ms", required_argument, NULL, O_DELAY},
    {"seed", required_argument, NULL, O_SEED},
    {"half-close", required_argument, NULL, O_HALFCLOSE},
    {"web-dir", required_argument, NULL, O_WEBDIR},
    {"race-timeout", required_argument, NULL, O_RACE_TO},
    {"help", no_argument, NULL, O_HELP},
};
#define OTHER_OPTS (sizeof other_opts / sizeof other_opts[0])

/* What parsing has seen so far, for the checks made at the end. */
struct seen {
    bool seed, time_port;
};

/* Seconds (decimals allowed) into *ms, at least 1 ms (apps/common's
 * opt_seconds): -1 to go on, else the exit status. */
static int opt_secs(const char *opt, const char *arg, unsigned *ms)
{
    if (opt_seconds(arg, false, DAY_MS, ms))
        return -1;
    return usage_error("%s %s: want seconds, more than 0 and at most %lu (decimals allowed)",
                       opt, arg, DAY_MS / 1000);
}

/* One option other than the numeric ones: -1 to go on, else the exit
 * status. */
static int parse_other(int ch, const char *opt, const char *arg, struct seen *seen)
{
    unsigned long v;
    switch (ch) {
    case O_HOST: cfg.host = arg; return -1;
    case O_TIME_PORT:
        if (!strcmp(arg, "off")) {
            cfg.time_off = true;
            return -1;
        }
        if (!opt_num(opt, arg, 0, 65535, " (0: a free port), or off", &v))
            return 2;
        cfg.time_port = (unsigned)v;
        cfg.time_off = false;
        seen->time_port = true;
        return -1;
    case O_UPSTREAM: cfg.upstream_arg = arg; return -1;
    case O_TIMEOUT: return opt_secs(opt, arg, &cfg.timeout_ms);
    case O_RACE_TO: return opt_secs(opt, arg, &cfg.race_timeout_ms);
    case O_WEBDIR: {
        char path[4200];
        snprintf(path, sizeof path, "%s/index.html", arg);
        if (strlen(arg) > 4000 || access(path, R_OK) != 0)
            return usage_error("%s %s: cannot read %s: %s", opt, arg, path,
                               strlen(arg) > 4000 ? "path too long" : strerror(errno));
        cfg.web_dir = arg;
        return -1;
    }
    case O_DELAY:
        if (!opt_num(opt, arg, 0, 600000, "", &v))
            return 2;
        cfg.delay_ms = (int)v;
        return -1;
    case O_SEED: {
        char *end;
        errno = 0;
        cfg.seed = strtoull(arg, &end, 0);
        if (errno || end == arg || *end)
            return usage_error("%s %s: want a number (decimal, or hex with 0x)", opt, arg);
        seen->seed = true;
        return -1;
    }
    case O_HALFCLOSE:
        if (!strcmp(arg, "finish") || !strcmp(arg, "abort")) {
            cfg.eof_finish = !strcmp(arg, "finish");
            return -1;
        }
        return usage_error("%s %s: want finish or abort", opt, arg);
    default:
        /* getopt_long has said what was wrong */
        fputs("Try 'eddy-demo --help'.\n", stderr);
        return 2;
    }
}

/* The checks of the whole command line, and what follows from it. */
static int parse_finish(const struct seen *seen)
{
    /* Asking for any free main port means: do not claim a fixed one. */
    if (cfg.port == 0 && !seen->time_port)
        cfg.time_port = 0;
    if (!cfg.time_off && cfg.port && cfg.port == cfg.time_port)
        return usage_error("--port and --time-port are both %u: the time service needs a "
                           "port of its own (0 picks a free one)", cfg.port);
    const char *up = cfg.upstream_arg;
    if (!up && cfg.time_off)
        return usage_error("--time-port off needs --upstream (without the time service the "
                           "fetching routes have nothing to fetch)");
    if (up && strcmp(up, "self") != 0) {
        char why[160];
        if (demo_upstream_parse(up, cfg.upstream, sizeof cfg.upstream, why, sizeof why) < 0)
            return usage_error("--upstream %s: %s", up, why);
    }
    if (!seen->seed)
        cfg.seed = (uint64_t)time(NULL) ^ ((uint64_t)getpid() << 32);
    return -1;
}

int demo_parse_args(int argc, char **argv)
{
    static struct option longopts[NUM_OPTS + OTHER_OPTS + 1];
    for (size_t i = 0; i < NUM_OPTS; i++)
        longopts[i] = (struct option){num_opts[i].name, required_argument, NULL,
                                      O_NUM + (int)i};
    memcpy(longopts + NUM_OPTS, other_opts, sizeof other_opts);
    struct seen seen = {0};
    int ch, idx = 0;
    while ((ch = getopt_long(argc, argv, "h", longopts, &idx)) != -1) {
        char opt[32] = ""; /* the option's full name, however it was spelt */
        if (ch >= O_HOST)
            snprintf(opt, sizeof opt, "--%s", longopts[idx].name);
        if (ch == O_HELP || ch == 'h') {
            usage_routes(stdout);
            usage_options(stdout);
            return 0;
        }
        int st = -1;
        if (ch >= O_NUM) {
            const struct num_opt *n = &num_opts[ch - O_NUM];
            unsigned long v;
            if (!opt_num(opt, optarg, n->min, n->max, n->note, &v))
                return 2;
            *n->field = (unsigned)v;
        } else {
            st = parse_other(ch, opt, optarg, &seen);
        }
        if (st >= 0)
            return st;
    }
    if (optind != argc)
        return usage_error("unexpected argument '%s'", argv[optind]);
    return parse_finish(&seen);
}
