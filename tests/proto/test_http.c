/*
 * The HTTP/1.1 server against live loopback clients: a table of request
 * shapes (valid ones, limits, smuggling shapes) with their statuses, the
 * same table split at every byte and at random points, pipelining, keep-
 * alive, HTTP/1.0, async answers and aborts, streaming, shutdown.
 */
#include "http_util.h"

#include <signal.h>
#include <sys/resource.h>

#define S(x) x, sizeof(x) - 1

struct tcase {
    const char *name;
    const char *req;
    size_t len;
    int status;
    int closes;        /* the server closes after the answer */
    const char *body;  /* expected body, or NULL */
};

static char long_uri[1400], big_hdr[5000], many_hdrs[2000], big_body_req[600], big_chunk_req[5200];

static void make_big_cases(void)
{
    int n = snprintf(long_uri, sizeof long_uri, "GET /");
    while (n < 1300)
        long_uri[n++] = 'a';
    snprintf(long_uri + n, sizeof long_uri - (size_t)n, " HTTP/1.1\r\nHost: t\r\n\r\n");

    n = snprintf(big_hdr, sizeof big_hdr, "GET /plaintext HTTP/1.1\r\nHost: t\r\nX-Big: ");
    while (n < 4600)
        big_hdr[n++] = 'b';
    snprintf(big_hdr + n, sizeof big_hdr - (size_t)n, "\r\n\r\n");

    n = snprintf(many_hdrs, sizeof many_hdrs, "GET /plaintext HTTP/1.1\r\nHost: t\r\n");
    for (int i = 0; i < 70; i++)
        n += snprintf(many_hdrs + n, sizeof many_hdrs - (size_t)n, "X-%d: v\r\n", i);
    snprintf(many_hdrs + n, sizeof many_hdrs - (size_t)n, "\r\n");

    snprintf(big_body_req, sizeof big_body_req,
             "POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 5000\r\n\r\nxxxx");

    n = snprintf(big_chunk_req, sizeof big_chunk_req,
                 "POST /echo HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n1388\r\n");
    while (n < 5000 + 80 && n < (int)sizeof big_chunk_req - 16)
        big_chunk_req[n++] = 'c';
    snprintf(big_chunk_req + n, sizeof big_chunk_req - (size_t)n, "\r\n0\r\n\r\n");
}

#define DYN(name, buf, st) {name, buf, 0, st, 1, NULL}

