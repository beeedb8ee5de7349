/*
 * Testing your own code under eddy's fault injector, against the installed
 * library (docs/testing-with-faults.md walks through it).
 *
 * The code under test is echo_start(): it receives one message on a
 * connection and sends it back, then closes.  Whatever the faults, it
 * must either echo every byte, in order, or close the connection; never
 * hang, never leak the descriptor.  The test drives it from a plain
 * blocking socket and runs it
 *   1. exhaustively: the 1st, 2nd ... Kth receive fails with ECONNRESET,
 *      until a run has no Kth receive left (every receive failed once);
 *   2. under 20 seeds of a mix: short receives and sends, late completions.
 * A failure prints the rules; `consumer_fault 'RULES'` replays that run.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <poll.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <eddy/eddy.h>
#include <eddy/fault.h>

/* ---- the code under test ------------------------------------------------ */

struct echo {
    struct eddy_op op;
    int fd;
    char buf[64];
    size_t len;
    int closed;
};

static void echo_sent(struct eddy_op *op, int res);

static void echo_close(struct echo *e)
{
    close(e->fd);
    e->closed = 1;
}

/* Receives until the message's '\n', then sends it all back. */
static void echo_recvd(struct eddy_op *op, int res)
{
    struct echo *e = eddy_container_of(op, struct echo, op);
    if (res <= 0) /* EOF or an error (the kernel's or an injected one) */
        return echo_close(e);
    e->len += (size_t)res;
    if (memchr(e->buf, '\n', e->len)) {
        if (eddy_send(op->loop, op, e->fd, e->buf, e->len, 0, echo_sent) < 0)
            echo_close(e);
    } else if (e->len == sizeof e->buf ||
               eddy_recv(op->loop, op, e->fd, e->buf + e->len, sizeof e->buf - e->len, 0,
                         echo_recvd) < 0) {
        echo_close(e);
    }
}

static void echo_sent(struct eddy_op *op, int res)
{
    (void)res; /* the whole message, or an error: either way, done */
    echo_close(eddy_container_of(op, struct echo, op));
}

static int echo_start(struct eddy_loop *loop, struct echo *e, int fd)
{
    memset(e, 0, sizeof *e);
    e->fd = fd;
    return eddy_recv(loop, &e->op, fd, e->buf, sizeof e->buf, 0, echo_recvd);
}

/* ---- the test ------------------------------------------------------------ */

static int64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* A connected loopback TCP pair: *cl the test's side, *sv the echo's. */
static int tcp_pair(int *cl, int *sv)
{
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t len = sizeof a;
    int l = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (l < 0 || bind(l, (struct sockaddr *)&a, sizeof a) || listen(l, 1) ||
        getsockname(l, (struct sockaddr *)&a, &len))
        return -1;
    *cl = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (*cl < 0 || connect(*cl, (struct sockaddr *)&a, sizeof a))
        return -1;
    *sv = accept4(l, NULL, NULL, SOCK_CLOEXEC);
    close(l);
    return *sv < 0 ? -1 : 0;
}

/* The loop's log hook: the "faults on: ..." line and one line per
 * injection are EDDY_LOG_INFO; a replay shows them, other runs keep quiet. */
static int verbose;

static void log_hook(void *ud, int level, const char *msg)
{
    (void)ud;
    if (verbose || level < EDDY_LOG_INFO)
        fprintf(stderr, "eddy: %s\n", msg);
}

/* One run under rules: 0 if every invariant held; *injected gets the
 * faults injected. */
static int run(const char *rules, unsigned long long *injected)
{
    static const char msg[] = "the quick brown fox jumps over the lazy dog\n";
    struct eddy_loop *loop;
    struct eddy_loop_options o;
    eddy_loop_options_init(&o);
    o.log = log_hook;
    int rc = eddy_loop_init(&loop, &o), cl, sv;
    if (rc < 0 || tcp_pair(&cl, &sv) < 0)
        return fprintf(stderr, "set-up: %s\n", eddy_strerror(rc)), -1;
    if ((rc = eddy_fault_set(loop, rules)) < 0)
        return fprintf(stderr, "eddy_fault_set: %s\n", eddy_strerror(rc)), -1;
    struct echo e;
    if (echo_start(loop, &e, sv) < 0)
        echo_close(&e); /* a starter may fail too (fail:E): then nothing runs */
    if (send(cl, msg, sizeof msg - 1, MSG_NOSIGNAL) != (ssize_t)sizeof msg - 1)
        return fprintf(stderr, "send failed\n"), -1;
    /* The loop and the reader in turn, each wait bounded: 2 s in all. */
    char got[128];
    size_t n = 0;
    int64_t deadline = now_ms() + 2000;
    for (;;) {
        if (eddy_loop_run(loop, EDDY_RUN_NOWAIT) < 0 || now_ms() > deadline)
            return fprintf(stderr, "hung (closed=%d, %zu bytes back)\n", e.closed, n), -1;
        struct pollfd p = {.fd = cl, .events = POLLIN};
        if (poll(&p, 1, 1) <= 0)
            continue;
        ssize_t r = recv(cl, got + n, sizeof got - n, 0);
        if (r <= 0 && e.closed)
            break; /* EOF or reset: the echo closed its side */
        if (r > 0)
            n += (size_t)r;
    }
    /* Every byte back, or the connection closed; never a wrong byte. */
    if (memcmp(got, msg, n < sizeof msg - 1 ? n : sizeof msg - 1) || n > sizeof msg - 1)
        return fprintf(stderr, "wrong bytes: '%.*s'\n", (int)n, got), -1;
    struct eddy_fault_stat st[4];
    unsigned nr = eddy_fault_stats(loop, st, 4);
    *injected = 0;
    for (unsigned i = 0; i < nr && i < 4; i++)
        *injected += st[i].injected;
    close(cl);
    eddy_fault_set(loop, NULL);
    /* Nothing active and nothing leaked: the loop closes cleanly. */
    if ((rc = eddy_loop_destroy(loop)) < 0)
        return fprintf(stderr, "eddy_loop_destroy: %s\n", eddy_strerror(rc)), -1;
    return 0;
}

static int fail(const char *rules)
{
    fprintf(stderr, "FAILED under \"%s\"; replay: consumer_fault '%s'\n", rules, rules);
    return 1;
}

int main(int argc, char **argv)
{
    unsigned long long injected, total = 0;
    verbose = argc > 1;
    if (argc > 1) /* a replay */
        return run(argv[1], &injected) < 0 ? fail(argv[1]) : (puts("OK"), 0);
    /* 1. Exhaustive: fail the Kth receive, K = 1, 2 ... until none is left. */
    for (unsigned k = 1;; k++) {
        char rules[64];
        snprintf(rules, sizeof rules, "seed=1;recv=ECONNRESET@nth:%u", k);
        if (run(rules, &injected) < 0)
            return fail(rules);
        total += injected;
        if (!injected)
            break;
    }
    /* 2. Seeded mixes: short transfers and late completions. */
    for (unsigned seed = 1; seed <= 20; seed++) {
        char rules[128];
        snprintf(rules, sizeof rules,
                 "seed=%u;recv=short:3@50%%;send=short:2@50%%;all=delay:1@10%%", seed);
        if (run(rules, &injected) < 0)
            return fail(rules);
        total += injected;
    }
    if (total == 0)
        return fprintf(stderr, "no fault was injected\n"), 1;
    puts("OK");
    return 0;
}
