/*
 * Interop: curl and Python's http.client against the server.  Exits 77
 * (skipped) when curl is not installed; the Python part skips by itself
 * when python3 is missing.
 */
#include "http_util.h"

#include <signal.h>
#include <sys/wait.h>

static struct hsrv H;

static int have(const char *prog)
{
    char cmd[256];
    snprintf(cmd, sizeof cmd, "command -v %s >/dev/null 2>&1", prog);
    return system(cmd) == 0;
}

/* Runs cmd (with %d = the port) and returns its stdout. */
static char *run(const char *fmt)
{
    static char out[65536];
    char cmd[2048];
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wformat-nonliteral"
    snprintf(cmd, sizeof cmd, fmt, atomic_load(&H.port), atomic_load(&H.port));
#pragma GCC diagnostic pop
    FILE *f = popen(cmd, "r");
    assert_non_null(f);
    size_t n = fread(out, 1, sizeof out - 1, f);
    out[n] = 0;
    int st = pclose(f);
    if (!WIFEXITED(st) || WEXITSTATUS(st) != 0)
        fail_msg("'%s' failed (%d): %s", cmd, st, out);
    return out;
}

static unsigned long long accepted(void)
{
    char body[256];
    assert_int_equal(simple_get(atomic_load(&H.port), "/stats", body, sizeof body), 200);
    return strtoull(strstr(body, "accepted=") + 9, NULL, 10);
}

static int setup(void **state)
{
    (void)state;
    memset(&H, 0, sizeof H);
    H.o.host = "127.0.0.1";
    hsrv_start(&H);
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    hsrv_stop(&H);
    return 0;
}

#define CURL "curl -sS --max-time 10 "

static void test_curl(void **state)
{
    (void)state;
    assert_string_equal(run(CURL "http://127.0.0.1:%d/plaintext"), "Hello, World!");
    assert_string_equal(run(CURL "'http://127.0.0.1:%d/args?time=1.5&x=%%20y'"), "time=1.5|x= y");
    assert_string_equal(run(CURL "-o /dev/null -w '%%{http_code}' http://127.0.0.1:%d/nope"), "404");
    assert_string_equal(run(CURL "-o /dev/null -w '%%{http_code}' -X DELETE http://127.0.0.1:%d/plaintext"), "405");
    assert_string_equal(run(CURL "--data-binary 'a=1&b=2' http://127.0.0.1:%d/echo"), "a=1&b=2");
    assert_string_equal(run("printf 'streamed body' | " CURL "-H 'Transfer-Encoding: chunked' --data-binary @- http://127.0.0.1:%d/echo"),
                        "streamed body");
    assert_string_equal(run(CURL "--http1.0 http://127.0.0.1:%d/version"), "10");
    assert_string_equal(run(CURL "-H 'X-Test: curl!' http://127.0.0.1:%d/hdr"), "curl!");
    assert_string_equal(run(CURL "http://127.0.0.1:%d/stream?n=3"), "chunk 0\nchunk 1\nchunk 2\n");
    assert_string_equal(run(CURL "'http://127.0.0.1:%d/stream?n=2&async=1'"), "chunk 0\nchunk 1\n");
    char *h = run(CURL "-I http://127.0.0.1:%d/plaintext");
    assert_non_null(strstr(h, "HTTP/1.1 200 OK"));
    assert_non_null(strstr(h, "Content-Length: 13"));
    assert_non_null(strstr(h, "Date: "));
    /* A large body: curl sends Expect: 100-continue for it. */
    assert_string_equal(run("head -c 200000 /dev/zero | tr '\\\\0' 'z' | " CURL
                            "-H 'Expect: 100-continue' --data-binary @- http://127.0.0.1:%d/echo | wc -c"),
                        "200000\n");
    /* curl reuses one connection for several URLs */
    unsigned long long a0 = accepted();
    assert_string_equal(run(CURL "http://127.0.0.1:%d/plaintext http://127.0.0.1:%d/plaintext"),
                        "Hello, World!Hello, World!");
    assert_int_equal(accepted() - a0, 2); /* curl's one connection, and /stats */
}

static const char py[] =
    "import http.client, sys\n"
    "port = int(sys.argv[1])\n"
    "c = http.client.HTTPConnection('127.0.0.1', port, timeout=10)\n"
    "out = []\n"
    "def req(m, p, body=None, headers={}, chunked=False):\n"
    "    c.request(m, p, body=body, headers=headers, encode_chunked=chunked)\n"
    "    r = c.getresponse()\n"
    "    out.append('%d %s' % (r.status, r.read().decode()))\n"
    "req('GET', '/plaintext')\n"
    "req('GET', '/args?time=1.5&x=%20y')\n"
    "req('POST', '/echo', body=b'posted')\n"
    "req('POST', '/echo', body=iter([b'ab', b'cd']), headers={'Transfer-Encoding': 'chunked'}, chunked=True)\n"
    "req('HEAD', '/plaintext')\n"
    "req('GET', '/nope')\n"
    "req('GET', '/hdr', headers={'x-test': 'py'})\n"
    "req('GET', '/stream?n=2')\n"
    "req('GET', '/async?ms=20&id=3')\n"
    "print('|'.join(out))\n";

static void test_python(void **state)
{
    (void)state;
    if (!have("python3"))
        skip();
    char path[] = "/tmp/eddy_interop_XXXXXX";
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    assert_int_equal(write(fd, py, sizeof py - 1), (ssize_t)(sizeof py - 1));
    close(fd);
    unsigned long long a0 = accepted();
    char cmd[512];
    snprintf(cmd, sizeof cmd, "python3 %s %%d", path);
    char *out = run(cmd);
    unlink(path);
    assert_string_equal(out, "200 Hello, World!|200 time=1.5|x= y|200 posted|200 abcd|200 |"
                             "404 404 Not Found\n|200 py|200 chunk 0\nchunk 1\n|200 async 3\n");
    assert_int_equal(accepted() - a0, 2); /* http.client kept one connection */
}

int main(void)
{
    signal(SIGPIPE, SIG_IGN);
    if (!have("curl")) {
        fprintf(stderr, "curl not installed: skipped\n");
        return 77;
    }
    const struct CMUnitTest t[] = {
        cmocka_unit_test(test_curl),
        cmocka_unit_test(test_python),
    };
    return cmocka_run_group_tests(t, setup, teardown);
}
