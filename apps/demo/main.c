/*
 * eddy-demo's main: the command line, the listening sockets (bound before
 * any loop starts, so port 0 picks one port every loop then shares), the
 * upstream's URL, the group of loops (its callbacks are in threads.c), and
 * the ready line scripts and tests wait for.
 */
#include "demo.h"

#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* The host clients should dial to reach a server bound to cfg.host. */
static void dial_host(char *out, size_t n)
{
    const char *h = cfg.host;
    if (!strcmp(h, "0.0.0.0") || !strcmp(h, "::"))
        snprintf(out, n, "127.0.0.1");
    else if (strchr(h, ':'))
        snprintf(out, n, "[%s]", h);
    else
        snprintf(out, n, "%s", h);
}

/*
 * n listening sockets on *port (eddy_listen_tcp_n: with several, one
 * SO_REUSEPORT group that nobody else may join, so a second eddy-demo
 * cannot silently share the first one's traffic); port 0 becomes the
 * kernel's pick.  0, or -1 (said on stderr).
 */
static int listen_on(unsigned *port, unsigned n, int *fds, const char *what)
{
    int rc = eddy_listen_tcp_n(cfg.host, (uint16_t)*port, 1024, 0, n, fds);
    if (rc == 0 && *port == 0)
        rc = eddy_sock_port(fds[0]);
    if (rc < 0) {
        fprintf(stderr, "eddy-demo: listen on %s:%u (%s): %s%s\n", cfg.host, *port, what,
                eddy_strerror(rc),
                rc == -EADDRINUSE ? " (another eddy-demo?  --port 0 / --time-port 0 pick "
                                    "free ports)"
                                  : "");
        return -1;
    }
    if (rc > 0)
        *port = (unsigned)rc;
    return 0;
}

/* Every loop's listening socket, bound before any loop starts. */
static int open_listeners(void)
{
    int *fds = calloc(cfg.threads, sizeof *fds);
    if (!fds || listen_on(&cfg.port, cfg.threads, fds, "main") < 0)
        return -1;
    for (unsigned i = 0; i < cfg.threads; i++)
        demo_lc_at(i)->lfd = fds[i];
    free(fds);
    struct loopctx *t = demo_lc_at(cfg.threads);
    return t ? listen_on(&cfg.time_port, 1, &t->lfd, "time service") : 0;
}

/* "eddy-demo: port P time-port Q: serving ...; N loops; backend B", and
 * the same for the log (scripts and tests of the first demo read it). */
static void print_ready(const char *dial, struct eddy_group *g)
{
    char tsvc[350] = "off", tport[8] = "off";
    if (!cfg.time_off) {
        snprintf(tsvc, sizeof tsvc, "http://%s:%u/api/time", dial, cfg.time_port);
        snprintf(tport, sizeof tport, "%u", cfg.time_port);
    }
    printf("eddy-demo: port %u time-port %s: serving http://%s:%u/api/time /api/noblock "
           "/api/block /api/offload /api/coro /plaintext /plaintext-fiber /stats / /api/race "
           "/api/routes /api/stalls; time service %s; upstream %s; %u loop%s; backend %s\n",
           cfg.port, tport, dial, cfg.port, tsvc, cfg.upstream, cfg.threads,
           cfg.threads == 1 ? "" : "s", eddy_loop_backend(eddy_group_loop(g, 0)));
    fflush(stdout);
    fprintf(stderr, "eddy-demo: listening on %s:%u (time port %s)\n", cfg.host, cfg.port,
            tport);
}

int main(int argc, char **argv)
{
    int st = demo_parse_args(argc, argv);
    if (st >= 0)
        return st;
    clock_gettime(CLOCK_MONOTONIC, &cfg.started);
    signal(SIGPIPE, SIG_IGN);
    if (demo_threads_create() < 0 || open_listeners() < 0)
        return 1;

    char dial[300];
    dial_host(dial, sizeof dial);
    const char *up = cfg.upstream_arg;
    if (!up)
        snprintf(cfg.upstream, sizeof cfg.upstream, "http://%s:%u/api/time", dial, cfg.time_port);
    else if (!strcmp(up, "self"))
        snprintf(cfg.upstream, sizeof cfg.upstream, "http://%s:%u/api/time", dial, cfg.port);
    /* else demo_parse_args() has checked and completed it */
    snprintf(cfg.race_base, sizeof cfg.race_base, "http://%s:%u", dial, cfg.port);

    /* Every loop on a thread of its own, the signals read by one more. */
    struct eddy_group_options go;
    demo_threads_group_options(&go);
    demo_signals_block();
    struct eddy_group *g;
    int rc = eddy_group_start(&g, &go);
    if (rc < 0) {
        if (!demo_threads_setup_failed()) /* a loop could not be made (a setup says why itself) */
            fprintf(stderr, "eddy-demo: %s\n", eddy_loop_init_explain(rc));
        return 1;
    }
    if (demo_signals_start(g) < 0)
        return 1;
    print_ready(dial, g);
    /* No eddy_group_destroy(): the signal thread may use g until exit. */
    return demo_threads_status(eddy_group_join(g));
}
