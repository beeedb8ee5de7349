/*
 * The HTTP/1.1 server: accept, parse with llhttp straight from the loop's
 * receive buffers, route, answer in request order, time out.
 *
 * Memory: an idle keep-alive connection is only a struct conn (its receive
 * op, timeout-list links, the descriptor).  The parser, the request queue
 * and the send op live in a struct sess that a connection takes from the
 * server's free list when bytes arrive and gives back when it is idle
 * again.  Requests come from a free list too and keep their buffers, so the
 * steady state allocates nothing.
 *
 * Timeouts: no kernel timer per connection.  Every connection is on exactly
 * one of a few lists, one per state (head, body, idle, send, linger, none).
 * All entries of a list share one timeout, so appending on state entry (and
 * moving to the tail on activity) keeps each list in deadline order, and one
 * repeating timer per server pops the expired heads: O(expired) per sweep.
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
#include "eddy/http.h"

#include <arpa/inet.h>
#include <assert.h>
#include <errno.h>
#include <limits.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "llhttp.h"

#define HEAD_RESERVE 192u   /* room in front of the out buffer for the status line and fixed headers */
#define OUT_INIT 512u
#define OUT_KEEP (64u * 1024) /* larger buffers are not kept by a recycled request */
#define MAX_IOV 64u         /* one iovec per answer: up to 64 answers per send */
#define PEND_STOP (64u * 1024) /* stashed bytes beyond which reading stops */
#define SEND_MAX (256u * 1024) /* bytes per send: each completion is progress for the send timeout */

enum tlist { TL_NONE, TL_HEAD, TL_BODY, TL_IDLE, TL_SEND, TL_LINGER, TL_EOF, TL_COUNT };

enum {
    C_CLOSING = 1u << 0, /* closing: ops cancelled, fd closes when they end */
    C_LINGER = 1u << 1,  /* the last answer is sent and SHUT_WR done: discard input */
    C_SERVED = 1u << 2,  /* saw at least one request */
    C_CLOSED = 1u << 3,  /* eddy_close started */
    C_INCLOSE = 1u << 4, /* inside conn_close (no free yet) */
    C_READSTOP = 1u << 5, /* recv stopped for back-pressure (or never re-armed) */
    C_EOF = 1u << 6,     /* the client's EOF: answers still to send, nothing more to read */
};

struct conn {
    struct eddy_op rop; /* recv_multi; after it ended, the close */
    struct eddy_http_server *srv;
    struct conn *tnext, *tprev; /* timeout list (or the free list) */
    struct sess *s;
    int64_t since;      /* ns: entry into the current list, or last activity */
    int fd;
    uint8_t tl;
    uint8_t flags;
    uint16_t held;      /* aborted requests handlers still hold */
};

struct hdr {
    uint16_t n, nl, v, vl; /* offsets and lengths in the arena */
};

enum {
    R_DISPATCHED = 1u << 0,
    R_ANSWERED = 1u << 1, /* respond / stream_begin called */
    R_DONE = 1u << 2,     /* every byte of the answer is in out */
    R_ABORTED = 1u << 3,
    R_CLOSE = 1u << 4,    /* close the connection after this answer */
    R_HEADREQ = 1u << 5,  /* HEAD: no body */
    R_STREAM = 1u << 6,
    R_CHUNKED = 1u << 7,
    R_KEEPALIVE = 1u << 8,
    R_ARGS = 1u << 9,     /* query decoded into the arena */
    R_COMPLETE = 1u << 10, /* fully parsed */
    R_FREE = 1u << 11,    /* in the free list */
    R_INFLIGHT = 1u << 12, /* part of the send in flight */
    R_HASVER = 1u << 13,  /* the request line had an HTTP-version */
    R_NOBODY = 1u << 14,  /* 204 or 304 answer: neither body nor framing */
};

struct route {
    char *method; /* NULL = any */
    char *path;
    size_t plen;
    int flags;
    eddy_http_handler fn;
    void *ud;
};

struct eddy_http_req {
    struct conn *c;
    struct eddy_http_server *srv;
    struct eddy_http_req *next;
    char *arena;
    uint32_t alen, acap;
    uint32_t url, urllen; /* path at url (NUL at '?'), query after it */
    uint32_t query;
    uint32_t args, argslen; /* decoded "name\0value\0" pairs */
    struct hdr *h;
    unsigned nh;
    uint8_t last;         /* 1: field span, 2: value span (for joining split spans) */
    uint8_t method, vmaj, vmin;
    uint32_t flags;
    char *body;
    size_t blen, bcap;
    char *out, *oold;
    uint32_t ostart, olen, ocap, osent, oinfl;
    int status;
    eddy_http_abort_cb abort_cb;
    void *abort_ud;
};

struct sess {
    llhttp_t p;
    struct conn *c;
    struct eddy_http_req *head, *tail, *cur;
    unsigned nreq;       /* queued (parsed, not yet sent) */
    uint8_t in_msg, in_body, paused, stop;
    uint8_t batching;    /* parsing or dispatching: flush once at the end */
    uint8_t dropped;     /* client bytes were discarded (after stop): linger on close */
    int err;             /* status for an error found in a callback */
    const char *bufstart, *bufend;
    uint8_t mwait;       /* an invalid method: reading on to tell 501 from 400 */
    uint8_t mlen;        /* method bytes seen (in earlier buffers, or while mwait) */
    uint8_t mstate;      /* while mwait: 0 method, 1 target, 2 version, 3-4 line end */
    uint16_t mcnt;       /* while mwait: target or version bytes seen */
    char prev_last;      /* the last byte of the previous chunk (obs-fold check) */
    uint8_t fold_scan;   /* between a header's colon and its first value byte */
    uint8_t fold_nl;     /* ... and a line end was seen there (obs-fold) */
    const char *colon;   /* the end of the last field-name, in the current buffer */
    char *pend;          /* bytes received while paused */
    size_t pend_len, pend_cap;
    struct eddy_op sop;
    struct msghdr msg;
    struct iovec iov[MAX_IOV];
    struct eddy_http_req *sent_upto; /* the last request in the send in flight */
    struct sess *nextfree;
};

struct tlistq {
    struct conn *head, *tail;
    int64_t timeout_ns;
};

struct chunk {
    struct chunk *next;
};

struct eddy_http_server {
    struct eddy_loop *loop;
    struct eddy_http_options o;
    llhttp_settings_t settings;
    struct route *routes;
    unsigned nroutes;
    int lfd;
    bool listening, shutting, accept_dead, timer_dead, done_called;
    struct eddy_op aop, top;
    struct eddy_bufpool *pool;
    struct tlistq tl[TL_COUNT];
    struct conn *cfree;
    struct sess *sfree;
    struct eddy_http_req *rfree;
    struct chunk *chunks;
    unsigned nconns;
    int64_t drain_deadline;
    eddy_http_done_cb done;
    void *done_ud;
    time_t date_sec;
    char date[64];       /* "Date: ...\r\n" */
    size_t date_len;
    char server_hdr[80];
    size_t server_hdr_len;
    struct eddy_http_stats st;
};

static void conn_close(struct conn *c);
static void conn_retime(struct conn *c, bool touch);
static void sess_flush(struct sess *s);
static void conn_feed(struct conn *c, const char *data, size_t len);
static void conn_resume(struct conn *c);
static void check_done(struct eddy_http_server *srv);

/* ---- small helpers ----------------------------------------------------- */

static void *xalloc(struct eddy_http_server *srv, size_t n)
{
    return eddy_loop_alloc(srv->loop, n);
}

static void xfree(struct eddy_http_server *srv, void *p)
{
    if (p)
        eddy_loop_free(srv->loop, p);
}

static char *dupstr(struct eddy_http_server *srv, const char *s)
{
    size_t n = strlen(s) + 1;
    char *d = xalloc(srv, n);
    if (d)
        memcpy(d, s, n);
    return d;
}

/* RFC 9110 5.6.2: a character of a token (field-name, method). */
static bool is_tchar(unsigned char ch)
{
    return (ch >= '0' && ch <= '9') || ((ch | 0x20) >= 'a' && (ch | 0x20) <= 'z') ||
           (ch && strchr("!#$%&'*+-.^_`|~", ch));
}

static bool is_token(const char *s)
{
    if (!*s)
        return false;
    for (; *s; s++)
        if (!is_tchar((unsigned char)*s))
            return false;
    return true;
}

/* RFC 9110 5.5: a field value is visible characters, obs-text, SP and HTAB;
 * no other control character (CR, LF, NUL ... would end or split the line). */
static bool is_field_value(const char *s)
{
    for (; *s; s++) {
        unsigned char ch = (unsigned char)*s;
        if ((ch < 0x20 && ch != '\t') || ch == 0x7f)
            return false;
    }
    return true;
}

/* Registers a block so destroy frees it; returns the usable part. */
static void *chunk_alloc(struct eddy_http_server *srv, size_t n)
{
    struct chunk *ch = xalloc(srv, sizeof(struct chunk) + n);
    if (!ch)
        return NULL;
    memset(ch, 0, sizeof(struct chunk) + n);
    ch->next = srv->chunks;
    srv->chunks = ch;
    return ch + 1;
}

/*
 * Refills a free list: one chunk of n zeroed elements of size one, pushed
 * on the list whose head pointer is at head, through the pointer at link_off in each, so the first element
 * ends on top.  Connections, sessions and requests all grow this way.
 */
static char *chunk_carve(struct eddy_http_server *srv, size_t one, unsigned n,
                         size_t link_off, void *head)
{
    char *blk = chunk_alloc(srv, n * one);
    if (!blk)
        return NULL;
    /* The head and the links are typed pointers: copy bytes, never alias. */
    void *top;
    memcpy(&top, head, sizeof top);
    for (unsigned i = n; i-- > 0;) {
        char *x = blk + (size_t)i * one;
        memcpy(x + link_off, &top, sizeof top);
        top = x;
    }
    memcpy(head, &top, sizeof top);
    return blk;
}

