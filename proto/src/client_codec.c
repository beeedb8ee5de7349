/*
 * The HTTP client's codec (client_codec.h): what both clients share: URLs,
 * url-encoding, the request bytes, the response parser (llhttp in
 * HTTP_RESPONSE mode) and the response storage.  No I/O.
 */
#define _GNU_SOURCE
#include "client_codec.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netdb.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

/* ---- URLs --------------------------------------------------------------- */

static int bad_char(unsigned char c)
{
    return c <= 0x20 || c >= 0x7f;
}

int url_parse(const char *url, struct url *u)
{
    memset(u, 0, sizeof *u);
    if (!url || strncasecmp(url, "http://", 7) != 0)
        return -EINVAL;
    const char *h = url + 7;
    size_t alen = strcspn(h, "/?#");
    const char *rest = h + alen;
    if (alen == 0 || memchr(h, '@', alen))
        return -EINVAL;
    const char *port = NULL;
    size_t hlen;
    int v6 = 0;
    if (h[0] == '[') {
        const char *close = memchr(h, ']', alen);
        if (!close)
            return -EINVAL;
        hlen = (size_t)(close - h - 1);
        h++;
        v6 = 1;
        if (close + 1 < rest) {
            if (close[1] != ':')
                return -EINVAL;
            port = close + 2;
        }
    } else {
        const char *colon = memchr(h, ':', alen);
        hlen = colon ? (size_t)(colon - h) : alen;
        if (colon)
            port = colon + 1;
    }
    if (hlen == 0 || hlen >= sizeof u->host)
        return -EINVAL;
    memcpy(u->host, h, hlen);
    u->host[hlen] = 0;
    for (size_t i = 0; i < hlen; i++) {
        unsigned char c = (unsigned char)u->host[i];
        if (!(ascii_alnum(c) || c == '-' || c == '.' || c == '_' || (v6 && c == ':')))
            return -EINVAL;
    }
    u->port = 80;
    if (port) {
        if (port == rest)
            return -EINVAL;
        unsigned long p = 0;
        for (const char *c = port; c < rest; c++) {
            if (*c < '0' || *c > '9')
                return -EINVAL;
            p = p * 10 + (unsigned long)(*c - '0');
            if (p > 65535)
                return -EINVAL;
        }
        if (p == 0)
            return -EINVAL;
        u->port = (uint16_t)p;
    }
    size_t tlen = strcspn(rest, "#");
    for (size_t i = 0; i < tlen; i++)
        if (bad_char((unsigned char)rest[i]))
            return -EINVAL;
    u->target = rest;
    u->target_len = tlen;
    u->has_query = memchr(rest, '?', tlen) != NULL;

    struct sockaddr_in *a4 = (struct sockaddr_in *)&u->addr;
    struct sockaddr_in6 *a6 = (struct sockaddr_in6 *)&u->addr;
    if (v6) {
        if (inet_pton(AF_INET6, u->host, &a6->sin6_addr) != 1)
            return -EINVAL;
        a6->sin6_family = AF_INET6;
        a6->sin6_port = htons(u->port);
        u->addrlen = sizeof *a6;
    } else if (inet_pton(AF_INET, u->host, &a4->sin_addr) == 1) {
        a4->sin_family = AF_INET;
        a4->sin_port = htons(u->port);
        u->addrlen = sizeof *a4;
    }
    return 0;
}

/* ---- url-encoding ------------------------------------------------------- */

size_t url_encode(char *out, const char *s)
{
    static const char hex[] = "0123456789ABCDEF";
    size_t n = 0;
    for (const unsigned char *c = (const unsigned char *)s; *c; c++) {
        if (ascii_alnum(*c) || *c == '-' || *c == '.' || *c == '_' || *c == '~') {
            if (out)
                out[n] = (char)*c;
            n++;
        } else if (*c == ' ') {
            if (out)
                out[n] = '+';
            n++;
        } else {
            if (out) {
                out[n] = '%';
                out[n + 1] = hex[*c >> 4];
                out[n + 2] = hex[*c & 15];
            }
            n += 3;
        }
    }
    if (out)
        out[n] = 0;
    return n;
}

