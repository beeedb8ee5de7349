/*
 * The upstream: the time service, or what --upstream names.  Its URL is
 * checked once at start (demo_upstream_parse), and each fetching route turns a
 * fetch's result into its answer here (demo_answer_upstream): the upstream's
 * body, or a 502/504 with a one-line reason for an operator.
 */
#include "demo.h"

#include <arpa/inet.h>
#include <ctype.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>

/* The upstream's host as written in cfg.upstream (brackets kept). */
static void upstream_host(char *out, size_t n)
{
    const char *h = cfg.upstream + strlen("http://");
    size_t len = h[0] == '[' ? strcspn(h, "]") + 1 : strcspn(h, ":/?#");
    snprintf(out, n, "%.*s", (int)len, h);
}

/*
 * Why a fetch failed, for an operator.  The clients report a host name
 * that getaddrinfo() says does not exist (EAI_NONAME, EAI_NODATA) as
 * -ENOENT, whose own text ("No such file or directory") would mislead, and
 * a temporary resolver failure (EAI_AGAIN, EAI_FAIL) as -EHOSTUNREACH,
 * like a missing route.  They do not pass getaddrinfo's own code on, so
 * the words say what the error means without quoting a reason of its.
 */
static void upstream_reason(int err, char *out, size_t n)
{
    char host[300];
    upstream_host(host, sizeof host);
    struct in_addr a4;
    bool name = host[0] != '[' && inet_pton(AF_INET, host, &a4) != 1;
    if (err == -ENOENT && name)
        snprintf(out, n, "the host name %s did not resolve", host);
    else if (err == -EHOSTUNREACH && name)
        snprintf(out, n, "%s could not be resolved now, or there is no route to it", host);
    else if (err == -EAGAIN && name)
        snprintf(out, n, "the client could not start a thread to resolve %s", host);
    else
        snprintf(out, n, "%s", eddy_strerror(err));
}

/* Turns an upstream result into the answer: its body, 502 or 504. */
void demo_answer_upstream(struct job *j, int err, const struct eddy_http_response *r)
{
    if (err == 0 && r->status >= 200 && r->status < 300) {
        const char *ct = eddy_http_response_header(r, "Content-Type");
        demo_job_answer(j, 200, ct ? ct : "text/plain; charset=UTF-8", r->body ? r->body : "",
                        r->body_len);
    } else if (err == 0) {
        demo_job_fail(j, 502,
                      demo_textf("upstream %s answered %d %s\n", cfg.upstream, r->status,
                                 eddy_http_reason(r->status)));
    } else if (err == -ETIMEDOUT || err == -ETIME) {
        demo_job_fail(j, 504,
                      demo_textf("upstream timeout: %s did not answer within %u ms\n", cfg.upstream,
                                 cfg.timeout_ms));
    } else if (err == -ECANCELED) {
        demo_job_fail(j, 503, "cancelled: the client went away\n");
    } else {
        char why[400];
        upstream_reason(err, why, sizeof why);
        demo_job_fail(j, 502, demo_textf("upstream error: %s: %s\n", cfg.upstream, why));
    }
}

/*
 * Checks an --upstream URL by the client's rules (eddy/http_client.h), so a
 * URL the client would refuse stops the demo at start instead of turning
 * every fetch into a 502, and writes what the routes fetch into out: the
 * scheme in lower case, /api/time when there is no path (before the
 * query), no fragment (never sent).  0, or -1 with the reason in why.
 */
int demo_upstream_parse(const char *url, char *out, size_t n, char *why, size_t wn)
{
    if (strncasecmp(url, "http://", 7) != 0) {
        snprintf(why, wn, "want self or http://host[:port][/path][?query]");
        return -1;
    }
    const char *h = url + 7;
    size_t alen = strcspn(h, "/?#"); /* the authority: host[:port] */
    const char *rest = h + alen, *port = NULL;
    if (memchr(h, '@', alen)) {
        snprintf(why, wn, "user info (user@) is not supported");
        return -1;
    }
    if (alen && h[0] == '[') {
        const char *close = memchr(h, ']', alen);
        if (!close) {
            snprintf(why, wn, "no ] after the IPv6 address");
            return -1;
        }
        char a6[64];
        struct in6_addr ip;
        int l = (int)(close - h - 1);
        snprintf(a6, sizeof a6, "%.*s", l, h + 1);
        if ((size_t)l >= sizeof a6 || inet_pton(AF_INET6, a6, &ip) != 1) {
            snprintf(why, wn, "[%.*s] is not an IPv6 address", l, h + 1);
            return -1;
        }
        if (close + 1 < rest) {
            if (close[1] != ':') {
                snprintf(why, wn, "want [IPv6]:port");
                return -1;
            }
            port = close + 2;
        }
    } else {
        const char *colon = memchr(h, ':', alen);
        size_t hl = colon ? (size_t)(colon - h) : alen;
        if (hl == 0) {
            snprintf(why, wn, "no host");
            return -1;
        }
        for (size_t i = 0; i < hl; i++) {
            unsigned char c = (unsigned char)h[i];
            if (!isalnum(c) && c != '-' && c != '.' && c != '_') {
                snprintf(why, wn, "bad character in the host (A-Z a-z 0-9 - . _ only)");
                return -1;
            }
        }
        if (hl > 255) {
            snprintf(why, wn, "the host is longer than 255 bytes");
            return -1;
        }
        port = colon ? colon + 1 : NULL;
    }
    if (port) {
        unsigned long p = 0;
        const char *c = port;
        for (; c < rest && isdigit((unsigned char)*c) && p <= 65535; c++)
            p = p * 10 + (unsigned long)(*c - '0');
        if (c == port || c < rest || p == 0 || p > 65535) {
            snprintf(why, wn, "port '%.*s': want a number from 1 to 65535", (int)(rest - port),
                     port);
            return -1;
        }
    }
    size_t tlen = strcspn(rest, "#"), plen = strcspn(rest, "?#");
    for (size_t i = 0; i < tlen; i++) {
        unsigned char c = (unsigned char)rest[i];
        if (c <= 0x20 || c >= 0x7f) {
            snprintf(why, wn, "spaces and control characters are not allowed");
            return -1;
        }
    }
    int w = snprintf(out, n, "http://%.*s%s%.*s", (int)alen, h, plen ? "" : "/api/time",
                     (int)tlen, rest);
    if (w < 0 || (size_t)w >= n) {
        snprintf(why, wn, "longer than %zu bytes", n - 1);
        return -1;
    }
    return 0;
}
