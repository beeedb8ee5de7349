/*
 * eddy/http.h — the HTTP/1.1 server of eddy, on llhttp.  The client (async
 * and blocking) is eddy/http_client.h, fibers eddy/http_fiber.h; each is
 * included on its own (eddy/http_all.h includes the three).
 *
 * The model.  One server per loop (for several cores: one loop per thread,
 * each with its own server and its own SO_REUSEPORT listener).  The server
 * accepts connections, parses requests straight from the loop's receive
 * buffers, routes each complete request (head and body) to a handler, and
 * sends the answers back in request order.  Everything runs on the loop's
 * thread; no function here may be called from another thread.
 *
 * A handler is called once per request, from the loop, with the request
 * complete.  It answers at once (eddy_http_respond() inside the handler) or
 * later, from any callback on the same loop (the "@asynchronous ... finish()"
 * pattern): the request stays valid until it is answered.  Exactly one
 * answer per request: a second one returns -EALREADY and changes nothing.
 * After the answer the request pointer must not be used any more (the
 * server recycles it once the answer is sent; until then a stray second
 * answer is refused with -EALREADY, never a crash).
 *
 * When the client goes away (EOF, reset, a send that fails or times out)
 * before a request is answered, the server calls the request's abort
 * callback (eddy_http_on_abort), so the handler can cancel its own work.
 * The request stays valid until the handler answers it anyway; that answer
 * is discarded (and the connection is freed only then).  A handler that
 * never answers leaks the request and keeps shutdown from finishing.  On
 * EOF (a half-close cannot be told from a close until a send fails) the
 * answers already made are still sent, in order, then the connection
 * closes; requests not answered yet at that moment are aborted and bytes
 * after the EOF point are not parsed.  So a client that sends its request
 * and shutdown(SHUT_WR) gets its answer whenever the handler answers at
 * once.  With opts.eof_finish, the EOF aborts nothing: every request
 * received (a request cut short by the EOF is dropped) stays alive until
 * its handler answers, the answers go out in order, then the connection
 * closes; so half-closed clients get the answers of asynchronous handlers
 * too.  The price: a client that closed for good is only noticed when a
 * send to it fails (the first send to a closed peer usually still succeeds
 * and draws a reset; the next one fails), or after eof_timeout_ms without
 * an answer; the requests still unanswered then hear their abort callback.
 * While reading of a connection is stopped (pipeline cap reached
 * and 64 KiB stashed), its EOF is noticed when reading resumes.
 *
 * HTTP details: HEAD runs the GET handler (unless the path has a HEAD
 * route) and gets the head a GET would have had, without the body; Expect:
 * 100-continue is answered when no earlier answer is pending; Upgrade is
 * not supported (the request is answered, then the connection closes);
 * CONNECT is 501, and so is a method the parser does not know (a token
 * such as FOO or get, in an otherwise well-formed request-line; a
 * malformed line is 400).  Versions: HTTP/1.0 and 1.1; a higher minor
 * version (HTTP/1.2 ... 1.9) is handled as 1.1 (RFC 9110 6.2); other
 * majors (0.9, 2.0, 3.x ...) are 505.  Answers are always "HTTP/1.1".
 * Connection: a "close" option anywhere in the request's Connection
 * fields (case-insensitive, a list) closes the connection after the
 * answer, in 1.0 as in 1.1; HTTP/1.0 clients get Connection: keep-alive
 * when they asked for it (and not for close too), else the connection
 * closes after the answer.  After a closing answer the connection closes
 * at once when the client has sent nothing unread; otherwise it is
 * half-closed and lingers (linger_ms) reading and discarding until the
 * client's EOF, so the client reads the answer rather than a reset.
 *
 * Pipelining: requests on one connection are handled as they arrive (a
 * later handler may run, and answer, before an earlier one has answered),
 * but answers go out strictly in request order.  Answers that are ready
 * together go out together, in one send.  At most max_pipeline requests
 * wait per connection; beyond that the server stops reading it.
 *
 * Errors: functions return 0 or a negative errno.  Malformed or
 * over-limit requests are answered by the server itself (400, 408, 413,
 * 414, 431, 501, 505; 503 when the loop's allocator fails, or just a
 * close when even that answer cannot be made) and the connection is
 * closed after the answer; the handler never sees them.
 *
 * Strings returned by accessors are NUL-terminated, owned by the request
 * and valid until the request is answered.
 */
#ifndef EDDY_HTTP_H
#define EDDY_HTTP_H

#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

#include "eddy/eddy.h"