const char *eddy_http_reason(int status)
{
    switch (status) {
    case 100: return "Continue";
    case 101: return "Switching Protocols";
    case 200: return "OK";
    case 201: return "Created";
    case 202: return "Accepted";
    case 204: return "No Content";
    case 206: return "Partial Content";
    case 301: return "Moved Permanently";
    case 302: return "Found";
    case 303: return "See Other";
    case 304: return "Not Modified";
    case 307: return "Temporary Redirect";
    case 308: return "Permanent Redirect";
    case 400: return "Bad Request";
    case 401: return "Unauthorized";
    case 403: return "Forbidden";
    case 404: return "Not Found";
    case 405: return "Method Not Allowed";
    case 408: return "Request Timeout";
    case 409: return "Conflict";
    case 411: return "Length Required";
    case 413: return "Content Too Large";
    case 414: return "URI Too Long";
    case 415: return "Unsupported Media Type";
    case 429: return "Too Many Requests";
    case 431: return "Request Header Fields Too Large";
    case 500: return "Internal Server Error";
    case 501: return "Not Implemented";
    case 502: return "Bad Gateway";
    case 503: return "Service Unavailable";
    case 504: return "Gateway Timeout";
    case 505: return "HTTP Version Not Supported";
    default: return "Unknown";
    }
}

static void date_refresh(struct eddy_http_server *srv)
{
    time_t now = time(NULL);
    if (now == srv->date_sec)
        return;
    srv->date_sec = now;
    struct tm tm;
    gmtime_r(&now, &tm);
    srv->date_len = strftime(srv->date, sizeof srv->date,
                             "Date: %a, %d %b %Y %H:%M:%S GMT\r\n", &tm);
}

/* ---- timeout lists ----------------------------------------------------- */

static void tl_remove(struct eddy_http_server *srv, struct conn *c)
{
    struct tlistq *q = &srv->tl[c->tl];
    if (c->tprev)
        c->tprev->tnext = c->tnext;
    else
        q->head = c->tnext;
    if (c->tnext)
        c->tnext->tprev = c->tprev;
    else
        q->tail = c->tprev;
    c->tnext = c->tprev = NULL;
}

static void tl_append(struct eddy_http_server *srv, struct conn *c, unsigned tl)
{
    struct tlistq *q = &srv->tl[tl];
    c->tl = (uint8_t)tl;
    c->since = eddy_now_ns(srv->loop);
    c->tnext = NULL;
    c->tprev = q->tail;
    if (q->tail)
        q->tail->tnext = c;
    else
        q->head = c;
    q->tail = c;
}

static unsigned conn_state(const struct conn *c)
{
    const struct sess *s = c->s;
    if (c->flags & C_LINGER)
        return TL_LINGER;
    if (s && eddy_op_active(&s->sop))
        return TL_SEND;
    if (c->flags & C_EOF)
        return TL_EOF; /* waiting for handlers after the EOF: bounded */
    if (s && s->in_msg && !s->paused && !s->stop)
        return s->in_body ? TL_BODY : TL_HEAD;
    if (s && s->nreq)
        return TL_NONE; /* handlers at work: their business */
    if (!(c->flags & C_SERVED))
        return TL_HEAD; /* a new connection must send its first request in time */
    return TL_IDLE;
}

/* Puts c on the list of its state; touch restarts the clock of the send
 * timeout on progress.  The head and body deadlines are totals (from the
 * first byte of the head, and from its end): bytes trickled in one at a
 * time must not keep a connection forever. */
static void conn_retime(struct conn *c, bool touch)
{
    if (c->flags & C_CLOSING)
        return;
    unsigned st = conn_state(c);
    if (st == c->tl && !(touch && st == TL_SEND))
        return;
    tl_remove(c->srv, c);
    tl_append(c->srv, c, st);
}

/* ---- requests ---------------------------------------------------------- */

static struct eddy_http_req *req_get(struct eddy_http_server *srv, struct conn *c)
{
    struct eddy_http_req *r = srv->rfree;
    if (!r) {
        size_t one = sizeof(struct eddy_http_req) + srv->o.max_headers * sizeof(struct hdr);
        char *blk = chunk_carve(srv, one, 16, offsetof(struct eddy_http_req, next),
                                &srv->rfree);
        if (!blk)
            return NULL;
        for (unsigned i = 0; i < 16; i++) {
            struct eddy_http_req *x = (struct eddy_http_req *)(void *)(blk + (size_t)i * one);
            x->h = (struct hdr *)(void *)(x + 1);
            x->flags = R_FREE;
        }
        r = srv->rfree;
    }
    srv->rfree = r->next;
    r->next = NULL;
    r->c = c;
    r->srv = srv;
    r->alen = 0;
    r->url = r->urllen = r->query = 0;
    r->args = r->argslen = 0;
    r->nh = 0;
    r->last = 0;
    r->method = 0;
    r->vmaj = 1;
    r->vmin = 1;
    r->flags = 0;
    r->blen = 0;
    r->ostart = 0;
    r->olen = HEAD_RESERVE;
    r->osent = r->oinfl = 0;
    r->oold = NULL;
    r->status = 0;
    r->abort_cb = NULL;
    r->abort_ud = NULL;
    return r;
}

static void req_put(struct eddy_http_req *r)
{
    struct eddy_http_server *srv = r->srv;
    assert(!(r->flags & R_FREE));
    if (r->ocap > OUT_KEEP) {
        xfree(srv, r->out);
        r->out = NULL;
        r->ocap = 0;
    }
    if (r->bcap > OUT_KEEP) {
        xfree(srv, r->body);
        r->body = NULL;
        r->bcap = 0;
    }
    xfree(srv, r->oold);
    r->oold = NULL;
    r->flags = R_FREE;
    r->c = NULL;
    r->next = srv->rfree;
    srv->rfree = r;
}

/* Appends n bytes to the head arena: 0, or the status to fail with (431
 * beyond max_header, 503 without memory). */
static int arena_put(struct eddy_http_req *r, const char *p, size_t n)
{
    struct eddy_http_server *srv = r->srv;
    if (r->alen + n + 1 > srv->o.max_header)
        return 431;
    if (r->alen + n + 1 > r->acap) {
        uint32_t cap = r->acap ? r->acap : 1024;
        while (cap < r->alen + n + 1)
            cap *= 2;
        char *a = eddy_loop_realloc(srv->loop, r->arena, cap);
        if (!a)
            return 503;
        r->arena = a;
        r->acap = cap;
    }
    memcpy(r->arena + r->alen, p, n);
    r->alen += (uint32_t)n;
    return 0;
}

static bool arena_reserve(struct eddy_http_req *r, size_t n)
{
    if (r->alen + n <= r->acap)
        return true;
    uint32_t cap = r->acap ? r->acap : 1024;
    while (cap < r->alen + n)
        cap *= 2;
    char *a = eddy_loop_realloc(r->srv->loop, r->arena, cap);
    if (!a)
        return false;
    r->arena = a;
    r->acap = cap;
    return true;
}

/* Makes room for n more bytes of answer at the end of out. */
static bool out_reserve(struct eddy_http_req *r, size_t n)
{
    if (r->olen + n <= r->ocap)
        return true;
    if ((size_t)r->olen + n > INT32_MAX)
        return false;
    size_t cap = r->ocap ? r->ocap : OUT_INIT;
    while (cap < r->olen + n)
        cap *= 2;
    if ((r->flags & R_INFLIGHT) && r->out) {
        /* The kernel is sending from the current buffer: keep it alive
         * until that send ends, continue in a copy. */
        char *nb = xalloc(r->srv, cap);
        if (!nb)
            return false;
        memcpy(nb, r->out, r->olen);
        xfree(r->srv, r->oold);
        r->oold = r->out;
        r->out = nb;
    } else {
        char *nb = eddy_loop_realloc(r->srv->loop, r->out, cap);
        if (!nb)
            return false;
        r->out = nb;
    }
    r->ocap = (uint32_t)cap;
    return true;
}

static void out_put(struct eddy_http_req *r, const void *p, size_t n)
{
    memcpy(r->out + r->olen, p, n);
    r->olen += (uint32_t)n;
}

/* ---- answers ----------------------------------------------------------- */

static size_t fmt_u(char *p, unsigned long long v)
{
    char tmp[24];
    size_t n = 0;
    do {
        tmp[n++] = (char)('0' + v % 10);
        v /= 10;
    } while (v);
    for (size_t i = 0; i < n; i++)
        p[i] = tmp[n - 1 - i];
    return n;
}

#define PUTS(p, s) (memcpy((p), (s), sizeof(s) - 1), (p) += sizeof(s) - 1)

/* Writes the status line and fixed headers right-aligned in front of the
 * headers already in out (the reserved gap), so one answer is one iovec. */
static void put_head(struct eddy_http_req *r, int status, long long clen)
{
    struct eddy_http_server *srv = r->srv;
    char head[HEAD_RESERVE];
    char *p = head;
    const char *reason = eddy_http_reason(status);
    size_t rl = strlen(reason);
    if (rl > 40)
        rl = 40;
    PUTS(p, "HTTP/1.1 ");
    p += fmt_u(p, (unsigned)status);
    *p++ = ' ';
    memcpy(p, reason, rl);
    p += rl;
    PUTS(p, "\r\n");
    memcpy(p, srv->server_hdr, srv->server_hdr_len);
    p += srv->server_hdr_len;
    memcpy(p, srv->date, srv->date_len);
    p += srv->date_len;
    if (clen >= 0) {
        PUTS(p, "Content-Length: ");
        p += fmt_u(p, (unsigned long long)clen);
        PUTS(p, "\r\n");
    } else if (r->flags & R_CHUNKED) {
        PUTS(p, "Transfer-Encoding: chunked\r\n");
    }
    if (r->flags & R_CLOSE)
        PUTS(p, "Connection: close\r\n");
    else if (r->vmin == 0)
        PUTS(p, "Connection: keep-alive\r\n");
    size_t n = (size_t)(p - head);
    assert(n <= HEAD_RESERVE);
    r->ostart = HEAD_RESERVE - (uint32_t)n;
    memcpy(r->out + r->ostart, head, n);
}

