/*
 * Internals shared by the asynchronous and the blocking HTTP client: URL
 * parsing, url-encoding, request serialisation and response parsing (on
 * llhttp).  Not installed.
 */
#ifndef EDDY_PROTO_URL_H
#define EDDY_PROTO_URL_H

#include "eddy/http_client.h"

#include <llhttp.h>
#include <sys/socket.h>

struct eddy_url {
    char host[256];          /* without the brackets of an IPv6 literal */
    uint16_t port;
    const char *target;      /* path[?query] inside the URL string, no fragment */
    size_t target_len;       /* 0: the target is "/" */
    int has_query;
    struct sockaddr_storage addr; /* an IP literal's address and port */
    socklen_t addrlen;       /* 0 when host is a name */
};

/* Parses an http:// URL; 0 or -EINVAL. */
int eddy_url_parse(const char *url, struct eddy_url *u);

/* Url-encodes s into out (NUL-terminated); returns the length without the
 * NUL.  out NULL: only measures. */
size_t eddy_urlencode(char *out, const char *s);
/* "a=1&b=2" for n pairs; same contract. */
size_t eddy_form_encode(char *out, const struct eddy_http_pair *args, size_t n);

/* getaddrinfo()'s failure rc as the clients' -errno: -ENOENT (no such name),
 * -ENOMEM, else -EHOSTUNREACH (temporary or other resolver failure).  Both
 * clients map with this one function, as http_client.h documents. */
int gai_to_errno(int rc);

/* GET, HEAD, DELETE, OPTIONS: arguments go to the query. */
int eddy_method_args_in_query(const char *method);
/* GET, HEAD, PUT, DELETE, OPTIONS (and TRACE): safe to send twice. */
int eddy_method_idempotent(const char *method);

struct eddy_req_spec {
    const char *method;      /* NULL = GET */
    const struct eddy_url *url;
    const struct eddy_http_pair *headers;
    size_t nheaders;
    const struct eddy_http_pair *args;
    size_t nargs;
    size_t raw_body_len;     /* a raw body sent after the buffer (its length only) */
    const char *content_type;
    int close;               /* add Connection: close */
};

/*
 * Serialises the request head (with the form body when the args go to the
 * body) into one buffer from the loop's allocator (malloc when loop is
 * NULL).  0 and *out, *len, or -EINVAL / -ENOMEM.
 */
int eddy_req_build(struct eddy_loop *loop, const struct eddy_req_spec *s, char **out,
                   size_t *len);

/* Response storage: allocation through the response's loop (or malloc). */
void *eddy_resp_alloc(struct eddy_http_response *r, void *p, size_t n);

struct eddy_resp_parser {
    llhttp_t p;
    struct eddy_http_response *r;
    size_t max, total;
    int head;                /* the request was HEAD: no body */
    int complete;            /* the response is complete */
    int keepalive;           /* the connection may carry another request */
    int err;                 /* -EMSGSIZE / -ENOMEM from a callback */
};

/* Ready for one response into r (emptied first), at most max bytes. */
void eddy_resp_begin(struct eddy_resp_parser *rp, struct eddy_http_response *r, size_t max,
                     int head);
/*
 * Feeds len bytes.  Returns 1 when the response is complete (*used: the
 * bytes it took; more means the server sent something unasked), 0 when it
 * needs more, or -EPROTO / -EMSGSIZE / -ENOMEM.
 */
int eddy_resp_feed(struct eddy_resp_parser *rp, const char *data, size_t len, size_t *used);
/* The peer closed: 1 when that completes the response (a read-until-close
 * body), -ECONNRESET when it was cut short, -EPROTO when invalid. */
int eddy_resp_eof(struct eddy_resp_parser *rp);

#endif
