/*
 * Interop: both clients against `python3 -m http.server` bound to
 * 127.0.0.1 (HTTP/1.0 answers, one per connection).  Skipped (exit 77)
 * when python3 is missing.
 */
#define _GNU_SOURCE
#include "testsupport.h"

#include "eddy/http_client.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

static pid_t py_pid;
static uint16_t py_port;
static char dir[] = "/tmp/eddy-client-py-XXXXXX";
static char url[256];

static const char *purl(const char *path)
{
    snprintf(url, sizeof url, "http://127.0.0.1:%u%s", (unsigned)py_port, path);
    return url;
}

static void write_file(const char *name, const char *data, size_t len)
{
    char p[512];
    snprintf(p, sizeof p, "%s/%s", dir, name);
    FILE *f = fopen(p, "wb");
    assert_non_null(f);
    assert_int_equal(fwrite(data, 1, len, f), len);
    fclose(f);
}

static int setup(void **state)
{
    (void)state;
    assert_non_null(mkdtemp(dir));
    write_file("hello.txt", "hello from python\n", 18);
    static char big[200000];
    for (size_t i = 0; i < sizeof big; i++)
        big[i] = (char)('A' + i % 26);
    write_file("big.bin", big, sizeof big);
    /* A free port: bound and released; python binds it a moment later. */
    int l = ts_listen(0, &py_port);
    close(l);
    char port[16];
    snprintf(port, sizeof port, "%u", (unsigned)py_port);
    py_pid = fork();
    assert_true(py_pid >= 0);
    if (py_pid == 0) {
        int null = open("/dev/null", O_RDWR);
        dup2(null, 1);
        dup2(null, 2);
        execlp("python3", "python3", "-m", "http.server", "--bind", "127.0.0.1", "--directory",
               dir, port, (char *)NULL);
        _exit(127);
    }
    /* Wait until it accepts. */
    int64_t end = ts_now_ms() + 10000;
    for (;;) {
        int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
        struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons(py_port),
                                .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
        int ok = connect(fd, (struct sockaddr *)&a, sizeof a) == 0;
        close(fd);
        if (ok)
            break;
        int st;
        if (waitpid(py_pid, &st, WNOHANG) == py_pid) {
            py_pid = 0;
            fail_msg("python3 -m http.server exited");
        }
        if (ts_now_ms() > end)
            fail_msg("python3 -m http.server does not accept");
        usleep(20000);
    }
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    if (py_pid > 0) {
        kill(py_pid, SIGTERM);
        int st;
        int64_t end = ts_now_ms() + 3000;
        while (waitpid(py_pid, &st, WNOHANG) == 0) {
            if (ts_now_ms() > end) {
                kill(py_pid, SIGKILL);
                waitpid(py_pid, &st, 0);
                break;
            }
            usleep(10000);
        }
    }
    char p[512];
    snprintf(p, sizeof p, "%s/hello.txt", dir);
    unlink(p);
    snprintf(p, sizeof p, "%s/big.bin", dir);
    unlink(p);
    rmdir(dir);
    return 0;
}

struct fres {
    volatile int calls;
    int err;
};

static void on_fetch(struct eddy_http_fetch *f, int err)
{
    struct fres *r = f->data;
    r->calls++;
    r->err = err;
}

static volatile int closed;
static void on_closed(struct eddy_http_client *cli, void *ud)
{
    (void)cli;
    (void)ud;
    closed++;
}

static void test_async(void **state)
{
    (void)state;
    struct eddy_loop *loop = ts_loop_new(NULL);
    struct eddy_http_client *cli;
    assert_int_equal(eddy_http_client_init(&cli, loop, NULL), 0);
    static const struct {
        const char *path;
        int status;
    } cases[] = {
        {"/hello.txt", 200}, {"/big.bin", 200}, {"/nope.txt", 404}, {"/hello.txt?a=b", 200},
        {"/", 200},
    };
    /* All at once: python closes each connection after its answer. */
    enum { N = sizeof cases / sizeof cases[0] };
    struct eddy_http_fetch f[N];
    struct fres r[N];
    char urls[N][256];
    memset(f, 0, sizeof f);
    memset(r, 0, sizeof r);
    for (int i = 0; i < N; i++) {
        snprintf(urls[i], sizeof urls[i], "%s", purl(cases[i].path));
        f[i].url = urls[i];
        f[i].data = &r[i];
        assert_int_equal(eddy_http_fetch_start(cli, &f[i], on_fetch), 0);
    }
    for (int i = 0; i < N; i++)
        ts_run_until(loop, &r[i].calls, 10000);
    for (int i = 0; i < N; i++) {
        assert_int_equal(r[i].calls, 1);
        assert_int_equal(r[i].err, 0);
        assert_int_equal(f[i].resp.status, cases[i].status);
        assert_int_equal(f[i].resp.version, 10);
    }
    assert_string_equal(f[0].resp.body, "hello from python\n");
    assert_int_equal(f[1].resp.body_len, 200000);
    assert_int_equal(f[1].resp.body[199999], 'A' + 199999 % 26);
    assert_string_equal(eddy_http_response_header(&f[1].resp, "content-length"), "200000");
    assert_non_null(strstr(f[4].resp.body, "hello.txt"));
    /* a second round: HTTP/1.0 answers close, so nothing was pooled */
    struct eddy_http_client_stats st;
    eddy_http_client_stats(cli, &st);
    assert_int_equal(st.idle, 0);
    struct eddy_http_pair a[] = {{"q", "x y"}};
    f[0].args = a;
    f[0].nargs = 1;
    memset(&r[0], 0, sizeof r[0]);
    assert_int_equal(eddy_http_fetch_start(cli, &f[0], on_fetch), 0);
    ts_run_until(loop, &r[0].calls, 10000);
    assert_int_equal(r[0].err, 0);
    assert_string_equal(f[0].resp.body, "hello from python\n");
    for (int i = 0; i < N; i++)
        eddy_http_fetch_release(&f[i]);
    closed = 0;
    assert_int_equal(eddy_http_client_close(cli, on_closed, NULL), 0);
    ts_run_until(loop, &closed, 5000);
    assert_int_equal(eddy_http_client_destroy(cli), 0);
    ts_loop_free(loop);
}

static void test_blocking(void **state)
{
    (void)state;
    struct eddy_http_response r;
    assert_int_equal(eddy_http_blocking_fetch(purl("/hello.txt"), NULL, NULL, 0, 5000, &r), 0);
    assert_int_equal(r.status, 200);
    assert_string_equal(r.body, "hello from python\n");
    eddy_http_response_free(&r);
    assert_int_equal(eddy_http_blocking_fetch(purl("/big.bin"), "HEAD", NULL, 0, 5000, &r), 0);
    assert_int_equal(r.status, 200);
    assert_int_equal(r.body_len, 0);
    assert_string_equal(eddy_http_response_header(&r, "Content-Length"), "200000");
    eddy_http_response_free(&r);
    /* python's http.server answers POST with 501 */
    struct eddy_http_pair a[] = {{"k", "v"}};
    assert_int_equal(eddy_http_blocking_fetch(purl("/"), "POST", a, 1, 5000, &r), 0);
    assert_int_equal(r.status, 501);
    eddy_http_response_free(&r);
}

int main(void)
{
    if (system("python3 -c 'import http.server' >/dev/null 2>&1") != 0) {
        fprintf(stderr, "python3 with http.server not found: skipped\n");
        return 77;
    }
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_async),
        cmocka_unit_test(test_blocking),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