static bool conn_gone(const struct eddy_http_req *r)
{
    return (r->flags & R_ABORTED) || !r->c || (r->c->flags & C_CLOSING);
}

/* An aborted request's handler is done with it; the connection frees it
 * with the others once nothing is held any more. */
static void req_release_aborted(struct eddy_http_req *r)
{
    struct conn *c = r->c;
    if (!(r->flags & R_ABORTED))
        return;
    assert(c && c->held > 0);
    c->held--;
    conn_close(c); /* re-checks whether everything has ended */
}

static void answer_ready(struct eddy_http_req *r)
{
    struct conn *c = r->c;
    c->srv->st.responses++;
    sess_flush(c->s);
}

static int begin_answer(struct eddy_http_req *r, int status)
{
    if (r->flags & (R_ANSWERED | R_FREE))
        return -EALREADY;
    if (status < 200 || status > 999)
        return -EINVAL; /* 1xx are interim, not answers */
    if (!out_reserve(r, 2))
        return -ENOMEM;
    /* (Shutting down: the connection's last request is already marked to
     * close, see eddy_http_server_shutdown; the answers before it go out.) */
    r->status = status;
    return 0;
}

/* The connection closes after r's answer (the handler said Connection:
 * close): nothing after r is read or handled any more; requests behind it
 * already with their handlers hear the abort when it closes. */
static void req_close_after(struct eddy_http_req *r)
{
    struct conn *c = r->c;
    r->flags |= R_CLOSE;
    if (!c || !c->s || (c->flags & C_CLOSING))
        return;
    struct sess *s = c->s;
    s->stop = 1;
    if (s->pend_len)
        s->dropped = 1; /* unread client bytes: linger on close */
    s->pend_len = 0;
}

int eddy_http_set_header(struct eddy_http_req *r, const char *name, const char *value)
{
    if (r->flags & (R_ANSWERED | R_FREE))
        return -EALREADY;
    if (!name || !value || !is_token(name) || !is_field_value(value))
        return -EINVAL;
    /* The framing is the server's: its Content-Length or chunked coding
     * must be the only one, and it alone knows whether the connection
     * stays open.  A handler may only ask to close. */
    if (!strcasecmp(name, "content-length") || !strcasecmp(name, "transfer-encoding"))
        return -EINVAL;
    if (!strcasecmp(name, "connection")) {
        if (strcasecmp(value, "close") != 0)
            return -EINVAL;
        req_close_after(r); /* put_head says "Connection: close", once */
        return 0;
    }
    size_t nl = strlen(name), vl = strlen(value);
    if (!out_reserve(r, nl + vl + 4))
        return -ENOMEM;
    out_put(r, name, nl);
    out_put(r, ": ", 2);
    out_put(r, value, vl);
    out_put(r, "\r\n", 2);
    return 0;
}

int eddy_http_respond(struct eddy_http_req *r, int status, const char *ctype,
                      const void *body, size_t len)
{
    if ((len && !body) || len > INT32_MAX / 2 || (ctype && !is_field_value(ctype)))
        return -EINVAL;
    int rc = begin_answer(r, status);
    if (rc < 0)
        return rc;
    if (conn_gone(r)) {
        r->flags |= R_ANSWERED | R_DONE;
        req_release_aborted(r);
        return 0;
    }
    bool nobody = (r->flags & R_HEADREQ) || status == 204 || status == 304;
    size_t ctl = ctype ? strlen(ctype) : 0;
    if (!out_reserve(r, ctl + 18 + (nobody ? 0 : len)))
        return -ENOMEM;
    if (ctype) {
        out_put(r, "Content-Type: ", 14);
        out_put(r, ctype, ctl);
        out_put(r, "\r\n", 2);
    }
    out_put(r, "\r\n", 2);
    if (!nobody && len)
        out_put(r, body, len);
    put_head(r, status, (status == 204 || status == 304) ? -1 : (long long)len);
    r->flags |= R_ANSWERED | R_DONE;
    answer_ready(r);
    return 0;
}

int eddy_http_stream_begin(struct eddy_http_req *r, int status, const char *ctype)
{
    if (ctype && !is_field_value(ctype))
        return -EINVAL;
    int rc = begin_answer(r, status);
    if (rc < 0)
        return rc;
    if (conn_gone(r)) {
        r->flags |= R_ANSWERED | R_STREAM;
        return 0;
    }
    size_t ctl = ctype ? strlen(ctype) : 0;
    if (!out_reserve(r, ctl + 18))
        return -ENOMEM;
    if (ctype) {
        out_put(r, "Content-Type: ", 14);
        out_put(r, ctype, ctl);
        out_put(r, "\r\n", 2);
    }
    out_put(r, "\r\n", 2);
    /* 204 and 304 have no content (RFC 9110 6.4.1), so no framing either,
     * as in eddy_http_respond.  HEAD gets the head a GET would have had. */
    if (status == 204 || status == 304)
        r->flags |= R_NOBODY;
    else if (r->vmin == 0)
        r->flags |= R_CLOSE; /* HTTP/1.0: the body ends with the connection */
    else
        r->flags |= R_CHUNKED;
    put_head(r, status, -1);
    r->flags |= R_ANSWERED | R_STREAM;
    sess_flush(r->c->s);
    return 0;
}

int eddy_http_stream_write(struct eddy_http_req *r, const void *data, size_t len)
{
    if ((r->flags & (R_STREAM | R_DONE | R_FREE)) != R_STREAM)
        return (r->flags & R_STREAM) ? -EALREADY : -EINVAL;
    if (conn_gone(r) || len == 0 || (r->flags & (R_HEADREQ | R_NOBODY)))
        return 0; /* no body is sent: the bytes are dropped */
    if (len > INT32_MAX / 2)
        return -EINVAL;
    if (!out_reserve(r, len + 20))
        return -ENOMEM;
    if (r->flags & R_CHUNKED) {
        char hx[20];
        int n = snprintf(hx, sizeof hx, "%zx\r\n", len);
        out_put(r, hx, (size_t)n);
        out_put(r, data, len);
        out_put(r, "\r\n", 2);
    } else {
        out_put(r, data, len);
    }
    sess_flush(r->c->s);
    return 0;
}

int eddy_http_stream_end(struct eddy_http_req *r)
{
    if ((r->flags & (R_STREAM | R_DONE | R_FREE)) != R_STREAM)
        return (r->flags & R_STREAM) ? -EALREADY : -EINVAL;
    if (conn_gone(r)) {
        r->flags |= R_DONE;
        req_release_aborted(r);
        return 0;
    }
    if (r->flags & R_CHUNKED) {
        if (!(r->flags & R_HEADREQ)) {
            if (!out_reserve(r, 5))
                return -ENOMEM;
            out_put(r, "0\r\n\r\n", 5);
        }
    }
    r->flags |= R_DONE;
    answer_ready(r);
    return 0;
}

/* ---- sending ----------------------------------------------------------- */

static void send_done(struct eddy_op *op, int res);

/* Sends every answer that is ready, in request order, in one send(msg). */
static void sess_flush(struct sess *s)
{
    struct conn *c = s->c;
    if (s->batching || eddy_op_active(&s->sop) || (c->flags & (C_CLOSING | C_LINGER)))
        return;
    unsigned n = 0;
    size_t total = 0;
    struct eddy_http_req *last = NULL;
    for (struct eddy_http_req *r = s->head; r && n < MAX_IOV; r = r->next) {
        if (!(r->flags & R_ANSWERED))
            break;
        uint32_t from = r->osent ? r->osent : r->ostart;
        bool more = r->olen > from;
        if (!more && !(r->flags & R_DONE))
            break; /* a stream with nothing new yet */
        r->oinfl = r->olen;
        if (more) {
            size_t seg = r->olen - from;
            if (seg > SEND_MAX - total)
                seg = SEND_MAX - total; /* a large answer goes in slices */
            s->iov[n].iov_base = r->out + from;
            s->iov[n].iov_len = seg;
            n++;
            total += seg;
            r->oinfl = from + (uint32_t)seg;
        }
        r->flags |= R_INFLIGHT;
        last = r;
        if (r->oinfl < r->olen || !(r->flags & R_DONE) || (r->flags & R_CLOSE) ||
            total >= SEND_MAX)
            break;
    }
    if (!last)
        return;
    s->sent_upto = last;
    if (n == 0) {
        /* Nothing new to send (a stream that ended with nothing pending):
         * complete as if a send of 0 bytes finished. */
        s->sop.data = s;
        eddy_post(c->srv->loop, &s->sop, send_done);
        return;
    }
    s->sop.data = s;
    c->srv->st.sends++;
    int rc;
    if (n == 1) {
        /* One answer (the usual case): a plain send, which spares the kernel
         * copying in a msghdr and an iovec. */
        rc = eddy_send(c->srv->loop, &s->sop, c->fd, s->iov[0].iov_base, s->iov[0].iov_len,
                       0, send_done);
    } else {
        memset(&s->msg, 0, sizeof s->msg);
        s->msg.msg_iov = s->iov;
        s->msg.msg_iovlen = n;
        rc = eddy_sendmsg(c->srv->loop, &s->sop, c->fd, &s->msg, 0, send_done);
    }
    if (rc < 0) {
        conn_close(c);
        return;
    }
    conn_retime(c, true);
}

static void recv_cb(struct eddy_op *op, int res);