size_t form_encode(char *out, const struct eddy_http_pair *args, size_t nargs)
{
    size_t n = 0;
    for (size_t i = 0; i < nargs; i++) {
        if (i) {
            if (out)
                out[n] = '&';
            n++;
        }
        n += url_encode(out ? out + n : NULL, args[i].name ? args[i].name : "");
        if (out)
            out[n] = '=';
        n++;
        n += url_encode(out ? out + n : NULL, args[i].value ? args[i].value : "");
    }
    if (out)
        out[n] = 0;
    return n;
}

static int method_in(const char *method, const char *const *list)
{
    if (!method)
        method = "GET";
    for (; *list; list++)
        if (!strcmp(method, *list))
            return 1;
    return 0;
}

int method_args_in_query(const char *method)
{
    static const char *const l[] = {"GET", "HEAD", "DELETE", "OPTIONS", NULL};
    return method_in(method, l);
}

int method_idempotent(const char *method)
{
    static const char *const l[] = {"GET", "HEAD", "PUT", "DELETE", "OPTIONS", "TRACE", NULL};
    return method_in(method, l);
}

/* ---- the request -------------------------------------------------------- */

/* The message framing and the connection are the client's: these are never
 * taken from the user.  TE and Upgrade must be listed in Connection (RFC
 * 9110 7.6.1, 7.8), which the client never lets the user write. */
static int is_framing_header(const char *name)
{
    return !strcasecmp(name, "content-length") || !strcasecmp(name, "transfer-encoding") ||
           !strcasecmp(name, "connection") || !strcasecmp(name, "te") ||
           !strcasecmp(name, "upgrade");
}

/* The index of the user's header called name, or -1. */
static long user_header(const struct request_spec *s, const char *name)
{
    for (size_t i = 0; i < s->nheaders; i++)
        if (!strcasecmp(s->headers[i].name, name))
            return (long)i;
    return -1;
}

/* A tiny appender: measures on the first pass (buf NULL), writes on the second. */
struct out {
    char *buf;
    size_t n;
};

static void put(struct out *o, const char *s, size_t n)
{
    if (o->buf)
        memcpy(o->buf + o->n, s, n);
    o->n += n;
}

static void puts_(struct out *o, const char *s)
{
    put(o, s, strlen(s));
}

static void emit(struct out *o, const struct request_spec *s, int form_body, size_t form_len)
{
    const struct url *u = s->url;
    char num[32];
    puts_(o, s->method ? s->method : "GET");
    put(o, " ", 1);
    if (u->target_len == 0 || u->target[0] == '?')
        put(o, "/", 1);
    put(o, u->target, u->target_len);
    if (s->nargs && !form_body) {
        put(o, u->has_query ? "&" : "?", 1);
        o->n += form_encode(o->buf ? o->buf + o->n : NULL, s->args, s->nargs);
    }
    puts_(o, " HTTP/1.1\r\n");
    /* Host first (RFC 9110 7.2: a user agent SHOULD send it first): the
     * user's, or the URL's authority */
    long host = user_header(s, "host");
    if (host >= 0) {
        puts_(o, s->headers[host].name);
        puts_(o, ": ");
        puts_(o, s->headers[host].value);
    } else {
        puts_(o, "Host: ");
        int v6 = strchr(u->host, ':') != NULL;
        if (v6)
            put(o, "[", 1);
        puts_(o, u->host);
        if (v6)
            put(o, "]", 1);
        if (u->port != 80) {
            snprintf(num, sizeof num, ":%u", (unsigned)u->port);
            puts_(o, num);
        }
    }
    puts_(o, "\r\n");
    if (user_header(s, "user-agent") < 0)
        puts_(o, "User-Agent: eddy\r\n");
    size_t blen = form_body ? form_len : s->raw_body_len;
    const char *m = s->method ? s->method : "GET";
    if (blen || form_body || !method_args_in_query(m)) {
        snprintf(num, sizeof num, "%zu", blen);
        puts_(o, "Content-Length: ");
        puts_(o, num);
        puts_(o, "\r\n");
    }
    const char *ct = form_body ? "application/x-www-form-urlencoded" : s->content_type;
    if (ct && user_header(s, "content-type") < 0) {
        puts_(o, "Content-Type: ");
        puts_(o, ct);
        puts_(o, "\r\n");
    }
    if (s->close)
        puts_(o, "Connection: close\r\n");
    for (size_t i = 0; i < s->nheaders; i++) {
        if ((long)i == host)
            continue;
        puts_(o, s->headers[i].name);
        puts_(o, ": ");
        puts_(o, s->headers[i].value);
        puts_(o, "\r\n");
    }
    puts_(o, "\r\n");
    if (form_body) {
        o->n += form_encode(o->buf ? o->buf + o->n : NULL, s->args, s->nargs);
    }
}