#ifdef __cplusplus
extern "C" {
#endif

struct eddy_http_server;
struct eddy_http_req;

/* ------------------------------------------------------------------------
 * Options.  Zero means "the default" for every field.
 * ---------------------------------------------------------------------- */
struct eddy_http_options {
    const char *host;            /* "127.0.0.1", "::1", "::" (dual stack) ...; NULL = "0.0.0.0" */
    uint16_t port;               /* 0 = any free port (see eddy_http_server_port) */
    int reuseport;               /* nonzero: SO_REUSEPORT (one listener per loop/thread) */
    int listen_fd;               /* > 0: use this listening socket (the server closes it); 0 = create one */
    int backlog;                 /* listen backlog; 0 = 1024 */
    unsigned defer_accept_s;     /* > 0: TCP_DEFER_ACCEPT on the listener: the kernel hands a
                                    connection over only once the client's first bytes are in,
                                    which saves a wake-up and an empty receive per connection
                                    (Connection: close CPU per request -17%, docs/performance.md).
                                    A silent client is seen (and its header_timeout_ms starts)
                                    only after about this many seconds, rounded up to the
                                    kernel's SYN-ACK retransmits (1, 3, 7, 15 ... s).  0 = off */
    unsigned max_conns;          /* connections; beyond: 503 and close.  0 = 10000 */
    unsigned max_pipeline;       /* requests queued per connection; 0 = 32 */
    unsigned max_uri;            /* request-target bytes, else 414; 0 = 4096 */
    unsigned max_header;         /* request-line + header bytes, else 431; 0 = 8192 (max 65535) */
    unsigned max_headers;        /* header fields, else 431; 0 = 64 */
    size_t max_body;             /* body bytes, else 413; 0 = 1 MiB */
    unsigned header_timeout_ms;  /* whole request head, else 408 and close; 0 = 10000 */
    unsigned body_timeout_ms;    /* whole body, from the end of the head, else 408; 0 = 30000 */
    unsigned idle_timeout_ms;    /* keep-alive idle, then close quietly; 0 = 60000 */
    unsigned send_timeout_ms;    /* a slow reader: when one send (at most 256 KiB) is not taken
                                    by the client within this, close; 0 = 30000 */
    unsigned linger_ms;          /* after a closing answer with client bytes unread, wait for the client's EOF; 0 = 2000 */
    int eof_finish;              /* the client's EOF before every answer is made (see the top):
                                    0 = abort the requests not answered yet (their handlers
                                    hear the abort callback: work for a client that left
                                    stops); 1 = finish them: answer every request received,
                                    in order, then close (a half-closed client gets its
                                    answers; a client that really left is noticed when a
                                    send fails, or at eof_timeout_ms) */
    unsigned eof_timeout_ms;     /* after the EOF, the longest wait for the next answer of a
                                    handler (eof_finish, or a stream begun); then the
                                    connection closes and its requests are aborted.
                                    0 = 30000 */
    unsigned sweep_ms;           /* timeout resolution (one repeating timer); 0 = 100 */
    unsigned rbuf_count;         /* receive buffers (power of 2); 0 = 1024.  On io_uring
                                    before 5.19 (no buffer ring) each connection's pending
                                    receive holds one, so max_conns is capped at rbuf_count
                                    there; not on epoll, where a receive takes a buffer only
                                    once data is in. */
    unsigned rbuf_size;          /* bytes each; 0 = 4096 */
    const char *server_name;     /* "Server:" header; NULL = "eddy", "" = none */
};

/* A handler: called from the loop with a complete request. */
typedef void (*eddy_http_handler)(struct eddy_http_req *req, void *ud);
/* Abort notice: the client went away before req was answered. */
typedef void (*eddy_http_abort_cb)(struct eddy_http_req *req, void *ud);
/* Graceful shutdown finished: no connection is left. */
typedef void (*eddy_http_done_cb)(struct eddy_http_server *srv, void *ud);

/* ------------------------------------------------------------------------
 * Server lifecycle: init -> route... -> listen -> (run the loop) ->
 * shutdown -> (run the loop until done) -> destroy, then the loop.
 *
 * Teardown order: eddy_http_server_shutdown(), run the loop until the done
 * callback (and until the handlers of aborted requests have answered),
 * eddy_http_server_destroy(), then eddy_loop_destroy().  The server is
 * attached to its loop (eddy_loop_attach) from init to destroy, so
 * eddy_loop_destroy() returns -EBUSY, and frees nothing, while a server
 * still uses the loop.
 * ---------------------------------------------------------------------- */

/* Creates a server on loop (nothing is started; the loop must outlive it).
 * opts may be NULL (every default).  0 and *out, or -ENOMEM. */
int eddy_http_server_init(struct eddy_http_server **out, struct eddy_loop *loop,
                          const struct eddy_http_options *opts);

enum {
    EDDY_HTTP_EXACT = 0,  /* path must equal */
    EDDY_HTTP_PREFIX = 1, /* path starts with (the longest prefix wins; exact routes first) */
};

/*
 * Adds a route.  method: a method the parser knows, spelled as on the wire
 * ("GET", "POST", "PATCH", "M-SEARCH" ...: methods are case-sensitive), or
 * NULL for any method.  path: starts with "/", compared undecoded, so it
 * holds no "?", "#", space, control or non-ASCII byte (those arrive
 * percent-encoded).  path and method are copied.
 *
 * Among the routes of the matching path (the exact one, else the longest
 * prefix), the route of the request's method wins, then for HEAD the GET
 * route (its body is not sent), then the any-method route, whatever the
 * order they were added in.  Unknown path: 404; known path, no route for
 * the method: 405 with Allow.
 *
 * Returns 0; -EINVAL for a route no request could ever reach (a method the
 * parser does not know, e.g. "get" or "FOO" (such requests get 501), or
 * CONNECT (always 501); a path not starting with "/" or with a byte listed
 * above), for bad flags, a NULL path or handler, or after listen; -EEXIST
 * when the same method (or NULL), path and flags are already routed;
 * -ENOMEM.  Before listen only.
 */
int eddy_http_route(struct eddy_http_server *srv, const char *method, const char *path,
                    int flags, eddy_http_handler handler, void *ud);

/* Binds (unless opts->listen_fd), listens and starts accepting. */
int eddy_http_server_listen(struct eddy_http_server *srv);

/*
 * Serves fd, an already connected stream socket (TCP or AF_UNIX: a
 * socketpair end, a socket handed over by socket activation ...), as if
 * it had been accepted: same limits, timeouts and statistics (counted in
 * accepted).  The server owns fd from the call on, also on failure (then
 * it is closed).  Loop thread only, after eddy_http_server_listen and
 * before shutdown.  Returns 0, -EBADF (fd < 0), -EINVAL (not listening),
 * -ESHUTDOWN (shutting down), -EBUSY (max_conns reached), -ENOMEM, or
 * the error of the first receive.
 */
int eddy_http_server_adopt(struct eddy_http_server *srv, int fd);

/* The bound port (useful with port 0), or a negative errno. */
int eddy_http_server_port(const struct eddy_http_server *srv);

/* The loop the server runs on (for layers built on the server). */
struct eddy_loop *eddy_http_server_loop(const struct eddy_http_server *srv);

/*
 * Creates a listening TCP socket (SO_REUSEADDR, optionally SO_REUSEPORT;
 * "::" is dual stack).  Returns the descriptor or a negative errno.  For
 * thread-per-core: one such socket per loop, passed as opts.listen_fd, or
 * just set opts.reuseport and the same port in every server.
 */
int eddy_http_listen_socket(const char *host, uint16_t port, int reuseport, int backlog);

/*
 * Graceful shutdown: stops accepting, closes idle connections, lets
 * requests in flight finish for up to drain_ms: every request already
 * received (pipelined ones too) gets its answer, in order, and each
 * connection closes after its last one (which says Connection: close
 * unless it was made before the shutdown); nothing more is read from
 * them.  On a connection with nothing queued, a request still arriving is
 * answered, with close, once complete.  Then it closes what is left
 * (handlers still holding requests hear their abort callback).  done (may
 * be NULL) runs from the loop once nothing of the server is active any
 * more.  Returns -EALREADY if called twice.
 */
int eddy_http_server_shutdown(struct eddy_http_server *srv, unsigned drain_ms,
                              eddy_http_done_cb done, void *ud);

/* Frees the server and detaches it from its loop.  -EBUSY (nothing freed,
 * the call may be repeated) unless it never listened or shutdown is done. */
int eddy_http_server_destroy(struct eddy_http_server *srv);

struct eddy_http_stats {
    uint64_t accepted, requests, responses, errors; /* errors: answered by the server (4xx/5xx) */
    uint64_t timeouts, rejected;                    /* timeouts closed; rejected over max_conns */
    uint64_t sends;                                 /* send operations (one carries every answer ready) */
    uint64_t read_stops;                            /* reading stopped for back-pressure */
    unsigned conns;                                 /* open now */
    unsigned idle_conn_bytes;                       /* user-space bytes an idle keep-alive connection holds
                                                       (the per-connection struct: an idle connection is
                                                       that alone, its session goes back to a pool) */
};
void eddy_http_server_stats(const struct eddy_http_server *srv, struct eddy_http_stats *out);

/* ------------------------------------------------------------------------
 * Request accessors.  Valid from the handler call until the answer.
 * ---------------------------------------------------------------------- */

const char *eddy_http_method(const struct eddy_http_req *req); /* "GET" */
const char *eddy_http_path(const struct eddy_http_req *req);   /* "/a/b", raw (not decoded) */
const char *eddy_http_query(const struct eddy_http_req *req);  /* raw, without '?'; "" if none */
/*
 * The query argument name, URL-decoded ('+' is a space, %XX a byte), or def
 * when absent.  The first occurrence wins.  ?time=1.5&x=%20y gives "1.5"
 * for "time" and " y" for "x".
 */
const char *eddy_http_arg(struct eddy_http_req *req, const char *name, const char *def);
/* The first header called name (case-insensitive), or NULL. */
const char *eddy_http_header(const struct eddy_http_req *req, const char *name);
/* The n-th header (0-based): 0 and *name, *value, or -ENOENT. */
int eddy_http_header_at(const struct eddy_http_req *req, unsigned n, const char **name,
                        const char **value);
/* The body (Content-Length or chunked, de-chunked); *len gets its size.
 * Never NULL ("" when empty). */
const void *eddy_http_body(const struct eddy_http_req *req, size_t *len);
/* 10 for HTTP/1.0, 11 for HTTP/1.1 (and for 1.2 ... 1.9, handled as 1.1). */
int eddy_http_version(const struct eddy_http_req *req);
/* The peer's address (getpeername); 0 or -errno (-ENOTCONN once closed). */
int eddy_http_peer(const struct eddy_http_req *req, struct sockaddr_storage *addr,
                   socklen_t *len);

/* Calls cb(req, ud) if the client goes away before req is answered. */
void eddy_http_on_abort(struct eddy_http_req *req, eddy_http_abort_cb cb, void *ud);
/* True once the client went away (the answer will be discarded). */
int eddy_http_aborted(const struct eddy_http_req *req);

/* ------------------------------------------------------------------------
 * Answers.  Content-Length (or chunked framing), Date (cached, refreshed
 * every second), Server and Connection are added by the server.
 *
 * No body: an answer to HEAD, and a 204 or 304 answer, carry no body
 * bytes, whether answered or streamed (the body given is dropped).  A 204
 * or 304 has no framing header either (no Content-Length, no
 * Transfer-Encoding); a HEAD answer has the framing header a GET would
 * have had (Content-Length: len; streamed, Transfer-Encoding: chunked, or
 * for HTTP/1.0 Connection: close).  1xx statuses are not answers (-EINVAL).
 * ---------------------------------------------------------------------- */

/*
 * Adds a response header ("name: value") to the answer about to be made.
 * Both are copied.  name must be a token (RFC 9110 5.6.2: letters, digits,
 * !#$%&'*+-.^_`|~), value visible characters, obs-text (bytes >= 0x80), SP
 * or HTAB: no CR, LF or other control character, else -EINVAL.  The
 * framing is the server's: Content-Length and Transfer-Encoding are
 * -EINVAL.  Connection: "close" (any case) is taken as an order, not
 * copied: the answer says Connection: close (once) and the server closes
 * the connection after it; nothing the client sent after this request is
 * handled (pipelined requests already with their handlers hear the abort
 * callback).  Any other Connection value is -EINVAL.  Returns 0, -EINVAL,
 * -EALREADY after the answer began, or -ENOMEM.
 */
int eddy_http_set_header(struct eddy_http_req *req, const char *name, const char *value);

/*
 * Answers req: status (200..999), content_type (NULL: none; a field value
 * as for eddy_http_set_header), len bytes of body (dropped for HEAD, 204
 * and 304, see above).  The body is copied: the caller keeps its buffer.
 * Returns 0 (also when the client is gone and the answer is discarded; req
 * is finished either way), -EALREADY for a second answer, -EINVAL (bad
 * status, content_type, or body NULL with len > 0), -ENOMEM (then req is
 * still unanswered).
 */
int eddy_http_respond(struct eddy_http_req *req, int status, const char *content_type,
                      const void *body, size_t len);

/*
 * Streaming, for bodies of unknown length: begin sends the head with
 * Transfer-Encoding: chunked (HTTP/1.0 clients get a close-delimited body
 * instead), each write sends a chunk (copied; 0 bytes is a no-op), end
 * sends the last chunk and finishes the request.  For HEAD, 204 and 304
 * the head is the one described above and writes send nothing (they
 * return 0); end still finishes the request.  Writes are queued and go
 * out in order behind earlier answers of the connection.  Same return
 * values as eddy_http_respond(); after an abort every call returns 0 and
 * end finishes the request.
 */
int eddy_http_stream_begin(struct eddy_http_req *req, int status, const char *content_type);
int eddy_http_stream_write(struct eddy_http_req *req, const void *data, size_t len);
int eddy_http_stream_end(struct eddy_http_req *req);

/* The reason phrase of a status ("Not Found"), or "Unknown". */
const char *eddy_http_reason(int status);

#ifdef __cplusplus
}
#endif

#endif /* EDDY_HTTP_H */