/* Sends our FIN and reads (discarding) until the client's, or a timeout. */
static void conn_linger(struct conn *c)
{
    shutdown(c->fd, SHUT_WR);
    c->flags |= C_LINGER;
    bool reading = eddy_op_active(&c->rop);
    if (!reading && !(c->flags & (C_EOF | C_READSTOP))) /* the first receive ended */
        reading = eddy_recv_multi(c->srv->loop, &c->rop, c->fd, c->srv->pool, recv_cb) == 0;
    if (!reading) {
        conn_close(c);
        return;
    }
    conn_retime(c, false);
}

static void sess_release_if_idle(struct conn *c);

static void send_done(struct eddy_op *op, int res)
{
    struct sess *s = op->data;
    struct conn *c = s->c;
    if (res < 0 || (c->flags & C_CLOSING)) {
        conn_close(c);
        return;
    }
    bool close_after = false, clean = false;
    for (;;) {
        struct eddy_http_req *r = s->head;
        if (!r)
            break;
        r->osent = r->oinfl;
        r->flags &= ~(uint32_t)R_INFLIGHT;
        xfree(c->srv, r->oold);
        r->oold = NULL;
        bool done = (r->flags & R_DONE) && r->osent == r->olen;
        bool stop = r == s->sent_upto;
        if (done) {
            if (r->flags & R_CLOSE) {
                close_after = true;
                clean = (r->flags & R_COMPLETE) != 0;
            }
            s->head = r->next;
            if (!s->head)
                s->tail = NULL;
            s->nreq--;
            req_put(r);
        }
        if (stop || !done || close_after)
            break;
    }
    s->sent_upto = NULL;
    if (close_after) {
        /* Lingering (RFC 9112 9.6) keeps client bytes that arrive after the
         * close from turning our answer into an RST.  A fully read request
         * with nothing after it, or a client already at EOF, leaves none to
         * come: close at once, as nginx does, without the shutdown and the
         * wait for the client's FIN. */
        if (clean && ((c->flags & C_EOF) || (!s->head && !s->cur && !s->in_msg &&
                                             !s->pend_len && !s->dropped && !s->mwait)))
            conn_close(c);
        else
            conn_linger(c);
        return;
    }
    if (s->paused && s->nreq < c->srv->o.max_pipeline)
        conn_resume(c);
    if (c->flags & C_CLOSING)
        return;
    sess_flush(s);
    if (!eddy_op_active(&s->sop))
        sess_release_if_idle(c);
    conn_retime(c, true);
}

/* ---- sessions ---------------------------------------------------------- */

static struct sess *sess_get(struct eddy_http_server *srv, struct conn *c)
{
    struct sess *s = srv->sfree;
    if (!s) {
        if (!chunk_carve(srv, sizeof *s, 16, offsetof(struct sess, nextfree),
                         &srv->sfree))
            return NULL;
        s = srv->sfree;
    }
    srv->sfree = s->nextfree;
    llhttp_init(&s->p, HTTP_REQUEST, &srv->settings);
    /* Any HTTP-version digits pass llhttp (it knows 0.9, 1.0, 1.1 and 2.0
     * only); on_headers_complete decides: 1.x is handled, others are 505. */
    s->p.lenient_flags |= LENIENT_VERSION;
    s->p.data = s;
    s->c = c;
    s->head = s->tail = s->cur = NULL;
    s->nreq = 0;
    s->in_msg = s->in_body = s->paused = s->stop = 0;
    s->batching = 0;
    s->dropped = 0;
    s->err = 0;
    s->mwait = s->mlen = 0;
    s->prev_last = 0;
    s->fold_scan = s->fold_nl = 0;
    s->colon = NULL;
    s->pend_len = 0;
    s->sent_upto = NULL;
    c->s = s;
    return s;
}

static void sess_put(struct conn *c)
{
    struct sess *s = c->s;
    struct eddy_http_server *srv = c->srv;
    assert(!eddy_op_active(&s->sop));
    if (s->pend_cap > PEND_STOP) {
        xfree(srv, s->pend);
        s->pend = NULL;
        s->pend_cap = 0;
    }
    s->nextfree = srv->sfree;
    srv->sfree = s;
    c->s = NULL;
}

/* A connection between requests needs no parser: give the session back. */
static void sess_release_if_idle(struct conn *c)
{
    struct sess *s = c->s;
    if (!s || s->nreq || s->in_msg || s->pend_len || s->stop || s->paused ||
        eddy_op_active(&s->sop) || (c->flags & (C_CLOSING | C_LINGER)))
        return;
    sess_put(c);
}

/* ---- closing ----------------------------------------------------------- */

static void close_done(struct eddy_op *op, int res)
{
    struct conn *c = eddy_container_of(op, struct conn, rop);
    struct eddy_http_server *srv = c->srv;
    (void)res;
    if (c->s)
        sess_put(c);
    c->flags = 0;
    c->tnext = srv->cfree;
    srv->cfree = c;
    srv->nconns--;
    check_done(srv);
}

/* Closes c: cancels its ops, tells handlers still holding requests, and
 * closes the descriptor once every op has ended and every held request is
 * answered.  Safe to call again: each call re-checks whether the
 * descriptor can be closed now.  Requests stay on the session's list until
 * then, because a send in flight may still read their buffers. */
static void conn_close(struct conn *c)
{
    struct sess *s = c->s;
    if (c->flags & C_CLOSED)
        return;
    if (!(c->flags & C_CLOSING)) {
        c->flags |= C_CLOSING | C_INCLOSE;
        tl_remove(c->srv, c);
        c->tl = TL_NONE;
        if (eddy_op_active(&c->rop))
            eddy_cancel(c->srv->loop, &c->rop);
        if (s && eddy_op_active(&s->sop))
            eddy_cancel(c->srv->loop, &s->sop);
        if (s) {
            struct eddy_http_req *r;
            for (r = s->head; r; r = r->next) {
                if ((r->flags & R_DISPATCHED) && !(r->flags & R_DONE)) {
                    r->flags |= R_ABORTED;
                    c->held++;
                }
            }
            /* An abort callback may answer at once; the list does not
             * change under us (answers to aborted requests only count). */
            for (r = s->head; r; r = r->next)
                if ((r->flags & R_ABORTED) && !(r->flags & R_DONE) && r->abort_cb)
                    r->abort_cb(r, r->abort_ud);
        }
        c->flags &= (uint8_t)~C_INCLOSE;
    }
    if (c->flags & C_INCLOSE)
        return;
    if (eddy_op_active(&c->rop) || (s && eddy_op_active(&s->sop)) || c->held)
        return;
    c->flags |= C_CLOSED;
    if (s) {
        struct eddy_http_req *r = s->head;
        while (r) {
            struct eddy_http_req *next = r->next;
            req_put(r);
            r = next;
        }
        s->head = s->tail = NULL;
        s->nreq = 0;
        if (s->cur) {
            req_put(s->cur);
            s->cur = NULL;
        }
    }
    if (eddy_close(c->srv->loop, &c->rop, c->fd, close_done) < 0)
        close_done(&c->rop, 0); /* cannot happen with a valid fd */
}

/* ---- the server's own answers ------------------------------------------ */

/* The server's own answer, or (no memory even for that) a close: a
 * request the server answers itself must never stay unanswered. */
static void answer_or_drop(struct eddy_http_req *r, int status, const char *body, size_t len)
{
    if (eddy_http_respond(r, status, "text/plain", body, len) == 0)
        return;
    r->flags |= R_ANSWERED | R_DONE | R_CLOSE;
    conn_close(r->c);
}

/* Queues an error answer behind the requests already queued, stops parsing
 * and closes after it. */
static void conn_error(struct conn *c, int status)
{
    struct sess *s = c->s;
    struct eddy_http_server *srv = c->srv;
    if (s->cur) {
        req_put(s->cur);
        s->cur = NULL;
    }
    s->stop = 1;
    s->in_msg = 0;
    s->pend_len = 0;
    srv->st.errors++;
    struct eddy_http_req *r = req_get(srv, c);
    if (!r) {
        conn_close(c);
        return;
    }
    r->flags |= R_CLOSE | R_DISPATCHED;
    if (s->tail)
        s->tail->next = r;
    else
        s->head = r;
    s->tail = r;
    s->nreq++;
    const char *reason = eddy_http_reason(status);
    char body[64];
    int n = snprintf(body, sizeof body, "%d %s\n", status, reason);
    answer_or_drop(r, status, body, (size_t)n);
}

/* ---- routing ----------------------------------------------------------- */

static bool route_match(const struct route *rt, const char *path, size_t plen, bool exact,
                        size_t prefix_len)
{
    if (exact)
        return rt->flags == EDDY_HTTP_EXACT && rt->plen == plen && !memcmp(rt->path, path, plen);
    return rt->flags == EDDY_HTTP_PREFIX && rt->plen <= plen && rt->plen == prefix_len &&
           !memcmp(rt->path, path, rt->plen);
}

/* Whether the ", "-separated list holds the name m (m may be part of
 * another name: LOCK of UNLOCK, SEARCH of M-SEARCH). */
static bool list_has(const char *list, const char *m, size_t ml)
{
    for (const char *p = list; (p = strstr(p, m)) != NULL; p += ml)
        if ((p == list || p[-1] == ' ') && (p[ml] == ',' || p[ml] == 0))
            return true;
    return false;
}

