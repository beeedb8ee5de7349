/*
 * libFuzzer target for the HTTP server's request path (tools/fuzz.sh).
 *
 * One server on one loop, in this thread, for the whole run.  Each input
 * is written into a fresh AF_UNIX socketpair whose other end the server
 * serves through eddy_http_server_adopt(); the client half-closes and
 * reads every answer until the server closes.  So each input goes through
 * the real receive path (buffer pool, llhttp, the server's own checks,
 * routing, pipelining, answers, closing), with no thread and no timing.
 *
 * Found as a crash: any sanitizer report, a server that does not close
 * the connection within 5 s of the client's EOF, a connection left open
 * afterwards, or an answer that does not start with "HTTP/1.1 ".
 */
#define _GNU_SOURCE
#include "eddy/http.h"

#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

static struct eddy_loop *loop;
static struct eddy_http_server *srv;

static void h_plain(struct eddy_http_req *req, void *ud)
{
    (void)ud;
    eddy_http_respond(req, 200, "text/plain", "Hello, World!", 13);
}

static void h_echo(struct eddy_http_req *req, void *ud)
{
    (void)ud;
    size_t n;
    const void *b = eddy_http_body(req, &n);
    eddy_http_set_header(req, "X-Echo", eddy_http_arg(req, "x", ""));
    eddy_http_respond(req, 200, "application/octet-stream", b, n);
}

static void h_hdr(struct eddy_http_req *req, void *ud)
{
    (void)ud;
    const char *name, *value;
    char out[512];
    size_t o = 0;
    for (unsigned i = 0; eddy_http_header_at(req, i, &name, &value) == 0 && o < 400; i++)
        o += (size_t)snprintf(out + o, sizeof out - o, "%.40s=%.40s;", name, value);
    eddy_http_respond(req, 200, "text/plain", out, o);
}

static void h_stream(struct eddy_http_req *req, void *ud)
{
    (void)ud;
    int n = atoi(eddy_http_arg(req, "n", "2")) & 7;
    eddy_http_stream_begin(req, 200, "text/plain");
    for (int i = 0; i < n; i++)
        eddy_http_stream_write(req, "chunk\n", 6);
    eddy_http_stream_end(req);
}

static int64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    struct eddy_http_options o;
    memset(&o, 0, sizeof o);
    o.host = "127.0.0.1";
    o.max_uri = 1024;     /* small limits, so the limit paths are reached */
    o.max_header = 4096;
    o.max_headers = 32;
    o.max_body = 4096;
    o.max_pipeline = 4;
    o.rbuf_size = 512;    /* requests spread over several receive buffers */
    if (eddy_loop_init(&loop, NULL) < 0 || eddy_http_server_init(&srv, loop, &o) < 0 ||
        eddy_http_route(srv, "GET", "/plaintext", EDDY_HTTP_EXACT, h_plain, NULL) < 0 ||
        eddy_http_route(srv, "POST", "/echo", EDDY_HTTP_EXACT, h_echo, NULL) < 0 ||
        eddy_http_route(srv, NULL, "/hdr", EDDY_HTTP_PREFIX, h_hdr, NULL) < 0 ||
        eddy_http_route(srv, "GET", "/stream", EDDY_HTTP_EXACT, h_stream, NULL) < 0 ||
        eddy_http_server_listen(srv) < 0) {
        fprintf(stderr, "fuzz_http: cannot start the server\n");
        abort();
    }
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    int sv[2];
    if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0, sv) < 0)
        abort();
    if (eddy_http_server_adopt(srv, sv[1]) < 0)
        abort();
    size_t off = 0;
    int wclosed = 0, eof = 0;
    char buf[65536];
    size_t got = 0;
    char first[9] = {0};
    int64_t end = now_ms() + 5000;
    while (!eof) {
        if (off < size) {
            ssize_t k = send(sv[0], data + off, size - off, MSG_NOSIGNAL);
            if (k > 0)
                off += (size_t)k;
            else if (k < 0 && errno != EAGAIN)
                off = size; /* the server closed: the rest does not matter */
        }
        if (off == size && !wclosed) {
            shutdown(sv[0], SHUT_WR);
            wclosed = 1;
        }
        eddy_loop_run(loop, wclosed ? EDDY_RUN_ONCE : EDDY_RUN_NOWAIT);
        for (;;) {
            ssize_t n = recv(sv[0], buf, sizeof buf, 0);
            if (n > 0) {
                if (got < 9)
                    memcpy(first + got, buf, (size_t)n < 9 - got ? (size_t)n : 9 - got);
                got += (size_t)n;
                continue;
            }
            if (n == 0 || (n < 0 && errno != EAGAIN))
                eof = 1;
            break;
        }
        if (now_ms() > end) {
            fprintf(stderr, "fuzz_http: the server kept the connection 5 s after EOF\n");
            abort();
        }
    }
    close(sv[0]);
    if (got && memcmp(first, "HTTP/1.1 ", got < 9 ? got : 9) != 0) {
        fprintf(stderr, "fuzz_http: an answer that is no HTTP/1.1 answer\n");
        abort();
    }
    /* the server's side closes asynchronously: let it */
    struct eddy_http_stats st;
    for (;;) {
        eddy_http_server_stats(srv, &st);
        if (st.conns == 0)
            break;
        if (now_ms() > end) {
            fprintf(stderr, "fuzz_http: a connection left open\n");
            abort();
        }
        eddy_loop_run(loop, EDDY_RUN_ONCE);
    }
    return 0;
}
