/*
 * eddy-demo: the demo server.  GET /plaintext answers "Hello, World!".
 *
 *   eddy-demo [--port P] [--time-port Q] [--host H]
 *
 * --time-port is where /api/time will be served (default 2346); the
 * endpoints that use it come with the HTTP client.
 */
#include "eddy/eddy.h"
#include "eddy/http.h"

#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void plaintext(struct eddy_http_req *req, void *ud)
{
    (void)ud;
    eddy_http_respond(req, 200, "text/plain", "Hello, World!", 13);
}

struct app {
    struct eddy_loop *loop;
    struct eddy_http_server *srv;
    struct eddy_op sig_int, sig_term;
    int stopping;
};

static void on_done(struct eddy_http_server *srv, void *ud)
{
    (void)srv;
    struct app *a = ud;
    eddy_cancel(a->loop, &a->sig_int);
    eddy_cancel(a->loop, &a->sig_term);
}

static void on_signal(struct eddy_op *op, int res)
{
    struct app *a = op->data;
    if (!(op->flags & EDDY_OP_MORE) || a->stopping)
        return;
    a->stopping = 1;
    fprintf(stderr, "eddy-demo: signal %d, draining\n", res);
    eddy_http_server_shutdown(a->srv, 5000, on_done, a);
}

static void usage(void)
{
    fprintf(stderr, "usage: eddy-demo [--port P] [--time-port Q] [--host H]\n");
    exit(2);
}

int main(int argc, char **argv)
{
    unsigned port = 2345, time_port = 2346;
    const char *host = "0.0.0.0";
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--port") && i + 1 < argc)
            port = (unsigned)strtoul(argv[++i], NULL, 10);
        else if (!strcmp(argv[i], "--time-port") && i + 1 < argc)
            time_port = (unsigned)strtoul(argv[++i], NULL, 10);
        else if (!strcmp(argv[i], "--host") && i + 1 < argc)
            host = argv[++i];
        else
            usage();
    }
    if (port > 65535 || time_port > 65535)
        usage();
    struct app a;
    memset(&a, 0, sizeof a);
    int rc = eddy_loop_init(&a.loop, NULL);
    if (rc < 0) {
        fprintf(stderr, "eddy-demo: %s\n", eddy_loop_init_explain(rc));
        return 1;
    }
    struct eddy_http_options o;
    memset(&o, 0, sizeof o);
    o.host = host;
    o.port = (uint16_t)port;
    if ((rc = eddy_http_server_init(&a.srv, a.loop, &o)) < 0 ||
        (rc = eddy_http_route(a.srv, "GET", "/plaintext", EDDY_HTTP_EXACT, plaintext, NULL)) < 0 ||
        (rc = eddy_http_server_listen(a.srv)) < 0) {
        fprintf(stderr, "eddy-demo: listen on %s:%u: %s\n", host, port, eddy_strerror(rc));
        return 1;
    }
    a.sig_int.data = a.sig_term.data = &a;
    eddy_signal(a.loop, &a.sig_int, SIGINT, on_signal);
    eddy_signal(a.loop, &a.sig_term, SIGTERM, on_signal);
    fprintf(stderr, "eddy-demo: listening on %s:%d (time port %u)\n", host,
            eddy_http_server_port(a.srv), time_port);
    rc = eddy_loop_run(a.loop, EDDY_RUN_DEFAULT);
    if (rc < 0)
        fprintf(stderr, "eddy-demo: loop: %s\n", eddy_strerror(rc));
    eddy_http_server_destroy(a.srv);
    eddy_loop_destroy(a.loop);
    return rc < 0 ? 1 : 0;
}
