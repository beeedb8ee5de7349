/* The HTTP client's codec (proto/src/client_codec.c): URLs, url-encoding,
 * request bytes, and the response parser fed at every split offset. */
#define _GNU_SOURCE
#include "testsupport.h"
#include "client_codec.h"

#include <arpa/inet.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>

static void test_url_parse(void **state)
{
    (void)state;
    struct url u;
    assert_int_equal(url_parse("http://127.0.0.1:8080/a/b?x=1#frag", &u), 0);
    assert_string_equal(u.host, "127.0.0.1");
    assert_int_equal(u.port, 8080);
    assert_int_equal(u.target_len, 8);
    assert_memory_equal(u.target, "/a/b?x=1", 8);
    assert_int_equal(u.has_query, 1);
    assert_int_equal(u.addrlen, sizeof(struct sockaddr_in));
    assert_int_equal(ntohs(((struct sockaddr_in *)&u.addr)->sin_port), 8080);

    assert_int_equal(url_parse("HTTP://[::1]:99", &u), 0);
    assert_string_equal(u.host, "::1");
    assert_int_equal(u.port, 99);
    assert_int_equal(u.target_len, 0);
    assert_int_equal(u.addrlen, sizeof(struct sockaddr_in6));
    assert_int_equal(((struct sockaddr_in6 *)&u.addr)->sin6_family, AF_INET6);

    assert_int_equal(url_parse("http://localhost/x", &u), 0);
    assert_string_equal(u.host, "localhost");
    assert_int_equal(u.port, 80);
    assert_int_equal(u.addrlen, 0);
    assert_int_equal(u.has_query, 0);

    assert_int_equal(url_parse("http://h?q=1", &u), 0);
    assert_int_equal(u.has_query, 1);

    static const char *const bad[] = {
        "https://a/", "ftp://a", "http://", "http:///x", "http://a:0/", "http://a:65536/",
        "http://a:/x", "http://a:12x/", "http://u@a/", "http://[::1/", "http://[zz]/",
        "http://a/b c", "http://a/\x01", "http://a b/", "http://[::1]x/", NULL,
    };
    for (int i = 0; bad[i]; i++)
        assert_int_equal(url_parse(bad[i], &u), -EINVAL);
    assert_int_equal(url_parse(NULL, &u), -EINVAL);
}

static void test_urlencode(void **state)
{
    (void)state;
    char out[128];
    assert_int_equal(url_encode(out, "a b&c=d/é~._-"), 24);
    assert_string_equal(out, "a+b%26c%3Dd%2F%C3%A9~._-");
    assert_int_equal(url_encode(NULL, "a b&c=d/é~._-"), 24);
    struct eddy_http_pair a[] = {{"time", "1.5"}, {"x y", "a&b"}, {"e", ""}};
    assert_int_equal(form_encode(out, a, 3), strlen("time=1.5&x+y=a%26b&e="));
    assert_string_equal(out, "time=1.5&x+y=a%26b&e=");
    assert_int_equal(form_encode(out, a, 0), 0);
    assert_string_equal(out, "");
    assert_true(method_args_in_query(NULL));
    assert_true(method_args_in_query("HEAD"));
    assert_false(method_args_in_query("POST"));
    assert_true(method_idempotent("PUT"));
    assert_false(method_idempotent("POST"));
    assert_false(method_idempotent("PATCH"));
}

static char *build(const char *url, const char *method, const struct eddy_http_pair *args,
                   size_t nargs, const struct eddy_http_pair *hdrs, size_t nh, size_t raw,
                   int *rc)
{
    struct url u;
    assert_int_equal(url_parse(url, &u), 0);
    struct request_spec s = {.method = method, .url = &u, .args = args, .nargs = nargs,
                              .headers = hdrs, .nheaders = nh, .raw_body_len = raw};
    char *out = NULL;
    size_t len = 0;
    *rc = request_build(NULL, &s, &out, &len);
    if (*rc == 0)
        assert_int_equal(strlen(out), len);
    return out;
}

