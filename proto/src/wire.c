/*
 * The wire parser: llhttp's settings and callbacks, filling a request from
 * the bytes conn.c feeds it.  No I/O: the one thing it needs sent (100
 * Continue) it asks for with s->continue_due, which conn.c acts on as
 * soon as wire_parse() returns (before any answer of the batch is sent).
 *
 * llhttp 8.1 is built with LLHTTP_STRICT_MODE and never made lenient but
 * for the HTTP-version digits (LENIENT_VERSION, judged here).  What
 * it still lets through and RFC 9112 does not, checked here (each has a
 * case in tests/proto/test_http.c):
 *   - obs-fold (a header line starting with SP/HT): 400 (on_header_value);
 *   - a request line without HTTP-version (llhttp: HTTP/0.9): 400;
 *   - HTTP/0.9 and 2.0 spelled out (llhttp accepts them): 505; with
 *     llhttp's version check made lenient, any other major is 505 too, and
 *     a higher 1.x minor is handled as 1.1 (RFC 9110 6.2);
 *   - Transfer-Encoding in HTTP/1.0, or listed twice: 400 (RFC 9112 6.1);
 *   - Transfer-Encoding codings other than chunked alone: 501, or 400
 *     when chunked is not the last one;
 *   - a missing or repeated Host in HTTP/1.1, or one that is no
 *     uri-host[:port]: 400 (RFC 9112 3.2);
 *   - obs-fold right after the colon ("Name:" CRLF SP "value", where
 *     llhttp's value span starts after the fold): 400;
 *   - an empty field-name (": v"): 400;
 *   - a fragment ("#") in the request-target: 400 (RFC 9112 3.2);
 *   - a malformed HTTP-version: 400, a well-formed one of another major: 505;
 *   - "close" in a 1.0 request's Connection list next to keep-alive
 *     (llhttp lets keep-alive win there): close;
 *   - a chunk whose size line alone exceeds max_body: 413 at once.
 * (Each of these has a case in tests/reliability/corpus.txt.)
 * What llhttp rejects itself in strict mode: CL with TE, duplicate CL, bad
 * CL digits, bad chunk sizes, bare LF and CR, whitespace before the colon,
 * control characters.
 */
#define _GNU_SOURCE
#include "internal.h"

#include <assert.h>
#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

/* ---- request line and fields ------------------------------------------ */

static struct sess *P(llhttp_t *p)
{
    return p->data;
}

static int fail(struct sess *s, int status)
{
    s->err = status;
    return -1;
}

static int on_message_begin(llhttp_t *p)
{
    struct sess *s = P(p);
    struct conn *c = s->c;
    s->in_msg = 1;
    s->in_body = 0;
    c->flags |= C_SERVED;
    s->mlen = 0;
    s->cur = req_get(c->srv, c);
    if (!s->cur)
        return fail(s, 503);
    return 0;
}

/* Counts the method bytes of earlier buffers: when llhttp rejects a
 * method, the bytes before the error position may be gone already. */
static int on_method(llhttp_t *p, const char *at, size_t n)
{
    struct sess *s = P(p);
    if (at + n == s->bufend)
        s->mlen = (uint8_t)(s->mlen + n > 255 ? 255 : s->mlen + n);
    return 0;
}

static int on_version(llhttp_t *p, const char *at, size_t n)
{
    (void)at;
    (void)n;
    P(p)->cur->flags |= R_HASVER;
    return 0;
}

static int on_url(llhttp_t *p, const char *at, size_t n)
{
    int rc;
    struct sess *s = P(p);
    struct eddy_http_req *r = s->cur;
    if (r->urllen + n > r->srv->o.max_uri)
        return fail(s, 414);
    if ((rc = arena_put(r, at, n)))
        return fail(s, rc);
    r->urllen += (uint32_t)n;
    return 0;
}

