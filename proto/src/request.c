/*
 * Requests and answers: the pools, the head arena the parser fills,
 * the answer buffer (head written in front of the headers the handler set,
 * so one answer is one iovec), respond and stream, and the accessors.
 * Answers only fill buffers; conn.c sends them (sess_flush).
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

void date_refresh(struct eddy_http_server *srv)
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

/* ---- buffers ----------------------------------------------------------- */

/* Makes *buf (of *cap bytes) hold need bytes; false, with nothing changed,
 * when the allocator fails.  Every growing buffer of the server grows here:
 * the head arena, the body, the stash of a paused connection (the answer
 * buffer too, through grow_cap, as it may be in flight). */
bool grow(struct eddy_loop *loop, char **buf, size_t *cap, size_t need, size_t init)
{
    if (need <= *cap)
        return true;
    size_t n = grow_cap(*cap, need, init);
    char *b = eddy_loop_realloc(loop, *buf, n);
    if (!b)
        return false;
    *buf = b;
    *cap = n;
    return true;
}

/* ---- pools ------------------------------------------------------------- */

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
 * on the list whose head pointer is at head, through the pointer at
 * link_off in each, so the first element ends on top.
 */
static char *chunk_carve(struct eddy_http_server *srv, size_t one, unsigned n, size_t link_off,
                         void *head)
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

/*
 * Takes an element from the free list whose head pointer is at head
 * (linked through the pointer at link_off in each), refilled with a chunk
 * of n when empty; NULL without memory.  Connections, sessions and
 * requests all come from here.
 */
void *pool_take(struct eddy_http_server *srv, void *head, size_t one, unsigned n,
                size_t link_off)
{
    char *top;
    memcpy(&top, head, sizeof top);
    if (!top) {
        if (!chunk_carve(srv, one, n, link_off, head))
            return NULL;
        memcpy(&top, head, sizeof top);
    }
    void *next;
    memcpy(&next, top + link_off, sizeof next);
    memcpy(head, &next, sizeof next);
    return top;
}

/* Gives back a buffer grown beyond keep bytes (it grows again if needed):
 * a recycled request or session keeps only ordinary sizes. */
void buf_trim(struct eddy_http_server *srv, char **buf, size_t *cap, size_t keep)
{
    if (*cap <= keep)
        return;
    xfree(srv, *buf);
    *buf = NULL;
    *cap = 0;
}

/* ---- requests ---------------------------------------------------------- */

struct eddy_http_req *req_get(struct eddy_http_server *srv, struct conn *c)
{
    size_t one = sizeof(struct eddy_http_req) + srv->o.max_headers * sizeof(struct hdr);
    struct eddy_http_req *r = pool_take(srv, &srv->rfree, one, 16,
                                        offsetof(struct eddy_http_req, next));
    if (!r)
        return NULL;
    memset(r, 0, offsetof(struct eddy_http_req, h)); /* the per-request part (internal.h) */
    r->h = (struct hdr *)(void *)(r + 1); /* the header table follows the struct */
    r->c = c;
    r->srv = srv;
    r->vmaj = 1;
    r->vmin = 1;
    r->olen = HEAD_RESERVE; /* room for the head in front of the headers */
    return r;
}

void req_put(struct eddy_http_req *r)
{
    struct eddy_http_server *srv = r->srv;
    assert(!(r->flags & R_FREE));
    buf_trim(srv, &r->out, &r->ocap, OUT_KEEP);
    buf_trim(srv, &r->body, &r->bcap, OUT_KEEP);
    xfree(srv, r->oold);
    r->oold = NULL;
    r->flags = R_FREE;
    r->c = NULL;
    r->next = srv->rfree;
    srv->rfree = r;
}

/* Appends n bytes to the head arena: 0, or the status to fail with (431
 * beyond max_header, 503 without memory). */
int arena_put(struct eddy_http_req *r, const char *p, size_t n)
{
    struct eddy_http_server *srv = r->srv;
    if (r->alen + n + 1 > srv->o.max_header)
        return 431;
    if (!arena_reserve(r, n + 1))
        return 503;
    memcpy(r->arena + r->alen, p, n);
    r->alen += (uint32_t)n;
    return 0;
}

/* Makes room for n more bytes in the head arena. */
bool arena_reserve(struct eddy_http_req *r, size_t n)
{
    size_t cap = r->acap;
    if (!grow(r->srv->loop, &r->arena, &cap, r->alen + n, 1024))
        return false;
    r->acap = (uint32_t)cap; /* at most 2 * max_header (65535) */
    return true;
}

/* Makes room for n more bytes of answer at the end of out. */
static bool out_reserve(struct eddy_http_req *r, size_t n)
{
    if (r->olen + n <= r->ocap)
        return true;
    if ((size_t)r->olen + n > INT32_MAX)
        return false;
    size_t cap = grow_cap(r->ocap, r->olen + n, OUT_INIT);
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
    r->ocap = cap;
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
    return (r->flags & R_ABORTED) || !r->c || conn_closing(r->c);
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
void req_close_after(struct eddy_http_req *r)
{
    struct conn *c = r->c;
    r->flags |= R_CLOSE;
    if (!c || !c->s || conn_closing(c))
        return;
    struct sess *s = c->s;
    s->stop = 1;
    if (s->pend_len)
        s->dropped = 1; /* unread client bytes: linger on close */
    s->pend_len = 0;
}

/* Ends the handler's headers with Content-Type (when ctype) and the blank
 * line, with room for more bytes of body after them; false without memory
 * (nothing written). */
static inline __attribute__((always_inline)) bool put_ctype(struct eddy_http_req *r,
                                                            const char *ctype, size_t more)
{
    size_t ctl = ctype ? strlen(ctype) : 0;
    if (!out_reserve(r, ctl + 18 + more))
        return false;
    if (ctype) {
        out_put(r, "Content-Type: ", 14);
        out_put(r, ctype, ctl);
        out_put(r, "\r\n", 2);
    }
    out_put(r, "\r\n", 2);
    return true;
}

int eddy_http_set_header(struct eddy_http_req *r, const char *name, const char *value)
{
    if (r->flags & (R_ANSWERED | R_FREE))
        return -EALREADY;
    if (!is_token(name) || !is_field_value(value))
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
    if (!put_ctype(r, ctype, nobody ? 0 : len))
        return -ENOMEM;
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
    if (!put_ctype(r, ctype, 0))
        return -ENOMEM;
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

/* ---- the server's own answers ------------------------------------------ */

/* The server's own answer, or (no memory even for that) a close: a
 * request the server answers itself must never stay unanswered. */
void answer_or_drop(struct eddy_http_req *r, int status, const char *body, size_t len)
{
    if (eddy_http_respond(r, status, "text/plain", body, len) == 0)
        return;
    r->flags |= R_ANSWERED | R_DONE | R_CLOSE;
    conn_close(r->c);
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

void eddy_http_on_abort(struct eddy_http_req *r, eddy_http_abort_cb cb, void *ud)
{
    r->abort_cb = cb;
    r->abort_ud = ud;
}

int eddy_http_aborted(const struct eddy_http_req *r)
{
    return conn_gone(r);
}