static void test_request(void **state)
{
    (void)state;
    int rc;
    struct eddy_http_pair a[] = {{"time", "1.5"}, {"x", "a b"}};
    char *r = build("http://127.0.0.1:8080/api?k=v", NULL, a, 2, NULL, 0, 0, &rc);
    assert_int_equal(rc, 0);
    assert_string_equal(r, "GET /api?k=v&time=1.5&x=a+b HTTP/1.1\r\nHost: 127.0.0.1:8080\r\n"
                           "User-Agent: eddy\r\n\r\n");
    free(r);
    r = build("http://[::1]/", "POST", a, 2, NULL, 0, 0, &rc);
    assert_string_equal(r, "POST / HTTP/1.1\r\nHost: [::1]\r\nUser-Agent: eddy\r\n"
                           "Content-Length: 14\r\n"
                           "Content-Type: application/x-www-form-urlencoded\r\n\r\n"
                           "time=1.5&x=a+b");
    free(r);
    struct eddy_http_pair h[] = {{"X-A", "1"}, {"User-Agent", "t"}};
    r = build("http://h:81?q", "PUT", NULL, 0, h, 2, 5, &rc);
    assert_string_equal(r, "PUT /?q HTTP/1.1\r\nHost: h:81\r\nContent-Length: 5\r\n"
                           "X-A: 1\r\nUser-Agent: t\r\n\r\n");
    free(r);
    r = build("http://h/", "DELETE", a, 1, NULL, 0, 0, &rc);
    assert_string_equal(r, "DELETE /?time=1.5 HTTP/1.1\r\nHost: h\r\nUser-Agent: eddy\r\n\r\n");
    free(r);
    /* misuse */
    struct eddy_http_pair crlf[] = {{"X", "a\r\nB: c"}};
    struct eddy_http_pair badname[] = {{"X Y", "a"}};
    assert_null(build("http://h/", NULL, NULL, 0, crlf, 1, 0, &rc));
    assert_int_equal(rc, -EINVAL);
    assert_null(build("http://h/", NULL, NULL, 0, badname, 1, 0, &rc));
    assert_int_equal(rc, -EINVAL);
    assert_null(build("http://h/", "GE T", NULL, 0, NULL, 0, 0, &rc));
    assert_int_equal(rc, -EINVAL);
    assert_null(build("http://h/", "POST", a, 1, NULL, 0, 3, &rc)); /* form and raw body */
    assert_int_equal(rc, -EINVAL);
}

/* The client owns the framing: a user Host or Content-Type replaces the
 * generated one, framing headers are refused, names must be tokens and
 * values must not break the line. */
static void test_request_headers(void **state)
{
    (void)state;
    int rc;
    struct eddy_http_pair host[] = {{"X-A", "1"}, {"host", "example.com"}};
    char *r = build("http://127.0.0.1:8080/", NULL, NULL, 0, host, 2, 0, &rc);
    assert_int_equal(rc, 0);
    assert_string_equal(r, "GET / HTTP/1.1\r\nhost: example.com\r\nUser-Agent: eddy\r\n"
                           "X-A: 1\r\n\r\n");
    free(r);
    struct eddy_http_pair form[] = {{"k", "v"}};
    struct eddy_http_pair ct[] = {{"Content-TYPE", "text/plain; charset=utf-8"}};
    r = build("http://h/", "POST", form, 1, ct, 1, 0, &rc);
    assert_int_equal(rc, 0);
    assert_string_equal(r, "POST / HTTP/1.1\r\nHost: h\r\nUser-Agent: eddy\r\n"
                           "Content-Length: 3\r\nContent-TYPE: text/plain; charset=utf-8\r\n"
                           "\r\nk=v");
    free(r);
    /* tabs and spaces inside a value, an empty value, every tchar in a name */
    struct eddy_http_pair ok[] = {{"!#$%&'*+-.^_`|~09AZaz", "a\tb c"}, {"X-E", ""}};
    r = build("http://h/", NULL, NULL, 0, ok, 2, 0, &rc);
    assert_int_equal(rc, 0);
    assert_non_null(strstr(r, "\r\n!#$%&'*+-.^_`|~09AZaz: a\tb c\r\nX-E: \r\n\r\n"));
    free(r);
    /* obs-text (bytes 0x80-0xff) in a value is sent as it is (RFC 9110 5.5);
     * names that only start like refused ones are ordinary */
    struct eddy_http_pair utf8[] = {{"X-Name", "caf\xc3\xa9"}, {"TEs", "1"}, {"Upgraded", "2"}};
    r = build("http://h/", NULL, NULL, 0, utf8, 3, 0, &rc);
    assert_int_equal(rc, 0);
    assert_string_equal(r, "GET / HTTP/1.1\r\nHost: h\r\nUser-Agent: eddy\r\n"
                           "X-Name: caf\xc3\xa9\r\nTEs: 1\r\nUpgraded: 2\r\n\r\n");
    free(r);

    static const struct eddy_http_pair refused[][2] = {
        {{"Content-Length", "3"}},
        {{"content-length", "0"}},
        {{"Transfer-Encoding", "chunked"}},
        {{"TRANSFER-ENCODING", "gzip"}},
        {{"Connection", "close"}},
        {{"connection", "keep-alive"}},
        {{"TE", "trailers"}},
        {{"te", "gzip"}},
        {{"Upgrade", "websocket"}},
        {{"UPGRADE", "h2c"}},
        {{"Host", "a"}, {"HOST", "b"}}, /* two Hosts */
        {{"", "a"}},
        {{"X Y", "a"}},
        {{"X:Y", "a"}},
        {{"X-A:", "a"}},
        {{"X\r\nY", "a"}},
        {{"X(", "a"}},
        {{"X\xc3\xa4", "a"}},
        {{"X\x7f", "a"}},
        {{NULL, "a"}},
        {{"X", NULL}},
        {{"X", "a\rb"}},
        {{"X", "a\nb"}},
        {{"X", "a\r\n"}},
        {{"X", "a\r\nContent-Length: 9"}},
        {{"X", "\x01"}},
        {{"X", "a\x7f"}},
    };
    for (size_t i = 0; i < sizeof refused / sizeof refused[0]; i++) {
        size_t n = refused[i][1].name ? 2 : 1;
        r = build("http://h/", "PUT", NULL, 0, refused[i], n, 5, &rc);
        if (rc != -EINVAL)
            fail_msg("case %zu (%s): %d", i, refused[i][0].name ? refused[i][0].name : "NULL",
                     rc);
        assert_null(r);
    }
}