static int on_url_complete(llhttp_t *p)
{
    int rc;
    struct sess *s = P(p);
    struct eddy_http_req *r = s->cur;
    if ((rc = arena_put(r, "", 1)))
        return fail(s, rc);
    char *u = r->arena + r->url;
    /* absolute-form (RFC 9112 3.2.2): route on the path part */
    if (u[0] != '/' && r->urllen > 7 &&
        (!strncasecmp(u, "http://", 7) || !strncasecmp(u, "https://", 8))) {
        char *sl = memchr(u + 8, '/', r->urllen - 8);
        uint32_t skip = sl ? (uint32_t)(sl - u) : r->urllen;
        r->url += skip;
        r->urllen -= skip;
        if (!sl) { /* "http://host" alone: the path is "/" */
            if ((rc = arena_put(r, "/", 1)))
                return fail(s, rc);
            r->arena[r->alen - 2] = '/';
            r->arena[r->alen - 1] = 0;
            r->url = r->alen - 2;
            r->urllen = 1;
        }
        u = r->arena + r->url;
    }
    /* RFC 9112 3.2: no fragment in a request-target (llhttp takes one) */
    if (memchr(u, '#', r->urllen))
        return fail(s, 400);
    char *q = memchr(u, '?', r->urllen);
    if (q) {
        *q = 0;
        r->query = (uint32_t)(q + 1 - r->arena);
    } else {
        r->query = r->alen - 1; /* the NUL: an empty query */
    }
    return 0;
}

static int on_header_field(llhttp_t *p, const char *at, size_t n)
{
    int rc;
    struct sess *s = P(p);
    struct eddy_http_req *r = s->cur;
    if (r->last != 1) {
        if (r->nh >= r->srv->o.max_headers)
            return fail(s, 431);
        r->h[r->nh].n = (uint16_t)r->alen;
        r->h[r->nh].nl = 0;
        r->h[r->nh].v = 0;
        r->h[r->nh].vl = 0;
        r->nh++;
        r->last = 1;
    }
    if ((rc = arena_put(r, at, n)))
        return fail(s, rc);
    r->h[r->nh - 1].nl = (uint16_t)(r->h[r->nh - 1].nl + n);
    s->colon = at + n;
    return 0;
}

static int on_header_field_complete(llhttp_t *p)
{
    int rc;
    struct sess *s = P(p);
    struct eddy_http_req *r = s->cur;
    /* llhttp lets ": v" through: an empty field-name is not a token */
    if (r->last != 1 || r->h[r->nh - 1].nl == 0)
        return fail(s, 400);
    if ((rc = arena_put(r, "", 1)))
        return fail(s, rc);
    r->h[r->nh - 1].v = (uint16_t)r->alen;
    s->fold_scan = 1;
    s->fold_nl = 0;
    return 0;
}

static int on_header_value(llhttp_t *p, const char *at, size_t n)
{
    int rc;
    struct sess *s = P(p);
    struct eddy_http_req *r = s->cur;
    /* llhttp 8.1 accepts obs-fold (a line starting with SP/HT continues the
     * previous value); RFC 9112 5.2 lets a server reject it, and a proxy
     * that unfolds differently is a smuggling vector: 400. */
    char prev = at > s->bufstart ? at[-1] : s->prev_last;
    if (n && (prev == '\n' || memchr(at, '\n', n) || memchr(at, '\r', n)))
        return fail(s, 400);
    /* "Name:" CRLF SP "value" is a fold too, with llhttp's span starting
     * after it: a line end between the colon and the first value byte. */
    if (n && s->fold_scan) {
        const char *from = s->colon ? s->colon : s->bufstart;
        if (s->fold_nl || (at > from && memchr(from, '\n', (size_t)(at - from))))
            return fail(s, 400);
        s->fold_scan = 0;
    }
    if (r->last != 2) {
        r->h[r->nh - 1].v = (uint16_t)r->alen;
        r->last = 2;
    }
    if ((rc = arena_put(r, at, n)))
        return fail(s, rc);
    r->h[r->nh - 1].vl = (uint16_t)(r->h[r->nh - 1].vl + n);
    return 0;
}

static int on_header_value_complete(llhttp_t *p)
{
    int rc;
    struct sess *s = P(p);
    struct eddy_http_req *r = s->cur;
    if (r->last != 2) /* empty value: no span came */
        r->h[r->nh - 1].v = (uint16_t)r->alen;
    /* trailing OWS is part of llhttp's span: trim it */
    struct hdr *h = &r->h[r->nh - 1];
    while (h->vl && (r->arena[h->v + h->vl - 1] == ' ' || r->arena[h->v + h->vl - 1] == '\t')) {
        h->vl--;
        r->alen--;
    }
    if ((rc = arena_put(r, "", 1)))
        return fail(s, rc);
    r->last = 0;
    s->fold_scan = 0;
    return 0;
}

/* ---- the head's checks (RFC 9112) -------------------------------------- */

/* A character of uri-host [":" port] (RFC 3986 3.2.2): unreserved,
 * pct-encoded, sub-delims, ":" and the brackets of an IP-literal. */