static struct tcase cases[] = {
    /* ---- valid shapes ---- */
    {"get", S("GET /plaintext HTTP/1.1\r\nHost: t\r\n\r\n"), 200, 0, "Hello, World!"},
    {"get 1.0", S("GET /plaintext HTTP/1.0\r\n\r\n"), 200, 1, "Hello, World!"},
    {"get 1.0 keep-alive", S("GET /plaintext HTTP/1.0\r\nConnection: keep-alive\r\n\r\n"), 200, 0, "Hello, World!"},
    {"head", S("HEAD /plaintext HTTP/1.1\r\nHost: t\r\n\r\n"), 200, 0, NULL},
    {"not found", S("GET /nope HTTP/1.1\r\nHost: t\r\n\r\n"), 404, 0, NULL},
    {"post on get route", S("POST /plaintext HTTP/1.1\r\nHost: t\r\nContent-Length: 0\r\n\r\n"), 405, 0, NULL},
    {"delete on get route", S("DELETE /plaintext HTTP/1.1\r\nHost: t\r\n\r\n"), 405, 0, NULL},
    {"post content-length", S("POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\n\r\nhello"), 200, 0, "hello"},
    {"put content-length", S("PUT /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 3\r\n\r\nabc"), 200, 0, "abc"},
    {"post chunked", S("POST /echo HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n"), 200, 0, "hello world"},
    {"post chunked ext", S("POST /echo HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n3;x=y\r\nabc\r\n0\r\n\r\n"), 200, 0, "abc"},
    {"post chunked trailer", S("POST /echo HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\nX-T: 1\r\n\r\n"), 200, 0, "abc"},
    {"post chunked upper", S("POST /echo HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: Chunked\r\n\r\n2\r\nab\r\n0\r\n\r\n"), 200, 0, "ab"},
    {"post chunked hex", S("POST /echo HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\nA\r\n0123456789\r\n0\r\n\r\n"), 200, 0, "0123456789"},
    {"post empty", S("POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 0\r\n\r\n"), 200, 0, ""},
    {"args", S("GET /args?time=1.5&x=%20y HTTP/1.1\r\nHost: t\r\n\r\n"), 200, 0, "time=1.5|x= y"},
    {"args plus", S("GET /args?x=a+b&time=%41%42 HTTP/1.1\r\nHost: t\r\n\r\n"), 200, 0, "time=AB|x=a b"},
    {"args missing", S("GET /args?y=1 HTTP/1.1\r\nHost: t\r\n\r\n"), 200, 0, "time=none|x=none"},
    {"args first wins", S("GET /args?x=1&x=2&time= HTTP/1.1\r\nHost: t\r\n\r\n"), 200, 0, "time=|x=1"},
    {"args bad escape", S("GET /args?x=%zz%4 HTTP/1.1\r\nHost: t\r\n\r\n"), 200, 0, "time=none|x=%zz%4"},
    /* eddy_http_method, eddy_http_path and eddy_http_query: the query raw
     * (not decoded), "" when there is none or it is empty */
    {"reqline get", S("GET /reqline?a=1&b=%20+c HTTP/1.1\r\nHost: t\r\n\r\n"), 200, 0, "GET /reqline ?a=1&b=%20+c"},
    {"reqline no query", S("POST /reqline HTTP/1.1\r\nHost: t\r\nContent-Length: 0\r\n\r\n"), 200, 0, "POST /reqline ?"},
    {"reqline empty query", S("DELETE /reqline? HTTP/1.1\r\nHost: t\r\n\r\n"), 200, 0, "DELETE /reqline ?"},
    {"reqline other method", S("M-SEARCH /reqline?q HTTP/1.1\r\nHost: t\r\n\r\n"), 200, 0, "M-SEARCH /reqline ?q"},
    {"reqline absolute form", S("PATCH http://t/reqline?x=y HTTP/1.1\r\nHost: t\r\nContent-Length: 0\r\n\r\n"), 200, 0, "PATCH /reqline ?x=y"},
    {"header", S("GET /hdr HTTP/1.1\r\nHost: t\r\nX-Test: hello\r\n\r\n"), 200, 0, "hello"},
    {"header case", S("GET /hdr HTTP/1.1\r\nhost: t\r\nx-TEST: Mixed\r\n\r\n"), 200, 0, "Mixed"},
    {"header ows", S("GET /hdr HTTP/1.1\r\nHost: t\r\nX-Test: \t spaced \t\r\n\r\n"), 200, 0, "spaced"},
    {"header empty", S("GET /hdr HTTP/1.1\r\nHost: t\r\nX-Test:\r\n\r\n"), 200, 0, ""},
    {"header absent", S("GET /hdr HTTP/1.1\r\nHost: t\r\n\r\n"), 200, 0, "(none)"},
    {"prefix", S("GET /pre/a/b HTTP/1.1\r\nHost: t\r\n\r\n"), 200, 0, "prefix:/pre/a/b"},
    {"prefix root", S("GET /pre/ HTTP/1.1\r\nHost: t\r\n\r\n"), 200, 0, "prefix:/pre/"},
    {"prefix miss", S("GET /pre HTTP/1.1\r\nHost: t\r\n\r\n"), 404, 0, NULL},
    {"prefix wrong method", S("DELETE /pre/x HTTP/1.1\r\nHost: t\r\n\r\n"), 405, 0, NULL},
    {"prefix any method", S("PATCH /any/x HTTP/1.1\r\nHost: t\r\n\r\n"), 200, 0, "prefix:/any/x"},
    {"absolute form", S("GET http://t/plaintext HTTP/1.1\r\nHost: t\r\n\r\n"), 200, 0, "Hello, World!"},
    {"options star", S("OPTIONS * HTTP/1.1\r\nHost: t\r\n\r\n"), 404, 0, NULL},
    {"connection close", S("GET /plaintext HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n"), 200, 1, "Hello, World!"},
    {"keep-alive header", S("GET /plaintext HTTP/1.1\r\nHost: t\r\nConnection: keep-alive\r\n\r\n"), 200, 0, NULL},
    {"get with body", S("GET /plaintext HTTP/1.1\r\nHost: t\r\nContent-Length: 3\r\n\r\nabc"), 200, 0, "Hello, World!"},
    {"version 1.0", S("GET /version HTTP/1.0\r\n\r\n"), 200, 1, "10"},
    {"version 1.1", S("GET /version HTTP/1.1\r\nHost: t\r\n\r\n"), 200, 0, "11"},
    {"async", S("GET /async?ms=5&id=7 HTTP/1.1\r\nHost: t\r\n\r\n"), 200, 0, "async 7"},
    {"peer", S("GET /peer HTTP/1.1\r\nHost: t\r\n\r\n"), 200, 0, "127.0.0.1"},
    {"stream", S("GET /stream?n=2 HTTP/1.1\r\nHost: t\r\n\r\n"), 200, 0, "chunk 0\nchunk 1\n"},
    {"upgrade", S("GET /plaintext HTTP/1.1\r\nHost: t\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n"), 200, 1, "Hello, World!"},
    {"stream 1.0", S("GET /stream?n=2 HTTP/1.0\r\n\r\n"), 200, 1, "chunk 0\nchunk 1\n"},
    /* RFC 9110 6.2: a higher minor version of HTTP/1 is handled as 1.1 */
    {"http 1.2", S("GET /plaintext HTTP/1.2\r\nHost: t\r\n\r\n"), 200, 0, "Hello, World!"},
    {"version 1.2 is 1.1", S("GET /version HTTP/1.2\r\nHost: t\r\n\r\n"), 200, 0, "11"},
    {"version 1.9 is 1.1", S("GET /version HTTP/1.9\r\nHost: t\r\n\r\n"), 200, 0, "11"},
    {"http 1.2 needs host", S("GET /plaintext HTTP/1.2\r\n\r\n"), 400, 1, NULL},
    {"http 1.2 close", S("GET /plaintext HTTP/1.2\r\nHost: t\r\nConnection: close\r\n\r\n"), 200, 1, "Hello, World!"},
    /* close wins in any Connection list, in any case, with any OWS */
    {"1.0 keep-alive close", S("GET /plaintext HTTP/1.0\r\nConnection: keep-alive, close\r\n\r\n"), 200, 1, "Hello, World!"},
    {"1.0 close keep-alive", S("GET /plaintext HTTP/1.0\r\nConnection: close, keep-alive\r\n\r\n"), 200, 1, "Hello, World!"},
    {"1.0 keep-alive close odd ows", S("GET /plaintext HTTP/1.0\r\nConnection: Keep-Alive ,CLOSE\r\n\r\n"), 200, 1, "Hello, World!"},
    {"1.0 keep-alive close tabs", S("GET /plaintext HTTP/1.0\r\nConnection:\tkeep-alive\t,\tClose\t\r\n\r\n"), 200, 1, "Hello, World!"},
    {"1.0 keep-alive then close field", S("GET /plaintext HTTP/1.0\r\nConnection: keep-alive\r\nConnection: close\r\n\r\n"), 200, 1, "Hello, World!"},
    {"1.0 keep-alive upper", S("GET /plaintext HTTP/1.0\r\nConnection: KEEP-ALIVE\r\n\r\n"), 200, 0, "Hello, World!"},
    {"1.0 keep-alive other token", S("GET /plaintext HTTP/1.0\r\nConnection: keep-alive, closed\r\n\r\n"), 200, 0, "Hello, World!"},
    {"1.1 keep-alive close odd ows", S("GET /plaintext HTTP/1.1\r\nHost: t\r\nConnection: Keep-Alive ,CLOSE\r\n\r\n"), 200, 1, "Hello, World!"},
    {"1.1 close token lookalike", S("GET /plaintext HTTP/1.1\r\nHost: t\r\nConnection: xclose, closex\r\n\r\n"), 200, 0, "Hello, World!"},
    /* a route for one method beats an any-method route on the same path */
    {"method route first", S("GET /prec HTTP/1.1\r\nHost: t\r\n\r\n"), 200, 0, "Hello, World!"},
    {"any-method route after", S("POST /prec HTTP/1.1\r\nHost: t\r\nContent-Length: 0\r\n\r\n"), 200, 0, "prefix:/prec"},
    /* ---- malformed and smuggling shapes: 400 and close ---- */
    {"no host 1.1", S("GET /plaintext HTTP/1.1\r\n\r\n"), 400, 1, NULL},
    {"two hosts", S("GET /plaintext HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n"), 400, 1, NULL},
    {"cl and te", S("POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"), 400, 1, NULL},
    {"te and cl", S("POST /echo HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n0\r\n\r\n"), 400, 1, NULL},
    {"dup cl same", S("POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 3\r\nContent-Length: 3\r\n\r\nabc"), 400, 1, NULL},
    {"dup cl differ", S("POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\nabcd"), 400, 1, NULL},
    {"cl list", S("POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 3, 3\r\n\r\nabc"), 400, 1, NULL},
    {"cl negative", S("POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: -1\r\n\r\n"), 400, 1, NULL},
    {"cl plus", S("POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: +3\r\n\r\nabc"), 400, 1, NULL},
    {"cl junk", S("POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 3x\r\n\r\nabc"), 400, 1, NULL},
    {"chunk size junk", S("POST /echo HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nab\r\n0\r\n\r\n"), 400, 1, NULL},
    {"chunk size overflow", S("POST /echo HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\nfffffffffffffffff\r\nab\r\n0\r\n\r\n"), 400, 1, NULL},
    {"chunk size space", S("POST /echo HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n3 \r\nabc\r\n0\r\n\r\n"), 400, 1, NULL},
    {"chunk size negative", S("POST /echo HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n-3\r\nabc\r\n0\r\n\r\n"), 400, 1, NULL},
    {"chunk no crlf", S("POST /echo HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabcX\r\n0\r\n\r\n"), 400, 1, NULL},
    {"chunk bare lf", S("POST /echo HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n3\nabc\r\n0\r\n\r\n"), 400, 1, NULL},
    {"obs-fold", S("GET /hdr HTTP/1.1\r\nHost: t\r\nX-Test: a\r\n b\r\n\r\n"), 400, 1, NULL},
    {"obs-fold tab", S("GET /hdr HTTP/1.1\r\nHost: t\r\nX-Test: a\r\n\tb\r\n\r\n"), 400, 1, NULL},
    {"leading ws line", S("GET /hdr HTTP/1.1\r\nHost: t\r\n X-Test: b\r\n\r\n"), 400, 1, NULL},
    {"ws after start line", S("GET /hdr HTTP/1.1\r\n X-Test: b\r\nHost: t\r\n\r\n"), 400, 1, NULL},
    {"bare lf", S("GET /plaintext HTTP/1.1\nHost: t\n\n"), 400, 1, NULL},
    {"bare lf header", S("GET /plaintext HTTP/1.1\r\nHost: t\nX: y\r\n\r\n"), 400, 1, NULL},
    {"bare cr", S("GET /plaintext HTTP/1.1\r\nHost: t\r\n\r\r\n"), 400, 1, NULL},
    {"space before colon", S("GET /plaintext HTTP/1.1\r\nHost : t\r\n\r\n"), 400, 1, NULL},
    {"ctl in value", S("GET /plaintext HTTP/1.1\r\nHost: t\r\nX: a\x01z\r\n\r\n"), 400, 1, NULL},
    {"space in name", S("GET /plaintext HTTP/1.1\r\nHost: t\r\nX Y: z\r\n\r\n"), 400, 1, NULL},
    {"bad method", S("G@T /plaintext HTTP/1.1\r\nHost: t\r\n\r\n"), 400, 1, NULL},
    {"lower method", S("get /plaintext HTTP/1.1\r\nHost: t\r\n\r\n"), 501, 1, NULL},
    {"unknown method", S("FOO /plaintext HTTP/1.1\r\nHost: t\r\n\r\n"), 501, 1, NULL},
    {"unknown method garbage line", S("hello world\r\n\r\n"), 400, 1, NULL},
    {"space in uri", S("GET /a b HTTP/1.1\r\nHost: t\r\n\r\n"), 400, 1, NULL},
    {"no version", S("GET /plaintext\r\nHost: t\r\n\r\n"), 400, 1, NULL},
    {"tls hello", S("\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03"), 400, 1, NULL},
    {"te chunked not last", S("POST /echo HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked, gzip\r\n\r\n0\r\n\r\n"), 400, 1, NULL},
    {"te twice", S("POST /echo HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"), 400, 1, NULL},
    {"te in 1.0", S("POST /echo HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"), 400, 1, NULL},
    /* ---- unsupported: 501, 505 ---- */
    {"te gzip", S("POST /echo HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: gzip\r\n\r\nabc"), 501, 1, NULL},
    {"te gzip chunked", S("POST /echo HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n"), 501, 1, NULL},
    {"connect", S("CONNECT t:443 HTTP/1.1\r\nHost: t:443\r\n\r\n"), 501, 1, NULL},
    {"http 2.0", S("GET /plaintext HTTP/2.0\r\nHost: t\r\n\r\n"), 505, 1, NULL},
    {"http 0.9", S("GET /plaintext HTTP/0.9\r\nHost: t\r\n\r\n"), 505, 1, NULL},
    {"http 9.9", S("GET /plaintext HTTP/9.9\r\nHost: t\r\n\r\n"), 505, 1, NULL},
    {"http 1.01", S("GET /plaintext HTTP/1.01\r\nHost: t\r\n\r\n"), 400, 1, NULL},
    {"http 3.1", S("GET /plaintext HTTP/3.1\r\nHost: t\r\n\r\n"), 505, 1, NULL},
    /* ---- limits ---- */
    DYN("uri too long", long_uri, 414),
    DYN("header too large", big_hdr, 431),
    DYN("too many headers", many_hdrs, 431),
    DYN("body too large", big_body_req, 413),
    DYN("chunked body too large", big_chunk_req, 413),
};
#define NCASES (sizeof cases / sizeof cases[0])