int request_build(struct eddy_loop *loop, const struct request_spec *s, char **out,
                  size_t *len)
{
    const char *m = s->method ? s->method : "GET";
    if (!is_token(m))
        return -EINVAL;
    int hosts = 0;
    for (size_t i = 0; i < s->nheaders; i++) {
        const struct eddy_http_pair *h = &s->headers[i];
        if (!is_token(h->name) || !is_field_value(h->value) || is_framing_header(h->name))
            return -EINVAL;
        if (!strcasecmp(h->name, "host") && ++hosts > 1)
            return -EINVAL;
    }
    if (s->content_type && !is_field_value(s->content_type))
        return -EINVAL;
    int form_body = s->nargs && !method_args_in_query(m);
    if (form_body && s->raw_body_len)
        return -EINVAL;
    size_t form_len = form_body ? form_encode(NULL, s->args, s->nargs) : 0;
    struct out o = {NULL, 0};
    emit(&o, s, form_body, form_len);
    size_t n = o.n;
    /* +1: form_encode writes a NUL after the form body */
    char *buf = loop ? eddy_loop_alloc(loop, n + 1) : malloc(n + 1);
    if (!buf)
        return -ENOMEM;
    o.buf = buf;
    o.n = 0;
    emit(&o, s, form_body, form_len);
    buf[n] = 0;
    *out = buf;
    *len = n;
    return 0;
}

/* ---- responses ---------------------------------------------------------- */

void *resp_alloc(struct eddy_http_response *r, void *p, size_t n)
{
    if (r->loop_)
        return eddy_loop_realloc(r->loop_, p, n);
    if (n == 0) {
        free(p);
        return NULL;
    }
    return realloc(p, n);
}

void eddy_http_response_free(struct eddy_http_response *r)
{
    resp_alloc(r, r->body, 0);
    resp_alloc(r, r->hdrs_, 0);
    struct eddy_loop *loop = r->loop_;
    memset(r, 0, sizeof *r);
    r->loop_ = loop;
}

const char *eddy_http_response_header(const struct eddy_http_response *r, const char *name)
{
    const char *p = r->hdrs_, *end = r->hdrs_ + r->hdrs_len_;
    while (p && p < end) {
        const char *v = p + strlen(p) + 1;
        if (!strcasecmp(p, name))
            return v;
        p = v + strlen(v) + 1;
    }
    return NULL;
}

int eddy_http_response_header_at(const struct eddy_http_response *r, unsigned n,
                                 const char **name, const char **value)
{
    const char *p = r->hdrs_, *end = r->hdrs_ + r->hdrs_len_;
    for (unsigned i = 0; p && p < end; i++) {
        const char *v = p + strlen(p) + 1;
        if (i == n) {
            *name = p;
            *value = v;
            return 0;
        }
        p = v + strlen(v) + 1;
    }
    return -ENOENT;
}

static struct resp_parser *rp_of(llhttp_t *p)
{
    return (struct resp_parser *)p->data;
}

/* Appends to the response's headers or body, keeping room for a NUL. */
static int grow_append(struct resp_parser *rp, bool body, const char *at, size_t n)
{
    struct eddy_http_response *r = rp->r;
    char **buf = body ? &r->body : &r->hdrs_;
    size_t *len = body ? &r->body_len : &r->hdrs_len_;
    size_t *cap = body ? &r->body_cap_ : &r->hdrs_cap_;
    if (*len + n + 1 > *cap) {
        size_t c = grow_cap(*cap, *len + n + 1, 256);
        char *b = resp_alloc(rp->r, *buf, c);
        if (!b) {
            rp->err = -ENOMEM;
            return -1;
        }
        *buf = b;
        *cap = c;
    }
    memcpy(*buf + *len, at, n);
    *len += n;
    (*buf)[*len] = 0;
    return 0;
}