static void route_dispatch(struct eddy_http_req *r)
{
    struct eddy_http_server *srv = r->srv;
    const char *path = r->arena + r->url;
    size_t plen = strlen(path);
    const char *m = llhttp_method_name((llhttp_method_t)r->method);
    bool head = r->method == HTTP_HEAD;
    bool exact = false, known = false;
    size_t pl = 0;
    /* An exact route wins over every prefix; among prefixes the longest. */
    for (unsigned i = 0; i < srv->nroutes; i++)
        if (route_match(&srv->routes[i], path, plen, true, 0))
            exact = known = true;
    if (!exact) {
        for (unsigned i = 0; i < srv->nroutes; i++) {
            struct route *rt = &srv->routes[i];
            if (rt->flags == EDDY_HTTP_PREFIX && rt->plen <= plen &&
                !memcmp(rt->path, path, rt->plen) && (!known || rt->plen > pl)) {
                known = true;
                pl = rt->plen;
            }
        }
    }
    /* The route of this very method, else (HEAD) the GET route, else the
     * any-method route: the order of registration does not matter (and
     * eddy_http_route refuses duplicates, so each is unique). */
    struct route *same = NULL, *head_get = NULL, *any = NULL;
    for (unsigned i = 0; known && i < srv->nroutes; i++) {
        struct route *rt = &srv->routes[i];
        if (!route_match(rt, path, plen, exact, pl))
            continue;
        if (!rt->method)
            any = rt;
        else if (!strcmp(rt->method, m))
            same = rt;
        else if (head && !strcmp(rt->method, "GET"))
            head_get = rt;
    }
    struct route *best = same ? same : head_get ? head_get : any;
    r->flags |= R_DISPATCHED;
    srv->st.requests++;
    if (best) {
        best->fn(r, best->ud);
        return;
    }
    srv->st.errors++;
    if (!known) {
        answer_or_drop(r, 404, "404 Not Found\n", 14);
        return;
    }
    /* 405: list the methods the path does have (each once). */
    char allow[256];
    size_t al = 0;
    allow[0] = 0;
    for (unsigned i = 0; i < srv->nroutes; i++) {
        struct route *rt = &srv->routes[i];
        if (!route_match(rt, path, plen, exact, pl) || !rt->method)
            continue;
        const char *ms[2] = {rt->method, !strcmp(rt->method, "GET") ? "HEAD" : NULL};
        for (int k = 0; k < 2 && ms[k]; k++) {
            size_t ml = strlen(ms[k]);
            if (list_has(allow, ms[k], ml) || al + ml + 3 >= sizeof allow)
                continue;
            if (al) {
                memcpy(allow + al, ", ", 2);
                al += 2;
            }
            memcpy(allow + al, ms[k], ml + 1);
            al += ml;
        }
    }
    if (eddy_http_set_header(r, "Allow", allow) < 0)
        answer_or_drop(r, 0, NULL, 0); /* 405 needs its Allow: no half answer */
    else
        answer_or_drop(r, 405, "405 Method Not Allowed\n", 23);
}

/* ---- parsing ----------------------------------------------------------- */

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
    /* The fields the server itself checks, in one pass over the headers. */
    const char *host = NULL, *te = NULL, *expect = NULL;
    unsigned nhost = 0, nte = 0;
    bool conn_close = false, conn_keep = false;
    for (unsigned i = 0; i < r->nh; i++) {
        const char *n = r->arena + r->h[i].n, *v = r->arena + r->h[i].v;
        switch (n[0] | 0x20) {
        case 'c':
            if (!strcasecmp(n, "connection"))
                conn_options(v, &conn_close, &conn_keep);
            break;
        case 'h':
            if (!strcasecmp(n, "host") && !nhost++)
                host = v;
            break;
        case 't':
            if (!strcasecmp(n, "transfer-encoding") && !nte++)
                te = v;
            break;
        case 'e':
            if (!expect && !strcasecmp(n, "expect"))
                expect = v;
            break;
        }
    }
    /* RFC 9112 3.2: a 1.1 request without Host, or with several, is 400. */
    if (nhost > 1 || (r->vmin == 1 && nhost == 0))
        return fail(s, 400);
    /* ... and so is a Host that is no uri-host [":" port] (RFC 3986 3.2.2:
     * reg-name, IPv4, IP-literal): no space, "@", "/", "?", "#" ... */
    if (host) {
        const unsigned char *h = (const unsigned char *)host;
        while (*h && uri_host_char(*h))
            h++;
        if (*h)
            return fail(s, 400);
    }
    if (te) {
        /* RFC 9112 6.1: CL with TE, and TE in HTTP/1.0, are faulty framing. */
        if ((p->flags & F_CONTENT_LENGTH) || r->vmin == 0 || nte > 1)
            return fail(s, 400);
        /* Only chunked is supported.  chunked not last is faulty framing
         * (400); other codings are not implemented (501). */
        if (strcasecmp(te, "chunked") != 0) {
            size_t tl = strlen(te);
            bool last = tl > 7 && !strcasecmp(te + tl - 7, "chunked") &&
                        (te[tl - 8] == ',' || te[tl - 8] == ' ' || te[tl - 8] == '\t');
            if (!last && strcasestr(te, "chunked"))
                return fail(s, 400);
            return fail(s, 501);
        }
    }
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
    if (expect && !strcasecmp(expect, "100-continue") && !s->head &&
        ((p->flags & F_CHUNKED) || p->content_length > 0)) {
        static const char cont[] = "HTTP/1.1 100 Continue\r\n\r\n";
        /* a fresh socket buffer always takes these bytes */
        ssize_t k = send(s->c->fd, cont, sizeof cont - 1, MSG_DONTWAIT | MSG_NOSIGNAL);
        (void)k;
    }
    /* close wins in any Connection list (RFC 9112 9.6), in 1.0 too, where
     * llhttp lets keep-alive win; and whatever llhttp takes for a close is
     * one, since it parses nothing after it. */
    if (conn_close || !llhttp_should_keep_alive(p) || (r->vmin == 0 && !conn_keep))
        r->flags |= R_CLOSE;
    else if (r->vmin == 0)
        r->flags |= R_KEEPALIVE;
    s->in_body = 1;
    return 0;
}