static struct hsrv H;

static int setup(void **state)
{
    (void)state;
    make_big_cases();
    for (size_t i = 0; i < NCASES; i++)
        if (!cases[i].len)
            cases[i].len = strlen(cases[i].req);
    memset(&H, 0, sizeof H);
    H.o.host = "127.0.0.1";
    H.o.max_body = 4096;
    H.o.max_uri = 1024;
    H.o.max_header = 4096;
    H.o.max_headers = 64;
    H.o.max_pipeline = 8;
    hsrv_start(&H);
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    hsrv_stop(&H);
    return 0;
}

/* Prints a failed case (the table goes on, and fails at its end). */
__attribute__((format(printf, 1, 2))) static int report(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    char buf[512];
    vsnprintf(buf, sizeof buf, fmt, ap);
    va_end(ap);
    print_error("%s\n", buf);
    return 1;
}

/* Sends c split into pieces (split: 0 whole, 1 every byte, 2 random
 * points with pauses) and checks status, body and close. */
static int run_case_on(int fd, const struct tcase *c, int split, unsigned *seed)
{
    if (split == 0) {
        cli_send(fd, c->req, c->len);
    } else if (split == 1) {
        for (size_t i = 0; i < c->len; i++)
            cli_send(fd, c->req + i, 1);
    } else {
        size_t a = (size_t)rand_r(seed) % c->len, b = (size_t)rand_r(seed) % c->len;
        if (a > b) {
            size_t t = a;
            a = b;
            b = t;
        }
        cli_send(fd, c->req, a);
        usleep(1000);
        cli_send(fd, c->req + a, b - a);
        usleep(1000);
        cli_send(fd, c->req + b, c->len - b);
    }
    static struct resp r;
    int eof;
    int head = !strncmp(c->req, "HEAD ", 5);
    int n = cli_read(fd, &r, 1, head, &eof, c->closes);
    if (n != 1 || r.status != c->status)
        return report("case '%s' split %d: got %d responses, status %d, want %d", c->name, split, n,
                 n ? r.status : 0, c->status);
    if (c->body && (r.blen != strlen(c->body) || memcmp(r.body, c->body, r.blen)))
        return report("case '%s' split %d: body '%.*s', want '%s'", c->name, split, (int)r.blen,
                 r.body, c->body);
    if (c->closes && (eof != 1 || (!r.close && r.clen >= 0)))
        return report("case '%s' split %d: connection not closed (eof %d, close %d)", c->name, split,
                 eof, r.close);
    if (!c->closes && r.close)
        return report("case '%s' split %d: unexpected Connection: close", c->name, split);
    if (head && (r.clen != 13))
        return report("case '%s': HEAD Content-Length %ld", c->name, r.clen);
    if (c->status == 405 && !r.allow[0])
        return report("case '%s': 405 without Allow", c->name);
    if (!c->closes) {
        /* the connection still serves */
        cli_send(fd, S("GET /plaintext HTTP/1.1\r\nHost: t\r\n\r\n"));
        n = cli_read(fd, &r, 1, 0, &eof, 0);
        if (n != 1 || r.status != 200)
            return report("case '%s' split %d: connection unusable after the answer", c->name, split);
    }
    return 0;
}

/* A failed case closes its connection too: a later test counting the
 * server's connections must not see it. */
static int run_case(const struct tcase *c, int split, unsigned *seed)
{
    int fd = cli_connect(atomic_load(&H.port));
    int bad = run_case_on(fd, c, split, seed);
    close(fd);
    return bad;
}

static void test_table(void **state)
{
    (void)state;
    assert_true(NCASES >= 60);
    int bad = 0;
    for (size_t i = 0; i < NCASES; i++)
        bad += run_case(&cases[i], 0, NULL);
    assert_int_equal(bad, 0);
}

static void test_table_bytewise(void **state)
{
    (void)state;
    int bad = 0;
    for (size_t i = 0; i < NCASES; i++)
        if (cases[i].len < 2000)
            bad += run_case(&cases[i], 1, NULL);
    assert_int_equal(bad, 0);
}

static void test_table_random_split(void **state)
{
    (void)state;
    unsigned seed = 12345;
    int bad = 0;
    for (int round = 0; round < 2; round++)
        for (size_t i = 0; i < NCASES; i++)
            bad += run_case(&cases[i], 2, &seed);
    assert_int_equal(bad, 0);
}

static void test_mutations(void **state)
{
    (void)state;
    /* Table requests with random bytes changed, cut, or doubled: whatever
     * the server answers, it neither crashes nor hangs, and it still
     * serves afterwards (the sanitizer build checks the memory). */
    unsigned seed = 777;
    static char buf[8192];
    for (int it = 0; it < 400; it++) {
        const struct tcase *c = &cases[(size_t)rand_r(&seed) % NCASES];
        size_t len = c->len < sizeof buf / 2 ? c->len : sizeof buf / 2;
        memcpy(buf, c->req, len);
        int kind = rand_r(&seed) % 3;
        if (kind == 0) {
            for (int k = 0; k < 1 + rand_r(&seed) % 4; k++)
                buf[(size_t)rand_r(&seed) % len] = (char)rand_r(&seed);
        } else if (kind == 1) {
            len = (size_t)rand_r(&seed) % len;
        } else {
            memcpy(buf + len, buf, len);
            len *= 2;
            buf[(size_t)rand_r(&seed) % len] = (char)rand_r(&seed);
        }
        int fd = cli_connect(atomic_load(&H.port));
        cli_send(fd, buf, len);
        shutdown(fd, SHUT_WR); /* EOF: the server must let go */
        char sink[4096];
        int64_t end = ts_now_ms() + 3000;
        ssize_t n;
        while ((n = ts_recv(fd, sink, sizeof sink, 0)) > 0 && ts_now_ms() < end)
            ;
        assert_true(n == 0 || (n < 0 && errno == ECONNRESET));
        close(fd);
    }
    char body[64];
    assert_int_equal(simple_get(atomic_load(&H.port), "/plaintext", body, sizeof body), 200);
}

static void test_405_allow(void **state)
{
    (void)state;
    static struct resp r;
    int eof;
    assert_int_equal(one_shot(atomic_load(&H.port), S("DELETE /echo HTTP/1.1\r\nHost: t\r\n\r\n"), &r, &eof), 405);
    assert_string_equal(r.allow, "POST, PUT");
    assert_int_equal(one_shot(atomic_load(&H.port), S("POST /plaintext HTTP/1.1\r\nHost: t\r\nContent-Length: 0\r\n\r\n"), &r, &eof), 405);
    assert_string_equal(r.allow, "GET, HEAD");
    /* a method whose name is part of another's is listed too */
    assert_int_equal(one_shot(atomic_load(&H.port), S("GET /lock HTTP/1.1\r\nHost: t\r\n\r\n"), &r, &eof), 405);
    assert_string_equal(r.allow, "UNLOCK, LOCK, M-SEARCH, SEARCH");
}

static void test_pipeline_100(void **state)
{
    (void)state;
    static char req[100 * 64];
    size_t len = 0;
    for (int i = 0; i < 100; i++)
        len += (size_t)snprintf(req + len, sizeof req - len,
                                "GET /args?time=%d HTTP/1.1\r\nHost: t\r\n\r\n", i);
    int fd = cli_connect(atomic_load(&H.port));
    cli_send(fd, req, len); /* one write: 100 requests */
    static struct resp r[100];
    int eof;
    assert_int_equal(cli_read(fd, r, 100, 0, &eof, 0), 100);
    for (int i = 0; i < 100; i++) {
        char want[64];
        snprintf(want, sizeof want, "time=%d|x=none", i);
        assert_int_equal(r[i].status, 200);
        assert_int_equal(r[i].blen, strlen(want));
        assert_memory_equal(r[i].body, want, r[i].blen);
    }
    close(fd);
}