static bool uri_host_char(unsigned char c)
{
    if (((c | 0x20) >= 'a' && (c | 0x20) <= 'z') || (c >= '0' && c <= '9'))
        return true;
    switch (c) {
    case '-': case '.': case '_': case '~': case '%': case '!': case '$': case '&':
    case '\'': case '(': case ')': case '*': case '+': case ',': case ';': case '=':
    case ':': case '[': case ']':
        return true;
    default:
        return false;
    }
}

/* The options of a Connection field value (RFC 9110 7.6.1: a list of
 * case-insensitive tokens, OWS around the commas). */
static void conn_options(const char *v, bool *close, bool *keep)
{
    while (*v) {
        while (*v == ' ' || *v == '\t' || *v == ',')
            v++;
        const char *t = v;
        while (*v && *v != ',')
            v++;
        const char *e = v;
        while (e > t && (e[-1] == ' ' || e[-1] == '\t'))
            e--;
        size_t n = (size_t)(e - t);
        if (n == 5 && !strncasecmp(t, "close", 5))
            *close = true;
        else if (n == 10 && !strncasecmp(t, "keep-alive", 10))
            *keep = true;
    }
}

/* The fields the server itself reads, found in one pass over the headers. */
struct fields {
    const char *host, *te, *expect;
    unsigned nhost, nte;
    bool close, keep; /* Connection options */
};

static void scan_fields(const struct eddy_http_req *r, struct fields *f)
{
    memset(f, 0, sizeof *f);
    for (unsigned i = 0; i < r->nh; i++) {
        const char *n = r->arena + r->h[i].n, *v = r->arena + r->h[i].v;
        switch (n[0] | 0x20) {
        case 'c':
            if (!strcasecmp(n, "connection"))
                conn_options(v, &f->close, &f->keep);
            break;
        case 'h':
            if (!strcasecmp(n, "host") && !f->nhost++)
                f->host = v;
            break;
        case 't':
            if (!strcasecmp(n, "transfer-encoding") && !f->nte++)
                f->te = v;
            break;
        case 'e':
            if (!f->expect && !strcasecmp(n, "expect"))
                f->expect = v;
            break;
        }
    }
}

/* The framing and Host checks of RFC 9112: 0, or the status to fail with. */
static int check_fields(const llhttp_t *p, const struct eddy_http_req *r,
                        const struct fields *f)
{
    /* RFC 9112 3.2: a 1.1 request without Host, or with several, is 400. */
    if (f->nhost > 1 || (r->vmin == 1 && f->nhost == 0))
        return 400;
    /* ... and so is a Host that is no uri-host [":" port] (RFC 3986 3.2.2:
     * reg-name, IPv4, IP-literal): no space, "@", "/", "?", "#" ... */
    if (f->host) {
        const unsigned char *h = (const unsigned char *)f->host;
        while (*h && uri_host_char(*h))
            h++;
        if (*h)
            return 400;
    }
    if (f->te) {
        const char *te = f->te;
        /* RFC 9112 6.1: CL with TE, and TE in HTTP/1.0, are faulty framing. */
        if ((p->flags & F_CONTENT_LENGTH) || r->vmin == 0 || f->nte > 1)
            return 400;
        /* Only chunked is supported.  chunked not last is faulty framing
         * (400); other codings are not implemented (501). */
        if (strcasecmp(te, "chunked") != 0) {
            size_t tl = strlen(te);
            bool last = tl > 7 && !strcasecmp(te + tl - 7, "chunked") &&
                        (te[tl - 8] == ',' || te[tl - 8] == ' ' || te[tl - 8] == '\t');
            if (!last && strcasestr(te, "chunked"))
                return 400;
            return 501;
        }
    }
    return 0;
}

