/*
 * internal.h: what the four files of the HTTP/1.1 server share.
 *
 *   server.c   the server: options, routes, dispatch, listen/accept/adopt,
 *              shutdown, destroy, stats.
 *   conn.c     the connection state machine: receive, feed, back-pressure,
 *              EOF, send and its batching, linger, close; the timeout lists
 *              and their sweep.
 *   wire.c     the wire parser: llhttp's settings and callbacks, the RFC
 *              9112 checks, the method verdicts.  No I/O: what it needs
 *              sent (100-continue) it asks conn.c for (s->continue_due).
 *   request.c  requests and answers: the free-list pools every connection,
 *              session and request comes from (pool_take), buffer growth
 *              (grow, buf_trim), the head arena, answer heads,
 *              respond/stream, set_header, accessors, query decoding.
 *
 * Shared with the client too: common.h (the RFC 9110 token and field-value
 * rules, grow_cap); the intrusive lists are runtime/src/list.h's.
 *
 * Calls between them: conn.c feeds wire.c and calls server.c to dispatch
 * (and to say a connection is gone, check_done); answers (request.c) call
 * conn.c to send (sess_flush) or to close; server.c starts and closes
 * connections.  wire.c calls only request.c.
 *
 * Not part of the public API; nothing here is installed.
 */
#ifndef EDDY_PROTO_INTERNAL_H
#define EDDY_PROTO_INTERNAL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>

#include "../../runtime/src/list.h" /* the repository's intrusive list (internal, not installed) */
#include "common.h"
#include "eddy/http.h"
#include "llhttp.h"

#define HEAD_RESERVE 192u   /* room in front of the out buffer for the status line and fixed headers */
#define OUT_INIT 512u
#define OUT_KEEP (64u * 1024) /* larger buffers are not kept by a recycled request */
#define MAX_IOV 64u         /* one iovec per answer: up to 64 answers per send */
#define PEND_STOP (64u * 1024) /* stashed bytes beyond which reading stops */
#define SEND_MAX (256u * 1024) /* bytes per send: each completion is progress for the send timeout */

/*
 * A connection's state: c->state, one of the values below.  It only moves
 * down this list (close_done recycles the struct), each step made in one
 * place, named on its line:
 *
 *   CONN_OPEN      requests are read and answers sent.  Which wait an open
 *                  connection is in is the timeout list it sits on, c->tl
 *                  (conn_wait() in conn.c picks it from the session):
 *                  TL_HEAD reading a head (or waiting for the first one),
 *                  TL_BODY reading a body, TL_NONE handlers at work,
 *                  TL_SEND an answer being sent, TL_IDLE keep-alive idle.
 *                  These are not a second state field on purpose: with
 *                  pipelining an open connection can be sending answer 1,
 *                  running handler 2 and reading request 3's body at once;
 *                  the list is the one wait that bounds it, picked by a
 *                  fixed priority (send, then EOF, head/body, handlers,
 *                  idle) each time something changes (conn_retime).
 *   CONN_EOF       the client's EOF was read (eof_keep_answers): nothing
 *                  more is read; the answers still due go out (TL_EOF,
 *                  TL_SEND), then the connection closes.
 *   CONN_LINGER    the closing answer is sent and our FIN with it
 *                  (conn_linger): input is read and dropped until the
 *                  client's EOF or linger_ms (TL_LINGER).
 *   CONN_ABORTING  conn_close's first call: ops are being cancelled and the
 *                  abort callbacks of unanswered requests run.
 *   CONN_CLOSING   waiting for the cancelled ops to end and the handlers
 *                  that still hold aborted requests to answer them; each
 *                  such end calls conn_close again, which closes the fd
 *                  once nothing is left (conn_start enters here directly).
 *   CONN_CLOSED    eddy_close started; close_done frees the connection.
 *
 * Re-entrancy.  A handler (route_dispatch), an abort callback, and every
 * function that may run one or start a send (dispatch_new, sess_flush,
 * conn_error, answer_or_drop, eddy_http_respond and the stream calls)
 * may close the connection under its caller: a failed send or allocation
 * calls conn_close, and so does the answer to an aborted request.  So
 * after any of these the caller checks conn_closing(c) and, if true,
 * returns without touching the session or the requests.  The struct conn
 * and its session stay valid until close_done, which always runs later,
 * from the loop: checking c->state after a call is always safe.
 */
enum conn_state {
    CONN_OPEN,
    CONN_EOF,
    CONN_LINGER,
    CONN_ABORTING,
    CONN_CLOSING,
    CONN_CLOSED,
};

/* The timeout lists (see conn.c): one per kind of wait. */
enum tlist { TL_NONE, TL_HEAD, TL_BODY, TL_IDLE, TL_SEND, TL_LINGER, TL_EOF, TL_COUNT };

/* Facts about a connection that are not its state. */
enum {
    C_SERVED = 1u << 0,   /* saw at least one request */
    C_READSTOP = 1u << 1, /* recv stopped for back-pressure (or never re-armed) */
};

struct conn {
    struct eddy_op rop; /* recv_multi; after it ended, the close */
    struct eddy_http_server *srv;
    struct conn *tnext, *tprev; /* timeout list (tnext: or the free list) */
    struct sess *s;
    int64_t since;      /* ns: entry into the current list, or last activity */
    int fd;
    uint8_t state;      /* enum conn_state */
    uint8_t tl;         /* enum tlist: the list it is on */
    uint8_t flags;      /* C_SERVED, C_READSTOP */
    uint16_t held;      /* aborted requests handlers still hold */
};

/* A timeout list (srv->tl[]), in deadline order (see conn.c). */
LIST_DEFINE(conn_list, struct conn, tnext, tprev)

