/* Links the installed HTTP layer: a server on a loopback port, answered by
 * the installed async client, then a graceful shutdown. */
#include <stdio.h>

#include <eddy/http.h>
#include <eddy/http_client.h>

static int status = -1, done;

static void hello(struct eddy_http_req *req, void *ud)
{
    (void)ud;
    eddy_http_respond(req, 200, "text/plain", "hi", 2);
}

static void on_shutdown(struct eddy_http_server *srv, void *ud)
{
    (void)srv;
    (void)ud;
    done = 1;
}

static struct eddy_http_server *srv;
static struct eddy_http_client *cli;

static void on_closed(struct eddy_http_client *c, void *ud)
{
    (void)c;
    (void)ud;
}

static void on_fetch(struct eddy_http_fetch *f, int err)
{
    status = err < 0 ? err : f->resp.status;
    eddy_http_fetch_release(f);
    eddy_http_client_close(cli, on_closed, NULL);
    eddy_http_server_shutdown(srv, 1000, on_shutdown, NULL);
}

int main(void)
{
    struct eddy_loop *loop;
    if (eddy_loop_init(&loop, NULL) < 0)
        return 1;
    struct eddy_http_options o = {.host = "127.0.0.1"};
    if (eddy_http_server_init(&srv, loop, &o) < 0 ||
        eddy_http_route(srv, "GET", "/hi", EDDY_HTTP_EXACT, hello, NULL) < 0 ||
        eddy_http_server_listen(srv) < 0)
        return 1;
    if (eddy_http_client_init(&cli, loop, NULL) < 0)
        return 1;
    char url[64];
    snprintf(url, sizeof url, "http://127.0.0.1:%d/hi", eddy_http_server_port(srv));
    struct eddy_http_fetch f = {.url = url};
    if (eddy_http_fetch_start(cli, &f, on_fetch) < 0)
        return 1;
    eddy_loop_run(loop, EDDY_RUN_DEFAULT);
    if (status != 200 || !done || eddy_http_server_destroy(srv) < 0 ||
        eddy_http_client_destroy(cli) < 0 || eddy_loop_destroy(loop) < 0) {
        fprintf(stderr, "status=%d done=%d\n", status, done);
        return 1;
    }
    puts("OK");
    return 0;
}