static int on_body(llhttp_t *p, const char *at, size_t n)
{
    struct sess *s = P(p);
    struct eddy_http_req *r = s->cur;
    struct eddy_http_server *srv = r->srv;
    if (r->blen + n > srv->o.max_body)
        return fail(s, 413);
    if (r->blen + n + 1 > r->bcap) {
        size_t cap = r->bcap ? r->bcap : 1024;
        while (cap < r->blen + n + 1)
            cap *= 2;
        char *b = eddy_loop_realloc(srv->loop, r->body, cap);
        if (!b)
            return fail(s, 503);
        r->body = b;
        r->bcap = cap;
    }
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
    if (s->tail)
        s->tail->next = r;
    else
        s->head = r;
    s->tail = r;
    s->nreq++;
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
static int method_verdict(struct sess *s, const char *p, size_t n)
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

/* Runs every parsed request's handler (in order), then sends what is ready. */
static void dispatch_new(struct sess *s)
{
    /* Handlers answer synchronously into out; one flush afterwards sends
     * the whole batch in one send. */
    for (struct eddy_http_req *r = s->head; r; r = r->next) {
        if (!(r->flags & R_DISPATCHED)) {
            route_dispatch(r);
            if (s->c->flags & C_CLOSING)
                return;
        }
        if (r->flags & R_CLOSE)
            return; /* the connection closes after r: nothing behind it is handled */
    }
}

/* Parses len bytes.  Returns how many were consumed (less when paused). */
static size_t parse(struct conn *c, const char *data, size_t len)
{
    struct sess *s = c->s;
    s->bufstart = data;
    s->bufend = data + len;
    s->colon = NULL;
    llhttp_errno_t e = llhttp_execute(&s->p, data, len);
    size_t used = len;
    if (e == HPE_PAUSED) {
        used = (size_t)(llhttp_get_error_pos(&s->p) - data);
        llhttp_resume(&s->p);
    } else if (e == HPE_PAUSED_UPGRADE) {
        /* Upgrade is not supported: answer the request, then close. */
        used = len;
        s->dropped = 1; /* the upgraded protocol's bytes may follow */
        if (s->tail)
            s->tail->flags |= R_CLOSE;
        s->stop = 1;
    } else if (e == HPE_INVALID_METHOD && !s->err) {
        int st = method_judge(s, llhttp_get_error_pos(&s->p), data, len);
        if (st)
            conn_error(c, st);
        else
            s->mwait = 1; /* the header timeout still runs (in_msg) */
        return len;
    } else if (e != HPE_OK) {
        conn_error(c, map_error(s, e));
        return len;
    }
    if (used)
        s->prev_last = data[used - 1];
    if (s->fold_scan) {
        /* between a colon and its value at the end of this buffer */
        const char *from = s->colon ? s->colon : data;
        if (from < data + used && memchr(from, '\n', (size_t)(data + used - from)))
            s->fold_nl = 1;
    }
    s->colon = NULL; /* the buffer goes back to the pool */
    return used;
}

/* Keeps bytes that cannot be parsed yet (paused) for later. */
static bool stash(struct sess *s, const char *data, size_t len)
{
    if (s->pend_len + len > s->pend_cap) {
        size_t cap = s->pend_cap ? s->pend_cap : 4096;
        while (cap < s->pend_len + len)
            cap *= 2;
        char *b = eddy_loop_realloc(s->c->srv->loop, s->pend, cap);
        if (!b)
            return false;
        s->pend = b;
        s->pend_cap = cap;
    }
    memcpy(s->pend + s->pend_len, data, len);
    s->pend_len += len;
    return true;
}

static void conn_feed(struct conn *c, const char *data, size_t len)
{
    struct sess *s = c->s;
    if (s->stop || (c->flags & C_LINGER)) {
        s->dropped = 1; /* after an error or a closing request: discard */
        return;
    }
    if (s->mwait) {
        int st = method_verdict(s, data, len);
        if (st)
            conn_error(c, st);
        return;
    }
    if (s->paused) {
        if (!stash(s, data, len)) {
            conn_close(c);
            return;
        }
        if (s->pend_len > PEND_STOP && eddy_op_active(&c->rop)) {
            c->flags |= C_READSTOP;
            c->srv->st.read_stops++;
            eddy_cancel(c->srv->loop, &c->rop);
        }
        return;
    }
    size_t used = parse(c, data, len);
    if (s->stop && used < len)
        s->dropped = 1;
    else if (!s->stop && used < len && !stash(s, data + used, len - used))
        conn_close(c);
}

static bool eof_settle(struct conn *c);

/* Answers drained under the cap: parse what waited, read again. */
static void conn_resume(struct conn *c)
{
    struct sess *s = c->s;
    s->paused = 0;
    if (s->pend_len) {
        s->batching = 1;
        size_t used = parse(c, s->pend, s->pend_len);
        if (c->flags & C_CLOSING)
            return;
        if (s->stop) {
            if (used < s->pend_len)
                s->dropped = 1;
            s->pend_len = 0;
        } else {
            memmove(s->pend, s->pend + used, s->pend_len - used);
            s->pend_len -= used;
        }
        dispatch_new(s);
        s->batching = 0;
        if (c->flags & C_CLOSING)
            return;
    }
    if (c->flags & C_EOF) {
        if (!s->paused && !eof_settle(c))
            conn_close(c);
        return;
    }
    if (!s->paused && (c->flags & C_READSTOP) && !eddy_op_active(&c->rop)) {
        c->flags &= (uint8_t)~C_READSTOP;
        if (eddy_recv_multi(c->srv->loop, &c->rop, c->fd, c->srv->pool, recv_cb) < 0)
            conn_close(c);
    }
}

/*
 * eof_finish: the EOF point is reached (any stash of a paused connection
 * parsed): a request cut short is dropped, and the last request received
 * closes the connection once answered.  False: nothing to answer, close.
 */
static bool eof_settle(struct conn *c)
{
    struct sess *s = c->s;
    if (s->cur) {
        req_put(s->cur);
        s->cur = NULL;
    }
    s->in_msg = s->in_body = 0;
    s->stop = 1;
    s->pend_len = 0;
    if (!s->tail)
        return false;
    s->tail->flags |= R_CLOSE;
    conn_retime(c, false);
    return true;
}

/*
 * EOF: a half-close (shutdown(SHUT_WR) after the request) cannot be told
 * from a close until a send fails.  By default the answers already made
 * (the answered head of the queue) are still sent, then the connection
 * closes; requests not answered yet are aborted.  With eof_finish every
 * request received waits for its answer (at most eof_timeout_ms per wait).
 * False: close now.
 */
static bool eof_keep_answers(struct conn *c)
{
    struct sess *s = c->s;
    if (!s || (c->flags & (C_CLOSING | C_LINGER)))
        return false;
    c->flags = (uint8_t)((c->flags | C_EOF) & ~C_READSTOP);
    if (c->srv->o.eof_finish) {
        if (!s->paused)
            return eof_settle(c);
        conn_retime(c, false); /* conn_resume parses the stash, then settles */
        return true;
    }
    struct eddy_http_req *last = NULL;
    for (struct eddy_http_req *r = s->head; r && (r->flags & R_ANSWERED); r = r->next)
        last = r;
    if (!last)
        return false;
    last->flags |= R_CLOSE; /* after it: half-close, and close_done on the way out */
    s->stop = 1;            /* nothing more is parsed */
    s->paused = 0;
    s->pend_len = 0;
    conn_retime(c, false);
    return true;
}

/*
 * After the first chunk: a lone request that asked to close, answered in
 * full at once, leaves nothing to read; the connection closes when the
 * answer is sent, with no receive to cancel on the way (a Connection: close
 * load then costs one SQE and two CQEs less per connection).
 */
static bool conn_read_done(const struct conn *c)
{
    const struct sess *s = c->s;
    return s && s->head && s->head == s->tail && (s->head->flags & R_CLOSE) &&
           (s->head->flags & R_DONE) && !s->cur && !s->in_msg && !s->pend_len &&
           !s->dropped;
}

/* Keeps reading after the first chunk, unless there is nothing to read or
 * the stash is already over the back-pressure mark (conn_resume re-arms). */
static void conn_read_on(struct conn *c)
{
    if (eddy_op_active(&c->rop) || (c->flags & (C_CLOSING | C_EOF | C_READSTOP)) ||
        conn_read_done(c))
        return;
    if (c->s && c->s->paused && c->s->pend_len > PEND_STOP) {
        c->flags |= C_READSTOP;
        c->srv->st.read_stops++;
        return;
    }
    if (eddy_recv_multi(c->srv->loop, &c->rop, c->fd, c->srv->pool, recv_cb) < 0)
        conn_close(c);
}

static void recv_cb(struct eddy_op *op, int res)
{
    struct conn *c = eddy_container_of(op, struct conn, rop);
    struct eddy_http_server *srv = c->srv;
    /* The first receive is an eddy_recv_once: its data comes final. */
    bool first = !(op->flags & EDDY_OP_MORE) && (op->flags & EDDY_OP_BUFFER);
    if (!(op->flags & EDDY_OP_MORE) && !first) {
        /* The receive ended: EOF, an error, or our cancel. */
        if (res == -ECANCELED && (c->flags & C_READSTOP) && !(c->flags & C_CLOSING)) {
            /* Stopped for back-pressure: conn_resume re-arms, unless the
             * answers drained while the cancel was on its way. */
            if (c->s && c->s->paused)
                return;
            c->flags &= (uint8_t)~C_READSTOP;
            if (eddy_recv_multi(srv->loop, &c->rop, c->fd, srv->pool, recv_cb) == 0)
                return;
        }
        if (res == 0 && eof_keep_answers(c))
            return;
        conn_close(c);
        return;
    }
    if (op->flags & EDDY_OP_BUFFER) {
        if (!(c->flags & C_CLOSING) && !(c->flags & C_LINGER)) {
            if (!c->s && !sess_get(srv, c)) {
                eddy_bufpool_put(srv->pool, op->bid);
                conn_close(c);
                return;
            }
            c->s->batching = 1;
            conn_feed(c, op->buf, (size_t)res);
        }
        eddy_bufpool_put(srv->pool, op->bid);
    }
    if (c->flags & C_CLOSING) {
        if (first)
            conn_close(c); /* it waited for this receive to end */
        return;
    }
    if (!c->s)
        return;
    c->s->batching = 1;
    dispatch_new(c->s);
    c->s->batching = 0;
    if (c->flags & C_CLOSING)
        return;
    sess_flush(c->s);
    if (c->flags & C_CLOSING)
        return;
    if (first) {
        conn_read_on(c);
        if (c->flags & C_CLOSING)
            return;
    }
    sess_release_if_idle(c);
    conn_retime(c, true);
}

/* ---- accepting --------------------------------------------------------- */

static struct conn *conn_get(struct eddy_http_server *srv)
{
    struct conn *c = srv->cfree;
    if (!c) {
        if (!chunk_carve(srv, sizeof *c, 64, offsetof(struct conn, tnext),
                         &srv->cfree))
            return NULL;
        c = srv->cfree;
    }
    srv->cfree = c->tnext;
    memset(c, 0, sizeof *c);
    return c;
}

/* Serves the connected socket fd (owned from here on, closed on error). */
static int conn_start(struct eddy_http_server *srv, int fd)
{
    struct conn *c = conn_get(srv);
    if (!c) {
        close(fd);
        return -ENOMEM;
    }
    c->srv = srv;
    c->fd = fd;
    srv->nconns++;
    tl_append(srv, c, TL_HEAD);
    int rc = eddy_recv_once(srv->loop, &c->rop, fd, srv->pool, recv_cb);
    if (rc < 0) {
        tl_remove(srv, c);
        c->flags |= C_CLOSING;
        conn_close(c);
        return rc; /* the descriptor closes through conn_close */
    }
    return 0;
}

static const char busy_503[] =
    "HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\nConnection: close\r\n\r\n";

static void accept_cb(struct eddy_op *op, int res)
{
    struct eddy_http_server *srv = eddy_container_of(op, struct eddy_http_server, aop);
    if (!(op->flags & EDDY_OP_MORE)) {
        srv->accept_dead = true;
        if (res >= 0)
            close(res);
        check_done(srv);
        return;
    }
    if (res < 0)
        return; /* EMFILE and friends: the loop backs off for us */
    srv->st.accepted++;
    if (srv->shutting || srv->nconns >= srv->o.max_conns) {
        /* Over the cap: a short canned answer, never a hang.  The socket
         * buffer of a fresh connection always takes these few bytes. */
        srv->st.rejected++;
        ssize_t n = send(res, busy_503, sizeof busy_503 - 1, MSG_DONTWAIT | MSG_NOSIGNAL);
        (void)n;
        close(res);
        return;
    }
    conn_start(srv, res);
}

int eddy_http_server_adopt(struct eddy_http_server *srv, int fd)
{
    if (fd < 0)
        return -EBADF;
    if (!srv->listening || srv->shutting) {
        close(fd);
        return srv->shutting ? -ESHUTDOWN : -EINVAL;
    }
    if (srv->nconns >= srv->o.max_conns) {
        srv->st.rejected++;
        close(fd);
        return -EBUSY;
    }
    srv->st.accepted++;
    /* Accepted sockets inherit TCP_NODELAY from the listener; this one
     * came from elsewhere. */
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one); /* fails harmlessly off TCP */
    return conn_start(srv, fd);
}

/* ---- the sweep --------------------------------------------------------- */

static void expire(struct conn *c)
{
    struct eddy_http_server *srv = c->srv;
    srv->st.timeouts++;
    switch (c->tl) {
    case TL_HEAD:
    case TL_BODY:
        if (c->s && c->s->in_msg && !eddy_op_active(&c->s->sop)) {
            /* slowloris: say why, then close */
            tl_remove(srv, c);
            tl_append(srv, c, TL_NONE);
            conn_error(c, 408);
            if (!(c->flags & C_CLOSING))
                conn_retime(c, false);
            return;
        }
        conn_close(c);
        return;
    default:
        conn_close(c); /* idle, slow reader, linger, handlers after the EOF: quietly */
        return;
    }
}