static int on_headers_complete(llhttp_t *p)
{
    struct sess *s = P(p);
    struct eddy_http_req *r = s->cur;
    struct eddy_http_server *srv = r->srv;
    r->method = (uint8_t)p->method;
    r->vmaj = p->http_major;
    r->vmin = p->http_minor;
    /* llhttp takes a request line without a version as HTTP/0.9: 400. */
    if (!(r->flags & R_HASVER))
        return fail(s, 400);
    /* RFC 9110 6.2: a higher minor version of the major version we
     * implement is processed as the highest minor we support (1.1); other
     * majors (0.9, 2.0 and up, spelled out in a 1.1 request line) are 505. */
    if (r->vmaj != 1)
        return fail(s, 505);
    if (r->vmin > 1)
        r->vmin = 1;
    struct fields f;
    scan_fields(r, &f);
    int st = check_fields(p, r, &f);
    if (st)
        return fail(s, st);
    if ((p->flags & F_CONTENT_LENGTH) && p->content_length > srv->o.max_body)
        return fail(s, 413);
    if (r->method == HTTP_CONNECT)
        return fail(s, 501);
    /* Room for the decoded query, so no later growth moves the strings the
     * handler already holds. */
    size_t ql = strlen(r->arena + r->query);
    if (ql && !arena_reserve(r, 2 * ql + 2))
        return fail(s, 503);
    if (r->method == HTTP_HEAD)
        r->flags |= R_HEADREQ;
    /* Expect: 100-continue (curl sends it before large bodies): say
     * continue when nothing else is queued ahead, so the interim answer
     * cannot overtake a final one.  Otherwise the client sends the body
     * after its own short wait anyway. */
    if (f.expect && !strcasecmp(f.expect, "100-continue") && !s->q.head &&
        ((p->flags & F_CHUNKED) || p->content_length > 0))
        s->continue_due = 1;
    /* close wins in any Connection list (RFC 9112 9.6), in 1.0 too, where
     * llhttp lets keep-alive win; and whatever llhttp takes for a close is
     * one, since it parses nothing after it. */
    if (f.close || !llhttp_should_keep_alive(p) || (r->vmin == 0 && !f.keep))
        r->flags |= R_CLOSE;
    s->in_body = 1;
    return 0;
}

/* ---- body and end ------------------------------------------------------ */

static int on_body(llhttp_t *p, const char *at, size_t n)
{
    struct sess *s = P(p);
    struct eddy_http_req *r = s->cur;
    struct eddy_http_server *srv = r->srv;
    if (r->blen + n > srv->o.max_body)
        return fail(s, 413);
    if (!grow(srv->loop, &r->body, &r->bcap, r->blen + n + 1, 1024))
        return fail(s, 503);
    memcpy(r->body + r->blen, at, n);
    r->blen += n;
    return 0;
}

/* A chunk that cannot fit is refused at its size line, not after its
 * bytes have trickled in. */
static int on_chunk_header(llhttp_t *p)
{
    struct sess *s = P(p);
    if (p->content_length > s->cur->srv->o.max_body - s->cur->blen)
        return fail(s, 413);
    return 0;
}

static int on_message_complete(llhttp_t *p)
{
    struct sess *s = P(p);
    struct eddy_http_req *r = s->cur;
    struct conn *c = s->c;
    s->cur = NULL;
    s->in_msg = 0;
    s->in_body = 0;
    if (r->body && r->blen < r->bcap)
        r->body[r->blen] = 0;
    r->flags |= R_COMPLETE;
    if (c->srv->shutting)
        r->flags |= R_CLOSE;
    sess_queue(s, r);
    if (r->flags & R_CLOSE) {
        s->stop = 1; /* nothing after a closing request is read */
        return HPE_PAUSED;
    }
    if (s->nreq >= c->srv->o.max_pipeline) {
        s->paused = 1;
        return HPE_PAUSED;
    }
    return 0;
}

/* ---- errors and the method verdict ------------------------------------- */

static int map_error(struct sess *s, llhttp_errno_t e)
{
    if (s->err)
        return s->err;
    switch (e) {
    case HPE_INVALID_VERSION:
        /* llhttp says "Invalid HTTP version" for a well-formed version it
         * does not know (505; not with LENIENT_VERSION, kept for an llhttp
         * that ignores the flag); bad syntax there is a bad request. */
        return strcmp(llhttp_get_error_reason(&s->p), "Invalid HTTP version") ? 400 : 505;
    default:
        return 400;
    }
}

#define METHOD_MAX 32u /* longer "methods" are garbage: 400 */

/*
 * llhttp says HPE_INVALID_METHOD both for a well-formed method it does not
 * know and for garbage.  RFC 9110 9.1: an unrecognized method SHOULD get
 * 501; a line that is not "token SP request-target SP HTTP/d.d CRLF"
 * (RFC 9112 3) is a bad request (400; "hello world" is not an unknown
 * method).  Goes on from where the last call stopped (s->mlen method bytes
 * seen): the status, or 0 when the line is not complete yet.
 */