/* Feeds msg split at off; returns the parser's final verdict. */
static int feed_split(const char *msg, size_t len, size_t off, struct eddy_http_response *r,
                      size_t max, int head, int eof, size_t *used_total)
{
    struct resp_parser rp;
    resp_begin(&rp, r, max, head);
    size_t used = 0;
    *used_total = 0;
    int rc = resp_feed(&rp, msg, off, &used);
    *used_total += used;
    if (rc == 0 && len > off) {
        rc = resp_feed(&rp, msg + off, len - off, &used);
        *used_total += used;
    }
    if (rc == 0 && eof)
        rc = resp_eof(&rp);
    return rc;
}

static void check_split_all(const char *msg, int head, int eof, int want_status,
                            const char *want_body, const char *hname, const char *hval,
                            int keepalive_extra)
{
    size_t len = strlen(msg);
    for (size_t off = 0; off <= len; off++) {
        struct eddy_http_response r;
        memset(&r, 0, sizeof r);
        size_t used;
        int rc = feed_split(msg, len, off, &r, 1 << 20, head, eof, &used);
        assert_int_equal(rc, 1);
        assert_int_equal(r.status, want_status);
        assert_int_equal(r.body_len, strlen(want_body));
        if (r.body_len)
            assert_memory_equal(r.body, want_body, r.body_len);
        if (hname)
            assert_string_equal(eddy_http_response_header(&r, hname), hval);
        if (!eof)
            assert_int_equal(used, len - (size_t)keepalive_extra);
        eddy_http_response_free(&r);
    }
}