static void sweep_cb(struct eddy_op *op, int res)
{
    struct eddy_http_server *srv = eddy_container_of(op, struct eddy_http_server, top);
    if (!(op->flags & EDDY_OP_MORE)) {
        srv->timer_dead = true;
        check_done(srv);
        return;
    }
    date_refresh(srv);
    int64_t now = eddy_now_ns(srv->loop);
    for (unsigned t = TL_HEAD; t < TL_COUNT; t++) {
        struct tlistq *q = &srv->tl[t];
        /* Bounded per list: an expired entry always leaves the list (or
         * moves to TL_NONE), so this terminates. */
        while (q->head && q->head->since + q->timeout_ns <= now)
            expire(q->head);
    }
    if (srv->shutting && now >= srv->drain_deadline) {
        for (unsigned t = 0; t < TL_COUNT; t++)
            while (srv->tl[t].head)
                conn_close(srv->tl[t].head);
    }
    check_done(srv);
}

/* ---- server lifecycle -------------------------------------------------- */

int eddy_http_server_init(struct eddy_http_server **out, struct eddy_loop *loop,
                          const struct eddy_http_options *opts)
{
    struct eddy_http_server *srv = eddy_loop_alloc(loop, sizeof *srv);
    if (!srv)
        return -ENOMEM;
    memset(srv, 0, sizeof *srv);
    srv->loop = loop;
    eddy_loop_attach(loop); /* eddy_loop_destroy() is -EBUSY until the server is destroyed */
    if (opts)
        srv->o = *opts;
    struct eddy_http_options *o = &srv->o;
#define DEF(f, v) if (!o->f) o->f = (v)
    DEF(backlog, 1024);
    DEF(max_conns, 10000);
    DEF(max_pipeline, 32);
    DEF(max_uri, 4096);
    DEF(max_header, 8192);
    DEF(max_headers, 64);
    DEF(max_body, 1024 * 1024);
    DEF(header_timeout_ms, 10000);
    DEF(body_timeout_ms, 30000);
    DEF(idle_timeout_ms, 60000);
    DEF(send_timeout_ms, 30000);
    DEF(linger_ms, 2000);
    DEF(eof_timeout_ms, 30000);
    DEF(sweep_ms, 100);
    DEF(rbuf_count, 1024);
    DEF(rbuf_size, 4096);
#undef DEF
    if (o->max_header > 65535)
        o->max_header = 65535;
    if (o->max_uri > o->max_header)
        o->max_uri = o->max_header;
    if (o->max_headers > 1024)
        o->max_headers = 1024;
    srv->lfd = -1;
    srv->tl[TL_NONE].timeout_ns = INT64_MAX / 2;
    srv->tl[TL_HEAD].timeout_ns = (int64_t)o->header_timeout_ms * 1000000;
    srv->tl[TL_BODY].timeout_ns = (int64_t)o->body_timeout_ms * 1000000;
    srv->tl[TL_IDLE].timeout_ns = (int64_t)o->idle_timeout_ms * 1000000;
    srv->tl[TL_SEND].timeout_ns = (int64_t)o->send_timeout_ms * 1000000;
    srv->tl[TL_LINGER].timeout_ns = (int64_t)o->linger_ms * 1000000;
    srv->tl[TL_EOF].timeout_ns = (int64_t)o->eof_timeout_ms * 1000000;
    const char *name = o->server_name ? o->server_name : "eddy";
    if (*name && strlen(name) < 60 && !strpbrk(name, "\r\n"))
        srv->server_hdr_len = (size_t)snprintf(srv->server_hdr, sizeof srv->server_hdr,
                                               "Server: %s\r\n", name);
    llhttp_settings_init(&srv->settings);
    srv->settings.on_message_begin = on_message_begin;
    srv->settings.on_method = on_method;
    srv->settings.on_url = on_url;
    srv->settings.on_version = on_version;
    srv->settings.on_url_complete = on_url_complete;
    srv->settings.on_header_field = on_header_field;
    srv->settings.on_header_field_complete = on_header_field_complete;
    srv->settings.on_header_value = on_header_value;
    srv->settings.on_header_value_complete = on_header_value_complete;
    srv->settings.on_headers_complete = on_headers_complete;
    srv->settings.on_body = on_body;
    srv->settings.on_chunk_header = on_chunk_header;
    srv->settings.on_message_complete = on_message_complete;
    date_refresh(srv);
    srv->st.conn_size = sizeof(struct conn);
    srv->st.idle_conn_bytes = sizeof(struct conn);
    *out = srv;
    return 0;
}

/* A method a request can be routed with: one llhttp parses for HTTP, spelled
 * as on the wire (methods are case-sensitive: "get" is 501), and not
 * CONNECT (always 501). */