static void test_pipeline_order(void **state)
{
    (void)state;
    /* The first handler answers last; the answers still come in order. */
    int fd = cli_connect(atomic_load(&H.port));
    cli_send(fd, S("GET /async?ms=150&id=1 HTTP/1.1\r\nHost: t\r\n\r\n"
                   "GET /async?ms=50&id=2 HTTP/1.1\r\nHost: t\r\n\r\n"
                   "GET /plaintext HTTP/1.1\r\nHost: t\r\n\r\n"
                   "GET /async?ms=1&id=4 HTTP/1.1\r\nHost: t\r\n\r\n"));
    static struct resp r[4];
    int eof;
    int64_t t0 = ts_now_ms();
    assert_int_equal(cli_read(fd, r, 4, 0, &eof, 0), 4);
    assert_true(ts_now_ms() - t0 >= 140);
    assert_memory_equal(r[0].body, "async 1", 7);
    assert_memory_equal(r[1].body, "async 2", 7);
    assert_memory_equal(r[2].body, "Hello, World!", 13);
    assert_memory_equal(r[3].body, "async 4", 7);
    close(fd);
}

static void test_pipeline_split_and_close(void **state)
{
    (void)state;
    /* Requests straddle writes; the last one closes; nothing after it is
     * answered. */
    int fd = cli_connect(atomic_load(&H.port));
    const char *all = "GET /plaintext HTTP/1.1\r\nHost: t\r\n\r\nPOST /echo HTTP/1.1\r\nHost: t\r\n"
                      "Content-Length: 4\r\n\r\nabcdGET /version HTTP/1.1\r\nHost: t\r\n"
                      "Connection: close\r\n\r\nGET /plaintext HTTP/1.1\r\nHost: t\r\n\r\n";
    size_t len = strlen(all);
    cli_send(fd, all, 30);
    usleep(2000);
    cli_send(fd, all + 30, 45);
    usleep(2000);
    cli_send(fd, all + 75, len - 75);
    static struct resp r[4];
    int eof;
    assert_int_equal(cli_read(fd, r, 4, 0, &eof, 1), 3);
    assert_int_equal(eof, 1);
    assert_memory_equal(r[1].body, "abcd", 4);
    assert_memory_equal(r[2].body, "11", 2);
    assert_true(r[2].close);
    close(fd);
}

struct writer {
    int fd;
    const char *buf;
    size_t len;
};

static void *writer_main(void *arg)
{
    struct writer *w = arg;
    cli_send(w->fd, w->buf, w->len);
    return NULL;
}

static void test_pipeline_backpressure(void **state)
{
    (void)state;
    /* 3000 pipelined requests (about 150 KB) in one burst: the server stops
     * reading at its cap and resumes as answers drain; every answer comes,
     * in order.  A thread writes while this one reads, as a real
     * pipelining client does. */
    enum { N = 3000 };
    static char req[N * 64];
    size_t len = 0;
    for (int i = 0; i < N; i++)
        len += (size_t)snprintf(req + len, sizeof req - len,
                                "GET /args?time=%d HTTP/1.1\r\nHost: t\r\n\r\n", i);
    int fd = cli_connect(atomic_load(&H.port));
    struct writer w = {fd, req, len};
    pthread_t th;
    assert_int_equal(pthread_create(&th, NULL, writer_main, &w), 0);
    static struct resp r[N];
    int eof;
    int got = cli_read(fd, r, N, 0, &eof, 0);
    pthread_join(th, NULL);
    assert_int_equal(got, N);
    for (int i = 0; i < N; i++) {
        char want[64];
        snprintf(want, sizeof want, "time=%d|x=none", i);
        assert_int_equal(r[i].status, 200);
        assert_int_equal(r[i].blen, strlen(want));
        assert_memory_equal(r[i].body, want, r[i].blen);
    }
    close(fd);
}

static void test_expect_continue(void **state)
{
    (void)state;
    int fd = cli_connect(atomic_load(&H.port));
    cli_send(fd, S("POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 4\r\nExpect: 100-continue\r\n\r\n"));
    static struct resp r[2];
    int eof;
    assert_int_equal(cli_read(fd, r, 1, 0, &eof, 0), 1);
    assert_int_equal(r[0].status, 100);
    cli_send(fd, S("data"));
    assert_int_equal(cli_read(fd, r, 1, 0, &eof, 0), 1);
    assert_int_equal(r[0].status, 200);
    assert_memory_equal(r[0].body, "data", 4);
    close(fd);
}

static unsigned long long stat_of(const char *key)
{
    char body[256];
    assert_int_equal(simple_get(atomic_load(&H.port), "/stats", body, sizeof body), 200);
    const char *p = strstr(body, key);
    assert_non_null(p);
    return strtoull(p + strlen(key), NULL, 10);
}

static void test_batched_send(void **state)
{
    (void)state;
    /* One answer is one sendmsg (head and body together); 6 pipelined
     * requests in one segment are answered by one sendmsg too. */
    int fd = cli_connect(atomic_load(&H.port));
    static struct resp r[6];
    int eof;
    cli_send(fd, S("GET /plaintext HTTP/1.1\r\nHost: t\r\n\r\n"));
    assert_int_equal(cli_read(fd, r, 1, 0, &eof, 0), 1);
    unsigned long long s0 = stat_of("sends=");
    cli_send(fd, S("GET /plaintext HTTP/1.1\r\nHost: t\r\n\r\n"));
    assert_int_equal(cli_read(fd, r, 1, 0, &eof, 0), 1);
    unsigned long long s1 = stat_of("sends=");
    assert_int_equal(s1 - s0, 2); /* this answer, and the /stats answer */
    const char six[] = "GET /plaintext HTTP/1.1\r\nHost: t\r\n\r\n";
    char all[6 * sizeof six];
    for (int i = 0; i < 6; i++)
        memcpy(all + i * (sizeof six - 1), six, sizeof six - 1);
    cli_send(fd, all, 6 * (sizeof six - 1));
    assert_int_equal(cli_read(fd, r, 6, 0, &eof, 0), 6);
    unsigned long long s2 = stat_of("sends=");
    assert_int_equal(s2 - s1, 2); /* six answers in one sendmsg, and /stats */
    close(fd);
}

static void test_small_buffers(void **state)
{
    (void)state;
    /* Receive buffers of 64 bytes, eight of them: every request spans many
     * pool buffers, and the pool runs dry under load.  The whole table
     * still gives the same answers. */
    int saved_port = atomic_load(&H.port);
    struct hsrv h;
    memset(&h, 0, sizeof h);
    h.o = H.o;
    h.o.rbuf_count = 8;
    h.o.rbuf_size = 64;
    hsrv_start(&h);
    atomic_store(&H.port, atomic_load(&h.port));
    int bad = 0;
    for (size_t i = 0; i < NCASES; i++)
        bad += run_case(&cases[i], 0, NULL);
    test_pipeline_100(state);
    atomic_store(&H.port, saved_port);
    hsrv_stop(&h);
    assert_int_equal(bad, 0);
}

static void test_no_alloc_steady_state(void **state)
{
    (void)state;
    /* After warm-up, requests and answers allocate nothing: connections,
     * sessions and requests come from free lists that keep their buffers. */
    int fd = cli_connect(atomic_load(&H.port));
    static struct resp r[8];
    int eof;
    const char one[] = "GET /args?time=1&x=2 HTTP/1.1\r\nHost: t\r\n\r\n";
    char eight[8 * sizeof one];
    for (int i = 0; i < 8; i++)
        memcpy(eight + i * (sizeof one - 1), one, sizeof one - 1);
    for (int i = 0; i < 20; i++) {
        cli_send(fd, one, sizeof one - 1);
        assert_int_equal(cli_read(fd, r, 1, 0, &eof, 0), 1);
        cli_send(fd, eight, 8 * (sizeof one - 1));
        assert_int_equal(cli_read(fd, r, 8, 0, &eof, 0), 8);
    }
    long a0 = atomic_load(&H.allocs);
    for (int i = 0; i < 200; i++) {
        cli_send(fd, one, sizeof one - 1);
        assert_int_equal(cli_read(fd, r, 1, 0, &eof, 0), 1);
        assert_int_equal(r[0].status, 200);
        cli_send(fd, eight, 8 * (sizeof one - 1));
        assert_int_equal(cli_read(fd, r, 8, 0, &eof, 0), 8);
    }
    assert_int_equal(atomic_load(&H.allocs) - a0, 0);
    close(fd);
}

static _Atomic int many_ok;

