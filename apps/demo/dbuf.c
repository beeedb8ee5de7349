/* A text buffer for the answers that are not on a hot path (see demo.h),
 * and the small answer helpers built on it. */
#include "demo.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct dbuf demo_dbuf_fixed(char *buf, size_t cap)
{
    struct dbuf b = {.p = buf, .cap = cap, .fixed = true};
    if (cap)
        buf[0] = 0;
    return b;
}

/* Room for n more bytes and the NUL, or false (then oom). */
static bool db_reserve(struct dbuf *b, size_t n)
{
    if (b->oom)
        return false;
    if (b->len + n + 1 <= b->cap)
        return true;
    if (b->fixed) {
        b->oom = true;
        return false;
    }
    size_t cap = b->cap ? b->cap : 4096;
    while (cap < b->len + n + 1)
        cap *= 2;
    char *p = realloc(b->p, cap);
    if (!p) {
        b->oom = true;
        return false;
    }
    b->p = p;
    b->cap = cap;
    return true;
}

void demo_db_put(struct dbuf *b, const void *s, size_t n)
{
    if (!db_reserve(b, n))
        return;
    memcpy(b->p + b->len, s, n);
    b->len += n;
    b->p[b->len] = 0;
}

void demo_db_puts(struct dbuf *b, const char *s)
{
    demo_db_put(b, s, strlen(s));
}

void demo_db_printf(struct dbuf *b, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(NULL, 0, fmt, ap);
    va_end(ap);
    if (n < 0 || !db_reserve(b, (size_t)n))
        return;
    va_start(ap, fmt);
    vsnprintf(b->p + b->len, (size_t)n + 1, fmt, ap);
    va_end(ap);
    b->len += (size_t)n;
}

void demo_db_json(struct dbuf *b, const char *s)
{
    demo_db_put(b, "\"", 1);
    for (; *s; s++) {
        unsigned char c = (unsigned char)*s;
        if (c == '"' || c == '\\')
            demo_db_printf(b, "\\%c", c);
        else if (c < 0x20 || c == '<')
            demo_db_printf(b, "\\u%04x", c);
        else
            demo_db_put(b, s, 1);
    }
    demo_db_put(b, "\"", 1);
}

void demo_db_html(struct dbuf *b, const char *s, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        switch (s[i]) {
        case '&': demo_db_puts(b, "&amp;"); break;
        case '<': demo_db_puts(b, "&lt;"); break;
        case '>': demo_db_puts(b, "&gt;"); break;
        case '"': demo_db_puts(b, "&quot;"); break;
        default: demo_db_put(b, s + i, 1);
        }
    }
}

const char *demo_textf(const char *fmt, ...)
{
    static _Thread_local char msg[4400];
    va_list ap;
    va_start(ap, fmt);
    if (vsnprintf(msg, sizeof msg, fmt, ap) < 0)
        msg[0] = 0;
    va_end(ap);
    return msg;
}

int demo_respond_dbuf(struct eddy_http_req *req, const char *ctype, struct dbuf *b)
{
    int st = 503;
    if (!b->oom && eddy_http_respond(req, 200, ctype, b->p, b->len) == 0)
        st = 200;
    else
        eddy_http_respond(req, 503, NULL, NULL, 0);
    if (!b->fixed) {
        free(b->p);
        *b = (struct dbuf){0};
    }
    return st;
}

void demo_fail_text(struct loopctx *lc, enum route r, struct eddy_http_req *req, int status,
                    int64_t t0, const char *msg)
{
    eddy_http_respond(req, status, "text/plain; charset=UTF-8", msg, strlen(msg));
    demo_route_end(lc, r, OUT_FAILED, t0);
}