static bool route_method_ok(const char *m)
{
    if (!strcmp(m, "CONNECT"))
        return false;
#define M(num, name, string) \
    if (!strcmp(m, #string)) \
        return true;
    HTTP_METHOD_MAP(M)
#undef M
    return false;
}

/* A path a request-target can have: it starts with "/" and holds no byte
 * a target cannot carry raw (CTL, SP, DEL, non-ASCII: those come
 * percent-encoded, and paths are compared undecoded), nor "?" or "#"
 * (the query is cut off before routing; a fragment is 400). */
static bool route_path_ok(const char *p)
{
    if (p[0] != '/')
        return false;
    for (; *p; p++) {
        unsigned char ch = (unsigned char)*p;
        if (ch <= 0x20 || ch >= 0x7f || ch == '?' || ch == '#')
            return false;
    }
    return true;
}

int eddy_http_route(struct eddy_http_server *srv, const char *method, const char *path,
                    int flags, eddy_http_handler fn, void *ud)
{
    if (!path || !fn || (flags != EDDY_HTTP_EXACT && flags != EDDY_HTTP_PREFIX) ||
        srv->listening || !route_path_ok(path) || (method && !route_method_ok(method)))
        return -EINVAL;
    for (unsigned i = 0; i < srv->nroutes; i++) {
        const struct route *rt = &srv->routes[i];
        if (rt->flags == flags && !strcmp(rt->path, path) &&
            (rt->method && method ? !strcmp(rt->method, method) : rt->method == method))
            return -EEXIST;
    }
    struct route *rs = eddy_loop_realloc(srv->loop, srv->routes,
                                         (srv->nroutes + 1) * sizeof *rs);
    if (!rs)
        return -ENOMEM;
    srv->routes = rs;
    struct route *rt = &rs[srv->nroutes];
    memset(rt, 0, sizeof *rt);
    rt->path = dupstr(srv, path);
    rt->method = method ? dupstr(srv, method) : NULL;
    if (!rt->path || (method && !rt->method)) {
        xfree(srv, rt->path);
        xfree(srv, rt->method);
        return -ENOMEM;
    }
    rt->plen = strlen(path);
    rt->flags = flags;
    rt->fn = fn;
    rt->ud = ud;
    srv->nroutes++;
    return 0;
}

int eddy_http_listen_socket(const char *host, uint16_t port, int reuseport, int backlog)
{
    struct sockaddr_storage ss;
    socklen_t len;
    memset(&ss, 0, sizeof ss);
    if (!host)
        host = "0.0.0.0";
    struct sockaddr_in *a4 = (struct sockaddr_in *)&ss;
    struct sockaddr_in6 *a6 = (struct sockaddr_in6 *)&ss;
    if (inet_pton(AF_INET, host, &a4->sin_addr) == 1) {
        a4->sin_family = AF_INET;
        a4->sin_port = htons(port);
        len = sizeof *a4;
    } else if (inet_pton(AF_INET6, host, &a6->sin6_addr) == 1) {
        a6->sin6_family = AF_INET6;
        a6->sin6_port = htons(port);
        len = sizeof *a6;
    } else {
        return -EINVAL;
    }
    int fd = socket(ss.ss_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return -errno;
    int one = 1, zero = 0;
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    if (reuseport && setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof one) < 0)
        goto err;
    if (ss.ss_family == AF_INET6 && IN6_IS_ADDR_UNSPECIFIED(&a6->sin6_addr))
        setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &zero, sizeof zero);
    if (bind(fd, (struct sockaddr *)&ss, len) < 0 || listen(fd, backlog > 0 ? backlog : 1024) < 0)
        goto err;
    return fd;
err:;
    int e = -errno;
    close(fd);
    return e;
}

int eddy_http_server_listen(struct eddy_http_server *srv)
{
    if (srv->listening || srv->shutting)
        return -EALREADY;
    int rc = eddy_bufpool_init(srv->loop, &srv->pool, srv->o.rbuf_count, srv->o.rbuf_size);
    if (rc < 0)
        return rc;
    /* Without a kernel buffer ring (before 5.19) every connection's pending
     * receive holds a pool buffer: more connections than buffers would
     * starve the newest, so the cap follows the pool there. */
    if (!(eddy_loop_features(srv->loop) & EDDY_FEAT_BUF_RING) &&
        srv->o.max_conns > srv->o.rbuf_count)
        srv->o.max_conns = srv->o.rbuf_count;
    int fd = srv->o.listen_fd > 0
                 ? srv->o.listen_fd
                 : eddy_http_listen_socket(srv->o.host, srv->o.port, srv->o.reuseport,
                                           srv->o.backlog);
    if (fd < 0) {
        eddy_bufpool_destroy(srv->pool);
        srv->pool = NULL;
        return fd;
    }
    /* Once here rather than per accepted socket: Linux copies it to every
     * socket accept() returns.  Fails harmlessly off TCP. */
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    if (srv->o.defer_accept_s) {
        int secs = srv->o.defer_accept_s > INT_MAX ? INT_MAX : (int)srv->o.defer_accept_s;
        setsockopt(fd, IPPROTO_TCP, TCP_DEFER_ACCEPT, &secs, sizeof secs);
    }
    srv->lfd = fd;
    srv->aop.label = "eddy http accept";
    rc = eddy_accept(srv->loop, &srv->aop, fd, NULL, NULL, SOCK_CLOEXEC, accept_cb);
    if (rc < 0)
        goto err;
    srv->top.label = "eddy http sweep";
    rc = eddy_timer_repeat(srv->loop, &srv->top, srv->o.sweep_ms, sweep_cb);
    if (rc < 0) {
        eddy_cancel(srv->loop, &srv->aop);
        srv->timer_dead = true;
        srv->listening = true;
        srv->shutting = true;
        return rc; /* accept_cb's final callback finishes the clean-up */
    }
    srv->listening = true;
    return 0;
err:
    if (srv->o.listen_fd <= 0)
        close(fd);
    srv->lfd = -1;
    eddy_bufpool_destroy(srv->pool);
    srv->pool = NULL;
    return rc;
}

int eddy_http_server_port(const struct eddy_http_server *srv)
{
    struct sockaddr_storage ss;
    socklen_t len = sizeof ss;
    if (srv->lfd < 0)
        return -EBADF;
    if (getsockname(srv->lfd, (struct sockaddr *)&ss, &len) < 0)
        return -errno;
    if (ss.ss_family == AF_INET)
        return ntohs(((struct sockaddr_in *)&ss)->sin_port);
    return ntohs(((struct sockaddr_in6 *)&ss)->sin6_port);
}

static void check_done(struct eddy_http_server *srv)
{
    if (!srv->shutting || srv->done_called)
        return;
    if (srv->accept_dead && srv->lfd >= 0) {
        close(srv->lfd);
        srv->lfd = -1;
    }
    if (srv->nconns == 0 && !srv->timer_dead && eddy_op_active(&srv->top))
        eddy_cancel(srv->loop, &srv->top);
    if (srv->nconns || !srv->accept_dead || !srv->timer_dead)
        return;
    srv->done_called = true;
    if (srv->done)
        srv->done(srv, srv->done_ud);
}

static void post_done(struct eddy_op *op, int res)
{
    struct eddy_http_server *srv = eddy_container_of(op, struct eddy_http_server, top);
    (void)res;
    if (srv->done)
        srv->done(srv, srv->done_ud);
}

int eddy_http_server_shutdown(struct eddy_http_server *srv, unsigned drain_ms,
                              eddy_http_done_cb done, void *ud)
{
    if (srv->shutting)
        return -EALREADY;
    srv->shutting = true;
    srv->done = done;
    srv->done_ud = ud;
    srv->drain_deadline = eddy_update_time(srv->loop) + (int64_t)drain_ms * 1000000;
    if (!srv->listening) {
        srv->accept_dead = srv->timer_dead = true;
        srv->done_called = true;
        eddy_post(srv->loop, &srv->top, post_done); /* callbacks stay async */
        return 0;
    }
    eddy_cancel(srv->loop, &srv->aop);
    /* Idle connections go now; the others close after their answers. */
    unsigned lists[] = {TL_IDLE, TL_HEAD};
    for (unsigned i = 0; i < 2; i++) {
        struct conn *c = srv->tl[lists[i]].head;
        while (c) {
            struct conn *next = c->tnext;
            if (!c->s || (!c->s->in_msg && !c->s->nreq))
                conn_close(c);
            c = next;
        }
    }
    /* Requests in flight finish: every answer goes out, in order, then the
     * connection closes after the last one queued (which says Connection:
     * close unless its head was made already), and nothing more is read.
     * A request still arriving closes when complete (on_message_complete). */
    for (unsigned t = 0; t < TL_COUNT; t++)
        for (struct conn *c = srv->tl[t].head; c; c = c->tnext)
            if (c->s && c->s->tail)
                req_close_after(c->s->tail);
    if (drain_ms == 0) {
        for (unsigned t = 0; t < TL_COUNT; t++)
            while (srv->tl[t].head)
                conn_close(srv->tl[t].head);
    }
    check_done(srv);
    return 0;
}

int eddy_http_server_destroy(struct eddy_http_server *srv)
{
    if (srv->listening && !srv->done_called)
        return -EBUSY;
    if (srv->pool && eddy_bufpool_destroy(srv->pool) < 0)
        return -EBUSY; /* before anything is freed: the call may be repeated */
    srv->pool = NULL;
    if (srv->lfd >= 0)
        close(srv->lfd);
    srv->lfd = -1;
    /* Buffers requests and sessions grew. */
    for (struct eddy_http_req *r = srv->rfree; r; r = r->next) {
        xfree(srv, r->arena);
        xfree(srv, r->body);
        xfree(srv, r->out);
        xfree(srv, r->oold);
    }
    for (struct sess *s = srv->sfree; s; s = s->nextfree)
        xfree(srv, s->pend);
    while (srv->chunks) {
        struct chunk *n = srv->chunks->next;
        xfree(srv, srv->chunks);
        srv->chunks = n;
    }
    for (unsigned i = 0; i < srv->nroutes; i++) {
        xfree(srv, srv->routes[i].path);
        xfree(srv, srv->routes[i].method);
    }
    xfree(srv, srv->routes);
    struct eddy_loop *loop = srv->loop;
    eddy_loop_free(loop, srv);
    eddy_loop_detach(loop);
    return 0;
}

void eddy_http_server_stats(const struct eddy_http_server *srv, struct eddy_http_stats *out)
{
    *out = srv->st;
    out->conns = srv->nconns;
}

/* ---- accessors --------------------------------------------------------- */

const char *eddy_http_method(const struct eddy_http_req *r)
{
    return llhttp_method_name((llhttp_method_t)r->method);
}

const char *eddy_http_path(const struct eddy_http_req *r)
{
    return r->arena + r->url;
}

const char *eddy_http_query(const struct eddy_http_req *r)
{
    return r->arena + r->query;
}

static int hexval(int ch)
{
    if (ch >= '0' && ch <= '9')
        return ch - '0';
    if (ch >= 'a' && ch <= 'f')
        return ch - 'a' + 10;
    if (ch >= 'A' && ch <= 'F')
        return ch - 'A' + 10;
    return -1;
}

/* Decodes src[0..n) into dst (NUL-terminated); returns the bytes written. */
static size_t url_decode(char *dst, const char *src, size_t n)
{
    size_t o = 0;
    for (size_t i = 0; i < n; i++) {
        if (src[i] == '+') {
            dst[o++] = ' ';
        } else if (src[i] == '%' && i + 2 < n && hexval(src[i + 1]) >= 0 &&
                   hexval(src[i + 2]) >= 0) {
            dst[o++] = (char)(hexval(src[i + 1]) * 16 + hexval(src[i + 2]));
            i += 2;
        } else {
            dst[o++] = src[i];
        }
    }
    dst[o] = 0;
    return o + 1;
}

const char *eddy_http_arg(struct eddy_http_req *r, const char *name, const char *def)
{
    if (!(r->flags & R_ARGS)) {
        /* Decode every pair once into the room reserved at headers time. */
        r->flags |= R_ARGS;
        const char *q = r->arena + r->query;
        size_t ql = strlen(q);
        if (!ql)
            return def;
        r->args = r->alen;
        char *d = r->arena + r->alen;
        size_t o = 0;
        const char *p = q, *end = q + ql;
        while (p < end) {
            const char *amp = memchr(p, '&', (size_t)(end - p));
            if (!amp)
                amp = end;
            const char *eq = memchr(p, '=', (size_t)(amp - p));
            if (amp > p) {
                const char *ne = eq ? eq : amp;
                o += url_decode(d + o, p, (size_t)(ne - p));
                o += url_decode(d + o, eq ? eq + 1 : amp, eq ? (size_t)(amp - eq - 1) : 0);
            }
            p = amp + 1;
        }
        r->argslen = (uint32_t)o;
    }
    const char *d = r->arena + r->args, *end = d + r->argslen;
    while (d < end) {
        const char *v = d + strlen(d) + 1;
        if (!strcmp(d, name))
            return v;
        d = v + strlen(v) + 1;
    }
    return def;
}

const char *eddy_http_header(const struct eddy_http_req *r, const char *name)
{
    for (unsigned i = 0; i < r->nh; i++)
        if (!strcasecmp(r->arena + r->h[i].n, name))
            return r->arena + r->h[i].v;
    return NULL;
}

int eddy_http_header_at(const struct eddy_http_req *r, unsigned n, const char **name,
                        const char **value)
{
    if (n >= r->nh)
        return -ENOENT;
    *name = r->arena + r->h[n].n;
    *value = r->arena + r->h[n].v;
    return 0;
}

const void *eddy_http_body(const struct eddy_http_req *r, size_t *len)
{
    if (len)
        *len = r->blen;
    return r->blen ? r->body : "";
}

int eddy_http_version(const struct eddy_http_req *r)
{
    return r->vmaj * 10 + r->vmin;
}

int eddy_http_peer(const struct eddy_http_req *r, struct sockaddr_storage *addr, socklen_t *len)
{
    if (conn_gone(r))
        return -ENOTCONN;
    *len = sizeof *addr;
    if (getpeername(r->c->fd, (struct sockaddr *)addr, len) < 0)
        return -errno;
    return 0;
}

struct eddy_http_server *eddy_http_req_server(const struct eddy_http_req *r)
{
    return r->srv;
}

void eddy_http_on_abort(struct eddy_http_req *r, eddy_http_abort_cb cb, void *ud)
{
    r->abort_cb = cb;
    r->abort_ud = ud;
}

int eddy_http_aborted(const struct eddy_http_req *r)
{
    return conn_gone(r);
}
