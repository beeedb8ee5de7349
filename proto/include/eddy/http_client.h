/*
 * eddy/http_client.h — the HTTP/1.1 client of eddy (plain http:// only).
 *
 * Two clients with the same URL rules, request format and error codes:
 *
 *   - The asynchronous client: one struct eddy_http_client per loop, used
 *     from that loop's thread only.  You own a struct eddy_http_fetch, fill
 *     it, start it, and get exactly one callback from the loop with the
 *     response or an error.  Connections are kept alive and pooled per
 *     origin (host, port), at most max_conns_per_origin at a time; fetches
 *     beyond that wait in a FIFO queue of the origin.  IP literals are
 *     parsed directly; host names are resolved with getaddrinfo() on the
 *     client's own resolver threads (not the loop's worker pool, so users'
 *     blocking jobs there never delay a fetch), so nothing here blocks the
 *     loop.  See "Name resolution" below for what that costs.
 *
 *   - The blocking client, eddy_http_blocking_fetch(): a plain blocking
 *     socket with the same timeouts.  It is meant for worker-pool jobs (an
 *     eddy_work function) and, deliberately, for showing what blocking does
 *     to a loop (the demo's /api/block).  Never call it on a loop thread
 *     otherwise: it stops every other connection of the loop until it
 *     returns.
 *
 * URLs: http://host[:port][/path][?query][#fragment].  host is a name, an
 * IPv4 literal or a bracketed IPv6 literal ("[::1]"); port defaults to 80;
 * the path to "/"; the fragment is dropped.  Other schemes, user info,
 * spaces or control characters give -EINVAL.
 *
 * Arguments (name/value pairs) are url-encoded (application/x-www-form-
 * urlencoded: space as '+', everything but A-Z a-z 0-9 - . _ ~ as %XX).
 * For GET, HEAD, DELETE and OPTIONS they are appended to the query (after
 * the URL's own query, joined by '&'); for every other method (POST, PUT,
 * PATCH ...) they become the body, with Content-Type
 * application/x-www-form-urlencoded.  This is the original's
 * async_fetch(url, method, data).
 *
 * Responses: interim 1xx answers (100 Continue, 103 Early Hints ...) are
 * skipped and the final answer is the response.  204, 304 and the answer
 * to HEAD have no body whatever their headers say (a Content-Length there
 * describes the resource, RFC 9110 8.6, RFC 9112 6.3), and the connection
 * stays reusable after them.
 *
 * Errors: synchronous functions return 0 or a negative errno.  A fetch
 * ends with 0 (a complete response, whatever its status: a 404 is a
 * successful fetch) or one of:
 *   -EINVAL        bad URL, method or header (returned by the starter; no callback)
 *   -ECONNREFUSED  the connection was refused
 *   -ECONNRESET    the server reset or closed the connection before the
 *                  response was complete (also a truncated body)
 *   -ETIMEDOUT     the connect timeout or the request timeout passed
 *   -EPROTO        the response is not valid HTTP/1.x
 *   -EMSGSIZE      the response is larger than max_response_bytes
 *   -ENOENT        the host name does not exist
 *   -EHOSTUNREACH  the name could not be resolved (temporary failure), or
 *                  no route to the host
 *   -ECANCELED     eddy_http_fetch_cancel() or eddy_http_client_close()
 *   -EAGAIN        no resolver thread could be started for a host name
 *   -ENOMEM, or another -errno of socket(), connect() or send().
 */
#ifndef EDDY_HTTP_CLIENT_H
#define EDDY_HTTP_CLIENT_H

#include <stddef.h>
#include <stdint.h>

#include "eddy/eddy.h"