static int on_hdr_data(llhttp_t *p, const char *at, size_t n)
{
    return grow_append(rp_of(p), false, at, n);
}

static int on_hdr_end(llhttp_t *p)
{
    /* The NUL grow_append keeps becomes part of the entry. */
    return grow_append(rp_of(p), false, "", 1);
}

static int on_headers_complete(llhttp_t *p)
{
    struct resp_parser *rp = rp_of(p);
    int s = p->status_code;
    rp->r->status = s;
    rp->r->version = p->http_major * 10 + p->http_minor;
    /* The answer to HEAD, 1xx, 204 and 304 have no body, whatever their
     * headers say (RFC 9112 6.3); 1 tells llhttp so.  llhttp 8.1 itself
     * would wait for the Content-Length of a 204 or 304. */
    return rp->head || (s >= 100 && s < 200) || s == 204 || s == 304;
}

static int on_body(llhttp_t *p, const char *at, size_t n)
{
    return grow_append(rp_of(p), true, at, n);
}

static int on_message_complete(llhttp_t *p)
{
    struct resp_parser *rp = rp_of(p);
    if (p->status_code >= 100 && p->status_code < 200 && p->status_code != 101) {
        /* 100 Continue and friends: the real answer follows. */
        rp->r->hdrs_len_ = 0;
        rp->r->body_len = 0;
        rp->r->status = 0;
        return 0;
    }
    rp->complete = 1;
    rp->keepalive = llhttp_should_keep_alive(p) && p->status_code != 101;
    return HPE_PAUSED; /* stop here: what follows is not ours */
}

static const llhttp_settings_t resp_settings = {
    .on_header_field = on_hdr_data,
    .on_header_field_complete = on_hdr_end,
    .on_header_value = on_hdr_data,
    .on_header_value_complete = on_hdr_end,
    .on_headers_complete = on_headers_complete,
    .on_body = on_body,
    .on_message_complete = on_message_complete,
};

void resp_begin(struct resp_parser *rp, struct eddy_http_response *r, size_t max, int head)
{
    eddy_http_response_free(r);
    memset(rp, 0, sizeof *rp);
    llhttp_init(&rp->p, HTTP_RESPONSE, &resp_settings);
    rp->p.data = rp;
    rp->r = r;
    rp->max = max;
    rp->head = head;
}

static int rp_error(struct resp_parser *rp)
{
    return rp->err ? rp->err : -EPROTO;
}

int resp_feed(struct resp_parser *rp, const char *data, size_t len, size_t *used)
{
    size_t allowed = rp->max - rp->total;
    size_t n = len < allowed ? len : allowed;
    llhttp_errno_t e = llhttp_execute(&rp->p, data, n);
    if (e == HPE_PAUSED) {
        *used = (size_t)(llhttp_get_error_pos(&rp->p) - data);
        rp->total += *used;
        return 1;
    }
    if (e != HPE_OK)
        return rp_error(rp);
    rp->total += n;
    *used = n;
    if (n < len)
        return -EMSGSIZE;
    return 0;
}

int resp_eof(struct resp_parser *rp)
{
    if (rp->complete)
        return 1;
    if (rp->total == 0)
        return -ECONNRESET;
    llhttp_errno_t e = llhttp_finish(&rp->p);
    if (rp->complete)
        return 1;
    if (rp->err)
        return rp->err;
    (void)e;
    return -ECONNRESET; /* cut short (or llhttp calls it invalid EOF) */
}

int gai_to_errno(int rc)
{
    if (rc == EAI_NONAME || rc == EAI_NODATA || rc == EAI_ADDRFAMILY)
        return -ENOENT;
    if (rc == EAI_MEMORY)
        return -ENOMEM;
    return -EHOSTUNREACH;
}