int method_verdict(struct sess *s, const char *p, size_t n)
{
    static const char ver[] = "HTTP/d.d";
    for (size_t i = 0; i < n; i++) {
        unsigned char ch = (unsigned char)p[i];
        switch (s->mstate) {
        case 0: /* method */
            if (ch == ' ') {
                if (!s->mlen)
                    return 400;
                s->mstate = 1;
                s->mcnt = 0;
            } else if (!is_tchar(ch) || ++s->mlen > METHOD_MAX) {
                return 400;
            }
            break;
        case 1: /* request-target */
            if (ch == ' ' && s->mcnt) {
                s->mstate = 2;
                s->mcnt = 0;
            } else if (ch <= 0x20 || ch >= 0x7f) {
                return 400;
            } else if (s->mcnt >= s->c->srv->o.max_uri) {
                return 414;
            } else {
                s->mcnt++;
            }
            break;
        case 2: /* HTTP-version */
            if (ver[s->mcnt] == 'd' ? !(ch >= '0' && ch <= '9') : ch != ver[s->mcnt])
                return 400;
            if (++s->mcnt == sizeof ver - 1)
                s->mstate = 3;
            break;
        default: /* the line end: CRLF, or a bare LF as llhttp accepts it */
            if (ch == '\n')
                return 501;
            if (ch != '\r' || s->mstate == 4)
                return 400;
            s->mstate = 4;
            break;
        }
    }
    return 0;
}

/* An invalid method at pos: count the token bytes before it, then judge. */
static int method_judge(struct sess *s, const char *pos, const char *data, size_t len)
{
    /* llhttp consumed only bytes of known method prefixes ([A-Z-]) before
     * pos; those of this buffer are counted here, earlier ones by on_method
     * (a scan back may take a preceding body's last bytes for the method:
     * only the 501/400 choice of a bad request can change). */
    const char *b = pos;
    while (b > data && ((b[-1] >= 'A' && b[-1] <= 'Z') || b[-1] == '-'))
        b--;
    if (b > data)
        s->mlen = 0;
    s->mstate = 0;
    size_t k = (size_t)(pos - b);
    s->mlen = (uint8_t)(s->mlen + k > 255 ? 255 : s->mlen + k);
    if (s->mlen > METHOD_MAX)
        return 400;
    return method_verdict(s, pos, (size_t)(data + len - pos));
}


/* ---- what conn.c calls ------------------------------------------------- */

/* Parses len bytes; *used gets how many were consumed (less when paused).
 * Returns 0, or the status of an error answer for conn.c to queue. */
int wire_parse(struct sess *s, const char *data, size_t len, size_t *used)
{
    s->bufstart = data;
    s->bufend = data + len;
    s->colon = NULL;
    llhttp_errno_t e = llhttp_execute(&s->p, data, len);
    *used = len;
    if (e == HPE_PAUSED) {
        *used = (size_t)(llhttp_get_error_pos(&s->p) - data);
        llhttp_resume(&s->p);
    } else if (e == HPE_PAUSED_UPGRADE) {
        /* Upgrade is not supported: answer the request, then close. */
        s->dropped = 1; /* the upgraded protocol's bytes may follow */
        if (s->q.tail)
            s->q.tail->flags |= R_CLOSE;
        s->stop = 1;
    } else if (e == HPE_INVALID_METHOD && !s->err) {
        int st = method_judge(s, llhttp_get_error_pos(&s->p), data, len);
        if (!st)
            s->mwait = 1; /* the header timeout still runs (in_msg) */
        return st;
    } else if (e != HPE_OK) {
        return map_error(s, e);
    }
    if (*used)
        s->prev_last = data[*used - 1];
    if (s->fold_scan) {
        /* between a colon and its value at the end of this buffer */
        const char *from = s->colon ? s->colon : data;
        if (from < data + *used && memchr(from, '\n', (size_t)(data + *used - from)))
            s->fold_nl = 1;
    }
    s->colon = NULL; /* the buffer goes back to the pool */
    return 0;
}

/* Every callback not named here is NULL: llhttp skips it. */
static const llhttp_settings_t settings = {
    .on_message_begin = on_message_begin,
    .on_method = on_method,
    .on_url = on_url,
    .on_version = on_version,
    .on_url_complete = on_url_complete,
    .on_header_field = on_header_field,
    .on_header_field_complete = on_header_field_complete,
    .on_header_value = on_header_value,
    .on_header_value_complete = on_header_value_complete,
    .on_headers_complete = on_headers_complete,
    .on_body = on_body,
    .on_chunk_header = on_chunk_header,
    .on_message_complete = on_message_complete,
};

/* A fresh parser for a session taken from the free list. */
void wire_init(struct sess *s)
{
    llhttp_init(&s->p, HTTP_REQUEST, &settings);
    /* Any HTTP-version digits pass llhttp (it knows 0.9, 1.0, 1.1 and 2.0
     * only); on_headers_complete decides: 1.x is handled, others are 505. */
    s->p.lenient_flags |= LENIENT_VERSION;
    s->p.data = s;
}