static void test_response_parser(void **state)
{
    (void)state;
    check_split_all("HTTP/1.1 200 OK\r\nContent-Length: 5\r\nX-A: b c\r\n\r\nhello", 0, 0, 200,
                    "hello", "x-a", "b c", 0);
    check_split_all("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
                    "3\r\nabc\r\n2;ext=1\r\nde\r\n0\r\nT: 1\r\n\r\n",
                    0, 0, 200, "abcde", "Transfer-Encoding", "chunked", 0);
    check_split_all("HTTP/1.0 200 OK\r\nServer: x\r\n\r\nuntil close", 0, 1, 200,
                    "until close", "server", "x", 0);
    check_split_all("HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 201 Created\r\nContent-Length: 2\r\n\r\nok",
                    0, 0, 201, "ok", NULL, NULL, 0);
    check_split_all("HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n", 1, 0, 200, "", NULL, NULL, 0);
    check_split_all("HTTP/1.1 204 No Content\r\n\r\n", 0, 0, 204, "", NULL, NULL, 0);
    /* 1xx, 204 and 304 never have a body, whatever their headers say (RFC
     * 9112 6.3), and what follows them is the next response */
    check_split_all("HTTP/1.1 304 Not Modified\r\nContent-Length: 50\r\nETag: \"v1\"\r\n\r\n",
                    0, 0, 304, "", "content-length", "50", 0);
    check_split_all("HTTP/1.1 204 No Content\r\nContent-Length: 7\r\n\r\n", 0, 0, 204, "",
                    "content-length", "7", 0);
    check_split_all("HTTP/1.1 304 Not Modified\r\nTransfer-Encoding: chunked\r\n\r\n", 0, 0, 304,
                    "", NULL, NULL, 0);
    check_split_all("HTTP/1.1 304 Not Modified\r\nContent-Length: 50\r\n\r\n"
                    "HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\nx",
                    0, 0, 304, "", NULL, NULL, 39);
    check_split_all("HTTP/1.1 100 Continue\r\nContent-Length: 3\r\n\r\n"
                    "HTTP/1.1 103 Early Hints\r\nLink: </a.css>; rel=preload\r\n\r\n"
                    "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok",
                    0, 0, 200, "ok", "content-length", "2", 0);
    check_split_all("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n", 1, 0, 200, "", NULL,
                    NULL, 0);
    /* trailing bytes after a complete response are left unused */
    check_split_all("HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\naXYZ", 0, 0, 200, "a", NULL,
                    NULL, 3);

    /* header order, empty values, keep-alive verdicts */
    struct eddy_http_response r;
    memset(&r, 0, sizeof r);
    struct resp_parser rp;
    const char *m = "HTTP/1.1 200 OK\r\nA: 1\r\nB:\r\nC: 3\r\nContent-Length: 0\r\n\r\n";
    size_t used;
    resp_begin(&rp, &r, 1 << 20, 0);
    assert_int_equal(resp_feed(&rp, m, strlen(m), &used), 1);
    assert_int_equal(rp.keepalive, 1);
    assert_int_equal(r.version, 11);
    const char *n, *v;
    assert_int_equal(eddy_http_response_header_at(&r, 1, &n, &v), 0);
    assert_string_equal(n, "B");
    assert_string_equal(v, "");
    assert_int_equal(eddy_http_response_header_at(&r, 2, &n, &v), 0);
    assert_string_equal(v, "3");
    assert_int_equal(eddy_http_response_header_at(&r, 4, &n, &v), -ENOENT);
    assert_null(eddy_http_response_header(&r, "D"));
    /* an interim response's headers are not the answer's; a 304 with a
     * Content-Length leaves the connection reusable */
    m = "HTTP/1.1 103 Early Hints\r\nLink: </a.css>\r\n\r\n"
        "HTTP/1.1 304 Not Modified\r\nContent-Length: 50\r\n\r\n";
    resp_begin(&rp, &r, 1 << 20, 0);
    assert_int_equal(resp_feed(&rp, m, strlen(m), &used), 1);
    assert_int_equal(used, strlen(m));
    assert_int_equal(rp.keepalive, 1);
    assert_int_equal(r.status, 304);
    assert_null(eddy_http_response_header(&r, "link"));
    assert_int_equal(eddy_http_response_header_at(&r, 0, &n, &v), 0);
    assert_string_equal(n, "Content-Length");
    assert_int_equal(eddy_http_response_header_at(&r, 1, &n, &v), -ENOENT);
    m = "HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 0\r\n\r\n";
    resp_begin(&rp, &r, 1 << 20, 0);
    assert_int_equal(resp_feed(&rp, m, strlen(m), &used), 1);
    assert_int_equal(rp.keepalive, 0);
    eddy_http_response_free(&r);
    eddy_http_response_free(&r); /* idempotent */

    /* errors */
    static const char *const bad[] = {
        "HTTP/1.1 abc\r\n\r\n", "XTTP/1.1 200 OK\r\n\r\n",
        "HTTP/1.1 200 OK\r\nContent-Length: 1x\r\n\r\n",
        "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n", NULL,
    };
    for (int i = 0; bad[i]; i++) {
        assert_int_equal(feed_split(bad[i], strlen(bad[i]), 0, &r, 1 << 20, 0, 0, &used), -EPROTO);
        eddy_http_response_free(&r);
    }
    m = "HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc";
    assert_int_equal(feed_split(m, strlen(m), 5, &r, 1 << 20, 0, 1, &used), -ECONNRESET);
    eddy_http_response_free(&r);
    assert_int_equal(feed_split("", 0, 0, &r, 1 << 20, 0, 1, &used), -ECONNRESET);
    /* the limit: exactly max passes, one byte less does not */
    m = "HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello";
    assert_int_equal(feed_split(m, strlen(m), 7, &r, strlen(m), 0, 0, &used), 1);
    eddy_http_response_free(&r);
    assert_int_equal(feed_split(m, strlen(m), 7, &r, strlen(m) - 1, 0, 0, &used), -EMSGSIZE);
    eddy_http_response_free(&r);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_url_parse),
        cmocka_unit_test(test_urlencode),
        cmocka_unit_test(test_request),
        cmocka_unit_test(test_request_headers),
        cmocka_unit_test(test_response_parser),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