/* Closing (or closed): cancelled, nothing more is read, sent or handled. */
static inline bool conn_closing(const struct conn *c)
{
    return c->state >= CONN_ABORTING;
}

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
    R_ARGS = 1u << 8,     /* query decoded into the arena */
    R_COMPLETE = 1u << 9, /* fully parsed */
    R_FREE = 1u << 10,    /* in the free list */
    R_INFLIGHT = 1u << 11, /* part of the send in flight */
    R_HASVER = 1u << 12,  /* the request line had an HTTP-version */
    R_NOBODY = 1u << 13,  /* 204 or 304 answer: neither body nor framing */
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
    /* Per request: req_get zeroes everything before h. */
    struct conn *c;
    struct eddy_http_server *srv;
    struct eddy_http_req *next, *prev; /* the session's queue (next: or the free list) */
    uint32_t alen;        /* bytes used in arena */
    uint32_t url, urllen; /* path at url (NUL at '?'), query after it */
    uint32_t query;
    uint32_t args, argslen; /* decoded "name\0value\0" pairs */
    unsigned nh;
    uint8_t last;         /* 1: field span, 2: value span (for joining split spans) */
    uint8_t method, vmaj, vmin;
    uint32_t flags;
    size_t blen;
    char *oold;           /* the out buffer a send in flight still reads */
    uint32_t ostart, olen, osent, oinfl;
    int status;
    eddy_http_abort_cb abort_cb;
    void *abort_ud;
    /* Kept while pooled: the header table and the buffers, with their sizes. */
    struct hdr *h;
    char *arena;
    uint32_t acap;
    char *body;
    size_t bcap;
    char *out;
    size_t ocap;
};

/* A session's requests, parsed and not yet sent, in request order. */
LIST_DEFINE(req_queue, struct eddy_http_req, next, prev)

struct sess {
    llhttp_t p;
    struct conn *c;
    struct req_queue q;
    struct eddy_http_req *cur; /* the request being parsed */
    unsigned nreq;       /* queued (parsed, not yet sent) */
    /* The reading side: in_msg, a request is being parsed (in_body: past
     * its head); paused, max_pipeline is reached and bytes are stashed in
     * pend, not parsed; stop, nothing more is parsed (after an error, a
     * closing request, Upgrade or the EOF). */
    uint8_t in_msg, in_body, paused, stop;
    uint8_t batching;    /* parsing or dispatching: answers wait for the caller's one
                            sess_flush at the end (recv_cb; send_done after conn_resume) */
    uint8_t dropped;     /* client bytes were discarded (after stop): linger on close */
    uint8_t continue_due; /* the parser asks for a 100 Continue (conn_parse sends it) */
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
    size_t pend_len;     /* bytes in pend */
    struct eddy_http_req *sent_upto; /* the last request in the send in flight */
    /* Kept while pooled: sess_get zeroes everything before pend. */
    char *pend;          /* bytes received while paused */
    size_t pend_cap;
    struct eddy_op sop;
    struct msghdr msg;
    struct iovec iov[MAX_IOV];
    struct sess *nextfree;
};

struct chunk {
    struct chunk *next;
};

struct eddy_http_server {
    struct eddy_loop *loop;
    struct eddy_http_options o;
    struct route *routes;
    unsigned nroutes;
    int lfd;
    bool listening, shutting, accept_dead, timer_dead, done_called;
    struct eddy_op aop, top;
    struct eddy_bufpool *pool;
    struct conn_list tl[TL_COUNT];  /* every open connection is on one */
    int64_t tl_ns[TL_COUNT];         /* each list's timeout */
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

/* ---- small helpers (every file) ---------------------------------------- */

/* Queues a parsed request (or the server's own error answer) on s. */
static inline void sess_queue(struct sess *s, struct eddy_http_req *r)
{
    req_queue_push(&s->q, r);
    s->nreq++;
}

static inline void *xalloc(struct eddy_http_server *srv, size_t n)
{
    return eddy_loop_alloc(srv->loop, n);
}

static inline void xfree(struct eddy_http_server *srv, void *p)
{
    if (p)
        eddy_loop_free(srv->loop, p);
}

/* ---- server.c ----------------------------------------------------------- */

void dispatch_new(struct sess *s);
void check_done(struct eddy_http_server *srv);

/* ---- conn.c ------------------------------------------------------------- */

int conn_start(struct eddy_http_server *srv, int fd);
void conn_close(struct conn *c);
void conn_error(struct conn *c, int status);
void conn_retime(struct conn *c, bool touch);
void sess_flush(struct sess *s);
void sweep_cb(struct eddy_op *op, int res);

/* ---- wire.c ------------------------------------------------------------- */

void wire_init(struct sess *s);
int wire_parse(struct sess *s, const char *data, size_t len, size_t *used);
int method_verdict(struct sess *s, const char *p, size_t n);

/* ---- request.c ---------------------------------------------------------- */

void *pool_take(struct eddy_http_server *srv, void *head, size_t one, unsigned n,
                size_t link_off);
void buf_trim(struct eddy_http_server *srv, char **buf, size_t *cap, size_t keep);

struct eddy_http_req *req_get(struct eddy_http_server *srv, struct conn *c);
void req_put(struct eddy_http_req *r);
int arena_put(struct eddy_http_req *r, const char *p, size_t n);
bool arena_reserve(struct eddy_http_req *r, size_t n);
void req_close_after(struct eddy_http_req *r);
void answer_or_drop(struct eddy_http_req *r, int status, const char *body, size_t len);
void date_refresh(struct eddy_http_server *srv);
bool grow(struct eddy_loop *loop, char **buf, size_t *cap, size_t need, size_t init);

#endif /* EDDY_PROTO_INTERNAL_H */