static void *many_main(void *arg)
{
    (void)arg;
    enum { CONNS = 25, ROUNDS = 4 };
    int fds[CONNS];
    for (int i = 0; i < CONNS; i++)
        fds[i] = cli_connect(atomic_load(&H.port));
    struct resp *r = calloc(2, sizeof *r);
    for (int round = 0; round < ROUNDS; round++) {
        for (int i = 0; i < CONNS; i++)
            cli_send(fds[i], S("GET /plaintext HTTP/1.1\r\nHost: t\r\n\r\n"
                               "POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 2\r\n\r\nok"));
        for (int i = 0; i < CONNS; i++) {
            int eof;
            if (cli_read(fds[i], r, 2, 0, &eof, 0) == 2 && r[0].status == 200 &&
                r[1].status == 200 && r[1].blen == 2)
                atomic_fetch_add(&many_ok, 1);
        }
    }
    for (int i = 0; i < CONNS; i++)
        close(fds[i]);
    free(r);
    return NULL;
}

static void test_many_clients(void **state)
{
    (void)state;
    /* 8 threads x 25 connections at once, pipelined pairs, 4 rounds. */
    pthread_t th[8];
    atomic_store(&many_ok, 0);
    for (int i = 0; i < 8; i++)
        assert_int_equal(pthread_create(&th[i], NULL, many_main, NULL), 0);
    for (int i = 0; i < 8; i++)
        pthread_join(th[i], NULL);
    assert_int_equal(atomic_load(&many_ok), 8 * 25 * 4);
}

static void test_keepalive_reuse(void **state)
{
    (void)state;
    char before[256], after[256];
    assert_int_equal(simple_get(atomic_load(&H.port), "/stats", before, sizeof before), 200);
    unsigned long long a0 = strtoull(strstr(before, "accepted=") + 9, NULL, 10);
    int fd = cli_connect(atomic_load(&H.port));
    static struct resp r;
    int eof;
    for (int i = 0; i < 50; i++) {
        cli_send(fd, S("GET /plaintext HTTP/1.1\r\nHost: t\r\n\r\n"));
        assert_int_equal(cli_read(fd, &r, 1, 0, &eof, 0), 1);
        assert_int_equal(r.status, 200);
        assert_false(r.close);
    }
    /* HTTP/1.0 with keep-alive: the same connection again */
    for (int i = 0; i < 3; i++) {
        cli_send(fd, S("GET /version HTTP/1.0\r\nConnection: keep-alive\r\n\r\n"));
        assert_int_equal(cli_read(fd, &r, 1, 0, &eof, 0), 1);
        assert_true(r.keepalive);
        assert_memory_equal(r.body, "10", 2);
    }
    /* Connection: close is honoured */
    cli_send(fd, S("GET /plaintext HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n"));
    assert_int_equal(cli_read(fd, &r, 1, 0, &eof, 1), 1);
    assert_true(r.close);
    assert_int_equal(eof, 1);
    close(fd);
    assert_int_equal(simple_get(atomic_load(&H.port), "/stats", after, sizeof after), 200);
    unsigned long long a1 = strtoull(strstr(after, "accepted=") + 9, NULL, 10);
    assert_int_equal(a1 - a0, 2); /* the keep-alive connection and the /stats one */
}

static void test_http10_closes(void **state)
{
    (void)state;
    int fd = cli_connect(atomic_load(&H.port));
    cli_send(fd, S("GET /plaintext HTTP/1.0\r\n\r\nGET /plaintext HTTP/1.0\r\n\r\n"));
    static struct resp r[2];
    int eof;
    assert_int_equal(cli_read(fd, r, 2, 0, &eof, 1), 1);
    assert_int_equal(eof, 1);
    assert_true(r[0].close);
    close(fd);
}

static void test_double_answer(void **state)
{
    (void)state;
    char body[64];
    assert_int_equal(simple_get(atomic_load(&H.port), "/double", body, sizeof body), 200);
    assert_string_equal(body, "one");
    assert_int_equal(atomic_load(&H.second_rc), -EALREADY);
}

static void test_abort(void **state)
{
    (void)state;
    int a0 = atomic_load(&H.aborts);
    int fd = cli_connect(atomic_load(&H.port));
    cli_send(fd, S("GET /async?ms=3000&id=9 HTTP/1.1\r\nHost: t\r\n\r\n"));
    usleep(50000);
    close(fd); /* the client goes away */
    int64_t end = ts_now_ms() + 2000;
    while (atomic_load(&H.aborts) == a0 && ts_now_ms() < end)
        usleep(1000);
    assert_int_equal(atomic_load(&H.aborts), a0 + 1);
    /* the handler cancelled its timer and answered (discarded): the
     * connection is gone from the server */
    char body[256];
    end = ts_now_ms() + 2000;
    do {
        assert_int_equal(simple_get(atomic_load(&H.port), "/stats", body, sizeof body), 200);
    } while (!strstr(body, "conns=1 ") && ts_now_ms() < end && !usleep(10000));
    assert_non_null(strstr(body, "conns=1 "));
}

static void test_stream_async(void **state)
{
    (void)state;
    int fd = cli_connect(atomic_load(&H.port));
    /* a streamed answer behind a slower plain one, and one after it */
    cli_send(fd, S("GET /async?ms=30&id=1 HTTP/1.1\r\nHost: t\r\n\r\n"
                   "GET /stream?n=5&async=1 HTTP/1.1\r\nHost: t\r\n\r\n"
                   "GET /plaintext HTTP/1.1\r\nHost: t\r\n\r\n"));
    static struct resp r[3];
    int eof;
    assert_int_equal(cli_read(fd, r, 3, 0, &eof, 0), 3);
    assert_memory_equal(r[0].body, "async 1", 7);
    assert_true(r[1].chunked);
    assert_int_equal(r[1].blen, 40);
    assert_memory_equal(r[1].body, "chunk 0\nchunk 1\nchunk 2\nchunk 3\nchunk 4\n", 40);
    assert_memory_equal(r[2].body, "Hello, World!", 13);
    close(fd);
}

/* 204 and 304 carry neither a body nor framing, streamed or not; HEAD gets
 * the head a GET would have had, without the body. */
static void test_no_body_statuses(void **state)
{
    (void)state;
    int port = atomic_load(&H.port);
    atomic_store(&H.stream_rc, 1);
    assert_wire(port, "GET /sstream?st=204 HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n",
                "HTTP/1.1 204 No Content\r\nServer: eddy\r\nConnection: close\r\n"
                "Content-Type: text/plain\r\n\r\n");
    assert_int_equal(atomic_load(&H.stream_rc), 0); /* the write is dropped, not refused */
    assert_wire(port, "GET /sstream?st=304 HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n",
                "HTTP/1.1 304 Not Modified\r\nServer: eddy\r\nConnection: close\r\n"
                "Content-Type: text/plain\r\n\r\n");
    /* eddy_http_respond says the same */
    assert_wire(port, "GET /sresp?st=204 HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n",
                "HTTP/1.1 204 No Content\r\nServer: eddy\r\nConnection: close\r\n"
                "Content-Type: text/plain\r\n\r\n");
    assert_wire(port, "GET /sresp?st=304 HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n",
                "HTTP/1.1 304 Not Modified\r\nServer: eddy\r\nConnection: close\r\n"
                "Content-Type: text/plain\r\n\r\n");
    /* keep-alive: the next answer follows the head directly */
    assert_wire(port,
                "GET /sstream?st=204 HTTP/1.1\r\nHost: t\r\n\r\n"
                "GET /plaintext HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n",
                "HTTP/1.1 204 No Content\r\nServer: eddy\r\nContent-Type: text/plain\r\n\r\n"
                "HTTP/1.1 200 OK\r\nServer: eddy\r\nContent-Length: 13\r\nConnection: close\r\n"
                "Content-Type: text/plain\r\n\r\nHello, World!");
    /* HTTP/1.0: no close-delimited body to end, so keep-alive holds */
    assert_wire(port,
                "GET /sstream?st=304 HTTP/1.0\r\nConnection: keep-alive\r\n\r\n"
                "GET /plaintext HTTP/1.0\r\n\r\n",
                "HTTP/1.1 304 Not Modified\r\nServer: eddy\r\nConnection: keep-alive\r\n"
                "Content-Type: text/plain\r\n\r\n"
                "HTTP/1.1 200 OK\r\nServer: eddy\r\nContent-Length: 13\r\nConnection: close\r\n"
                "Content-Type: text/plain\r\n\r\nHello, World!");
    /* HEAD: streamed, the GET's chunked head; answered, its Content-Length */
    assert_wire(port,
                "HEAD /sstream?st=200 HTTP/1.1\r\nHost: t\r\n\r\n"
                "GET /sstream?st=200 HTTP/1.1\r\nHost: t\r\n\r\n"
                "HEAD /sresp?st=200 HTTP/1.1\r\nHost: t\r\n\r\n"
                "HEAD /sstream?st=204 HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n",
                "HTTP/1.1 200 OK\r\nServer: eddy\r\nTransfer-Encoding: chunked\r\n"
                "Content-Type: text/plain\r\n\r\n"
                "HTTP/1.1 200 OK\r\nServer: eddy\r\nTransfer-Encoding: chunked\r\n"
                "Content-Type: text/plain\r\n\r\n3\r\nabc\r\n0\r\n\r\n"
                "HTTP/1.1 200 OK\r\nServer: eddy\r\nContent-Length: 3\r\n"
                "Content-Type: text/plain\r\n\r\n"
                "HTTP/1.1 204 No Content\r\nServer: eddy\r\nConnection: close\r\n"
                "Content-Type: text/plain\r\n\r\n");
    /* HEAD in HTTP/1.0: the GET's answer would end with the connection */
    assert_wire(port, "HEAD /sstream?st=200 HTTP/1.0\r\nConnection: keep-alive\r\n\r\n",
                "HTTP/1.1 200 OK\r\nServer: eddy\r\nConnection: close\r\n"
                "Content-Type: text/plain\r\n\r\n");
    char body[64];
    assert_int_equal(simple_get(port, "/plaintext", body, sizeof body), 200);
}