#ifdef __cplusplus
extern "C" {
#endif

/* A name/value pair: a query or form argument, or a request header.  The
 * strings are the caller's; they are copied when the request is built
 * (eddy_http_fetch_start() or the blocking fetch), not referenced after.
 * (It was struct eddy_http_arg, a tag the server's eddy_http_arg()
 * function hid in C++.) */
struct eddy_http_pair {
    const char *name;
    const char *value;
};

/*
 * A response.  Read-only for you; filled by the client.  All strings are
 * NUL-terminated.  The memory is the response's until
 * eddy_http_response_free() (or, for a fetch, eddy_http_fetch_release() or
 * the next start of the same fetch).
 */
struct eddy_http_response {
    int status;               /* 200, 404 ... */
    int version;              /* 10 for HTTP/1.0, 11 for HTTP/1.1 */
    char *body;               /* the body, de-chunked; NULL when empty */
    size_t body_len;
    /* private */
    char *hdrs_;              /* "name\0value\0" ... */
    size_t hdrs_len_, hdrs_cap_, body_cap_;
    struct eddy_loop *loop_;  /* allocator: the loop's, or malloc when NULL */
};

/* The first header called name (case-insensitive), or NULL. */
const char *eddy_http_response_header(const struct eddy_http_response *r, const char *name);
/* The n-th header (0-based, in arrival order): 0 and *name, *value, or -ENOENT. */
int eddy_http_response_header_at(const struct eddy_http_response *r, unsigned n,
                                 const char **name, const char **value);
/* Frees the body and headers; r stays usable (empty).  Idempotent. */
void eddy_http_response_free(struct eddy_http_response *r);

/* ------------------------------------------------------------------------
 * The asynchronous client
 * ---------------------------------------------------------------------- */

struct eddy_http_client;

/* Options.  Zero means "the default" for every field. */
struct eddy_http_client_options {
    unsigned max_conns_per_origin; /* open connections per (host, port); 0 = 8 */
    unsigned connect_timeout_ms;   /* TCP connect; 0 = 20000 */
    unsigned request_timeout_ms;   /* the whole fetch, queueing included; 0 = 60000 */
    size_t max_response_bytes;     /* head + body; 0 = 16 MiB */
    unsigned keepalive_idle_ms;    /* an idle pooled connection is closed after; 0 = 30000 */
};

struct eddy_http_fetch;

/*
 * The fetch callback: runs exactly once per started fetch, from the loop's
 * thread.  err 0: f->resp holds a complete response (any status).  err < 0
 * (see the list at the top): f->resp is empty.  The response stays in f
 * until eddy_http_fetch_release(f) or the next start of f; the request
 * side (url, args, body ...) is no longer referenced.  Do not destroy the
 * client from here.
 */
typedef void (*eddy_http_fetch_cb)(struct eddy_http_fetch *f, int err);
/* eddy_http_client_close() finished: nothing of the client is active; the
 * client may be destroyed from here. */
typedef void (*eddy_http_client_done_cb)(struct eddy_http_client *cli, void *ud);

/*
 * A fetch: yours.  Zero it (or set every "in" field) before the first
 * start.  From eddy_http_fetch_start() until its callback the fetch, the
 * strings, arrays and body it points to belong to the client: keep them
 * valid and unchanged.  Inside the callback (and after it) the fetch is
 * yours again: read the response, release it, start the fetch again or
 * free it.
 */
struct eddy_http_fetch {
    /* in: set by you */
    const char *url;                     /* http://host:port/path?query */
    const char *method;                  /* NULL = "GET" */
    const struct eddy_http_pair *headers; /* extra request headers (rules below) */
    size_t nheaders;
    const struct eddy_http_pair *args;   /* arguments: query or form body (see top) */
    size_t nargs;
    const void *body;                    /* a raw body (not with body-bound args) */
    size_t body_len;
    const char *content_type;            /* for the raw body; NULL = none */
    unsigned connect_timeout_ms;         /* 0 = the client's */
    unsigned request_timeout_ms;         /* 0 = the client's */
    void *data;                          /* yours */
    /* out: valid inside the callback and after it, when err was 0; the
     * body and headers are freed by eddy_http_fetch_release() or the next
     * start (allocated with the loop's allocator) */
    struct eddy_http_response resp;
    unsigned attempts;                   /* connections tried: 2 after a retry */
    unsigned reused;                     /* nonzero: served on a pooled connection */
    /* private: the client's */
    struct {
        struct eddy_http_client *cli;
        eddy_http_fetch_cb cb;
        struct eddy_op timer;            /* the request timeout */
        struct eddy_http_fetch *next, *prev;   /* the origin's queue */
        struct eddy_http_fetch *anext, *aprev; /* the client's active fetches */
        void *origin, *conn;
        char *req;                       /* request head (+ form body) */
        size_t req_len;
        struct iovec iov[2];
        int state, err, idempotent, head, fresh;
        void *waiter;                    /* eddy_http_fetch_await's fiber */
    } p_;
};

/*
 * Request headers (f->headers).  The client owns the message framing and
 * writes Host, User-Agent ("eddy"), Content-Length and Content-Type (of a
 * form or raw body) itself:
 *   - a user Host, User-Agent or Content-Type replaces the client's (Host
 *     is then sent first, as the client's would be); two Hosts are refused;
 *   - Content-Length, Transfer-Encoding and Connection are refused: the
 *     body's length is the client's to state, and keep-alive is the pool's;
 *     so are TE and Upgrade, which a sender must list in Connection (RFC
 *     9110 7.6.1, 7.8);
 *   - a name must be a token (RFC 9110 tchar: letters, digits and
 *     !#$%&'*+-.^_`|~) and a value must not hold CR, LF or another control
 *     character but tab; NULL names or values are refused.
 * Names compare case-insensitively.  Every refusal is -EINVAL from
 * eddy_http_fetch_start(), before anything is sent.  The rest are sent
 * verbatim, in order, after the client's own.
 *
 * Name resolution.  A host name is resolved when its origin has no
 * addresses yet (the first fetch, or after the origin's last connection
 * closed and its queue emptied); the addresses are then kept for as long
 * as the origin has connections or queued fetches.  Resolution runs on up
 * to two threads owned by the client, started the first time a name needs
 * them and joined by eddy_http_client_destroy(): each costs a thread with
 * the default stack (mapped, mostly untouched: typically 8 MiB of address
 * space, tens of KiB resident) and nothing else while idle; a client that
 * only fetches IP literals starts none.  Results come back to the loop
 * with eddy_post_threadsafe(); while one is out the client holds a
 * reference on the loop (eddy_loop_ref) so the loop keeps running.  A
 * fetch cancelled (or timed out) during resolution ends at once.  When
 * an origin has no fetch left, a name still waiting for a resolver thread
 * is dropped; a name being resolved cannot be stopped: it holds its
 * thread until the system resolver returns (at worst the resolver's own
 * timeout, resolv.conf "timeout" x "attempts"), so a dead name can delay
 * the resolution of other names while both threads are busy with such
 * names.  eddy_http_client_close()'s done callback, and
 * eddy_http_client_destroy(), wait for the names being resolved only.
 *
 * Teardown order: eddy_http_client_close(), run the loop until its done
 * callback, eddy_http_client_destroy(), then eddy_loop_destroy().  The
 * client is attached to its loop (eddy_loop_attach) from init to destroy,
 * so eddy_loop_destroy() returns -EBUSY while the client exists.
 */

/* Creates a client on loop (loop thread only; every client function must
 * be called on that thread).  opts may be NULL.  Attaches to the loop (see
 * the teardown order above); starts no thread.  0, or -ENOMEM (or another
 * -errno if a mutex cannot be made). */
int eddy_http_client_init(struct eddy_http_client **out, struct eddy_loop *loop,
                          const struct eddy_http_client_options *opts);

/*
 * Starts f.  Returns 0, then cb(f, err) runs exactly once from the loop
 * (never from inside this call), or a negative errno and no callback:
 * -EINVAL (bad URL, method or header (see "Request headers"), or a raw
 * body together with body-bound args), -ENOMEM, -ESHUTDOWN (the client is
 * closing), -EBUSY (f is already active).  A fetch that needs a name
 * resolved may also end with -EAGAIN (no resolver thread could be
 * started).  Releases what a previous fetch left in f->resp.
 * Retries: when a pooled keep-alive connection turns out to be closed by
 * the server (EOF or reset before any response byte), an idempotent fetch
 * (GET, HEAD, PUT, DELETE, OPTIONS) is tried once more on a fresh
 * connection; a POST or PATCH fails with -ECONNRESET instead.
 */
int eddy_http_fetch_start(struct eddy_http_client *cli, struct eddy_http_fetch *f,
                          eddy_http_fetch_cb cb);

/*
 * Cancels f: its callback runs with -ECANCELED soon (or with its real
 * result if that was already decided).  The connection it used is closed.
 * Returns 0, or -ENOENT if f is not active.
 */
int eddy_http_fetch_cancel(struct eddy_http_client *cli, struct eddy_http_fetch *f);

/*
 * Awaiting (eddy/fiber.h): the fetch as one straight line of a fiber,
 *
 *     int err = eddy_http_fetch_await(cli, &f);   // like the blocking client, but
 *     if (err == 0) use(f.resp.status, f.resp.body);  // only this fiber waits
 *     eddy_http_fetch_release(&f);
 *
 * Starts f (as eddy_http_fetch_start() does; f->data stays yours), suspends
 * the calling fiber until f's final callback and returns that callback's
 * err: 0 with f->resp filled, or the fetch's -errno (the list at the top).
 * The fiber's loop must be cli's (else -EINVAL).  Like every awaiting call of fiber.h:
 *   - outside a fiber it returns -EPERM and starts nothing;
 *   - a fiber already cancelled gets -ECANCELED and starts nothing;
 *   - eddy_fiber_cancel() of the fiber (a fiber route's abort, for one)
 *     cancels the fetch, and the call returns -ECANCELED once the fetch's
 *     final callback has run, so f may be freed or reused on return;
 *   - a fiber deadline (eddy_fiber_timeout(), eddy_fiber_deadline_push())
 *     that passes cancels the fetch the same way and returns -ETIME (the
 *     client's own request_timeout_ms is still -ETIMEDOUT).  A deadline
 *     already past starts the fetch and cancels it at once;
 *   - a fetch whose result was decided before its cancellation took effect
 *     returns that result (0 and a response, or its error).
 * The starter's errors (-EINVAL, -ENOMEM, -ESHUTDOWN, -EBUSY) come back
 * without a wait beyond one yield.  Free the response with
 * eddy_http_fetch_release() (or the next start) as usual.
 */
int eddy_http_fetch_await(struct eddy_http_client *cli, struct eddy_http_fetch *f);

/* True while f is started and its callback has not run yet. */
int eddy_http_fetch_active(const struct eddy_http_fetch *f);

/* Frees f's response (body and headers).  Not while f is active. */
void eddy_http_fetch_release(struct eddy_http_fetch *f);

struct eddy_http_client_stats {
    uint64_t fetches;     /* started */
    uint64_t connects;    /* connections opened (attempted) */
    uint64_t reuses;      /* fetches served on a pooled connection */
    uint64_t retries;     /* fetches retried after a stale pooled connection */
    uint64_t resolutions; /* name resolutions finished (getaddrinfo calls) */
    unsigned resolver_threads; /* resolver threads running (at most 2) */
    unsigned conns;       /* connections open now (all origins) */
    unsigned idle;        /* of which idle in the pool */
    unsigned queued;      /* fetches waiting for a connection */
    unsigned active;      /* fetches started and not finished */
    unsigned origins;     /* host:port pairs held now: each has a connection,
                             a queued fetch or its name in resolution */
};
void eddy_http_client_stats(const struct eddy_http_client *cli,
                            struct eddy_http_client_stats *out);

/*
 * Pooled idle connections keep the loop running (their expiry timer is
 * active) until keepalive_idle_ms passes or the client is closed.
 *
 * Closes the client: cancels every active fetch (their callbacks run with
 * -ECANCELED), closes the pooled connections, and runs done(cli, ud) (may
 * be NULL) from the loop once nothing of the client is active any more.
 * New fetches are refused with -ESHUTDOWN from now on.  -EALREADY if
 * called twice.
 */
int eddy_http_client_close(struct eddy_http_client *cli, eddy_http_client_done_cb done,
                           void *ud);

/*
 * Frees the client, joins its resolver threads (idle by then) and detaches
 * it from the loop.  -EBUSY (and nothing is freed) while a fetch, a
 * connection or a name resolution is still active, or from inside a fetch
 * callback: call eddy_http_client_close() and run the loop until done
 * first.  A client that never fetched can be destroyed at once.
 */
int eddy_http_client_destroy(struct eddy_http_client *cli);

/* ------------------------------------------------------------------------
 * The blocking client
 * ---------------------------------------------------------------------- */

/*
 * Fetches url with method (NULL = "GET") and args (see the top), on a
 * fresh connection with "Connection: close", and blocks the calling
 * thread until the response is complete or timeout_ms (0 = 60000; one
 * deadline for connect, send and receive together) passes.
 * The connect timeout is min(20000, the time left).  Responses are
 * limited to 16 MiB (-EMSGSIZE beyond).  Returns 0 and fills *out
 * (free it with eddy_http_response_free), or a negative errno from the
 * list at the top (*out is then empty).  Names are resolved with a
 * blocking getaddrinfo(), not bounded by timeout_ms.  It sends no
 * headers of the caller's (Host, User-Agent, Connection: close and, with
 * a body, Content-Length and Content-Type are its own).  1xx answers are
 * skipped; 204, 304 and the answer to HEAD have no body.  Thread-safe.
 */
int eddy_http_blocking_fetch(const char *url, const char *method,
                             const struct eddy_http_pair *args, size_t nargs,
                             unsigned timeout_ms, struct eddy_http_response *out);

#ifdef __cplusplus
}
#endif

#endif /* EDDY_HTTP_CLIENT_H */
