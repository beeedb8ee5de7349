/*
 * client_codec.h: the HTTP client's codec, shared by the asynchronous
 * (client.c) and the blocking (blocking.c) client: URL parsing,
 * url-encoding, request serialisation, and response parsing and storage
 * (llhttp in HTTP_RESPONSE mode).  No I/O.  Not installed.
 */
#ifndef EDDY_PROTO_CLIENT_CODEC_H
#define EDDY_PROTO_CLIENT_CODEC_H

#include "common.h"
#include "eddy/http_client.h"

#include <llhttp.h>
#include <sys/socket.h>

struct url {
    char host[256];          /* without the brackets of an IPv6 literal */
    uint16_t port;
    const char *target;      /* path[?query] inside the URL string, no fragment */
    size_t target_len;       /* 0: the target is "/" */
    int has_query;
    struct sockaddr_storage addr; /* an IP literal's address and port */
    socklen_t addrlen;       /* 0 when host is a name */
};

/* Parses an http:// URL; 0 or -EINVAL. */
int url_parse(const char *url, struct url *u);

/* Url-encodes s into out (NUL-terminated); returns the length without the
 * NUL.  out NULL: only measures. */
size_t url_encode(char *out, const char *s);
/* "a=1&b=2" for n pairs; same contract. */
size_t form_encode(char *out, const struct eddy_http_pair *args, size_t n);

/* getaddrinfo()'s failure rc as the clients' -errno: -ENOENT (no such name),
 * -ENOMEM, else -EHOSTUNREACH (temporary or other resolver failure).  Both
 * clients map with this one function, as http_client.h documents. */
int gai_to_errno(int rc);

/* GET, HEAD, DELETE, OPTIONS: arguments go to the query. */
int method_args_in_query(const char *method);
/* GET, HEAD, PUT, DELETE, OPTIONS (and TRACE): safe to send twice. */
int method_idempotent(const char *method);

struct request_spec {
    const char *method;      /* NULL = GET */
    const struct url *url;
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
int request_build(struct eddy_loop *loop, const struct request_spec *s, char **out,
                  size_t *len);

/* Response storage: allocation through the response's loop (or malloc). */
void *resp_alloc(struct eddy_http_response *r, void *p, size_t n);

struct resp_parser {
    llhttp_t p;
    struct eddy_http_response *r;
    size_t max, total;
    int head;                /* the request was HEAD: no body */
    int complete;            /* the response is complete */
    int keepalive;           /* the connection may carry another request */
    int err;                 /* -EMSGSIZE / -ENOMEM from a callback */
};

/* Ready for one response into r (emptied first), at most max bytes. */
void resp_begin(struct resp_parser *rp, struct eddy_http_response *r, size_t max, int head);
/*
 * Feeds len bytes.  Returns 1 when the response is complete (*used: the
 * bytes it took; more means the server sent something unasked), 0 when it
 * needs more, or -EPROTO / -EMSGSIZE / -ENOMEM.
 */
int resp_feed(struct resp_parser *rp, const char *data, size_t len, size_t *used);
/* The peer closed: 1 when that completes the response (a read-until-close
 * body), -ECONNRESET when it was cut short, -EPROTO when invalid. */
int resp_eof(struct resp_parser *rp);

#endif