/* URL-encodes every byte but letters and digits. */
static void qenc(char *out, size_t cap, const char *s)
{
    size_t o = 0;
    for (; *s && o + 4 < cap; s++) {
        unsigned char ch = (unsigned char)*s;
        if ((ch >= '0' && ch <= '9') || ((ch | 0x20) >= 'a' && (ch | 0x20) <= 'z'))
            out[o++] = (char)ch;
        else
            o += (size_t)snprintf(out + o, cap - o, "%%%02X", ch);
    }
    out[o] = 0;
}

static void test_set_header_rules(void **state)
{
    (void)state;
    static const struct {
        const char *n, *v;
        int rc;
    } t[] = {
        {"X-Ok", "v", 0},
        {"X-!#$%&'*+-.^_`|~09", "v", 0}, /* every tchar */
        {"X-V", "a\tb c", 0},
        {"X-V", "caf\xc3\xa9", 0},          /* obs-text */
        {"X-V", "", 0},
        {"", "v", -EINVAL},
        {"X Y", "v", -EINVAL},
        {"X:Y", "v", -EINVAL},
        {"X(Y)", "v", -EINVAL},
        {"X\"Y", "v", -EINVAL},
        {"X/Y", "v", -EINVAL},
        {"X@Y", "v", -EINVAL},
        {"X\tY", "v", -EINVAL},
        {"X\xc3\xa9", "v", -EINVAL},
        {"X\r\nY", "v", -EINVAL},
        {"X-V", "a\r\nInjected: 1", -EINVAL},
        {"X-V", "a\rb", -EINVAL},
        {"X-V", "a\nb", -EINVAL},
        {"X-V", "a\x01z", -EINVAL},
        {"X-V", "a\x7f", -EINVAL},
        {"Content-Length", "5", -EINVAL},
        {"content-length", "13", -EINVAL},
        {"Transfer-Encoding", "chunked", -EINVAL},
        {"TRANSFER-ENCODING", "gzip", -EINVAL},
        {"Connection", "keep-alive", -EINVAL},
        {"Connection", "upgrade", -EINVAL},
        {"connection", "close, foo", -EINVAL},
        {"Connection", "", -EINVAL},
    };
    int port = atomic_load(&H.port);
    int fd = cli_connect(port);
    static struct resp r;
    int eof;
    for (size_t i = 0; i < sizeof t / sizeof t[0]; i++) {
        char n[256], v[256], req[700], want[32];
        qenc(n, sizeof n, t[i].n);
        qenc(v, sizeof v, t[i].v);
        int k = snprintf(req, sizeof req, "GET /sethdr?n=%s&v=%s HTTP/1.1\r\nHost: t\r\n\r\n", n, v);
        cli_send(fd, req, (size_t)k);
        assert_int_equal(cli_read(fd, &r, 1, 0, &eof, 0), 1);
        assert_int_equal(r.status, 200);
        snprintf(want, sizeof want, "rc=%d", t[i].rc);
        r.body[r.blen < sizeof r.body ? r.blen : sizeof r.body - 1] = 0;
        if (strcmp(r.body, want))
            print_error("set_header('%s', '%s'): %s, want %s\n", t[i].n, t[i].v, r.body, want);
        assert_string_equal(r.body, want);
        assert_false(r.close);
    }
    close(fd);
    /* a Content-Type is a field value too */
    assert_wire(port, "GET /sresp?ct=a%01b HTTP/1.1\r\nHost: t\r\n\r\n"
                      "GET /sstream?ct=a%0Db HTTP/1.1\r\nHost: t\r\n\r\n"
                      "GET /sresp?ct=text/plain;%09charset=utf-8 HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n",
                "HTTP/1.1 200 OK\r\nServer: eddy\r\nContent-Length: 6\r\n"
                "Content-Type: text/plain\r\n\r\nrc=-22"
                "HTTP/1.1 200 OK\r\nServer: eddy\r\nContent-Length: 6\r\n"
                "Content-Type: text/plain\r\n\r\nrc=-22"
                "HTTP/1.1 200 OK\r\nServer: eddy\r\nContent-Length: 3\r\nConnection: close\r\n"
                "Content-Type: text/plain;\tcharset=utf-8\r\n\r\nabc");
    /* a refused header is not sent; an accepted one is */
    assert_wire(port, "GET /sethdr?n=Content-Length&v=5 HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n",
                "HTTP/1.1 200 OK\r\nServer: eddy\r\nContent-Length: 6\r\nConnection: close\r\n"
                "Content-Type: text/plain\r\n\r\nrc=-22");
    assert_wire(port, "GET /sethdr?n=X-Ok&v=a%09b HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n",
                "HTTP/1.1 200 OK\r\nServer: eddy\r\nContent-Length: 4\r\nConnection: close\r\n"
                "X-Ok: a\tb\r\nContent-Type: text/plain\r\n\r\nrc=0");
}

/* Connection: close from the handler: said once, and the server closes
 * after that answer (a pipelined request behind it is not answered). */
static void test_set_header_close(void **state)
{
    (void)state;
    int port = atomic_load(&H.port);
    const char *want = "HTTP/1.1 200 OK\r\nServer: eddy\r\nContent-Length: 4\r\nConnection: close\r\n"
                       "Content-Type: text/plain\r\n\r\nrc=0";
    assert_wire(port,
                "GET /sethdr?n=Connection&v=close HTTP/1.1\r\nHost: t\r\n\r\n"
                "GET /plaintext HTTP/1.1\r\nHost: t\r\n\r\n",
                want);
    assert_wire(port, "GET /sethdr?n=Connection&v=Close HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n",
                want);
    assert_wire(port, "GET /sethdr?n=connection&v=CLOSE HTTP/1.0\r\nConnection: keep-alive\r\n\r\n"
                      "GET /plaintext HTTP/1.0\r\nConnection: keep-alive\r\n\r\n",
                want);
    /* behind an asynchronous answer: the close comes after the handler's
     * own answer, the earlier one still goes out */
    assert_wire(port,
                "GET /async?ms=30&id=3 HTTP/1.1\r\nHost: t\r\n\r\n"
                "GET /sethdr?n=Connection&v=close HTTP/1.1\r\nHost: t\r\n\r\n"
                "GET /async?ms=1&id=4 HTTP/1.1\r\nHost: t\r\n\r\n"
                "GET /plaintext HTTP/1.1\r\nHost: t\r\n\r\n",
                "HTTP/1.1 200 OK\r\nServer: eddy\r\nContent-Length: 7\r\n"
                "Content-Type: text/plain\r\n\r\nasync 3"
                "HTTP/1.1 200 OK\r\nServer: eddy\r\nContent-Length: 4\r\nConnection: close\r\n"
                "Content-Type: text/plain\r\n\r\nrc=0");
    char body[64];
    assert_int_equal(simple_get(port, "/plaintext", body, sizeof body), 200);
}

static void test_ipv6(void **state)
{
    (void)state;
    struct hsrv h6;
    memset(&h6, 0, sizeof h6);
    h6.o.host = "::1";
    hsrv_start(&h6);
    int fd = socket(AF_INET6, SOCK_STREAM | SOCK_CLOEXEC, 0);
    struct sockaddr_in6 a;
    memset(&a, 0, sizeof a);
    a.sin6_family = AF_INET6;
    a.sin6_port = htons((uint16_t)atomic_load(&h6.port));
    a.sin6_addr = in6addr_loopback;
    if (connect(fd, (struct sockaddr *)&a, sizeof a) < 0) {
        close(fd);
        hsrv_stop(&h6);
        skip(); /* no IPv6 loopback here */
    }
    struct timeval tv = {.tv_sec = 5};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    cli_send(fd, S("GET /peer HTTP/1.1\r\nHost: t\r\n\r\n"));
    static struct resp r;
    int eof;
    assert_int_equal(cli_read(fd, &r, 1, 0, &eof, 0), 1);
    assert_int_equal(r.status, 200);
    assert_memory_equal(r.body, "::1", 3);
    close(fd);
    hsrv_stop(&h6);
}

static void test_reuseport(void **state)
{
    (void)state;
    /* Two listeners on one port, as two loops of a thread-per-core server
     * would have. */
    int fd1 = eddy_http_listen_socket("127.0.0.1", 0, 1, 16);
    assert_true(fd1 >= 0);
    struct sockaddr_in a;
    socklen_t al = sizeof a;
    getsockname(fd1, (struct sockaddr *)&a, &al);
    int fd2 = eddy_http_listen_socket("127.0.0.1", ntohs(a.sin_port), 1, 16);
    assert_true(fd2 >= 0);
    int fd3 = eddy_http_listen_socket("127.0.0.1", ntohs(a.sin_port), 0, 16);
    assert_int_equal(fd3, -EADDRINUSE);
    struct hsrv h1, h2;
    memset(&h1, 0, sizeof h1);
    memset(&h2, 0, sizeof h2);
    h1.o.listen_fd = fd1;
    h2.o.listen_fd = fd2;
    hsrv_start(&h1);
    hsrv_start(&h2);
    assert_int_equal(atomic_load(&h1.port), atomic_load(&h2.port));
    for (int i = 0; i < 20; i++)
        assert_int_equal(simple_get(atomic_load(&h1.port), "/plaintext", NULL, 0), 200);
    hsrv_stop(&h1);
    hsrv_stop(&h2);
    assert_int_equal(h1.st.requests + h2.st.requests, 20);
    assert_int_equal(eddy_http_listen_socket("nonsense", 0, 0, 1), -EINVAL);
}

/* A server set up on this thread (loop, buffer pool, listener, accept)
 * and run by another: the first eddy_loop_run() there takes the loop over. */
static void test_handover_server(void **state)
{
    (void)state;
    struct hsrv h;
    memset(&h, 0, sizeof h);
    h.o.host = "127.0.0.1";
    h.handover = 1;
    hsrv_start(&h);
    int port = atomic_load(&h.port);
    char body[64];
    for (int i = 0; i < 10; i++) {
        assert_int_equal(simple_get(port, "/plaintext", body, sizeof body), 200);
        assert_string_equal(body, "Hello, World!");
    }
    assert_int_equal(simple_get(port, "/async", NULL, 0), 200);
    hsrv_stop(&h);
    assert_int_equal(h.st.requests, 11);
}

static void test_conn_cap(void **state)
{
    (void)state;
    struct hsrv h;
    memset(&h, 0, sizeof h);
    h.o.host = "127.0.0.1";
    h.o.max_conns = 2;
    hsrv_start(&h);
    int port = atomic_load(&h.port);
    int a = cli_connect(port), b = cli_connect(port);
    cli_send(a, S("GET /plaintext HTTP/1.1\r\nHost: t\r\n\r\n"));
    cli_send(b, S("GET /plaintext HTTP/1.1\r\nHost: t\r\n\r\n"));
    static struct resp r;
    int eof;
    assert_int_equal(cli_read(a, &r, 1, 0, &eof, 0), 1);
    assert_int_equal(cli_read(b, &r, 1, 0, &eof, 0), 1);
    /* the third is over the cap: 503 and close */
    int c = cli_connect(port);
    assert_int_equal(cli_read(c, &r, 1, 0, &eof, 1), 1);
    assert_int_equal(r.status, 503);
    assert_int_equal(eof, 1);
    close(c);
    close(a);
    /* a slot is free again */
    int64_t end = ts_now_ms() + 2000;
    int st;
    while ((st = simple_get(port, "/plaintext", NULL, 0)) != 200 && ts_now_ms() < end)
        usleep(5000);
    assert_int_equal(st, 200);
    close(b);
    hsrv_stop(&h);
    assert_true(h.st.rejected >= 1);
}

static void test_graceful_shutdown(void **state)
{
    (void)state;
    struct hsrv h;
    memset(&h, 0, sizeof h);
    h.o.host = "127.0.0.1";
    hsrv_start(&h);
    int port = atomic_load(&h.port);
    int idle = cli_connect(port);
    cli_send(idle, S("GET /plaintext HTTP/1.1\r\nHost: t\r\n\r\n"));
    static struct resp r;
    int eof;
    assert_int_equal(cli_read(idle, &r, 1, 0, &eof, 0), 1);
    int busy = cli_connect(port);
    cli_send(busy, S("GET /async?ms=300&id=5 HTTP/1.1\r\nHost: t\r\n\r\n"));
    usleep(30000);
    assert_int_equal(simple_get(port, "/shutdown?ms=3000", NULL, 0), 200);
    /* the idle connection is closed at once, quietly */
    assert_int_equal(cli_read(idle, &r, 1, 0, &eof, 1), 0);
    assert_int_equal(eof, 1);
    /* the request in flight finishes, with Connection: close */
    assert_int_equal(cli_read(busy, &r, 1, 0, &eof, 1), 1);
    assert_memory_equal(r.body, "async 5", 7);
    assert_true(r.close);
    assert_int_equal(eof, 1);
    /* the loop ran out of work by itself: the thread ends */
    pthread_join(h.th, NULL);
    h.loop = NULL;
    assert_int_equal(atomic_load(&h.done_calls), 1);
    assert_int_equal(h.destroy_rc, 0);
    assert_int_equal(h.leftover_active, 0);
    assert_int_equal(h.loop_destroy_rc, 0);
    close(idle);
    close(busy);
    /* nobody listens any more */
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a;
    memset(&a, 0, sizeof a);
    a.sin_family = AF_INET;
    a.sin_port = htons((uint16_t)port);
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    assert_int_equal(connect(fd, (struct sockaddr *)&a, sizeof a), -1);
    close(fd);
}

/* Pipelined requests in flight at shutdown: each gets its answer, in
 * order; the last one says Connection: close, then the connection closes. */
static void test_shutdown_pipelined(void **state)
{
    (void)state;
    struct hsrv h;
    memset(&h, 0, sizeof h);
    h.o.host = "127.0.0.1";
    hsrv_start(&h);
    int port = atomic_load(&h.port);
    int a = cli_connect(port), b = cli_connect(port);
    cli_send(a, S("GET /async?ms=200&id=1 HTTP/1.1\r\nHost: t\r\n\r\n"
                  "GET /async?ms=250&id=2 HTTP/1.1\r\nHost: t\r\n\r\n"
                  "GET /async?ms=100&id=3 HTTP/1.1\r\nHost: t\r\n\r\n"));
    /* the last one answered already: its head cannot say close any more */
    cli_send(b, S("GET /async?ms=200&id=4 HTTP/1.1\r\nHost: t\r\n\r\n"
                  "GET /plaintext HTTP/1.1\r\nHost: t\r\n\r\n"));
    usleep(50000);
    assert_int_equal(simple_get(port, "/shutdown?ms=3000", NULL, 0), 200);
    static struct resp r[4];
    int eof;
    assert_int_equal(cli_read(a, r, 4, 0, &eof, 1), 3);
    assert_int_equal(eof, 1);
    assert_memory_equal(r[0].body, "async 1", 7);
    assert_memory_equal(r[1].body, "async 2", 7);
    assert_memory_equal(r[2].body, "async 3", 7);
    assert_false(r[0].close);
    assert_false(r[1].close);
    assert_true(r[2].close);
    assert_int_equal(cli_read(b, r, 3, 0, &eof, 1), 2);
    assert_int_equal(eof, 1);
    assert_memory_equal(r[0].body, "async 4", 7);
    assert_memory_equal(r[1].body, "Hello, World!", 13);
    pthread_join(h.th, NULL);
    h.loop = NULL;
    assert_int_equal(atomic_load(&h.aborts), 0);
    assert_int_equal(atomic_load(&h.done_calls), 1);
    assert_int_equal(h.destroy_rc, 0);
    assert_int_equal(h.leftover_active, 0);
    assert_int_equal(h.loop_destroy_rc, 0);
    close(a);
    close(b);
}

static void test_shutdown_deadline(void **state)
{
    (void)state;
    /* A request that outlives the drain deadline is aborted: its handler
     * hears it, the client gets no answer, and shutdown still completes. */
    struct hsrv h;
    memset(&h, 0, sizeof h);
    h.o.host = "127.0.0.1";
    h.o.sweep_ms = 20;
    hsrv_start(&h);
    int port = atomic_load(&h.port);
    int busy = cli_connect(port);
    cli_send(busy, S("GET /async?ms=5000&id=1 HTTP/1.1\r\nHost: t\r\n\r\n"));
    usleep(30000);
    int64_t t0 = ts_now_ms();
    assert_int_equal(simple_get(port, "/shutdown?ms=200", NULL, 0), 200);
    static struct resp r;
    int eof;
    assert_int_equal(cli_read(busy, &r, 1, 0, &eof, 1), 0);
    assert_int_equal(eof, 1);
    int64_t dt = ts_now_ms() - t0;
    assert_true(dt >= 180 && dt < 2000);
    pthread_join(h.th, NULL);
    h.loop = NULL;
    assert_int_equal(atomic_load(&h.aborts), 1);
    assert_int_equal(atomic_load(&h.done_calls), 1);
    assert_int_equal(h.destroy_rc, 0);
    assert_int_equal(h.leftover_active, 0);
    assert_int_equal(h.loop_destroy_rc, 0);
    close(busy);
}

static void test_unit_api(void **state)
{
    (void)state;
    struct eddy_loop *loop = ts_loop_new(NULL);
    struct eddy_http_server *srv;
    assert_int_equal(eddy_http_server_init(&srv, loop, NULL), 0);
    assert_ptr_equal(eddy_http_server_loop(srv), loop);
    assert_int_equal(eddy_http_route(srv, "GET", "/x", 7, h_plaintext, NULL), -EINVAL);
    assert_int_equal(eddy_http_route(srv, "GET", NULL, 0, h_plaintext, NULL), -EINVAL);
    /* routes that could never match are refused at once */
    assert_int_equal(eddy_http_route(srv, "get", "/x", 0, h_plaintext, NULL), -EINVAL);
    assert_int_equal(eddy_http_route(srv, "FOO", "/x", 0, h_plaintext, NULL), -EINVAL);
    assert_int_equal(eddy_http_route(srv, "", "/x", 0, h_plaintext, NULL), -EINVAL);
    assert_int_equal(eddy_http_route(srv, "CONNECT", "/x", 0, h_plaintext, NULL), -EINVAL);
    assert_int_equal(eddy_http_route(srv, "PRI", "/x", 0, h_plaintext, NULL), -EINVAL);
    assert_int_equal(eddy_http_route(srv, "DESCRIBE", "/x", 0, h_plaintext, NULL), -EINVAL); /* RTSP */
    assert_int_equal(eddy_http_route(srv, "GET", "x", 0, h_plaintext, NULL), -EINVAL);
    assert_int_equal(eddy_http_route(srv, "GET", "", 0, h_plaintext, NULL), -EINVAL);
    assert_int_equal(eddy_http_route(srv, "GET", "*", 0, h_plaintext, NULL), -EINVAL);
    assert_int_equal(eddy_http_route(srv, "GET", "http://t/x", 0, h_plaintext, NULL), -EINVAL);
    assert_int_equal(eddy_http_route(srv, "GET", "/x?y", 0, h_plaintext, NULL), -EINVAL);
    assert_int_equal(eddy_http_route(srv, "GET", "/x#y", 0, h_plaintext, NULL), -EINVAL);
    assert_int_equal(eddy_http_route(srv, "GET", "/x y", 0, h_plaintext, NULL), -EINVAL);
    assert_int_equal(eddy_http_route(srv, "GET", "/x", 0, NULL, NULL), -EINVAL);
    assert_int_equal(eddy_http_route(srv, "GET", "/x", EDDY_HTTP_EXACT, h_plaintext, NULL), 0);
    assert_int_equal(eddy_http_route(srv, "GET", "/x", EDDY_HTTP_EXACT, h_echo, NULL), -EEXIST);
    assert_int_equal(eddy_http_route(srv, "GET", "/x", EDDY_HTTP_PREFIX, h_plaintext, NULL), 0);
    assert_int_equal(eddy_http_route(srv, "GET", "/x", EDDY_HTTP_PREFIX, h_plaintext, NULL), -EEXIST);
    assert_int_equal(eddy_http_route(srv, "HEAD", "/x", EDDY_HTTP_EXACT, h_plaintext, NULL), 0);
    assert_int_equal(eddy_http_route(srv, "M-SEARCH", "/x", EDDY_HTTP_EXACT, h_plaintext, NULL), 0);
    assert_int_equal(eddy_http_route(srv, NULL, "/x", EDDY_HTTP_EXACT, h_plaintext, NULL), 0);
    assert_int_equal(eddy_http_route(srv, NULL, "/x", EDDY_HTTP_EXACT, h_plaintext, NULL), -EEXIST);
    assert_int_equal(eddy_http_route(srv, "PATCH", "/", EDDY_HTTP_PREFIX, h_plaintext, NULL), 0);
    assert_int_equal(eddy_http_server_port(srv), -EBADF);
    assert_string_equal(eddy_http_reason(404), "Not Found");
    assert_string_equal(eddy_http_reason(799), "Unknown");
    struct eddy_http_stats st;
    eddy_http_server_stats(srv, &st);
    print_message("an idle keep-alive connection holds %u bytes\n", st.idle_conn_bytes);
    assert_true(st.idle_conn_bytes > 0 && st.idle_conn_bytes <= 256);
    assert_int_equal(eddy_http_server_destroy(srv), 0);
    ts_loop_free(loop);
}

/* The loop outlives the server: eddy_loop_destroy() refuses (-EBUSY) while
 * a server is built on it, and the proper order then ends clean. */
static void test_loop_teardown_order(void **state)
{
    (void)state;
    struct eddy_loop *loop = ts_loop_new(NULL);
    struct eddy_http_server *srv;
    /* never listened: nothing active on the loop, but the server uses it */
    assert_int_equal(eddy_http_server_init(&srv, loop, NULL), 0);
    assert_int_equal(eddy_loop_destroy(loop), -EBUSY);
    assert_int_equal(eddy_http_server_destroy(srv), 0);
    /* listened, served, shut down */
    struct hsrv h;
    memset(&h, 0, sizeof h);
    struct eddy_http_options o;
    memset(&o, 0, sizeof o);
    o.host = "127.0.0.1";
    assert_int_equal(eddy_http_server_init(&srv, loop, &o), 0);
    assert_int_equal(eddy_http_route(srv, "GET", "/plaintext", EDDY_HTTP_EXACT, h_plaintext, NULL), 0);
    assert_int_equal(eddy_http_server_listen(srv), 0);
    assert_int_equal(eddy_http_server_destroy(srv), -EBUSY); /* not shut down */
    assert_int_equal(eddy_loop_destroy(loop), -EBUSY);
    assert_int_equal(eddy_http_server_shutdown(srv, 0, on_done, &h), 0);
    int64_t end = ts_now_ms() + 5000;
    while (!atomic_load(&h.done_calls) && ts_now_ms() < end)
        eddy_loop_run(loop, EDDY_RUN_ONCE);
    assert_int_equal(atomic_load(&h.done_calls), 1);
    assert_int_equal(eddy_loop_destroy(loop), -EBUSY);
    assert_int_equal(eddy_http_server_destroy(srv), 0);
    ts_loop_free(loop); /* asserts eddy_loop_destroy() == 0 */
}

int main(void)
{
    signal(SIGPIPE, SIG_IGN);
    const struct CMUnitTest t[] = {
        cmocka_unit_test(test_table),
        cmocka_unit_test(test_table_bytewise),
        cmocka_unit_test(test_table_random_split),
        cmocka_unit_test(test_mutations),
        cmocka_unit_test(test_405_allow),
        cmocka_unit_test(test_pipeline_100),
        cmocka_unit_test(test_pipeline_order),
        cmocka_unit_test(test_pipeline_backpressure),
        cmocka_unit_test(test_batched_send),
        cmocka_unit_test(test_no_alloc_steady_state),
        cmocka_unit_test(test_many_clients),
        cmocka_unit_test(test_small_buffers),
        cmocka_unit_test(test_expect_continue),
        cmocka_unit_test(test_pipeline_split_and_close),
        cmocka_unit_test(test_keepalive_reuse),
        cmocka_unit_test(test_http10_closes),
        cmocka_unit_test(test_double_answer),
        cmocka_unit_test(test_abort),
        cmocka_unit_test(test_stream_async),
        cmocka_unit_test(test_no_body_statuses),
        cmocka_unit_test(test_set_header_rules),
        cmocka_unit_test(test_set_header_close),
    };
    const struct CMUnitTest solo[] = {
        cmocka_unit_test(test_unit_api),
        cmocka_unit_test(test_loop_teardown_order),
        cmocka_unit_test(test_ipv6),
        cmocka_unit_test(test_reuseport),
        cmocka_unit_test(test_handover_server),
        cmocka_unit_test(test_conn_cap),
        cmocka_unit_test(test_graceful_shutdown),
        cmocka_unit_test(test_shutdown_deadline),
        cmocka_unit_test(test_shutdown_pipelined),
    };
    int rc = cmocka_run_group_tests(t, setup, teardown);
    rc |= cmocka_run_group_tests(solo, NULL, NULL);
    return rc;
}
